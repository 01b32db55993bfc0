"""Batch perceptual hashes of small tiles, bit-identical to :mod:`imagehash`.

``phash`` (the default), ``dhash`` and ``ahash`` give, for every tile of a batch, the same 64-bit
hash that ``imagehash.phash / dhash / average_hash`` return for that tile as a PIL image with the
same ``hash_size`` (and ``highfreq_factor``).  The hash is packed into a ``uint64`` with the
first bit of imagehash's flattened boolean array as the most significant bit, so
``format(h, "016x") == str(imagehash.phash(img))``.

How it stays exact and fast
---------------------------
imagehash converts to greyscale with Pillow (``L = (19595 R + 38470 G + 7471 B + 2**15) >> 16``),
resizes with Pillow's Lanczos filter, which works in 8-bit fixed point (22-bit coefficients,
rounding and clipping to 0..255 after the horizontal and again after the vertical pass), and
(phash) takes ``scipy.fftpack.dct`` along both axes.

* The greyscale conversion is the same integer formula, vectorised.
* Each resize pass is one matrix product with the pass's fixed-point coefficients, computed once
  per (input size, output size) the way Pillow computes them.  Every product and partial sum is
  an integer below 2**53, so a float64 BLAS product is exact whatever its summation order; the
  rounding and clipping are then applied exactly as Pillow does.  dhash and ahash are thereby
  exact integer computations.
* For phash only the low ``hash_size x hash_size`` corner of the 2-D DCT-II is needed; it is two
  small matrix products with a cosine matrix.  That differs from scipy's FFT-based DCT by
  rounding noise (around 1e-10), which matters only when a coefficient lies within that noise of
  the median (flat or symmetric tiles, whose coefficients are exactly equal in exact arithmetic).
  Every tile whose smallest gap ``|coefficient - median|`` is below a safe margin is recomputed
  with ``scipy.fftpack.dct`` on the very same resized pixels, as imagehash does, so the result is
  identical for every tile.  Identical resized tiles are recomputed once.
"""
from __future__ import annotations

import contextlib
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Callable, Optional

import numpy as np

__all__ = ["phash", "dhash", "ahash", "hash_tiles", "to_grey", "pillow_resize",
           "hamming", "to_hex", "HASHES"]

_PRECISION_BITS = 32 - 8 - 2          # Pillow's Resample.c, 8 bits per channel
_LANCZOS_SUPPORT = 3.0


# --------------------------------------------------------------------------- greyscale
def to_grey(tiles: np.ndarray) -> np.ndarray:
    """Pillow's ``convert("L")`` of RGB(A) tiles.

    Parameters
    ----------
    tiles : ndarray, shape (N, H, W, 3) or (N, H, W, 4), uint8
        RGB or RGBA tiles; alpha is ignored, as Pillow ignores it.  A (N, H, W) uint8 array is
        taken as greyscale already and returned unchanged.

    Returns
    -------
    ndarray, shape (N, H, W), uint8
    """
    tiles = np.asarray(tiles)
    if tiles.dtype != np.uint8:
        raise TypeError(f"tiles must be uint8, got {tiles.dtype}")
    if tiles.ndim == 3:
        return tiles
    if tiles.ndim != 4 or tiles.shape[-1] not in (3, 4):
        raise ValueError(f"tiles must have shape (N, H, W, 3|4) or (N, H, W), got {tiles.shape}")
    r = tiles[..., 0].astype(np.uint32)
    g = tiles[..., 1].astype(np.uint32)
    b = tiles[..., 2].astype(np.uint32)
    grey = r * 19595
    grey += g * 38470
    grey += b * 7471
    grey += 0x8000
    grey >>= 16
    return grey.astype(np.uint8)


# --------------------------------------------------------------------------- resize
def _sinc(x: float) -> float:
    if x == 0.0:
        return 1.0
    x = x * math.pi
    return math.sin(x) / x


