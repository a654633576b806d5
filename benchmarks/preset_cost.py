"""What the compact preset saves: parameters, inference time and training-step time, ttsr vs ttsr-lite.

    .venv/bin/python benchmarks/preset_cost.py

Random weights (cost does not depend on them), CPU float32, torch's default threads.
"""
from __future__ import annotations

import statistics
import time

import torch

from ttsr_core.config import SearchConfig, SearchMode, preset
from ttsr_core.model.net import TTSR


def _inputs(n: int, h: int, w: int, rh: int, rw: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    lr = torch.rand(n, 3, h, w, generator=g) * 2 - 1
    ref = torch.rand(n, 3, rh, rw, generator=g) * 2 - 1
    up = lambda x: torch.nn.functional.interpolate(x, scale_factor=4, mode="bicubic")  # noqa: E731
    return lr, up(lr), ref, up(torch.nn.functional.avg_pool2d(ref, 4))


def _median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| preset | parameters | LTE share | inference s (LR 120×90, ref 480×360, fast search) | train step s (8 × 64² HR, L1) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name in ("ttsr", "ttsr-lite"):
        torch.manual_seed(0)
        model = TTSR(preset(name))
        params = sum(p.numel() for p in model.parameters())
        lte = sum(p.numel() for p in model.LTE.parameters())
        lr, lr_up, ref, ref_du = _inputs(1, 90, 120, 360, 480)
        model.eval()
        with torch.inference_mode():
            infer = _median_time(lambda: model(lr, lr_up, ref, ref_du, search=SearchConfig(mode=SearchMode.FAST)), 3)
        model.train()
        opt = torch.optim.Adam(model.parameters(), 1e-4)
        blr, blr_up, bref, bref_du = _inputs(8, 16, 16, 64, 64)

        def step() -> None:
            loss = (model(blr, blr_up, bref, bref_du) - blr_up).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

        step()  # warm-up
        train = _median_time(step, 5)
        print(f"| {name} | {params / 1e6:.2f} M | {lte / params:.0%} | {infer:.1f} | {train:.2f} |", flush=True)


if __name__ == "__main__":
    main()
