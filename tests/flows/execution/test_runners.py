"""The task engine a run asks for (threads, a local Dask cluster, a scheduler's address) and the per-GPU slot."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

from flows import resources as resources_module
from flows.cli import main
from flows.cli.parser import build_parser
from flows.execution.runners import check_engine, dask_runner, uses_dask
from flows.resources import DeviceSpec, Resources, ResourceSpec
from flows.settings import Settings


def _settings(**overrides: object) -> Settings:
    return Settings.from_env(env={}, home=Path("/nonexistent/home"), **overrides)


def test_the_flags_and_the_environment_choose_the_engine() -> None:
    assert not uses_dask(_settings())
    local = _settings(processes=True, workers=3)
    assert uses_dask(local)
    from_env = Settings.from_env(env={"REFSR_DASK": "tcp://scheduler:8786"}, home=Path("/h"))
    assert from_env.dask == "tcp://scheduler:8786"
    # A flag wins over the environment: --processes drops the environment's scheduler.
    assert Settings.from_env(env={"REFSR_DASK": "tcp://s:8786"}, home=Path("/h"), processes=True).dask is None
    with pytest.raises(ValueError, match="not both"):
        _settings(dask="tcp://s:8786", processes=True)
    with pytest.raises(ValueError, match="REFSR_CLAIM_LEASE_S"):
        Settings.from_env(env={"REFSR_CLAIM_LEASE_S": "soon"}, home=Path("/h"))
    assert Settings.from_env(env={"REFSR_CLAIM_LEASE_S": "7.5"}, home=Path("/h")).claim_lease_s == 7.5
    with pytest.raises(ValueError, match="REFSR_REFERENCE_CACHE_MB"):
        Settings.from_env(env={"REFSR_REFERENCE_CACHE_MB": "1GB"}, home=Path("/h"))
    with pytest.raises(ValueError, match="reference_cache_mb"):
        Settings.from_env(env={"REFSR_REFERENCE_CACHE_MB": "-1"}, home=Path("/h"))
    assert Settings.from_env(env={"REFSR_REFERENCE_CACHE_MB": "0"}, home=Path("/h")).reference_cache_mb == 0
    assert Settings.from_env(env={}, home=Path("/h")).reference_cache_mb == 1024
    args = build_parser().parse_args(["enhance", "album", "--processes", "--workers", "2"])
    assert args.processes and args.workers == 2 and args.dask is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["enhance", "album", "--processes", "--dask", "tcp://s:8786"])


def test_a_dask_runner_is_a_local_cluster_of_processes_or_the_given_scheduler() -> None:
    pytest.importorskip("prefect_dask", reason="the [dask] extra (prefect-dask) is not installed")
    local = dask_runner(_settings(processes=True, workers=3))
    assert local.address is None
    assert local.cluster_kwargs["n_workers"] == 3 and local.cluster_kwargs["processes"] is True
    assert local.cluster_kwargs["threads_per_worker"] == 1
    assert dask_runner(_settings(dask="tcp://scheduler:8786")).address == "tcp://scheduler:8786"


def test_without_the_extra_dask_is_refused_with_the_fix(monkeypatch, make_album, tmp_path: Path, capsys) -> None:
    monkeypatch.setitem(sys.modules, "prefect_dask", None)  # import prefect_dask now raises ImportError
    with pytest.raises(ValueError, match=r"refsr-album\[dask\]"):
        check_engine(_settings(processes=True))
    check_engine(_settings())  # threads need nothing
    code = main(["enhance", str(make_album(1)), "--processes", "--home", str(tmp_path / "h")])
    err = capsys.readouterr().err
    # refsr's own words are one line. After another in-process main() in this pytest process, Prefect's
    # rich handler still holds that test's captured (closed) stream and logging reports it here as a
    # "--- Logging error ---" block: a harness artefact that a real terminal never sees.
    own = [line for line in err.splitlines() if line.startswith("refsr")]
    assert code == 2 and len(own) == 1 and "--processes needs Prefect's Dask integration" in own[0], err


def test_processes_sharing_a_gpu_take_it_one_at_a_time(monkeypatch, tmp_path: Path, tiny_model: Path) -> None:
    """Two Resources (as in two worker processes) on one CUDA device: their model calls never overlap."""
    monkeypatch.setattr(resources_module, "_gpu_lock_path", lambda: tmp_path / "gpu-0.lock")
    spec = ResourceSpec.of(_settings(model_path=tiny_model, device="cuda"))
    holders = [Resources(spec), Resources(spec)]
    for res in holders:
        res._device = DeviceSpec("cuda", None)
    inside, overlaps = [0], []
    guard = threading.Lock()

    def call(res: Resources) -> None:
        with res.device_slot():
            with guard:
                inside[0] += 1
                overlaps.append(inside[0])
            time.sleep(0.2)
            with guard:
                inside[0] -= 1

    threads = [threading.Thread(target=call, args=(res,)) for res in holders * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps and max(overlaps) == 1


@pytest.mark.usefixtures("prefect_harness")
def test_the_photo_tasks_get_as_many_threads_as_the_settings_say() -> None:
    """Whatever runner the flow was given (a served deployment's default), photo tasks run `workers` at a time."""
    from prefect import flow, task

    from flows.execution.runners import StoppableThreadRunner, photo_tasks

    meet = threading.Barrier(3, timeout=20)  # only three tasks running at once get past it

    @task
    def wait_for_the_others(i: int) -> int:
        meet.wait()
        return i

    @flow(task_runner=StoppableThreadRunner(max_workers=1))
    def photos() -> list[int]:
        with photo_tasks(_settings(workers=3)) as submit:
            futures = [submit(wait_for_the_others, {"i": i}) for i in range(3)]
            return [future.result() for future in futures]

    assert sorted(photos()) == [0, 1, 2]
