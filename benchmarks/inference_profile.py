"""Where a TTSR enhancement's time goes, against this CPU's measured peak; before/after comparisons.

    .venv/bin/python benchmarks/inference_profile.py --part peak      # mm and 3×3-conv peaks, fp32/bf16
    .venv/bin/python benchmarks/inference_profile.py --part stages    # cost model + time per stage
    .venv/bin/python benchmarks/inference_profile.py --part compare --baseline-root ../main
    .venv/bin/python benchmarks/inference_profile.py --part paper     # paper preset vs full-matrix baseline
    .venv/bin/python benchmarks/inference_profile.py --part bf16      # bf16 autocast: Y-PSNR cost, speed
    .venv/bin/python benchmarks/inference_profile.py --part compile   # torch.compile (inductor) vs fused
    .venv/bin/python benchmarks/inference_profile.py --part reuse     # targets sharing a reference: the cache
    .venv/bin/python benchmarks/inference_profile.py --part onnx      # ONNX Runtime main network / LTE vs torch
    .venv/bin/python benchmarks/inference_profile.py --part int8      # static int8 (ORT): speed, Y-PSNR cost

``stages``: shipped compact model (``--model ttsr``: paper preset, random weights), LR 480×360 + a
1920×1440 reference, one untiled pass; multiply-adds from ``ttsr_core.accel.cost``; the main network by
stage, both backends. ``compare``: ``refsr sr``'s computation (``enhance_arrays``, default settings)
of another checkout against this one, interleaved, float outputs compared. ``paper``: paper preset,
LR 160×120 + Ref 640×480, full-matrix baseline (three LTE passes, ``full_matrix_search_transfer``,
eager main network: the authors' pipeline) against ours, exact and fast. Each measurement runs in a
fresh subprocess reporting its ``ru_maxrss``; ``--threads`` sets torch's threads there.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONV_SHAPES = ((32, 32), (64, 64), (96, 32))  # (in, out) channels of the compact model's ×4 convolutions


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(args: list, threads: int | None, root: Path = ROOT) -> dict:
    env = {**os.environ, "PYTHONPATH": str(root)}
    cmd = [sys.executable, __file__, "--child", json.dumps(args)] + (["--threads", str(threads)] if threads else [])
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root)
    if res.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _best(fn, repeat: int = 3) -> float:  # type: ignore[no-untyped-def]
    fn()  # warm-up: oneDNN picks its kernel, the heap grows
    return min(_timed(fn) for _ in range(repeat))


def _timed(fn) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------------------- children


def child_peak() -> dict:
    """Matrix products (torch.mm and oneDNN, best of 1024², 2048²) and 3×3 convolutions (channel-last, at a 256-px tile's ×4 size), fp32 and bf16."""
    import torch

    from ttsr_core.accel.gemm import matmul_nt
    from ttsr_core.accel.heap import retained_heap

    out: dict = {"threads": torch.get_num_threads(), "conv": {}}
    with retained_heap(), torch.inference_mode():
        for dtype in (torch.float32, torch.bfloat16):
            rates, onednn = [], []
            for n in (1024, 2048):
                a = torch.randn(n, n).to(dtype)
                o = torch.empty(n, n, dtype=dtype)
                rates.append(2 * n**3 / _best(lambda: torch.mm(a, a, out=o), 5) / 1e9)
                if dtype == torch.float32:
                    onednn.append(2 * n**3 / _best(lambda: matmul_nt(a, a), 5) / 1e9)
            out[f"torch_mm_{str(dtype)[6:]}"] = max(rates)
            out[f"mm_{str(dtype)[6:]}"] = max(rates + onednn)  # the best product this CPU gave
            if onednn:
                out["onednn_mm_float32"] = max(onednn)
        x = torch.randn(1, 96, 4 * 188, 4 * 248).contiguous(memory_format=torch.channels_last)
        for cin, cout in CONV_SHAPES:
            conv = torch.nn.Conv2d(cin, cout, 3, padding=1).to(memory_format=torch.channels_last)
            xi = x[:, :cin].contiguous(memory_format=torch.channels_last)
            flops = 2 * xi.shape[2] * xi.shape[3] * cin * cout * 9
            fp32 = flops / _best(lambda: conv(xi)) / 1e9
            with torch.autocast("cpu", dtype=torch.bfloat16):
                bf16 = flops / _best(lambda: conv(xi)) / 1e9
            out["conv"][f"{cin}→{cout}"] = {"float32": fp32, "bfloat16": bf16}
    return out


def _load(model_name: str):  # type: ignore[no-untyped-def]
    import torch

    from ttsr_core.model.checkpoint import load_checkpoint
    from ttsr_core.config import preset
    from ttsr_core.model.net import TTSR

    ckpt = ROOT / "models" / "ttsr-lite" / "ttsr-lite-x4.safetensors"
    if model_name == "ttsr-lite" and ckpt.exists():
        return load_checkpoint(ckpt).model.eval(), "shipped checkpoint"
    torch.manual_seed(0)
    return TTSR(preset(model_name)).eval(), "random weights"


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


def child_stages(model_name: str, lr_size: list[int], ref_size: list[int], mode: str, heap: bool) -> dict:
    import numpy as np
    import torch
    import torch.nn.functional as F

    from search_speed import _enhance_case
    from ttsr_core.arrays import resize_bicubic
    from ttsr_core.config import SearchConfig, SearchMode
    from ttsr_core.accel.cost import coarse_search_macs, exact_search_macs, lte_macs, main_net_macs
    from ttsr_core.model.fast_search import refinement_jobs, refinement_macs
    from ttsr_core.accel.fused import fused_forward
    from ttsr_core.accel.heap import retained_heap
    from ttsr_core.model.inference import prepare_for_inference, prepare_reference, to_tensor
    from ttsr_core.model.relevance import exact_search
    from ttsr_core.model.search import search_and_transfer, search_indices

    model, weights = _load(model_name)
    model = prepare_for_inference(model, torch.device("cpu"))
    lr_full, ref_full = _enhance_case()
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
            "peak_rss_mb": _peak_mb()}


