"""Helpers for scripts/fetch_data.sh: video frames by index, files inside Qt .rcc archives, pair checks.

    python scripts/data_tools.py frame VIDEO INDEX OUT.png      frame INDEX (0-based, decoded in order)
    python scripts/data_tools.py rcc ARCHIVE.rcc INNER_PATH OUT  one file out of a Qt resource archive
    python scripts/data_tools.py png IMAGE OUT.png              an image (.pgm; a JPEG made upright) as PNG
    python scripts/data_tools.py check-pairs PAIRS.tsv          how alike each target and reference are

Frames are decoded one after another from the first (seeking is not frame-exact in every container),
so a frame index names the same picture on any machine with the same OpenCV wheel.
`check-pairs` fits a homography (SIFT + RANSAC) from reference to target and reports the PSNR of the
warped reference against the target over the overlap, with the overlap's share of the target: a
near-duplicate scores high PSNR over nearly all of the target, a different photograph does not.
"""
from __future__ import annotations

import argparse
import logging
import struct
import sys
import zlib
from pathlib import Path

log = logging.getLogger(__name__)


def extract_frame(video: Path, index: int, out: Path) -> None:
    """Writes frame `index` of `video` to `out` (PNG), decoding every frame before it."""
    import cv2

    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise ValueError(f"cannot open video {video}")
    for position in range(index + 1):
        ok, frame = capture.read()
        if not ok:
            raise ValueError(f"{video} has only {position} frames, frame {index} asked for")
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), frame):
        raise ValueError(f"cannot write {out}")


def to_png(image: Path, out: Path) -> None:
    """Writes `image` (any format OpenCV reads, e.g. PGM) as PNG; a JPEG is turned upright by its EXIF."""
    import cv2

    # IMREAD_COLOR applies the EXIF orientation; UNCHANGED keeps a grey PGM grey.
    flags = cv2.IMREAD_COLOR if image.suffix.lower() in (".jpg", ".jpeg") else cv2.IMREAD_UNCHANGED
    pixels = cv2.imread(str(image), flags)
    if pixels is None:
        raise ValueError(f"cannot read image {image}")
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), pixels):
        raise ValueError(f"cannot write {out}")


def _rcc_name(blob: bytes, names: int, offset: int) -> str:
    length = struct.unpack_from(">H", blob, names + offset)[0]
    start = names + offset + 6  # 2 bytes length, 4 bytes hash
    return blob[start:start + 2 * length].decode("utf-16-be")


def _rcc_data(blob: bytes, data: int, offset: int, flags: int) -> bytes:
    size = struct.unpack_from(">I", blob, data + offset)[0]
    payload = blob[data + offset + 4:data + offset + 4 + size]
    if flags & 0x01:  # zlib, qCompress layout: 4-byte big-endian length, then the zlib stream
        return zlib.decompress(payload[4:])
    if flags & 0x04:
        raise ValueError("zstd-compressed rcc entries are not supported")
    return payload


def rcc_files(archive: Path) -> dict[str, tuple[int, int]]:
    """Maps each file path inside a Qt .rcc archive to (data offset, flags)."""
    blob = archive.read_bytes()
    if blob[:4] != b"qres":
        raise ValueError(f"{archive} is not a Qt resource archive (no 'qres' magic)")
    version, tree, _data, names = struct.unpack_from(">IIII", blob, 4)
    node_size = 14 if version < 2 else 22  # version 2 adds an 8-byte modification time
    found: dict[str, tuple[int, int]] = {}

    def walk(node: int, prefix: str) -> None:
        base = tree + node * node_size
        name_offset, flags = struct.unpack_from(">IH", blob, base)
        name = "" if node == 0 else _rcc_name(blob, names, name_offset)
        path = f"{prefix}/{name}" if name else prefix
        if flags & 0x02:
            count, first = struct.unpack_from(">II", blob, base + 6)
            for child in range(first, first + count):
                walk(child, path)
        else:
            found[path.lstrip("/")] = (struct.unpack_from(">I", blob, base + 10)[0], flags)

    walk(0, "")
    return found


