"""Multiply-adds of one TTSR forward pass, stage by stage, from the config and the image sizes *(no torch)*.

Counts the convolutions of the network as defined (``net.MainNet``, ``lte.LTE``): output pixels ×
output channels × input channels × kernel area; biases, activations, resampling and copies are not
multiply-adds and are left out (``benchmarks/inference/stages.py`` times them with the rest).
The fused backend runs the 1×1 convolutions that follow an upsampling before it, so it does slightly
fewer than these counts; tests/ttsr_core/accel/test_cost.py checks the counts against the modules.
"""
from __future__ import annotations

import math

from ttsr_core.config import SearchConfig, TTSRConfig


def _conv(pixels: int, cin: int, cout: int, k: int = 3) -> int:
    return pixels * cin * cout * k * k


def lte_macs(channels: tuple[int, int, int], h: int, w: int) -> int:
    """The texture extractor on one (h, w) image (h, w multiples of 4): all of it, lv3 needs every layer.

    The mean shift (a fixed 1×1 per-channel scaling, 3 multiply-adds per pixel) is left out.
    """
    c1, c2, c3 = channels
    px = h * w
    return (_conv(px, 3, c1) + _conv(px, c1, c1) + _conv(px // 4, c1, c2)
            + _conv(px // 4, c2, c2) + _conv(px // 16, c2, c3))


def main_net_macs(config: TTSRConfig, h: int, w: int) -> dict[str, int]:
    """The main network for an (h, w) LR input, by stage: ×1, ×2, ×4 and the merge tail."""
    nf, (b0, b1, b2, b3) = config.num_feat, config.num_block
    c1, c2, c3 = config.lte_channels
    p1, p2, p4 = h * w, 4 * h * w, 16 * h * w
    block = 2 * _conv(1, nf, nf)  # one residual block, per pixel
    x1 = (_conv(p1, 3, nf) + b0 * block * p1 + _conv(p1, nf, nf)  # SFE
          + _conv(p1, nf + c3, nf) + b1 * block * p1 + _conv(p1, nf, nf))
    csfi2 = _conv(p2, nf, nf, 1) + _conv(p1, nf, nf) + _conv(p1, 2 * nf, nf) + _conv(p2, 2 * nf, nf)
    x2 = (_conv(p1, nf, 4 * nf) + _conv(p2, nf + c2, nf) + csfi2 + b2 * block * (p1 + p2)
          + _conv(p1, nf, nf) + _conv(p2, nf, nf))
    csfi3 = (_conv(p2, nf, nf, 1) + _conv(p4, nf, nf, 1) + _conv(p1, nf, nf) + _conv(p4, nf, nf, 1)
             + _conv(p2, nf, nf) + _conv(p1, nf, nf) + _conv(p2, nf, nf)
             + _conv(p1, 3 * nf, nf) + _conv(p2, 3 * nf, nf) + _conv(p4, 3 * nf, nf))
    x4 = (_conv(p2, nf, 4 * nf) + _conv(p4, nf + c1, nf) + csfi3 + b3 * block * (p1 + p2 + p4)
          + _conv(p1, nf, nf) + _conv(p2, nf, nf) + _conv(p4, nf, nf))
    merge = (2 * _conv(p4, nf, nf, 1) + _conv(p4, 3 * nf, nf) + _conv(p4, nf, nf // 2)
             + _conv(p4, nf // 2, 3, 1))
    return {"main ×1": x1, "main ×2": x2, "main ×4": x4, "main merge tail": merge}


def exact_search_macs(channels: int, h: int, w: int, key_shapes: list[tuple[int, int]]) -> int:
    """Every lv3 query patch (h·w) against every key patch: C·9 multiply-adds per pair."""
    return h * w * sum(kh * kw for kh, kw in key_shapes) * channels * 9


def coarse_search_macs(channels: int, h: int, w: int, key_shapes: list[tuple[int, int]], search: SearchConfig) -> int:
    """The exact search on the ``coarse_factor``-pooled grids that starts the fast search."""
    f = search.coarse_factor
    pooled = [(math.ceil(kh / f), math.ceil(kw / f)) for kh, kw in key_shapes]
    return exact_search_macs(channels, math.ceil(h / f), math.ceil(w / f), pooled)


def forward_macs(config: TTSRConfig, h: int, w: int, ref_shapes: list[tuple[int, int]]) -> dict[str, int]:
    """LTE passes, exact search and main network for an (h, w) LR input and references of (H, W) pixels."""
    c3 = config.lte_channels[2]
    out = {
        "LTE LR↑ (queries)": lte_macs(config.lte_channels, 4 * h, 4 * w),
        "LTE Ref↓↑ (keys)": sum(lte_macs(config.lte_channels, rh, rw) for rh, rw in ref_shapes),
        "LTE Ref (values)": sum(lte_macs(config.lte_channels, rh, rw) for rh, rw in ref_shapes),
        "exact search": exact_search_macs(c3, h, w, [(rh // 4, rw // 4) for rh, rw in ref_shapes]),
    }
    out.update(main_net_macs(config, h, w))
    return out
