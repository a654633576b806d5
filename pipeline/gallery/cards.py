"""What a gallery shows: one card per enhancement attempt, its references, and the sizes of generated images."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.attention import AttentionMaps
from pipeline.vocabulary import EnhancementStatus

KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
THUMB_FORMATS = {"JPEG": ".jpg", "WEBP": ".webp"}


@dataclass(frozen=True)
class GallerySettings:
    """How big the generated images are; every size is in pixels."""

    thumb_side: int = 320  # long side of a thumbnail (never upscaled)
    crop_side: int = 160  # side of a 1:1 crop of the enhanced output
    thumb_format: str = "JPEG"  # or "WEBP"
    thumb_quality: int = 85
    heat_alpha: float = 0.6  # opacity of the heat colours over the greyed target, and the slider's start
    heat_side: int = 1024  # long side of the heat layer shown over the output (never more than the output's)
    prune: bool = True  # delete cached assets that no card of this render uses

    def __post_init__(self) -> None:
        for name in ("thumb_side", "crop_side", "thumb_quality", "heat_side"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"GallerySettings.{name} must be a positive int, got {value!r}")
        if self.thumb_side < 16 or self.crop_side < 16:
            raise ValueError(
                "GallerySettings thumb_side and crop_side must be >= 16, "
                f"got {self.thumb_side!r}, {self.crop_side!r}"
            )
        if self.thumb_quality > 100:
            raise ValueError(f"GallerySettings.thumb_quality must be in 1..100, got {self.thumb_quality!r}")
        if self.thumb_format not in THUMB_FORMATS:
            raise ValueError(
                f"GallerySettings.thumb_format must be one of {sorted(THUMB_FORMATS)}, "
                f"got {self.thumb_format!r}"
            )
        if not 0.0 <= float(self.heat_alpha) <= 1.0:
            raise ValueError(f"GallerySettings.heat_alpha must be in [0, 1], got {self.heat_alpha!r}")


@dataclass(frozen=True)
class GalleryReference:
    """One reference photo that lent texture; rank 0 is the best."""

    label: str  # shown as text (the album-relative path)
    path: Path | None  # the full-resolution file, linked and cropped; None when unknown
    rank: int = 0
    cosine: float | None = None  # retrieval similarity of the embeddings
    relevance: float | None = None  # the texture model's own matching score
    inliers: int | None = None  # feature matches one homography explains, as retrieval counted them

    def __post_init__(self) -> None:
        if self.path is not None:
            object.__setattr__(self, "path", Path(self.path))


@dataclass(frozen=True)
class GalleryCard:
    """Everything one card shows about one enhancement attempt of one target photo."""

    key: str  # unique in the gallery, [A-Za-z0-9_-]: used for element ids and cache names
    title: str  # the target's album-relative path (shown escaped)
    status: EnhancementStatus
    target_path: Path | None  # the low-resolution input
    enhanced_path: Path | None = None
    bicubic_path: Path | None = None  # a bicubic upscale of the target at the output's size (link only)
    references: tuple[GalleryReference, ...] = ()
    model: str = ""
    timings: tuple[tuple[str, float], ...] = ()  # ("model_s", 1.5), shown in the given order
    details: tuple[tuple[str, str], ...] = ()  # further label/value rows (device, embedder, run, when)
    params: str = ""  # the enhancement's parameters as JSON: folded away on the page, for whoever needs them
    error: str | None = None
    # The saved attention, or the file it was saved to (loaded with `load_attention`).
    attention: AttentionMaps | Path | None = field(default=None, compare=False)
    restored: bool = False  # a copy restored from its original (pipeline/matching/restore.py); the details say which

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not KEY_RE.fullmatch(self.key):
            raise ValueError(f"GalleryCard.key must match {KEY_RE.pattern}, got {self.key!r}")
        object.__setattr__(self, "status", EnhancementStatus(self.status))
        for name in ("target_path", "enhanced_path", "bicubic_path"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))
        if isinstance(self.attention, (str, os.PathLike)):
            object.__setattr__(self, "attention", Path(self.attention))
        elif self.attention is not None and not isinstance(self.attention, (AttentionMaps, Path)):
            raise TypeError(
                "GalleryCard.attention must be AttentionMaps, a path or None, "
                f"got {type(self.attention).__name__}"
            )
        object.__setattr__(self, "references", tuple(self.references))
        object.__setattr__(self, "timings", tuple((str(k), float(v)) for k, v in self.timings))
        object.__setattr__(self, "details", tuple((str(k), str(v)) for k, v in self.details))
