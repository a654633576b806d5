"""scripts/setup.sh's torch choice: a mistaken REFSR_TORCH is one line and exit 2, before anything is made."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

SETUP = Path(__file__).resolve().parents[1] / "scripts" / "setup.sh"


def _setup(tmp_path: Path, choice: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "scripts").mkdir()
    shutil.copy(SETUP, tmp_path / "scripts" / "setup.sh")  # it works in the folder above its own
    env = {**os.environ, "REFSR_TORCH": choice}
    return subprocess.run(["bash", str(tmp_path / "scripts" / "setup.sh")], env=env, capture_output=True,
                          text=True, timeout=60)


def test_a_wheel_that_is_not_there_is_named_and_nothing_is_made(tmp_path: Path) -> None:
    (tmp_path / "torch.whl").write_bytes(b"")
    done = _setup(tmp_path, f"{tmp_path / 'torch.whl'} {tmp_path / 'missing-torchvision.whl'}")
    assert done.returncode == 2
    assert done.stderr.strip() == f"setup: REFSR_TORCH must be empty, 'cpu' or wheel files; no such file: " \
                                  f"{tmp_path / 'missing-torchvision.whl'}"
    assert not (tmp_path / ".venv").exists()
