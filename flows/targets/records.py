"""An enhancement's record in the database: whether a job is already done, and writing a success or a failure."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from db import queries
from db.models import Enhancement, EnhancementStatus, Photo, PhotoStatus
from durable.files import atomic_write, sha256_file
from flows.common import one_line
from flows.execution.faults import fault_point
from flows.targets.jobs import JobContext
from pipeline import outputs
from pipeline.attention import attention_path_for
from pipeline.enhance import EnhanceResult
from pipeline.matching.retrieval import RankedReference

logger = logging.getLogger(__name__)


def _carries(hit: Enhancement, carries: dict[str, bool] | None) -> bool:
    """Whether `hit`'s output carries the provenance asked for now (an output from before credentials: no)."""
    return carries is None or (hit.params or {}).get("stamp") == carries


def reusable(sessions: sessionmaker[Session], key: str, out_path: str,
             carries: dict[str, bool] | None = None) -> Enhancement | None:
    """The succeeded enhancement of `key` that wrote `out_path`, when the file still holds what it wrote.

    Like the album scan, an output whose size and mtime match the record is trusted without
    reading it; anything else is hashed and compared. A job done into another place (another
    ``--out``, or a name that a new photo now shares) is redone where this run puts it, and so is
    one whose output carries other provenance than `carries` asks (``Settings.stamp_options``).
    """
    with sessions() as session:
        hit = queries.latest_succeeded_enhancement(session, key)
    if hit is None or not hit.output_path:
        return None
    if not _carries(hit, carries):
        logger.info("output %s of job %s carries other provenance than asked; redoing it", hit.output_path, key[:12])
        return None
    out = Path(hit.output_path)
    if out != Path(out_path).resolve():
        logger.info("job %s was written to %s, not %s; doing it there", key[:12], out, out_path)
        return None
    if _intact(hit):
        return hit
    logger.info("output %s of job %s is missing or was replaced; redoing it", out, key[:12])
    return None


def _output_stat(path: Path) -> dict[str, int]:
    """What a record keeps of the file it wrote, to tell cheaply whether it is still that file."""
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _intact(hit: Enhancement) -> bool:
    """Whether the file `hit` wrote still holds it: same size and mtime, else the same content hash."""
    try:
        out = Path(hit.output_path or "")
        if (hit.params or {}).get("output_stat") == _output_stat(out):
            return True
        return sha256_file(out) == hit.output_sha256
    except OSError:
        return False


def reuse_elsewhere(sessions: sessionmaker[Session], job: JobContext, photo_id: int, key: str,
                    out_path: str, carries: dict[str, bool] | None = None) -> Enhancement | None:
    """The job done already under another output path (the photo renamed or copied): its output, put at `out_path`.

    Same content, same references, same model: the pixels would be the same, so no model work. The
    output is moved when it lies in this run's output folder and its photo is gone from the album (a
    rename), else copied: the photo is still there (a copy), or the output is in another --out folder,
    which keeps its own (switching between two folders costs no model work). A new record for
    `out_path` carries the old one's provenance. None when there is no intact output to reuse.
    """
    with sessions() as session:
        hit = queries.latest_succeeded_enhancement(session, key)
        if hit is None or not hit.output_path or not _carries(hit, carries) or not _intact(hit):
            return None
        source = session.get(Photo, hit.target_photo_id)
        gone = source is None or source.status is PhotoStatus.gone
        references = [(r.rank, r.ref_photo_id, r.ref_sha256, r.cosine, r.relevance) for r in hit.references]
        candidates, restored_from, restoration = hit.candidates, hit.restored_from_sha256, hit.restoration
    old, new = Path(hit.output_path), Path(out_path).resolve()
    here = old.is_relative_to(Path(job.out_dir).resolve())
    new.parent.mkdir(parents=True, exist_ok=True)
    if gone and here:
        os.replace(old, new)
    else:
        atomic_write(new, lambda tmp: shutil.copyfile(old, tmp))
    attention = hit.attention_path
    if not here and attention and Path(attention).is_file():
        # The gallery of this folder reads attention from this folder: the map travels with the output.
        mine = attention_path_for(job.out_dir, key)
        mine.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(mine, lambda tmp: shutil.copyfile(attention, tmp))
        attention = str(mine)
    how = "moved_from" if gone and here else "copied_from"
    logger.info("%s: job %s done before; output %s %s", new, key[:12], how.replace("_", " "), old)
    with sessions.begin() as session:
        return queries.record_enhancement(
            session, job.run_id, session.get(Photo, photo_id), key, status=EnhancementStatus.succeeded,
            model_name=hit.model_name, model_sha256=hit.model_sha256, embedder=hit.embedder, device=hit.device,
            params={**(hit.params or {}), "output_stat": _output_stat(new),
                    how: str(old)},
            timings={}, output_path=new, output_sha256=hit.output_sha256, attention_path=attention,
            references=references, credentials=hit.credentials, credentials_note=hit.credentials_note,
            candidates=candidates, restored_from_sha256=restored_from, restoration=restoration,
        )


