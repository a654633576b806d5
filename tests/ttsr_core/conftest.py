"""Tiny TTSR configs and seeded inputs for the ttsr_core tests."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ttsr_core.config import TTSRConfig
from ttsr_core.model.net import TTSR

TINY = TTSRConfig(num_feat=8, num_block=(1, 1, 1, 1), lte_channels=(4, 8, 8))


@pytest.fixture
def tiny_model() -> TTSR:
    torch.manual_seed(0)
    return TTSR(TINY).eval()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth-plus-texture uint8 RGB image (random noise alone makes every patch unique but unrealistic)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 127 + 60 * np.sin(xx / 7.0)[..., None] * np.cos(yy / 5.0)[..., None] * np.array([1.0, 0.6, -0.4])
    noise = rng.normal(0, 25, (h, w, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)
