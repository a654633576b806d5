"""The enhance flow: index the album, then one task per target photo: retrieve, re-rank, enhance, record."""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect.futures import wait as wait_for
from sqlalchemy.orm import Session, sessionmaker

from db import queries
from db.claims import ClaimLost
from db.models import PhotoRole, RunKind, RunStatus
from durable.files import remove_stale_temps
from flows.common import finish_run, is_transient, one_line, recorded_run, retry_if_transient
from flows.execution import stopping
from flows.execution.faults import fault_point
from flows.execution.locks import job_claim
from flows.execution.runners import StoppableThreadRunner, Submit, photo_tasks, uses_dask
from flows.indexing import IndexSummary, index_steps
from flows.resources import Resources, resources_for
from flows.settings import Settings
from flows.targets.jobs import JobContext, Outcome, RunContext, TargetOutcome
from flows.targets.records import (claim_output, record_failure, record_success, release_output, reuse_elsewhere,
                                   reusable)
from flows.targets.retrieving import Retrieval, TargetPhoto, choose_references, load_target, with_original
from flows.targets.stamping import stamp_request
from pipeline.attention import attention_path_for
from pipeline.enhance import enhance_photo, job_key, plan_output_paths, stable_hash

logger = logging.getLogger(__name__)

_REFERENCE_VANISHED_RETRIES = 2
_POLL_S = 0.2  # how often the collecting loop looks for a Ctrl-C


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
    stopped: bool = False  # Ctrl-C: the outcomes say which photos were done, dropped or never started

    def counts(self) -> dict[str, int]:
        counts = {o.value: 0 for o in Outcome if o is not Outcome.ELSEWHERE}  # a finished run has none
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


def process_target(photo_id: int, run: RunContext, out_path: str, *, wait: bool = False) -> TargetOutcome:
    """Retrieve references for one target, enhance it into ``out_path`` unless that job is already done there.

    ``out_path`` comes from the run's :func:`plan_output_paths`, which keeps targets apart that
    would share an output name. A job that a live process on another machine holds is ELSEWHERE,
    unless ``wait``: then this waits for that holder to finish it (CACHED) or to die (and does it).

    Permanent failures are recorded (status failed, with the reason) and returned; transient ones
    (database busy, CUDA out of memory) are raised so Prefect retries the task.
    """
    fault_point("target")
    res = resources_for(run.settings)
    target = load_target(res.sessions, run.job, photo_id)
    if not stopping.begin_photo(photo_id):
        return TargetOutcome(photo_id, target.rel_path, Outcome.NOT_STARTED)
    try:
        return _process_target(res, run, target, out_path, wait=wait)
    finally:
        stopping.end_photo(photo_id)


def _process_target(res: Resources, run: RunContext, target: TargetPhoto, out_path: str, *,
                    wait: bool) -> TargetOutcome:
    job = run.job
    found: Retrieval | None = None
    retries = _REFERENCE_VANISHED_RETRIES
    while True:
        try:
            found = choose_references(res, run, target)
            if not found.ranked and not found.alone:
                return TargetOutcome(target.id, target.rel_path, Outcome.NO_REFERENCE, error=found.missing)
            if run.settings.restore:
                found = with_original(res.sessions, job, target, found)
            return enhance_target(res, run, target, found, out_path, wait=wait)
        except FileNotFoundError as exc:
            # A reference deleted while this target was using it: choose again, without it.
            references = {str(Path(job.album_root) / rel) for _, rel in target.references.values()}
            if retries == 0 or str(exc.filename) not in references:
                return _failed(res, job, target, found, exc)
            retries -= 1
        except Exception as exc:
            if is_transient(exc):
                raise
            return _failed(res, job, target, found, exc)


