"""Files that change under a running `refsr` (issue 25): provenance never pairs a hash with other pixels."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.embedding.fallback import FallbackEmbedder
from tests.flows.cli.test_cli import _enhance_args, _env, _finish, _start

pytestmark = pytest.mark.slow


def _pause_then(proc, err: Path, act) -> None:  # noqa: ANN001
    """Wait for the fault hook's pause, then act while the run sleeps there."""
    deadline = time.monotonic() + 600  # Prefect's server may take minutes to start on a busy machine
    while time.monotonic() < deadline:
        if "fault injection: pausing" in err.read_text() or proc.poll() is not None:
            break
        time.sleep(0.05)
    assert proc.poll() is None, err.read_text()[-2000:]
    act()


def _swap(a: Path, b: Path) -> None:
    """Exchange two files' contents, each replaced atomically (as a photo app saving an edit does)."""
    data_a, data_b = a.read_bytes(), b.read_bytes()
    for path, data in ((a, data_b), (b, data_a)):
        tmp = path.with_name(".swap")
        tmp.write_bytes(data)
        os.replace(tmp, path)


def _rgb(data: bytes) -> np.ndarray:
    import io

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.mark.parametrize("phase", ["scanned", "target"])  # before embedding; before retrieval and enhancement
def test_a_photo_replaced_mid_run_is_never_filed_under_the_other_pictures_hash(
        phase: str, make_album, tiny_model: Path, tmp_path: Path) -> None:
    album = make_album(3)  # scene0 and scene1 swap their targets' pictures; scene2 is enhanced
    a, b = album / "scene0" / "small" / "scene0.jpg", album / "scene1" / "small" / "scene1.jpg"
    pictures = {hashlib.sha256(p.read_bytes()).hexdigest(): _rgb(p.read_bytes())
                for p in album.glob("scene*/small/*.jpg")}
    home = tmp_path / "h"
    if phase == "target":  # embedded with the right pixels first, so only the enhancement meets the swap
        from tests.flows.cli.test_cli import _refsr

        indexed = _refsr(["index", str(album), "--home", str(home), "--embedder", "fallback", "--no-progress"],
                         _env(tmp_path), tmp_path / "index")
        assert indexed.returncode == 0, indexed.stderr[-2000:]
    proc, out = _start([*_enhance_args(album, home, tiny_model), "--force"],
                       _env(tmp_path, REFSR_FAULT_INJECT=f"{phase}:1:pause:3"), tmp_path / "run")
    _pause_then(proc, out.with_suffix(".err"), lambda: _swap(a, b))
    done = _finish(proc, out)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-3000:]  # the changed photo is not done
    assert "changed since it was scanned" in done.stdout + done.stderr

    embedder = FallbackEmbedder()
    with sqlite3.connect(home / "refsr.db") as con:
        vectors = con.execute("SELECT sha256, vector FROM embeddings").fetchall()
        outputs = con.execute("SELECT target_sha256, output_path FROM enhancements "
                              "WHERE status = 'succeeded'").fetchall()
    for sha, blob in vectors:
        if sha in pictures:  # a target's hash holds that very picture's vector
            np.testing.assert_allclose(np.frombuffer(blob, "<f4"), embedder.embed([pictures[sha]])[0], atol=1e-5)
    assert outputs, done.stdout
    for sha, path in outputs:  # each output, shrunk back, is nearest to the picture its record names
        h, w = pictures[sha].shape[:2]
        shrunk = np.asarray(Image.open(path).convert("RGB").resize((w, h), Image.BICUBIC), dtype=np.float32)
        errors = {other: np.abs(shrunk - pic.astype(np.float32)).mean() for other, pic in pictures.items()}
        assert min(errors, key=errors.__getitem__) == sha, errors


def test_a_reference_replaced_in_place_gets_its_new_vector_in_the_index(make_album, tmp_path: Path) -> None:
    from pipeline.embedding.vector_index import VectorIndex
    from tests.flows.cli.test_cli import _refsr
    from tests.flows.conftest import scene

    album = make_album(2)
    home = tmp_path / "h"
    args = ["index", str(album), "--home", str(home), "--embedder", "fallback", "--no-progress"]
    first = _refsr(args, _env(tmp_path), tmp_path / "first")
    assert first.returncode == 0, first.stderr[-2000:]
    ref = album / "scene0" / "ref.png"
    Image.fromarray(scene(999)).save(ref)  # another picture under the same name
    again = _refsr(args, _env(tmp_path), tmp_path / "again")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "changed 1" in again.stdout, again.stdout

    with sqlite3.connect(home / "refsr.db") as con:
        (photo_id,) = con.execute("SELECT id FROM photos WHERE rel_path = 'scene0/ref.png'").fetchone()
    (path,) = (home / "faiss").rglob("*.faiss")
    held = VectorIndex.load(path, "fallback:v1").reconstruct(photo_id)
    want = FallbackEmbedder().embed([np.asarray(Image.open(ref).convert("RGB"))])[0]
    np.testing.assert_allclose(held, want / np.linalg.norm(want), atol=1e-5)


