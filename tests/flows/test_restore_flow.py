"""A recorded copy gets its original back in `refsr enhance`: restored pixels, provenance, no rework on a rerun."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from db import queries
from db.models import Enhancement, PhotoRole
from durable.files import sha256_file
from flows.copies import find_copies
from flows.enhancing import enhance_task
from flows.provenance import describe_path
from flows.report import build_gallery
from flows.resources import resources_for
from flows.settings import Settings
from flows.targets.jobs import JobContext, Outcome, RunContext, TargetOutcome
from pipeline.enhance import plan_output_paths
from pipeline.provenance import credentials, xmp
from tests.flows.conftest import index_album, job_for
from tests.pipeline.matching.scenes import scene
from ttsr_core.arrays import resize_bicubic
from ttsr_core.metrics import psnr_y


def _album(root: Path) -> np.ndarray:
    """A textured original, its 0.25× JPEG q70 messenger copy and an unrelated reference; returns the original."""
    original = scene(11, 800, 600)
    (root / "trip").mkdir(parents=True)
    (root / "chat").mkdir()
    Image.fromarray(original).save(root / "trip" / "original.png")
    small = cv2.resize(original, (200, 150), interpolation=cv2.INTER_AREA)
    Image.fromarray(small).save(root / "chat" / "copy.jpg", "JPEG", quality=70)
    Image.fromarray(scene(12, 800, 600)).save(root / "trip" / "unrelated.jpg", "JPEG", quality=92)
    (root / "refsr.toml").write_text("[scan]\nmin_ref_side = 400\nmax_target_side = 256\n")
    return original


def _indexed(album: Path, settings: Settings) -> JobContext:
    """Scan, embed, find copies and sync the index, as the enhance flow's index steps do; the job context."""
    album_id = index_album(album, settings)
    assert [(c.copy, c.original) for c in find_copies(album_id, str(album), "fallback:v1", settings).copies] \
        == [("chat/copy.jpg", "trip/original.png")]
    return job_for(album, settings, album_id)


def _enhance(job: JobContext, settings: Settings) -> TargetOutcome:
    with resources_for(settings).sessions() as session:
        [target] = queries.photos(session, job.album_id, role=PhotoRole.target)
    out = plan_output_paths(job.out_dir, [(target.rel_path, target.format)], job.params)
    return enhance_task.fn(target.id, RunContext(settings, job), str(out[target.rel_path]))


def _record(settings: Settings, enhancement_id: int | None) -> Enhancement:
    with resources_for(settings).sessions() as session:
        found = session.scalars(select(Enhancement).where(Enhancement.id == enhancement_id)).one()
        session.expunge(found)
        return found


@pytest.fixture
def album(tmp_path: Path) -> tuple[Path, np.ndarray]:
    root = tmp_path / "album"
    return root, _album(root)


def test_a_copy_is_restored_from_its_original_and_says_so(album, settings_for) -> None:
    root, original = album
    settings = settings_for(embedder="fallback")
    job = _indexed(root, settings)
    done = _enhance(job, settings)
    assert done.status is Outcome.ENHANCED, done.error
    assert [Path(p).name for p in done.ref_paths] == ["original.png"]

    output = np.asarray(Image.open(done.output_path or "").convert("RGB"))
    copy = np.asarray(Image.open(root / "chat" / "copy.jpg").convert("RGB"))
    gain = psnr_y(output, original) - psnr_y(resize_bicubic(copy, 800, 600), original)
    assert gain >= 8.0, gain

    original_sha = sha256_file(root / "trip" / "original.png")
    record = _record(settings, done.enhancement_id)
    assert record.restored_from_sha256 == original_sha
    assert record.restoration is not None and record.restoration["covered"] == 1.0
    assert record.restoration["fidelity_db"] > 30 and record.restoration["inliers"] >= 20
    assert record.attention_path is None  # the original covers it all: the model did not run

    carried = xmp.read(Path(done.output_path or "").read_bytes())
    assert carried is not None and carried.restored_from is not None
    assert carried.restored_from.sha256 == original_sha and carried.restored_from.covered == 1.0
    signed = credentials.verify(Path(done.output_path or ""))
    assert signed.ok and signed.provenance is not None and signed.provenance.restored_from == carried.restored_from

    answer = describe_path(settings, done.output_path or "")
    [info] = answer.enhancements
    assert info.restored_from == str(root / "trip" / "original.png") and "disagree" not in answer.note

    with resources_for(settings).sessions() as session:
        page = build_gallery(session, album_root=root, out_dir=root.parent / "gallery").read_text()
    assert "restored from" in page and "its original trip/original.png (100% of the pixels" in page
    assert "the model did not run" in page and "matched features:" in page

    again = _enhance(job, settings)  # a rerun does no work
    assert again.status is Outcome.CACHED and again.job_key == done.job_key


def test_without_restore_the_model_enhances_the_copy(album, settings_for) -> None:
    root, original = album
    restored = _enhance(_indexed(root, settings_for(embedder="fallback")), settings_for(embedder="fallback"))
    settings = settings_for(embedder="fallback", restore=False)
    job = _indexed(root, settings)
    done = _enhance(job, settings)
    assert done.status is Outcome.ENHANCED, done.error  # another job: not the restored one's cache
    assert done.job_key != restored.job_key
    record = _record(settings, done.enhancement_id)
    assert record.restored_from_sha256 is None and record.restoration is None
    assert record.attention_path is not None  # the model ran
    carried = xmp.read(Path(done.output_path or "").read_bytes())
    assert carried is not None and carried.restored_from is None
    output = np.asarray(Image.open(done.output_path or "").convert("RGB"))
    copy = np.asarray(Image.open(root / "chat" / "copy.jpg").convert("RGB"))
    assert psnr_y(output, original) - psnr_y(resize_bicubic(copy, 800, 600), original) < 8.0
