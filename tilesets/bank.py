"""Exact tile bank: unique tiles, flip-aware identity, images to a tile set, palette swaps.

A *tile* here is an RGBA uint8 array of shape (T, T, 4) whose alpha is 0 or 255 and whose
transparent pixels are (0, 0, 0, 0), so equal-looking tiles have equal bytes
(:func:`normalize_alpha`).

With ``flips=True`` a tile and its horizontally, vertically and doubly flipped forms are one bank
entry.  A map cell then stores the bank id plus Tiled's flip bits (:class:`tilesets.cells.Flip`):
the cell shows ``flip_tile(bank[id], bits)``, exactly how Tiled draws a GID with those bits.
With ``flips=False`` (NES mode: NES background tiles cannot flip) every orientation is its own
entry and no flip bit is ever set.

:class:`ImageSlicer` is the one place where images become a bank and one map per image
(:class:`tilesets.artifacts.TileSet`); the slice stage and dedupe's image input both use it.

A *palette swap* is the same pixel pattern in other colours (how NES games reuse one tile in
several palettes).  :func:`pattern_keys` gives every tile a colour-blind key (colours renamed
in order of first appearance, minimised over flips when flips are on); tiles of two or more
colours that share a key form a palette-swap group.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from tilesets.artifacts import TileSet, grid_cut
from tilesets.cells import (ID_MASK, ORIENTATIONS, decode_cells, encode_cells, flip_tile,
                            flip_variants)
from tilesets.pixels import colours_per_tile, join_grid, pack_colours

__all__ = ["TileBank", "ImageSlicer", "PAD_MODES", "normalize_alpha", "fit_to_grid",
           "unique_name", "pattern_keys", "palette_swap_groups", "apply_cells"]

#: How :func:`fit_to_grid` treats a side that is not a multiple of the tile size.
PAD_MODES = ("crop", "pad")


def normalize_alpha(rgba: np.ndarray, *, threshold: int = 128) -> np.ndarray:
    """Make alpha binary (0/255) and zero the colour of transparent pixels.

    Parameters
    ----------
    rgba : ndarray, shape (..., 4), uint8
    threshold : int
        Alpha values ``>= threshold`` become opaque.

    Returns
    -------
    ndarray, same shape, uint8 (a new array)
    """
    rgba = np.asarray(rgba)
    if rgba.dtype != np.uint8 or rgba.shape[-1] != 4:
        raise ValueError(f"rgba must be uint8 with 4 channels, got {rgba.dtype} {rgba.shape}")
    out = rgba.copy()
    opaque = out[..., 3] >= threshold
    out[..., 3] = np.where(opaque, 255, 0)
    out[~opaque] = 0
    return out


def _rows_as_keys(flat: np.ndarray) -> np.ndarray:
    """(N, L) uint8 -> (N,) void keys comparable with ==, sortable by np.unique."""
    flat = np.ascontiguousarray(flat)
    return flat.view(np.dtype((np.void, flat.shape[1]))).ravel()


def _canonical(tiles: np.ndarray, flips: bool) -> tuple[np.ndarray, np.ndarray]:
    """Canonical bytes of each tile and the flip code that maps the tile to them.

    The canonical form is the lexicographically smallest of the orientations considered.
    Returns (keys (N,) void, code (N,) uint8) with ``flip_tile(tile, code) == canonical``.
    """
    n = len(tiles)
    if not flips:
        return _rows_as_keys(tiles.reshape(n, -1)), np.zeros(n, np.uint8)
    var = flip_variants(tiles).reshape(n, 4, -1)
    best = var[:, 0]
    code = np.zeros(n, np.uint8)
    for c in (1, 2, 3):
        cand = var[:, c]
        diff = cand != best
        first = diff.argmax(axis=1)
        anydiff = diff[np.arange(n), first]
        rows = np.arange(n)
        smaller = anydiff & (cand[rows, first] < best[rows, first])
        best = np.where(smaller[:, None], cand, best)
        code[smaller] = c
    return _rows_as_keys(best), code


@dataclass
class TileBank:
    """A bank of unique tiles with flip-aware identity.

    Attributes
    ----------
    tile_size : int
    flips : bool
        Whether a tile equals its flipped forms.
    tiles : list of ndarray (T, T, 4) uint8
        Bank tiles in order of first appearance, stored as first seen.
    counts : list of int
        How many cells use each tile.
    origins : list of tuple
        (image name, x, y) of each tile's first occurrence, in pixels.
    """

    tile_size: int
    flips: bool = True
    tiles: list = field(default_factory=list)
    counts: list = field(default_factory=list)
    origins: list = field(default_factory=list)
    _index: dict = field(default_factory=dict, repr=False)   # canonical bytes -> (id, code)

    def __post_init__(self) -> None:
        if not isinstance(self.tile_size, (int, np.integer)) or self.tile_size < 1:
            raise ValueError(f"tile_size must be a positive int, got {self.tile_size!r}")

    def __len__(self) -> int:
        return len(self.tiles)

    def add_tiles(self, tiles: np.ndarray, *, origins: Optional[Sequence[tuple]] = None) -> np.ndarray:
        """Add tiles and return one cell value per tile.

        Parameters
        ----------
        tiles : ndarray, shape (N, T, T, 4), uint8
            Alpha-normalised tiles (:func:`normalize_alpha`).
        origins : sequence of (image, x, y), optional
            Where each tile comes from; remembered for tiles new to the bank.

        Returns
        -------
        ndarray, shape (N,), uint32
            Bank id in the low bits plus ``Flip.H`` / ``Flip.V`` bits so that flipping
            ``bank[id]`` as the bits say gives back the tile exactly.
        """
        tiles = np.asarray(tiles)
        t = self.tile_size
        if tiles.dtype != np.uint8 or tiles.ndim != 4 or tiles.shape[1:] != (t, t, 4):
            raise ValueError(f"tiles must be uint8 (N, {t}, {t}, 4), got {tiles.dtype} {tiles.shape}")
        n = len(tiles)
        if n == 0:
            return np.zeros(0, np.uint32)
        keys, codes = _canonical(tiles, self.flips)
        uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        inverse = inverse.ravel()
        # process unique keys in order of first appearance so ids follow reading order
        order = np.argsort(first, kind="stable")
        ids = np.empty(len(uniq), np.int64)
        bank_code = np.empty(len(uniq), np.uint8)
        for u in order:
            key = uniq[u].tobytes()
            hit = self._index.get(key)
            if hit is None:
                i = int(first[u])
                hit = (len(self.tiles), int(codes[i]))
                self._index[key] = hit
                self.tiles.append(tiles[i].copy())
                self.counts.append(0)
                self.origins.append(tuple(origins[i]) if origins is not None else None)
                if len(self.tiles) > int(ID_MASK):
                    raise ValueError("more unique tiles than Tiled's 29-bit ids can hold")
            ids[u], bank_code[u] = hit
        counts = np.bincount(ids[inverse], minlength=len(self.tiles))
        for i in np.flatnonzero(counts):
            self.counts[i] += int(counts[i])
        # tile = flip(canonical, code_t) and canonical = flip(bank, code_b) => tile = flip(bank, t ^ b)
        return encode_cells(ids[inverse], codes ^ bank_code[inverse])

    def add_image(self, image: np.ndarray, name: str) -> np.ndarray:
        """Cut an RGBA image (H, W, 4) into tiles, add them, return its map (H/T, W/T) uint32."""
        t = self.tile_size
        h, w = image.shape[:2]
        if h % t or w % t:
            raise ValueError(f"image size {w}x{h} is not a multiple of the tile size {t}")
        tiles = grid_cut(image, t)
        gw = w // t
        origins = [(name, (k % gw) * t, (k // gw) * t) for k in range(len(tiles))]
        return self.add_tiles(tiles, origins=origins).reshape(h // t, w // t)

    def array(self) -> np.ndarray:
        """The bank as one array (K, T, T, 4) uint8."""
        t = self.tile_size
        if not self.tiles:
            return np.zeros((0, t, t, 4), np.uint8)
        return np.stack(self.tiles)


# --------------------------------------------------------------------------- images
def unique_name(stem: str, used: set) -> str:
    """``stem``, or ``stem-2``, ``stem-3``... the first not in ``used`` (which it joins).

    The one rule for two images with the same stem (from different folders).
    """
    name, k = stem, 2
    while name in used:
        name = f"{stem}-{k}"
        k += 1
    used.add(name)
    return name


class ImageSlicer:
    """Cut named images into one :class:`TileBank` and keep a map per image.

    The only place where images become a tile set: the slice stage uses it, and dedupe when it
    is given images instead of slice's artifact.

    Parameters
    ----------
    tile_size : int
    flips : bool
        As in :class:`TileBank`.
    pad_mode : {"crop", "pad"}
        What :func:`fit_to_grid` does with a side that is not a multiple of ``tile_size``.

    Examples
    --------
    >>> s = ImageSlicer(tile_size=8)
    >>> s.add("a", np.zeros((8, 16, 4), np.uint8)), s.add("a", np.zeros((8, 8, 4), np.uint8))
    ('a', 'a-2')
    >>> ts = s.tileset(); len(ts), ts.maps["a"].tolist()
    (1, [[0, 0]])
    """

    def __init__(self, *, tile_size: int = 16, flips: bool = True, pad_mode: str = "crop"):
        if pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
        self.bank = TileBank(tile_size=tile_size, flips=flips)
        self.pad_mode = pad_mode
        self.maps: dict[str, np.ndarray] = {}
        self._used: set = set()

    def add(self, stem: str, rgba: np.ndarray) -> Optional[str]:
        """Add one RGBA image (H, W, 4); return its map's name, or None if it holds no tile.

        The image is alpha-normalised and fitted to the grid (``pad_mode``); its map is named
        ``stem`` made unique with :func:`unique_name`.
        """
        fitted = fit_to_grid(normalize_alpha(rgba), self.bank.tile_size, self.pad_mode)
        if fitted.shape[0] == 0 or fitted.shape[1] == 0:
            return None
        name = unique_name(stem, self._used)
        self.maps[name] = self.bank.add_image(fitted, name)
        return name

    def tileset(self, **meta) -> TileSet:
        """The tile set so far; ``meta`` sets :class:`TileSet`'s palette fields."""
        return TileSet(self.bank.array(), dict(self.maps), list(self.bank.origins),
                       flips=self.bank.flips, **meta)


