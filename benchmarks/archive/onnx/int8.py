"""Archived trial, not adopted: a static int8 main network (ONNX Runtime), its speed and its Y-PSNR cost.

    .venv/bin/python benchmarks/archive/onnx/int8.py [--repeat 5] [--max-side 640] [--calibration 8] [--quant-format qdq]
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # benchmarks/: the harness
from harness import (  # noqa: E402
    ROOT, cpu, enhance_case, experiment, interleaved, load_model, run_child, timed, validation_pairs,
)
from onnx_runtime import _need_ort, _tile_case  # noqa: E402


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

    lr, ref = enhance_case()
    fused = net_module.fused_forward

    def with_session():  # type: ignore[no-untyped-def]
        net_module.fused_forward = lambda net, *args: run(session, args)
        try:
            enhance_arrays(model, lr, [ref], EnhanceParams())
        finally:
            net_module.fused_forward = fused

    times: dict[str, list[float]] = {"fused": [], "onnx int8": []}
    for _ in range(repeat):
        times["fused"].append(timed(lambda: enhance_arrays(model, lr, [ref], EnhanceParams())))
        times["onnx int8"].append(timed(with_session))
    return times


def child(repeat: int, max_side: int, calib_count: int, fmt: str) -> dict:
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

    model, weights = load_model("ttsr-lite")
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
        out["main_s"] = interleaved(runs, repeat)
    out["whole"] = _whole_with(model, sessions["onnx int8"], max(2, repeat // 3))

    with retained_heap(), torch.inference_mode():
        # The whole enhancement of each validation pair, its main network run three ways: the default
        # (fused), and each session standing in for MainNet.forward (what backend="eager" calls).
        rows = []
        for pair, hr, lr, ref in validation_pairs(max_side):
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


def report(args) -> None:  # type: ignore[no-untyped-def]
    threads, repeat, max_side, calib, fmt = args.threads, args.repeat, args.max_side, args.calibration, args.quant_format
    if not _need_ort():
        return
    r = run_child(__file__, [repeat, max_side, calib, fmt], threads)
    print(f"{cpu()}\nttsr-lite ({r['weights']}), onnxruntime {r['ort']} static int8 ({r['format'].upper()}, per-channel "
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


def add_arguments(parser) -> None:  # type: ignore[no-untyped-def]
    parser.add_argument("--repeat", type=int, default=5, help="interleaved runs")
    parser.add_argument("--max-side", type=int, default=640, help="cap the validation photos' long side")
    parser.add_argument("--calibration", type=int, default=8, help="training photos to calibrate on")
    parser.add_argument("--quant-format", default="qdq", choices=("qdq", "qoperator"), help="ONNX quantised format")


def main() -> None:
    experiment(__doc__, child, report, add_arguments)


if __name__ == "__main__":
    main()
