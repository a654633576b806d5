"""Album scan: statuses, the no-IO fast path, walking rules, role thresholds, settings validation."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from pipeline import images, scan
from pipeline.scan import KnownPhoto, ScanResult, ScanSettings, ScanStatus, classify, scan_album
from pipeline.vocabulary import PhotoRole
from durable import files

TARGET_DIR = "2019/holiday trip"
UNICODE_DIR = "Ünïcødé 照片/nested deeper"


def _known_from(result: ScanResult) -> dict[str, KnownPhoto]:
    """What a caller would store after a scan (gone rows dropped)."""
    return {
        e.rel_path: KnownPhoto(
            rel_path=e.rel_path, size_bytes=e.size_bytes, mtime_ns=e.mtime_ns, sha256=e.sha256,
            width=e.width, height=e.height, format=e.format,
            status=ScanStatus.UNREADABLE if e.status is ScanStatus.UNREADABLE else ScanStatus.UNCHANGED,
        )
        for e in result.entries
        if e.status is not ScanStatus.GONE
    }


def _by_path(result: ScanResult) -> dict[str, scan.ScanEntry]:
    return {e.rel_path: e for e in result.entries}


@pytest.fixture
def album(tmp_path: Path, photo: Callable[..., Path], truncated_jpeg: bytes) -> Path:
    root = tmp_path / "album"
    photo(root / TARGET_DIR / "beach small.jpg", 800, 600)
    photo(root / TARGET_DIR / "edge target.jpg", 1024, 700)
    photo(root / UNICODE_DIR / "große Referenz.jpg", 1600, 900, color=(10, 200, 30))
    photo(root / "middle.png", 1200, 900)
    # Stored landscape 1700×1000 but displayed portrait: classification must use 1000×1700.
    photo(root / "rotated ref.jpg", 1700, 1000, orientation=6)
    (root / "broken").mkdir()
    (root / "broken" / "empty.jpg").write_bytes(b"")
    (root / "broken" / "letter.jpg").write_text("Dear album, ...")
    (root / "broken" / "cut.jpg").write_bytes(truncated_jpeg)
    # Never scanned: wrong extension, hidden dir/file, our own output folder.
    (root / "notes.txt").write_text("not a photo")
    photo(root / ".thumbnails" / "t.jpg", 10, 10)
    photo(root / "._resource fork.jpg", 10, 10)
    photo(root / "enhanced" / "beach small.jpg", 3200, 2400)
    return root


def test_first_scan_finds_new_and_unreadable(album):
    calls: list[tuple[int, int]] = []
    result = scan_album(album, {}, ScanSettings(), progress=lambda done, total: calls.append((done, total)))

    entries = _by_path(result)
    assert list(entries) == sorted(entries)  # deterministic order
    assert set(entries) == {
        f"{TARGET_DIR}/beach small.jpg",
        f"{TARGET_DIR}/edge target.jpg",
        f"{UNICODE_DIR}/große Referenz.jpg",
        "middle.png",
        "rotated ref.jpg",
        "broken/empty.jpg",
        "broken/letter.jpg",
        "broken/cut.jpg",
    }
    assert result.summary() == {
        ScanStatus.NEW: 5, ScanStatus.CHANGED: 0, ScanStatus.UNCHANGED: 0, ScanStatus.UNREADABLE: 3, ScanStatus.GONE: 0,
    }
    assert calls == [(i, 8) for i in range(9)]

    assert entries[f"{TARGET_DIR}/beach small.jpg"].role is PhotoRole.target
    assert entries[f"{TARGET_DIR}/edge target.jpg"].role is PhotoRole.target
    assert entries["middle.png"].role is PhotoRole.neither
    ref = entries[f"{UNICODE_DIR}/große Referenz.jpg"]
    assert ref.role is PhotoRole.reference and ref.path == album / UNICODE_DIR / "große Referenz.jpg"
    assert ref.sha256 == files.sha256_file(ref.path) and ref.format == "JPEG"
    rotated = entries["rotated ref.jpg"]
    assert (rotated.width, rotated.height, rotated.role) == (1000, 1700, PhotoRole.reference)

    assert "empty file" in entries["broken/empty.jpg"].error
    assert "not a recognised image" in entries["broken/letter.jpg"].error
    assert "truncated" in entries["broken/cut.jpg"].error
    for rel in ("broken/empty.jpg", "broken/letter.jpg", "broken/cut.jpg"):
        assert "\n" not in entries[rel].error and entries[rel].sha256 is not None


def test_unchanged_rescan_opens_and_hashes_nothing(album, monkeypatch):
    known = _known_from(scan_album(album, {}, ScanSettings()))

    def forbidden(*args, **kwargs):  # noqa: ANN002, ANN003
        raise AssertionError(f"unchanged rescan touched file contents: {args!r}")

    monkeypatch.setattr(files, "sha256_file", forbidden)
    monkeypatch.setattr(images, "read_header", forbidden)
    monkeypatch.setattr(images, "verify_decodable", forbidden)
    monkeypatch.setattr(Image, "open", forbidden)

    result = scan_album(album, known, ScanSettings())
    summary = result.summary()
    assert summary[ScanStatus.UNCHANGED] == 5 and summary[ScanStatus.UNREADABLE] == 3
    assert sum(summary.values()) == 8
    entries = _by_path(result)
    assert entries["rotated ref.jpg"].role is PhotoRole.reference
    assert not any(e.stat_changed for e in result.entries)


def test_changed_touched_gone_and_new(album, photo):
    known = _known_from(scan_album(album, {}, ScanSettings()))

    changed = album / TARGET_DIR / "beach small.jpg"
    photo(changed, 800, 600, color=(250, 0, 0))  # new content
    touched = album / "middle.png"
    st = touched.stat()
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # same bytes, new mtime
    (album / TARGET_DIR / "edge target.jpg").unlink()
    photo(album / "new" / "fresh.jpg", 300, 200)

    result = scan_album(album, known, ScanSettings())
    entries = _by_path(result)
    assert entries[f"{TARGET_DIR}/beach small.jpg"].status is ScanStatus.CHANGED
    assert entries[f"{TARGET_DIR}/beach small.jpg"].sha256 != known[f"{TARGET_DIR}/beach small.jpg"].sha256
    middle = entries["middle.png"]
    assert middle.status is ScanStatus.UNCHANGED and middle.stat_changed
    assert middle.mtime_ns == st.st_mtime_ns + 5_000_000_000
    assert entries[f"{TARGET_DIR}/edge target.jpg"].status is ScanStatus.GONE
    assert entries["new/fresh.jpg"].status is ScanStatus.NEW
    assert result.summary() == {
        ScanStatus.NEW: 1, ScanStatus.CHANGED: 1, ScanStatus.UNCHANGED: 3, ScanStatus.UNREADABLE: 3, ScanStatus.GONE: 1,
    }
    assert [e.rel_path for e in result.with_status(ScanStatus.GONE)] == [f"{TARGET_DIR}/edge target.jpg"]


def test_unreadable_recheck_is_opt_in(album):
    known = _known_from(scan_album(album, {}, ScanSettings()))
    quiet = _by_path(scan_album(album, known, ScanSettings()))["broken/cut.jpg"]
    assert quiet.status is ScanStatus.UNREADABLE and "previous scan" in quiet.error
    rechecked = _by_path(scan_album(album, known, ScanSettings(recheck_unreadable=True, verify=False)))
    # Without the decode check a truncated JPEG's intact header passes: it needs processing again.
    assert rechecked["broken/cut.jpg"].status is ScanStatus.CHANGED
    assert rechecked["broken/empty.jpg"].status is ScanStatus.UNREADABLE


def test_pixel_limit_marks_bomb_unreadable_and_scan_goes_on(tmp_path, photo, bomb_png):
    root = tmp_path / "album"
    photo(root / "a.jpg", 100, 100)
    (root / "bomb.png").write_bytes(bomb_png(30_000, 30_000))
    photo(root / "z.jpg", 300, 300)
    entries = _by_path(scan_album(root, {}, ScanSettings(max_pixels=50_000)))
    assert entries["a.jpg"].status is ScanStatus.NEW
    assert entries["bomb.png"].status is ScanStatus.UNREADABLE and "bomb" in entries["bomb.png"].error
    assert entries["z.jpg"].status is ScanStatus.UNREADABLE and "exceeds max_pixels=50000" in entries["z.jpg"].error


def test_settings_override_reclassifies_without_reading(album, monkeypatch):
    known = _known_from(scan_album(album, {}, ScanSettings()))
    monkeypatch.setattr(files, "sha256_file", lambda *a, **k: pytest.fail("hashed"))
    result = scan_album(album, known, ScanSettings(min_ref_side=1200, max_target_side=800))
    entries = _by_path(result)
    assert entries["middle.png"].role is PhotoRole.reference
    assert entries[f"{TARGET_DIR}/beach small.jpg"].role is PhotoRole.target
    assert entries[f"{TARGET_DIR}/edge target.jpg"].role is PhotoRole.neither


@pytest.mark.parametrize(
    ("width", "height", "role"),
    [
        (1600, 10, PhotoRole.reference),
        (10, 1600, PhotoRole.reference),
        (1599, 1599, PhotoRole.neither),
        (1025, 1, PhotoRole.neither),
        (1024, 1024, PhotoRole.target),
        (1, 1, PhotoRole.target),
    ],
)
def test_classify_thresholds_are_inclusive(width, height, role):
    assert classify(width, height, ScanSettings()) is role


def test_classify_rejects_bad_sizes():
    with pytest.raises(ValueError, match="width"):
        classify(0, 10, ScanSettings())
    with pytest.raises(ValueError, match="height"):
        classify(10, True, ScanSettings())


def test_symlinks_are_skipped_unless_followed_and_loops_end(tmp_path, photo):
    root = tmp_path / "album"
    photo(root / "real" / "a.jpg", 10, 10)
    outside = photo(tmp_path / "outside" / "b.jpg", 10, 10)
    (root / "link.jpg").symlink_to(outside)
    (root / "real" / "loop").symlink_to(root, target_is_directory=True)

    plain = {e.rel_path for e in scan_album(root, {}, ScanSettings()).entries}
    assert plain == {"real/a.jpg"}
    followed = {e.rel_path for e in scan_album(root, {}, ScanSettings(follow_symlinks=True)).entries}
    assert followed == {"real/a.jpg", "link.jpg"}


def test_extensions_and_exclude_are_normalised_and_applied(tmp_path, photo):
    root = tmp_path / "album"
    photo(root / "A.JPG", 10, 10)
    photo(root / "b.png", 10, 10)
    photo(root / "skip me" / "c.jpg", 10, 10)
    settings = ScanSettings(extensions=[".JPG"], exclude=["skip me"])
    assert settings.extensions == frozenset({"jpg"}) and settings.exclude == ("skip me",)
    assert [e.rel_path for e in scan_album(root, {}, settings).entries] == ["A.JPG"]


def test_default_extensions():
    exts = ScanSettings().extensions
    assert {"jpg", "jpeg", "png", "webp", "tif", "tiff", "bmp"} <= exts
    assert ("heic" in exts) == images.heif_available()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_ref_side": 0}, "min_ref_side"),
        ({"max_target_side": -1}, "max_target_side"),
        ({"min_ref_side": 1000, "max_target_side": 1000}, "max_target_side=1000"),
        ({"max_pixels": 0}, "max_pixels"),
        ({"extensions": []}, "extensions"),
        ({"extensions": ["."]}, "extensions"),
        ({"extensions": ["tar.gz"]}, "tar.gz"),
        ({"exclude": ["a/b"]}, "a/b"),
    ],
)
def test_settings_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ScanSettings(**kwargs)


def test_settings_type_errors():
    with pytest.raises(TypeError, match="extensions"):
        ScanSettings(extensions="jpg")
    with pytest.raises(TypeError, match="verify"):
        ScanSettings(verify="yes")


def test_scan_rejects_bad_root_and_mismatched_known(tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        scan_album(tmp_path / "missing", {}, ScanSettings())
    bad = {"a.jpg": KnownPhoto("b.jpg", 1, 1, None, None, None, None)}
    with pytest.raises(ValueError, match="a.jpg"):
        scan_album(tmp_path, bad, ScanSettings())
    with pytest.raises(TypeError, match="status"):
        KnownPhoto("a.jpg", 1, 1, None, None, None, None, status="unchanged")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifos_and_sockets_are_reported_and_never_opened(tmp_path: Path, photo: Callable[..., Path]) -> None:
    import socket

    root = tmp_path / "album"
    photo(root / "real.jpg", 800, 600)
    os.mkfifo(root / "x.jpg")  # opening it for reading would wait for a writer forever
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "s.png"))
    try:
        entries = _by_path(scan_album(root, {}, ScanSettings()))
    finally:
        sock.close()
    assert entries["real.jpg"].status is ScanStatus.NEW
    assert entries["x.jpg"].status is ScanStatus.UNREADABLE and "FIFO" in entries["x.jpg"].error
    assert entries["s.png"].status is ScanStatus.UNREADABLE and "socket" in entries["s.png"].error
    with pytest.raises(images.UnreadableImageError, match="not a regular file"):
        images.load_rgb(root / "x.jpg")


def test_folders_marked_as_outputs_are_skipped_wherever_they_lie(tmp_path: Path, photo: Callable[..., Path]) -> None:
    from pipeline.outputs import mark_output_folder

    root = tmp_path / "album"
    photo(root / "trip" / "a.jpg", 800, 600)
    photo(root / "trip" / "out2" / "a.jpg", 3200, 2400)  # an output written with --out ALBUM/trip/out2
    photo(root / "gallery" / "assets" / "thumb.jpg", 200, 150)
    mark_output_folder(root / "trip" / "out2")
    mark_output_folder(root / "gallery")
    assert [e.rel_path for e in scan_album(root, {}, ScanSettings()).entries] == ["trip/a.jpg"]


def test_a_name_that_is_not_utf8_is_unreadable_under_its_escaped_bytes(tmp_path, photo):
    root = tmp_path / "album"
    good = photo(root / "good.jpg", 800, 600)
    odd = os.path.join(os.fsencode(root), b"bad\xff\xfeutf8.jpg")
    with open(odd, "wb") as handle:
        handle.write(good.read_bytes())
    first = scan_album(root, {}, ScanSettings())
    entry = _by_path(first)["bad\\xff\\xfeutf8.jpg"]
    assert entry.status is ScanStatus.UNREADABLE and "not valid UTF-8" in entry.error
    entry.rel_path.encode("utf-8")  # storable as text
    assert _by_path(first)["good.jpg"].status is ScanStatus.NEW
    again = _by_path(scan_album(root, _known_from(first), ScanSettings()))
    assert again["bad\\xff\\xfeutf8.jpg"].status is ScanStatus.UNREADABLE  # the same name each scan, never gone
    assert ScanStatus.GONE not in {e.status for e in again.values()}


def test_a_photo_too_small_to_use_is_listed_with_its_size_and_skipped_formats_are_counted(tmp_path: Path) -> None:
    Image.new("RGB", (1, 1)).save(tmp_path / "pixel.png")
    Image.new("RGB", (scan.MIN_PHOTO_SIDE, 2)).save(tmp_path / "strip.png")  # long side at the limit: kept
    Image.new("RGB", (32, 32)).save(tmp_path / "a.gif")
    Image.new("RGB", (32, 32)).save(tmp_path / "b.gif")
    (tmp_path / "notes.txt").write_text("not a photo: not counted")
    result = scan_album(tmp_path, {}, ScanSettings(extensions=("png",)))
    by_name = {e.rel_path: e for e in result.entries}
    assert by_name["pixel.png"].status is ScanStatus.UNREADABLE
    assert by_name["pixel.png"].error.startswith("too small: 1×1 px")
    assert by_name["strip.png"].status is ScanStatus.NEW and by_name["strip.png"].role is not None
    assert result.skipped_formats == (("gif", 2),)
