"""Fused convolutions (oneDNN post-ops, split weights) against conv(cat(...)) + add, ReLU."""
from __future__ import annotations

import itertools

import pytest
import torch

from ttsr_core.accel.conv_ops import conv_fused


def _reference(conv: torch.nn.Conv2d, inputs: list[torch.Tensor], add: torch.Tensor | None, relu: bool) -> torch.Tensor:
    y = conv(torch.cat(inputs, dim=1))
    if add is not None:
        y = y + add
    return torch.relu(y) if relu else y


CASES = list(itertools.product([1, 3], [(8,), (8, 4), (8, 4, 5)], [False, True], [False, True],
                               [torch.contiguous_format, torch.channels_last]))


@pytest.mark.parametrize("kernel,splits,relu,with_add,fmt", CASES)
def test_conv_fused_matches_cat_conv_add_relu(kernel: int, splits: tuple[int, ...], relu: bool, with_add: bool,
                                              fmt: torch.memory_format) -> None:
    g = torch.Generator().manual_seed(kernel * 100 + sum(splits))
    conv = torch.nn.Conv2d(sum(splits), 6, kernel, padding=kernel // 2).to(memory_format=fmt)
    inputs = [torch.randn(1, c, 9, 11, generator=g).contiguous(memory_format=fmt) for c in splits]
    add = torch.randn(1, 6, 9, 11, generator=g).contiguous(memory_format=fmt) if with_add else None
    kept = None if add is None else add.clone()
    with torch.inference_mode():
        expected = _reference(conv, inputs, add, relu)
        got = conv_fused(conv, inputs, add=add, relu=relu)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    if relu:
        assert (got >= 0).all() and (got == 0).any()
    if add is not None:
        assert torch.equal(add, kept)  # read, never written
    assert got.is_contiguous(memory_format=fmt)


def test_conv_fused_falls_back_where_onednn_does_not_apply() -> None:
    """float64 (and CUDA, autocast) take the plain path: the same function, exactly conv + cat."""
    conv = torch.nn.Conv2d(5, 3, 3, padding=1).double()
    a, b = torch.randn(1, 2, 6, 7, dtype=torch.float64), torch.randn(1, 3, 6, 7, dtype=torch.float64)
    add = torch.randn(1, 3, 6, 7, dtype=torch.float64)
    with torch.inference_mode():
        assert torch.equal(conv_fused(conv, [a, b], add=add, relu=True), _reference(conv, [a, b], add, True))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        conv32 = torch.nn.Conv2d(5, 3, 3, padding=1)
        out = conv_fused(conv32, [a.float(), b.float()], relu=True)
        assert out.dtype == torch.bfloat16  # autocast ran the convolution, as it does in the eager model


def test_conv_fused_rejects_a_channel_mismatch() -> None:
    with pytest.raises(ValueError, match="channels"):
        conv_fused(torch.nn.Conv2d(5, 3, 3, padding=1), [torch.zeros(1, 4, 3, 3)])
