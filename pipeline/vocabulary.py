"""The album's words that the database stores: a photo's role and an enhancement's outcome (stdlib only).

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
