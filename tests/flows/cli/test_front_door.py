"""Every user mistake through the real console script: one line on stderr, the exit status, no traceback,
and no Prefect server started for it; plus the pre-flight checks' own logic."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flows.preflight import UsageError, check_output_folder, planned_bytes, shown
from tests.flows.conftest import add_pair

SCRIPT = Path(sys.executable).with_name("refsr")
REPO = Path(__file__).resolve().parents[3]


def _run(args: list[str], home: Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "REFSR_"))}
    env.update(REFSR_HOME=str(home), PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def _photo(path: Path, size: tuple[int, int], seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An album without refsr.toml (the relative rule decides), an empty one, a file, bad checkpoints."""
    root = tmp_path_factory.mktemp("front")
    album = root / "album"
    add_pair(album, "a", seed=1)  # 128x96 reference, 32 px target: ratio 4
    empty = root / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("no photos here")
    bad_toml = root / "bad-toml"
    add_pair(bad_toml, "a", seed=2)
    (bad_toml / "refsr.toml").write_text("[scan]\nmin_ref_side = 'big'\n")
    junk = root / "junk.safetensors"
    junk.write_bytes(b"this is not a checkpoint at all")
    from safetensors.numpy import save_file

    other = root / "other.safetensors"
    save_file({"encoder.weight": np.zeros((2, 2), np.float32)}, str(other))
    (root / "cut.safetensors").write_bytes(other.read_bytes()[:-4])  # an interrupted copy
    (root / "junk.pt").write_text("not torch either")
    a_file = root / "file.txt"
    a_file.write_text("x")
    return {"root": root, "album": album, "empty": empty, "bad_toml": bad_toml, "junk": junk, "other": other,
            "file": a_file, "target": album / "a" / "small" / "a.jpg", "ref": album / "a" / "ref.png"}


def _mistakes(s: dict[str, Path]) -> list[tuple[list[str], int, str]]:
    album, target, ref = str(s["album"]), str(s["target"]), str(s["ref"])
    cases = [
        (["enhance", str(s["root"] / "nope")], 2, "album not found"),
        (["index", str(s["root"] / "nope")], 2, "album not found"),
        (["enhance", str(s["file"])], 2, "album is not a folder"),
        (["enhance", album, "--model", str(s["root"] / "none.safetensors")], 2, "TTSR checkpoint not found"),
        (["enhance", album, "--model", str(s["junk"])], 2, "not a readable safetensors checkpoint"),
        (["enhance", album, "--model", str(s["other"])], 2, "not a TTSR checkpoint"),
        (["enhance", album, "--model", str(s["root"] / "cut.safetensors")], 2,
         f"truncated: {s['other'].stat().st_size - 4} of {s['other'].stat().st_size} bytes"),
        (["enhance", album, "--model", str(s["file"])], 2, "unknown checkpoint type"),
        (["enhance", album, "--model", str(s["root"] / "junk.pt")], 2, "not a torch checkpoint"),
        (["enhance", album, "--model", str(s["root"])], 2, "TTSR checkpoint is a folder"),
        (["enhance", album, "--model", "/dev/zero"], 2, "TTSR checkpoint is not a regular file"),
        (["enhance", album, "--out", str(s["file"])], 2, "output folder is a file"),
        (["enhance", album, "--out", str(s["file"] / "out")], 2, "cannot be created"),
        (["enhance", album, "--out", album], 2, "cannot be the album itself"),
        (["enhance", str(s["bad_toml"])], 2, "min_ref_side must be a whole number"),
        (["enhance", album, "--ref-ratio", "1"], 2, "--ref-ratio: expected a number in (1, 64]"),
        (["enhance", album, "--ref-ratio", "3", "--min-ref-side", "90"], 2, "give either --ref-ratio"),
        (["enhance", album, "--top-k", "0"], 2, "expected a number >= 1"),
        (["enhance", album, "--refs", "3", "--top-k", "2"], 2, "cannot exceed top_k"),
        (["enhance", album, "--db", "not a url"], 2, "not a SQLAlchemy URL"),
        (["enhance", str(s["empty"])], 1, "no photos found"),
        (["index", str(s["empty"])], 1, "no photos found"),
        (["frobnicate"], 2, "invalid choice"),
        (["sr", str(s["root"] / "missing.jpg"), "--ref", ref, "--out", str(s["root"] / "o.png")], 2,
         "input photo not found"),
        (["sr", target, "--ref", str(s["root"] / "gone.png"), "--out", str(s["root"] / "o.png")], 2,
         "reference not found"),
        (["sr", target, "--ref", ref, "--out", str(s["root"] / "x.bmpx")], 2, "cannot write '.bmpx' images"),
        (["sr", target, "--ref", ref, "--out", ref], 2, "is an input photo"),
        (["sr", target, "--ref", ref, "--out", str(s["root"] / "o.png"), "--attention", target], 2,
         "--attention"),
        (["report", "--run", "99"], 2, "no run with id 99"),
        (["which-ref", str(s["root"] / "nowhere.jpg")], 2, f"not found: {s['root'] / 'nowhere.jpg'}"),
    ]
    if os.path.isdir("/proc/self"):  # a folder that exists and takes no new files
        cases.append((["enhance", album, "--out", "/proc/refsr-out"], 2,
                      "output folder /proc/refsr-out cannot be created: /proc is not writable "
                      "(it accepts no new files)"))
    if not any(os.path.exists(n) for n in ("/dev/nvidiactl", "/dev/nvidia0")):
        cases.append((["enhance", album, "--device", "cuda"], 2, "no NVIDIA driver or GPU"))
    return cases


