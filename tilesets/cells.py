"""Map cells and flips: the one vocabulary for "bank id + how the tile is flipped".

A map cell (``maps.npz``, a Tiled layer) is a uint32: the low 29 bits (:data:`ID_MASK`) hold a
tile id, the three high bits are Tiled's flip flags (:class:`Flip`)::

    bit 31  Flip.H  horizontal flip
    bit 30  Flip.V  vertical flip
    bit 29  Flip.D  diagonal flip (swap x and y; applied first)

In ``maps.npz`` the id is a bank index (0-based); in a ``.tmx`` file it is a Tiled GID
(``firstgid + index``, 0 = empty cell).  The bits are the same in both.

Tile banks identify a tile with its H, V and HV-flipped forms only (never D).  Arrays of those
four forms (:func:`flip_variants`) are indexed by an *orientation*, a small int with bit 0 = H
and bit 1 = V: ``ORIENTATIONS[o]`` is the matching :class:`Flip`, and composing two flips XORs
their orientations.

>>> int(Flip.H | Flip.V) == 0xC0000000
True
>>> ORIENTATIONS.index(Flip.V)
2
"""
from __future__ import annotations

import enum

import numpy as np

__all__ = ["Flip", "FLIP_MASK", "ID_MASK", "ORIENTATIONS", "flip_tile", "flip_variants",
           "orientation_of", "encode_cells", "decode_cells", "cell_ids", "cell_tiles"]


class Flip(enum.IntFlag):
    """Tiled's flip flags of a GID / map cell (combine with ``|``)."""

    NONE = 0
    D = 1 << 29
    V = 1 << 30
    H = 1 << 31


#: All three flip bits.
FLIP_MASK = int(Flip.H | Flip.V | Flip.D)
#: The low 29 bits: tile id (Tiled reserves bits 29..31 for flips).
ID_MASK = (1 << 29) - 1

#: The orientations a tile bank tells apart, in :func:`flip_variants` order (index = orientation).
ORIENTATIONS = (Flip.NONE, Flip.H, Flip.V, Flip.H | Flip.V)


def flip_tile(tiles: np.ndarray, flips: int) -> np.ndarray:
    """Flip one tile or a batch of tiles as Tiled draws a cell with these flip bits.

    Parameters
    ----------
    tiles : ndarray, shape (..., T, T, C)
    flips : Flip or int
        Flip bits only (``cell & FLIP_MASK``).  The diagonal flip is applied first, then the
        horizontal, then the vertical one.  An orientation 0..3 is not flip bits: pass
        ``ORIENTATIONS[o]``.

    Returns
    -------
    ndarray, shape (..., T, T, C)
        A view of ``tiles``.

    Raises
    ------
    ValueError
        If ``flips`` has bits below bit 29 (a tile id or an orientation number).

    >>> t = np.arange(4).reshape(2, 2, 1)
    >>> flip_tile(t, Flip.D | Flip.H)[..., 0].tolist()
    [[2, 0], [3, 1]]
    """
    if int(flips) & ID_MASK:
        raise ValueError(f"flips must hold only Flip bits (29-31), got {int(flips):#x}; "
                         "for an orientation 0..3 pass ORIENTATIONS[o]")
    out = tiles
    if flips & Flip.D:
        out = np.swapaxes(out, -3, -2)
    if flips & Flip.H:
        out = out[..., :, ::-1, :]
    if flips & Flip.V:
        out = out[..., ::-1, :, :]
    return out


def flip_variants(tiles: np.ndarray) -> np.ndarray:
    """The four orientations of every tile: (N, T, T, C) -> (N, 4, T, T, C), see ORIENTATIONS."""
    return np.stack([flip_tile(tiles, f) for f in ORIENTATIONS], axis=1)


def orientation_of(cells: np.ndarray) -> np.ndarray:
    """Orientation (bit 0 = H, bit 1 = V) of each cell, uint8; the D bit is ignored."""
    c = np.asarray(cells).astype(np.uint32)
    return (((c >> 31) & 1) | (((c >> 30) & 1) << 1)).astype(np.uint8)


def encode_cells(ids: np.ndarray, orientations: np.ndarray) -> np.ndarray:
    """Tile ids and orientations (bit 0 H, bit 1 V) -> cell values, uint32."""
    ids = np.asarray(ids).astype(np.uint32)
    o = np.asarray(orientations).astype(np.uint32)
    return (ids & np.uint32(ID_MASK)) | ((o & 1) << 31) | (((o >> 1) & 1) << 30)


def decode_cells(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cell values -> (tile ids int64, orientations uint8); inverse of :func:`encode_cells`."""
    return cell_ids(cells), orientation_of(cells)


def cell_ids(cells: np.ndarray) -> np.ndarray:
    """The tile id of each cell (its low 29 bits), int64."""
    return (np.asarray(cells).astype(np.uint64) & np.uint64(ID_MASK)).astype(np.int64)


def cell_tiles(bank: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """The pixels each cell shows: its bank tile with its flip bits applied.

    Parameters
    ----------
    bank : ndarray, shape (K, T, T, C)
    cells : ndarray, shape (N,), integer
        Cell values (bank id | flip bits).

    Returns
    -------
    ndarray, shape (N, T, T, C)
    """
    return np.stack([flip_tile(bank[int(v) & ID_MASK], int(v) & FLIP_MASK)
                     for v in np.asarray(cells).ravel()])
