"""What a process holds for the runs it serves: database sessions, the device, the model, the embedder, vector indexes.

A flow or task gets them with :func:`resources_for` from its Settings: built on first use in each
process and kept there, so the task threads of a run (or, with a distributed runner, the tasks a
worker process is given) share one engine, one copy of the weights and one embedder. Nothing heavy
happens until it is asked for: the commands that only read the database never import torch.
"""

from __future__ import annotations

import contextlib
import logging
import re
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session, sessionmaker

from db.engine import init_db, make_session_factory
from db.locks import file_lock
from flows.options import Affects, names
from flows.settings import DeviceChoice, Settings, check_precision_on
from pipeline.embedding.registry import Embedder, EmbedderKind, EmbedderSettings, make_embedder
from ttsr_core.config import Precision

if TYPE_CHECKING:
    from pipeline.embedding.vector_index import VectorIndex
    from ttsr_core.model.checkpoint import LoadedCheckpoint
    from ttsr_core.model.reference_cache import ReferenceCache

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceSpec:
    """A resolved device and the mixed precision used on it."""

    name: str  # "cpu", "cuda"
    amp_dtype: Precision | None


def _gpu_lock_path() -> Path:
    """This machine's lock file for the current CUDA device, by UUID (indexes change with CUDA_VISIBLE_DEVICES)."""
    import torch

    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    name = str(props.uuid)
    return Path(tempfile.gettempdir()) / "refsr-gpu-locks" / f"{re.sub(r'[^A-Za-z0-9._-]+', '-', name)}.lock"


def device_spec(choice: DeviceChoice, precision: Precision | None = None) -> DeviceSpec:
    """The device (``ttsr_core.device.resolve_device``) and its autocast: CUDA in bf16 where supported, else fp16; CPU in float32.

    ``precision`` overrides the device's default autocast (float32 = none).
    """
    from ttsr_core.device import cpu_has_native_bf16, default_amp, resolve_device

    device = resolve_device(choice.value)
    amp = default_amp(device) if precision is None else None if precision is Precision.FLOAT32 else precision
    check_precision_on(device.type, amp)  # as given it was checked already; "auto" may have become a CPU
    if device.type == "cpu" and amp is Precision.BFLOAT16 and not cpu_has_native_bf16():
        logger.warning("this CPU has no native bf16 (avx512_bf16 or AMX): bf16 products are emulated and "
                       "much slower than float32; drop --precision bfloat16")
    return DeviceSpec(device.type, amp)


@dataclass(frozen=True)
class ResourceSpec:
    """The settings that decide which resources a process holds; runs that agree on them share them.

    Only these (declared with ``Affects.RESOURCES``), not the whole Settings: a flag like --force must
    not make a second copy of the model. CLIP's weights reach the embedder inside `embedder_settings`.
    """

    database_url: str
    model_path: Path
    device: DeviceChoice
    precision: Precision | None
    embedder: EmbedderKind
    embedder_settings: EmbedderSettings
    device_slots: int
    reference_cache_mb: int

    @classmethod
    def of(cls, settings: Settings) -> ResourceSpec:
        values = {name: getattr(settings, name) for name in names(Settings, Affects.RESOURCES) - {"clip_weights"}}
        values["model_path"] = Path(settings.model_path).resolve()
        return cls(**values, embedder_settings=settings.embedder_settings())


