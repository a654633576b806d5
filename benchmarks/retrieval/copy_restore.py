"""Y-PSNR over bicubic of a copy restored from its original (pipeline.matching.restore), on the yardstick photos.

Every photo of ``data/different-pairs`` (long side ``--side``) is an original; its copy is the photo
reduced to 0.25 (area) and saved as JPEG quality 70. The copy is detected against its original
(pipeline.matching.copies), restored ×4 from it and compared with the original, beside the copy's bicubic ×4;
a second row restores it as `refsr enhance` does (pipeline.matching.restore.restore_from_original, which checks
the pixels again) and encodes it as enhance writes a JPEG copy's output (JPEG quality 95).

    PYTHONPATH=. .venv/bin/python benchmarks/retrieval/copy_restore.py
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
from pipeline.matching.copies import check_copy  # noqa: E402
from pipeline.matching.restore import restore_copy, restore_from_original  # noqa: E402
from pipeline.matching.verification import local_features  # noqa: E402
from pipeline.params import VerifySettings  # noqa: E402
from retrieval_recall import load_rgb  # noqa: E402
from ttsr_core.arrays import resize_bicubic  # noqa: E402
from ttsr_core.metrics import psnr_y  # noqa: E402
from verified_recall import read_yardstick  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("data"))
    p.add_argument("--side", type=int, default=1600)
    args = p.parse_args(argv)
    folder = args.data / "different-pairs"
    names = sorted({n for pair in read_yardstick(folder) for n in pair})
    gains, missed, seconds, written = [], [], [], []
    for n in names:
        original = load_rgb(folder / n, args.side)
        h, w = (s - s % 4 for s in original.shape[:2])
        original = original[:h, :w]
        small = cv2.resize(original, (w // 4, h // 4), interpolation=cv2.INTER_AREA)
        buf = io.BytesIO()
        Image.fromarray(small).save(buf, "JPEG", quality=70)
        copy = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), dtype=np.uint8)
        feats = VerifySettings()
        verdict = check_copy(copy, local_features(copy, feats), original, local_features(original, feats))
        if not verdict.is_copy or verdict.copy_to_original is None:
            missed.append(n)
            continue
        t0 = time.perf_counter()
        restored = restore_copy(copy, original, verdict.copy_to_original, 4.0)
        seconds.append(time.perf_counter() - t0)
        bicubic = psnr_y(resize_bicubic(copy, w, h), original)
        gains.append(psnr_y(restored, original) - bicubic)
        written.append(_as_enhance_writes(copy, original) - bicubic)
    g = np.array(gains)
    print(cpu())
    print(f"{len(names)} originals (long side {args.side}), copies at 0.25x JPEG q70: {len(gains)} detected and "
          f"restored x4; not detected: {', '.join(missed) or 'none'}\n")
    print("| Y-PSNR gain over bicubic | mean | median | min | max | share ≥ +8 dB | s/restoration |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(f"| restored from the original | {g.mean():+.2f} dB | {np.median(g):+.2f} dB | {g.min():+.2f} dB "
          f"| {g.max():+.2f} dB | {(g >= 8).mean():.2f} | {np.mean(seconds):.2f} |")
    e = np.array(written)
    print(f"| as `refsr enhance` writes it (JPEG q95) | {e.mean():+.2f} dB | {np.median(e):+.2f} dB | {e.min():+.2f} dB "
          f"| {e.max():+.2f} dB | {(e >= 8).mean():.2f} | - |")
    return 0


def _as_enhance_writes(copy: np.ndarray, original: np.ndarray) -> float:
    """Y-PSNR against the original of the restoration `refsr enhance` makes, saved as it saves a JPEG copy's output."""
    found = restore_from_original(copy, original, 4.0)
    if found is None:
        return float("nan")
    buf = io.BytesIO()
    Image.fromarray(np.rint(found.image).astype(np.uint8)).save(buf, "JPEG", quality=95)
    return psnr_y(np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")), original)


if __name__ == "__main__":
    raise SystemExit(main())