def enhance_target(res: Resources, run: RunContext, target: TargetPhoto, found: Retrieval, out_path: str, *,
                   wait: bool = False) -> TargetOutcome:
    """Enhance `target` with its chosen references into `out_path` and record it; CACHED when that is done already.

    The model runs only under the job's claim (flows/execution/locks.py), checked for a finished job again
    once held: whoever held it before may have just done it.
    """
    job, settings = run.job, run.settings
    key = job_key(target.sha256, [r.sha256 for r in found.ranked], job.model_sha256, job.params,
                  restored_from=found.restored_from)
    ref_paths = tuple(target.references[r.photo_id][1] for r in found.ranked)
    timings = found.timings()

    def outcome(status: Outcome, output_path: str | None, enhancement_id: int | None) -> TargetOutcome:
        return TargetOutcome(target.id, target.rel_path, status, references=found.ranked, ref_paths=ref_paths,
                             job_key=key, output_path=output_path, enhancement_id=enhancement_id,
                             reranked=found.reranked, timings=timings, restored=found.restored_from is not None)

    carries = settings.stamp_options()
    if not settings.force and (hit := reusable(res.sessions, key, out_path, carries)) is not None:
        return outcome(Outcome.CACHED, hit.output_path, hit.id)
    with job_claim(settings, res.sessions, key, wait=wait) as held:
        if held is None:
            return outcome(Outcome.ELSEWHERE, None, None)
        if not settings.force and (hit := reusable(res.sessions, key, out_path, carries)) is not None:
            return outcome(Outcome.CACHED, hit.output_path, hit.id)
        claim_output(res.sessions, job.out_dir, out_path, attention_path_for(job.out_dir, key))
        if not settings.force and (hit := reuse_elsewhere(res.sessions, job, target.id, key, out_path,
                                                          carries)) is not None:
            return outcome(Outcome.CACHED, hit.output_path, hit.id)
        ckpt = res.model()
        if ckpt.sha256 != job.model_sha256:
            raise RuntimeError(f"checkpoint {res.spec.model_path} changed during the run")
        root = Path(job.album_root)
        stamp = stamp_request(settings, target_sha256=target.sha256, target_rel=target.rel_path, ranked=found.ranked,
                              ref_rels=ref_paths, model_name=job.model_name, model_sha256=job.model_sha256,
                              job_key=key, run_id=job.run_id)
        with res.device_slot(), _released_if_unwritten(job.out_dir, out_path):
            fault_point("model")  # Ctrl-C tests: a long enhancement to signal into
            result = enhance_photo(ckpt.model, root / target.rel_path, [root / p for p in ref_paths], Path(out_path),
                                   job.params, attention_path=attention_path_for(job.out_dir, key), device=job.device,
                                   reference_cache=res.reference_cache(), stamp=stamp,
                                   sha256=[target.sha256, *(r.sha256 for r in found.ranked)],
                                   restore=found.restored_from is not None)
        timings.update({k: round(v, 4) for k, v in result.timings.items()})
        fault_point("enhanced")  # crash tests: die or stall holding the job, its output written, not recorded
        if not stopping.may_record(target.id):
            # Ctrl-C's grace ran out first and the run reported this photo as dropped: recording it
            # now would contradict what was printed. The output is unrecorded, so the next run redoes it.
            held.give_up()
            return outcome(Outcome.DROPPED, None, None)
        try:
            held.check()
            enhancement_id = record_success(res.sessions, job, target.id, key, found.key, result, timings,
                                            found.ranked, settle=held.settle, carries=carries,
                                            candidates=found.candidate_records(),
                                            restored_from=found.restored_from)
        except ClaimLost:
            # This process stalled past its lease and another took the job over: the job is theirs to
            # record (our output was renamed into place whole, as theirs will be).
            logger.warning("%s: job %s was taken over by another process", target.rel_path, key[:12])
            held.give_up()
            return outcome(Outcome.ELSEWHERE, None, None)
    return outcome(Outcome.ENHANCED, str(result.output_path), enhancement_id)


@contextlib.contextmanager
def _released_if_unwritten(out_dir: str, out_path: str) -> Iterator[None]:
    try:
        yield
    except BaseException:
        release_output(out_dir, out_path)
        raise