def child_compare(out_path: str, amp: str | None = None) -> dict:
    """The whole ``refsr sr`` computation with the default settings (or ``amp`` autocast), on whatever code PYTHONPATH holds."""
    import numpy as np
    import torch

    import ttsr_core.model.inference as inference
    from pipeline.enhance import enhance_arrays
    from pipeline.params import EnhanceParams
    from search_speed import _enhance_case

    model, weights = _load("ttsr-lite")
    lr, ref = _enhance_case()
    captured = []
    to_uint8 = inference.to_uint8
    inference.to_uint8 = lambda t: (captured.append(t.float().clone()), to_uint8(t))[1]  # the [-1, 1] output
    params = EnhanceParams() if amp is None else EnhanceParams(amp_dtype=amp)
    wall = _timed(lambda: enhance_arrays(model, lr, [ref], params))
    np.save(out_path, captured[0][0].numpy())
    return {"wall_s": wall, "peak_rss_mb": _peak_mb(), "threads": torch.get_num_threads(), "weights": weights}


def child_paper(kind: str, lr_size: list[int], ref_size: list[int], out_path: str, tile: int | None = None) -> dict:
    import numpy as np
    import torch
    import torch.nn.functional as F

    from ttsr_core.config import SearchConfig, SearchMode, TileConfig
    from ttsr_core.accel.heap import retained_heap
    from ttsr_core.model.inference import prepare_for_inference
    from ttsr_core.model.search import full_matrix_search_transfer
    from ttsr_core.model.tiling import tiled_forward

    model, weights = _load("ttsr")
    g = torch.Generator().manual_seed(1)
    (w, h), (rw, rh) = lr_size, ref_size
    lr = torch.rand(1, 3, h, w, generator=g) * 2 - 1
    ref = torch.rand(1, 3, rh, rw, generator=g) * 2 - 1
    lr_up = F.interpolate(lr, scale_factor=4, mode="bicubic")
    ref_du = F.interpolate(F.avg_pool2d(ref, 4), scale_factor=4, mode="bicubic")
    idle = _peak_mb()
    t0 = time.perf_counter()
    if kind == "full":
        with torch.inference_mode():
            v1, v2, v3 = model.LTE(ref)
            k3, q3 = model.LTE(ref_du)[2], model.LTE(lr_up)[2]
            t = full_matrix_search_transfer(q3, k3, v1, v2, v3)
            sr = model.MainNet(lr, t.soft_attention, t.texture_lv3, t.texture_lv2, t.texture_lv1).clamp(-1, 1)
    elif tile is None:
        model = prepare_for_inference(model, torch.device("cpu"))
        with retained_heap(), torch.inference_mode():
            sr = model(lr, lr_up, ref, ref_du, search=SearchConfig(mode=SearchMode(kind)))
    else:  # what super_resolve(tile=…) runs: references encoded once, the LR image in blended tiles
        model = prepare_for_inference(model, torch.device("cpu"))
        with retained_heap(), torch.inference_mode():
            encoded = model.encode_references([ref], [ref_du])
            sr = tiled_forward(model, lr, lr_up, encoded, TileConfig(tile), SearchConfig(mode=SearchMode(kind))).sr
    wall = time.perf_counter() - t0
    np.save(out_path, sr[0].float().numpy())
    return {"kind": kind, "wall_s": wall, "peak_rss_mb": _peak_mb(), "idle_rss_mb": idle, "weights": weights,
            "threads": torch.get_num_threads()}


def _validation_pairs(max_side: int):  # type: ignore[no-untyped-def]
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


