"""Exact vs coarse-to-fine search: wall time, peak RSS, multiply-adds, and agreement on real pairs.

Parts (each one invocation, each well under 8 minutes on 2 contended cores):

    .venv/bin/python benchmarks/search_speed.py --part peak        # torch.mm fp32 / bf16 GFLOP/s
    .venv/bin/python benchmarks/search_speed.py --part synthetic   # 480×360 + 1920×1440 ref, CUFED5 size
    .venv/bin/python benchmarks/search_speed.py --part enhance     # whole 480×360 enhancement, compact model
    .venv/bin/python benchmarks/search_speed.py --part profile     # where that time goes; conv layouts
    .venv/bin/python benchmarks/search_speed.py --part validation  # data/validation pairs, fast vs exact

Every timed measurement runs in a fresh subprocess that reports its own ``ru_maxrss``. Where the
exact search would take too long it is timed on the first query rows only and extrapolated
linearly (its cost is exactly proportional to the number of query rows); such rows say so.
Multiply-adds are counted analytically: exact = Q·K·C·9; fast = coarse exact search on the pooled
grids (Q/f²·K/f²·C·9) + refinement (per distinct window a (f+2)² × (f+2r+2)² pixel Gram over C).
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

from harness import ROOT, enhance_case, load_model, peak_mb, run_child

CASES = {"480x360": (480, 360, 1920, 1440), "cufed5": (125, 83, 500, 332)}


# ----------------------------------------------------------------------------------------- children


def _cpu_matmul_flags() -> list[str]:
    """The CPU's vector/matrix extensions that decide fp32 vs bf16 matmul speed (Linux only)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split("flags", 1)[1].split("\n", 1)[0].split()
    except (OSError, IndexError):
        return []
    return sorted(f for f in flags if f in {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})


def child_peak() -> dict:
    import torch

    out = {"threads": torch.get_num_threads(), "cpu_flags": _cpu_matmul_flags()}
    for dtype in (torch.float32, torch.bfloat16):
        # Grow the matrix until one product takes ~0.5 s (at most 4096²): without native bf16
        # (avx512_bf16/AMX) a 4096² bf16 product takes minutes, and 3 of them would stall the run.
        n = 256
        while True:
            a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
            torch.mm(a, b)  # warm-up (oneDNN kernel selection)
            t0 = time.perf_counter()
            torch.mm(a, b)
            if n >= 4096 or time.perf_counter() - t0 > 0.5:
                break
            n *= 2
        best = math.inf
        for _ in range(3):
            t0 = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - t0)
        name = str(dtype).split(".")[-1]
        out[name], out[f"{name}_n"] = 2 * n**3 / best / 1e9, n
    return out


