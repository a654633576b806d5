"""The main network as an ONNX graph for ONNX Runtime, for the archived ``onnx_runtime.py`` and ``int8.py`` trials.

ONNX Runtime is the engine immich's ML service runs on CPU. The graph exported here is
:class:`~ttsr_core.model.net.MainNet`'s function in :mod:`ttsr_core.accel.fused`'s order (1×1 convolutions
before the bicubic upsampling that follows them), with the upsampling written as depthwise
convolutions (:func:`bicubic_up_graph`). Exported as it is, MainNet's bicubic ``F.interpolate``
becomes ORT's cubic ``Resize``, and that graph took 8.9 s per tile against 1.5 s fused
(benchmarks/README.md, "ONNX Runtime and int8"). Only float rounding differs from the eager
reference (test_onnx_graph.py beside it).

A measurement, not a backend: in float32 this graph ran at 0.80× the speed of ``Backend.FUSED`` on
the tile case, so nothing in ttsr_core imports it.
"""
from __future__ import annotations

import functools
import io
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

INPUTS = ("lr", "S", "T_lv3", "T_lv2", "T_lv1")
OPSET = 17


@functools.lru_cache(maxsize=4)
def phase_taps(factor: int) -> torch.Tensor:
    """(factor, 5) cubic weights: output phase p of input pixel j reads inputs j−2 … j+2, read off ``F.interpolate``."""
    n = 16
    with torch.no_grad():
        full = F.interpolate(torch.eye(n).view(n, 1, 1, n), scale_factor=(1, factor), mode="bicubic")[:, 0, 0, :].t()
    j = n // 2  # an interior pixel: no clamping reaches its taps
    return torch.stack([full[factor * j + p, j - 2 : j + 3] for p in range(factor)])


@functools.lru_cache(maxsize=32)
def _phase_kernels(factor: int, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    taps = phase_taps(factor)
    along_h = taps.view(factor, 1, 5, 1).repeat(channels, 1, 1, 1)  # output channel c·s + r: row phase r
    along_w = taps.view(factor, 1, 1, 5).repeat(channels * factor, 1, 1, 1)  # (c·s + r)·s + q: column phase q
    return along_h.contiguous(), along_w.contiguous()


def bicubic_up_polyphase(x: torch.Tensor, factor: int) -> torch.Tensor:
    """``F.interpolate(x, scale_factor=factor, mode="bicubic")`` in operators every graph runtime has.

    Replicate padding by two (torch's border clamping), one depthwise 5×1 convolution making the
    ``factor`` row phases of each channel, one depthwise 1×5 making the column phases of each of
    those, and a pixel shuffle (ONNX DepthToSpace, CRD order c·s² + r·s + q) that interleaves them.
    The kernels are cached constants, so the tracer keeps them as weights (not as traced ops on a
    dynamic shape, which the exporter rejects).
    """
    c = int(x.shape[1])
    along_h, along_w = (k.to(x) for k in _phase_kernels(factor, c))
    y = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), along_h, groups=c)  # (N, C·s, H+4 → H, W+4)
    y = F.conv2d(y, along_w, groups=c * factor)  # (N, C·s², H, W)
    return F.pixel_shuffle(y, factor)


@functools.lru_cache(maxsize=32)
def _transposed_kernels(factor: int, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    taps, s = phase_taps(factor), factor
    kernel = torch.zeros(5 * s)
    for p in range(s):  # padded input m feeds output s·(m − k) + p with weight taps[p, k]: tap p + s·(4 − k)
        for k in range(5):
            kernel[p + s * (4 - k)] = taps[p, k]
    return (kernel.view(1, 1, 5 * s, 1).repeat(channels, 1, 1, 1).contiguous(),
            kernel.view(1, 1, 1, 5 * s).repeat(channels, 1, 1, 1).contiguous())


def bicubic_up_transposed(x: torch.Tensor, factor: int) -> torch.Tensor:
    """The same upsampling as depthwise transposed convolutions (stride ``factor``), one per axis."""
    c, s = int(x.shape[1]), factor
    along_h, along_w = (k.to(x) for k in _transposed_kernels(factor, c))
    y = F.conv_transpose2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), along_h, stride=(s, 1), padding=(4 * s, 0), groups=c)
    return F.conv_transpose2d(y, along_w, stride=(1, s), padding=(0, 4 * s), groups=c)


def bicubic_up_graph(x: torch.Tensor, factor: int) -> torch.Tensor:
    """The faster form in ONNX Runtime of each factor: transposed convolutions at ×2 (0.04 s vs 0.10 s
    polyphase), polyphase at ×4 (0.10 s vs 0.16 s); best of 3 on one 32×188×248 map, 2 threads, with
    a one-off script on 2026-11-29 (not a part of these trials)."""
    return bicubic_up_transposed(x, factor) if factor == 2 else bicubic_up_polyphase(x, factor)


