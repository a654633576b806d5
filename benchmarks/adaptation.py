"""Does fine-tuning on an album's own references help its targets? (issue 20, item 3)

Protocol: the different-photograph yardstick (``data/different-pairs/pairs.tsv``) grouped by scene (the
file-name prefix before ``__``). For each scene the "album" is the scene's reference photos only; its
targets are never seen. ``ttsr_core.training.adapt.adapt`` tunes the base model on the references and the
scene's pairs are evaluated (right reference, clean bicubic and JPEG-q75 LR, Y-PSNR with a 4-px
border, photos at a long side of ``--max-side``, back-projection as ``refsr enhance`` does) after
each number of steps in ``--curve``. Prints the mean gain over the base model per step count.

    .venv/bin/python benchmarks/adaptation.py --model models/ttsr-lite/ttsr-lite-x4.safetensors \\
        --pairs data/different-pairs/pairs.tsv --curve 0,50,100,200 --part main --json adapt.json
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ttsr_core.config import SearchConfig, SearchMode  # noqa: E402
from ttsr_core.metrics import psnr_y  # noqa: E402
from ttsr_core.model.checkpoint import load_checkpoint  # noqa: E402
from ttsr_core.model.consistency import make_consistent  # noqa: E402
from ttsr_core.model.inference import super_resolve  # noqa: E402
from ttsr_core.training.adapt import AdaptPart, AdaptSettings, adapt  # noqa: E402
from ttsr_core.training.data import load_photo  # noqa: E402
from ttsr_core.training.degradations import degrade  # noqa: E402
from ttsr_core.training.evaluate import crop4  # noqa: E402

logger = logging.getLogger(__name__)


def scenes(tsv: Path) -> dict[str, list[tuple[str, str]]]:
    """Scene name → its (target, reference) file names, in the TSV's order."""
    out: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for line in tsv.read_text().splitlines():
        cols = line.split("\t")
        if len(cols) >= 2 and cols[0] not in ("target", "") and not cols[0].startswith("#"):
            out[cols[0].split("__")[0]].append((cols[0], cols[1]))
    return dict(out)


def scene_psnr(model, pairs: list[tuple[np.ndarray, np.ndarray]], degradation: str) -> list[float]:
    search = SearchConfig(mode=SearchMode.FAST)
    values = []
    for i, (target, ref) in enumerate(pairs):
        hr = crop4(target)
        lr = degrade(hr, degradation, seed=i)
        values.append(psnr_y(make_consistent(super_resolve(model, lr, [ref], search=search).image, lr), hr))
    return values


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--pairs", type=Path, default=Path("data/different-pairs/pairs.tsv"))
    p.add_argument("--curve", default="0,50,100,200", help="step counts to evaluate at (comma-separated)")
    p.add_argument("--part", choices=[a.value for a in AdaptPart], default="main")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--degradation", default="mixed", help="LR pipeline the adaptation trains on")
    p.add_argument("--max-side", type=int, default=640)
    p.add_argument("--scenes", type=int, default=0, help="only the first N scenes (0: all)")
    p.add_argument("--amp", choices=["bfloat16"], default=None)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    curve = sorted({int(c) for c in args.curve.split(",")})
    base = load_checkpoint(args.model).model.eval()
    groups = scenes(args.pairs)
    names = list(groups)[: args.scenes or None]
    rows: dict[str, dict] = {}
    for name in names:
        files = groups[name]
        loaded = [(load_photo(args.pairs.parent / t, args.max_side), load_photo(args.pairs.parent / r, args.max_side))
                  for t, r in files]
        album = list({r: load_photo(args.pairs.parent / r, args.max_side) for _, r in files}.values())
        settings = AdaptSettings(steps=max(curve), batch_size=args.batch_size, lr=args.lr, part=args.part,
                                 degradation=args.degradation, max_side=args.max_side)
        snaps: dict[int, torch.nn.Module] = {0: base} if 0 in curve else {}
        t0 = time.perf_counter()
        usable = all(min(photo.shape[:2]) >= 1.2 * settings.ref_patch for photo in album)
        if usable and max(curve) > 0:
            adapt(base, album, settings, amp=args.amp,
                  on_step=lambda step, loss, m: snaps.__setitem__(step, copy.deepcopy(m).eval()) if step in curve else None)
        seconds = time.perf_counter() - t0
        rows[name] = {"pairs": len(files), "album_photos": len(album), "adapt_seconds": round(seconds, 1), "psnr": {}}
        for steps, model in sorted(snaps.items()):
            with torch.no_grad():
                rows[name]["psnr"][steps] = {deg: scene_psnr(model, loaded, deg) for deg in ("bicubic", "jpeg75")}
        logger.info("%s: %s", name, {s: {d: round(float(np.mean(v)), 2) for d, v in r.items()}
                                     for s, r in rows[name]["psnr"].items()})
    report = {"model": args.model.name, "part": args.part, "lr": args.lr, "batch_size": args.batch_size,
              "degradation": args.degradation, "cpu": platform.processor() or platform.machine(), "scenes": rows}
    print("| steps | clean: Δ vs base (dB) | JPEG-q75: Δ vs base (dB) | scenes |")
    print("| ---: | ---: | ---: | ---: |")
    for steps in curve:
        deltas = {deg: [] for deg in ("bicubic", "jpeg75")}
        for row in rows.values():
            if steps in row["psnr"] and 0 in row["psnr"]:
                for deg in deltas:
                    deltas[deg] += list(np.subtract(row["psnr"][steps][deg], row["psnr"][0][deg]))
        count = sum(steps in r["psnr"] for r in rows.values())
        print(f"| {steps} | {np.mean(deltas['bicubic']):+.3f} | {np.mean(deltas['jpeg75']):+.3f} | {count} |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
