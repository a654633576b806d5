"""Encoded references kept across targets: an album's few high-resolution photos serve many targets.

Encoding a reference (bicubic ↓↑, the texture extractor on Ref and on Ref↓↑, the texture tables the
transfer gathers from) depends only on the fitted reference pixels, the weights, the device and the
precision. When the next target picks the same reference at the same fitted size (photos of one
camera), all of it is reused: for the compact model and a 1920×1440 reference about 1 s of a ~9 s
enhancement on 2 cores. Entries are evicted least-recently-used under a byte budget that is checked
*before* encoding, so the cache never holds more than its budget beside one encoding in progress.
"""
from __future__ import annotations

import hashlib
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ttsr_core.model.net import TTSR, EncodedReferences


def _digest(image: np.ndarray) -> tuple[tuple[int, ...], str]:
    return tuple(image.shape), hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=16).hexdigest()


def _weights_version(model: TTSR) -> tuple[tuple[int, int], ...]:
    """Changes whenever the texture extractor's weights are replaced or updated in place (training)."""
    return tuple((p.data_ptr(), p._version) for p in model.LTE.parameters())


def encoded_bytes(model: TTSR, refs: Sequence[np.ndarray]) -> int:
    """Bytes of the encoded references in float32, texture tables included, from the fitted sizes alone.

    Per reference of H×W (K = HW/16 lv3 positions): values c1·HW + c2·HW/4 + c3·K, keys c3·K; the
    tables hold each value map again as one row per lv3 position of all references, plus a zero row.
    Half precision takes less: this is an upper bound.
    """
    c1, c2, c3 = model.config.lte_channels
    positions = sum((r.shape[0] // 4) * (r.shape[1] // 4) for r in refs)
    per_position = 16 * c1 + 4 * c2 + c3  # one lv3 position's share of the three value maps
    return 4 * (positions * (per_position + c3) + (positions + 1) * per_position)


@dataclass
class _Entry:
    model: weakref.ReferenceType[TTSR]
    version: tuple[tuple[int, int], ...]
    encoded: EncodedReferences
    nbytes: int


class ReferenceCache:
    """Least-recently-used encoded references of one process, within ``max_bytes`` (0 keeps nothing)."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be ≥ 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def encoded(
        self,
        model: TTSR,
        refs: Sequence[np.ndarray],
        context: tuple,
        encode: Callable[[], EncodedReferences],
    ) -> EncodedReferences:
        """The encoding of ``refs`` (uint8 arrays as fitted) by ``model``: cached, else ``encode()``.

        ``context``: whatever else the encoding depends on (device, precision).
        """
        key = (context, tuple(_digest(r) for r in refs))
        version = _weights_version(model)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.model() is model and entry.version == version:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry.encoded
            self.misses += 1
            if entry is not None:
                del self._entries[key]  # another model, or its weights changed
            size = encoded_bytes(model, refs)
            keep = size <= self.max_bytes
            if keep:
                while self._entries and self.nbytes + size > self.max_bytes:
                    self._entries.popitem(last=False)
        encoded = encode()
        if keep:
            with self._lock:
                self._entries[key] = _Entry(weakref.ref(model), version, encoded, size)
        return encoded

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
