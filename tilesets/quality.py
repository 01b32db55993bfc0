"""Tile quality: how clean and how structured a pixel-art tile is.

The score orders a tileset so that a designer sees the best tiles first::

    score = w_structure * structure - w_colours * colour_excess - w_isolated * isolated

* ``structure`` in [0, 1]: the share of 4-neighbour pixel pairs whose colours differ (the
  tile's edge density), divided by ``edge_target`` and capped at 1.  A flat tile scores 0, a
  tile with clear shapes reaches 1; noise gains nothing beyond the cap.
* ``colour_excess`` in [0, 1]: colours beyond ``max_clean_colours`` (4 = one NES sub-palette),
  divided by the tile's pixel count / 8, capped at 1.
* ``isolated`` in [0, 1]: the share of pixels that differ from all of their 4-neighbours
  inside the tile (stray pixels, GAN speckle), divided by ``isolated_cap`` and capped at 1.

Defaults: ``w_structure=1.0, w_colours=0.5, w_isolated=1.0, edge_target=0.25,
isolated_cap=0.1, max_clean_colours=4``; all keyword options of :func:`quality`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tilesets.pixels import colours_per_tile, pack_colours

__all__ = ["TileStats", "tile_stats", "quality", "cleanliness_key"]


@dataclass(frozen=True)
class TileStats:
    """Per-tile measurements, each an ndarray of shape (N,).

    colours : int64 distinct RGBA colours
    isolated : int64 pixels unlike all their in-tile 4-neighbours
    edges : float64 share of 4-neighbour pairs with different colours, in [0, 1]
    dominant : float64 share of the most frequent colour, in [0, 1]
    """

    colours: np.ndarray
    isolated: np.ndarray
    edges: np.ndarray
    dominant: np.ndarray


def tile_stats(tiles: np.ndarray) -> TileStats:
    """Measure colours, isolated pixels, edge density and dominant colour share.

    Parameters
    ----------
    tiles : ndarray, shape (N, T, T, C), uint8 (C = 1, 3 or 4)

    Returns
    -------
    TileStats
    """
    tiles = np.asarray(tiles)
    if tiles.ndim != 4:
        raise ValueError(f"tiles must be uint8 (N, T, T, 1|3|4), got {tiles.dtype} {tiles.shape}")
    code = pack_colours(tiles)
    n, h, w = code.shape
    if n == 0:
        z = np.zeros(0)
        return TileStats(z.astype(np.int64), z.astype(np.int64), z, z)
    colours = colours_per_tile(tiles)
    flat = np.sort(code.reshape(n, -1), axis=1)
    change = flat[:, 1:] != flat[:, :-1]
    # longest run of equal values in the sorted row = dominant colour count
    idx = np.arange(flat.shape[1])
    starts = np.concatenate([np.ones((n, 1), bool), change], axis=1)
    run_start = np.maximum.accumulate(np.where(starts, idx, 0), axis=1)
    dominant = (idx - run_start + 1).max(axis=1) / float(h * w)

    dh = code[:, :, 1:] != code[:, :, :-1]              # (N, h, w-1)
    dv = code[:, 1:, :] != code[:, :-1, :]              # (N, h-1, w)
    pairs = dh[0].size + dv[0].size
    edges = (dh.sum(axis=(1, 2)) + dv.sum(axis=(1, 2))) / float(max(pairs, 1))
    # isolated: every existing neighbour differs
    same = np.zeros((n, h, w), bool)
    same[:, :, 1:] |= ~dh
    same[:, :, :-1] |= ~dh
    same[:, 1:, :] |= ~dv
    same[:, :-1, :] |= ~dv
    isolated = (~same).sum(axis=(1, 2)).astype(np.int64) if h * w > 1 else np.zeros(n, np.int64)
    return TileStats(colours, isolated, edges, dominant)


def quality(tiles: np.ndarray, *, w_structure: float = 1.0, w_colours: float = 0.5,
            w_isolated: float = 1.0, edge_target: float = 0.25, isolated_cap: float = 0.1,
            max_clean_colours: int = 4, stats: TileStats | None = None) -> np.ndarray:
    """Quality score of every tile; higher is better (see the module docstring).

    Parameters
    ----------
    tiles : ndarray, shape (N, T, T, C), uint8
    w_structure, w_colours, w_isolated : float
        Weights of the three terms.
    edge_target : float
        Edge density at which ``structure`` reaches 1.
    isolated_cap : float
        Share of isolated pixels at which the ``isolated`` penalty reaches 1.
    max_clean_colours : int
        Colours a tile may use without penalty.
    stats : TileStats, optional
        Precomputed :func:`tile_stats` of ``tiles``.

    Returns
    -------
    ndarray, shape (N,), float64

    Examples
    --------
    >>> import numpy as np
    >>> flat = np.zeros((1, 8, 8, 3), np.uint8)
    >>> stripes = flat.copy(); stripes[0, ::2] = 255
    >>> bool(quality(stripes)[0] > quality(flat)[0])
    True
    """
    if edge_target <= 0 or isolated_cap <= 0:
        raise ValueError("edge_target and isolated_cap must be positive")
    tiles = np.asarray(tiles)
    s = stats if stats is not None else tile_stats(tiles)
    npix = float(tiles.shape[1] * tiles.shape[2]) if tiles.ndim == 4 else 1.0
    structure = np.minimum(s.edges / edge_target, 1.0)
    colour_excess = np.minimum(np.maximum(s.colours - max_clean_colours, 0) / (npix / 8.0), 1.0)
    isolated = np.minimum(s.isolated / npix / isolated_cap, 1.0)
    return w_structure * structure - w_colours * colour_excess - w_isolated * isolated


def cleanliness_key(stats: TileStats) -> np.ndarray:
    """Order for choosing a representative among near-duplicates: fewest colours, then fewest
    isolated pixels.  Returns an int64 key per tile; smaller is cleaner."""
    return stats.colours.astype(np.int64) * 1_000_000 + stats.isolated.astype(np.int64)
