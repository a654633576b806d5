"""Embedders: a tiny random-weight open_clip model through the local-file path, and the fallback."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from pipeline.embedding.base import Embedder
from pipeline.embedding.clip import ClipEmbedder, ClipSettings, ClipWeightsNotFound, weights_sha256
from pipeline.embedding.fallback import ColorHistogramEmbedder, FallbackEmbedder
from pipeline.embedding.registry import EMBEDDERS, EmbedderKind, EmbedderSettings, make_embedder

TINY = "refsr-tiny-vit"


def scene(seed: int, h: int = 120, w: int = 160) -> np.ndarray:
    """Seeded synthetic photo: smooth colour gradients, a few rectangles and discs, mild texture."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros((h, w, 3), np.float32)
    for c in range(3):
        a, b, o = rng.uniform(-1, 1, 3)
        img[..., c] = 128 + 60 * np.sin(a * xx / 25 + b * yy / 25 + o * 3)
    for _ in range(6):
        y0, x0 = rng.integers(0, h - 20), rng.integers(0, w - 20)
        img[y0:y0 + rng.integers(10, 50), x0:x0 + rng.integers(10, 60)] = rng.uniform(0, 255, 3)
    for _ in range(4):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(5, 25)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def perturbed(img: np.ndarray) -> np.ndarray:
    """Same scene, other shot: shifted 6 px, rescaled to 80 %, colour-jittered."""
    from PIL import Image

    shifted = np.roll(img, (4, 6), axis=(0, 1))[4:, 6:]
    h, w = shifted.shape[:2]
    small = np.asarray(Image.fromarray(shifted).resize((int(w * 0.8), int(h * 0.8)), Image.Resampling.BILINEAR))
    jitter = small.astype(np.float32) * np.array([1.05, 0.97, 1.02]) + 6
    return np.clip(jitter, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ViT registered with open_clip, its random weights saved as safetensors."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    cfg_dir = tmp_path_factory.mktemp("clipcfg")
    cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
    }
    (cfg_dir / f"{TINY}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(cfg_dir)
    torch.manual_seed(0)
    model = open_clip.create_model(TINY, pretrained=None)
    path = tmp_path_factory.mktemp("clipweights") / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def tiny_clip(tiny_weights: Path) -> ClipEmbedder:
    return ClipEmbedder(ClipSettings(model_name=TINY, pretrained="random", weights=tiny_weights,
                                     batch_size=2, device="cpu"))


def test_clip_key_names_model_and_weights_hash(tiny_clip: ClipEmbedder, tiny_weights: Path) -> None:
    assert tiny_clip.key == f"clip:{TINY}:random:{weights_sha256(tiny_weights)[:12]}"
    assert tiny_clip.dim == 32


def test_clip_outputs_unit_rows_batch_consistent_and_distinct(tiny_clip: ClipEmbedder) -> None:
    images = [scene(1), scene(2, 90, 70), scene(3, 64, 64)]  # awkward sizes, batch_size=2 splits them
    batch = tiny_clip.embed(images)
    assert batch.shape == (3, 32) and batch.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    one_by_one = np.concatenate([tiny_clip.embed([im]) for im in images])
    np.testing.assert_allclose(batch, one_by_one, atol=1e-5)
    assert np.abs(batch[0] - batch[1]).max() > 1e-3


def test_clip_weights_from_a_directory_or_a_file(tiny_weights: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "open_clip_model.safetensors").write_bytes(tiny_weights.read_bytes())
    # The environment reaches the embedder only through settings built at the entry point.
    monkeypatch.setenv("REFSR_CLIP_WEIGHTS", str(tmp_path / "nowhere"))
    by_dir = ClipEmbedder(ClipSettings(model_name=TINY, pretrained="random", weights=tmp_path, device="cpu"))
    by_file = ClipEmbedder(ClipSettings(model_name=TINY, pretrained="random", weights=tiny_weights, device="cpu"))
    assert by_dir.key == by_file.key  # same bytes, same identity
    np.testing.assert_allclose(by_dir.embed([scene(4)]), by_file.embed([scene(4)]), atol=1e-6)


def test_clip_without_weights_names_what_was_looked_for(tmp_path: Path) -> None:
    with pytest.raises(ClipWeightsNotFound, match="REFSR_CLIP_WEIGHTS"):
        make_embedder(EmbedderKind.CLIP, EmbedderSettings(clip=ClipSettings(pretrained="no-such-tag")))
    with pytest.raises(ClipWeightsNotFound, match="open_clip_model.safetensors"):
        ClipEmbedder(ClipSettings(weights=tmp_path))  # empty directory


def test_auto_falls_back_with_exactly_one_warning(caplog: pytest.LogCaptureFixture, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # an empty hub cache, wherever the real one is
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="pipeline.embedding.registry"):
        emb = make_embedder(EmbedderKind.AUTO, EmbedderSettings())
    assert isinstance(emb, FallbackEmbedder)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "REFSR_CLIP_WEIGHTS" in warnings[0].getMessage()


def test_auto_uses_clip_when_weights_are_at_hand(tiny_weights: Path) -> None:
    settings = EmbedderSettings(clip=ClipSettings(model_name=TINY, pretrained="random", weights=tiny_weights,
                                                  device="cpu"))
    assert isinstance(make_embedder(EmbedderKind.AUTO, settings), ClipEmbedder)


def test_every_kind_has_a_factory_and_strings_are_rejected() -> None:
    assert set(EMBEDDERS) == set(EmbedderKind)
    built = make_embedder(EmbedderKind.FALLBACK)
    assert isinstance(built, FallbackEmbedder) and isinstance(built, Embedder)
    with pytest.raises(TypeError, match="'fallback'"):
        make_embedder("fallback")  # type: ignore[arg-type]


def test_fallback_is_deterministic_and_normalised() -> None:
    emb = FallbackEmbedder()
    images = [scene(s) for s in range(3)] + [np.zeros((5, 7, 3), np.uint8)]  # tiny and flat too
    a, b = emb.embed(images), FallbackEmbedder().embed(images)
    assert a.shape == (4, emb.dim) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert emb.key == "fallback:v1"


@pytest.mark.parametrize("embedder", [FallbackEmbedder(), ColorHistogramEmbedder()], ids=["fallback", "colorhist"])
def test_rejects_non_uint8_rgb(embedder: FallbackEmbedder | ColorHistogramEmbedder) -> None:
    with pytest.raises(ValueError, match="float32"):
        embedder.embed([np.zeros((8, 8, 3), np.float32)])
    with pytest.raises(ValueError, match=r"\(8, 8\)"):
        embedder.embed([np.zeros((8, 8), np.uint8)])


def test_fallback_ranks_another_shot_of_the_scene_first() -> None:
    emb = FallbackEmbedder()
    seeds = range(10, 22)
    gallery = emb.embed([scene(s) for s in seeds])
    queries = emb.embed([perturbed(scene(s)) for s in seeds])
    sims = queries @ gallery.T  # (12, 12), diagonal = the same scene
    assert (sims.argmax(axis=1) == np.arange(len(seeds))).all()
