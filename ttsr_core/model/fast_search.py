"""Coarse-to-fine hard-attention search (MASA-SR style): exact on a pooled grid, dense in local windows."""
from __future__ import annotations

import logging
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ttsr_core.config import SearchConfig
from ttsr_core.device import torch_dtype
from ttsr_core.model.relevance import NORM_EPS, exact_search, split_index

logger = logging.getLogger(__name__)


def _channels_last_padded(x: torch.Tensor, pad_bottom: int = 1, pad_right: int = 1) -> torch.Tensor:
    """(C, H, W) → zero-padded (1 top/left, given bottom/right) and flattened channel-last: (positions, C)."""
    c = x.shape[0]
    return F.pad(x, (1, pad_right, 1, pad_bottom)).permute(1, 2, 0).reshape(-1, c)


def refinement_jobs(
    coarse_index: torch.Tensor,
    coarse_hw: tuple[int, int],
    coarse_key_shapes: list[tuple[int, int]],
    key_shapes: list[tuple[int, int]],
    config: SearchConfig,
) -> torch.Tensor:
    """Distinct (query cell, reference, window row, window col) refinement windows, sorted by cell.

    Every coarse query cell searches a (f + 2r)² key window around the up-projection of its own coarse
    match and, shifted by the cell offset, of its neighbours' matches: a neighbour that matched
    displacement d proposes that this cell also moved by d. Windows are clamped inside their
    reference so that a match near an edge still gets a full window. → (jobs, 4) int64.
    """
    f, r, n = config.coarse_factor, config.refine_radius, config.coarse_neighbours
    side = f + 2 * r
    hc, wc = coarse_hw
    dev = coarse_index.device
    ref, cy, cx = (t.view(hc, wc) for t in split_index(coarse_index, coarse_key_shapes))
    kh = torch.tensor([h for h, _ in key_shapes], device=dev)
    kw = torch.tensor([w for _, w in key_shapes], device=dev)
    ii = torch.arange(hc, device=dev)[:, None].expand(hc, wc)
    jj = torch.arange(wc, device=dev)[None, :].expand(hc, wc)
    cell = ii * wc + jj
    codes = []
    hmax, wmax = int(kh.max()), int(kw.max())
    for di in range(-n, n + 1):
        for dj in range(-n, n + 1):
            ni, nj = (ii + di).clamp(0, hc - 1), (jj + dj).clamp(0, wc - 1)
            rr = ref[ni, nj]
            py = cy[ni, nj] - (ni - ii)  # the neighbour's displacement applied to this cell
            px = cx[ni, nj] - (nj - jj)
            y0 = torch.minimum((py * f - r).clamp_min(0), (kh[rr] - side).clamp_min(0))
            x0 = torch.minimum((px * f - r).clamp_min(0), (kw[rr] - side).clamp_min(0))
            codes.append(((cell * len(key_shapes) + rr) * hmax + y0) * wmax + x0)
    code = torch.unique(torch.stack(codes).reshape(-1))  # sorted, so jobs come grouped by cell
    x0 = code % wmax
    y0 = (code // wmax) % hmax
    rr = (code // (wmax * hmax)) % len(key_shapes)
    cell = code // (wmax * hmax * len(key_shapes))
    return torch.stack([cell, rr, y0, x0], dim=1)


def refinement_macs(jobs: int, channels: int, config: SearchConfig) -> int:
    """Multiply-adds of the dense refinement: per window a (f+2)² × (f+2r+2)² pixel Gram matrix over C."""
    f, side = config.coarse_factor, config.coarse_factor + 2 * config.refine_radius
    return jobs * (f + 2) ** 2 * (side + 2) ** 2 * channels


def coarse_to_fine_search(q: torch.Tensor, keys: list[torch.Tensor], config: SearchConfig) -> torch.Tensor:
    """Approximate hard attention: exact search on ``coarse_factor``-pooled grids, then local dense search.

    q (C, h, w) query lv3 features; keys: list of (C, Hk, Wk) → index (h*w,) int64 into the union of
    key positions (list order, then row-major), the same indexing as :func:`exact_search`. The score is
    the same normalised 3×3 patch relevance; among equal scores the smallest index wins, as in exact.
    """
    return coarse_to_fine_relevance(q, keys, config)[0]


def patch_norms(x: torch.Tensor) -> torch.Tensor:
    """L2 norm of every zero-padded 3×3 patch of x (C, h, w), clamped as F.normalize does → (h*w,)."""
    sq = F.avg_pool2d(x.pow(2).sum(0)[None, None], 3, stride=1, padding=1, count_include_pad=True)[0, 0] * 9
    return sq.sqrt().clamp_min(NORM_EPS).reshape(-1)


class _Windows(NamedTuple):
    """Index patterns of one refinement window, per reference, into the padded channel-last maps."""

    k_pattern: torch.Tensor  # (refs, ks²) offsets in the padded key map
    g_pattern: torch.Tensor  # (refs, side²) offsets in the key grid
    penalty: torch.Tensor  # (refs, side²): 0, or -inf for keys past a small reference's edge
    q_pattern: torch.Tensor  # (qs²,) offsets in the padded query map
    kw: torch.Tensor  # (refs,) key widths
    koff: torch.Tensor  # (refs,) first global index of each reference's keys
    poff: torch.Tensor  # (refs,) first row of each reference in the padded key map
    wq: int  # padded query map width


def _window_patterns(key_shapes: list[tuple[int, int]], wc: int, f: int, side: int, dev: torch.device) -> _Windows:
    ks, qs = side + 2, f + 2  # padded region sides: a 3×3 patch reaches one pixel past its position
    kh = torch.tensor([s[0] for s in key_shapes], device=dev)
    kw = torch.tensor([s[1] for s in key_shapes], device=dev)
    sizes = kh * kw
    psizes = (kh + 2) * (kw + 2)
    refs = range(len(key_shapes))
    # A window only sticks out of a reference smaller than the window, and then it starts at row/col
    # 0, so clamping the pattern to the last (zero) padded row/col and masking keys past the edge is
    # enough; larger references need neither.
    ar_k, ar_s = torch.arange(ks, device=dev), torch.arange(side, device=dev)
    k_pattern = torch.stack([
        (torch.minimum(ar_k, kh[i] + 1)[:, None] * (kw[i] + 2) + torch.minimum(ar_k, kw[i] + 1)[None, :]).reshape(-1)
        for i in refs
    ])
    ok = [((ar_s < kh[i])[:, None] & (ar_s < kw[i])[None, :]).reshape(-1) for i in refs]
    g_pattern = torch.stack([torch.where(ok[i], (ar_s[:, None] * kw[i] + ar_s[None, :]).reshape(-1), 0) for i in refs])
    penalty = torch.stack([torch.where(o, 0.0, -math.inf) for o in ok])  # edge keys never win
    ar_q = torch.arange(qs, device=dev)
    wq = wc * f + 2
    q_pattern = (ar_q[:, None] * wq + ar_q[None, :]).reshape(-1)
    return _Windows(k_pattern, g_pattern, penalty, q_pattern, kw, torch.cumsum(sizes, 0) - sizes,
                    torch.cumsum(psizes, 0) - psizes, wq)


def _refine(qflat: torch.Tensor, kflat: torch.Tensor, inv_norm: torch.Tensor, jobs: torch.Tensor, win: _Windows,
            wc: int, config: SearchConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Each window's best key for each of its cell's f² queries → (value (jobs, f²), global key index (jobs, f²))."""
    f, c = config.coarse_factor, qflat.shape[1]
    side = f + 2 * config.refine_radius
    qs, ks = f + 2, side + 2
    elt = qflat.element_size()
    per_job = (ks * ks + qs * qs) * c * elt + qs * qs * ks * ks * (elt + 4) + f * f * side * side * 12 + ks * ks * 16
    # Small chunks keep the Gram block and the 9 shifted sums in cache (measured ~4× faster at
    # 256 than at thousands of windows); the budget only ever lowers it.
    chunk = max(1, min(256, int(config.memory_budget_mb * 2**20 // per_job)))
    best_val = torch.empty(len(jobs), f * f, device=qflat.device)
    best_gidx = torch.empty(len(jobs), f * f, dtype=torch.long, device=qflat.device)
    for j0 in range(0, len(jobs), chunk):
        cell, rr, y0, x0 = jobs[j0 : j0 + chunk].unbind(1)
        n = cell.shape[0]
        q0 = (cell // wc) * f * win.wq + (cell % wc) * f  # top-left of the cell's padded query region
        qreg = qflat.index_select(0, (q0[:, None] + win.q_pattern).reshape(-1)).view(n, qs * qs, c)
        k0 = win.poff[rr] + y0 * (win.kw[rr] + 2) + x0
        kreg = kflat.index_select(0, (k0[:, None] + win.k_pattern[rr]).reshape(-1)).view(n, ks * ks, c)
        gram = torch.bmm(qreg, kreg.transpose(1, 2)).float()  # (n, qs², ks²) pixel-pair dot products
        del qreg, kreg
        # Patch relevance = sum over the 9 offsets (dy, dx) of the pixel pairs (q+(dy,dx), k+(dy,dx)).
        grid = gram.view(n, qs, qs, ks, ks)
        rel = grid[:, 0:f, 0:f, 0:side, 0:side].clone()  # (n, f, f, side, side)
        for dy in range(3):
            for dx in range(3):
                if dy or dx:
                    rel += grid[:, dy : dy + f, dx : dx + f, dy : dy + side, dx : dx + side]
        rel = rel.view(n, f * f, side * side)
        del gram, grid
        gidx = (win.koff[rr] + y0 * win.kw[rr] + x0)[:, None] + win.g_pattern[rr]  # (n, side²), increasing
        rel = torch.addcmul(win.penalty[rr][:, None, :], rel, inv_norm[gidx][:, None, :])
        val, arg = rel.max(dim=2)  # first maximum within a window = its smallest index
        best_val[j0 : j0 + n] = val
        best_gidx[j0 : j0 + n] = gidx.gather(1, arg)
    return best_val, best_gidx


def coarse_to_fine_relevance(
    q: torch.Tensor, keys: list[torch.Tensor], config: SearchConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`coarse_to_fine_search` and the relevance of each match → (index (h*w,), relevance (h*w,)).

    The relevance is the search's own best score divided by the query patch norm: the soft attention,
    without gathering the matched key patches again (it differs from :func:`relevance_at` by rounding).
    """
    if not keys:
        raise ValueError("at least one reference is needed")
    c, h, w = q.shape
    for k in keys:
        if k.dim() != 3 or k.shape[0] != c:
            raise ValueError(f"key features must be (C={c}, H, W), got {tuple(k.shape)}")
    f = config.coarse_factor
    if f == 1:
        # The coarse grid is the fine grid: the coarse search is already the exact global maximum.
        return exact_search(q, keys, config)
    q, keys = q.detach().float(), [k.detach().float() for k in keys]
    dev = q.device
    dtype = torch_dtype(config.matmul_dtype)

    # ceil_mode keeps partial border cells (averaged over their valid pixels), so every fine
    # position belongs to exactly one coarse cell.
    coarse_q = F.avg_pool2d(q[None], f, ceil_mode=True)[0]  # (C, hc, wc)
    coarse_k = [F.avg_pool2d(k[None], f, ceil_mode=True)[0] for k in keys]
    # torch's product, not oneDNN's: the default search then picks bit for bit the matches it always
    # did (oneDNN's rounding flipped 37 of 46624 near-tie matches of a 188×248 tile, for 13 % less time).
    coarse_index, _ = exact_search(coarse_q, coarse_k, config, onednn=False)
    hc, wc = coarse_q.shape[1:]
    key_shapes = [(k.shape[1], k.shape[2]) for k in keys]
    jobs = refinement_jobs(coarse_index, (hc, wc), [(k.shape[1], k.shape[2]) for k in coarse_k], key_shapes, config)
    side = f + 2 * config.refine_radius
    logger.debug("fast search: %d coarse cells, %d refinement windows of %d² keys", hc * wc, len(jobs), side)

    # Channel-last padded maps make a window one index_select of contiguous C-vectors.
    qflat = _channels_last_padded(q, 1 + hc * f - h, 1 + wc * f - w).to(dtype)  # ((hc f+2)(wc f+2), C)
    kflat = torch.cat([_channels_last_padded(k) for k in keys]).to(dtype)  # (Σ (Hk+2)(Wk+2), C)
    # Only the key norm changes a query's argmax (the query norm scales a whole row), so the Gram
    # sums are divided by it alone.
    inv_norm = torch.cat([patch_norms(k).reciprocal() for k in keys])  # (K,)
    win = _window_patterns(key_shapes, wc, f, side, dev)
    best_val, best_gidx = _refine(qflat, kflat, inv_norm, jobs, win, wc, config)

    # Per query, the best over its cell's windows; ties go to the smallest global index (as exact).
    cells = jobs[:, 0, None].expand(-1, f * f)
    top = torch.full((hc * wc, f * f), -math.inf, device=dev).scatter_reduce(0, cells, best_val, "amax")
    cand = torch.where(best_val == top[jobs[:, 0]], best_gidx, torch.iinfo(torch.long).max)
    index = torch.full((hc * wc, f * f), torch.iinfo(torch.long).max, device=dev).scatter_reduce(0, cells, cand, "amin")
    index = index.view(hc, wc, f, f).permute(0, 2, 1, 3).reshape(hc * f, wc * f)  # (hc f, wc f)
    score = top.view(hc, wc, f, f).permute(0, 2, 1, 3).reshape(hc * f, wc * f)[:h, :w].reshape(-1)
    return index[:h, :w].reshape(-1), score / patch_norms(q)
