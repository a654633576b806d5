"""Targets sharing a reference, as a bulk job's process runs them: without and with the reference cache.

    .venv/bin/python benchmarks/inference/reuse.py [--targets 3]
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the harness
from harness import cpu, enhance_case, experiment, load_model, peak_mb, run_child, timed  # noqa: E402


def child(targets: int) -> dict:
    """Several targets (flipped and rolled copies of the 480×360 case) that share the 1920×1440 reference,
    as a bulk job's process runs them: without and with the reference cache, interleaved."""
    import numpy as np
    import torch

    from pipeline.enhance import enhance_arrays
    from pipeline.params import EnhanceParams
    from ttsr_core.model.inference import prepare_for_inference
    from ttsr_core.model.reference_cache import ReferenceCache

    model, weights = load_model("ttsr-lite")
    model = prepare_for_inference(model, torch.device("cpu"))
    lr, ref = enhance_case()
    lrs = [np.ascontiguousarray(np.roll(lr if i % 2 == 0 else lr[:, ::-1], 37 * i, axis=1)) for i in range(targets)]
    enhance_arrays(model, lrs[0], [ref], EnhanceParams())  # warm-up: oneDNN kernels, the heap
    cache = ReferenceCache(1024 * 2**20)
    rows, same = [], True
    for x in lrs:
        plain_s = timed(lambda: rows.append(enhance_arrays(model, x, [ref], EnhanceParams())))
        cached_s = timed(lambda: rows.append(enhance_arrays(model, x, [ref], EnhanceParams(), reference_cache=cache)))
        same &= bool(np.array_equal(rows[-1].image, rows[-2].image))
        rows[-2:] = [(plain_s, cached_s)]
    return {"weights": weights, "rows": rows, "same": same, "hits": cache.hits, "misses": cache.misses,
            "peak_rss_mb": peak_mb(), "threads": torch.get_num_threads()}


def report(args) -> None:  # type: ignore[no-untyped-def]
    threads, targets = args.threads, args.targets
    r = run_child(__file__, [targets], threads)
    print(f"{cpu()}\nttsr-lite ({r['weights']}), {targets} targets of 480×360 sharing one 1920×1440 reference, "
          f"default settings, {r['threads']} threads, each target without and then with the cache\n")
    print("| target | s without cache | s with cache |\n| --- | ---: | ---: |")
    for i, (plain, cached) in enumerate(r["rows"], 1):
        print(f"| {i} | {plain:.2f} | {cached:.2f} |")
    later = r["rows"][1:]
    if later:
        p, c = sum(x for x, _ in later) / len(later), sum(y for _, y in later) / len(later)
        print(f"\ntargets 2–{targets}: {p:.2f} → {c:.2f} s each ({p / c:.2f}×); cache {r['misses']} miss, "
              f"{r['hits']} hits; outputs identical: {r['same']}; peak RSS {r['peak_rss_mb']:.0f} MB")


def add_arguments(parser) -> None:  # type: ignore[no-untyped-def]
    parser.add_argument("--targets", type=int, default=3, help="targets sharing the reference")


def main() -> None:
    experiment(__doc__, child, report, add_arguments)


if __name__ == "__main__":
    main()
