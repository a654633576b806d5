"""VectorIndex against a brute-force numpy oracle on seeded data, plus persistence and rebuild."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from pipeline.embedding.vector_index import IndexKind, IndexMismatch, IndexSettings, VectorIndex, sidecar_path

KEY = "fallback:v1"


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered(rng: np.random.Generator, n: int, d: int, centres: int = 50) -> np.ndarray:
    """Unit vectors around a few centres: the structure real embeddings have and IVF relies on."""
    c = unit(rng, centres, d)
    return c[rng.integers(0, centres, n)] + 0.35 * unit(rng, n, d) / np.sqrt(2)


def oracle(base: np.ndarray, base_ids: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    b = base / np.linalg.norm(base, axis=1, keepdims=True)
    qq = q / np.linalg.norm(q, axis=1, keepdims=True)
    s = qq @ b.T  # (nq, n) cosine
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, axis=1), base_ids[order]


def test_flat_matches_oracle_exactly() -> None:
    rng = np.random.default_rng(0)
    x, q = rng.standard_normal((500, 24)) * 3, rng.standard_normal((20, 24))  # not normalised on purpose
    ids = rng.permutation(10_000)[:500].astype(np.int64)
    index = VectorIndex.build(ids, x, KEY)
    assert index.kind is IndexKind.FLAT and len(index) == 500
    scores, got = index.search(q, 10)
    want_s, want_i = oracle(x, ids, q, 10)
    np.testing.assert_array_equal(got, want_i)
    np.testing.assert_allclose(scores, want_s, atol=1e-5)


def test_ivf_full_probe_matches_oracle_and_small_probe_recall() -> None:
    rng = np.random.default_rng(1)
    n, d = 4000, 32
    x, q = clustered(rng, n, d), clustered(rng, 50, d)
    ids = np.arange(n, dtype=np.int64) * 3 + 11
    index = VectorIndex.build(ids, x, KEY, IndexSettings(ivf_threshold=1000, nprobe=4))
    assert index.kind is IndexKind.IVF and len(index) == n
    nlist = index.nlist
    assert nlist == min(int(4 * np.sqrt(n)), n // 39)  # ~4*sqrt(n), capped so each list trains on >= 39 points
    want_s, want_i = oracle(x, ids, q, 10)

    exact = VectorIndex.build(ids, x, KEY, IndexSettings(ivf_threshold=1000, nprobe=nlist))
    s, i = exact.search(q, 10)
    np.testing.assert_array_equal(i, want_i)
    np.testing.assert_allclose(s, want_s, atol=1e-5)

    _, approx = index.search(q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(approx, want_i)])
    assert recall >= 0.9, recall


@pytest.mark.parametrize("threshold", [10_000, 100], ids=["flat", "ivf"])
def test_exclusion_remove_and_padding(threshold: int) -> None:
    rng = np.random.default_rng(2)
    x = unit(rng, 400, 16)
    ids = np.arange(400, dtype=np.int64) + 1000
    index = VectorIndex.build(ids, x, KEY, IndexSettings(ivf_threshold=threshold, nprobe=10_000))
    # Each photo searching with itself excluded: never itself, otherwise the oracle's next 5.
    s, got = index.search(x[:8], 5, exclude_ids=[[i] for i in ids[:8]])
    assert not np.isin(ids[:8], got).any()
    _, want = oracle(x, ids, x[:8], 6)
    np.testing.assert_array_equal(got, want[:, 1:])
    # One shared exclusion list.
    _, got = index.search(x[:1], 3, exclude_ids=[int(ids[0]), int(want[0, 1])])
    np.testing.assert_array_equal(got[0], want[0, 2:5])

    removed = ids[::2]
    assert index.remove(removed) == 200 and len(index) == 200
    assert set(index.ids().tolist()) == set(ids[1::2].tolist())
    s, got = index.search(x[:10], 10)
    _, want = oracle(x[1::2], ids[1::2], x[:10], 10)
    np.testing.assert_array_equal(got, want)  # ids still map to the right vectors after removal

    small = VectorIndex.build(ids[:3], x[:3], KEY)
    s, got = small.search(x[:1], 5, exclude_ids=[int(ids[0])])
    assert got[0, :2].tolist() != [-1, -1] and got[0, 2:].tolist() == [-1, -1, -1]
    assert np.isneginf(s[0, 2:]).all()


def test_add_validates_input() -> None:
    index = VectorIndex(KEY, 8)
    with pytest.raises(ValueError, match=r"\(n, 8\)"):
        index.add([1], np.ones((1, 9), np.float32))
    bad = np.ones((2, 8), np.float32)
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        index.add([1, 2], bad)
    index.add([1], np.ones((1, 8)))
    with pytest.raises(ValueError, match=r"\[1\]"):
        index.add([1], np.ones((1, 8)))
    with pytest.raises(ValueError, match="-1"):
        index.add([-1], np.ones((1, 8)))
    np.testing.assert_allclose(np.linalg.norm(index.reconstruct(1)), 1.0, atol=1e-6)


@pytest.mark.parametrize("threshold", [10_000, 100], ids=["flat", "ivf"])
def test_save_load_round_trip_is_atomic(tmp_path: Path, threshold: int) -> None:
    rng = np.random.default_rng(3)
    x, ids = unit(rng, 300, 16), np.arange(300, dtype=np.int64) * 7
    index = VectorIndex.build(ids, x, KEY, IndexSettings(ivf_threshold=threshold))
    path = tmp_path / "album.faiss"
    index.save(path)
    index.save(path)  # overwriting goes through the same rename
    assert sorted(os.listdir(tmp_path)) == ["album.faiss", "album.faiss.meta.json"]
    meta = json.loads(sidecar_path(path).read_text())
    assert meta["embedder_key"] == KEY and meta["dim"] == 16 and meta["count"] == 300
    loaded = VectorIndex.load(path, KEY, IndexSettings(ivf_threshold=threshold))
    assert loaded.kind is index.kind and loaded.key == KEY
    np.testing.assert_array_equal(np.sort(loaded.ids()), np.sort(ids))
    a, b = index.search(x[:5], 7), loaded.search(x[:5], 7)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_allclose(a[0], b[0])
    with pytest.raises(IndexMismatch, match="clip:other"):
        VectorIndex.load(path, "clip:other")


def test_load_refuses_a_missing_or_unreadable_file(tmp_path: Path) -> None:
    # The flows rebuild from the database on IndexMismatch: it must be raised, never a faiss crash.
    rng = np.random.default_rng(4)
    path = tmp_path / "sub" / "album.faiss"
    with pytest.raises(IndexMismatch, match="missing"):
        VectorIndex.load(path, KEY)
    VectorIndex.build(np.arange(50) + 1, unit(rng, 50, 8), KEY).save(path)
    assert len(VectorIndex.load(path, KEY)) == 50
    path.write_bytes(b"not a faiss file")
    with pytest.raises(IndexMismatch, match="unreadable"):
        VectorIndex.load(path, KEY)


@pytest.mark.parametrize("threshold", [10_000, 100], ids=["flat", "ivf"])
def test_stale_names_the_ids_whose_vector_changed(threshold: int) -> None:
    rng = np.random.default_rng(5)
    x = unit(rng, 300, 16)
    ids = np.arange(300, dtype=np.int64) + 7
    index = VectorIndex.build(ids, x, KEY, IndexSettings(ivf_threshold=threshold, nprobe=10_000))
    now = x.copy()
    now[[3, 250]] = unit(rng, 2, 16)  # two photos replaced in place: same ids, other pictures
    assert index.stale(ids, now * 3.0) == [10, 257]  # scale does not matter: cosine
    assert index.stale(ids[:0], now[:0]) == []
