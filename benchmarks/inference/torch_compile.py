"""torch.compile (inductor, frozen weights) against the eager and fused main network on one tile.

    .venv/bin/python benchmarks/inference/torch_compile.py
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the harness
from harness import best, cpu, experiment, load_model, run_child  # noqa: E402


def child(h: int, w: int) -> dict:
    """The shipped main network on one 188×248 tile: eager, fused, and torch.compile (inductor, frozen weights)."""
    import torch
    import torch._inductor.config as inductor_config

    from ttsr_core.accel.fused import fused_forward
    from ttsr_core.accel.heap import retained_heap
    from ttsr_core.model.inference import prepare_for_inference

    inductor_config.freezing = True  # weights as constants: lets inductor prepack them for oneDNN
    model, weights = load_model("ttsr-lite")
    net = prepare_for_inference(model, torch.device("cpu")).MainNet
    c1, c2, c3 = model.config.lte_channels
    g = torch.Generator().manual_seed(0)
    args = tuple(t.contiguous(memory_format=torch.channels_last) for t in (
        torch.rand(1, 3, h, w, generator=g) * 2 - 1, torch.rand(1, 1, h, w, generator=g),
        torch.randn(1, c3, h, w, generator=g), torch.randn(1, c2, 2 * h, 2 * w, generator=g),
        torch.randn(1, c1, 4 * h, 4 * w, generator=g)))
    with retained_heap(), torch.no_grad():
        eager = net(*args)
        compiled = torch.compile(net, dynamic=False)
        t0 = time.perf_counter()
        out = compiled(*args)
        compile_s = time.perf_counter() - t0
        diffs = {"fused": (fused_forward(net, *args) - eager).abs().max().item(), "compiled": (out - eager).abs().max().item()}
        times = {"eager": best(lambda: net(*args)), "fused": best(lambda: fused_forward(net, *args)),
                 "compiled": best(lambda: compiled(*args))}
    return {"weights": weights, "compile_s": compile_s, "times": times, "diffs": diffs, "threads": torch.get_num_threads()}


def report(args) -> None:  # type: ignore[no-untyped-def]
    threads = args.threads
    r = run_child(__file__, [188, 248], threads)
    print(f"{cpu()}\nttsr-lite ({r['weights']}) main network, one 188×248 LR tile (752×992 out), "
          f"{r['threads']} threads, best of 3 after a warm-up\n")
    print(f"torch.compile (inductor, freezing, static shape): first call incl. compilation {r['compile_s']:.1f} s\n")
    print("| main network | s per tile | × vs eager | max |Δ| vs eager |\n| --- | ---: | ---: | ---: |")
    for name, secs in r["times"].items():
        diff = r["diffs"].get(name, 0.0)
        print(f"| {name} | {secs:.3f} | {r['times']['eager'] / secs:.2f} | {diff:.1e} |")


def main() -> None:
    experiment(__doc__, child, report)


if __name__ == "__main__":
    main()
