"""bfloat16 autocast on the shipped model: its Y-PSNR cost on data/validation pairs and its speed.

    .venv/bin/python benchmarks/inference/bf16.py [--max-side 640]
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the harness
from harness import cpu, experiment, load_model, run_child, timed, validation_pairs  # noqa: E402


def child(max_side: int) -> dict:
    """Shipped model on data/validation pairs: float32 vs bf16 autocast, Y-PSNR against the HR target."""
    import numpy as np
    import torch

    from ttsr_core.config import SearchConfig, SearchMode
    from ttsr_core.model.inference import prepare_for_inference, super_resolve
    from ttsr_core.metrics import psnr_y

    model, weights = load_model("ttsr-lite")
    model = prepare_for_inference(model, torch.device("cpu"))
    rows = []
    for pair, hr, lr, ref in validation_pairs(max_side):
        row = {"pair": pair, "lr": f"{lr.shape[1]}×{lr.shape[0]}"}
        for amp in (None, "bfloat16"):
            out = []
            row[f"s_{amp or 'float32'}"] = timed(lambda: out.append(super_resolve(
                model, lr, [ref], search=SearchConfig(mode=SearchMode.FAST), amp_dtype=amp)))
            sr = out[0]
            row[f"psnr_{amp or 'float32'}"] = psnr_y(sr.image, hr)
            row[f"image_{amp or 'float32'}"] = sr.image
        row["max_grey_diff"] = int(np.abs(row.pop("image_float32").astype(int) - row.pop("image_bfloat16").astype(int)).max())
        rows.append(row)
    return {"weights": weights, "rows": rows, "threads": torch.get_num_threads()}


def report(args) -> None:  # type: ignore[no-untyped-def]
    threads, max_side = args.threads, args.max_side
    r = run_child(__file__, [max_side], threads)
    print(f"{cpu()}\nttsr-lite ({r['weights']}), fast search, untiled, photos capped at {max_side} px, {r['threads']} threads\n")
    print("| pair | LR | Y-PSNR fp32 | Y-PSNR bf16 | Δ dB | max grey-level diff | s fp32 | s bf16 |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for x in r["rows"]:
        print(f"| {x['pair']} | {x['lr']} | {x['psnr_float32']:.3f} | {x['psnr_bfloat16']:.3f} | "
              f"{x['psnr_bfloat16'] - x['psnr_float32']:+.3f} | {x['max_grey_diff']} | {x['s_float32']:.1f} | "
              f"{x['s_bfloat16']:.1f} |")
    n = len(r["rows"])
    mean = {k: sum(x[k] for x in r["rows"]) / n for k in ("psnr_float32", "psnr_bfloat16", "s_float32", "s_bfloat16")}
    print(f"| **mean** | | {mean['psnr_float32']:.3f} | {mean['psnr_bfloat16']:.3f} | "
          f"{mean['psnr_bfloat16'] - mean['psnr_float32']:+.3f} | | {mean['s_float32']:.1f} | {mean['s_bfloat16']:.1f} |")


def add_arguments(parser) -> None:  # type: ignore[no-untyped-def]
    parser.add_argument("--max-side", type=int, default=640, help="cap the validation photos' long side")


def main() -> None:
    experiment(__doc__, child, report, add_arguments)


if __name__ == "__main__":
    main()
