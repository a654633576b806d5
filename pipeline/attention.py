"""The attention file of one enhancement: where its texture came from. Written by ``enhance``, read by the gallery.

One ``.npz`` per job key under ``<out>/.refsr/attention`` (content-addressed, never overwritten) with
``soft`` (h, w) float16: the relevance of the texture found per LR position; ``hard`` (h, w) int32:
the index into the union of the references' lv3 positions (references in rank order, row-major);
``ref_grids`` (n, 2) int32: each reference's lv3 grid (rows, cols) as the model saw it, so that an
index maps back to reference pixels (×4, on the reference fitted by ``enhance.fit_reference``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.images import PathLike
from ttsr_core.config import SCALE
from durable.files import atomic_write

ATTENTION_DIR = ".refsr/attention"  # hidden: album scans skip dot-dirs, so it never becomes input


@dataclass(frozen=True, eq=False)
class AttentionMaps:
    """What the model's forward pass says about where texture came from."""

    soft: np.ndarray  # (h, w) float32 on the LR grid: relevance of the chosen reference patch
    hard: np.ndarray | None = None  # (h, w) int64: index into the union of the references' lv3 positions
    # lv3 grid (rows, cols) of each reference as the model saw it, in rank order; None → derived from
    # the reference files (top-left crop to a multiple of 4, then /4, as ttsr_core prepares them).
    ref_grids: tuple[tuple[int, int], ...] | None = None

    def __post_init__(self) -> None:
        soft = np.asarray(self.soft)
        if soft.ndim != 2 or 0 in soft.shape or not np.issubdtype(soft.dtype, np.number):
            raise ValueError(
                f"soft attention must be a non-empty numeric (h, w) array, got {soft.shape} {soft.dtype}"
            )
        object.__setattr__(
            self, "soft", np.nan_to_num(soft.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        )
        if self.hard is not None:
            hard = np.asarray(self.hard)
            if hard.shape != soft.shape or not np.issubdtype(hard.dtype, np.integer):
                raise ValueError(
                    f"hard attention must be an integer array of shape {soft.shape}, "
                    f"got {hard.shape} {hard.dtype}"
                )
            object.__setattr__(self, "hard", hard.astype(np.int64))
        if self.ref_grids is not None:
            grids = tuple((int(r), int(c)) for r, c in self.ref_grids)
            if any(r <= 0 or c <= 0 for r, c in grids):
                raise ValueError(f"ref_grids must hold positive (rows, cols) pairs, got {self.ref_grids!r}")
            object.__setattr__(self, "ref_grids", grids)


def attention_path_for(out_dir: PathLike, key: str) -> Path:
    """Where the attention file of job `key` lives: content-addressed, so never overwritten."""
    return Path(out_dir) / ATTENTION_DIR / f"{key}.npz"


def save_attention(path: PathLike, maps: AttentionMaps) -> Path:
    """Write `maps` as the .npz described above, atomically; returns the path."""
    arrays: dict[str, np.ndarray] = {"soft": maps.soft.astype(np.float16)}
    if maps.hard is not None:
        arrays["hard"] = maps.hard.astype(np.int32)
    if maps.ref_grids:
        arrays["ref_grids"] = np.asarray(maps.ref_grids, dtype=np.int32).reshape(-1, 2)

    def write(tmp: Path) -> None:
        # A file object: given a name, numpy would append ".npz" to the temp file's.
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)

    return atomic_write(path, write)


def load_attention(path: PathLike) -> AttentionMaps:
    """Read a file written by :func:`save_attention`; OSError or ValueError when missing or unusable.

    Never unpickles: anything but an .npz archive of plain arrays is a ValueError.
    """
    path = Path(path)
    loaded = np.load(path, allow_pickle=False)
    if isinstance(loaded, np.ndarray):
        raise ValueError(f"{str(path)!r} is a bare array, not an attention archive (.npz with 'soft')")
    with loaded:  # a lazily reading archive
        data = {name: np.array(loaded[name]) for name in loaded.files}
    if "soft" not in data:
        raise ValueError(f"{str(path)!r} holds no 'soft' array (found {sorted(data)})")
    grids = data.get("ref_grids")
    ref_grids = None if grids is None else tuple((int(r), int(c)) for r, c in grids.reshape(-1, 2))
    return AttentionMaps(data["soft"], data.get("hard"), ref_grids)


def reference_point(
    maps: AttentionMaps, peak: tuple[int, int], ref_shapes: Sequence[tuple[int, int] | None]
) -> tuple[int, float, float, float] | str:
    """(reference number, row, col, scale) that the hard attention at LR position ``peak`` points to, or why not.

    ``ref_shapes``: each reference file's (height, width) in rank order, None when it is unreadable.
    Row and col are the centre of the matched lv3 cell in that file's pixels; scale = file pixels per
    model pixel (1 unless the model saw a resized reference).
    """
    if maps.hard is None:
        return "the run saved no hard attention, so the reference region is unknown"
    grids: list[tuple[int, int]] = []
    for k, shape in enumerate(ref_shapes):
        if maps.ref_grids is not None and k < len(maps.ref_grids):
            grids.append(maps.ref_grids[k])
        elif shape is not None:
            grids.append((shape[0] // SCALE, shape[1] // SCALE))
        else:
            return f"reference {k + 1} is unreadable, so positions after it cannot be located"
    index = int(maps.hard[peak])
    total = sum(rows * cols for rows, cols in grids)
    if not 0 <= index < total:
        return f"hard attention index {index} is outside the references' {total} positions"
    import torch  # only when a card has hard attention to locate: a gallery of failures never loads it

    from ttsr_core.model.relevance import split_index

    which, row, col = (int(t) for t in split_index(torch.tensor([index]), grids))
    shape = ref_shapes[which]
    if shape is None:
        return f"reference {which + 1} is unreadable"
    rows, cols = grids[which]
    # Exact when the model saw this file as it is; proportional when it saw a resized copy.
    scale = shape[0] / (rows * SCALE) if (rows, cols) != (shape[0] // SCALE, shape[1] // SCALE) else 1.0
    return which, (row * SCALE + SCALE / 2) * scale, (col * SCALE + SCALE / 2) * scale, scale
