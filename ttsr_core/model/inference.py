"""Tensor-level inference from uint8 RGB arrays: input checks, bicubic preparation, ×4 output."""
from __future__ import annotations

import copy
import itertools
import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ttsr_core.accel.heap import retained_heap
from ttsr_core.arrays import check_rgb, resize_bicubic
from ttsr_core.config import MIN_REF_SIDE, SCALE, Backend, Precision, SearchConfig, TileConfig
from ttsr_core.device import autocast, resolve_device
from ttsr_core.model.net import TTSR, EncodedReferences
from ttsr_core.model.reference_cache import ReferenceCache
from ttsr_core.model.tiling import tiled_forward

logger = logging.getLogger(__name__)


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


def check_reference(ref: np.ndarray, name: str = "reference") -> tuple[int, int]:
    """A uint8 RGB reference of at least one texture patch → its size cropped to multiples of 4 (h, w)."""
    check_rgb(ref, name)
    h, w = (ref.shape[0] // SCALE) * SCALE, (ref.shape[1] // SCALE) * SCALE
    if h < MIN_REF_SIDE or w < MIN_REF_SIDE:
        raise ValueError(
            f"{name} of {ref.shape[1]}×{ref.shape[0]} is smaller than one {MIN_REF_SIDE}×{MIN_REF_SIDE} texture patch"
        )
    return h, w


def prepare_reference(ref: np.ndarray, name: str = "reference") -> PreparedReference:
    """Crop a reference to a multiple of 4 (top-left anchored) and make its Ref↓↑ twin."""
    h, w = check_reference(ref, name)
    ref = np.ascontiguousarray(ref[:h, :w])
    down = resize_bicubic(ref, w // SCALE, h // SCALE)
    return PreparedReference(ref, resize_bicubic(down, w, h))


@dataclass(frozen=True)
class SRResult:
    image: np.ndarray  # (4h, 4w, 3) uint8
    soft_attention: np.ndarray  # (h, w) float32: relevance of the chosen reference patch per LR position
    hard_attention: np.ndarray  # (h, w) int64: index into the union of reference lv3 positions


def prepare_for_inference(model: TTSR, device: torch.device) -> TTSR:
    """Move ``model`` (in place) to ``device`` with channel-last weights, in eval mode; returns it.

    Channel-last weights make every convolution run channel-last (oneDNN's native layout): measured
    1.4-1.6× faster per 3×3 convolution and 25 % faster for a whole 480×360 enhancement on a 2-core CPU
    (benchmarks/README.md). The layout only changes float summation order, not the result's meaning.
    For the owner of a model (the process that loaded it), once; others call :func:`inference_model`.
    """
    return model.to(device, memory_format=torch.channels_last).eval()


def inference_model(model: TTSR, device: torch.device) -> TTSR:
    """``model`` itself when it is ready for inference on ``device``, else a prepared copy.

    A caller's model is never moved, converted or switched to eval mode behind its back: prepare it
    once with :func:`prepare_for_inference` and every call runs on it without copying.
    """
    tensors = itertools.chain(model.parameters(), model.buffers())
    if not model.training and all(_ready(t, device) for t in tensors):
        return model
    return prepare_for_inference(copy.deepcopy(model), device)


def _ready(t: torch.Tensor, device: torch.device) -> bool:
    on_device = t.device.type == device.type and (device.index is None or t.device.index == device.index)
    return on_device and (t.dim() != 4 or t.is_contiguous(memory_format=torch.channels_last))


def super_resolve(
    model: TTSR,
    lr: np.ndarray,
    refs: Sequence[np.ndarray],
    *,
    search: SearchConfig | None = None,
    device: str | torch.device | None = "cpu",
    amp_dtype: Precision | None = None,
    tile: int | None = None,
    tile_overlap: int = 16,
    backend: Backend | str | None = None,
    reference_cache: ReferenceCache | None = None,
) -> SRResult:
    """×4 super-resolution of one uint8 RGB image with one or more uint8 RGB references.

    lr (h, w, 3) of any size ≥ 1×1; refs: each (H, W, 3), at least 12×12 → (4h, 4w, 3) uint8.
    ``tile``: process the LR image in ``tile``×``tile`` pieces sharing ``tile_overlap`` pixels,
    blended (see :mod:`ttsr_core.model.tiling`); the references are encoded once and searched whole by
    every tile, so memory is one tile's network plus the references' features. None = one pass.
    ``model`` is used as it is when ready for ``device`` (:func:`inference_model`), else through a copy.
    ``backend``: how the main network runs; None = ``Backend.FUSED``, ``"eager"`` = the reference.
    ``reference_cache``: reuse the references' encoding from an earlier call with the same pixels,
    weights, device and precision (:mod:`ttsr_core.model.reference_cache`); the output is the same.
    """
    check_rgb(lr, "LR image")
    if isinstance(refs, np.ndarray):
        refs = [refs]
    if len(refs) == 0:
        raise ValueError("at least one reference image is needed")
    tiles = TileConfig(tile, tile_overlap)
    for i, r in enumerate(refs):
        check_reference(r, f"reference {i}")
    dev = resolve_device(device)
    h, w = lr.shape[:2]
    lr_up = resize_bicubic(lr, w * SCALE, h * SCALE)
    model = inference_model(model, dev)

    def encode() -> EncodedReferences:
        prepared = [prepare_reference(r, f"reference {i}") for i, r in enumerate(refs)]
        # Only the features are kept: the pixel tensors go when this returns.
        return model.encode_references([to_tensor(p.ref, dev) for p in prepared],
                                       [to_tensor(p.ref_down_up, dev) for p in prepared])

    with retained_heap(dev.type == "cpu"), torch.inference_mode(), autocast(dev, amp_dtype):
        if reference_cache is None:
            encoded = encode()
        else:
            encoded = reference_cache.encoded(model, refs, (str(dev), amp_dtype), encode)
        if tiles.tile is None:
            out = model.forward_encoded(to_tensor(lr, dev), to_tensor(lr_up, dev), encoded, search=search,
                                        return_attention=True, backend=backend)
        else:
            out = tiled_forward(model, to_tensor(lr, dev), to_tensor(lr_up, dev), encoded, tiles, search, backend)
    return SRResult(
        to_uint8(out.sr),
        out.soft_attention[0, 0].float().cpu().numpy(),
        out.hard_attention[0].view(h, w).cpu().numpy(),
    )
