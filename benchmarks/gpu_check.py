"""GPU readiness checks, run by ``benchmarks/gpu_check.sh``: autocast and backend equivalence, faiss-gpu
against faiss-cpu, and a timing table, each as a Markdown section on stdout.

    .venv/bin/python benchmarks/gpu_check.py             # on a CUDA machine
    .venv/bin/python benchmarks/gpu_check.py --dry-run   # the same code paths on the CPU, tiny sizes

The dry run proves the script works where no GPU is lent; its figures say nothing about a GPU.
Each check prints PASS/FAIL with its measured figure; the exit status is 1 if any check failed.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ttsr_core.config import SHIPPED_MODEL, SearchConfig, SearchMode, TTSRConfig  # noqa: E402
from ttsr_core.model.checkpoint import load_checkpoint  # noqa: E402
from ttsr_core.model.inference import prepare_for_inference, super_resolve  # noqa: E402
from ttsr_core.model.net import TTSR  # noqa: E402

AUTOCAST_TOLERANCE = {torch.bfloat16: 0.1, torch.float16: 0.02}  # max |Δ| in [-1, 1] on the tiny model
FUSED_TOLERANCE = 1e-4


def _images(h: int, w: int, rh: int, rw: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)

    def img(hh: int, ww: int, period: float) -> np.ndarray:
        yy, xx = np.mgrid[0:hh, 0:ww].astype(np.float32)
        base = 127 + 60 * np.sin(xx / period)[..., None] * np.cos(yy / (0.8 * period))[..., None]
        return np.clip(base + rng.normal(0, 20, (hh, ww, 3)), 0, 255).astype(np.uint8)

    return img(h, w, 9), img(rh, rw, 36)


def _tensors(device: torch.device, h: int, w: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    lr = torch.rand(1, 3, h, w, generator=g) * 2 - 1
    ref = torch.rand(1, 3, 4 * h, 4 * w, generator=g) * 2 - 1
    up = lambda x: torch.nn.functional.interpolate(x, scale_factor=4, mode="bicubic")  # noqa: E731
    return tuple(t.to(device) for t in (lr, up(lr), ref, up(torch.nn.functional.avg_pool2d(ref, 4))))


def check_equivalence(device: torch.device) -> bool:
    """fp32 eager vs fused backend and vs fp16/bf16 autocast, tiny random model, on ``device``."""
    print("## Equivalence on", device, "\n\n| comparison | max abs diff | tolerance | result |\n| --- | ---: | ---: | --- |")
    torch.manual_seed(0)
    model = prepare_for_inference(TTSR(TTSRConfig(num_feat=16, num_block=(2, 2, 1, 1), lte_channels=(8, 16, 16))), device)
    args = _tensors(device, 24, 32)
    ok = True
    with torch.inference_mode():
        ref = model(*args, backend="eager")
        rows = [("fused vs eager, float32", model(*args, backend="fused"), FUSED_TOLERANCE)]
        dtypes = [torch.bfloat16] + ([torch.float16] if device.type == "cuda" else [])
        for dtype in dtypes:
            with torch.autocast(device_type=device.type, dtype=dtype):
                rows.append((f"autocast {str(dtype)[6:]} vs float32", model(*args), AUTOCAST_TOLERANCE[dtype]))
    for name, out, tol in rows:
        diff = float((out.float() - ref).abs().max())
        ok &= diff <= tol
        print(f"| {name} | {diff:.2e} | {tol:g} | {'PASS' if diff <= tol else 'FAIL'} |")
    print()
    return ok


def check_faiss(dry_run: bool) -> bool:
    """Exact inner-product top-10 on GPU against the CPU index: ids and scores agree."""
    import faiss

    print("## faiss-gpu vs faiss-cpu\n")
    rng = np.random.default_rng(0)
    base = rng.standard_normal((20000, 512)).astype(np.float32)
    queries = rng.standard_normal((200, 512)).astype(np.float32)
    faiss.normalize_L2(base)
    faiss.normalize_L2(queries)
    cpu = faiss.IndexFlatIP(512)
    cpu.add(base)
    has_gpu = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    if not has_gpu and not dry_run:
        print("FAIL: this faiss has no GPU support or sees no GPU (install faiss-gpu)\n")
        return False
    if has_gpu:
        res = faiss.StandardGpuResources()
        other, label = faiss.index_cpu_to_gpu(res, 0, cpu), "GPU"
    else:
        other, label = cpu, "CPU (dry run: the CPU index against itself)"
    d_cpu, i_cpu = cpu.search(queries, 10)
    t0 = time.perf_counter()
    d_other, i_other = other.search(queries, 10)
    elapsed = time.perf_counter() - t0
    same = float((i_cpu == i_other).mean())
    diff = float(np.abs(d_cpu - d_other).max())
    ok = same >= 0.99 and diff <= 1e-4
    print(f"{label}: 200 queries × 20000 vectors, top-10 ids identical {same:.1%}, max score diff {diff:.1e}, "
          f"{elapsed * 1e3:.1f} ms: {'PASS' if ok else 'FAIL'}\n")
    return ok


def timing_table(device: torch.device, dry_run: bool) -> None:
    """Whole super_resolve on the device: search mode × precision, untiled and 256-px tiles."""
    h, w, rh, rw = (20, 24, 80, 96) if dry_run else (360, 480, 1440, 1920)
    model = load_checkpoint(SHIPPED_MODEL).model if SHIPPED_MODEL.exists() else TTSR(TTSRConfig()).eval()
    model = prepare_for_inference(model, device)
    lr, ref = _images(h, w, rh, rw)
    print(f"## Timing: LR {w}×{h} + ref {rw}×{rh}, {device}\n")
    print("| search | amp | tile | s | peak GPU memory MB |\n| --- | --- | --- | ---: | ---: |")
    for mode in ("fast", "exact"):
        for amp in (None, "bfloat16"):
            for tile in (None, 256):
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                    torch.cuda.synchronize(device)
                t0 = time.perf_counter()
                super_resolve(model, lr, [ref], search=SearchConfig(mode=SearchMode(mode)), device=device,
                              amp_dtype=amp, tile=tile)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                mem = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
                print(f"| {mode} | {amp or 'float32'} | {tile or 'none'} | {time.perf_counter() - t0:.2f} | {mem:.0f} |",
                      flush=True)
    print()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="run every check on the CPU at tiny sizes")
    args = parser.parse_args()
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible to torch (use --dry-run on a CPU)", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.dry_run else "cuda")
    ok = check_equivalence(device)
    ok &= check_faiss(args.dry_run)
    timing_table(device, args.dry_run)
    print("overall:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
