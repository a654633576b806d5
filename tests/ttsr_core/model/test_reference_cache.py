"""Encoded references reused across targets: same output, hits only on the same pixels and weights, bounded."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ttsr_core.model.inference import prepare_for_inference, super_resolve
from ttsr_core.model.net import TTSR
from ttsr_core.model.reference_cache import ReferenceCache, encoded_bytes

from ..conftest import TINY, image

MB = 2**20


@pytest.fixture
def model() -> TTSR:
    torch.manual_seed(0)
    return prepare_for_inference(TTSR(TINY), torch.device("cpu"))


@pytest.mark.parametrize("tile", [None, 12])
def test_a_second_target_reuses_the_reference_with_the_same_output(model: TTSR, rng, tile) -> None:  # type: ignore[no-untyped-def]
    ref = image(rng, 64, 80)
    targets = [image(rng, 20, 24), image(rng, 20, 24)]
    cache = ReferenceCache(64 * MB)
    tiling = {} if tile is None else {"tile": tile, "tile_overlap": 4}
    plain = [super_resolve(model, lr, [ref], **tiling) for lr in targets]
    cached = [super_resolve(model, lr, [ref], reference_cache=cache, **tiling) for lr in targets]
    assert (cache.misses, cache.hits, len(cache)) == (1, 1, 1)
    for a, b in zip(plain, cached):
        assert np.array_equal(a.image, b.image)
        assert np.array_equal(a.hard_attention, b.hard_attention)
        assert np.array_equal(a.soft_attention, b.soft_attention)


def test_other_pixels_weights_or_models_miss(model: TTSR, rng) -> None:  # type: ignore[no-untyped-def]
    ref, lr = image(rng, 64, 80), image(rng, 16, 20)
    cache = ReferenceCache(64 * MB)
    first = super_resolve(model, lr, [ref], reference_cache=cache)
    other_ref = ref.copy()
    other_ref[0, 0, 0] ^= 1  # one grey level of one pixel
    super_resolve(model, lr, [other_ref], reference_cache=cache)
    assert cache.misses == 2
    with torch.no_grad():
        model.LTE.slice1[0].weight.mul_(1.5)  # weights updated in place, as training does
    changed = super_resolve(model, lr, [ref], reference_cache=cache)
    assert cache.misses == 3 and cache.hits == 0
    assert not np.array_equal(changed.image, first.image)
    torch.manual_seed(1)
    other_model = prepare_for_inference(TTSR(TINY), torch.device("cpu"))
    super_resolve(other_model, lr, [ref], reference_cache=cache)
    assert cache.misses == 4 and cache.hits == 0


def test_the_budget_bounds_what_is_kept(model: TTSR, rng) -> None:  # type: ignore[no-untyped-def]
    refs = [image(rng, 64, 80) for _ in range(3)]
    lr = image(rng, 16, 20)
    one = encoded_bytes(model, refs[:1])
    cache = ReferenceCache(2 * one)
    for r in refs:
        super_resolve(model, lr, [r], reference_cache=cache)
    assert len(cache) == 2 and cache.nbytes <= 2 * one  # the least recently used went first
    super_resolve(model, lr, [refs[2]], reference_cache=cache)
    super_resolve(model, lr, [refs[0]], reference_cache=cache)
    assert (cache.hits, cache.misses) == (1, 4)
    nothing = ReferenceCache(0)
    super_resolve(model, lr, [refs[0]], reference_cache=nothing)
    assert len(nothing) == 0
    with pytest.raises(ValueError, match="max_bytes"):
        ReferenceCache(-1)


def test_encoded_bytes_bounds_the_real_encoding(model: TTSR, rng) -> None:  # type: ignore[no-untyped-def]
    ref = image(rng, 64, 80)
    cache = ReferenceCache(64 * MB)
    super_resolve(model, image(rng, 16, 20), [ref], reference_cache=cache)
    (entry,) = cache._entries.values()
    enc = entry.encoded
    tensors = [*enc.keys_lv3, *enc.values_lv1, *enc.values_lv2, *enc.values_lv3, *enc.texture_tables.values()]
    real = sum(t.numel() * t.element_size() for t in tensors)
    assert 0.8 * encoded_bytes(model, [ref]) <= real <= encoded_bytes(model, [ref])
