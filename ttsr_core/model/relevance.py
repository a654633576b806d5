"""Relevance between texture patches: normalised 3×3 patches, exact hard-attention search, soft attention.

Both search modes (exact here, coarse-to-fine in ``fast_search``) score a query patch against a key
patch by the cosine of their L2-normalised 3×3 lv3 neighbourhoods (the paper's r_ij, §3.2), and both
index keys the same way: one global index into the union of the references' lv3 positions, in list
order then row-major (:func:`split_index` decodes it).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ttsr_core.accel.gemm import matmul_nt
from ttsr_core.config import SearchConfig
from ttsr_core.device import torch_dtype

NORM_EPS = 1e-12  # F.normalize's default: x / max(||x||, eps)


def unfold_rows(padded: torch.Tensor, r0: int, r1: int) -> torch.Tensor:
    """3×3 patches of rows [r0, r1) of a 1-padded map (C, H+2, W+2) → (C*9, (r1-r0)*W)."""
    return F.unfold(padded[None, :, r0 : r1 + 2, :], kernel_size=3)[0]


def normalised_patches(
    padded: torch.Tensor, r0: int, r1: int, dtype: torch.dtype, contiguous: bool = False
) -> torch.Tensor:
    """L2-normalised 3×3 patches of rows [r0, r1) as rows: (positions, C*9).

    ``contiguous``: written row-major in the same pass as the division (the same values), for a
    product that needs contiguous rows; otherwise a transposed view, as MKL's product has always read.
    """
    patches = unfold_rows(padded, r0, r1)  # (C*9, positions)
    if not contiguous:
        return F.normalize(patches, dim=0).t().to(dtype)
    # F.normalize's own arithmetic (x / max(‖x‖, eps)), its result written transposed.
    norm = patches.norm(2, 0, keepdim=True).clamp_min(NORM_EPS)
    out = torch.empty(patches.shape[1], patches.shape[0], dtype=patches.dtype, device=patches.device)
    return torch.div(patches.t(), norm.t(), out=out).to(dtype)


def _band_rows(positions: int, width: int) -> int:
    return max(1, min(math.ceil(positions / max(width, 1)), 1 << 30))


def _block_max(qn: torch.Tensor, kn: torch.Tensor, onednn: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Best key of a block for each query: qn (qc, D), kn (kc, D) → (value, index) (qc,)."""
    if onednn:
        return matmul_nt(qn, kn).max(dim=1)  # relevance block (qc, kc)
    return (kn @ qn.t()).max(dim=0)  # (kc, qc): torch's product, the order the fast search has always used