def _failed(res: Resources, job: JobContext, target: TargetPhoto, found: Retrieval | None,
            exc: Exception) -> TargetOutcome:
    """Record the failure of one target with the stage it reached, and say so."""
    ranked = found.ranked if found is not None else ()
    stage = "enhance" if ranked or (found is not None and found.alone) else "retrieval"
    restored_from = found.restored_from if found is not None else None
    key = job_key(target.sha256, [r.sha256 for r in ranked], job.model_sha256, job.params,
                  restored_from=restored_from) if stage == "enhance" else None
    timings = found.timings() if found is not None and stage == "enhance" else {}
    error = one_line(exc)
    logger.warning("%s failed at %s: %s", target.rel_path, stage, error)
    record_key = key or stable_hash({"target": target.sha256, "stage": stage})
    enhancement_id = record_failure(res.sessions, job, target.id, record_key, stage, error, ranked, timings,
                                    found.candidate_records() if found is not None else None)
    return TargetOutcome(target.id, target.rel_path, Outcome.FAILED, references=ranked, job_key=key,
                         enhancement_id=enhancement_id, reranked=found is not None and found.reranked,
                         timings=timings, error=error)


@task(name="enhance-photo", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2,
      retry_condition_fn=retry_if_transient)
def enhance_task(photo_id: int, run: RunContext, out_path: str, wait: bool = False) -> TargetOutcome:
    """One target photo (thin wrapper; see process_target)."""
    return process_target(photo_id, run, out_path, wait=wait)


# -- the flow ----------------------------------------------------------------------------------


def _table(outcomes: tuple[TargetOutcome, ...]) -> list[dict[str, object]]:
    rows = []
    for o in outcomes:
        rows.append({
            "target": o.rel_path,
            "status": o.status.value,
            "references": ", ".join(o.ref_paths) or "-",
            "cosine": ", ".join(f"{r.cosine:.3f}" for r in o.references) or "-",
            "inliers": ", ".join("-" if r.inliers is None else str(r.inliers) for r in o.references) or "-",
            "relevance": ", ".join(f"{r.relevance:.3f}" for r in o.references) or "-",
            "retrieve_s": o.timings.get("retrieve_s", 0.0),
            "sr_s": o.timings.get("sr_s", 0.0),
            "output": o.output_path or "-",
            "error": o.error or "",
        })
    return rows


# The index steps' tasks run here; the photo tasks on the engine the settings choose (flows/execution/runners.py).
@flow(name="enhance-album", task_runner=StoppableThreadRunner(max_workers=Settings.workers), log_prints=False)
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
    res = resources_for(settings)
    out_dir = settings.output_dir(root)
    for stale in remove_stale_temps(out_dir):
        logger.info("removed %s, left by a killed run", stale)
    with recorded_run(res.sessions, RunKind.enhance, root, settings,
                      {"album": str(root), "out_dir": str(out_dir)}) as run:
        stopping.arm()
        indexed = index_steps(root, settings)
        ckpt = res.model()
        job = JobContext(
            album_root=str(root), album_id=run.album_id, run_id=run.run_id, out_dir=str(out_dir),
            # One name everywhere (summary, records, which-ref, gallery): the file's, with a short sha256 beside it.
            model_sha256=ckpt.sha256, model_name=model_path.name,
            embedder_key=indexed.index.embedder_key if indexed.index else res.embedder.key,
            index_path=str(indexed.index.path) if indexed.index else "", device=res.device.name,
            # The one place the pixel parameters are made: the settings' with the autocast of the device resolved.
            params=settings.enhance_params(res.device.amp_dtype), index_host=socket.gethostname(),
        )
        summary = EnhanceSummary(
            album=str(root), album_id=run.album_id, run_id=run.run_id, out_dir=str(out_dir),
            model_path=str(model_path), model_sha256=ckpt.sha256, device=job.device, index=indexed,
            outcomes=_enhance_targets(res, RunContext(settings, job)), recovered_runs=run.recovered,
            wall_s=round(time.perf_counter() - started, 3), stopped=stopping.requested(),
        )
        if not summary.stopped:  # a stopped run owes the user its exit: no Prefect API call it can spare
            create_table_artifact(
                table=_table(summary.outcomes) or [{"target": "-", "status": "no targets"}],
                key=f"enhance-album-{run.album_id}",
                description=(
                    f"refsr enhance {root}: " + ", ".join(f"{k} {v}" for k, v in summary.counts().items())
                    + f"; model {model_path.name} ({ckpt.sha256[:12]}) on {job.device}"
                ),
            )
        if settings.report and not summary.stopped:  # a stopped run owes the user its exit, not a gallery
            summary = replace(summary, gallery=_gallery(res.sessions, root, run.album_id, settings.home))
        counts = {**summary.counts(), **{f"scan_{k}": v for k, v in indexed.scan.as_dict().items()}}
        error = f"{len(summary.failed)} photo(s) failed" if summary.failed else None
        status = RunStatus.stopped if summary.stopped else RunStatus.completed
        finish_run(res.sessions, run.run_id, status, counts, error=error)
        return summary


