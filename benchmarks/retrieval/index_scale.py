"""Indexing at scale: a generated album of N small targets + M references through the real `refsr index`.

Prints the first run's wall and CPU time, a re-run's (nothing changed) and the peak resident memory
of the largest process, with the code of `--repo` (default: this checkout), so two versions can be compared:

    python benchmarks/retrieval/index_scale.py --photos 500 --references 50
    python benchmarks/retrieval/index_scale.py --photos 500 --references 50 --repo /path/to/other/checkout
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the harness
from harness import cpu  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
# The thresholds of the tests' albums: targets ≤ 48 px, references ≥ 96 px, so photos stay tiny and
# the run measures orchestration and embedding rather than JPEG decoding.
ALBUM_CONFIG = "[scan]\nmin_ref_side = 96\nmax_target_side = 48\n"


def make_album(root: Path, photos: int, references: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    (root / "refsr.toml").parent.mkdir(parents=True, exist_ok=True)
    (root / "refsr.toml").write_text(ALBUM_CONFIG)
    for i in range(photos + references):
        big = i >= photos
        h, w = (96, 128) if big else (36, 48)
        base = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((w, h), Image.BICUBIC)
        noise = rng.normal(0, 8, size=(h, w, 3))
        pixels = np.clip(np.asarray(img, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
        folder = root / ("refs" if big else f"phone/{i // 200:03d}")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / f"{'ref' if big else 'img'}{i:05d}.jpg", quality=90)


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_index(repo: Path, album: Path, home: Path) -> tuple[float, float]:
    """(wall s, CPU s of refsr and the processes it waited for) of one `refsr index`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFSR_")}
    env.update({"PYTHONPATH": str(repo), "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1",
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_HOME": str(home / "prefect"),
                "PREFECT_LOGGING_LEVEL": "WARNING", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"})
    (home / "prefect").mkdir(parents=True, exist_ok=True)  # Prefect does not create its own home's parents
    cpu, started = _children_cpu_s(), time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "flows.cli", "index", str(album), "--home", str(home),
                           "--embedder", "fallback", "--no-progress"],
                          env=env, cwd=repo, capture_output=True, text=True, check=False)
    wall, cpu = time.perf_counter() - started, _children_cpu_s() - cpu
    if done.returncode != 0:
        raise SystemExit(f"refsr index failed ({done.returncode}):\n{done.stderr[-3000:]}")
    print(done.stdout.strip())
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=2000, help="small target photos (default 2000)")
    parser.add_argument("--references", type=int, default=200, help="reference photos (default 200)")
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout whose code runs (default: this one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="refsr-index-scale-") as tmp:
        album, home = Path(tmp) / "album", Path(tmp) / "home"
        started = time.perf_counter()
        make_album(album, args.photos, args.references)
        print(f"generated {args.photos} + {args.references} photos in {time.perf_counter() - started:.1f} s")
        first = run_index(args.repo.resolve(), album, home)
        again = run_index(args.repo.resolve(), album, home)
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # kB on Linux
    # CPU seconds too: on a shared machine they move far less with the neighbours' load than wall time.
    print(f"| {args.photos} + {args.references} | {first[0]:.1f} s ({first[1]:.1f} s CPU) | "
          f"{again[0]:.1f} s ({again[1]:.1f} s CPU) | {peak_mib:.0f} MiB |"
          f"  ({args.repo.resolve()}, {cpu()})")


if __name__ == "__main__":
    main()
