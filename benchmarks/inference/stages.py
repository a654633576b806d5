"""Where a TTSR enhancement's time goes, stage by stage, against this CPU's measured peak.

    .venv/bin/python benchmarks/inference/stages.py [--model ttsr] [--mode exact] [--lr 480x360] [--ref 1920x1440]

Shipped compact model (``--model ttsr``: paper preset, random weights), LR 480×360 + a 1920×1440
reference, one untiled pass; multiply-adds from ``ttsr_core.accel.cost``; the main network by stage,
both backends. Each measurement runs in a fresh subprocess reporting its ``ru_maxrss``.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the harness
from harness import enhance_case, experiment, load_model, peak_mb, run_child, size  # noqa: E402
from peak import measure as measure_peak  # noqa: E402


class _StageMarks:
    """Records when each stage's first module runs (the earliest of its listed modules), in either backend.

    Eager calls the modules (forward pre-hooks see it); the fused backend hands most convolutions'
    weights to ``conv_ops.conv_fused`` without calling them, so that function is watched too.
    """

    def __init__(self, net, names: dict[str, list[str]], marks: dict[str, float]) -> None:  # type: ignore[no-untyped-def]
        import ttsr_core.accel.fused as fused

        self.fused, self.original = fused, fused.conv_fused
        stage_of: dict[int, str] = {}
        self.handles = []
        for stage, modules in names.items():
            for name in modules:
                module = net.get_submodule(name)
                stage_of[id(module)] = stage

                def hook(module, args, stage=stage):  # type: ignore[no-untyped-def]
                    marks.setdefault(stage, time.perf_counter())
                self.handles.append(module.register_forward_pre_hook(hook))
        original = self.original

        def watched(conv, *args, **kwargs):  # type: ignore[no-untyped-def]
            if id(conv) in stage_of:
                marks.setdefault(stage_of[id(conv)], time.perf_counter())
            return original(conv, *args, **kwargs)
        fused.conv_fused = watched

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.fused.conv_fused = self.original


STAGE_STARTS = {"main ×1": ["SFE.conv_head"], "main ×2": ["conv12"], "main ×4": ["conv23"],
                "main merge tail": ["merge_tail", "merge_tail.conv13"]}


def child(model_name: str, lr_size: list[int], ref_size: list[int], mode: str, heap: bool) -> dict:
    import numpy as np
    import torch
    import torch.nn.functional as F

    from ttsr_core.arrays import resize_bicubic
    from ttsr_core.config import SearchConfig, SearchMode
    from ttsr_core.accel.cost import coarse_search_macs, exact_search_macs, lte_macs, main_net_macs
    from ttsr_core.model.fast_search import refinement_jobs, refinement_macs
    from ttsr_core.accel.fused import fused_forward
    from ttsr_core.accel.heap import retained_heap
    from ttsr_core.model.inference import prepare_for_inference, prepare_reference, to_tensor
    from ttsr_core.model.relevance import exact_search
    from ttsr_core.model.search import search_and_transfer, search_indices

    model, weights = load_model(model_name)
    model = prepare_for_inference(model, torch.device("cpu"))
    lr_full, ref_full = enhance_case()
    lr = np.ascontiguousarray(lr_full[: lr_size[1], : lr_size[0]])
    ref = np.ascontiguousarray(ref_full[: ref_size[1], : ref_size[0]])
    cfg = SearchConfig(mode=SearchMode(mode))
    times: dict[str, float] = {}

    def timed(name, fn):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        result = fn()
        times[name] = time.perf_counter() - t0
        return result

    with retained_heap(heap), torch.inference_mode():
        h, w = lr.shape[:2]
        t0 = time.perf_counter()
        prep = prepare_reference(ref)
        lr_t, lr_up_t = to_tensor(lr), to_tensor(resize_bicubic(lr, 4 * w, 4 * h))
        ref_t, ref_du_t = to_tensor(prep.ref), to_tensor(prep.ref_down_up)
        times["prepare (bicubic ↓↑, tensors)"] = time.perf_counter() - t0
        values = timed("LTE Ref (values)", lambda: model.LTE(ref_t))
        keys = timed("LTE Ref↓↑ (keys)", lambda: model.LTE(ref_du_t)[2])
        q = timed("LTE LR↑ (queries)", lambda: model.LTE(lr_up_t)[2])
        timed(f"{mode} search", lambda: search_indices(q[0], [keys[0]], cfg))
        t = timed("search + transfer", lambda: search_and_transfer(q, [keys], [values[0]], [values[1]], [values[2]], cfg))
        times["transfer (soft attention, 3 textures)"] = times.pop("search + transfer") - times[f"{mode} search"]
        args = (lr_t, t.soft_attention, t.texture_lv3, t.texture_lv2, t.texture_lv1)
        backends = {}
        # Twice each, alternating, the faster run kept: the first run of a process also grows its heap.
        for name, fn in 2 * (("eager", model.MainNet), ("fused", lambda *a: fused_forward(model.MainNet, *a))):
            marks: dict[str, float] = {}
            watch = _StageMarks(model.MainNet, STAGE_STARTS, marks)
            t0 = time.perf_counter()
            fn(*args)
            end = time.perf_counter()
            watch.remove()
            order = sorted(marks, key=marks.get) + ["end"]
            marks["end"] = end
            run = {s: marks[order[i + 1]] - marks[s] for i, s in enumerate(order[:-1])}
            run["total"] = end - t0
            if name not in backends or run["total"] < backends[name]["total"]:
                backends[name] = run
        kh, kw = keys.shape[2:]
        c3 = model.config.lte_channels[2]
        macs = {"LTE Ref (values)": lte_macs(model.config.lte_channels, *prep.ref.shape[:2]),
                "LTE Ref↓↑ (keys)": lte_macs(model.config.lte_channels, *prep.ref.shape[:2]),
                "LTE LR↑ (queries)": lte_macs(model.config.lte_channels, 4 * h, 4 * w)}
        if mode == "exact":
            macs["exact search"] = exact_search_macs(c3, h, w, [(kh, kw)])
        else:
            f = cfg.coarse_factor
            qc, kc = F.avg_pool2d(q, f, ceil_mode=True)[0], F.avg_pool2d(keys, f, ceil_mode=True)[0]
            jobs = refinement_jobs(exact_search(qc, [kc], cfg)[0], tuple(qc.shape[1:]), [tuple(kc.shape[1:])],
                                   [(kh, kw)], cfg)
            macs["fast search"] = coarse_search_macs(c3, h, w, [(kh, kw)], cfg) + refinement_macs(len(jobs), c3, cfg)
        macs.update(main_net_macs(model.config, h, w))
    return {"model": model_name, "weights": weights, "lr": [w, h], "ref": list(prep.ref.shape[1::-1]), "mode": mode,
            "heap": heap, "times": times, "main": backends, "macs": macs, "threads": torch.get_num_threads(),
            "peak_rss_mb": peak_mb()}


def report(args) -> None:  # type: ignore[no-untyped-def]
    threads, model, lr, ref, mode = args.threads, args.model, size(args.lr), size(args.ref), args.mode
    peak = measure_peak(threads)
    conv_peak = max(v["float32"] for v in peak["conv"].values())
    mm_peak = peak["mm_float32"]
    r = run_child(__file__, [model, lr, ref, mode, True], threads)
    print(f"\n{r['model']} ({r['weights']}), LR {r['lr'][0]}×{r['lr'][1]}, ref {r['ref'][0]}×{r['ref'][1]}, "
          f"{r['mode']} search, untiled, {r['threads']} threads, peak RSS {r['peak_rss_mb']:.0f} MB\n")
    print("| stage | multiply-adds | s | G MAC/s | % of fp32 mm peak | % of fp32 conv peak |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    rows = list(r["times"].items()) + [(f"{s} (eager / fused)", (r["main"]["eager"].get(s, 0), r["main"]["fused"].get(s, 0)))
                                       for s in STAGE_STARTS]
    for name, secs in rows:
        macs = r["macs"].get(name.split(" (eager")[0])
        shown = secs if isinstance(secs, tuple) else (secs,)
        cells = " / ".join(f"{s:.2f}" for s in shown)
        if macs:
            rate = [macs / s / 1e9 if s else 0 for s in shown]
            rates = " / ".join(f"{x:.0f}" for x in rate)
            of_mm = " / ".join(f"{2 * x / mm_peak:.0%}" for x in rate)
            of_conv = " / ".join(f"{2 * x / conv_peak:.0%}" for x in rate)
            print(f"| {name} | {macs:.2e} | {cells} | {rates} | {of_mm} | {of_conv} |")
        else:
            print(f"| {name} | — | {cells} | | | |")
    total_main = sum(v for k, v in r["macs"].items() if k.startswith("main"))
    e, f = r["main"]["eager"]["total"], r["main"]["fused"]["total"]
    print(f"| **main network total (eager / fused)** | {total_main:.2e} | {e:.2f} / {f:.2f} | "
          f"{total_main / e / 1e9:.0f} / {total_main / f / 1e9:.0f} | "
          f"{2 * total_main / e / 1e9 / mm_peak:.0%} / {2 * total_main / f / 1e9 / mm_peak:.0%} | "
          f"{2 * total_main / e / 1e9 / conv_peak:.0%} / {2 * total_main / f / 1e9 / conv_peak:.0%} |")


def add_arguments(parser) -> None:  # type: ignore[no-untyped-def]
    parser.add_argument("--model", default="ttsr-lite", help="preset (ttsr-lite = the shipped checkpoint)")
    parser.add_argument("--mode", default="fast", choices=("fast", "exact"), help="search mode")
    parser.add_argument("--lr", default="480x360", help="LR size WxH")
    parser.add_argument("--ref", default="1920x1440", help="reference size WxH")


def main() -> None:
    experiment(__doc__, child, report, add_arguments)


if __name__ == "__main__":
    main()
