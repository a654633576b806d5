"""3×3/1×1 convolutions with their ReLU, residual add and channel concatenation fused (inference).

The main network concatenates feature maps along channels before a convolution (CSFI merges, the
soft-attention heads) and adds or rectifies right after one. On channel-last CPU tensors each of those
is a separate pass over a ~100 MB map at the ×4 scale, and the concatenation interleaves channels
pixel by pixel (the single largest non-convolution cost of a tile: 99 calls, 1.4–3.5 s of a ~16 s
``refsr sr`` in the profiler). oneDNN fuses them: a convolution can end with ``+ other`` and a ReLU
(post-ops), and ``conv(cat(a, b))`` is ``conv_a(a) + conv_b(b)`` with the weight split by input
channels, each later part accumulated in place into the first's output.

Only float rounding changes (the split sums the channel groups in another order); fused ReLU and add
alone are bit-identical. Anywhere oneDNN's fused ops do not apply (another device, another dtype,
autocast, torch without oneDNN) the same function is computed with ``F.conv2d`` and ``torch.cat``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _onednn_applies(conv: nn.Conv2d, inputs: Sequence[torch.Tensor], add: torch.Tensor | None) -> bool:
    tensors = [*inputs, conv.weight] + ([add] if add is not None else [])
    return (
        torch.backends.mkldnn.is_available()
        and not torch.is_autocast_enabled("cpu")
        and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and isinstance(conv.padding, tuple)
    )


def _reference(
    conv: nn.Conv2d, inputs: Sequence[torch.Tensor], add: torch.Tensor | None, relu: bool
) -> torch.Tensor:
    x = inputs[0] if len(inputs) == 1 else torch.cat(tuple(inputs), dim=1)
    y = conv(x)
    if add is not None:
        y = y.add_(add)
    return y.relu_() if relu else y


def conv_fused(
    conv: nn.Conv2d,
    inputs: Sequence[torch.Tensor],
    *,
    add: torch.Tensor | None = None,
    relu: bool = False,
) -> torch.Tensor:
    """``relu?(conv(cat(inputs, dim=1)) + add?)`` without materialising the concatenation.

    ``inputs``: tensors (N, Ci, H, W) whose channel counts sum to ``conv.in_channels``; ``add``: a
    tensor of the output's shape, read and never modified. Returns a new tensor (channel-last when the
    inputs are). Inference only: the oneDNN ops have no autograd.
    """
    if sum(x.shape[1] for x in inputs) != conv.in_channels:
        raise ValueError(f"inputs have {[x.shape[1] for x in inputs]} channels, the conv takes {conv.in_channels}")
    if not _onednn_applies(conv, inputs, add):
        return _reference(conv, inputs, add, relu)
    geometry = (list(conv.padding), list(conv.stride), list(conv.dilation), 1)
    weights = conv.weight.split([x.shape[1] for x in inputs], dim=1) if len(inputs) > 1 else (conv.weight,)
    memory_format = torch.channels_last if inputs[0].is_contiguous(memory_format=torch.channels_last) \
        else torch.contiguous_format
    weights = [w.contiguous(memory_format=memory_format) for w in weights]
    last = len(inputs) - 1
    unary = "relu" if relu else "none"
    pointwise = torch.ops.mkldnn._convolution_pointwise
    if add is None:
        out = pointwise(inputs[0], weights[0], conv.bias, *geometry, unary if last == 0 else "none", [], "")
    else:
        out = pointwise.binary(inputs[0], add, weights[0], conv.bias, *geometry, "add", 1.0,
                               "relu" if relu and last == 0 else None, [], None)
    for i in range(1, last + 1):
        # In place: out ← conv_i(input_i) + out, the ReLU after the last part.
        torch.ops.mkldnn._convolution_pointwise_.binary(out, inputs[i], weights[i], None, *geometry, "add", 1.0,
                                                        "relu" if relu and i == last else None, [], None)
    return out
