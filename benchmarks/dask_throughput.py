"""Photos per minute of `refsr enhance --dask` with 1 and 2 Dask worker processes, and each worker's peak memory.

The cluster is started by hand as the README's recipe does (`dask scheduler`, `dask worker
--nworkers N --nthreads 1`), the album is generated (seeded scenes: one reference and one small
target each), and the shipped compact model runs on CPU. For each worker count it runs the enhance
flow twice in this process: a cold run (each worker loads the model on its first task) and a warm
run with --force (every job redone, model already loaded), and reads each worker's peak resident
memory (getrusage) from the workers themselves.

    .venv/bin/python benchmarks/dask_throughput.py [--targets 8] [--workers 1 2] [--json out.json]

Needs the [dask] extra. Dask pins each worker process's BLAS/OpenMP pool to one thread, so N
workers use N cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TARGET_SIDE = 120  # x4 gives 480 px outputs
REF_SIDE = 480


def scene(seed: int, width: int = REF_SIDE, height: int = REF_SIDE * 3 // 4) -> np.ndarray:
    """A seeded synthetic photo: colour gradient, bright discs, fine stripes and noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = rng.uniform(40, 200, 3) + yy[..., None] * rng.uniform(-0.3, 0.3, 3) + xx[..., None] * rng.uniform(-0.3, 0.3, 3)
    for _ in range(6):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(20, 80)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
    img += (25 * np.sin(xx * rng.uniform(0.3, 1.2) + yy * rng.uniform(0.3, 1.2)))[..., None]
    return np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)


def make_album(root: Path, targets: int) -> Path:
    root.mkdir(parents=True)
    (root / "refsr.toml").write_text(f"[scan]\nmin_ref_side = {REF_SIDE}\nmax_target_side = {TARGET_SIDE}\n")
    for i in range(targets):
        big = scene(1000 + i)
        folder = root / f"scene{i:02d}"
        folder.mkdir()
        Image.fromarray(big).save(folder / "ref.png")
        small = Image.fromarray(np.roll(big, 12, axis=1)).resize((TARGET_SIDE, TARGET_SIDE * 3 // 4), Image.BICUBIC)
        small.save(folder / "small.jpg", quality=90)
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_cluster(workers: int, log_dir: Path) -> tuple[str, list[subprocess.Popen[bytes]]]:
    """`dask scheduler` and `dask worker --nworkers N --nthreads 1`, as the README starts them."""
    bin_dir = Path(sys.executable).parent
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([str(bin_dir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--dashboard-address", ":0"], env=env, stdout=subprocess.DEVNULL,
                              stderr=open(log_dir / "scheduler.log", "wb"), start_new_session=True)]
    procs.append(subprocess.Popen([str(bin_dir / "dask"), "worker", address, "--nworkers", str(workers),
                                   "--nthreads", "1", "--dashboard-address", ":0"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=open(log_dir / "workers.log", "wb"),
                                  start_new_session=True))
    from distributed import Client

    with Client(address, timeout=120) as client:
        client.wait_for_workers(workers, timeout=300)
    return address, procs


def peak_rss_mib(address: str) -> list[float]:
    """Each worker process's peak resident memory so far, in MiB (Linux reports ru_maxrss in KiB)."""
    import resource

    from distributed import Client

    def peak() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    with Client(address, timeout=60) as client:
        return sorted(round(v, 1) for v in client.run(peak).values())


def measure(workers: int, targets: int, work: Path) -> dict[str, object]:
    from flows.enhancing import enhance_album
    from flows.settings import Settings

    album = make_album(work / f"album-{workers}", targets)
    address, procs = start_cluster(workers, work)
    try:
        settings = Settings.from_env(env={}, home=work / f"home-{workers}", device="cpu", embedder="fallback",
                                     dask=address, report=False)
        runs = {}
        for label, force in (("cold", False), ("warm", True)):
            t0 = time.perf_counter()
            summary = enhance_album(str(album), settings.with_(force=force))
            wall = time.perf_counter() - t0
            done = summary.counts()["enhanced"]
            assert done == targets, summary.counts()
            runs[label] = {"wall_s": round(wall, 1), "photos_per_min": round(60 * done / wall, 2)}
        return {"workers": workers, "targets": targets, **runs, "peak_rss_mib_per_worker": peak_rss_mib(address)}
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    work = Path(tempfile.mkdtemp(prefix="refsr-dask-bench-"))
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:  # start Prefect's local API now, not inside the first timing
        client.hello()
    try:
        rows = [measure(n, args.targets, work) for n in args.workers]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("| worker processes | photos | cold run s | cold photos/min | warm run s | warm photos/min | peak RSS per worker MiB |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        print(f"| {r['workers']} | {r['targets']} | {r['cold']['wall_s']} | {r['cold']['photos_per_min']} | "
              f"{r['warm']['wall_s']} | {r['warm']['photos_per_min']} | {', '.join(map(str, r['peak_rss_mib_per_worker']))} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
