"""Database room: models, engine and sessions, migrations, queries, job claims and named locks."""

from db import claims
from db.claims import ClaimLost
from db.engine import init_db, make_engine, make_session_factory
from db.locks import LockTimeout, advisory_lock
from db.models import (
    Album,
    Base,
    ClaimStatus,
    Embedding,
    Enhancement,
    EnhancementReference,
    EnhancementStatus,
    JobClaim,
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
    "ClaimLost",
    "ClaimStatus",
    "Embedding",
    "Enhancement",
    "EnhancementReference",
    "EnhancementStatus",
    "JobClaim",
    "LockTimeout",
    "Photo",
    "PhotoRole",
    "PhotoStatus",
    "Run",
    "RunKind",
    "RunStatus",
    "advisory_lock",
    "claims",
    "init_db",
    "make_engine",
    "make_session_factory",
]
