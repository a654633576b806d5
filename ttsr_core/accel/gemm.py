"""Matrix products for the relevance search, through oneDNN on CPU where torch would use MKL.

torch's CPU float32 ``mm``/``bmm`` go to MKL, which on AMD processors takes a generic code path: on
the AVX-512 EPYC of benchmarks/README.md it ran at 30-41 GFLOP/s on one thread, while oneDNN (the
library behind torch's CPU convolutions and bf16 products) ran the same product at 67 GFLOP/s and a
3×3 convolution at ~100. ``torch.ops.mkldnn._linear_pointwise`` is oneDNN's inner-product primitive
as torch exposes it (it is what ``torch.compile`` emits for linear layers on CPU). Where it is
missing, or for other devices and dtypes, the plain product runs. Results differ from MKL's by float
rounding only (another summation order).
"""
from __future__ import annotations

import torch

_onednn = hasattr(torch.ops, "mkldnn") and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _use_onednn(x: torch.Tensor, w: torch.Tensor) -> bool:
    return (_onednn and x.device.type == "cpu" and x.dtype == w.dtype == torch.float32
            and not (torch.is_grad_enabled() and (x.requires_grad or w.requires_grad)))


def matmul_nt(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x (M, K) @ w (N, K)ᵀ → (M, N)."""
    if _use_onednn(x, w):
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), w.contiguous(), None, "none", [], "")
    return x @ w.t()