def _lanczos(x: float) -> float:
    if -3.0 <= x < 3.0:
        return _sinc(x) * _sinc(x / 3.0)
    return 0.0


@lru_cache(maxsize=64)
def _resize_matrix(in_size: int, out_size: int) -> np.ndarray:
    """Pillow's fixed-point Lanczos coefficients as a dense (out_size, in_size) float64 matrix
    of integers (coefficient * 2**22)."""
    scale = float(in_size) / out_size
    filterscale = max(scale, 1.0)
    support = _LANCZOS_SUPPORT * filterscale
    mat = np.zeros((out_size, in_size), dtype=np.float64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        ss = 1.0 / filterscale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        ws = [_lanczos((x + xmin - center + 0.5) * ss) for x in range(xmax)]
        ww = sum(ws)
        if ww != 0.0:
            ws = [w / ww for w in ws]
        for x, w in enumerate(ws):
            if w < 0:
                q = int(-0.5 + w * (1 << _PRECISION_BITS))
            else:
                q = int(0.5 + w * (1 << _PRECISION_BITS))
            mat[xx, xmin + x] = q
    mat.setflags(write=False)
    return mat


def _fixed_round(acc: np.ndarray) -> np.ndarray:
    """Pillow's ``clip8``: round the fixed-point accumulator and clip to 0..255 (in place)."""
    acc += float(1 << (_PRECISION_BITS - 1))
    acc *= 1.0 / (1 << _PRECISION_BITS)
    np.floor(acc, out=acc)
    np.clip(acc, 0.0, 255.0, out=acc)
    return acc


def pillow_resize(grey: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pillow's ``Image.resize((width, height), Image.LANCZOS)`` of greyscale tiles.

    Parameters
    ----------
    grey : ndarray, shape (N, H, W), uint8 or float64 holding integers 0..255
    width, height : int
        Output size, as in PIL (width first).

    Returns
    -------
    ndarray, shape (N, height, width), float64
        Integer values 0..255, exactly the pixels Pillow produces.
    """
    n, h, w = grey.shape
    x = np.asarray(grey, dtype=np.float64)
    if w != width:                                   # horizontal pass first, as Pillow
        kx = _resize_matrix(w, width)
        x = (x.reshape(n * h, w) @ kx.T).reshape(n, h, width)
        _fixed_round(x)
    if h != height:
        ky = _resize_matrix(h, height)
        xt = np.ascontiguousarray(x.transpose(0, 2, 1)).reshape(n * width, h)
        x = (xt @ ky.T).reshape(n, width, height)
        _fixed_round(x)
        x = x.transpose(0, 2, 1)
    return x


# --------------------------------------------------------------------------- packing
def _pack_bits(bits: np.ndarray) -> np.ndarray:
    """(N, 64) bool -> (N,) uint64, first bit most significant (imagehash's hex order)."""
    n, nb = bits.shape
    if nb > 64:
        raise ValueError(f"a hash of {nb} bits does not fit in 64 bits; use hash_size <= 8")
    packed = np.packbits(bits, axis=1, bitorder="big")           # (N, ceil(nb/8))
    pad = 8 - packed.shape[1]
    if pad:
        packed = np.concatenate([np.zeros((n, pad), np.uint8), packed], axis=1)
    out = packed.view(">u8").reshape(n).astype(np.uint64)
    if nb % 8:                                                   # right-align partial bytes
        out >>= np.uint64(8 * ((nb + 7) // 8) - nb)
    return out


def to_hex(hashes: np.ndarray, *, bits: int = 64) -> list[str]:
    """Hex strings as ``str(imagehash.ImageHash)`` prints them."""
    width = (bits + 3) // 4
    return [format(int(h), f"0{width}x") for h in np.asarray(hashes, dtype=np.uint64).ravel()]


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bitwise Hamming distance of uint64 hashes (broadcasting), as uint8."""
    from tilesets.hashindex import popcount64

    return popcount64(np.bitwise_xor(np.asarray(a, np.uint64), np.asarray(b, np.uint64)))


# --------------------------------------------------------------------------- hashes
@lru_cache(maxsize=16)
def _dct_matrix(n: int, k: int) -> np.ndarray:
    """First ``k`` rows of scipy's unnormalised DCT-II of length ``n``: 2 cos(pi k (2m+1) / 2n)."""
    kk = np.arange(k, dtype=np.float64)[:, None]
    m = np.arange(n, dtype=np.float64)[None, :]
    mat = 2.0 * np.cos(np.pi * kk * (2.0 * m + 1.0) / (2.0 * n))
    mat.setflags(write=False)
    return mat


def _scipy_phash_bits(pixels: np.ndarray, hash_size: int) -> np.ndarray:
    """imagehash's own DCT path on resized pixels (M, S, S) -> (M, hash_size**2) bool.

    ``scipy.fftpack.dct`` over a batch gives bit-for-bit the per-image result (each 1-D
    transform runs the same code); the oracle tests check it on flat and mirrored tiles.
    """
    from scipy.fftpack import dct

    if len(pixels) == 0:
        return np.zeros((0, hash_size * hash_size), bool)
    # only the first hash_size rows feed the corner: transforming just those rows along axis 2
    # runs the same per-row code as imagehash's full transform, so the values are identical
    d = dct(dct(pixels, axis=1)[:, :hash_size, :], axis=2)[:, :, :hash_size]
    d = d.reshape(len(pixels), -1)
    return d > np.median(d, axis=1, keepdims=True)


@lru_cache(maxsize=16)
def _phash_mats(t: int, size: int, hash_size: int, channels: int):
    """Matrices of the phash kernel for tiles of side ``t`` (see :func:`_phash_chunk`)."""
    # greyscale: one tile row of t pixels x channels (+ a ones column) -> t grey values + ones.
    # floor((19595 R + 38470 G + 7471 B + 2**15) / 2**16) == rint(S / 2**16 + 2**-17) exactly,
    # because S / 2**16 is a multiple of 2**-16 (no ties) and float64 holds it exactly.
    w = np.zeros((channels * t + 1, t + 1))
    coef = (19595.0, 38470.0, 7471.0) if channels >= 3 else (65536.0,)
    for j in range(t):
        for ch, cf in enumerate(coef):
            w[channels * j + ch, j] = cf / 65536.0
    w[channels * t, :t] = 2.0 ** -17
    w[channels * t, t] = 1.0                                   # carry the ones column along
    # resize passes: clip8((S + 2**21) >> 22) == clip(rint(S / 2**22 + 2**-23)) for integer S
    kx = _resize_matrix(t, size)                               # (size, t)
    kxa = np.zeros((t + 1, size))
    kxa[:t] = kx.T * 2.0 ** -_PRECISION_BITS
    kxa[t] = 2.0 ** -(_PRECISION_BITS + 1)
    kya = np.zeros((size, t + 1))
    kya[:, :t] = kx * 2.0 ** -_PRECISION_BITS
    kya[:, t] = 2.0 ** -(_PRECISION_BITS + 1)
    c = _dct_matrix(size, hash_size)                           # (hash_size, size)
    out = (w, kxa, kya, np.ascontiguousarray(c), np.ascontiguousarray(c.T))
    for a in out:
        a.setflags(write=False)
    return out


_WORK = threading.local()


def _work(name: str, shape: tuple) -> np.ndarray:
    """A float64 scratch array reused by the calling thread (fresh large arrays cost page
    faults: reusing them made the phash kernel 3x faster here)."""
    store = getattr(_WORK, "arrays", None)
    if store is None:
        store = _WORK.arrays = {}
    arr = store.get(name)
    if arr is None or arr.shape != shape:
        arr = np.empty(shape)
        if arr.nbytes <= 8 << 20:                 # keep small scratch only (big chunks: no)
            store[name] = arr
    return arr


def _phash_chunk(tiles: np.ndarray, hash_size: int, highfreq_factor: int):
    """phash of RGB(A) or grey tiles (N, T, T[, C]) -> (bits, unsure, pixels).

    ``bits`` (N, hash_size**2) bool is final except for the rows ``unsure``, whose resized
    pixels (M, S, S) uint8 are returned so the caller recomputes them with scipy in one batch.

    The batch is laid out row-major as (tile row, tile, column), so both resize passes and both
    DCT passes are single large matrix products with no transposition: passes along columns
    multiply on the right, passes along rows multiply on the left.
    """
    n, t = tiles.shape[:2]
    if tiles.shape[1] != tiles.shape[2]:
        return _phash_chunk_generic(to_grey(tiles), hash_size, highfreq_factor)
    size = hash_size * highfreq_factor
    ch = tiles.shape[3] if tiles.ndim == 4 else 1
    ch_used = 3 if ch >= 3 else 1
    w, kxa, kya, c, ct = _phash_mats(t, size, hash_size, ch_used)
    buf = _work("buf", (t, n, ch_used * t + 1))
    src = tiles[..., :3] if ch >= 3 else tiles.reshape(n, t, t, 1)
    buf[:, :, :ch_used * t] = src.transpose(1, 0, 2, 3).reshape(t, n, ch_used * t)
    buf[:, :, ch_used * t] = 1.0
    g = _work("grey", (t * n, t + 1))                           # grey values, ones column
    np.matmul(buf.reshape(t * n, -1), w, out=g)
    np.rint(g, out=g)
    hb = _work("horizontal", (t + 1, n * size))                 # horizontal pass + ones row
    hv = hb[:t].reshape(t * n, size)
    np.matmul(g, kxa, out=hv)
    np.rint(hv, out=hv)
    np.clip(hv, 0.0, 255.0, out=hv)
    hb[t] = 1.0
    pix = _work("pixels", (size, n * size))                     # (size rows, n*size cols)
    np.matmul(kya, hb, out=pix)
    np.rint(pix, out=pix)
    np.clip(pix, 0.0, 255.0, out=pix)
    a = _work("dct_rows", (hash_size, n * size))                # DCT along rows
    np.matmul(c, pix, out=a)
    d = _work("dct", (hash_size * n, hash_size))                # DCT along columns
    np.matmul(a.reshape(hash_size * n, size), ct, out=d)
    d = np.ascontiguousarray(d.reshape(hash_size, n, hash_size).transpose(1, 0, 2))
    d = d.reshape(n, hash_size * hash_size)
    srt = np.sort(d, axis=1)
    half = d.shape[1] // 2
    if d.shape[1] % 2:
        med = srt[:, half]
    else:
        med = 0.5 * (srt[:, half - 1] + srt[:, half])
    bits = d > med[:, None]
    # Both DCTs err by far less than 1e-11 * sum|C||P| <= 1e-11 * 4 * 255 * size**2.
    tol = 1e-11 * 4.0 * 255.0 * size * size
    gap = np.abs(d - med[:, None]).min(axis=1)
    unsure = np.flatnonzero(gap <= tol)
    sub = pix.reshape(size, n, size)[:, unsure, :].transpose(1, 0, 2).astype(np.uint8)
    return bits, unsure, sub                # the caller recomputes ``unsure`` rows exactly


def _exact_phash_bits(pixels: np.ndarray, hash_size: int) -> np.ndarray:
    """imagehash's DCT on resized pixels (M, S, S) uint8, once per distinct tile."""
    size = pixels.shape[1]
    flat = np.ascontiguousarray(pixels, dtype=np.uint8).reshape(len(pixels), -1)
    keys = flat.view(np.dtype((np.void, flat.shape[1]))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    exact = _scipy_phash_bits(pixels[first].reshape(-1, size, size), hash_size)
    return exact[inverse.ravel()]


def _phash_chunk_generic(grey: np.ndarray, hash_size: int, highfreq_factor: int) -> np.ndarray:
    """Reference path (any tile shape): exact resize, matrix DCT, scipy for unsure tiles."""
    size = hash_size * highfreq_factor
    pix = pillow_resize(grey, size, size)                          # (N, S, S) float64
    n = len(pix)
    c = _dct_matrix(size, hash_size)                               # (k, S)
    t = (pix.reshape(n * size, size) @ c.T).reshape(n, size, hash_size)   # P @ C.T
    t = np.ascontiguousarray(t.transpose(0, 2, 1)).reshape(n * hash_size, size)
    d = (t @ c.T).reshape(n, hash_size, hash_size).transpose(0, 2, 1)     # (C @ P @ C.T)
    d = d.reshape(n, hash_size * hash_size)
    med = np.median(d, axis=1, keepdims=True)
    bits = d > med
    tol = 1e-11 * 4.0 * 255.0 * size * size
    unsure = np.flatnonzero(np.abs(d - med).min(axis=1) <= tol)
    if len(unsure):
        bits[unsure] = _exact_phash_bits(pix[unsure].astype(np.uint8), hash_size)
    return bits


def _dhash_chunk(grey: np.ndarray, hash_size: int) -> np.ndarray:
    pix = pillow_resize(grey, hash_size + 1, hash_size)           # (N, h, h+1)
    return (pix[:, :, 1:] > pix[:, :, :-1]).reshape(len(pix), -1)


def _ahash_chunk(grey: np.ndarray, hash_size: int) -> np.ndarray:
    pix = pillow_resize(grey, hash_size, hash_size)
    # pixels > mean  <=>  n * pixel > sum  (integers, exact)
    total = pix.sum(axis=(1, 2), keepdims=True)
    return (pix * (hash_size * hash_size) > total).reshape(len(pix), -1)


def _run_batched(tiles: np.ndarray, fn: Callable[[np.ndarray], np.ndarray], *,
                 chunk: int, workers: Optional[int], grey: bool = True) -> np.ndarray:
    grey = to_grey(tiles) if grey else tiles
    n = len(grey)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    if workers is None:
        workers = min(os.cpu_count() or 1, 4)
    workers = max(1, min(int(workers), -(-n // chunk)))

    def span(lo: int, hi: int) -> np.ndarray:
        parts, todo_idx, todo_pix, hs = [], [], [], 0
        for s in range(lo, hi, chunk):
            out = fn(grey[s:min(s + chunk, hi)])
            if isinstance(out, tuple):          # phash: (bits, unsure rows, their pixels)
                out, idx, pix = out
                if len(idx):
                    todo_idx.append(idx + (s - lo))
                    todo_pix.append(pix)
            hs = out.shape[1]
            parts.append(out)
        bits = np.concatenate(parts)
        if todo_idx:                            # one scipy pass for the whole share
            n_side = int(round(math.sqrt(hs)))
            idx = np.concatenate(todo_idx)
            bits[idx] = _exact_phash_bits(np.concatenate(todo_pix), n_side)
        return _pack_bits(bits)

    with _single_threaded_blas():
        if workers == 1:
            return span(0, n)
        # one contiguous share per thread (numpy and BLAS release the GIL)
        per = -(-n // (workers * chunk)) * chunk
        bounds = [(lo, min(lo + per, n)) for lo in range(0, n, per)]
        with ThreadPoolExecutor(max_workers=len(bounds)) as pool:
            parts = list(pool.map(lambda b: span(*b), bounds))
    return np.concatenate(parts)


def _single_threaded_blas():
    """Keep BLAS to one thread while hashing: the products here are small, and BLAS worker
    threads spinning beside our own threads (or other busy processes) cost 3x on this machine.
    Uses threadpoolctl when it is installed; otherwise changes nothing."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _check(tiles: np.ndarray, hash_size: int) -> np.ndarray:
    tiles = np.asarray(tiles)
    if tiles.dtype != np.uint8:
        raise TypeError(f"tiles must be uint8, got {tiles.dtype}")
    if tiles.ndim not in (3, 4):
        raise ValueError(f"tiles must have shape (N, H, W[, C]), got {tiles.shape}")
    if not isinstance(hash_size, (int, np.integer)) or not 2 <= hash_size <= 8:
        raise ValueError(f"hash_size must be an int in 2..8 (64-bit hashes), got {hash_size!r}")
    return tiles


def phash(tiles: np.ndarray, *, hash_size: int = 8, highfreq_factor: int = 4,
          chunk: int = 64, workers: Optional[int] = None) -> np.ndarray:
    """Perceptual (DCT) hash of every tile, equal to ``imagehash.phash``.

    Parameters
    ----------
    tiles : ndarray, shape (N, H, W, 3|4) or (N, H, W), uint8
        RGB, RGBA (alpha ignored) or greyscale tiles.
    hash_size : int, default 8
        Side of the hashed DCT corner; the hash has ``hash_size**2`` bits (at most 64).
    highfreq_factor : int, default 4
        The tile is resized to ``hash_size * highfreq_factor`` square before the DCT.
    chunk : int, default 64
        Tiles per batch.  Small batches keep the work arrays (about 20 kB per tile) in the CPU
        cache; measured here, 64 tiles ran 3x faster per tile than 512.
    workers : int or None
        Threads (None: one per CPU, at most 4).

    Returns
    -------
    ndarray, shape (N,), uint64
        ``format(h, "016x")`` is ``str(imagehash.phash(Image.fromarray(tile)))``.

    Examples
    --------
    >>> import numpy as np
    >>> tiles = np.arange(2 * 16 * 16 * 3, dtype=np.uint32).reshape(2, 16, 16, 3).astype(np.uint8)
    >>> phash(tiles).dtype
    dtype('uint64')
    """
    tiles = _check(tiles, hash_size)
    if not isinstance(highfreq_factor, (int, np.integer)) or highfreq_factor < 1:
        raise ValueError(f"highfreq_factor must be a positive int, got {highfreq_factor!r}")
    return _run_batched(tiles, lambda g: _phash_chunk(g, hash_size, highfreq_factor),
                        chunk=chunk, workers=workers, grey=False)


def dhash(tiles: np.ndarray, *, hash_size: int = 8, chunk: int = 256,
          workers: Optional[int] = None) -> np.ndarray:
    """Difference hash (horizontal gradients) of every tile, equal to ``imagehash.dhash``.

    Parameters and result as in :func:`phash`.
    """
    tiles = _check(tiles, hash_size)
    return _run_batched(tiles, lambda g: _dhash_chunk(g, hash_size), chunk=chunk, workers=workers)


def ahash(tiles: np.ndarray, *, hash_size: int = 8, chunk: int = 256,
          workers: Optional[int] = None) -> np.ndarray:
    """Average hash of every tile, equal to ``imagehash.average_hash``.

    Parameters and result as in :func:`phash`.
    """
    tiles = _check(tiles, hash_size)
    return _run_batched(tiles, lambda g: _ahash_chunk(g, hash_size), chunk=chunk, workers=workers)


#: name -> function, for a ``hash`` parameter
HASHES: dict[str, Callable[..., np.ndarray]] = {"phash": phash, "dhash": dhash, "ahash": ahash}


def hash_tiles(tiles: np.ndarray, method: str = "phash", **kw) -> np.ndarray:
    """Hash tiles with the method named ``method`` ("phash", "dhash" or "ahash")."""
    try:
        fn = HASHES[method]
    except KeyError:
        raise ValueError(f"unknown hash {method!r}; choose one of {sorted(HASHES)}") from None
    return fn(tiles, **kw)
