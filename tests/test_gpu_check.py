"""benchmarks/gpu_check.sh: its CPU dry run goes through every step and writes the results file."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_dry_run_writes_every_section(tmp_path: Path) -> None:
    out = tmp_path / "results.md"
    res = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(out)],
                         capture_output=True, text=True, env={**os.environ, "PYTHON": sys.executable}, timeout=600)
    text = out.read_text()
    assert res.returncode == 0, res.stdout + res.stderr + text
    assert "DRY RUN on the CPU" in text
    assert "test_inference.py" in text  # the CUDA-marked test was selected
    for section in ("## Equivalence on cpu", "fused vs eager, float32", "autocast bfloat16 vs float32",
                    "## faiss-gpu vs faiss-cpu", "## Timing", "overall: PASS"):
        assert section in text, section
    assert "| exact | bfloat16 | 256 |" in text  # the whole timing grid ran


def test_gpu_check_rejects_unknown_arguments(tmp_path: Path) -> None:
    res = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--bogus"], capture_output=True, text=True)
    assert res.returncode == 2
    assert "unknown argument --bogus" in res.stderr
