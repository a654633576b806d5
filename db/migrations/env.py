"""Alembic environment: migrates a connection handed over by db.engine, or a URL from the CLI."""

from __future__ import annotations

import logging
from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, pool

from db.models import Base

config = context.config
target_metadata = Base.metadata

# Only the command line brings an ini file; programmatic callers keep their own logging setup.
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

logger = logging.getLogger("db.migrations")


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise ValueError(
            "no database URL: pass `-x url=sqlite:///path.db` or set sqlalchemy.url "
            f"in {config.config_file_name!r}"
        )
    return url


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=True,
        **kwargs,
    )


def run_migrations_offline() -> None:
    _configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def _run_on(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    # Imported here so the CLI path gets WAL/foreign keys exactly like the application, and the
    # same lock and single transaction as init_db.
    from db.engine import make_engine, migration_transaction

    engine = make_engine(_url(), poolclass=pool.NullPool)
    try:
        with migration_transaction(engine) as connection:
            _run_on(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