def exact_search(
    q: torch.Tensor, keys: list[torch.Tensor], config: SearchConfig, onednn: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard attention by exhaustive search, never materialising the full relevance matrix.

    q (C, h, w) query lv3 features; keys: list of (C, Hk, Wk) → (index (h*w,) int64 into the
    union of key positions, in list order then row-major; relevance (h*w,) float32, detached).
    Queries and keys are processed in row bands under ``config.memory_budget_mb`` with a running
    max/argmax; the first position wins ties, as a single ``max`` over the whole matrix does.
    ``onednn``: products through :func:`ttsr_core.accel.gemm.matmul_nt` (faster on CPU; another rounding,
    which can flip a match between two patches whose relevance ties to ~1e-7).
    """
    c, h, w = q.shape
    d = c * 9
    dtype = torch_dtype(config.matmul_dtype)
    elt = torch.finfo(dtype).bits // 8
    budget = config.memory_budget_mb * 2**20 / elt  # in elements
    q = q.detach()
    qpad = F.pad(q, (1, 1, 1, 1))
    kpads = [F.pad(k.detach(), (1, 1, 1, 1)) for k in keys]
    total_keys = sum(k.shape[1] * k.shape[2] for k in keys)

    # Cache all normalised keys when they take at most half the budget: they are reused by every
    # query band, so unfolding them once saves (query bands − 1) unfolds.
    cache_keys = total_keys * d <= budget / 2
    if cache_keys:
        key_mat = torch.cat([normalised_patches(kp, 0, kp.shape[1] - 2, dtype, onednn) for kp in kpads])  # (K, D)
        q_pos = max(1, int((budget - total_keys * d) / (d + total_keys + 2)))
        key_rows = None
    else:
        key_mat = None
        # Equal square-ish blocks: q_pos*D + k_pos*D + q_pos*k_pos ≤ budget.
        side = max(1, int(-d + math.sqrt(d * d + budget)))
        q_pos = side
        key_rows = [_band_rows(side, k.shape[2]) for k in keys]
    q_rows = _band_rows(q_pos, w)

    best_val = torch.full((h * w,), -math.inf, dtype=torch.float32, device=q.device)
    best_idx = torch.zeros(h * w, dtype=torch.long, device=q.device)
    for y0 in range(0, h, q_rows):
        y1 = min(h, y0 + q_rows)
        qn = normalised_patches(qpad, y0, y1, dtype, onednn)  # (qc, D)
        sl = slice(y0 * w, y1 * w)
        if key_mat is not None:
            val, arg = _block_max(qn, key_mat, onednn)
            best_val[sl], best_idx[sl] = val.float(), arg
            continue
        bv, bi = best_val[sl], best_idx[sl]
        offset = 0
        for kp, rows in zip(kpads, key_rows):
            hk, wk = kp.shape[1] - 2, kp.shape[2] - 2
            for r0 in range(0, hk, rows):
                r1 = min(hk, r0 + rows)
                kn = normalised_patches(kp, r0, r1, dtype, onednn)  # (kc, D)
                val, arg = _block_max(qn, kn, onednn)
                val = val.float()
                better = val > bv  # strict: the first position wins ties, as a single max does
                bv = torch.where(better, val, bv)
                bi = torch.where(better, arg + offset + r0 * wk, bi)
            offset += hk * wk
        best_val[sl], best_idx[sl] = bv, bi
    return best_idx, best_val


def relevance_at(q: torch.Tensor, keys: list[torch.Tensor], index: torch.Tensor) -> torch.Tensor:
    """Relevance between each query patch and its chosen key patch, differentiable in q and keys.

    q (C, h, w); keys: list of (C, Hk, Wk); index (h*w,) into the union → (h*w,). This is the soft
    attention S of the paper: the maximum found by the search, recomputed with autograd so that
    gradients reach the LTE exactly as through the authors' ``torch.max``.
    """
    c, h, w = q.shape
    qpad = F.pad(q, (1, 1, 1, 1))
    kpads = [F.pad(k, (1, 1, 1, 1)) for k in keys]
    flat = torch.cat([kp.reshape(c, -1) for kp in kpads], dim=1)  # (C, Σ (Hk+2)(Wk+2))
    ky, kx, base, wpad = _key_coords(keys, index)
    dot = q.new_zeros(h * w)
    qsq = q.new_zeros(h * w)
    ksq = q.new_zeros(h * w)
    for dy in range(3):
        for dx in range(3):
            qs = qpad[:, dy : dy + h, dx : dx + w].reshape(c, -1)  # (C, h*w)
            ks = flat[:, base + (ky + dy) * wpad + (kx + dx)]  # (C, h*w)
            dot = dot + (qs * ks).sum(0)
            qsq = qsq + (qs * qs).sum(0)
            ksq = ksq + (ks * ks).sum(0)
    return dot / (qsq.sqrt().clamp_min(NORM_EPS) * ksq.sqrt().clamp_min(NORM_EPS))


def split_index(index: torch.Tensor, shapes: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Global index into the union of (H, W) grids (in list order, row-major) → (grid number, row, col)."""
    sizes = torch.tensor([h * w for h, w in shapes], device=index.device)
    ends = torch.cumsum(sizes, 0)
    which = torch.searchsorted(ends, index, right=True)
    local = index - (ends - sizes)[which]
    widths = torch.tensor([w for _, w in shapes], device=index.device)[which]
    return which, local // widths, local % widths


def _key_coords(
    keys: list[torch.Tensor], index: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Global key index → (row, col, flat offset of its padded map, padded width) per query."""
    shapes = [(k.shape[1], k.shape[2]) for k in keys]
    which, row, col = split_index(index, shapes)
    pad_sizes = torch.tensor([(h + 2) * (w + 2) for h, w in shapes], device=index.device)
    pad_starts = torch.cumsum(pad_sizes, 0) - pad_sizes
    widths = torch.tensor([w for _, w in shapes], device=index.device)
    return row, col, pad_starts[which], widths[which] + 2
