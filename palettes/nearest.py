"""Exact nearest palette colour, fast.

For every 8-bit sRGB colour the mapper returns the allowed palette entry at minimum
distance (ΔE76 in CIELAB by default, or Euclidean RGB); ties go to the lowest palette
index.  It is *exact*: the answer equals a float64 brute-force search over the palette
(:func:`nearest_bruteforce`) for every one of the 2^24 colours.

How it stays fast
-----------------
The RGB cube is cut into 64^3 cells of 4x4x4 colours.  For each cell the CIELAB
bounding box of its 64 colours is known exactly, so palette entries that cannot be nearest
to any point of the box (their minimum distance to the box exceeds the smallest maximum
distance of any entry) are pruned.  A cell left with one candidate is *direct*; for the
others the exact answer of each of the 64 colours is computed among the few candidates
with the same float64 formula as the brute force, and cells whose 64 answers all agree
become direct too.

Lookup state (:func:`compact_tables`): a coarse table of one byte per cell (256 KB; two
bytes if a direct answer is >= 128) holding either the answer or a small number that picks
an entry among those of the cell's row of 64 cells, and one buffer of about 0.3 MB for the
NES palette with a 32 KB table of per-row offsets and the entries of the mixed cells
(about 44k, 17 % of cells).  The 92 % of them with two distinct answers take 4 bytes (the
two values and the number of their 64-bit mask in a table of the 6.4k distinct masks); those
with three or four take a 20-byte record (2-bit codes + 4 values), and the rare cell with
more escapes to a raw 64-byte block.  All of it (~0.6 MB) fits a 1 MB L2 cache.

The numba kernel works on blocks of 4096 pixels: a vectorised loop computes each pixel's
cell and offset; a branch-free loop reads the coarse byte of every pixel, storing them 8 at
a time and collecting a bit mask of the pixels of mixed cells (13 % of the pixels of a
noisy image); only those are then resolved from the entries.  Images of >= 256 K pixels are
split in chunks that the CPU cores take on demand (the kernel releases the GIL).  Without
numba a numpy fallback uses the full 2^24 table.  Building takes about 2 s (float64 CIELAB
of all 2^24 colours in numpy plus a numba pass); tables are cached under
``~/.cache/tilegan/nearest`` (``TILEGAN_CACHE`` overrides the folder) and load in
milliseconds.
"""
from __future__ import annotations

import hashlib
import itertools
import logging
import os
import threading
from pathlib import Path
from typing import Optional

import numpy as np

from .colour import ciede2000, delta_e76_sq, rgb_to_lab_table, srgb_to_lab

__all__ = ["NearestMapper", "get_mapper", "nearest_bruteforce", "METRICS", "cache_dir"]

log = logging.getLogger("tilegan.palettes")

METRICS = ("lab", "rgb", "ciede2000")
_VERSION = b"nearest-v7"
_LOCK = threading.Lock()
_SLAB = 8            # coarse r-cells per build slab (32 r values, ~50 MB of float64 Lab)


def cache_dir() -> Path:
    """Folder for cached lookup tables (``$TILEGAN_CACHE/nearest`` or ``~/.cache/tilegan/nearest``)."""
    base = os.environ.get("TILEGAN_CACHE")
    root = Path(base) if base else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tilegan"
    return root / "nearest"


def _space(rgb: np.ndarray, metric: str) -> np.ndarray:
    if metric == "rgb":
        return np.asarray(rgb, np.float64)
    return srgb_to_lab(rgb)


