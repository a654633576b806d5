"""The shipped compact checkpoint: loads strictly, is the ttsr-lite preset, and beats bicubic on a real photo."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ttsr_core.config import SHIPPED_MODEL, preset
from ttsr_core.metrics import psnr_y
from ttsr_core.model.checkpoint import CheckpointLayout, load_checkpoint
from ttsr_core.model.inference import resize_bicubic, super_resolve

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = SHIPPED_MODEL
PHOTO = ROOT / "examples" / "album" / "graffiti" / "graf3.png"  # a real photo shipped in the repo


def test_shipped_checkpoint_loads_and_describes_itself() -> None:
    """Round 3's default: its third stage, trained on from the second (MODEL_CARD.md, "Round 3")."""
    loaded = load_checkpoint(SHIPPED)
    assert loaded.layout is CheckpointLayout.OWN
    assert loaded.config == replace(preset("ttsr-lite"), relevance_gate=True)
    assert loaded.meta["step"] == 3200 and loaded.meta["stage"] == "sr" and loaded.meta["holdout"]
    stage2 = load_checkpoint(SHIPPED.parent / "ttsr-lite-x4-round3-stage2.safetensors")
    assert loaded.meta["init"]["sha256"] == stage2.sha256
    assert SHIPPED.stat().st_size <= 20 * 2**20


def test_round_3s_second_stage_stays_beside_it_and_says_what_it_started_from() -> None:
    """The default until its third stage: 2200 steps on from the 700-step candidate."""
    loaded = load_checkpoint(SHIPPED.parent / "ttsr-lite-x4-round3-stage2.safetensors")
    assert loaded.config == replace(preset("ttsr-lite"), relevance_gate=True)
    assert loaded.meta["step"] == 2200 and loaded.meta["degradation"] == "mixed"
    assert loaded.meta["init"]["sha256"] == load_checkpoint(SHIPPED.parent / "ttsr-lite-x4-gated.safetensors").sha256


@pytest.mark.parametrize(("name", "step", "degradation"), [
    ("ttsr-lite-x4-clean.safetensors", 600, "bicubic"),  # the community-protocol variant
    ("ttsr-lite-x4-round1.safetensors", 6000, None),  # kept for comparison; predates degradation metadata
    ("ttsr-lite-x4-round2.safetensors", 3500, "mixed"),  # round 2's default, kept for comparison
])
def test_the_other_shipped_variants_load_and_say_how_they_were_trained(name: str, step: int, degradation) -> None:
    loaded = load_checkpoint(SHIPPED.parent / name)
    assert loaded.config == preset("ttsr-lite")
    assert loaded.meta["step"] == step and loaded.meta.get("degradation") == degradation
    assert loaded.sha256 != load_checkpoint(SHIPPED).sha256


def test_the_gated_candidate_learned_its_gate_and_says_what_it_started_from() -> None:
    """Round 3's first candidate: the relevance-gated architecture, fine-tuned from round 2 for 700 steps."""
    loaded = load_checkpoint(SHIPPED.parent / "ttsr-lite-x4-gated.safetensors")
    assert loaded.config == replace(preset("ttsr-lite"), relevance_gate=True)
    assert loaded.meta["step"] == 700 and loaded.meta["degradation"] == "mixed"
    assert loaded.meta["init"]["sha256"] == load_checkpoint(SHIPPED.parent / "ttsr-lite-x4-round2.safetensors").sha256
    # Trained, not the gate's starting point (scale 10, shift 0): its threshold moved off zero.
    assert float(loaded.model.gate.shift.detach()) > 0.05


def test_shipped_model_beats_bicubic_with_a_related_reference() -> None:
    """A trained model, not a random one: on an unseen real photo it must add detail over bicubic."""
    photo = np.asarray(Image.open(PHOTO).convert("RGB"))
    hr = photo[200:328, 300:460]  # 160×128 HR crop
    ref = photo[150:390, 250:530]  # the surrounding region as the reference
    lr = resize_bicubic(hr, hr.shape[1] // 4, hr.shape[0] // 4)
    bicubic = resize_bicubic(lr, hr.shape[1], hr.shape[0])
    sr = super_resolve(load_checkpoint(SHIPPED).model, lr, [ref]).image
    assert psnr_y(sr, hr) > psnr_y(bicubic, hr) + 0.5


def test_no_visible_seam_on_a_real_photo_with_the_shipped_model() -> None:
    """Tiles of a real photo, blended, look like one pass: no step in the image along tile edges."""
    photo = np.asarray(Image.open(ROOT / "examples" / "album" / "leuven" / "leuvenB.jpg").convert("RGB"))
    lr = resize_bicubic(photo[:384, :512], 128, 96)  # LR 128×96 → tiles of 48 with overlap 16
    ref = photo[100:500, 200:700]
    model = load_checkpoint(SHIPPED).model
    whole = super_resolve(model, lr, [ref]).image.astype(np.float64)
    tiled = super_resolve(model, lr, [ref], tile=48, tile_overlap=16).image.astype(np.float64)
    diff = np.abs(whole - tiled)
    assert diff.mean() < 0.05 and diff.max() <= 2  # grey levels: measured 0.0002 mean, 1 max (rounding)
    # A seam would show as an extra jump between neighbouring columns/rows of the tiled output that
    # the untiled output does not have; compare that jump at tile-overlap centres with everywhere.
    col_jump = np.abs(np.diff(tiled, axis=1)).mean(axis=(0, 2)) - np.abs(np.diff(whole, axis=1)).mean(axis=(0, 2))
    row_jump = np.abs(np.diff(tiled, axis=0)).mean(axis=(1, 2)) - np.abs(np.diff(whole, axis=0)).mean(axis=(1, 2))
    assert np.abs(col_jump).max() < 0.1 and np.abs(row_jump).max() < 0.1  # measured ≤ 0.014
