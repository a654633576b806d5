"""Nothing to do, known before Prefect starts: a run whose inputs match the album's last complete run.

Starting Prefect's local server costs several seconds, most of a no-op run. A completed run
records a fingerprint of everything that decides its result (the album's files by path, size
and mtime; the settings; the checkpoint, CLIP weights and code version; whether an NVIDIA driver
is present) and what it printed. When the album's latest run carries the same fingerprint, the
outputs it names are intact and no Prefect server was asked for (PREFECT_API_URL unset), the
command records a completed run of its own and reprints that summary without starting a flow.

An enhance run indexes the album first, so it also remembers what a `refsr index` would then find
(under `state_key(RunKind.index)`): the index that follows an enhance is a no-op like any other.
A no-op run carries the other kind's remembered state forward, so enhance, index, enhance stays fast.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from db import queries
from db.models import Run, RunKind, RunStatus, utcnow
from flows.execution.identity import process_identity
from flows.options import Affects, names
from flows.preflight import AlbumCheck
from flows.settings import Settings

KEY = "nothing_to_do"  # the run parameter that holds the fingerprint and the summary


def state_key(kind: RunKind, run_kind: RunKind | None = None) -> str:
    """The run parameter holding `kind`'s state on a run of `run_kind` (its own kind by default)."""
    return KEY if run_kind is None or run_kind is kind else f"{KEY}:{kind.value}"


def _stat(path: Path | None) -> list[Any] | None:
    if path is None:
        return None
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return [str(path), st.st_size, st.st_mtime_ns]


def _version() -> list[Any]:
    """The installed version and the code's own files (a checkout being edited changes with them)."""
    try:
        version = metadata.version("refsr-album")
    except metadata.PackageNotFoundError:
        version = "unknown"
    code = Path(__file__).resolve().parents[1]
    stamps = sorted((str(p.relative_to(code)), p.stat().st_mtime_ns)
                    for room in ("flows", "pipeline", "ttsr_core", "db", "durable") for p in (code / room).rglob("*.py"))
    return [version, hashlib.sha256(repr(stamps).encode()).hexdigest()]


def fingerprint(kind: RunKind, found: AlbumCheck, settings: Settings, extra: Mapping[str, Any] | None = None) -> str:
    """A digest of everything that decides what a run of `kind` on this album would do."""
    scan = found.scan
    # Settings declared to change what such a run does (an index run's scan thresholds are in "scan").
    relevant = names(Settings, Affects.INDEX if kind is RunKind.index else Affects.RUN)
    record = {k: v for k, v in settings.to_record().items() if k in relevant}
    files = []
    for rel, path in found.files:
        st = path.stat()
        files.append([rel, st.st_size, st.st_mtime_ns])
    payload = {
        "kind": kind.value, "root": str(found.root), "settings": record, "version": _version(),
        "scan": [scan.min_ref_side, scan.max_target_side, scan.ref_ratio, sorted(scan.extensions),
                 list(scan.exclude), scan.max_pixels, scan.follow_symlinks, scan.skip_hidden],
        "model": None if kind is RunKind.index else _stat(settings.model_path.resolve()),
        "clip": _stat(settings.clip_weights),
        "cuda": any(os.path.exists(n) for n in ("/dev/nvidiactl", "/dev/nvidia0")),
        "files": files, "extra": dict(extra or {}),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def prefect_server_configured() -> bool:
    """A Prefect server the user runs: every run must then show up there, so no shortcut."""
    return bool(os.environ.get("PREFECT_API_URL", "").strip())


def remembered(sessions: sessionmaker[Session], root: Path, kind: RunKind, digest: str) -> dict[str, Any] | None:
    """The summary of the album's latest run when it completed with this fingerprint and its files are intact."""
    with sessions() as session:
        album = queries.get_album(session, str(root))
        if album is None:
            return None
        run = queries.latest_run(session, album.id)
        if run is None or run.status is not RunStatus.completed or (run.kind is kind and run.error):
            return None  # (an enhance whose photo failed still indexed the album completely)
        key = state_key(kind, run.kind)
        state = (run.parameters or {}).get(key)
        if not isinstance(state, dict) or state.get("fingerprint") != digest:
            return None
        origin = session.get(Run, state["summary_run"]) if "summary_run" in state else run
        summary_key = state.get("summary_key", key)
        summary = (origin.parameters or {}).get(summary_key, {}).get("summary") if origin is not None else None
        carried = _carried(run, kind)
    if not isinstance(summary, dict):
        return None
    for kept in state.get("files", []):
        if _stat(Path(kept[0])) != kept:
            return None
    return {**state, "summary": summary, "summary_run": state.get("summary_run", run.id),
            "summary_key": summary_key, "carried": carried}


def _carried(run: Run, kind: RunKind) -> dict[str, Any]:
    """The latest run's remembered states for kinds other than `kind`, pointing at where their summaries are.

    A no-op run changes nothing, so what held before it still holds after it.
    """
    found: dict[str, Any] = {}
    for other in RunKind:
        if other is kind:
            continue
        key = state_key(other, run.kind)
        state = (run.parameters or {}).get(key)
        if isinstance(state, dict) and "fingerprint" in state and not (other is run.kind and run.error):
            found[state_key(other, kind)] = {**{k: v for k, v in state.items() if k != "summary"},
                                             "summary_run": state.get("summary_run", run.id),
                                             "summary_key": state.get("summary_key", key)}
    return found


def remember(sessions: sessionmaker[Session], run_id: int, digest: str, summary: Mapping[str, Any],
             files: Sequence[Path], started_at: datetime, key: str = KEY) -> None:
    """Store the fingerprint and summary on a completed run; its start moves back to when the command began.

    `key`: `state_key(kind, run's kind)` for what a run of another kind would find (an enhance's index).
    """
    state = {"fingerprint": digest, "summary": dict(summary), "files": [s for f in files if (s := _stat(f))]}
    with sessions.begin() as session:
        queries.annotate_run(session, run_id, started_at=started_at, **{key: state})


def record_shortcut(sessions: sessionmaker[Session], root: Path, kind: RunKind, settings: Settings,
                    state: Mapping[str, Any], counts: Mapping[str, Any], started_at: datetime) -> int:
    """A completed run that did nothing, with the whole command's time; returns its id."""
    from flows.common import versions

    # The summary stays on the run that produced it; this run points there.
    kept = {"fingerprint": state["fingerprint"], "files": state["files"], "summary_run": state["summary_run"],
            "summary_key": state.get("summary_key", KEY)}
    params = {**settings.to_record(), "album": str(root), "process": process_identity(),
              "prefect": "not started: nothing to do", **state.get("carried", {}), KEY: kept}
    with sessions.begin() as session:
        album = queries.get_or_create_album(session, str(root))
        run = queries.start_run(session, kind, album.id, params, versions())
        run.started_at = started_at
        queries.finish_run(session, run, RunStatus.completed, counts=dict(counts))
        return run.id


def now() -> datetime:
    return utcnow()
