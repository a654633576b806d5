"""Real photo pairs for training: two photographs of one scene, with their homography when one is known.

A warped view of a single photo (``ttsr_core.training.warp``) shows the target's own pixels; an album's
reference is another photograph: another moment, position, lens and light. Pairs come from a
``pairs.tsv`` (first two columns: target and reference file names, relative to the TSV). A
``homographies.tsv`` beside it (``scripts/align_pairs.py``: target, reference, then the 9 entries of the
3×3 homography mapping target pixels to reference pixels in the files' full resolution, row by row)
gives where the reference shows each target position, for cropping and for correspondence labels;
without one, the reference is cut at the same relative position.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from ttsr_core.config import SCALE
from ttsr_core.training.warp import apply_homography, correspondences

logger = logging.getLogger(__name__)

# A target crop: (photo, rng, scale) → (HR crop, top row, left column), as WarpedPairs._target.
TargetCut = Callable[[np.ndarray, np.random.Generator, float], tuple[np.ndarray, float, float]]


@dataclass(frozen=True)
class PhotoPair:
    """Two loaded photos of one scene; ``target_to_ref`` maps target to reference pixels, or is None."""

    name: str
    target: np.ndarray  # (H, W, 3) uint8
    reference: np.ndarray
    target_to_ref: np.ndarray | None

    def reversed(self) -> "PhotoPair":
        inv = None if self.target_to_ref is None else np.linalg.inv(self.target_to_ref)
        return PhotoPair(self.name + "^-1", self.reference, self.target, inv)


def _read_homographies(path: Path) -> dict[tuple[str, str], np.ndarray]:
    found: dict[tuple[str, str], np.ndarray] = {}
    if not path.is_file():
        return found
    for line in path.read_text().splitlines():
        cols = line.split("\t")
        if len(cols) < 11 or cols[0] in ("target", "") or cols[0].startswith("#"):
            continue
        try:
            found[(cols[0], cols[1])] = np.array([float(v) for v in cols[2:11]], dtype=np.float64).reshape(3, 3)
        except ValueError:
            raise ValueError(f"{path}: bad homography for {cols[0]} → {cols[1]}: {cols[2:11]}") from None
    return found


def _load(path: Path, max_side: int) -> tuple[np.ndarray, float]:
    """The photo (long side ≤ max_side, antialiased) and the factor from file pixels to loaded pixels."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        factor = min(1.0, max_side / max(im.size))
        if factor < 1:
            im = im.resize((max(1, round(im.width * factor)), max(1, round(im.height * factor))),
                           Image.Resampling.LANCZOS, reducing_gap=3.0)
        return np.asarray(im), factor


def read_photo_pairs(tsv: str | Path, max_side: int) -> list[PhotoPair]:
    """The pairs a ``pairs.tsv`` lists, loaded at most ``max_side`` px, with homographies where known."""
    tsv = Path(tsv)
    if not tsv.is_file():
        raise ValueError(f"pairs file not found: {tsv}")
    homographies = _read_homographies(tsv.parent / "homographies.tsv")
    pairs = []
    for line in tsv.read_text().splitlines():
        cols = line.split("\t")
        if len(cols) < 2 or not cols[0] or cols[0].startswith("#") or cols[0] in ("target", "file"):
            continue
        target, ft = _load(tsv.parent / cols[0], max_side)
        reference, fr = _load(tsv.parent / cols[1], max_side)
        h = homographies.get((cols[0], cols[1]))
        if h is not None:  # file pixels → loaded pixels on both sides
            h = np.diag([fr, fr, 1.0]) @ h @ np.diag([1 / ft, 1 / ft, 1.0])
        pairs.append(PhotoPair(f"{Path(cols[0]).stem}→{Path(cols[1]).stem}", target, reference, h))
    if not pairs:
        raise ValueError(f"no pairs in {tsv}")
    logger.info("%d photo pairs from %s (%d with a homography)", len(pairs), tsv,
                sum(p.target_to_ref is not None for p in pairs))
    return pairs


def pair_sample(pair: PhotoPair, rng: np.random.Generator, cut: TargetCut, patch: int, ref_patch: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """An HR crop of the pair's target, a ``ref_patch`` crop of its reference around the same place, and
    the lv3 correspondences ((-1, -1) where unknown) → (hr, ref, corr), or None when a photo is too small."""
    a, b = pair.target, pair.reference
    if min(a.shape[:2]) < patch * 1.2 or min(b.shape[:2]) < ref_patch:
        return None
    hr, y, x = cut(a, rng, 1.0)
    centre = np.array([x + patch / 2, y + patch / 2])
    if pair.target_to_ref is not None:
        cx, cy = apply_homography(pair.target_to_ref, centre)
        if not (math.isfinite(cx) and math.isfinite(cy)):
            return None
    else:
        cx, cy = centre[0] / a.shape[1] * b.shape[1], centre[1] / a.shape[0] * b.shape[0]
    # Jitter so that the target is not always at the reference's centre; stay inside the photo.
    cx += rng.uniform(-0.25, 0.25) * ref_patch
    cy += rng.uniform(-0.25, 0.25) * ref_patch
    x0 = int(np.clip(round(cx - ref_patch / 2), 0, b.shape[1] - ref_patch))
    y0 = int(np.clip(round(cy - ref_patch / 2), 0, b.shape[0] - ref_patch))
    ref = np.ascontiguousarray(b[y0 : y0 + ref_patch, x0 : x0 + ref_patch])
    cells = (patch // SCALE, patch // SCALE)
    if pair.target_to_ref is None:
        corr = np.full((*cells, 2), -1, dtype=np.int64)
    else:
        crop_to_ref = (np.array([[1.0, 0, -x0], [0, 1.0, -y0], [0, 0, 1]]) @ pair.target_to_ref
                       @ np.array([[1.0, 0, x], [0, 1.0, y], [0, 0, 1]]))
        corr = correspondences(crop_to_ref, cells, (ref_patch // SCALE, ref_patch // SCALE))
    return hr, ref, corr
