"""Named, seeded, composable image degradations: how an album's low-resolution photos were made.

Every step is a small frozen dataclass called as ``step(image, rng) -> image`` on (H, W, 3) uint8 RGB
arrays with a ``numpy.random.Generator``; a :class:`Chain` applies steps in order, each with its own
probability, and :class:`OneOf` picks one chain. The same seed gives the same pixels. Downscaling steps
take the exact output size, so an HR crop of side 4k always gives an LR image of side k.

The named pipelines (:data:`LR_PIPELINES`) are what training and evaluation ask for by name:
``bicubic`` is the community protocol (PIL bicubic ↓4); ``album`` is what messengers, old phones and
thumbnailers do to a photo (slight blur, a resize chain, sensor noise, chroma subsampling, JPEG at
quality 40–95); ``jpeg75`` is the evaluation's fixed JPEG row.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import numpy as np
from PIL import Image, ImageFilter

SCALE = 4  # LR = HR ↓ SCALE, as in ttsr_core.config

_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "lanczos": Image.Resampling.LANCZOS,
}


class Step(Protocol):
    """One degradation: (H, W, 3) uint8 → uint8 (size may change), drawing randomness from ``rng``."""

    name: str

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray: ...


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    lo, hi = bounds
    return float(lo) if lo == hi else float(rng.uniform(lo, hi))


def _check_range(name: str, bounds: tuple[float, float], lo: float, hi: float) -> None:
    if len(bounds) != 2 or not lo <= bounds[0] <= bounds[1] <= hi:
        raise ValueError(f"{name} must be (low, high) with {lo} ≤ low ≤ high ≤ {hi}, got {bounds!r}")


def _resize(image: np.ndarray, width: int, height: int, method: str) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((width, height), _FILTERS[method]))


def lr_size(hr_shape: Sequence[int], scale: int = SCALE) -> tuple[int, int]:
    """(width, height) of the LR image of an HR image of shape (H, W, ...): floor division, at least 1."""
    return max(1, hr_shape[1] // scale), max(1, hr_shape[0] // scale)


@dataclass(frozen=True)
class Bicubic:
    """PIL bicubic ↓scale: the paper's and the community's LR (C2-Matching/DATSR protocol)."""

    scale: int = SCALE
    name: str = "bicubic"

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return _resize(image, *lr_size(image.shape, self.scale), "bicubic")


@dataclass(frozen=True)
class ResizeChain:
    """↓scale in one to ``max_hops`` resizes with random filters: a photo re-shared, thumbnailed, re-shared.

    Intermediate sizes lie between the input and the output; the last hop lands on the exact LR size.
    """

    scale: int = SCALE
    max_hops: int = 3
    filters: tuple[str, ...] = ("bicubic", "bilinear", "box", "lanczos")
    name: str = "resize_chain"

    def __post_init__(self) -> None:
        if self.max_hops < 1:
            raise ValueError(f"max_hops must be ≥ 1, got {self.max_hops}")
        unknown = set(self.filters) - set(_FILTERS)
        if not self.filters or unknown:
            raise ValueError(f"filters must be a non-empty subset of {sorted(_FILTERS)}, got {self.filters!r}")

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        w_out, h_out = lr_size(image.shape, self.scale)
        hops = int(rng.integers(1, self.max_hops + 1))
        # Log-spaced intermediate factors, jittered, so a hop can be large or small.
        cuts = np.sort(rng.uniform(0.0, 1.0, hops - 1))
        for t in cuts:
            f = self.scale ** float(t)
            h, w = image.shape[:2]
            nw, nh = max(w_out, min(w, round(image.shape[1] / f))), max(h_out, min(h, round(image.shape[0] / f)))
            image = _resize(image, nw, nh, self.filters[int(rng.integers(len(self.filters)))])
        return _resize(image, w_out, h_out, self.filters[int(rng.integers(len(self.filters)))])


@dataclass(frozen=True)
class GaussianBlur:
    """Slight optical or motion-free blur, σ in pixels of the image it is applied to."""

    sigma: tuple[float, float] = (0.2, 1.2)
    name: str = "blur"

    def __post_init__(self) -> None:
        _check_range("sigma", self.sigma, 0.0, 10.0)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        sigma = _uniform(rng, self.sigma)
        if sigma <= 0:
            return image
        return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius=sigma)))


@dataclass(frozen=True)
class SensorNoise:
    """Additive Gaussian noise, σ in 8-bit levels; colour (per channel) or luminance-only."""

    sigma: tuple[float, float] = (1.0, 6.0)
    gray_prob: float = 0.4
    name: str = "noise"

    def __post_init__(self) -> None:
        _check_range("sigma", self.sigma, 0.0, 255.0)
        if not 0.0 <= self.gray_prob <= 1.0:
            raise ValueError(f"gray_prob must be in [0, 1], got {self.gray_prob}")

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        sigma = _uniform(rng, self.sigma)
        h, w = image.shape[:2]
        channels = 1 if rng.random() < self.gray_prob else 3
        noise = rng.normal(0.0, sigma, (h, w, channels))
        return np.clip(image.astype(np.float32) + noise, 0, 255).round().astype(np.uint8)


@dataclass(frozen=True)
class ChromaSubsampling:
    """4:2:0 colour: Cb and Cr at half resolution, as every JPEG and video codec stores them."""

    name: str = "chroma"

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w = image.shape[:2]
        y, cb, cr = Image.fromarray(image).convert("YCbCr").split()
        small = ((max(1, (w + 1) // 2), max(1, (h + 1) // 2)))
        cb = cb.resize(small, Image.Resampling.BOX).resize((w, h), Image.Resampling.BILINEAR)
        cr = cr.resize(small, Image.Resampling.BOX).resize((w, h), Image.Resampling.BILINEAR)
        return np.asarray(Image.merge("YCbCr", (y, cb, cr)).convert("RGB"))


@dataclass(frozen=True)
class JPEG:
    """Encode and decode as baseline JPEG (libjpeg through Pillow), 4:2:0 chroma, at a random quality."""

    quality: tuple[int, int] = (40, 95)
    name: str = "jpeg"

    def __post_init__(self) -> None:
        _check_range("quality", self.quality, 1, 100)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        lo, hi = self.quality
        q = lo if lo == hi else int(rng.integers(lo, hi + 1))
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="JPEG", quality=q, subsampling="4:2:0")
        buf.seek(0)
        with Image.open(buf) as im:
            return np.asarray(im.convert("RGB"))


@dataclass(frozen=True)
class Illumination:
    """Another exposure and light: brightness and contrast gains, gamma, and a white-balance shift."""

    brightness: tuple[float, float] = (0.8, 1.2)
    contrast: tuple[float, float] = (0.8, 1.2)
    gamma: tuple[float, float] = (0.75, 1.35)
    white_balance: float = 0.1  # each channel's gain within 1 ± this
    name: str = "illumination"

    def __post_init__(self) -> None:
        for name in ("brightness", "contrast", "gamma"):
            _check_range(name, getattr(self, name), 0.05, 20.0)
        if not 0.0 <= self.white_balance < 1.0:
            raise ValueError(f"white_balance must be in [0, 1), got {self.white_balance}")

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = image.astype(np.float32) / 255.0
        gains = 1.0 + rng.uniform(-self.white_balance, self.white_balance, 3).astype(np.float32)
        x = np.clip(x * gains, 0.0, 1.0) ** _uniform(rng, self.gamma)
        mean = x.mean()
        x = (x - mean) * _uniform(rng, self.contrast) + mean
        x = x * _uniform(rng, self.brightness)
        return (np.clip(x, 0.0, 1.0) * 255.0).round().astype(np.uint8)


@dataclass(frozen=True)
class Chain:
    """Steps in order, each applied with its probability; ``apply`` also names the steps that ran."""

    steps: tuple[tuple[Step, float], ...]
    name: str = "chain"

    def __post_init__(self) -> None:
        for step, p in self.steps:
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"probability of step {step.name!r} must be in [0, 1], got {p}")

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, tuple[str, ...]]:
        ran = []
        for step, p in self.steps:
            # Draw for every step, applied or not, so one step's probability never shifts the others' randomness.
            go = rng.random() < p
            if go:
                image = step(image, rng)
                ran.append(step.name)
        return np.ascontiguousarray(image), tuple(ran)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.apply(image, rng)[0]


@dataclass(frozen=True)
class OneOf:
    """One of several chains, chosen with the given weights (e.g. clean bicubic or album damage)."""

    choices: tuple[tuple[Chain, float], ...]
    name: str = "one_of"
    _weights: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        w = np.array([p for _, p in self.choices], dtype=np.float64)
        if not len(w) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"OneOf needs non-negative weights with a positive sum, got {list(w)}")
        object.__setattr__(self, "_weights", w / w.sum())

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, tuple[str, ...]]:
        k = int(rng.choice(len(self.choices), p=self._weights))
        chain = self.choices[k][0]
        out, ran = chain.apply(image, rng)
        return out, (chain.name, *ran)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.apply(image, rng)[0]


BICUBIC = Chain(((Bicubic(), 1.0),), name="bicubic")
# What an album's small photos went through, in the order it happens: lens/focus blur at full size, the
# resizes of thumbnailers and messengers, sensor noise (visible once small), then the JPEG of the last save.
# Chroma subsampling also runs on its own, for PNG/WebP copies of JPEG-decoded pictures.
ALBUM = Chain((
    (GaussianBlur(), 0.3),
    (ResizeChain(), 1.0),
    (SensorNoise(), 0.3),
    (ChromaSubsampling(), 0.2),
    (JPEG(), 0.8),
), name="album")
JPEG75 = Chain(((Bicubic(), 1.0), (JPEG(quality=(75, 75)), 1.0)), name="jpeg75")
# Training mix for the album model: a third clean (the community protocol), two thirds album damage.
MIXED = OneOf(((BICUBIC, 1.0), (ALBUM, 2.0)), name="mixed")

LR_PIPELINES: dict[str, Chain | OneOf] = {p.name: p for p in (BICUBIC, ALBUM, JPEG75, MIXED)}

# The reference's own photometric differences from the target (its geometry lives in ttsr_core.training.warp).
REFERENCE_PHOTOMETRY = Chain(((Illumination(), 0.7), (JPEG(quality=(60, 95)), 0.5)), name="reference")


def lr_pipeline(name: str) -> Chain | OneOf:
    """The named LR degradation (``bicubic``, ``album``, ``jpeg75`` or ``mixed``)."""
    try:
        return LR_PIPELINES[name]
    except KeyError:
        raise ValueError(f"unknown LR degradation {name!r}; choose one of {sorted(LR_PIPELINES)}") from None


def degrade(hr: np.ndarray, pipeline: str | Chain | OneOf | Callable[..., np.ndarray], seed: int = 0) -> np.ndarray:
    """LR of an (H, W, 3) uint8 HR image through a named or given pipeline, seeded."""
    chain = lr_pipeline(pipeline) if isinstance(pipeline, str) else pipeline
    return chain(hr, np.random.default_rng(seed))
