"""Where the network runs and in which precision: device choice, torch dtypes, autocast."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from ttsr_core.config import Precision


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto``/None → CUDA when present, else CPU; validates explicit names."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return dev


def default_amp(device: torch.device) -> Precision | None:
    """Mixed precision worth using on ``device``: bf16 on CUDA where supported, else fp16; none on CPU.

    A CPU without native bf16 (avx512_bf16 or AMX) ran bf16 products far slower than float32
    (benchmarks/README.md), so CPUs stay in float32.
    """
    if device.type != "cuda":
        return None
    return Precision.BFLOAT16 if torch.cuda.is_bf16_supported() else Precision.FLOAT16


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (avx512_bf16 or AMX); Linux's /proc/cpuinfo, else no."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def torch_dtype(precision: Precision | None) -> torch.dtype:
    """The torch dtype of a precision; None is float32."""
    return getattr(torch, (Precision.parse(precision, "precision") or Precision.FLOAT32).value)


@contextlib.contextmanager
def autocast(device: torch.device, amp: Precision | None) -> Iterator[None]:
    """Mixed precision for the network when asked (bf16/fp16); float32 (no autocast) for None or float32."""
    amp = Precision.parse(amp, "amp_dtype")
    if amp in (None, Precision.FLOAT32):
        yield
        return
    with torch.autocast(device_type=device.type, dtype=torch_dtype(amp)):
        yield
