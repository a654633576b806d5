"""Precision and recall of copy detection (pipeline.matching.copies) on planted copies of the yardstick photos.

Every photo of ``data/different-pairs`` is an original; each gets one planted copy, seeded: reduced to
0.1-0.5 of its size, JPEG quality 40-95, half of them cropped to 60-95 % of each side, half of them
colour-edited (per-channel gain 0.9-1.1, offset -10..10). Positives: each copy against its original
(found, and the right one named the copy). Negatives, where any "copy" is false: each copy against
every *other* photo of the same source (another moment or viewpoint of one scene: the hard case),
and each yardstick pair (target, reference) at full size.

    PYTHONPATH=. .venv/bin/python benchmarks/retrieval/copy_detection.py
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the harness
from harness import cpu  # noqa: E402
from pipeline.matching.copies import CopySettings, check_copy  # noqa: E402
from pipeline.matching.verification import local_features  # noqa: E402
from pipeline.params import VerifySettings  # noqa: E402
from retrieval_recall import load_rgb  # noqa: E402
from verified_recall import read_yardstick, scene_of  # noqa: E402


def plant_copy(rgb: np.ndarray, seed: int) -> tuple[np.ndarray, str]:
    """A seeded messenger-style copy of `rgb` and a short description of what was done."""
    rng = np.random.default_rng(seed)
    h, w = rgb.shape[:2]
    what = []
    if rng.random() < 0.5:
        f = rng.uniform(0.6, 0.95)
        cw, ch = int(w * f), int(h * f)
        x0, y0 = int(rng.uniform(0, w - cw)), int(rng.uniform(0, h - ch))
        rgb = rgb[y0:y0 + ch, x0:x0 + cw]
        what.append(f"crop {f:.0%}")
    scale = rng.uniform(0.1, 0.5)
    h, w = rgb.shape[:2]
    rgb = cv2.resize(rgb, (max(16, round(w * scale)), max(16, round(h * scale))), interpolation=cv2.INTER_AREA)
    what.append(f"x{scale:.2f}")
    if rng.random() < 0.5:
        gain, offset = rng.uniform(0.9, 1.1, 3), rng.uniform(-10, 10, 3)
        rgb = np.clip(rgb * gain + offset, 0, 255).astype(np.uint8)
        what.append("colour")
    quality = int(rng.integers(40, 96))
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality)
    what.append(f"q{quality}")
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), dtype=np.uint8).copy(), " ".join(what)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("data"))
    p.add_argument("--side", type=int, default=1600, help="originals reduced to this long side (speed)")
    p.add_argument("--verbose", action="store_true", help="print every miss and false copy")
    p.add_argument("--seed", type=int, default=0, help="added to each photo's planting seed: another draw of copies")
    args = p.parse_args(argv)
    folder = args.data / "different-pairs"
    pairs = read_yardstick(folder)
    names = sorted({n for pair in pairs for n in pair})
    originals = {n: load_rgb(folder / n, args.side) for n in names}
    copies = {n: plant_copy(originals[n], args.seed + seed) for seed, n in enumerate(names)}
    feats = VerifySettings()
    t0 = time.perf_counter()
    f_orig = {n: local_features(originals[n], feats) for n in names}
    f_copy = {n: local_features(copies[n][0], feats) for n in names}
    settings = CopySettings()
    checks: list[float] = []

    def check(a: np.ndarray, fa, b: np.ndarray, fb):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        verdict = check_copy(a, fa, b, fb, settings)
        checks.append(time.perf_counter() - t)
        return verdict

    found = right = 0
    rmse_pos: list[float] = []
    rmse_neg: list[float] = []
    for n in names:
        v = check(copies[n][0], f_copy[n], originals[n], f_orig[n])
        if v.block_rmse is not None:
            rmse_pos.append(v.block_rmse)
        found += v.is_copy
        right += v.is_copy and v.copy == 0
        if args.verbose and not (v.is_copy and v.copy == 0):
            print(f"missed: {n} ({copies[n][1]}): {v.reason}")
    false = negatives = 0
    for n in names:
        for m in names:
            if m != n and scene_of(m) == scene_of(n):
                v = check(copies[n][0], f_copy[n], originals[m], f_orig[m])
                if v.block_rmse is not None:
                    rmse_neg.append(v.block_rmse)
                negatives += 1
                false += v.is_copy
                if args.verbose and v.is_copy:
                    print(f"false copy: {n} ({copies[n][1]}) vs {m}")
    for t, r in pairs:
        v = check(originals[t], f_orig[t], originals[r], f_orig[r])
        negatives += 1
        false += v.is_copy
        if args.verbose and v.is_copy:
            print(f"false copy: pair {t} vs {r}")
    precision = right / max(1, found + false)
    recall = right / len(names)
    print(cpu())
    print(f"{len(names)} planted copies (x0.1-0.5, JPEG 40-95, half cropped to 60-95 %, half colour-edited) of the "
          f"different-pairs photos (long side {args.side}, seed {args.seed}); {negatives} negative pairs "
          "(a copy against another photo "
          "of the same source, and each yardstick pair)\n")
    print("| found (of planted) | right way round | false copies (of negatives) | precision | recall | ms/check |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(f"| {found} / {len(names)} | {right} | {false} / {negatives} | {precision:.3f} | {recall:.3f} "
          f"| {np.mean(checks) * 1000:.0f} |")
    if args.verbose:
        print(f"\nworst-block RMS of copies: {sorted(round(x, 1) for x in rmse_pos)}")
        print(f"worst-block RMS of same-source negatives that passed the geometry: {sorted(round(x, 1) for x in rmse_neg)}")
    print(f"\n(features: {(time.perf_counter() - t0 - sum(checks)) * 1000 / (2 * len(names)):.0f} ms/photo)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
