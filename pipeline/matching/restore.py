"""A copy given its original back: the original aligned into the copy's (enlarged) frame, its colours fitted to the copy.

When the album holds the full-size original of a messenger copy, no model guesses better than the
original's own pixels. The alignment is the similarity copy detection found (pipeline.matching.copies); the
colours follow the copy (an edited copy keeps its edit); any part of the frame the original does not
show keeps another enlargement of the copy (bicubic in :func:`restore_copy`, the model's output when
`refsr enhance` composites one in, :func:`composite`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.matching.copies import CopySettings, align_original, check_copy, colour_fit
from pipeline.matching.verification import local_features
from pipeline.params import VerifySettings
from ttsr_core.arrays import check_rgb, resize_bicubic
from ttsr_core.metrics import psnr_y

logger = logging.getLogger(__name__)

MAX_REFINEMENT_PX = 0.5  # in copy pixels: ECC corrects a feature fit's bias, it does not move the picture


def refine_alignment(copy: np.ndarray, original: np.ndarray, copy_to_original: np.ndarray) -> np.ndarray:
    """`copy_to_original` corrected to sub-pixel accuracy by ECC (Evangelidis & Psarakis 2008) at the copy's scale.

    Feature positions carry a bias of a fraction of a pixel per scale step, which the original's
    fine detail turns into a blur; the enhanced correlation coefficient is blind to gain and offset,
    so a colour-edited copy aligns as well. Returns the map unchanged when ECC does not converge or
    moves a corner of the copy by more than MAX_REFINEMENT_PX copy pixels.
    """
    h, w = copy.shape[:2]
    aligned = align_original(original, copy_to_original, (w, h))
    template = cv2.cvtColor(copy, cv2.COLOR_RGB2GRAY).astype(np.float32)
    moving = cv2.cvtColor(aligned, cv2.COLOR_RGB2GRAY).astype(np.float32)
    warp = np.eye(2, 3, dtype=np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 1e-5)
    try:
        _, warp = cv2.findTransformECC(template, moving, warp, cv2.MOTION_AFFINE, criteria, None, 3)
    except cv2.error:
        return copy_to_original
    refined = copy_to_original @ np.vstack([warp.astype(np.float64), [0.0, 0.0, 1.0]])
    refined /= refined[2, 2]
    # On a textured copy ECC moves the corners by a quarter of a copy pixel at most (benchmarks/retrieval/copy_restore.py);
    # on a bare one (a coin on a table) it can slide a pixel or more along smooth shading: keep the map then.
    corners = np.array([[0, w - 1, 0, w - 1], [0, 0, h - 1, h - 1], [1, 1, 1, 1]], np.float64)
    before, after = copy_to_original @ corners, refined @ corners
    moved = np.abs(before[:2] / before[2] - after[:2] / after[2]).max()
    if moved > MAX_REFINEMENT_PX * math.sqrt(abs(np.linalg.det(copy_to_original[:2, :2]))):
        return copy_to_original
    return refined


def restore_with_coverage(copy: np.ndarray, original: np.ndarray, copy_to_original: np.ndarray,
                          outscale: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """The original's pixels in the copy's frame enlarged `outscale` times, and where the original reaches.

    copy (h, w, 3) uint8, original (H, W, 3) uint8, `copy_to_original` the 3×3 map of copy pixels to
    original pixels (CopyVerdict.copy_to_original). Returns the restored (oh, ow, 3) float32 (0-255)
    and the coverage (oh, ow) float32, 1 where an output pixel falls inside the original, else 0;
    (oh, ow) = (round(h·outscale), round(w·outscale)).
    """
    check_rgb(copy, "copy")
    check_rgb(original, "original")
    if not outscale > 0:
        raise ValueError(f"outscale must be > 0, got {outscale!r}")
    h, w = copy.shape[:2]
    size = (max(1, round(w * outscale)), max(1, round(h * outscale)))
    sx, sy = w / size[0], h / size[1]
    # Output pixel centres onto copy pixel centres (OpenCV puts a pixel's centre at its integer coordinate).
    out_to_copy = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
    out_to_orig = refine_alignment(copy, original, copy_to_original) @ out_to_copy
    aligned = align_original(original, out_to_orig, size).astype(np.float32)
    # Colours fitted at the copy's own scale, both blurred: detail the copy lost to compression would
    # otherwise flatten the fitted lines (a dilution bias toward gain 0).
    at_copy = cv2.GaussianBlur(cv2.resize(aligned, (w, h), interpolation=cv2.INTER_AREA), (0, 0), 2.0)
    gains, offsets = colour_fit(at_copy, cv2.GaussianBlur(copy.astype(np.float32), (0, 0), 2.0))
    restored = np.clip(aligned * gains.astype(np.float32) + offsets.astype(np.float32), 0, 255)
    inside = cv2.warpPerspective(np.ones(original.shape[:2], np.float32), out_to_orig, size,
                                 flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                                 borderValue=0)
    return restored, inside


def composite(restored: np.ndarray, inside: np.ndarray, elsewhere: np.ndarray) -> np.ndarray:
    """`restored` where `inside` is 1, `elsewhere` (any other enlargement of the copy, same size) where 0; uint8."""
    if restored.shape != elsewhere.shape or inside.shape != restored.shape[:2]:
        raise ValueError(f"sizes differ: restored {restored.shape}, coverage {inside.shape}, "
                         f"other {elsewhere.shape}")
    weight = inside[..., None]
    mixed = restored.astype(np.float32) * weight + elsewhere.astype(np.float32) * (1 - weight)
    return np.rint(mixed).astype(np.uint8)


def restore_copy(copy: np.ndarray, original: np.ndarray, copy_to_original: np.ndarray,
                 outscale: float = 4.0) -> np.ndarray:
    """The copy enlarged `outscale` times from its original's pixels, bicubic where the original does not reach.

    See :func:`restore_with_coverage`. Returns (round(h·outscale), round(w·outscale), 3) uint8.
    """
    restored, inside = restore_with_coverage(copy, original, copy_to_original, outscale)
    if inside.min() >= 1:
        return np.rint(restored).astype(np.uint8)
    # Where the original does not reach (a copy framed a little wider than it), the copy itself, enlarged.
    h, w = restored.shape[:2]
    return composite(restored, inside, resize_bicubic(copy, w, h))


@dataclass(frozen=True)
class Restoration:
    """A copy restored from its original, before anything fills the part the original does not show.

    `image` (oh, ow, 3) float32 and `inside` (oh, ow) float32 as :func:`restore_with_coverage` gives
    them; the rest says how well the original fits the copy, for the record.
    """

    image: np.ndarray
    inside: np.ndarray
    inliers: int  # feature matches the copy's similarity explains
    agreement_db: float  # PSNR of copy and aligned original at the copy detector's compare size
    fidelity_db: float  # Y-PSNR of the restored output, scaled back to the copy's size, against the copy
    scale: float  # original pixels per copy pixel

    @property
    def covered(self) -> float:
        """Share of the output's pixels that come from the original."""
        return float(self.inside.mean())

    def facts(self) -> dict[str, float | int]:
        """What the enhancement record keeps of it (JSON-able)."""
        return {"inliers": self.inliers, "agreement_db": round(self.agreement_db, 2),
                "fidelity_db": round(self.fidelity_db, 2), "scale": round(self.scale, 4),
                "covered": round(self.covered, 4)}


def restore_from_original(copy: np.ndarray, original: np.ndarray, outscale: float = 4.0,
                          settings: CopySettings = CopySettings()) -> Restoration | None:
    """`copy` restored from `original` when its pixels confirm that it is a copy of it, else None (logged why).

    The copy detector's verdict is recorded by content; this looks again at the pixels about to be
    used, because the restoration needs the similarity itself (the record keeps only its scale).
    """
    features = VerifySettings()
    verdict = check_copy(copy, local_features(copy, features), original, local_features(original, features), settings)
    if not verdict.is_copy or verdict.copy != 0 or verdict.copy_to_original is None:
        why = verdict.reason if not verdict.is_copy else "the original is the smaller of the two"
        logger.warning("not restored from its original: %s", why)
        return None
    image, inside = restore_with_coverage(copy, original, verdict.copy_to_original, outscale)
    h, w = copy.shape[:2]
    back = cv2.resize(np.rint(image).astype(np.uint8), (w, h), interpolation=cv2.INTER_AREA)
    border = min(4, (min(h, w) - 1) // 4)
    return Restoration(image, inside, verdict.inliers, float(verdict.agreement_db or 0.0),
                       min(99.0, psnr_y(back, copy, border=border)), float(verdict.scale or 0.0))
