"""Small pixel helpers shared by the tile domain: colour packing, colour counts, RGBA, grids.

>>> pack_colours(np.array([[1, 2, 3, 255]], np.uint8)).tolist()
[4278387201]
"""
from __future__ import annotations

import numpy as np

__all__ = ["pack_colours", "colours_per_tile", "as_rgba", "join_grid", "lab_of_pixels"]


def pack_colours(pixels: np.ndarray) -> np.ndarray:
    """One uint32 per pixel: channel ``c`` in bits ``8c .. 8c+7`` (R lowest).

    Parameters
    ----------
    pixels : ndarray, shape (..., C), uint8, C = 1, 3 or 4

    Returns
    -------
    ndarray, shape (...), uint32
        Equal colours give equal values.  For RGB, ``(v >> 16) & 255`` is blue.
    """
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or pixels.ndim < 1 or pixels.shape[-1] not in (1, 3, 4):
        raise ValueError(f"pixels must be uint8 (..., 1|3|4), got {pixels.dtype} {pixels.shape}")
    code = np.zeros(pixels.shape[:-1], np.uint32)
    for ch in range(pixels.shape[-1]):
        code |= pixels[..., ch].astype(np.uint32) << np.uint32(8 * ch)
    return code


def colours_per_tile(tiles: np.ndarray) -> np.ndarray:
    """Distinct colours (all channels count, so RGBA alpha does) in each tile.

    Parameters
    ----------
    tiles : ndarray, shape (N, T, T, C), uint8

    Returns
    -------
    ndarray, shape (N,), int64

    >>> t = np.zeros((1, 2, 2, 3), np.uint8); t[0, 0, 0] = 9
    >>> colours_per_tile(t).tolist()
    [2]
    """
    code = pack_colours(tiles)
    n = code.shape[0]
    if n == 0:
        return np.zeros(0, np.int64)
    flat = np.sort(code.reshape(n, -1), axis=1)
    return (flat[:, 1:] != flat[:, :-1]).sum(axis=1).astype(np.int64) + 1


def as_rgba(tiles: np.ndarray) -> np.ndarray:
    """RGB(A) uint8 array (..., 3|4) -> RGBA; RGB gets an opaque alpha channel (no copy if RGBA)."""
    tiles = np.asarray(tiles)
    if tiles.shape[-1] == 4:
        return tiles
    if tiles.shape[-1] != 3:
        raise ValueError(f"expected 3 or 4 channels, got shape {tiles.shape}")
    return np.concatenate([tiles, np.full(tiles.shape[:-1] + (1,), 255, np.uint8)], axis=-1)


def join_grid(tiles: np.ndarray) -> np.ndarray:
    """Lay a grid of tiles out as one image; inverse of ``tilesets.artifacts.grid_cut``.

    Parameters
    ----------
    tiles : ndarray, shape (..., rows, cols, T, T, C)

    Returns
    -------
    ndarray, shape (..., rows * T, cols * T, C)

    >>> join_grid(np.zeros((2, 3, 16, 16, 4), np.uint8)).shape
    (32, 48, 4)
    """
    a = np.asarray(tiles)
    *lead, rows, cols, th, tw, c = a.shape
    return np.swapaxes(a, -4, -3).reshape(*lead, rows * th, cols * tw, c)


def lab_of_pixels(rgb: np.ndarray) -> np.ndarray:
    """CIELAB of RGB pixels, converted once per distinct colour.

    Parameters
    ----------
    rgb : ndarray, shape (..., 3), uint8

    Returns
    -------
    ndarray, shape (..., 3), float64 — the same values as ``palettes.colour.srgb_to_lab``

    Pixel art has few colours, so converting the distinct ones and indexing back is much
    cheaper than converting every pixel.
    """
    from palettes.colour import srgb_to_lab

    rgb = np.ascontiguousarray(rgb, np.uint8)
    uniq, inv = np.unique(pack_colours(rgb).ravel(), return_inverse=True)
    colours = np.stack([uniq & 255, (uniq >> 8) & 255, (uniq >> 16) & 255], -1).astype(np.uint8)
    return srgb_to_lab(colours)[inv.ravel()].reshape(rgb.shape[:-1] + (3,))
