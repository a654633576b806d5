"""Image-level inference: input checks, sizes, uint8 conversions and multi-reference use."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ttsr_core.config import TTSRConfig
from ttsr_core.device import resolve_device
from ttsr_core.model.inference import (
    inference_model, prepare_for_inference, prepare_reference, super_resolve, to_tensor, to_uint8,
)
from ttsr_core.model.net import TTSR

from ..conftest import image


@pytest.mark.parametrize("h,w", [(1, 1), (3, 5), (17, 9), (8, 31)])
def test_output_is_exactly_four_times_the_lr(tiny_model: TTSR, rng: np.random.Generator, h: int, w: int) -> None:
    result = super_resolve(tiny_model, image(rng, h, w), [image(rng, 23, 30)])
    assert result.image.shape == (4 * h, 4 * w, 3) and result.image.dtype == np.uint8
    assert result.soft_attention.shape == (h, w) and result.hard_attention.shape == (h, w)


def test_several_references_of_different_sizes(tiny_model: TTSR, rng: np.random.Generator) -> None:
    refs = [image(rng, 20, 28), image(rng, 33, 14)]
    result = super_resolve(tiny_model, image(rng, 6, 7), refs)
    assert result.hard_attention.max() < 5 * 7 + 8 * 3


def test_reference_is_cropped_to_a_multiple_of_four(rng: np.random.Generator) -> None:
    prepared = prepare_reference(image(rng, 27, 30))
    assert prepared.ref.shape == (24, 28, 3) and prepared.ref_down_up.shape == (24, 28, 3)


def test_uint8_round_trip_is_exact(rng: np.random.Generator) -> None:
    img = image(rng, 9, 11)
    assert np.array_equal(to_uint8(to_tensor(img)), img)
    assert float(to_tensor(np.zeros((1, 1, 3), np.uint8)).min()) == -1.0


@pytest.mark.parametrize(
    "lr,refs,error,match",
    [
        (np.zeros((4, 4, 3), np.float32), [np.zeros((16, 16, 3), np.uint8)], TypeError, "uint8"),
        (np.zeros((4, 4), np.uint8), [np.zeros((16, 16, 3), np.uint8)], ValueError, r"\(H, W, 3\)"),
        (np.zeros((4, 4, 4), np.uint8), [np.zeros((16, 16, 3), np.uint8)], ValueError, r"\(H, W, 3\)"),
        (np.zeros((4, 4, 3), np.uint8), [np.zeros((11, 40, 3), np.uint8)], ValueError, "smaller than one 12×12"),
        (np.zeros((4, 4, 3), np.uint8), [], ValueError, "at least one reference"),
        ([[0]], [np.zeros((16, 16, 3), np.uint8)], TypeError, "numpy array"),
        (np.zeros((0, 4, 3), np.uint8), [np.zeros((16, 16, 3), np.uint8)], ValueError, "empty"),
    ],
)
def test_unusable_inputs_raise_clear_errors(tiny_model: TTSR, lr, refs, error, match) -> None:
    with pytest.raises(error, match=match):
        super_resolve(tiny_model, lr, refs)


def test_super_resolve_leaves_the_callers_model_as_it_was(rng: np.random.Generator) -> None:
    torch.manual_seed(5)
    model = TTSR(TTSRConfig(num_feat=4, num_block=(1, 1, 1, 1), lte_channels=(4, 4, 8))).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    conv = model.MainNet.SFE.conv_head.weight
    lr, ref = image(rng, 6, 7), image(rng, 20, 24)
    first = super_resolve(model, lr, [ref]).image
    assert model.training  # not switched to eval mode
    assert not conv.is_contiguous(memory_format=torch.channels_last)  # not converted
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    # Prepared once by its owner, the model is used as it is, and gives the same pixels.
    cpu = torch.device("cpu")
    assert prepare_for_inference(model, cpu) is model
    assert not model.training and conv.is_contiguous(memory_format=torch.channels_last)
    assert inference_model(model, cpu) is model
    assert np.array_equal(super_resolve(model, lr, [ref]).image, first)


def test_device_resolution() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(tiny_model: TTSR, rng: np.random.Generator) -> None:
    lr, ref = image(rng, 9, 10), image(rng, 40, 44)
    cpu = super_resolve(tiny_model, lr, [ref], device="cpu").image.astype(int)
    gpu = super_resolve(tiny_model, lr, [ref], device="cuda").image.astype(int)
    assert np.abs(cpu - gpu).max() <= 2
    bf16 = super_resolve(tiny_model, lr, [ref], device="cuda", amp_dtype="bfloat16").image.astype(int)
    assert np.abs(cpu - bf16).mean() < 3
