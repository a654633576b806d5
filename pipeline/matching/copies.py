"""Copies: is one photo a smaller, recompressed, cropped or colour-edited version of another, and which is the original?

A copy and its original agree in two ways that two photographs of one scene do not: one
*similarity* (scale and shift, no tilt) maps every feature of one onto the other, and once the
original is resampled into the copy's frame and its colours fitted, every part of the picture agrees
(down to compression noise). Two photos from one tripod a minute apart pass the first test and fail
the second where anything moved; two views of one place fail the first.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.matching.placement import place
from pipeline.matching.verification import LocalFeatures, match_features

logger = logging.getLogger(__name__)

# Stored with each verdict: a new method checks pairs again, and its verdict replaces the old one's.
# v2: an uncropped copy too small or too bare for feature matches is checked as one whole frame resized.
# v3: a small copy that features cannot place, cropped or not, is placed in the original by its pixels.
COPY_METHOD = "sift-similarity-v3"


@dataclass(frozen=True)
class CopySettings:
    """Thresholds of :func:`check_copy` (benchmarks/retrieval/copy_detection.py measures them)."""

    ratio: float = 0.8
    threshold_px: float = 3.0  # MAGSAC++ inlier threshold, in the reduced photos
    min_inliers: int = 20
    min_similarity_share: float = 0.8  # similarity inliers / homography inliers
    max_anisotropy: float = 0.04  # |s1/s2 - 1| of the map's linear part: a copy is not stretched
    max_rotation_deg: float = 2.0
    max_perspective: float = 0.01  # how far the map's perspective row moves a point at the image corner
    min_coverage: float = 0.97  # share of the copy's frame that the original shows
    compare_side: int = 192  # long side at which pixels are compared
    blur_px: float = 1.5  # Gaussian sigma at compare_side, applied to both before comparing
    blocks: int = 12  # blocks along the long side; each must agree
    max_block_rmse: float = 11.0  # worst block's RMS difference (0-255) after the colour fit
    # Too few feature matches (a thumbnail of a bare scene): an uncropped copy is still one whole frame
    # resized, which the pixels alone can confirm. Tried when the two frames have one shape and one is
    # at least `whole_frame_scale` times the other; the aligned original must then also explain
    # `min_explained` of the copy's variance (two smooth, unrelated photos would pass the blocks alone).
    whole_frame: bool = True
    whole_frame_scale: float = 1.5
    min_explained: float = 0.9
    # Not one whole frame either: a small copy (long side `search_min_side`..`search_max_side`) may be a
    # crop that features cannot place; its pixels are searched for in the original
    # (pipeline.matching.placement) as a crop showing at least `min_crop` of the original along its
    # tighter side, and the place found must pass the same two tests. Below `search_min_side` a copy
    # holds too little to tell its frame from the next frame of a video (measured: a 44-px copy agreed
    # with the next frame as well as with its own); above `search_max_side` its features are computed
    # at its own size and need no help. A copy with fewer than `search_min_features` features is a bare
    # scene (a coin on a table): some crop of another bare photo, rescaled, matches it as well as its
    # own original does. benchmarks/RETRIEVAL.md, "Copy detection", measures each floor.
    crop_search: bool = True
    search_min_features: int = 8
    search_min_side: int = 56
    search_max_side: int = 320
    min_crop: float = 0.5

    def fingerprint(self) -> str:
        return COPY_METHOD


@dataclass(frozen=True)
class CopyVerdict:
    """Whether `a` and `b` are one picture; `copy` = 0 when a is the copy of b, 1 when b is the copy of a."""

    is_copy: bool
    copy: int | None
    scale: float | None  # original pixels per copy pixel
    inliers: int
    coverage: float | None
    block_rmse: float | None  # the worst block's RMS difference after the colour fit
    agreement_db: float | None  # PSNR of the aligned pictures after the colour fit
    reason: str
    copy_to_original: np.ndarray | None = None  # 3×3, copy pixels → original pixels, when it is a copy


def _to_full(f: LocalFeatures) -> np.ndarray:
    """Reduced pixel → full pixel, pixel centres onto pixel centres (a centre sits at an integer coordinate)."""
    s = f.scale
    return np.array([[s, 0.0, 0.5 * s - 0.5], [0.0, s, 0.5 * s - 0.5], [0.0, 0.0, 1.0]])


def _full_map(h: np.ndarray, a: LocalFeatures, b: LocalFeatures) -> np.ndarray:
    """A map between the reduced photos → the same map between the full photos."""
    full = _to_full(b) @ h @ np.linalg.inv(_to_full(a))
    return full / full[2, 2]


def _shape_of(h: np.ndarray, width: int, height: int) -> tuple[float, float, float, float]:
    """(scale, anisotropy, rotation in degrees, perspective) of a 3×3 map near a similarity."""
    u, s, vt = np.linalg.svd(h[:2, :2])
    rot = u @ vt
    angle = math.degrees(math.atan2(rot[1, 0], rot[0, 0]))
    perspective = abs(h[2, 0]) * width + abs(h[2, 1]) * height
    return float(math.sqrt(abs(np.linalg.det(h[:2, :2])))), float(s[0] / s[1] - 1.0), angle, float(perspective)


def _coverage(h_copy_to_orig: np.ndarray, copy_size: tuple[int, int], orig_size: tuple[int, int]) -> float:
    """Share of the copy's frame that falls inside the original's, on a 64-point grid per side."""
    w, h = copy_size
    xs, ys = np.meshgrid(np.linspace(0, w - 1, 64), np.linspace(0, h - 1, 64))
    pts = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)], axis=1) @ h_copy_to_orig.T
    pts = pts[:, :2] / pts[:, 2:]
    inside = (pts[:, 0] >= -1) & (pts[:, 0] <= orig_size[0]) & (pts[:, 1] >= -1) & (pts[:, 1] <= orig_size[1])
    return float(inside.mean())


def align_original(original: np.ndarray, h_copy_to_orig: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The original resampled into a frame of `size` = (w, h) whose map into the original is `h_copy_to_orig`.

    Area-reduced first when the frame is much smaller than the original's pixels, so the resampling
    does not alias. Returns (h, w, 3) uint8; outside the original it repeats the border.
    """
    scale = math.sqrt(abs(np.linalg.det(h_copy_to_orig[:2, :2])))  # original px per frame px
    m = h_copy_to_orig
    if scale > 1.5:
        oh, ow = original.shape[:2]
        rw, rh = max(1, round(ow / scale)), max(1, round(oh / scale))
        original = cv2.resize(original, (rw, rh), interpolation=cv2.INTER_AREA)
        fx, fy = ow / rw, oh / rh
        # Original pixel → reduced pixel, centres onto centres.
        to_reduced = np.array([[1 / fx, 0.0, 0.5 / fx - 0.5], [0.0, 1 / fy, 0.5 / fy - 0.5], [0.0, 0.0, 1.0]])
        m = to_reduced @ h_copy_to_orig
    return cv2.warpPerspective(original, m, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_REPLICATE)


