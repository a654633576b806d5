"""The gallery's entry point: cards in, ``index.html`` and its cached ``assets/`` out."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from pipeline.gallery.assets import Assets
from pipeline.gallery.card_view import prepare_card
from pipeline.gallery.cards import GalleryCard, GallerySettings
from pipeline.gallery.page import page
from pipeline.images import PathLike
from pipeline.outputs import mark_output_folder
from durable.files import atomic_write

logger = logging.getLogger(__name__)

INDEX_NAME = "index.html"


def render_gallery(
    cards: Sequence[GalleryCard],
    out_dir: PathLike,
    *,
    title: str = "refsr gallery",
    summary: Sequence[tuple[str, str]] = (),
    settings: GallerySettings = GallerySettings(),
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write ``out_dir/index.html`` and its ``assets/`` for ``cards`` (shown in the given order).

    Thumbnails, crops and heat overlays are generated once and reused while their sources'
    size/mtime do not change; full-resolution files are linked relatively, never copied.
    ``summary`` rows (label, value) go under the title; ``progress(done, total)`` is called per card.
    Returns the index.html path.
    """
    keys = [card.key for card in cards]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise ValueError(f"card keys must be unique, got duplicates {duplicates}")
    if not isinstance(settings, GallerySettings):
        raise TypeError(f"settings must be GallerySettings, got {type(settings).__name__}")
    out = Path(os.path.abspath(out_dir))
    # The marker keeps album scans out of a gallery written inside the album.
    mark_output_folder(out)
    assets = Assets(out, settings)
    for sub in ("thumbs", "cards", "bicubic"):
        (assets.root / sub).mkdir(parents=True, exist_ok=True)
    for card in cards:
        if card.bicubic_path is not None:
            assets.used.add(Path(os.path.abspath(card.bicubic_path)))
    views = []
    for i, card in enumerate(cards):
        views.append(prepare_card(card, i, assets))
        if progress is not None:
            progress(i + 1, len(cards))
    index = out / INDEX_NAME
    text = page(views, out, title, summary, datetime.now(UTC), heat_opacity=settings.heat_alpha)
    atomic_write(index, lambda tmp: tmp.write_text(text, encoding="utf-8", newline="\n"))
    if settings.prune:
        assets.prune()
    logger.info("gallery of %d cards written to %s", len(cards), index)
    return index
