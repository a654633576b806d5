"""Small builders shared by the db tests."""

from __future__ import annotations

import hashlib
import os
import select
import subprocess
import sys
from pathlib import Path

from sqlalchemy.orm import Session

from db import queries
from db.models import Enhancement, EnhancementStatus, Photo, PhotoRole


REPO = Path(__file__).resolve().parents[2]


def spawn(script: Path, *args: str) -> subprocess.Popen[str]:
    """Run ``script ARGS`` in a fresh interpreter that imports this checkout, pipes captured."""
    return subprocess.Popen(
        [sys.executable, str(script), *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def expect_line(process: subprocess.Popen[str], prefix: str, timeout_s: float = 60.0) -> str:
    """The process's next stdout line, which must start with ``prefix``; kills it otherwise."""
    assert process.stdout is not None and process.stderr is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout_s)
    line = process.stdout.readline().strip() if ready else ""
    if not line.startswith(prefix):
        process.kill()
        raise AssertionError(f"expected {prefix!r}, got {line!r}; stderr: {process.stderr.read()}")
    return line


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
