"""Does a wrong reference add more detail than none? Issue 20's "never worse than no reference", on the sample album.

For each target of examples/album, the mean |output − bicubic| (grey levels, no back-projection) with
its right reference, with another scene's reference (wrong) and with its own LR↑ (self, nothing to
transfer). A model whose gate shuts on a wrong reference gives wrong ≤ self.

    .venv/bin/python benchmarks/wrong_reference_detail.py [--model models/ttsr-lite/ttsr-lite-x4.safetensors ...]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
ALBUM = ROOT / "examples" / "album"
PAIRS = [("aloe/old-phone/aloeL-small.jpg", "aloe/aloeR.jpg"),
         ("graffiti/from-chat/graf1-small.jpg", "graffiti/graf3.png"),
         ("leuven/from-chat/leuvenA-small.jpg", "leuven/leuvenB.jpg"),
         ("motorcycle/old-phone/motorcycle-small.jpg", "motorcycle/motorcycle_right.png")]


def _load(rel: str) -> np.ndarray:
    return np.asarray(Image.open(ALBUM / rel).convert("RGB"))


def detail(model_path: Path) -> list[tuple[str, dict[str, float]]]:
    from ttsr_core.model.checkpoint import load_checkpoint
    from ttsr_core.model.inference import resize_bicubic, super_resolve
    from pipeline.enhance import fit_reference

    model = load_checkpoint(model_path).model
    rows = []
    for i, (target, right) in enumerate(PAIRS):
        lr = _load(target)
        up = resize_bicubic(lr, lr.shape[1] * 4, lr.shape[0] * 4)
        refs = {"right": _load(right), "wrong": _load(PAIRS[(i + 2) % len(PAIRS)][1]), "self": up}
        row = {}
        for name, ref in refs.items():
            fitted = fit_reference(ref, max(lr.shape[:2]), 4.0)
            out = super_resolve(model, lr, [fitted]).image.astype(np.float64)
            row[name] = float(np.abs(out - up.astype(np.float64)).mean())
        rows.append((target, row))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, nargs="+",
                        default=[ROOT / "models/ttsr-lite/ttsr-lite-x4.safetensors",
                                 ROOT / "models/ttsr-lite/ttsr-lite-x4-round2.safetensors"])
    args = parser.parse_args()
    print("| model | target | right | wrong | self | wrong ≤ self |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for path in args.model:
        for target, row in detail(path):
            print(f"| {path.name} | {target} | {row['right']:.2f} | {row['wrong']:.2f} | {row['self']:.2f} | "
                  f"{'yes' if row['wrong'] <= row['self'] else 'no'} |")


if __name__ == "__main__":
    main()
