"""Album adaptation: fine-tune a trained model on an album's own high-resolution photos.

An album's references show the same people, places and cameras as its targets, so they are, in
principle, the best training data for that album. :func:`adapt` cuts training pairs from them
(warped views, their own LR↑, other album photos) and runs a few hundred L1 steps on a chosen part
of the network. It never sees a target. Whether this pays is measured by ``benchmarks/adaptation.py``.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from ttsr_core.device import autocast
from ttsr_core.model.net import TTSR
from ttsr_core.training.data import PairSettings, WarpedPairs
from ttsr_core.training.losses import reconstruction_loss

logger = logging.getLogger(__name__)


class AdaptPart(StrEnum):
    """Which parameters learn during adaptation; the others stay as trained."""

    ALL = "all"
    MAIN = "main"  # the main network; the texture extractor (and so the matching) is kept
    TAIL = "tail"  # the ×4 stage and the merge tail only: the cheapest, least able to forget


@dataclass(frozen=True)
class AdaptSettings:
    steps: int = 200
    batch_size: int = 4
    lr: float = 1e-4
    part: AdaptPart = AdaptPart.MAIN
    patch: int = 96
    ref_patch: int = 160
    degradation: str = "mixed"
    max_side: int = 1600
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "part", AdaptPart(self.part))
        if self.steps < 0 or self.batch_size < 1:
            raise ValueError(f"steps must be ≥ 0 and batch_size ≥ 1, got {self.steps}, {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")


def _trainable(model: TTSR, part: AdaptPart) -> list[torch.nn.Parameter]:
    if part is AdaptPart.ALL:
        return list(model.parameters())
    if part is AdaptPart.MAIN:
        return list(model.MainNet.parameters()) + ([] if model.gate is None else list(model.gate.parameters()))
    tail = [m for name, m in model.MainNet.named_children()
            if name.startswith(("conv33", "RB3", "conv3", "merge_tail", "ex123"))]
    return [p for m in tail for p in m.parameters()]


def adapt(model: TTSR, photos: Sequence[np.ndarray], settings: AdaptSettings = AdaptSettings(), *,
          amp: str | None = None, on_step: Callable[[int, float, TTSR], None] | None = None) -> TTSR:
    """A copy of ``model`` fine-tuned on ``photos`` (the album's high-resolution photos, (H, W, 3) uint8).

    ``on_step(step, loss, model)`` is called after every step (progress, budgets, curves: it may copy the
    model being tuned, not change it). The model passed in is not changed. Deterministic for the same photos, settings and seed on one machine.
    """
    tuned = copy.deepcopy(model).float().train()
    if settings.steps == 0:
        return tuned.eval()
    pairs = PairSettings(patch=settings.patch, ref_patch=settings.ref_patch, lr_degradation=settings.degradation,
                         near_prob=0.35, far_prob=0.35, self_prob=0.15, max_side=settings.max_side)
    dataset = WarpedPairs(photos, pairs, length=settings.steps * settings.batch_size, seed=settings.seed)
    params = _trainable(tuned, settings.part)
    keep = {id(p) for p in params}
    for p in tuned.parameters():
        p.requires_grad_(id(p) in keep)
    opt = torch.optim.Adam(params, lr=settings.lr)
    torch.manual_seed(settings.seed)
    device = next(tuned.parameters()).device
    loader = DataLoader(dataset, batch_size=settings.batch_size, shuffle=False, num_workers=0, drop_last=True)
    for step, batch in enumerate(loader, start=1):
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast(device, amp):
            sr = tuned(batch["lr"], batch["lr_up"], batch["ref"], batch["ref_down_up"])
        loss = reconstruction_loss(sr.float(), batch["hr"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if on_step is not None:
            on_step(step, float(loss.detach()), tuned)
    for p in tuned.parameters():
        p.requires_grad_(True)
    return tuned.eval()
