"""Evaluate a TTSR checkpoint on (target HR, reference) pairs with the C2-Matching/DATSR protocol.

``python -m ttsr_core.training.evaluate --model M --pairs data/validation/pairs.tsv [--json OUT]``

HR is cropped to a multiple of 4; LR = PIL bicubic ↓4 (``bicubic``) and, as albums have it, that LR saved
as JPEG at quality 75 (``jpeg75``). Y-channel PSNR/SSIM with a 4-pixel border. Rows per LR: bicubic ↑4
of the LR; the model with its reference; with the LR↑ image as its own reference (no outside texture);
with a wrong reference (the reference of the pair half the list away, so another scene when a set
lists a scene's pairs together). Each row also records its LR fidelity: the luma PSNR of the output
bicubic-downscaled back against the LR (``metrics.lr_fidelity``). ``--consistency N`` applies N steps of
back-projection (``ttsr_core.model.consistency``) to every model output. Optionally the texture extractor's
matching accuracy.
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

from ttsr_core.config import SCALE, Precision, SearchConfig, SearchMode
from ttsr_core.metrics import lr_fidelity, psnr_y, ssim_y
from ttsr_core.model.checkpoint import load_checkpoint
from ttsr_core.model.consistency import make_consistent
from ttsr_core.model.inference import resize_bicubic, super_resolve
from ttsr_core.model.net import TTSR
from ttsr_core.training.data import load_photo
from ttsr_core.training.degradations import LR_PIPELINES, degrade
from ttsr_core.training.matching import graf_sample, score, warped_samples

logger = logging.getLogger(__name__)

ROWS = ("bicubic", "model + reference", "model + LR↑ as reference", "model + wrong reference")
DEGRADATIONS = ("bicubic", "jpeg75")


@dataclass(frozen=True)
class Pair:
    name: str
    target: np.ndarray  # HR, uint8 RGB
    reference: np.ndarray


def _load(path: Path, max_side: int) -> np.ndarray:
    return load_photo(path, max_side or 10**9)


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


def wrong_reference(pairs: Sequence[Pair], i: int) -> np.ndarray:
    """The reference of the pair half the list away (another scene in sets that group a scene's pairs)."""
    if len(pairs) == 1:
        return np.ascontiguousarray(pairs[0].reference[::-1, ::-1])
    return pairs[(i + max(1, len(pairs) // 2)) % len(pairs)].reference


def evaluate(model: TTSR, pairs: Sequence[Pair], search: SearchConfig, tile: int | None = None,
             degradation: str = "bicubic", consistency: int = 0, precision: Precision | None = None) -> dict:
    """Per-pair and mean Y-PSNR/SSIM and LR fidelity for the four rows, with the LR made by ``degradation``."""
    per_pair = []
    kw = {"search": search, "amp_dtype": precision} | ({"tile": tile} if tile else {})

    def run(lr: np.ndarray, ref: np.ndarray) -> np.ndarray:
        return make_consistent(super_resolve(model, lr, [ref], **kw).image, lr, consistency)

    for i, pair in enumerate(pairs):
        hr = crop4(pair.target)
        lr = degrade(hr, degradation, seed=i)
        lr_up = resize_bicubic(lr, hr.shape[1], hr.shape[0])
        outputs = {"bicubic": lr_up}
        t0 = time.perf_counter()
        outputs["model + reference"] = run(lr, pair.reference)
        t_model = time.perf_counter() - t0
        outputs["model + LR↑ as reference"] = run(lr, lr_up)
        outputs["model + wrong reference"] = run(lr, wrong_reference(pairs, i))
        row = {"pair": pair.name, "lr_size": [lr.shape[1], lr.shape[0]], "seconds": round(t_model, 2)}
        for name, img in outputs.items():
            row[name] = {"psnr": psnr_y(img, hr), "ssim": ssim_y(img, hr), "lr_psnr": lr_fidelity(img, lr)}
        logger.info("%s (%s): %s", pair.name, degradation,
                    {k: round(v["psnr"], 2) for k, v in row.items() if isinstance(v, dict)})
        per_pair.append(row)
    mean = {name: {m: float(np.mean([r[name][m] for r in per_pair])) for m in ("psnr", "ssim", "lr_psnr")}
            for name in ROWS}
    return {"degradation": degradation, "consistency": consistency, "pairs": per_pair, "mean": mean}


def format_table(results: dict, title: str) -> str:
    lines = [f"### {title}", "", "| row | Y-PSNR (dB) | SSIM | Δ vs bicubic (dB) | LR fidelity (dB) |",
             "| --- | ---: | ---: | ---: | ---: |"]
    base = results["mean"]["bicubic"]["psnr"]
    for name in ROWS:
        m = results["mean"][name]
        lines.append(f"| {name} | {m['psnr']:.2f} | {m['ssim']:.4f} | {m['psnr'] - base:+.2f} | {m['lr_psnr']:.2f} |")
    lines += ["", "| pair | LR size | bicubic | +reference | +LR↑ ref | +wrong ref |", "| --- | --- | ---: | ---: | ---: | ---: |"]
    for r in results["pairs"]:
        lines.append(f"| {r['pair']} | {r['lr_size'][0]}×{r['lr_size'][1]} | " + " | ".join(f"{r[n]['psnr']:.2f}" for n in ROWS) + " |")
    return "\n".join(lines)


def summary(results: dict) -> dict[str, float]:
    """The figures the targets are stated in: gain over bicubic, right − wrong, right − LR↑, self − wrong,
    how many pairs the right reference wins against the wrong one, and on how many pairs the output's
    LR fidelity is at least bicubic's."""
    m = {k: v["psnr"] for k, v in results["mean"].items()}
    rows = results["pairs"]
    right, wrong, self_ = "model + reference", "model + wrong reference", "model + LR↑ as reference"
    return {"gain_db": m[right] - m["bicubic"],
            "right_minus_wrong_db": m[right] - m[wrong],
            "right_minus_self_db": m[right] - m[self_],
            "self_minus_wrong_db": m[self_] - m[wrong],
            "right_wins": sum(r[right]["psnr"] > r[wrong]["psnr"] for r in rows),
            "fidelity_at_least_bicubic": sum(r[right]["lr_psnr"] >= r["bicubic"]["lr_psnr"] for r in rows),
            "pairs": len(rows)}


def matching_report(model: TTSR, holdout_dir: Path | None, names: Sequence[str], pairs_dir: Path | None) -> dict:
    """Matching accuracy on warped held-out photos and, when graf's homography is there, on graf1 → graf3."""
    out: dict[str, dict] = {}
    if holdout_dir and names:
        photos = [load_photo(holdout_dir / n, 1600) for n in names]
        out["warped_holdout"] = score(model, warped_samples(photos)).as_dict()
    if pairs_dir and (pairs_dir / "H1to3p.xml").is_file():
        out["graf1_to_graf3"] = score(model, [graf_sample(pairs_dir)]).as_dict()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ttsr_core.training.evaluate",
        description="Y-PSNR/SSIM (4-px border) of a TTSR checkpoint on (target, reference) pairs: bicubic, "
        "model with its reference, with LR↑ as its own reference, and with a wrong reference; for clean "
        "bicubic LR and for JPEG-q75 LR. --matching adds the texture extractor's matching accuracy.",
        epilog="Example: python -m ttsr_core.training.evaluate --model models/ttsr-lite/ttsr-lite-x4.safetensors "
        "--pairs data/validation/pairs.tsv --holdout-dir data/training --matching --json eval.json",
    )
    p.add_argument("--model", type=Path, required=True, help="checkpoint (ours or the authors' TTSR.pt)")
    p.add_argument("--pairs", type=Path, nargs="*", default=[],
                   help="TSVs: target<TAB>reference[<TAB>…], paths relative to the TSV")
    p.add_argument("--holdout-dir", type=Path, help="folder of held-out photos (names from the checkpoint's meta)")
    p.add_argument("--degradations", default=",".join(DEGRADATIONS),
                   help=f"comma-separated LR pipelines of ttsr_core.training.degradations (default {','.join(DEGRADATIONS)})")
    p.add_argument("--matching", action="store_true", help="also measure matching accuracy (warped held-out photos, graf)")
    p.add_argument("--max-side", type=int, default=0, help="downscale photos to this long side first (0: no)")
    p.add_argument("--search", choices=[m.value for m in SearchMode], default="exact")
    p.add_argument("--tile", type=int, default=0, help="LR tile size (0: whole image)")
    p.add_argument("--consistency", type=int, default=0,
                   help="back-projection steps applied to every model output (0: none; refsr's default is 3)")
    p.add_argument("--precision", choices=["float32", "bfloat16"], default="float32",
                   help="autocast for the network (bfloat16 pays on CPUs with native bf16; default float32)")
    p.add_argument("--json", type=Path, help="write all figures as JSON here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if not args.pairs and not args.holdout_dir:
        p.error("give --pairs and/or --holdout-dir")
    degradations = [d.strip() for d in args.degradations.split(",") if d.strip()]
    unknown = [d for d in degradations if d not in LR_PIPELINES]
    if unknown or not degradations:
        p.error(f"unknown degradations {unknown}; choose from {sorted(LR_PIPELINES)}")
    try:
        loaded = load_checkpoint(args.model)
    except ValueError as exc:  # CheckpointError included: a clear one-liner, not a traceback
        p.exit(2, f"error: {exc}\n")
    search = SearchConfig(mode=SearchMode(args.search))
    report: dict = {"model": str(args.model), "model_sha256": loaded.sha256, "search": args.search,
                    "consistency": args.consistency, "max_side": args.max_side, "precision": args.precision,
                    "protocol":
                    "HR cropped to ×4, LR = PIL bicubic ↓4 (then JPEG q75 for jpeg75), Y (BT.601) PSNR/SSIM, 4-px border"}
    names = loaded.meta.get("holdout") or []
    sets = [(tsv.stem if tsv.stem != "pairs" else tsv.parent.name, read_pairs(tsv, args.max_side)) for tsv in args.pairs]
    if args.holdout_dir:
        if not names:
            p.error("the checkpoint records no held-out photos (meta 'holdout')")
        sets.append(("holdout_photos", holdout_pairs(args.holdout_dir, names, args.max_side or 1024)))
    for set_name, pairs in sets:
        for deg in degradations:
            res = evaluate(loaded.model, pairs, search, args.tile or None, deg, args.consistency,
                           None if args.precision == "float32" else Precision(args.precision))
            res["summary"] = summary(res)
            report.setdefault(set_name, {})[deg] = res
            print(format_table(res, f"{set_name}, LR = {deg}"), "\n", flush=True)
    if args.matching:
        report["matching"] = matching_report(loaded.model, args.holdout_dir, names,
                                             args.pairs[0].parent if args.pairs else None)
        print("matching accuracy:", json.dumps(report["matching"]))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
