"""The album's words that the database stores: a photo's role, an enhancement's outcome and credentials (stdlib only).

Defined once, here, where the domain decides them (the scan gives roles, the gallery shows outcomes);
``db.models`` stores these very enums, so the two rooms cannot drift apart. Members are named as they
are stored, like the database's own enums.
"""

from __future__ import annotations

import enum


class PhotoRole(enum.StrEnum):
    """What an album photo is for, by its size (see ``pipeline.scan.classify``)."""

    target = "target"  # small enough to be worth ×4 enhancement
    reference = "reference"  # large enough to lend texture
    neither = "neither"  # in between: neither enhanced nor used as a reference


class EnhancementStatus(enum.StrEnum):
    """How one enhancement attempt ended."""

    succeeded = "succeeded"
    failed = "failed"


class CredentialsState(enum.StrEnum):
    """What provenance an output carries in the file itself (see ``pipeline.provenance.stamp``)."""

    signed = "signed"  # a signed C2PA manifest, and XMP unless --no-xmp
    xmp_only = "xmp-only"  # --no-credentials: the XMP marking only
    none = "none"  # --no-credentials --no-xmp
    refused = "refused"  # asked for, but the format or the library refused: written without (see the note)
