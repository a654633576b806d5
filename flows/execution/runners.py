"""Which engine runs the enhance flow's photo tasks: Prefect's threads in this process, or a Dask cluster.

Dask comes from Prefect's own integration (``prefect-dask``, the optional extra ``[dask]``):
``Settings.dask`` names a running scheduler whose workers (on any machines) take the tasks, and
``Settings.processes`` starts a temporary local cluster of ``Settings.workers`` worker processes.
Tasks carry ids, paths and hashes only; each worker process builds its own
:class:`flows.resources.Resources` on its first task and keeps it, so the model is loaded once per
worker. The choice lives in Settings, so a scheduled deployment runs on the engine it was served with.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

from prefect.futures import PrefectFuture
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import Task

from db.locks import sqlite_file
from flows.execution import stopping
from flows.settings import Settings

logger = logging.getLogger(__name__)

Submit = Callable[[Task[Any, Any], dict[str, Any]], PrefectFuture[Any]]

DASK_EXTRA_HINT = "pip install 'refsr-album[dask]' (prefect-dask)"


class StoppableThreadRunner(ThreadPoolTaskRunner):  # type: ignore[type-arg]
    """Prefect's thread runner, except that after Ctrl-C it does not wait for a photo the run gave up on.

    Prefect's own exit waits for every running thread: a dropped photo (flows/execution/stopping.py) would
    hold the command until its model work ended, which is what the user stopped. Queued tasks are
    cancelled either way; the command leaves with os._exit, so nothing joins the abandoned thread.
    """

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        executor = getattr(self, "_executor", None)
        if stopping.requested() and executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        super().__exit__(exc_type, exc_value, traceback)


def uses_dask(settings: Settings) -> bool:
    return settings.dask is not None or settings.processes


def check_engine(settings: Settings) -> None:
    """ValueError naming the fix when the settings ask for Dask and it is not installed (call before a run)."""
    if not uses_dask(settings):
        return
    try:
        import prefect_dask  # noqa: F401
    except ImportError as exc:
        flag = f"--dask {settings.dask}" if settings.dask else "--processes"
        raise ValueError(f"{flag} needs Prefect's Dask integration: {DASK_EXTRA_HINT} ({exc})") from None
    if settings.dask is not None and sqlite_file(settings.database_url) is not None:
        logger.warning("--dask %s with a SQLite database: only workers on this machine can reach it; "
                       "give every machine REFSR_DATABASE_URL=postgresql+psycopg://…", settings.dask)


def dask_runner(settings: Settings) -> Any:
    """A DaskTaskRunner for `settings`: the scheduler at `settings.dask`, or a local cluster of worker processes."""
    check_engine(settings)
    from prefect_dask import DaskTaskRunner

    if settings.dask is not None:
        return DaskTaskRunner(address=settings.dask)
    # One thread per worker process: the process runs one model call at a time anyway (its device
    # slot), and Dask already pins each process's BLAS/OpenMP pool to one thread, so N processes
    # use N cores. dashboard ":0": a free port, never a clash with another run's dashboard.
    return DaskTaskRunner(cluster_kwargs={"n_workers": settings.workers, "processes": True,
                                          "threads_per_worker": 1, "dashboard_address": ":0",
                                          "silence_logs": logging.WARNING})


@contextlib.contextmanager
def photo_tasks(settings: Settings) -> Iterator[Submit]:
    """Submit(task, parameters) for the run's photo tasks, on the engine the settings choose.

    Threads: `settings.workers` of them, whatever task runner the calling flow was given (a served
    or pooled deployment runs with the flow's default). Dask: a DaskTaskRunner entered for the
    block, so a local cluster lives exactly as long as the tasks that need it.
    """
    if not uses_dask(settings):
        with StoppableThreadRunner(max_workers=settings.workers) as threads:
            yield lambda task, parameters: threads.submit(task, parameters)
        return
    runner = dask_runner(settings)
    where = settings.dask or f"a local cluster of {settings.workers} worker processes"
    logger.info("photo tasks go to Dask: %s", where)
    shared = _this_server() if settings.dask is None else contextlib.nullcontext()
    with shared, runner:
        yield lambda task, parameters: runner.submit(task, parameters)


@contextlib.contextmanager
def _this_server() -> Iterator[None]:
    """The local cluster's workers use this process's temporary Prefect server instead of starting their own.

    Tasks carry the submitting context's settings to the worker; with no API URL in them, each
    worker started a server of its own (~230 MB), a grandchild of refsr that no parent-death
    signal reached, so a killed run left one per worker behind. With the URL there is none to leave.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value():
        yield
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the process's one temporary server (a singleton); started by the flow
    if not server.running:
        yield
        return
    with temporary_settings({PREFECT_API_URL: server.api_url}):
        yield


__all__ = ["DASK_EXTRA_HINT", "StoppableThreadRunner", "Submit", "check_engine", "dask_runner", "photo_tasks", "uses_dask"]