@pytest.mark.slow
def test_every_mistake_is_one_plain_line_before_any_flow(scene: dict[str, Path], tmp_path: Path) -> None:
    assert SCRIPT.exists(), f"console script missing: {SCRIPT}"
    for args, code, needle in _mistakes(scene):
        home = tmp_path / f"home-{len(list(tmp_path.iterdir()))}"
        done = _run(args, home)
        what = f"refsr {' '.join(args)}"
        lines = done.stderr.strip().splitlines()
        assert done.returncode == code, f"{what}: exit {done.returncode}, stderr {done.stderr!r}"
        assert len(lines) == 1, f"{what}: expected one line, got {done.stderr!r}"
        assert needle in lines[0], f"{what}: {lines[0]!r} lacks {needle!r}"
        assert lines[0].startswith("refsr"), lines[0]
        assert "Traceback" not in done.stderr + done.stdout
        assert "Prefect" not in done.stderr
        assert not (home / "prefect").exists(), f"{what}: a Prefect home was made, so Prefect started"
    # The inputs of the `sr` mistakes are untouched (14.10: an input is never overwritten).
    assert Image.open(scene["target"]).format == "JPEG" and Image.open(scene["ref"]).format == "PNG"


def test_verbose_shows_the_traceback(scene: dict[str, Path], tmp_path: Path) -> None:
    done = _run(["-v", "enhance", str(scene["root"] / "nope")], tmp_path / "h")
    assert done.returncode != 0 and "Traceback" in done.stderr


def test_control_characters_never_reach_the_terminal(tmp_path: Path) -> None:
    name = "evil\x1b]0;pwned\x07\nname.jpg"
    assert shown(name) == "evil\\x1b]0;pwned\\x07\\nname.jpg"
    assert shown("plain/päth ok.jpg") == "plain/päth ok.jpg"
    done = _run(["enhance", str(tmp_path / name)], tmp_path / "h")
    assert "\x1b" not in done.stderr and done.stderr.count("\n") == 1 and "\\x1b" in done.stderr


def test_output_folder_checks(tmp_path: Path) -> None:
    assert check_output_folder(tmp_path / "new" / "deeper") == (tmp_path / "new" / "deeper").resolve()
    assert not (tmp_path / "new").exists()  # checking creates nothing
    with pytest.raises(UsageError, match="not enough space"):
        check_output_folder(tmp_path, planned_bytes=1 << 62)
    with pytest.raises(UsageError, match="output folder is an input"):
        check_output_folder(tmp_path, inputs=[tmp_path])
    # Lossless outputs are estimated at 3 bytes a pixel, compressed ones at 0.5.
    assert planned_bytes([(100, 50)], 4.0, "png") == 100 * 50 * 16 * 3
    assert planned_bytes([(100, 50)], 2.0, None) == int(100 * 50 * 4 * 0.5)


def test_sr_warns_about_a_small_reference(tmp_path: Path) -> None:
    from flows.cli.sr_checks import small_references

    lr = _photo(tmp_path / "lr.png", (160, 108))
    tiny = _photo(tmp_path / "tiny.png", (40, 27))
    big = _photo(tmp_path / "big.png", (700, 480))
    warnings = small_references(lr, [tiny, big])
    assert len(warnings) == 1 and "tiny.png (40x27) is smaller than the x4 output (640x432)" in warnings[0]


