"""Queries about runs: start, finish, and the history with each run's enhancement counts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from db.models import Enhancement, EnhancementStatus, Run, RunKind, RunStatus, utcnow


@dataclass(frozen=True)
class RunSummary:
    """A run with the number of enhancements it recorded, for history views."""

    id: int
    flow_run_id: str | None
    kind: RunKind
    album_id: int | None
    parameters: dict[str, Any]
    versions: dict[str, Any]
    started_at: datetime
    ended_at: datetime | None
    status: RunStatus
    counts: dict[str, Any] | None
    error: str | None
    succeeded: int
    failed: int


def start_run(
    session: Session,
    kind: RunKind,
    album_id: int | None,
    parameters: dict[str, Any],
    versions: dict[str, Any],
    flow_run_id: str | None = None,
) -> Run:
    """Record a run as running now; commit soon so other processes can see it."""
    run = Run(
        kind=RunKind(kind),
        album_id=album_id,
        parameters=parameters,
        versions=versions,
        flow_run_id=flow_run_id,
        status=RunStatus.running,
        started_at=utcnow(),
    )
    session.add(run)
    session.flush()
    return run


def finish_run(
    session: Session,
    run: Run,
    status: RunStatus,
    counts: dict[str, Any] | None = None,
    error: str | None = None,
    ended_at: datetime | None = None,
) -> Run:
    """Close a run with a final status, optional counts and a one-line error; it ends now unless
    `ended_at` says when (a crashed run found later ends at its last record, not at its finding)."""
    final = RunStatus(status)
    if final is RunStatus.running:
        raise ValueError(f"finish_run needs a final status, got {final!r}")
    run.status = final
    run.ended_at = ended_at or utcnow()
    if counts is not None:
        run.counts = counts
    if error is not None:
        run.error = error
    session.flush()
    return run


def run_history(
    session: Session, album_id: int | None = None, limit: int | None = None
) -> list[RunSummary]:
    """Runs newest first, each with counts of succeeded and failed enhancements."""
    tally = (
        select(
            Enhancement.run_id.label("run_id"),
            func.sum(case((Enhancement.status == EnhancementStatus.succeeded, 1), else_=0)).label(
                "succeeded"
            ),
            func.sum(case((Enhancement.status == EnhancementStatus.failed, 1), else_=0)).label(
                "failed"
            ),
        )
        .where(Enhancement.run_id.is_not(None))
        .group_by(Enhancement.run_id)
        .subquery()
    )
    query = select(
        Run, func.coalesce(tally.c.succeeded, 0), func.coalesce(tally.c.failed, 0)
    ).outerjoin(tally, tally.c.run_id == Run.id)
    if album_id is not None:
        query = query.where(Run.album_id == album_id)
    query = query.order_by(Run.started_at.desc(), Run.id.desc())
    if limit is not None:
        query = query.limit(limit)
    return [
        RunSummary(
            id=run.id,
            flow_run_id=run.flow_run_id,
            kind=run.kind,
            album_id=run.album_id,
            parameters=run.parameters,
            versions=run.versions,
            started_at=run.started_at,
            ended_at=run.ended_at,
            status=run.status,
            counts=run.counts,
            error=run.error,
            succeeded=int(succeeded),
            failed=int(failed),
        )
        for run, succeeded, failed in session.execute(query)
    ]


def last_record_at(session: Session, run_id: int) -> datetime | None:
    """When the run last recorded an enhancement, or None when it recorded none."""
    return session.scalar(select(func.max(Enhancement.created_at)).where(Enhancement.run_id == run_id))


def annotate_run(session: Session, run_id: int, *, started_at: datetime | None = None,
                 ended_at: datetime | None = None, **parameters: Any) -> Run | None:
    """Add keys to a run's parameters; move its start back or its end on (the whole command's time)."""
    run = session.get(Run, run_id)
    if run is None:
        return None
    if parameters:
        run.parameters = {**(run.parameters or {}), **parameters}  # a new dict: JSON columns track assignment
    if started_at is not None:
        run.started_at = started_at
    if ended_at is not None and run.ended_at is not None:
        run.ended_at = max(run.ended_at, ended_at)
    session.flush()
    return run


def latest_run(session: Session, album_id: int) -> Run | None:
    """The album's most recently started run, whatever its kind or status."""
    query = select(Run).where(Run.album_id == album_id).order_by(Run.started_at.desc(), Run.id.desc()).limit(1)
    return session.scalars(query).first()
