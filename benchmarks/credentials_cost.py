"""What provenance in the file costs per output: seconds and bytes of the XMP packet and of the signed C2PA manifest.

Writes one output-sized image per format three ways through `pipeline.images.save_atomic` (plain;
XMP only; XMP + signed manifest with the target and references as ingredients) and reports the
median time of each and the bytes each adds. Pixels come from a real photo when given (the ×4
output is stood in for by a bicubic ×4 of the target: the cost depends on the size and the
encoder, not on the model), else from a seeded synthetic scene.

    python benchmarks/credentials_cost.py                          # synthetic 480x360 target, 1 reference
    python benchmarks/credentials_cost.py --target T.jpg --ref R.jpg --refs 2 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import cpu  # noqa: E402
from pipeline.images import load_rgb, save_atomic  # noqa: E402
from pipeline.provenance.facts import Provenance, ReferenceFact  # noqa: E402
from pipeline.provenance.signing import local_identity  # noqa: E402
from pipeline.provenance.stamp import ProvenanceStamp, StampRequest, ingredients_for, thumbnail_jpeg  # noqa: E402

FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "TIFF": ".tif"}


def _synthetic(path: Path, seed: int, size: tuple[int, int]) -> Path:
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = rng.uniform(40, 200, 3) + 20 * np.sin(xx[..., None] * 0.05 + yy[..., None] * 0.03 + rng.uniform(0, 6, 3))
    img = img + rng.normal(0, 8, img.shape)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=92)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", type=Path, help="target photo (default: a synthetic 480x360 JPEG)")
    ap.add_argument("--ref", type=Path, help="reference photo (default: a synthetic 1920x1440 JPEG)")
    ap.add_argument("--refs", type=int, default=1, help="references per output (the same file repeated)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        target = args.target or _synthetic(tmp / "target.jpg", 1, (360, 480))
        ref = args.ref or _synthetic(tmp / "ref.jpg", 2, (1440, 1920))
        lr, meta = load_rgb(target)
        ref_rgb, ref_meta = load_rgb(ref)
        out = np.asarray(Image.fromarray(lr).resize((lr.shape[1] * 4, lr.shape[0] * 4), Image.BICUBIC))
        facts = tuple(ReferenceFact(i, f"{i + 2:064x}", 0.9, 0.5) for i in range(args.refs))
        provenance = Provenance("1" * 64, facts, "ttsr-lite-x4", "3" * 64, "0.1.0", "4" * 64, run_id=1)
        identity = local_identity(tmp / "home")
        sources = [(ref, ref_meta.format, ref_rgb)] * args.refs
        print(f"CPU: {cpu()}; output {out.shape[1]}x{out.shape[0]}, {args.refs} reference(s) "
              f"({ref_rgb.shape[1]}x{ref_rgb.shape[0]}), median of {args.repeats}")
        print("| format | plain | + XMP | + XMP + C2PA | XMP bytes | C2PA bytes | C2PA time |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for fmt, ext in FORMATS.items():
            times: dict[str, list[float]] = {"plain": [], "xmp": [], "c2pa": []}
            sizes: dict[str, int] = {}
            for _ in range(args.repeats):
                for kind in times:
                    path = tmp / f"out-{kind}{ext}"
                    t0 = time.perf_counter()
                    stamp = None
                    if kind != "plain":
                        request = StampRequest(provenance, identity=identity if kind == "c2pa" else None)
                        signing = request.identity is not None
                        stamp = ProvenanceStamp(
                            request, ingredients_for(provenance, (target, meta.format, lr), sources) if signing else (),
                            thumbnail_jpeg(out) if signing else b"")
                    save_atomic(path, out, meta, format=fmt, stamp=stamp)
                    times[kind].append(time.perf_counter() - t0)
                    sizes[kind] = path.stat().st_size
            med = {k: statistics.median(v) for k, v in times.items()}
            print(f"| {fmt} | {med['plain'] * 1000:.0f} ms ({sizes['plain'] / 1e6:.2f} MB) | {med['xmp'] * 1000:.0f} ms "
                  f"| {med['c2pa'] * 1000:.0f} ms | +{sizes['xmp'] - sizes['plain']:,} | "
                  f"+{sizes['c2pa'] - sizes['xmp']:,} | +{(med['c2pa'] - med['xmp']) * 1000:.0f} ms |")


if __name__ == "__main__":
    main()