def child_bf16(max_side: int) -> dict:
    """Shipped model on data/validation pairs: float32 vs bf16 autocast, Y-PSNR against the HR target."""
    import numpy as np
    import torch

    from ttsr_core.config import SearchConfig, SearchMode
    from ttsr_core.model.inference import prepare_for_inference, super_resolve
    from ttsr_core.metrics import psnr_y

    model, weights = _load("ttsr-lite")
    model = prepare_for_inference(model, torch.device("cpu"))
    rows = []
    for pair, hr, lr, ref in _validation_pairs(max_side):
        row = {"pair": pair, "lr": f"{lr.shape[1]}×{lr.shape[0]}"}
        for amp in (None, "bfloat16"):
            out = []
            row[f"s_{amp or 'float32'}"] = _timed(lambda: out.append(super_resolve(
                model, lr, [ref], search=SearchConfig(mode=SearchMode.FAST), amp_dtype=amp)))
            sr = out[0]
            row[f"psnr_{amp or 'float32'}"] = psnr_y(sr.image, hr)
            row[f"image_{amp or 'float32'}"] = sr.image
        row["max_grey_diff"] = int(np.abs(row.pop("image_float32").astype(int) - row.pop("image_bfloat16").astype(int)).max())
        rows.append(row)
    return {"weights": weights, "rows": rows, "threads": torch.get_num_threads()}


def child_compile(h: int, w: int) -> dict:
    """The shipped main network on one 188×248 tile: eager, fused, and torch.compile (inductor, frozen weights)."""
    import torch
    import torch._inductor.config as inductor_config

    from ttsr_core.accel.fused import fused_forward
    from ttsr_core.accel.heap import retained_heap
    from ttsr_core.model.inference import prepare_for_inference

    inductor_config.freezing = True  # weights as constants: lets inductor prepack them for oneDNN
    model, weights = _load("ttsr-lite")
    net = prepare_for_inference(model, torch.device("cpu")).MainNet
    c1, c2, c3 = model.config.lte_channels
    g = torch.Generator().manual_seed(0)
    args = tuple(t.contiguous(memory_format=torch.channels_last) for t in (
        torch.rand(1, 3, h, w, generator=g) * 2 - 1, torch.rand(1, 1, h, w, generator=g),
        torch.randn(1, c3, h, w, generator=g), torch.randn(1, c2, 2 * h, 2 * w, generator=g),
        torch.randn(1, c1, 4 * h, 4 * w, generator=g)))
    with retained_heap(), torch.no_grad():
        eager = net(*args)
        compiled = torch.compile(net, dynamic=False)
        t0 = time.perf_counter()
        out = compiled(*args)
        compile_s = time.perf_counter() - t0
        diffs = {"fused": (fused_forward(net, *args) - eager).abs().max().item(), "compiled": (out - eager).abs().max().item()}
        times = {"eager": _best(lambda: net(*args)), "fused": _best(lambda: fused_forward(net, *args)),
                 "compiled": _best(lambda: compiled(*args))}
    return {"weights": weights, "compile_s": compile_s, "times": times, "diffs": diffs, "threads": torch.get_num_threads()}


def child_reuse(targets: int) -> dict:
    """Several targets (flipped and rolled copies of the 480×360 case) that share the 1920×1440 reference,
    as a bulk job's process runs them: without and with the reference cache, interleaved."""
    import numpy as np
    import torch

    from pipeline.enhance import enhance_arrays
    from pipeline.params import EnhanceParams
    from search_speed import _enhance_case
    from ttsr_core.model.inference import prepare_for_inference
    from ttsr_core.model.reference_cache import ReferenceCache

    model, weights = _load("ttsr-lite")
    model = prepare_for_inference(model, torch.device("cpu"))
    lr, ref = _enhance_case()
    lrs = [np.ascontiguousarray(np.roll(lr if i % 2 == 0 else lr[:, ::-1], 37 * i, axis=1)) for i in range(targets)]
    enhance_arrays(model, lrs[0], [ref], EnhanceParams())  # warm-up: oneDNN kernels, the heap
    cache = ReferenceCache(1024 * 2**20)
    rows, same = [], True
    for x in lrs:
        plain_s = _timed(lambda: rows.append(enhance_arrays(model, x, [ref], EnhanceParams())))
        cached_s = _timed(lambda: rows.append(enhance_arrays(model, x, [ref], EnhanceParams(), reference_cache=cache)))
        same &= bool(np.array_equal(rows[-1].image, rows[-2].image))
        rows[-2:] = [(plain_s, cached_s)]
    return {"weights": weights, "rows": rows, "same": same, "hits": cache.hits, "misses": cache.misses,
            "peak_rss_mb": _peak_mb(), "threads": torch.get_num_threads()}


def _tile_case(model):  # type: ignore[no-untyped-def]
    """The main network's inputs for the top-left 248×188 tile of the whole case (tiles of ``refsr sr``), and its LR↑."""
    import numpy as np

    from search_speed import _enhance_case
    from ttsr_core.arrays import resize_bicubic
    from ttsr_core.config import SearchConfig, SearchMode
    from ttsr_core.model.inference import prepare_reference, to_tensor

    lr_full, ref = _enhance_case()
    lr = np.ascontiguousarray(lr_full[:188, :248])
    prep = prepare_reference(ref)
    lr_up = to_tensor(resize_bicubic(lr, 4 * 248, 4 * 188))
    encoded = model.encode_references([to_tensor(prep.ref)], [to_tensor(prep.ref_down_up)])
    t = model.transfer(lr_up, encoded, SearchConfig(mode=SearchMode.FAST))
    return (to_tensor(lr), t.soft_attention, t.texture_lv3, t.texture_lv2, t.texture_lv1), lr_up, encoded


