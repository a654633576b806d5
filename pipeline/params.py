"""The plain settings of retrieval and enhancement: validated values, no torch.

They live apart from the code that uses them so that building `flows.settings.Settings`, which
validates through them, does not import torch: the commands that only read the database
(`refsr which-ref`, `refsr history`) start without it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from ttsr_core.config import MIN_REF_SIDE, Precision, SearchConfig, SearchMode

# Pillow format name → the extension an output of that format gets.
OUTPUT_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "TIFF": ".tif", "BMP": ".bmp"}
# Every extension an output file may end with, canonical ones and their aliases → the format written.
WRITABLE_EXTENSIONS = {**{ext: fmt for fmt, ext in OUTPUT_EXTENSIONS.items()}, ".jpeg": "JPEG", ".tiff": "TIFF"}
# Formats we can read but not (always) write: their outputs become JPEG.
WRITE_FALLBACK = {"MPO": "JPEG", "HEIF": "JPEG", "HEIC": "JPEG", "AVIF": "JPEG"}


def _positive(owner: str, name: str, value: object, kind: type = int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int) or value <= 0:
        raise ValueError(f"{owner}.{name} must be a positive {kind.__name__}, got {value!r}")


def _name(precision: Precision | None) -> str | None:
    """A precision as job keys and records hold it: its plain name, None for the default."""
    return None if precision is None else precision.value


def default_search() -> SearchConfig:
    """Coarse-to-fine search: within 0.05 dB of exact on real pairs, 37-78× faster (benchmarks/README.md)."""
    return SearchConfig(mode=SearchMode.FAST)


@dataclass(frozen=True)
class RerankSettings:
    """Scale at which the texture model judges a candidate.

    The target is reduced to `target_side` on its long side and each candidate to `candidate_side`
    (never enlarged). 4× between the two mirrors TTSR's own geometry: the LR query is matched at
    ×4 (LR↑) against the reference at full resolution, so a same-scene reference of four times the
    target's size lines textures up at the same scale. Exact search at 64/256 costs about a second
    per candidate on a busy 2-core CPU; 128/512 (the paper's working sizes) about four.
    """

    target_side: int = 64
    candidate_side: int = 256
    search: SearchConfig = field(default_factory=default_search)

    def __post_init__(self) -> None:
        for name in ("target_side", "candidate_side"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < MIN_REF_SIDE:
                raise ValueError(f"RerankSettings.{name} must be an int >= {MIN_REF_SIDE}, got {value!r}")
        if not isinstance(self.search, SearchConfig):
            raise TypeError(f"RerankSettings.search must be a SearchConfig, got {self.search!r}")

    def fingerprint(self) -> dict[str, object]:
        """What changes the re-rank scores (for cache keys)."""
        return {
            "target_side": self.target_side,
            "candidate_side": self.candidate_side,
            "search_mode": self.search.mode.value,
            "coarse_factor": self.search.coarse_factor,
            "refine_radius": self.search.refine_radius,
            "matmul_dtype": _name(self.search.matmul_dtype),
        }


class GeometricModel(enum.StrEnum):
    """What one set of feature matches must agree on to count as inliers."""

    HOMOGRAPHY = "homography"  # a plane, or a scene seen from one place: strict, few chance inliers
    FUNDAMENTAL = "fundamental"  # any rigid scene from two viewpoints: looser (a point need only lie on a line)


@dataclass(frozen=True)
class VerifySettings:
    """Geometric verification of the `pool` best cosine candidates (pipeline.matching.verification).

    Both photos are reduced to `max_side` (a photo smaller than `min_side` is enlarged to it, so a
    thumbnail still yields features) and described by up to `max_features`
    RootSIFT features; a match passes Lowe's `ratio` test, and an inlier is a match that one
    `model`, fitted by MAGSAC++ with `threshold_px` (at `max_side`), explains. `min_inliers` is the
    count below which agreement is taken for chance; above it a candidate's score grows by
    `weight` per decade of inliers (see pipeline.matching.verification.blend). `enabled=False` ranks by
    cosine alone.
    """

    enabled: bool = True
    pool: int = 24
    max_side: int = 640
    min_side: int = 320
    max_features: int = 2000
    ratio: float = 0.8
    model: GeometricModel = GeometricModel.HOMOGRAPHY
    threshold_px: float = 4.0
    min_inliers: int = 12
    weight: float = 1.0

    def __post_init__(self) -> None:
        for name in ("pool", "max_side", "min_side", "max_features", "min_inliers"):
            _positive("VerifySettings", name, getattr(self, name))
        if self.min_side > self.max_side:
            raise ValueError(f"VerifySettings.min_side ({self.min_side!r}) cannot exceed max_side ({self.max_side!r})")
        if self.max_side < 64:
            raise ValueError(f"VerifySettings.max_side must be >= 64, got {self.max_side!r}")
        if isinstance(self.ratio, bool) or not isinstance(self.ratio, (int, float)) or not 0 < self.ratio <= 1:
            raise ValueError(f"VerifySettings.ratio must be in (0, 1], got {self.ratio!r}")
        _positive("VerifySettings", "threshold_px", self.threshold_px, float)
        if isinstance(self.weight, bool) or not isinstance(self.weight, (int, float)) or self.weight < 0:
            raise ValueError(f"VerifySettings.weight must be a number >= 0, got {self.weight!r}")
        try:
            object.__setattr__(self, "model", GeometricModel(self.model))
        except ValueError:
            raise ValueError(f"VerifySettings.model must be one of {[m.value for m in GeometricModel]}, "
                             f"got {self.model!r}") from None

    def feature_fingerprint(self) -> dict[str, object]:
        """What changes a photo's local features (for the feature cache)."""
        return {"max_side": self.max_side, "min_side": self.min_side, "max_features": self.max_features,
                "kind": "rootsift-v1"}

    def fingerprint(self) -> dict[str, object]:
        """What changes the verified ranking (for the re-rank memo)."""
        return {**self.feature_fingerprint(), "enabled": self.enabled, "pool": self.pool, "ratio": self.ratio,
                "model": self.model.value, "threshold_px": self.threshold_px, "min_inliers": self.min_inliers,
                "weight": self.weight}


@dataclass(frozen=True)
class RetrievalSettings:
    """How many cosine candidates are verified (`verify.pool`), how many of the verified ranking are
    re-ranked by texture relevance (`top_k`), how many references are kept (`refs`), and which of
    those may lend texture (`min_relevance`)."""

    top_k: int = 4
    refs: int = 1
    rerank: RerankSettings = field(default_factory=RerankSettings)
    verify: VerifySettings = field(default_factory=VerifySettings)
    # The reference gate (pipeline.matching.retrieval.lends_texture): a chosen reference that verification
    # does not vouch for lends texture only when its relevance reaches this; 0 = every chosen one lends.
    # 0 here, so rankings stay rankings; the product's default is declared in flows/settings.py.
    min_relevance: float = 0.0

    def __post_init__(self) -> None:
        for name in ("top_k", "refs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"RetrievalSettings.{name} must be a positive int, got {value!r}")
        value = self.min_relevance
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ValueError(f"RetrievalSettings.min_relevance must be a number in [0, 1], got {value!r}")
        if self.refs > self.top_k:
            raise ValueError(
                f"RetrievalSettings.refs ({self.refs!r}) cannot exceed top_k ({self.top_k!r}): "
                "references are chosen among the top-k cosine candidates"
            )


@dataclass(frozen=True)
class EnhanceParams:
    """Everything about one enhancement that is not the photos or the weights.

    `outscale`: final scale of the output; TTSR always works at ×4 and the result is resized
    afterwards (LANCZOS), as Real-ESRGAN's `--outscale` does. `tile`: LR tile side for targets
    larger than that (bounded memory: ttsr_core blends overlapping tiles).
    `ref_side_factor`: a reference is reduced (never enlarged) so its long side is at most this
    many times the target's: TTSR transfers texture at the output's scale, so a reference much
    larger than the ×4 output only costs search time.
    """

    outscale: float = 4.0
    search: SearchConfig = field(default_factory=default_search)
    tile: int | None = 256
    tile_overlap: int = 16
    ref_side_factor: float = 4.0
    output_format: str | None = None  # None: follow the input's format
    quality: int = 95
    amp_dtype: Precision | None = None  # autocast; None = float32
    # Back-projection steps onto the input (ttsr_core.model.consistency.make_consistent): an output scaled
    # back down matches the photo at least as well as bicubic does. 0 turns it off.
    consistency: int = 3

    def __post_init__(self) -> None:
        _positive("EnhanceParams", "outscale", self.outscale, float)
        if isinstance(self.consistency, bool) or not isinstance(self.consistency, int) or not 0 <= self.consistency <= 10:
            raise ValueError(f"EnhanceParams.consistency must be an int in 0..10, got {self.consistency!r}")
        if self.outscale > 16:
            raise ValueError(f"EnhanceParams.outscale must be at most 16, got {self.outscale!r}")
        _positive("EnhanceParams", "ref_side_factor", self.ref_side_factor, float)
        if self.tile is not None:
            _positive("EnhanceParams", "tile", self.tile)
        if isinstance(self.tile_overlap, bool) or not isinstance(self.tile_overlap, int) or self.tile_overlap < 0:
            raise ValueError(f"EnhanceParams.tile_overlap must be an int >= 0, got {self.tile_overlap!r}")
        if self.output_format is not None:
            name = str(self.output_format).strip().upper()
            name = {"JPG": "JPEG", "TIF": "TIFF"}.get(name, name)
            if name not in OUTPUT_EXTENSIONS:
                raise ValueError(
                    f"EnhanceParams.output_format must be one of {sorted(OUTPUT_EXTENSIONS)}, "
                    f"got {self.output_format!r}"
                )
            object.__setattr__(self, "output_format", name)
        if isinstance(self.quality, bool) or not isinstance(self.quality, int) or not 1 <= self.quality <= 100:
            raise ValueError(f"EnhanceParams.quality must be an int in 1..100, got {self.quality!r}")
        if self.amp_dtype not in (None, Precision.BFLOAT16, Precision.FLOAT16):
            raise ValueError(f"EnhanceParams.amp_dtype must be bfloat16, float16 or None, got {self.amp_dtype!r}")
        object.__setattr__(self, "amp_dtype", Precision.parse(self.amp_dtype, "EnhanceParams.amp_dtype"))

    def pixel_params(self) -> dict[str, object]:
        """The parameters that change output pixels: part of the job key and of the stored record."""
        return {
            "outscale": float(self.outscale),
            "search_mode": self.search.mode.value,
            "coarse_factor": self.search.coarse_factor,
            "refine_radius": self.search.refine_radius,
            "matmul_dtype": _name(self.search.matmul_dtype),
            "tile": self.tile,
            "tile_overlap": self.tile_overlap,
            "ref_side_factor": float(self.ref_side_factor),
            "output_format": self.output_format,
            "quality": self.quality,
            "amp_dtype": _name(self.amp_dtype),
            "consistency": self.consistency,
        }
