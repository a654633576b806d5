"""An output's provenance stamp: the XMP packet at encoding, then the signed C2PA manifest over the encoded bytes."""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.images import shrink
from pipeline.provenance import credentials, xmp
from pipeline.provenance.facts import Provenance
from pipeline.provenance.signing import SigningIdentity
from pipeline.vocabulary import CredentialsState

logger = logging.getLogger(__name__)

THUMBNAIL_SIDE = 256  # long side of the thumbnails in the manifest: enough to recognise a photo
THUMBNAIL_QUALITY = 75


@dataclass(frozen=True)
class StampRequest:
    """What the caller wants written into an output: its facts, and which of the two carriers."""

    provenance: Provenance
    xmp: bool = True
    identity: SigningIdentity | None = None  # None: no C2PA manifest (--no-credentials)


def thumbnail_jpeg(rgb: np.ndarray) -> bytes:
    """(H, W, 3) uint8 → a small JPEG for the manifest (long side ≤ THUMBNAIL_SIDE)."""
    buffer = io.BytesIO()
    Image.fromarray(shrink(rgb, THUMBNAIL_SIDE)).save(buffer, "JPEG", quality=THUMBNAIL_QUALITY)
    return buffer.getvalue()


def ingredients_for(p: Provenance, target: tuple[Path, str | None, np.ndarray],
                    refs: Sequence[tuple[Path, str | None, np.ndarray]]) -> list[credentials.Ingredient]:
    """The target and the references (path, Pillow format, pixels; best reference first) as ingredients.

    The reference a copy was restored from is the ingredient labelled ``original``.
    """
    if len(refs) != len(p.references):
        raise ValueError(f"{len(refs)} reference files for {len(p.references)} references in the provenance")
    path, fmt, rgb = target
    title = p.target_name or f"target photo sha256:{p.target_sha256[:16]}"
    out = [credentials.Ingredient("target", p.target_sha256, title, path, fmt, thumbnail_jpeg(rgb))]
    original = p.restored_from.sha256 if p.restored_from is not None else None
    for fact, (path, fmt, rgb) in zip(p.references, refs):
        if fact.sha256 == original:
            label, title = credentials.ORIGINAL, fact.name or f"original photo sha256:{fact.sha256[:16]}"
        else:
            label = f"reference-{fact.rank}"
            title = fact.name or f"reference photo {fact.rank + 1} sha256:{fact.sha256[:16]}"
        out.append(credentials.Ingredient(label, fact.sha256, title, path, fmt, thumbnail_jpeg(rgb)))
    return out


@dataclass
class ProvenanceStamp:
    """A `pipeline.images.Stamp`: XMP into the encoder's arguments, the manifest over its bytes.

    Neither carrier can stop an output from being written: a format without room for XMP (BMP) or
    one the C2PA library refuses leaves the output without it, with a warning, and `state`/`note`
    say so for the enhancement's record.
    """

    request: StampRequest
    ingredients: Sequence[credentials.Ingredient] = ()
    output_thumbnail: bytes = b""
    notes: list[str] = field(default_factory=list)
    signed: bool = False

    def save_params(self, fmt: str, exif: bytes | None) -> dict[str, object]:
        if not self.request.xmp:
            return {}
        try:
            return xmp.save_params(fmt, xmp.packet(self.request.provenance), exif)
        except ValueError as exc:
            self._refused(str(exc))
            return {}

    def finish(self, data: bytes, fmt: str) -> bytes:
        if self.request.identity is None:
            return data
        try:
            signed = credentials.sign(data, fmt, self.request.provenance, self.ingredients, self.output_thumbnail,
                                      self.request.identity)
        except credentials.CredentialsRefused as exc:
            self._refused(str(exc))
            return data
        self.signed = True
        return signed

    def _refused(self, why: str) -> None:
        logger.warning("output written without its provenance: %s", why)
        self.notes.append(why)

    @property
    def state(self) -> CredentialsState:
        if self.notes:
            return CredentialsState.refused
        if self.request.identity is not None:
            return CredentialsState.signed
        return CredentialsState.xmp_only if self.request.xmp else CredentialsState.none

    @property
    def note(self) -> str | None:
        return "; ".join(self.notes) or None
