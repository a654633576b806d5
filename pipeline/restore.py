"""A copy given its original back: the original aligned into the copy's (enlarged) frame, its colours fitted to the copy.

When the album holds the full-size original of a messenger copy, no model guesses better than the
original's own pixels. The alignment is the similarity copy detection found (pipeline.copies); the
colours follow the copy (an edited copy keeps its edit); any part of the frame the original does not
show keeps the bicubic enlargement of the copy.
"""

from __future__ import annotations

import cv2
import numpy as np

from pipeline.copies import align_original, colour_fit
from ttsr_core.arrays import check_rgb, resize_bicubic


def refine_alignment(copy: np.ndarray, original: np.ndarray, copy_to_original: np.ndarray) -> np.ndarray:
    """`copy_to_original` corrected to sub-pixel accuracy by ECC (Evangelidis & Psarakis 2008) at the copy's scale.

    Feature positions carry a bias of a fraction of a pixel per scale step, which the original's
    fine detail turns into a blur; the enhanced correlation coefficient is blind to gain and offset,
    so a colour-edited copy aligns as well. Returns the map unchanged when ECC does not converge.
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
    return refined / refined[2, 2]


def restore_copy(copy: np.ndarray, original: np.ndarray, copy_to_original: np.ndarray,
                 outscale: float = 4.0) -> np.ndarray:
    """The copy enlarged `outscale` times from its original's pixels.

    copy (h, w, 3) uint8, original (H, W, 3) uint8, `copy_to_original` the 3×3 map of copy pixels to
    original pixels (CopyVerdict.copy_to_original). Returns (round(h·outscale), round(w·outscale), 3) uint8.
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
    # Where the original does not reach (a copy framed a little wider than it), the copy itself, enlarged.
    inside = cv2.warpPerspective(np.ones(original.shape[:2], np.float32), out_to_orig, size,
                                 flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                                 borderValue=0)
    if inside.min() < 1:
        fallback = resize_bicubic(copy, size[0], size[1]).astype(np.float32)
        restored = restored * inside[..., None] + fallback * (1 - inside[..., None])
    return np.rint(restored).astype(np.uint8)
