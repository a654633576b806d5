"""What the benchmarks share: measuring child processes, timing, the CPU's name, the model and the common cases.

An experiment is one script: its ``child`` measures in a fresh process (so its peak RSS is its own)
and returns JSON, its ``report`` prints the table. :func:`experiment` wires both to the command line:

    def main() -> None:
        experiment(__doc__, child, report, add_arguments)
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    # Before the installed packages, after PYTHONPATH: a child measuring another checkout
    # (`--baseline-root`, which sets PYTHONPATH) imports that checkout's code.
    sys.path.insert(1 + len([p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]), str(ROOT))


def peak_mb() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(script: str | Path, args: list, threads: int | None = None, root: Path = ROOT) -> dict:
    """``script --child ARGS`` in a fresh process on the code at ``root``; returns what its child printed."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    cmd = [sys.executable, str(script), "--child", json.dumps(args)] + (["--threads", str(threads)] if threads else [])
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root)
    if res.returncode != 0:
        raise RuntimeError(f"child {Path(script).name} {args} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def experiment(doc: str | None, child: Callable[..., dict], report: Callable[[argparse.Namespace], None],
               add_arguments: Callable[[argparse.ArgumentParser], None] | None = None) -> None:
    """The command line of one experiment: ``--child`` runs ``child`` and prints its JSON, else ``report(args)``."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0] if doc else None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads in the measuring processes")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args()
    if args.threads:
        __import__("torch").set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child(*json.loads(args.child))))
        return
    report(args)


def size(text: str) -> list[int]:
    """``"480x360"`` → ``[480, 360]``."""
    return [int(v) for v in text.split("x")]


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def best(fn: Callable[[], Any], repeat: int = 3) -> float:
    fn()  # warm-up: oneDNN picks its kernel, the heap grows
    return min(timed(fn) for _ in range(repeat))


def interleaved(runs: dict[str, Callable[[], Any]], repeat: int) -> dict[str, list[float]]:
    """Each callable once for warm-up, then ``repeat`` rounds of all of them in turn: other load lands on all alike."""
    for fn in runs.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeat):
        for k, fn in runs.items():
            times[k].append(timed(fn))
    return times


def cpu() -> str:
    """The CPU's name, cores, the vector flags that matter here and the load: the line every table starts with."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "?")
    flags = info.split("flags", 1)[1].split("\n", 1)[0].split()
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")
    return f"{name}, {os.cpu_count()} CPUs, flags {' '.join(f for f in wanted if f in flags)}, load {os.getloadavg()[0]:.1f}"


def git_head(root: Path) -> str:
    return subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()


def core_module(path: str) -> ModuleType:
    """``ttsr_core.<path>`` in this checkout's layout, or the flat one of a checkout from before its subpackages.

    Only for code that may run against another checkout (``--baseline-root``).
    """
    try:
        return importlib.import_module(f"ttsr_core.{path}")
    except ModuleNotFoundError:
        return importlib.import_module(f"ttsr_core.{path.rpartition('.')[2]}")


def load_model(name: str, checkpoint: str | Path | None = None):  # type: ignore[no-untyped-def]
    """``ttsr-lite``: the shipped checkpoint (or ``checkpoint``) when present; any other preset with seeded random weights."""
    import torch

    if checkpoint is None:
        from ttsr_core.config import SHIPPED_MODEL as checkpoint
    if name == "ttsr-lite" and Path(checkpoint).exists():
        return core_module("model.checkpoint").load_checkpoint(checkpoint).model.eval(), "shipped checkpoint"
    torch.manual_seed(0)
    preset = importlib.import_module("ttsr_core.config").preset
    return core_module("model.net").TTSR(preset(name)).eval(), "random weights"


def enhance_case():  # type: ignore[no-untyped-def]
    """The 480×360 target and 1920×1440 reference of the whole-enhancement measurements (uint8 RGB)."""
    import numpy as np

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:360, 0:480].astype(np.float32)
    lr = np.clip(127 + 60 * np.sin(xx / 9)[..., None] * np.cos(yy / 7)[..., None] + rng.normal(0, 20, (360, 480, 3)),
                 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[0:1440, 0:1920].astype(np.float32)
    ref = np.clip(127 + 60 * np.sin(xx / 36)[..., None] * np.cos(yy / 28)[..., None] + rng.normal(0, 20, (1440, 1920, 3)),
                  0, 255).astype(np.uint8)
    return lr, ref


def validation_pairs(max_side: int):  # type: ignore[no-untyped-def]
    """data/validation pairs as (name, HR target, LR, reference): photos capped at ``max_side`` px, LR = HR↓4."""
    import numpy as np
    from PIL import Image

    from ttsr_core.arrays import resize_bicubic

    data = ROOT / "data" / "validation"
    for line in (data / "pairs.tsv").read_text().strip().splitlines():
        names = line.split("\t")[:2]
        photos = []
        for name in names:
            im = Image.open(data / name).convert("RGB")
            s = min(1.0, max_side / max(im.size))
            if s < 1.0:  # both photos of a pair by the same factor
                im = im.resize((round(im.width * s), round(im.height * s)), Image.BICUBIC)
            photos.append(np.asarray(im))
        hr = photos[0][: photos[0].shape[0] // 4 * 4, : photos[0].shape[1] // 4 * 4]
        yield f"{names[0]} ← {names[1]}", hr, resize_bicubic(hr, hr.shape[1] // 4, hr.shape[0] // 4), photos[1]
