"""Several processes on one PostgreSQL, with real parts: a Dask cluster of worker processes, two `refsr enhance`
with their own REFSR_HOME ("two machines"), and a run SIGKILLed while it holds a job.

Each test gets its own PostgreSQL schema; all are skipped with a message when the local PostgreSQL
(127.0.0.1:5432, database test, trust auth) is unreachable, the Dask test also without the [dask] extra.
"""

from __future__ import annotations

import os
import signal
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from db import claims
from db.engine import init_db, make_session_factory
from db.models import Enhancement, EnhancementStatus, JobClaim, Photo, Run
from durable.files import sha256_file
from flows.enhancing import enhance_album
from tests.db.conftest import postgres_schema
from tests.flows.cli.test_cli import _enhance_args, _env, _finish, _start

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _session(url: str) -> Session:
    return make_session_factory(init_db(url))()


def _provenance(url: str, out_dir: Path) -> list[tuple[object, ...]]:
    """Every enhancement as it would read on any machine: paths relative to the album and the output folder."""
    with _session(url) as session:
        rows = session.scalars(select(Enhancement).options(selectinload(Enhancement.references))
                               .order_by(Enhancement.job_key))
        photos = {p.id: p.rel_path for p in session.scalars(select(Photo))}
        return [
            (photos[e.target_photo_id], e.job_key, e.status.value, e.model_sha256, e.embedder, e.device,
             str(Path(e.output_path).relative_to(out_dir)), e.output_sha256,
             [(r.rank, photos[r.ref_photo_id], r.ref_sha256, round(r.cosine, 5), round(r.relevance, 4))
              for r in sorted(e.references, key=lambda r: r.rank)])
            for e in rows
        ]


def _claim_pids(url: str) -> set[int]:
    with _session(url) as session:
        return set(session.scalars(select(JobClaim.pid)))


def _exactly_once(url: str, out_dir: Path, targets: int) -> list[Enhancement]:
    """One succeeded record per target, one intact file per record, nothing else in the output folder."""
    with _session(url) as session:
        rows = list(session.scalars(select(Enhancement)))
    assert [r.status for r in rows] == [EnhancementStatus.succeeded] * targets, [(r.status, r.error) for r in rows]
    assert len({r.target_photo_id for r in rows}) == targets and len({r.job_key for r in rows}) == targets
    files = sorted(p for p in out_dir.rglob("*") if p.is_file() and p.suffix == ".jpg")
    assert len(files) == targets
    assert sorted((Path(r.output_path), r.output_sha256) for r in rows) == [(f, sha256_file(f)) for f in files]
    assert not [p for p in out_dir.rglob("*") if p.name.endswith(".tmp")]  # no partial file left behind
    return rows


@pytest.mark.e2e
@pytest.mark.dask
@pytest.mark.usefixtures("prefect_harness")
def test_a_local_dask_cluster_gives_what_one_process_gives(make_album, settings_for, tmp_path: Path) -> None:
    pytest.importorskip("prefect_dask", reason="the [dask] extra (prefect-dask) is not installed")
    album = make_album(4)
    with postgres_schema() as one_url, postgres_schema() as dask_url:
        # Without provenance in the files: its time stamps, ids and signatures differ from run to run, and
        # this compares output bytes (tests/flows/test_credentials_flow.py covers the carriers).
        bare = {"credentials": False, "xmp": False}
        one = enhance_album(str(album), settings_for(database_url=one_url, home=tmp_path / "h1", workers=1,
                                                     embedder="fallback", out_dir=tmp_path / "one", **bare))
        spread = enhance_album(str(album), settings_for(database_url=dask_url, home=tmp_path / "h2", workers=2,
                                                        processes=True, embedder="fallback", out_dir=tmp_path / "dask",
                                                        **bare))
        assert one.counts() == spread.counts() == {"enhanced": 4, "cached": 0, "failed": 0, "no-reference": 0,
                                                   "dropped": 0, "not-started": 0}
        # The same references, scores, job keys and output bytes, whichever process did the work.
        assert _provenance(dask_url, tmp_path / "dask") == _provenance(one_url, tmp_path / "one")
        # The jobs were claimed by two worker processes, neither of them this one.
        assert _claim_pids(one_url) == {os.getpid()}
        workers = _claim_pids(dask_url)
        assert len(workers) == 2 and os.getpid() not in workers


