"""Radius and nearest-neighbour search over 64-bit hashes by multi-index hashing.

Multi-index hashing (Norouzi, Punjani and Fleet, 2012): split each 64-bit hash into ``m``
disjoint bit fields ("chunks").  If two hashes are within Hamming distance ``r``, then by the
pigeonhole principle at least one chunk differs in at most ``r // m`` bits.  So a radius query
only has to look, for each chunk, at the training hashes whose chunk equals the query's chunk
with up to ``r // m`` bits flipped: a handful of table look-ups instead of a scan of every hash.
Each candidate is then checked with its full Hamming distance, so the answer is exactly the
brute-force answer.  A candidate found through several chunks is counted only in the first
chunk that finds it (no duplicates, no sort needed).

The index stores each distinct hash once (pixel art repeats tiles a lot: every flat tile of
one grey level has the same hash), with the list of the original row ids that carry it.
"""
from __future__ import annotations

import math
from itertools import combinations
from typing import Optional

import numpy as np

__all__ = ["HashIndex", "popcount64", "brute_force_radius"]

if hasattr(np, "bitwise_count"):
    def popcount64(x: np.ndarray) -> np.ndarray:
        """Number of set bits of each uint64, as uint8."""
        return np.bitwise_count(x)
else:  # numpy < 2.0
    _POP8 = np.array([bin(i).count("1") for i in range(256)], np.uint8)

    def popcount64(x: np.ndarray) -> np.ndarray:
        """Number of set bits of each uint64, as uint8."""
        x = np.ascontiguousarray(x, dtype=np.uint64)
        return _POP8[x.view(np.uint8)].reshape(x.shape + (8,)).sum(axis=-1, dtype=np.uint8)


