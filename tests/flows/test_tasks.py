"""Task logic through task.fn(): scan, embed, index sync, one target's enhancement, failures, recovery, settings."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from db import queries
from db.models import Enhancement, EnhancementStatus, Photo, PhotoRole, Run, RunKind, RunStatus
from durable import files
from flows.album_config import AlbumConfig, scan_settings
from flows.common import is_transient, recover_crashed_runs, start_run
from flows.enhancing import enhance_task
from flows.execution.faults import FAULT_ENV
from flows.indexing import scan_task, sync_index_task
from flows.resources import resources_for
from flows.settings import ModelNotFoundError, Settings, index_file
from flows.targets.jobs import JobContext, Outcome, RunContext, TargetOutcome
from pipeline import images
from pipeline.enhance import plan_output_paths
from tests.flows.conftest import add_pair, index_album, job_for


def _targets(settings: Settings, album_id: int) -> list[Photo]:
    with resources_for(settings).sessions() as session:
        return queries.photos(session, album_id, role=PhotoRole.target)


def _indexed_target(album: Path, settings: Settings) -> tuple[JobContext, Photo]:
    """Index `album`; the job context of a run on it and its first target."""
    album_id = index_album(album, settings)
    return job_for(album, settings, album_id), _targets(settings, album_id)[0]


def _enhance(target: Photo, job: JobContext, settings: Settings) -> TargetOutcome:
    """The task body as the flow calls it, with the output path the run would plan for it alone."""
    out = plan_output_paths(job.out_dir, [(target.rel_path, target.format)], job.params)
    return enhance_task.fn(target.id, RunContext(settings, job), str(out[target.rel_path]))


def test_scan_task_records_roles_and_second_scan_reads_no_pixels(make_album, settings_for, monkeypatch) -> None:
    album = make_album(3)
    settings = settings_for(embedder="fallback")
    first = scan_task.fn(str(album), settings)
    assert (first.new, first.targets, first.references) == (6, 3, 3)

    def forbidden(*args, **kwargs):  # noqa: ANN002, ANN003
        raise AssertionError("an unchanged album must not be read")

    monkeypatch.setattr(files, "sha256_file", forbidden)
    for name in ("read_header", "verify_decodable", "load_rgb"):
        monkeypatch.setattr(images, name, forbidden)
    second = scan_task.fn(str(album), settings)
    assert (second.new, second.changed, second.unchanged, second.gone) == (0, 0, 6, 0)


def test_scan_task_reports_unreadable_and_gone_files(make_album, settings_for) -> None:
    album = make_album(2)
    settings = settings_for(embedder="fallback")
    scan_task.fn(str(album), settings)
    (album / "scene0" / "ref.png").unlink()
    (album / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    counts = scan_task.fn(str(album), settings)
    assert (counts.gone, counts.unreadable) == (1, 1)
    assert counts.unreadable_paths[0][0] == "broken.jpg"
    assert scan_task.fn(str(album), settings).gone == 0  # reported once, not at every scan


def test_index_sync_holds_references_only_and_follows_the_database(make_album, settings_for) -> None:
    album = make_album(3)
    settings = settings_for(embedder="fallback")
    album_id = index_album(album, settings)
    state = sync_index_task.fn(album_id, "fallback:v1", settings)
    assert state.size == 3 and state.rebuilt and state.path == index_file(settings, album_id, "fallback:v1")
    assert sync_index_task.fn(album_id, "fallback:v1", settings).added == 0  # nothing to do
    (album / "scene1" / "ref.png").unlink()
    scan_task.fn(str(album), settings)
    state = sync_index_task.fn(album_id, "fallback:v1", settings)
    assert (state.size, state.removed) == (2, 1)


def test_enhance_task_enhances_then_reuses_then_forces(make_album, settings_for) -> None:
    album = make_album(2)
    settings = settings_for(embedder="fallback")
    job, target = _indexed_target(album, settings)

    first = _enhance(target, job, settings)
    assert first.status is Outcome.ENHANCED and first.reranked
    out = Path(first.output_path)
    assert out == album / "enhanced" / target.rel_path and out.is_file()
    assert first.references[0].sha256 != target.sha256 and first.ref_paths[0].endswith("ref.png")

    again = _enhance(target, job, settings)
    assert again.status is Outcome.CACHED and not again.reranked  # no model work at all
    assert again.enhancement_id == first.enhancement_id

    forced = _enhance(target, job, settings.with_(force=True))
    assert forced.status is Outcome.ENHANCED and forced.enhancement_id != first.enhancement_id
    cache = resources_for(settings).reference_cache()  # the redo encoded its reference no second time
    assert (cache.misses, cache.hits) == (1, 1)
    with resources_for(settings).sessions() as session:
        rows = queries.enhancements_for_target(session, target.id)
        assert [r.status for r in rows] == [EnhancementStatus.succeeded] * 2
        assert rows[0].job_key == rows[1].job_key  # --force: a new record beside the old one
        assert rows[0].references[0].ref_photo_id == first.references[0].photo_id
        assert Path(rows[0].attention_path).is_file()
        # Every candidate's scores are recorded, the chosen one first with its rank.
        scored = rows[1].candidates
        assert [c["photo_id"] for c in scored][0] == first.references[0].photo_id and scored[0]["rank"] == 0
        assert len(scored) == 2 and all(isinstance(c["inliers"], int) and -1 <= c["cosine"] <= 1 for c in scored)
        assert {c["rank"] for c in scored[1:]} == {None}


def test_enhance_task_redoes_a_job_whose_output_was_deleted(make_album, settings_for) -> None:
    album = make_album(1)
    settings = settings_for(embedder="fallback")
    job, target = _indexed_target(album, settings)
    first = _enhance(target, job, settings)
    Path(first.output_path).unlink()
    assert _enhance(target, job, settings).status is Outcome.ENHANCED
    Path(first.output_path).write_bytes(b"edited by hand")  # replaced by something else
    assert _enhance(target, job, settings).status is Outcome.ENHANCED
    os.utime(first.output_path)  # touched only: same bytes, so still reusable
    assert _enhance(target, job, settings).status is Outcome.CACHED


def test_enhance_task_copies_a_job_done_into_another_place(make_album, settings_for) -> None:
    album = make_album(1)
    settings = settings_for(embedder="fallback")
    job, target = _indexed_target(album, settings)
    first = _enhance(target, job, settings)
    elsewhere = replace(job, out_dir=str(album.parent / "other-out"))
    copied = _enhance(target, elsewhere, settings)  # e.g. a later run with --out other-out: no model work
    assert copied.status is Outcome.CACHED and copied.job_key == first.job_key
    assert Path(copied.output_path) == album.parent / "other-out" / target.rel_path
    assert Path(copied.output_path).read_bytes() == Path(first.output_path).read_bytes()  # both folders keep theirs
    with resources_for(settings).sessions() as session:
        row = session.get(Enhancement, copied.enhancement_id)
        assert row.params["copied_from"] == str(Path(first.output_path).resolve())
    assert _enhance(target, elsewhere, settings).status is Outcome.CACHED


def test_enhance_task_records_a_failure_with_its_reason(make_album, settings_for) -> None:
    album = make_album(1)
    settings = settings_for(embedder="fallback")
    job, target = _indexed_target(album, settings)
    # The photo breaks after indexing (a sync client wrote half a file).
    (album / target.rel_path).write_bytes(b"\xff\xd8\xff\xe0 truncated")
    outcome = _enhance(target, job, settings)
    # Its bytes are no longer those the scan hashed: that is what is said, before any decoding (issue 25).
    assert outcome.status is Outcome.FAILED and "PhotoChangedError" in outcome.error
    with resources_for(settings).sessions() as session:
        row = session.scalars(select(Enhancement)).one()
        assert row.status is EnhancementStatus.failed and "changed since it was scanned" in row.error
        assert row.output_path is None


def test_enhance_task_without_references_says_so(tmp_path: Path, settings_for) -> None:
    album = tmp_path / "only-small"
    album.mkdir()
    (album / "refsr.toml").write_text("[scan]\nmin_ref_side = 96\nmax_target_side = 48\n")
    ref, _ = add_pair(album, "s", seed=7)
    ref.unlink()
    settings = settings_for(embedder="fallback")
    job, target = _indexed_target(album, settings)
    outcome = _enhance(target, job, settings)
    assert outcome.status is Outcome.NO_REFERENCE


def test_transient_errors_are_told_apart() -> None:
    assert is_transient(OperationalError("INSERT", {}, Exception("database is locked")))
    assert is_transient(OSError(errno.EAGAIN, "try again"))
    assert not is_transient(OSError(errno.ENOENT, "gone"))
    assert not is_transient(images.UnreadableImageError("x.jpg", "truncated"))
    assert not is_transient(ValueError("bad"))


def test_recovery_marks_dead_runs_crashed_and_leaves_live_ones(tmp_path: Path, settings_for) -> None:
    settings = settings_for()
    factory = resources_for(settings).sessions
    live = start_run(factory, RunKind.enhance, None, settings, {})  # this very process
    dead = start_run(factory, RunKind.enhance, None, settings, {})
    with factory.begin() as session:
        run = session.get(Run, dead)
        # A pid that cannot exist: the run's process is gone.
        run.parameters = {**run.parameters, "process": {**run.parameters["process"], "pid": 2**22 + 12345}}
    assert recover_crashed_runs(factory) == [dead]
    with factory() as session:
        assert session.get(Run, dead).status is RunStatus.crashed
        assert session.get(Run, live).status is RunStatus.running


def test_settings_precedence_and_validation(tmp_path: Path, tiny_model: Path) -> None:
    env = {"REFSR_HOME": str(tmp_path / "h"), "REFSR_MODEL": str(tiny_model), "REFSR_DEVICE": "cpu"}
    s = Settings.from_env(env)
    assert s.home == (tmp_path / "h").resolve()
    assert s.database_url == f"sqlite:///{(tmp_path / 'h').resolve() / 'refsr.db'}"
    assert s.index_dir == (tmp_path / "h").resolve() / "faiss"
    assert Settings.from_env(env, device="auto").device.value == "auto"  # flag beats environment
    xdg = Settings.from_env({"XDG_DATA_HOME": str(tmp_path / "xdg")})
    assert xdg.home == (tmp_path / "xdg" / "refsr-album").resolve()
    with pytest.raises(ValueError, match="refs.*5"):
        Settings.from_env(env, refs=5, top_k=2)
    with pytest.raises(ValueError, match="workers.*0"):
        Settings.from_env(env, workers=0)
    with pytest.raises(ModelNotFoundError, match="--model"):
        Settings.from_env(env, model_path=tmp_path / "missing.safetensors").check_model()


def test_album_config_and_output_folder_exclusion(tmp_path: Path, tiny_model: Path) -> None:
    album = tmp_path / "a"
    album.mkdir()
    (album / "refsr.toml").write_text("[scan]\nmin_ref_side = 500\nmax_target_side = 200\n")
    s = Settings.from_env({}, home=tmp_path / "h", model_path=tiny_model, out_dir=album / "sub" / "big")
    cfg = scan_settings(s, album)
    assert (cfg.min_ref_side, cfg.max_target_side) == (500, 200)
    assert "big" in cfg.exclude and "enhanced" in cfg.exclude
    assert scan_settings(s.with_(min_ref_side=900), album).min_ref_side == 900  # flag beats the file
    with pytest.raises(ValueError, match="album itself"):
        scan_settings(s.with_(out_dir=album), album)
    (album / "refsr.toml").write_text("[scan]\nmin_ref_sid = 5\n")
    with pytest.raises(ValueError, match="min_ref_sid"):
        AlbumConfig.read(album)


def test_fault_point_kills_the_process_at_the_nth_call_of_its_phase_only(tmp_path: Path) -> None:
    probe = ("from flows.execution.faults import fault_point\n"
             "for phase in ('other', 'record', 'other', 'record', 'record'):\n"
             "    fault_point(phase)\n"
             "    print(phase, flush=True)\n")

    def run(spec: str | None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != FAULT_ENV} | ({FAULT_ENV: spec} if spec else {})
        env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
        return subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)

    inert = run(None)
    assert inert.returncode == 0 and inert.stdout.split() == ["other", "record", "other", "record", "record"]
    killed = run("record:2")  # dies at the second "record", before printing it
    assert killed.returncode == 137 and killed.stdout.split() == ["other", "record", "other"]
    assert run("scan:1").returncode == 0  # a phase never reached changes nothing


def test_served_deployment_carries_settings_as_json_and_validates_back(tmp_path: Path, tiny_model: Path) -> None:
    import json

    from flows.enhancing import deployment, enhance_album

    s = Settings.from_env({}, home=tmp_path / "h", model_path=tiny_model, top_k=3, embedder="fallback")
    dep = deployment(tmp_path / "album", s, interval=3600)
    assert dep.name == "refsr-album" and dep.schedules
    params = json.loads(json.dumps(dep.parameters))  # what the API stores
    restored = enhance_album.validate_parameters(params)["settings"]
    assert restored == s.with_(progress=False)
    with pytest.raises(ValueError, match="exactly one"):
        deployment(tmp_path, s)


def test_a_job_taken_over_while_the_model_ran_is_left_to_its_new_holder(make_album, settings_for,
                                                                        monkeypatch) -> None:
    """This process stalled past its lease and another took the job: nothing recorded here, the hold let go."""
    import contextlib

    from db.claims import ClaimLost
    from flows import enhancing

    album = make_album(1)
    settings = settings_for(embedder="fallback")
    job, target = _indexed_target(album, settings)
    gave_up: list[bool] = []

    class LostHold:
        def settle(self, session: object) -> None:
            raise AssertionError("a job taken over must not be recorded here")

        def check(self) -> None:
            raise ClaimLost("taken over")

        def give_up(self) -> None:
            gave_up.append(True)

    @contextlib.contextmanager
    def lost_claim(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        yield LostHold()

    monkeypatch.setattr(enhancing, "job_claim", lost_claim)
    outcome = _enhance(target, job, settings)
    assert outcome.status is Outcome.ELSEWHERE and gave_up == [True]
    with resources_for(settings).sessions() as session:
        assert session.scalars(select(Enhancement)).all() == []


def test_precision_setting_chooses_the_autocast(tmp_path: Path, tiny_model: Path, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    import flows.resources as resources
    from flows.cli.parser import build_parser
    from flows.settings import DeviceChoice
    from ttsr_core.config import Precision

    env = {"REFSR_HOME": str(tmp_path / "h"), "REFSR_MODEL": str(tiny_model)}
    assert Settings.from_env(env).precision is None
    assert Settings.from_env(env, precision="bfloat16").precision is Precision.BFLOAT16
    with pytest.raises(ValueError, match="float16 autocast needs a CUDA device"):
        Settings.from_env(env, device="cpu", precision="float16")
    with pytest.raises(ValueError, match="Settings.precision"):
        Settings.from_env(env, precision="int8")
    assert build_parser().parse_args(["sr", "a.jpg", "--ref", "b.jpg", "--out", "c.png", "--precision", "bfloat16"]).precision == "bfloat16"

    cpu = DeviceChoice.CPU
    assert resources.device_spec(cpu).amp_dtype is None  # CPUs stay float32 unless asked
    assert resources.device_spec(cpu, Precision.FLOAT32).amp_dtype is None
    monkeypatch.setattr("ttsr_core.device.cpu_has_native_bf16", lambda: True)
    assert resources.device_spec(cpu, Precision.BFLOAT16).amp_dtype is Precision.BFLOAT16
    assert "no native bf16" not in caplog.text
    monkeypatch.setattr("ttsr_core.device.cpu_has_native_bf16", lambda: False)
    assert resources.device_spec(cpu, Precision.BFLOAT16).amp_dtype is Precision.BFLOAT16
    assert "no native bf16" in caplog.text  # allowed, with the reason it will be slow
    with pytest.raises(ValueError, match="needs a CUDA device"):
        resources.device_spec(cpu, Precision.FLOAT16)
    spec = resources.ResourceSpec.of(Settings.from_env(env, precision="bfloat16"))
    assert spec.precision is Precision.BFLOAT16  # runs that differ in precision do not share a device spec


def test_verification_runs_before_the_device_slot_is_taken(make_album, settings_for, monkeypatch) -> None:
    """Feature matching is CPU work: a GPU slot is held only for the model's relevance and the enhancement."""
    import contextlib

    from flows import resources
    from flows.targets import retrieving

    album = make_album(2)
    settings = settings_for(embedder="fallback")
    job, target = _indexed_target(album, settings)
    held: list[bool] = [False]
    seen: list[bool] = []
    real_slot, real_verify = resources.Resources.device_slot, retrieving.verify_candidates

    @contextlib.contextmanager
    def slot(self):  # type: ignore[no-untyped-def]
        with real_slot(self):
            held[0] = True
            try:
                yield
            finally:
                held[0] = False

    def verify(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(held[0])
        return real_verify(*args, **kwargs)

    monkeypatch.setattr(resources.Resources, "device_slot", slot)
    monkeypatch.setattr(retrieving, "verify_candidates", verify)
    done = _enhance(target, job, settings)
    assert done.status is Outcome.ENHANCED and done.reranked
    assert seen == [False]
    assert done.references[0].inliers is not None  # the ranking still carries what verification found
