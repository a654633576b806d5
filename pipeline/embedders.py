"""Image embedders behind one Protocol: open_clip, a download-free fallback, and a histogram baseline."""

from __future__ import annotations

import enum
import functools
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

from pipeline.images import sha256_file

logger = logging.getLogger(__name__)

WEIGHTS_ENV_VAR = "REFSR_CLIP_WEIGHTS"
# Names open_clip publishes on the Hugging Face hub, safest format first.
HF_WEIGHT_FILES: tuple[str, ...] = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


class EmbedderKind(enum.Enum):
    """Which embedder `make_embedder` builds."""

    AUTO = "auto"
    CLIP = "clip"
    FALLBACK = "fallback"


@runtime_checkable
class Embedder(Protocol):
    """Maps photos to unit vectors; `key` is recorded with every stored vector."""

    @property
    def key(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(N,) uint8 HxWx3 images -> float32 (N, dim), rows L2-normalised."""
        ...


class ClipWeightsNotFound(FileNotFoundError):
    """No CLIP weights are at hand locally (a download is never attempted)."""


@dataclass(frozen=True)
class ClipSettings:
    """open_clip model, where its weights come from, and how to batch."""

    model_name: str = "ViT-B-32"
    pretrained: str = "laion2b_s34b_b79k"
    # A local .safetensors/.bin/.pt file or a directory holding one of HF_WEIGHT_FILES;
    # None means: REFSR_CLIP_WEIGHTS, then the Hugging Face cache.
    weights: Path | None = None
    batch_size: int = 32
    device: str | None = None  # None: CUDA when available, else CPU

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class FallbackSettings:
    """Working resolution of the fallback descriptor."""

    work_size: int = 256  # long side every photo is reduced to before describing it

    def __post_init__(self) -> None:
        if self.work_size < 32:
            raise ValueError(f"work_size must be >= 32, got {self.work_size}")


@dataclass(frozen=True)
class EmbedderSettings:
    """Everything `make_embedder` needs, built once at the entry point."""

    clip: ClipSettings = field(default_factory=ClipSettings)
    fallback: FallbackSettings = field(default_factory=FallbackSettings)


# ---------------------------------------------------------------------------------------------
# shared helpers


def _check_images(images: Sequence[np.ndarray]) -> None:
    for i, im in enumerate(images):
        if not isinstance(im, np.ndarray):
            raise TypeError(f"image {i} must be a numpy array, got {type(im).__name__}")
        if im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] != 3:
            raise ValueError(f"image {i} must be uint8 HxWx3, got {im.dtype} {im.shape}")
        if im.shape[0] < 1 or im.shape[1] < 1:
            raise ValueError(f"image {i} is empty: {im.shape}")


def _l2(x: np.ndarray, axis: int = -1) -> np.ndarray:
    n = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(n, 1e-12)


def _reduce(image: np.ndarray, long_side: int) -> np.ndarray:
    """uint8 HxWx3 -> float32 hxwx3 in [0, 1] with max(h, w) == long_side (never upscales)."""
    h, w = image.shape[:2]
    scale = long_side / max(h, w)
    if scale >= 1.0:
        return image.astype(np.float32) / 255.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    # BOX after `reduce` is an area average: the right anti-aliasing for a big downscale, and fast.
    small = Image.fromarray(image).resize(size, Image.Resampling.BOX, reducing_gap=2.0)
    return np.asarray(small, dtype=np.float32) / 255.0


@functools.lru_cache(maxsize=32)
def _sha256_cached(path: str, mtime_ns: int, size: int) -> str:
    return sha256_file(path)


def weights_sha256(path: Path) -> str:
    """sha256 of a weights file, cached per (path, mtime, size) so a rewrite is re-hashed."""
    st = path.stat()
    return _sha256_cached(str(path.resolve()), st.st_mtime_ns, st.st_size)


# ---------------------------------------------------------------------------------------------
# CLIP


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


def find_clip_weights(settings: ClipSettings, env: Mapping[str, str] | None = None) -> Path:
    """Local weights for `settings`: the setting, then $REFSR_CLIP_WEIGHTS, then the HF cache.

    Raises ClipWeightsNotFound naming every place that was looked at.
    """
    env = os.environ if env is None else env
    if settings.weights is not None:
        return _local_weights(Path(settings.weights))
    from_env = env.get(WEIGHTS_ENV_VAR, "").strip()
    if from_env:
        return _local_weights(Path(from_env).expanduser())
    found, looked = _hf_cached_weights(settings.model_name, settings.pretrained)
    if found is not None:
        return found
    raise ClipWeightsNotFound(
        f"no CLIP weights for {settings.model_name}/{settings.pretrained}: looked at the weights "
        f"setting (unset), ${WEIGHTS_ENV_VAR} (unset) and {looked}"
    )


class ClipEmbedder:
    """open_clip image tower; key = clip:<model>:<tag>:<first 12 hex of the weights' sha256>."""

    def __init__(self, settings: ClipSettings = ClipSettings(), env: Mapping[str, str] | None = None) -> None:
        import open_clip
        import torch

        self.settings = settings
        path = find_clip_weights(settings, env)
        self.weights_path = path
        self._key = f"clip:{settings.model_name}:{settings.pretrained}:{weights_sha256(path)[:12]}"

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
        self.device = torch.device(settings.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self._model = model.to(self.device).eval()
        self._preprocess = preprocess
        self._dim = int(model.text_projection.shape[1]) if getattr(model, "text_projection", None) is not None \
            else int(open_clip.get_model_config(settings.model_name)["embed_dim"])
        logger.info("CLIP embedder %s from %s on %s", self._key, path, self.device)

    @property
    def key(self) -> str:
        return self._key

    @property
    def dim(self) -> int:
        return self._dim

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(N,) uint8 HxWx3 images -> float32 (N, dim), rows L2-normalised."""
        import torch

        _check_images(images)
        out = np.empty((len(images), self._dim), dtype=np.float32)
        bs = self.settings.batch_size
        with torch.inference_mode():
            for start in range(0, len(images), bs):
                chunk = images[start:start + bs]
                batch = torch.stack([self._preprocess(Image.fromarray(im)) for im in chunk])  # (B, 3, S, S)
                feats = self._model.encode_image(batch.to(self.device)).float()  # (B, dim)
                out[start:start + len(chunk)] = feats.cpu().numpy()
        return _l2(out).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# download-free embedders


def _srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """float32 hxwx3 sRGB in [0, 1] -> CIE Lab (D65), L in [0, 100]."""
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124564, 0.3575761, 0.1804375],
                  [0.2126729, 0.7151522, 0.0721750],
                  [0.0193339, 0.1191920, 0.9503041]], dtype=np.float32)
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883], dtype=np.float32)
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    lab = np.empty_like(f)
    lab[..., 0] = 116.0 * f[..., 1] - 16.0
    lab[..., 1] = 500.0 * (f[..., 0] - f[..., 1])
    lab[..., 2] = 200.0 * (f[..., 1] - f[..., 2])
    return lab


def _soft_index(values: np.ndarray, lo: float, hi: float, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear (triangular) bin assignment: a small colour or angle shift moves mass, not a whole count."""
    pos = (np.clip(values, lo, hi) - lo) / (hi - lo) * bins - 0.5
    i0 = np.floor(pos)
    w1 = (pos - i0).astype(np.float32)
    i0 = i0.astype(np.int64)
    return np.clip(i0, 0, bins - 1), np.clip(i0 + 1, 0, bins - 1), w1


def _grid_hist(cells_of: np.ndarray, bins_of: tuple[np.ndarray, ...], weights: tuple[np.ndarray, ...],
               n_cells: int, n_bins: int) -> np.ndarray:
    """Sum `weights` into (n_cells, n_bins) at the given (cell, bin) indices."""
    hist = np.zeros(n_cells * n_bins, dtype=np.float64)
    for b, w in zip(bins_of, weights):
        hist += np.bincount((cells_of * n_bins + b).ravel(), weights=w.ravel(), minlength=n_cells * n_bins)
    return hist.reshape(n_cells, n_bins)


def _cell_index(h: int, w: int, g: int) -> np.ndarray:
    rows = np.minimum(np.arange(h) * g // h, g - 1)
    cols = np.minimum(np.arange(w) * g // w, g - 1)
    return rows[:, None] * g + cols[None, :]  # (h, w) cell id in a g x g grid


def _pyramid(cell_hists: dict[int, np.ndarray]) -> np.ndarray:
    """Per-level: each cell histogram normalised to unit mass, then signed sqrt (Hellinger)."""
    parts = []
    for g in sorted(cell_hists):
        h = cell_hists[g]
        h = h / np.maximum(h.sum(axis=1, keepdims=True), 1e-12)
        parts.append(np.sqrt(h).ravel() / np.sqrt(g * g))  # each level has the same weight
    return np.concatenate(parts)


class FallbackEmbedder:
    """Multi-scale hand-made descriptor for "same scene, other viewpoint" retrieval; no download.

    What it captures, each block L2-normalised, weighted, then the whole L2-normalised:
      * colour layout: soft Lab histograms (L 4 x a 6 x b 6 bins) over a 1x1 + 2x2 spatial
        pyramid, Hellinger-normalised — robust to small shifts, crops and exposure changes;
      * structure: magnitude-weighted, soft-binned gradient-orientation histograms (9 unsigned
        bins, HOG-like) on 1x1 / 2x2 / 4x4 grids at two scales — what the scene is made of
        (edges, textures, their directions) independently of exact pixel positions;
      * coarse layout: an 8x8 mean-removed luminance thumbnail.
    Photos are first reduced to `work_size` on the long side, so a low-resolution query and a
    high-resolution candidate are described at the same scale. Pure numpy, deterministic.
    What it does not capture: semantics (two different beaches look alike to it), large
    viewpoint or lighting changes, rotations beyond a few degrees.
    """

    VERSION = "v1"
    _LAB_BINS = (4, 6, 6)
    _ORI_BINS = 9
    _THUMB = 8
    # Block weights, chosen on the retrieval benchmark (benchmarks/retrieval_recall.py).
    _W_COLOUR, _W_GRAD, _W_THUMB = 1.0, 1.0, 0.5

    def __init__(self, settings: FallbackSettings = FallbackSettings()) -> None:
        self.settings = settings
        n_colour = int(np.prod(self._LAB_BINS)) * (1 + 4)
        n_grad = 2 * self._ORI_BINS * (1 + 4 + 16)
        self._dim = n_colour + n_grad + self._THUMB * self._THUMB

    @property
    def key(self) -> str:
        return f"fallback:{self.VERSION}"

    @property
    def dim(self) -> int:
        return self._dim

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(N,) uint8 HxWx3 images -> float32 (N, dim), rows L2-normalised."""
        _check_images(images)
        out = np.empty((len(images), self._dim), dtype=np.float32)
        for i, im in enumerate(images):
            out[i] = self._describe(im)
        return out

    def _colour(self, rgb: np.ndarray) -> np.ndarray:
        lab = _srgb_to_lab(rgb)
        nl, na, nb = self._LAB_BINS
        l0, l1, lw = _soft_index(lab[..., 0], 0.0, 100.0, nl)
        a0, a1, aw = _soft_index(lab[..., 1], -60.0, 60.0, na)
        b0, b1, bw = _soft_index(lab[..., 2], -60.0, 60.0, nb)
        bins, weights = [], []
        for li, lw_ in ((l0, 1 - lw), (l1, lw)):
            for ai, aw_ in ((a0, 1 - aw), (a1, aw)):
                for bi, bw_ in ((b0, 1 - bw), (b1, bw)):
                    bins.append((li * na + ai) * nb + bi)
                    weights.append(lw_ * aw_ * bw_)
        h, w = rgb.shape[:2]
        hists = {g: _grid_hist(_cell_index(h, w, g), tuple(bins), tuple(weights), g * g, nl * na * nb)
                 for g in (1, 2)}
        return _pyramid(hists)

    def _gradients(self, lum: np.ndarray) -> np.ndarray:
        h, w = lum.shape
        gy = np.zeros_like(lum)
        gx = np.zeros_like(lum)
        gy[1:-1] = lum[2:] - lum[:-2]
        gx[:, 1:-1] = lum[:, 2:] - lum[:, :-2]
        mag = np.hypot(gx, gy)
        ang = np.mod(np.arctan2(gy, gx), np.pi)  # unsigned: a contrast flip keeps the edge
        # Circular soft binning: 0 and pi are the same orientation, so neighbours wrap around.
        pos = ang / np.pi * self._ORI_BINS - 0.5
        base = np.floor(pos).astype(np.int64)
        i0 = np.mod(base, self._ORI_BINS)
        i1 = np.mod(base + 1, self._ORI_BINS)
        w1 = (pos - base).astype(np.float32)
        # sqrt of magnitude: strong edges still count more, but one high-contrast border can't dominate.
        m = np.sqrt(mag)
        hists = {g: _grid_hist(_cell_index(h, w, g), (i0, i1), (m * (1 - w1), m * w1), g * g, self._ORI_BINS)
                 for g in (1, 2, 4)}
        return _pyramid(hists)

    def _thumb(self, lum: np.ndarray) -> np.ndarray:
        t = np.asarray(Image.fromarray(lum).resize((self._THUMB, self._THUMB), Image.Resampling.BOX),
                       dtype=np.float32)
        t = t - t.mean()
        return t.ravel()

    def _describe(self, image: np.ndarray) -> np.ndarray:
        rgb = _reduce(image, self.settings.work_size)  # (h, w, 3) in [0, 1]
        lum = (rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)).astype(np.float32)
        half = np.asarray(Image.fromarray(lum).resize(
            (max(1, lum.shape[1] // 2), max(1, lum.shape[0] // 2)), Image.Resampling.BOX), dtype=np.float32)
        blocks = (
            (self._W_COLOUR, self._colour(rgb)),
            (self._W_GRAD, np.concatenate([self._gradients(lum), self._gradients(half)])),
            (self._W_THUMB, self._thumb(lum)),
        )
        vec = np.concatenate([w * _l2(b.astype(np.float32)) for w, b in blocks])
        return _l2(vec)


class ColorHistogramEmbedder:
    """Baseline for the benchmark only: one global RGB histogram (`bins`^3), L2-normalised."""

    def __init__(self, bins: int = 8) -> None:
        if bins < 2:
            raise ValueError(f"bins must be >= 2, got {bins}")
        self.bins = bins

    @property
    def key(self) -> str:
        return f"colorhist:rgb{self.bins}"

    @property
    def dim(self) -> int:
        return self.bins ** 3

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(N,) uint8 HxWx3 images -> float32 (N, bins^3), rows L2-normalised."""
        _check_images(images)
        out = np.empty((len(images), self.dim), dtype=np.float32)
        for i, im in enumerate(images):
            q = (im.reshape(-1, 3).astype(np.int64) * self.bins) // 256  # (H*W, 3) bin per channel
            idx = (q[:, 0] * self.bins + q[:, 1]) * self.bins + q[:, 2]
            out[i] = np.bincount(idx, minlength=self.dim).astype(np.float32)
        return _l2(out)


def make_embedder(kind: EmbedderKind = EmbedderKind.AUTO, settings: EmbedderSettings = EmbedderSettings(),
                  env: Mapping[str, str] | None = None) -> Embedder:
    """Build the embedder `kind` asks for; AUTO = CLIP when its weights are at hand, else the fallback."""
    if not isinstance(kind, EmbedderKind):
        raise TypeError(f"kind must be an EmbedderKind, got {kind!r}")
    if kind is EmbedderKind.FALLBACK:
        return FallbackEmbedder(settings.fallback)
    if kind is EmbedderKind.CLIP:
        return ClipEmbedder(settings.clip, env)
    try:
        return ClipEmbedder(settings.clip, env)
    except ClipWeightsNotFound as exc:
        logger.warning(
            "CLIP weights not found (%s); using the built-in fallback embedder %s, which retrieves "
            "same-scene photos less reliably. To use CLIP, set the weights path setting or $%s to a "
            ".safetensors/.bin file or a directory holding %s, or place %s/%s in the Hugging Face cache.",
            exc, FallbackEmbedder.VERSION, WEIGHTS_ENV_VAR, HF_WEIGHT_FILES[0],
            settings.clip.model_name, settings.clip.pretrained,
        )
        return FallbackEmbedder(settings.fallback)