@pytest.mark.slow
@pytest.mark.e2e
def test_album_without_config_then_nothing_to_do_without_prefect(tmp_path: Path, tiny_model: Path) -> None:
    """No refsr.toml: the relative rule finds the target; the second run is decided before Prefect starts."""
    import json

    album = tmp_path / "album"
    add_pair(album, "a", seed=5)  # 128 px reference, 32 px target: 4x apart
    home = tmp_path / "home"
    args = ["enhance", str(album), "--model", str(tiny_model), "--device", "cpu", "--embedder", "fallback",
            "--top-k", "1", "--no-report", "--json"]
    first = _run(args, home)
    assert first.returncode == 0, first.stderr
    data = json.loads(first.stdout)
    assert [o["status"] for o in data["outcomes"]] == ["enhanced"]
    assert "starting Prefect's local server" in first.stderr
    # Nothing else on stderr: no traceback, not even Prefect's shutdown noise ("Error flushing ... events").
    assert "Traceback" not in first.stderr and "Error" not in first.stderr, first.stderr
    assert (home / "prefect").is_dir()  # Prefect's home is inside the workspace
    # The enhance indexed the album: the index that follows has nothing to do, known before Prefect starts.
    indexed = _run(["index", str(album), "--embedder", "fallback", "--json"], home)
    assert indexed.returncode == 0, indexed.stderr
    assert "Prefect" not in indexed.stderr and indexed.stderr.strip() == ""
    index_data = json.loads(indexed.stdout)
    assert index_data["scan"]["new"] == 0 and index_data["scan"]["unchanged"] == 2 and index_data["embedded"] == 0
    assert "nothing changed since the last scan" in _run(["index", str(album), "--embedder", "fallback"], home).stdout
    # ... and an enhance after that index is still a no-op: the index run carried the enhance's state on.
    second = _run(args, home)
    assert second.returncode == 0, second.stderr
    again = json.loads(second.stdout)
    assert [o["status"] for o in again["outcomes"]] == ["cached"]
    assert "Prefect" not in second.stderr and second.stderr.strip() == ""
    runs = json.loads(_run(["history", "--json"], home).stdout)
    assert [r["id"] for r in runs][::3] == [again["run_id"], data["run_id"]]
    assert runs[2]["id"] == index_data["run_id"] and runs[2]["kind"] == "index" and runs[2]["status"] == "completed"
    assert [bool(r["flow_run_id"]) for r in runs] == [False, False, False, True]  # only the first was a flow run
    # The whole command's time, Prefect's start included, is what history reports.
    assert runs[3]["duration_s"] >= 0.9 * data["wall_s"] - 1.0
    text = _run(args[:-1], home)
    assert "nothing to do: all 1 target(s) are already enhanced" in text.stdout


def test_verdicts_claim_only_what_happened() -> None:
    from flows.cli.output import verdict

    assert verdict({"enhanced": 0, "cached": 0, "failed": 0, "no-reference": 0}).startswith("no targets")
    assert "nothing to do" not in verdict({"enhanced": 0, "cached": 0, "failed": 0, "no-reference": 3})
    assert "nothing to do" not in verdict({"enhanced": 0, "cached": 2, "failed": 1, "no-reference": 0})
    assert verdict({"enhanced": 0, "cached": 2, "failed": 0, "no-reference": 0}).startswith("nothing to do")
    assert verdict({"enhanced": 1, "cached": 2, "failed": 0, "no-reference": 0}).startswith("done: 1")


def test_fingerprint_follows_files_and_settings(tmp_path: Path, tiny_model: Path) -> None:
    from db.models import RunKind
    from flows.preflight import check_album_command
    from flows.settings import Settings
    from flows.shortcut import fingerprint

    album = tmp_path / "album"
    add_pair(album, "a", seed=6)
    settings = Settings.from_env(env={}, home=tmp_path / "h", model_path=tiny_model)

    def digest(s: Settings = settings) -> str:
        return fingerprint(RunKind.enhance, check_album_command(s, album), s)

    before = digest()
    assert digest() == before
    assert digest(settings.with_(workers=5)) == before  # threads change nothing recorded
    assert digest(settings.with_(top_k=2)) != before
    os.utime(album / "a" / "ref.png", ns=(1, 1))
    assert digest() != before


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux's")
def test_prefect_server_dies_with_a_killed_refsr(tmp_path: Path) -> None:
    """14.6: kill -9 of `refsr` used to leave Prefect's local server running for good."""
    import signal
    import time

    album = tmp_path / "album"
    for i in range(6):
        add_pair(album, f"s{i}", seed=20 + i)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "REFSR_"))}
    env.update(REFSR_HOME=str(tmp_path / "home"), PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([str(SCRIPT), "index", str(album), "--embedder", "fallback"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        servers: list[int] = []
        while not servers and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            servers = [c for c in _children(proc.pid)
                       if "uvicorn" in Path(f"/proc/{c}/cmdline").read_bytes().decode(errors="replace")]
        if not servers:
            pytest.skip("the run finished before its server could be seen")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 30
        while _running(servers[0]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _running(servers[0]), "Prefect's server outlived the killed refsr"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
