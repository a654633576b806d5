"""Provenance answers for the CLI: which reference made an output, what a target went through, past runs."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select

from db import queries
from db.models import Album, Enhancement
from flows.common import recover_crashed_runs
from flows.resources import resources_for
from flows.settings import Settings
from durable.files import sha256_file

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReferenceInfo:
    rank: int
    path: str  # absolute path of the reference photo
    sha256: str
    cosine: float
    relevance: float


@dataclass(frozen=True)
class EnhancementInfo:
    id: int
    target: str  # absolute path of the target photo
    status: str
    output_path: str | None
    current: bool  # the output file on disk still holds exactly what this enhancement wrote
    references: tuple[ReferenceInfo, ...]
    model_name: str
    model_sha256: str
    device: str
    run_id: int | None
    flow_run_id: str | None
    created_at: datetime
    params: dict
    timings: dict
    attention_path: str | None
    error: str | None


@dataclass(frozen=True)
class PathAnswer:
    path: str
    kind: str  # "output", "target" or "unknown"
    enhancements: tuple[EnhancementInfo, ...]
    note: str = ""


def _info(e: Enhancement, current_sha: str | None) -> EnhancementInfo:
    album_root = Path(e.target.album.root)
    refs = tuple(
        ReferenceInfo(r.rank, str(Path(r.photo.album.root) / r.photo.rel_path), r.ref_sha256, r.cosine, r.relevance)
        for r in e.references
    )
    return EnhancementInfo(
        id=e.id, target=str(album_root / e.target.rel_path), status=e.status.value, output_path=e.output_path,
        current=current_sha is not None and current_sha == e.output_sha256, references=refs,
        model_name=e.model_name, model_sha256=e.model_sha256, device=e.device, run_id=e.run_id,
        flow_run_id=e.run.flow_run_id if e.run is not None else None, created_at=e.created_at,
        params=dict(e.params or {}), timings=dict(e.timings or {}), attention_path=e.attention_path, error=e.error,
    )


def describe_path(settings: Settings, path: str | Path) -> PathAnswer:
    """What the database knows about `path`: an enhanced output first, else an album photo (target)."""
    resolved = Path(path).expanduser().resolve()
    factory = resources_for(settings).sessions
    with factory() as session:
        found = queries.enhancements_for_output(session, resolved)
        if found:
            current_sha = sha256_file(resolved) if resolved.is_file() else None
            infos = tuple(_info(e, current_sha) for e in found)
            note = ""
            if not any(i.current for i in infos):
                note = ("the file on disk differs from every recorded output (edited, or missing)"
                        if resolved.exists() else "the output file no longer exists")
            # The enhancement that wrote the current bytes first, then the older ones.
            ordered = tuple(sorted(infos, key=lambda i: not i.current))
            return PathAnswer(str(resolved), "output", ordered, note)
        photo = queries.photo_by_path(session, resolved)
        if photo is None:
            return PathAnswer(str(resolved), "unknown", (), "neither a recorded output nor a photo of an indexed album")
        enhancements = queries.enhancements_for_target(session, photo.id)
        infos = []
        for e in enhancements:
            out = Path(e.output_path) if e.output_path else None
            sha = sha256_file(out) if out is not None and out.is_file() else None
            infos.append(_info(e, sha))
        note = "" if infos else f"album photo ({photo.role.value}) with no enhancement yet"
        return PathAnswer(str(resolved), "target", tuple(infos), note)


@dataclass(frozen=True)
class RunInfo:
    id: int
    kind: str
    album: str | None
    status: str
    started_at: datetime
    ended_at: datetime | None
    duration_s: float | None
    counts: dict | None
    enhanced: int
    failed: int
    error: str | None
    flow_run_id: str | None


def history(settings: Settings, album: str | Path | None = None, limit: int | None = 20) -> list[RunInfo]:
    """Runs newest first (all albums, or one); stale 'running' runs of dead processes become crashed."""
    factory = resources_for(settings).sessions
    recover_crashed_runs(factory)
    with factory() as session:
        album_id = None
        if album is not None:
            found = queries.get_album(session, Path(album).expanduser().resolve())
            if found is None:
                return []
            album_id = found.id
        roots = {a.id: a.root for a in session.scalars(select(Album))}
        out = []
        for r in queries.run_history(session, album_id, limit=limit):
            duration = (r.ended_at - r.started_at).total_seconds() if r.ended_at else None
            out.append(RunInfo(r.id, r.kind.value, roots.get(r.album_id) if r.album_id else None, r.status.value,
                               r.started_at, r.ended_at, duration, r.counts, r.succeeded, r.failed, r.error,
                               r.flow_run_id))
        return out
