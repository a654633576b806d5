"""Where a `refsr` command's start-up time goes: imports, database, pre-flight, Prefect's server, whole commands.

    python benchmarks/startup.py [ALBUM] [--repeat N]

Copies ALBUM (default examples/album) to a temporary folder and uses a fresh temporary REFSR_HOME,
so nothing of the user's is touched. Every figure is the wall time of a fresh process (the way a
user meets it), median of --repeat runs, warm disk cache. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "REFSR_"))}
    env.update(REFSR_HOME=str(home), PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    return env


def _timed(cmd: list[str], env: dict[str, str], check: bool = True) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - t0
    if check and done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-2000:]}")
    return seconds


def _median(cmd: list[str], env: dict[str, str], repeat: int, check: bool = True) -> float:
    return statistics.median(_timed(cmd, env, check) for _ in range(repeat))


def _snippet(code: str) -> list[str]:
    return [PY, "-c", code]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("album", nargs="?", type=Path, default=REPO / "examples" / "album")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    refsr = [PY, "-m", "flows.cli"]
    with tempfile.TemporaryDirectory(prefix="refsr-startup-") as tmp:
        album, home = Path(tmp) / "album", Path(tmp) / "home"
        shutil.copytree(args.album, album, ignore=shutil.ignore_patterns("enhanced"))
        env = _env(home)
        (home / "prefect-bench").mkdir(parents=True)
        rows: list[tuple[str, float]] = []

        def add(label: str, seconds: float) -> None:
            rows.append((label, seconds))
            print(f"{label:<62} {seconds:6.2f} s", flush=True)

        add("python -c pass (interpreter)", _median(_snippet("pass"), env, args.repeat))
        add("import flows.cli (what every command pays)", _median(_snippet("import flows.cli"), env, args.repeat))
        add("import flows.settings + preflight (no torch, no prefect)",
            _median(_snippet("import flows.preflight, flows.shortcut"), env, args.repeat))
        add("import prefect", _median(_snippet("import prefect"), env, args.repeat))
        add("import torch", _median(_snippet("import torch"), env, args.repeat))
        add("import flows.enhancing (the flow: prefect + torch + faiss)",
            _median(_snippet("import flows.enhancing"), env, args.repeat))
        server = ("import os; os.environ['PREFECT_HOME']=%r\n"
                  "from prefect.server.api.server import SubprocessASGIServer\n"
                  "s=SubprocessASGIServer(); s.start(timeout=600); s.stop()") % str(home / "prefect-bench")
        add("Prefect local server: first start (fresh Prefect home)", _timed(_snippet(server), env))
        add("Prefect local server: start again (its database exists)", _median(_snippet(server), env, args.repeat))
        add("refsr enhance ALBUM --device cuda without a GPU (a mistake)",
            _median(refsr + ["enhance", str(album), "--device", "cuda"], env, args.repeat, check=False))
        add("refsr index ALBUM, first run", _timed(refsr + ["index", str(album)], env))
        add("refsr index ALBUM, unchanged (decided before Prefect)", _median(refsr + ["index", str(album)], env,
                                                                             args.repeat))
        add("refsr enhance ALBUM, first run", _timed(refsr + ["enhance", str(album)], env))
        add("refsr enhance ALBUM, nothing to do (decided before Prefect)",
            _median(refsr + ["enhance", str(album)], env, args.repeat))
        add("refsr enhance ALBUM --force (every step through Prefect, model work redone)",
            _timed(refsr + ["enhance", str(album), "--force"], env))
        add("refsr history", _median(refsr + ["history"], env, args.repeat))
    print(f"\nmedian of {args.repeat} where repeated; {os.cpu_count()} CPUs; load average "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} at the end")


if __name__ == "__main__":
    main()
