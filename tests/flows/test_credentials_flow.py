"""Provenance that travels with the photo: outputs carry it, a copy answers without the database (task bodies, no server)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from PIL import Image

from sqlalchemy import select

from db import queries
from db.models import Enhancement, EnhancementStatus
from flows.cli import main
from flows.resources import resources_for
from flows.targets.jobs import Outcome
from pipeline.provenance import credentials, xmp
from tests.flows.conftest import ALBUM_CONFIG, add_pair
from tests.flows.conftest import index_album, job_for
from tests.flows.test_tasks import _enhance, _targets



def _enhanced(album: Path, settings, fresh: bool = True) -> Path:
    """Index `album` and enhance its first target through the task body; the output path."""
    album_id = index_album(album, settings) if fresh else None
    if album_id is None:
        with resources_for(settings).sessions() as session:
            album_id = queries.get_album(session, album.resolve()).id
    job = job_for(album, settings, album_id)
    target = _targets(settings, album_id)[0]
    outcome = _enhance(target, job, settings)
    assert outcome.status in {Outcome.ENHANCED, Outcome.CACHED}, outcome
    return Path(outcome.output_path)


def _rows(settings) -> list[tuple[str | None, str | None]]:
    with resources_for(settings).sessions() as session:
        rows = session.scalars(select(Enhancement).where(Enhancement.status == EnhancementStatus.succeeded)
                               .order_by(Enhancement.id)).all()
        return [(r.credentials.value if r.credentials else None, r.credentials_note) for r in rows]


def test_outputs_carry_credentials_and_a_copy_answers_which_ref_without_the_database(
        make_album, settings_for, tmp_path: Path, capsys) -> None:
    album = make_album(1)
    settings = settings_for(embedder="fallback")
    out = _enhanced(album, settings)
    verdict = credentials.verify(out)
    assert verdict.ok and verdict.local_signer, verdict
    assert str(album).encode() not in out.read_bytes() and b"scene0" not in out.read_bytes()
    assert _rows(settings) == [("signed", None)]
    assert (settings.home / "credentials" / "signing-key.pem").is_file()

    # The database agrees with the file.
    assert main(["which-ref", str(out), "--json", "--home", str(settings.home)]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["kind"] == "output" and answer["file"]["carrier"] == "c2pa" and answer["file"]["verified"]
    assert "disagree" not in answer["note"]
    recorded = [r["sha256"] for r in answer["enhancements"][0]["references"]]
    assert [r["sha256"] for r in answer["file"]["provenance"]["references"]] == recorded

    # A copy on "another machine": another folder, a fresh REFSR_HOME.
    copy = tmp_path / "elsewhere" / out.name
    copy.parent.mkdir()
    shutil.copyfile(out, copy)
    assert main(["which-ref", str(copy), "--home", str(tmp_path / "fresh")]) == 0
    text = capsys.readouterr().out
    assert "(file)" in text and "signed manifest" in text and f"sha256:{recorded[0]}" in text

    assert main(["verify", str(copy)]) == 0
    assert "OK" in capsys.readouterr().out
    # A re-encoded copy: the manifest is gone, and verify says so.
    reencoded = tmp_path / "elsewhere" / "reencoded.jpg"
    Image.open(copy).save(reencoded, "JPEG", quality=80)
    assert main(["verify", str(reencoded)]) == 1
    assert "no Content Credentials" in capsys.readouterr().err


def test_the_file_and_the_database_disagreeing_is_said(make_album, settings_for, tmp_path: Path) -> None:
    from flows.provenance import describe_path

    first, second = make_album(1, "one"), tmp_path / "two"
    second.mkdir()
    (second / "refsr.toml").write_text(ALBUM_CONFIG)
    add_pair(second, "scene0", seed=7)  # the same names, another photo
    settings = settings_for(embedder="fallback")
    out_one, out_two = _enhanced(first, settings), _enhanced(second, settings)
    shutil.copyfile(out_two, out_one)  # another photo's output under this one's name
    answer = describe_path(settings, out_one)
    assert answer.kind == "output" and "differs from every recorded output" in answer.note
    assert "disagree on: job" in answer.note


def test_a_format_without_room_is_written_with_a_warning_and_a_row_that_says_so(
        make_album, settings_for, capsys, caplog) -> None:
    album = make_album(1)
    target = next(album.rglob("*.jpg"))
    Image.open(target).save(target.with_suffix(".bmp"))
    target.unlink()
    settings = settings_for(embedder="fallback")
    out = _enhanced(album, settings)
    assert out.suffix == ".bmp" and Image.open(out).size[0] > 0
    [(state, note)] = _rows(settings)
    assert state == "refused" and "BMP" in note and "BMP" in caplog.text
    assert main(["which-ref", str(out), "--home", str(settings.home)]) == 0
    assert "refused" in capsys.readouterr().out


def test_no_credentials_keeps_the_xmp_and_turning_them_on_redoes_the_output(make_album, settings_for) -> None:
    album = make_album(1)
    out = _enhanced(album, settings_for(embedder="fallback", credentials=False, embed_names=True))
    data = out.read_bytes()
    assert credentials.read_provenance(data) is None
    found = xmp.read(data)
    assert found is not None and found.target_name == "scene0.jpg" and found.references[0].name == "ref.png"
    settings = settings_for(embedder="fallback")
    assert _rows(settings) == [("xmp-only", None)]

    assert _enhanced(album, settings, fresh=False) == out  # the file carried less than asked: redone
    assert credentials.verify(out).ok and xmp.read(out.read_bytes()).target_name is None
    assert _rows(settings)[-1] == ("signed", None)
    assert _enhanced(album, settings, fresh=False) == out and len(_rows(settings)) == 2  # now reused

    _enhanced(album, settings_for(embedder="fallback", credentials=False, xmp=False), fresh=False)
    assert xmp.read(out.read_bytes()) is None and credentials.read_provenance(out.read_bytes()) is None
    assert _rows(settings)[-1] == ("none", None)


def test_an_unreadable_signing_key_is_a_usage_error(make_album, tiny_model: Path, tmp_path: Path, capsys) -> None:
    """Refused before any flow starts (no Prefect server either)."""
    key = tmp_path / "key.pem"
    key.write_text("not a key")
    code = main(["enhance", str(make_album(1)), "--model", str(tiny_model), "--home", str(tmp_path / "h"),
                 "--signing-key", str(key), "--signing-cert", str(key)])
    assert code == 2
    assert "signing key" in capsys.readouterr().err