def child_onnx(repeat: int) -> dict:
    """Eager vs fused vs ONNX Runtime main network on one tile, interleaved; the LTE in torch vs ONNX Runtime."""
    import onnxruntime as ort
    import torch

    from onnx_graph import INPUTS, export, export_main_net, make_session, run
    from ttsr_core.config import SearchConfig, SearchMode
    from ttsr_core.accel.fused import fused_forward
    from ttsr_core.accel.heap import retained_heap
    from ttsr_core.model.inference import prepare_for_inference
    from ttsr_core.model.search import search_indices

    model, weights = _load("ttsr-lite")
    model = prepare_for_inference(model, torch.device("cpu"))
    threads = torch.get_num_threads()
    out: dict = {"weights": weights, "threads": threads, "ort": ort.__version__, "repeat": repeat}
    with retained_heap(), torch.inference_mode():
        args, lr_up, encoded = _tile_case(model)
        net = model.MainNet
        t0 = time.perf_counter()
        session = make_session(export_main_net(net, args), threads)
        out["session_s"] = time.perf_counter() - t0  # export + graph optimisation: once per model
        # MainNet exported as it is: its bicubic F.interpolate becomes ORT's cubic Resize.
        plain = make_session(export(net, args, INPUTS, ("sr",)), threads)
        eager = net(*args)
        runs = {"eager": lambda: net(*args), "fused": lambda: fused_forward(net, *args),
                "onnx, MainNet as it is": lambda: run(plain, args),
                "onnx": lambda: run(session, args)}  # onnx: with the copies of inputs and output
        out["main_max_diff"] = {k: float((fn() - eager).abs().max()) for k, fn in runs.items() if k != "eager"}
        out["main_s"] = _interleaved(runs, repeat)

        # The LTE, plainly exported (convolutions, ReLU, max-pooling), on the tile's LR↑ (the queries).
        lte = make_session(export(model.LTE, (lr_up,), ("x",), ("lv1", "lv2", "lv3")), threads)
        feed = {"x": lr_up.contiguous().numpy()}
        q_torch = model.LTE(lr_up)[2]
        q_ort = torch.from_numpy(lte.run(None, feed)[2])
        out["lte_s"] = _interleaved({"torch": lambda: model.LTE(lr_up), "onnx": lambda: lte.run(None, feed)}, repeat)
        out["lte_max_diff"] = float((q_ort - q_torch).abs().max())
        # What that rounding does downstream: hard-attention matches that change (the search's argmax).
        cfg = SearchConfig(mode=SearchMode.FAST)
        a = search_indices(q_torch[0], [encoded.keys_lv3[0][0]], cfg)
        b = search_indices(q_ort[0], [encoded.keys_lv3[0][0]], cfg)
        out["lte_flipped"] = [int((a != b).sum()), int(a.numel())]
    return out


def _calibration_inputs(model, count: int, lr_side: int) -> list:  # type: ignore[no-untyped-def]
    """Main-network inputs from the first ``count`` training photos (sorted): a centre crop of lr_side LR px,
    referenced by the whole photo (capped at 640 px) offset by 30 px, so matches are close but not pixel-equal."""
    import numpy as np
    from PIL import Image

    from ttsr_core.arrays import resize_bicubic
    from ttsr_core.config import SearchConfig, SearchMode
    from ttsr_core.model.inference import prepare_reference, to_tensor

    photos = sorted(p for p in (ROOT / "data" / "training").iterdir() if p.suffix.lower() in (".jpg", ".png"))[:count]
    inputs = []
    for path in photos:
        im = Image.open(path).convert("RGB")
        s = min(1.0, 640 / max(im.size))
        im = np.asarray(im.resize((round(im.width * s), round(im.height * s)), Image.BICUBIC))
        side = 4 * lr_side
        y, x = (im.shape[0] - side) // 2, (im.shape[1] - side) // 2
        hr = im[y : y + side, x : x + side]
        lr = resize_bicubic(hr, lr_side, lr_side)
        prep = prepare_reference(np.ascontiguousarray(im[30:, 30:]))
        encoded = model.encode_references([to_tensor(prep.ref)], [to_tensor(prep.ref_down_up)])
        t = model.transfer(to_tensor(resize_bicubic(lr, side, side)), encoded, SearchConfig(mode=SearchMode.FAST))
        inputs.append((to_tensor(lr), t.soft_attention, t.texture_lv3, t.texture_lv2, t.texture_lv1))
    return inputs


