"""Training pairs: a degraded crop of a photo and a warped view of it with known geometry, or the CUFED layout."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ttsr_core.config import SCALE
from ttsr_core.model.inference import resize_bicubic
from ttsr_core.training.degradations import REFERENCE_PHOTOMETRY, Chain, OneOf, lr_pipeline
from ttsr_core.training.photo_pairs import PhotoPair, pair_sample, read_photo_pairs
from ttsr_core.training.warp import FAR_VIEW, NEAR_VIEW, ViewSettings, correspondences, photo_units_per_pixel, render, sample_view

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"training folder not found: {folder}")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def load_photo(path: Path, max_side: int) -> np.ndarray:
    """RGB uint8 array, downscaled (antialiased) so its long side is at most ``max_side``."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        scale = max_side / max(im.size)
        if scale < 1:
            im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                           Image.Resampling.LANCZOS, reducing_gap=3.0)
        return np.asarray(im)


def to_model_range(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 → (3, H, W) float32 in [-1, 1]."""
    return torch.from_numpy(np.array(image, dtype=np.float32, copy=True)).permute(2, 0, 1) / 127.5 - 1.0


def make_sample(hr: np.ndarray, ref: np.ndarray, lr: np.ndarray | None = None) -> dict[str, torch.Tensor]:
    """The paper's five tensors from an HR crop, a reference (sides multiples of 4) and its LR.

    ``lr`` defaults to PIL bicubic ↓4 of ``hr`` (the paper); a degraded LR must be exactly ¼ of hr.
    """
    h, w = hr.shape[:2]
    if lr is None:
        lr = resize_bicubic(hr, w // SCALE, h // SCALE)
    if lr.shape[:2] != (h // SCALE, w // SCALE):
        raise ValueError(f"LR {lr.shape[:2]} is not ¼ of HR {hr.shape[:2]}")
    lr_up = resize_bicubic(lr, w, h)
    rh, rw = ref.shape[:2]
    ref_down_up = resize_bicubic(resize_bicubic(ref, rw // SCALE, rh // SCALE), rw, rh)
    return {
        "lr": to_model_range(lr), "lr_up": to_model_range(lr_up), "hr": to_model_range(hr),
        "ref": to_model_range(ref), "ref_down_up": to_model_range(ref_down_up),
    }


@dataclass(frozen=True)
class PairSettings:
    """What one training sample looks like (see :class:`WarpedPairs`)."""

    patch: int = 96  # HR crop side (multiple of 4); the search space of a real album target is larger still
    ref_patch: int = 160  # reference side: larger than the crop, as an album's reference is
    near_prob: float = 0.45  # a close view: burst, stereo pair (ttsr_core.training.warp.NEAR_VIEW)
    far_prob: float = 0.45  # another visit or lens: zoom 0.5–2×, rotation, tilt, partial overlap (FAR_VIEW)
    # The target's own LR↑ as its reference: no texture to lend, so the network must sharpen on its own.
    self_prob: float = 0.0
    # A real second photograph of the scene (training pairs), when the dataset holds pairs.
    pair_prob: float = 0.0
    # The rest: a view of another photo, so the network learns to ignore texture that does not belong.
    lr_degradation: str = "mixed"  # ttsr_core.training.degradations.LR_PIPELINES name
    ref_photometry: bool = True  # relight and re-JPEG the reference
    max_side: int = 1600  # photos are held in memory at most this large
    # Best-of-N crop positions by gradient energy: wallpapers are mostly smooth bokeh and sky, where
    # bicubic is already right and a crop teaches nothing. 1 = uniform sampling.
    texture_tries: int = 4
    min_overlap: float = 0.25  # a same-photo view must show at least this share of the target's cells

    def __post_init__(self) -> None:
        for name in ("patch", "ref_patch"):
            v = getattr(self, name)
            if v < 12 or v % SCALE:
                raise ValueError(f"{name} must be a multiple of 4 and ≥ 12, got {v}")
        shares = (self.near_prob, self.far_prob, self.self_prob, self.pair_prob)
        if min(shares) < 0 or sum(shares) > 1 + 1e-9:
            raise ValueError(f"near_prob, far_prob, self_prob and pair_prob must be ≥ 0 with a sum ≤ 1, got {shares}")
        lr_pipeline(self.lr_degradation)  # raises on an unknown name
        if self.texture_tries < 1:
            raise ValueError(f"texture_tries must be ≥ 1, got {self.texture_tries}")


def _detail(crop: np.ndarray) -> float:
    """Mean absolute horizontal + vertical gradient of the green channel (a cheap texture measure)."""
    g = crop[::2, ::2, 1].astype(np.int16)
    return float(np.abs(np.diff(g, axis=0)).mean() + np.abs(np.diff(g, axis=1)).mean())


def _view(photo: np.ndarray, ref_to_photo: np.ndarray, side: int) -> np.ndarray:
    """Render a view without aliasing: where it shrinks the photo, the covered region is reduced first."""
    shrink = photo_units_per_pixel(ref_to_photo, side)
    if shrink <= 1.15:
        return render(photo, ref_to_photo, (side, side))
    corners = ref_to_photo @ np.array([[0, side, side, 0], [0, 0, side, side], [1, 1, 1, 1]], dtype=np.float64)
    xs, ys = corners[0] / corners[2], corners[1] / corners[2]
    x0, y0 = max(0, int(xs.min()) - 4), max(0, int(ys.min()) - 4)
    x1, y1 = min(photo.shape[1], int(math.ceil(xs.max())) + 4), min(photo.shape[0], int(math.ceil(ys.max())) + 4)
    region = Image.fromarray(photo[y0:y1, x0:x1])
    size = (max(1, round(region.width / shrink)), max(1, round(region.height / shrink)))
    small = np.asarray(region.resize(size, Image.Resampling.LANCZOS))
    fx, fy = size[0] / region.width, size[1] / region.height
    to_small = np.array([[fx, 0, -x0 * fx], [0, fy, -y0 * fy], [0, 0, 1]])
    return render(small, to_small @ ref_to_photo, (side, side))


# What a sample's reference is (its "kind" tensor indexes this): a warped view of the target's photo
# (near, far), the target's own LR↑ (self), a real second photograph (pair), another photo (other).
SAMPLE_KINDS = ("near", "far", "self", "pair", "other")


class WarpedPairs(Dataset):
    """Pairs cut from single photos, with the reference a warped, relit view and the LR really degraded.

    Per sample: an HR crop (texture-biased position), its LR through the ``lr_degradation`` pipeline,
    and a reference: a near view (45 %), a far view with zoom 0.5–2×, rotation, tilt and partial overlap
    (45 %), or a view of another photo (10 %). Neither crop nor reference is ever upsampled from the
    photo: for a reference that magnifies (zoom > 1) the target is cut from the photo reduced by the zoom.
    ``corr`` (patch/4, patch/4, 2) holds each target lv3 cell's reference cell (row, col), (-1, -1)
    where the reference does not show it (always for another photo's view).

    Epochs are virtual: ``length`` samples, each drawn afresh from the seeded generator of its index.
    """

    def __init__(self, photos: Sequence[np.ndarray], settings: PairSettings = PairSettings(), length: int = 10_000,
                 seed: int = 0, pairs: Sequence[PhotoPair] = ()) -> None:
        need = int(max(settings.patch * 2, settings.ref_patch) * 1.2)
        usable = [p for p in photos if min(p.shape[:2]) >= need]
        if not usable:
            raise ValueError(f"need at least one photo of at least {need} px on its short side, got none of {len(photos)}")
        if len(usable) < len(photos):
            logger.info("%d of %d photos are smaller than %d px and not used", len(photos) - len(usable), len(photos), need)
        self.photos = usable
        self.settings = settings
        self.length = length
        self.seed = seed
        self.lr_chain: Chain | OneOf = lr_pipeline(settings.lr_degradation)
        self.pairs = list(pairs)
        if settings.pair_prob > 0 and not self.pairs:
            raise ValueError(f"pair_prob is {settings.pair_prob} but no photo pairs were given")

    @classmethod
    def from_folders(cls, folders: Sequence[str | Path], settings: PairSettings = PairSettings(),
                     exclude: Sequence[str] = (), pair_lists: Sequence[str | Path] = (), **kw) -> "WarpedPairs":
        skip = set(exclude)
        paths = [p for f in folders for p in list_images(f) if p.name not in skip]
        logger.info("loading %d training photos from %s", len(paths), ", ".join(map(str, folders)))
        pairs = [pair for tsv in pair_lists for pair in read_photo_pairs(tsv, settings.max_side)]
        return cls([load_photo(p, settings.max_side) for p in paths], settings, pairs=pairs, **kw)

    def __len__(self) -> int:
        return self.length

    def _kind(self, rng: np.random.Generator) -> str:
        s = self.settings
        u = rng.random()
        for kind, share in (("near", s.near_prob), ("far", s.far_prob), ("self", s.self_prob), ("pair", s.pair_prob)):
            if u < share:
                return kind
            u -= share
        return "other"

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        s = self.settings
        rng = np.random.default_rng([self.seed, index])
        k = int(rng.integers(len(self.photos)))
        photo = self.photos[k]
        kind = self._kind(rng)
        sample, lr = None, None
        if kind in ("near", "far"):
            for _ in range(8):
                sample = self._same_photo(photo, rng, NEAR_VIEW if kind == "near" else FAR_VIEW)
                if sample is not None:
                    break
        elif kind == "self":
            hr, ref, corr, lr = self._own_lr_view(photo, rng)
            sample = hr, ref, corr
        elif kind == "pair":
            pair = self.pairs[int(rng.integers(len(self.pairs)))]
            sample = pair_sample(pair.reversed() if rng.random() < 0.5 else pair, rng, self._target, s.patch,
                                 s.ref_patch)
        if sample is None:  # another photo's view, or no view of this one fitted
            sample, kind = self._other_photo(k, rng), "other"
        hr, ref, corr = sample
        if lr is None:
            lr = self.lr_chain(hr, rng)
        if s.ref_photometry and kind != "self":
            ref = REFERENCE_PHOTOMETRY(ref, rng)
        if rng.random() < 0.5:  # mirror target and reference together; the correspondences follow
            hr, lr, ref = hr[:, ::-1], lr[:, ::-1], ref[:, ::-1]
            corr = corr[:, ::-1].copy()
            valid = corr[..., 0] >= 0
            corr[valid, 1] = s.ref_patch // SCALE - 1 - corr[valid, 1]
        out = make_sample(np.ascontiguousarray(hr), np.ascontiguousarray(ref), np.ascontiguousarray(lr))
        out["corr"] = torch.from_numpy(np.ascontiguousarray(corr))
        out["kind"] = torch.tensor(SAMPLE_KINDS.index(kind))
        return out

    def _own_lr_view(self, photo: np.ndarray, rng: np.random.Generator
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The target's own LR↑ as its reference: a ref_patch region degraded once, the target at its centre.

        The region's LR is made by the LR pipeline and the target's LR is its centre, so target and
        reference carry the very same damage, as LR↑ does when it stands in for a reference.
        → (hr, ref, corr of -1s: nothing to transfer, lr).
        """
        s = self.settings
        side, inset = s.ref_patch, (s.ref_patch - s.patch) // 2 // 8 * 8  # inset on JPEG's 8-px LR grid ×4
        ph, pw = photo.shape[:2]
        tries = [(int(rng.uniform(0, ph - side)), int(rng.uniform(0, pw - side))) for _ in range(s.texture_tries)]
        y, x = max(tries, key=lambda t: _detail(photo[t[0] + inset : t[0] + inset + s.patch,
                                                      t[1] + inset : t[1] + inset + s.patch]))
        region = np.ascontiguousarray(photo[y : y + side, x : x + side])
        region_lr = self.lr_chain(region, rng)
        lr_inset, lr_side = inset // SCALE, s.patch // SCALE
        lr = np.ascontiguousarray(region_lr[lr_inset : lr_inset + lr_side, lr_inset : lr_inset + lr_side])
        hr = np.ascontiguousarray(region[inset : inset + s.patch, inset : inset + s.patch])
        ref = resize_bicubic(region_lr, side, side)
        corr = np.full((s.patch // SCALE, s.patch // SCALE, 2), -1, dtype=np.int64)
        return hr, ref, corr, lr

    def _target(self, photo: np.ndarray, rng: np.random.Generator, scale: float) -> tuple[np.ndarray, float, float]:
        """An HR crop of the photo reduced by ``scale`` (≤ 1) and its top-left corner in photo pixels."""
        s = self.settings
        span = s.patch / scale  # photo pixels under the crop
        ph, pw = photo.shape[:2]
        tries = [(rng.uniform(0, ph - span), rng.uniform(0, pw - span)) for _ in range(s.texture_tries)]
        y, x = max(tries, key=lambda t: _detail(photo[int(t[0]) : int(t[0] + span), int(t[1]) : int(t[1] + span)]))
        y, x = float(int(y)), float(int(x))
        region = photo[int(y) : int(y) + math.ceil(span), int(x) : int(x) + math.ceil(span)]
        if scale >= 0.999:
            return np.ascontiguousarray(region[: s.patch, : s.patch]), y, x
        im = Image.fromarray(region).resize((s.patch, s.patch), Image.Resampling.LANCZOS,
                                            box=(0, 0, span, span))
        return np.asarray(im), y, x

    def _same_photo(self, photo: np.ndarray, rng: np.random.Generator, view: ViewSettings
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        s = self.settings
        lo, hi = math.log(view.zoom[0]), math.log(view.zoom[1])
        zoom = math.exp(rng.uniform(lo, hi))
        t = min(1.0, 1.0 / zoom)  # target pixels per photo pixel; the reference samples the photo at zoom·t ≤ 1
        if min(photo.shape[:2]) < s.patch / t * 1.05:
            return None
        hr, y, x = self._target(photo, rng, t)
        centre = (x + s.patch / t / 2, y + s.patch / t / 2)
        fixed = ViewSettings(zoom=(zoom * t, zoom * t), rotation_deg=view.rotation_deg, tilt=view.tilt, offset=view.offset)
        ref_to_photo = sample_view(rng, fixed, centre, round(s.patch / t), s.ref_patch, photo.shape[:2])
        if ref_to_photo is None:
            return None
        target_to_photo = np.array([[1 / t, 0, x], [0, 1 / t, y], [0, 0, 1]])
        corr = correspondences(np.linalg.inv(ref_to_photo) @ target_to_photo, (s.patch // SCALE,) * 2,
                               (s.ref_patch // SCALE,) * 2)
        if (corr[..., 0] >= 0).mean() < s.min_overlap:
            return None
        return hr, _view(photo, ref_to_photo, s.ref_patch), corr

    def _other_photo(self, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s = self.settings
        photo = self.photos[k]
        hr, _, _ = self._target(photo, rng, 1.0)
        # With a single photo (a small validation set) "another photo" is a random region of it.
        other = self.photos[(k + 1 + int(rng.integers(max(1, len(self.photos) - 1)))) % len(self.photos)]
        oh, ow = other.shape[:2]
        ref_to_photo = None
        for _ in range(5):
            ref_to_photo = sample_view(rng, FAR_VIEW, (rng.uniform(0, ow), rng.uniform(0, oh)), s.patch, s.ref_patch, (oh, ow))
            if ref_to_photo is not None:
                break
        if ref_to_photo is None:  # a plain crop always fits: photos are at least 1.2 × ref_patch
            y0, x0 = rng.uniform(0, oh - s.ref_patch), rng.uniform(0, ow - s.ref_patch)
            ref_to_photo = np.array([[1.0, 0, x0], [0, 1.0, y0], [0, 0, 1]])
        corr = np.full((s.patch // SCALE, s.patch // SCALE, 2), -1, dtype=np.int64)
        return hr, _view(other, ref_to_photo, s.ref_patch), corr


class CUFEDPairs(Dataset):
    """The CUFED training layout: ``input/NNN.png`` (HR, 160×160) beside ``ref/NNN.png``."""

    def __init__(self, root: str | Path) -> None:
        root = Path(root)
        inputs, refs = root / "input", root / "ref"
        if not inputs.is_dir() or not refs.is_dir():
            raise ValueError(f"{root} is not a CUFED training folder (expected input/ and ref/)")
        self.pairs = [(p, refs / p.name) for p in sorted(inputs.iterdir()) if (refs / p.name).is_file()]
        if not self.pairs:
            raise ValueError(f"no input/ref pairs with matching names under {root}")

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        hr_path, ref_path = self.pairs[index]
        hr, ref = (np.asarray(Image.open(p).convert("RGB")) for p in (hr_path, ref_path))
        hr = hr[: hr.shape[0] // SCALE * SCALE, : hr.shape[1] // SCALE * SCALE]
        ref = ref[: ref.shape[0] // SCALE * SCALE, : ref.shape[1] // SCALE * SCALE]
        return make_sample(np.ascontiguousarray(hr), np.ascontiguousarray(ref))
