"""The enhance flow: index the album, then one task per target photo: retrieve, re-rank, enhance, record."""

from __future__ import annotations

import enum
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from prefect import flow, task
from sqlalchemy.orm import Session, sessionmaker
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner

from db import queries
from db.engine import file_lock
from db.models import EnhancementStatus, Photo, RunKind, RunStatus
from db.models import PhotoRole as DbRole
from flows import runtime
from flows.common import (
    JsonCache,
    finish_run,
    interrupted,
    is_transient,
    one_line,
    recover_crashed_runs,
    retry_if_transient,
    start_run,
)
from flows.indexing import IndexSummary, index_steps
from flows.settings import Settings
from pipeline import images
from pipeline.enhance import (
    attention_path_for,
    enhance_photo,
    job_key,
    plan_output_paths,
    stable_hash,
)
from pipeline.retrieval import RankedReference, cosine_candidates, rank_references

logger = logging.getLogger(__name__)


class Outcome(enum.StrEnum):
    ENHANCED = "enhanced"  # the model ran and a new record was written
    CACHED = "cached"  # same job key already succeeded and its output is intact: no model work
    FAILED = "failed"  # recorded with its reason; the run went on
    NO_REFERENCE = "no-reference"  # the album has no reference candidate for it


@dataclass(frozen=True)
class JobContext:
    """What every target task of one run shares: ids, paths and hashes only."""

    album_root: str
    album_id: int
    run_id: int | None
    out_dir: str
    model_sha256: str
    model_name: str
    embedder_key: str
    index_path: str
    device: str
    amp_dtype: str | None


@dataclass(frozen=True)
class TargetOutcome:
    """One target's fate in one run."""

    photo_id: int
    rel_path: str
    status: Outcome
    references: tuple[RankedReference, ...] = ()
    ref_paths: tuple[str, ...] = ()
    job_key: str | None = None
    output_path: str | None = None
    enhancement_id: int | None = None
    reranked: bool = False  # the model scored candidates in this run (no cached ranking)
    timings: dict[str, float] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class EnhanceSummary:
    """What `enhance_album` did; the CLI prints it and chooses the exit code from it."""

    album: str
    album_id: int
    run_id: int
    out_dir: str
    model_path: str
    model_sha256: str
    device: str
    index: IndexSummary
    outcomes: tuple[TargetOutcome, ...]
    recovered_runs: tuple[int, ...] = ()
    wall_s: float = 0.0
    gallery: str | None = None  # index.html of the album's gallery, when built

    def counts(self) -> dict[str, int]:
        counts = {o.value: 0 for o in Outcome}
        for outcome in self.outcomes:
            counts[outcome.status.value] += 1
        return counts

    @property
    def failed(self) -> tuple[TargetOutcome, ...]:
        return tuple(o for o in self.outcomes if o.status is Outcome.FAILED)

    @property
    def model_work(self) -> bool:
        return any(o.status is Outcome.ENHANCED or o.reranked for o in self.outcomes)


# -- one target --------------------------------------------------------------------------------


def _reusable(factory, key: str, out_path: str) -> queries.Enhancement | None:  # type: ignore[no-untyped-def]
    """The succeeded enhancement of `key` that wrote `out_path`, when the file still holds what it wrote.

    Like the album scan, an output whose size and mtime match the record is trusted without
    reading it; anything else is hashed and compared. A job done into another place (another
    ``--out``, or a name that a new photo now shares) is redone where this run puts it.
    """
    with factory() as session:
        hit = queries.latest_succeeded_enhancement(session, key)
    if hit is None or not hit.output_path:
        return None
    out = Path(hit.output_path)
    if out != Path(out_path).resolve():
        logger.info("job %s was written to %s, not %s; doing it there", key[:12], out, out_path)
        return None
    try:
        st = out.stat()
        recorded = (hit.params or {}).get("output_stat") or {}
        if recorded.get("size") == st.st_size and recorded.get("mtime_ns") == st.st_mtime_ns:
            return hit
        if images.sha256_file(out) == hit.output_sha256:
            return hit
    except OSError:
        pass
    logger.info("output %s of job %s is missing or was replaced; redoing it", out, key[:12])
    return None


def _ranking_from_cache(cached: list[dict], by_sha: dict[str, int]) -> tuple[RankedReference, ...] | None:
    try:
        return tuple(
            RankedReference(rank=int(r["rank"]), photo_id=by_sha[r["sha256"]], sha256=r["sha256"],
                            cosine=float(r["cosine"]), relevance=float(r["relevance"]))
            for r in cached
        )
    except (KeyError, TypeError, ValueError):
        return None


