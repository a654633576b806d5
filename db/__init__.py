"""Database room: SQLAlchemy models, engine/session factory, migrations and query functions."""

from db.engine import init_db, make_engine, make_session_factory
from db.models import (
    Album,
    Base,
    Embedding,
    Enhancement,
    EnhancementReference,
    EnhancementStatus,
    Photo,
    PhotoRole,
    PhotoStatus,
    Run,
    RunKind,
    RunStatus,
)

__all__ = [
    "Album",
    "Base",
    "Embedding",
    "Enhancement",
    "EnhancementReference",
    "EnhancementStatus",
    "Photo",
    "PhotoRole",
    "PhotoStatus",
    "Run",
    "RunKind",
    "RunStatus",
    "init_db",
    "make_engine",
    "make_session_factory",
]