def test_a_name_that_is_not_utf8_is_listed_escaped_and_the_album_goes_on(make_album, tiny_model: Path,
                                                                         tmp_path: Path) -> None:
    from tests.flows.cli.test_cli import _refsr

    album = make_album(2)
    odd = os.path.join(os.fsencode(album / "scene1"), b"bad\xff\xfeutf8.jpg")
    with open(odd, "wb") as handle:
        handle.write((album / "scene1" / "small" / "scene1.jpg").read_bytes())
    home = tmp_path / "h"
    enhanced = _refsr(_enhance_args(album, home, tiny_model), _env(tmp_path), tmp_path / "enhance")
    assert enhanced.returncode == 0, enhanced.stdout[-2000:] + enhanced.stderr[-2000:]
    assert "enhanced 2" in enhanced.stdout, enhanced.stdout
    assert "scene1/bad\\xff\\xfeutf8.jpg: its name is not valid UTF-8" in enhanced.stdout, enhanced.stdout
    indexed = _refsr(["index", str(album), "--home", str(home), "--no-progress"], _env(tmp_path), tmp_path / "index")
    assert indexed.returncode == 0, indexed.stderr[-2000:]
    assert "unreadable: scene1/bad\\xff\\xfeutf8.jpg" in indexed.stdout, indexed.stdout
    assert os.path.exists(odd)  # left as it was


def _session_members(sid: int) -> list[str]:
    """Live processes of session `sid` (the test starts refsr as a session leader): 'pid command'."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            cmd = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:120]
        except OSError:
            continue
        fields = text.rpartition(")")[2].split()
        if fields[0] != "Z" and int(fields[3]) == sid:
            found.append(f"{stat.parent.name} {cmd}")
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill", "term"])
def test_processes_leave_no_process_behind_when_refsr_is_killed(sig: int, make_album, tiny_model: Path,
                                                                tmp_path: Path) -> None:
    pytest.importorskip("prefect_dask")
    album = make_album(2)
    args = [*_enhance_args(album, tmp_path / "h", tiny_model), "--processes", "--workers", "2"]
    env = _env(tmp_path, REFSR_FAULT_INJECT="enhanced:1:pause:300")
    env.pop("PREFECT_API_URL", None)  # the case at stake: refsr starts the temporary server itself
    proc, out = _start(args, env, tmp_path / "run")
    try:
        # A worker has run a photo task (its output is there): it has talked to a Prefect API by now.
        deadline = time.monotonic() + 900
        while not list((album / "enhanced").rglob("*.jpg")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None and list((album / "enhanced").rglob("*.jpg")), out.with_suffix(".err").read_text()
        assert len(_session_members(proc.pid)) >= 3  # refsr, its Prefect server, the workers
        os.kill(proc.pid, sig)
        proc.wait(timeout=60)
        left = _session_members(proc.pid)
        for _ in range(600):
            if not left:
                break
            time.sleep(0.1)
            left = _session_members(proc.pid)
        assert not left, left
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_250_byte_name_is_enhanced_and_only_written_outputs_are_in_the_ledger(make_album, tiny_model: Path,
                                                                               tmp_path: Path) -> None:
    from tests.flows.cli.test_cli import _refsr

    album = make_album(1)
    small = album / "scene0" / "small"
    long_name = "p" * 246 + ".jpg"  # 250 bytes, within the file system's 255
    (small / "scene0.jpg").rename(small / long_name)
    done = _refsr(_enhance_args(album, tmp_path / "h", tiny_model), _env(tmp_path), tmp_path / "run")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert (album / "enhanced" / "scene0" / "small" / long_name).is_file()
    ledger = (album / "enhanced" / ".refsr-output").read_text()
    for line in ledger.splitlines():
        if line and not line.startswith("#"):
            assert (album / "enhanced" / json.loads(line)).exists(), line
