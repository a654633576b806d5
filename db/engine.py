"""Engine and session factory for any SQLAlchemy URL, and schema migration to Alembic head."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from db.locks import file_lock, sqlite_file
from db.models import Base

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# Long enough to ride out another process's short write transaction or a whole init_db.
SQLITE_BUSY_TIMEOUT_S = 30.0

# Arbitrary constant shared by every process that migrates the same PostgreSQL database; it must
# never change, or an old and a new release could migrate one database at the same time.
_PG_MIGRATION_LOCK_KEY = 0x7265_6673_7231  # "refsr1"

# Backends whose migrations migration_transaction serialises.
_LOCKING_BACKENDS = ("sqlite", "postgresql")


def make_engine(url: str | URL, *, echo: bool = False, **kwargs: Any) -> Engine:
    """Create an engine for ``url``; SQLite connections get WAL, foreign keys and a busy timeout.

    Extra keyword arguments go to ``sqlalchemy.create_engine``.
    """
    sa_url = make_url(url)
    if sa_url.get_backend_name() == "sqlite":
        connect_args = dict(kwargs.pop("connect_args", {}))
        # pysqlite's own lock wait, in seconds; the PRAGMA below covers the same for raw SQL.
        connect_args.setdefault("timeout", SQLITE_BUSY_TIMEOUT_S)
        engine = create_engine(sa_url, echo=echo, connect_args=connect_args, **kwargs)
        event.listen(engine, "connect", _configure_sqlite_connection)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(sa_url, echo=echo, **kwargs)


def _configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # busy_timeout first, so the journal-mode switch below waits instead of failing when
        # another process holds the file.
        cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        mode = cursor.execute("PRAGMA journal_mode").fetchone()[0]
        # WAL is persistent in the file; switching only when needed avoids taking the write
        # lock on every new connection. In-memory databases report "memory" and cannot use WAL.
        if mode.lower() not in ("wal", "memory"):
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        # NORMAL is durable across application crashes in WAL mode and much faster than FULL.
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Session factory; objects stay readable after commit so flows can pass them on.

    Use ``with factory.begin() as session:`` for one short transaction that commits on success.
    """
    return sessionmaker(bind=engine, expire_on_commit=False)


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic config pointing at the packaged migrations; no alembic.ini needed."""
    cfg = Config()
    # ConfigParser interpolation would read a "%" in the install path as a placeholder.
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    """The newest migration revision shipped with this package."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no Alembic revisions found in {MIGRATIONS_DIR}")
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None for a database never migrated."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def init_db(target: str | URL | Engine, **engine_kwargs: Any) -> Engine:
    """Bring the database at ``target`` to the newest schema and return an engine for it.

    Safe to call from several processes at once on a fresh database: the whole upgrade runs in
    one ``migration_transaction``, so the others wait and then find head. Calling it on an
    up-to-date database is a cheap no-op.
    """
    engine = target if isinstance(target, Engine) else make_engine(target, **engine_kwargs)
    try:
        with migration_transaction(engine) as connection:
            _clear_half_made_schema(connection)
            command.upgrade(alembic_config(connection), "head")
    except DBAPIError as exc:
        # Other backends get no lock: two processes racing on a fresh database, one wins the
        # CREATE TABLEs and the other fails with "already exists"; fine once the winner is at head.
        locked = engine.url.get_backend_name() in _LOCKING_BACKENDS
        if locked or current_revision(engine) != head_revision():
            raise
        logger.info("another process migrated %s first (%s)", engine.url, type(exc).__name__)
    logger.debug("database %s at revision %s", engine.url.render_as_string(), head_revision())
    return engine


class HalfMadeDatabaseError(ValueError):
    """Tables of ours with rows in them, but no schema version: not safe to repair by ourselves."""


def _clear_half_made_schema(connection: Connection) -> None:
    """Drop the empty tables an interrupted first creation left without a schema version.

    Releases before migrations ran in one transaction could be killed between two CREATE TABLEs,
    leaving tables but no ``alembic_version`` row; every later upgrade then failed with "table
    albums already exists". Such tables are empty (rows come only after creation finished), so
    they are dropped here, inside the migration's own transaction, and the upgrade recreates them.
    Tables that hold rows are never dropped: the database is named with what to do instead.
    """
    if MigrationContext.configure(connection).get_current_revision() is not None:
        return
    ours = [t.name for t in reversed(Base.metadata.sorted_tables)]
    present = set(inspect(connection).get_table_names())
    leftovers = [name for name in ours if name in present]
    if not leftovers:
        return
    quote = connection.dialect.identifier_preparer.quote
    filled = [name for name in leftovers
              if connection.exec_driver_sql(f"SELECT 1 FROM {quote(name)} LIMIT 1").first() is not None]
    where = connection.engine.url.render_as_string()
    if filled:
        raise HalfMadeDatabaseError(
            f"the database {where} holds refsr tables with rows ({', '.join(sorted(filled))}) but no schema "
            "version; refsr will not guess what it is: move it aside (for SQLite, rename the file) and run again"
        )
    logger.warning("database %s was left half-created by an interrupted run; recreating its tables (%s)",
                   where, ", ".join(leftovers))
    for name in leftovers:
        connection.exec_driver_sql(f"DROP TABLE {quote(name)}")


@contextlib.contextmanager
def migration_transaction(engine: Engine) -> Iterator[Connection]:
    """One transaction for a whole schema change, with every other migrating process kept out.

    All-or-nothing: a failure (or a killed process) at any step leaves the schema as it was.
    PostgreSQL has transactional DDL; the advisory lock is transaction-scoped, so it is released
    by the same commit that publishes the schema and a waiting process then sees head. SQLite
    gets an explicit ``BEGIN IMMEDIATE`` because pysqlite opens transactions only before DML and
    would otherwise autocommit each CREATE TABLE; a lock file beside the database serialises
    the first connections too, which may switch the file to WAL. Used by ``init_db`` and by the
    Alembic command line (db/migrations/env.py), so the two exclude each other.
    """
    backend = engine.url.get_backend_name()
    with contextlib.ExitStack() as stack:
        db_file = sqlite_file(engine.url) if backend == "sqlite" else None
        if db_file is not None:
            db_file.parent.mkdir(parents=True, exist_ok=True)
            stack.enter_context(file_lock(db_file.with_name(db_file.name + ".init.lock")))
        connection = stack.enter_context(engine.begin())
        if backend == "sqlite":
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        elif backend == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK_KEY}
            )
        yield connection


__all__ = [
    "MIGRATIONS_DIR",
    "alembic_config",
    "current_revision",
    "head_revision",
    "init_db",
    "migration_transaction",
    "make_engine",
    "make_session_factory",
    "sqlite_file",
]