def refuse_album_photo(sessions: sessionmaker[Session], out_path: str) -> None:
    """ValueError when `out_path` is a photo of an indexed album: an output never overwrites an input."""
    with sessions() as session:
        clash = queries.photo_by_path(session, Path(out_path).resolve())
    if clash is not None:
        raise ValueError(f"refusing to write {str(out_path)!r}: it is an album photo ({clash.rel_path})")


def claim_output(sessions: sessionmaker[Session], out_dir: str, out_path: str, attention_path: Path) -> None:
    """Refuse, by name, a write onto an album photo, outside the resolved output folder, or over a file
    refsr did not write (pipeline.outputs keeps the ledger; the database knows older outputs)."""
    refuse_album_photo(sessions, out_path)

    def recorded(real: Path) -> bool:
        with sessions() as session:
            return bool(queries.enhancements_for_output(session, real))

    outputs.claim_output(out_dir, out_path, recorded=recorded)
    outputs.resolve_inside(out_dir, attention_path)


def release_output(out_dir: str, out_path: str) -> None:
    """A write that failed leaves no claim on its name in the folder's ledger (see claim_output)."""
    outputs.release_output(out_dir, out_path)


def _rows(ranked: Sequence[RankedReference]) -> list[tuple[int, int, str, float, float]]:
    return [(r.rank, r.photo_id, r.sha256, r.cosine, r.relevance) for r in ranked]


def record_success(sessions: sessionmaker[Session], job: JobContext, photo_id: int, key: str,
                   retrieval_key: str | None, result: EnhanceResult, timings: dict[str, float],
                   ranked: Sequence[RankedReference], settle: Callable[[Session], None] | None = None,
                   carries: dict[str, bool] | None = None,
                   candidates: Sequence[dict[str, object]] | None = None, restored_from: str | None = None) -> int:
    """Record what `result` wrote, with its references; returns the enhancement's id.

    `settle(session)` runs inside the same transaction (marking the job's claim done), so the
    record and the end of the claim commit together or not at all. `restored_from`: the original
    the job asked to restore the target from; recorded when the pixels confirmed it (`result.restoration`).
    """
    written = _output_stat(result.output_path)
    with sessions.begin() as session:
        enhancement = queries.record_enhancement(
            session, job.run_id, session.get(Photo, photo_id), key, status=EnhancementStatus.succeeded,
            model_name=job.model_name, model_sha256=job.model_sha256, embedder=job.embedder_key,
            device=result.device,
            params={**job.params.pixel_params(), "retrieval_key": retrieval_key, "output_stat": written,
                    **({"stamp": carries} if carries is not None else {})},
            timings=timings, output_path=result.output_path.resolve(),
            output_sha256=result.output_sha256,
            attention_path=result.attention_path.resolve() if result.attention_path else None,
            references=_rows(ranked), credentials=result.credentials, credentials_note=result.credentials_note,
            candidates=candidates, restored_from_sha256=restored_from if result.restoration is not None else None,
            restoration=dict(result.restoration) if result.restoration is not None else None,
        )
        if settle is not None:
            settle(session)
        # Crash-test hook: dying here leaves the flushed rows uncommitted, i.e. not there.
        fault_point("record")
        return enhancement.id


def record_failure(sessions: sessionmaker[Session], job: JobContext, photo_id: int, key: str, stage: str, error: str,
                   ranked: Sequence[RankedReference] = (), timings: dict[str, float] | None = None,
                   candidates: Sequence[dict[str, object]] | None = None) -> int | None:
    """Record a failed enhancement with its reason; never raises (the run goes on)."""
    try:
        with sessions.begin() as session:
            row = queries.record_enhancement(
                session, job.run_id, session.get(Photo, photo_id), key, status=EnhancementStatus.failed,
                model_name=job.model_name, model_sha256=job.model_sha256, embedder=job.embedder_key,
                device=job.device, params={**job.params.pixel_params(), "failed_stage": stage},
                timings=timings or {}, error=error, references=_rows(ranked), candidates=candidates,
            )
            return row.id
    except Exception as exc:  # the database itself may be what failed
        logger.error("could not record the failure of photo %s (%s): %s", photo_id, error, one_line(exc))
        return None
