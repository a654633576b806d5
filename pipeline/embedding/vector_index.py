"""FAISS cosine index over photo embeddings, keyed by photo id and tied to one embedder."""

from __future__ import annotations

import enum
import json
import logging
import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from durable.files import atomic_write

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
SIDECAR_SUFFIX = ".meta.json"


class IndexKind(enum.Enum):
    """Exact search for ordinary albums, inverted lists for large ones."""

    FLAT = "flat"
    IVF = "ivf"


class IndexMismatch(ValueError):
    """A stored index cannot serve: missing, unreadable, another embedder or another dimension."""


@dataclass(frozen=True)
class IndexSettings:
    """When to go approximate and how hard to search."""

    ivf_threshold: int = 20_000  # `build` makes an IVF index from this many vectors on
    nprobe: int = 16  # inverted lists visited per query (nlist visits them all: exact)
    nlist: int | None = None  # None: ~4*sqrt(n), the usual faiss rule of thumb
    use_gpu: bool = False  # search a flat index on GPU when faiss-gpu sees one
    seed: int = 1234  # k-means seed, so a rebuild gives the same lists

    def __post_init__(self) -> None:
        if self.ivf_threshold < 1:
            raise ValueError(f"ivf_threshold must be >= 1, got {self.ivf_threshold}")
        if self.nprobe < 1:
            raise ValueError(f"nprobe must be >= 1, got {self.nprobe}")
        if self.nlist is not None and self.nlist < 1:
            raise ValueError(f"nlist must be >= 1, got {self.nlist}")


def sidecar_path(path: Path) -> Path:
    """Where the JSON metadata of the index file `path` lives."""
    return path.with_name(path.name + SIDECAR_SUFFIX)


def _as_ids(ids: Iterable[int] | np.ndarray) -> np.ndarray:
    arr = np.ascontiguousarray(np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids), dtype=np.int64)
    if arr.ndim != 1:
        raise ValueError(f"ids must be one-dimensional, got shape {arr.shape}")
    if (arr < 0).any():
        raise ValueError(f"ids must be >= 0 (-1 is faiss' 'no result'), got {arr[arr < 0][:5].tolist()}")
    return arr


def _as_unit_vectors(vectors: np.ndarray, dim: int) -> np.ndarray:
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"vectors must have shape (n, {dim}), got {np.shape(vectors)}")
    if not np.isfinite(x).all():
        bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
        raise ValueError(f"vectors contain NaN/inf in rows {bad[:5].tolist()}")
    x = np.ascontiguousarray(x.copy())
    norms = np.linalg.norm(x, axis=1)
    if (norms == 0).any():
        raise ValueError(f"vectors contain all-zero rows {np.flatnonzero(norms == 0)[:5].tolist()}")
    faiss.normalize_L2(x)  # inner product of unit vectors == cosine
    return x


