"""This CPU's matrix-product and 3×3-convolution peaks, float32 and bfloat16: the yardstick of the stage tables.

    .venv/bin/python benchmarks/inference/peak.py [--threads N]
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the harness
from harness import best, cpu, experiment, run_child  # noqa: E402


CONV_SHAPES = ((32, 32), (64, 64), (96, 32))  # (in, out) channels of the compact model's ×4 convolutions


def child() -> dict:
    """Matrix products (torch.mm and oneDNN, best of 1024², 2048²) and 3×3 convolutions (channel-last, at a 256-px tile's ×4 size), fp32 and bf16."""
    import torch

    from ttsr_core.accel.gemm import matmul_nt
    from ttsr_core.accel.heap import retained_heap

    out: dict = {"threads": torch.get_num_threads(), "conv": {}}
    with retained_heap(), torch.inference_mode():
        for dtype in (torch.float32, torch.bfloat16):
            rates, onednn = [], []
            for n in (1024, 2048):
                a = torch.randn(n, n).to(dtype)
                o = torch.empty(n, n, dtype=dtype)
                rates.append(2 * n**3 / best(lambda: torch.mm(a, a, out=o), 5) / 1e9)
                if dtype == torch.float32:
                    onednn.append(2 * n**3 / best(lambda: matmul_nt(a, a), 5) / 1e9)
            out[f"torch_mm_{str(dtype)[6:]}"] = max(rates)
            out[f"mm_{str(dtype)[6:]}"] = max(rates + onednn)  # the best product this CPU gave
            if onednn:
                out["onednn_mm_float32"] = max(onednn)
        x = torch.randn(1, 96, 4 * 188, 4 * 248).contiguous(memory_format=torch.channels_last)
        for cin, cout in CONV_SHAPES:
            conv = torch.nn.Conv2d(cin, cout, 3, padding=1).to(memory_format=torch.channels_last)
            xi = x[:, :cin].contiguous(memory_format=torch.channels_last)
            flops = 2 * xi.shape[2] * xi.shape[3] * cin * cout * 9
            fp32 = flops / best(lambda: conv(xi)) / 1e9
            with torch.autocast("cpu", dtype=torch.bfloat16):
                bf16 = flops / best(lambda: conv(xi)) / 1e9
            out["conv"][f"{cin}→{cout}"] = {"float32": fp32, "bfloat16": bf16}
    return out


def measure(threads: int | None) -> dict:
    """Run the child, print the peaks, return them (stages compares each stage with them)."""
    r = run_child(__file__, [], threads)
    print(f"{cpu()}; {r['threads']} threads")
    print(f"matrix product, best of 1024² and 2048², 5 runs each: float32 torch.mm (MKL) {r['torch_mm_float32']:.0f} "
          f"GFLOP/s, oneDNN inner product (ttsr_core.accel.gemm) {r['onednn_mm_float32']:.0f} GFLOP/s; "
          f"bfloat16 torch.mm {r['mm_bfloat16']:.0f} GFLOP/s")
    for shape, v in r["conv"].items():
        print(f"3×3 conv {shape} at 992×752, channel-last, best of 3: float32 {v['float32']:.0f} GFLOP/s, "
              f"bfloat16 {v['bfloat16']:.0f} GFLOP/s")
    return r


def report(args) -> None:  # type: ignore[no-untyped-def]
    measure(args.threads)


def main() -> None:
    experiment(__doc__, child, report)


if __name__ == "__main__":
    main()