def test_two_machines_on_one_database_do_every_job_exactly_once(make_album, tiny_model: Path, tmp_path: Path) -> None:
    album = make_album(4)
    out = tmp_path / "shared-out"
    with postgres_schema() as url:
        started = [
            _start([*_enhance_args(album, tmp_path / f"home{i}", tiny_model), "--db", url, "--out", str(out)],
                   _env(tmp_path, PREFECT_HOME=str(tmp_path / f"prefect{i}")), tmp_path / f"machine{i}")
            for i in range(2)
        ]
        results = [_finish(*s) for s in started]
        for result in results:
            assert result.returncode == 0, result.stderr[-3000:]
        _exactly_once(url, out, targets=4)
        with _session(url) as session:
            runs = list(session.scalars(select(Run).where(Run.kind == "enhance")))
        # Each run accounts for every target: what it enhanced plus what it found done by the other.
        assert len(runs) == 2 and all(r.counts["enhanced"] + r.counts["cached"] == 4 for r in runs)
        assert sum(r.counts["enhanced"] for r in runs) == 4


def _wait_for(text: str, log: Path, proc, timeout_s: float = 900) -> str:  # type: ignore[no-untyped-def]
    """Poll a process's log until `text` shows (the machine may be slow and busy); fail if it exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        seen = log.read_text()
        if text in seen:
            return seen
        assert proc.poll() is None, seen[-3000:]
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not in {log} after {timeout_s} s: {log.read_text()[-3000:]}")


def test_a_killed_worker_s_job_is_finished_by_the_other_after_its_lease(make_album, tiny_model: Path,
                                                                        tmp_path: Path) -> None:
    album = make_album(3)
    out = tmp_path / "shared-out"
    lease = 8.0
    with postgres_schema() as url:
        def start(name: str, **env: str):  # type: ignore[no-untyped-def]
            args = [*_enhance_args(album, tmp_path / f"home-{name}", tiny_model), "--db", url, "--out", str(out),
                    "--workers", "1"]
            return _start(args, _env(tmp_path, PREFECT_HOME=str(tmp_path / f"prefect-{name}"),
                                     REFSR_CLAIM_LEASE_S=str(lease), **env), tmp_path / name)

        # A stalls in its first job: output written, nothing recorded, its claim kept alive by the heartbeat.
        a, a_log = start("a", REFSR_FAULT_INJECT="enhanced:1:pause:900")
        b = None
        try:
            seen = _wait_for("fault injection: pausing at enhanced #1", a_log.with_suffix(".err"), a)
            assert f"in pid {a.pid}" in seen
            # B does the other jobs, finds A's held, and waits for it.
            b, b_log = start("b")
            _wait_for("1 job(s) were held by other processes", b_log.with_suffix(".err"), b)
            with _session(url) as session:
                held = session.scalars(select(JobClaim).where(JobClaim.pid == a.pid)).one()
                assert not session.scalars(select(Enhancement).where(Enhancement.job_key == held.job_key)).all()
            assert len(list(out.rglob("*.jpg"))) == 3  # A's output is on disk, unrecorded
            os.killpg(a.pid, signal.SIGKILL)  # A and everything it started, mid-task
            a.wait(timeout=60)
            with _session(url) as session:
                last = session.get(JobClaim, held.job_key)  # A's last renewal, now that it is dead
            result = _finish(b, b_log)
        finally:
            _finish(a, a_log)
            if b is not None and b.poll() is None:
                _finish(b, b_log)
        assert result.returncode == 0, result.stderr[-3000:]
        rows = _exactly_once(url, out, targets=3)
        # A's half-done job was recorded by B only, and not before A's lease had run out.
        (redone,) = [r for r in rows if r.job_key == held.job_key]
        assert redone.created_at >= last.expires_at - timedelta(seconds=1)
        after = claims.lookup(init_db(url), held.job_key)
        assert after is not None and after.pid == b.pid and after.status.value == "done"
