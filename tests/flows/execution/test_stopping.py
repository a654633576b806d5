"""Ctrl-C during `refsr enhance`, through the console script with a real SIGINT during model work."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from db.models import Run, RunStatus
from flows.execution import stopping
from tests.flows.cli.test_cli import _enhance_args, _env, _sessions, _start


def _children(pid: int) -> set[int]:
    """Processes whose parent is `pid` (the Prefect server refsr started), from /proc."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.add(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _gone(pids: set[int], within_s: float) -> bool:
    """Whether every process in `pids` has exited (or is a zombie) within `within_s` seconds."""
    deadline = time.monotonic() + within_s
    while any(_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


STOP_BOUND_S = 20.0  # well under the 30 s a paused photo would add, far over the 5 s target


def _interrupt(album: Path, home: Path, model: Path, tmp_path: Path, fault: str, signals: int = 1):
    """Start enhance with the first photo paused where `fault` says ("<point>:1:pause:<s>"), Ctrl-C into it
    (to the process group, as a terminal does); returns (exit status, seconds from the first signal, out,
    err, children)."""
    args = [*_enhance_args(album, home, model), "--workers", "1"]
    env = _env(tmp_path, REFSR_FAULT_INJECT=fault)
    proc, out = _start(args, env, tmp_path / "stopped")
    err = out.with_suffix(".err")
    try:
        deadline = time.monotonic() + 600  # Prefect's first start on a busy 2-core machine takes minutes
        while time.monotonic() < deadline:
            if "fault injection: pausing" in err.read_text() or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert proc.poll() is None, err.read_text()[-2000:]
        children = _children(proc.pid)
        signalled = time.monotonic()
        for _ in range(signals):
            os.killpg(proc.pid, signal.SIGINT)
            time.sleep(0.2)
        proc.wait(timeout=60)
        took = time.monotonic() - signalled
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return proc.returncode, took, out.read_text(), err.read_text(), children


def _run(home: Path) -> Run:
    with _sessions(home)() as session:
        (run,) = session.scalars(select(Run).where(Run.kind == "enhance")).all()
        session.expunge(run)
        return run


def _outputs(album: Path) -> list[Path]:
    return sorted(p for p in (album / "enhanced").rglob("*") if p.is_file() and p.suffix == ".jpg")


@pytest.mark.slow
def test_ctrl_c_lets_the_photo_in_flight_finish_and_starts_no_other(make_album, tiny_model: Path,
                                                                     tmp_path: Path) -> None:
    album, home = make_album(3), tmp_path / "h"
    began = time.time()
    # Paused after its model work, before its record: what is left fits the grace period on a busy machine.
    code, took, out, err, children = _interrupt(album, home, tiny_model, tmp_path, "enhanced:1:pause:0.5")
    assert code == 130, err[-2000:]
    # Behaviour, not speed: the queued photos did not run (the counts above say so). The 5 s is a
    # speed target measured on a quiet machine (issue note); under a loaded CI host Prefect's API calls
    # after the grace took up to 7 s, so the bound here only catches a stop that waits for the queue.
    assert took < STOP_BOUND_S, (took, err[-2000:])
    assert "no new photo starts" in err
    # The summary table: the photo in flight finished, the two queued never started.
    assert "enhanced" in out and out.count("not-started") >= 2, out
    assert "stopped by Ctrl-C: 1 of 3 target(s) have an enhancement" in out
    assert len(_outputs(album)) == 1
    assert not [p for p in (album / "enhanced").rglob("*") if p.name.endswith(".tmp")]
    run = _run(home)
    assert run.status is RunStatus.stopped
    assert run.counts["enhanced"] == 1 and run.counts["not-started"] == 2 and run.counts["dropped"] == 0
    # History's time is the whole command's: from its start to after the signal.
    assert run.started_at.timestamp() <= began + 1.0
    assert run.ended_at is not None and (run.ended_at - run.started_at).total_seconds() >= took
    # The Prefect server went with it: the kernel sends it SIGTERM as refsr exits (PR_SET_PDEATHSIG), and
    # its shutdown takes a moment on a loaded host, so wait for it rather than look once.
    assert _gone(children, within_s=30.0), [c for c in children if _alive(c)]


@pytest.mark.slow
def test_ctrl_c_drops_a_photo_that_outlasts_the_grace_period(make_album, tiny_model: Path, tmp_path: Path) -> None:
    album, home = make_album(2), tmp_path / "h"
    # Paused before the model runs (a long enhancement): the signal comes during its model work.
    code, took, out, err, _ = _interrupt(album, home, tiny_model, tmp_path, "model:1:pause:30")
    assert code == 130, err[-2000:]
    assert stopping.GRACE_S <= took < STOP_BOUND_S, (took, err[-2000:])  # the photo's model work pauses 30 s
    assert "dropped" in out and "not-started" in out, out
    assert _outputs(album) == []
    run = _run(home)
    assert run.status is RunStatus.stopped
    assert run.counts["dropped"] == 1 and run.counts["not-started"] == 1 and run.counts["enhanced"] == 0


@pytest.mark.slow
def test_a_second_ctrl_c_stops_at_once(make_album, tiny_model: Path, tmp_path: Path) -> None:
    album, home = make_album(2), tmp_path / "h"
    code, took, _, err, _ = _interrupt(album, home, tiny_model, tmp_path, "model:1:pause:30", signals=2)
    assert code == 130, err[-2000:]
    assert took < stopping.GRACE_S, (took, err[-2000:])  # did not wait out the grace period
    assert "second Ctrl-C" in err
    assert _outputs(album) == [] and not [p for p in album.rglob("*") if p.name.endswith(".tmp")]


def test_a_stop_lets_no_photo_begin_and_gives_up_on_those_in_flight() -> None:
    stopping.reset()
    try:
        assert stopping.begin_photo(1) and stopping.begin_photo(2)
        stopping.end_photo(2)
        assert not stopping.requested() and stopping.grace_left() == stopping.GRACE_S
        stopping.request()
        assert stopping.requested() and not stopping.begin_photo(3)  # nothing new starts
        assert 0 < stopping.grace_left() <= stopping.GRACE_S
        assert stopping.may_record(1)  # still within its grace
        assert stopping.give_up() == {1}
        assert not stopping.may_record(1) and stopping.may_record(2)  # reported dropped: never recorded
    finally:
        stopping.reset()
    assert not stopping.requested() and stopping.begin_photo(3)
    stopping.reset()


def test_help_and_readme_state_the_grace_period_the_code_uses(capsys) -> None:
    from flows.cli import main

    with pytest.raises(SystemExit):
        main(["enhance", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    readme = " ".join((Path(__file__).resolve().parents[3] / "README.md").read_text().split())
    assert f"the one in progress gets {stopping.GRACE_S:g} s to finish or is dropped" in help_text
    assert f"The photo whose model work is in progress gets {stopping.GRACE_S:g} s to finish" in readme
    assert "exit 130" in help_text and "second Ctrl-C exits at once" in help_text
