"""Radius search of 10,000 query hashes in 1,000,000 training hashes at radius 6.

Ours: tilesets.hashindex.HashIndex (multi-index hashing, exact).  Baseline: faiss
IndexBinaryFlat.range_search (exhaustive, multi-threaded).  Both answers are checked equal.
Half the queries are training hashes with up to 5 bits flipped (so there are matches), half are
random.  Runs of both alternate (same machine load); prints medians of 3 runs; the last line is
``search: ours=<s> baseline=<s> ratio=<baseline/ours>`` (> 1: ours is faster).
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ratio_line  # noqa: E402
from tilesets.hashindex import HashIndex  # noqa: E402

M, Q, RADIUS, RUNS = 1_000_000, 10_000, 6, 3


def data(seed: int = 0):
    rng = np.random.default_rng(seed)
    train = rng.integers(0, 2**64 - 1, M, dtype=np.uint64, endpoint=True)
    base = train[rng.integers(0, M, Q // 2)]
    noise = np.zeros(Q // 2, np.uint64)
    for _ in range(5):
        noise ^= np.uint64(1) << rng.integers(0, 64, Q // 2).astype(np.uint64)
    queries = np.concatenate([base ^ noise, rng.integers(0, 2**64 - 1, Q - Q // 2,
                                                         dtype=np.uint64, endpoint=True)])
    return train, queries


def main() -> None:
    train, queries = data()
    t = time.perf_counter()
    index = HashIndex(train)
    build = time.perf_counter() - t
    try:
        import faiss
    except ImportError:
        faiss = None
    fi = None
    if faiss is not None:
        fi = faiss.IndexBinaryFlat(64)
        fi.add(train.view(np.uint8).reshape(M, 8))
    qb = queries.view(np.uint8).reshape(Q, 8)
    ours, base, res, fres = [], [], None, None
    for _ in range(RUNS):                     # alternate, so both see the same machine load
        t = time.perf_counter()
        res = index.radius_search(queries, RADIUS)
        ours.append(time.perf_counter() - t)
        if fi is not None:
            t = time.perf_counter()
            fres = fi.range_search(qb, RADIUS + 1)        # faiss: distance < radius
            base.append(time.perf_counter() - t)
    lims, ids, dists = res
    print(f"ours: build {build:.2f} s ({index.n_chunks} chunks), search runs "
          f"{', '.join(f'{x:.3f}' for x in ours)} s, {len(ids)} matches")
    if fi is None:
        print("faiss-cpu is not installed: pip install faiss-cpu")
        print(f"search: ours={statistics.median(ours):.3f} baseline=nan ratio=nan")
        return
    flims, fd, fids = fres
    same = np.array_equal(flims, lims)
    if same:
        for q in range(Q):
            a, b = slice(lims[q], lims[q + 1]), slice(flims[q], flims[q + 1])
            o = np.argsort(fids[b], kind="stable")
            if not (np.array_equal(ids[a], fids[b][o]) and np.array_equal(dists[a], fd[b][o])):
                same = False
                break
    print(f"faiss IndexBinaryFlat ({faiss.omp_get_max_threads()} threads): runs "
          f"{', '.join(f'{x:.3f}' for x in base)} s; identical answers: {same}")
    print(ratio_line("search", ours, base, digits=3))


if __name__ == "__main__":
    main()
