"""Peak memory and wall time of relevance search + texture transfer: bounded exact search vs the full matrix.

Every (case, implementation) runs in a fresh subprocess that reports its own peak RSS
(``ru_maxrss``), so one run's allocations never hide another's. Paper preset, random weights
(memory and time do not depend on the weights), CPU float32.

    .venv/bin/python benchmarks/search_memory.py            # all cases, markdown table on stdout
    .venv/bin/python benchmarks/search_memory.py --cases cufed5
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

CASES = {
    # name: (LR width, LR height, reference width, reference height)
    "cufed5": (125, 83, 500, 332),
    "720p": (320, 180, 1280, 720),
}
GiB = 2**30


def baseline_bytes(lr_w: int, lr_h: int, ref_w: int, ref_h: int, lte: tuple[int, int, int] = (64, 128, 256)) -> int:
    """Float32 bytes the full-matrix path holds at its peak (transfer of lv1), from its tensor shapes.

    Relevance matrix (K × Q), normalised unfolded queries and keys (C3·9 × Q / K), and for lv1 the
    unfolded 12×12 reference patches plus the gathered copy (C1·144 × K and × Q) and the folded
    output; the lv2/lv3 unfolds are freed before lv1 is built, the relevance matrix is freed after max.
    The peak is the larger of the two phases.
    """
    q, k = lr_w * lr_h, (ref_w // 4) * (ref_h // 4)
    c1, _, c3 = lte
    search_phase = k * q + c3 * 9 * (q + k)
    lv1_phase = c1 * 144 * (k + q) + c1 * 16 * q + c3 * 9 * (q + k)
    return 4 * max(search_phase, lv1_phase)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(case: str, impl: str, threads: int | None, budget_mb: float | None) -> dict:
    import torch

    from ttsr_core.config import SearchConfig, preset
    from ttsr_core.model.net import TTSR
    from ttsr_core.model.search import full_matrix_search_transfer, search_and_transfer

    if threads:
        torch.set_num_threads(threads)
    lr_w, lr_h, ref_w, ref_h = CASES[case]
    torch.manual_seed(0)
    model = TTSR(preset("ttsr")).eval()
    g = torch.Generator().manual_seed(1)
    # Random images are enough: cost depends on sizes only. In [-1, 1] like real inputs.
    lr_up = torch.rand(1, 3, 4 * lr_h, 4 * lr_w, generator=g) * 2 - 1
    ref = torch.rand(1, 3, ref_h, ref_w, generator=g) * 2 - 1
    ref_du = torch.rand(1, 3, ref_h, ref_w, generator=g) * 2 - 1
    rss_idle = _rss_mb()
    with torch.inference_mode():
        t0 = time.perf_counter()
        q = model.LTE(lr_up)[2]
        k = model.LTE(ref_du)[2]
        v1, v2, v3 = model.LTE(ref)
        t_lte = time.perf_counter() - t0
        rss_features = _rss_mb()
        t0 = time.perf_counter()
        if impl == "ours":
            cfg = SearchConfig() if budget_mb is None else SearchConfig(memory_budget_mb=budget_mb)
            out = search_and_transfer(q, [k], [v1], [v2], [v3], cfg)
        else:
            out = full_matrix_search_transfer(q, k, v1, v2, v3)
        t_search = time.perf_counter() - t0
    return {
        "case": case, "impl": impl, "threads": torch.get_num_threads(),
        "lte_s": t_lte, "search_transfer_s": t_search,
        "rss_idle_mb": rss_idle, "rss_after_features_mb": rss_features, "peak_rss_mb": _rss_mb(),
        "checksum": float(out.texture_lv1.double().sum()),
    }


def _merge_repeats(rows: list[dict]) -> list[dict]:
    """One row per (case, implementation): median time, highest peak (contended CPU: times vary a lot)."""
    merged: dict[tuple[str, str], dict] = {}
    for r in rows:
        key = (r["case"], r["impl"])
        if "skipped" in r:
            merged[key] = r
            continue
        m = merged.setdefault(key, {**r, "times": [], "peaks": [], "idles": []})
        m["times"].append(r["search_transfer_s"])
        m["peaks"].append(r["peak_rss_mb"])
        m["idles"].append(r["rss_idle_mb"])
    for m in merged.values():
        if "times" in m:
            m["search_transfer_s"] = statistics.median(m["times"])
            m["peak_rss_mb"] = max(m["peaks"])
            m["rss_idle_mb"] = min(m["idles"])
    return list(merged.values())


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=1, help="runs per case and implementation, interleaved")
    parser.add_argument("--baseline-cap-gb", type=float, default=6.0, help="skip the full-matrix run above this")
    parser.add_argument("--budget-mb", type=float, default=None, help="SearchConfig.memory_budget_mb (default: its default)")
    parser.add_argument("--child", nargs=2, metavar=("CASE", "IMPL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.threads, args.budget_mb)))
        return
    rows = []
    for case in args.cases.split(","):
        lr_w, lr_h, ref_w, ref_h = CASES[case]
        need = baseline_bytes(lr_w, lr_h, ref_w, ref_h)
        for rep in range(args.repeat):
            for impl in ("ours", "full-matrix"):
                if impl == "full-matrix" and need > min(args.baseline_cap_gb * GiB, 0.5 * mem_available()):
                    if rep == 0:
                        # The machine is shared (a training run, other users): never push it into
                        # swap or the OOM killer; beyond the cap the baseline's memory comes from shapes.
                        rows.append({"case": case, "impl": impl, "skipped": f"not run: needs ≈ {need / GiB:.1f} GB "
                                     f"by its tensor shapes (cap {args.baseline_cap_gb:g} GB, "
                                     f"{mem_available() / GiB:.1f} GB available)"})
                    continue
                cmd = [sys.executable, __file__, "--child", case, impl]
                if args.threads:
                    cmd += ["--threads", str(args.threads)]
                if args.budget_mb:
                    cmd += ["--budget-mb", str(args.budget_mb)]
                res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
                if res.returncode != 0:
                    rows.append({"case": case, "impl": impl, "skipped": f"failed: {res.stderr.strip().splitlines()[-1:]}"})
                    continue
                row = json.loads(res.stdout.strip().splitlines()[-1])
                row["baseline_theory_gb"] = need / GiB
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    rows = _merge_repeats(rows)
    print("| case | implementation | search+transfer s (median) | LTE s | peak RSS MB (max) | peak − idle MB | note |")
    print("| --- | --- | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        lr_w, lr_h, ref_w, ref_h = CASES[r["case"]]
        name = f"LR {lr_w}×{lr_h}, Ref {ref_w}×{ref_h}"
        if "skipped" in r:
            print(f"| {name} | {r['impl']} | — | — | — | — | {r['skipped']} |")
        else:
            print(f"| {name} | {r['impl']} | {r['search_transfer_s']:.1f} | {r['lte_s']:.1f} | "
                  f"{r['peak_rss_mb']:.0f} | {r['peak_rss_mb'] - r['rss_idle_mb']:.0f} | "
                  f"{r['threads']} threads, {len(r['times'])} runs {', '.join(f'{t:.1f}' for t in r['times'])} s; "
                  f"full-matrix theory {r['baseline_theory_gb']:.2f} GB |")


if __name__ == "__main__":
    main()
