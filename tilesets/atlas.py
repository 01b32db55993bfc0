"""Pack a tile bank into one atlas image (``tileset.png``) and cut it back apart.

Tile ``i`` sits at row ``i // columns``, column ``i % columns``; no margin, no spacing; unused
cells of the last row are fully transparent.  This is the layout Tiled assumes for a tileset with
``columns`` set and ``margin = spacing = 0``.
"""
from __future__ import annotations

import math

import numpy as np

from tilesets.artifacts import grid_cut
from tilesets.pixels import as_rgba, join_grid


def atlas_columns(count: int, columns: int = 0) -> int:
    """Number of atlas columns for ``count`` tiles.

    ``columns > 0`` is used as is (but never more than ``count``); ``0`` picks a near-square
    sheet, ``ceil(sqrt(count))``.  Always at least 1.
    """
    if columns < 0:
        raise ValueError(f"columns must be >= 0, got {columns}")
    if count <= 0:
        return max(1, columns)
    if columns == 0:
        return max(1, math.ceil(math.sqrt(count)))
    return max(1, min(columns, count))


def pack_atlas(tiles: np.ndarray, *, columns: int = 0) -> np.ndarray:
    """Lay tiles out row-major in one RGBA image.

    Parameters
    ----------
    tiles : ndarray, shape (K, T, T, 4) or (K, T, T, 3), uint8
        RGB tiles get an opaque alpha channel.
    columns : int, optional
        Tiles per row; 0 (default) = near-square, see :func:`atlas_columns`.

    Returns
    -------
    ndarray, shape (ceil(K / columns) * T, columns * T, 4), uint8

    Examples
    --------
    >>> pack_atlas(np.zeros((5, 16, 16, 4), np.uint8), columns=2).shape
    (48, 32, 4)
    """
    t = np.asarray(tiles)
    if t.dtype != np.uint8 or t.ndim != 4 or t.shape[1] != t.shape[2] or t.shape[3] not in (3, 4):
        raise ValueError(f"tiles must be uint8 (K, T, T, 3|4), got {t.dtype} {t.shape}")
    t = as_rgba(t)
    k, ts = t.shape[0], t.shape[1]
    cols = atlas_columns(k, columns)
    rows = max(1, math.ceil(k / cols))
    padded = np.zeros((rows * cols, ts, ts, 4), np.uint8)
    padded[:k] = t
    return join_grid(padded.reshape(rows, cols, ts, ts, 4))


def unpack_atlas(atlas: np.ndarray, *, tile_size: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_atlas`: the first ``count`` tiles, shape (count, T, T, C)."""
    a = np.asarray(atlas)
    h, w = a.shape[:2]
    if tile_size <= 0 or h % tile_size or w % tile_size:
        raise ValueError(f"atlas {w}x{h} is not a grid of {tile_size}-px tiles")
    rows, cols = h // tile_size, w // tile_size
    if count > rows * cols:
        raise ValueError(f"atlas holds {rows * cols} tiles, asked for {count}")
    return grid_cut(a if a.ndim == 3 else a[..., None], tile_size)[:count].copy()
