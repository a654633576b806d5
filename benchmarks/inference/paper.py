"""Paper preset: the authors' full-matrix pipeline against ours (exact and fast, whole and tiled), time and peak memory.

    .venv/bin/python benchmarks/inference/paper.py [--lr 160x120] [--ref 640x480] [--tile 64]

Random weights; the baseline is three LTE passes, ``full_matrix_search_transfer`` and the eager main
network. Each row runs in a fresh subprocess reporting its ``ru_maxrss``.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the harness
from harness import cpu, experiment, load_model, peak_mb, run_child, size  # noqa: E402


def child(kind: str, lr_size: list[int], ref_size: list[int], out_path: str, tile: int | None = None) -> dict:
    import numpy as np
    import torch
    import torch.nn.functional as F

    from ttsr_core.config import SearchConfig, SearchMode, TileConfig
    from ttsr_core.accel.heap import retained_heap
    from ttsr_core.model.inference import prepare_for_inference
    from ttsr_core.model.search import full_matrix_search_transfer
    from ttsr_core.model.tiling import tiled_forward

    model, weights = load_model("ttsr")
    g = torch.Generator().manual_seed(1)
    (w, h), (rw, rh) = lr_size, ref_size
    lr = torch.rand(1, 3, h, w, generator=g) * 2 - 1
    ref = torch.rand(1, 3, rh, rw, generator=g) * 2 - 1
    lr_up = F.interpolate(lr, scale_factor=4, mode="bicubic")
    ref_du = F.interpolate(F.avg_pool2d(ref, 4), scale_factor=4, mode="bicubic")
    idle = peak_mb()
    t0 = time.perf_counter()
    if kind == "full":
        with torch.inference_mode():
            v1, v2, v3 = model.LTE(ref)
            k3, q3 = model.LTE(ref_du)[2], model.LTE(lr_up)[2]
            t = full_matrix_search_transfer(q3, k3, v1, v2, v3)
            sr = model.MainNet(lr, t.soft_attention, t.texture_lv3, t.texture_lv2, t.texture_lv1).clamp(-1, 1)
    elif tile is None:
        model = prepare_for_inference(model, torch.device("cpu"))
        with retained_heap(), torch.inference_mode():
            sr = model(lr, lr_up, ref, ref_du, search=SearchConfig(mode=SearchMode(kind)))
    else:  # what super_resolve(tile=…) runs: references encoded once, the LR image in blended tiles
        model = prepare_for_inference(model, torch.device("cpu"))
        with retained_heap(), torch.inference_mode():
            encoded = model.encode_references([ref], [ref_du])
            sr = tiled_forward(model, lr, lr_up, encoded, TileConfig(tile), SearchConfig(mode=SearchMode(kind))).sr
    wall = time.perf_counter() - t0
    np.save(out_path, sr[0].float().numpy())
    return {"kind": kind, "wall_s": wall, "peak_rss_mb": peak_mb(), "idle_rss_mb": idle, "weights": weights,
            "threads": torch.get_num_threads()}


def report(args) -> None:  # type: ignore[no-untyped-def]
    threads, lr, ref, tile = args.threads, size(args.lr), size(args.ref), args.tile
    import numpy as np

    print(f"{cpu()}\npaper preset (random weights), LR {lr[0]}×{lr[1]} + Ref {ref[0]}×{ref[1]}; "
          f"tiled = {tile}-px LR tiles (`refsr sr --tile {tile}`)\n")
    rows = {}
    for kind, t in (("full", None), ("exact", None), ("fast", None), ("exact", tile), ("fast", tile)):
        name = kind if t is None else f"{kind}, tiled"
        rows[name] = run_child(__file__, [kind, lr, ref, f"/tmp/refsr_paper_{os.getpid()}_{name[:5]}{t}.npy", t], threads)
        rows[name]["out"] = f"/tmp/refsr_paper_{os.getpid()}_{name[:5]}{t}.npy"
    full = np.load(rows["full"]["out"])
    print("| path | wall s | peak RSS MB | peak − idle MB | × faster than full | peak RSS / full | (peak − idle) / full "
          "| max |Δ| vs full |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    above_idle = {k: r["peak_rss_mb"] - r["idle_rss_mb"] for k, r in rows.items()}
    for kind, r in rows.items():
        diff = np.abs(np.load(r["out"]) - full).max()
        print(f"| {kind} | {r['wall_s']:.1f} | {r['peak_rss_mb']:.0f} | {r['peak_rss_mb'] - r['idle_rss_mb']:.0f} | "
              f"{rows['full']['wall_s'] / r['wall_s']:.2f} | {r['peak_rss_mb'] / rows['full']['peak_rss_mb']:.2f} | "
              f"{above_idle[kind] / above_idle['full']:.2f} | {diff:.1e} |")


def add_arguments(parser) -> None:  # type: ignore[no-untyped-def]
    parser.add_argument("--lr", default="160x120", help="LR size WxH")
    parser.add_argument("--ref", default="640x480", help="reference size WxH")
    parser.add_argument("--tile", type=int, default=64, help="LR tile side of the tiled rows")


def main() -> None:
    experiment(__doc__, child, report, add_arguments)


if __name__ == "__main__":
    main()