def child_search(model_name: str, case: str, mode: str, dtype: str | None, time_budget_s: float | None) -> dict:
    import torch
    import torch.nn.functional as F

    from ttsr_core.config import SearchConfig, SearchMode
    from ttsr_core.model.fast_search import coarse_to_fine_search, refinement_jobs, refinement_macs
    from ttsr_core.model.relevance import exact_search

    lr_w, lr_h, ref_w, ref_h = CASES[case]
    model, weights = load_model(model_name)
    g = torch.Generator().manual_seed(1)
    # Smooth random images (bicubic-upsampled noise) so that fast search sees spatially coherent
    # features as in photos; white noise would give every coarse neighbour a different match.
    def img(h: int, w: int) -> torch.Tensor:
        x = torch.rand(1, 3, h // 8 + 1, w // 8 + 1, generator=g) * 2 - 1
        return F.interpolate(x, size=(h, w), mode="bicubic").clamp(-1, 1) + 0.1 * torch.randn(1, 3, h, w, generator=g)

    with torch.inference_mode():
        q = model.LTE(img(4 * lr_h, 4 * lr_w))[2][0]
        k = model.LTE(img(ref_h, ref_w))[2][0]
    c, h, w = q.shape
    kh, kw = k.shape[1:]
    cfg = SearchConfig(mode=SearchMode(mode), matmul_dtype=dtype)
    rss_features = peak_mb()
    rows = h
    if mode == "exact" and time_budget_s is not None:
        # Probe 4 query rows, then time as many rows as fit the budget (cost ∝ rows).
        t0 = time.perf_counter()
        with torch.inference_mode():
            exact_search(q[:, :4], [k], cfg)
        rows = min(h, max(4, int(4 * time_budget_s / (time.perf_counter() - t0))))
    t0 = time.perf_counter()
    with torch.inference_mode():
        if mode == "exact":
            exact_search(q[:, :rows], [k], cfg)
            macs = h * w * kh * kw * c * 9
        else:
            coarse_to_fine_search(q, [k], cfg)
    elapsed = time.perf_counter() - t0
    out = {"model": model_name, "weights": weights, "case": case, "mode": mode, "dtype": dtype or "float32",
           "measured_s": elapsed, "rows": rows, "h": h, "extrapolated": rows < h, "wall_s": elapsed * h / rows,
           "peak_rss_mb": peak_mb(), "rss_after_features_mb": rss_features, "channels": c}
    if mode == "fast":
        f = cfg.coarse_factor
        qc, kc = F.avg_pool2d(q[None], f, ceil_mode=True)[0], F.avg_pool2d(k[None], f, ceil_mode=True)[0]
        cidx = exact_search(qc, [kc], cfg)[0]
        jobs = len(refinement_jobs(cidx, tuple(qc.shape[1:]), [tuple(kc.shape[1:])], [(kh, kw)], cfg))
        coarse = qc.shape[1] * qc.shape[2] * kc.shape[1] * kc.shape[2] * c * 9
        out.update(macs_coarse=coarse, macs_refine=refinement_macs(jobs, c, cfg), windows_per_cell=jobs / (qc.shape[1] * qc.shape[2]))
        macs = coarse + out["macs_refine"]
    out["macs"] = macs
    return out


def child_enhance(model_name: str, mode: str, tile: int | None) -> dict:
    import torch

    from ttsr_core.config import SearchConfig, SearchMode
    from ttsr_core.model.inference import super_resolve

    model, weights = load_model(model_name)
    lr, ref = enhance_case()
    t0 = time.perf_counter()
    res = super_resolve(model, lr, [ref], search=SearchConfig(mode=SearchMode(mode)), tile=tile)
    return {"model": model_name, "weights": weights, "mode": mode, "tile": tile, "wall_s": time.perf_counter() - t0,
            "peak_rss_mb": peak_mb(), "shape": list(res.image.shape), "threads": torch.get_num_threads()}


def child_validation(model_name: str, max_side: int) -> dict:
    import numpy as np
    import torch
    from PIL import Image

    from ttsr_core.config import SearchConfig, SearchMode
    from ttsr_core.model.inference import prepare_reference, resize_bicubic, super_resolve, to_tensor, to_uint8
    from ttsr_core.metrics import psnr_y
    from ttsr_core.model.relevance import exact_search, relevance_at
    from ttsr_core.model.search import texture_table, transfer_texture
    from ttsr_core.model.fast_search import coarse_to_fine_search

    model, weights = load_model(model_name)
    data = ROOT / "data" / "validation"
    rows = []
    for line in (data / "pairs.tsv").read_text().strip().splitlines():
        target_name, ref_name = line.split("\t")[:2]

        def load(name: str) -> np.ndarray:
            im = Image.open(data / name).convert("RGB")
            s = min(1.0, max_side / max(im.size))
            if s < 1.0:  # both photos of a pair by the same factor: their relative scale is kept
                im = im.resize((round(im.width * s), round(im.height * s)), Image.BICUBIC)
            return np.asarray(im)

        hr = load(target_name)
        hr = hr[: hr.shape[0] // 4 * 4, : hr.shape[1] // 4 * 4]
        lr = resize_bicubic(hr, hr.shape[1] // 4, hr.shape[0] // 4)
        ref = load(ref_name)
        prep = prepare_reference(ref)
        with torch.inference_mode():
            q = model.LTE(to_tensor(resize_bicubic(lr, hr.shape[1], hr.shape[0])))[2][0]
            k = model.LTE(to_tensor(prep.ref_down_up))[2][0]
            t0 = time.perf_counter()
            e_idx = exact_search(q, [k], SearchConfig())[0]
            t_exact = time.perf_counter() - t0
            t0 = time.perf_counter()
            f_idx = coarse_to_fine_search(q, [k], SearchConfig(mode=SearchMode.FAST))
            t_fast = time.perf_counter() - t0
            e_rel, f_rel = relevance_at(q, [k], e_idx), relevance_at(q, [k], f_idx)
            # Weight-independent quality of the matches: rebuild the target from the reference's own
            # pixels through the hard attention (the lv1 transfer applied to RGB) and score it.
            h, w = q.shape[1:]
            rgb = to_tensor(prep.ref)[0]

            def rebuild(idx: torch.Tensor) -> np.ndarray:
                shapes = [tuple(k.shape[1:])]
                return to_uint8(transfer_texture(texture_table([rgb], shapes, 4), shapes, idx, h, w, 4)[None])

            e_img, f_img = rebuild(e_idx), rebuild(f_idx)
        sr_e = super_resolve(model, lr, [ref], search=SearchConfig())
        sr_f = super_resolve(model, lr, [ref], search=SearchConfig(mode=SearchMode.FAST))
        rows.append({
            "pair": f"{target_name} ← {ref_name}", "lr": f"{lr.shape[1]}×{lr.shape[0]}",
            "ref": f"{prep.ref.shape[1]}×{prep.ref.shape[0]}",
            "same_index": float((e_idx == f_idx).float().mean()),
            "rel_exact": float(e_rel.mean()), "rel_fast": float(f_rel.mean()),
            "rel_within_1pct": float((f_rel >= e_rel - 0.01 * e_rel.abs()).float().mean()),
            "rebuild_psnr_exact": psnr_y(e_img, hr), "rebuild_psnr_fast": psnr_y(f_img, hr),
            "sr_psnr_exact": psnr_y(sr_e.image, hr), "sr_psnr_fast": psnr_y(sr_f.image, hr),
            "t_exact": t_exact, "t_fast": t_fast,
        })
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return {"model": model_name, "weights": weights, "max_side": max_side, "rows": rows, "peak_rss_mb": peak_mb()}


# ------------------------------------------------------------------------------------------- parent


def part_peak() -> None:
    r = run_child(__file__, ["peak"])
    print(f"CPU flags: {' '.join(r['cpu_flags']) or 'unknown'}; torch.mm on {r['threads']} threads, best of 3: "
          f"float32 {r['float32']:.1f} GFLOP/s ({r['float32_n']}²), "
          f"bfloat16 {r['bfloat16']:.1f} GFLOP/s ({r['bfloat16_n']}²)")


def part_synthetic(exact_budget_s: float, cases: list[str], models: list[str]) -> None:
    print("| model | case | search | wall s | peak RSS MB | multiply-adds | MACs/s (G) | note |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | --- |")
    for case in cases:
        for model in models:
            fast = run_child(__file__, ["search", model, case, "fast", None, None])
            exact = run_child(__file__, ["search", model, case, "exact", None, exact_budget_s])
            for r in (exact, fast):
                note = r["weights"]
                if r["extrapolated"]:
                    note += f"; EXTRAPOLATED from {r['rows']}/{r['h']} query rows ({r['measured_s']:.0f} s measured)"
                if r["mode"] == "fast":
                    note += (f"; coarse {r['macs_coarse']:.2e} + refine {r['macs_refine']:.2e}, "
                             f"{r['windows_per_cell']:.1f} windows/cell")
                print(f"| {model} | {case} | {r['mode']} | {r['wall_s']:.1f} | {r['peak_rss_mb']:.0f} | "
                      f"{r['macs']:.2e} | {r['macs'] / r['wall_s'] / 1e9:.1f} | {note} |", flush=True)
            print(f"| {model} | {case} | **exact/fast** | **{exact['wall_s'] / fast['wall_s']:.0f}×** | | "
                  f"**{exact['macs'] / fast['macs']:.0f}×** | | |", flush=True)


def part_enhance() -> None:
    print("| model | search | tile | wall s | peak RSS MB | output |")
    print("| --- | --- | --- | ---: | ---: | --- |")
    for mode, tile in (("fast", None), ("fast", 256), ("fast", 128)):
        r = run_child(__file__, ["enhance", "ttsr-lite", mode, tile])
        print(f"| ttsr-lite ({r['weights']}) | {mode} | {tile} | {r['wall_s']:.1f} | {r['peak_rss_mb']:.0f} | "
              f"{r['shape'][1]}×{r['shape'][0]} |", flush=True)


def child_profile(tile: int | None) -> dict:
    """Where a whole enhancement's time goes: torch profiler, operators by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    from ttsr_core.config import SearchConfig, SearchMode
    from ttsr_core.model.inference import super_resolve

    model, weights = load_model("ttsr-lite")
    lr, ref = enhance_case()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        super_resolve(model, lr, [ref], search=SearchConfig(mode=SearchMode.FAST), tile=tile)
        wall = time.perf_counter() - t0
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:10]
    return {"weights": weights, "tile": tile, "wall_s": wall,
            "ops": [(e.key, e.self_cpu_time_total / 1e6, e.count) for e in ops]}


def child_conv_layout() -> dict:
    """One 3×3 convolution, 32→32 channels at 1000×752 (the ×4 scale of a tile): NCHW vs channel-last."""
    import torch

    conv = torch.nn.Conv2d(32, 32, 3, padding=1).eval()
    x = torch.randn(1, 32, 752, 1000)
    out = {}
    with torch.inference_mode():
        for name, fmt in (("nchw", torch.contiguous_format), ("channels_last", torch.channels_last)):
            c, xx = conv.to(memory_format=fmt), x.contiguous(memory_format=fmt)
            c(xx)  # warm-up (oneDNN kernel selection)
            best = math.inf
            for _ in range(3):
                t0 = time.perf_counter()
                c(xx)
                best = min(best, time.perf_counter() - t0)
            out[name] = best
    return out


def part_profile() -> None:
    r = run_child(__file__, ["conv_layout"])
    print(f"3×3 conv 32→32 at 1000×752, best of 3: NCHW {r['nchw']:.3f} s, channel-last {r['channels_last']:.3f} s")
    r = run_child(__file__, ["profile", 256])
    print(f"\nttsr-lite ({r['weights']}), 480×360 + 1920×1440 ref, fast search, {r['tile']}-px tiles: "
          f"{r['wall_s']:.1f} s under the profiler\n")
    print("| operator | self CPU s | calls |\n| --- | ---: | ---: |")
    for name, seconds, count in r["ops"]:
        print(f"| {name} | {seconds:.1f} | {count} |")


def part_validation(model: str, max_side: int) -> None:
    if not (ROOT / "data" / "validation" / "pairs.tsv").exists():
        subprocess.run(["bash", str(ROOT / "scripts" / "fetch_data.sh"), "validation"], check=True)
    r = run_child(__file__, ["validation", model, max_side])
    print(f"model {r['model']} ({r['weights']}), photos capped at long side {r['max_side']}, peak RSS {r['peak_rss_mb']:.0f} MB")
    print("| pair | LR | ref | same index | mean relevance exact / fast | fast within 1 % | "
          "rebuild Y-PSNR exact / fast | SR Y-PSNR exact / fast (Δ) | search s exact / fast |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for x in r["rows"]:
        print(f"| {x['pair']} | {x['lr']} | {x['ref']} | {x['same_index']:.1%} | {x['rel_exact']:.4f} / {x['rel_fast']:.4f} | "
              f"{x['rel_within_1pct']:.1%} | {x['rebuild_psnr_exact']:.2f} / {x['rebuild_psnr_fast']:.2f} | "
              f"{x['sr_psnr_exact']:.2f} / {x['sr_psnr_fast']:.2f} ({x['sr_psnr_fast'] - x['sr_psnr_exact']:+.3f}) | "
              f"{x['t_exact']:.1f} / {x['t_fast']:.1f} |")
    n = len(r["rows"])
    mean = lambda key: sum(x[key] for x in r["rows"]) / n  # noqa: E731
    print(f"| **mean** | | | {mean('same_index'):.1%} | {mean('rel_exact'):.4f} / {mean('rel_fast'):.4f} | "
          f"{mean('rel_within_1pct'):.1%} | {mean('rebuild_psnr_exact'):.2f} / {mean('rebuild_psnr_fast'):.2f} | "
          f"{mean('sr_psnr_exact'):.2f} / {mean('sr_psnr_fast'):.2f} ({mean('sr_psnr_fast') - mean('sr_psnr_exact'):+.3f}) | "
          f"{mean('t_exact'):.1f} / {mean('t_fast'):.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("peak", "synthetic", "enhance", "profile", "validation"), default="peak")
    parser.add_argument("--exact-budget-s", type=float, default=60.0,
                        help="synthetic: time the exact search on about this many seconds' worth of query rows")
    parser.add_argument("--model", default="ttsr-lite", help="validation: preset to run")
    parser.add_argument("--cases", default="cufed5,480x360", help="synthetic: cases to run")
    parser.add_argument("--models", default="ttsr-lite,ttsr", help="synthetic: presets to run")
    parser.add_argument("--max-side", type=int, default=640, help="validation: cap the photos' long side")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = json.loads(args.child)
        fn = {"peak": child_peak, "search": child_search, "enhance": child_enhance, "profile": child_profile,
              "conv_layout": child_conv_layout, "validation": child_validation}[kind]
        print(json.dumps(fn(*rest)))
        return
    {"peak": part_peak, "synthetic": lambda: part_synthetic(args.exact_budget_s, args.cases.split(","), args.models.split(",")), "enhance": part_enhance,
     "profile": part_profile, "validation": lambda: part_validation(args.model, args.max_side)}[args.part]()


if __name__ == "__main__":
    main()
