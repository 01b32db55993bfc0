"""tilesets.hashindex: multi-index hashing returns exactly the brute-force answer."""
import numpy as np
import pytest

from tilesets.hashindex import HashIndex, brute_force_radius, popcount64


def _data(rng, m=20000, q=600):
    train = rng.integers(0, 2**63, m, dtype=np.uint64) * np.uint64(2) + \
        rng.integers(0, 2, m).astype(np.uint64)
    train[:50] = train[0]                                   # repeated hashes
    base = train[rng.integers(0, m, q)]
    noise = np.zeros(q, np.uint64)
    for _ in range(4):                                       # up to 4 flipped bits
        noise ^= np.uint64(1) << rng.integers(0, 64, q).astype(np.uint64)
    queries = np.concatenate([base ^ noise, rng.integers(0, 2**63, 100, dtype=np.uint64)])
    return train, queries


@pytest.mark.parametrize("n_chunks", [3, 4, 6])
@pytest.mark.parametrize("radius", [0, 2, 6, 9])
def test_radius_search_equals_brute_force(rng, n_chunks, radius):
    train, queries = _data(rng)
    got = HashIndex(train, n_chunks=n_chunks).radius_search(queries, radius)
    want = brute_force_radius(train, queries, radius)
    for g, w in zip(got, want):
        assert np.array_equal(g, w)


def test_radius_search_finds_every_copy_of_a_repeated_hash():
    train = np.array([5, 7, 5, 5], np.uint64)
    lims, ids, d = HashIndex(train).radius_search(np.array([5], np.uint64), 0)
    assert ids.tolist() == [0, 2, 3] and d.tolist() == [0, 0, 0]


def test_radius_is_inclusive():
    idx = HashIndex(np.array([0b111], np.uint64))
    assert idx.radius_search(np.array([0], np.uint64), 3)[1].tolist() == [0]
    assert idx.radius_search(np.array([0], np.uint64), 2)[1].tolist() == []


@pytest.mark.parametrize("scan_below", [0, 2e9])          # index ladder / full scan
def test_nearest_equals_brute_force(rng, scan_below):
    train, queries = _data(rng, m=5000, q=300)
    ids, d = HashIndex(train).nearest(queries, scan_below=scan_below)
    full = popcount64(queries[:, None] ^ train[None, :]).astype(np.int64)
    assert np.array_equal(d, full.min(axis=1))
    assert np.array_equal(ids, full.argmin(axis=1))          # ties -> smallest id


def test_nearest_with_max_radius_reports_misses():
    idx = HashIndex(np.array([0xFFFF], np.uint64))
    ids, d = idx.nearest(np.array([0], np.uint64), max_radius=3)
    assert ids.tolist() == [-1] and d.tolist() == [-1]


def test_byte_codes_like_faiss_are_accepted():
    h = np.array([1, 2, 3], np.uint64)
    idx = HashIndex(h.view(np.uint8).reshape(3, 8))
    assert idx.radius_search(np.array([1], np.uint64), 0)[1].tolist() == [0]


def test_too_few_chunks_is_rejected():
    with pytest.raises(ValueError, match="n_chunks"):
        HashIndex(np.arange(10, dtype=np.uint64), n_chunks=2)


def test_empty_index_has_no_nearest():
    ids, d = HashIndex(np.zeros(0, np.uint64)).nearest(np.array([1], np.uint64))
    assert ids.tolist() == [-1]


def test_threaded_search_equals_single_thread(rng):
    train, queries = _data(rng, m=3000, q=5000)
    a = HashIndex(train, workers=1).radius_search(queries, 5)
    b = HashIndex(train, workers=2).radius_search(queries, 5)
    for x, y in zip(a, b):
        assert np.array_equal(x, y)


def test_threaded_nearest_scan_equals_single_thread(rng):
    train, queries = _data(rng, m=3000, q=2000)
    a = HashIndex(train, workers=1).nearest(queries)
    b = HashIndex(train, workers=2).nearest(queries)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
