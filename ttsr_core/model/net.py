"""The TTSR network: main network with soft-attention fusion and CSFI, LTE and texture transformer.

Module names follow the authors' published layout (``MainNet.*``, ``LTE.*``), so their checkpoints
load key for key; see ``checkpoint.py``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ttsr_core.accel.fused import fused_forward
from ttsr_core.config import Backend, SearchConfig, TTSRConfig
from ttsr_core.model.lte import LTE
from ttsr_core.model.search import TextureTransfer, hard_and_soft_attention, search_and_transfer


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1)


def conv1x1(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1)


def _up(x: torch.Tensor, factor: int) -> torch.Tensor:
    return F.interpolate(x, scale_factor=factor, mode="bicubic")


class ResBlock(nn.Module):
    def __init__(self, num_feat: int, res_scale: float) -> None:
        super().__init__()
        self.res_scale = res_scale
        self.conv1 = conv3x3(num_feat, num_feat)
        self.conv2 = conv3x3(num_feat, num_feat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.conv1(x))) * self.res_scale + x


def _blocks(n: int, num_feat: int, res_scale: float) -> nn.ModuleList:
    return nn.ModuleList(ResBlock(num_feat, res_scale) for _ in range(n))


class SFE(nn.Module):
    """Shallow feature extraction from the LR image."""

    def __init__(self, num_block: int, num_feat: int, res_scale: float) -> None:
        super().__init__()
        self.conv_head = conv3x3(3, num_feat)
        self.RBs = _blocks(num_block, num_feat, res_scale)
        self.conv_tail = conv3x3(num_feat, num_feat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv_head(x))
        y = x
        for block in self.RBs:
            y = block(y)
        return self.conv_tail(y) + x


class CSFI2(nn.Module):
    """Cross-scale feature integration between the ×1 and ×2 streams."""

    def __init__(self, num_feat: int) -> None:
        super().__init__()
        self.conv12 = conv1x1(num_feat, num_feat)
        self.conv21 = conv3x3(num_feat, num_feat, 2)
        self.conv_merge1 = conv3x3(num_feat * 2, num_feat)
        self.conv_merge2 = conv3x3(num_feat * 2, num_feat)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x12 = F.relu(self.conv12(_up(x1, 2)))
        x21 = F.relu(self.conv21(x2))
        x1 = F.relu(self.conv_merge1(torch.cat((x1, x21), dim=1)))
        x2 = F.relu(self.conv_merge2(torch.cat((x2, x12), dim=1)))
        return x1, x2


class CSFI3(nn.Module):
    """Cross-scale feature integration between the ×1, ×2 and ×4 streams."""

    def __init__(self, num_feat: int) -> None:
        super().__init__()
        self.conv12 = conv1x1(num_feat, num_feat)
        self.conv13 = conv1x1(num_feat, num_feat)
        self.conv21 = conv3x3(num_feat, num_feat, 2)
        self.conv23 = conv1x1(num_feat, num_feat)
        self.conv31_1 = conv3x3(num_feat, num_feat, 2)
        self.conv31_2 = conv3x3(num_feat, num_feat, 2)
        self.conv32 = conv3x3(num_feat, num_feat, 2)
        self.conv_merge1 = conv3x3(num_feat * 3, num_feat)
        self.conv_merge2 = conv3x3(num_feat * 3, num_feat)
        self.conv_merge3 = conv3x3(num_feat * 3, num_feat)

    def forward(
        self, x1: torch.Tensor, x2: torch.Tensor, x3: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x12 = F.relu(self.conv12(_up(x1, 2)))
        x13 = F.relu(self.conv13(_up(x1, 4)))
        x21 = F.relu(self.conv21(x2))
        x23 = F.relu(self.conv23(_up(x2, 2)))
        x31 = F.relu(self.conv31_2(F.relu(self.conv31_1(x3))))
        x32 = F.relu(self.conv32(x3))
        x1 = F.relu(self.conv_merge1(torch.cat((x1, x21, x31), dim=1)))
        x2 = F.relu(self.conv_merge2(torch.cat((x2, x12, x32), dim=1)))
        x3 = F.relu(self.conv_merge3(torch.cat((x3, x13, x23), dim=1)))
        return x1, x2, x3


class MergeTail(nn.Module):
    """Merges the three scales into the ×4 RGB output."""

    def __init__(self, num_feat: int) -> None:
        super().__init__()
        self.conv13 = conv1x1(num_feat, num_feat)
        self.conv23 = conv1x1(num_feat, num_feat)
        self.conv_merge = conv3x3(num_feat * 3, num_feat)
        self.conv_tail1 = conv3x3(num_feat, num_feat // 2)
        self.conv_tail2 = conv1x1(num_feat // 2, 3)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, x3: torch.Tensor) -> torch.Tensor:
        x13 = F.relu(self.conv13(_up(x1, 4)))
        x23 = F.relu(self.conv23(_up(x2, 2)))
        x = F.relu(self.conv_merge(torch.cat((x3, x13, x23), dim=1)))
        return self.conv_tail2(self.conv_tail1(x))


class MainNet(nn.Module):
    """Main network: SFE, soft-attention texture fusion at ×1/×2/×4, CSFI2, CSFI3, merge tail."""

    def __init__(self, config: TTSRConfig) -> None:
        super().__init__()
        nf, (b0, b1, b2, b3), rs = config.num_feat, config.num_block, config.res_scale
        c1, c2, c3 = config.lte_channels
        self.SFE = SFE(b0, nf, rs)
        self.conv11_head = conv3x3(c3 + nf, nf)
        self.RB11 = _blocks(b1, nf, rs)
        self.conv11_tail = conv3x3(nf, nf)
        self.conv12 = conv3x3(nf, nf * 4)
        self.conv22_head = conv3x3(c2 + nf, nf)
        self.ex12 = CSFI2(nf)
        self.RB21 = _blocks(b2, nf, rs)
        self.RB22 = _blocks(b2, nf, rs)
        self.conv21_tail = conv3x3(nf, nf)
        self.conv22_tail = conv3x3(nf, nf)
        self.conv23 = conv3x3(nf, nf * 4)
        self.conv33_head = conv3x3(c1 + nf, nf)
        self.ex123 = CSFI3(nf)
        self.RB31 = _blocks(b3, nf, rs)
        self.RB32 = _blocks(b3, nf, rs)
        self.RB33 = _blocks(b3, nf, rs)
        self.conv31_tail = conv3x3(nf, nf)
        self.conv32_tail = conv3x3(nf, nf)
        self.conv33_tail = conv3x3(nf, nf)
        self.merge_tail = MergeTail(nf)

    def forward(
        self, lr: torch.Tensor, S: torch.Tensor, T_lv3: torch.Tensor, T_lv2: torch.Tensor, T_lv1: torch.Tensor
    ) -> torch.Tensor:
        """lr (N,3,h,w), S (N,1,h,w), T_lv3 (N,c3,h,w), T_lv2 (N,c2,2h,2w), T_lv1 (N,c1,4h,4w) → (N,3,4h,4w), unclamped."""
        x11 = self.SFE(lr)
        # Soft attention weighs how much transferred texture each position trusts (paper §3.4).
        x11 = x11 + self.conv11_head(torch.cat((x11, T_lv3), dim=1)) * S
        res = x11
        for block in self.RB11:
            res = block(res)
        x11 = x11 + self.conv11_tail(res)

        x21 = x11
        x22 = F.relu(F.pixel_shuffle(self.conv12(x11), 2))
        x22 = x22 + self.conv22_head(torch.cat((x22, T_lv2), dim=1)) * _up(S, 2)
        r21, r22 = self.ex12(x21, x22)
        for b21, b22 in zip(self.RB21, self.RB22):
            r21, r22 = b21(r21), b22(r22)
        x21 = x21 + self.conv21_tail(r21)
        x22 = x22 + self.conv22_tail(r22)

        x31, x32 = x21, x22
        x33 = F.relu(F.pixel_shuffle(self.conv23(x22), 2))
        x33 = x33 + self.conv33_head(torch.cat((x33, T_lv1), dim=1)) * _up(S, 4)
        r31, r32, r33 = self.ex123(x31, x32, x33)
        for b31, b32, b33 in zip(self.RB31, self.RB32, self.RB33):
            r31, r32, r33 = b31(r31), b32(r32), b33(r33)
        x31 = x31 + self.conv31_tail(r31)
        x32 = x32 + self.conv32_tail(r32)
        x33 = x33 + self.conv33_tail(r33)
        return self.merge_tail(x31, x32, x33)


def resolve_backend(backend: Backend | str | None) -> Backend:
    """None → fused without autograd, eager with it (training); a name → that backend, if it can run now."""
    if backend is None:
        return Backend.EAGER if torch.is_grad_enabled() else Backend.FUSED
    try:
        resolved = Backend(backend)
    except ValueError:
        raise ValueError(f"backend must be one of {[b.value for b in Backend]} or None, got {backend!r}") from None
    if resolved is Backend.FUSED and torch.is_grad_enabled():
        raise ValueError("the fused backend is for inference only: run it under torch.no_grad or inference_mode")
    return resolved


@dataclass
class EncodedReferences:
    """LTE features of the references: what search and transfer need of them.

    Per reference: ``keys_lv3`` (N, c3, H/4, W/4) of Ref↓↑ (searched); ``values_lv1/2/3``
    (N, c1, H, W), (N, c2, H/2, W/2), (N, c3, H/4, W/4) of Ref (transferred).
    """

    keys_lv3: list[torch.Tensor]
    values_lv1: list[torch.Tensor]
    values_lv2: list[torch.Tensor]
    values_lv3: list[torch.Tensor]
    # Block tables of the values (search.texture_table), filled by the first transfer and reused by
    # the next ones (the tiles of a target): ~0.5 s of copying per tile for a 1920×1440 reference.
    texture_tables: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict, repr=False)


@dataclass
class TTSROutput:
    """Result of one forward pass; the optional fields are filled when asked for."""

    sr: torch.Tensor  # (N, 3, 4h, 4w) in [-1, 1]
    soft_attention: torch.Tensor | None = None  # (N, 1, h, w): max relevance per LR position
    hard_attention: torch.Tensor | None = None  # (N, h*w) int64: index into the union of ref positions
    texture_lv3: torch.Tensor | None = None
    texture_lv2: torch.Tensor | None = None
    texture_lv1: torch.Tensor | None = None


class RelevanceGate(nn.Module):
    """S ↦ S·sigmoid(scale·(S − shift)) on the soft attention (N, 1, h, w), with learned scale and shift.

    The paper multiplies transferred texture by S itself, so a poor match still lends a share of its
    texture in proportion to its (often fair) relevance. The gate lets training learn a threshold under
    which texture is shut off. It starts open (scale 10, shift 0: ≥ 0.95 of S for S ≥ 0.3).
    """

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(10.0))
        self.shift = nn.Parameter(torch.tensor(0.0))

    def factor(self, s: torch.Tensor) -> torch.Tensor:
        """The share of texture let through at relevance ``s``: sigmoid(scale·(S − shift)), in (0, 1)."""
        return torch.sigmoid(self.scale * (s - self.shift))

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return s * self.factor(s)


class TTSR(nn.Module):
    """Texture transformer network for reference-based ×4 super-resolution (Yang et al., CVPR 2020)."""

    def __init__(self, config: TTSRConfig) -> None:
        super().__init__()
        self.config = config
        self.MainNet = MainNet(config)
        self.LTE = LTE(config.lte_channels)
        self.gate = RelevanceGate() if config.relevance_gate else None
        if config.global_skip:
            # Start close to bicubic LR↑ with a small residual. Not zero: a zero last layer blocks
            # every gradient behind it, and in our runs the residual then stayed at ~1e-5 for
            # hundreds of steps; ×0.1 of the default init trained from the first step.
            tail = self.MainNet.merge_tail.conv_tail2
            with torch.no_grad():
                tail.weight.mul_(0.1)
                tail.bias.zero_()

    def _queries(self, lr_up: torch.Tensor) -> torch.Tensor:
        """What the search looks for: lv3 LTE features of LR↑ (N, 3, 4h, 4w) → (N, c3, h, w)."""
        return self.LTE(lr_up.detach())[2]

    def _keys(self, ref_down_up: torch.Tensor) -> torch.Tensor:
        """Where it looks: lv3 LTE features of Ref↓↑ (N, 3, H, W) → (N, c3, H/4, W/4), blurred like LR↑."""
        return self.LTE(ref_down_up.detach())[2]

    def relevance(
        self, lr_up: torch.Tensor, refs_down_up: Sequence[torch.Tensor], search: SearchConfig | None = None
    ) -> list[torch.Tensor]:
        """Soft attention of LR↑ against each reference on its own: how much texture each could lend.

        lr_up (1, 3, 4h, 4w); each ref_down_up (1, 3, H, W) with H, W multiples of 4 → per reference
        (h*w,) float32: for every query patch, the relevance of its best patch in that reference (the
        paper's S, §3.2). Only the texture extractor and the search run, not the main network.
        """
        search = search or SearchConfig()
        query = self._queries(lr_up)[0].float()  # (c3, h, w)
        soft = []
        for ref in refs_down_up:
            keys = [self._keys(ref)[0].float()]  # (c3, H/4, W/4)
            soft.append(hard_and_soft_attention(query, keys, search)[1])  # (h*w,)
        return soft

    def encode_references(self, refs: list[torch.Tensor], refs_down_up: list[torch.Tensor]) -> EncodedReferences:
        """LTE features of the references, computed once (tiles of one target all reuse them).

        refs / refs_down_up: lists of (N, 3, H, W) in [-1, 1], H and W multiples of 4.
        """
        if len(refs) != len(refs_down_up):
            raise ValueError(f"got {len(refs)} references but {len(refs_down_up)} ref_down_up images")
        if not refs:
            raise ValueError("at least one reference is needed")
        keys = [self._keys(r) for r in refs_down_up]
        values = [self.LTE(r.detach()) for r in refs]
        return EncodedReferences(keys, [v[0] for v in values], [v[1] for v in values], [v[2] for v in values])

    def transfer(self, lr_up: torch.Tensor, encoded: EncodedReferences, search: SearchConfig | None = None) -> TextureTransfer:
        """Relevance search + hard/soft attention + texture transfer of lr_up (N,3,4h,4w) against encoded references."""
        return search_and_transfer(self._queries(lr_up), encoded.keys_lv3, encoded.values_lv1,
                                   encoded.values_lv2, encoded.values_lv3, search or SearchConfig(),
                                   encoded.texture_tables)

    def forward_encoded(
        self,
        lr: torch.Tensor,
        lr_up: torch.Tensor,
        encoded: EncodedReferences,
        *,
        search: SearchConfig | None = None,
        return_attention: bool = False,
        backend: Backend | str | None = None,
    ) -> torch.Tensor | TTSROutput:
        """:meth:`forward` with the references already encoded by :meth:`encode_references`."""
        t = self.transfer(lr_up, encoded, search)
        main = fused_forward if resolve_backend(backend) is Backend.FUSED else MainNet.__call__
        weight = t.soft_attention if self.gate is None else self.gate(t.soft_attention)
        out = main(self.MainNet, lr, weight, t.texture_lv3, t.texture_lv2, t.texture_lv1)
        if self.config.global_skip:
            out = out + lr_up
        sr = torch.clamp(out, -1.0, 1.0)
        if not return_attention:
            return sr
        return TTSROutput(sr, t.soft_attention, t.hard_attention, t.texture_lv3, t.texture_lv2, t.texture_lv1)

    def forward(
        self,
        lr: torch.Tensor,
        lr_up: torch.Tensor,
        ref: torch.Tensor | list[torch.Tensor],
        ref_down_up: torch.Tensor | list[torch.Tensor],
        *,
        search: SearchConfig | None = None,
        return_attention: bool = False,
        backend: Backend | str | None = None,
    ) -> torch.Tensor | TTSROutput:
        """lr (N,3,h,w), lr_up (N,3,4h,4w), ref / ref_down_up (N,3,H,W) or lists of them → sr (N,3,4h,4w).

        With ``return_attention`` a :class:`TTSROutput` carries soft/hard attention and the textures.
        ``backend``: how the main network runs (:func:`resolve_backend`).
        """
        refs = list(ref) if isinstance(ref, (list, tuple)) else [ref]
        refs_du = list(ref_down_up) if isinstance(ref_down_up, (list, tuple)) else [ref_down_up]
        encoded = self.encode_references(refs, refs_du)
        return self.forward_encoded(lr, lr_up, encoded, search=search, return_attention=return_attention,
                                    backend=backend)
