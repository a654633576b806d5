"""What every image embedder is: the Protocol and the input checks and normalisation they share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Embedder(Protocol):
    """Maps photos to unit vectors; `key` is recorded with every stored vector."""

    @property
    def key(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(N,) uint8 HxWx3 images -> float32 (N, dim), rows L2-normalised."""
        ...


def check_images(images: Sequence[np.ndarray]) -> None:
    """Raise TypeError/ValueError naming the first image that is not uint8 HxWx3 and non-empty."""
    for i, im in enumerate(images):
        if not isinstance(im, np.ndarray):
            raise TypeError(f"image {i} must be a numpy array, got {type(im).__name__}")
        if im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] != 3:
            raise ValueError(f"image {i} must be uint8 HxWx3, got {im.dtype} {im.shape}")
        if im.shape[0] < 1 or im.shape[1] < 1:
            raise ValueError(f"image {i} is empty: {im.shape}")


def l2_normalise(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Rows scaled to unit length; an all-zero row stays zero."""
    n = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(n, 1e-12)
