"""A side-by-side crop for the README: bicubic ×4, each model's output, and the reference region it matched.

Usage:
    .venv/bin/python scripts/before_after.py TARGET REFERENCE --model A.safetensors [--model B ...] \
        --out docs/images/motorcycle.png [--center ROW,COL] [--crop 128] [--zoom 2]

The crop is centred where the first model moved the most texture (soft attention × the detail it added,
as the gallery does) unless ``--center`` gives an LR position. The reference panel is the region the first
model's hard attention chose at that point, at the output's scale.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pipeline import images
from pipeline.attention import AttentionMaps, reference_point
from pipeline.enhance import enhance_arrays, fit_reference
from pipeline.gallery.heat import peak_region, transfer_weight
from pipeline.params import EnhanceParams
from ttsr_core.config import SCALE
from ttsr_core.model.checkpoint import load_checkpoint


def _crop(image: np.ndarray, cy: float, cx: float, side: int) -> np.ndarray:
    """side × side pixels of image centred at (cy, cx), shifted to stay inside it."""
    h, w = image.shape[:2]
    side = min(side, h, w)
    top = int(min(max(0, round(cy - side / 2)), h - side))
    left = int(min(max(0, round(cx - side / 2)), w - side))
    return image[top : top + side, left : left + side]


def _label(panel: np.ndarray, text: str, zoom: int) -> Image.Image:
    """The panel enlarged by nearest neighbour (pixels stay visible), with its caption underneath."""
    im = Image.fromarray(panel).resize((panel.shape[1] * zoom, panel.shape[0] * zoom), Image.Resampling.NEAREST)
    out = Image.new("RGB", (im.width, im.height + 18), "white")
    out.paste(im, (0, 0))
    ImageDraw.Draw(out).text((4, im.height + 3), text, fill="black")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("target", type=Path)
    p.add_argument("reference", type=Path)
    p.add_argument("--model", type=Path, action="append", required=True, help="checkpoint; repeat to compare")
    p.add_argument("--name", action="append", default=[], help="caption of each --model, in order")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--center", help="ROW,COL of the crop centre on the LR grid (default: most transfer)")
    p.add_argument("--crop", type=int, default=128, help="crop side in output pixels (default 128)")
    p.add_argument("--zoom", type=int, default=2, help="nearest-neighbour enlargement of each panel")
    args = p.parse_args(argv)
    lr, _ = images.load_rgb(args.target)
    ref, _ = images.load_rgb(args.reference)
    params = EnhanceParams()
    outputs = [enhance_arrays(load_checkpoint(m).model, lr, [ref], params) for m in args.model]
    h, w = lr.shape[:2]
    bicubic = np.asarray(Image.fromarray(lr).resize((w * SCALE, h * SCALE), Image.Resampling.BICUBIC))
    first = outputs[0]
    if args.center:
        row, col = (int(v) for v in args.center.split(","))
    else:
        weight = transfer_weight(first.soft_attention, first.image, bicubic)
        row, col = peak_region(weight.astype(np.float32), max(1, args.crop // (2 * SCALE)))
    cy, cx = (row + 0.5) * SCALE, (col + 0.5) * SCALE
    panels = [_label(_crop(bicubic, cy, cx, args.crop), "bicubic x4", args.zoom)]
    names = args.name + [m.stem for m in args.model[len(args.name):]]
    panels += [_label(_crop(o.image, cy, cx, args.crop), n, args.zoom) for o, n in zip(outputs, names)]
    fitted = fit_reference(ref, max(h, w), params.ref_side_factor)
    maps = AttentionMaps(first.soft_attention, first.hard_attention, first.ref_grids)
    point = reference_point(maps, (row, col), [fitted.shape[:2]])
    if not isinstance(point, str):
        _, ry, rx, _ = point
        panels.append(_label(_crop(fitted, ry, rx, args.crop), f"reference ({names[0]}'s match)", args.zoom))
    sheet = Image.new("RGB", (sum(pn.width for pn in panels) + 4 * (len(panels) - 1), panels[0].height), "white")
    x = 0
    for pn in panels:
        sheet.paste(pn, (x, 0))
        x += pn.width + 4
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(f"{args.out}: crop centred at LR ({row}, {col}), {len(panels)} panels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
