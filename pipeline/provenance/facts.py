"""What an output says about its own making: the facts that XMP and Content Credentials carry into the file."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Protocol

# IPTC's digital-source-type term for our outputs. A super-resolved photo is the target's pixels with
# texture that a trained model moved in from *other* photos (the references): a composite of captured
# media and a trained algorithm's output, not a mere `algorithmicallyEnhanced` (sharpening, denoising
# of the image's own pixels), whose definition excludes adding content from elsewhere.
DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
# A copy restored wholly from its original (no pixel from the model): a composite of two captures,
# the copy (its framing and colours) and the original (its detail).
COMPOSITE_CAPTURE = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeCapture"
SOFTWARE_NAME = "refsr-album"
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _check_sha(name: str, value: object) -> None:
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise ValueError(f"{name} must be a 64-character lowercase hex sha256, got {value!r}")


@dataclass(frozen=True)
class ReferenceFact:
    """One reference that lent texture: identified by content hash; its file name only when asked."""

    rank: int  # 0 = the best
    sha256: str
    cosine: float
    relevance: float
    name: str | None = None  # the file's base name (never a folder), with --embed-names

    def __post_init__(self) -> None:
        _check_sha("ReferenceFact.sha256", self.sha256)
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 0:
            raise ValueError(f"ReferenceFact.rank must be an int >= 0, got {self.rank!r}")
        _check_name(self.name)


@dataclass(frozen=True)
class RestoredFrom:
    """The album photo an output (a copy's enlargement) was restored from: its original, aligned and colour-fitted."""

    sha256: str
    fidelity_db: float  # Y-PSNR of the output scaled back down against the copy
    covered: float  # share of the output's pixels that are the original's; the model made the rest
    name: str | None = None  # with --embed-names

    def __post_init__(self) -> None:
        _check_sha("RestoredFrom.sha256", self.sha256)
        _check_name(self.name)
        if not 0.0 <= self.covered <= 1.0:
            raise ValueError(f"RestoredFrom.covered must be a share in [0, 1], got {self.covered!r}")

    def to_dict(self) -> dict[str, object]:
        return {"sha256": self.sha256, "fidelity_db": round(self.fidelity_db, 2), "covered": round(self.covered, 4),
                **({"name": self.name} if self.name is not None else {})}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> RestoredFrom:
        return cls(str(data["sha256"]), float(data["fidelity_db"]), float(data["covered"]),  # type: ignore[arg-type]
                   data.get("name") or None)  # type: ignore[arg-type]


def _check_name(name: str | None) -> None:
    # A base name only: a folder would leak where the album lives (and often the user's name).
    if name is not None and (not name or "/" in name or "\\" in name):
        raise ValueError(f"an embedded name must be a bare file name without folders, got {name!r}")


@dataclass(frozen=True)
class Provenance:
    """Everything an output records about itself; no paths, user names or host names."""

    target_sha256: str
    references: tuple[ReferenceFact, ...]
    model_name: str
    model_sha256: str
    software_version: str
    job_key: str
    run_id: int | None = None
    target_name: str | None = None  # with --embed-names
    restored_from: RestoredFrom | None = None  # a copy given its original back (pipeline.matching.restore)
    when: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    def __post_init__(self) -> None:
        _check_sha("Provenance.target_sha256", self.target_sha256)
        _check_sha("Provenance.model_sha256", self.model_sha256)
        _check_sha("Provenance.job_key", self.job_key)
        _check_name(self.target_name)
        if self.when.tzinfo is None:
            raise ValueError(f"Provenance.when must be timezone-aware, got {self.when!r}")
        object.__setattr__(self, "references", tuple(sorted(self.references, key=lambda r: r.rank)))

    @property
    def software(self) -> str:
        return f"{SOFTWARE_NAME} {self.software_version}"

    @property
    def digital_source_type(self) -> str:
        """IPTC's term for the output: a composite of two captures when the original covers it all."""
        return COMPOSITE_CAPTURE if self.restored_from is not None and self.restored_from.covered >= 1.0 \
            else DIGITAL_SOURCE_TYPE

    def to_dict(self) -> dict[str, object]:
        """The JSON form the C2PA manifest's refsr assertion holds; :meth:`from_dict` reads it back."""
        return {
            "target_sha256": self.target_sha256, "target_name": self.target_name,
            "model_name": self.model_name, "model_sha256": self.model_sha256,
            "software": self.software, "job_key": self.job_key, "run_id": self.run_id,
            "when": self.when.astimezone(timezone.utc).isoformat(timespec="seconds"),
            "digital_source_type": self.digital_source_type,
            **({"restored_from": self.restored_from.to_dict()} if self.restored_from is not None else {}),
            "references": [
                {"rank": r.rank, "sha256": r.sha256, "cosine": round(r.cosine, 6), "relevance": round(r.relevance, 6),
                 **({"name": r.name} if r.name is not None else {})}
                for r in self.references
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Provenance:
        """Inverse of :meth:`to_dict`; ValueError naming the field when something is missing or malformed."""
        try:
            refs = tuple(
                ReferenceFact(int(r["rank"]), str(r["sha256"]), float(r["cosine"]), float(r["relevance"]),
                              r.get("name"))
                for r in data["references"]  # type: ignore[union-attr]
            )
            software = str(data["software"])
            version = software.split(" ", 1)[1] if software.startswith(SOFTWARE_NAME + " ") else software
            run_id = data.get("run_id")
            restored = data.get("restored_from")
            return cls(
                target_sha256=str(data["target_sha256"]), references=refs, model_name=str(data["model_name"]),
                model_sha256=str(data["model_sha256"]), software_version=version, job_key=str(data["job_key"]),
                run_id=None if run_id in (None, "") else int(run_id),  # type: ignore[arg-type]
                target_name=data.get("target_name") or None,  # type: ignore[arg-type]
                restored_from=RestoredFrom.from_dict(restored) if restored else None,  # type: ignore[arg-type]
                when=datetime.fromisoformat(str(data["when"])),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"provenance record is incomplete or malformed: {exc!r}") from None


class Stamp(Protocol):
    """What an output carries beyond pixels (pipeline.provenance.stamp): extra save arguments, then a pass over the bytes."""

    def save_params(self, fmt: str, exif: bytes | None) -> dict[str, object]: ...

    def finish(self, data: bytes, fmt: str) -> bytes: ...