def _quantize(fp32: bytes, calibration: list, fmt: str) -> bytes:
    """ONNX Runtime static int8 quantisation: per-channel int8 weights, uint8 activations, MinMax calibration.

    The bicubic upsamplings (depthwise and transposed convolutions of onnx_graph) stay float32: they
    are fixed interpolation, not learnt layers, and int8 bicubic weights would blur every texture map.
    """
    import tempfile

    import onnx

    from onnx_graph import feeds
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.samples = iter([feeds(args) for args in calibration])

        def get_next(self):  # type: ignore[no-untyped-def]
            return next(self.samples, None)

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(fp32)
        graph = onnx.load_from_string(fp32).graph
        upsampling = [n.name for n in graph.node if n.op_type == "ConvTranspose" or (n.op_type == "Conv" and any(
            a.name == "group" and a.i > 1 for a in n.attribute))]
        quantize_static(src, dst, Reader(), quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=upsampling)
        return dst.read_bytes()


def _whole_with(model, session, repeat: int) -> dict[str, list[float]]:  # type: ignore[no-untyped-def]
    """``refsr sr``'s whole computation (enhance_arrays, default settings) on the 480×360 + 1920×1440 case,
    its main network fused vs run by ``session`` (standing in for ``fused_forward``), interleaved."""
    import ttsr_core.model.net as net_module
    from onnx_graph import run
    from pipeline.enhance import enhance_arrays
    from pipeline.params import EnhanceParams
    from search_speed import _enhance_case

    lr, ref = _enhance_case()
    fused = net_module.fused_forward

    def with_session():  # type: ignore[no-untyped-def]
        net_module.fused_forward = lambda net, *args: run(session, args)
        try:
            enhance_arrays(model, lr, [ref], EnhanceParams())
        finally:
            net_module.fused_forward = fused

    times: dict[str, list[float]] = {"fused": [], "onnx int8": []}
    for _ in range(repeat):
        times["fused"].append(_timed(lambda: enhance_arrays(model, lr, [ref], EnhanceParams())))
        times["onnx int8"].append(_timed(with_session))
    return times


