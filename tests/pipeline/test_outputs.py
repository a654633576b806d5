"""Output folders: the scan marker, writes kept inside the resolved folder, and the ledger of what refsr wrote."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline import outputs
from pipeline.outputs import MARKER, UnsafeOutputError, claim_output, is_output_folder, mark_output_folder


def test_marking_is_idempotent_and_hidden(tmp_path: Path) -> None:
    out = tmp_path / "out" / "deep"
    marker = mark_output_folder(out)
    mark_output_folder(out)
    assert marker == out / MARKER and marker.name.startswith(".") and is_output_folder(out)
    assert not is_output_folder(tmp_path)


def test_a_symlinked_subfolder_cannot_lead_a_write_out_of_the_folder(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "t00.jpg").write_bytes(b"someone's photo")
    out = tmp_path / "album" / "enhanced"
    out.mkdir(parents=True)
    (out / "extra").symlink_to(victim, target_is_directory=True)
    with pytest.raises(UnsafeOutputError, match="outside the output folder"):
        claim_output(out, out / "extra" / "t00.jpg")
    with pytest.raises(UnsafeOutputError, match="outside the output folder"):
        claim_output(out, out / "extra" / "new.jpg")  # even where nothing would be replaced
    assert (victim / "t00.jpg").read_bytes() == b"someone's photo"


def test_the_output_folder_itself_may_be_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "disk"
    real.mkdir()
    (tmp_path / "out").symlink_to(real, target_is_directory=True)
    assert claim_output(tmp_path / "out", tmp_path / "out" / "a" / "b.jpg") == real / "a" / "b.jpg"


def test_only_files_refsr_wrote_are_replaced(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    mine = claim_output(out, out / "sub" / "a.jpg")
    mine.write_bytes(b"output")
    assert claim_output(out, out / "sub" / "a.jpg") == mine  # in the ledger: ours to replace
    (out / "sub" / "b.jpg").write_bytes(b"a user's file")
    with pytest.raises(UnsafeOutputError, match="refsr did not write it"):
        claim_output(out, out / "sub" / "b.jpg")
    # The database's record of an older output (written before the ledger existed) also counts.
    assert claim_output(out, out / "sub" / "b.jpg", recorded=lambda p: p == (out / "sub" / "b.jpg").resolve())
    os.mkfifo(out / "sub" / "c.jpg")
    with pytest.raises(UnsafeOutputError, match="other than a regular file"):
        claim_output(out, out / "sub" / "c.jpg", recorded=lambda p: True)


def test_a_torn_ledger_line_is_ignored(tmp_path: Path) -> None:
    out = tmp_path / "out"
    claim_output(out, out / "a.jpg")
    with open(out / MARKER, "a") as ledger:
        ledger.write('"b.j')  # a process killed mid-write
    assert outputs._ledger_names(out.resolve()) == {"a.jpg"}
    claim_output(out, out / "c.jpg")  # the next name starts its own line, not glued to the fragment
    assert outputs._ledger_names(out.resolve()) == {"a.jpg", "c.jpg"}


def test_the_ledger_is_read_incrementally_and_keeps_one_line_per_name(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for _ in range(3):
        claim_output(out, out / "a.jpg")  # never written (or deleted since): one line, not three
    lines = [ln for ln in (out / MARKER).read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines == ['"a.jpg"']
    with open(out / MARKER, "a") as ledger:
        ledger.write('"b.jpg"\n')  # another process's claim, appended after our last read
    assert outputs._ledger_names(out.resolve()) == {"a.jpg", "b.jpg"}
    (out / MARKER).unlink()  # replaced by a shorter file: read again from the start
    (out / MARKER).write_text('"z.jpg"\n')
    assert outputs._ledger_names(out.resolve()) == {"z.jpg"}


def test_a_claim_whose_write_failed_is_released_and_a_written_one_kept(tmp_path: Path) -> None:
    root = tmp_path / "out"
    failed, written = root / "a" / "never.jpg", root / "done.jpg"
    claim_output(root, failed)
    claim_output(root, written)
    written.write_bytes(b"refsr's output")
    outputs.release_output(root, failed)  # nothing was written there
    outputs.release_output(root, written)  # a file is there: the claim stands
    assert outputs._ledger_names(root.resolve()) == {"done.jpg"}
    failed.parent.mkdir()
    failed.write_bytes(b"the user's own photo, put there later")
    with pytest.raises(UnsafeOutputError, match="refsr did not write it"):
        claim_output(root, failed)
    claim_output(root, written)  # still refsr's
    outputs._LEDGERS.clear()  # read again from the start: the same answer
    assert outputs._ledger_names(root.resolve()) == {"done.jpg"}
