"""Shape contracts, configs, gradients and the authors' semantics of the TTSR network."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ttsr_core.config import PRESETS, TTSRConfig, preset
from ttsr_core.model.net import TTSR, TTSROutput

from ..conftest import TINY


def _inputs(h: int, w: int, rh: int, rw: int, n: int = 1) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(h * 1000 + w)
    lr = torch.rand(n, 3, h, w, generator=g) * 2 - 1
    ref = torch.rand(n, 3, rh, rw, generator=g) * 2 - 1
    lr_up = torch.nn.functional.interpolate(lr, scale_factor=4, mode="bicubic")
    ref_du = torch.nn.functional.interpolate(torch.nn.functional.avg_pool2d(ref, 4), scale_factor=4, mode="bicubic")
    return lr, lr_up, ref, ref_du


@pytest.mark.parametrize("h,w,rh,rw", [(1, 1, 12, 12), (7, 5, 24, 36), (13, 4, 16, 44), (6, 6, 12, 100)])
def test_shape_contract_at_awkward_sizes(tiny_model: TTSR, h: int, w: int, rh: int, rw: int) -> None:
    lr, lr_up, ref, ref_du = _inputs(h, w, rh, rw, n=2)
    with torch.no_grad():
        out = tiny_model(lr, lr_up, ref, ref_du, return_attention=True)
    assert isinstance(out, TTSROutput)
    assert out.sr.shape == (2, 3, 4 * h, 4 * w)
    assert out.soft_attention.shape == (2, 1, h, w)
    assert out.hard_attention.shape == (2, h * w)
    assert out.texture_lv3.shape == (2, 8, h, w)
    assert out.texture_lv2.shape == (2, 8, 2 * h, 2 * w)
    assert out.texture_lv1.shape == (2, 4, 4 * h, 4 * w)
    assert out.sr.min() >= -1 and out.sr.max() <= 1
    assert int(out.hard_attention.max()) < (rh // 4) * (rw // 4)


def test_forward_returns_plain_tensor_by_default(tiny_model: TTSR) -> None:
    lr, lr_up, ref, ref_du = _inputs(5, 6, 20, 20)
    with torch.no_grad():
        sr = tiny_model(lr, lr_up, ref, ref_du)
    assert isinstance(sr, torch.Tensor) and sr.shape == (1, 3, 20, 24)


def test_paper_preset_matches_the_paper() -> None:
    cfg = preset("ttsr")
    assert cfg.num_block == (16, 16, 8, 4) and cfg.num_feat == 64 and cfg.res_scale == 1.0
    assert cfg.lte_channels == (64, 128, 256) and cfg.upscale == 4 and not cfg.global_skip
    assert set(PRESETS) >= {"ttsr", "ttsr-lite"}


@pytest.mark.parametrize("bad", [dict(upscale=2), dict(num_feat=7), dict(num_block=(1, 1, 1)), dict(lte_channels=(0, 1, 1)), dict(res_scale=0)])
def test_config_rejects_bad_values(bad: dict) -> None:
    with pytest.raises(ValueError):
        TTSRConfig(**bad)


def test_unknown_preset_names_choices() -> None:
    with pytest.raises(ValueError, match="ttsr-lite"):
        preset("nope")


def test_config_round_trips_through_dict() -> None:
    cfg = preset("ttsr-lite")
    assert TTSRConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown"):
        TTSRConfig.from_dict({**cfg.to_dict(), "bogus": 1})


def test_gradients_reach_the_lte() -> None:
    torch.manual_seed(0)
    model = TTSR(TINY).train()
    lr, lr_up, ref, ref_du = _inputs(6, 7, 24, 28, n=2)
    sr = model(lr, lr_up, ref, ref_du)
    sr.abs().mean().backward()
    for name, p in model.LTE.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reached LTE.{name}"
    # The ImageNet shift is fixed: buffers, not parameters.
    assert "sub_mean.weight" in dict(model.LTE.named_buffers())


def test_global_skip_starts_at_bicubic() -> None:
    torch.manual_seed(0)
    model = TTSR(TTSRConfig(num_feat=8, num_block=(1, 1, 1, 1), lte_channels=(4, 8, 8), global_skip=True)).eval()
    lr, lr_up, ref, ref_du = _inputs(5, 5, 20, 20)
    with torch.no_grad():
        sr = model(lr, lr_up, ref, ref_du)
    assert (sr - lr_up.clamp(-1, 1)).abs().mean() < 0.02  # a small residual on top of bicubic


def test_mismatched_reference_lists_raise(tiny_model: TTSR) -> None:
    lr, lr_up, ref, ref_du = _inputs(4, 4, 16, 16)
    with pytest.raises(ValueError, match="references"):
        tiny_model(lr, lr_up, [ref, ref], [ref_du])


def test_relevance_gate_is_optional_and_shuts_texture_off(rng) -> None:
    """Gated: the fused backend agrees with eager; a closed gate makes the output independent of the reference."""
    from dataclasses import replace

    from ttsr_core.model.inference import super_resolve

    from ..conftest import image

    torch.manual_seed(0)
    model = TTSR(replace(TINY, relevance_gate=True)).eval()
    assert {"gate.scale", "gate.shift"} <= set(model.state_dict())
    assert "gate.scale" not in TTSR(TINY).state_dict()
    lr, ref_a, ref_b = image(rng, 12, 16), image(rng, 40, 44), image(rng, 40, 44)[::-1].copy()
    eager = super_resolve(model, lr, [ref_a], backend="eager").image
    fused = super_resolve(model, lr, [ref_a], backend="fused").image
    assert np.abs(eager.astype(int) - fused.astype(int)).max() <= 1
    assert not np.array_equal(eager, super_resolve(model, lr, [ref_b]).image)
    with torch.no_grad():
        model.gate.shift.fill_(2.0)  # relevance is a cosine (≤ 1): every position is shut
        model.gate.scale.fill_(100.0)
    np.testing.assert_array_equal(super_resolve(model, lr, [ref_a]).image, super_resolve(model, lr, [ref_b]).image)
