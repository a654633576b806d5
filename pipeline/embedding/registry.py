"""Image embedders by kind: one registry from EmbedderKind to a factory, and AUTO's CLIP-else-fallback choice."""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.embedding.base import Embedder
from pipeline.embedding.clip import HF_WEIGHT_FILES, WEIGHTS_ENV_VAR, ClipEmbedder, ClipSettings, ClipWeightsNotFound
from pipeline.embedding.fallback import FallbackEmbedder, FallbackSettings

logger = logging.getLogger(__name__)


class EmbedderKind(enum.Enum):
    """Which embedder `make_embedder` builds; each member has a factory in EMBEDDERS."""

    AUTO = "auto"
    CLIP = "clip"
    FALLBACK = "fallback"


@dataclass(frozen=True)
class EmbedderSettings:
    """Everything the factories need, built once at the entry point."""

    clip: ClipSettings = field(default_factory=ClipSettings)
    fallback: FallbackSettings = field(default_factory=FallbackSettings)


def _auto(settings: EmbedderSettings) -> Embedder:
    """CLIP when its weights are at hand, else the built-in fallback (with one warning saying how to get CLIP)."""
    try:
        return ClipEmbedder(settings.clip)
    except ClipWeightsNotFound as exc:
        # Short, once per process: the README's CLIP section says where weights go.
        logger.warning("CLIP weights not found; using the built-in embedder %s (set $%s to use CLIP)",
                       FallbackEmbedder.VERSION, WEIGHTS_ENV_VAR)
        logger.info("CLIP lookup: %s; expected %s or %s/%s in the Hugging Face cache", exc, HF_WEIGHT_FILES[0],
                    settings.clip.model_name, settings.clip.pretrained)
        return FallbackEmbedder(settings.fallback)


# A new embedder: a member of EmbedderKind, its class, and one entry here (the CLI offers every key).
EMBEDDERS: dict[EmbedderKind, Callable[[EmbedderSettings], Embedder]] = {
    EmbedderKind.AUTO: _auto,
    EmbedderKind.CLIP: lambda settings: ClipEmbedder(settings.clip),
    EmbedderKind.FALLBACK: lambda settings: FallbackEmbedder(settings.fallback),
}


def make_embedder(kind: EmbedderKind = EmbedderKind.AUTO, settings: EmbedderSettings = EmbedderSettings()) -> Embedder:
    """Build the embedder `kind` asks for (see EMBEDDERS)."""
    if not isinstance(kind, EmbedderKind):
        raise TypeError(f"kind must be an EmbedderKind, got {kind!r}")
    return EMBEDDERS[kind](settings)
