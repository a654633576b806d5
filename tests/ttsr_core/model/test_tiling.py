"""Tiled inference against the untiled oracle: interiors equal, seams invisible, awkward sizes."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from ttsr_core.config import TileConfig
from ttsr_core.model.inference import prepare_reference, resize_bicubic, super_resolve, to_tensor
from ttsr_core.model.net import TTSR
from ttsr_core.model.tiling import blend_weights, tile_spans, tiled_forward

from ..conftest import TINY, image


def _model(global_skip: bool) -> TTSR:
    torch.manual_seed(0)
    model = TTSR(replace(TINY, global_skip=global_skip)).eval()
    if global_skip:  # the zero-initialised tail would make the output plain bicubic
        torch.nn.init.normal_(model.MainNet.merge_tail.conv_tail2.weight, std=0.3)
    return model


def _inputs(rng: np.random.Generator, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor, list, list]:
    lr = image(rng, h, w)
    ref = prepare_reference(image(rng, 120, 140))
    return (to_tensor(lr), to_tensor(resize_bicubic(lr, 4 * w, 4 * h)),
            [to_tensor(ref.ref)], [to_tensor(ref.ref_down_up)])


def _distance_to_tile_edges(length: int, spans: list[tuple[int, int]]) -> torch.Tensor:
    """Per output pixel (×4), distance in LR pixels to the nearest tile edge inside the image."""
    centres = (torch.arange(4 * length) + 0.5) / 4
    edges = [e for span in spans for e in span if 0 < e < length]
    if not edges:
        return torch.full((4 * length,), float("inf"))
    return torch.stack([(centres - e).abs() for e in edges]).min(0).values


@torch.inference_mode()
def test_forward_encoded_equals_forward(rng: np.random.Generator) -> None:
    model = _model(True)
    lr, lr_up, refs, refs_du = _inputs(rng, 13, 17)
    full = model(lr, lr_up, refs, refs_du, return_attention=True)
    got = model.forward_encoded(lr, lr_up, model.encode_references(refs, refs_du), return_attention=True)
    assert torch.equal(got.sr, full.sr)
    assert torch.equal(got.soft_attention, full.soft_attention)
    assert torch.equal(got.hard_attention, full.hard_attention)


@pytest.mark.parametrize("global_skip", [False, True])
@torch.inference_mode()
def test_tiled_equals_untiled_away_from_tile_edges(rng: np.random.Generator, global_skip: bool) -> None:
    model = _model(global_skip)
    h, w, tile, overlap = 45, 61, 24, 8
    lr, lr_up, refs, refs_du = _inputs(rng, h, w)
    full = model(lr, lr_up, refs, refs_du, return_attention=True)
    got = tiled_forward(model, lr, lr_up, model.encode_references(refs, refs_du), TileConfig(tile, overlap))
    diff = (got.sr - full.sr).abs().amax(1)[0]  # (4h, 4w)
    dist = torch.minimum(_distance_to_tile_edges(h, tile_spans(h, tile, overlap))[:, None],
                         _distance_to_tile_edges(w, tile_spans(w, tile, overlap))[None, :])
    # Measured: ≤ 6e-8 (float rounding) from 6 LR px on, ≤ 2.2e-3 anywhere (output std ≈ 0.2; one
    # grey level is 7.8e-3): the tiny network sees a tile's zero padding only a few pixels deep, and
    # blending hides the rest.
    assert diff[dist >= 6].max() < 1e-5
    assert diff.max() < 3.9e-3  # half a grey level
    # Every tile searches the whole reference: texture choice is unchanged (the 3×3 query patch and
    # LTE receptive field reach past a tile edge only inside the shared strips, where the owner is
    # the tile whose edge is far away).
    assert torch.equal(got.hard_attention, full.hard_attention)
    torch.testing.assert_close(got.soft_attention, full.soft_attention, atol=1e-3, rtol=0)


def _seam_positions(length: int, spans: list[tuple[int, int]]) -> list[int]:
    """Output-pixel steps (i → i+1) at every interior tile edge and at every blend centre."""
    edges = {4 * e - 1 for span in spans for e in span if 0 < e < length}
    centres = {2 * (a + b) - 1 for (a, _), (_, b) in zip(spans[1:], spans[:-1])}
    return sorted(edges | centres)


def test_no_visible_seam_on_a_photo_like_image() -> None:
    # Smooth gradients + fine texture. A seam is a jump between neighbouring output pixels that is
    # larger at tile edges / blend centres than elsewhere; steps are compared with steps of the same
    # phase within an LR pixel (×4 upsampling makes step size depend on that phase).
    rng = np.random.default_rng(7)
    h, w = 48, 64
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 40 + 150 * (xx / w)[..., None] * np.array([1.0, 0.7, 0.4]) + 40 * (yy / h)[..., None]
    texture = 12 * np.sin(xx * 1.3 + yy * 0.7)[..., None] + rng.normal(0, 6, (h, w, 3))
    lr = np.clip(base + texture, 0, 255).astype(np.uint8)
    ref = image(rng, 128, 160)
    model = _model(True)
    tile, overlap = 24, 8
    plain = super_resolve(model, lr, [ref]).image.astype(np.float64)
    blended = super_resolve(model, lr, [ref], tile=tile, tile_overlap=overlap).image.astype(np.float64)
    hard = super_resolve(model, lr, [ref], tile=tile, tile_overlap=0).image.astype(np.float64)
    for axis, length in ((1, w), (0, h)):
        steps = np.abs(np.diff(blended, axis=axis)).mean(axis=(1 - axis, 2))  # (4·length − 1,)
        seams = _seam_positions(length, tile_spans(length, tile, overlap))
        same_phase = [np.mean([steps[x] for x in range(c % 4, steps.size, 4) if x not in seams]) for c in seams]
        assert np.mean(steps[seams] / np.array(same_phase)) <= 1.1
        # And blending is what keeps it that way: hard tile edges deviate more from the untiled image.
        hard_seams = _seam_positions(length, tile_spans(length, tile, 0))
        dev_hard = np.abs(np.take(hard - plain, hard_seams, axis=axis)).mean()
        dev_blend = np.abs(np.take(blended - plain, hard_seams, axis=axis)).mean()
        assert dev_blend < dev_hard


@pytest.mark.parametrize(("h", "w", "tile", "overlap"), [(23, 37, 10, 3), (9, 41, 8, 4), (17, 5, 6, 0)])
def test_odd_sizes_give_exact_shapes(rng: np.random.Generator, h: int, w: int, tile: int, overlap: int) -> None:
    model = _model(False)
    res = super_resolve(model, image(rng, h, w), [image(rng, 40, 52)], tile=tile, tile_overlap=overlap)
    assert res.image.shape == (4 * h, 4 * w, 3) and res.image.dtype == np.uint8
    assert res.soft_attention.shape == (h, w) and res.hard_attention.shape == (h, w)
    assert np.isfinite(res.soft_attention).all()


def test_tile_larger_than_the_image_is_untiled(rng: np.random.Generator) -> None:
    model = _model(True)
    lr, ref = image(rng, 14, 19), image(rng, 40, 48)
    plain = super_resolve(model, lr, [ref])
    tiled = super_resolve(model, lr, [ref], tile=32, tile_overlap=16)
    assert np.array_equal(plain.image, tiled.image)
    assert np.array_equal(plain.soft_attention, tiled.soft_attention)
    assert np.array_equal(plain.hard_attention, tiled.hard_attention)


@pytest.mark.parametrize(("length", "tile", "overlap"), [(100, 32, 8), (33, 32, 16), (61, 24, 8), (7, 3, 1), (50, 10, 0)])
def test_spans_cover_evenly_and_weights_partition_unity(length: int, tile: int, overlap: int) -> None:
    spans = tile_spans(length, tile, overlap)
    assert spans[0][0] == 0 and spans[-1][1] == length
    sides = {b - a for a, b in spans}
    assert len(sides) == 1 and sides.pop() <= min(tile, length)
    assert len(spans) == (1 if length <= tile else math.ceil((length - overlap) / (tile - overlap)))
    shared = [prev[1] - nxt[0] for prev, nxt in zip(spans, spans[1:])]
    # At least the overlap, and no more than rounding beyond it: slack is not spent on extra overlap.
    assert all(overlap <= s <= overlap + len(spans) for s in shared)
    total = torch.zeros(4 * length)
    for k, (a, b) in enumerate(spans):
        total[4 * a : 4 * b] += blend_weights(spans, k, 4)
    torch.testing.assert_close(total, torch.ones_like(total), atol=1e-6, rtol=0)


@pytest.mark.parametrize(("tile", "overlap", "match"), [(0, 0, "tile"), (20, 16, "tile"), (32, -1, "overlap")])
def test_bad_tile_settings_raise(tile: int, overlap: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TileConfig(tile, overlap)