# --------------------------------------------------------------------------- cells
def apply_cells(bank: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Rebuild an image from a bank (K, T, T, C) and a map (h, w) of cell values.

    Returns
    -------
    ndarray, shape (h*T, w*T, C), uint8
    """
    ids, codes = decode_cells(cells)
    k = len(bank)
    if ids.size and ids.max() >= k:
        raise ValueError(f"map refers to tile {int(ids.max())} but the bank has {k} tiles")
    return join_grid(flip_variants(bank)[ids, codes])      # (h, w, T, T, C) -> image


# --------------------------------------------------------------------------- palette swaps
def _relabel(flat: np.ndarray) -> np.ndarray:
    """(N, P, C) pixels -> (N, P) colour labels numbered by first appearance (vectorised)."""
    n, p, _ = flat.shape
    code = pack_colours(flat)
    rows = np.arange(n)[:, None]
    order = np.argsort(code, axis=1, kind="stable")             # equal colours: by position
    srt = code[rows, order]
    new = np.ones((n, p), bool)
    new[:, 1:] = srt[:, 1:] != srt[:, :-1]
    idx = np.broadcast_to(np.arange(p), (n, p))
    start = np.maximum.accumulate(np.where(new, idx, 0), axis=1)
    first = order[rows, start]                # first position of each pixel's colour (sorted)
    mark = np.zeros((n, p), np.int32)
    mark[np.nonzero(new)[0], order[new]] = 1                 # first appearances
    rank = np.cumsum(mark, axis=1) - 1
    out = np.empty((n, p), np.uint16)
    out[rows, order] = rank[rows, first]
    return out


def pattern_keys(tiles: np.ndarray, *, flips: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Colour-blind pattern key of every tile and its number of colours.

    Parameters
    ----------
    tiles : ndarray, shape (N, T, T, C), uint8
    flips : bool
        If true, the key is the smallest over the four orientations, so a flipped palette swap
        has the same key.

    Returns
    -------
    keys : ndarray, shape (N,), void
        Equal keys = same pixel pattern up to a renaming of colours.
    colours : ndarray, shape (N,), int64
        Distinct colours (RGBA values) per tile.
    """
    tiles = np.asarray(tiles)
    n, t, _, c = tiles.shape
    orientations = ORIENTATIONS if flips else ORIENTATIONS[:1]
    labels = []
    for f in orientations:
        v = np.ascontiguousarray(flip_tile(tiles, f)).reshape(n, t * t, c)
        labels.append(_relabel(v))
    lab = np.stack(labels, axis=1).astype(np.uint16)        # (N, F, P)
    # smallest orientation, lexicographically on big-endian bytes
    be = lab.astype(">u2").view(np.uint8).reshape(n, len(orientations), -1)
    best = be[:, 0]
    for f in range(1, len(orientations)):
        cand = be[:, f]
        diff = cand != best
        first = diff.argmax(axis=1)
        rows = np.arange(n)
        smaller = diff[rows, first] & (cand[rows, first] < best[rows, first])
        best = np.where(smaller[:, None], cand, best)
    return _rows_as_keys(best), colours_per_tile(tiles)


def palette_swap_groups(tiles: np.ndarray, *, flips: bool = True) -> list[list[int]]:
    """Groups of bank ids (sorted, size >= 2) that are palette swaps of each other.

    Single-colour tiles are left out: every flat tile would otherwise be a swap of every other.
    """
    if len(tiles) == 0:
        return []
    keys, colours = pattern_keys(tiles, flips=flips)
    groups: dict[bytes, list[int]] = {}
    for i, (k, nc) in enumerate(zip(keys, colours)):
        if nc >= 2:
            groups.setdefault(k.tobytes(), []).append(i)
    out = [g for g in groups.values() if len(g) >= 2]
    out.sort(key=lambda g: g[0])
    return out


def fit_to_grid(rgba: np.ndarray, tile_size: int, pad_mode: str) -> np.ndarray:
    """Crop (right/bottom) or pad with transparent pixels to a multiple of ``tile_size``.

    Parameters
    ----------
    rgba : ndarray, shape (H, W, 4), uint8
    tile_size : int
    pad_mode : {"crop", "pad"}

    Returns
    -------
    ndarray, shape (H', W', 4), uint8
    """
    h, w = rgba.shape[:2]
    t = tile_size
    if pad_mode == "crop":
        return rgba[:h - h % t, :w - w % t]
    hp, wp = -(-h // t) * t, -(-w // t) * t
    out = np.zeros((hp, wp, 4), np.uint8)
    out[:h, :w] = rgba
    return out
