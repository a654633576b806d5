"""Fixtures for flow tests: a tiny random TTSR checkpoint and generated albums (no downloads, no real photos)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from PIL import Image

if TYPE_CHECKING:
    from flows.settings import Settings
    from flows.targets.jobs import JobContext

ALBUM_CONFIG = "[scan]\nmin_ref_side = 96\nmax_target_side = 48\n"


def scene(seed: int, width: int = 128, height: int = 96) -> np.ndarray:
    """A seeded synthetic 'photo': smooth colour field, a few bright shapes and fine texture."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(40, 200, size=3)
    slope = rng.uniform(-1.0, 1.0, size=(2, 3))
    img = base + yy[..., None] * slope[0] + xx[..., None] * slope[1]
    for _ in range(4):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(8, 24)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        img[mask] = rng.uniform(0, 255, size=3)
    stripes = 25 * np.sin(xx * rng.uniform(0.3, 1.2) + yy * rng.uniform(0.3, 1.2))
    img += stripes[..., None] + rng.normal(0, 6, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def small_view(image: np.ndarray, shift: int = 6, side: int = 32) -> np.ndarray:
    """Another 'view' of a scene (shifted crop), shrunk with bicubic to `side` on its long side."""
    view = np.roll(image, shift, axis=1)
    h, w = view.shape[:2]
    scale = side / max(h, w)
    return np.asarray(Image.fromarray(view).resize((round(w * scale), round(h * scale)), Image.BICUBIC))


def add_pair(root: Path, name: str, seed: int, *, orientation: int | None = None) -> tuple[Path, Path]:
    """Write scene `seed` as reference `<name>/ref.png` and its small view `<name>/small/<name>.jpg`."""
    big = scene(seed)
    ref = root / name / "ref.png"
    target = root / name / "small" / f"{name}.jpg"
    target.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(big).save(ref)
    params: dict[str, object] = {"quality": 92}
    exif = Image.Exif()
    exif[0x010F] = "Test Camera"
    if orientation is not None:
        exif[0x0112] = orientation
    params["exif"] = exif.tobytes()
    Image.fromarray(small_view(big)).save(target, "JPEG", **params)
    return ref, target


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight TTSR small enough that one enhancement takes milliseconds."""
    import torch

    from ttsr_core.model.checkpoint import save_checkpoint
    from ttsr_core.config import TTSRConfig
    from ttsr_core.model.net import TTSR

    torch.manual_seed(0)
    model = TTSR(TTSRConfig(num_feat=4, num_block=(1, 1, 1, 1), lte_channels=(4, 4, 8)))
    return save_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors", model, {"name": "tiny-test"})


@pytest.fixture(scope="session")
def other_tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same architecture, other weights: 'a new model'."""
    import torch

    from ttsr_core.model.checkpoint import save_checkpoint
    from ttsr_core.config import TTSRConfig
    from ttsr_core.model.net import TTSR

    torch.manual_seed(1)
    model = TTSR(TTSRConfig(num_feat=4, num_block=(1, 1, 1, 1), lte_channels=(4, 4, 8)))
    return save_checkpoint(tmp_path_factory.mktemp("model2") / "tiny2.safetensors", model, {"name": "tiny-test-2"})


@pytest.fixture
def make_album(tmp_path: Path) -> Callable[..., Path]:
    """make_album(n_scenes=3) -> album root with refsr.toml and one reference + one target per scene."""

    def _make(n_scenes: int = 3, name: str = "album") -> Path:
        root = tmp_path / name
        root.mkdir()
        (root / "refsr.toml").write_text(ALBUM_CONFIG)
        for i in range(n_scenes):
            add_pair(root, f"scene{i}", seed=100 + i)
        return root

    return _make


@pytest.fixture
def settings_for(tmp_path: Path, tiny_model: Path) -> Callable[..., object]:
    """settings_for(**overrides) -> Settings with a private workspace and the tiny model on CPU."""
    from flows.settings import Settings

    def _settings(**overrides: object) -> Settings:
        values: dict[str, object] = {"home": tmp_path / "home", "model_path": tiny_model, "device": "cpu",
                                     "retry_delay_s": 0.0, "top_k": 2}
        values.update(overrides)
        return Settings.from_env(env={}, **values)

    return _settings


def index_album(album: Path, settings: Settings) -> int:
    """Scan `album` and embed every photo, as the enhance flow's index steps do; the album's id."""
    from db import queries
    from flows.indexing import embed_task, scan_task
    from flows.resources import resources_for

    counts = scan_task.fn(str(album), settings)
    with resources_for(settings).sessions() as session:
        ids = [p.id for p in queries.photos(session, counts.album_id)]
    for pid in ids:
        assert embed_task.fn(pid, str(album), settings).error is None
    return counts.album_id


def job_for(album: Path, settings: Settings, album_id: int) -> JobContext:
    """The index synced and the job context an enhance run on `album` hands its target tasks (CPU, fallback)."""
    from flows.indexing import sync_index_task
    from flows.resources import resources_for
    from flows.targets.jobs import JobContext

    state = sync_index_task.fn(album_id, "fallback:v1", settings)
    ckpt = resources_for(settings).model()
    return JobContext(album_root=str(album), album_id=album_id, run_id=None, out_dir=str(settings.output_dir(album)),
                      model_sha256=ckpt.sha256, model_name=ckpt.name, embedder_key="fallback:v1",
                      index_path=str(state.path), device="cpu", params=settings.enhance_params())
