"""Tensor-level inference from uint8 RGB arrays: input checks, bicubic preparation, ×4 output."""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from .config import SearchConfig
from .net import TTSR

logger = logging.getLogger(__name__)

SCALE = 4
# One 3×3 lv3 patch covers 12×12 reference pixels: the smallest reference that holds a patch.
MIN_REF_SIDE = 3 * SCALE


def check_rgb(image: np.ndarray, name: str) -> np.ndarray:
    """Validate an (H, W, 3) uint8 array; raise TypeError/ValueError naming the problem."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise TypeError(f"{name} must be uint8 RGB, got dtype {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name} must have shape (H, W, 3), got {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{name} is empty: shape {image.shape}")
    return image


def resize_bicubic(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """PIL bicubic resize of a uint8 RGB array (the paper's data pipeline uses PIL's bicubic)."""
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BICUBIC))


def to_tensor(image: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """(H, W, 3) uint8 → (1, 3, H, W) float32 in [-1, 1]."""
    t = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).to(device).permute(2, 0, 1)[None].float()
    return t / 127.5 - 1.0


def to_uint8(t: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) in [-1, 1] → (H, W, 3) uint8, rounded."""
    x = ((t[0].float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.permute(1, 2, 0).cpu().numpy()


@dataclass(frozen=True)
class PreparedReference:
    ref: np.ndarray  # (H, W, 3), H and W multiples of 4
    ref_down_up: np.ndarray  # same size: bicubic ↓4 then ↑4, the reference's blur matched to LR↑


def prepare_reference(ref: np.ndarray, name: str = "reference") -> PreparedReference:
    """Crop a reference to a multiple of 4 (top-left anchored) and make its Ref↓↑ twin."""
    check_rgb(ref, name)
    h, w = (ref.shape[0] // SCALE) * SCALE, (ref.shape[1] // SCALE) * SCALE
    if h < MIN_REF_SIDE or w < MIN_REF_SIDE:
        raise ValueError(
            f"{name} of {ref.shape[1]}×{ref.shape[0]} is smaller than one {MIN_REF_SIDE}×{MIN_REF_SIDE} texture patch"
        )
    ref = np.ascontiguousarray(ref[:h, :w])
    down = resize_bicubic(ref, w // SCALE, h // SCALE)
    return PreparedReference(ref, resize_bicubic(down, w, h))


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto``/None → CUDA when present, else CPU; validates explicit names."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return dev


@contextlib.contextmanager
def autocast_context(device: torch.device, amp_dtype: str | None) -> Iterator[None]:
    """Mixed precision for the network when asked (bf16/fp16); float32 otherwise."""
    if amp_dtype in (None, "float32"):
        yield
        return
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(amp_dtype)
    if dtype is None:
        raise ValueError(f"amp_dtype must be bfloat16, float16 or None, got {amp_dtype!r}")
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


@dataclass(frozen=True)
class SRResult:
    image: np.ndarray  # (4h, 4w, 3) uint8
    soft_attention: np.ndarray  # (h, w) float32: relevance of the chosen reference patch per LR position
    hard_attention: np.ndarray  # (h, w) int64: index into the union of reference lv3 positions


def super_resolve(
    model: TTSR,
    lr: np.ndarray,
    refs: Sequence[np.ndarray],
    *,
    search: SearchConfig | None = None,
    device: str | torch.device | None = "cpu",
    amp_dtype: str | None = None,
) -> SRResult:
    """×4 super-resolution of one uint8 RGB image with one or more uint8 RGB references.

    lr (h, w, 3) of any size ≥ 1×1; refs: each (H, W, 3), at least 12×12 → (4h, 4w, 3) uint8.
    """
    check_rgb(lr, "LR image")
    if isinstance(refs, np.ndarray):
        refs = [refs]
    if len(refs) == 0:
        raise ValueError("at least one reference image is needed")
    prepared = [prepare_reference(r, f"reference {i}") for i, r in enumerate(refs)]
    dev = resolve_device(device)
    h, w = lr.shape[:2]
    lr_up = resize_bicubic(lr, w * SCALE, h * SCALE)
    model = model.to(dev).eval()
    with torch.inference_mode(), autocast_context(dev, amp_dtype):
        out = model(
            to_tensor(lr, dev),
            to_tensor(lr_up, dev),
            [to_tensor(p.ref, dev) for p in prepared],
            [to_tensor(p.ref_down_up, dev) for p in prepared],
            search=search,
            return_attention=True,
        )
    return SRResult(
        to_uint8(out.sr),
        out.soft_attention[0, 0].float().cpu().numpy(),
        out.hard_attention[0].view(h, w).cpu().numpy(),
    )
