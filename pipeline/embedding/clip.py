"""The open_clip image tower as an Embedder, with weights found on disk only (never downloaded)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from durable.files import sha256_file
from pipeline.embedding.base import check_images, l2_normalise

logger = logging.getLogger(__name__)

# The entry point (flows.settings) reads this variable into ClipSettings.weights; nothing below reads it.
WEIGHTS_ENV_VAR = "REFSR_CLIP_WEIGHTS"
# Names open_clip publishes on the Hugging Face hub, safest format first.
HF_WEIGHT_FILES: tuple[str, ...] = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


class ClipWeightsNotFound(FileNotFoundError):
    """No CLIP weights are at hand locally (a download is never attempted)."""


@dataclass(frozen=True)
class ClipSettings:
    """open_clip model, where its weights come from, and how to batch."""

    model_name: str = "ViT-B-32"
    pretrained: str = "laion2b_s34b_b79k"
    # A local .safetensors/.bin/.pt file or a directory holding one of HF_WEIGHT_FILES;
    # None means: the Hugging Face cache.
    weights: Path | None = None
    batch_size: int = 32
    device: str | None = None  # None: CUDA when available, else CPU

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


@functools.lru_cache(maxsize=32)
def _sha256_cached(path: str, mtime_ns: int, size: int) -> str:
    return sha256_file(path)


def weights_sha256(path: Path) -> str:
    """sha256 of a weights file, cached per (path, mtime, size) so a rewrite is re-hashed."""
    st = path.stat()
    return _sha256_cached(str(path.resolve()), st.st_mtime_ns, st.st_size)


def _weights_in_dir(directory: Path) -> Path | None:
    for name in HF_WEIGHT_FILES:
        if (directory / name).is_file():
            return directory / name
    return None


def _local_weights(path: Path) -> Path:
    if path.is_dir():
        found = _weights_in_dir(path)
        if found is None:
            raise ClipWeightsNotFound(f"no {' or '.join(HF_WEIGHT_FILES)} in directory {path}")
        return found
    if not path.is_file():
        raise ClipWeightsNotFound(f"CLIP weights file {path} does not exist")
    if path.suffix not in _WEIGHT_SUFFIXES:
        raise ValueError(f"CLIP weights must be one of {_WEIGHT_SUFFIXES}, got {path}")
    return path


def _hf_cached_weights(model_name: str, pretrained: str) -> tuple[Path | None, str]:
    """The cached hub file for (model, tag) if present, and a description of what was looked for."""
    import open_clip
    from huggingface_hub import try_to_load_from_cache

    cfg = open_clip.pretrained.get_pretrained_cfg(model_name, pretrained)
    hub = (cfg.get("hf_hub") or "").strip("/")
    if not hub:
        return None, f"no Hugging Face repo is registered for {model_name}/{pretrained}"
    for name in HF_WEIGHT_FILES:
        # Only reads the local cache: never a network call, whatever HF_HUB_OFFLINE says.
        hit = try_to_load_from_cache(repo_id=hub, filename=name)
        if isinstance(hit, str) and Path(hit).is_file():
            return Path(hit), ""
    return None, f"Hugging Face cache entry {hub}/{{{','.join(HF_WEIGHT_FILES)}}}"


def find_clip_weights(settings: ClipSettings) -> Path:
    """Local weights for `settings`: the weights setting, then the Hugging Face cache.

    Raises ClipWeightsNotFound naming every place that was looked at.
    """
    if settings.weights is not None:
        return _local_weights(Path(settings.weights).expanduser())
    found, looked = _hf_cached_weights(settings.model_name, settings.pretrained)
    if found is not None:
        return found
    raise ClipWeightsNotFound(
        f"no CLIP weights for {settings.model_name}/{settings.pretrained}: looked at the weights "
        f"setting (unset; ${WEIGHTS_ENV_VAR} sets it) and {looked}"
    )


class ClipEmbedder:
    """open_clip image tower; key = clip:<model>:<tag>:<first 12 hex of the weights' sha256>."""

    def __init__(self, settings: ClipSettings = ClipSettings()) -> None:
        import open_clip

        from ttsr_core.device import resolve_device

        self.settings = settings
        path = find_clip_weights(settings)
        self.key = f"clip:{settings.model_name}:{settings.pretrained}:{weights_sha256(path)[:12]}"

        pcfg = open_clip.pretrained.get_pretrained_cfg(settings.model_name, settings.pretrained)
        model, _, preprocess = open_clip.create_model_and_transforms(
            settings.model_name,
            pretrained=None,  # weights are loaded below, from a local file only
            image_mean=pcfg.get("mean"),
            image_std=pcfg.get("std"),
            image_interpolation=pcfg.get("interpolation"),
            image_resize_mode=pcfg.get("resize_mode"),
        )
        # open_clip's loader: safetensors, or torch.load(weights_only=True); unwraps `module.`.
        open_clip.load_checkpoint(model, str(path), weights_only=True)
        self.device = resolve_device(settings.device)
        self._model = model.to(self.device).eval()
        self._preprocess = preprocess
        self.dim = int(model.text_projection.shape[1]) if getattr(model, "text_projection", None) is not None \
            else int(open_clip.get_model_config(settings.model_name)["embed_dim"])
        logger.info("CLIP embedder %s from %s on %s", self.key, path, self.device)

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(N,) uint8 HxWx3 images -> float32 (N, dim), rows L2-normalised."""
        import torch

        check_images(images)
        out = np.empty((len(images), self.dim), dtype=np.float32)
        bs = self.settings.batch_size
        with torch.inference_mode():
            for start in range(0, len(images), bs):
                chunk = images[start:start + bs]
                batch = torch.stack([self._preprocess(Image.fromarray(im)) for im in chunk])  # (B, 3, S, S)
                feats = self._model.encode_image(batch.to(self.device)).float()  # (B, dim)
                out[start:start + len(chunk)] = feats.cpu().numpy()
        return l2_normalise(out).astype(np.float32)