def colour_fit(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel least-squares (gain, offset), each (3,), that map `source`'s colours onto `target`'s."""
    gains, offsets = np.ones(3), np.zeros(3)
    for c in range(source.shape[2]):
        x = source[..., c].astype(np.float64).ravel()
        y = target[..., c].astype(np.float64).ravel()
        design = np.stack([x, np.ones_like(x)], axis=1)
        (gains[c], offsets[c]), *_ = np.linalg.lstsq(design, y, rcond=None)
    return gains, offsets


def fit_colours(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """`source` with each channel mapped by the least-squares line onto `target`'s (float32, same shape)."""
    gains, offsets = colour_fit(source, target)
    return (source.astype(np.float32) * gains.astype(np.float32) + offsets.astype(np.float32)).astype(np.float32)


def _agreement(copy: np.ndarray, original: np.ndarray, h_copy_to_orig: np.ndarray,
               settings: CopySettings) -> tuple[float, float, float]:
    """(worst block RMSE, PSNR, share of the copy's variance explained) of the copy against the aligned original.

    Measured at `compare_side`, both blurred a little and the original's colours fitted to the copy's.
    """
    h, w = copy.shape[:2]
    f = min(1.0, settings.compare_side / max(h, w))
    cw, ch = max(8, round(w * f)), max(8, round(h * f))
    small = cv2.resize(copy, (cw, ch), interpolation=cv2.INTER_AREA).astype(np.float32)
    kx, ky = w / cw, h / ch  # compared pixel → copy pixel, centres onto centres (not corners: that slid
    # the original by (k - 1) / 2 copy pixels, almost half a compared pixel at k = 5)
    to_orig = h_copy_to_orig @ np.array([[kx, 0.0, 0.5 * kx - 0.5], [0.0, ky, 0.5 * ky - 0.5], [0.0, 0.0, 1.0]])
    aligned = align_original(original, to_orig, (cw, ch)).astype(np.float32)
    # Both blurred a little: a sub-pixel misregistration at a sharp edge is no difference of content.
    small = cv2.GaussianBlur(small, (0, 0), settings.blur_px)
    aligned = cv2.GaussianBlur(aligned, (0, 0), settings.blur_px)
    aligned = fit_colours(aligned, small)
    err = (aligned - small) ** 2
    mse = float(err.mean())
    explained = 1.0 - mse / max(float(small.var()), 1e-6)
    psnr = 99.0 if mse < 1e-10 else 10 * math.log10(255.0 ** 2 / mse)
    side = max(cw, ch) / settings.blocks
    rows, cols = max(1, round(ch / side)), max(1, round(cw / side))
    worst = 0.0
    for r in range(rows):
        for c in range(cols):
            block = err[r * ch // rows:(r + 1) * ch // rows, c * cw // cols:(c + 1) * cw // cols]
            if block.size:
                worst = max(worst, float(math.sqrt(block.mean())))
    return worst, psnr, explained


Pixels = np.ndarray | Callable[[], np.ndarray]


def _once(p: Pixels) -> Pixels:
    """`p`, its loader (a photo decoded from disk) run at most once however many tests look at it."""
    return functools.cache(p) if callable(p) else p


def _full_size(f: LocalFeatures) -> tuple[int, int]:
    return round(f.size[0] * f.scale), round(f.size[1] * f.scale)


def _whole_frame(a: Pixels, fa: LocalFeatures, b: Pixels, fb: LocalFeatures, settings: CopySettings,
                 matches: int) -> CopyVerdict:
    """The verdict for an uncropped copy that features could not match: one whole frame resized onto the other."""
    (aw, ah), (bw, bh) = _full_size(fa), _full_size(fb)
    scale = math.sqrt(bw * bh / (aw * ah))
    # Resizing rounds each side to whole pixels (and the feature sizes round again): the shapes of a copy
    # and its original differ by about that much, no more.
    rounding = 2.0 / min(aw, ah, bw, bh)
    if abs((bw / aw) / (bh / ah) - 1.0) > 2 * rounding or max(scale, 1 / scale) < settings.whole_frame_scale:
        return CopyVerdict(False, None, None, 0, None, None, None, f"{matches} matches")
    copy = 0 if scale > 1.0 else 1
    copy_px, orig_px = (p() if callable(p) else p for p in ((a, b) if copy == 0 else (b, a)))
    (ch, cw), (oh, ow) = copy_px.shape[:2], orig_px.shape[:2]
    sx, sy = ow / cw, oh / ch  # from the pixels themselves
    to_orig = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
    worst, psnr, explained = _agreement(copy_px, orig_px, to_orig, settings)
    ok = worst <= settings.max_block_rmse and explained >= settings.min_explained
    reason = ("one picture, whole frame (too few feature matches to align by them)" if ok else
              f"{matches} matches; as a whole frame, block RMS {worst:.1f} and {explained:.0%} of it explained")
    return CopyVerdict(ok, copy if ok else None, math.sqrt(sx * sy), 0, 1.0, worst, psnr, reason,
                       to_orig if ok else None)


def _searched_crop(a: Pixels, fa: LocalFeatures, b: Pixels, fb: LocalFeatures, settings: CopySettings,
                   why: str) -> CopyVerdict | None:
    """The verdict for a small copy found by its pixels in the other photo; None when the pair is not tried."""
    (aw, ah), (bw, bh) = _full_size(fa), _full_size(fb)
    copy = 0 if aw * ah < bw * bh else 1
    copy_side = max((aw, ah) if copy == 0 else (bw, bh))
    if not settings.search_min_side <= copy_side <= settings.search_max_side \
            or len(fa if copy == 0 else fb) < settings.search_min_features:
        return None
    copy_px, orig_px = (p() if callable(p) else p for p in ((a, b) if copy == 0 else (b, a)))
    found = place(copy_px, orig_px, min_scale=settings.whole_frame_scale, min_share=settings.min_crop)
    if found is None:
        return None
    to_orig = found.small_to_large
    scale = math.sqrt(abs(np.linalg.det(to_orig[:2, :2])))
    worst, psnr, explained = _agreement(copy_px, orig_px, to_orig, settings)
    ok = worst <= settings.max_block_rmse and explained >= settings.min_explained
    reason = ("one picture, found by its pixels (too few feature matches to align by them)" if ok else
              f"{why}; found by its pixels at {scale:.2f}×, block RMS {worst:.1f} and {explained:.0%} of it explained")
    return CopyVerdict(ok, copy if ok else None, scale, 0, 1.0, worst, psnr, reason, to_orig if ok else None)


def _without_features(a: Pixels, fa: LocalFeatures, b: Pixels, fb: LocalFeatures, settings: CopySettings,
                      matches: int, why: str = "") -> CopyVerdict:
    """Too few features agree: the pair is judged by its pixels, as one whole frame, else as a small crop."""
    verdict = CopyVerdict(False, None, None, 0, None, None, None, why or f"{matches} matches")
    a, b = _once(a), _once(b)  # the whole-frame test and the crop search may both need the pixels
    if settings.whole_frame:
        verdict = _whole_frame(a, fa, b, fb, settings, matches)
    if verdict.is_copy or not settings.crop_search:
        return verdict
    return _searched_crop(a, fa, b, fb, settings, verdict.reason) or verdict


def check_copy(a: Pixels, fa: LocalFeatures, b: Pixels, fb: LocalFeatures,
               settings: CopySettings = CopySettings(), *, bytes_a: int = 0, bytes_b: int = 0) -> CopyVerdict:
    """Whether photos `a` and `b` ((H, W, 3) uint8, with their local features) are one picture, and which is the copy.

    `a` and `b` may be callables that load the pixels: they are called only for a pair that passes
    the geometric test. The copy is the one with fewer pixels for the same content; at one scale,
    the one whose frame the other covers (a crop), else the smaller file (`bytes_a`, `bytes_b`; a
    recompression).
    """
    pa, pb = match_features(fa, fb, settings.ratio)
    if len(pa) < settings.min_inliers:
        return _without_features(a, fa, b, fb, settings, len(pa))
    # A similarity (scale, turn, shift) fitted directly: a homography's eight parameters overfit the few,
    # noisy matches of a thumbnail and make a copy look tilted.
    m, mask = cv2.estimateAffinePartial2D(pa, pb, method=cv2.RANSAC, ransacReprojThreshold=settings.threshold_px,
                                          maxIters=2000, confidence=0.999)
    inliers = int(mask.sum()) if mask is not None else 0
    if m is None or inliers < settings.min_inliers:
        return _without_features(a, fa, b, fb, settings, len(pa), f"{inliers} inliers")
    h = np.vstack([m, [0.0, 0.0, 1.0]])
    # Another view of a place is explained better by a homography (or not at all) than by a similarity.
    _, hmask = cv2.findHomography(pa, pb, cv2.USAC_MAGSAC, settings.threshold_px, maxIters=2000, confidence=0.999)
    h_inliers = int(hmask.sum()) if hmask is not None else 0
    if inliers < settings.min_similarity_share * h_inliers:
        return CopyVerdict(False, None, None, inliers, None, None, None,
                           f"not a similarity ({inliers} of a homography's {h_inliers} inliers)")
    a_to_b = _full_map(h, fa, fb)
    aw, ah = _full_size(fa)
    scale, aniso, angle, persp = _shape_of(a_to_b, aw, ah)
    if abs(aniso) > settings.max_anisotropy or abs(angle) > settings.max_rotation_deg \
            or persp > settings.max_perspective:
        return CopyVerdict(False, None, None, inliers, None, None, None,
                           f"not a similarity (stretch {aniso:.3f}, turn {angle:.1f}°, tilt {persp:.3f})")
    b_to_a = np.linalg.inv(a_to_b)
    b_to_a /= b_to_a[2, 2]
    bw, bh = _full_size(fb)
    cover_a = _coverage(a_to_b, (aw, ah), (bw, bh))  # a's frame inside b
    cover_b = _coverage(b_to_a, (bw, bh), (aw, ah))
    if abs(scale - 1.0) > 0.03:
        copy = 0 if scale > 1.0 else 1
    elif abs(cover_a - cover_b) > 0.02:
        copy = 0 if cover_a > cover_b else 1
    else:
        copy = 0 if bytes_a <= bytes_b else 1
    copy_px, orig_px, to_orig = (a, b, a_to_b) if copy == 0 else (b, a, b_to_a)
    coverage = cover_a if copy == 0 else cover_b
    factor = scale if copy == 0 else 1.0 / scale
    if coverage < settings.min_coverage:
        return CopyVerdict(False, None, factor, inliers, coverage, None, None,
                           f"the original shows {coverage:.0%} of the copy's frame")
    copy_px, orig_px = (p() if callable(p) else p for p in (copy_px, orig_px))
    worst, psnr, _ = _agreement(copy_px, orig_px, to_orig, settings)
    ok = worst <= settings.max_block_rmse
    reason = "one picture" if ok else f"a part differs (block RMS {worst:.1f} > {settings.max_block_rmse:g})"
    return CopyVerdict(ok, copy if ok else None, factor, inliers, coverage, worst, psnr, reason,
                       to_orig if ok else None)

