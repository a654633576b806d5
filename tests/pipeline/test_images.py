"""Image IO: orientation, colour modes, metadata, atomic writes, unreadable files, hashing."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from pipeline import images
from pipeline.images import ImageMeta, UnreadableImageError, load_rgb, read_header, save_atomic, shrink


def _exif_orientation(path: Path) -> int | None:
    with Image.open(path) as im:
        return im.getexif().get(0x0112)


# --- orientation ---------------------------------------------------------------------------------


def test_orientation_6_rotates_pixels_size_and_normalises_exif(tmp_path, write_image, quadrants):
    src = write_image(tmp_path / "rot.jpg", quadrants(40, 20), "JPEG", orientation=6, quality=95)

    assert read_header(src) == (20, 40, "JPEG")
    rgb, meta = load_rgb(src)

    assert rgb.shape == (40, 20, 3) and rgb.dtype == np.uint8
    assert (meta.width, meta.height, meta.orientation) == (20, 40, 6)
    # Orientation 6 = rotate 90° clockwise to display: stored bottom-left (blue) becomes top-left,
    # stored top-left (red) top-right, stored bottom-right (white) bottom-left, top-right (green)
    # bottom-right.
    np.testing.assert_allclose(rgb[5, 5], (0, 0, 255), atol=40)
    np.testing.assert_allclose(rgb[5, 15], (255, 0, 0), atol=40)
    np.testing.assert_allclose(rgb[35, 5], (255, 255, 255), atol=40)
    np.testing.assert_allclose(rgb[35, 15], (0, 255, 0), atol=40)

    out = save_atomic(tmp_path / "out" / "rot.jpg", rgb, meta, protected={src})
    assert _exif_orientation(out) == 1
    with Image.open(out) as im:
        assert im.getexif().get(0x010F) == "Acme Camera"
    # Re-loading the output must not rotate it a second time.
    again, again_meta = load_rgb(out)
    assert again.shape == rgb.shape and again_meta.orientation == 1


def test_read_header_decodes_no_pixels(tmp_path, write_image, quadrants, monkeypatch):
    src = write_image(tmp_path / "a.png", quadrants(30, 10), "PNG")

    def no_load(self):  # noqa: ANN001
        raise AssertionError("read_header decoded pixels")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_load)
    assert read_header(src) == (30, 10, "PNG")


# --- colour modes --------------------------------------------------------------------------------


def test_cmyk_jpeg_converts_to_rgb(tmp_path, write_image):
    src = write_image(tmp_path / "cmyk.jpg", Image.new("CMYK", (16, 8), (255, 0, 0, 0)), "JPEG")
    rgb, meta = load_rgb(src)
    assert meta.mode == "CMYK" and meta.icc_profile is None
    np.testing.assert_allclose(rgb[4, 8], (0, 255, 255), atol=3)


def test_cmyk_with_broken_icc_falls_back_to_plain_conversion(tmp_path, write_image):
    fake_cmyk_profile = bytes(16) + b"CMYK" + bytes(200)
    src = write_image(
        tmp_path / "cmyk.jpg", Image.new("CMYK", (8, 8), (0, 255, 0, 0)), "JPEG", icc_profile=fake_cmyk_profile
    )
    rgb, meta = load_rgb(src)
    np.testing.assert_allclose(rgb[4, 4], (255, 0, 255), atol=3)
    assert meta.icc_profile is None  # a CMYK profile cannot describe RGB output


def test_sixteen_bit_grey_png_is_scaled_not_clipped(tmp_path, write_image):
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    src = write_image(tmp_path / "g16.png", Image.fromarray(values), "PNG")
    rgb, meta = load_rgb(src)
    assert meta.bit_depth == 16 and meta.mode.startswith("I")
    assert rgb[0, :, 0].tolist() == [0, 1, 128, 255]
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()


def test_greyscale_and_one_bit(tmp_path, write_image):
    grey, meta = load_rgb(write_image(tmp_path / "l.png", Image.new("L", (4, 4), 77), "PNG"))
    assert meta.mode == "L" and grey[0, 0].tolist() == [77, 77, 77]

    bits = np.zeros((4, 4), dtype=bool)
    bits[::2, ::2] = True
    mono, meta = load_rgb(write_image(tmp_path / "b.png", Image.fromarray(bits), "PNG"))
    assert meta.mode == "1" and meta.bit_depth == 1
    assert mono[0, 0].tolist() == [255, 255, 255] and mono[0, 1].tolist() == [0, 0, 0]


def test_rgba_is_composited_over_white(tmp_path, write_image):
    rgba = np.zeros((2, 3, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 0, 0, 0)  # fully transparent red → white
    rgba[0, 1] = (255, 0, 0, 255)  # opaque red stays red
    rgba[0, 2] = (0, 0, 0, 128)  # half-transparent black → mid grey
    rgb, meta = load_rgb(write_image(tmp_path / "a.png", Image.fromarray(rgba, "RGBA"), "PNG"))
    assert meta.had_alpha and meta.mode == "RGBA"
    assert rgb[0, 0].tolist() == [255, 255, 255]
    assert rgb[0, 1].tolist() == [255, 0, 0]
    assert all(abs(int(v) - 127) <= 1 for v in rgb[0, 2])


def test_la_is_composited_over_white(tmp_path, write_image):
    la = Image.merge("LA", (Image.new("L", (2, 2), 0), Image.new("L", (2, 2), 0)))
    rgb, meta = load_rgb(write_image(tmp_path / "la.png", la, "PNG"))
    assert meta.had_alpha and rgb[0, 0].tolist() == [255, 255, 255]


def test_palette_with_transparency(tmp_path, write_image):
    pal = Image.new("P", (2, 1))
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.putpixel((0, 0), 0)
    pal.putpixel((1, 0), 1)
    rgb, meta = load_rgb(write_image(tmp_path / "p.png", pal, "PNG", transparency=0))
    assert meta.mode == "P" and meta.had_alpha
    assert rgb[0, 0].tolist() == [255, 255, 255]  # transparent index → white
    assert rgb[0, 1].tolist() == [0, 0, 255]


def test_opaque_palette_has_no_alpha(tmp_path, write_image):
    pal = Image.new("RGB", (4, 4), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE)
    rgb, meta = load_rgb(write_image(tmp_path / "p.gif", pal, "GIF"))
    assert not meta.had_alpha and rgb[1, 1].tolist() == [10, 200, 30]


# --- metadata on save ----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".tif"])
def test_icc_profile_and_exif_survive_save(tmp_path, write_image, quadrants, srgb_icc, suffix):
    src = write_image(tmp_path / "in.jpg", quadrants(16, 8), "JPEG", orientation=1, icc_profile=srgb_icc)
    rgb, meta = load_rgb(src)
    assert meta.icc_profile == srgb_icc

    out = save_atomic(tmp_path / f"out{suffix}", rgb, meta)
    with Image.open(out) as im:
        assert im.format == Image.registered_extensions()[suffix]
        assert im.info.get("icc_profile") == srgb_icc
        assert im.getexif().get(0x010F) == "Acme Camera"


def test_format_argument_overrides_extension_and_unknown_extension_is_refused(tmp_path, quadrants):
    rgb = quadrants(8, 8)
    out = save_atomic(tmp_path / "odd.bin", rgb, None, format="png")
    with Image.open(out) as im:
        assert im.format == "PNG"
    with pytest.raises(ValueError, match="extension"):
        save_atomic(tmp_path / "noext", rgb)
    with pytest.raises(ValueError, match="NOPE"):
        save_atomic(tmp_path / "x.png", rgb, format="nope")


@pytest.mark.parametrize(
    ("array", "error"),
    [
        (np.zeros((4, 4), np.uint8), ValueError),
        (np.zeros((4, 4, 3), np.float32), ValueError),
        (np.zeros((0, 4, 3), np.uint8), ValueError),
        ([[0, 0, 0]], TypeError),
    ],
)
def test_save_rejects_bad_arrays(tmp_path, array, error):
    with pytest.raises(error):
        save_atomic(tmp_path / "x.png", array)


# --- atomic writes -------------------------------------------------------------------------------


def test_save_creates_parents_and_leaves_no_temp_files(tmp_path, quadrants):
    out = save_atomic(tmp_path / "a" / "b" / "out.jpg", quadrants(8, 8))
    assert sorted(p.name for p in out.parent.iterdir()) == ["out.jpg"]
    assert oct(out.stat().st_mode & 0o777) == oct(0o644)


def test_crash_mid_write_keeps_old_file_and_leaves_nothing_behind(tmp_path, quadrants, monkeypatch):
    target = save_atomic(tmp_path / "out.png", quadrants(8, 8))
    before = target.read_bytes()

    def exploding_save(self, fp, *args, **kwargs):  # noqa: ANN001
        fp.write(b"\x89PNG partial")
        raise RuntimeError("encoder crashed")

    monkeypatch.setattr(Image.Image, "save", exploding_save)
    with pytest.raises(RuntimeError, match="encoder crashed"):
        save_atomic(target, np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(RuntimeError):
        save_atomic(tmp_path / "fresh.png", np.zeros((8, 8, 3), np.uint8))

    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_refuses_to_overwrite_a_protected_input(tmp_path, photo):
    src = photo(tmp_path / "in.jpg", 8, 8)
    original = src.read_bytes()
    rgb, meta = load_rgb(src)
    with pytest.raises(ValueError, match="refusing to overwrite"):
        save_atomic(src, rgb, meta, protected={src})
    with pytest.raises(ValueError, match="refusing to overwrite"):
        save_atomic(tmp_path / "." / "in.jpg", rgb, meta, protected=str(src))
    os.link(src, tmp_path / "hardlink.jpg")
    with pytest.raises(ValueError, match="refusing to overwrite"):
        save_atomic(tmp_path / "hardlink.jpg", rgb, meta, protected=[src])
    assert src.read_bytes() == original


# --- unreadable files ----------------------------------------------------------------------------


def _assert_unreadable(path: Path, match: str | None, **kwargs) -> None:  # noqa: ANN003
    with pytest.raises(UnreadableImageError, match=match) as info:
        load_rgb(path, **kwargs)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    assert isinstance(info.value, ValueError)


def test_zero_byte_file(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    _assert_unreadable(empty, "empty file")
    with pytest.raises(UnreadableImageError, match="empty file"):
        read_header(empty)


def test_text_file_named_jpg(tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("shopping list: milk, eggs\n")
    _assert_unreadable(text, "not a recognised image format")


def test_random_bytes_are_corrupt(tmp_path, rng):
    junk = tmp_path / "junk.png"
    junk.write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    _assert_unreadable(junk, "not a recognised image format")


def test_corrupt_png_data(tmp_path, write_image, rng):
    src = write_image(tmp_path / "c.png", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), "PNG")
    data = bytearray(src.read_bytes())
    data[100:140] = bytes(40)  # inside IDAT
    src.write_bytes(bytes(data))
    _assert_unreadable(src, None)


def test_truncated_jpeg(tmp_path, truncated_jpeg):
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(truncated_jpeg)
    # The header is intact, which is exactly why the scan verifies decodability separately.
    assert read_header(cut) == (96, 64, "JPEG")
    _assert_unreadable(cut, "truncated")
    with pytest.raises(UnreadableImageError, match="truncated"):
        images.verify_decodable(cut)


def test_truncated_png_fails_verify(tmp_path, write_image, rng):
    src = write_image(tmp_path / "t.png", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), "PNG")
    src.write_bytes(src.read_bytes()[:2000])
    with pytest.raises(UnreadableImageError):
        images.verify_decodable(src)
    _assert_unreadable(src, None)


@pytest.mark.parametrize(
    ("side", "match"),
    [
        (12_000, "exceeds max_pixels"),  # 144 MP: our own limit (default 100 MP) refuses it
        (20_000, "decompression bomb"),  # 400 MP: Pillow's hard guard fires at open()
    ],
)
def test_decompression_bomb_header_is_refused_before_decoding(tmp_path, bomb_png, side, match):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(bomb_png(side, side))
    _assert_unreadable(bomb, match)
    with pytest.raises(UnreadableImageError, match=match):
        read_header(bomb)


def test_pillow_bomb_warning_becomes_our_error_under_a_low_limit(tmp_path, bomb_png):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(bomb_png(10_000, 10_000))  # 100 MP > Pillow's 89.5 MP warning threshold
    _assert_unreadable(bomb, "decompression bomb", max_pixels=50_000_000)


def test_explicit_pixel_limit(tmp_path, photo):
    src = photo(tmp_path / "ok.jpg", 20, 10)
    _assert_unreadable(src, "200 pixels exceeds max_pixels=199", max_pixels=199)
    assert load_rgb(src, max_pixels=200)[0].shape == (10, 20, 3)
    with pytest.raises(ValueError, match="max_pixels"):
        load_rgb(src, max_pixels=0)


def test_missing_file_is_not_an_image_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_rgb(tmp_path / "nope.jpg")


# --- shrinking & meta ------------------------------------------------------------------------------


def test_shrink_caps_the_long_side_and_never_enlarges(rng):
    rgb = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    assert shrink(rgb, 100).shape == (75, 100, 3)
    assert shrink(rgb, 100, Image.Resampling.BOX, 2.0).shape == (75, 100, 3)
    assert shrink(rgb, 400) is rgb and shrink(rgb, 1000) is rgb
    assert shrink(rgb[:1, :], 10).shape == (1, 10, 3)  # a side never rounds to zero


def test_image_meta_validates():
    with pytest.raises(ValueError, match="width"):
        ImageMeta("PNG", "RGB", 0, 1, None, None, False, 8)
    with pytest.raises(ValueError, match="orientation"):
        ImageMeta("PNG", "RGB", 1, 1, None, None, False, 8, orientation=9)
