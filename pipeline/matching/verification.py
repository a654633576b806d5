"""Geometric verification: local features of two photos matched, and counted where one geometric model explains them.

The classic last step of landmark retrieval (Philbin et al., CVPR 2007): a global descriptor finds
photos that *look* alike, matches that one homography or epipolar geometry explains find the photos
of the same *place*. OpenCV does the work: SIFT (as RootSIFT, Arandjelović & Zisserman 2012), Lowe's
ratio test, and MAGSAC++ (``cv2.USAC_MAGSAC``) for the model.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.params import GeometricModel, VerifySettings

logger = logging.getLogger(__name__)

# Fewer matches than this cannot fit a model with any confidence (4 for H, 8 for F, plus slack).
_MIN_MATCHES = 10


@dataclass(frozen=True)
class LocalFeatures:
    """SIFT keypoints of one photo reduced to `VerifySettings.max_side`.

    points (n, 2) float32 x, y in the reduced photo; descriptors (n, 128) uint8 (raw SIFT, the
    compact form that is cached); `scale` = original pixels per reduced pixel (< 1 when enlarged);
    size = (width, height) of the reduced photo.
    """

    points: np.ndarray
    descriptors: np.ndarray
    scale: float
    size: tuple[int, int]

    def __len__(self) -> int:
        return int(self.points.shape[0])

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, points=self.points, descriptors=self.descriptors, scale=np.float64(self.scale),
                 size=np.asarray(self.size, dtype=np.int64))
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> LocalFeatures:
        with np.load(io.BytesIO(data)) as z:
            points = z["points"].astype(np.float32).reshape(-1, 2)
            descriptors = z["descriptors"].astype(np.uint8).reshape(-1, 128)
            size = tuple(int(v) for v in z["size"])
            return cls(points, descriptors, float(z["scale"]), (size[0], size[1]))


@dataclass(frozen=True)
class Verification:
    """How well two photos' features agree: `inliers` of `matches` fit `model` (x_b ~ model(x_a))."""

    inliers: int
    matches: int
    model: GeometricModel
    matrix: np.ndarray | None = None  # 3×3, reduced-a → reduced-b for a homography; None when no fit
    inlier_points: tuple[np.ndarray, np.ndarray] | None = None  # (k, 2) each, in the reduced photos


def reduce_for_features(rgb: np.ndarray, max_side: int, min_side: int = 1) -> tuple[np.ndarray, float]:
    """Grey uint8 (h, w) with its long side in [`min_side`, `max_side`] (area-averaged down, bicubic up), and the scale.

    The scale is original pixels per returned pixel.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    h, w = grey.shape
    long_side = max(h, w)
    scale = long_side / max_side if long_side > max_side else long_side / min_side if long_side < min_side else 1.0
    if scale != 1.0:
        size = (max(1, round(w / scale)), max(1, round(h / scale)))
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA if scale > 1 else cv2.INTER_CUBIC)
    return grey, scale


def local_features(rgb: np.ndarray, settings: VerifySettings = VerifySettings()) -> LocalFeatures:
    """SIFT features of an (H, W, 3) uint8 photo, reduced to `settings.max_side` first."""
    grey, scale = reduce_for_features(rgb, settings.max_side, settings.min_side)
    sift = cv2.SIFT_create(nfeatures=settings.max_features)
    keypoints, descriptors = sift.detectAndCompute(grey, None)
    if descriptors is None or not keypoints:
        return LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8), scale,
                             (grey.shape[1], grey.shape[0]))
    points = np.array([kp.pt for kp in keypoints], dtype=np.float32)
    raw = np.clip(np.rint(descriptors), 0, 255).astype(np.uint8)
    return LocalFeatures(points, raw, scale, (grey.shape[1], grey.shape[0]))


def _root_sift(descriptors: np.ndarray) -> np.ndarray:
    """(n, 128) → RootSIFT: L1-normalised, square-rooted; Euclidean distance then acts as the Hellinger kernel."""
    d = descriptors.astype(np.float32)
    d /= d.sum(axis=1, keepdims=True) + 1e-7
    return np.sqrt(d)


def match_features(a: LocalFeatures, b: LocalFeatures, ratio: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """Matches a → b that pass Lowe's ratio test, one per point of b: (m, 2) points in a, (m, 2) in b."""
    if len(a) < 2 or len(b) < 2:
        return np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32)
    knn = cv2.BFMatcher(cv2.NORM_L2).knnMatch(_root_sift(a.descriptors), _root_sift(b.descriptors), k=2)
    best: dict[int, tuple[float, int]] = {}  # point of b → (distance, point of a)
    for pair in knn:
        if len(pair) < 2:
            continue
        first, second = pair
        if first.distance < ratio * second.distance:
            # Several points of a on one point of b is a repeated texture, not a correspondence: keep the nearest.
            if first.trainIdx not in best or first.distance < best[first.trainIdx][0]:
                best[first.trainIdx] = (first.distance, first.queryIdx)
    if not best:
        return np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32)
    ib = np.fromiter(best.keys(), dtype=np.int64)
    ia = np.array([best[i][1] for i in ib.tolist()], dtype=np.int64)
    return a.points[ia], b.points[ib]


def verify_pair(a: LocalFeatures, b: LocalFeatures, settings: VerifySettings = VerifySettings()) -> Verification:
    """Match `a` to `b` and count the matches that one `settings.model` explains (MAGSAC++)."""
    pa, pb = match_features(a, b, settings.ratio)
    model = settings.model
    if len(pa) < _MIN_MATCHES:
        return Verification(0, len(pa), model)
    if model is GeometricModel.HOMOGRAPHY:
        matrix, mask = cv2.findHomography(pa, pb, cv2.USAC_MAGSAC, settings.threshold_px, maxIters=2000,
                                          confidence=0.999)
    else:
        matrix, mask = cv2.findFundamentalMat(pa, pb, cv2.USAC_MAGSAC, settings.threshold_px / 4.0, 0.999, 2000)
    if matrix is None or mask is None or matrix.shape != (3, 3):
        return Verification(0, len(pa), model)
    keep = mask.ravel().astype(bool)
    return Verification(int(keep.sum()), len(pa), model, matrix.astype(np.float64), (pa[keep], pb[keep]))


def vouches(inliers: int | None, settings: VerifySettings = VerifySettings()) -> bool:
    """Whether verification found more than chance agreement: over `min_inliers` inliers (None: not verified)."""
    return inliers is not None and inliers > settings.min_inliers


def verification_bonus(inliers: int, settings: VerifySettings = VerifySettings()) -> float:
    """What verification adds to a candidate's cosine: `weight` per decade of inliers above `min_inliers`.

    0 up to `min_inliers` (chance agreement, and every unverified candidate), then log-growing: the
    step from 12 to 40 inliers says more about the place than the step from 400 to 800.
    """
    if not vouches(inliers, settings):
        return 0.0
    return settings.weight * math.log10(inliers / settings.min_inliers)


def verified_order(cosines: Sequence[float], inliers: Sequence[int | None],
                   settings: VerifySettings = VerifySettings()) -> list[int]:
    """Indices of candidates best first by cosine + verification bonus; None = not verified (bonus 0).

    Ties fall back to the cosine order (the input's order), so an unverified pool stays as it was.
    """
    if len(cosines) != len(inliers):
        raise ValueError(f"{len(cosines)} cosines but {len(inliers)} inlier counts")
    score = [c + (0.0 if n is None else verification_bonus(n, settings)) for c, n in zip(cosines, inliers)]
    return sorted(range(len(score)), key=lambda i: (-score[i], i))
