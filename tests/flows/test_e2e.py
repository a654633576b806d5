"""End to end: real Prefect flows under one session-scoped test harness, on a generated album."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from db import queries
from db.models import Enhancement, EnhancementReference, EnhancementStatus, Photo, Run, RunStatus
from flows.resources import resources_for
from flows.enhancing import enhance_album
from flows.indexing import index_album
from tests.flows.conftest import add_pair

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def _enhancements(settings) -> list[Enhancement]:  # type: ignore[no-untyped-def]
    with resources_for(settings).sessions() as session:
        return list(session.scalars(select(Enhancement).order_by(Enhancement.id)))


def test_enhance_album_end_to_end(make_album, settings_for, other_tiny_model: Path) -> None:
    album = make_album(3)
    settings = settings_for(embedder="fallback")

    first = enhance_album(str(album), settings)
    assert first.counts() == {"enhanced": 3, "cached": 0, "failed": 0, "no-reference": 0, "dropped": 0, "not-started": 0}
    assert first.index.scan.new == 6
    for outcome in first.outcomes:
        out = Path(outcome.output_path)
        assert out == album / "enhanced" / outcome.rel_path and out.is_file()
        # Each generated target's own scene is its best reference.
        assert outcome.ref_paths[0].split("/")[0] == outcome.rel_path.split("/")[0]
    rows = _enhancements(settings)
    assert len(rows) == 3 and all(r.status is EnhancementStatus.succeeded for r in rows)
    assert {r.run_id for r in rows} == {first.run_id}
    with resources_for(settings).sessions() as session:
        assert session.scalar(select(func.count()).select_from(EnhancementReference)) == 3
        run = session.get(Run, first.run_id)
        assert run.status is RunStatus.completed and run.counts["enhanced"] == 3
        assert run.flow_run_id  # the Prefect flow run it belongs to
        flow_run_id = run.flow_run_id

    # The run's table artifact lists every target with its reference and scores. Other tests of the
    # session share the Prefect server (and album ids): look only at this flow run's artifacts.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    def this_runs(key: str) -> ArtifactFilter:
        return ArtifactFilter(key=ArtifactFilterKey(any_=[key]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=this_runs(f"enhance-album-{first.album_id}"))
    assert artifacts and artifacts[0].type == "table"
    table = artifacts[0].data if isinstance(artifacts[0].data, str) else str(artifacts[0].data)
    assert "scene0/small/scene0.jpg" in table and "relevance" in table

    # The gallery was built by the flow, and a markdown artifact of the run links to it.
    assert first.gallery and Path(first.gallery).is_file()
    with get_client(sync_client=True) as client:
        linked = client.read_artifacts(artifact_filter=this_runs(f"gallery-album-{first.album_id}"))
    assert linked and linked[0].type == "markdown"
    assert Path(first.gallery).as_uri() in str(linked[0].data)

    # Unchanged album: no model work, and it says so.
    second = enhance_album(str(album), settings)
    assert second.counts()["cached"] == 3 and not second.model_work
    assert second.index.scan.unchanged == 6 and second.index.embedded == 0
    assert len(_enhancements(settings)) == 3

    # One new photo: exactly one new enhancement.
    add_pair(album, "scene9", seed=999)
    third = enhance_album(str(album), settings)
    new_rows = _enhancements(settings)[3:]
    with resources_for(settings).sessions() as session:
        assert len(new_rows) == 1 and session.get(Photo, new_rows[0].target_photo_id).rel_path == "scene9/small/scene9.jpg"
    assert third.counts()["enhanced"] == 1 and third.counts()["cached"] == 3

    # A new model: a new record beside each old one, history kept.
    fourth = enhance_album(str(album), settings.with_(model_path=other_tiny_model))
    assert fourth.counts()["enhanced"] == 4
    rows = _enhancements(settings)
    assert len(rows) == 8 and len({r.model_sha256 for r in rows}) == 2

    # The run history tells the story.
    with resources_for(settings).sessions() as session:
        history = queries.run_history(session)
    assert [h.succeeded for h in history[:4]] == [4, 1, 0, 3]


def test_index_album_flow_counts(make_album, settings_for) -> None:
    album = make_album(2)
    settings = settings_for(embedder="fallback")
    summary = index_album(str(album), settings)
    assert (summary.scan.new, summary.scan.targets, summary.scan.references, summary.embedded) == (4, 2, 2, 4)
    assert summary.index is not None and summary.index.size == 2
    again = index_album(str(album), settings)
    assert (again.scan.unchanged, again.embedded) == (4, 0)


def test_a_failing_photo_is_recorded_and_the_run_goes_on(make_album, settings_for) -> None:
    album = make_album(2)
    settings = settings_for(embedder="fallback")
    # Something the scan cannot foresee: a folder squats on one output's path.
    (album / "enhanced" / "scene0" / "small" / "scene0.jpg").mkdir(parents=True)
    summary = enhance_album(str(album), settings)
    assert summary.counts()["failed"] == 1 and summary.counts()["enhanced"] == 1
    failed = summary.failed[0]
    assert failed.rel_path == "scene0/small/scene0.jpg" and "other than a regular file" in failed.error
    with resources_for(settings).sessions() as session:
        run = session.get(Run, summary.run_id)
        assert run.status is RunStatus.completed and run.counts["failed"] == 1
        row = session.get(Enhancement, failed.enhancement_id)
        assert row.status is EnhancementStatus.failed and "other than a regular file" in row.error
    # Fixed by the user: the next run picks it up, the good one stays cached.
    (album / "enhanced" / "scene0" / "small" / "scene0.jpg").rmdir()
    again = enhance_album(str(album), settings)
    assert again.counts() == {"enhanced": 1, "cached": 1, "failed": 0, "no-reference": 0, "dropped": 0, "not-started": 0}


def test_tasks_retry_transient_errors_only() -> None:
    from prefect import flow, task
    from sqlalchemy.exc import OperationalError

    from flows.common import retry_if_transient

    calls = {"transient": 0, "permanent": 0}

    @task(retries=2, retry_delay_seconds=0, retry_condition_fn=retry_if_transient)
    def busy_database() -> str:
        calls["transient"] += 1
        if calls["transient"] < 2:
            raise OperationalError("INSERT", {}, Exception("database is locked"))
        return "ok"

    @task(retries=2, retry_delay_seconds=0, retry_condition_fn=retry_if_transient)
    def bad_photo() -> None:
        calls["permanent"] += 1
        raise ValueError("truncated JPEG")

    @flow
    def both() -> str:
        result = busy_database()
        with pytest.raises(ValueError):
            bad_photo()
        return result

    assert both() == "ok"
    assert calls == {"transient": 2, "permanent": 1}


@pytest.mark.parametrize("step", ["scan_album", "index_file"])
def test_the_index_steps_retry_as_often_as_the_settings_say(step: str, make_album, settings_for, monkeypatch) -> None:
    """Settings.retries reaches the scan and index-sync tasks too (their decorators' own 2 no longer decide)."""
    from sqlalchemy.exc import OperationalError

    import flows.indexing as indexing

    real, calls = getattr(indexing, step), []

    def locked_once(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(step)
        if len(calls) == 1:
            raise OperationalError("SELECT", {}, Exception("database is locked"))
        return real(*args, **kwargs)

    monkeypatch.setattr(indexing, step, locked_once)
    album = make_album(1)
    with pytest.raises(OperationalError, match="database is locked"):
        index_album(str(album), settings_for(embedder="fallback", retries=0))
    calls.clear()
    summary = index_album(str(album), settings_for(embedder="fallback", retries=1, home=album.parent / "h1"))
    assert len(calls) == 2 and summary.index is not None
