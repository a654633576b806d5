"""Evaluate a TTSR checkpoint on (target HR, reference) pairs with the C2-Matching/DATSR protocol.

``python -m ttsr_core.evaluate --model M --pairs data/validation/pairs.tsv [--json OUT]``

HR is cropped to a multiple of 4, LR = PIL bicubic ↓4; Y-channel PSNR/SSIM with a 4-pixel border.
Rows: bicubic; the model with its reference; with the LR↑ image as its own reference (no outside
texture); with a wrong reference (the next pair's reference).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from .checkpoint import load_checkpoint
from .config import SearchConfig, SearchMode
from .inference import SCALE, resize_bicubic, super_resolve
from .metrics import psnr_y, ssim_y
from .net import TTSR

logger = logging.getLogger(__name__)

ROWS = ("bicubic", "model + reference", "model + LR↑ as reference", "model + wrong reference")


@dataclass(frozen=True)
class Pair:
    name: str
    target: np.ndarray  # HR, uint8 RGB
    reference: np.ndarray


def _load(path: Path, max_side: int) -> np.ndarray:
    with Image.open(path) as im:
        im = im.convert("RGB")
        if max_side and max(im.size) > max_side:
            s = max_side / max(im.size)
            im = im.resize((round(im.width * s), round(im.height * s)), Image.BICUBIC)
        return np.asarray(im)


def read_pairs(tsv: Path, max_side: int = 0) -> list[Pair]:
    """Pairs from a TSV whose first two columns name the target and reference (relative to the TSV)."""
    if not tsv.is_file():
        raise ValueError(f"pairs file not found: {tsv}")
    pairs = []
    for line in tsv.read_text().splitlines():
        cols = line.split("\t")
        if len(cols) < 2 or not cols[0] or cols[0].startswith("#") or cols[0] in ("target", "file"):
            continue
        t, r = tsv.parent / cols[0], tsv.parent / cols[1]
        pairs.append(Pair(Path(cols[0]).stem, _load(t, max_side), _load(r, max_side)))
    if not pairs:
        raise ValueError(f"no pairs in {tsv}")
    return pairs


def holdout_pairs(folder: Path, names: Sequence[str], max_side: int) -> list[Pair]:
    """Pairs from held-out photos: target = left 60 %, reference = right 60 % (same scene, reframed)."""
    pairs = []
    for name in names:
        img = _load(folder / name, max_side)
        w = img.shape[1]
        pairs.append(Pair(Path(name).stem, img[:, : int(w * 0.6)], img[:, int(w * 0.4) :]))
    return pairs


def crop4(img: np.ndarray) -> np.ndarray:
    return img[: img.shape[0] // SCALE * SCALE, : img.shape[1] // SCALE * SCALE]


def evaluate(model: TTSR, pairs: Sequence[Pair], search: SearchConfig, tile: int | None = None) -> dict:
    """Per-pair and mean Y-PSNR/SSIM for the four rows."""
    per_pair = []
    for i, pair in enumerate(pairs):
        hr = crop4(pair.target)
        lr = resize_bicubic(hr, hr.shape[1] // SCALE, hr.shape[0] // SCALE)
        lr_up = resize_bicubic(lr, hr.shape[1], hr.shape[0])
        wrong = pairs[(i + 1) % len(pairs)].reference if len(pairs) > 1 else np.ascontiguousarray(pair.reference[::-1, ::-1])
        outputs = {"bicubic": lr_up}
        kw = {"search": search} | ({"tile": tile} if tile else {})
        t0 = time.perf_counter()
        outputs["model + reference"] = super_resolve(model, lr, [pair.reference], **kw).image
        t_model = time.perf_counter() - t0
        outputs["model + LR↑ as reference"] = super_resolve(model, lr, [lr_up], **kw).image
        outputs["model + wrong reference"] = super_resolve(model, lr, [wrong], **kw).image
        row = {"pair": pair.name, "lr_size": [lr.shape[1], lr.shape[0]], "seconds": round(t_model, 2)}
        for name, img in outputs.items():
            row[name] = {"psnr": psnr_y(img, hr), "ssim": ssim_y(img, hr)}
        logger.info("%s: %s", pair.name, {k: round(v["psnr"], 2) for k, v in row.items() if isinstance(v, dict)})
        per_pair.append(row)
    mean = {name: {m: float(np.mean([r[name][m] for r in per_pair])) for m in ("psnr", "ssim")} for name in ROWS}
    return {"pairs": per_pair, "mean": mean}


def format_table(results: dict, title: str) -> str:
    lines = [f"### {title}", "", "| row | Y-PSNR (dB) | SSIM | Δ vs bicubic (dB) |", "| --- | ---: | ---: | ---: |"]
    base = results["mean"]["bicubic"]["psnr"]
    for name in ROWS:
        m = results["mean"][name]
        lines.append(f"| {name} | {m['psnr']:.2f} | {m['ssim']:.4f} | {m['psnr'] - base:+.2f} |")
    lines += ["", "| pair | LR size | bicubic | +reference | +LR↑ ref | +wrong ref |", "| --- | --- | ---: | ---: | ---: | ---: |"]
    for r in results["pairs"]:
        lines.append(f"| {r['pair']} | {r['lr_size'][0]}×{r['lr_size'][1]} | " + " | ".join(f"{r[n]['psnr']:.2f}" for n in ROWS) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ttsr_core.evaluate",
        description="Y-PSNR/SSIM (4-px border) of a TTSR checkpoint on (target, reference) pairs: bicubic, "
        "model with its reference, with LR↑ as its own reference, and with a wrong reference.",
        epilog="Example: python -m ttsr_core.evaluate --model models/ttsr-lite/ttsr-lite-x4.safetensors "
        "--pairs data/validation/pairs.tsv --holdout-dir data/training --json eval.json",
    )
    p.add_argument("--model", type=Path, required=True, help="checkpoint (ours or the authors' TTSR.pt)")
    p.add_argument("--pairs", type=Path, help="TSV: target<TAB>reference[<TAB>…], paths relative to the TSV")
    p.add_argument("--holdout-dir", type=Path, help="folder of held-out photos (names from the checkpoint's meta)")
    p.add_argument("--max-side", type=int, default=0, help="downscale photos to this long side first (0: no)")
    p.add_argument("--search", choices=[m.value for m in SearchMode], default="exact")
    p.add_argument("--tile", type=int, default=0, help="LR tile size (0: whole image)")
    p.add_argument("--json", type=Path, help="write all figures as JSON here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if not args.pairs and not args.holdout_dir:
        p.error("give --pairs and/or --holdout-dir")
    try:
        loaded = load_checkpoint(args.model)
    except ValueError as exc:  # CheckpointError included: a clear one-liner, not a traceback
        p.exit(2, f"error: {exc}\n")
    search = SearchConfig(mode=SearchMode(args.search))
    report: dict = {"model": str(args.model), "model_sha256": loaded.sha256, "search": args.search, "protocol":
                    "HR cropped to ×4, LR = PIL bicubic ↓4, Y (BT.601) PSNR/SSIM, 4-px border"}
    if args.pairs:
        res = evaluate(loaded.model, read_pairs(args.pairs, args.max_side), search, args.tile or None)
        report["validation_pairs"] = res
        print(format_table(res, f"validation pairs ({args.pairs})"))
    if args.holdout_dir:
        names = loaded.meta.get("holdout") or []
        if not names:
            p.error("the checkpoint records no held-out photos (meta 'holdout')")
        res = evaluate(loaded.model, holdout_pairs(args.holdout_dir, names, args.max_side or 1024), search, args.tile or None)
        report["holdout_photos"] = res
        print(format_table(res, f"held-out training photos ({', '.join(names)})"))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
