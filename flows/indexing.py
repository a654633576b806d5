"""The index flow: scan an album, embed new photos (one task each), keep its FAISS index in step."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner

from sqlalchemy.orm import Session

from db import queries
from db.models import Photo, PhotoRole, PhotoStatus, RunKind, RunStatus
from flows.album_config import scan_settings
from flows.common import finish_run, is_transient, one_line, recorded_run, retry_if_transient
from flows.copies import CopyScan, copies_task
from flows.execution import stopping
from flows.execution.faults import fault_point
from flows.execution.locks import engine_of, index_lock
from flows.resources import resources_for
from flows.settings import Settings, index_file
from pipeline.embedding.vector_index import IndexMismatch, VectorIndex
from pipeline.hashed_read import PhotoChangedError, load_verified
from pipeline.scan import KnownPhoto, ScanResult, ScanStatus, scan_album

logger = logging.getLogger(__name__)

# Photos per embedding task: large enough that Prefect's per-task cost (about 11 ms of CPU each,
# benchmarks/README.md) vanishes beside the embedding, small enough that two workers share a small
# album and progress moves.
EMBED_CHUNK = 32

_STATUS_FROM_DB = {PhotoStatus.ok: ScanStatus.UNCHANGED, PhotoStatus.unreadable: ScanStatus.UNREADABLE,
                   PhotoStatus.gone: ScanStatus.GONE}


@dataclass(frozen=True)
class ScanCounts:
    """How one scan found the album, and what it is made of now."""

    album_id: int
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    unreadable: int = 0
    gone: int = 0
    targets: int = 0
    references: int = 0
    unreadable_paths: tuple[tuple[str, str], ...] = ()  # (rel_path, reason)
    skipped_formats: tuple[tuple[str, int], ...] = ()  # (extension, files) the scan does not read

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in ("new", "changed", "unchanged", "unreadable", "gone",
                                               "targets", "references")}


@dataclass(frozen=True)
class EmbedOutcome:
    photo_id: int
    rel_path: str
    error: str | None = None


@dataclass(frozen=True)
class IndexState:
    """Where the album's vectors are, after `sync_index_task`."""

    path: Path
    embedder_key: str
    size: int
    added: int
    removed: int
    rebuilt: bool


@dataclass(frozen=True)
class IndexSummary:
    """What `index_album` did; the CLI prints it."""

    album: str
    album_id: int
    run_id: int | None
    scan: ScanCounts
    embedded: int
    embed_failures: tuple[EmbedOutcome, ...] = field(default_factory=tuple)
    index: IndexState | None = None
    copies: CopyScan | None = None  # None when copy detection is off (Settings.copies)


# -- tasks -------------------------------------------------------------------------------------


@task(name="scan-album", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1,
      retry_condition_fn=retry_if_transient)
def scan_task(album_root: str, settings: Settings) -> ScanCounts:
    """Scan the album against the database and store what changed (no pixels for unchanged files)."""
    root = Path(album_root)
    sessions = resources_for(settings).sessions
    scan_cfg = scan_settings(settings, root)
    with sessions.begin() as session:
        album_id = queries.get_or_create_album(session, str(root)).id
        known = _known_photos(session, album_id)
    bar = _bar(settings, "scan", unit="file")
    try:
        result = scan_album(root, known, scan_cfg, progress=(lambda done, total: _advance(bar, done, total)))
    finally:
        if bar is not None:
            bar.close()
    with sessions.begin() as session:
        return _store_scan(session, album_id, result)


def _known_photos(session: Session, album_id: int) -> dict[str, KnownPhoto]:
    """What the database knows of the album's files, as the scan compares against."""
    return {
        rel: KnownPhoto(rel_path=rel, size_bytes=p.size_bytes or 0, mtime_ns=p.mtime_ns or 0, sha256=p.sha256,
                        width=p.width, height=p.height, format=p.format, status=_STATUS_FROM_DB[p.status])
        for rel, p in queries.photos_by_rel_path(session, album_id).items()
    }


