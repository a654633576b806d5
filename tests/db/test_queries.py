"""Query functions against SQLite and PostgreSQL: albums, photos, embeddings, runs, enhancements."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db import queries
from db.models import (
    Album,
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
from tests.db.helpers import add_photo, enhance, sha

# ---------------------------------------------------------------- albums and photos


def test_get_or_create_album_is_idempotent(session: Session) -> None:
    first = queries.get_or_create_album(session, "/albums/holiday")
    again = queries.get_or_create_album(session, "/albums/holiday/")
    assert first.id == again.id
    assert first.root == "/albums/holiday"
    assert queries.get_album(session, "/albums/other") is None


def test_album_root_must_be_absolute(session: Session) -> None:
    with pytest.raises(ValueError, match="'holiday'"):
        queries.get_or_create_album(session, "holiday")


def test_album_root_is_unique(session: Session) -> None:
    session.add_all([Album(root="/same"), Album(root="/same")])
    with pytest.raises(IntegrityError):
        session.flush()


def test_photo_album_and_rel_path_is_unique(session: Session) -> None:
    album = queries.get_or_create_album(session, "/a")
    session.add_all([Photo(album_id=album.id, rel_path="x.jpg"), Photo(album_id=album.id, rel_path="x.jpg")])
    with pytest.raises(IntegrityError):
        session.flush()


def test_upsert_photo_inserts_then_updates(session: Session) -> None:
    album = queries.get_or_create_album(session, "/a")
    photo = add_photo(session, album.id, "2019/IMG_0001.jpg")
    first_seen = photo.first_seen
    assert (photo.width, photo.height, photo.mtime_ns) == (64, 48, 1_700_000_000_123_456_789)
    assert photo.role is PhotoRole.target and photo.status is PhotoStatus.ok
    session.commit()

    again = queries.upsert_photo(session, album.id, "2019/IMG_0001.jpg", width=128, role="reference")
    session.commit()
    session.expire_all()
    assert again.id == photo.id
    assert (again.width, again.height, again.role) == (128, 48, PhotoRole.reference)
    assert again.first_seen == first_seen and again.last_seen >= first_seen
    assert session.scalar(select(func.count()).select_from(Photo)) == 1


def test_unreadable_photo_has_no_hash(session: Session) -> None:
    album = queries.get_or_create_album(session, "/a")
    photo = queries.upsert_photo(
        session, album.id, "broken.jpg", status=PhotoStatus.unreadable, error="truncated JPEG"
    )
    assert photo.sha256 is None and photo.status is PhotoStatus.unreadable
    assert queries.photos(session, album.id) == []
    assert queries.photos(session, album.id, status=PhotoStatus.unreadable) == [photo]


def test_unicode_rel_path_round_trips(session: Session) -> None:
    album = queries.get_or_create_album(session, "/альбом/写真")
    name = "Ünïcødé/фото 🎉 写真.jpg"
    add_photo(session, album.id, name)
    session.commit()
    session.expunge_all()
    assert list(queries.photos_by_rel_path(session, album.id)) == [name]
    assert queries.photo_by_path(session, f"/альбом/写真/{name}").rel_path == name


@pytest.mark.parametrize("bad", ["", "/abs.jpg", "../up.jpg", "a//b.jpg", "./a.jpg", "a/../b.jpg", "."])
def test_upsert_photo_rejects_bad_rel_paths(session: Session, bad: str) -> None:
    album = queries.get_or_create_album(session, "/a")
    with pytest.raises(ValueError, match="rel_path"):
        queries.upsert_photo(session, album.id, bad)


def test_upsert_photo_rejects_unknown_fields_and_bad_hashes(session: Session) -> None:
    album = queries.get_or_create_album(session, "/a")
    with pytest.raises(ValueError, match="colour"):
        queries.upsert_photo(session, album.id, "a.jpg", colour="red")
    with pytest.raises(ValueError, match="'abc'"):
        queries.upsert_photo(session, album.id, "a.jpg", sha256="abc")
    with pytest.raises(ValueError):
        queries.upsert_photo(session, album.id, "a.jpg", role="hero")


def test_photos_filters_by_role_and_status(session: Session) -> None:
    album = queries.get_or_create_album(session, "/a")
    target = add_photo(session, album.id, "b_small.jpg", PhotoRole.target)
    reference = add_photo(session, album.id, "a_big.jpg", PhotoRole.reference)
    neither = add_photo(session, album.id, "c_mid.jpg", PhotoRole.neither)
    assert queries.photos(session, album.id) == [reference, target, neither]
    assert queries.photos(session, album.id, role=PhotoRole.reference) == [reference]
    queries.mark_gone(session, album.id, ["b_small.jpg"])
    assert queries.photos(session, album.id, role=PhotoRole.target) == []
    assert queries.photos(session, album.id, role=PhotoRole.target, status=None) == [target]


def test_mark_gone_keeps_history(session: Session) -> None:
    album = queries.get_or_create_album(session, "/a")
    target = add_photo(session, album.id, "lr.jpg")
    ref = add_photo(session, album.id, "hr.jpg", PhotoRole.reference)
    enhance(session, None, target, [ref], output_path="/out/lr.png")
    session.commit()

    assert queries.mark_gone(session, album.id, ["lr.jpg", "hr.jpg", "never-existed.jpg"]) == 2
    assert queries.mark_gone(session, album.id, ["lr.jpg"]) == 0  # already gone
    session.commit()
    session.expire_all()

    assert {p.status for p in queries.photos_by_rel_path(session, album.id).values()} == {PhotoStatus.gone}
    (record,) = queries.enhancements_for_output(session, "/out/lr.png")
    assert record.target.rel_path == "lr.jpg"
    assert record.references[0].photo.status is PhotoStatus.gone

    back = queries.upsert_photo(session, album.id, "lr.jpg", sha256=sha("lr.jpg"))
    assert back.id == target.id and back.status is PhotoStatus.ok


def test_mark_gone_handles_many_paths(session: Session) -> None:
    album = queries.get_or_create_album(session, "/a")
    for i in range(30):
        queries.upsert_photo(session, album.id, f"{i}.jpg", sha256=sha(str(i)))
    paths = [f"{i}.jpg" for i in range(1200)]  # more than one IN chunk
    assert queries.mark_gone(session, album.id, paths) == 30


def test_photo_by_path_prefers_the_innermost_album(session: Session) -> None:
    outer = queries.get_or_create_album(session, "/photos")
    inner = queries.get_or_create_album(session, "/photos/2020")
    lookalike = queries.get_or_create_album(session, "/photos/2020-old")
    in_outer = add_photo(session, outer.id, "2020/a.jpg")
    in_inner = add_photo(session, inner.id, "a.jpg")
    only_outer = add_photo(session, outer.id, "2020/b.jpg")
    add_photo(session, lookalike.id, "c.jpg")
    assert queries.photo_by_path(session, "/photos/2020/a.jpg") == in_inner
    assert queries.photo_by_path(session, "/photos/2020/b.jpg") == only_outer
    assert queries.photo_by_path(session, "/photos/2020/../2020/b.jpg") == only_outer
    assert queries.photo_by_path(session, "/photos/2020/c.jpg") is None
    assert queries.photo_by_path(session, "/elsewhere/a.jpg") is None
    assert in_outer.id != in_inner.id
    with pytest.raises(ValueError, match="relative.jpg"):
        queries.photo_by_path(session, "relative.jpg")


# ---------------------------------------------------------------- embeddings


def test_float32_vector_round_trip(session: Session) -> None:
    rng = np.random.default_rng(0)
    vector = rng.standard_normal(512).astype("<f4")
    vector /= np.linalg.norm(vector)
    added = queries.add_embedding(session, sha("photo"), "clip:ViT-B-32:laion2b:abc123", vector.tobytes(), 512)
    session.commit()
    session.expunge_all()
    stored = queries.get_embedding(session, sha("photo"), "clip:ViT-B-32:laion2b:abc123")
    assert stored is not None and stored.id == added.id and stored.dim == 512
    restored = np.frombuffer(stored.vector, dtype="<f4")
    np.testing.assert_array_equal(restored, vector)
    assert queries.get_embedding(session, sha("photo"), "fallback:v1") is None


def test_add_embedding_first_writer_wins(session: Session) -> None:
    first = queries.add_embedding(session, sha("p"), "fallback:v1", b"\x01" * 8, 2)
    second = queries.add_embedding(session, sha("p"), "fallback:v1", b"\x02" * 8, 2)
    assert second.id == first.id and second.vector == b"\x01" * 8
    other = queries.add_embedding(session, sha("p"), "fallback:v2", b"\x02" * 8, 2)
    assert other.id != first.id


def test_embedding_sha_and_embedder_is_unique(session: Session) -> None:
    session.add_all(
        [Embedding(sha256=sha("p"), embedder="e", dim=1, vector=b"\0" * 4) for _ in range(2)]
    )
    with pytest.raises(IntegrityError):
        session.flush()


def test_add_embedding_checks_its_input(session: Session) -> None:
    with pytest.raises(ValueError, match="12 bytes"):
        queries.add_embedding(session, sha("p"), "e", b"\0" * 12, 4)
    with pytest.raises(ValueError, match="dim"):
        queries.add_embedding(session, sha("p"), "e", b"", 0)
    with pytest.raises(ValueError, match="NOTHEX"):
        queries.add_embedding(session, "NOTHEX", "e", b"\0" * 4, 1)


def test_embeddings_for_album(session: Session) -> None:
    album = queries.get_or_create_album(session, "/a")
    other_album = queries.get_or_create_album(session, "/b")
    target = add_photo(session, album.id, "lr.jpg", PhotoRole.target)
    ref = add_photo(session, album.id, "hr.jpg", PhotoRole.reference)
    # Same content under a new name: shares the stored vector, gets its own row.
    copy = queries.upsert_photo(session, album.id, "copy/hr.jpg", sha256=ref.sha256, role=PhotoRole.reference)
    gone = add_photo(session, album.id, "gone.jpg", PhotoRole.reference)
    no_vector = add_photo(session, album.id, "new.jpg", PhotoRole.reference)
    add_photo(session, other_album.id, "lr.jpg", PhotoRole.target)
    for photo in (target, ref, gone):
        queries.add_embedding(session, photo.sha256, "e", np.full(2, photo.id, "<f4").tobytes(), 2)
    queries.add_embedding(session, ref.sha256, "other-embedder", b"\0" * 8, 2)
    queries.mark_gone(session, album.id, ["gone.jpg"])

    rows = queries.embeddings_for_album(session, album.id, "e")
    assert [r.photo_id for r in rows] == [target.id, ref.id, copy.id]
    assert rows[2].sha256 == ref.sha256 and rows[2].vector == rows[1].vector
    photo_id, sha256, vector = rows[0]
    assert (photo_id, sha256) == (target.id, target.sha256)
    assert np.frombuffer(vector, "<f4").tolist() == [target.id, target.id]
    refs = queries.embeddings_for_album(session, album.id, "e", role=PhotoRole.reference)
    assert [r.photo_id for r in refs] == [ref.id, copy.id]
    assert no_vector.id not in {r.photo_id for r in rows}


# ---------------------------------------------------------------- runs


def test_start_and_finish_run(session: Session) -> None:
    album = queries.get_or_create_album(session, "/a")
    run = queries.start_run(
        session, RunKind.index, album.id, {"k": 3, "paths": ["ä"]}, {"ttsr": "0.1"}, flow_run_id="fr-1"
    )
    session.commit()
    assert run.id is not None and run.status is RunStatus.running and run.ended_at is None
    queries.finish_run(session, run, RunStatus.completed, counts={"photos": 12})
    session.commit()
    session.expunge_all()
    stored = session.get(Run, run.id)
    assert stored.status is RunStatus.completed and stored.counts == {"photos": 12}
    assert stored.parameters == {"k": 3, "paths": ["ä"]} and stored.flow_run_id == "fr-1"
    assert stored.ended_at >= stored.started_at
    with pytest.raises(ValueError, match="running"):
        queries.finish_run(session, stored, RunStatus.running)


def test_run_history_counts(session: Session) -> None:
    album = queries.get_or_create_album(session, "/a")
    other = queries.get_or_create_album(session, "/b")
    refs = [add_photo(session, album.id, f"hr{i}.jpg", PhotoRole.reference) for i in range(2)]
    targets = [add_photo(session, album.id, f"lr{i}.jpg") for i in range(3)]

    index_run = queries.start_run(session, RunKind.index, album.id, {}, {})
    queries.finish_run(session, index_run, RunStatus.completed)
    run = queries.start_run(session, RunKind.enhance, album.id, {"k": 2}, {})
    run.started_at = index_run.started_at + timedelta(seconds=1)
    for i, target in enumerate(targets):
        enhance(session, run.id, target, refs, output_path=f"/out/{i}.png")
    enhance(session, run.id, targets[0], refs, output_path="/x", status=EnhancementStatus.failed, job="j2")
    queries.finish_run(session, run, RunStatus.completed, counts={"enhanced": 3})
    other_run = queries.start_run(session, RunKind.index, other.id, {}, {})
    other_run.started_at = run.started_at + timedelta(seconds=1)
    session.commit()

    history = queries.run_history(session)
    assert [h.id for h in history] == [other_run.id, run.id, index_run.id]
    by_id = {h.id: h for h in history}
    assert (by_id[run.id].succeeded, by_id[run.id].failed) == (3, 1)
    assert (by_id[index_run.id].succeeded, by_id[index_run.id].failed) == (0, 0)
    assert by_id[run.id].counts == {"enhanced": 3} and by_id[run.id].kind is RunKind.enhance
    assert [h.id for h in queries.run_history(session, album.id)] == [run.id, index_run.id]
    assert [h.id for h in queries.run_history(session, limit=1)] == [other_run.id]
    with pytest.raises(AttributeError):
        by_id[run.id].status = RunStatus.failed  # frozen


# ---------------------------------------------------------------- enhancements


@pytest.fixture
def album_with_refs(session: Session) -> tuple[Album, Photo, list[Photo], Run]:
    album = queries.get_or_create_album(session, "/album")
    target = add_photo(session, album.id, "small.jpg")
    refs = [add_photo(session, album.id, f"big{i}.jpg", PhotoRole.reference) for i in range(3)]
    run = queries.start_run(session, RunKind.enhance, album.id, {}, {})
    session.commit()
    return album, target, refs, run


def test_record_enhancement_with_references(session: Session, album_with_refs) -> None:
    _, target, refs, run = album_with_refs
    # Given out of rank order: stored and returned by rank.
    record = queries.record_enhancement(
        session,
        run.id,
        target,
        sha("job"),
        status=EnhancementStatus.succeeded,
        model_name="ttsr-compact",
        model_sha256=sha("model"),
        embedder="fallback:v1",
        device="cuda:0",
        params={"k": 2},
        timings={"retrieval_s": 0.01, "model_s": 0.5, "total_s": 0.6},
        output_path="/out/small.png",
        output_sha256=sha("out"),
        attention_path="/out/small.attention.png",
        references=[
            queries.ReferenceRow(1, refs[2].id, refs[2].sha256, 0.7, 0.3),
            (0, refs[0].id, refs[0].sha256, 0.9, 0.6),
        ],
    )
    session.commit()
    session.expunge_all()

    (found,) = queries.enhancements_for_output(session, "/out/small.png")
    assert found.id == record.id and found.target_sha256 == target.sha256
    assert found.timings["total_s"] == 0.6 and found.attention_path == "/out/small.attention.png"
    assert [(r.rank, r.photo.rel_path) for r in found.references] == [(0, "big0.jpg"), (1, "big2.jpg")]
    assert found.references[0].cosine == pytest.approx(0.9)
    assert found.references[0].relevance == pytest.approx(0.6)
    assert found.target.rel_path == "small.jpg" and found.run.id == run.id
    assert queries.enhancements_for_output(session, "/out/other.png") == []


def test_which_reference_lookups_by_target(session: Session, album_with_refs) -> None:
    _, target, refs, run = album_with_refs
    older = enhance(session, run.id, target, refs[:1], output_path="/out/a.png")
    newer = enhance(session, run.id, target, refs[1:], output_path="/out/a.png", job="force")
    newer.created_at = older.created_at + timedelta(seconds=5)
    session.commit()
    session.expunge_all()

    history = queries.enhancements_for_target(session, target.id)
    assert [e.id for e in history] == [newer.id, older.id]
    # References were eager-loaded: reading them after the session closes needs no SQL.
    session.close()
    assert [r.photo.rel_path for r in history[0].references] == ["big1.jpg", "big2.jpg"]
    assert [r.ref_photo_id for r in history[1].references] == [refs[0].id]


def test_latest_succeeded_enhancement_and_forced_rerun(session: Session, album_with_refs) -> None:
    _, target, refs, run = album_with_refs
    key = sha("same-job")
    common = dict(
        model_name="m", model_sha256=sha("m"), embedder="e", device="cpu", params={}, timings={}
    )
    assert queries.latest_succeeded_enhancement(session, key) is None
    failed = queries.record_enhancement(
        session, run.id, target, key, status=EnhancementStatus.failed, error="OOM", **common
    )
    assert queries.latest_succeeded_enhancement(session, key) is None
    first = queries.record_enhancement(
        session, run.id, target, key, status="succeeded", output_path="/o.png", output_sha256=sha("1"), **common
    )
    forced = queries.record_enhancement(
        session, run.id, target, key, status="succeeded", output_path="/o.png", output_sha256=sha("2"), **common
    )
    forced.created_at = first.created_at + timedelta(seconds=1)
    session.commit()
    assert failed.output_path is None
    assert queries.latest_succeeded_enhancement(session, key).id == forced.id
    assert len(queries.enhancements_for_output(session, "/o.png")) == 2


def test_record_enhancement_validates(session: Session, album_with_refs) -> None:
    _, target, refs, run = album_with_refs
    common = dict(model_name="m", model_sha256=sha("m"), embedder="e", device="cpu", params={}, timings={})
    with pytest.raises(ValueError, match="output_path"):
        queries.record_enhancement(session, run.id, target, sha("k"), status="succeeded", **common)
    with pytest.raises(ValueError, match="rel/out.png"):
        queries.record_enhancement(
            session, run.id, target, sha("k"), status="succeeded", output_path="rel/out.png",
            output_sha256=sha("o"), **common,
        )
    with pytest.raises(ValueError, match=r"\[0, 0\]"):
        queries.record_enhancement(
            session, run.id, target, sha("k"), status="failed",
            references=[(0, refs[0].id, refs[0].sha256, 1.0, 1.0)] * 2, **common,
        )
    with pytest.raises(ValueError, match="job_key"):
        queries.record_enhancement(session, run.id, target, "key", status="failed", **common)
    with pytest.raises(ValueError, match="bogus"):
        queries.record_enhancement(session, run.id, target, sha("k"), status="bogus", **common)


def test_record_enhancement_is_all_or_nothing(session: Session, album_with_refs) -> None:
    _, target, refs, run = album_with_refs
    with pytest.raises(IntegrityError):
        enhance(session, run.id, target, refs + [Photo(id=987654, sha256=sha("ghost"))], output_path="/o.png")
    session.rollback()
    assert session.scalar(select(func.count()).select_from(Enhancement)) == 0
    assert session.scalar(select(func.count()).select_from(EnhancementReference)) == 0


def test_reference_rank_is_unique(session: Session, album_with_refs) -> None:
    _, target, refs, run = album_with_refs
    record = enhance(session, run.id, target, refs[:1], output_path="/o.png")
    session.add(
        EnhancementReference(
            enhancement_id=record.id, rank=0, ref_photo_id=refs[1].id, ref_sha256=refs[1].sha256,
            cosine=0.0, relevance=0.0,
        )
    )
    with pytest.raises(IntegrityError):
        session.flush()


def test_deleting_an_enhancement_deletes_its_references(session: Session, album_with_refs) -> None:
    _, target, refs, run = album_with_refs
    record = enhance(session, run.id, target, refs, output_path="/o.png")
    session.commit()
    session.delete(record)
    session.commit()
    assert session.scalar(select(func.count()).select_from(EnhancementReference)) == 0
    assert session.scalar(select(func.count()).select_from(Photo)) == 4  # photos untouched


def test_references_cascade_in_the_database_too(session: Session, album_with_refs) -> None:
    _, target, refs, run = album_with_refs
    record = enhance(session, run.id, target, refs, output_path="/o.png")
    session.commit()
    # Bypass the ORM: the ON DELETE CASCADE in the schema must do the work.
    session.execute(Enhancement.__table__.delete().where(Enhancement.id == record.id))
    session.commit()
    assert session.scalar(select(func.count()).select_from(EnhancementReference)) == 0


def test_enhancements_for_run_and_album(session: Session, album_with_refs) -> None:
    album, target, refs, run = album_with_refs
    second_target = add_photo(session, album.id, "small2.jpg")
    other_album = queries.get_or_create_album(session, "/other")
    stranger = add_photo(session, other_album.id, "s.jpg")
    later_run = queries.start_run(session, RunKind.enhance, album.id, {}, {})

    a1 = enhance(session, run.id, target, refs[:1], output_path="/o/1.png")
    b1 = enhance(session, run.id, second_target, refs[:1], output_path="/o/2.png")
    a2 = enhance(session, later_run.id, target, refs[1:], output_path="/o/1.png", status=EnhancementStatus.failed, job="x")
    enhance(session, later_run.id, stranger, [], output_path="/o/s.png")
    a2.created_at = a1.created_at + timedelta(seconds=2)
    session.commit()

    assert [e.id for e in queries.enhancements_for_run(session, run.id)] == [a1.id, b1.id]
    latest = queries.enhancements_for_album(session, album.id)
    assert {e.id for e in latest} == {a2.id, b1.id}
    assert latest[0].id == a2.id
    everything = queries.enhancements_for_album(session, album.id, latest_only=False)
    assert {e.id for e in everything} == {a1.id, a2.id, b1.id}


def test_deleting_a_run_keeps_its_enhancements(session: Session, album_with_refs) -> None:
    _, target, refs, run = album_with_refs
    record = enhance(session, run.id, target, refs, output_path="/o.png")
    session.commit()
    session.execute(Run.__table__.delete().where(Run.id == run.id))
    session.commit()
    session.expire_all()
    assert record.run_id is None
