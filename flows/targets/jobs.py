"""What the target tasks of one enhance run share (its run and job contexts) and what each returns (its outcome)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from flows.settings import Settings
from pipeline.matching.retrieval import RankedReference
from pipeline.params import EnhanceParams


class Outcome(enum.StrEnum):
    ENHANCED = "enhanced"  # the model ran and a new record was written
    CACHED = "cached"  # same job key already succeeded and its output is intact: no model work
    FAILED = "failed"  # recorded with its reason; the run went on
    NO_REFERENCE = "no-reference"  # the album has no reference candidate for it
    # A live holder on another machine had the job when this run tried it; the run comes back to it
    # at its end, so a finished run reports one of the outcomes above instead.
    ELSEWHERE = "elsewhere"
    # Ctrl-C (flows/execution/stopping.py): a photo that never began its model work, and one in flight whose
    # grace ran out (not recorded; an output it may still have renamed into place is redone next run).
    NOT_STARTED = "not-started"
    DROPPED = "dropped"


@dataclass(frozen=True)
class JobContext:
    """What every target task of one run shares: ids, paths, hashes, and the pixel parameters its jobs are keyed by."""

    album_root: str
    album_id: int
    run_id: int | None
    out_dir: str
    model_sha256: str
    model_name: str
    embedder_key: str
    index_path: str
    device: str
    # Built once per run from the settings and the resolved device (its autocast among them), then only read:
    # the job key, the model call, the re-rank and the records all take the same object.
    params: EnhanceParams
    # The machine whose file index_path is ("" = any); a worker on another one builds the index from the
    # database's vectors instead, so workers need no copy of the flow machine's REFSR_HOME.
    index_host: str = ""


@dataclass(frozen=True)
class RunContext:
    """What one enhance run hands down to each target task: the settings it was asked with and its job context.

    The process's resources are not in it: each task process looks its own up (flows/resources.py).
    """

    settings: Settings
    job: JobContext


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
    restored: bool = False  # a copy restored from its original, references[0] (flows/targets/retrieving.py with_original)
