"""Held-out sets for the training loop's validation and what it measures on them.

Fixed, seeded samples so that every validation of a run (and of a resumed run) sees the same crops:
same-photo views of held-out photos (each with a ground-truth correspondence) and held-out real
photo pairs with their right and with a wrong reference.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ttsr_core.model.net import TTSR
from ttsr_core.training.data import PairSettings, WarpedPairs, load_photo, make_sample
from ttsr_core.training.degradations import lr_pipeline
from ttsr_core.training.matching import score as matching_score
from ttsr_core.training.photo_pairs import PhotoPair, pair_sample


def psnr_batch(sr: torch.Tensor, hr: torch.Tensor) -> float:
    """Mean RGB PSNR of a batch in [-1, 1] (a cheap validation signal, not the paper protocol)."""
    mse = ((sr.clamp(-1, 1) - hr) ** 2).mean(dim=(1, 2, 3)) / 4.0  # [-1,1] → [0,1] scale
    return float((10 * torch.log10(1.0 / mse.clamp_min(1e-10))).mean())


def _gain(model: TTSR, batches: list[dict[str, torch.Tensor]], device: torch.device) -> tuple[float, float]:
    """(mean PSNR of the model's output, mean PSNR of bicubic LR↑) over batches."""
    sr_psnr, bic_psnr = [], []
    for b in batches:
        b = {k: v.to(device) for k, v in b.items()}
        sr = model(b["lr"], b["lr_up"], b["ref"], b["ref_down_up"])
        sr_psnr.append(psnr_batch(sr, b["hr"]))
        bic_psnr.append(psnr_batch(b["lr_up"], b["hr"]))
    return float(np.mean(sr_psnr)), float(np.mean(bic_psnr))


@torch.no_grad()
def validate(model: TTSR, batches: list[dict[str, torch.Tensor]], device: torch.device, stage: str = "sr",
             pair_sets: dict[str, list[dict[str, torch.Tensor]]] | None = None) -> dict[str, float]:
    """PSNR gain over bicubic (sr stage) and matching accuracy (batches that carry ``corr``) on held-out pairs.

    ``pair_sets`` (sr stage): more named sets of batches, e.g. held-out photo pairs with their right and
    with a wrong reference; each adds ``<name>_gain_db``.
    """
    model.eval()
    out: dict[str, float] = {}
    if stage == "sr":
        sr_psnr, bic_psnr = _gain(model, batches, device)
        out.update(psnr=sr_psnr, bicubic_psnr=bic_psnr, gain_db=sr_psnr - bic_psnr)
        for name, extra in (pair_sets or {}).items():
            sr_psnr, bic_psnr = _gain(model, extra, device)
            out[f"{name}_gain_db"] = sr_psnr - bic_psnr
    if batches and "corr" in batches[0]:
        samples = [{k: v[i].to(device) for k, v in b.items()} for b in batches for i in range(len(b["lr"]))]
        out["matching_accuracy"] = matching_score(model, samples).accuracy
    model.train()
    return out


def _stack(samples: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    return [{k: torch.stack([s[k] for s in samples[i : i + 8]]) for k in samples[0]} for i in range(0, len(samples), 8)]


def holdout_batches(folder: Path, held: list[str], pair: PairSettings, count: int = 32) -> list[dict[str, torch.Tensor]]:
    """Fixed held-out samples (seed 12345) in batches of 8; same-photo views only, so each has a truth."""
    photos = [load_photo(folder / n, pair.max_side) for n in held]
    settings = PairSettings(**{**asdict(pair), "near_prob": 0.5, "far_prob": 0.5, "self_prob": 0.0, "pair_prob": 0.0})
    val = WarpedPairs(photos, settings, length=count, seed=12345)
    return _stack([val[i] for i in range(count)])


def pair_batches(pairs: list[PhotoPair], pair: PairSettings, count: int = 32) -> dict[str, list[dict[str, torch.Tensor]]]:
    """Held-out photo pairs (seed 54321): each target crop with its pair's reference ("pair_right") and
    with the reference of the sample half the list away ("pair_wrong"); LR through the training pipeline."""
    rng = np.random.default_rng(54321)
    cutter = WarpedPairs([p.target for p in pairs], PairSettings(**{**asdict(pair), "near_prob": 0.0, "far_prob": 0.0,
                                                                     "self_prob": 0.0, "pair_prob": 0.0}), length=1)
    chain = lr_pipeline(pair.lr_degradation)
    cut = []
    while len(cut) < count:
        sample = pair_sample(pairs[len(cut) % len(pairs)], rng, cutter._target, pair.patch, pair.ref_patch)
        if sample is not None:
            cut.append((sample[0], sample[1], chain(sample[0], rng)))
    right = [make_sample(hr, ref, lr) for hr, ref, lr in cut]
    wrong = [make_sample(hr, cut[(i + count // 2) % count][1], lr) for i, (hr, _, lr) in enumerate(cut)]
    return {"pair_right": _stack(right), "pair_wrong": _stack(wrong)}
