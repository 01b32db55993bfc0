"""Copy evidence a person believes: is a generated tile a copy of a training tile?

A generated tile is called a copy of a training tile only when the two *look the same*:

``EXACT``
    equal pixels (in some orientation when flips are on);
``NEAR``
    the same structure and colours except a few pixels (at most ``near_fraction`` of the tile
    differ by more than ``pixel_tolerance`` ΔE76, the just-noticeable colour step);
``SHIFTED``
    the same art moved by 1..``max_shift`` pixels: on the overlapping area at most
    ``near_fraction`` of the pixels differ;
``PALETTE_SWAP``
    the same index pattern (colours renamed one-to-one, as NES games reuse a tile under another
    sub-palette) in other colours, for patterns with enough structure to be recognisable;
``NOT_COPY``
    anything else.

Low-structure tiles (near-flat: few colour changes between neighbouring pixels, or at most two
colours with the minor one on a few pixels) are compared by exact pixels only: a flat sky tile
is never a near copy, a shifted copy or a palette swap of anything, and never a copy of a green
pipe or a purple tile because a greyscale hash happens to agree.

Finding candidates among millions of training tiles
---------------------------------------------------
Every verdict is decided pixel-wise in colour (CIELAB), after flips and shifts.  Only the
*candidates* come from key tables built once over the training tiles (:class:`TrainingIndex`):

* an **exact key** (a 64-bit digest of the pixels) finds exact copies;
* a **pattern key** (digest of :func:`tilesets.bank.pattern_keys`, the colour-blind pattern;
  the generated tile is looked up in every orientation) finds palette swaps;
* **block keys** find near and shifted copies by the pigeonhole principle, the idea behind
  multi-index hashing (:mod:`tilesets.hashindex`) applied to pixels: the tile is cut into
  4 x 4 blocks of side T/4 and each block's content (with its position) is a key.  A copy with a
  few pixels edited, or shifted with the revealed strip filled in, keeps most blocks intact.  The
  generated tile is probed in every orientation and every shift back by up to ``max_shift``
  pixels; per probe only the ``probe_blocks`` rarest blocks present in the training set are
  looked up, so when at most ``probe_blocks - 1`` blocks are broken, one intact block finds the
  source.  Blocks shared by more than ``max_bucket`` training tiles (flat sky) say nothing
  and are skipped.

Greyscale perceptual hashes are not used to find candidates: on 16 x 16 pixel art a single
changed pixel moves a tile's phash by a median of 12 bits and a one-pixel shift by 14, while 1 %
of *unrelated* tile pairs lie within 16 bits (measured on ``examples/screens``), so no radius
both finds near copies and stays selective.

Conventions
-----------
A call's ``flip`` (an orientation: bit 0 horizontal, bit 1 vertical, the index of
``tilesets.cells.ORIENTATIONS``) and ``shift = (dx, dy)`` align the training tile with the
generated one: with ``A`` the training tile in orientation ``flip``, generated pixel ``(x, y)``
shows ``A[y + dy, x + dx]`` wherever that lies inside the tile.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Optional, Sequence

import numpy as np

from palettes.colour import pack_rgb
from tilesets.bank import pattern_keys
from tilesets.cells import ORIENTATIONS, flip_tile
from tilesets.pixels import lab_of_pixels

__all__ = ["CopyKind", "CopyCall", "CopyRules", "TrainingIndex", "judge_copies",
           "low_structure", "structure", "evidence_sheet", "aligned_training", "diff_mask",
           "COPY_KINDS"]


class CopyKind(str, Enum):
    """Verdict on a (generated, training) pair, strongest first."""

    EXACT = "exact"
    NEAR = "near"
    PALETTE_SWAP = "palette_swap"
    SHIFTED = "shifted"
    NOT_COPY = "not_copy"


#: the kinds that make a tile a copy
COPY_KINDS = frozenset({CopyKind.EXACT, CopyKind.NEAR, CopyKind.PALETTE_SWAP, CopyKind.SHIFTED})
_RANK = {CopyKind.EXACT: 0, CopyKind.NEAR: 1, CopyKind.PALETTE_SWAP: 2, CopyKind.SHIFTED: 3,
         CopyKind.NOT_COPY: 9}
_KIND_OF_RANK = {v: k for k, v in _RANK.items()}


@dataclass(frozen=True)
class CopyCall:
    """The verdict on one generated tile.

    Attributes
    ----------
    generated : int
        Row of the generated tile.
    training : int
        Row of the training tile it was compared with (the copied one, or for ``NOT_COPY`` the
        closest candidate examined); -1 when no candidate was found.
    kind : CopyKind
    pixels_differing : int
        Compared pixels whose colours differ by more than the tolerance (transparent generated
        pixels always differ); -1 without a candidate.
    colour_distance : float
        Mean ΔE76 over the compared pixels (0 for an exact copy; large for a palette swap);
        -1.0 without a candidate.
    flip : int
        Flip code applied to the training tile (bit 0 horizontal, bit 1 vertical).
    shift : tuple of int
        ``(dx, dy)``: generated pixel (x, y) shows the flipped training pixel (x + dx, y + dy).
    compared : int
        Pixels compared (the overlap when shifted); 0 without a candidate.
    low_structure : bool
        The generated tile is near-flat, so only an exact copy counts.  (Callers may keep such
        tiles even when they are exact copies: every game has a plain sky.)
    """

    generated: int
    training: int
    kind: CopyKind
    pixels_differing: int
    colour_distance: float
    flip: int = 0
    shift: tuple = (0, 0)
    compared: int = 0
    low_structure: bool = False

    @property
    def is_copy(self) -> bool:
        return self.kind in COPY_KINDS

    def describe(self) -> str:
        """One line for reports: kind, numbers, alignment."""
        if self.training < 0:
            return f"{self.kind.value}: no candidate shares pixels or pattern"
        fl = {0: "", 1: ", flipped H", 2: ", flipped V", 3: ", flipped HV"}[self.flip]
        sh = "" if self.shift == (0, 0) else f", shifted {self.shift[0]:+d},{self.shift[1]:+d}"
        return (f"{self.kind.value}: {self.pixels_differing}/{self.compared} px differ, "
                f"mean dE {self.colour_distance:.1f}{fl}{sh}")


@dataclass(frozen=True)
class CopyRules:
    """Thresholds of :func:`judge_copies` (defaults chosen on ``bench/bench_copies.py``).

    Attributes
    ----------
    pixel_tolerance : float
        Two pixels differ when their ΔE76 exceeds this (2.3 is one just-noticeable step).
    near_fraction : float
        ``NEAR`` / ``SHIFTED``: at most this share of the compared pixels may differ
        (0.025 = 6 pixels of a 16 x 16 tile).
    max_shift : int
        ``SHIFTED`` looks at shifts of up to this many pixels in x and in y (0: none).
    min_structure : float
        A tile whose share of differing 4-neighbour pixel pairs is below this is low-structure.
    minor_pixels : int
        A tile of at most two colours whose minor colour covers at most this many pixels is
        low-structure too.
    swap_min_structure : float
        ``PALETTE_SWAP`` needs this share of differing neighbour pairs in the pattern (a plain
        split into two colour areas is not a recognisable pattern).
    probe_blocks : int
        Block keys looked up per probe (the rarest ones present in the training set; blocks of
        one colour are never probed).
    max_bucket : int
        Block keys held by more training tiles than this are skipped as uninformative.
    probe_budget : int
        Per generated tile and probe, no more blocks are looked up once the buckets already
        looked up hold this many training tiles (bounds the work on common textures).
    max_candidates : int
        Candidates verified per generated tile and path (most shared blocks first).
    """

    pixel_tolerance: float = 3.0
    near_fraction: float = 0.025
    max_shift: int = 2
    min_structure: float = 0.05
    minor_pixels: int = 3
    swap_min_structure: float = 0.08
    probe_blocks: int = 8
    max_bucket: int = 1024
    probe_budget: int = 2048
    max_candidates: int = 48

    def __post_init__(self) -> None:
        checks = [("pixel_tolerance", self.pixel_tolerance >= 0),
                  ("near_fraction", 0 <= self.near_fraction < 0.5),
                  ("max_shift", 0 <= self.max_shift <= 4),
                  ("min_structure", 0 <= self.min_structure <= 1),
                  ("minor_pixels", self.minor_pixels >= 0),
                  ("swap_min_structure", 0 <= self.swap_min_structure <= 1),
                  ("probe_blocks", 1 <= self.probe_blocks <= 64),
                  ("max_bucket", self.max_bucket >= 1),
                  ("probe_budget", self.probe_budget >= 1),
                  ("max_candidates", self.max_candidates >= 1)]
        for name, ok in checks:
            if not ok:
                raise ValueError(f"CopyRules.{name} out of range: {getattr(self, name)!r}")


# --------------------------------------------------------------------------- small helpers
def _orient(tiles: np.ndarray, code: int) -> np.ndarray:
    """Tiles (..., T, T, C) in orientation ``code``: bit 0 flips horizontally, bit 1 vertically
    (the orientation index of :mod:`tilesets.cells`: ``ORIENTATIONS[code]`` is the Flip)."""
    return flip_tile(tiles, ORIENTATIONS[code])


def _as_tiles(tiles: np.ndarray, name: str, channels: tuple = (3, 4)) -> np.ndarray:
    a = np.asarray(tiles)
    if (a.dtype != np.uint8 or a.ndim != 4 or a.shape[1] != a.shape[2]
            or a.shape[-1] not in channels):
        raise ValueError(f"{name} must be uint8 (N, T, T, {'|'.join(map(str, channels))}), "
                         f"got {a.dtype} {a.shape}")
    return a


def _split_alpha(tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N,T,T,3|4) -> RGB (N,T,T,3) and opaque mask (N,T,T) bool."""
    rgb = np.ascontiguousarray(tiles[..., :3])
    if tiles.shape[-1] == 4:
        return rgb, tiles[..., 3] >= 128
    return rgb, np.ones(tiles.shape[:3], bool)


