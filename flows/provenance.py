"""Provenance answers for the CLI: which reference made an output, what a target went through, past runs."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from db import queries
from db.models import Album, Enhancement, Photo
from durable.files import sha256_file
from flows.common import recover_crashed_runs
from flows.resources import resources_for
from flows.settings import Settings
from pipeline.provenance import credentials, xmp
from pipeline.provenance.facts import Provenance

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReferenceInfo:
    rank: int
    path: str  # absolute path of the reference photo
    sha256: str
    cosine: float
    relevance: float
    inliers: int | None = None  # feature matches one geometry explains; None when not verified


@dataclass(frozen=True)
class CandidateInfo:
    """One candidate retrieval scored for an enhancement, chosen or not."""

    path: str | None  # absolute path of the photo; None when it is no longer in the database
    sha256: str
    cosine: float
    inliers: int | None
    verified: float | None
    relevance: float | None
    rank: int | None  # its place among the chosen references; None when not chosen


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
    job_key: str = ""
    credentials: str | None = None  # what the output carries (pipeline.vocabulary.CredentialsState)
    credentials_note: str | None = None
    candidates: tuple[CandidateInfo, ...] = ()  # in the order retrieval ranked them
    # The target is a copy, given its original back (pipeline/matching/restore.py): that reference's path, and its fit.
    restored_from: str | None = None
    restored_from_sha256: str | None = None
    restoration: dict | None = None


@dataclass(frozen=True)
class FileFacts:
    """What the file itself says about its making (pipeline.provenance.stamp), and how far to trust it."""

    carrier: str  # "c2pa" (our signed assertion) or "xmp" (unsigned)
    verified: bool  # c2pa: signature valid and the bytes are the ones signed; xmp: always False
    reason: str  # the verdict in one line
    provenance: Provenance


@dataclass(frozen=True)
class CopyInfo:
    """One copy in an album, as `refsr index` found it."""

    copy: str  # absolute path
    original: str
    scale: float | None  # original pixels per copy pixel
    inliers: int
    agreement_db: float | None


@dataclass(frozen=True)
class PathAnswer:
    path: str
    kind: str  # "output", "target", "file" (only the file knows: a copy elsewhere) or "unknown"
    enhancements: tuple[EnhancementInfo, ...]
    note: str = ""
    file: FileFacts | None = None
    copies: tuple[CopyInfo, ...] = ()  # the photo's (or the output's target's) copy relations


def file_facts(path: Path) -> FileFacts | None:
    """The provenance a refsr output carries: the signed manifest's when there is one, else its XMP."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if credentials.read_provenance(data) is not None:
        verdict = credentials.verify(path)
        if verdict.provenance is not None:
            return FileFacts("c2pa", verdict.ok, verdict.reason, verdict.provenance)
    found = xmp.read(data)
    if found is None:
        return None
    return FileFacts("xmp", False, "XMP only: unsigned, so anyone could have written or changed it", found)


def disagreements(facts: Provenance, e: EnhancementInfo) -> list[str]:
    """Where the file's own provenance and the database's record of it differ."""
    out = []
    if facts.job_key != e.job_key:
        out.append("job")
    if facts.model_sha256 != e.model_sha256:
        out.append(f"model ({facts.model_sha256[:12]} in the file, {e.model_sha256[:12]} recorded)")
    if [r.sha256 for r in facts.references] != [r.sha256 for r in e.references]:
        out.append("references")
    if (facts.restored_from.sha256 if facts.restored_from else None) != e.restored_from_sha256:
        out.append("restored from (the original)")
    if facts.run_id is not None and e.run_id is not None and facts.run_id != e.run_id:
        out.append(f"run (#{facts.run_id} in the file, #{e.run_id} recorded)")
    return out


def _copy_infos(session: Session, album_id: int, photo_id: int | None = None) -> tuple[CopyInfo, ...]:
    root = None
    out = []
    for c in queries.album_copies(session, album_id, photo_id):
        root = root or Path(c.copy.album.root)
        out.append(CopyInfo(str(root / c.copy.rel_path), str(root / c.original.rel_path), c.check.scale,
                            c.check.inliers, c.check.agreement_db))
    return tuple(out)


def album_copies(settings: Settings, album: str | Path) -> tuple[CopyInfo, ...] | None:
    """The copies recorded for `album`; None when the album was never indexed."""
    with resources_for(settings).sessions() as session:
        found = queries.get_album(session, Path(album).expanduser().resolve())
        return None if found is None else _copy_infos(session, found.id)


