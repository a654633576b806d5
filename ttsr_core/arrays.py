"""uint8 RGB arrays as the paper's data pipeline treats them: validation and PIL bicubic resizing (no torch)."""
from __future__ import annotations

import numpy as np
from PIL import Image


def check_rgb(image: np.ndarray, name: str) -> np.ndarray:
    """Validate an (H, W, 3) uint8 array; raise TypeError/ValueError naming the problem."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise TypeError(f"{name} must be uint8 RGB, got dtype {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name} must have shape (H, W, 3), got {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{name} is empty: shape {image.shape}")
    return image


def resize_bicubic(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """PIL bicubic resize of a uint8 RGB array (the paper's data pipeline uses PIL's bicubic)."""
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BICUBIC))