def process_target(photo_id: int, job: JobContext, settings: Settings, out_path: str) -> TargetOutcome:
    """Retrieve references for one target, enhance it into ``out_path`` unless that job is already done there.

    ``out_path`` comes from the run's :func:`plan_output_paths`, which keeps targets apart that
    would share an output name.

    Permanent failures are recorded (status failed, with the reason) and returned; transient ones
    (database busy, CUDA out of memory) are raised so Prefect retries the task.
    """
    runtime.fault_point("target")
    factory = runtime.database(settings.database_url)
    root = Path(job.album_root)
    timings: dict[str, float] = {}
    with factory() as session:
        target = session.get(Photo, photo_id)
        if target is None or target.sha256 is None:
            raise ValueError(f"photo id {photo_id!r} is not a readable photo in the database")
        rel, sha = target.rel_path, target.sha256
        stored = queries.get_embedding(session, sha, job.embedder_key)
        refs = {p.id: (p.sha256, p.rel_path) for p in queries.photos(session, job.album_id, role=DbRole.reference)
                if p.sha256}
    ranked: tuple[RankedReference, ...] = ()
    key: str | None = None
    stage = "retrieval"
    reranked = False
    try:
        t0 = time.perf_counter()
        index = runtime.vector_index(Path(job.index_path), job.embedder_key)
        if stored is None:
            raise ValueError(f"{rel}: no {job.embedder_key} embedding (it failed at indexing)")
        if index is None or len(index) == 0:
            return TargetOutcome(photo_id, rel, Outcome.NO_REFERENCE, error="the album has no reference photos")
        vector = np.frombuffer(stored.vector, dtype="<f4")
        candidates = cosine_candidates(index, vector, settings.top_k, target_id=photo_id, target_sha256=sha,
                                       sha256_by_id={pid: s for pid, (s, _) in refs.items()})
        if not candidates:
            return TargetOutcome(photo_id, rel, Outcome.NO_REFERENCE, error="no reference candidate")
        retrieval = settings.retrieval()
        rkey = stable_hash({"target": sha, "candidates": [c.sha256 for c in candidates], "model": job.model_sha256,
                            "rerank": retrieval.rerank.fingerprint(), "refs": retrieval.refs})
        cache = JsonCache(settings.home / "cache" / "rerank")
        cached = None if settings.force else cache.get(rkey)
        by_sha = {c.sha256: c.photo_id for c in candidates}
        ranked = _ranking_from_cache(cached, by_sha) if cached else ()
        if not ranked:
            ckpt = runtime.model(settings.model_path, job.device)
            lr = images.load_rgb(root / rel)[0]
            with runtime.device_slot(job.device, settings.device_slots):
                ranked = rank_references(
                    ckpt.model, lr, candidates, lambda c: images.load_rgb(root / refs[c.photo_id][1])[0],
                    retrieval, device=job.device, amp_dtype=job.amp_dtype,
                )
            cache.put(rkey, [asdict(r) for r in ranked])
            reranked = True
        timings["retrieve_s"] = round(time.perf_counter() - t0, 4)
        ref_paths = tuple(refs[r.photo_id][1] for r in ranked)

        stage = "enhance"
        params = settings.enhance_params(job.amp_dtype)
        key = job_key(sha, [r.sha256 for r in ranked], job.model_sha256, params)
        common = dict(references=ranked, ref_paths=ref_paths, job_key=key, reranked=reranked)
        if not settings.force and (hit := _reusable(factory, key, out_path)) is not None:
            return TargetOutcome(photo_id, rel, Outcome.CACHED, output_path=hit.output_path,
                                 enhancement_id=hit.id, timings=timings, **common)  # type: ignore[arg-type]
        # One process per job at a time: a concurrent `refsr enhance` waits here, then finds it done.
        # 256 lock files striped by key: one per job would leave an empty file per enhancement
        # forever, and two jobs that share a stripe only wait for each other.
        with file_lock(settings.locks_dir / "jobs" / f"{key[:2]}.lock"):
            if not settings.force and (hit := _reusable(factory, key, out_path)) is not None:
                return TargetOutcome(photo_id, rel, Outcome.CACHED, output_path=hit.output_path,
                                     enhancement_id=hit.id, timings=timings, **common)  # type: ignore[arg-type]
            with factory() as session:
                clash = queries.photo_by_path(session, Path(out_path).resolve())
            if clash is not None:
                raise ValueError(f"refusing to write {str(out_path)!r}: it is an album photo ({clash.rel_path})")
            ckpt = runtime.model(settings.model_path, job.device)
            if ckpt.sha256 != job.model_sha256:
                raise RuntimeError(f"checkpoint {settings.model_path} changed during the run")
            with runtime.device_slot(job.device, settings.device_slots):
                result = enhance_photo(
                    ckpt.model, root / rel, [root / p for p in ref_paths], Path(out_path), params,
                    attention_path=attention_path_for(job.out_dir, key), device=job.device,
                )
            timings.update({k: round(v, 4) for k, v in result.timings.items()})
            st = result.output_path.stat()
            written = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
            with factory.begin() as session:
                target = session.get(Photo, photo_id)
                enhancement = queries.record_enhancement(
                    session, job.run_id, target, key, status=EnhancementStatus.succeeded,
                    model_name=job.model_name, model_sha256=job.model_sha256, embedder=job.embedder_key,
                    device=result.device,
                    params={**params.pixel_params(), "retrieval_key": rkey, "output_stat": written},
                    timings=timings, output_path=result.output_path.resolve(),
                    output_sha256=result.output_sha256, attention_path=result.attention_path.resolve()
                    if result.attention_path else None,
                    references=[(r.rank, r.photo_id, r.sha256, r.cosine, r.relevance) for r in ranked],
                )
                # Crash-test hook: dying here leaves the flushed rows uncommitted, i.e. not there.
                runtime.fault_point("record")
                enhancement_id = enhancement.id
        return TargetOutcome(photo_id, rel, Outcome.ENHANCED, output_path=str(result.output_path),
                             enhancement_id=enhancement_id, timings=timings, **common)  # type: ignore[arg-type]
    except Exception as exc:
        if is_transient(exc):
            raise
        logger.warning("%s failed at %s: %s", rel, stage, one_line(exc))
        enhancement_id = record_failure(factory, job, photo_id, key or stable_hash({"target": sha, "stage": stage}),
                                        settings, stage, one_line(exc), ranked, timings)
        return TargetOutcome(photo_id, rel, Outcome.FAILED, references=ranked, job_key=key,
                             enhancement_id=enhancement_id, reranked=reranked, timings=timings,
                             error=one_line(exc))