def child_int8(repeat: int, max_side: int, calib_count: int, fmt: str) -> dict:
    """Static int8 main network (ONNX Runtime): speed on the tile case against fp32 ORT and fused, Y-PSNR cost on data/validation."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from onnx_graph import export_main_net, make_session, run
    from ttsr_core.config import SearchConfig, SearchMode
    from ttsr_core.accel.fused import fused_forward
    from ttsr_core.accel.heap import retained_heap
    from ttsr_core.model.inference import prepare_for_inference, super_resolve
    from ttsr_core.metrics import psnr_y

    model, weights = _load("ttsr-lite")
    model = prepare_for_inference(model, torch.device("cpu"))
    threads = torch.get_num_threads()
    out: dict = {"weights": weights, "threads": threads, "ort": ort.__version__, "repeat": repeat, "format": fmt,
                 "calibration": calib_count}
    with retained_heap(), torch.inference_mode():
        args, _, _ = _tile_case(model)
        net = model.MainNet
        fp32 = export_main_net(net, args)
        t0 = time.perf_counter()
        int8 = _quantize(fp32, _calibration_inputs(model, calib_count, 64), fmt)
        out["quantize_s"] = time.perf_counter() - t0
        sessions = {"onnx fp32": make_session(fp32, threads), "onnx int8": make_session(int8, threads)}
        eager = net(*args)
        runs = {"fused": lambda: fused_forward(net, *args), **{k: (lambda s=s: run(s, args)) for k, s in sessions.items()}}
        out["main_max_diff"] = {k: float((fn() - eager).abs().max()) for k, fn in runs.items()}
        out["main_s"] = _interleaved(runs, repeat)
    out["whole"] = _whole_with(model, sessions["onnx int8"], max(2, repeat // 3))

    with retained_heap(), torch.inference_mode():
        # The whole enhancement of each validation pair, its main network run three ways: the default
        # (fused), and each session standing in for MainNet.forward (what backend="eager" calls).
        rows = []
        for pair, hr, lr, ref in _validation_pairs(max_side):
            row = {"pair": pair, "lr": f"{lr.shape[1]}×{lr.shape[0]}"}
            for name in ("fused", *sessions):
                if name in sessions:
                    net.forward = lambda *a, s=sessions[name]: run(s, a)
                sr = super_resolve(model, lr, [ref], search=SearchConfig(mode=SearchMode.FAST),
                                   backend=None if name == "fused" else "eager")
                net.__dict__.pop("forward", None)
                row[f"psnr {name}"] = psnr_y(sr.image, hr)
                row[f"image {name}"] = sr.image.astype(int)
            row["max_grey_diff"] = int(np.abs(row.pop("image onnx int8") - row["image fused"]).max())
            row["max_grey_diff_fp32"] = int(np.abs(row.pop("image onnx fp32") - row.pop("image fused")).max())
            rows.append(row)
        out["rows"] = rows
    return out


def _interleaved(runs: dict, repeat: int) -> dict[str, list[float]]:
    """Each callable once for warm-up, then ``repeat`` rounds of all of them in turn: other load lands on all alike."""
    for fn in runs.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeat):
        for k, fn in runs.items():
            times[k].append(_timed(fn))
    return times


# ------------------------------------------------------------------------------------------- parent


def _cpu() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "?")
    flags = info.split("flags", 1)[1].split("\n", 1)[0].split()
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")
    return f"{name}, {os.cpu_count()} CPUs, flags {' '.join(f for f in wanted if f in flags)}, load {os.getloadavg()[0]:.1f}"


def part_peak(threads: int | None) -> dict:
    r = _child(["peak"], threads)
    print(f"{_cpu()}; {r['threads']} threads")
    print(f"matrix product, best of 1024² and 2048², 5 runs each: float32 torch.mm (MKL) {r['torch_mm_float32']:.0f} "
          f"GFLOP/s, oneDNN inner product (ttsr_core.accel.gemm) {r['onednn_mm_float32']:.0f} GFLOP/s; "
          f"bfloat16 torch.mm {r['mm_bfloat16']:.0f} GFLOP/s")
    for shape, v in r["conv"].items():
        print(f"3×3 conv {shape} at 992×752, channel-last, best of 3: float32 {v['float32']:.0f} GFLOP/s, "
              f"bfloat16 {v['bfloat16']:.0f} GFLOP/s")
    return r


def part_stages(threads: int | None, model: str, lr: list[int], ref: list[int], mode: str) -> None:
    peak = part_peak(threads)
    conv_peak = max(v["float32"] for v in peak["conv"].values())
    mm_peak = peak["mm_float32"]
    r = _child(["stages", model, lr, ref, mode, True], threads)
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


def part_compare(threads: int | None, baseline: Path, repeat: int, amp: str | None = None) -> None:
    import numpy as np

    print(f"{_cpu()}\nbaseline {baseline} ({_git_head(baseline)}) vs this tree ({_git_head(ROOT)})"
          f"{f' with {amp} autocast (opt-in; not the same output)' if amp else ''}, interleaved, {repeat} runs each")
    runs: dict[str, list[dict]] = {"baseline": [], "this tree": []}
    for i in range(repeat):
        for name, root in (("baseline", baseline), ("this tree", ROOT)):
            out = f"/tmp/refsr_compare_{os.getpid()}_{name.replace(' ', '_')}.npy"
            r = _child(["compare", out] + ([amp] if amp and root == ROOT else []), threads, root)
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


def part_paper(threads: int | None, lr: list[int], ref: list[int], tile: int) -> None:
    import numpy as np

    print(f"{_cpu()}\npaper preset (random weights), LR {lr[0]}×{lr[1]} + Ref {ref[0]}×{ref[1]}; "
          f"tiled = {tile}-px LR tiles (`refsr sr --tile {tile}`)\n")
    rows = {}
    for kind, t in (("full", None), ("exact", None), ("fast", None), ("exact", tile), ("fast", tile)):
        name = kind if t is None else f"{kind}, tiled"
        rows[name] = _child(["paper", kind, lr, ref, f"/tmp/refsr_paper_{os.getpid()}_{name[:5]}{t}.npy", t], threads)
        rows[name]["out"] = f"/tmp/refsr_paper_{os.getpid()}_{name[:5]}{t}.npy"
    full = np.load(rows["full"]["out"])
    print("| path | wall s | peak RSS MB | peak − idle MB | × faster than full | peak RSS / full | (peak − idle) / full "
          "| max |Δ| vs full |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    above_idle = {k: r["peak_rss_mb"] - r["idle_rss_mb"] for k, r in rows.items()}
    for kind, r in rows.items():
        diff = np.abs(np.load(r["out"]) - full).max()
        print(f"| {kind} | {r['wall_s']:.1f} | {r['peak_rss_mb']:.0f} | {r['peak_rss_mb'] - r['idle_rss_mb']:.0f} | "
              f"{rows['full']['wall_s'] / r['wall_s']:.2f} | {r['peak_rss_mb'] / rows['full']['peak_rss_mb']:.2f} | "
              f"{above_idle[kind] / above_idle['full']:.2f} | {diff:.1e} |")


def part_bf16(threads: int | None, max_side: int) -> None:
    r = _child(["bf16", max_side], threads)
    print(f"{_cpu()}\nttsr-lite ({r['weights']}), fast search, untiled, photos capped at {max_side} px, {r['threads']} threads\n")
    print("| pair | LR | Y-PSNR fp32 | Y-PSNR bf16 | Δ dB | max grey-level diff | s fp32 | s bf16 |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for x in r["rows"]:
        print(f"| {x['pair']} | {x['lr']} | {x['psnr_float32']:.3f} | {x['psnr_bfloat16']:.3f} | "
              f"{x['psnr_bfloat16'] - x['psnr_float32']:+.3f} | {x['max_grey_diff']} | {x['s_float32']:.1f} | "
              f"{x['s_bfloat16']:.1f} |")
    n = len(r["rows"])
    mean = {k: sum(x[k] for x in r["rows"]) / n for k in ("psnr_float32", "psnr_bfloat16", "s_float32", "s_bfloat16")}
    print(f"| **mean** | | {mean['psnr_float32']:.3f} | {mean['psnr_bfloat16']:.3f} | "
          f"{mean['psnr_bfloat16'] - mean['psnr_float32']:+.3f} | | {mean['s_float32']:.1f} | {mean['s_bfloat16']:.1f} |")


def _need_ort() -> bool:
    """onnx (the exporter writes its protobuf; int8 reads the graph) and onnxruntime: not dependencies."""
    import importlib.util

    missing = [m for m in ("onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        print(f"this part needs {' and '.join(missing)}, not installed: .venv/bin/pip install onnx onnxruntime")
    return not missing


def part_onnx(threads: int | None, repeat: int) -> None:
    if not _need_ort():
        return
    r = _child(["onnx", repeat], threads)
    print(f"{_cpu()}\nttsr-lite ({r['weights']}), one 248×188 tile of the 480×360 + 1920×1440 case (output 992×752), "
          f"fast search, onnxruntime {r['ort']} CPUExecutionProvider, graph optimisation ALL, {r['threads']} threads "
          f"(torch and ORT intra-op), {r['repeat']} interleaved runs each\n")
    best = {k: min(v) for k, v in r["main_s"].items()}
    print("| main network | best s | runs s | × vs fused | max |Δ| vs eager |")
    print("| --- | ---: | --- | ---: | ---: |")
    for k, v in r["main_s"].items():
        diff = r["main_max_diff"].get(k, 0.0)
        print(f"| {k} | {best[k]:.2f} | {', '.join(f'{x:.2f}' for x in v)} | {best['fused'] / best[k]:.2f} | "
              f"{diff:.1e} |")
    print(f"\nONNX session, first use (export + graph optimisation): {r['session_s']:.1f} s")
    lte = {k: min(v) for k, v in r["lte_s"].items()}
    flipped, total = r["lte_flipped"]
    print(f"LTE on the tile's LR↑ (992×752): torch {lte['torch']:.2f} s, ONNX Runtime {lte['onnx']:.2f} s (best of "
          f"{r['repeat']}); lv3 max |Δ| {r['lte_max_diff']:.1e}; hard-attention matches changed by it: "
          f"{flipped} of {total} ({flipped / total:.2%})")


def part_int8(threads: int | None, repeat: int, max_side: int, calib: int, fmt: str) -> None:
    if not _need_ort():
        return
    r = _child(["int8", repeat, max_side, calib, fmt], threads)
    print(f"{_cpu()}\nttsr-lite ({r['weights']}), onnxruntime {r['ort']} static int8 ({r['format'].upper()}, per-channel "
          f"int8 weights, uint8 activations, MinMax calibration on {r['calibration']} training crops of 64×64 LR px), "
          f"{r['threads']} threads; quantisation took {r['quantize_s']:.0f} s\n")
    print(f"Main network on one 248×188 tile (output 992×752), {r['repeat']} interleaved runs each:\n")
    best = {k: min(v) for k, v in r["main_s"].items()}
    print("| main network | best s | runs s | × vs fused | max |Δ| vs eager |")
    print("| --- | ---: | --- | ---: | ---: |")
    for k, v in r["main_s"].items():
        print(f"| {k} | {best[k]:.2f} | {', '.join(f'{x:.2f}' for x in v)} | {best['fused'] / best[k]:.2f} | "
              f"{r['main_max_diff'][k]:.1e} |")
    w = r["whole"]
    print(f"\nWhole `refsr sr` case (enhance_arrays, default settings, 480×360 + 1920×1440, tiled), "
          f"{len(w['fused'])} interleaved runs each: fused {', '.join(f'{x:.1f}' for x in w['fused'])} s, "
          f"ORT int8 main network {', '.join(f'{x:.1f}' for x in w['onnx int8'])} s; best {min(w['fused']):.1f} vs "
          f"{min(w['onnx int8']):.1f} s ({min(w['fused']) / min(w['onnx int8']):.2f}×)")
    print(f"\nValidation pairs, photos capped at {max_side} px, fast search, untiled; Y-PSNR against the HR photo:\n")
    print("| pair | LR | Y-PSNR fused | Y-PSNR ORT fp32 | Y-PSNR ORT int8 | Δ dB int8 | max grey diff int8 / fp32 vs fused |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for x in r["rows"]:
        print(f"| {x['pair']} | {x['lr']} | {x['psnr fused']:.3f} | {x['psnr onnx fp32']:.3f} | {x['psnr onnx int8']:.3f} | "
              f"{x['psnr onnx int8'] - x['psnr fused']:+.3f} | {x['max_grey_diff']} / {x['max_grey_diff_fp32']} |")
    n = len(r["rows"])
    mean = {k: sum(x[k] for x in r["rows"]) / n for k in ("psnr fused", "psnr onnx fp32", "psnr onnx int8")}
    print(f"| **mean** | | {mean['psnr fused']:.3f} | {mean['psnr onnx fp32']:.3f} | {mean['psnr onnx int8']:.3f} | "
          f"{mean['psnr onnx int8'] - mean['psnr fused']:+.3f} | |")


def _git_head(root: Path) -> str:
    return subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()


def part_compile(threads: int | None) -> None:
    r = _child(["compile", 188, 248], threads)
    print(f"{_cpu()}\nttsr-lite ({r['weights']}) main network, one 188×248 LR tile (752×992 out), "
          f"{r['threads']} threads, best of 3 after a warm-up\n")
    print(f"torch.compile (inductor, freezing, static shape): first call incl. compilation {r['compile_s']:.1f} s\n")
    print("| main network | s per tile | × vs eager | max |Δ| vs eager |\n| --- | ---: | ---: | ---: |")
    for name, secs in r["times"].items():
        diff = r["diffs"].get(name, 0.0)
        print(f"| {name} | {secs:.3f} | {r['times']['eager'] / secs:.2f} | {diff:.1e} |")


def part_reuse(threads: int | None, targets: int) -> None:
    r = _child(["reuse", targets], threads)
    print(f"{_cpu()}\nttsr-lite ({r['weights']}), {targets} targets of 480×360 sharing one 1920×1440 reference, "
          f"default settings, {r['threads']} threads, each target without and then with the cache\n")
    print("| target | s without cache | s with cache |\n| --- | ---: | ---: |")
    for i, (plain, cached) in enumerate(r["rows"], 1):
        print(f"| {i} | {plain:.2f} | {cached:.2f} |")
    later = r["rows"][1:]
    if later:
        p, c = sum(x for x, _ in later) / len(later), sum(y for _, y in later) / len(later)
        print(f"\ntargets 2–{targets}: {p:.2f} → {c:.2f} s each ({p / c:.2f}×); cache {r['misses']} miss, "
              f"{r['hits']} hits; outputs identical: {r['same']}; peak RSS {r['peak_rss_mb']:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("peak", "stages", "compare", "paper", "bf16", "compile", "reuse", "onnx",
                                           "int8"), default="stages")
    parser.add_argument("--threads", type=int, default=None, help="torch threads in the measuring processes")
    parser.add_argument("--model", default="ttsr-lite", help="stages: preset (ttsr-lite = the shipped checkpoint)")
    parser.add_argument("--mode", default="fast", choices=("fast", "exact"), help="stages: search mode")
    parser.add_argument("--lr", default="480x360", help="stages/paper: LR size WxH")
    parser.add_argument("--ref", default="1920x1440", help="stages/paper: reference size WxH")
    parser.add_argument("--baseline-root", type=Path, help="compare: a checkout of the code to compare against")
    parser.add_argument("--repeat", type=int, default=None, help="compare: runs of each (2); onnx/int8: interleaved runs (5)")
    parser.add_argument("--amp", choices=("bfloat16",), help="compare: this tree with autocast (opt-in setting)")
    parser.add_argument("--max-side", type=int, default=640, help="bf16/int8: cap the validation photos' long side")
    parser.add_argument("--targets", type=int, default=3, help="reuse: targets sharing the reference")
    parser.add_argument("--paper-tile", type=int, default=64, help="paper: LR tile side of the tiled rows")
    parser.add_argument("--calibration", type=int, default=8, help="int8: training photos to calibrate on")
    parser.add_argument("--quant-format", default="qdq", choices=("qdq", "qoperator"), help="int8: ONNX quantised format")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        __import__("torch").set_num_threads(args.threads)
    if args.child:
        kind, *rest = json.loads(args.child)
        fn = {"peak": child_peak, "stages": child_stages, "compare": child_compare, "paper": child_paper,
              "bf16": child_bf16, "compile": child_compile, "reuse": child_reuse, "onnx": child_onnx,
              "int8": child_int8}[kind]
        print(json.dumps(fn(*rest)))
        return
    size = lambda s: [int(v) for v in s.split("x")]  # noqa: E731
    if args.part == "peak":
        part_peak(args.threads)
    elif args.part == "stages":
        part_stages(args.threads, args.model, size(args.lr), size(args.ref), args.mode)
    elif args.part == "bf16":
        part_bf16(args.threads, args.max_side)
    elif args.part == "compile":
        part_compile(args.threads)
    elif args.part == "reuse":
        part_reuse(args.threads, args.targets)
    elif args.part == "onnx":
        part_onnx(args.threads, args.repeat or 5)
    elif args.part == "int8":
        part_int8(args.threads, args.repeat or 5, args.max_side, args.calibration, args.quant_format)
    elif args.part == "compare":
        if args.baseline_root is None:
            parser.error("--part compare needs --baseline-root")
        part_compare(args.threads, args.baseline_root.resolve(), args.repeat or 2, args.amp)
    else:  # the paper case has its own default sizes
        part_paper(args.threads, size(args.lr) if args.lr != "480x360" else [160, 120],
                   size(args.ref) if args.ref != "1920x1440" else [640, 480], args.paper_tile)


if __name__ == "__main__":
    main()
