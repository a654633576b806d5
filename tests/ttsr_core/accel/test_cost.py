"""The analytic cost model against the multiply-adds the modules actually perform."""
from __future__ import annotations

import pytest
import torch

from ttsr_core.accel.cost import coarse_search_macs, exact_search_macs, forward_macs, lte_macs, main_net_macs
from ttsr_core.config import SearchConfig, TTSRConfig
from ttsr_core.model.net import TTSR


def _counted(module: torch.nn.Module, *args: torch.Tensor) -> int:
    """Multiply-adds of every Conv2d in ``module`` during one call, from the shapes it produced."""
    total = 0

    def hook(conv: torch.nn.Conv2d, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = conv.kernel_size
        total += out.numel() * conv.in_channels // conv.groups * kh * kw

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        with torch.no_grad():
            module(*args)
    finally:
        for h in handles:
            h.remove()
    return total


@pytest.mark.parametrize("config", [
    TTSRConfig(num_feat=8, num_block=(1, 2, 1, 3), lte_channels=(4, 8, 12)),
    TTSRConfig(num_feat=6, num_block=(0, 0, 0, 0), lte_channels=(2, 4, 6)),
])
def test_cost_model_counts_what_the_modules_do(config: TTSRConfig) -> None:
    model = TTSR(config).eval()
    h, w = 6, 10
    c1, c2, c3 = config.lte_channels
    args = (torch.zeros(1, 3, h, w), torch.zeros(1, 1, h, w), torch.zeros(1, c3, h, w),
            torch.zeros(1, c2, 2 * h, 2 * w), torch.zeros(1, c1, 4 * h, 4 * w))
    assert sum(main_net_macs(config, h, w).values()) == _counted(model.MainNet, *args)
    assert lte_macs(config.lte_channels, 24, 40) == _counted(model.LTE, torch.zeros(1, 3, 24, 40))


def test_search_and_forward_totals() -> None:
    config = TTSRConfig(num_feat=8, num_block=(1, 1, 1, 1), lte_channels=(4, 8, 12))
    assert exact_search_macs(12, 3, 5, [(4, 6), (2, 2)]) == 15 * 28 * 12 * 9
    # Pooled grids round up: 9×9 queries and 10×7 keys at f = 4 are 3×3 and 3×2 cells.
    assert coarse_search_macs(12, 9, 9, [(10, 7)], SearchConfig(coarse_factor=4)) == 9 * 6 * 12 * 9
    stages = forward_macs(config, 6, 10, [(48, 64)])
    assert stages["LTE Ref (values)"] == stages["LTE Ref↓↑ (keys)"] == lte_macs(config.lte_channels, 48, 64)
    assert stages["LTE LR↑ (queries)"] == lte_macs(config.lte_channels, 24, 40)
    assert stages["exact search"] == exact_search_macs(12, 6, 10, [(12, 16)])
    assert {k for k in stages if k.startswith("main")} == set(main_net_macs(config, 6, 10))
