"""onnx_graph.py computes MainNet's function: the archived ONNX Runtime timings are of the same network.

Archived with the trial, outside the test suite: ``.venv/bin/python -m pytest -q benchmarks/archive/onnx``
from the repository root (pytest puts this folder on the path for ``onnx_graph``).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ttsr_core.config import TTSRConfig
from ttsr_core.model.inference import prepare_for_inference
from ttsr_core.model.net import TTSR

from onnx_graph import (
    ExportableMainNet,
    bicubic_up_polyphase,
    bicubic_up_transposed,
    export_main_net,
    make_session,
    run,
)
from tests.ttsr_core.conftest import TINY

CONFIGS = [
    TINY,
    TTSRConfig(num_feat=8, num_block=(2, 0, 1, 2), lte_channels=(4, 8, 8), res_scale=0.5, global_skip=True),
]


@pytest.mark.parametrize("up", [bicubic_up_polyphase, bicubic_up_transposed])
@pytest.mark.parametrize("factor", [2, 4])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 5, 7, 9), (1, 3, 33, 17)])
def test_graph_bicubic_matches_interpolate(shape: tuple[int, int, int, int], factor: int, up) -> None:  # type: ignore[no-untyped-def]
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape) * factor))
    torch.testing.assert_close(up(x, factor), F.interpolate(x, scale_factor=factor, mode="bicubic"), atol=2e-6, rtol=0)


def _model(config: TTSRConfig) -> TTSR:
    torch.manual_seed(0)
    model = prepare_for_inference(TTSR(config), torch.device("cpu"))
    with torch.no_grad():  # larger than default-initialised weights make every stage matter
        for p in model.MainNet.parameters():
            p.mul_(2.0)
    return model


def _inputs(config: TTSRConfig, h: int, w: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    c1, c2, c3 = config.lte_channels
    return (torch.rand(1, 3, h, w, generator=g) * 2 - 1, torch.rand(1, 1, h, w, generator=g),
            torch.randn(1, c3, h, w, generator=g), torch.randn(1, c2, 2 * h, 2 * w, generator=g),
            torch.randn(1, c1, 4 * h, 4 * w, generator=g))


@pytest.mark.parametrize("config", CONFIGS)
def test_exportable_graph_matches_eager(config: TTSRConfig) -> None:
    model, args = _model(config), _inputs(config, 13, 18, 3)
    with torch.inference_mode():
        eager = model.MainNet(*args)
        graph = ExportableMainNet(model.MainNet)(*args)
    assert eager.abs().max() > 0.1  # the comparison is not between two near-zero maps
    torch.testing.assert_close(graph, eager, atol=1e-4, rtol=0)


@pytest.mark.parametrize("config", CONFIGS)
def test_onnx_runtime_matches_eager_at_another_size(config: TTSRConfig) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    model = _model(config)
    with torch.inference_mode():
        session = make_session(export_main_net(model.MainNet, _inputs(config, 13, 18, 3)), 1)
        for h, w, seed in ((13, 18, 3), (7, 29, 4)):  # the second size runs on the graph traced at the first
            args = _inputs(config, h, w, seed)
            eager = model.MainNet(*args)
            out = run(session, args)
            assert out.shape == eager.shape
            torch.testing.assert_close(out, eager, atol=1e-4, rtol=0)