class VectorIndex:
    """Cosine top-k over unit vectors with int64 photo ids.

    FLAT: IndexIDMap2(IndexFlatIP), exact. IVF: IndexIVFFlat(METRIC_INNER_PRODUCT) holding the
    ids itself with a hash-table direct map — IndexIDMap2 around an IVF index is not used because
    its remove_ids compacts the id map while the inverted lists keep their old internal numbers,
    which silently returns the wrong ids after a removal.
    """

    def __init__(self, key: str, dim: int, settings: IndexSettings = IndexSettings(),
                 _index: faiss.Index | None = None) -> None:
        if not key:
            raise ValueError(f"embedder key must be non-empty, got {key!r}")
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.key = key
        self.dim = dim
        self.settings = settings
        self._index = _index if _index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._gpu_index: faiss.Index | None = None  # search-only clone, dropped on every change
        if self.kind is IndexKind.IVF:
            self._ivf().nprobe = settings.nprobe

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def build(cls, ids: Iterable[int] | np.ndarray, vectors: np.ndarray, key: str,
              settings: IndexSettings = IndexSettings()) -> VectorIndex:
        """Index (n,) ids with (n, dim) vectors; IVF when n >= settings.ivf_threshold."""
        ids = _as_ids(ids)
        vectors = np.asarray(vectors)
        if vectors.ndim != 2:
            raise ValueError(f"vectors must have shape (n, dim), got {vectors.shape}")
        dim = int(vectors.shape[1])
        n = len(ids)
        if n < settings.ivf_threshold:
            index = cls(key, dim, settings)
            index.add(ids, vectors)
            return index
        x = _as_unit_vectors(vectors, dim)
        if len(x) != n:
            raise ValueError(f"{n} ids but {len(x)} vectors")
        # ~4*sqrt(n) lists, but at least 39 training points per list so k-means is meaningful.
        nlist = settings.nlist or max(1, min(int(4 * math.sqrt(n)), n // 39))
        ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.cp.seed = settings.seed
        ivf.train(x)
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # lets remove/reconstruct by id work
        index = cls(key, dim, settings, _index=ivf)
        index.add(ids, x)
        logger.info("built IVF index: %d vectors, nlist=%d, nprobe=%d", n, nlist, settings.nprobe)
        return index

    # -- properties ---------------------------------------------------------------------------

    @property
    def kind(self) -> IndexKind:
        return IndexKind.IVF if isinstance(self._index, faiss.IndexIVF) else IndexKind.FLAT

    @property
    def nlist(self) -> int | None:
        return int(self._ivf().nlist) if self.kind is IndexKind.IVF else None

    def _ivf(self) -> faiss.IndexIVFFlat:
        return faiss.extract_index_ivf(self._index)

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def ids(self) -> np.ndarray:
        """(n,) int64 ids currently held (flat: insertion order; IVF: by inverted list)."""
        if self.kind is IndexKind.FLAT:
            return faiss.vector_to_array(self._index.id_map).astype(np.int64)
        invlists = self._ivf().invlists
        parts = []
        for lst in range(invlists.nlist):
            size = invlists.list_size(lst)
            if size:
                parts.append(faiss.rev_swig_ptr(invlists.get_ids(lst), size).copy())
        return np.concatenate(parts).astype(np.int64) if parts else np.empty(0, dtype=np.int64)

    def __contains__(self, photo_id: int) -> bool:
        return bool(np.isin(int(photo_id), self.ids()))

    # -- mutation -----------------------------------------------------------------------------

    def add(self, ids: Iterable[int] | np.ndarray, vectors: np.ndarray) -> None:
        """Add (n,) new ids with (n, dim) vectors (normalised here). Ids already present -> ValueError."""
        ids = _as_ids(ids)
        x = _as_unit_vectors(vectors, self.dim)
        if len(ids) != len(x):
            raise ValueError(f"{len(ids)} ids but {len(x)} vectors")
        if len(np.unique(ids)) != len(ids):
            raise ValueError(f"duplicate ids in one add: {ids[np.unique(ids, return_counts=True)[1] > 1][:5]}")
        if len(self):
            dup = np.intersect1d(ids, self.ids())
            if dup.size:
                raise ValueError(f"ids already indexed (remove them first): {dup[:5].tolist()}")
        self._index.add_with_ids(x, ids)
        self._gpu_index = None

    def remove(self, ids: Iterable[int] | np.ndarray) -> int:
        """Remove ids (missing ones are ignored); returns how many were removed."""
        ids = _as_ids(ids)
        if not len(ids):
            return 0
        if self.kind is IndexKind.IVF:
            # The hash-table direct map only accepts an explicit array of ids.
            removed = int(self._index.remove_ids(faiss.IDSelectorArray(len(ids), faiss.swig_ptr(ids))))
        else:
            removed = int(self._index.remove_ids(faiss.IDSelectorBatch(ids)))
        self._gpu_index = None
        return removed

    def reconstruct(self, photo_id: int) -> np.ndarray:
        """(dim,) stored unit vector of one id; KeyError when absent."""
        try:
            return self._index.reconstruct(int(photo_id))
        except RuntimeError as exc:
            raise KeyError(photo_id) from exc

    def stale(self, ids: Iterable[int] | np.ndarray, vectors: np.ndarray, atol: float = 1e-5) -> list[int]:
        """Those of (n,) held ids whose stored vector is not their row of (n, dim) ``vectors`` (normalised here).

        A photo keeps its id when its file is replaced in place; only its vector tells the entry is old.
        """
        ids = _as_ids(ids)
        x = _as_unit_vectors(vectors, self.dim) if len(ids) else np.empty((0, self.dim), np.float32)
        if len(ids) != len(x):
            raise ValueError(f"{len(ids)} ids but {len(x)} vectors")
        return [int(i) for i, v in zip(ids.tolist(), x) if not np.allclose(self.reconstruct(i), v, atol=atol)]

    # -- search -------------------------------------------------------------------------------

    def search(self, vectors: np.ndarray, k: int,
               exclude_ids: Collection[int] | Sequence[Collection[int]] = ()) -> tuple[np.ndarray, np.ndarray]:
        """Top-k cosine neighbours of (nq, dim) queries -> scores float32 (nq, k), ids int64 (nq, k).

        `exclude_ids` is either one collection of ids dropped for every query, or one
        collection per query (e.g. each query photo's own id). Slots with no result hold id -1
        and score -inf, also when fewer than k ids remain.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        q = _as_unit_vectors(vectors, self.dim)
        nq = len(q)
        per_query = self._per_query_exclusions(exclude_ids, nq)
        n_excl = max((len(e) for e in per_query), default=0)
        scores = np.full((nq, k), -np.inf, dtype=np.float32)
        out_ids = np.full((nq, k), -1, dtype=np.int64)
        if len(self) == 0:
            return scores, out_ids
        # Over-fetch by the number of exclusions so filtering afterwards still leaves k results;
        # works the same on CPU and GPU indexes (GPU search takes no IDSelector).
        fetch = min(k + n_excl, len(self))
        d, i = self._searcher().search(q, fetch)
        if self.kind is IndexKind.FLAT and self._gpu_index is not None:
            i = np.where(i >= 0, self._gpu_id_map[np.maximum(i, 0)], -1)
        for row in range(nq):
            keep = i[row] >= 0
            if per_query[row]:
                keep &= ~np.isin(i[row], np.fromiter(per_query[row], dtype=np.int64))
            got_i, got_d = i[row][keep][:k], d[row][keep][:k]
            out_ids[row, :len(got_i)] = got_i
            scores[row, :len(got_d)] = got_d
        return scores, out_ids

    @staticmethod
    def _per_query_exclusions(exclude_ids: Collection[int] | Sequence[Collection[int]],
                              nq: int) -> list[frozenset[int]]:
        items = list(exclude_ids)
        if not items:
            return [frozenset()] * nq
        if all(isinstance(e, (int, np.integer)) for e in items):
            shared = frozenset(int(e) for e in items)
            return [shared] * nq
        if len(items) != nq or any(isinstance(e, (int, np.integer)) for e in items):
            raise ValueError(f"exclude_ids must be ids, or one collection per query ({nq}), got {exclude_ids!r}")
        return [frozenset(int(e) for e in group) for group in items]

    def _searcher(self) -> faiss.Index:
        if self.kind is IndexKind.IVF:
            self._ivf().nprobe = self.settings.nprobe
            return self._index
        if not (self.settings.use_gpu and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0):
            return self._index
        if self._gpu_index is None:
            # Clone only the flat storage: the id translation stays on the CPU side.
            flat = faiss.downcast_index(self._index.index)
            self._gpu_res = faiss.StandardGpuResources()
            self._gpu_index = faiss.index_cpu_to_gpu(self._gpu_res, 0, flat)
            self._gpu_id_map = faiss.vector_to_array(self._index.id_map).astype(np.int64)
            logger.info("flat index of %d vectors moved to GPU for search", len(self))
        return self._gpu_index

    # -- persistence --------------------------------------------------------------------------

    def metadata(self) -> dict[str, object]:
        return {"format": FORMAT_VERSION, "embedder_key": self.key, "dim": self.dim,
                "kind": self.kind.value, "count": len(self), "nlist": self.nlist}

    def save(self, path: Path) -> None:
        """Write the index and its JSON sidecar atomically (temp file in the same dir, fsync, rename).

        The sidecar is written last and records the count, so a crash between the two renames
        leaves a pair that `load` rejects rather than one that silently mixes.
        """
        path = Path(path)
        atomic_write(path, lambda tmp: faiss.write_index(self._index, str(tmp)))
        meta = json.dumps(self.metadata(), indent=1, sort_keys=True)
        atomic_write(sidecar_path(path), lambda tmp: tmp.write_text(meta, encoding="utf-8"))

    @classmethod
    def load(cls, path: Path, embedder_key: str | None = None,
             settings: IndexSettings = IndexSettings()) -> VectorIndex:
        """Read an index saved by `save`; IndexMismatch when missing, unreadable or of another embedder."""
        path = Path(path)
        meta_path = sidecar_path(path)
        if not path.is_file() or not meta_path.is_file():
            raise IndexMismatch(f"index {path} or its sidecar {meta_path.name} is missing")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            index = faiss.read_index(str(path))
        except (OSError, ValueError, RuntimeError) as exc:
            raise IndexMismatch(f"index {path} is unreadable: {exc}") from exc
        if meta.get("format") != FORMAT_VERSION:
            raise IndexMismatch(f"index {path} has format {meta.get('format')!r}, expected {FORMAT_VERSION}")
        if embedder_key is not None and meta.get("embedder_key") != embedder_key:
            raise IndexMismatch(f"index {path} holds vectors of {meta.get('embedder_key')!r}, not {embedder_key!r}")
        if index.d != meta.get("dim") or index.ntotal != meta.get("count"):
            raise IndexMismatch(f"index {path} (d={index.d}, n={index.ntotal}) disagrees with its sidecar {meta}")
        if not isinstance(index, (faiss.IndexIDMap2, faiss.IndexIVF)):
            raise IndexMismatch(f"index {path} is a {type(index).__name__}, not one this module writes")
        return cls(str(meta["embedder_key"]), int(meta["dim"]), settings, _index=index)
