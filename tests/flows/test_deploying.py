"""`refsr serve --pool`: a deployment on a work pool that a `prefect worker` started by hand runs, as the README says."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from db.engine import init_db, make_session_factory
from db.models import Enhancement, EnhancementStatus
from flows.cli import main
from tests.flows.cli.test_cli import _env

PREFECT = Path(sys.executable).with_name("prefect")

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def _prefect(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(PREFECT), *args], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return done


def test_serve_pool_deploys_what_a_worker_started_by_hand_runs(make_album, tiny_model: Path, tmp_path: Path,
                                                               capsys) -> None:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    env = _env(tmp_path, PREFECT_API_URL=str(PREFECT_API_URL.value()))
    pool = f"refsr-{uuid.uuid4().hex[:8]}"
    album, home = make_album(2), tmp_path / "h"
    assert main(["serve", str(album), "--pool", pool, "--interval", "86400", "--model", str(tiny_model),
                 "--home", str(home)]) == 2
    assert f"prefect work-pool create {pool} --type process" in capsys.readouterr().err

    _prefect(["work-pool", "create", pool, "--type", "process"], env)
    assert main(["serve", str(album), "--pool", pool, "--interval", "86400", "--model", str(tiny_model),
                 "--device", "cpu", "--embedder", "fallback", "--top-k", "2", "--home", str(home)]) == 0
    assert f"prefect worker start --pool {pool}" in capsys.readouterr().out
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(f"enhance-album/refsr-{album.name}")
        assert deployment.work_pool_name == pool and deployment.entrypoint == "flows.enhancing.enhance_album"
        run = client.create_flow_run_from_deployment(deployment.id)

    _prefect(["worker", "start", "--pool", pool, "--run-once"], env)
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run.id).state
    assert state is not None and state.is_completed(), state
    with make_session_factory(init_db(f"sqlite:///{home.resolve() / 'refsr.db'}"))() as session:
        rows = list(session.scalars(select(Enhancement)))
    assert len(rows) == 2 and {r.status for r in rows} == {EnhancementStatus.succeeded}
    assert all(Path(r.output_path).is_file() and Path(r.output_path).is_relative_to(album) for r in rows)