def _enhance_targets(res: Resources, run: RunContext) -> tuple[TargetOutcome, ...]:
    """One task per target of the album, each into its planned output path; outcomes by path.

    Jobs that a live process elsewhere held are tried again once every other job is done, this
    time waiting for that holder: it finishes them (they are then cached here) or dies, and this
    run takes them over when its lease runs out. A task whose transient error outlived its
    retries is recorded as failed here.
    """
    job, settings = run.job, run.settings
    with res.sessions() as session:
        found = queries.photos(session, job.album_id, role=PhotoRole.target)
        targets = [(p.id, p.rel_path) for p in found]
        out_paths = plan_output_paths(job.out_dir, [(p.rel_path, p.format) for p in found], job.params)
    todo = [(pid, rel, str(out_paths[rel])) for pid, rel in targets]
    bar = None
    if settings.progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="enhance", unit="photo", leave=False, dynamic_ncols=True)
    with photo_tasks(settings) as submit:
        done = _run_targets(res, run, submit, todo, wait=False, bar=bar)
        later = {o.photo_id for o in done if o.status is Outcome.ELSEWHERE}
        if later and stopping.requested():
            done = [o if o.photo_id not in later else replace(o, status=Outcome.NOT_STARTED) for o in done]
        elif later:
            logger.warning("%d job(s) were held by other processes; waiting until they finish them, or until "
                           "their claims lapse (%g s after a holder dies) to take them over",
                           len(later), settings.claim_lease_s)
            done = [o for o in done if o.photo_id not in later] + _run_targets(
                res, run, submit, [t for t in todo if t[0] in later], wait=True, bar=bar)
    if bar is not None:
        bar.close()
    return tuple(sorted((_abandoned(res, job, o) for o in done), key=lambda o: o.rel_path))


