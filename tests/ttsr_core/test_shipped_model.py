"""The shipped compact checkpoint: loads strictly, is the ttsr-lite preset, and beats bicubic on a real photo."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ttsr_core.checkpoint import CheckpointLayout, load_checkpoint
from ttsr_core.config import preset
from ttsr_core.inference import resize_bicubic, super_resolve
from ttsr_core.metrics import psnr_y

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "models" / "ttsr-lite" / "ttsr-lite-x4.safetensors"
PHOTO = ROOT / "examples" / "album" / "graffiti" / "graf3.png"  # a real photo shipped in the repo


def test_shipped_checkpoint_loads_and_describes_itself() -> None:
    loaded = load_checkpoint(SHIPPED)
    assert loaded.layout is CheckpointLayout.OWN
    assert loaded.config == preset("ttsr-lite")
    assert loaded.meta["step"] == 6000 and loaded.meta["holdout"]
    assert SHIPPED.stat().st_size <= 20 * 2**20


def test_shipped_model_beats_bicubic_with_a_related_reference() -> None:
    """A trained model, not a random one: on an unseen real photo it must add detail over bicubic."""
    photo = np.asarray(Image.open(PHOTO).convert("RGB"))
    hr = photo[200:328, 300:460]  # 160×128 HR crop
    ref = photo[150:390, 250:530]  # the surrounding region as the reference
    lr = resize_bicubic(hr, hr.shape[1] // 4, hr.shape[0] // 4)
    bicubic = resize_bicubic(lr, hr.shape[1], hr.shape[0])
    sr = super_resolve(load_checkpoint(SHIPPED).model, lr, [ref]).image
    assert psnr_y(sr, hr) > psnr_y(bicubic, hr) + 0.5
