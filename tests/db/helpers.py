"""Small builders shared by the db tests."""

from __future__ import annotations

import hashlib

from sqlalchemy.orm import Session

from db import queries
from db.models import Enhancement, EnhancementStatus, Photo, PhotoRole


def sha(text: str) -> str:
    """A deterministic, valid sha256 hex for test data."""
    return hashlib.sha256(text.encode()).hexdigest()


def add_photo(
    session: Session, album_id: int, rel_path: str, role: PhotoRole = PhotoRole.target
) -> Photo:
    return queries.upsert_photo(
        session,
        album_id,
        rel_path,
        sha256=sha(rel_path),
        size_bytes=1000,
        mtime_ns=1_700_000_000_123_456_789,
        width=64,
        height=48,
        format="JPEG",
        role=role,
    )


def enhance(
    session: Session,
    run_id: int | None,
    target: Photo,
    refs: list[Photo],
    *,
    output_path: str,
    status: EnhancementStatus = EnhancementStatus.succeeded,
    job: str = "job",
) -> Enhancement:
    succeeded = status is EnhancementStatus.succeeded
    return queries.record_enhancement(
        session,
        run_id,
        target,
        sha(job + target.rel_path),
        status=status,
        model_name="ttsr-compact",
        model_sha256=sha("model"),
        embedder="fallback:v1",
        device="cpu",
        params={"k": len(refs), "tile": 256},
        timings={"retrieval_s": 0.1, "model_s": 1.5, "total_s": 1.7},
        output_path=output_path if succeeded else None,
        output_sha256=sha(output_path) if succeeded else None,
        error=None if succeeded else "CUDA out of memory",
        references=[
            (rank, ref.id, ref.sha256, 0.9 - 0.1 * rank, 0.5 - 0.1 * rank)
            for rank, ref in enumerate(refs)
        ],
    )
