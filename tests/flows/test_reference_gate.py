"""The reference gate with the shipped model: a planted wrong reference adds no detail; the right one is used.

The sample album's photos: the old-phone thumbnail of an aloe, its right reference (the other stereo
view) and a wrong one (a graffiti wall). The shipped model's relevance for the wrong photo is under the
default `--min-relevance` and verification finds no geometry, so `refsr enhance` must enhance the aloe
from itself: the same pixels as the single-image path, hence no more detail than it. Without the gate
(`--min-relevance 0`) the wall's texture is pasted in, which is what the gate is for.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from db import queries
from db.models import PhotoRole
from flows.enhancing import enhance_task
from flows.provenance import describe_path
from flows.report import build_gallery
from flows.resources import resources_for
from flows.settings import Settings
from flows.targets.jobs import Outcome, RunContext, TargetOutcome
from pipeline.enhance import enhance_photo, plan_output_paths
from pipeline.provenance import xmp
from tests.flows.conftest import index_album, job_for
from ttsr_core.arrays import resize_bicubic
from ttsr_core.config import SHIPPED_MODEL
from ttsr_core.model.checkpoint import load_checkpoint

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "album"
TARGET = SAMPLE / "aloe" / "old-phone" / "aloeL-small.jpg"

pytestmark = pytest.mark.skipif(not SHIPPED_MODEL.is_file(), reason="the shipped model is not in this checkout")


def _album(root: Path, reference: Path) -> Path:
    root.mkdir(parents=True)
    shutil.copy(TARGET, root / TARGET.name)
    shutil.copy(reference, root / reference.name)
    return root


def _enhanced(album: Path, settings: Settings) -> TargetOutcome:
    """Scan, embed and index `album` as the enhance flow does, then enhance its one target."""
    album_id = index_album(album, settings)
    job = job_for(album, settings, album_id)
    with resources_for(settings).sessions() as session:
        [target] = queries.photos(session, album_id, role=PhotoRole.target)
    out = plan_output_paths(job.out_dir, [(target.rel_path, target.format)], job.params)
    done = enhance_task.fn(target.id, RunContext(settings, job), str(out[target.rel_path]))
    assert done.status is Outcome.ENHANCED, done.error
    return done


def _pixels(path: str | Path | None) -> np.ndarray:
    return np.asarray(Image.open(path or "").convert("RGB")).astype(np.float64)


def _detail(path: str | Path | None) -> float:
    """Mean |output − bicubic| in grey levels: what the model added over plain enlargement."""
    out = _pixels(path)
    lr = np.asarray(Image.open(TARGET).convert("RGB"))
    return float(np.abs(out - resize_bicubic(lr, out.shape[1], out.shape[0]).astype(np.float64)).mean())


def test_a_planted_wrong_reference_adds_no_detail_over_the_single_image_path(tmp_path: Path, settings_for) -> None:
    settings = settings_for(model_path=SHIPPED_MODEL, embedder="fallback")
    done = _enhanced(_album(tmp_path / "wrong", SAMPLE / "graffiti" / "graf3.png"), settings)
    assert done.references == () and done.ref_paths == ()  # the wall lent nothing

    alone = enhance_photo(load_checkpoint(SHIPPED_MODEL).model, TARGET, [], tmp_path / "alone.jpg",
                          settings.enhance_params())
    assert np.array_equal(_pixels(done.output_path), _pixels(alone.output_path))
    assert _detail(done.output_path) <= _detail(alone.output_path)

    # Every candidate keeps its scores in the record and the file says it was made from the photo alone.
    answer = describe_path(settings, done.output_path or "")
    [info] = answer.enhancements
    assert info.references == () and [Path(c.path or "").name for c in info.candidates] == ["graf3.png"]
    assert info.candidates[0].relevance is not None and info.candidates[0].relevance < settings.min_relevance
    carried = xmp.read(Path(done.output_path or "").read_bytes())
    assert carried is not None and carried.references == ()
    with resources_for(settings).sessions() as session:
        page = build_gallery(session, album_root=tmp_path / "wrong", out_dir=tmp_path / "gallery").read_text()
    assert "enhanced from the photo alone" in page

    # Without the gate the same album pastes the wall's texture: more detail than the photo alone holds.
    ungated = _enhanced(_album(tmp_path / "ungated", SAMPLE / "graffiti" / "graf3.png"),
                        settings_for(model_path=SHIPPED_MODEL, embedder="fallback", min_relevance=0.0,
                                     home=tmp_path / "home-ungated"))
    assert [Path(p).name for p in ungated.ref_paths] == ["graf3.png"]
    assert _detail(ungated.output_path) > _detail(alone.output_path)


def test_the_right_reference_passes_the_gate(tmp_path: Path, settings_for) -> None:
    settings = settings_for(model_path=SHIPPED_MODEL, embedder="fallback")
    done = _enhanced(_album(tmp_path / "right", SAMPLE / "aloe" / "aloeR.jpg"), settings)
    assert [Path(p).name for p in done.ref_paths] == ["aloeR.jpg"]
    [ref] = done.references
    assert ref.inliers is not None and ref.inliers > 12  # geometry vouches for it
