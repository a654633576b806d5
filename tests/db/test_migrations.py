"""Migrations build the schema the models describe, and init_db is idempotent and race-safe."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect

from db.engine import alembic_config, current_revision, head_revision, init_db, make_engine
from db.models import Base

TABLES = {"albums", "photos", "embeddings", "runs", "enhancements", "enhancement_references"}
REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("worker.py")


def _diff(engine: Engine) -> list[object]:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)


def test_upgrade_creates_every_table(engine: Engine) -> None:
    names = set(inspect(engine).get_table_names())
    assert TABLES <= names
    assert "alembic_version" in names
    assert current_revision(engine) == head_revision()


def test_migrations_match_models(engine: Engine) -> None:
    assert _diff(engine) == []
    # The same check the `alembic check` command runs, through the packaged env.py.
    with engine.connect() as connection:
        command.check(alembic_config(connection))


def test_named_indexes_and_constraints(engine: Engine) -> None:
    inspector = inspect(engine)
    photo_indexes = {ix["name"]: ix for ix in inspector.get_indexes("photos")}
    assert photo_indexes["ix_photos_sha256"]["column_names"] == ["sha256"]
    job_key = {ix["name"]: ix for ix in inspector.get_indexes("enhancements")}["ix_enhancements_job_key"]
    assert not job_key["unique"]  # a forced re-run adds a second row with the same key
    uniques = {uq["name"] for uq in inspector.get_unique_constraints("photos")}
    assert "uq_photos_album_id_rel_path" in uniques


def test_downgrade_to_base_and_back(engine: Engine) -> None:
    with engine.begin() as connection:
        command.downgrade(alembic_config(connection), "base")
    assert not TABLES & set(inspect(engine).get_table_names())
    init_db(engine)
    assert _diff(engine) == []


def test_init_db_twice_is_a_no_op(db_url: str) -> None:
    first = init_db(db_url)
    second = init_db(db_url)
    try:
        assert current_revision(second) == head_revision()
    finally:
        first.dispose()
        second.dispose()


def test_init_db_creates_missing_sqlite_folder(tmp_path: Path) -> None:
    engine = init_db(f"sqlite:///{tmp_path / 'deeper' / 'still' / 'refsr.db'}")
    try:
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_in_memory_sqlite_migrates() -> None:
    engine = init_db("sqlite://")
    try:
        assert TABLES <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _spawn(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, str(WORKER), *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_concurrent_init_on_fresh_database(db_url: str) -> None:
    # Workers import first and then start together, so the migrations really overlap.
    start_at = str(time.time() + 2.0)
    workers = [_spawn("init", db_url, start_at) for _ in range(3)]
    for worker in workers:
        out, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err
        assert out.strip() == "ok"
    engine = make_engine(db_url)
    try:
        assert current_revision(engine) == head_revision()
        assert _diff(engine) == []
    finally:
        engine.dispose()


def test_packaged_migrations_are_python_files_only() -> None:
    # pyproject ships db/migrations/*.py and versions/*.py; nothing else is needed to upgrade.
    cfg = alembic_config()
    location = Path(cfg.get_main_option("script_location") or "")
    assert (location / "env.py").is_file()
    assert "0001_initial.py" in {p.name for p in (location / "versions").glob("*.py")}


@pytest.mark.parametrize("name", sorted(TABLES))
def test_models_cover_table(name: str) -> None:
    assert name in Base.metadata.tables