def _store_scan(session: Session, album_id: int, result: ScanResult) -> ScanCounts:
    """Record each file's verdict (unreadable ones with their reason, vanished ones as gone) and count them."""
    counts = {s: 0 for s in ScanStatus}
    unreadable: list[tuple[str, str]] = []
    roles = {PhotoRole.target: 0, PhotoRole.reference: 0}
    generated = queries.output_hashes(session)
    for entry in result.entries:
        if entry.status is ScanStatus.GONE:
            continue
        counts[entry.status] += 1
        if entry.status is ScanStatus.UNREADABLE:
            unreadable.append((entry.rel_path, entry.error or "unreadable"))
            queries.upsert_photo(session, album_id, entry.rel_path, sha256=entry.sha256,
                                 size_bytes=entry.size_bytes, mtime_ns=entry.mtime_ns,
                                 status=PhotoStatus.unreadable, error=entry.error)
            continue
        role = entry.role or PhotoRole.neither
        if entry.sha256 in generated:
            # An output of ours copied or written into the album: never a target, never anyone's texture.
            logger.info("%s is an output of refsr-album, neither target nor reference", entry.rel_path)
            role = PhotoRole.neither
        if role in roles:
            roles[role] += 1
        queries.upsert_photo(session, album_id, entry.rel_path, sha256=entry.sha256,
                             size_bytes=entry.size_bytes, mtime_ns=entry.mtime_ns, width=entry.width,
                             height=entry.height, format=entry.format, role=role, error=None)
    # Counts only photos that vanished since the last scan, not every earlier loss again.
    gone = [entry.rel_path for entry in result.with_status(ScanStatus.GONE)]
    counts[ScanStatus.GONE] = queries.mark_gone(session, album_id, gone)
    return ScanCounts(
        album_id=album_id,
        new=counts[ScanStatus.NEW], changed=counts[ScanStatus.CHANGED], unchanged=counts[ScanStatus.UNCHANGED],
        unreadable=counts[ScanStatus.UNREADABLE], gone=counts[ScanStatus.GONE],
        targets=roles[PhotoRole.target], references=roles[PhotoRole.reference],
        unreadable_paths=tuple(unreadable), skipped_formats=result.skipped_formats,
    )


def embed_photo(photo_id: int, album_root: str, settings: Settings) -> EmbedOutcome:
    """Embed one photo and store its vector (keyed by content hash, so a copy reuses it)."""
    res = resources_for(settings)
    with res.sessions() as session:
        photo = session.get(Photo, photo_id)
        if photo is None or photo.sha256 is None:
            return EmbedOutcome(photo_id, "?", f"photo {photo_id} is not in the database")
        rel, sha = photo.rel_path, photo.sha256
    if stopping.requested():  # Ctrl-C during `refsr enhance`: no new model work (flows/execution/stopping.py)
        return EmbedOutcome(photo_id, rel, "stopped by Ctrl-C before it was embedded")
    try:
        # The vector is filed under `sha`: embed the bytes that hash to it, or none (a file replaced since the scan).
        rgb, _ = load_verified(Path(album_root) / rel, sha)
        emb = res.embedder
        vector = emb.embed([rgb])[0].astype("<f4")
    except PhotoChangedError as exc:
        logger.warning("not embedded: %s", exc)
        return EmbedOutcome(photo_id, rel, str(exc))
    except Exception as exc:
        if is_transient(exc):
            raise
        logger.warning("cannot embed %s: %s", rel, one_line(exc))
        return EmbedOutcome(photo_id, rel, one_line(exc))
    with res.sessions.begin() as session:
        queries.add_embedding(session, sha, emb.key, vector.tobytes(), emb.dim)
    return EmbedOutcome(photo_id, rel)


@task(name="embed-photo", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1,
      retry_condition_fn=retry_if_transient, task_run_name="embed {photo_id}")
def embed_task(photo_id: int, album_root: str, settings: Settings) -> EmbedOutcome:
    return embed_photo(photo_id, album_root, settings)


@task(name="embed-photos", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1,
      retry_condition_fn=retry_if_transient)
def embed_chunk_task(photo_ids: list[int], album_root: str, settings: Settings) -> list[EmbedOutcome]:
    """Embed a chunk of photos in one task: Prefect's per-task cost is paid once per chunk, not per photo.

    A transient error retries the chunk; a vector already stored is keyed by content hash, so a
    retry adds nothing twice.
    """
    return [embed_photo(pid, album_root, settings) for pid in photo_ids]


@task(name="sync-index", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1,
      retry_condition_fn=retry_if_transient)