def _resblock(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    y = block.conv2(F.relu(block.conv1(x)))
    return (y * block.res_scale if block.res_scale != 1.0 else y) + x


def _blocks(blocks: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
    for block in blocks:
        x = _resblock(block, x)
    return x


def _up_1x1(conv: nn.Conv2d, x: torch.Tensor, factor: int) -> torch.Tensor:
    """relu(conv(up(x))) for a 1×1 conv, as relu(up(conv(x))): bicubic weights sum to one (see fused.py)."""
    return F.relu(bicubic_up_graph(conv(x), factor))


class ExportableMainNet(nn.Module):
    """MainNet's forward as a traceable graph: no in-place ops, no strided views, constant kernels."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(
        self, lr: torch.Tensor, S: torch.Tensor, T_lv3: torch.Tensor, T_lv2: torch.Tensor, T_lv1: torch.Tensor
    ) -> torch.Tensor:
        n = self.net
        sfe = n.SFE
        x = F.relu(sfe.conv_head(lr))
        x11 = sfe.conv_tail(_blocks(sfe.RBs, x)) + x
        x11 = x11 + n.conv11_head(torch.cat((x11, T_lv3), 1)) * S
        x11 = x11 + n.conv11_tail(_blocks(n.RB11, x11))

        x21 = x11
        x22 = F.relu(F.pixel_shuffle(n.conv12(x11), 2))
        x22 = x22 + n.conv22_head(torch.cat((x22, T_lv2), 1)) * bicubic_up_graph(S, 2)
        m = n.ex12
        r21 = F.relu(m.conv_merge1(torch.cat((x21, F.relu(m.conv21(x22))), 1)))
        r22 = F.relu(m.conv_merge2(torch.cat((x22, _up_1x1(m.conv12, x21, 2)), 1)))
        x21 = x21 + n.conv21_tail(_blocks(n.RB21, r21))
        x22 = x22 + n.conv22_tail(_blocks(n.RB22, r22))

        x31, x32 = x21, x22
        x33 = F.relu(F.pixel_shuffle(n.conv23(x22), 2))
        x33 = x33 + n.conv33_head(torch.cat((x33, T_lv1), 1)) * bicubic_up_graph(S, 4)
        m = n.ex123
        from_2, from_3 = F.relu(m.conv21(x32)), F.relu(m.conv31_2(F.relu(m.conv31_1(x33))))
        r31 = F.relu(m.conv_merge1(torch.cat((x31, from_2, from_3), 1)))
        r32 = F.relu(m.conv_merge2(torch.cat((x32, _up_1x1(m.conv12, x31, 2), F.relu(m.conv32(x33))), 1)))
        r33 = F.relu(m.conv_merge3(torch.cat((x33, _up_1x1(m.conv13, x31, 4), _up_1x1(m.conv23, x32, 2)), 1)))
        x31 = x31 + n.conv31_tail(_blocks(n.RB31, r31))
        x32 = x32 + n.conv32_tail(_blocks(n.RB32, r32))
        x33 = x33 + n.conv33_tail(_blocks(n.RB33, r33))

        t = n.merge_tail
        x = F.relu(t.conv_merge(torch.cat((x33, _up_1x1(t.conv13, x31, 4), _up_1x1(t.conv23, x32, 2)), 1)))
        return t.conv_tail2(t.conv_tail1(x))


def export(module: nn.Module, example: tuple[torch.Tensor, ...], inputs: tuple[str, ...],
           outputs: tuple[str, ...]) -> bytes:
    """ONNX bytes of ``module`` traced on ``example``, float32, batch, height and width dynamic."""
    dynamic = {name: {0: "n", 2: f"h_{name}", 3: f"w_{name}"} for name in inputs + outputs}
    buf = io.BytesIO()
    args = tuple(a.detach().float().contiguous() for a in example)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(module, args, buf, input_names=list(inputs), output_names=list(outputs),
                          dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)
    return buf.getvalue()


def export_main_net(net: nn.Module, example: tuple[torch.Tensor, ...]) -> bytes:
    """The ONNX model of ``net``'s (a MainNet's) function; ``example``: one (lr, S, T_lv3, T_lv2, T_lv1)."""
    return export(ExportableMainNet(net).eval(), example, INPUTS, ("sr",))


def make_session(model: bytes, threads: int) -> Any:
    """CPU session: every graph optimisation, ``threads`` intra-op threads, operators in sequence."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def feeds(args: tuple[torch.Tensor, ...]) -> dict:
    """ONNX Runtime inputs (NCHW float32 arrays) from the main network's torch arguments."""
    return {name: a.detach().float().contiguous().numpy() for name, a in zip(INPUTS, args)}


def run(session: Any, args: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The session's output for MainNet arguments, as a torch tensor (same as ``net(*args)`` up to rounding)."""
    return torch.from_numpy(session.run(None, feeds(args))[0])
