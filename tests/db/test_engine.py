"""Engine settings: SQLite pragmas, enforced foreign keys, aware UTC datetimes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session

from db.engine import make_engine
from db.models import Album, Photo


def test_sqlite_pragmas_are_on(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'p.db'}")
    try:
        with engine.connect() as connection:
            assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
            assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 30_000
    finally:
        engine.dispose()


def test_foreign_keys_are_enforced(session: Session) -> None:
    session.add(Photo(album_id=12345, rel_path="orphan.jpg"))
    with pytest.raises(IntegrityError):
        session.flush()


def test_datetimes_come_back_aware_utc(engine: Engine, session: Session) -> None:
    plus_two = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    session.add(Album(root="/albums/tz", created_at=plus_two))
    session.commit()
    session.expunge_all()
    album = session.query(Album).one()
    assert album.created_at.tzinfo is not None
    assert album.created_at.utcoffset() == timedelta(0)
    assert album.created_at == plus_two
    assert album.created_at.hour == 10


def test_naive_datetime_is_refused(session: Session) -> None:
    session.add(Album(root="/albums/naive", created_at=datetime(2024, 1, 1)))
    with pytest.raises(StatementError, match="naive datetime"):
        session.flush()


def test_default_timestamps_are_utc(session: Session) -> None:
    before = datetime.now(UTC)
    album = Album(root="/albums/now")
    session.add(album)
    session.commit()
    session.expire_all()
    assert before - timedelta(seconds=1) <= album.created_at <= datetime.now(UTC)
