"""Dithering on top of the exact nearest-colour mapper: ordered Bayer (2/4/8) and Floyd–Steinberg."""
from __future__ import annotations

import numpy as np

from .nearest import NearestMapper

__all__ = ["DITHERS", "bayer_matrix", "dither_map", "palette_spread"]

DITHERS = ("none", "bayer2", "bayer4", "bayer8", "floyd")


def bayer_matrix(n: int) -> np.ndarray:
    """Ordered-dither threshold matrix.

    Parameters
    ----------
    n : {2, 4, 8}

    Returns
    -------
    ndarray, shape (n, n), float64, values ``(rank + 0.5) / n² - 0.5`` in (-0.5, 0.5)
    """
    if n not in (2, 4, 8):
        raise ValueError(f"Bayer size must be 2, 4 or 8, got {n}")
    m = np.array([[0, 2], [3, 1]], np.int64)
    while m.shape[0] < n:
        m = np.block([[4 * m, 4 * m + 2], [4 * m + 3, 4 * m + 1]])
    return (m + 0.5) / (n * n) - 0.5


def palette_spread(colours: np.ndarray, allowed: np.ndarray) -> float:
    """Median RGB distance from each allowed colour to its nearest other allowed colour."""
    c = colours[allowed].astype(np.float64)
    if len(c) < 2:
        return 0.0
    d = np.sqrt(((c[:, None] - c[None]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    return float(np.median(d.min(axis=1)))


def dither_map(rgb: np.ndarray, mapper: NearestMapper, mode: str) -> np.ndarray:
    """Map an RGB image to palette indices with dithering.

    Parameters
    ----------
    rgb : ndarray, shape (H, W, 3), uint8
    mapper : NearestMapper
    mode : {"none", "bayer2", "bayer4", "bayer8", "floyd"}

    Returns
    -------
    ndarray, shape (H, W), uint8.  ``none`` is the exact nearest colour; Bayer adds a
    position-dependent offset (scaled by the palette's typical colour spacing) before the
    exact lookup; Floyd–Steinberg diffuses the RGB error 7/16, 3/16, 5/16, 1/16.
    """
    if mode not in DITHERS:
        raise ValueError(f"dither must be one of {', '.join(DITHERS)}, got {mode!r}")
    rgb = np.asarray(rgb, np.uint8)[..., :3]
    if mode == "none":
        return mapper.map(rgb)
    h, w = rgb.shape[:2]
    if mode.startswith("bayer"):
        n = int(mode[5:])
        t = bayer_matrix(n)
        tt = np.tile(t, ((h + n - 1) // n, (w + n - 1) // n))[:h, :w]
        spread = palette_spread(mapper.colours, mapper.allowed)
        v = rgb.astype(np.float64) + spread * tt[..., None]
        return mapper.map(np.clip(np.round(v), 0, 255).astype(np.uint8))
    return _floyd(rgb, mapper)


_fs_jit = None


def _get_fs_jit():
    global _fs_jit
    if _fs_jit is None:
        import numba as nb

        from .nearest import _get_numba_kernel

        kern = _get_numba_kernel()
        if kern is None:
            raise ImportError("numba unavailable")
        lookup = kern.lookup

        @nb.njit(cache=False)
        def fs(rgb, pal, coarse, recs, raw, n_rec, out):         # pragma: no cover (jitted)
            h, w = out.shape
            buf = rgb.astype(np.float64)
            for y in range(h):
                for x in range(w):
                    r = min(255, max(0, int(np.floor(buf[y, x, 0] + 0.5))))
                    g = min(255, max(0, int(np.floor(buf[y, x, 1] + 0.5))))
                    b = min(255, max(0, int(np.floor(buf[y, x, 2] + 0.5))))
                    i = lookup(np.uint32(r), np.uint32(g), np.uint32(b), coarse, recs, raw, n_rec)
                    out[y, x] = i
                    for c in range(3):
                        e = buf[y, x, c] - pal[i, c]
                        if x + 1 < w:
                            buf[y, x + 1, c] += e * (7.0 / 16.0)
                        if y + 1 < h:
                            if x > 0:
                                buf[y + 1, x - 1, c] += e * (3.0 / 16.0)
                            buf[y + 1, x, c] += e * (5.0 / 16.0)
                            if x + 1 < w:
                                buf[y + 1, x + 1, c] += e * (1.0 / 16.0)

        _fs_jit = fs
    return _fs_jit


def _floyd(rgb: np.ndarray, mapper: NearestMapper) -> np.ndarray:
    """Floyd–Steinberg in RGB (left to right, top to bottom); exact lookup per pixel."""
    h, w = rgb.shape[:2]
    out = np.zeros((h, w), np.uint8)
    pal = mapper.colours.astype(np.float64)
    if mapper.coarse is not None:
        try:
            fs = _get_fs_jit()
            fs(np.ascontiguousarray(rgb), pal, mapper.coarse, mapper.recs, mapper.raw.reshape(-1),
               np.uint32(mapper.n_rec), out)
            return out
        except ImportError:                                      # pragma: no cover
            pass
    buf = rgb.astype(np.float64)
    for y in range(h):
        for x in range(w):
            c = np.clip(np.floor(buf[y, x] + 0.5), 0, 255).astype(np.int64)
            i = mapper.nearest_one(int(c[0]), int(c[1]), int(c[2]))
            out[y, x] = i
            err = buf[y, x] - pal[i]
            if x + 1 < w:
                buf[y, x + 1] += err * (7 / 16)
            if y + 1 < h:
                if x > 0:
                    buf[y + 1, x - 1] += err * (3 / 16)
                buf[y + 1, x] += err * (5 / 16)
                if x + 1 < w:
                    buf[y + 1, x + 1] += err * (1 / 16)
    return out
