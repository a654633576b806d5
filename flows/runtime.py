"""Per-process resources shared by a flow's task threads: database, model, embedder, device slots, locks."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from db.engine import init_db, make_session_factory
from flows.settings import DeviceChoice, Settings
from pipeline.embedders import Embedder, EmbedderSettings, make_embedder

if TYPE_CHECKING:
    from ttsr_core.checkpoint import LoadedCheckpoint

logger = logging.getLogger(__name__)

FAULT_ENV = "REFSR_FAULT_INJECT"  # tests only: "<phase>:<n>" → os._exit(137) at the n-th <phase>

# Caches keyed by everything that identifies the resource. They hold connections and weights, not
# settings: each flow still receives its Settings explicitly.
_lock = threading.Lock()
_databases: dict[str, tuple[Engine, sessionmaker[Session]]] = {}
_models: dict[tuple[str, int, int, str], LoadedCheckpoint] = {}
_embedders: dict[str, Embedder] = {}
_slots: dict[tuple[str, int], threading.BoundedSemaphore] = {}
_fault_counts: dict[str, int] = {}


def database(url: str) -> sessionmaker[Session]:
    """Session factory for `url`, migrated to head once per process."""
    with _lock:
        if url not in _databases:
            engine = init_db(url)
            _databases[url] = (engine, make_session_factory(engine))
        return _databases[url][1]


def dispose_databases() -> None:
    """Close pooled connections (tests, and before a process forks)."""
    with _lock:
        for engine, _ in _databases.values():
            engine.dispose()
        _databases.clear()


@dataclass(frozen=True)
class DeviceSpec:
    """A resolved device and the mixed precision used on it."""

    name: str  # "cpu", "cuda"
    amp_dtype: str | None


def resolve_device(choice: DeviceChoice) -> DeviceSpec:
    """auto → CUDA (bf16 autocast where supported, else fp16) when present, else CPU in float32."""
    import torch

    from ttsr_core.inference import resolve_device as resolve_torch_device

    if resolve_torch_device(choice.value).type != "cuda":
        return DeviceSpec("cpu", None)
    return DeviceSpec("cuda", "bfloat16" if torch.cuda.is_bf16_supported() else "float16")


def model(path: Path, device: str) -> LoadedCheckpoint:
    """The checkpoint at `path` on `device`, loaded once per process (re-read if the file changes)."""
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size, device)
    with _lock:
        if key not in _models:
            from ttsr_core.checkpoint import load_checkpoint  # torch: imported by the commands that run a model

            logger.info("loading TTSR checkpoint %s on %s", path, device)
            _models[key] = load_checkpoint(path, device=device)
        return _models[key]


def embedder(settings: Settings) -> Embedder:
    """The embedder the settings ask for, built once per process."""
    with _lock:
        key = settings.embedder.value
        if key not in _embedders:
            _embedders[key] = make_embedder(settings.embedder, EmbedderSettings())
        return _embedders[key]


@contextlib.contextmanager
def device_slot(device: str, slots: int) -> Iterator[None]:
    """Hold one of `slots` model slots of `device` in this process.

    Task threads share one copy of the weights; CPU kernels already use every core and a GPU runs
    one big inference best, so more than one at a time only adds memory and contention.
    """
    with _lock:
        sem = _slots.setdefault((device, slots), threading.BoundedSemaphore(slots))
    with sem:
        yield


def fault_point(phase: str) -> None:
    """Crash-test hook: with REFSR_FAULT_INJECT="<phase>:<n>", the n-th call at <phase> kills the process.

    os._exit skips every handler and finally block, like SIGKILL or a power cut would.
    "<phase>:<n>:pause" sleeps 5 s there instead, like a long enhancement, for a test to signal into.
    """
    spec = os.environ.get(FAULT_ENV, "")
    if not spec:
        return
    want, _, rest = spec.partition(":")
    count, _, action = rest.partition(":")
    if want != phase:
        return
    with _lock:
        _fault_counts[phase] = _fault_counts.get(phase, 0) + 1
        hit = _fault_counts[phase] == int(count or 1)
    if hit and action == "pause":
        logger.error("fault injection: pausing at %s #%s", phase, count or 1)
        time.sleep(5)
    elif hit:
        logger.error("fault injection: exiting at %s #%s", phase, count)
        os._exit(137)


# -- process identity, so a later run can tell a dead run from a live one ---------------------


def _start_ticks(pid: int) -> int | None:
    """Process start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22; the command name (field 2) may hold spaces, so split after its closing parenthesis.
    return int(stat.rpartition(")")[2].split()[19])


def process_identity() -> dict[str, object]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "start_ticks": _start_ticks(os.getpid())}


def is_alive(identity: dict[str, object] | None) -> bool | None:
    """True/False for a process on this host; None when it ran elsewhere (or we cannot tell)."""
    if not identity or identity.get("host") != socket.gethostname():
        return None
    pid = identity.get("pid")
    if not isinstance(pid, int):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    ticks = identity.get("start_ticks")
    return ticks is None or _start_ticks(pid) in (None, ticks)


_indexes: dict[tuple[str, int, int], object] = {}


def vector_index(path: Path, embedder_key: str):  # type: ignore[no-untyped-def]
    """The album's FAISS index as saved now (re-read when the file is replaced), or None if absent."""
    from pipeline.vector_index import IndexMismatch, VectorIndex

    try:
        st = Path(path).stat()
    except FileNotFoundError:
        return None
    key = (str(path), st.st_mtime_ns, st.st_size)
    with _lock:
        cached = _indexes.get(key)
    if cached is not None:
        return cached
    try:
        index = VectorIndex.load(Path(path), embedder_key)
    except IndexMismatch as exc:
        logger.warning("vector index %s unusable (%s)", path, exc)
        return None
    with _lock:
        # One entry per file: a replaced index makes the old one garbage.
        for old in [k for k in _indexes if k[0] == str(path)]:
            del _indexes[old]
        _indexes[key] = index
    return index
