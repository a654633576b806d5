"""Training pairs: self-supervised crops from a folder of HR photos, or the CUFED layout."""
from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageEnhance
from torch.utils.data import Dataset

from .inference import SCALE, resize_bicubic

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"training folder not found: {folder}")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def load_photo(path: Path, max_side: int) -> np.ndarray:
    """RGB uint8 array, downscaled (bicubic) so its long side is at most ``max_side``."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        scale = max_side / max(im.size)
        if scale < 1:
            im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.BICUBIC)
        return np.asarray(im)


def to_model_range(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 → (3, H, W) float32 in [-1, 1]."""
    return torch.from_numpy(np.array(image, dtype=np.float32, copy=True)).permute(2, 0, 1) / 127.5 - 1.0


def make_sample(hr: np.ndarray, ref: np.ndarray) -> dict[str, torch.Tensor]:
    """The paper's five tensors from an HR crop and a reference (both sides multiples of 4)."""
    h, w = hr.shape[:2]
    lr = resize_bicubic(hr, w // SCALE, h // SCALE)
    lr_up = resize_bicubic(lr, w, h)
    rh, rw = ref.shape[:2]
    ref_down_up = resize_bicubic(resize_bicubic(ref, rw // SCALE, rh // SCALE), rw, rh)
    return {
        "lr": to_model_range(lr), "lr_up": to_model_range(lr_up), "hr": to_model_range(hr),
        "ref": to_model_range(ref), "ref_down_up": to_model_range(ref_down_up),
    }


@dataclass(frozen=True)
class PairSettings:
    patch: int = 160  # HR crop side (multiple of 4)
    ref_patch: int = 160  # reference side
    same_photo_prob: float = 0.85  # else the reference is cut from another photo (irrelevant texture)
    max_shift: float = 0.5  # reference centre moves by up to this fraction of the patch
    scale_range: tuple[float, float] = (0.75, 1.33)  # reference zoom relative to the HR crop
    max_rotation_deg: float = 12.0
    colour_jitter: float = 0.15  # brightness / contrast / saturation
    max_side: int = 1600  # photos are held in memory at most this large
    # Best-of-N crop positions by gradient energy: wallpapers are mostly smooth bokeh and sky,
    # where bicubic is already right and a crop teaches nothing. 1 = uniform sampling.
    texture_tries: int = 1

    def __post_init__(self) -> None:
        for name in ("patch", "ref_patch"):
            v = getattr(self, name)
            if v < 12 or v % SCALE:
                raise ValueError(f"{name} must be a multiple of 4 and ≥ 12, got {v}")
        if not 0 <= self.same_photo_prob <= 1:
            raise ValueError(f"same_photo_prob must be in [0, 1], got {self.same_photo_prob}")


def _detail(crop: np.ndarray) -> float:
    """Mean absolute horizontal + vertical gradient of the green channel (a cheap texture measure)."""
    g = crop[::2, ::2, 1].astype(np.int16)
    return float(np.abs(np.diff(g, axis=0)).mean() + np.abs(np.diff(g, axis=1)).mean())


class SelfSupervisedPairs(Dataset):
    """Pairs cut from HR photos: LR = bicubic ↓4 of an HR crop; the reference comes from a shifted,
    rescaled, rotated and colour-jittered neighbourhood of the same photo (or, now and then, from a
    different photo) so the network learns to use relevant texture and to ignore irrelevant texture.

    Epochs are virtual: ``length`` samples, each drawn afresh from the seeded generator of its index.
    """

    def __init__(self, photos: Sequence[np.ndarray], settings: PairSettings = PairSettings(), length: int = 10_000, seed: int = 0) -> None:
        usable = [p for p in photos if min(p.shape[:2]) >= max(settings.patch, settings.ref_patch) * 1.5]
        if not usable:
            raise ValueError(f"need at least one photo larger than {int(max(settings.patch, settings.ref_patch) * 1.5)} px, got none of {len(photos)}")
        self.photos = list(usable)
        self.settings = settings
        self.length = length
        self.seed = seed

    @classmethod
    def from_folder(cls, folder: str | Path, settings: PairSettings = PairSettings(), exclude: Sequence[str] = (), **kw) -> "SelfSupervisedPairs":
        paths = [p for p in list_images(folder) if p.name not in set(exclude)]
        logger.info("loading %d training photos from %s", len(paths), folder)
        return cls([load_photo(p, settings.max_side) for p in paths], settings, **kw)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = random.Random(self.seed * 1_000_003 + index)
        s = self.settings
        k = rng.randrange(len(self.photos))
        photo = self.photos[k]
        ph, pw = photo.shape[:2]
        candidates = [(rng.randrange(ph - s.patch + 1), rng.randrange(pw - s.patch + 1)) for _ in range(max(1, s.texture_tries))]
        y, x = max(candidates, key=lambda c: _detail(photo[c[0] : c[0] + s.patch, c[1] : c[1] + s.patch]))
        hr = photo[y : y + s.patch, x : x + s.patch]
        if rng.random() < s.same_photo_prob:
            cy = y + s.patch / 2 + rng.uniform(-s.max_shift, s.max_shift) * s.patch
            cx = x + s.patch / 2 + rng.uniform(-s.max_shift, s.max_shift) * s.patch
            ref = self._cut(photo, cy, cx, rng)
        else:
            # With a single photo (a small validation set) "another photo" is a random region of it.
            other = self.photos[(k + 1 + rng.randrange(max(1, len(self.photos) - 1))) % len(self.photos)]
            ref = self._cut(other, rng.uniform(0, other.shape[0]), rng.uniform(0, other.shape[1]), rng)
        if rng.random() < 0.5:  # flips keep LR/HR/ref geometry consistent with each other
            hr, ref = hr[:, ::-1], ref[:, ::-1]
        return make_sample(np.ascontiguousarray(hr), np.ascontiguousarray(ref))

    def _cut(self, photo: np.ndarray, cy: float, cx: float, rng: random.Random) -> np.ndarray:
        """A ref_patch² view around (cy, cx), zoomed, rotated and colour-jittered."""
        s = self.settings
        zoom = math.exp(rng.uniform(math.log(s.scale_range[0]), math.log(s.scale_range[1])))
        angle = rng.uniform(-s.max_rotation_deg, s.max_rotation_deg)
        # Cut a window large enough that rotation leaves no empty corners, then rotate and resize.
        side = int(math.ceil(s.ref_patch / zoom * (abs(math.cos(math.radians(angle))) + abs(math.sin(math.radians(angle))))))
        side = min(side, photo.shape[0], photo.shape[1])
        y0 = int(min(max(cy - side / 2, 0), photo.shape[0] - side))
        x0 = int(min(max(cx - side / 2, 0), photo.shape[1] - side))
        im = Image.fromarray(photo[y0 : y0 + side, x0 : x0 + side])
        if angle:
            im = im.rotate(angle, resample=Image.BICUBIC)
        inner = side / (abs(math.cos(math.radians(angle))) + abs(math.sin(math.radians(angle))))
        off = (side - inner) / 2
        im = im.crop((round(off), round(off), round(off + inner), round(off + inner))).resize((s.ref_patch, s.ref_patch), Image.BICUBIC)
        if s.colour_jitter:
            j = s.colour_jitter
            im = ImageEnhance.Brightness(im).enhance(rng.uniform(1 - j, 1 + j))
            im = ImageEnhance.Contrast(im).enhance(rng.uniform(1 - j, 1 + j))
            im = ImageEnhance.Color(im).enhance(rng.uniform(1 - j, 1 + j))
        return np.asarray(im)


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
