"""Correspondence learning for the texture extractor: a contrastive loss over lv3 positions, and matching accuracy.

TTSR's relevance is the inner product of L2-normalised 3×3 lv3 patches of LR↑ (queries) and Ref↓↑
(keys). Trained only through the reconstruction loss, from random weights, those features never learn
to find the same place in another photo. The idea of C2-Matching (Jiang et al., CVPR 2021) is to train
them contrastively on pairs with known geometry: for each query position the true reference position
must score above every other position (InfoNCE). Here the score is exactly TTSR's relevance, so what
the loss improves is what the search uses. Keys of the other samples in the batch are negatives too,
which makes the relevance comparable across photos (re-ranking and soft attention need that).
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ttsr_core.training.warp import correspondences

# Temperature of the contrastive softmax: relevance lies in [-1, 1]; 0.07 (MoCo, C2-Matching) lets
# the loss separate the true match from near misses without saturating on easy negatives.
TEMPERATURE = 0.07


def patch_descriptors(features: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) lv3 features → (N, h*w, C*9) L2-normalised 3×3 patches (zero padded), TTSR's relevance vectors."""
    return F.normalize(F.unfold(features, 3, padding=1), dim=1).transpose(1, 2)


def _neighbour_mask(target: torch.Tensor, width: int, height: int, total: int, offset: torch.Tensor) -> torch.Tensor:
    """(Q, total) True at the 8 key cells around each query's true cell (same sample): not negatives."""
    row, col = target // width, target % width
    mask = torch.zeros(target.shape[0], total, dtype=torch.bool, device=target.device)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == 0 and dx == 0:
                continue
            r, c = row + dy, col + dx
            ok = (r >= 0) & (r < height) & (c >= 0) & (c < width)
            idx = offset + (r.clamp(0, height - 1) * width + c.clamp(0, width - 1))
            mask[torch.nonzero(ok).squeeze(1), idx[ok]] = True
    return mask


def contrastive_loss(
    query_features: torch.Tensor,
    key_features: torch.Tensor,
    corr: torch.Tensor,
    *,
    queries_per_sample: int = 64,
    temperature: float = TEMPERATURE,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """InfoNCE over lv3 positions: each query's true reference cell against every key of the batch.

    query_features (N, C, h, w): lv3 of LR↑; key_features (N, C, H, W): lv3 of Ref↓↑; corr (N, h, w, 2)
    int64 reference (row, col) per query cell, -1 where the reference does not show it. Up to
    ``queries_per_sample`` valid cells per sample are drawn. The 8 cells around the true one are left
    out of the denominator: their 3×3 patches overlap the true patch, and matching accuracy counts
    them as right. Returns a scalar (0 with no valid query, still attached to the graph).
    """
    n, _, h, w = query_features.shape
    _, _, hk, wk = key_features.shape
    if corr.shape != (n, h, w, 2):
        raise ValueError(f"corr must be (N, h, w, 2) = {(n, h, w, 2)}, got {tuple(corr.shape)}")
    q = patch_descriptors(query_features)  # (N, h*w, D)
    k = patch_descriptors(key_features).reshape(n * hk * wk, -1)  # (N*H*W, D)
    picked, targets, offsets = [], [], []
    for i in range(n):
        valid = torch.nonzero(corr[i, ..., 0].reshape(-1) >= 0).squeeze(1)
        if valid.numel() == 0:
            continue
        if valid.numel() > queries_per_sample:
            perm = torch.randperm(valid.numel(), generator=generator, device=valid.device)[:queries_per_sample]
            valid = valid[perm]
        rc = corr[i].reshape(-1, 2)[valid]
        picked.append(q[i, valid])
        targets.append(rc[:, 0] * wk + rc[:, 1])
        offsets.append(torch.full_like(valid, i * hk * wk))
    if not picked:
        return query_features.sum() * 0.0
    qs = torch.cat(picked)  # (Q, D)
    local = torch.cat(targets)
    offset = torch.cat(offsets)
    logits = qs @ k.t() / temperature  # (Q, N*H*W)
    near = _neighbour_mask(local, wk, hk, logits.shape[1], offset)
    logits = logits.masked_fill(near, -math.inf)
    return F.cross_entropy(logits, offset + local)


def matching_accuracy(index: torch.Tensor | np.ndarray, truth: torch.Tensor | np.ndarray, key_width: int,
                      tolerance: int = 1) -> tuple[float, int]:
    """Share of query cells whose chosen key cell lies within ``tolerance`` cells (Chebyshev) of the truth.

    index (h*w,) flat hard-attention index into one reference's (H, W) lv3 grid; truth (h, w, 2) or
    (h*w, 2) reference (row, col), -1 where unknown. → (accuracy, number of cells with a truth).
    """
    idx = torch.as_tensor(index).reshape(-1).long()
    t = torch.as_tensor(truth).reshape(-1, 2).long()
    if idx.numel() != t.shape[0]:
        raise ValueError(f"index has {idx.numel()} queries but truth has {t.shape[0]}")
    ok = t[:, 0] >= 0
    count = int(ok.sum())
    if count == 0:
        return float("nan"), 0
    row, col = idx // key_width, idx % key_width
    dist = torch.maximum((row - t[:, 0]).abs(), (col - t[:, 1]).abs())
    return float((dist[ok] <= tolerance).float().mean()), count


def read_opencv_matrix(path: str | Path) -> np.ndarray:
    """A 3×3 matrix from an OpenCV FileStorage XML file (the Oxford sequences' ``H1to3p.xml``)."""
    text = Path(path).read_text()
    found = re.search(r"<rows>\s*(\d+)\s*</rows>\s*<cols>\s*(\d+)\s*</cols>.*?<data>(.*?)</data>", text, re.S)
    if not found:
        raise ValueError(f"no opencv-matrix in {path}")
    rows, cols = int(found.group(1)), int(found.group(2))
    values = np.array([float(v) for v in found.group(3).split()])
    if values.size != rows * cols:
        raise ValueError(f"{path}: {values.size} values for a {rows}×{cols} matrix")
    return values.reshape(rows, cols)


def homography_truth(target_to_ref: np.ndarray, target_hw: tuple[int, int], ref_hw: tuple[int, int],
                     cell: int = 4) -> np.ndarray:
    """Truth for a full-size target and reference related by a pixel-index homography (Oxford convention).

    The Oxford matrices map pixel indices (centre of pixel c at c); ours use continuous coordinates
    (centre at c + 0.5), hence the half-pixel shifts. → (H/4, W/4, 2) as :func:`ttsr_core.training.warp.correspondences`.
    """
    shift = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]])
    back = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    h = back @ target_to_ref @ shift
    return correspondences(h, (target_hw[0] // cell, target_hw[1] // cell), (ref_hw[0] // cell, ref_hw[1] // cell), cell)
