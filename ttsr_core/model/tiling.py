"""Overlapping-tile TTSR inference with the references encoded once: memory bounded for any target size."""
from __future__ import annotations

import logging
import math

import torch

from ttsr_core.config import SCALE, Backend, SearchConfig, TileConfig
from ttsr_core.model.net import TTSR, EncodedReferences, TTSROutput

logger = logging.getLogger(__name__)


def tile_spans(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """[start, stop) spans of one side ≤ ``tile`` covering [0, length), neighbours sharing ≥ overlap.

    The fewest tiles that fit are used, each shrunk to the smallest side that still leaves every
    neighbouring pair ``overlap`` pixels: with a fixed side the slack would become extra overlap,
    computed twice (360 rows in two 256-row tiles share 152 rows: 1.4× the work of one pass).
    """
    if length < 1:
        raise ValueError(f"length must be ≥ 1, got {length}")
    if length <= tile:
        return [(0, length)]
    if tile <= overlap:
        raise ValueError(f"tile ({tile}) must be larger than overlap ({overlap})")
    n = math.ceil((length - overlap) / (tile - overlap))
    side = math.ceil((length + (n - 1) * overlap) / n)  # ≤ tile, by the choice of n
    # Even spacing keeps every shared strip about the same width (never below overlap: the step
    # rounds up to at most side − overlap, an integer).
    step = (length - side) / (n - 1)
    return [(round(k * step), round(k * step) + side) for k in range(n)]


def _cosine_step(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """0 below lo, 1 above hi, raised cosine between: step(x) + (1 − step(x)) fades two tiles to 1 exactly."""
    if hi <= lo:
        return (x >= lo).to(x.dtype)
    t = ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
    return 0.5 - 0.5 * torch.cos(math.pi * t)


def blend_weights(spans: list[tuple[int, int]], k: int, scale: int) -> torch.Tensor:
    """1-D weight of tile k over its own span, sampled at ``scale`` pixels per LR pixel: (scale*(b-a),).

    Across each strip shared with a neighbour the weight rises (or falls) along the strip's central
    half; a tile's outer quarter of the strip, where its zero padding distorts the network most,
    gets weight 0. Neighbouring weights sum to 1 wherever only two tiles overlap.
    """
    a, b = spans[k]
    x = (torch.arange(scale * (b - a), dtype=torch.float64) + 0.5) / scale + a  # pixel centres in LR units
    w = torch.ones_like(x)
    if k > 0:
        lo, hi = a, spans[k - 1][1]
        w = w * _cosine_step(x, lo + (hi - lo) / 4, hi - (hi - lo) / 4)
    if k < len(spans) - 1:
        lo, hi = spans[k + 1][0], b
        w = w * (1.0 - _cosine_step(x, lo + (hi - lo) / 4, hi - (hi - lo) / 4))
    return w.float()


def tiled_forward(
    model: TTSR,
    lr: torch.Tensor,
    lr_up: torch.Tensor,
    encoded: EncodedReferences,
    tiles: TileConfig,
    search: SearchConfig | None = None,
    backend: Backend | str | None = None,
) -> TTSROutput:
    """×4 super-resolution of lr (N, 3, h, w) in overlapping tiles, blended; lr_up (N, 3, 4h, 4w) of the whole image.

    Each tile's LR↑ is cut from the whole image's LR↑ (bicubic of a crop would differ at its border)
    and searched against the whole references. → sr (N, 3, 4h, 4w), soft attention (N, 1, h, w)
    blended like sr, hard attention (N, h*w) from the tile with the largest weight at each position.
    """
    n, _, h, w = lr.shape
    if lr_up.shape[-2:] != (SCALE * h, SCALE * w):
        raise ValueError(f"lr_up {tuple(lr_up.shape[-2:])} is not ×{SCALE} of lr {(h, w)}")
    if tiles.tile is None or (tiles.tile >= h and tiles.tile >= w):
        return model.forward_encoded(lr, lr_up, encoded, search=search, return_attention=True, backend=backend)
    rows = tile_spans(h, tiles.tile, tiles.overlap)
    cols = tile_spans(w, tiles.tile, tiles.overlap)
    logger.debug("tiling %d×%d LR into %d×%d tiles", w, h, len(cols), len(rows))
    sr = lr.new_zeros(n, 3, SCALE * h, SCALE * w)
    sr_weight = lr.new_zeros(1, 1, SCALE * h, SCALE * w)
    soft = lr.new_zeros(n, 1, h, w)
    soft_weight = lr.new_zeros(1, 1, h, w)
    hard = torch.zeros(n, h, w, dtype=torch.long, device=lr.device)
    owner = torch.full((1, h, w), -1.0, device=lr.device)  # weight of the tile that set `hard`
    for i, (y0, y1) in enumerate(rows):
        wy_hr, wy_lr = blend_weights(rows, i, SCALE).to(lr.device), blend_weights(rows, i, 1).to(lr.device)
        for j, (x0, x1) in enumerate(cols):
            wx_hr, wx_lr = blend_weights(cols, j, SCALE).to(lr.device), blend_weights(cols, j, 1).to(lr.device)
            out = model.forward_encoded(
                lr[:, :, y0:y1, x0:x1], lr_up[:, :, SCALE * y0 : SCALE * y1, SCALE * x0 : SCALE * x1], encoded,
                search=search, return_attention=True, backend=backend,
            )
            w_hr = (wy_hr[:, None] * wx_hr[None, :])[None, None]  # (1, 1, 4th, 4tw)
            w_lr = (wy_lr[:, None] * wx_lr[None, :])[None, None]  # (1, 1, th, tw)
            sl_hr = (slice(None), slice(None), slice(SCALE * y0, SCALE * y1), slice(SCALE * x0, SCALE * x1))
            sl_lr = (slice(None), slice(None), slice(y0, y1), slice(x0, x1))
            sr[sl_hr] += out.sr.float() * w_hr
            sr_weight[sl_hr] += w_hr
            soft[sl_lr] += out.soft_attention.float() * w_lr
            soft_weight[sl_lr] += w_lr
            mine = w_lr[0] > owner[:, y0:y1, x0:x1]  # (1, th, tw)
            hard[:, y0:y1, x0:x1] = torch.where(mine, out.hard_attention.view(n, y1 - y0, x1 - x0),
                                                hard[:, y0:y1, x0:x1])
            owner[:, y0:y1, x0:x1] = torch.maximum(owner[:, y0:y1, x0:x1], w_lr[0])
            del out
    # Every pixel has positive total weight (an interior tile part has weight 1); the clamp only guards
    # against rounding in the cosine tails.
    sr = (sr / sr_weight.clamp_min(1e-12)).clamp(-1.0, 1.0)
    soft = soft / soft_weight.clamp_min(1e-12)
    return TTSROutput(sr, soft, hard.view(n, h * w))
