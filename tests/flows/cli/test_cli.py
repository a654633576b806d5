"""The `refsr` command: help texts, in-process runs under the harness, and the real console script in subprocesses
(provenance on a real output, a killed run resumed, two runs at once)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.engine import init_db, make_session_factory
from db.models import Enhancement, EnhancementStatus, Run, RunStatus
from flows.cli import main
from flows.cli.parser import build_parser
from flows.settings import Settings

SCRIPT = Path(sys.executable).with_name("refsr")


def _db(home: Path) -> str:
    return f"sqlite:///{home.resolve() / 'refsr.db'}"


def _sessions(home: Path) -> sessionmaker[Session]:
    return make_session_factory(init_db(_db(home)))


def _succeeded(home: Path) -> list[tuple[int, str]]:
    with _sessions(home)() as session:
        rows = session.scalars(select(Enhancement).where(Enhancement.status == EnhancementStatus.succeeded))
        return sorted((r.target_photo_id, r.job_key) for r in rows)


@pytest.mark.parametrize("command", ["index", "enhance", "sr", "which-ref", "history", "serve"])
def test_every_subcommand_has_a_teaching_help(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and "REFSR_HOME" in text
    assert len(text.splitlines()) > 15


def test_serve_help_names_only_options_serve_takes(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = capsys.readouterr().out
    assert "--workers" not in text and "--processes" in text
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "album", "--interval", "60", "--workers", "3"])
    assert exit_.value.code == 2


def test_sample_album_config_states_the_rule_the_help_states(capsys) -> None:
    from pipeline.roles import DEFAULT_REF_RATIO

    sample = (Path(__file__).resolve().parents[3] / "examples" / "album" / "refsr.toml").read_text()
    with pytest.raises(SystemExit):
        main(["enhance", "--help"])
    help_text = capsys.readouterr().out
    assert f"(default {DEFAULT_REF_RATIO:g}" in help_text
    assert f"at least {DEFAULT_REF_RATIO:g}x its target's (--ref-ratio, default {DEFAULT_REF_RATIO:g})" in sample
    assert "1600" not in sample and "1024" not in sample  # the fixed defaults that no longer exist


def test_top_level_help_starts_with_the_sample_album(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "refsr enhance examples/album" in capsys.readouterr().out
    # Enhance offers exactly the options the issue lists (and a few more).
    enhance = build_parser()._subparsers._group_actions[0].choices["enhance"]  # type: ignore[union-attr]
    flags = {opt for action in enhance._actions for opt in action.option_strings}
    assert {"--out", "--refs", "--top-k", "--model", "--device", "--force", "--search", "--outscale"} <= flags


def test_enhance_without_a_model_fails_clearly(make_album, tmp_path: Path, capsys) -> None:
    album = make_album(1)
    code = main(["enhance", str(album), "--home", str(tmp_path / "h"), "--model", str(tmp_path / "none.safetensors")])
    assert code == 2
    err = capsys.readouterr().err
    assert "TTSR checkpoint not found" in err and "--model" in err
    assert not (album / "enhanced").exists()


@pytest.mark.e2e
@pytest.mark.usefixtures("prefect_harness")
def test_cli_in_process_enhance_which_ref_history_index(make_album, tiny_model: Path, tmp_path: Path, capsys) -> None:
    album = make_album(2)
    home = tmp_path / "h"
    common = ["--home", str(home)]
    code = main(["enhance", str(album), "--model", str(tiny_model), "--device", "cpu", "--embedder", "fallback",
                 "--top-k", "2", "--json", *common])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    outputs = [o["output_path"] for o in summary["outcomes"]]
    assert len(outputs) == 2 and all(Path(p).is_file() for p in outputs)

    assert main(["which-ref", outputs[0], "--json", *common]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["kind"] == "output" and answer["enhancements"][0]["current"]
    # One name for the model: the file's, as the enhance summary gave it, with the same checksum.
    assert answer["enhancements"][0]["model_name"] == Path(summary["model_path"]).name == tiny_model.name
    assert answer["enhancements"][0]["model_sha256"] == summary["model_sha256"]
    ref = answer["enhancements"][0]["references"][0]
    assert Path(ref["path"]).is_file() and -1 <= ref["relevance"] <= 1.0001 and -1 <= ref["cosine"] <= 1.0001

    assert main(["which-ref", str(album / summary["outcomes"][0]["rel_path"]), *common]) == 0
    text = capsys.readouterr().out
    assert "(target)" in text and "reference #1" in text and "reference #0" not in text and "relevance" in text

    assert main(["history", "--json", *common]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert runs[0]["kind"] == "enhance" and runs[0]["status"] == "completed" and runs[0]["enhanced"] == 2

    assert main(["index", str(album), "--embedder", "fallback", *common]) == 0
    assert "nothing changed since the last scan" in capsys.readouterr().out

    assert main(["enhance", str(album), "--model", str(tiny_model), "--device", "cpu", "--embedder", "fallback",
                 "--top-k", "2", "--no-report", *common]) == 0
    assert "nothing to do" in capsys.readouterr().out

    assert main(["which-ref", str(tmp_path / "nowhere.jpg"), *common]) == 2
    assert capsys.readouterr().err.strip() == f"refsr which-ref: not found: {tmp_path / 'nowhere.jpg'}"
    stray = tmp_path / "stray.jpg"  # a photo that exists but no indexed album holds: answered, not a mistake
    stray.write_bytes((album / summary["outcomes"][0]["rel_path"]).read_bytes())
    assert main(["which-ref", str(stray), *common]) == 1
    assert "neither a recorded output nor a photo of an indexed album" in capsys.readouterr().err


# -- the real console script -------------------------------------------------------------------


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFSR_")}
    env.update({"PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_LOGGING_LEVEL": "WARNING", **extra})
    return env


def _command() -> list[str]:
    return [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "flows.cli"]


def _start(args: list[str], env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """Start `refsr` in its own process group, output to files (a killed run's orphaned Prefect server
    would otherwise hold our pipes open)."""
    out = log.with_suffix(".out")
    with open(out, "wb") as stdout, open(log.with_suffix(".err"), "wb") as stderr:
        proc = subprocess.Popen(_command() + args, env=env, stdout=stdout, stderr=stderr, start_new_session=True)
    return proc, out


def _finish(proc: subprocess.Popen[bytes], out: Path) -> subprocess.CompletedProcess[str]:
    try:
        proc.wait(timeout=300)
    finally:
        try:  # only the group we started: refsr and the Prefect server it spawned
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(proc.args, proc.returncode, out.read_text(),
                                       out.with_suffix(".err").read_text())


def _refsr(args: list[str], env: dict[str, str], log: Path) -> subprocess.CompletedProcess[str]:
    return _finish(*_start(args, env, log))


def _enhance_args(album: Path, home: Path, model: Path) -> list[str]:
    return ["enhance", str(album), "--home", str(home), "--model", str(model), "--device", "cpu",
            "--embedder", "fallback", "--top-k", "2", "--no-progress", "--no-report"]


@pytest.mark.slow
def test_killed_run_leaves_nothing_half_done_and_the_next_run_resumes(make_album, tiny_model: Path,
                                                                       tmp_path: Path) -> None:
    album = make_album(3)
    home = tmp_path / "h"
    # The 2nd enhancement dies inside its database transaction, after its output file was written.
    killed = _refsr(_enhance_args(album, home, tiny_model), _env(tmp_path, REFSR_FAULT_INJECT="record:2"),
                    tmp_path / "killed")
    assert killed.returncode == 137, killed.stderr[-2000:]
    assert len(_succeeded(home)) == 1  # the half-written record was never committed
    with _sessions(home)() as session:
        (run,) = session.scalars(select(Run).where(Run.kind == "enhance")).all()
        assert run.status is RunStatus.running  # nobody could close it
    out_dir = album / "enhanced"
    assert not [p for p in out_dir.rglob("*") if p.name.endswith(".tmp")]  # no partial output

    resumed = _refsr(_enhance_args(album, home, tiny_model), _env(tmp_path), tmp_path / "resumed")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "marked crashed" in resumed.stdout
    done = _succeeded(home)
    assert len(done) == 3 and len({t for t, _ in done}) == 3  # each target once, none twice
    with _sessions(home)() as session:
        runs = session.scalars(select(Run).order_by(Run.id)).all()
        assert [r.status for r in runs] == [RunStatus.crashed, RunStatus.completed]
        assert runs[1].counts["cached"] == 1 and runs[1].counts["enhanced"] == 2
        # The crashed run keeps what it recorded, and ends at its last record, not when the next run found it.
        assert runs[0].counts == {"enhanced": 1, "failed": 0}
        assert runs[0].ended_at < runs[1].started_at
    history = _refsr(["history", "--home", str(home)], _env(tmp_path), tmp_path / "history")
    crashed_row = next(line for line in history.stdout.splitlines() if "crashed" in line)
    assert "enhanced 1" in crashed_row and ">=" in crashed_row, history.stdout

    # which-ref through the console script, on a real output.
    output = next(out_dir.rglob("*.jpg"))
    answer = _refsr(["which-ref", str(output), "--json", "--home", str(home)], _env(tmp_path), tmp_path / "which")
    assert answer.returncode == 0, answer.stderr[-2000:]
    data = json.loads(answer.stdout)
    assert data["kind"] == "output" and data["enhancements"][0]["references"][0]["path"].endswith("ref.png")


@pytest.mark.slow
def test_sigterm_records_a_crashed_run_and_leaves_no_process_behind(make_album, tiny_model: Path,
                                                                   tmp_path: Path) -> None:
    album = make_album(2)
    home = tmp_path / "h"
    # The first target's task pauses (a long enhancement); the test signals while it does.
    proc, out = _start(_enhance_args(album, home, tiny_model), _env(tmp_path, REFSR_FAULT_INJECT="target:1:pause"),
                       tmp_path / "termed")
    err = out.with_suffix(".err")
    try:
        for _ in range(1200):
            if "fault injection: pausing" in err.read_text() or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert proc.poll() is None, err.read_text()[-2000:]
        os.kill(proc.pid, signal.SIGTERM)  # refsr alone, as a service manager or `kill` would
        proc.wait(timeout=120)
        # Everything refsr started (the local Prefect server included) is gone with it.
        with pytest.raises(ProcessLookupError):
            for _ in range(100):
                os.killpg(proc.pid, 0)
                time.sleep(0.1)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == 143 and "terminated" in err.read_text()
    with _sessions(home)() as session:
        (run,) = session.scalars(select(Run).where(Run.kind == "enhance")).all()
        assert run.status is RunStatus.crashed


@pytest.mark.slow
def test_two_enhance_runs_at_once_do_not_corrupt_anything(make_album, tiny_model: Path, tmp_path: Path) -> None:
    album = make_album(3)
    home = tmp_path / "h"
    started = [_start(_enhance_args(album, home, tiny_model), _env(tmp_path), tmp_path / f"run{i}") for i in range(2)]
    for result in [_finish(*s) for s in started]:
        assert result.returncode == 0, result.stderr[-2000:]
    done = _succeeded(home)
    # Per-job file locks: each job ran once; the later process found it done.
    assert len(done) == 3 and len({t for t, _ in done}) == 3
    with sqlite3.connect(home / "refsr.db") as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    settings = Settings.from_env({}, home=home, model_path=tiny_model)
    index_files = list(settings.index_dir.rglob("*.faiss"))
    assert len(index_files) == 1
    from pipeline.embedding.vector_index import VectorIndex

    assert len(VectorIndex.load(index_files[0])) == 3
    with _sessions(home)() as session:
        assert {r.status for r in session.scalars(select(Run))} == {RunStatus.completed}


def test_serve_without_a_prefect_server_explains_what_to_start(make_album, tiny_model: Path, tmp_path: Path,
                                                               capsys, monkeypatch) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    # Also when the session's test harness (which sets an API URL) is already running.
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        code = main(["serve", str(make_album(1)), "--interval", "60", "--model", str(tiny_model),
                     "--home", str(tmp_path / "h")])
    assert code == 2
    assert "prefect server start" in capsys.readouterr().err


def test_lookups_start_without_torch(tmp_path: Path) -> None:
    """which-ref and history only read the database: importing torch would add seconds to each."""
    probe = (
        "import sys\n"
        "from flows.cli import main\n"
        f"assert main(['history', '--home', {str(tmp_path / 'h')!r}]) == 0\n"
        f"main(['which-ref', {str(tmp_path)!r}, '--home', {str(tmp_path / 'h')!r}])\n"
        "heavy = sorted(m for m in ('torch', 'faiss', 'open_clip', 'prefect') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], env=_env(tmp_path), capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[3])
    assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stdout, done.stdout