def record_failure(factory, job: JobContext, photo_id: int, key: str, settings: Settings, stage: str,  # type: ignore[no-untyped-def]
                   error: str, ranked: tuple[RankedReference, ...] = (), timings: dict[str, float] | None = None
                   ) -> int | None:
    """Record a failed enhancement with its reason; never raises (the run goes on)."""
    try:
        with factory.begin() as session:
            target = session.get(Photo, photo_id)
            row = queries.record_enhancement(
                session, job.run_id, target, key, status=EnhancementStatus.failed, model_name=job.model_name,
                model_sha256=job.model_sha256, embedder=job.embedder_key, device=job.device,
                params={**settings.enhance_params(job.amp_dtype).pixel_params(), "failed_stage": stage},
                timings=timings or {}, error=error,
                references=[(r.rank, r.photo_id, r.sha256, r.cosine, r.relevance) for r in ranked],
            )
            return row.id
    except Exception as exc:  # the database itself may be what failed
        logger.error("could not record the failure of photo %s (%s): %s", photo_id, error, one_line(exc))
        return None


@task(name="enhance-photo", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2,
      retry_condition_fn=retry_if_transient)
def enhance_task(photo_id: int, job: JobContext, settings: Settings, out_path: str) -> TargetOutcome:
    """One target photo (thin wrapper; see process_target)."""
    return process_target(photo_id, job, settings, out_path)


# -- the flow ----------------------------------------------------------------------------------


def _table(outcomes: tuple[TargetOutcome, ...]) -> list[dict[str, object]]:
    rows = []
    for o in outcomes:
        rows.append({
            "target": o.rel_path,
            "status": o.status.value,
            "references": ", ".join(o.ref_paths) or "-",
            "cosine": ", ".join(f"{r.cosine:.3f}" for r in o.references) or "-",
            "relevance": ", ".join(f"{r.relevance:.3f}" for r in o.references) or "-",
            "retrieve_s": o.timings.get("retrieve_s", 0.0),
            "sr_s": o.timings.get("sr_s", 0.0),
            "output": o.output_path or "-",
            "error": o.error or "",
        })
    return rows


