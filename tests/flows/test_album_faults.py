"""Issue 14 through the task bodies: outputs never become input nor replace a user file; vanishing references."""

from __future__ import annotations

import shutil
from pathlib import Path

from db import queries
from db.models import PhotoRole
from flows.indexing import scan_task
from flows.resources import resources_for
from flows.targets.jobs import Outcome
from tests.flows.conftest import index_album, job_for
from tests.flows.test_tasks import _enhance, _indexed_target, _targets


def test_an_output_copied_into_the_album_is_neither_target_nor_reference(make_album, settings_for) -> None:
    album = make_album(2)
    settings = settings_for(embedder="fallback")
    job, target = _indexed_target(album, settings)
    done = _enhance(target, job, settings)
    assert done.status is Outcome.ENHANCED
    shutil.copy(done.output_path, album / "scene0" / "looks-like-a-great-reference.jpg")
    counts = scan_task.fn(str(album), settings)
    with resources_for(settings).sessions() as session:
        copy = queries.photos_by_rel_path(session, counts.album_id)["scene0/looks-like-a-great-reference.jpg"]
    assert copy.role is PhotoRole.neither and (counts.targets, counts.references) == (2, 2)


def test_a_user_file_at_an_output_path_is_refused_by_name(make_album, settings_for) -> None:
    album = make_album(1)
    settings = settings_for(embedder="fallback")
    job, target = _indexed_target(album, settings)
    planned = Path(job.out_dir) / target.rel_path
    planned.parent.mkdir(parents=True)
    planned.write_bytes(b"the user's own file, put there by hand")
    failed = _enhance(target, job, settings)
    assert failed.status is Outcome.FAILED and "refsr did not write it" in (failed.error or "")
    assert str(planned) in (failed.error or "") and planned.read_bytes().startswith(b"the user's")
    planned.unlink()
    assert _enhance(target, job, settings).status is Outcome.ENHANCED
    assert _enhance(target, job, settings.with_(force=True)).status is Outcome.ENHANCED  # its own file: replaced


def test_a_reference_deleted_after_the_scan_is_dropped_not_the_target(make_album, settings_for, monkeypatch) -> None:
    from flows.targets import retrieving

    album = make_album(3)
    settings = settings_for(embedder="fallback", top_k=3)
    album_id = index_album(album, settings)
    job = job_for(album, settings, album_id)
    first, second = _targets(settings, album_id)[:2]
    (album / "scene0" / "ref.png").unlink()  # gone before this target's retrieval
    done = _enhance(first, job, settings)
    assert done.status is Outcome.ENHANCED, done.error
    assert "scene0/ref.png" not in done.ref_paths and len(done.references) >= 1

    # Gone between retrieval and enhancement: the target chooses again without it.
    real = retrieving.choose_references
    calls = []

    def choose_then_delete(res, run, target):  # noqa: ANN001, ANN202
        found = real(res, run, target)
        calls.append([target.references[r.photo_id][1] for r in found.ranked])
        if len(calls) == 1:
            (album / calls[0][0]).unlink()
        return found

    monkeypatch.setattr("flows.enhancing.choose_references", choose_then_delete)
    done = _enhance(second, job, settings)
    assert done.status is Outcome.ENHANCED, done.error
    assert len(calls) == 2 and calls[0][0] not in calls[1]


def test_a_renamed_photo_reuses_its_job_and_its_output_moves_with_it(make_album, settings_for) -> None:
    album = make_album(2)
    settings = settings_for(embedder="fallback")
    job, target = _indexed_target(album, settings)
    first = _enhance(target, job, settings)
    assert first.status is Outcome.ENHANCED
    old_output = Path(first.output_path)
    (album / target.rel_path).rename(album / "scene0" / "small" / "renamed.jpg")
    index_album(album, settings)
    (renamed,) = [t for t in _targets(settings, job.album_id) if t.rel_path.endswith("renamed.jpg")]
    again = _enhance(renamed, job, settings)
    assert again.status is Outcome.CACHED and again.job_key == first.job_key  # no model work
    assert Path(again.output_path) == (Path(job.out_dir) / "scene0" / "small" / "renamed.jpg").resolve()
    assert Path(again.output_path).is_file() and not old_output.exists()  # moved, not left behind
    with resources_for(settings).sessions() as session:
        (row,) = queries.enhancements_for_output(session, again.output_path)
        assert row.target_photo_id == renamed.id and row.params["moved_from"] == str(old_output)
        assert [r.ref_sha256 for r in row.references] == [r.sha256 for r in first.references]
    # A copy under a second name (the first still there) gets a copy of the output.
    shutil.copy(album / renamed.rel_path, album / "scene0" / "small" / "copy.jpg")
    index_album(album, settings)
    (copy,) = [t for t in _targets(settings, job.album_id) if t.rel_path.endswith("copy.jpg")]
    copied = _enhance(copy, job, settings)
    assert copied.status is Outcome.CACHED and Path(copied.output_path).is_file()
    assert Path(again.output_path).is_file()