def sync_index_task(album_id: int, embedder_key: str, settings: Settings) -> IndexState:
    """Bring the album's FAISS file in step with the database's reference vectors.

    Holds `index_lock` across read-modify-write so two processes never interleave their saves;
    the file is replaced atomically, so readers without the lock see the old or the new index.
    """
    path = index_file(settings, album_id, embedder_key)
    sessions = resources_for(settings).sessions
    with index_lock(engine_of(sessions), path, album_id, embedder_key):
        with sessions() as session:
            rows = queries.embeddings_for_album(session, album_id, embedder_key, role=PhotoRole.reference)
        ids = np.array([r.photo_id for r in rows], dtype=np.int64)
        vectors = {r.photo_id: np.frombuffer(r.vector, dtype="<f4") for r in rows}
        try:
            index = VectorIndex.load(path, embedder_key)
            rebuilt = False
        except IndexMismatch as exc:
            if not rows:
                return IndexState(path, embedder_key, 0, 0, 0, rebuilt=False)
            logger.info("building vector index %s (%s)", path, exc)
            index = VectorIndex.build(ids, np.stack([vectors[i] for i in ids.tolist()]), embedder_key)
            index.save(path)
            return IndexState(path, embedder_key, len(index), len(index), 0, rebuilt=True)
        held = set(index.ids().tolist())
        wanted = set(ids.tolist())
        kept = sorted(held & wanted)
        # A reference replaced in place keeps its photo id: its entry is stale if its vector is not the database's.
        stale = index.stale(kept, np.stack([vectors[i] for i in kept])) if kept else []
        extra, missing = sorted(held - wanted), sorted(wanted - held)
        if extra or stale:
            index.remove(extra + stale)
        if missing or stale:
            fresh = sorted(missing + stale)
            index.add(fresh, np.stack([vectors[i] for i in fresh]))
        if extra or missing or stale:
            index.save(path)
        return IndexState(path, embedder_key, len(index), len(missing) + len(stale), len(extra) + len(stale), rebuilt)


# -- shared steps ------------------------------------------------------------------------------


def index_steps(album_root: Path, settings: Settings) -> IndexSummary:
    """Scan, embed what lacks a vector, sync the index; runs as tasks of the calling flow."""
    # Every task of the run retries a transient error as the settings say.
    opts = {"retries": settings.retries, "retry_delay_seconds": settings.retry_delay_s}
    scan = scan_task.with_options(**opts)(str(album_root), settings)
    fault_point("scanned")  # tests: a photo replaced between its scan and its read
    res = resources_for(settings)
    emb = res.embedder
    with res.sessions() as session:
        todo = [
            p.id for p in queries.photos(session, scan.album_id)
            if p.role in (PhotoRole.target, PhotoRole.reference) and p.sha256
            and queries.get_embedding(session, p.sha256, emb.key) is None
        ]
    chunks = [todo[i:i + EMBED_CHUNK] for i in range(0, len(todo), EMBED_CHUNK)]
    futures = {
        embed_chunk_task.with_options(task_run_name=f"embed {len(chunk)} photos from id {chunk[0]}", **opts)
        .submit(chunk, str(album_root), settings): chunk
        for chunk in chunks
    }
    failures: list[EmbedOutcome] = []
    bar = _bar(settings, "embed", total=len(todo), unit="photo") if futures else None
    for future in as_completed(list(futures)):
        try:
            outcomes = future.result()
        except Exception as exc:  # retries exhausted on a transient error
            outcomes = [EmbedOutcome(pid, "?", one_line(exc)) for pid in futures[future]]
        failures.extend(o for o in outcomes if o.error)
        if bar is not None:
            bar.update(len(outcomes))
    if bar is not None:
        bar.close()
    state = sync_index_task.with_options(**opts)(scan.album_id, emb.key, settings)
    copies = copies_task.with_options(**opts)(scan.album_id, str(album_root), emb.key, settings) \
        if settings.copies else None
    return IndexSummary(str(album_root), scan.album_id, None, scan, len(todo) - len(failures), tuple(failures), state,
                        copies)


def _bar(settings: Settings, desc: str, total: int | None = None, unit: str = "it"):  # type: ignore[no-untyped-def]
    if not settings.progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)


def _advance(bar, done: int, total: int) -> None:  # type: ignore[no-untyped-def]
    if bar is None:
        return
    bar.total = total
    bar.n = done
    bar.refresh()


# -- the flow ----------------------------------------------------------------------------------


@flow(name="index-album", task_runner=ThreadPoolTaskRunner(max_workers=2), log_prints=False)
def index_album(album: str, settings: Settings) -> IndexSummary:
    """Scan `album`, embed new and changed photos, and update its vector index.

    Incremental: a photo whose size and mtime are unchanged is not read, a vector is computed
    once per content hash and embedder, and an unchanged album reads no pixels at all.
    """
    root = Path(album).expanduser().resolve()
    if not root.is_dir():
        raise ValueError(f"album is not a directory: {str(root)!r}")
    sessions = resources_for(settings).sessions
    with recorded_run(sessions, RunKind.index, root, settings, {"album": str(root)}) as run:
        summary = index_steps(root, settings)
        counts = {**summary.scan.as_dict(), "embedded": summary.embedded,
                  "embed_failed": len(summary.embed_failures)}
        if summary.copies is not None:
            counts["copies"] = len(summary.copies.copies)
        finish_run(sessions, run.run_id, RunStatus.completed, counts)
    return IndexSummary(summary.album, summary.album_id, run.run_id, summary.scan, summary.embedded,
                        summary.embed_failures, summary.index, summary.copies)
