"""Another checkout against this one: ``refsr sr``'s computation (``enhance_arrays``, default settings), interleaved, float outputs compared.

    .venv/bin/python benchmarks/inference/compare.py --baseline-root ../main [--repeat 2] [--amp bfloat16]
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the harness
from harness import (  # noqa: E402
    ROOT, core_module, cpu, enhance_case, experiment, git_head, load_model, peak_mb, run_child, timed,
)
from ttsr_core.config import SHIPPED_MODEL  # noqa: E402


def child(out_path: str, checkpoint: str, amp: str | None = None) -> dict:
    """The whole ``refsr sr`` computation with the default settings (or ``amp`` autocast), on whatever code PYTHONPATH holds."""
    import numpy as np
    import torch

    from pipeline.enhance import enhance_arrays
    from pipeline.params import EnhanceParams

    inference = core_module("model.inference")  # the baseline may predate ttsr_core's subpackages
    model, weights = load_model("ttsr-lite", checkpoint)
    lr, ref = enhance_case()
    captured = []
    to_uint8 = inference.to_uint8
    inference.to_uint8 = lambda t: (captured.append(t.float().clone()), to_uint8(t))[1]  # the [-1, 1] output
    params = EnhanceParams() if amp is None else EnhanceParams(amp_dtype=amp)
    wall = timed(lambda: enhance_arrays(model, lr, [ref], params))
    np.save(out_path, captured[0][0].numpy())
    return {"wall_s": wall, "peak_rss_mb": peak_mb(), "threads": torch.get_num_threads(), "weights": weights}


def report(args) -> None:  # type: ignore[no-untyped-def]
    if args.baseline_root is None:
        raise SystemExit("compare needs --baseline-root")
    threads, baseline, repeat, amp = args.threads, args.baseline_root.resolve(), args.repeat, args.amp
    import numpy as np

    print(f"{cpu()}\nbaseline {baseline} ({git_head(baseline)}) vs this tree ({git_head(ROOT)})"
          f"{f' with {amp} autocast (opt-in; not the same output)' if amp else ''}, interleaved, {repeat} runs each")
    runs: dict[str, list[dict]] = {"baseline": [], "this tree": []}
    for i in range(repeat):
        for name, root in (("baseline", baseline), ("this tree", ROOT)):
            out = f"/tmp/refsr_compare_{os.getpid()}_{name.replace(' ', '_')}.npy"
            r = run_child(__file__, [out, str(SHIPPED_MODEL)] + ([amp] if amp and root == ROOT else []), threads, root)
            r["out"] = out
            runs[name].append(r)
            print(f"run {i + 1} {name}: {r['wall_s']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    a, b = np.load(runs["baseline"][-1]["out"]), np.load(runs["this tree"][-1]["out"])
    med = {k: sorted(x["wall_s"] for x in v)[len(v) // 2] for k, v in runs.items()}
    print("\n| code | median s | runs s | peak RSS MB |\n| --- | ---: | --- | ---: |")
    for k, v in runs.items():
        walls = ", ".join(f"{x['wall_s']:.1f}" for x in v)
        print(f"| {k} | {med[k]:.1f} | {walls} | {max(x['peak_rss_mb'] for x in v):.0f} |")
    print(f"\nspeed-up {med['baseline'] / med['this tree']:.2f}×; output max |Δ| {np.abs(a - b).max():.2e} in [-1, 1], "
          f"mean |Δ| {np.abs(a - b).mean():.2e}; {runs['this tree'][0]['threads']} threads")


def add_arguments(parser) -> None:  # type: ignore[no-untyped-def]
    parser.add_argument("--baseline-root", type=Path, help="a checkout of the code to compare against (required)")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each")
    parser.add_argument("--amp", choices=("bfloat16",), help="this tree with autocast (opt-in setting)")


def main() -> None:
    experiment(__doc__, child, report, add_arguments)


if __name__ == "__main__":
    main()
