"""Checks and an insert shared by the query modules: hashes, paths, and racing inserts."""

from __future__ import annotations

import os
import re
from pathlib import PurePosixPath
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

_SHA256_RE = re.compile(r"[0-9a-f]{64}")


def check_sha256(value: str, what: str = "sha256") -> str:
    if not isinstance(value, str) or not _SHA256_RE.fullmatch(value):
        raise ValueError(f"{what} must be 64 lowercase hex characters, got {value!r}")
    return value


def absolute_path(path: str | os.PathLike[str], what: str) -> str:
    text = os.fspath(path)
    if not os.path.isabs(text):
        raise ValueError(f"{what} must be an absolute path, got {text!r}")
    return os.path.normpath(text)


def check_rel_path(rel_path: str) -> str:
    pure = PurePosixPath(rel_path)
    if (
        not rel_path
        or pure.is_absolute()
        or pure.as_posix() != rel_path
        or ".." in pure.parts
        or rel_path == "."
    ):
        raise ValueError(f"rel_path must be a normalised relative posix path, got {rel_path!r}")
    return rel_path


def insert_ignoring_conflict(session: Session, model: type, values: dict[str, Any]) -> None:
    """INSERT that silently loses a race with another process inserting the same unique key.

    Callers re-select afterwards; on a backend without ON CONFLICT the plain insert raises.
    """
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        session.execute(sqlite.insert(model).values(**values).on_conflict_do_nothing())
    elif dialect == "postgresql":
        session.execute(postgresql.insert(model).values(**values).on_conflict_do_nothing())
    else:
        session.add(model(**values))
        session.flush()
