"""Pixel-art clean-up for quantised images: per-area colour limit and isolated-pixel removal.

Both steps only ever choose among allowed palette colours, never create a colour that
was not already chosen for the area, and leave already-clean pixel art (≤ ``max_colours``
colours per area, pixels exactly on the palette) unchanged.

"Exactly on the palette" is judged from ``src_lab``.  For a screenshot recognised as an NES
palette (:mod:`palettes.recognition`) the source colours are another table's rendering of the
same NES colours, a few ΔE away from ours, so the quantize stage passes the palette's own
colours of the recognised numbers as ``src_lab``: every legal area and every deliberate lone
pixel then stays as it is; only areas over the colour limit change.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .colour import delta_e76_sq, srgb_to_lab

__all__ = ["limit_area_colours", "remove_isolated", "isolated_mask", "area_colour_counts",
           "tolerance_for_strength"]


def _areas(h: int, w: int, area: int):
    for y0 in range(0, h, area):
        for x0 in range(0, w, area):
            yield slice(y0, min(h, y0 + area)), slice(x0, min(w, x0 + area))


def area_colour_counts(idx: np.ndarray, mask: Optional[np.ndarray] = None, *, area: int = 16) -> np.ndarray:
    """Number of distinct indices in each ``area``×``area`` block (opaque pixels only).

    Parameters
    ----------
    idx : ndarray, shape (H, W), integer
    mask : ndarray, shape (H, W), bool, optional — True where the pixel counts

    Returns
    -------
    ndarray, shape (ceil(H/area) * ceil(W/area),), int64, row-major block order
    """
    h, w = idx.shape
    out = []
    for ys, xs in _areas(h, w, area):
        v = idx[ys, xs]
        if mask is not None:
            v = v[mask[ys, xs]]
        out.append(len(np.unique(v)))
    return np.array(out, np.int64)


def _kmeans_numpy(x: np.ndarray, k: int, iters: int = 12) -> np.ndarray:
    """Deterministic k-means on Lab points (reference implementation, see :func:`_kmeans_lab`)."""
    mean = x.mean(axis=0)
    first = int(np.argmin(delta_e76_sq(x, mean)))
    idx = [first]
    d = delta_e76_sq(x, x[first])
    while len(idx) < k:
        j = int(np.argmax(d))
        if d[j] <= 0:
            break
        idx.append(j)
        d = np.minimum(d, delta_e76_sq(x, x[j]))
    c = x[idx].copy()
    kk = len(c)
    prev = None
    for _ in range(iters):
        lab = np.argmin(delta_e76_sq(x[:, None, :], c[None]), axis=1)
        if prev is not None and np.array_equal(lab, prev):
            break
        prev = lab
        cnt = np.bincount(lab, minlength=kk).astype(np.float64)
        nz = cnt > 0
        for dim in range(3):
            c[nz, dim] = np.bincount(lab, weights=x[:, dim], minlength=kk)[nz] / cnt[nz]
    return c


_kmeans_jit = None


def _get_kmeans_jit():
    global _kmeans_jit
    if _kmeans_jit is None:
        import numba as nb

        @nb.njit(cache=True)
        def km(x, k, iters):                                     # pragma: no cover (jitted)
            n = x.shape[0]
            m0 = x[:, 0].mean()
            m1 = x[:, 1].mean()
            m2 = x[:, 2].mean()
            d = np.empty(n)
            best = np.inf
            first = 0
            for i in range(n):
                t0 = x[i, 0] - m0
                t1 = x[i, 1] - m1
                t2 = x[i, 2] - m2
                v = t0 * t0 + t1 * t1 + t2 * t2
                if v < best:
                    best = v
                    first = i
            c = np.empty((k, 3))
            c[0] = x[first]
            for i in range(n):
                t0 = x[i, 0] - c[0, 0]
                t1 = x[i, 1] - c[0, 1]
                t2 = x[i, 2] - c[0, 2]
                d[i] = t0 * t0 + t1 * t1 + t2 * t2
            kk = 1
            while kk < k:
                j = 0
                for i in range(n):
                    if d[i] > d[j]:
                        j = i
                if d[j] <= 0:
                    break
                c[kk] = x[j]
                for i in range(n):
                    t0 = x[i, 0] - c[kk, 0]
                    t1 = x[i, 1] - c[kk, 1]
                    t2 = x[i, 2] - c[kk, 2]
                    v = t0 * t0 + t1 * t1 + t2 * t2
                    if v < d[i]:
                        d[i] = v
                kk += 1
            lab = np.full(n, -1, np.int64)
            for _ in range(iters):
                changed = False
                for i in range(n):
                    bj = 0
                    bv = np.inf
                    for j in range(kk):
                        t0 = x[i, 0] - c[j, 0]
                        t1 = x[i, 1] - c[j, 1]
                        t2 = x[i, 2] - c[j, 2]
                        v = t0 * t0 + t1 * t1 + t2 * t2
                        if v < bv:
                            bv = v
                            bj = j
                    if lab[i] != bj:
                        changed = True
                        lab[i] = bj
                if not changed:
                    break
                s = np.zeros((kk, 3))
                cnt = np.zeros(kk)
                for i in range(n):
                    s[lab[i]] += x[i]
                    cnt[lab[i]] += 1.0
                for j in range(kk):
                    if cnt[j] > 0:
                        c[j] = s[j] / cnt[j]
            return c[:kk].copy()

        _kmeans_jit = km
    return _kmeans_jit


def _kmeans_lab(x: np.ndarray, k: int, iters: int = 12) -> np.ndarray:
    """Deterministic k-means on Lab points.

    Initialisation: the point nearest the mean, then repeatedly the point farthest from all
    chosen centres; Lloyd iterations until no label changes (at most ``iters``).
    x: (N, 3) float64.  Returns (<= k, 3) centres.  Uses numba when available.
    """
    try:
        km = _get_kmeans_jit()
    except ImportError:                                           # pragma: no cover
        return _kmeans_numpy(x, k, iters)
    return km(np.ascontiguousarray(x, np.float64), int(k), int(iters))


def limit_area_colours(idx: np.ndarray, src_lab: np.ndarray, pal_lab: np.ndarray,
                       allowed: np.ndarray, *, max_colours: int = 4, area: int = 16,
                       mask: Optional[np.ndarray] = None) -> np.ndarray:
    """Limit each area to at most ``max_colours`` palette colours.

    Areas already within the limit are untouched.  Otherwise the area's source colours are
    clustered in CIELAB (k-means, k = ``max_colours``), each cluster centre is mapped to its
    nearest allowed palette colour, and every pixel of the area takes the nearest (ΔE76)
    of those chosen colours.

    Parameters
    ----------
    idx : ndarray, shape (H, W), uint8 — nearest-colour indices
    src_lab : ndarray, shape (H, W, 3), float64 — source pixels in CIELAB
    pal_lab : ndarray, shape (K, 3), float64 — CIELAB of every palette entry
    allowed : ndarray of int — indices that may be chosen
    mask : ndarray, shape (H, W), bool, optional — opaque pixels (others are ignored)

    Returns
    -------
    ndarray, shape (H, W), uint8 (a new array)
    """
    if max_colours < 1:
        raise ValueError("max_colours must be >= 1")
    out = idx.copy()
    h, w = idx.shape
    al = np.asarray(allowed)
    for ys, xs in _areas(h, w, area):
        blk = out[ys, xs]
        m = np.ones(blk.shape, bool) if mask is None else mask[ys, xs]
        if not m.any():
            continue
        if len(np.unique(blk[m])) <= max_colours:
            continue
        x = src_lab[ys, xs][m]
        centres = _kmeans_lab(x, max_colours)
        chosen = al[np.argmin(delta_e76_sq(centres[:, None, :], pal_lab[al][None]), axis=1)]
        chosen = np.unique(chosen)
        d = delta_e76_sq(x[:, None, :], pal_lab[chosen][None])
        newv = chosen[np.argmin(d, axis=1)].astype(np.uint8)
        sub = blk.copy()
        sub[m] = newv
        out[ys, xs] = sub
    return out


_OFFS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


def _neighbours(idx: np.ndarray, mask: Optional[np.ndarray]) -> np.ndarray:
    """(8, H, W) int array of neighbour indices, -1 outside the image or transparent."""
    h, w = idx.shape
    p = np.full((h + 2, w + 2), -1, np.int64)
    p[1:-1, 1:-1] = idx
    if mask is not None:
        p[1:-1, 1:-1][~mask] = -1
    return np.stack([p[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy, dx in _OFFS])


def isolated_mask(idx: np.ndarray, mask: Optional[np.ndarray] = None) -> np.ndarray:
    """Pixels unlike every one of their (in-image, opaque) 8 neighbours.

    Returns
    -------
    ndarray, shape (H, W), bool (a pixel with no valid neighbour is not isolated)
    """
    nb = _neighbours(idx, mask)
    valid = nb >= 0
    same = (nb == idx[None].astype(np.int64)) & valid
    iso = valid.any(axis=0) & ~same.any(axis=0)
    if mask is not None:
        iso &= mask
    return iso


#: a source pixel within this ΔE76 of its own palette colour is "exactly on the palette":
#: deliberate, so :func:`remove_isolated` keeps it (below strength 3)
EXACT_DE = 1.0


def tolerance_for_strength(strength: int) -> float:
    """ΔE76 margin used by :func:`remove_isolated`: 10 × strength, unlimited from 3 on."""
    return np.inf if strength >= 3 else 10.0 * strength


def remove_isolated(idx: np.ndarray, src_lab: np.ndarray, pal_lab: np.ndarray, *, strength: int = 1,
                    area: int = 16, mask: Optional[np.ndarray] = None) -> np.ndarray:
    """Replace isolated pixels by their neighbours' majority colour.

    A pixel that differs from all its 8 neighbours takes the most common neighbour colour
    (ties: the one closest to the pixel's source colour), provided that

    * that colour is already used in the pixel's ``area``×``area`` block (so the per-area
      colour count never grows);
    * the pixel's *source* colour is not exactly on the palette (within ``EXACT_DE`` = 1 ΔE76
      of its own palette colour) — an exact palette colour was put there on purpose (a star,
      an eye, a highlight in clean pixel art);
    * the majority colour fits the source colour at most ``tolerance_for_strength(strength)``
      ΔE76 worse than the pixel's own colour (10 × strength): speckle from noise that just
      crossed a colour boundary goes, a clearly different colour stays.

    From strength 3 on both guards are off (plain majority filter).  ``strength`` passes are
    made (0 = nothing).

    Parameters
    ----------
    idx : ndarray, shape (H, W), uint8
    src_lab : ndarray, shape (H, W, 3), float64
    pal_lab : ndarray, shape (K, 3), float64
    strength : int >= 0
    mask : ndarray, shape (H, W), bool, optional

    Returns
    -------
    ndarray, shape (H, W), uint8 (a new array)
    """
    if strength < 0:
        raise ValueError("strength must be >= 0")
    out = idx.copy()
    h, w = idx.shape
    tol = tolerance_for_strength(strength)
    ay, ax = np.divmod(np.arange(h), area)[0], np.divmod(np.arange(w), area)[0]
    aid = ay[:, None] * ((w + area - 1) // area) + ax[None, :]
    k = len(pal_lab)
    for _ in range(strength):
        iso = isolated_mask(out, mask)
        if not iso.any():
            break
        nb = _neighbours(out, mask)[:, iso]                      # (8, n)
        valid = nb >= 0
        counts = ((nb[:, None, :] == nb[None, :, :]) & valid[None] & valid[:, None]).sum(axis=1)
        # present colours per area
        present = np.zeros((aid.max() + 1, k), bool)
        mm = np.ones(out.shape, bool) if mask is None else mask
        present[aid[mm], out[mm]] = True
        a_iso = aid[iso]
        okc = valid & present[a_iso[None, :], np.where(valid, nb, 0)]
        counts = np.where(okc, counts, -1)
        s_lab = src_lab[iso]                                     # (n, 3)
        dist = delta_e76_sq(s_lab[None], pal_lab[np.where(valid, nb, 0)])   # (8, n)
        own = np.sqrt(delta_e76_sq(s_lab, pal_lab[out[iso]]))    # (n,)
        # best = max count, then min distance
        score = counts.astype(np.float64) * 1e6 - np.minimum(dist, 1e5)
        score = np.where(okc, score, -np.inf)
        j = np.argmax(score, axis=0)
        cols = np.arange(nb.shape[1])
        cand = nb[j, cols]
        if np.isinf(tol):
            ok = okc[j, cols]
        else:
            ok = okc[j, cols] & (own > EXACT_DE) & (np.sqrt(dist[j, cols]) <= own + tol)
        ys, xs = np.nonzero(iso)
        out[ys[ok], xs[ok]] = cand[ok].astype(np.uint8)
    return out


def lab_of(rgb: np.ndarray) -> np.ndarray:
    """CIELAB of an (H, W, 3) uint8 image, float64 (convenience wrapper)."""
    return srgb_to_lab(rgb)