def _as_hashes(a, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 2 and a.dtype == np.uint8 and a.shape[1] == 8:      # faiss-style byte codes
        a = np.ascontiguousarray(a).view(np.uint64).ravel()
    if a.ndim != 1 or a.dtype.kind not in "ui":
        raise TypeError(f"{name} must be a 1-D array of uint64 hashes, got {a.dtype} {a.shape}")
    return np.ascontiguousarray(a.astype(np.uint64, copy=False))


def brute_force_radius(train: np.ndarray, queries: np.ndarray, radius: int, *,
                       block: Optional[int] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reference radius search by scanning every hash (numpy ``bitwise_count``).

    Returns the same ``(lims, ids, dists)`` triple as :meth:`HashIndex.radius_search`.
    ``block`` queries are compared at a time (default: about 16 M comparisons per block).
    """
    train = _as_hashes(train, "train")
    queries = _as_hashes(queries, "queries")
    if block is None:
        block = max(1, (1 << 24) // max(len(train), 1))
    counts, ids, dists = [], [], []
    for s in range(0, len(queries), block):
        d = popcount64(queries[s:s + block, None] ^ train[None, :])
        qi, ti = np.nonzero(d <= radius)                # row-major: sorted by query, then id
        ids.append(ti.astype(np.int64))
        dists.append(d[qi, ti].astype(np.int32))
        counts.append(np.bincount(qi, minlength=len(d)))
    lims = np.zeros(len(queries) + 1, np.int64)
    if counts:
        np.cumsum(np.concatenate(counts), out=lims[1:])
    return (lims, np.concatenate(ids) if ids else np.zeros(0, np.int64),
            np.concatenate(dists) if dists else np.zeros(0, np.int32))


class HashIndex:
    """Exact Hamming search over 64-bit hashes by multi-index hashing.

    Parameters
    ----------
    hashes : ndarray, shape (M,), uint64
        The indexed hashes (e.g. of training tiles); row ``i`` has id ``i``.  (M, 8) uint8 byte
        codes, as faiss uses, are accepted too.
    n_chunks : int, optional
        Number of bit fields, 3..16.  Default: ``round(64 / log2(distinct hashes))`` clipped to
        3..8, which keeps about one distinct hash per table bucket.
    workers : int, default 1
        Threads for large searches and scans (blocks of queries run in parallel).

    Examples
    --------
    >>> import numpy as np
    >>> idx = HashIndex(np.array([0b0000, 0b0111, 0b1111], np.uint64))
    >>> lims, ids, d = idx.radius_search(np.array([0], np.uint64), 3)
    >>> ids.tolist(), d.tolist()
    ([0, 1], [0, 3])
    """

    def __init__(self, hashes: np.ndarray, *, n_chunks: Optional[int] = None,
                 workers: int = 1) -> None:
        h = _as_hashes(hashes, "hashes")
        self.workers = max(1, int(workers))
        self.size = len(h)
        values, inverse = np.unique(h, return_inverse=True)
        inverse = inverse.ravel()
        self.values = values                                   # (U,) distinct hashes, sorted
        order = np.argsort(inverse, kind="stable")             # ids grouped by value, ascending
        self._ids = order.astype(np.int64)
        self._id_start = np.zeros(len(values) + 1, np.int64)
        np.cumsum(np.bincount(inverse, minlength=len(values)), out=self._id_start[1:])
        u = max(len(values), 2)
        if n_chunks is None:
            n_chunks = int(np.clip(round(64 / math.log2(u)), 3, 8))
        if not 3 <= int(n_chunks) <= 16:
            raise ValueError(f"n_chunks must be in 3..16 (tables of at most 2**22 buckets), "
                             f"got {n_chunks}")
        self.n_chunks = int(n_chunks)
        # chunk j covers bits [lo_j, lo_j + bits_j)
        base, extra = divmod(64, self.n_chunks)
        self._bits = [base + (1 if j < extra else 0) for j in range(self.n_chunks)]
        self._lo = [sum(self._bits[:j]) for j in range(self.n_chunks)]
        self._tables = []
        for j in range(self.n_chunks):
            keys = self._chunk(values, j)
            perm = np.argsort(keys, kind="stable").astype(np.int64)
            start = np.zeros((1 << self._bits[j]) + 1, np.int64 if len(values) >= 2**31 else np.int32)
            np.cumsum(np.bincount(keys, minlength=1 << self._bits[j]), out=start[1:])
            self._tables.append((perm, start, values[perm]))     # values in bucket order

    def __len__(self) -> int:
        return self.size

    def _chunk(self, h: np.ndarray, j: int) -> np.ndarray:
        mask = np.uint64((1 << self._bits[j]) - 1)
        return ((h >> np.uint64(self._lo[j])) & mask).astype(np.int64)

    def _masks(self, j: int, r: int) -> np.ndarray:
        b = self._bits[j]
        out = [0]
        for k in range(1, min(r, b) + 1):
            out.extend(sum(1 << i for i in c) for c in combinations(range(b), k))
        return np.asarray(out, np.int64)

    def _search_values(self, queries: np.ndarray, radius: int, *,
                       block: int = 2048) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All (query row, value index, distance) with distance <= radius, unsorted."""
        sub = radius // self.n_chunks
        masks = [self._masks(j, sub) for j in range(self.n_chunks)]
        chunk_masks = [np.uint64(((1 << self._bits[j]) - 1) << self._lo[j])
                       for j in range(self.n_chunks)]
        def one_block(s: int):
            q = queries[s:s + block]
            out_q, out_v, out_d = [], [], []
            for j in range(self.n_chunks):
                perm, start, bucket_vals = self._tables[j]
                keys = (self._chunk(q, j)[:, None] ^ masks[j][None, :]).ravel()   # (B*P,)
                lo = start[keys].astype(np.int64)
                cnt = start[keys + 1] - lo
                hit = np.flatnonzero(cnt)                      # most probes find empty buckets
                if len(hit) == 0:
                    continue
                lo, cnt = lo[hit], cnt[hit].astype(np.int64)
                total = int(cnt.sum())
                qrow = np.repeat(hit // len(masks[j]), cnt)
                offs = np.repeat(lo - (np.cumsum(cnt) - cnt), cnt) + np.arange(total)
                x = bucket_vals[offs] ^ q[qrow]
                d = popcount64(x)
                keep = d <= radius
                # count each pair only in the first chunk that finds it
                for i in range(j):
                    keep &= popcount64(x & chunk_masks[i]) > sub
                qs = qrow[keep]
                out_q.append(qs + s)
                out_v.append(perm[offs[keep]])
                out_d.append(d[keep])
            return out_q, out_v, out_d

        starts = list(range(0, len(queries), block))
        if self.workers > 1 and len(starts) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=self.workers) as pool:  # numpy releases the GIL
                parts = list(pool.map(one_block, starts))
        else:
            parts = [one_block(s) for s in starts]
        out_q = [a for p in parts for a in p[0]]
        out_v = [a for p in parts for a in p[1]]
        out_d = [a for p in parts for a in p[2]]
        if not out_q:
            z = np.zeros(0, np.int64)
            return z, z, np.zeros(0, np.uint8)
        return np.concatenate(out_q), np.concatenate(out_v), np.concatenate(out_d)

    def radius_search(self, queries: np.ndarray, radius: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every indexed hash within Hamming distance ``radius`` of each query.

        Parameters
        ----------
        queries : ndarray, shape (Q,), uint64
        radius : int
            Inclusive: distance <= radius matches (faiss's range_search uses < radius).

        Returns
        -------
        lims : ndarray, shape (Q + 1,), int64
            Matches of query ``i`` are ``ids[lims[i]:lims[i+1]]``.
        ids : ndarray, shape (R,), int64
            Row ids of the indexed hashes, ascending within each query.
        dists : ndarray, shape (R,), int32
        """
        queries = _as_hashes(queries, "queries")
        if int(radius) < 0:
            raise ValueError(f"radius must be >= 0, got {radius}")
        qs, vs, ds = self._search_values(queries, int(radius))
        # expand each distinct value to its original ids
        cnt = self._id_start[vs + 1] - self._id_start[vs]
        total = int(cnt.sum())
        q_rep = np.repeat(qs, cnt)
        offs = np.repeat(self._id_start[vs] - (np.cumsum(cnt) - cnt), cnt) + np.arange(total)
        ids = self._ids[offs]
        d_rep = np.repeat(ds, cnt).astype(np.int32)
        order = np.lexsort((ids, q_rep))
        q_rep, ids, d_rep = q_rep[order], ids[order], d_rep[order]
        lims = np.zeros(len(queries) + 1, np.int64)
        np.cumsum(np.bincount(q_rep, minlength=len(queries)), out=lims[1:])
        return lims, ids, d_rep

    def _scan_nearest(self, queries: np.ndarray, limit: int, first_id: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
        """Nearest by scanning every distinct hash (values ordered by first id for ties)."""
        by_id = np.argsort(first_id, kind="stable")
        vals = self.values[by_id]
        ids = np.full(len(queries), -1, np.int64)
        dists = np.full(len(queries), -1, np.int64)
        step = max(1, min(256, (1 << 22) // max(len(vals), 1)))     # ~32 MB of work per block

        def block(s: int) -> None:
            d = popcount64(queries[s:s + step, None] ^ vals[None, :])
            v = d.argmin(axis=1)
            dd = d[np.arange(len(v)), v].astype(np.int64)
            ok = dd <= limit
            rows = np.arange(s, s + len(v))[ok]
            ids[rows] = first_id[by_id[v[ok]]]
            dists[rows] = dd[ok]

        starts = range(0, len(queries), step)
        if self.workers > 1 and len(starts) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=self.workers) as pool:    # ufuncs drop the GIL
                list(pool.map(block, starts))
        else:
            for s in starts:
                block(s)
        return ids, dists

    @staticmethod
    def _merge_scan(best_v, best_d, first_id, todo, sid, sd):
        ids = np.where(best_v >= 0, first_id[np.maximum(best_v, 0)], -1).astype(np.int64)
        ids[todo] = sid
        best_d = best_d.copy()
        best_d[todo] = sd
        return ids, best_d

    def nearest(self, queries: np.ndarray, *, max_radius: Optional[int] = None,
                scan_below: float = 2e9) -> tuple[np.ndarray, np.ndarray]:
        """Nearest indexed hash of every query (ties: the smallest id).

        Parameters
        ----------
        queries : ndarray, shape (Q,), uint64
        max_radius : int, optional
            Stop looking beyond this distance (then id -1, distance -1).  None: exact nearest.
        scan_below : float
            Scan every distinct hash when queries x distinct hashes is below this (a scan beats
            index searches at moderate sizes); otherwise search radii 0, 2 and 2m-1 with the
            index (m chunks) and scan only for the queries still unresolved.

        Returns
        -------
        ids : ndarray, shape (Q,), int64
        dists : ndarray, shape (Q,), int64
        """
        queries = _as_hashes(queries, "queries")
        nq = len(queries)
        best_d = np.full(nq, -1, np.int64)
        best_v = np.full(nq, -1, np.int64)
        if self.size == 0 or nq == 0:
            return best_v, best_d
        first_id = self._ids[self._id_start[:-1]]
        limit = 64 if max_radius is None else int(max_radius)
        if nq * len(self.values) <= scan_below:
            return self._scan_nearest(queries, limit, first_id)
        todo = np.arange(nq)
        # index searches while each chunk needs at most one flipped bit (cheap), then a scan
        mih_cap = 2 * self.n_chunks - 1
        for r in sorted({min(x, limit) for x in (0, 2, mih_cap)}):
            if not len(todo):
                break
            qs, vs, ds = self._search_values(queries[todo], r)
            if len(qs):
                key = ds.astype(np.int64) * (self.size + 1) + first_id[vs]
                order = np.lexsort((key, qs))
                qs, vs, ds = qs[order], vs[order], ds[order]
                firsts = np.flatnonzero(np.r_[True, qs[1:] != qs[:-1]])
                rows = todo[qs[firsts]]
                best_v[rows] = vs[firsts]
                best_d[rows] = ds[firsts]
            todo = todo[best_d[todo] < 0]
        if len(todo) and limit > mih_cap:
            sid, sd = self._scan_nearest(queries[todo], limit, first_id)
            return self._merge_scan(best_v, best_d, first_id, todo, sid, sd)
        ids = np.where(best_v >= 0, first_id[np.maximum(best_v, 0)], -1)
        return ids.astype(np.int64), best_d
