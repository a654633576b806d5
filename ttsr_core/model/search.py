"""Hard/soft attention and texture transfer in bounded memory, on top of the relevance search.

The paper's semantics (and the authors' code) unfold every 3×3 lv3 patch of LR↑ (queries) and
Ref↓↑ (keys), build the full (keys × queries) relevance matrix, and unfold the reference's lv1/lv2
features into 12×12 / 6×6 patches before gathering and folding. For a 600×600 input that is tens of
GB. Here the search runs in bands (``relevance``) or coarse-to-fine (``fast_search``), and texture
is gathered pixel by pixel straight from the reference features: the fold of gathered patches is
rewritten as a sum over the 3×3 neighbouring queries of displaced reference pixels, which is exactly
what the unfold→gather→fold pipeline computes.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ttsr_core.config import SearchConfig, SearchMode
from ttsr_core.device import torch_dtype
from ttsr_core.model.fast_search import coarse_to_fine_relevance
from ttsr_core.model.relevance import exact_search, relevance_at, split_index


@dataclass
class TextureTransfer:
    """Hard/soft attention and transferred textures for a batch."""

    soft_attention: torch.Tensor  # (N, 1, h, w)
    hard_attention: torch.Tensor  # (N, h*w) int64, index into the union of all references' lv3 positions
    texture_lv3: torch.Tensor  # (N, c3, h, w)
    texture_lv2: torch.Tensor  # (N, c2, 2h, 2w)
    texture_lv1: torch.Tensor  # (N, c1, 4h, 4w)


def texture_table(values: list[torch.Tensor], keys_shape: list[tuple[int, int]], scale: int) -> torch.Tensor:
    """Reference features as rows of aligned s×s blocks, one per lv3 position: (Σ Hk*Wk + 1, C*s*s).

    values: per reference (C, s*Hk, s*Wk); rows follow the global key index, and the last row is
    zero (what the authors' zero padding contributes). Built once per reference and level, it is
    shared by every tile of a target.
    """
    c = values[0].shape[0]
    block = c * scale * scale
    rows = [v.reshape(c, hk, scale, wk, scale).permute(1, 3, 0, 2, 4).reshape(hk * wk, block)
            for v, (hk, wk) in zip(values, keys_shape)]
    return torch.cat(rows + [values[0].new_zeros(1, block)])


def _gather_sum(table: torch.Tensor, srcs: torch.Tensor) -> torch.Tensor:
    """Σ_k table[srcs[:, k]], added in column order: srcs (n, 9) → (n, block).

    Without autograd, one ``embedding_bag`` gathers and adds the rows in a single pass (same order,
    so the same sums); 9 index_selects and adds wrote and re-read 9 (n, block) tensors.
    """
    if not (torch.is_grad_enabled() and table.requires_grad) and table.dtype == torch.float32:
        return F.embedding_bag(srcs, table, mode="sum")
    acc = table.index_select(0, srcs[:, 0])
    for k in range(1, srcs.shape[1]):
        acc = acc.add_(table.index_select(0, srcs[:, k]))
    return acc


def block_sources(index: torch.Tensor, keys_shape: list[tuple[int, int]], h: int, w: int) -> torch.Tensor:
    """For each query cell, the :func:`texture_table` rows its 3×3 neighbours' patches put there: (h*w, 9).

    The s×s output block of query cell (t, u) is covered by the patches of its 3×3 neighbours
    q = (t+oy, u+ox); the patch of q, matched to key (i, j), puts there the reference's s×s block
    at lv3 position (i−oy, j−ox) — an aligned block, because every displacement is a multiple of s.
    Outside the reference or the query grid the row is the table's last (zero) one, as the authors'
    zero padding. The rows do not depend on s, so one computation serves all three scales.
    """
    dev = index.device
    zero_row = sum(hk * wk for hk, wk in keys_shape)
    which, ki, kj = split_index(index, keys_shape)  # reference, row, col of each query's match
    sizes = torch.tensor([hk * wk for hk, wk in keys_shape], device=dev)
    start = (torch.cumsum(sizes, 0) - sizes)[which].view(h, w)  # first table row of that reference
    kh = torch.tensor([hk for hk, _ in keys_shape], device=dev)[which].view(h, w)
    kw = torch.tensor([wk for _, wk in keys_shape], device=dev)[which].view(h, w)
    ki, kj = ki.view(h, w), kj.view(h, w)
    t = torch.arange(h, device=dev)[:, None]
    u = torch.arange(w, device=dev)[None, :]
    srcs = []
    for oy in (-1, 0, 1):
        for ox in (-1, 0, 1):
            qy, qx = t + oy, u + ox  # the neighbour query whose patch covers cell (t, u)
            inside = (qy >= 0) & (qy < h) & (qx >= 0) & (qx < w)
            sel = (qy.clamp(0, h - 1), qx.clamp(0, w - 1))
            sy, sx = ki[sel] - oy, kj[sel] - ox  # the reference block that lands on (t, u)
            ok = inside & (sy >= 0) & (sy < kh[sel]) & (sx >= 0) & (sx < kw[sel])
            srcs.append(torch.where(ok, start[sel] + sy * kw[sel] + sx, zero_row).reshape(-1))
    return torch.stack(srcs, dim=1)


def transfer_texture(
    table: torch.Tensor, keys_shape: list[tuple[int, int]], index: torch.Tensor, h: int, w: int, scale: int,
    budget_mb: float = 256.0, sources: torch.Tensor | None = None,
) -> torch.Tensor:
    """Texture at one scale, gathered directly from the reference features.

    table: :func:`texture_table` of the references' features at scale s ∈ {1, 2, 4} relative to lv3;
    keys_shape: per reference (Hk, Wk) lv3 grid; index (h*w,) global hard attention → (C, s*h, s*w).
    ``sources``: :func:`block_sources` of ``index`` when already computed (the scales share it).

    Equivalent to the authors' unfold (kernel 3s, stride s, padding s) → gather → fold → /9: the
    fold of the gathered patches is a sum of 9 gathers of whole blocks (:func:`block_sources`), done
    at query-grid resolution.
    """
    block = table.shape[1]
    c = block // (scale * scale)
    if sources is None:
        sources = block_sources(index, keys_shape, h, w)
    out = table.new_empty(h * w, block)
    band = max(1, int(budget_mb * 2**20 / (4 * w * (block + 16))))
    for t0 in range(0, h, band):
        t1 = min(h, t0 + band)
        out[t0 * w : t1 * w] = _gather_sum(table, sources[t0 * w : t1 * w])
    # (h*w, C*s*s) → (C, s*h, s*w); the authors divide by 9 everywhere, borders included.
    out = out.view(h, w, c, scale, scale).permute(2, 0, 3, 1, 4).reshape(c, h * scale, w * scale)
    return out / 9.0


def search_indices(q: torch.Tensor, keys: list[torch.Tensor], config: SearchConfig) -> torch.Tensor:
    """Hard attention index for one sample with the configured search mode."""
    return search_with_relevance(q, keys, config)[0]


def search_with_relevance(
    q: torch.Tensor, keys: list[torch.Tensor], config: SearchConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard attention index and the relevance of each match (the search's own score), both detached."""
    if config.mode is SearchMode.EXACT:
        return exact_search(q, keys, config)
    return coarse_to_fine_relevance(q, keys, config)


def hard_and_soft_attention(
    q: torch.Tensor, keys: list[torch.Tensor], config: SearchConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard attention (index of each query's best key) and soft attention (that relevance) → (h*w,) each.

    Training needs the soft attention with autograd (:func:`relevance_at`); inference takes the
    search's own float32 score, which saves re-gathering every matched key patch (~0.45 s per
    188×248 tile on one thread) and differs from it by rounding (~1e-7).
    """
    with torch.no_grad():
        index, rel = search_with_relevance(q, keys, config)
    if torch.is_grad_enabled() or torch_dtype(config.matmul_dtype) != torch.float32:
        rel = relevance_at(q, keys, index)
    return index, rel


def search_and_transfer(
    q_lv3: torch.Tensor,
    k_lv3: list[torch.Tensor],
    v_lv1: list[torch.Tensor],
    v_lv2: list[torch.Tensor],
    v_lv3: list[torch.Tensor],
    config: SearchConfig,
    tables: dict[tuple[int, int], torch.Tensor] | None = None,
) -> TextureTransfer:
    """Batch search + transfer. q_lv3 (N,C,h,w); per reference k/v lists of (N,·,·,·) tensors.

    ``tables``: a dict that keeps each sample's :func:`texture_table` per scale, keyed (sample, scale),
    so that the tiles of one target, searched one after another against the same references, build
    them once; None builds each when needed and drops it after use (the least memory).
    """
    n, _, h, w = q_lv3.shape
    if not k_lv3:
        raise ValueError("at least one reference is needed")
    for k, v1 in zip(k_lv3, v_lv1):
        if v1.shape[-2:] != (4 * k.shape[-2], 4 * k.shape[-1]):
            raise ValueError(f"reference lv1 {tuple(v1.shape[-2:])} is not 4× its lv3 grid {tuple(k.shape[-2:])}")
    soft, hard, t3, t2, t1 = [], [], [], [], []
    for i in range(n):
        keys = [k[i] for k in k_lv3]
        idx, rel = hard_and_soft_attention(q_lv3[i], keys, config)
        soft.append(rel.to(q_lv3.dtype).view(1, h, w))
        hard.append(idx)
        shapes = [(k.shape[-2], k.shape[-1]) for k in keys]
        sources = block_sources(idx, shapes, h, w)
        for out, values, scale in ((t3, v_lv3, 1), (t2, v_lv2, 2), (t1, v_lv1, 4)):
            table = None if tables is None else tables.get((i, scale))
            if table is None:
                table = texture_table([v[i] for v in values], shapes, scale)
                if tables is not None:
                    tables[(i, scale)] = table
            out.append(transfer_texture(table, shapes, idx, h, w, scale, config.memory_budget_mb, sources))
    return TextureTransfer(torch.stack(soft), torch.stack(hard), torch.stack(t3), torch.stack(t2), torch.stack(t1))


def full_matrix_search_transfer(
    q_lv3: torch.Tensor, k_lv3: torch.Tensor, v_lv1: torch.Tensor, v_lv2: torch.Tensor, v_lv3: torch.Tensor
) -> TextureTransfer:
    """The straightforward full-matrix implementation (the authors' semantics), one reference.

    Memory grows with (key positions × query positions) and with the unfolded 12×12 lv1 patches;
    kept as the oracle for tests and the baseline for ``benchmarks/``, never used by the pipeline.
    """
    n, _, h, w = q_lv3.shape
    q = F.normalize(F.unfold(q_lv3, 3, padding=1), dim=1)  # (N, C*9, h*w)
    k = F.normalize(F.unfold(k_lv3, 3, padding=1), dim=1).permute(0, 2, 1)  # (N, Hk*Wk, C*9)
    rel = torch.bmm(k, q)  # (N, Hk*Wk, h*w)
    s, idx = rel.max(dim=1)  # (N, h*w)
    del rel

    def take(v: torch.Tensor, kernel: int, stride: int, pad: int, size: tuple[int, int]) -> torch.Tensor:
        unf = F.unfold(v, kernel, padding=pad, stride=stride)  # (N, C*k*k, Hk*Wk)
        picked = torch.gather(unf, 2, idx[:, None, :].expand(-1, unf.shape[1], -1))  # (N, C*k*k, h*w)
        return F.fold(picked, size, kernel, padding=pad, stride=stride) / 9.0

    t3 = take(v_lv3, 3, 1, 1, (h, w))
    t2 = take(v_lv2, 6, 2, 2, (2 * h, 2 * w))
    t1 = take(v_lv1, 12, 4, 4, (4 * h, 4 * w))
    return TextureTransfer(s.view(n, 1, h, w), idx, t3, t2, t1)