def _delta_e(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ΔE76 between RGB colours a and b, both (K, 3) uint8 (Lab computed per distinct colour)."""
    if len(a) == 0:
        return np.zeros(0)
    lab = lab_of_pixels(np.concatenate([a, b]))
    k = len(a)
    return np.sqrt(((lab[:k] - lab[k:]) ** 2).sum(-1))


_P1 = np.uint64(0x9E3779B97F4A7C15)
_P2 = np.uint64(0xBF58476D1CE4E5B9)
_P3 = np.uint64(0x94D049BB133111EB)


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (in place on a uint64 array)."""
    h ^= h >> np.uint64(30)
    h *= _P2
    h ^= h >> np.uint64(27)
    h *= _P3
    h ^= h >> np.uint64(31)
    return h


def _digest(rows: np.ndarray, seed: np.ndarray | int = 0) -> np.ndarray:
    """64-bit digest of each row of bytes: (N, L) uint8 -> (N,) uint64.

    Collisions only cost a wasted verification, never a wrong verdict.
    """
    rows = np.ascontiguousarray(rows, dtype=np.uint8)
    n, length = rows.shape
    pad = (-length) % 8
    if pad:
        rows = np.concatenate([rows, np.zeros((n, pad), np.uint8)], axis=1)
    words = rows.view("<u8")
    with np.errstate(over="ignore"):
        h = np.full(n, np.uint64(length) * _P1, np.uint64) ^ np.asarray(seed, np.uint64)
        for w in range(words.shape[1]):
            h = (h ^ words[:, w]) * _P1
            h ^= h >> np.uint64(29)
        return _mix(h)


class _KeyTable:
    """Exact look-up of uint64 keys -> the rows holding them (CSR over sorted distinct keys)."""

    def __init__(self, keys: np.ndarray, rows: Optional[np.ndarray] = None) -> None:
        keys = np.asarray(keys, np.uint64).ravel()
        rows = np.arange(len(keys), dtype=np.int64) if rows is None else np.asarray(rows, np.int64)
        order = np.argsort(keys, kind="stable")
        skeys = keys[order]
        self.rows = rows[order]
        first = np.ones(len(skeys), bool)
        first[1:] = skeys[1:] != skeys[:-1]
        self.values = skeys[first]
        self.start = np.append(np.flatnonzero(first), len(skeys)).astype(np.int64)

    def sizes(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bucket start offset and size of every query key (size 0 when absent)."""
        q = np.asarray(queries, np.uint64)
        pos = np.searchsorted(self.values, q)
        pos_c = np.minimum(pos, max(len(self.values) - 1, 0))
        found = (pos < len(self.values)) & (self.values[pos_c] == q) if len(self.values) else \
            np.zeros(q.shape, bool)
        lo = np.where(found, self.start[pos_c], 0)
        size = np.where(found, self.start[pos_c + 1] - self.start[pos_c], 0) if len(self.values) \
            else np.zeros(q.shape, np.int64)
        return lo.astype(np.int64), size.astype(np.int64)

    def lookup(self, queries: np.ndarray, *, cap: Optional[int] = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Every (query position, row) with an equal key; buckets larger than ``cap`` skipped."""
        q = np.asarray(queries, np.uint64).ravel()
        lo, size = self.sizes(q)
        if cap is not None:
            size = np.where(size > cap, 0, size)
        total = int(size.sum())
        qpos = np.repeat(np.arange(len(q)), size)
        offs = np.repeat(lo - (np.cumsum(size) - size), size) + np.arange(total)
        return qpos, self.rows[offs]


def _block_side(t: int) -> int:
    """Side of the key blocks: the largest divisor of ``t`` up to ``t / 4`` (4 for 16-px tiles)."""
    for b in range(max(1, t // 4), 0, -1):
        if t % b == 0:
            return b
    return 1


def _block_keys(rgb: np.ndarray) -> np.ndarray:
    """Keys of the (T/b)^2 blocks of side b (:func:`_block_side`) of each tile.

    (N, T, T, 3) -> (N, nb) uint64, blocks in row-major order; a block's position is part of
    its key.
    """
    n, t = rgb.shape[:2]
    b = _block_side(t)
    k = t // b
    blocks = rgb.reshape(n, k, b, k, b, 3).transpose(0, 1, 3, 2, 4, 5).reshape(n * k * k, -1)
    return _digest(blocks, _block_seeds(np.tile(np.arange(k * k), n))).reshape(n, k * k)


def _block_seeds(pos: np.ndarray) -> np.ndarray:
    return np.asarray(pos, np.uint64) * _P3


def _pattern_digests(rgb: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Digest of each tile's colour-blind pattern key (as it stands, no flips): (N,) uint64."""
    out = np.zeros(len(rgb), np.uint64)
    for s in range(0, len(rgb), chunk):
        keys, _ = pattern_keys(rgb[s:s + chunk], flips=False)
        b = np.ascontiguousarray(keys).view(np.uint8).reshape(len(keys), -1)
        out[s:s + chunk] = _digest(b, 0x5A17)
    return out


def _exact_digests(rgb: np.ndarray, chunk: int = 65536) -> np.ndarray:
    out = np.zeros(len(rgb), np.uint64)
    for s in range(0, len(rgb), chunk):
        part = rgb[s:s + chunk]
        out[s:s + chunk] = _digest(part.reshape(len(part), -1), 0xE4AC7)
    return out


# --------------------------------------------------------------------------- structure
def structure(tiles: np.ndarray, *, pixel_tolerance: float = 3.0) -> np.ndarray:
    """Share of 4-neighbour pixel pairs whose colours visibly differ.

    Parameters
    ----------
    tiles : ndarray, shape (N, T, T, 3|4), uint8
        A transparent and an opaque neighbour always differ.
    pixel_tolerance : float
        ΔE76 above which two colours differ.

    Returns
    -------
    ndarray, shape (N,), float64 in [0, 1]
    """
    tiles = _as_tiles(tiles, "tiles")
    rgb, opaque = _split_alpha(tiles)
    n, t = rgb.shape[:2]
    if n == 0 or t < 2:
        return np.zeros(n)
    count = np.zeros(n)
    for axis in (1, 2):
        a = np.moveaxis(rgb, axis, 1)
        oa = np.moveaxis(opaque, axis, 1)
        p, q = a[:, 1:], a[:, :-1]
        op, oq = oa[:, 1:], oa[:, :-1]
        diff = op != oq
        both = op & oq & (p != q).any(-1)
        idx = np.nonzero(both)
        de = _delta_e(p[idx], q[idx])
        vis = np.zeros(both.shape, bool)
        vis[idx] = de > pixel_tolerance
        count += (diff | vis).reshape(n, -1).sum(1)
    return count / (2 * t * (t - 1))


def _minor_share(tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Colours per tile (transparent counts as one) and pixels not of the dominant colour."""
    rgb, opaque = _split_alpha(tiles)
    code = np.where(opaque, pack_rgb(rgb), np.uint32(0xFF000000)).reshape(len(rgb), -1)
    srt = np.sort(code, axis=1)
    change = srt[:, 1:] != srt[:, :-1]
    colours = change.sum(1) + 1
    npx = srt.shape[1]
    idx = np.arange(npx)
    starts = np.concatenate([np.ones((len(srt), 1), bool), change], 1)
    run_start = np.maximum.accumulate(np.where(starts, idx, 0), axis=1)
    dominant = (idx - run_start + 1).max(1) if npx else np.zeros(len(srt), np.int64)
    return colours.astype(np.int64), (npx - dominant).astype(np.int64)


def low_structure(tiles: np.ndarray, rules: CopyRules = CopyRules()) -> np.ndarray:
    """Which tiles are near-flat, so only an exact copy of them counts.

    A tile is low-structure when fewer than ``rules.min_structure`` of its neighbour pairs differ
    visibly, or when it has at most two colours and the minor one covers at most
    ``rules.minor_pixels`` pixels.

    Returns
    -------
    ndarray, shape (N,), bool
    """
    tiles = _as_tiles(tiles, "tiles")
    if len(tiles) == 0:
        return np.zeros(0, bool)
    s = structure(tiles, pixel_tolerance=rules.pixel_tolerance)
    colours, minor = _minor_share(tiles)
    return (s < rules.min_structure) | ((colours <= 2) & (minor <= rules.minor_pixels))


def _pattern_structure(codes: np.ndarray) -> np.ndarray:
    """Share of neighbour pairs with different colour codes: (N, T, T) -> (N,)."""
    n, t = codes.shape[:2]
    if t < 2:
        return np.zeros(n)
    d = (codes[:, 1:] != codes[:, :-1]).reshape(n, -1).sum(1)
    d = d + (codes[:, :, 1:] != codes[:, :, :-1]).reshape(n, -1).sum(1)
    return d / (2 * t * (t - 1))


# --------------------------------------------------------------------------- the index
class TrainingIndex:
    """Key tables over the training tiles, built once and reused for every query.

    Parameters
    ----------
    training : ndarray, shape (M, T, T, 3), uint8
        Training tiles (RGB; a 4th channel is dropped).  Duplicates are allowed.
    flips : bool
        Whether a flipped copy counts (Tiled mode) or not (NES mode).
    chunk : int
        Tiles keyed at a time (bounds the memory of building over millions of tiles).

    Notes
    -----
    Memory: per training tile 2 + 2 x 16 keys (uint64) and as many int64 rows, about 550 bytes
    for 16 x 16 tiles (550 MB for a million), besides the tiles themselves (768 bytes each).
    """

    def __init__(self, training: np.ndarray, *, flips: bool, chunk: int = 65536) -> None:
        training = _as_tiles(training, "training")
        self.tiles = np.ascontiguousarray(training[..., :3])
        self.flips = bool(flips)
        self.tile_size = int(training.shape[1])
        m = len(self.tiles)
        exact = _exact_digests(self.tiles, chunk)
        self.exact = _KeyTable(exact)
        self.pattern = _KeyTable(_pattern_digests(self.tiles))
        blocks = [_block_keys(self.tiles[s:s + chunk]) for s in range(0, m, chunk)]
        nb = (self.tile_size // _block_side(self.tile_size)) ** 2
        self.block_keys = np.concatenate(blocks) if blocks else np.zeros((0, nb), np.uint64)
        self.blocks = _KeyTable(self.block_keys.ravel(),
                                np.repeat(np.arange(m, dtype=np.int64), nb))
        self._low: dict[int, bool] = {}

    def __len__(self) -> int:
        return len(self.tiles)

    def low_structure(self, rows: np.ndarray, rules: CopyRules) -> np.ndarray:
        """:func:`low_structure` of the training rows ``rows`` (memoised per row)."""
        rows = np.asarray(rows, np.int64)
        todo = np.unique([r for r in rows.tolist() if r not in self._low]).astype(np.int64)
        if len(todo):
            for r, v in zip(todo.tolist(), low_structure(self.tiles[todo], rules).tolist()):
                self._low[r] = v
        return np.array([self._low[r] for r in rows.tolist()], bool)


# --------------------------------------------------------------------------- probing
@dataclass
class _Cands:
    gen: np.ndarray       # (C,) generated rows
    train: np.ndarray     # (C,) training rows
    flip: np.ndarray      # (C,) flip codes
    dx: np.ndarray
    dy: np.ndarray
    votes: np.ndarray     # (C,) shared keys (ranking only)
    pattern: np.ndarray   # (C,) bool: found by equal pattern key

    @staticmethod
    def empty() -> "_Cands":
        z = np.zeros(0, np.int64)
        return _Cands(z, z, z, z, z, z, np.zeros(0, bool))

    @staticmethod
    def concat(parts: Sequence["_Cands"]) -> "_Cands":
        parts = [p for p in parts if len(p.gen)]
        if not parts:
            return _Cands.empty()
        return _Cands(*[np.concatenate([getattr(p, f) for p in parts])
                        for f in ("gen", "train", "flip", "dx", "dy", "votes", "pattern")])


def _codes_for(flips: bool) -> tuple[int, ...]:
    return (0, 1, 2, 3) if flips else (0,)


def _exact_candidates(rgb: np.ndarray, index: TrainingIndex) -> _Cands:
    """Training rows whose exact key equals a generated tile's, in every orientation."""
    parts = []
    for f in _codes_for(index.flips):
        keys = _exact_digests(np.ascontiguousarray(_orient(rgb, f)))
        g, tr = index.exact.lookup(keys)
        z = np.zeros(len(g), np.int64)
        parts.append(_Cands(g, tr, z + f, z, z, z + 1, np.zeros(len(g), bool)))
    return _Cands.concat(parts)


def _same_pattern(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise: are colour codes a and b (P, L) uint32 the same pattern (one-to-one renaming)?"""
    def distinct(x):
        s = np.sort(x, axis=1)
        return (s[:, 1:] != s[:, :-1]).sum(1) + 1
    pair = (a.astype(np.uint64) << np.uint64(32)) | b.astype(np.uint64)
    na, nb, nab = distinct(a), distinct(b), distinct(pair)
    return (na == nab) & (nb == nab)


def _pattern_candidates(rgb: np.ndarray, opaque: np.ndarray, rows: np.ndarray,
                        index: TrainingIndex, rules: CopyRules) -> _Cands:
    """Training rows with the same colour-blind pattern as generated ``rows``, in some
    orientation (checked pattern-wise, so a digest collision costs nothing)."""
    if len(rows) == 0:
        return _Cands.empty()
    t = rgb.shape[1]
    gcode = np.where(opaque, pack_rgb(rgb), np.uint32(0xFF000000))
    parts = []
    for f in _codes_for(index.flips):
        oriented = np.ascontiguousarray(_orient(rgb[rows], f))
        keys = _pattern_digests(oriented)
        qpos, tr = index.pattern.lookup(keys, cap=rules.max_bucket)
        g = rows[qpos]
        keep = _top_per_group(g, np.zeros(len(g), np.int64), tr, rules.max_candidates)
        g, tr = g[keep], tr[keep]
        if not len(g):
            continue
        a = np.ascontiguousarray(_orient(gcode[g][..., None], f)[..., 0]).reshape(len(g), t * t)
        ok = _same_pattern(a, pack_rgb(index.tiles[tr]).reshape(len(tr), t * t))
        z = np.zeros(int(ok.sum()), np.int64)
        parts.append(_Cands(g[ok], tr[ok], z + f, z, z, z + 1, np.ones(len(z), bool)))
    return _Cands.concat(parts)


def _probe_blocks(rgb: np.ndarray, f: int, dx: int, dy: int) -> tuple[np.ndarray, np.ndarray]:
    """Block keys a training tile would have if the generated tiles came from it by (f, dx, dy).

    With ``A`` the training tile in orientation ``f`` and ``gen[y, x] = A[y + dy, x + dx]``, each
    block of ``A`` that the shift keeps inside the generated tile is read off the generated
    tile, flipped back and keyed at its position in the training tile.  Blocks the shift moves
    out are not keyed, so only edited pixels can break a key.

    Returns
    -------
    keys : ndarray, shape (N, V), uint64
    positions : ndarray, shape (V,), int64 (training-frame block index)
    flat : ndarray, shape (N, V), bool
        Blocks of a single colour (they match every plain area: never probed).
    """
    n, t = rgb.shape[:2]
    b = _block_side(t)
    k = t // b
    ys, xs, pos = [], [], []
    for by in range(k):
        for bx in range(k):
            y0, x0 = by * b - dy, bx * b - dx
            if 0 <= y0 and y0 + b <= t and 0 <= x0 and x0 + b <= t:
                ys.append(np.arange(y0, y0 + b))
                xs.append(np.arange(x0, x0 + b))
                tby = k - 1 - by if f & 2 else by
                tbx = k - 1 - bx if f & 1 else bx
                pos.append(tby * k + tbx)
    if not pos:
        return np.zeros((n, 0), np.uint64), np.zeros(0, np.int64), np.zeros((n, 0), bool)
    yy, xx = np.array(ys), np.array(xs)                              # (V, b)
    blocks = rgb[:, yy[:, :, None], xx[:, None, :]]                  # (N, V, b, b, 3)
    blocks = np.ascontiguousarray(_orient(blocks, f))
    v = len(pos)
    flat = (blocks == blocks[:, :, :1, :1]).all((2, 3, 4))
    keys = _digest(blocks.reshape(n * v, -1), _block_seeds(np.tile(pos, n)))
    return keys.reshape(n, v), np.asarray(pos, np.int64), flat


def _top_per_group(group: np.ndarray, score: np.ndarray, tie: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` entries with the highest score (then lowest tie) in each group."""
    if len(group) == 0:
        return np.zeros(0, np.int64)
    s = score.max() - score
    span_s, span_t = int(s.max()) + 1, int(tie.max()) + 1
    if int(group.max()) * span_s * span_t < 2 ** 62:        # one int64 key: a faster sort
        order = np.argsort((group * span_s + s) * span_t + tie, kind="stable")
    else:
        order = np.lexsort((tie, s, group))
    g = group[order]
    first = np.searchsorted(g, g, side="left")
    return order[(np.arange(len(g)) - first) < k]


def _block_candidates(rgb: np.ndarray, rows: np.ndarray, index: TrainingIndex,
                      rules: CopyRules, *, shifted: bool) -> _Cands:
    """Near (``shifted=False``) or shifted candidates of generated ``rows`` through shared
    blocks (pigeonhole)."""
    if len(rows) == 0 or len(index) == 0:
        return _Cands.empty()
    s = rules.max_shift
    shifts = ([(dx, dy) for dy in range(-s, s + 1) for dx in range(-s, s + 1) if dx or dy]
              if shifted else [(0, 0)])
    m = len(index)
    sub = np.ascontiguousarray(rgb[rows])
    per_probe = max(1, rules.max_candidates // 4)
    parts = []
    for f in _codes_for(index.flips):
        for dx, dy in shifts:
            keys, pos, flat = _probe_blocks(sub, f, dx, dy)
            if keys.shape[1] == 0:
                continue
            _, size = index.blocks.sizes(keys.ravel())
            size = size.reshape(keys.shape)
            usable = (size > 0) & (size <= rules.max_bucket) & ~flat
            # the probe_blocks rarest usable blocks of each generated tile, within the budget
            rank_key = np.where(usable, size, np.iinfo(np.int64).max)
            pick = np.argsort(rank_key, axis=1, kind="stable")[:, :rules.probe_blocks]
            ok = np.take_along_axis(usable, pick, 1)
            picked = np.where(ok, np.take_along_axis(size, pick, 1), 0)
            before = np.cumsum(picked, axis=1) - picked
            ok &= (before < rules.probe_budget)
            q = np.take_along_axis(keys, pick, 1)[ok]
            qpos, tr = index.blocks.lookup(q, cap=rules.max_bucket)
            if len(tr) == 0:
                continue
            row = np.nonzero(ok)[0][qpos]
            uniq = np.sort(row.astype(np.int64) * m + tr)
            uniq = uniq[np.r_[True, uniq[1:] != uniq[:-1]]]
            r, tr = uniq // m, uniq % m
            # score: blocks of the probe that agree with the candidate (all, not only the
            # probed ones) minus the blocks that disagree
            agree = (keys[r] == index.block_keys[tr][:, pos]).sum(1)
            votes = 2 * agree - keys.shape[1]
            keep = _top_per_group(r, votes, tr, per_probe)
            g = rows[r[keep]]
            z = np.zeros(len(g), np.int64)
            parts.append(_Cands(g, tr[keep], z + f, z + dx, z + dy, votes[keep],
                                np.zeros(len(g), bool)))
    c = _Cands.concat(parts)
    if not len(c.gen):
        return c
    # best score first, then the smallest shift; at most max_candidates per generated tile
    mag = np.abs(c.dx) + np.abs(c.dy)
    keep = _top_per_group(c.gen, c.votes * 16 - mag, c.train, rules.max_candidates)
    return _Cands(*[getattr(c, f)[keep] for f in ("gen", "train", "flip", "dx", "dy", "votes",
                                                   "pattern")])


# --------------------------------------------------------------------------- verification
def _verify(rgb: np.ndarray, opaque: np.ndarray, index: TrainingIndex, c: _Cands,
            tol: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Compare every candidate pixel-wise at its alignment.

    Returns ``compared`` (pixels in the overlap), ``differing`` (ΔE > tol or transparent),
    ``mean_de`` (mean ΔE76 over the overlap, transparent pixels left out of the mean) and
    ``equal`` (every pixel opaque and RGB-equal over a full, unshifted overlap).
    """
    n = len(c.gen)
    t = rgb.shape[1]
    compared = np.zeros(n, np.int64)
    differing = np.zeros(n, np.int64)
    mean_de = np.zeros(n)
    equal = np.zeros(n, bool)
    if n == 0:
        return compared, differing, mean_de, equal
    groups = np.stack([c.flip, c.dx, c.dy], 1)
    for f, dx, dy in np.unique(groups, axis=0).tolist():
        sel = np.flatnonzero((c.flip == f) & (c.dx == dx) & (c.dy == dy))
        for s in range(0, len(sel), 4096):
            idx = sel[s:s + 4096]
            a = _orient(index.tiles[c.train[idx]], f)              # aligned training
            gy0, gy1 = max(0, -dy), t - max(0, dy)
            gx0, gx1 = max(0, -dx), t - max(0, dx)
            g = rgb[c.gen[idx], gy0:gy1, gx0:gx1]
            go = opaque[c.gen[idx], gy0:gy1, gx0:gx1]
            tt = a[:, gy0 + dy:gy1 + dy, gx0 + dx:gx1 + dx]
            neq = (g != tt).any(-1) & go
            where = np.nonzero(neq)
            de = _delta_e(g[where], tt[where])
            de_map = np.zeros(neq.shape)
            de_map[where] = de
            k = len(idx)
            area = (gy1 - gy0) * (gx1 - gx0)
            compared[idx] = area
            differing[idx] = ((de_map > tol) | ~go).reshape(k, -1).sum(1)
            n_op = go.reshape(k, -1).sum(1)
            mean_de[idx] = de_map.reshape(k, -1).sum(1) / np.maximum(n_op, 1)
            equal[idx] = (~neq & go).reshape(k, -1).all(1) & (dx == 0) & (dy == 0)
    return compared, differing, mean_de, equal


def _classify(c: _Cands, compared, differing, equal, low_g, low_t, swap_ok,
              rules: CopyRules) -> np.ndarray:
    """Rank (:data:`_RANK`) of the kind of each verified candidate: (C,) int64."""
    out = np.full(len(c.gen), _RANK[CopyKind.NOT_COPY], np.int64)
    unshifted = (c.dx == 0) & (c.dy == 0)
    allowed = np.floor(rules.near_fraction * compared + 1e-9)
    structured = ~low_g & ~low_t
    near = structured & unshifted & (differing <= allowed)
    shifted = structured & ~unshifted & (differing <= allowed)
    swap = structured & unshifted & c.pattern & swap_ok
    out[shifted] = _RANK[CopyKind.SHIFTED]
    out[swap] = _RANK[CopyKind.PALETTE_SWAP]
    out[near] = _RANK[CopyKind.NEAR]
    out[equal] = _RANK[CopyKind.EXACT]
    return out


def judge_copies(generated: np.ndarray, training: Optional[np.ndarray] = None, *, flips: bool,
                 index: Optional[TrainingIndex] = None,
                 rules: CopyRules = CopyRules()) -> list[CopyCall]:
    """Decide, for every generated tile, whether it copies a training tile, and how.

    Parameters
    ----------
    generated : ndarray, shape (N, T, T, 4) or (N, T, T, 3), uint8
        Generated tiles; alpha (if any) is binary, and a transparent pixel never matches.
    training : ndarray, shape (M, T, T, 3), uint8, optional
        Training tiles.  May be omitted when ``index`` is given (build the index once with
        :class:`TrainingIndex` when judging several batches against the same training set).
    flips : bool
        Whether a flipped copy counts (must match the index's setting).
    index : TrainingIndex, optional
    rules : CopyRules

    Returns
    -------
    list of CopyCall
        One call per generated tile, in order: its strongest verdict (``EXACT`` > ``NEAR`` >
        ``PALETTE_SWAP`` > ``SHIFTED``; then fewest differing pixels, smallest colour distance,
        smallest shift, lowest training row).  For ``NOT_COPY`` the call describes the closest
        candidate examined (or ``training = -1``).

    Examples
    --------
    >>> import numpy as np
    >>> tr = np.zeros((1, 16, 16, 3), np.uint8); tr[0, :, :5] = 200; tr[0, ::5] = (40, 90, 10)
    >>> judge_copies(tr[:, :, ::-1], tr, flips=True)[0].kind.value
    'exact'
    >>> judge_copies(tr[:, :, ::-1], tr, flips=False)[0].kind.value
    'not_copy'
    """
    generated = _as_tiles(generated, "generated")
    if index is None:
        if training is None:
            raise ValueError("judge_copies needs training tiles or a TrainingIndex")
        index = TrainingIndex(training, flips=flips)
    elif index.flips != bool(flips):
        raise ValueError(f"the index was built with flips={index.flips}, judge_copies was "
                         f"asked for flips={flips}")
    n, t = generated.shape[:2]
    if len(index) and index.tile_size != t:
        raise ValueError(f"generated tiles are {t}x{t} but the training tiles are "
                         f"{index.tile_size}x{index.tile_size}")
    if n == 0:
        return []
    rgb, opaque = _split_alpha(generated)
    low_g = low_structure(generated, rules)
    gcode = np.where(opaque, pack_rgb(rgb), np.uint32(0xFF000000))
    swap_ok = _pattern_structure(gcode) >= rules.swap_min_structure
    # best candidate so far of every generated tile: (rank, differing, mean ΔE, |shift|, row)
    best: list[Optional[tuple]] = [None] * n

    def consider(c: _Cands) -> None:
        if not len(c.gen):
            return
        compared, differing, mean_de, equal = _verify(rgb, opaque, index, c,
                                                      rules.pixel_tolerance)
        low_t = index.low_structure(c.train, rules)
        rank = _classify(c, compared, differing, equal, low_g[c.gen], low_t, swap_ok[c.gen],
                         rules)
        mag = np.abs(c.dx) + np.abs(c.dy)
        for i in range(len(c.gen)):
            key = (int(rank[i]), int(differing[i]), float(mean_de[i]), int(mag[i]),
                   int(c.train[i]))
            g = int(c.gen[i])
            if best[g] is None or key < best[g][0]:
                call = CopyCall(g, int(c.train[i]), _KIND_OF_RANK[int(rank[i])],
                                int(differing[i]), float(mean_de[i]), int(c.flip[i]),
                                (int(c.dx[i]), int(c.dy[i])), int(compared[i]), bool(low_g[g]))
                best[g] = (key, call)

    def still_open(stronger_than: CopyKind) -> np.ndarray:
        """Structured rows whose best call is weaker than ``stronger_than``."""
        cut = _RANK[stronger_than]
        return np.array([g for g in np.flatnonzero(~low_g).tolist()
                         if best[g] is None or best[g][0][0] > cut], np.int64)

    if len(index):
        # cheapest first: exact keys and patterns; then blocks unshifted for the tiles with no
        # exact copy; then shifted blocks for the tiles with no exact or near copy
        consider(_exact_candidates(rgb, index))
        consider(_pattern_candidates(rgb, opaque, np.flatnonzero(~low_g), index, rules))
        consider(_block_candidates(rgb, still_open(CopyKind.EXACT), index, rules,
                                   shifted=False))
        if rules.max_shift > 0:
            consider(_block_candidates(rgb, still_open(CopyKind.NEAR), index, rules,
                                       shifted=True))
    calls = []
    for g in range(n):
        if best[g] is None:
            calls.append(CopyCall(g, -1, CopyKind.NOT_COPY, -1, -1.0, 0, (0, 0), 0,
                                  bool(low_g[g])))
        else:
            calls.append(best[g][1])
    return calls


# --------------------------------------------------------------------------- evidence sheet
def _checker(t: int) -> np.ndarray:
    c = ((np.add.outer(np.arange(t), np.arange(t)) % 2) * 40 + 60).astype(np.uint8)
    return np.repeat(c[..., None], 3, -1)


def aligned_training(call: CopyCall, training: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The training tile of ``call`` moved onto the generated tile's pixels.

    Returns
    -------
    rgb : ndarray, shape (T, T, 3), uint8
        The training tile in orientation ``call.flip``, shifted by ``call.shift``; pixels
        outside the overlap are a grey checker.
    inside : ndarray, shape (T, T), bool
        Pixels covered by the training tile.
    """
    t = training.shape[1]
    a = _orient(np.asarray(training[call.training])[..., :3], call.flip)
    dx, dy = call.shift
    out = _checker(t)
    inside = np.zeros((t, t), bool)
    gy0, gy1 = max(0, -dy), t - max(0, dy)
    gx0, gx1 = max(0, -dx), t - max(0, dx)
    out[gy0:gy1, gx0:gx1] = a[gy0 + dy:gy1 + dy, gx0 + dx:gx1 + dx]
    inside[gy0:gy1, gx0:gx1] = True
    return out, inside


def diff_mask(call: CopyCall, generated: np.ndarray, training: np.ndarray, *,
              pixel_tolerance: float = 3.0) -> np.ndarray:
    """Which pixels of the pair differ: (T, T) bool (outside the overlap: False)."""
    g = np.asarray(generated[call.generated])
    rgb, opaque = _split_alpha(g[None])
    a, inside = aligned_training(call, training)
    neq = (rgb[0] != a).any(-1) & inside & opaque[0]
    where = np.nonzero(neq)
    de = _delta_e(rgb[0][where], a[where])
    out = np.zeros(neq.shape, bool)
    out[where] = de > pixel_tolerance
    out |= inside & ~opaque[0]
    return out


def evidence_sheet(calls: Sequence[CopyCall], generated: np.ndarray, training: np.ndarray, *,
                   scale: int = 3, labels: Optional[Sequence[str]] = None,
                   pixel_tolerance: float = 3.0, max_rows: Optional[int] = None) -> np.ndarray:
    """Picture of copy calls: generated | training (aligned) | differing pixels, with numbers.

    Parameters
    ----------
    calls : sequence of CopyCall
        The calls to show, in order (e.g. those with ``is_copy``); calls without a training
        tile are shown with an empty training cell.
    generated : ndarray, shape (N, T, T, 3|4), uint8
    training : ndarray, shape (M, T, T, 3), uint8 (or ``TrainingIndex.tiles``)
    scale : int
        Pixel magnification of the tiles (3 = how a person inspects pixel art).
    labels : sequence of str, optional
        An extra text line per call (e.g. where the training tile comes from).
    pixel_tolerance : float
        As in :class:`CopyRules`, for the difference mask.
    max_rows : int, optional
        Show at most this many calls (a last line says how many were left out).

    Returns
    -------
    ndarray, shape (H, W, 3), uint8
        The difference mask is dark where the pixels agree, red where they differ and a
        checker outside the overlap of a shifted copy.  Transparent generated pixels show as a
        checker too.
    """
    from PIL import Image, ImageDraw, ImageFont

    generated = _as_tiles(generated, "generated")
    t = generated.shape[1]
    s = t * scale
    pad = 6
    text_w = 400
    shown = list(calls)[:max_rows] if max_rows is not None else list(calls)
    left_out = len(calls) - len(shown)
    col = max(s, 56) + pad             # column pitch: room for the titles at small scales
    width = pad + 3 * col + text_w
    head = 16
    height = pad + head + max(1, len(shown)) * (s + pad) + (14 if left_out else 0)
    im = Image.new("RGB", (width, height), (32, 32, 32))
    draw = ImageDraw.Draw(im)
    try:
        font = ImageFont.load_default_imagefont()
    except AttributeError:                                  # Pillow < 10.1
        font = ImageFont.load_default()
    for j, title in enumerate(("generated", "training", "differ")):
        draw.text((pad + j * col, pad), title, fill=(230, 230, 230), font=font)
    if not shown:
        draw.text((pad, pad + head + 4), "no copy calls", fill=(230, 230, 230), font=font)
    chk = _checker(t)
    for r, call in enumerate(shown):
        y = pad + head + r * (s + pad)
        g = generated[call.generated]
        grgb, gop = _split_alpha(g[None])
        gshow = np.where(gop[0][..., None], grgb[0], chk)
        if call.training >= 0:
            tshow, inside = aligned_training(call, training)
            mask = diff_mask(call, generated, training, pixel_tolerance=pixel_tolerance)
            dshow = np.where(inside[..., None], np.where(mask[..., None],
                             np.array([230, 40, 40], np.uint8), np.array([50, 50, 50], np.uint8)),
                             chk)
        else:
            tshow = dshow = chk
        for j, tile in enumerate((gshow, tshow, dshow)):
            big = Image.fromarray(np.ascontiguousarray(tile, np.uint8)).resize((s, s),
                                                                               Image.NEAREST)
            im.paste(big, (pad + j * col, y))
        lines = [f"gen {call.generated} -> train {call.training}"
                 if call.training >= 0 else f"gen {call.generated}", call.describe()]
        if call.low_structure:
            lines.append("low structure: exact copies only")
        if labels is not None and r < len(labels) and labels[r]:
            lines.append(str(labels[r]))
        x = pad + 3 * col
        for k, line in enumerate(lines[: max(1, s // 12)]):
            draw.text((x, y + 1 + 12 * k), line[:66], fill=(230, 230, 230), font=font)
    if left_out:
        draw.text((pad, height - 14), f"... {left_out} more calls not shown",
                  fill=(230, 230, 230), font=font)
    return np.asarray(im)
