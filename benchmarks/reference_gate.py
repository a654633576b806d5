"""The reference gate on the different-photograph yardstick: which references lend texture, and what it buys.

For every pair of a ``pairs.tsv`` the LR target is made as ``ttsr_core.training.evaluate`` makes it
(HR long side ``--max-side``, cropped to a multiple of 4, clean bicubic or JPEG-q75 ×4 down, the same
seeds), and its right reference, its wrong one (``evaluate.wrong_reference``) and its own LR↑ are scored
the way ``refsr enhance`` scores a candidate: geometric verification inliers
(pipeline.matching.verification, default settings) and the model's texture relevance
(pipeline.matching.retrieval.texture_relevance, default re-rank settings). Each reference then goes
through the product's gate (``lends_texture``) at several ``--min-relevance`` values; where it is
refused, the output is the single-image one. The PSNR of each output comes from the ``evaluate``
report of the same model (``--eval``), so the gated gains are exactly what the product would write.

    PYTHONPATH=. .venv/bin/python benchmarks/reference_gate.py --eval models/ttsr-lite/eval-yardstick-round3.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.harness import ROOT, cpu

KINDS = ("right", "wrong", "self")
ROWS = {"right": "model + reference", "wrong": "model + wrong reference", "self": "model + LR↑ as reference"}
DEGRADATIONS = {"bicubic": "clean", "jpeg75": "JPEG q75"}


def signals(model_path: Path, pairs_tsv: Path, max_side: int) -> list[dict]:
    """Per pair and degradation: inliers and relevance of the right, wrong and self references."""
    import torch

    from pipeline.matching.retrieval import texture_relevance
    from pipeline.matching.verification import local_features, verify_pair
    from ttsr_core.model.checkpoint import load_checkpoint
    from ttsr_core.model.inference import resize_bicubic
    from ttsr_core.training.degradations import degrade
    from ttsr_core.training.evaluate import crop4, read_pairs, wrong_reference

    torch.set_num_threads(1)
    model = load_checkpoint(model_path).model
    pairs = read_pairs(pairs_tsv, max_side)
    rows = []
    for deg in DEGRADATIONS:
        for i, pair in enumerate(pairs):
            hr = crop4(pair.target)
            lr = degrade(hr, deg, seed=i)
            refs = {"right": pair.reference, "wrong": wrong_reference(pairs, i),
                    "self": resize_bicubic(lr, hr.shape[1], hr.shape[0])}
            mine = local_features(lr)
            relevance = texture_relevance(model, lr, list(refs.values()))
            row: dict = {"pair": pair.name, "degradation": deg}
            for (kind, ref), rel in zip(refs.items(), relevance):
                row[kind] = {"inliers": verify_pair(mine, local_features(ref)).inliers, "relevance": rel}
            rows.append(row)
    return rows


def gated(rows: list[dict], report: dict, set_name: str, min_relevance: float) -> dict[str, dict[str, float]]:
    """Mean gain over bicubic of the right and wrong reference through the gate, per degradation."""
    from pipeline.matching.retrieval import RankedReference, lends_texture
    from pipeline.params import RetrievalSettings

    gate = RetrievalSettings(min_relevance=min_relevance)
    out = {}
    for deg in DEGRADATIONS:
        psnr = {p["pair"]: p for p in report[set_name][deg]["pairs"]}
        gains: dict[str, list[float]] = {"right": [], "wrong": [], "self": []}
        lent = {"right": 0, "wrong": 0}
        for row in (r for r in rows if r["degradation"] == deg):
            p = psnr[row["pair"]]
            base = p["bicubic"]["psnr"]
            gains["self"].append(p[ROWS["self"]]["psnr"] - base)
            for kind in ("right", "wrong"):
                s = row[kind]
                ref = RankedReference(0, 0, "0" * 64, 0.0, s["relevance"], s["inliers"])
                lends = lends_texture(ref, gate)
                lent[kind] += lends
                gains[kind].append(p[ROWS[kind if lends else "self"]]["psnr"] - base)
        mean = {k: float(np.mean(v)) for k, v in gains.items()}
        out[deg] = {**mean, "right_lent": lent["right"], "wrong_lent": lent["wrong"], "pairs": len(gains["self"])}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval", type=Path, required=True, help="evaluate's --json report of the model")
    parser.add_argument("--model", type=Path, help="default: the model the report names")
    parser.add_argument("--pairs", type=Path, default=ROOT / "data" / "different-pairs" / "pairs.tsv")
    parser.add_argument("--set", default="different-pairs", help="the report's name for those pairs")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.0, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85])
    parser.add_argument("--per-pair", action="store_true")
    parser.add_argument("--json", type=Path, help="write the signals here")
    args = parser.parse_args()
    report = json.loads(args.eval.read_text())
    model = args.model or Path(report["model"])
    rows = signals(model if model.is_absolute() else ROOT / model, args.pairs, int(report.get("max_side") or 0))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print(f"model {model.name}; {args.pairs} ({len(rows) // 2} pairs); CPU: {cpu()}\n")
    print("| --min-relevance | LR | right refs lending | wrong refs lending | right (dB) | wrong (dB) | self (dB) "
          "| right − wrong | right − self | self − wrong |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for t in args.thresholds:
        for deg, m in gated(rows, report, args.set, t).items():
            print(f"| {t:g}{' (off)' if t == 0 else ''} | {DEGRADATIONS[deg]} | {m['right_lent']}/{m['pairs']} | "
                  f"{m['wrong_lent']}/{m['pairs']} | {m['right']:+.2f} | {m['wrong']:+.2f} | {m['self']:+.2f} | "
                  f"{m['right'] - m['wrong']:+.2f} | {m['right'] - m['self']:+.2f} | {m['self'] - m['wrong']:+.2f} |")
    if args.per_pair:
        print("\n| pair | LR | right: inliers, relevance | wrong: inliers, relevance |\n| --- | --- | --- | --- |")
        for r in rows:
            print(f"| {r['pair']} | {DEGRADATIONS[r['degradation']]} | {r['right']['inliers']}, "
                  f"{r['right']['relevance']:.3f} | {r['wrong']['inliers']}, {r['wrong']['relevance']:.3f} |")


if __name__ == "__main__":
    main()