def _run_targets(res: Resources, run: RunContext, submit: Submit, todo: list[tuple[int, str, str]], *, wait: bool,
                 bar: Any) -> list[TargetOutcome]:
    """Submit one enhance task per (photo id, rel path, output path) and collect the outcomes as they come."""
    job, settings = run.job, run.settings
    task_opts = {"retries": settings.retries, "retry_delay_seconds": settings.retry_delay_s}
    futures = {
        submit(enhance_task.with_options(task_run_name=f"enhance {rel}", **task_opts),
               {"photo_id": pid, "run": run, "out_path": out, "wait": wait}): (pid, rel)
        for pid, rel, out in todo
    }
    outcomes: list[TargetOutcome] = []

    def collect(done: set[PrefectFuture[TargetOutcome]]) -> None:
        for future in done:
            pid, rel = futures[future]
            try:
                outcome = future.result()
            except Exception as exc:  # transient error that outlived its retries
                error = one_line(exc)
                rid = record_failure(res.sessions, job, pid, stable_hash({"photo": pid, "run": job.run_id}),
                                     "retries-exhausted", error)
                outcome = TargetOutcome(pid, rel, Outcome.FAILED, enhancement_id=rid, error=error)
            outcomes.append(outcome)
            if bar is not None and outcome.status is not Outcome.ELSEWHERE:
                bar.set_postfix_str(f"{rel} {outcome.status.value}", refresh=False)
                bar.update(1)

    pending = set(futures)
    # Short waits rather than one blocking one: the main thread must notice a Ctrl-C (flows/execution/stopping.py).
    while pending and not stopping.requested():
        done, pending = wait_for(list(pending), timeout=_POLL_S)
        collect(set(done))
    if pending:  # stopped: what started gets its grace, the rest never starts
        done, pending = wait_for(list(pending), timeout=stopping.grace_left())
        collect(set(done))
        dropped = stopping.give_up()
        for future in pending:
            pid, rel = futures[future]
            # A Dask worker's task may be running in another process, which this one cannot see: dropped.
            started = pid in dropped or uses_dask(settings)
            outcomes.append(TargetOutcome(pid, rel, Outcome.DROPPED if started else Outcome.NOT_STARTED))
    return outcomes


def _abandoned(res: Resources, job: JobContext, o: TargetOutcome) -> TargetOutcome:
    """A job still held elsewhere after waiting: its last holders all died on it (see Settings.claim_attempts)."""
    if o.status is not Outcome.ELSEWHERE:
        return o
    error = ("not done here: another process still holds it, or the last processes that took it all died "
             "on it (out of memory?)")
    rid = record_failure(res.sessions, job, o.photo_id, o.job_key or stable_hash({"photo": o.photo_id}),
                         "claim", error, o.references, o.timings)
    return replace(o, status=Outcome.FAILED, enhancement_id=rid, error=error)


def _gallery(sessions: sessionmaker[Session], root: Path, album_id: int, home: Path) -> str | None:
    """Build the album's gallery and link it from a markdown artifact of this flow run.

    Beside a SQLite database (report's default), else in this machine's workspace: never in the
    working directory of whatever process (a Prefect worker, say) ran the flow.
    The gallery is a convenience: its failure is logged and never fails the run.
    """
    from flows.report import build_gallery, gallery_markdown

    try:
        with sessions() as session:
            index = build_gallery(session, album_root=root, home=home)
        create_markdown_artifact(markdown=gallery_markdown(index), key=f"gallery-album-{album_id}",
                                 description=f"before/after gallery of {root}")
        return str(index)
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        logger.warning("gallery for %s not built: %s", root, one_line(exc))
        return None


def deployment_options(album: str | Path, settings: Settings, *, name: str | None = None, cron: str | None = None,
                       interval: int | None = None) -> dict[str, Any]:
    """What a scheduled deployment of `enhance_album` for one album is: name, schedule, parameters.

    Parameters travel as JSON (the settings as plain values) and are validated back into
    Settings when a run starts, so a worker on another machine builds the same settings.
    """
    if (cron is None) == (interval is None):
        raise ValueError(f"give exactly one of cron or interval, got cron={cron!r}, interval={interval!r}")
    root = Path(album).expanduser().resolve()
    return {
        "name": name or f"refsr-{root.name}",
        "cron": cron,
        "interval": interval,
        "parameters": {"album": str(root), "settings": settings.with_(progress=False).to_record()},
        "description": f"refsr enhance {root}",
        "tags": ["refsr"],
    }


def deployment(album: str | Path, settings: Settings, *, name: str | None = None, cron: str | None = None,
               interval: int | None = None):  # type: ignore[no-untyped-def]
    """A scheduled deployment of `enhance_album` for one album, served by this process (`refsr serve`)."""
    return enhance_album.to_deployment(**deployment_options(album, settings, name=name, cron=cron, interval=interval))
