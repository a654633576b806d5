"""Two processes writing one database at once: no lock errors, no lost or duplicated rows."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import func, select, text

from db.engine import init_db, make_session_factory
from db.models import Album, Embedding, Enhancement, EnhancementReference, Photo, Run, RunStatus

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("worker.py")
STEPS = 60


def test_two_processes_write_concurrently(db_url: str) -> None:
    init_db(db_url).dispose()
    start_at = str(time.time() + 2.0)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    workers = [
        subprocess.Popen(
            [sys.executable, str(WORKER), "write", db_url, start_at, name, str(STEPS)],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for name in ("w1", "w2")
    ]
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
        assert out.strip() == "ok"

    engine = init_db(db_url)
    try:
        with make_session_factory(engine)() as session:
            count = lambda model: session.scalar(select(func.count()).select_from(model))  # noqa: E731
            # Both workers raced to create the same album, shared photo and embedding.
            assert count(Album) == 1
            assert count(Embedding) == 1
            assert count(Photo) == 2 * STEPS + 1
            assert count(Enhancement) == 2 * STEPS
            assert count(EnhancementReference) == 2 * STEPS
            statuses = session.scalars(select(Run.status).distinct()).all()
            assert statuses == [RunStatus.completed]
            if engine.url.get_backend_name() == "sqlite":
                assert session.execute(text("PRAGMA integrity_check")).scalar() == "ok"
    finally:
        engine.dispose()
