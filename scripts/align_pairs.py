"""Estimate each photo pair's homography (target pixels → reference pixels) for training.

``python scripts/align_pairs.py data/training-pairs/pairs.tsv`` writes ``homographies.tsv`` beside the
pairs file: target, reference, the 9 entries of H row by row (full-resolution pixels), inlier count.
SIFT features, Lowe's ratio test and a MAGSAC++ homography (OpenCV's USAC); a pair with fewer than
``--min-inliers`` inliers gets no line, and training then cuts its reference at the same relative place
(``ttsr_core.training.photo_pairs``). A homography is exact only for a plane or a distant scene; for the rest it
is where the reference shows a target position roughly, which is what cropping needs.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np


def homography(target: Path, reference: Path, max_side: int = 1600) -> tuple[np.ndarray, int] | None:
    """H mapping target to reference pixels (full resolution) and its inlier count, or None."""
    images, scales = [], []
    for path in (target, reference):
        gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if gray is None:
            raise ValueError(f"cannot read {path}")
        s = min(1.0, max_side / max(gray.shape))
        images.append(cv2.resize(gray, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1 else gray)
        scales.append(s)
    sift = cv2.SIFT_create(nfeatures=4000)
    (ka, da), (kb, db) = (sift.detectAndCompute(im, None) for im in images)
    if da is None or db is None or len(ka) < 8 or len(kb) < 8:
        return None
    good = [m for m, n in cv2.BFMatcher().knnMatch(da, db, k=2) if m.distance < 0.8 * n.distance]
    if len(good) < 8:
        return None
    src = np.float32([ka[m.queryIdx].pt for m in good])
    dst = np.float32([kb[m.trainIdx].pt for m in good])
    h, mask = cv2.findHomography(src, dst, cv2.USAC_MAGSAC, 4.0)
    if h is None:
        return None
    full = np.diag([1 / scales[1], 1 / scales[1], 1.0]) @ h @ np.diag([scales[0], scales[0], 1.0])
    return full / full[2, 2], int(mask.sum())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("pairs", type=Path, help="a pairs.tsv: target and reference file names, relative to it")
    p.add_argument("--min-inliers", type=int, default=25, help="fewer inliers: no homography (default 25)")
    args = p.parse_args(argv)
    lines, kept = ["target\treference\th00\th01\th02\th10\th11\th12\th20\th21\th22\tinliers"], 0
    rows = [r.split("\t") for r in args.pairs.read_text().splitlines() if r and not r.startswith(("#", "target\t"))]
    for cols in rows:
        found = homography(args.pairs.parent / cols[0], args.pairs.parent / cols[1])
        inliers = found[1] if found else 0
        print(f"{cols[0]} → {cols[1]}: {inliers} inliers", file=sys.stderr)
        if found and inliers >= args.min_inliers:
            lines.append("\t".join([cols[0], cols[1], *(f"{v:.8g}" for v in found[0].ravel()), str(inliers)]))
            kept += 1
    (args.pairs.parent / "homographies.tsv").write_text("\n".join(lines) + "\n")
    print(f"{kept} of {len(rows)} pairs have a homography: {args.pairs.parent / 'homographies.tsv'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