def nearest_bruteforce(rgb: np.ndarray, colours: np.ndarray, allowed: Optional[np.ndarray] = None,
                       *, metric: str = "lab") -> np.ndarray:
    """Reference nearest colour by exhaustive float64 search (slow; for tests and small sets).

    Parameters
    ----------
    rgb : ndarray, shape (..., 3), uint8
    colours : ndarray, shape (K, 3), uint8
        The whole palette.
    allowed : ndarray of int, shape (n,), optional
        Palette indices that may be chosen (default all).
    metric : {"lab", "rgb", "ciede2000"}

    Returns
    -------
    ndarray, shape (...), int64 palette indices; ties go to the lowest index.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    allowed = np.arange(len(colours)) if allowed is None else np.sort(np.asarray(allowed))
    flat = np.asarray(rgb).reshape(-1, 3)
    out = np.empty(len(flat), np.int64)
    pal = colours[allowed]
    ps = srgb_to_lab(pal) if metric == "ciede2000" else _space(pal, metric)
    for s in range(0, len(flat), 65536):
        chunk = flat[s:s + 65536]
        if metric == "ciede2000":
            x = srgb_to_lab(chunk)
            d = ciede2000(x[:, None, :], ps[None, :, :])
        else:
            x = _space(chunk, metric)
            d = delta_e76_sq(x[:, None, :], ps[None, :, :])
        out[s:s + 65536] = allowed[np.argmin(d, axis=1)]
    return out.reshape(np.asarray(rgb).shape[:-1])


# --------------------------------------------------------------------------- build
_numba_build = None
_cell_colour = None      # module global (not a closure variable) so the cached build reuses it


def _get_numba_build():
    """numba version of the per-cell pruning + exact fine blocks (same float64 arithmetic)."""
    global _numba_build, _cell_colour
    if _numba_build is not None:
        return _numba_build
    import numba as nb

    @nb.njit(boundscheck=False, inline="always")
    def _cell_colour(X, ri, gi, bi, q):                          # pragma: no cover (jitted)
        """Colour ``q`` (0..63, = a*16 + b*4 + d: r, g, b offsets a, b, d in 0..3) of coarse cell
        (ri, gi, bi) of the slab ``X``, as its three channels."""
        a, b, d = q >> 4, (q >> 2) & 3, q & 3
        x = X[ri * 4 + a, gi * 4 + b, bi * 4 + d]
        return x[0], x[1], x[2]

    @nb.njit(parallel=True, cache=True, boundscheck=False)
    def build(X, P, allowed, coarse, fine, amb):                 # pragma: no cover (jitted)
        # X: (nr*4, 256, 256, 3) colours of _SLAB coarse r-rows; cells (nr, 64, 64)
        nr = X.shape[0] // 4
        n = P.shape[0]
        ncell = nr * 4096
        for c in nb.prange(ncell):
            ri = c // 4096
            gi = (c // 64) % 64
            bi = c % 64
            lo0 = lo1 = lo2 = np.inf
            hi0 = hi1 = hi2 = -np.inf
            for q in range(64):
                x0, x1, x2 = _cell_colour(X, ri, gi, bi, q)
                lo0 = min(lo0, x0)
                lo1 = min(lo1, x1)
                lo2 = min(lo2, x2)
                hi0 = max(hi0, x0)
                hi1 = max(hi1, x1)
                hi2 = max(hi2, x2)
            thr = np.inf
            for k in range(n):
                e0 = max((P[k, 0] - lo0) ** 2, (P[k, 0] - hi0) ** 2)
                e1 = max((P[k, 1] - lo1) ** 2, (P[k, 1] - hi1) ** 2)
                e2 = max((P[k, 2] - lo2) ** 2, (P[k, 2] - hi2) ** 2)
                thr = min(thr, e0 + e1 + e2)
            lim = thr * (1.0 + 1e-9) + 1e-9
            cand = np.empty(n, np.int64)
            nc = 0
            for k in range(n):
                m0 = max(lo0 - P[k, 0], 0.0) + max(P[k, 0] - hi0, 0.0)
                m1 = max(lo1 - P[k, 1], 0.0) + max(P[k, 1] - hi1, 0.0)
                m2 = max(lo2 - P[k, 2], 0.0) + max(P[k, 2] - hi2, 0.0)
                if m0 * m0 + m1 * m1 + m2 * m2 <= lim:
                    cand[nc] = k
                    nc += 1
            if nc == 1:
                coarse[c] = allowed[cand[0]]
                amb[c] = False
                continue
            amb[c] = True
            for q in range(64):
                x0, x1, x2 = _cell_colour(X, ri, gi, bi, q)
                best = np.inf
                bk = 0
                for j in range(nc):
                    k = cand[j]
                    t0 = x0 - P[k, 0]
                    t1 = x1 - P[k, 1]
                    t2 = x2 - P[k, 2]
                    dd = t0 * t0 + t1 * t1 + t2 * t2
                    if dd < best:
                        best = dd
                        bk = k
                fine[c, q] = allowed[bk]

    _numba_build = build
    return build


def _build_tables_numba(colours: np.ndarray, allowed: np.ndarray,
                        metric: str) -> tuple[np.ndarray, np.ndarray]:
    build = _get_numba_build()
    P = np.ascontiguousarray(_space(colours[allowed], metric))
    al = np.ascontiguousarray(allowed, np.int64)
    coarse = np.empty(64 ** 3, np.int64)
    fine_parts = []
    nfine = 0
    for s0 in range(0, 64, _SLAB):
        rvals = np.arange(s0 * 4, (s0 + _SLAB) * 4)
        if metric == "rgb":
            X = np.empty((len(rvals), 256, 256, 3))
            X[..., 0] = rvals[:, None, None]
            X[..., 1] = np.arange(256.0)[None, :, None]
            X[..., 2] = np.arange(256.0)[None, None, :]
        else:
            X = rgb_to_lab_table(rvals)
        ncell = _SLAB * 4096
        cz = np.zeros(ncell, np.int64)
        fz = np.zeros((ncell, 64), np.uint8)
        amb = np.zeros(ncell, np.bool_)
        build(np.ascontiguousarray(X), P, al, cz, fz, amb)
        ids = np.flatnonzero(amb)
        cz[ids] = 256 + nfine + np.arange(len(ids))
        nfine += len(ids)
        fine_parts.append(fz[ids])
        coarse[s0 * 4096:(s0 + _SLAB) * 4096] = cz
    fine = np.ascontiguousarray(np.concatenate(fine_parts))
    ctype = np.uint16 if 256 + nfine < 65536 else np.uint32
    return coarse.astype(ctype), fine


def _build_tables(colours: np.ndarray, allowed: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Build (coarse, fine) for metric "lab" or "rgb"; see the module docstring."""
    P = _space(colours[allowed], metric)                         # (n, 3)
    coarse = np.empty(64 ** 3, np.int64)
    fine_blocks: list[np.ndarray] = []
    nfine = 0
    for s0 in range(0, 64, _SLAB):
        rvals = np.arange(s0 * 4, (s0 + _SLAB) * 4)
        if metric == "rgb":
            g, b = np.meshgrid(np.arange(256.0), np.arange(256.0), indexing="ij")
            X = np.empty((len(rvals), 256, 256, 3))
            X[..., 0] = rvals[:, None, None]
            X[..., 1] = g
            X[..., 2] = b
        else:
            X = rgb_to_lab_table(rvals)                          # (32, 256, 256, 3)
        cells = X.reshape(_SLAB, 4, 64, 4, 64, 4, 3).transpose(0, 2, 4, 1, 3, 5, 6)
        cells = cells.reshape(_SLAB * 64 * 64, 64, 3)            # (C, 64 colours, 3)
        lo = cells.min(axis=1)
        hi = cells.max(axis=1)
        # min / max squared distance from each palette point to each cell box
        below = np.maximum(lo[:, None, :] - P[None], 0.0)
        above = np.maximum(P[None] - hi[:, None, :], 0.0)
        mind = ((below + above) ** 2).sum(-1)                    # (C, n)
        maxd = np.maximum((P[None] - lo[:, None, :]) ** 2, (P[None] - hi[:, None, :]) ** 2).sum(-1)
        thr = maxd.min(axis=1, keepdims=True)
        cand = mind <= thr * (1.0 + 1e-9) + 1e-9                 # (C, n), ascending palette order
        ncand = cand.sum(axis=1)
        base = s0 * 64 * 64
        single = ncand == 1
        coarse[base + np.flatnonzero(single)] = allowed[np.argmax(cand[single], axis=1)]
        amb = np.flatnonzero(~single)
        for c0 in range(0, len(amb), 4096):
            ids = amb[c0:c0 + 4096]
            cm = cand[ids]
            k = int(cm.sum(axis=1).max())
            # candidate palette positions, ascending, padded with the last one
            order = np.argsort(~cm, axis=1, kind="stable")[:, :k]
            cnt = cm.sum(axis=1)
            pad = np.arange(k)[None, :] >= cnt[:, None]
            last = order[np.arange(len(ids)), cnt - 1]
            order = np.where(pad, last[:, None], order)
            d = delta_e76_sq(cells[ids][:, :, None, :], P[order][:, None, :, :])   # (A, 64, k)
            best = order[np.arange(len(ids))[:, None], np.argmin(d, axis=2)]        # (A, 64)
            fine_blocks.append(allowed[best].astype(np.uint8))
            coarse[base + ids] = 256 + nfine + np.arange(len(ids))
            nfine += len(ids)
        del X, cells
    fine = np.concatenate(fine_blocks) if fine_blocks else np.zeros((0, 64), np.uint8)
    ctype = np.uint16 if 256 + nfine < 65536 else np.uint32
    return coarse.astype(ctype), np.ascontiguousarray(fine)


