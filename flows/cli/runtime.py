"""The command line's runtime: workspace environment, logging, Prefect's home, a run's end recorded at exit."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from pathlib import Path

from flows.preflight import shown


def workspace_environment(home: Path, *, verbose: bool) -> None:
    """Prefect's home, telemetry and start-up timeout, unless the user set them: before Prefect is imported."""
    env = os.environ
    env.setdefault("PREFECT_HOME", str(home / "prefect"))  # one workspace: Prefect's database too
    env.setdefault("DO_NOT_TRACK", "1")
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Prefect's default (20 s on 3.x) is too short for a first start on a busy 2-core machine.
    env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "300")
    if not verbose:
        # A failed flow's traceback and the temporary server's shutdown noise ("Error flushing 1
        # events ... CancelledError") would bury the one line the command prints itself.
        env.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "CRITICAL")


def configure_logging(verbose: bool, quiet: bool) -> None:
    # Must run before prefect is imported: Prefect reads its logging level at import time.
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO" if verbose else "CRITICAL")
    level = logging.INFO if verbose else logging.ERROR if quiet else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(escape_names)
    if not verbose:
        # Each unreadable or unembeddable photo is listed in the summary; a warning per file would say it twice.
        for name in ("pipeline.scan", "flows.indexing"):
            logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger("flows").setLevel(level)
    logging.getLogger("pipeline").setLevel(level)
    if not verbose:
        logging.captureWarnings(True)
        logging.getLogger("py.warnings").setLevel(logging.ERROR)


def escape_names(record: logging.LogRecord) -> bool:
    """Log lines carry album file names: control characters in them are escaped, never sent raw."""
    message = record.getMessage()
    if not message.isprintable():
        record.msg, record.args = shown(message), ()
    return True


def prefect_home() -> None:
    # Prefect makes only the last folder; without the rest its server fails to open its database
    # and Prefect then waits out the whole start-up timeout before saying so. Made only when
    # Prefect is about to run, so that a mistaken command leaves nothing behind.
    Path(os.environ["PREFECT_HOME"]).expanduser().mkdir(parents=True, exist_ok=True)


def end_at_exit(sessions, run: dict[str, int]) -> None:  # type: ignore[no-untyped-def]
    """Once Prefect's own exit handlers (registered later, so run earlier) have stopped its server,
    the run's end moves to then: `history` shows the whole command, shutdown included."""
    import atexit

    def close() -> None:
        if "id" not in run:
            return
        from db import queries

        try:
            with sessions.begin() as session:
                queries.annotate_run(session, run["id"], ended_at=datetime.now(UTC))
        except Exception:  # noqa: BLE001 - the run is recorded already; this only refines its end
            logging.getLogger(__name__).info("could not record the end of run %s", run["id"], exc_info=True)

    atexit.register(close)
