"""End to end: a target cut from its reference, enhanced by a real network, shows the matched region in the gallery.

The correspondence is planted: the target is the ¼-size copy of a known window of the reference, so
every target cell's true reference cell is known. The network's own search finds it (identical content
has relevance 1 whatever the weights), and the gallery's reference crop must show that window.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipeline.attention import load_attention, reference_point
from pipeline.enhance import enhance_photo
from pipeline.gallery.cards import GalleryCard, GalleryReference, GallerySettings
from pipeline.gallery.render import render_gallery
from pipeline.params import EnhanceParams
from pipeline.vocabulary import EnhancementStatus
from ttsr_core.arrays import resize_bicubic
from ttsr_core.config import SearchConfig, SearchMode, TTSRConfig
from ttsr_core.model.net import TTSR

TINY = TTSRConfig(num_feat=8, num_block=(1, 1, 1, 1), lte_channels=(4, 8, 8))
TOP, LEFT = 48, 64  # the target's window in the reference (multiples of 4: whole lv3 cells)


def _textured(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Blobs about 6 px wide: every 3×3 lv3 patch is distinct, and downscaling keeps them."""
    small = rng.integers(0, 256, (h // 6, w // 6, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC))


def test_the_reference_crop_is_the_region_the_target_was_cut_from(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    ref = _textured(rng, 192, 256)
    window = ref[TOP : TOP + 96, LEFT : LEFT + 128]
    lr = resize_bicubic(window, 32, 24)  # the target: the window at ¼ size
    Image.fromarray(ref).save(tmp_path / "ref.png")
    Image.fromarray(lr).save(tmp_path / "target.png")
    torch.manual_seed(0)
    model = TTSR(TINY).eval()
    params = EnhanceParams(search=SearchConfig(mode=SearchMode.EXACT), ref_side_factor=8.0)
    result = enhance_photo(model, tmp_path / "target.png", [tmp_path / "ref.png"], tmp_path / "out.png", params,
                           attention_path=tmp_path / "att.npz")
    maps = load_attention(result.attention_path)
    assert maps.ref_grids == ((48, 64),)  # the reference as the model saw it: unresized

    # The network's own match at the planted correspondence, away from the window's border (where
    # the target's patches see zero padding the reference does not have).
    inner = [(r, c) for r in range(2, 22) for c in range(2, 30)]
    located = [reference_point(maps, (r, c), [ref.shape[:2]]) for r, c in inner]
    on_target = [abs(p[1] - (TOP + 4 * r + 2)) <= 4 and abs(p[2] - (LEFT + 4 * c + 2)) <= 4
                 for (r, c), p in zip(inner, located)]
    assert np.mean(on_target) > 0.9

    card = GalleryCard(
        key="planted", title="target.png", status=EnhancementStatus.succeeded, target_path=tmp_path / "target.png",
        enhanced_path=result.output_path, references=(GalleryReference("ref.png", tmp_path / "ref.png", 0, 0.9, 0.9),),
        model="tiny", timings=(), attention=result.attention_path,
    )
    render_gallery([card], tmp_path / "gallery", settings=GallerySettings(crop_side=32))
    (card_dir,) = (tmp_path / "gallery" / "assets" / "cards").iterdir()
    crop = np.asarray(Image.open(card_dir / "crop-reference.png").convert("RGB")).astype(np.float64)
    left, top, right, bottom = _box_of(card_dir)
    # The enhanced crop's box, in output pixels = window pixels, names the reference region it shows.
    expected = ref[TOP + top : TOP + bottom, LEFT + left : LEFT + right].astype(np.float64)
    elsewhere = ref[:32, :32].astype(np.float64)
    assert crop.shape == expected.shape
    assert np.abs(crop - expected).mean() < 0.25 * np.abs(crop - elsewhere).mean()


def _box_of(card_dir: Path) -> tuple[int, int, int, int]:
    import json

    meta = json.loads((card_dir / "meta.json").read_text())
    return tuple(meta["box"])  # type: ignore[return-value]