# --------------------------------------------------------------------------- compact tables
_HDR = 16            # recs header: 4 little-endian uint32 (n_pair, n_mask, mask offset, 0)
_TOP = 4096 * 8      # per-block table after the header: 4096 blocks x 2 uint32
_PAIRS = _HDR + _TOP  # byte offset of the pair entries
_SPLIT = 64          # local codes per block and kind (a block holds 64 cells)


def _cell_block(cell: np.ndarray) -> np.ndarray:
    """Block of each coarse cell ``r6 << 12 | g6 << 6 | b6``: its row of 64 cells along b."""
    return cell >> 6


def _recs_views(recs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(top, pairs, masks): the uint32 / uint32 / uint64 tables inside ``recs`` (views)."""
    n_pair, n_mask, m_off = (int(x) for x in recs[:12].view("<u4"))
    top = recs[_HDR:_PAIRS].view("<u4")
    pairs = recs[_PAIRS:_PAIRS + 4 * n_pair].view("<u4")
    masks = recs[m_off:m_off + 8 * n_mask].view("<u8")
    return top, pairs, masks


def _recs_ok(recs: np.ndarray) -> bool:
    """Whether the header of ``recs`` is consistent with its size."""
    n_pair, n_mask, m_off = (int(x) for x in recs[:12].view("<u4"))
    return _PAIRS + 4 * n_pair <= m_off and m_off % 8 == 0 and m_off + 8 * n_mask <= recs.size


def compact_tables(coarse: np.ndarray, fine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Turn (coarse, fine) from the builder into the compact lookup form.

    Fine blocks whose 64 answers all agree are dropped (their cell becomes direct).  A mixed
    cell with 2 distinct answers (92 % for NES) becomes a 4-byte *pair* entry: the two
    values and the number of its 64-bit mask (which colours take the larger value) in a
    table of distinct masks (6.4k for NES's 40.6k such cells).  A cell with 3-4 answers
    becomes a 20-byte record (2-bit codes + 4 values); the rare cell with more keeps a raw
    64-byte block, reached through an escape record.  Entries are grouped by block (the 64
    cells of one ``(r >> 2, g >> 2)`` row), so a mixed cell's coarse entry is only a small
    per-block number.

    Returns
    -------
    coarse : ndarray, shape (262144,), uint8 (uint16 if a direct answer is >= 128), indexed
        by ``(r >> 2) << 12 | (g >> 2) << 6 | b >> 2``.  With ``lim`` = 128 (uint8) or 256
        (uint16): ``v < lim`` is the answer; ``lim <= v < lim + 64``: pair entry ``v - lim``
        of the cell's block; ``lim + 64 <= v < lim + 128``: 20-byte record ``v - lim - 64``
        of the block.
    recs : ndarray, uint8, one buffer (little-endian numbers): a 16-byte header (number of
        pair entries, number of masks, byte offset of the masks); per block two uint32 (index
        of its first pair entry, byte offset of its first 20-byte record); the pair entries
        (uint32 ``mask << 16 | hi << 8 | lo``); the masks (uint64; bit ``off`` set: the answer
        is ``hi``, ``off`` being ``(r & 3) << 4 | (g & 3) << 2 | b & 3``); the 20-byte records
        (2-bit code ``off`` of bytes 0-15 indexes value bytes 16-19, ascending; bytes 16 > 17
        flag an escape record whose raw block is ``b17 << 16 | b19 << 8 | b18``).
    raw : ndarray, shape (n_raw, 64), uint8
    n_rec : int, number of mixed cells
    """
    c = coarse.astype(np.int64)
    amb = np.flatnonzero(c >= 256)
    blk64 = fine[c[amb] - 256] if len(amb) else np.zeros((0, 64), np.uint8)
    uniform = (blk64 == blk64[:, :1]).all(axis=1)
    c[amb[uniform]] = blk64[uniform, 0]
    amb, blk64 = amb[~uniform], blk64[~uniform]
    srt = np.sort(blk64, axis=1)
    first = np.concatenate([np.ones((len(blk64), 1), bool), srt[:, 1:] != srt[:, :-1]], axis=1)
    ndist = first.sum(axis=1)
    direct = c < 256
    lim = 128 if (not direct.any() or int(c[direct].max()) < 128) else 256
    # amb is ascending, i.e. already in block order
    bl = _cell_block(amb)
    two = ndist == 2
    top = np.empty((4096, 2), np.int64)
    out = np.zeros(len(c), np.int64)
    out[direct] = c[direct]
    for kind, sel in ((0, two), (1, ~two)):
        ids, b = amb[sel], bl[sel]
        start = np.searchsorted(b, np.arange(4096))
        top[:, kind] = start
        out[ids] = lim + _SPLIT * kind + np.arange(len(ids)) - start[b]
    # pair entries + distinct masks
    bb = blk64[two]
    lo, hi = bb.min(axis=1).astype(np.int64), bb.max(axis=1).astype(np.int64)
    mbits = np.packbits(bb == hi[:, None], axis=1, bitorder="little").view("<u8")[:, 0]
    masks, mid = np.unique(mbits, return_inverse=True)
    if len(masks) > 65536:                                       # pragma: no cover
        raise ValueError("more than 65536 distinct masks")
    pairs = (mid.reshape(-1).astype(np.int64) << 16) | (hi << 8) | lo
    # 20-byte records
    bb, ss, sf, nd = blk64[~two], srt[~two], first[~two], ndist[~two]
    rec = np.zeros((len(bb), 20), np.uint8)
    small = nd <= 4
    sb, s2, f2 = bb[small], ss[small], sf[small]
    # values: the distinct answers ascending, padded with the largest
    rank = np.cumsum(f2, axis=1) - 1
    vals = np.repeat(s2[:, -1:], 4, axis=1)
    rows, cols = np.nonzero(f2)
    vals[rows, rank[rows, cols]] = s2[rows, cols]
    codes = (sb[:, :, None] > vals[:, None, :3]).sum(axis=2).astype(np.uint8)
    q = codes.reshape(-1, 16, 4)
    r_small = np.zeros((len(sb), 20), np.uint8)
    r_small[:, :16] = q[..., 0] | (q[..., 1] << 2) | (q[..., 2] << 4) | (q[..., 3] << 6)
    r_small[:, 16:] = vals
    rec[small] = r_small
    ri = np.arange(int((~small).sum()))
    esc = np.zeros((len(ri), 20), np.uint8)
    esc[:, 16], esc[:, 17], esc[:, 18], esc[:, 19] = 255, ri >> 16, ri & 255, (ri >> 8) & 255
    rec[~small] = esc
    raw = np.ascontiguousarray(bb[~small], np.uint8).reshape(-1, 64)
    # one buffer: header, top, pairs, masks (8-aligned), records
    m_off = -(-(_PAIRS + 4 * len(pairs)) // 8) * 8
    r_off = m_off + 8 * len(masks)
    top[:, 1] = r_off + 20 * top[:, 1]
    recs = np.zeros(r_off + rec.size, np.uint8)
    recs[:12].view("<u4")[:] = (len(pairs), len(masks), m_off)
    recs[_HDR:_PAIRS].view("<u4")[:] = top.reshape(-1)
    recs[_PAIRS:_PAIRS + 4 * len(pairs)].view("<u4")[:] = pairs
    recs[m_off:r_off].view("<u8")[:] = masks
    recs[r_off:] = rec.reshape(-1)
    ctype = np.uint8 if lim == 128 else np.uint16
    return out.astype(ctype), recs, raw, int(len(amb))


# --------------------------------------------------------------------------- lookup kernels
_THREAD_MIN_PIXELS = 1 << 18
_CHUNK = 1 << 17       # pixels per chunk handed to a thread (a multiple of 64)
_BLOCK = 4096        # pixels per kernel block (a multiple of 64; its index buffers stay in L1)
#: threads used by :meth:`NearestMapper.map` when not given (None = one per CPU core)
DEFAULT_THREADS: Optional[int] = None
_POOLS: dict[int, "object"] = {}


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):                            # pragma: no cover
        return os.cpu_count() or 1


def _thread_pool(n: int):
    from concurrent.futures import ThreadPoolExecutor

    with _LOCK:
        pool = _POOLS.get(n)
        if pool is None:
            pool = _POOLS[n] = ThreadPoolExecutor(n, thread_name_prefix="tilegan-nearest")
        return pool


_numba_kernel = None
_numba_failed = False
# integer types of the jitted kernels (module globals, not closure variables, so that numba's
# on-disk cache of the kernels is reused by the next process)
_U, _u32, _u8 = np.uint64, np.uint32, np.uint8
_index = _index3 = _index4 = _ctz = _resolve = _record_answer = None
# trailing-zero count by multiplication (fallback if numba lacks its cttz intrinsic)
_DEBRUIJN = np.zeros(64, np.uint8)
for _i in range(64):
    _DEBRUIJN[((1 << _i) * 0x03F79D71B4CB0A89 % (1 << 64)) >> 58] = _i
del _i


def _get_numba_kernel():
    """The numba lookup kernel (None without numba).

    ``kernel(flat, nch, coarse, recs, raw, n_rec, out)`` maps the pixels of the flat uint8
    buffer ``flat`` (``nch`` = 3 or 4 bytes a pixel); ``kernel.lookup(r, g, b, coarse, recs,
    raw, n_rec)`` is the scalar version for other numba code (error diffusion).
    """
    global _numba_kernel, _numba_failed, _index, _index3, _index4, _ctz, _resolve, _record_answer
    if _numba_kernel is not None or _numba_failed:
        return _numba_kernel
    try:
        import numba as nb
    except Exception:                                            # pragma: no cover
        _numba_failed = True
        return None
    try:
        from numba.cpython.unsafe.numbers import trailing_zeros as _ctz   # LLVM cttz
    except ImportError:                                          # pragma: no cover
        @nb.njit(inline="always")
        def _ctz(x):
            return _U(_DEBRUIJN[((x & (~x + _U(1))) * _U(0x03F79D71B4CB0A89)) >> _U(58)])

    @nb.njit(boundscheck=False, nogil=True)
    def _rd(recs, o, nbytes):                                    # pragma: no cover (jitted)
        v = _U(0)
        for i in range(nbytes):
            v |= _U(recs[o + _U(i)]) << _U(8 * i)
        return v

    @nb.njit(boundscheck=False, nogil=True, inline="always")
    def _record_answer(recs, o, off, raw):                       # pragma: no cover (jitted)
        """Answer at offset ``off`` of the 64-pixel cell whose record starts at byte ``o`` of
        ``recs``: from its raw block when it has one, else from its 2-bit codes."""
        if recs[o + _U(16)] > recs[o + _U(17)]:
            ri = (_U(recs[o + _U(17)]) << _U(16)) | (_U(recs[o + _U(19)]) << _U(8)) | _U(recs[o + _U(18)])
            return raw[(ri << _U(6)) | _U(off)]
        code = (_u32(recs[o + _U(off >> 2)]) >> ((off & _u32(3)) << 1)) & _u32(3)
        return recs[o + _U(16) + _U(code)]

    @nb.njit(boundscheck=False, nogil=True)
    def lookup(r, g, b, coarse, recs, raw, n_rec):               # pragma: no cover (jitted)
        """Exact answer for one colour (r, g, b: uint32 in 0..255)."""
        lim = _u32(128) if coarse.itemsize == 1 else _u32(256)
        cell = ((r >> 2) << 12) | ((g >> 2) << 6) | (b >> 2)
        v = _u32(coarse[cell])
        if v < lim:
            return _u8(v)
        off = ((r & 3) << 4) | ((g & 3) << 2) | (b & 3)
        L = v - lim
        blk = _U(_HDR) + (_U(cell >> 6) << _U(3))
        if L < _u32(64):
            en = _rd(recs, _U(_PAIRS) + _U(4) * (_rd(recs, blk, 4) + _U(L)), 4)
            mask = _rd(recs, _rd(recs, _U(8), 4) + _U(8) * (en >> _U(16)), 8)
            return _u8(en >> (((mask >> _U(off)) & _U(1)) << _U(3)))
        o = _rd(recs, blk + _U(4), 4) + _U(L - _u32(64)) * _U(20)
        return _record_answer(recs, o, off, raw)

    # Both kernels work on blocks of pixels.  The cell of each pixel of a block (uint32) and
    # its offset in the cell (uint8) are computed first, in a loop LLVM vectorises (3 or 4
    # byte stride).  All indices are unsigned: no wrap-around code for negative indices.
    def _make_index(stride):
        """The block indexer for pixels of ``stride`` bytes: numba freezes ``stride`` as a
        constant, so each of the two compiles to its own fixed-stride loop."""
        @nb.njit(boundscheck=False, nogil=True, inline="always")
        def index(flat, s, e, tc, to):                           # pragma: no cover (jitted)
            base = _U(stride) * _U(s)
            for j in range(e - s):
                p = base + _U(stride) * _U(j)
                r, g, b = _u32(flat[p]), _u32(flat[p + _U(1)]), _u32(flat[p + _U(2)])
                tc[_U(j)] = ((r >> 2) << 12) | ((g >> 2) << 6) | (b >> 2)
                to[_U(j)] = _u8(((r & _u32(3)) << 4) | ((g & _u32(3)) << 2) | (b & _u32(3)))
        return index

    _index3, _index4 = _make_index(3), _make_index(4)

    @nb.njit(boundscheck=False, nogil=True, inline="always")
    def _index(flat, nch, s, e, tc, to):                         # pragma: no cover (jitted)
        """Cells and offsets of pixels ``s:e`` of ``flat`` (``nch`` = 3 or 4 bytes a pixel)."""
        if nch == 3:
            _index3(flat, s, e, tc, to)
        else:
            _index4(flat, s, e, tc, to)

    @nb.njit(boundscheck=False, nogil=True, inline="always")
    def _resolve(L, cell, off, top, pairs, masks, recs, raw):   # pragma: no cover (jitted)
        """Answer for a pixel of mixed cell ``cell`` at offset ``off``; ``L`` = its coarse
        entry minus the first mixed code (< 64: a two-answer pair, else a record/raw block)."""
        blk = _U(cell >> 6) << _U(1)
        if L < _u32(64):
            en = pairs[_U(top[blk]) + _U(L)]
            bit = (masks[_U(en >> 16)] >> _U(off)) & _U(1)
            return _u8(en >> (_u32(bit) << 3))
        o = _U(top[blk + _U(1)]) + _U(L - _u32(64)) * _U(20)
        return _record_answer(recs, o, off, raw)

    @nb.njit(cache=True, boundscheck=False, nogil=True)
    def kernel_u8(flat, nch, coarse, recs, top, pairs, masks, raw, out, tc, to):  # pragma: no cover
        """uint8 coarse table (answers < 128, mixed cells >= 128).  Per 64 pixels: one
        branch-free pass reads the coarse byte of each pixel and stores them 8 at a time as
        one uint64 while gathering the high bits into a 64-bit mask of the mixed pixels;
        then only those are resolved from the records, found by counting trailing zeros."""
        n = out.shape[0]
        n64 = n - n % 64
        o64 = out[:n64].view(np.uint64)
        B = tc.shape[0]
        for s in range(0, n64, B):
            e = min(n64, s + B)
            _index(flat, nch, s, e, tc, to)
            ob = _U(s)
            w0 = _U(s >> 3)
            for G in range((e - s) >> 6):
                mk = _U(0)
                for k in range(8):
                    b = _U(64 * G + 8 * k)
                    w = _U(coarse[tc[b]]) | (_U(coarse[tc[b + _U(1)]]) << _U(8)) \
                        | (_U(coarse[tc[b + _U(2)]]) << _U(16)) | (_U(coarse[tc[b + _U(3)]]) << _U(24)) \
                        | (_U(coarse[tc[b + _U(4)]]) << _U(32)) | (_U(coarse[tc[b + _U(5)]]) << _U(40)) \
                        | (_U(coarse[tc[b + _U(6)]]) << _U(48)) | (_U(coarse[tc[b + _U(7)]]) << _U(56))
                    o64[w0 + _U(8 * G + k)] = w
                    # the 8 high bits (mixed-cell flags) of w, gathered into one byte
                    mk |= (((w & _U(0x8080808080808080)) * _U(0x0002040810204081)) >> _U(56)) \
                        << _U(8 * k)
                while mk:
                    j = _U(64 * G) + _U(_ctz(mk))
                    mk &= mk - _U(1)
                    out[ob + j] = _resolve(_u32(out[ob + j]) - _u32(128), tc[j], _u32(to[j]),
                                           top, pairs, masks, recs, raw)
        return n64

    @nb.njit(cache=True, boundscheck=False, nogil=True)
    def kernel_any(flat, nch, coarse, recs, top, pairs, masks, raw, out, tc, to, mix):  # pragma: no cover
        """Any coarse table (uint16 too): one branch-free loop writes the coarse answer of
        every pixel and appends the position of each pixel of a mixed cell to a list, then
        those are resolved from the records."""
        lim = _u32(128) if coarse.itemsize == 1 else _u32(256)
        n = out.shape[0]
        B = tc.shape[0]
        for s in range(0, n, B):
            e = min(n, s + B)
            _index(flat, nch, s, e, tc, to)
            ob = _U(s)
            nm = _U(0)
            for j in range(e - s):
                jj = _U(j)
                v = _u32(coarse[tc[jj]])
                out[ob + jj] = _u8(v)
                mix[nm] = _u32(j)
                nm += _U(v >= lim)
            for q in range(nm):
                j = _U(mix[_U(q)])
                cell = tc[j]
                out[ob + j] = _resolve(_u32(coarse[cell]) - lim, cell, _u32(to[j]),
                                       top, pairs, masks, recs, raw)

    def kernel(flat, nch, coarse, recs, raw, n_rec, out):
        top, pairs, masks = _recs_views(recs)
        if not len(pairs):
            pairs, masks = np.zeros(1, np.uint32), np.zeros(1, np.uint64)
        rawf = raw.reshape(-1) if raw.size else np.zeros(64, np.uint8)
        n = out.shape[0]
        done = 0
        if coarse.dtype == np.uint8 and n >= 64:
            B = min(_BLOCK, n - n % 64)
            done = kernel_u8(flat, nch, coarse, recs, top, pairs, masks, rawf, out,
                             np.empty(B, np.uint32), np.empty(B, np.uint8))
        if done < n:                                 # uint16 table, or the last < 64 pixels
            B = min(_BLOCK, n - done)
            kernel_any(flat[done * nch:], nch, coarse, recs, top, pairs, masks, rawf, out[done:],
                       np.empty(B, np.uint32), np.empty(B, np.uint8), np.empty(B, np.uint32))

    kernel.lookup = lookup
    _numba_kernel = kernel
    return kernel


class NearestMapper:
    """Exact nearest allowed palette colour for uint8 RGB pixels.

    Parameters
    ----------
    colours : ndarray, shape (K, 3), uint8
        The whole palette (index = output value).
    allowed : ndarray of int, shape (n,)
        Indices that may be produced.
    metric : {"lab", "rgb", "ciede2000"}
    use_cache : bool
        Keep built tables in :func:`cache_dir`.

    Notes
    -----
    ``lab`` and ``rgb`` use the exact compact table described in the module docstring.
    ``ciede2000`` (not a Euclidean metric, so no box pruning) computes the exact answer per
    distinct colour of each image, which is much slower.
    """

    def __init__(self, colours: np.ndarray, allowed: Optional[np.ndarray] = None, *,
                 metric: str = "lab", use_cache: bool = True) -> None:
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
        self.colours = np.ascontiguousarray(colours, np.uint8)
        if len(self.colours) > 256:
            raise ValueError("at most 256 palette colours")
        allowed = np.arange(len(colours)) if allowed is None else np.asarray(allowed, np.int64)
        self.allowed = np.unique(allowed)
        if len(self.allowed) == 0:
            raise ValueError("no palette colour is allowed")
        self.metric = metric
        self.coarse: Optional[np.ndarray] = None
        self.recs: Optional[np.ndarray] = None
        self.raw: Optional[np.ndarray] = None
        self.n_rec = 0
        self._full: Optional[np.ndarray] = None
        if metric != "ciede2000":
            self._load_or_build(use_cache)

    # ------------------------------------------------------------------ state
    def key(self) -> str:
        h = hashlib.sha256(_VERSION)
        h.update(self.metric.encode())
        h.update(self.colours.tobytes())
        h.update(self.allowed.astype(np.int64).tobytes())
        return h.hexdigest()[:24]

    def _load_or_build(self, use_cache: bool) -> None:
        path = cache_dir() / f"{self.metric}-{self.key()}.npz"
        if use_cache and path.is_file():
            try:
                with np.load(path, allow_pickle=False) as z:
                    coarse, recs, raw, n_rec = z["coarse"], z["recs"], z["raw"], int(z["n_rec"])
                lim = 128 if coarse.dtype == np.uint8 else 256
                if (coarse.shape == (64 ** 3,) and coarse.dtype in (np.uint8, np.uint16)
                        and recs.dtype == np.uint8 and recs.ndim == 1 and recs.size >= _PAIRS
                        and _recs_ok(recs)
                        and raw.dtype == np.uint8 and raw.ndim == 2 and raw.shape[1] == 64
                        and int(coarse.max()) < lim + 2 * _SPLIT):
                    self.coarse, self.recs, self.raw, self.n_rec = coarse, recs, raw, n_rec
                    return
            except Exception as e:                                # corrupt cache: rebuild
                log.warning("ignoring unreadable lookup cache %s (%s)", path, e)
        try:
            coarse, fine = _build_tables_numba(self.colours, self.allowed, self.metric)
        except ImportError:                                       # pragma: no cover
            coarse, fine = _build_tables(self.colours, self.allowed, self.metric)
        self.coarse, self.recs, self.raw, self.n_rec = compact_tables(coarse, fine)
        if use_cache:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
                with open(tmp, "wb") as f:
                    np.savez(f, coarse=self.coarse, recs=self.recs, raw=self.raw,
                             n_rec=np.int64(self.n_rec))
                os.replace(tmp, path)
            except OSError as e:
                log.warning("could not cache lookup table in %s (%s)", path.parent, e)

    def full_table(self) -> np.ndarray:
        """The 2^24-entry table indexed by ``r << 16 | g << 8 | b`` (uint8), built on demand."""
        if self._full is None:
            if self.coarse is None:
                raise ValueError("no table for metric 'ciede2000'")
            full = np.empty((256, 256, 256), np.uint8)
            idx = np.arange(256)
            for r0 in range(0, 256, 32):
                r = idx[r0:r0 + 32, None, None]
                g = idx[None, :, None]
                b = idx[None, None, :]
                full[r0:r0 + 32] = self._decode(r, g, b)
            self._full = full.reshape(-1)
        return self._full

    def _decode(self, r: np.ndarray, g: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Vectorised table lookup (numpy), broadcasting r, g, b (int arrays)."""
        lim = 128 if self.coarse.dtype == np.uint8 else 256
        recs = self.recs
        top, pairs, masks = _recs_views(recs)
        top = top.astype(np.int64).reshape(4096, 2)
        pairs = pairs.astype(np.int64) if len(pairs) else np.zeros(1, np.int64)
        masks = masks.astype(np.uint64) if len(masks) else np.zeros(1, np.uint64)
        raw = self.raw if len(self.raw) else np.zeros((1, 64), np.uint8)
        r, g, b = (np.asarray(x, np.int64) for x in (r, g, b))
        cell = ((r >> 2) << 12) | ((g >> 2) << 6) | (b >> 2)
        v = self.coarse[cell].astype(np.int64)
        off = ((r & 3) << 4) | ((g & 3) << 2) | (b & 3)
        L = v - lim
        blk = _cell_block(cell)
        en = pairs[np.clip(top[blk, 0] + L, 0, len(pairs) - 1)]
        bit = ((masks[en >> 16] >> off.astype(np.uint64)) & np.uint64(1)).astype(np.int64)
        two = (en >> (8 * bit)) & 255
        oo = np.clip(top[blk, 1] + 20 * (L - _SPLIT), 0, len(recs) - 20)
        v16, v17 = recs[oo + 16], recs[oo + 17]
        code = (recs[oo + (off >> 2)].astype(np.int64) >> ((off & 3) * 2)) & 3
        four = recs[oo + 16 + code]
        ri = (v17.astype(np.int64) << 16) | (recs[oo + 19].astype(np.int64) << 8) | recs[oo + 18]
        esc = raw[np.clip(ri, 0, len(raw) - 1), off]
        other = np.where(v16 > v17, esc, four)
        return np.where(v < lim, v, np.where(L < _SPLIT, two, other)).astype(np.uint8)

    # ------------------------------------------------------------------ mapping
    def map(self, rgb: np.ndarray, *, use_numba: bool = True, threads: Optional[int] = None) -> np.ndarray:
        """Map pixels to palette indices.

        Parameters
        ----------
        rgb : ndarray, shape (..., C), uint8, C = 3 or 4 (alpha ignored)
        threads : int, optional
            Threads for inputs of >= 256 K pixels (default: one per CPU core); 1 = single-threaded.

        Returns
        -------
        ndarray, shape (...), uint8 palette indices
        """
        a = np.asarray(rgb)
        if a.dtype != np.uint8 or a.ndim < 1 or a.shape[-1] not in (3, 4):
            raise ValueError(f"expected a uint8 (..., 3|4) array, got {a.dtype} {a.shape}")
        shape = a.shape[:-1]
        nch = a.shape[-1]
        if self.metric == "ciede2000":
            return self._map_unique(a.reshape(-1, nch)[:, :3]).reshape(shape)
        flat = np.ascontiguousarray(a).reshape(-1)        # a view for contiguous input
        out = np.empty(flat.size // nch, np.uint8)
        kern = _get_numba_kernel() if use_numba else None
        if kern is not None and out.size:
            if threads is None:
                threads = DEFAULT_THREADS if DEFAULT_THREADS is not None else _cpu_count()
            nthreads = min(max(1, threads), 8) if out.size >= _THREAD_MIN_PIXELS else 1
            if nthreads > 1:
                # the kernel releases the GIL.  Chunks are handed out on demand, this thread
                # working too: a core that is slow or busy (shared machine) takes fewer.
                nchunk = -(-out.size // _CHUNK)
                take = itertools.count()

                def work() -> None:
                    for i in take:
                        if i >= nchunk:
                            return
                        a, b = i * _CHUNK, min(out.size, (i + 1) * _CHUNK)
                        kern(flat[a * nch:b * nch], nch, self.coarse, self.recs, self.raw,
                             self.n_rec, out[a:b])

                pool = _thread_pool(nthreads - 1)
                futs = [pool.submit(work) for _ in range(min(nthreads, nchunk) - 1)]
                work()
                for f in futs:
                    f.result()
            else:
                kern(flat, nch, self.coarse, self.recs, self.raw, self.n_rec, out)
        elif out.size:
            px = flat.reshape(-1, nch)
            p = (px[:, 0].astype(np.uint32) << 16) | (px[:, 1].astype(np.uint32) << 8) | px[:, 2]
            np.take(self.full_table(), p, out=out)
        return out.reshape(shape)

    def nearest_one(self, r: int, g: int, b: int) -> int:
        """Nearest palette index of one colour (memoised; used by error diffusion)."""
        key = (r << 16) | (g << 8) | b
        cache = self.__dict__.setdefault("_one_cache", {})
        v = cache.get(key)
        if v is None:
            if self.coarse is not None:
                v = int(self._decode(np.int64(r), np.int64(g), np.int64(b)))
            else:
                if not hasattr(self, "_pal_lab"):
                    self._pal_lab = srgb_to_lab(self.colours[self.allowed])
                x = srgb_to_lab(np.array([r, g, b]))
                v = int(self.allowed[int(np.argmin(ciede2000(x[None], self._pal_lab)))])
            if len(cache) < 1 << 20:
                cache[key] = v
        return v

    def _map_unique(self, px: np.ndarray) -> np.ndarray:
        packed = (px[:, 0].astype(np.uint32) << 16) | (px[:, 1].astype(np.uint32) << 8) | px[:, 2]
        uniq, inv = np.unique(packed, return_inverse=True)
        urgb = np.stack([(uniq >> 16) & 255, (uniq >> 8) & 255, uniq & 255], -1).astype(np.uint8)
        res = nearest_bruteforce(urgb, self.colours, self.allowed, metric=self.metric)
        return res.astype(np.uint8)[inv.reshape(-1)]


_MAPPERS: dict[tuple, NearestMapper] = {}


def get_mapper(colours: np.ndarray, allowed: Optional[np.ndarray] = None, *, metric: str = "lab",
               use_cache: bool = True) -> NearestMapper:
    """A process-wide memoised :class:`NearestMapper`."""
    colours = np.ascontiguousarray(colours, np.uint8)
    al = np.arange(len(colours)) if allowed is None else np.unique(np.asarray(allowed, np.int64))
    k = (metric, colours.tobytes(), al.tobytes(), use_cache)
    with _LOCK:
        m = _MAPPERS.get(k)
        if m is None:
            m = NearestMapper(colours, al, metric=metric, use_cache=use_cache)
            _MAPPERS[k] = m
        return m
