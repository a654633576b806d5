"""The main network's forward pass for inference, with the same weights and less memory traffic.

:class:`~ttsr_core.model.net.MainNet` is the reference (training runs it, with autograd). This pass
computes the same function in another order, for ``Backend.FUSED`` under no-grad:

- ReLUs, residual adds and the soft-attention products run in place on tensors just made, so
  the ×4 scale allocates and walks one ~100 MB map fewer per operation;
- the 1×1 convolutions that follow a bicubic upsampling run before it, at ¼ or 1/16 of the pixels
  (both are linear, and bicubic weights sum to one, so the bias passes through unchanged);
- bicubic upsampling is :func:`ttsr_core.accel.upsample.bicubic_up` (small GEMMs, channel-last output);
- ``res_scale`` = 1 skips its multiplication;
- ReLUs and residual adds that follow a convolution, and the channel concatenations before one, are
  fused into it (:func:`ttsr_core.accel.conv_ops.conv_fused`: oneDNN post-ops, split weights).

Only float rounding differs: ≤ 1e-4 against :class:`MainNet` on the tiny test models
(tests/ttsr_core/accel/test_fused.py), well under a grey level (7.8e-3) on the shipped one.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ttsr_core.accel.conv_ops import conv_fused
from ttsr_core.accel.upsample import bicubic_up

# net.py dispatches here, so the modules (net.ResBlock, SFE, CSFI2, CSFI3, MergeTail, MainNet) are
# typed as plain nn.Module: importing net would be a cycle.


def _resblock(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    y = conv_fused(block.conv1, [x], relu=True)
    if block.res_scale == 1.0:
        return conv_fused(block.conv2, [y], add=x)
    return block.conv2(y).mul_(block.res_scale).add_(x)


def _blocks(blocks: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
    for block in blocks:
        x = _resblock(block, x)
    return x


def _sfe(sfe: nn.Module, lr: torch.Tensor) -> torch.Tensor:
    x = conv_fused(sfe.conv_head, [lr], relu=True)
    return conv_fused(sfe.conv_tail, [_blocks(sfe.RBs, x)], add=x)


def _up_1x1(conv: torch.nn.Conv2d, x: torch.Tensor, factor: int) -> torch.Tensor:
    """relu(conv(up(x))) for a 1×1 conv, computed as relu(up(conv(x)))."""
    return bicubic_up(conv(x), factor).relu_()


def _csfi2(m: nn.Module, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x12 = _up_1x1(m.conv12, x1, 2)
    x21 = conv_fused(m.conv21, [x2], relu=True)
    x1 = conv_fused(m.conv_merge1, [x1, x21], relu=True)
    x2 = conv_fused(m.conv_merge2, [x2, x12], relu=True)
    return x1, x2


def _csfi3(
    m: nn.Module, x1: torch.Tensor, x2: torch.Tensor, x3: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x12 = _up_1x1(m.conv12, x1, 2)
    x13 = _up_1x1(m.conv13, x1, 4)
    x21 = conv_fused(m.conv21, [x2], relu=True)
    x23 = _up_1x1(m.conv23, x2, 2)
    x31 = conv_fused(m.conv31_2, [conv_fused(m.conv31_1, [x3], relu=True)], relu=True)
    x32 = conv_fused(m.conv32, [x3], relu=True)
    x1 = conv_fused(m.conv_merge1, [x1, x21, x31], relu=True)
    x2 = conv_fused(m.conv_merge2, [x2, x12, x32], relu=True)
    x3 = conv_fused(m.conv_merge3, [x3, x13, x23], relu=True)
    return x1, x2, x3


def _merge_tail(m: nn.Module, x1: torch.Tensor, x2: torch.Tensor, x3: torch.Tensor) -> torch.Tensor:
    x13 = _up_1x1(m.conv13, x1, 4)
    x23 = _up_1x1(m.conv23, x2, 2)
    x = conv_fused(m.conv_merge, [x3, x13, x23], relu=True)
    return m.conv_tail2(m.conv_tail1(x))


def _attend(head: torch.nn.Conv2d, x: torch.Tensor, texture: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """x + head(cat(x, texture)) · soft, the soft-attention fusion (paper §3.4)."""
    return conv_fused(head, [x, texture]).mul_(soft).add_(x)


def fused_forward(
    net: nn.Module, lr: torch.Tensor, S: torch.Tensor, T_lv3: torch.Tensor, T_lv2: torch.Tensor, T_lv1: torch.Tensor
) -> torch.Tensor:
    """Same inputs and output as ``net(lr, S, T_lv3, T_lv2, T_lv1)``; inference only (no autograd)."""
    # A tile's LR is a strided view into the whole image: a convolution on it returns a channel-first
    # map, and every later one then runs channel-first too (~35 % slower per 188×248 tile).
    lr = lr.contiguous(memory_format=torch.channels_last)
    x11 = _attend(net.conv11_head, _sfe(net.SFE, lr), T_lv3, S)
    x11 = conv_fused(net.conv11_tail, [_blocks(net.RB11, x11)], add=x11)

    x21 = x11
    x22 = F.pixel_shuffle(conv_fused(net.conv12, [x11], relu=True), 2)  # ReLU commutes with the shuffle
    x22 = _attend(net.conv22_head, x22, T_lv2, bicubic_up(S, 2))
    r21, r22 = _csfi2(net.ex12, x21, x22)
    r21, r22 = _blocks(net.RB21, r21), _blocks(net.RB22, r22)
    x21 = conv_fused(net.conv21_tail, [r21], add=x21)
    x22 = conv_fused(net.conv22_tail, [r22], add=x22)

    x31, x32 = x21, x22
    x33 = F.pixel_shuffle(conv_fused(net.conv23, [x22], relu=True), 2)
    x33 = _attend(net.conv33_head, x33, T_lv1, bicubic_up(S, 4))
    r31, r32, r33 = _csfi3(net.ex123, x31, x32, x33)
    r31, r32, r33 = _blocks(net.RB31, r31), _blocks(net.RB32, r32), _blocks(net.RB33, r33)
    x31 = conv_fused(net.conv31_tail, [r31], add=x31)
    x32 = conv_fused(net.conv32_tail, [r32], add=x32)
    x33 = conv_fused(net.conv33_tail, [r33], add=x33)
    return _merge_tail(net.merge_tail, x31, x32, x33)
