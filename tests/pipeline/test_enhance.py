"""Enhancement of one photo: sizes, metadata, atomic protected writes, attention maps, job keys."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

from pipeline.attention import attention_path_for, load_attention
from pipeline.enhance import (
    EnhanceParams,
    enhance_arrays,
    enhance_photo,
    fit_reference,
    job_key,
    output_format_for,
    output_path_for,
    plan_output_paths,
)
from pipeline.images import load_rgb
from ttsr_core.arrays import resize_bicubic
from ttsr_core.config import SearchConfig, SearchMode, TTSRConfig
from ttsr_core.model.net import TTSR

A, B, C, M = ("a" * 64, "b" * 64, "c" * 64, "d" * 64)
EXACT = SearchConfig(mode=SearchMode.EXACT)


@pytest.fixture(scope="module")
def model() -> TTSR:
    torch.manual_seed(0)
    return TTSR(TTSRConfig(num_feat=4, num_block=(1, 1, 1, 1), lte_channels=(4, 4, 8))).eval()


@pytest.fixture
def photos(tmp_path: Path) -> tuple[Path, Path]:
    """A 24x32 JPEG target with EXIF (orientation 6) and an sRGB profile, and a 64x80 PNG reference."""
    rng = np.random.default_rng(0)
    exif = Image.Exif()
    exif[0x010F] = "Test Camera"
    exif[0x0112] = 6  # stored 32 wide x 24 high, displayed 24 wide x 32 high
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    target = tmp_path / "album" / "t.jpg"
    target.parent.mkdir()
    Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(
        target, "JPEG", quality=95, exif=exif.tobytes(), icc_profile=icc)
    ref = tmp_path / "album" / "r.png"
    Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(ref)
    return target, ref


def test_enhance_photo_writes_x4_with_exif_orientation_normalised_and_icc(model: TTSR, photos, tmp_path: Path) -> None:
    target, ref = photos
    out = tmp_path / "out" / "t.jpg"
    att = attention_path_for(tmp_path / "out", A)
    result = enhance_photo(model, target, [ref], out, EnhanceParams(search=EXACT), attention_path=att)
    with Image.open(out) as im:
        assert im.size == (96, 128)  # displayed size 24x32, times 4
        assert im.format == "JPEG"
        exif = im.getexif()
        assert exif.get(0x0112, 1) == 1  # pixels are upright now
        assert exif.get(0x010F) == "Test Camera"
        assert im.info.get("icc_profile")
    assert (result.width, result.height, result.format) == (96, 128, "JPEG")
    assert result.output_path == out and len(result.output_sha256) == 64
    assert set(result.timings) == {"load_s", "sr_s", "save_s"}
    maps = load_attention(att)
    assert maps.soft.shape == (32, 24) and maps.hard is not None and maps.hard.shape == (32, 24)
    assert maps.ref_grids == ((16, 20),)
    assert not list(out.parent.glob(".*.tmp"))  # no temp file left behind


@pytest.mark.parametrize(("outscale", "size"), [(2.0, (48, 64)), (3.0, (72, 96)), (6.0, (144, 192))])
def test_outscale_resizes_after_x4(model: TTSR, photos, tmp_path: Path, outscale: float, size) -> None:
    target, ref = photos
    out = tmp_path / f"x{outscale}.png"
    enhance_photo(model, target, [ref], out, EnhanceParams(outscale=outscale, search=EXACT))
    rgb, meta = load_rgb(out)
    assert (meta.width, meta.height) == size and meta.format == "PNG"


def test_enhance_photo_never_overwrites_an_input(model: TTSR, photos, tmp_path: Path) -> None:
    target, ref = photos
    before = target.read_bytes()
    for victim in (target, ref):
        with pytest.raises(ValueError, match="refusing to overwrite"):
            enhance_photo(model, target, [ref], victim, EnhanceParams(search=EXACT))
    other = tmp_path / "album" / "other.jpg"
    other.write_bytes(before)
    with pytest.raises(ValueError, match="refusing to overwrite"):
        enhance_photo(model, target, [ref], other, EnhanceParams(search=EXACT), protected=[other])
    assert target.read_bytes() == before
    # 14.10: the attention archive never replaces an input (nor the output), checked before any work.
    ref_before = ref.read_bytes()
    for victim in (target, ref, tmp_path / "out.png"):
        with pytest.raises(ValueError, match="refusing to write the attention maps over"):
            enhance_photo(model, target, [ref], tmp_path / "out.png", EnhanceParams(search=EXACT), attention_path=victim)
    assert target.read_bytes() == before and ref.read_bytes() == ref_before
    assert not (tmp_path / "out.png").exists()
    # No reference: the target enhanced from itself (its LR↑ as the reference), as the reference gate asks.
    alone = enhance_photo(model, target, [], tmp_path / "alone.png", EnhanceParams(search=EXACT))
    lr = load_rgb(target)[0]
    Image.fromarray(resize_bicubic(lr, lr.shape[1] * 4, lr.shape[0] * 4)).save(tmp_path / "up.png")
    same = enhance_photo(model, target, [tmp_path / "up.png"], tmp_path / "same.png", EnhanceParams(search=EXACT))
    assert np.array_equal(np.asarray(Image.open(alone.output_path)), np.asarray(Image.open(same.output_path)))


def test_multiple_references_and_fitting(model: TTSR, photos, tmp_path: Path) -> None:
    target, ref = photos
    att = tmp_path / "att.npz"
    enhance_photo(model, target, [ref, ref], tmp_path / "two.png", EnhanceParams(search=EXACT, ref_side_factor=2.0),
                  attention_path=att)
    with np.load(att) as maps:
        # Reference fitted to 2 x 32 = 64 on its long side: 51x64 → lv3 grid 12x16, twice.
        assert maps["ref_grids"].tolist() == [[12, 16], [12, 16]]
    big = np.zeros((400, 300, 3), np.uint8)
    assert fit_reference(big, 50, 4.0).shape == (200, 150, 3)
    assert fit_reference(big, 500, 4.0) is big  # never enlarged


def test_job_key_changes_with_everything_that_changes_pixels() -> None:
    base = job_key(A, [B], M, EnhanceParams(search=EXACT))
    assert base == job_key(A, [B], M, EnhanceParams(search=EXACT))
    assert len(base) == 64
    others = {
        job_key(C, [B], M, EnhanceParams(search=EXACT)),
        job_key(A, [C], M, EnhanceParams(search=EXACT)),
        job_key(A, [B, C], M, EnhanceParams(search=EXACT)),
        job_key(A, [C, B], M, EnhanceParams(search=EXACT)),
        job_key(A, [B], C, EnhanceParams(search=EXACT)),
        job_key(A, [B], M, EnhanceParams(search=EXACT, outscale=2.0)),
        job_key(A, [B], M, EnhanceParams(search=SearchConfig(mode=SearchMode.FAST))),
        job_key(A, [B], M, EnhanceParams(search=EXACT, output_format="png")),
        job_key(A, [B], M, EnhanceParams(search=EXACT), restored_from=B),
    }
    assert base not in others and len(others) == 9
    with pytest.raises(ValueError, match="restored_from"):
        job_key(A, [B], M, EnhanceParams(), restored_from=C)
    # No reference (enhanced from itself) is a job of its own, apart from every referenced one.
    assert job_key(A, [], M, EnhanceParams()) not in {job_key(A, [B], M, EnhanceParams()), job_key(A, [A], M, EnhanceParams())}
    with pytest.raises(ValueError, match="ref_sha256s"):
        job_key(A, ["short"], M, EnhanceParams())
    with pytest.raises(ValueError, match="'nope'"):
        job_key("nope", [B], M, EnhanceParams())


def test_output_paths_mirror_the_album_and_follow_the_format(tmp_path: Path) -> None:
    assert output_path_for(tmp_path, "2019/trip/a.jpeg", "JPEG") == tmp_path / "2019/trip/a.jpeg"
    assert output_path_for(tmp_path, "2019/a.jpg", "PNG") == tmp_path / "2019/a.png"
    assert output_format_for("MPO", EnhanceParams()) == "JPEG"
    assert output_format_for("PNG", EnhanceParams(output_format="webp")) == "WEBP"
    with pytest.raises(ValueError, match=r"\.\./x\.jpg"):
        output_path_for(tmp_path, "../x.jpg", "JPEG")


def test_planned_outputs_never_share_a_path(tmp_path: Path) -> None:
    to_png = EnhanceParams(output_format="png")
    album = [("a.jpg", "JPEG"), ("a.png", "PNG"), ("b.jpg", "JPEG"), ("x/a.jpg", "JPEG")]
    # Following the input format, names only mirror the album.
    assert plan_output_paths(tmp_path, album, EnhanceParams()) == {rel: tmp_path / rel for rel, _ in album}
    # To PNG, a.jpg would land on a.png's output: the converted one keeps its whole name.
    assert plan_output_paths(tmp_path, album, to_png) == {
        "a.jpg": tmp_path / "a.jpg.png", "a.png": tmp_path / "a.png", "b.jpg": tmp_path / "b.png",
        "x/a.jpg": tmp_path / "x/a.png",  # another folder: no clash
    }
    # HEIC is written as JPEG: beside a JPEG of the same stem it clashes even without --format.
    assert plan_output_paths(tmp_path, [("p.heic", "HEIF"), ("p.jpg", "JPEG")], EnhanceParams()) == {
        "p.heic": tmp_path / "p.heic.jpg", "p.jpg": tmp_path / "p.jpg"}
    # Case-insensitive disks treat A.jpg and a.png's outputs as one file.
    assert plan_output_paths(tmp_path, [("A.jpg", "JPEG"), ("a.png", "PNG")], to_png)["A.jpg"] == tmp_path / "A.jpg.png"
    # An album that also holds a PNG literally called a.jpg.png: numbered, still distinct.
    odd = plan_output_paths(tmp_path, album + [("a.jpg.png", "PNG")], to_png)
    assert odd["a.jpg.png"] == tmp_path / "a.jpg.png" and odd["a.jpg"] == tmp_path / "a.jpg~2.png"
    assert len({str(p).casefold() for p in odd.values()}) == len(odd)


def test_params_validate_with_the_bad_value_in_the_message() -> None:
    for kwargs, pattern in (({"outscale": 0}, "outscale.*0"), ({"outscale": 32.0}, "32"),
                            ({"output_format": "gif"}, "gif"), ({"tile": -1}, "tile.*-1"),
                            ({"quality": 101}, "101")):
        with pytest.raises(ValueError, match=pattern):
            EnhanceParams(**kwargs)
    assert EnhanceParams(output_format="jpg").output_format == "JPEG"


def test_large_targets_are_tiled_by_ttsr_core(model: TTSR, photos, tmp_path: Path, monkeypatch) -> None:
    import pipeline.enhance as enhance_module

    seen: dict[str, object] = {}
    real = enhance_module.super_resolve

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(enhance_module, "super_resolve", spy)
    target, ref = photos
    att = tmp_path / "att.npz"
    enhance_photo(model, target, [ref], tmp_path / "tiled.png", EnhanceParams(search=EXACT, tile=16, tile_overlap=4),
                  attention_path=att)
    assert (seen["tile"], seen["tile_overlap"]) == (16, 4)
    rgb, _ = load_rgb(tmp_path / "tiled.png")
    assert rgb.shape == (128, 96, 3)
    maps = load_attention(att)
    assert maps.hard is not None and maps.soft.shape == maps.hard.shape == (32, 24)
    seen.clear()
    enhance_photo(model, target, [ref], tmp_path / "whole.png", EnhanceParams(search=EXACT, tile=64))
    assert "tile" not in seen  # small enough for one pass


def test_a_one_pixel_target_is_blamed_not_its_reference(model: TTSR) -> None:
    ref = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    dot = np.full((1, 1, 3), 128, np.uint8)
    with pytest.raises(ValueError, match=r"the target is too small to enhance \(1×1 px\)"):
        enhance_arrays(model, dot, [ref], EnhanceParams(search=EXACT))
    with pytest.raises(ValueError, match="reference 0 of 8×6 is smaller"):  # a truly tiny reference: its own fault
        enhance_arrays(model, np.full((8, 8, 3), 128, np.uint8), [ref[:6, :8]], EnhanceParams(search=EXACT))


def test_a_copy_framed_wider_than_its_original_is_restored_and_the_model_fills_the_rest(model: TTSR,
                                                                                         tmp_path: Path) -> None:
    from tests.pipeline.matching.scenes import scene

    original = scene(9, 640, 480)
    wide = np.pad(original, ((0, 0), (12, 0), (0, 0)), mode="edge")  # a strip the original does not show
    copy = tmp_path / "copy.png"
    Image.fromarray(np.asarray(Image.fromarray(wide).resize((163, 120), Image.Resampling.BOX))).save(copy)
    Image.fromarray(original).save(tmp_path / "original.png")
    attention = tmp_path / "att.npz"
    result = enhance_photo(model, copy, [tmp_path / "original.png"], tmp_path / "out.png", EnhanceParams(search=EXACT),
                           attention_path=attention, restore=True)
    assert result.restoration is not None and 0.95 < result.restoration["covered"] < 1.0
    assert "sr_s" in result.timings and result.attention_path == attention  # the model ran for the strip
    out = np.asarray(Image.open(result.output_path).convert("RGB"))
    assert out.shape == (480, 652, 3)
    assert np.abs(out[:, 60:].astype(int) - original[:, 48:]).mean() < 4  # the original's own pixels
