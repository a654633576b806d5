"""Matching accuracy of a model's texture extractor: on warped held-out photos and on graf1 → graf3.

The question is the one TTSR's hard attention answers: for each lv3 cell of LR↑, which cell of Ref↓↑
is most relevant? Here the answer is checked against geometry known in advance, with the exact search
the model itself runs (``ttsr_core.model.relevance.exact_search``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from ttsr_core.config import SCALE, SearchConfig
from ttsr_core.model.net import TTSR
from ttsr_core.model.relevance import exact_search
from ttsr_core.training.correspondence import homography_truth, matching_accuracy, read_opencv_matrix
from ttsr_core.training.data import PairSettings, WarpedPairs, load_photo, make_sample
from ttsr_core.training.degradations import lr_pipeline


@dataclass(frozen=True)
class MatchingScore:
    accuracy: float  # share of cells with a known truth matched within one lv3 cell
    cells: int  # how many cells had a truth

    def as_dict(self) -> dict[str, float | int]:
        return {"accuracy": self.accuracy, "cells": self.cells}


@torch.no_grad()
def match(model: TTSR, lr_up: torch.Tensor, ref_down_up: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """Hard attention of one LR↑ (3, H, W) against one Ref↓↑ (3, H', W') → (index (H/4·W/4,), key grid)."""
    q = model.LTE(lr_up[None])[2][0].float()
    k = model.LTE(ref_down_up[None])[2][0].float()
    index, _ = exact_search(q, [k], SearchConfig())
    return index, (k.shape[1], k.shape[2])


def score(model: TTSR, samples: Iterable[dict[str, torch.Tensor]]) -> MatchingScore:
    """Cell-weighted matching accuracy over samples that carry ``corr`` (e.g. :class:`WarpedPairs`)."""
    hits, cells = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        for s in samples:
            index, (_, wk) = match(model, s["lr_up"], s["ref_down_up"])
            acc, n = matching_accuracy(index, s["corr"], wk)
            if n:
                hits += acc * n
                cells += n
    finally:
        model.train(was_training)
    return MatchingScore(hits / cells if cells else float("nan"), cells)


def warped_samples(photos: Sequence[np.ndarray], count: int = 24, seed: int = 2024, lr_degradation: str = "bicubic",
                   patch: int = 192, ref_patch: int = 256) -> list[dict[str, torch.Tensor]]:
    """Fixed warped views of held-out photos (near and far, none from another photo), larger than training crops."""
    settings = PairSettings(patch=patch, ref_patch=ref_patch, near_prob=0.5, far_prob=0.5, lr_degradation=lr_degradation)
    data = WarpedPairs(photos, settings, length=count, seed=seed)
    return [data[i] for i in range(count)]


def graf_sample(folder: str | Path, max_side: int = 0) -> dict[str, torch.Tensor]:
    """graf1 (target, LR = bicubic ↓4) against graf3 (reference) with the truth from ``H1to3p.xml``."""
    folder = Path(folder)
    target = load_photo(folder / "graf1.png", max_side or 10**6)
    ref = load_photo(folder / "graf3.png", max_side or 10**6)
    h = read_opencv_matrix(folder / "H1to3p.xml")
    hr = target[: target.shape[0] // SCALE * SCALE, : target.shape[1] // SCALE * SCALE]
    ref = ref[: ref.shape[0] // SCALE * SCALE, : ref.shape[1] // SCALE * SCALE]
    lr = lr_pipeline("bicubic")(hr, np.random.default_rng(0))
    sample = make_sample(np.ascontiguousarray(hr), np.ascontiguousarray(ref), lr)
    sample["corr"] = torch.from_numpy(homography_truth(h, hr.shape[:2], ref.shape[:2]))
    return sample
