"""Migrations build the schema the models describe, and init_db is idempotent and race-safe."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, event, inspect, select

from db.engine import (
    alembic_config,
    current_revision,
    head_revision,
    init_db,
    make_engine,
    make_session_factory,
    migration_transaction,
)
from db.models import Album, Base
from tests.db.helpers import spawn

TABLES = {
    "albums",
    "photos",
    "embeddings",
    "runs",
    "enhancements",
    "enhancement_references",
    "job_claims",
}
WORKER = Path(__file__).with_name("worker.py")


def _assert_at_head(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        assert current_revision(engine) == head_revision()
        assert _diff(engine) == []
    finally:
        engine.dispose()


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


def test_concurrent_init_on_fresh_database(db_url: str) -> None:
    # Workers import first and then start together, so the migrations really overlap.
    start_at = str(time.time() + 2.0)
    workers = [spawn(WORKER, "init", db_url, start_at) for _ in range(3)]
    for worker in workers:
        out, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err
        assert out.strip() == "ok"
    _assert_at_head(db_url)


def test_packaged_migrations_are_python_files_only() -> None:
    # pyproject ships db/migrations/*.py and versions/*.py; nothing else is needed to upgrade.
    cfg = alembic_config()
    location = Path(cfg.get_main_option("script_location") or "")
    assert (location / "env.py").is_file()
    assert {"0001_initial.py", "0002_job_claims.py"} <= {p.name for p in (location / "versions").glob("*.py")}


def test_failed_upgrade_leaves_the_database_untouched(db_url: str) -> None:
    # Dies just before the last version stamp, after every CREATE TABLE of 0001 and 0002 ran.
    # Fails on SQLite without migration_transaction's BEGIN IMMEDIATE: pysqlite would have
    # autocommitted 0001's tables, and the next init_db would stop at "table already exists".
    engine = make_engine(db_url)

    def crash(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE ALEMBIC_VERSION"):
            raise KeyboardInterrupt("killed mid-migration")

    event.listen(engine, "before_cursor_execute", crash)
    try:
        with pytest.raises(KeyboardInterrupt):
            init_db(engine)
    finally:
        event.remove(engine, "before_cursor_execute", crash)
    try:
        assert set(inspect(engine).get_table_names()) == set()
        assert current_revision(engine) is None
        init_db(engine)
        assert current_revision(engine) == head_revision()
        assert _diff(engine) == []
    finally:
        engine.dispose()


def test_upgrade_from_0001_adds_claims_and_keeps_rows(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        with migration_transaction(engine) as connection:
            command.upgrade(alembic_config(connection), "0001")
        assert "job_claims" not in inspect(engine).get_table_names()
        with make_session_factory(engine).begin() as session:
            session.add(Album(root="/albums/before"))
        init_db(engine)
        assert "job_claims" in inspect(engine).get_table_names()
        with make_session_factory(engine)() as session:
            assert session.scalars(select(Album.root)).all() == ["/albums/before"]
        with migration_transaction(engine) as connection:
            command.downgrade(alembic_config(connection), "0001")
        assert set(inspect(engine).get_table_names()) == (TABLES - {"job_claims"}) | {"alembic_version"}
    finally:
        engine.dispose()


def test_alembic_command_line_path_migrates(db_url: str) -> None:
    # No connection handed over: env.py opens its own, under migration_transaction.
    cfg = alembic_config()
    cfg.set_main_option("sqlalchemy.url", db_url.replace("%", "%%"))
    command.upgrade(cfg, "head")
    _assert_at_head(db_url)


@pytest.mark.parametrize("name", sorted(TABLES))
def test_models_cover_table(name: str) -> None:
    assert name in Base.metadata.tables


def _half_made(engine: Engine, keep: set[str]) -> None:
    """What a release without one-transaction migrations left when killed between CREATE TABLEs."""
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE alembic_version")
        for table in reversed(Base.metadata.sorted_tables):
            if table.name not in keep:
                connection.exec_driver_sql(f"DROP TABLE {table.name}")


def test_a_half_made_database_from_an_older_crash_is_repaired(db_url: str) -> None:
    engine = init_db(db_url)
    try:
        _half_made(engine, keep={"albums", "photos"})
        assert current_revision(engine) is None
        init_db(engine)  # used to fail with "table albums already exists"
        assert current_revision(engine) == head_revision() and _diff(engine) == []
    finally:
        engine.dispose()


def test_a_versionless_database_with_rows_is_named_not_dropped(db_url: str) -> None:
    from db.engine import HalfMadeDatabaseError

    engine = init_db(db_url)
    try:
        with make_session_factory(engine).begin() as session:
            session.add(Album(root="/photos"))
        _half_made(engine, keep={"albums"})
        with pytest.raises(HalfMadeDatabaseError, match="albums.*move it aside"):
            init_db(engine)
        with make_session_factory(engine)() as session:
            assert session.scalars(select(Album.root)).all() == ["/photos"]
    finally:
        engine.dispose()