def extract_rcc(archive: Path, inner: str, out: Path) -> None:
    """Writes the file `inner` (e.g. gcompris/src/activities/erase/resource/x.jpg) out of `archive`."""
    files = rcc_files(archive)
    if inner not in files:
        raise ValueError(f"{inner} is not in {archive}")
    blob = archive.read_bytes()
    data = struct.unpack_from(">I", blob, 12)[0]
    offset, flags = files[inner]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(_rcc_data(blob, data, offset, flags))


def aligned_psnr(target_path: Path, reference_path: Path, side: int = 640) -> tuple[float, float, int]:
    """(PSNR of the homography-warped reference over the overlap, overlap share, RANSAC inliers)."""
    import cv2
    import numpy as np

    def load(path: Path) -> np.ndarray:
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise ValueError(f"cannot read {path}")
        scale = side / max(image.shape)
        return cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)

    target, reference = load(target_path), load(reference_path)
    sift = cv2.SIFT_create(4000)
    kt, dt = sift.detectAndCompute(target, None)
    kr, dr = sift.detectAndCompute(reference, None)
    if dt is None or dr is None or len(kt) < 8 or len(kr) < 8:
        return float("nan"), 0.0, 0
    matches = cv2.BFMatcher().knnMatch(dr, dt, k=2)
    good = [m for m, n in (p for p in matches if len(p) == 2) if m.distance < 0.75 * n.distance]
    if len(good) < 8:
        return float("nan"), 0.0, len(good)
    src = np.float32([kr[m.queryIdx].pt for m in good])
    dst = np.float32([kt[m.trainIdx].pt for m in good])
    homography, mask = cv2.findHomography(src, dst, cv2.RANSAC, 3.0)
    if homography is None:
        return float("nan"), 0.0, 0
    size = (target.shape[1], target.shape[0])
    warped = cv2.warpPerspective(reference, homography, size).astype(np.float64)
    cover = cv2.warpPerspective(np.ones_like(reference), homography, size) > 0
    share = float(cover.mean())
    if share < 0.05:
        return float("nan"), share, int(mask.sum())
    mse = float(np.mean((warped[cover] - target.astype(np.float64)[cover]) ** 2))
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-10)), share, int(mask.sum())


def check_pairs(pairs: Path) -> list[tuple[str, str, float, float, int]]:
    """(target, reference, aligned PSNR, overlap, inliers) for each pair of a pairs.tsv."""
    if not pairs.is_file():
        raise ValueError(f"pairs file not found: {pairs}")
    rows = []
    for line in pairs.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) < 2 or fields[0] in ("target", "target_photo"):
            continue
        psnr, share, inliers = aligned_psnr(pairs.parent / fields[0], pairs.parent / fields[1])
        rows.append((fields[0], fields[1], psnr, share, inliers))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    frame = sub.add_parser("frame")
    frame.add_argument("video", type=Path)
    frame.add_argument("index", type=int)
    frame.add_argument("out", type=Path)
    rcc = sub.add_parser("rcc")
    rcc.add_argument("archive", type=Path)
    rcc.add_argument("inner")
    rcc.add_argument("out", type=Path)
    png = sub.add_parser("png")
    png.add_argument("image", type=Path)
    png.add_argument("out", type=Path)
    listing = sub.add_parser("rcc-list")
    listing.add_argument("archive", type=Path)
    check = sub.add_parser("check-pairs")
    check.add_argument("pairs", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "frame":
            extract_frame(args.video, args.index, args.out)
        elif args.command == "rcc":
            extract_rcc(args.archive, args.inner, args.out)
        elif args.command == "png":
            to_png(args.image, args.out)
        elif args.command == "rcc-list":
            print("\n".join(sorted(rcc_files(args.archive))))
        else:
            rows = check_pairs(args.pairs)
            print("target\treference\taligned_psnr_db\toverlap\tinliers")
            for target, reference, psnr, share, inliers in rows:
                print(f"{target}\t{reference}\t{psnr:.2f}\t{share:.2f}\t{inliers}")
    except ValueError as error:
        print(f"data_tools: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
