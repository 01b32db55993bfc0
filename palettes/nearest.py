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
become direct too.  The result is a coarse table (262144 x uint16 = 512 KB, the size of
PIL's own colour cache) whose entry is either the answer or a pointer to a 20-byte record
of a mixed cell (about 44k for the NES palette, 17 % of cells; 2-bit code per colour + up
to 4 values; the few cells with more distinct answers keep a raw 64-byte block).  A lookup
is one read for most pixels and two more within one record otherwise, in a small numba
kernel (numpy fallback via the full 2^24 table otherwise).  Building takes about 2 s
(float64 CIELAB of all 2^24 colours in numpy plus a numba pass); tables are cached under
``~/.cache/tilegan/nearest`` (``TILEGAN_CACHE`` overrides the folder) and load in
milliseconds.
"""
from __future__ import annotations

import hashlib
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
_VERSION = b"nearest-v4"
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


def _get_numba_build():
    """numba version of the per-cell pruning + exact fine blocks (same float64 arithmetic)."""
    global _numba_build
    if _numba_build is not None:
        return _numba_build
    import numba as nb

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
            for a in range(4):
                for b in range(4):
                    for d in range(4):
                        x0 = X[ri * 4 + a, gi * 4 + b, bi * 4 + d, 0]
                        x1 = X[ri * 4 + a, gi * 4 + b, bi * 4 + d, 1]
                        x2 = X[ri * 4 + a, gi * 4 + b, bi * 4 + d, 2]
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
            for a in range(4):
                for b in range(4):
                    for d in range(4):
                        x0 = X[ri * 4 + a, gi * 4 + b, bi * 4 + d, 0]
                        x1 = X[ri * 4 + a, gi * 4 + b, bi * 4 + d, 1]
                        x2 = X[ri * 4 + a, gi * 4 + b, bi * 4 + d, 2]
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
                        fine[c, a * 16 + b * 4 + d] = allowed[bk]

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
    n = len(allowed)
    coarse = np.empty(64 ** 3, np.int64)
    fine_blocks: list[np.ndarray] = []
    nfine = 0
    offs = np.arange(4)
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
_REC = 20      # bytes per mixed-cell record: 16 bytes of 2-bit codes + 4 candidate values


def compact_tables(coarse: np.ndarray, fine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Turn (coarse, fine) from the builder into the compact lookup form.

    Fine blocks whose 64 answers all agree are dropped (their cell becomes direct).  A mixed
    cell with 2-4 distinct answers becomes a 20-byte record (a 2-bit code per colour + the
    up-to-4 values); the rare cell with more keeps a raw 64-byte block.

    Returns
    -------
    coarse : ndarray, shape (262144,), uint16 (uint32 if needed) — value v < 256: the
        answer; ``256 <= v < 256 + n_rec``: record ``v - 256``; else raw block ``v - 256 - n_rec``
    recs : ndarray, shape (n_rec * 20,), uint8
    raw : ndarray, shape (n_raw, 64), uint8
    n_rec : int
    """
    c = coarse.astype(np.int64)
    amb = np.flatnonzero(c >= 256)
    blk = fine[c[amb] - 256] if len(amb) else np.zeros((0, 64), np.uint8)
    uniform = (blk == blk[:, :1]).all(axis=1)
    c[amb[uniform]] = blk[uniform, 0]
    amb, blk = amb[~uniform], blk[~uniform]
    srt = np.sort(blk, axis=1)
    first = np.concatenate([np.ones((len(blk), 1), bool), srt[:, 1:] != srt[:, :-1]], axis=1)
    ndist = first.sum(axis=1)
    small = ndist <= 4
    sb, ss, sf = blk[small], srt[small], first[small]
    n_rec = len(sb)
    recs = np.zeros((n_rec, _REC), np.uint8)
    if n_rec:
        # values: the distinct answers in ascending order, padded with the largest
        rank = np.cumsum(sf, axis=1) - 1                               # (n, 64) rank in sorted row
        vals = np.repeat(ss[:, -1:], 4, axis=1)
        rows, cols = np.nonzero(sf)
        vals[rows, rank[rows, cols]] = ss[rows, cols]
        # code of each colour = index of its value among the distinct values
        codes = (sb[:, :, None] > vals[:, None, :3]).sum(axis=2).astype(np.uint8)
        q = codes.reshape(n_rec, 16, 4)
        recs[:, :16] = q[..., 0] | (q[..., 1] << 2) | (q[..., 2] << 4) | (q[..., 3] << 6)
        recs[:, 16:] = vals
    raw = np.ascontiguousarray(blk[~small])
    c[amb[small]] = 256 + np.arange(n_rec)
    c[amb[~small]] = 256 + n_rec + np.arange(len(raw))
    ctype = np.uint16 if 256 + n_rec + len(raw) <= 65536 else np.uint32
    return c.astype(ctype), recs.reshape(-1), raw.reshape(-1, 64), n_rec


# --------------------------------------------------------------------------- lookup kernels
_THREAD_MIN_PIXELS = 1 << 20
#: threads used by :meth:`NearestMapper.map` when not given (None = one per CPU core)
DEFAULT_THREADS: Optional[int] = None
_POOLS: dict[int, "object"] = {}


def _thread_pool(n: int):
    from concurrent.futures import ThreadPoolExecutor

    with _LOCK:
        pool = _POOLS.get(n)
        if pool is None:
            pool = _POOLS[n] = ThreadPoolExecutor(n, thread_name_prefix="tilegan-nearest")
        return pool


_numba_kernel = None
_numba_failed = False


def _get_numba_kernel():
    global _numba_kernel, _numba_failed
    if _numba_kernel is not None or _numba_failed:
        return _numba_kernel
    try:
        import numba as nb
    except Exception:                                            # pragma: no cover
        _numba_failed = True
        return None

    @nb.njit(inline="always", boundscheck=False, nogil=True)
    def lookup(r, g, b, coarse, recs, raw, n_rec):               # pragma: no cover (jitted)
        v = np.uint32(coarse[((r >> 2) << 12) | ((g >> 2) << 6) | (b >> 2)])
        if v < 256:
            return np.uint8(v)
        off = ((r & 3) << 4) | ((g & 3) << 2) | (b & 3)
        k = v - np.uint32(256)
        if k >= n_rec:
            return raw[(((k - n_rec) << 6) | off)]
        rec = k * np.uint32(20)
        code = (np.uint32(recs[rec + (off >> 2)]) >> ((off & 3) << 1)) & np.uint32(3)
        return recs[rec + np.uint32(16) + code]

    # Serial kernels with a constant pixel stride: LLVM keeps them tight (a prange version
    # measured 2-4x slower here).  Large images are split over threads by the caller.
    @nb.njit(cache=True, boundscheck=False, nogil=True)
    def kernel3(flat, coarse, recs, raw, n_rec, out):            # pragma: no cover (jitted)
        for i in range(out.shape[0]):
            out[i] = lookup(np.uint32(flat[3 * i]), np.uint32(flat[3 * i + 1]),
                            np.uint32(flat[3 * i + 2]), coarse, recs, raw, n_rec)

    @nb.njit(cache=True, boundscheck=False, nogil=True)
    def kernel4(flat, coarse, recs, raw, n_rec, out):            # pragma: no cover (jitted)
        for i in range(out.shape[0]):
            out[i] = lookup(np.uint32(flat[4 * i]), np.uint32(flat[4 * i + 1]),
                            np.uint32(flat[4 * i + 2]), coarse, recs, raw, n_rec)

    def kernel(flat, nch, coarse, recs, raw, n_rec, out):
        (kernel3 if nch == 3 else kernel4)(flat, coarse, recs, raw, np.uint32(n_rec), out)

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
                if (coarse.shape == (64 ** 3,) and raw.ndim == 2 and raw.shape[1] == 64
                        and recs.size == n_rec * _REC and int(coarse.max()) < 256 + n_rec + len(raw)):
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
        recs = self.recs.reshape(-1, _REC) if self.n_rec else np.zeros((1, _REC), np.uint8)
        raw = self.raw if len(self.raw) else np.zeros((1, 64), np.uint8)
        v = self.coarse[((r >> 2) << 12) | ((g >> 2) << 6) | (b >> 2)].astype(np.int64)
        off = ((r & 3) << 4) | ((g & 3) << 2) | (b & 3)
        k = v - 256
        kr = np.clip(k, 0, len(recs) - 1)
        code = (recs[kr, off >> 2].astype(np.int64) >> ((off & 3) * 2)) & 3
        from_rec = recs[kr, 16 + code]
        from_raw = raw[np.clip(k - self.n_rec, 0, len(raw) - 1), off]
        return np.where(v < 256, v, np.where(k < self.n_rec, from_rec, from_raw)).astype(np.uint8)

    # ------------------------------------------------------------------ mapping
    def map(self, rgb: np.ndarray, *, use_numba: bool = True, threads: Optional[int] = None) -> np.ndarray:
        """Map pixels to palette indices.

        Parameters
        ----------
        rgb : ndarray, shape (..., C), uint8, C = 3 or 4 (alpha ignored)
        threads : int, optional
            Threads for inputs of >= 1 MP (default: one per CPU core); 1 = single-threaded.

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
        flat = np.ascontiguousarray(a).reshape(-1)
        out = np.empty(flat.size // nch, np.uint8)
        kern = _get_numba_kernel() if use_numba else None
        if kern is not None and out.size:
            raw = self.raw.reshape(-1)
            if threads is None:
                threads = DEFAULT_THREADS if DEFAULT_THREADS is not None else (os.cpu_count() or 1)
            nthreads = min(max(1, threads), 8)
            if nthreads > 1 and out.size >= _THREAD_MIN_PIXELS:
                # the kernel releases the GIL: split the pixels between threads
                bounds = np.linspace(0, out.size, nthreads + 1).astype(np.int64)
                pool = _thread_pool(nthreads)
                futs = [pool.submit(kern, flat[a * nch:b * nch], nch, self.coarse, self.recs, raw,
                                    self.n_rec, out[a:b])
                        for a, b in zip(bounds[:-1], bounds[1:])]
                for f in futs:
                    f.result()
            else:
                kern(flat, nch, self.coarse, self.recs, raw, self.n_rec, out)
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
