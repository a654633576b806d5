"""pipeline.gallery: peak finding, heat overlays, attention files, caching, escaping and the page."""

from __future__ import annotations

import base64
import hashlib
import html
import os
import re
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image

from pipeline.attention import AttentionMaps, load_attention, save_attention
from pipeline.gallery.assets import ensure_bicubic
from pipeline.gallery.cards import GalleryCard, GalleryReference, GallerySettings
from pipeline.gallery.heat import heat_colours, heat_overlay, peak_region, transfer_weight
from pipeline.gallery.page import file_href
from pipeline.gallery.render import render_gallery
from pipeline.vocabulary import EnhancementStatus
from ttsr_core.arrays import resize_bicubic

LR_W, LR_H = 40, 30
MARK = (255, 0, 255)


def _save(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, format="PNG")
    return path


def _noise(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    return rng.integers(40, 200, size=(height, width, 3), dtype=np.uint8)


def _pixel(path: Path, row: int, col: int) -> tuple[int, ...]:
    with Image.open(path) as im:
        return tuple(im.convert("RGB").getpixel((col, row)))


@pytest.fixture
def album(tmp_path: Path) -> dict[str, Path]:
    """A target, its ×4 output with a marker block where attention peaks, and a marked reference.

    The output is the bicubic upscale except for the marker: the only detail it added is there.
    """
    rng = np.random.default_rng(3)
    root = tmp_path / "album"
    lr = _noise(rng, LR_W, LR_H)
    enhanced = resize_bicubic(lr, LR_W * 4, LR_H * 4).copy()
    # Soft-attention peak planted at LR (20, 30) → output pixels (80..84, 120..124), centre (82, 122).
    enhanced[78:86, 118:126] = MARK
    ref = _noise(rng, 200, 160)
    ref[4 * 9 : 4 * 9 + 4, 4 * 13 : 4 * 13 + 4] = MARK  # lv3 cell (9, 13) of a 50-wide grid
    return {
        "root": root,
        "lr": _save(root / "a <b>&'\"#?%.png", lr),
        "enhanced": _save(root / "enhanced" / "out.png", enhanced),
        "ref": _save(root / "refs" / "ref.png", ref),
    }


def _soft() -> np.ndarray:
    soft = np.full((LR_H, LR_W), 0.2, dtype=np.float32)
    soft[18:23, 28:33] = 0.6
    soft[20, 30] = 0.95
    return soft


def _hard(index: int) -> np.ndarray:
    hard = np.zeros((LR_H, LR_W), dtype=np.int64)
    hard[20, 30] = index
    return hard


def _card(album: dict[str, Path], **overrides: object) -> GalleryCard:
    fields: dict[str, object] = {
        "key": "c1",
        "title": album["lr"].name,
        "status": EnhancementStatus.succeeded,
        "target_path": album["lr"],
        "enhanced_path": album["enhanced"],
        "references": (GalleryReference("refs/ref.png", album["ref"], 0, 0.8, 0.55),),
        "model": "ttsr-lite",
        "timings": (("model_s", 1.25),),
        "attention": AttentionMaps(_soft(), _hard(9 * 50 + 13)),
    }
    fields.update(overrides)
    return GalleryCard(**fields)  # type: ignore[arg-type]


def _card_dir(out: Path) -> Path:
    (card_dir,) = (out / "assets" / "cards").iterdir()
    return card_dir


# ---------------------------------------------------------------- measurements


def test_peak_region_matches_brute_force_and_ignores_a_lone_spike() -> None:
    rng = np.random.default_rng(0)
    soft = rng.random((23, 31)).astype(np.float32) * 0.3
    soft[2, 2] = 1.0  # a lone spike
    soft[12:17, 20:25] += 0.5  # the region
    window = 5
    best, where = -1.0, (0, 0)
    for top in range(23 - window + 1):
        for left in range(31 - window + 1):
            mean = float(soft[top : top + window, left : left + window].mean())
            if mean > best:
                best, where = mean, (top, left)
    box = soft[where[0] : where[0] + window, where[1] : where[1] + window]
    r, c = np.unravel_index(int(np.argmax(box)), box.shape)
    assert peak_region(soft, window) == (where[0] + r, where[1] + c)
    assert 12 <= peak_region(soft, window)[0] < 17
    # A window bigger than the map is the whole map: the global max.
    assert peak_region(soft, 100) == (2, 2)
    with pytest.raises(ValueError, match=r"\(0, 4\)"):
        peak_region(np.zeros((0, 4)), 3)


def test_crops_go_where_texture_was_added_not_where_matching_was_easy() -> None:
    """High attention over a region the output left as bicubic (flat sky) loses to lower attention
    where the output added detail."""
    soft = np.full((20, 30), 0.3, dtype=np.float32)
    soft[2:6, 2:6] = 0.95  # easy matches, nothing added
    soft[12:16, 20:24] = 0.7  # texture moved here
    lr = np.full((20, 30, 3), 120, np.uint8)
    bicubic = resize_bicubic(lr, 120, 80)
    enhanced = bicubic.copy()
    enhanced[48:64, 80:96] = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    weight = transfer_weight(soft, enhanced, bicubic)
    assert weight.shape == (20, 30) and weight[2:6, 2:6].max() == 0.0
    assert 12 <= peak_region(weight, 4)[0] < 16 and 20 <= peak_region(weight, 4)[1] < 24
    assert peak_region(soft, 4) == (2, 2)  # attention alone would have picked the flat corner


def test_heat_colours_and_overlay() -> None:
    colours = heat_colours(np.array([0.0, 1.0, 2.0, -1.0]))
    assert colours.tolist() == [[0, 0, 4], [252, 255, 164], [252, 255, 164], [0, 0, 4]]
    base = np.full((30, 40, 3), 128, dtype=np.uint8)
    blended, lo, hi = heat_overlay(base, _soft())
    assert blended.shape == (30, 40, 3) and blended.dtype == np.uint8
    assert (lo, hi) == (pytest.approx(0.2), pytest.approx(0.95))
    # Hot is brighter than cold on the same grey base.
    assert blended[20, 30].sum() > blended[0, 0].sum()
    flat, lo, hi = heat_overlay(base, np.ones((3, 4), dtype=np.float32))
    assert lo == hi == 1.0 and flat.shape == base.shape


# ---------------------------------------------------------------- attention files and validation


def test_attention_files_round_trip_and_bad_files_are_refused(tmp_path: Path) -> None:
    maps = AttentionMaps(_soft(), _hard(5), ref_grids=((4, 5), (2, 3)))
    loaded = load_attention(save_attention(tmp_path / "a.npz", maps))
    assert np.array_equal(loaded.soft, maps.soft.astype(np.float16).astype(np.float32))
    assert loaded.hard is not None and np.array_equal(loaded.hard, maps.hard) and loaded.hard[20, 30] == 5
    assert loaded.ref_grids == ((4, 5), (2, 3))
    soft_only = load_attention(save_attention(tmp_path / "b.npz", AttentionMaps(_soft())))
    assert soft_only.hard is None and soft_only.ref_grids is None

    np.savez(tmp_path / "c.npz", other=_soft())
    with pytest.raises(ValueError, match="no 'soft' array"):
        load_attention(tmp_path / "c.npz")
    np.save(tmp_path / "d.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError):
        load_attention(tmp_path / "d.npy")  # never unpickles
    np.save(tmp_path / "e.npy", _soft())
    with pytest.raises(ValueError, match="not an attention archive"):
        load_attention(tmp_path / "e.npy")  # a bare map is not what enhance writes
    np.savez(tmp_path / "f.npz", soft=np.zeros(5))
    with pytest.raises(ValueError, match=r"\(h, w\)"):
        load_attention(tmp_path / "f.npz")
    with pytest.raises(FileNotFoundError):
        load_attention(tmp_path / "missing.npz")


def test_validation_names_the_bad_value(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'bad key!'"):
        GalleryCard(key="bad key!", title="t", status=EnhancementStatus.failed, target_path=None)
    with pytest.raises(ValueError, match="'exploded'"):
        GalleryCard(key="k", title="t", status="exploded", target_path=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="int"):
        GalleryCard(key="k", title="t", status="failed", target_path=None, attention=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shape"):
        AttentionMaps(_soft(), np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="GIF"):
        GallerySettings(thumb_format="GIF")
    with pytest.raises(ValueError, match="0"):
        GallerySettings(crop_side=0)
    card = GalleryCard(key="k", title="t", status="failed", target_path=str(tmp_path / "x.png"))
    assert card.status is EnhancementStatus.failed and isinstance(card.target_path, Path)
    with pytest.raises(ValueError, match=r"\['k'\]"):
        render_gallery([card, card], tmp_path / "out")


def test_file_href_quotes_everything_that_would_break_a_url(tmp_path: Path) -> None:
    target = tmp_path / "album" / "a #1?%<x>.jpg"
    href = file_href(target, tmp_path / "gallery")
    assert href == "../album/a%20%231%3F%25%3Cx%3E.jpg"
    assert unquote(href) == "../album/a #1?%<x>.jpg"


# ---------------------------------------------------------------- rendering


def test_page_escapes_album_strings_and_has_no_remote_urls(album: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    nasty = "<script>alert(1)</script>.jpg"
    index = render_gallery(
        [
            _card(album, title=nasty),
            _card(
                album,
                key="c2",
                title="x",
                status="failed",
                enhanced_path=None,
                attention=None,
                error="boom <img src=x onerror=alert(2)> & more",
            ),
        ],
        out,
        title="run <i>7</i>",
        summary=(("album", "/photos/<b>me</b>"),),
    )
    page = index.read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.jpg" in page
    assert "boom &lt;img src=x onerror=alert(2)&gt; &amp; more" in page
    assert "run &lt;i&gt;7&lt;/i&gt;" in page and "/photos/&lt;b&gt;me&lt;/b&gt;" in page
    assert page.count("<script") == 1 and "<img src=x" not in page and "<i>7" not in page
    assert not re.search(r"https?://", page, re.IGNORECASE)
    assert not re.search(r"(src|href)=\"//", page)
    assert "&#x27;" in page  # the apostrophe of the target's file name, escaped in attributes


def test_every_image_is_lazy_sized_and_local(album: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    page = render_gallery([_card(album)], out).read_text(encoding="utf-8")
    tags = re.findall(r"<img [^>]*>", page)
    assert len(tags) == 11  # input, bicubic, enhanced, reference, output + heat layer, 4 crops, matched features
    for tag in tags:
        assert 'loading="lazy"' in tag and 'decoding="async"' in tag
        assert re.search(r'width="\d+" height="\d+"', tag)
        src = html.unescape(re.search(r'src="([^"]+)"', tag).group(1))  # type: ignore[union-attr]
        assert src.startswith("assets/") and (out / unquote(src)).is_file()
    # Full resolution is linked to the album, not copied into the gallery.
    hrefs = {html.unescape(h) for h in re.findall(r'<a href="([^"#][^"]*)"', page)}
    for source in (album["lr"], album["enhanced"], album["ref"]):
        assert file_href(source, out) in hrefs
    assert not list(out.rglob("out.png")) and not list(out.rglob("ref.png"))


def test_heat_is_laid_over_the_output_at_its_size_with_an_opacity_slider(album: dict[str, Path],
                                                                       tmp_path: Path) -> None:
    out = tmp_path / "out"
    card = _card(album, params='{"refs": 1, "tile": 256}')
    page = render_gallery([card], out, settings=GallerySettings(heat_alpha=0.4)).read_text("utf-8")
    with Image.open(album["enhanced"]) as im:
        out_w, out_h = im.size
    base = re.search(r'<img class="heat-base" src="([^"]+)" width="(\d+)" height="(\d+)"', page)
    layer = re.search(r'<img class="heat-layer" src="([^"]+)" width="(\d+)" height="(\d+)"', page)
    assert base and layer
    # Shown at the output's size (not a 160 px thumbnail), the two pictures one size, the layer translucent.
    assert (int(base[2]), int(base[3])) == (int(layer[2]), int(layer[3])) == (out_w, out_h)
    layer_file, base_file = (out / unquote(html.unescape(m[1])) for m in (layer, base))
    with Image.open(layer_file) as im, Image.open(base_file) as b:
        assert im.mode == "RGBA" and im.size == b.size == (out_w, out_h)
        alpha = np.asarray(im)[..., 3]
    assert 0 < alpha.min() < alpha.max() == 255  # where attention is low the output shows through
    assert 'class="heat-opacity" min="0" max="100" value="40" hidden' in page
    # The raw parameters are folded away, not a row among the scores.
    assert '<details class="params"><summary>parameters</summary><pre>{&quot;refs&quot;: 1' in page
    assert "<dt>params</dt>" not in page
    # LR fidelity says which way is better.
    assert re.search(r"<dt>LR fidelity</dt><dd>[^<]*higher = the output, scaled back down, is closer to the input",
                     page)


def test_thumbnails_are_small_and_never_upscaled(album: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    render_gallery([_card(album)], out, settings=GallerySettings(thumb_side=64))
    sizes = {}
    for thumb in (out / "assets" / "thumbs").iterdir():
        with Image.open(thumb) as im:
            assert im.format == "JPEG"
            sizes[thumb] = im.size
    assert sorted(sizes.values()) == [(40, 30), (64, 48), (64, 51)]  # LR kept; 160×120 and 200×160 shrunk
    render_gallery([_card(album)], tmp_path / "webp", settings=GallerySettings(thumb_format="WEBP"))
    assert all(p.suffix == ".webp" for p in (tmp_path / "webp" / "assets" / "thumbs").iterdir())


def test_crops_are_centred_on_the_attention_peak_and_the_hard_attention_source(
    album: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    page = render_gallery([_card(album)], out, settings=GallerySettings(crop_side=32)).read_text(
        "utf-8"
    )
    card_dir = _card_dir(out)
    for name in ("crop-enhanced.png", "crop-bicubic.png", "crop-lr.png", "crop-reference.png"):
        with Image.open(card_dir / name) as im:
            assert im.size == (32, 32), name
    assert _pixel(card_dir / "crop-enhanced.png", 16, 16) == MARK
    assert _pixel(card_dir / "crop-reference.png", 16, 16) == MARK
    assert _pixel(card_dir / "crop-reference.png", 14, 14) == MARK
    assert "at (54, 38) in refs/ref.png" in page  # lv3 cell (9, 13) → pixel centre (4·13+2, 4·9+2)
    assert "soft attention" in page and (card_dir / "heat.png").is_file()


def test_reference_crop_follows_a_resized_reference(album: dict[str, Path], tmp_path: Path) -> None:
    # The model saw the 200×160 reference at half size: a 25×20 lv3 grid; cell (4, 6) covers
    # model pixels (16..20, 24..28) → file pixels (32..40, 48..56).
    ref = np.asarray(Image.open(album["ref"]).convert("RGB")).copy()
    ref[32:40, 48:56] = (0, 255, 0)
    _save(album["ref"], ref)
    card = _card(album, attention=AttentionMaps(_soft(), _hard(4 * 25 + 6), ref_grids=((20, 25),)))
    render_gallery([card], tmp_path / "out", settings=GallerySettings(crop_side=32))
    crop = _card_dir(tmp_path / "out") / "crop-reference.png"
    with Image.open(crop) as im:
        assert im.size == (32, 32)  # 64×64 of the file, shown at the model's scale
    assert _pixel(crop, 16, 16) == (0, 255, 0)


def test_hard_index_out_of_range_or_missing_attention_degrade_with_a_note(
    album: dict[str, Path], tmp_path: Path
) -> None:
    page = render_gallery(
        [
            _card(album, key="a", attention=AttentionMaps(_soft(), _hard(10**6))),
            _card(album, key="b", attention=tmp_path / "nope.npy"),
            _card(album, key="c", attention=None),
        ],
        tmp_path / "out",
    ).read_text("utf-8")
    assert "hard attention index 1000000 is outside the references&#x27; 2000 positions" in page
    assert "attention map unusable (file not found)" in page
    assert "no soft-attention map was saved for this run: crops are centred" in page
    assert page.count('id="card-') == 3


def test_cache_reuses_unchanged_and_rebuilds_changed_sources(album: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    calls: list[tuple[int, int]] = []
    render_gallery([_card(album)], out, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 1)]
    foreign = out / "assets" / "thumbs" / "keep-me.txt"
    foreign.write_text("not ours")
    files = {p: p.stat().st_mtime_ns for p in (out / "assets").rglob("*") if p.is_file() and p != foreign}
    render_gallery([_card(album)], out)
    assert {p: p.stat().st_mtime_ns for p in files} == files

    old_dir = _card_dir(out)
    rgb = np.asarray(Image.open(album["enhanced"]).convert("RGB")).copy()
    rgb[0:4, 0:4] = 0
    _save(album["enhanced"], rgb)
    os.utime(album["enhanced"], ns=(1, 1_000_000_000))  # a different mtime even on coarse clocks
    render_gallery([_card(album)], out)
    assert not old_dir.exists()  # pruned
    assert _card_dir(out) != old_dir
    assert len(list((out / "assets" / "thumbs").glob("*.jpg"))) == 3  # the stale enhanced thumb is gone
    assert foreign.exists()  # never touches what it did not make


def test_csp_pins_the_inline_script_and_style(album: dict[str, Path], tmp_path: Path) -> None:
    page = html.unescape(render_gallery([_card(album)], tmp_path / "out").read_text("utf-8"))
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    script = re.search(r"<script>(.*?)</script>", page, re.S).group(1)  # type: ignore[union-attr]
    style = re.search(r"<style>(.*?)</style>", page, re.S).group(1)  # type: ignore[union-attr]

    def pin(text: str) -> str:
        return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"

    assert f"script-src {pin(script)}" in csp and f"style-src {pin(style)}" in csp
    assert "default-src 'none'" in csp
    assert ' style="' not in page  # inline style attributes would be blocked by the policy


def test_failed_card_and_empty_gallery(album: dict[str, Path], tmp_path: Path) -> None:
    failed = _card(album, status="failed", enhanced_path=None, attention=None, error="x" * 5000)
    page = render_gallery([failed], tmp_path / "out").read_text("utf-8")
    assert 'data-status="failed"' in page and 'data-rank="0"' in page
    assert "crop-enhanced" not in page and "(cut; the database keeps the full text)" in page
    empty = render_gallery([], tmp_path / "empty").read_text("utf-8")
    assert "No enhancements to show." in empty


def test_ensure_bicubic_caches_by_source(album: dict[str, Path], tmp_path: Path) -> None:
    first = ensure_bicubic(album["lr"], tmp_path / "b")
    with Image.open(first) as im:
        assert im.size == (LR_W * 4, LR_H * 4) and im.format == "JPEG"
    mtime = first.stat().st_mtime_ns
    assert ensure_bicubic(album["lr"], tmp_path / "b") == first and first.stat().st_mtime_ns == mtime
    other = ensure_bicubic(album["lr"], tmp_path / "b", size=(100, 70))
    assert other != first
    with pytest.raises(ValueError, match=r"\(0, 5\)"):
        ensure_bicubic(album["lr"], tmp_path / "b", size=(0, 5))