def _candidates(session: Session, e: Enhancement) -> tuple[CandidateInfo, ...]:
    rows = [c for c in (e.candidates or []) if isinstance(c, dict)]
    photos = {p.id: p for p in session.scalars(select(Photo).where(Photo.id.in_([c.get("photo_id") for c in rows])))}
    out = []
    for c in rows:
        photo = photos.get(c.get("photo_id"))
        path = str(Path(photo.album.root) / photo.rel_path) if photo is not None else None
        out.append(CandidateInfo(path, str(c.get("sha256", "")), float(c.get("cosine", 0.0)), c.get("inliers"),
                                 c.get("verified"), c.get("relevance"), c.get("rank")))
    return tuple(out)


def _info(session: Session, e: Enhancement, current_sha: str | None) -> EnhancementInfo:
    album_root = Path(e.target.album.root)
    candidates = _candidates(session, e)
    inliers = {c.sha256: c.inliers for c in candidates}
    refs = tuple(
        ReferenceInfo(r.rank, str(Path(r.photo.album.root) / r.photo.rel_path), r.ref_sha256, r.cosine, r.relevance,
                      inliers.get(r.ref_sha256))
        for r in e.references
    )
    return EnhancementInfo(
        id=e.id, target=str(album_root / e.target.rel_path), status=e.status.value, output_path=e.output_path,
        current=current_sha is not None and current_sha == e.output_sha256, references=refs,
        model_name=e.model_name, model_sha256=e.model_sha256, device=e.device, run_id=e.run_id,
        flow_run_id=e.run.flow_run_id if e.run is not None else None, created_at=e.created_at,
        params=dict(e.params or {}), timings=dict(e.timings or {}), attention_path=e.attention_path, error=e.error,
        job_key=e.job_key, credentials=e.credentials.value if e.credentials else None,
        credentials_note=e.credentials_note,
        candidates=candidates,
        restored_from=next((r.path for r in refs if r.sha256 == e.restored_from_sha256), None),
        restored_from_sha256=e.restored_from_sha256, restoration=dict(e.restoration) if e.restoration else None,
    )


def describe_path(settings: Settings, path: str | Path) -> PathAnswer:
    """What the database knows about `path`: an enhanced output first, else an album photo (target).

    An output also answers from the provenance it carries (pipeline.provenance.stamp): alone when the database
    does not know the file (a copy on another machine, a fresh REFSR_HOME), and compared with the
    record when it does, the answer's note naming where the two disagree.
    """
    resolved = Path(path).expanduser().resolve()
    factory = resources_for(settings).sessions
    facts = file_facts(resolved) if resolved.is_file() else None
    with factory() as session:
        found = queries.enhancements_for_output(session, resolved)
        if found:
            current_sha = sha256_file(resolved) if resolved.is_file() else None
            infos = tuple(_info(session, e, current_sha) for e in found)
            notes = []
            if not any(i.current for i in infos):
                notes.append("the file on disk differs from every recorded output (edited, or missing)"
                             if resolved.exists() else "the output file no longer exists")
            # The enhancement that wrote the current bytes first, then the older ones.
            ordered = tuple(sorted(infos, key=lambda i: not i.current))
            if facts is not None and (differ := disagreements(facts.provenance, ordered[0])):
                notes.append(f"the file and the database disagree on: {', '.join(differ)}")
            target = found[0].target
            return PathAnswer(str(resolved), "output", ordered, "; ".join(notes), facts,
                              _copy_infos(session, target.album_id, target.id))
        photo = queries.photo_by_path(session, resolved)
        if photo is None and facts is not None:
            return PathAnswer(str(resolved), "file", (), f"not in this database; from the file's {facts.carrier}", facts)
        if photo is None:
            return PathAnswer(str(resolved), "unknown", (), "neither a recorded output nor a photo of an indexed album")
        enhancements = queries.enhancements_for_target(session, photo.id)
        infos = []
        for e in enhancements:
            out = Path(e.output_path) if e.output_path else None
            sha = sha256_file(out) if out is not None and out.is_file() else None
            infos.append(_info(session, e, sha))
        note = "" if infos else f"album photo ({photo.role.value}) with no enhancement yet"
        return PathAnswer(str(resolved), "target", tuple(infos), note,
                          copies=_copy_infos(session, photo.album_id, photo.id))


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
