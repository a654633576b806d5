"""Archived trial, not adopted: the main network and the LTE in ONNX Runtime against torch (eager and fused) on one tile.

    .venv/bin/python benchmarks/archive/onnx/onnx_runtime.py [--repeat 5]   # needs onnx and onnxruntime
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # benchmarks/: the harness
from harness import cpu, enhance_case, experiment, interleaved, load_model, run_child  # noqa: E402


def _tile_case(model):  # type: ignore[no-untyped-def]
    """The main network's inputs for the top-left 248×188 tile of the whole case (tiles of ``refsr sr``), and its LR↑."""
    import numpy as np

    from ttsr_core.arrays import resize_bicubic
    from ttsr_core.config import SearchConfig, SearchMode
    from ttsr_core.model.inference import prepare_reference, to_tensor

    lr_full, ref = enhance_case()
    lr = np.ascontiguousarray(lr_full[:188, :248])
    prep = prepare_reference(ref)
    lr_up = to_tensor(resize_bicubic(lr, 4 * 248, 4 * 188))
    encoded = model.encode_references([to_tensor(prep.ref)], [to_tensor(prep.ref_down_up)])
    t = model.transfer(lr_up, encoded, SearchConfig(mode=SearchMode.FAST))
    return (to_tensor(lr), t.soft_attention, t.texture_lv3, t.texture_lv2, t.texture_lv1), lr_up, encoded


def child(repeat: int) -> dict:
    """Eager vs fused vs ONNX Runtime main network on one tile, interleaved; the LTE in torch vs ONNX Runtime."""
    import onnxruntime as ort
    import torch

    from onnx_graph import INPUTS, export, export_main_net, make_session, run
    from ttsr_core.config import SearchConfig, SearchMode
    from ttsr_core.accel.fused import fused_forward
    from ttsr_core.accel.heap import retained_heap
    from ttsr_core.model.inference import prepare_for_inference
    from ttsr_core.model.search import search_indices

    model, weights = load_model("ttsr-lite")
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
        out["main_s"] = interleaved(runs, repeat)

        # The LTE, plainly exported (convolutions, ReLU, max-pooling), on the tile's LR↑ (the queries).
        lte = make_session(export(model.LTE, (lr_up,), ("x",), ("lv1", "lv2", "lv3")), threads)
        feed = {"x": lr_up.contiguous().numpy()}
        q_torch = model.LTE(lr_up)[2]
        q_ort = torch.from_numpy(lte.run(None, feed)[2])
        out["lte_s"] = interleaved({"torch": lambda: model.LTE(lr_up), "onnx": lambda: lte.run(None, feed)}, repeat)
        out["lte_max_diff"] = float((q_ort - q_torch).abs().max())
        # What that rounding does downstream: hard-attention matches that change (the search's argmax).
        cfg = SearchConfig(mode=SearchMode.FAST)
        a = search_indices(q_torch[0], [encoded.keys_lv3[0][0]], cfg)
        b = search_indices(q_ort[0], [encoded.keys_lv3[0][0]], cfg)
        out["lte_flipped"] = [int((a != b).sum()), int(a.numel())]
    return out


def _need_ort() -> bool:
    """onnx (the exporter writes its protobuf; int8 reads the graph) and onnxruntime: not dependencies."""
    import importlib.util

    missing = [m for m in ("onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        print(f"this part needs {' and '.join(missing)}, not installed: .venv/bin/pip install onnx onnxruntime")
    return not missing


def report(args) -> None:  # type: ignore[no-untyped-def]
    threads, repeat = args.threads, args.repeat
    if not _need_ort():
        return
    r = run_child(__file__, [repeat], threads)
    print(f"{cpu()}\nttsr-lite ({r['weights']}), one 248×188 tile of the 480×360 + 1920×1440 case (output 992×752), "
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


def add_arguments(parser) -> None:  # type: ignore[no-untyped-def]
    parser.add_argument("--repeat", type=int, default=5, help="interleaved runs")


def main() -> None:
    experiment(__doc__, child, report, add_arguments)


if __name__ == "__main__":
    main()