class Resources:
    """One process's database sessions, device, model, embedder, device slots and vector indexes."""

    def __init__(self, spec: ResourceSpec) -> None:
        self.spec = spec
        self._lock = threading.RLock()
        self._sessions: sessionmaker[Session] | None = None
        self._device: DeviceSpec | None = None
        self._model: tuple[tuple[int, int], LoadedCheckpoint] | None = None  # (file mtime, size), checkpoint
        self._embedder: Embedder | None = None
        self._reference_cache: ReferenceCache | None = None
        # Task threads share one copy of the weights; CPU kernels already use every core and a GPU runs
        # one big inference best, so more model calls at once would only add memory and contention.
        self._slots = threading.BoundedSemaphore(spec.device_slots)
        self._indexes: dict[Path, tuple[tuple[int, int], VectorIndex]] = {}
        self._db_indexes: dict[tuple[int, str], tuple[object, VectorIndex | None]] = {}

    @property
    def sessions(self) -> sessionmaker[Session]:
        """Session factory of the database, migrated to head on first use."""
        with self._lock:
            if self._sessions is None:
                self._sessions = make_session_factory(init_db(self.spec.database_url))
            return self._sessions

    def reference_cache(self) -> ReferenceCache:
        """Encoded references shared by this process's enhancements; a reloaded model never hits the old ones."""
        with self._lock:
            if self._reference_cache is None:
                from ttsr_core.model.reference_cache import ReferenceCache

                self._reference_cache = ReferenceCache(self.spec.reference_cache_mb * 2**20)
            return self._reference_cache

    @property
    def device(self) -> DeviceSpec:
        with self._lock:
            if self._device is None:
                self._device = device_spec(self.spec.device, self.spec.precision)
            return self._device

    def model(self) -> LoadedCheckpoint:
        """The checkpoint, loaded on this device and prepared for inference; loaded again if the file changes."""
        st = self.spec.model_path.stat()
        version = (st.st_mtime_ns, st.st_size)
        with self._lock:
            if self._model is None or self._model[0] != version:
                import torch  # only for the commands that run a model

                from ttsr_core.model.checkpoint import load_checkpoint
                from ttsr_core.model.inference import prepare_for_inference

                logger.info("loading TTSR checkpoint %s on %s", self.spec.model_path, self.device.name)
                loaded = load_checkpoint(self.spec.model_path, device=self.device.name)
                prepare_for_inference(loaded.model, torch.device(self.device.name))
                self._model = (version, loaded)
            return self._model[1]

    @property
    def embedder(self) -> Embedder:
        with self._lock:
            if self._embedder is None:
                self._embedder = make_embedder(self.spec.embedder, self.spec.embedder_settings)
            return self._embedder

    @contextlib.contextmanager
    def device_slot(self) -> Iterator[None]:
        """Hold one of the process's model slots for the block; on a GPU, the device itself too.

        Several worker processes (Dask's `--nworkers`, or two `refsr` runs) may share one GPU; a
        flock named after the device's UUID lets one model call at a time onto it across all of
        them, which the GPU runs best and which keeps its memory for one enhancement.
        """
        with self._slots:
            if self.device.name != "cuda":
                yield
                return
            with file_lock(_gpu_lock_path()):
                yield

    def vector_index(self, path: Path, embedder_key: str) -> VectorIndex | None:
        """The album's FAISS index as saved now (read again when the file is replaced), or None if absent."""
        from pipeline.embedding.vector_index import IndexMismatch, VectorIndex

        path = Path(path)
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        version = (st.st_mtime_ns, st.st_size)
        with self._lock:
            cached = self._indexes.get(path)
            if cached is not None and cached[0] == version:
                return cached[1]
        try:
            index = VectorIndex.load(path, embedder_key)
        except IndexMismatch as exc:
            logger.warning("vector index %s unusable (%s)", path, exc)
            return None
        with self._lock:
            self._indexes[path] = (version, index)
        return index


    def database_index(self, album_id: int, embedder_key: str, version: object) -> VectorIndex | None:
        """The album's reference vectors as an in-memory index, built from the database once per `version`.

        For a worker that cannot read the flow machine's index file: the database is the source of
        truth, and `version` (the run) tells when the album may have changed.
        """
        import numpy as np

        from db import queries
        from db.models import PhotoRole
        from pipeline.embedding.vector_index import VectorIndex

        slot = (album_id, embedder_key)
        with self._lock:
            cached = self._db_indexes.get(slot)
            if cached is not None and cached[0] == version:
                return cached[1]
        with self.sessions() as session:
            rows = queries.embeddings_for_album(session, album_id, embedder_key, role=PhotoRole.reference)
        index = None
        if rows:
            ids = np.array([r.photo_id for r in rows], dtype=np.int64)
            index = VectorIndex.build(ids, np.stack([np.frombuffer(r.vector, dtype="<f4") for r in rows]),
                                      embedder_key)
        with self._lock:
            self._db_indexes[slot] = (version, index)
        return index


# Resource sets a process keeps, least recently used dropped first. Each may hold a model, an
# embedder and a reference cache, so a long-running `refsr serve` asked for many models would
# otherwise keep every one it ever loaded; two covers a run alternating between two settings.
MAX_HELD = 2
_registry_lock = threading.Lock()
_per_process: OrderedDict[ResourceSpec, Resources] = OrderedDict()  # the one cache, most recent last


def resources_for(settings: Settings) -> Resources:
    """This process's Resources for `settings`: built on the first call, the same object while it is held."""
    return held(ResourceSpec.of(settings))


def held(spec: ResourceSpec) -> Resources:
    """The Resources for `spec`, built if absent; the least recently used beyond MAX_HELD are let go.

    A task still working with a dropped Resources keeps it alive until it finishes; the process frees
    its model once nothing refers to it.
    """
    with _registry_lock:
        res = _per_process.get(spec)
        if res is None:
            res = _per_process[spec] = Resources(spec)
        _per_process.move_to_end(spec)
        while len(_per_process) > MAX_HELD:
            dropped, _ = _per_process.popitem(last=False)
            logger.info("letting go of the resources for %s (%s held at most)", dropped.model_path.name, MAX_HELD)
        return res
