"""Training losses: L1 reconstruction, transferal perceptual (TPL) and WGAN-GP adversarial."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ttsr_core.model.net import TTSR, TTSROutput
from ttsr_core.training.data import SAMPLE_KINDS

# The paper's weights (Yang et al. 2020, §4.1): λrec = 1, λper = 1e-2, λadv = 1e-3.
TPL_WEIGHT = 1e-2
ADV_WEIGHT = 1e-3


def reconstruction_loss(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(sr, hr)


def transferal_perceptual_loss(model: TTSR, out: TTSROutput) -> torch.Tensor:
    """LTE features of SR against the transferred textures, weighted by sigmoid(soft attention).

    The LTE's weights are detached (the authors use a frozen copy, ``LTE_copy``), so this loss
    shapes the image, not the extractor.
    """
    params = {k: v.detach() for k, v in model.LTE.named_parameters()}
    buffers = dict(model.LTE.named_buffers())
    lv1, lv2, lv3 = torch.func.functional_call(model.LTE, {**params, **buffers}, (out.sr,))
    s = out.soft_attention
    weights = (torch.sigmoid(s), torch.sigmoid(F.interpolate(s, scale_factor=2, mode="bicubic")),
               torch.sigmoid(F.interpolate(s, scale_factor=4, mode="bicubic")))
    pairs = ((lv3, out.texture_lv3), (lv2, out.texture_lv2), (lv1, out.texture_lv1))
    return sum(F.mse_loss(f * w, t * w) for (f, t), w in zip(pairs, weights)) / 3.0


class Discriminator(nn.Module):
    """A VGG-style critic for WGAN-GP; global average pooling makes it size-agnostic."""

    def __init__(self, num_feat: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for i, cout in enumerate((num_feat, num_feat, num_feat * 2, num_feat * 2, num_feat * 4, num_feat * 4)):
            layers += [nn.Conv2d(cin, cout, 3, stride=1 + i % 2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(cin, 64), nn.LeakyReLU(0.2, inplace=True), nn.Linear(64, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, weight: float = 10.0) -> torch.Tensor:
    """WGAN-GP: (‖∇D(x̂)‖ − 1)² on random interpolates x̂ between real and fake."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device)
    mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    grad = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)[0]
    return weight * ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def gate_loss(model: TTSR, soft: torch.Tensor, corr: torch.Tensor, kind: torch.Tensor) -> torch.Tensor | None:
    """Binary cross-entropy of the gate's factor at each LR position: 1 where a same-photo view shows it
    (``corr`` ≥ 0), 0 everywhere for another photo's reference; self and real-pair samples are not labelled.

    soft (N, 1, h, w) raw relevance; corr (N, h, w, 2); kind (N,) indexes data.SAMPLE_KINDS → scalar or None.
    """
    near_far = (kind == SAMPLE_KINDS.index("near")) | (kind == SAMPLE_KINDS.index("far"))
    other = kind == SAMPLE_KINDS.index("other")
    target = torch.zeros_like(soft[:, 0])  # (N, h, w)
    labelled = (near_far[:, None, None] & (corr[..., 0] >= 0)) | other[:, None, None]
    target[near_far[:, None, None] & (corr[..., 0] >= 0)] = 1.0
    if not labelled.any():
        return None
    factor = model.gate.factor(soft[:, 0].float()).clamp(1e-6, 1 - 1e-6)
    return F.binary_cross_entropy(factor[labelled], target[labelled])
