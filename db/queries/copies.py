"""Queries about copies: a pair of photo contents checked once per method, and the album's copies found."""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import CopyCheck, Photo, PhotoStatus, utcnow
from db.queries.checks import check_sha256, insert_ignoring_conflict


class CopyPair(NamedTuple):
    """One copy in an album: the copy's photo, its original's, and the verdict that joined them."""

    copy: Photo
    original: Photo
    check: CopyCheck


def _ordered(sha_x: str, sha_y: str) -> tuple[str, str]:
    check_sha256(sha_x, "sha256")
    check_sha256(sha_y, "sha256")
    if sha_x == sha_y:
        raise ValueError(f"a copy check needs two different contents, got {sha_x!r} twice")
    return (sha_x, sha_y) if sha_x < sha_y else (sha_y, sha_x)


def checked_pairs(session: Session, method: str, shas: set[str]) -> set[tuple[str, str]]:
    """The (sha_a, sha_b) pairs among `shas` already checked by `method` (either verdict)."""
    if not shas:
        return set()
    found: set[tuple[str, str]] = set()
    listed = sorted(shas)
    for i in range(0, len(listed), 500):
        chunk = listed[i:i + 500]
        rows = session.execute(select(CopyCheck.sha_a, CopyCheck.sha_b).where(
            CopyCheck.method == method, CopyCheck.sha_a.in_(chunk)))
        found.update((a, b) for a, b in rows if b in shas)
    return found


def record_copy_check(session: Session, sha_x: str, sha_y: str, method: str, *, is_copy: bool,
                      copy_sha256: str | None = None, scale: float | None = None, inliers: int = 0,
                      agreement_db: float | None = None, coverage: float | None = None) -> None:
    """Remember one pair's verdict; a pair already checked by `method` (a concurrent run) is left as it is."""
    sha_a, sha_b = _ordered(sha_x, sha_y)
    original = None
    if is_copy:
        if copy_sha256 not in (sha_a, sha_b):
            raise ValueError(f"copy_sha256 {copy_sha256!r} is neither of the pair")
        original = sha_b if copy_sha256 == sha_a else sha_a
    insert_ignoring_conflict(session, CopyCheck, {
        "sha_a": sha_a, "sha_b": sha_b, "method": method, "is_copy": bool(is_copy),
        "copy_sha256": copy_sha256 if is_copy else None, "original_sha256": original,
        "scale": scale, "inliers": int(inliers), "agreement_db": agreement_db, "coverage": coverage,
        "checked_at": utcnow(),
    })


def _latest_verdicts(session: Session, shas: list[str], wanted: str | None) -> list[CopyCheck]:
    """Each checked pair's newest verdict (any method) among pairs of `shas`, or among `wanted`'s pairs only."""
    rows: list[CopyCheck] = []
    if wanted is not None:
        rows.extend(session.scalars(select(CopyCheck).where((CopyCheck.sha_a == wanted) | (CopyCheck.sha_b == wanted))))
    else:
        for i in range(0, len(shas), 500):
            rows.extend(session.scalars(select(CopyCheck).where(CopyCheck.sha_a.in_(shas[i:i + 500]))))
    newest: dict[tuple[str, str], CopyCheck] = {}
    for row in rows:
        held = newest.get((row.sha_a, row.sha_b))
        # A later method looked again at the pair: its verdict replaces the earlier one's.
        if held is None or (row.checked_at, row.id) > (held.checked_at, held.id):
            newest[(row.sha_a, row.sha_b)] = row
    return list(newest.values())


def album_copies(session: Session, album_id: int, photo_id: int | None = None) -> list[CopyPair]:
    """The copies among the album's present photos by each pair's newest verdict, by copy path; one photo's only
    with `photo_id`."""
    present = [p for p in session.scalars(select(Photo).where(Photo.album_id == album_id,
                                                              Photo.status == PhotoStatus.ok))
               if p.sha256]
    by_sha: dict[str, list[Photo]] = {}
    for p in present:
        by_sha.setdefault(p.sha256 or "", []).append(p)
    wanted = None
    if photo_id is not None:
        wanted = next((p.sha256 for p in present if p.id == photo_id), None)
        if wanted is None:
            return []
    out = []
    for check in _latest_verdicts(session, sorted(by_sha), wanted):
        if not check.is_copy:
            continue
        for copy in by_sha.get(check.copy_sha256 or "", []):
            for original in by_sha.get(check.original_sha256 or "", []):
                out.append(CopyPair(copy, original, check))
    return sorted(out, key=lambda c: (c.copy.rel_path, c.original.rel_path))