@flow(name="enhance-album", task_runner=ThreadPoolTaskRunner(max_workers=2), log_prints=False)
def enhance_album(album: str, settings: Settings) -> EnhanceSummary:
    """Index `album`, then enhance every target photo whose job is not done yet.

    One Prefect task per target; a job (target, references, model, pixel parameters) that already
    succeeded and whose output is intact is reported as cached with no model work.
    """
    started = time.perf_counter()
    root = Path(album).expanduser().resolve()
    if not root.is_dir():
        raise ValueError(f"album is not a directory: {str(root)!r}")
    model_path = settings.check_model()
    factory = runtime.database(settings.database_url)
    recovered = recover_crashed_runs(factory)
    with factory.begin() as session:
        album_id = queries.get_or_create_album(session, str(root)).id
    out_dir = settings.output_dir(root)
    run_id = start_run(factory, RunKind.enhance, album_id, settings, {"album": str(root), "out_dir": str(out_dir)})
    try:
        indexed = index_steps(root, settings)
        device = runtime.resolve_device(settings.device)
        ckpt = runtime.model(model_path, device.name)
        job = JobContext(
            album_root=str(root), album_id=album_id, run_id=run_id, out_dir=str(out_dir),
            model_sha256=ckpt.sha256, model_name=ckpt.name, embedder_key=indexed.index.embedder_key
            if indexed.index else runtime.embedder(settings).key,
            index_path=str(indexed.index.path) if indexed.index else "", device=device.name,
            amp_dtype=device.amp_dtype,
        )
        with factory() as session:
            found = queries.photos(session, album_id, role=DbRole.target)
            targets = [(p.id, p.rel_path) for p in found]
            out_paths = plan_output_paths(out_dir, [(p.rel_path, p.format) for p in found],
                                          settings.enhance_params(device.amp_dtype))
        task_opts = {"retries": settings.retries, "retry_delay_seconds": settings.retry_delay_s}
        futures = {
            enhance_task.with_options(task_run_name=f"enhance {rel}", **task_opts)
            .submit(pid, job, settings, str(out_paths[rel])): (pid, rel)
            for pid, rel in targets
        }
        outcomes: list[TargetOutcome] = []
        bar = None
        if settings.progress and futures:
            from tqdm import tqdm

            bar = tqdm(total=len(futures), desc="enhance", unit="photo", leave=False, dynamic_ncols=True)
        for future in as_completed(list(futures)):
            pid, rel = futures[future]
            try:
                outcome = future.result()
            except Exception as exc:  # transient error that outlived its retries
                error = one_line(exc)
                rid = record_failure(factory, job, pid, stable_hash({"photo": pid, "run": run_id}), settings,
                                     "retries-exhausted", error)
                outcome = TargetOutcome(pid, rel, Outcome.FAILED, enhancement_id=rid, error=error)
            outcomes.append(outcome)
            if bar is not None:
                bar.set_postfix_str(f"{rel} {outcome.status.value}", refresh=False)
                bar.update(1)
        if bar is not None:
            bar.close()
        ordered = tuple(sorted(outcomes, key=lambda o: o.rel_path))
        summary = EnhanceSummary(
            album=str(root), album_id=album_id, run_id=run_id, out_dir=str(out_dir), model_path=str(model_path),
            model_sha256=ckpt.sha256, device=device.name, index=indexed, outcomes=ordered,
            recovered_runs=tuple(recovered), wall_s=round(time.perf_counter() - started, 3),
        )
        counts = {**summary.counts(), **{f"scan_{k}": v for k, v in indexed.scan.as_dict().items()}}
        create_table_artifact(
            table=_table(ordered) or [{"target": "-", "status": "no targets"}],
            key=f"enhance-album-{album_id}",
            description=(
                f"refsr enhance {root}: " + ", ".join(f"{k} {v}" for k, v in summary.counts().items())
                + f"; model {ckpt.name} ({ckpt.sha256[:12]}) on {device.name}"
            ),
        )
        if settings.report:
            summary = replace(summary, gallery=_gallery(factory, root, album_id))
        error = f"{len(summary.failed)} photo(s) failed" if summary.failed else None
        finish_run(factory, run_id, RunStatus.completed, counts, error=error)
        return summary
    except BaseException as exc:
        status = RunStatus.crashed if interrupted(exc) else RunStatus.failed
        finish_run(factory, run_id, status, {}, error=one_line(exc))
        raise


def _gallery(factory: sessionmaker[Session], root: Path, album_id: int) -> str | None:
    """Build the album's gallery and link it from a markdown artifact of this flow run.

    The gallery is a convenience: its failure is logged and never fails the run.
    """
    from flows.report import build_gallery, gallery_markdown

    try:
        with factory() as session:
            index = build_gallery(session, album_root=root)
        create_markdown_artifact(markdown=gallery_markdown(index), key=f"gallery-album-{album_id}",
                                 description=f"before/after gallery of {root}")
        return str(index)
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        logger.warning("gallery for %s not built: %s", root, one_line(exc))
        return None


def deployment(album: str | Path, settings: Settings, *, name: str | None = None, cron: str | None = None,
               interval: int | None = None):  # type: ignore[no-untyped-def]
    """A scheduled deployment of `enhance_album` for one album (served by `refsr serve`).

    Parameters travel as JSON (the settings as plain values) and are validated back into
    Settings when a run starts, so a worker on another machine builds the same settings.
    """
    if (cron is None) == (interval is None):
        raise ValueError(f"give exactly one of cron or interval, got cron={cron!r}, interval={interval!r}")
    root = Path(album).expanduser().resolve()
    return enhance_album.to_deployment(
        name=name or f"refsr-{root.name}",
        cron=cron,
        interval=interval,
        parameters={"album": str(root), "settings": settings.with_(progress=False).to_record()},
        description=f"refsr enhance {root}",
        tags=["refsr"],
    )
