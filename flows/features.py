"""Local features of album photos, kept on disk by content hash: a photo is described once, then matched many times."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from durable.files import atomic_write
from flows.common import one_line
from pipeline.enhance import stable_hash
from pipeline.matching.verification import LocalFeatures, local_features
from pipeline.params import VerifySettings

logger = logging.getLogger(__name__)


class FeatureCache:
    """`<root>/<xx>/<sha256>-<settings>.npz`; a memo, never the truth (an unreadable file is computed again)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, sha256: str, settings: VerifySettings) -> Path:
        return self.root / sha256[:2] / f"{sha256}-{stable_hash(settings.feature_fingerprint())[:12]}.npz"

    def get(self, sha256: str, load: Callable[[], np.ndarray], settings: VerifySettings) -> LocalFeatures:
        """The features of the photo with content `sha256`; `load()` gives its (H, W, 3) uint8 pixels when not cached."""
        path = self._path(sha256, settings)
        try:
            return LocalFeatures.from_bytes(path.read_bytes())
        except Exception:  # noqa: BLE001 - missing, torn or foreign: computed again below
            pass
        features = local_features(load(), settings)
        data = features.to_bytes()
        try:
            atomic_write(path, lambda tmp: tmp.write_bytes(data))
        except OSError as exc:
            logger.info("features of %s not cached: %s", sha256[:12], one_line(exc))
        return features
