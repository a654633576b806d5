"""The fused inference backend and the GEMM bicubic against their references (eager MainNet, F.interpolate)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ttsr_core.accel.fused import fused_forward
from ttsr_core.accel.heap import retained_heap
from ttsr_core.accel.upsample import bicubic_up
from ttsr_core.config import TTSRConfig
from ttsr_core.model.inference import prepare_for_inference, super_resolve
from ttsr_core.model.net import TTSR, resolve_backend

from ..conftest import TINY, image


@pytest.mark.parametrize("factor", [2, 4])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 5, 7, 9), (1, 3, 33, 17), (1, 8, 40, 70)])
def test_bicubic_up_matches_interpolate(shape: tuple[int, int, int, int], factor: int) -> None:
    g = torch.Generator().manual_seed(sum(shape) * factor)
    x = torch.randn(*shape, generator=g)
    for fmt in (torch.contiguous_format, torch.channels_last):
        xx = x.contiguous(memory_format=fmt)
        ours = bicubic_up(xx, factor)
        assert ours.shape == (shape[0], shape[1], factor * shape[2], factor * shape[3])
        assert ours.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(ours, F.interpolate(xx, scale_factor=factor, mode="bicubic"), atol=2e-6, rtol=0)


def test_bicubic_up_rejects_other_factors() -> None:
    with pytest.raises(ValueError, match="factors 2 and 4"):
        bicubic_up(torch.zeros(1, 1, 4, 4), 3)


@pytest.mark.parametrize("config", [
    TINY,
    TTSRConfig(num_feat=8, num_block=(2, 0, 1, 2), lte_channels=(4, 8, 8), res_scale=0.5, global_skip=True),
])
def test_fused_main_network_matches_eager(config: TTSRConfig) -> None:
    torch.manual_seed(0)
    model = prepare_for_inference(TTSR(config), torch.device("cpu"))
    # Larger than default-initialised weights make every stage matter to the output.
    with torch.no_grad():
        for p in model.MainNet.parameters():
            p.mul_(2.0)
    g = torch.Generator().manual_seed(3)
    h, w = 13, 18
    c1, c2, c3 = config.lte_channels
    args = (torch.rand(1, 3, h, w, generator=g) * 2 - 1, torch.rand(1, 1, h, w, generator=g),
            torch.randn(1, c3, h, w, generator=g), torch.randn(1, c2, 2 * h, 2 * w, generator=g),
            torch.randn(1, c1, 4 * h, 4 * w, generator=g))
    with torch.inference_mode():
        eager = model.MainNet(*args)
        fused = fused_forward(model.MainNet, *args)
    assert eager.abs().max() > 0.1  # the comparison is not between two near-zero maps
    torch.testing.assert_close(fused, eager, atol=1e-4, rtol=0)


def test_super_resolve_fused_matches_eager_backend(tiny_model: TTSR, rng) -> None:  # type: ignore[no-untyped-def]
    lr, ref = image(rng, 21, 30), image(rng, 64, 80)
    outs = {}
    for backend in ("eager", "fused"):
        outs[backend] = super_resolve(tiny_model, lr, [ref], backend=backend)
    diff = outs["fused"].image.astype(int) - outs["eager"].image.astype(int)
    assert abs(diff).max() <= 1  # at most one grey level from rounding a ≤ 1e-4 difference
    assert (outs["fused"].hard_attention == outs["eager"].hard_attention).all()


def test_backend_resolution() -> None:
    with torch.no_grad():
        assert resolve_backend(None).value == "fused"
        assert resolve_backend("eager").value == "eager"
    assert resolve_backend(None).value == "eager"  # autograd on: training runs the reference
    with pytest.raises(ValueError, match="inference only"):
        resolve_backend("fused")
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("onnx")


def test_retained_heap_nests_and_keeps_results() -> None:
    x = torch.randn(1, 4, 64, 64)
    with retained_heap():
        with retained_heap():
            inner = F.relu(x) + 1
        outer = F.relu(x) + 1
    assert torch.equal(inner, outer)


def test_matmul_nt_matches_the_plain_product() -> None:
    from ttsr_core.accel.gemm import matmul_nt

    g = torch.Generator().manual_seed(5)
    x, w = torch.randn(37, 70, generator=g), torch.randn(53, 70, generator=g)
    torch.testing.assert_close(matmul_nt(x, w), x @ w.t(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(matmul_nt(x.bfloat16(), w.bfloat16()).float(), (x.bfloat16() @ w.bfloat16().t()).float())
