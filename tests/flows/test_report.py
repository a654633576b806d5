"""flows.report: database rows → gallery cards → a static gallery, and the `refsr report` parser."""

from __future__ import annotations

import argparse
import hashlib
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy.orm import Session

from db import queries
from db.engine import init_db, make_session_factory
from db.models import EnhancementStatus, PhotoRole, RunKind, RunStatus
from flows import report
from pipeline.attention import AttentionMaps, save_attention
from durable.files import sha256_file

# Album names chosen to break naive HTML or URL building: markup (with a "/" that makes it a
# folder), quotes, ampersand, "#", "?", "%", spaces and non-ASCII.
NASTY_TARGET = "<script>alert(1)</script>.jpg"
TARGETS = ("beach/kid.png", NASTY_TARGET, 'odd & "quoted" #1?%.png', "ünïcode photo.jpg")
FAILED_TARGET = "broken/<b>bold</b>.png"
REFERENCE = "refs/hr reference.png"
LR_SIZE = (64, 48)  # (width, height)
HOT = (30, 10)  # (row, col) of the planted soft-attention peak on the 48×64 LR grid


def textured(width: int, height: int, seed: int) -> np.ndarray:
    """(H, W, 3) uint8: smooth colour ramps plus seeded blocks, so crops and thumbnails differ."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 / max(width - 1, 1), y * 255 / max(height - 1, 1), (x + y) % 64 * 4], axis=-1)
    for _ in range(6):
        r, c = rng.integers(0, height), rng.integers(0, width)
        rgb[r : r + height // 6, c : c + width // 6] = rng.integers(0, 256, 3)
    return rgb.astype(np.uint8)


def save(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, format="PNG" if path.suffix == ".png" else "JPEG", quality=92)
    return path


@dataclass(frozen=True)
class GeneratedRun:
    db_url: str
    db_file: Path
    album_root: Path
    run_id: int
    output_paths: dict[str, Path]  # rel_path of target → enhanced output
    succeeded: tuple[str, ...]
    failed: tuple[str, ...]


def make_generated_run(tmp: Path) -> GeneratedRun:
    """A tmp SQLite database with one finished run over a generated album: four succeeded
    targets (attention with hard attention, soft only, a damaged file, and none) and
    one failure. No model: outputs are bicubic upscales with added fine texture."""
    album_root = tmp / "album"
    db_file = tmp / "ws" / "refsr.db"
    db_url = f"sqlite:///{db_file}"
    engine = init_db(db_url)
    ref_rgb = textured(320, 240, seed=99)
    # A bright marker where the hard attention of the .npz card will point (grid cell 7, 11).
    ref_rgb[7 * 4 - 20 : 7 * 4 + 24, 11 * 4 - 20 : 11 * 4 + 24] = (255, 0, 255)
    save(album_root / REFERENCE, ref_rgb)
    outputs: dict[str, Path] = {}
    with make_session_factory(engine).begin() as session:
        album = queries.get_or_create_album(session, album_root)
        ref = _photo(session, album.id, album_root, REFERENCE, PhotoRole.reference)
        run = queries.start_run(session, RunKind.enhance, album.id, {"refs": 1}, {"refsr": "test"})
        rng = np.random.default_rng(7)
        for i, rel in enumerate((*TARGETS, FAILED_TARGET)):
            lr = textured(*LR_SIZE, seed=i)
            save(album_root / rel, lr)
            target = _photo(session, album.id, album_root, rel, PhotoRole.target)
            if rel == FAILED_TARGET:
                queries.record_enhancement(
                    session,
                    run.id,
                    target,
                    _sha(rel),
                    status=EnhancementStatus.failed,
                    model_name="ttsr-lite",
                    model_sha256=_sha("model"),
                    embedder="fallback:v1",
                    device="cpu",
                    params={"refs": 1},
                    timings={"total_s": 0.2},
                    error="RuntimeError: <b>CUDA</b> out of memory & more\nTraceback line 2",
                    references=[(0, ref.id, ref.sha256, 0.5, 0.25)],
                )
                continue
            up = np.asarray(
                Image.fromarray(lr).resize((LR_SIZE[0] * 4, LR_SIZE[1] * 4), Image.BICUBIC)
            ).astype(np.int16)
            enhanced = np.clip(up + rng.integers(-40, 41, up.shape), 0, 255).astype(np.uint8)
            out = save(album_root / "enhanced" / rel, enhanced)
            outputs[rel] = out
            soft = np.full((LR_SIZE[1], LR_SIZE[0]), 0.1, dtype=np.float32)
            soft[HOT[0] - 2 : HOT[0] + 3, HOT[1] - 2 : HOT[1] + 3] = 0.7
            soft[HOT] = 0.9
            attention: Path | None = tmp / "attention" / f"{i}.npz"
            attention.parent.mkdir(parents=True, exist_ok=True)
            if i == 0:
                hard = np.zeros(soft.shape, dtype=np.int64)
                hard[HOT] = 7 * (320 // 4) + 11
                save_attention(attention, AttentionMaps(soft, hard))
            elif i == 1:
                save_attention(attention, AttentionMaps(soft))  # soft only: no reference crop
            elif i == 2:
                attention.write_bytes(b"not a numpy file")
            else:
                attention = None
            queries.record_enhancement(
                session,
                run.id,
                target,
                _sha(rel),
                status=EnhancementStatus.succeeded,
                model_name="ttsr-lite",
                model_sha256=_sha("model"),
                embedder="fallback:v1",
                device="cpu",
                params={"refs": 1, "tile": 256},
                timings={"retrieval_s": 0.12, "model_s": 1.5, "total_s": 1.7},
                output_path=out,
                output_sha256=sha256_file(out),
                attention_path=attention,
                references=[(0, ref.id, ref.sha256, 0.81 - 0.1 * i, 0.62 - 0.1 * i)],
            )
        queries.finish_run(session, run, RunStatus.completed, counts={"succeeded": 4, "failed": 1})
        run_id = run.id
    engine.dispose()
    return GeneratedRun(db_url, db_file, album_root, run_id, outputs, TARGETS, (FAILED_TARGET,))


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _photo(session: Session, album_id: int, root: Path, rel: str, role: PhotoRole):  # type: ignore[no-untyped-def]
    path = root / rel
    with Image.open(path) as im:
        width, height = im.size
        fmt = im.format
    stat = path.stat()
    return queries.upsert_photo(
        session,
        album_id,
        rel,
        sha256=sha256_file(path),
        size_bytes=stat.st_size,
        mtime_ns=stat.st_mtime_ns,
        width=width,
        height=height,
        format=fmt,
        role=role,
    )


@pytest.fixture
def generated(tmp_path: Path) -> GeneratedRun:
    return make_generated_run(tmp_path)


@pytest.fixture
def session(generated: GeneratedRun) -> Iterator[Session]:
    engine = init_db(generated.db_url)
    with make_session_factory(engine)() as sess:
        yield sess
    engine.dispose()


def cards_in(page: str) -> list[str]:
    return re.findall(r'<article class="card[^"]*" id="(card-\d+)"', page)


# ---------------------------------------------------------------- build_gallery


def test_run_gallery_has_one_card_per_enhancement_failures_first(
    generated: GeneratedRun, session: Session, tmp_path: Path
) -> None:
    index = report.build_gallery(session, run_id=generated.run_id, out_dir=tmp_path / "g")
    assert index == tmp_path / "g" / "index.html"
    page = index.read_text(encoding="utf-8")
    assert len(cards_in(page)) == 5
    first = page.index('id="card-0"')
    assert 'data-status="failed"' in page[first : first + 300]
    assert "&lt;b&gt;bold&lt;/b&gt;" in page and "<b>bold</b>" not in page
    assert "RuntimeError: &lt;b&gt;CUDA&lt;/b&gt; out of memory &amp; more" in page
    assert "ttsr-lite" in page and "model" in page and "1.50 s" in page
    assert "0.810" in page and "0.620" in page  # cosine and relevance of the first target


def test_album_script_name_renders_as_text(generated: GeneratedRun, session: Session, tmp_path: Path) -> None:
    page = report.build_gallery(session, album_root=generated.album_root, out_dir=tmp_path / "g").read_text(
        "utf-8"
    )
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.jpg" in page
    # Only our own script element exists; the album's "<script>" never becomes markup.
    assert page.count("<script") == 1 and page.count("</script>") == 1
    assert "alert(1)</script>" not in page
    # Links to it are percent-encoded, so not even the URL holds a raw "<".
    assert "%3Cscript%3Ealert%281%29%3C/script%3E.jpg" in page


def test_links_are_relative_and_resolve_to_the_originals(
    generated: GeneratedRun, session: Session, tmp_path: Path
) -> None:
    import html
    from urllib.parse import unquote

    out = tmp_path / "g"
    page = report.build_gallery(session, run_id=generated.run_id, out_dir=out).read_text("utf-8")
    hrefs = [html.unescape(h) for h in re.findall(r'<a href="([^"#][^"]*)"', page)]
    assert hrefs
    targets = set()
    for href in hrefs:
        assert not re.match(r"[a-z]+:", href), href
        resolved = (out / unquote(href)).resolve()
        assert resolved.is_file(), href
        targets.add(resolved)
    for rel, output in generated.output_paths.items():
        assert output.resolve() in targets
        assert (generated.album_root / rel).resolve() in targets
    # Linked, not copied: nothing in the gallery folder is as big as a full-resolution output.
    biggest_output = max(p.stat().st_size for p in generated.output_paths.values())
    copies = [
        p for p in out.rglob("*") if p.is_file() and p.suffix != ".jpg" and p.stat().st_size >= biggest_output
    ]
    assert not [p for p in copies if "bicubic" not in p.parts]


def test_bicubic_upscale_generated_at_output_size(
    generated: GeneratedRun, session: Session, tmp_path: Path
) -> None:
    out = tmp_path / "g"
    report.build_gallery(session, run_id=generated.run_id, out_dir=out)
    made = sorted((out / "assets" / "bicubic").iterdir())
    assert len(made) == len(generated.output_paths)
    for path in made:
        with Image.open(path) as im:
            assert im.size == (LR_SIZE[0] * 4, LR_SIZE[1] * 4)


def test_attention_variants_are_handled(generated: GeneratedRun, session: Session, tmp_path: Path) -> None:
    page = report.build_gallery(session, run_id=generated.run_id, out_dir=tmp_path / "g").read_text("utf-8")
    # .npz with hard attention: a reference crop located in the named reference photo.
    assert "crop-reference.png" in page
    assert f"in {REFERENCE}" in page
    # .npy soft only: says why there is no reference crop.
    assert "no reference crop: the run saved no hard attention" in page
    # Damaged file and no file: the card still renders, with the reason.
    assert "attention map unusable" in page
    assert "no soft-attention map was saved for this run" in page
    # The two usable maps are shown: over the output where there is one, else on the input's thumbnail.
    assert page.count('class="heat-layer"') + page.count("<figcaption>soft attention") == 2


def test_album_gallery_shows_latest_attempt_only(generated: GeneratedRun, tmp_path: Path) -> None:
    engine = init_db(generated.db_url)
    with make_session_factory(engine).begin() as session:
        album = queries.get_album(session, generated.album_root)
        assert album is not None
        target = queries.photos_by_rel_path(session, album.id)[TARGETS[0]]
        out = generated.output_paths[TARGETS[0]]
        queries.record_enhancement(
            session,
            None,
            target,
            _sha("again"),
            status=EnhancementStatus.failed,
            model_name="ttsr-lite",
            model_sha256=_sha("model"),
            embedder="fallback:v1",
            device="cpu",
            params={},
            timings={},
            error="second attempt failed",
        )
        del out
    with make_session_factory(engine)() as session:
        latest = report.build_gallery(session, album_root=generated.album_root, out_dir=tmp_path / "a")
        every = report.build_gallery(
            session, album_root=generated.album_root, out_dir=tmp_path / "b", latest_only=False
        )
        assert len(cards_in(latest.read_text("utf-8"))) == 5
        assert "second attempt failed" in latest.read_text("utf-8")
        assert len(cards_in(every.read_text("utf-8"))) == 6
    engine.dispose()


def test_default_out_dir_sits_beside_the_sqlite_database(generated: GeneratedRun, session: Session) -> None:
    index = report.build_gallery(session, run_id=generated.run_id)
    assert index == generated.db_file.parent / "galleries" / f"run-{generated.run_id}" / "index.html"
    album = queries.get_album(session, generated.album_root)
    assert album is not None
    index = report.build_gallery(session, album_root=generated.album_root)
    assert index.parent.name == f"album-{album.id}"


def test_unknown_album_or_run_raise_with_the_value(
    generated: GeneratedRun, session: Session, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="no run with id 999"):
        report.build_gallery(session, run_id=999, out_dir=tmp_path)
    with pytest.raises(ValueError, match="no album registered at .*nowhere"):
        report.build_gallery(session, album_root=tmp_path / "nowhere", out_dir=tmp_path)
    with pytest.raises(ValueError, match="neither"):
        report.build_gallery(session, out_dir=tmp_path)


def test_missing_output_and_reference_render_as_problems(
    generated: GeneratedRun, session: Session, tmp_path: Path
) -> None:
    generated.output_paths[TARGETS[3]].unlink()
    (generated.album_root / REFERENCE).unlink()
    page = report.build_gallery(session, run_id=generated.run_id, out_dir=tmp_path / "g").read_text("utf-8")
    assert len(cards_in(page)) == 5
    assert "output missing" in page
    assert "enhanced output: file not found" in page
    assert f"reference {REFERENCE}: file not found" in page


def test_second_build_reuses_assets(generated: GeneratedRun, session: Session, tmp_path: Path) -> None:
    out = tmp_path / "g"
    report.build_gallery(session, run_id=generated.run_id, out_dir=out)
    before = {p: p.stat().st_mtime_ns for p in (out / "assets").rglob("*") if p.is_file()}
    report.build_gallery(session, run_id=generated.run_id, out_dir=out)
    after = {p: p.stat().st_mtime_ns for p in (out / "assets").rglob("*") if p.is_file()}
    assert before == after


# ---------------------------------------------------------------- CLI parser and markdown


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="refsr")
    report.add_report_parser(parser.add_subparsers(dest="command"))
    return parser


def test_report_parser_arguments_and_handler(
    generated: GeneratedRun, session: Session, tmp_path: Path
) -> None:
    args = _parser().parse_args(["report", "--run", str(generated.run_id), "--out", str(tmp_path / "g")])
    assert args.command == "report" and args.run_id == generated.run_id and args.album is None
    stdout = io.StringIO()
    assert args.handler(args, session, stdout=stdout) == 0
    assert stdout.getvalue().strip() == str(tmp_path / "g" / "index.html")

    args = _parser().parse_args(["report", str(generated.album_root), "--run", "1"])
    with pytest.raises(ValueError, match="either ALBUM or --run"):
        args.handler(args, session)
    # No argument: the last run that enhanced photos.
    args = _parser().parse_args(["report", "--out", str(tmp_path / "last")])
    assert args.handler(args, session, stdout=io.StringIO()) == 0
    assert (tmp_path / "last" / "index.html").is_file()


def test_server_database_galleries_go_under_the_workspace(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from sqlalchemy.engine import make_url

    def fake(url: str) -> Session:
        engine = SimpleNamespace(url=make_url(url))
        return SimpleNamespace(get_bind=lambda: SimpleNamespace(engine=engine))  # type: ignore[return-value]

    one = report.default_gallery_dir(fake("postgresql+psycopg://u:secret@h/one"), album_id=1, home=tmp_path)
    two = report.default_gallery_dir(fake("postgresql+psycopg://u:secret@h/two"), album_id=1, home=tmp_path)
    assert one.is_relative_to(tmp_path) and two.is_relative_to(tmp_path) and one != two
    assert one.name == "album-1" and "secret" not in str(one)
    with pytest.raises(ValueError, match="REFSR_HOME"):
        report.default_gallery_dir(fake("postgresql+psycopg://u@h/one"), album_id=1)


def test_report_help_teaches(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        _parser().parse_args(["report", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for needle in (
        "ALBUM",
        "--run RUN_ID",
        "--out DIR",
        "soft attention",
        "bicubic",
        "refsr report --run 12",
        "no network",
    ):
        assert needle in text, needle


def test_gallery_markdown_links_with_a_file_uri(tmp_path: Path) -> None:
    index = tmp_path / "my gallery (1)" / "index.html"
    text = report.gallery_markdown(index)
    assert f"(<{index.as_uri()}>)" in text
    assert "%20" in index.as_uri()
    assert str(index) in text
    assert "http" not in text
