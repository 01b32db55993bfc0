"""Tile dictionary: a budget of K clean, recurring tiles learned from many generated tiles.

A GAN paints every screen afresh, so cut on the grid its tiles almost never repeat: each one is
a slightly different, speckled version of a few dozen underlying tiles (sky, brick, ledge...).
:func:`learn_dictionary` finds those underlying tiles; :func:`assign` rebuilds any screen from
them, cell by cell, preferring neighbours whose edges join.

Method
------
Distance
    Per-pixel squared CIELAB difference (ΔE76²) summed over the tile.  A transparent pixel is a
    fourth coordinate: opaque pixels carry :data:`ALPHA_DE` there, transparent ones 0 and a
    neutral grey Lab, so a transparent pixel is at least 100 ΔE from every opaque one.  With
    ``flips`` (Tiled mode) the distance from a tile to a dictionary entry is the minimum over the
    entry's four orientations (identity, H, V, HV) and assignments record which one; without
    (NES mode: background tiles cannot flip) only the identity counts.
Learning
    Exact duplicates (up to a flip with ``flips``) are collapsed first and carried as weights,
    so the work scales with the distinct tiles.  Weighted, flip-aligned k-means in that Lab
    space: k-means++ seeding from a seeded RNG, Lloyd iterations whose distance matrix is one
    BLAS product per chunk (``|x|² + |c|² - 2 x·c``, float32), each member flipped into its
    centre's orientation before averaging.
Representatives
    Not the float mean (blurred, off-palette) but the per-pixel weighted *mode* of the
    flip-aligned members' colours: a majority vote, so speckle that differs from member to
    member disappears, and every colour is one the input tiles use.  Then a legality pass: a
    tile with more than ``max_colours`` opaque colours keeps its most used ones and every other
    pixel takes its best-voted kept colour; an isolated pixel (unlike all its in-tile
    8-neighbours) takes the best-voted of its neighbours' colours unless at least half the
    cluster's weight (and two members) voted for it.  Memberships are then recomputed against
    these representatives and the vote repeated (``polish`` rounds), since the mode is not the
    mean that Lloyd's steps assumed.
K
    ``max_tiles``; or automatic: K = 8, 16, 32, ... (at most ``k_cap``), stopping at the
    first K whose doubling lowers the mean ΔE76 of the rebuilt tiles by less than
    :data:`AUTO_GAIN` (5 %) of it.  Measured on the representatives, not on the k-means
    error: once K covers the corpus's real tiles, further entries only copy the speckle of a
    few tiles each (a split cluster votes to the same clean tile), so the gain drops from
    more than 30 % to 5-11 % per doubling on a 40-tile corpus with 1.5 % speckle, while a
    varied corpus (the example screens) keeps gaining 12-20 % per doubling up to the cap.
    The stop needs two small gains in a row (one noisy k-means run cannot end the search).
    Automatic K also stays at or below a quarter of the input tiles (:data:`AUTO_MIN_USES`):
    on a small corpus the error keeps falling until the dictionary copies every tile, which
    is no budget; real NES screens use each distinct tile 4.7 times.
Assignment (:func:`assign`)
    Unary cost = mean ΔE76² per pixel between the cell and a dictionary tile (in some
    orientation), plus ``texture_weight`` × (τ_cell − τ_tile)², where τ is a tile's texture:
    the mean ΔE76 between 4-neighbour pixels inside it.  Without that term the nearest tile by
    per-pixel error regresses to the mean: a brick, foliage or dither cell is closer to a flat
    tile of its average colour than to a texture of another phase, so rebuilt screens came out
    half as textured as their samples (inside-tile ΔE 5.8 against 9.9; real screens 10.8),
    which is what their worse SWD and their "rough" border/interior ratio were measuring.
    Pairwise cost = ``seam_weight`` × mean ΔE76² between the pixels that touch
    across a shared border.  Minimised by iterated conditional modes over each cell's
    ``candidates`` best tiles, updating a checkerboard half of the cells at a time, for at
    most ``sweeps`` sweeps (each sweep only lowers the energy).  ``seam_weight="auto"``
    (:func:`calibrate_seam_weight`) takes the smallest weight of :data:`SEAM_WEIGHTS` whose
    rebuilt screens have a border/interior ΔE ratio no higher than the screens being rebuilt:
    cells chosen one by one give rough borders (ratio +7 to +78 % over real screens,
    measured on three corpora), and the generator learned its ratio from real screens.  ``max_distinct`` caps
    the distinct tiles of one screen (NES: 64 tiles of 16×16 = 256 patterns of 8×8): the
    tile whose cells lose least by moving is dropped until the screen fits, then ICM reruns.

Every output colour is a colour of the input tiles.  Errors are :class:`ValueError` with one
line naming the argument.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import numpy as np

from palettes.colour import srgb_to_lab
from tilesets.cells import ORIENTATIONS, encode_cells, flip_tile, flip_variants
from tilesets.pixels import join_grid, lab_of_pixels, pack_colours

__all__ = ["ALPHA_DE", "AUTO_GAIN", "AUTO_MIN_USES", "K_CAP", "NES_MAX_DISTINCT", "SEAM_WEIGHTS",
           "SEAM_TOLERANCE", "TEXTURE_WEIGHT",
           "Dictionary", "learn_dictionary", "assign", "calibrate_seam_weight",
           "parse_seam_weight", "rebuild", "render", "grid_tiles", "distinct_tiles",
           "tile_distance", "nes_max_distinct", "mean_delta_e", "isolated_rate", "seam_ratio"]

log = logging.getLogger("tilegan.tilesets.dictionary")

#: Lab-space weight of alpha: an opaque and a transparent pixel are this far apart (ΔE units)
ALPHA_DE = 100.0
#: automatic K: doubling K must lower the distortion by at least this share to be worth it
AUTO_GAIN = 0.05
#: automatic K never exceeds this (Tiled mode); :data:`NES_MAX_DISTINCT` bounds NES screens
K_CAP = 256
#: automatic K is at most the input tiles / this: every entry stands for 4 cells on average
#: (real NES screens: 974 distinct tiles in 4,560 cells, one per 4.7)
AUTO_MIN_USES = 4
#: weight of the texture term of the assignment (see the module notes): (ΔE76)² of texture
#: difference against mean ΔE76² per pixel; chosen on two corpora (docs/tiles.md)
TEXTURE_WEIGHT = 16.0
#: 16×16 tiles one NES screen may use: 64 × four 8×8 patterns = the 256 of a pattern table
NES_MAX_DISTINCT = 64


def nes_max_distinct(tile_size: int) -> int:
    """Distinct tiles of ``tile_size`` one NES screen may use so that its 8×8 patterns fit
    one 256-pattern table whatever they share: 256 for 8 px, 64 for 16 px."""
    if tile_size < 8 or tile_size % 8:
        raise ValueError(f"NES tiles are multiples of 8 px, got {tile_size}")
    return max(1, 256 // (tile_size // 8) ** 2)

_TRANSPARENT_LAB = (50.0, 0.0, 0.0)


# --------------------------------------------------------------------------- result
@dataclass
class Dictionary:
    """A learned tile dictionary.

    Attributes
    ----------
    tiles : ndarray, shape (K, T, T, 4), uint8
        RGBA tiles, alpha 0/255, transparent pixels (0, 0, 0, 0); every colour is an input one.
        Ordered by usage, most used first.
    counts : ndarray, shape (K,), int64
        Input tiles whose nearest entry (no seam term) is each tile.
    flips : bool
        Whether entries may be shown flipped (Tiled mode).
    k_requested : int or None
        ``max_tiles`` as given (None: automatic).
    distortion : float
        Mean ΔE76 per pixel between every input tile and its nearest entry.
    curve : list of (int, float)
        Automatic K only: (K, mean ΔE76 per pixel) for each K tried.
    warnings : list of str
        What was done about unusual input (K above the distinct tiles, one colour...).
    """

    tiles: np.ndarray
    counts: np.ndarray
    flips: bool
    k_requested: Optional[int] = None
    distortion: float = 0.0
    curve: list = field(default_factory=list)
    warnings: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.tiles)


# --------------------------------------------------------------------------- input checks
def _check_tiles(tiles: np.ndarray, name: str = "tiles") -> np.ndarray:
    tiles = np.asarray(tiles)
    if tiles.dtype != np.uint8 or tiles.ndim != 4 or tiles.shape[1] != tiles.shape[2] \
            or tiles.shape[-1] != 4:
        raise ValueError(f"{name} must be uint8 RGBA (N, T, T, 4), got {tiles.dtype} {tiles.shape}")
    if len(tiles) == 0:
        raise ValueError(f"{name} is empty: no tiles to learn from")
    return _clear_transparent(tiles)


def _clear_transparent(tiles: np.ndarray) -> np.ndarray:
    """Binary alpha, transparent pixels (0, 0, 0, 0): equal-looking tiles become equal bytes."""
    opaque = tiles[..., 3] >= 128
    if np.all(tiles[..., 3][opaque] == 255) and not tiles[~opaque].any():
        return tiles
    out = tiles.copy()
    out[..., 3] = np.where(opaque, 255, 0)
    out[~opaque] = 0
    return out


# --------------------------------------------------------------------------- colours
def _colour_table(*arrays: np.ndarray) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Index every pixel into one table of the distinct colours of ``arrays``.

    Returns (indices per array (..., T, T) int32, rgba table (P, 4) uint8, features (P, C)
    float32 with C = 3, or 4 when some pixel is transparent).
    """
    packed = [pack_colours(a) for a in arrays]
    sizes = [p.size for p in packed]
    allp = np.concatenate([p.ravel() for p in packed])
    table, inv = np.unique(allp, return_inverse=True)
    rgba = np.stack([(table >> s) & 255 for s in (0, 8, 16, 24)], axis=-1).astype(np.uint8)
    opaque = rgba[:, 3] == 255
    lab = srgb_to_lab(rgba[:, :3])
    lab[~opaque] = _TRANSPARENT_LAB
    if not opaque.all():
        lab = np.concatenate([lab, np.where(opaque, ALPHA_DE, 0.0)[:, None]], 1)
    feat = lab
    out, start = [], 0
    for p, n in zip(packed, sizes):
        out.append(inv[start:start + n].reshape(p.shape).astype(np.int32))
        start += n
    return out, rgba, feat.astype(np.float32)


# --------------------------------------------------------------------------- distinct tiles
def _void_rows(flat: np.ndarray) -> np.ndarray:
    flat = np.ascontiguousarray(flat)
    return flat.view(np.dtype((np.void, flat.shape[1] * flat.itemsize))).ravel()


def distinct_tiles(tiles: np.ndarray, *, flips: bool = True
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Collapse exact duplicates (up to a flip when ``flips``).

    Parameters
    ----------
    tiles : ndarray, shape (N, T, T, C), uint8
    flips : bool

    Returns
    -------
    distinct : ndarray, shape (U, T, T, C), uint8
        One canonical orientation per distinct tile.
    weights : ndarray, shape (U,), int64
        How many input tiles each stands for.
    inverse : ndarray, shape (N,), int64
        Distinct index of every input tile.
    codes : ndarray, shape (N,), uint8
        Orientation with ``tiles[i] == flip_tile(distinct[inverse[i]], ORIENTATIONS[codes[i]])``.
    """
    n = len(tiles)
    f = 4 if flips else 1
    var = np.stack([flip_tile(tiles, o) for o in ORIENTATIONS[:f]], axis=1)   # (N, F, T, T, C)
    _, rank = np.unique(_void_rows(var.reshape(n * f, -1)), return_inverse=True)
    rank = rank.reshape(n, f)
    codes = rank.argmin(axis=1).astype(np.uint8)
    canon = rank[np.arange(n), codes]
    _, first, inverse, weights = np.unique(canon, return_index=True, return_inverse=True,
                                           return_counts=True)
    distinct = var[first, codes[first]]
    return distinct, weights.astype(np.int64), inverse.ravel().astype(np.int64), codes


# --------------------------------------------------------------------------- distances
def _variants(feat: np.ndarray, nflip: int) -> np.ndarray:
    """(K, T, T, C) -> (K * nflip, T*T*C) float32, row k*nflip + f = flip(feat[k], f)."""
    k = len(feat)
    v = np.stack([flip_tile(feat, o) for o in ORIENTATIONS[:nflip]], axis=1)
    return np.ascontiguousarray(v.reshape(k * nflip, -1), dtype=np.float32)


def _chunks(n: int, cols: int, budget: int = 1 << 23):
    step = max(64, budget // max(cols, 1))
    for s in range(0, n, step):
        yield s, min(n, s + step)


def _sqdist(x: np.ndarray, xx: np.ndarray, c: np.ndarray, cc: np.ndarray) -> np.ndarray:
    d = x @ c.T
    d *= -2.0
    d += xx[:, None]
    d += cc[None, :]
    np.maximum(d, 0.0, out=d)
    return d


def _nearest(x: np.ndarray, xx: np.ndarray, cv: np.ndarray, nflip: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest (entry, flip) of every row of ``x`` among the variant rows ``cv``.

    Returns (entry (n,) int64, flip (n,) uint8, squared distance (n,) float32).
    """
    n = len(x)
    cc = (cv * cv).sum(1)
    lab = np.empty(n, np.int64)
    dist = np.empty(n, np.float32)
    for s, e in _chunks(n, len(cv)):
        d = _sqdist(x[s:e], xx[s:e], cv, cc)
        j = d.argmin(axis=1)
        lab[s:e] = j
        dist[s:e] = d[np.arange(e - s), j]
    return lab // nflip, (lab % nflip).astype(np.uint8), dist


def tile_distance(a: np.ndarray, b: np.ndarray, *, flips: bool = True
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Flip-aware perceptual distance between two sets of tiles.

    Parameters
    ----------
    a : ndarray, shape (N, T, T, 4), uint8
    b : ndarray, shape (M, T, T, 4), uint8
    flips : bool
        Minimum over the four orientations of ``b`` (else identity only).

    Returns
    -------
    dist : ndarray, shape (N, M), float32
        Mean ΔE76² per pixel (alpha as in the module notes).
    code : ndarray, shape (N, M), uint8
        Orientation with ``a[i] ≈ flip_tile(b[j], ORIENTATIONS[code[i, j]])``.
    """
    a, b = _check_tiles(a, "a"), _check_tiles(b, "b")
    (ia, ib), _, feat = _colour_table(a, b)
    nflip = 4 if flips else 1
    xa = feat[ia].reshape(len(a), -1)
    cv = _variants(feat[ib], nflip)
    d = _sqdist(xa, (xa * xa).sum(1), cv, (cv * cv).sum(1)).reshape(len(a), len(b), nflip)
    code = d.argmin(axis=2).astype(np.uint8)
    px = a.shape[1] * a.shape[2]
    return np.take_along_axis(d, code[..., None].astype(np.int64), 2)[..., 0] / px, code


# --------------------------------------------------------------------------- k-means
#: dimensions of the random projection used only while seeding
_SEED_DIMS = 32


def _seed(x: np.ndarray, w: np.ndarray, k: int, feat: np.ndarray, nflip: int,
          rng: np.random.Generator, init: Optional[np.ndarray] = None) -> np.ndarray:
    """Weighted, flip-aware k-means++ seeding, extending ``init`` centres when given.

    Returns centres (<= k, T, T, C) float32: ``init`` first, then rows of ``feat`` drawn with
    probability proportional to weight × squared distance to the nearest centre so far.
    Distances are taken after a random Gaussian projection to :data:`_SEED_DIMS` dimensions
    (Johnson-Lindenstrauss: close enough for a randomised seeding, and 20× cheaper than the
    full 768-dimensional matrix-vector product per draw, which dominated the run).
    """
    n = len(x)
    proj = rng.standard_normal((x.shape[1], _SEED_DIMS)).astype(np.float32)
    pv = np.stack([np.ascontiguousarray(flip_tile(feat, o)).reshape(n, -1) @ proj
                   for o in ORIENTATIONS[:nflip]], axis=1)                # (n, nflip, d)

    def dist(c: np.ndarray) -> np.ndarray:
        diff = pv - (c.reshape(1, -1) @ proj)[None]
        return np.einsum("nfd,nfd->nf", diff, diff).min(axis=1)

    best = np.full(n, np.inf, np.float32)
    if init is None or len(init) == 0:
        centres = [feat[int(rng.choice(n, p=w / w.sum()))]]
    else:
        centres = list(init)
    for c in centres:
        np.minimum(best, dist(c), out=best)
    while len(centres) < k:
        p = w * best
        tot = p.sum()
        if tot <= 0:
            break
        j = int(rng.choice(n, p=p / tot))
        centres.append(feat[j])
        np.minimum(best, dist(feat[j]), out=best)
    return np.stack(centres).astype(np.float32)


def _aligned(feat: np.ndarray, code: np.ndarray) -> np.ndarray:
    """Each row flipped by its own code (flips are involutions: this undoes the assignment)."""
    out = feat.copy()
    for c in (1, 2, 3):
        m = code == c
        if m.any():
            out[m] = flip_tile(feat[m], ORIENTATIONS[c])
    return out


def _weighted_means(feat: np.ndarray, w: np.ndarray, lab: np.ndarray, k: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster weighted means (k, ...) and total weights (k,).

    One BLAS product with the weighted one-hot membership matrix (k × n): faster here than
    sorting the rows and summing segments, which copies the whole feature array.
    """
    flat = feat.reshape(len(feat), -1)
    tot = np.bincount(lab, weights=w, minlength=k)
    onehot = np.zeros((k, len(feat)), np.float32)
    onehot[lab, np.arange(len(feat))] = w
    means = onehot @ flat
    live = tot > 0
    means[live] /= tot[live, None].astype(np.float32)
    return means.reshape((k,) + feat.shape[1:]), tot


def _cluster_means(feat: np.ndarray, idx: np.ndarray, table: np.ndarray, w: np.ndarray,
                   lab: np.ndarray, code: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Weighted means of the flip-aligned members, (k, T, T, C) float32, and cluster weights.

    Palette art has few colours, so the means come from per-pixel colour counts (one
    ``bincount`` over the members' colour indices, then counts × the colour table): a tenth of
    the work of summing feature vectors.  Many colours: :func:`_weighted_means`.
    """
    n, t = idx.shape[:2]
    tt, p = t * t, len(table)
    if k * tt * p > 1 << 24:
        return _weighted_means(_aligned(feat, code), w, lab, k)
    al = _aligned(idx[..., None], code)[..., 0].reshape(n, tt)
    flat = (lab[:, None] * tt + np.arange(tt)[None]) * p + al
    votes = np.bincount(flat.ravel(), weights=np.repeat(w, tt), minlength=k * tt * p)
    tot = np.bincount(lab, weights=w, minlength=k)
    means = votes.reshape(k * tt, p) @ table.astype(np.float64)
    means = means.reshape(k, tt, -1)
    live = tot > 0
    means[live] /= tot[live, None, None]
    return means.reshape((k, t, t, -1)).astype(np.float32), tot


def _lloyd(feat: np.ndarray, w: np.ndarray, centres: np.ndarray, nflip: int, *, iters: int,
           idx: np.ndarray, table: np.ndarray, tol: float = 1e-3
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Weighted flip-aligned Lloyd iterations from ``centres`` (k, T, T, C) float32.

    ``feat = table[idx]``.  Returns (centres, labels, codes, squared distances).
    """
    n = len(feat)
    x = feat.reshape(n, -1)
    xx = (x * x).sum(1)
    k = len(centres)
    prev = np.inf
    lab = code = dist = None
    for _ in range(max(1, iters)):
        lab, code, dist = _nearest(x, xx, _variants(centres, nflip), nflip)
        inertia = float((w * dist).sum())
        if np.isfinite(prev) and prev - inertia <= tol * prev:
            break
        prev = inertia
        centres, tot = _cluster_means(feat, idx, table, w, lab, code, k)
        empty = np.flatnonzero(tot == 0)
        if len(empty):                                        # re-seed at the worst-fit points
            far = np.argsort(-(w * dist), kind="stable")[:len(empty)]
            centres[empty[:len(far)]] = feat[far]
    return centres, lab, code, dist


# --------------------------------------------------------------------------- representatives
_NB8 = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


def _neighbour_stack(img: np.ndarray) -> np.ndarray:
    """(..., T, T) int -> (8, ..., T, T), -1 outside the tile."""
    t = img.shape[-1]
    pad = np.full(img.shape[:-2] + (t + 2, t + 2), -1, np.int64)
    pad[..., 1:-1, 1:-1] = img
    return np.stack([pad[..., 1 + dy:1 + dy + t, 1 + dx:1 + dx + t] for dy, dx in _NB8])


def _isolated(img: np.ndarray) -> np.ndarray:
    """Pixels unlike every in-tile 8-neighbour: (..., T, T) bool."""
    nb = _neighbour_stack(img)
    return ~((nb == img[None]) & (nb >= 0)).any(axis=0)


def _representatives(idx: np.ndarray, w: np.ndarray, lab: np.ndarray, code: np.ndarray, k: int,
                     feat_table: np.ndarray, opaque: np.ndarray, *, max_colours: int,
                     keep_share: float = 0.5, min_support: float = 2.0) -> np.ndarray:
    """Per-pixel weighted mode of the flip-aligned members, then the legality pass.

    idx : (n, T, T) colour indices of the distinct tiles; returns (k, T, T) colour indices
    (clusters without members get -1).
    """
    n, t, _ = idx.shape
    tt = t * t
    p = len(feat_table)
    al = _aligned(idx[..., None], code)[..., 0].reshape(n, tt)
    tot = np.bincount(lab, weights=w, minlength=k)
    out = np.full((k, t, t), -1, np.int64)
    per = max(1, (1 << 24) // (tt * p))
    order = np.argsort(lab, kind="stable")
    bounds = np.searchsorted(lab[order], np.arange(0, k + per, per))
    pal_d = ((feat_table[:, None, :] - feat_table[None, :, :]) ** 2).sum(-1)
    for ci, c0 in enumerate(range(0, k, per)):
        c1 = min(k, c0 + per)
        mem = order[bounds[ci]:bounds[ci + 1]]
        if len(mem) == 0:
            continue
        kc = c1 - c0
        flat = ((lab[mem] - c0)[:, None] * tt + np.arange(tt)[None]) * p + al[mem]
        votes = np.bincount(flat.ravel(), weights=np.repeat(w[mem], tt),
                            minlength=kc * tt * p).reshape(kc, tt, p)
        mode = votes.argmax(axis=2)                                        # (kc, tt)
        mode = _limit_colours(mode, votes, pal_d, opaque, max_colours)
        mode = _drop_isolated(mode.reshape(kc, t, t), votes, tot[c0:c1], keep_share, min_support)
        live = tot[c0:c1] > 0
        out[c0:c1][live] = mode[live]
    return out


def _limit_colours(mode: np.ndarray, votes: np.ndarray, pal_d: np.ndarray, opaque: np.ndarray,
                   max_colours: int) -> np.ndarray:
    """Tiles over ``max_colours`` opaque colours keep their most used ones (ties: most votes)."""
    kc, tt, p = votes.shape
    use = np.zeros((kc, p), np.int64)
    np.add.at(use, (np.repeat(np.arange(kc), tt), mode.ravel()), 1)
    over = ((use > 0) & opaque[None]).sum(1) > max_colours
    if not over.any():
        return mode
    mode = mode.copy()
    for i in np.flatnonzero(over):
        score = use[i] * 1e12 + votes[i].sum(0)
        score = np.where(opaque, score, -1.0)
        keep = np.zeros(p, bool)
        keep[np.argsort(-score, kind="stable")[:max_colours]] = True
        keep |= ~opaque & (use[i] > 0)                                   # transparency stays
        v = np.where(keep[None], votes[i], -1.0)
        best = v.argmax(1)
        none = v[np.arange(tt), best] <= 0              # no member voted for a kept colour
        if none.any():
            d = np.where(keep[None], pal_d[mode[i][none]], np.inf)
            best[none] = d.argmin(1)
        mode[i] = best
    return mode


def _drop_isolated(mode: np.ndarray, votes: np.ndarray, weight: np.ndarray, keep_share: float,
                   min_support: float, passes: int = 2) -> np.ndarray:
    """An isolated pixel takes its best-voted neighbour colour unless the cluster agrees on it."""
    kc, t, _ = mode.shape
    tt = t * t
    vflat = votes.reshape(kc, tt, -1)
    for _ in range(passes):
        iso = _isolated(mode)
        if not iso.any():
            break
        ki, yi, xi = np.nonzero(iso)
        pix = yi * t + xi
        own = vflat[ki, pix, mode[ki, yi, xi]]
        keep = (own >= keep_share * weight[ki]) & (own >= min_support)
        ki, yi, xi, pix = ki[~keep], yi[~keep], xi[~keep], pix[~keep]
        if len(ki) == 0:
            break
        nb = _neighbour_stack(mode)[:, ki, yi, xi]                          # (8, m)
        valid = nb >= 0
        # votes for each neighbour colour at this pixel, +1 per neighbour showing it (ties)
        v = np.where(valid, vflat[ki[None], pix[None], np.where(valid, nb, 0)], -np.inf)
        cnt = ((nb[:, None] == nb[None]) & valid[None] & valid[:, None]).sum(1)
        score = v + 1e-6 * cnt
        pick = nb[score.argmax(0), np.arange(len(ki))]
        mode = mode.copy()
        mode[ki, yi, xi] = pick
    return mode


def _medoids(feat: np.ndarray, w: np.ndarray, lab: np.ndarray, code: np.ndarray, idx: np.ndarray,
             k: int) -> np.ndarray:
    """The member nearest each cluster's weighted mean (the exact medoid under squared error)."""
    al = _aligned(feat, code)
    means, tot = _weighted_means(al, w, lab, k)
    d = ((al.reshape(len(al), -1) - means.reshape(k, -1)[lab]) ** 2).sum(1)
    order = np.lexsort((d, lab))
    first = order[np.unique(lab[order], return_index=True)[1]]
    out = np.full((k,) + idx.shape[1:], -1, np.int64)
    out[lab[first]] = _aligned(idx[..., None], code)[first][..., 0]
    return out


# --------------------------------------------------------------------------- learning
@dataclass
class _Corpus:
    """Distinct tiles of a corpus and what the learning steps need of them."""

    idx: np.ndarray          # (U, T, T) int32 colour indices
    weights: np.ndarray      # (U,) float64
    inverse: np.ndarray      # (N,) distinct index of each input tile
    rgba: np.ndarray         # (P, 4) uint8 colour table
    table: np.ndarray        # (P, C) float32 Lab (+ alpha) of each colour
    nflip: int

    @property
    def feat(self) -> np.ndarray:
        return self.table[self.idx]

    @property
    def opaque(self) -> np.ndarray:
        return self.rgba[:, 3] == 255


@dataclass
class _Fit:
    reps: np.ndarray         # (K', T, T) colour indices, most used first
    counts: np.ndarray       # (K',) input tiles per entry
    distortion: float        # mean ΔE76 per pixel
    centres: np.ndarray      # (k, T, T, C) float32 k-means centres (seed the next K)


def _prepare(tiles: np.ndarray, flips: bool) -> _Corpus:
    distinct, w, inverse, _ = distinct_tiles(tiles, flips=flips)
    (idx,), rgba, table = _colour_table(distinct)
    return _Corpus(idx, w.astype(np.float64), inverse, rgba, table, 4 if flips else 1)


def _fit(c: _Corpus, k: int, *, rng: np.random.Generator, max_colours: int, representative: str,
         iters: int, polish: int, min_uses: int, init: Optional[np.ndarray] = None) -> _Fit:
    """k-means at ``k`` (seeded from ``init`` centres plus k-means++), representatives, final
    memberships; see the module notes."""
    feat = c.feat
    u, t = len(feat), feat.shape[1]
    x = feat.reshape(u, -1)
    xx = (x * x).sum(1)
    centres = _seed(x, c.weights, k, feat, c.nflip, rng, init)
    centres, lab, code, _ = _lloyd(feat, c.weights, centres, c.nflip, iters=iters, idx=c.idx,
                                   table=c.table)
    means = centres
    k = len(centres)
    limit = max_colours if max_colours > 0 else t * t
    if representative == "medoid":
        reps = _medoids(feat, c.weights, lab, code, c.idx, k)
    else:
        reps = _representatives(c.idx, c.weights, lab, code, k, c.table, c.opaque,
                                max_colours=limit)
        for _ in range(polish):
            live = np.flatnonzero(reps[:, 0, 0] >= 0)
            sub, code, _ = _nearest(x, xx, _variants(c.table[reps[live]], c.nflip), c.nflip)
            lab = live[sub]
            reps = _representatives(c.idx, c.weights, lab, code, k, c.table, c.opaque,
                                    max_colours=limit)
    reps = _unique_reps(reps[reps[:, 0, 0] >= 0], c.nflip == 4)
    lab, code, _ = _nearest(x, xx, _variants(c.table[reps], c.nflip), c.nflip)
    counts = np.bincount(lab[c.inverse], minlength=len(reps)).astype(np.int64)
    lone = counts < min_uses
    if lone.any() and not lone.all():              # entries that copy one input tile go
        reps = reps[~lone]
        lab, code, _ = _nearest(x, xx, _variants(c.table[reps], c.nflip), c.nflip)
        counts = np.bincount(lab[c.inverse], minlength=len(reps)).astype(np.int64)
    order = np.lexsort((np.arange(len(reps)), -counts))
    order = order[counts[order] > 0]
    rank = np.full(len(reps), -1)
    rank[order] = np.arange(len(order))
    reps, counts, lab = reps[order], counts[order], rank[lab]
    de = _delta_e(feat, c.table[reps][lab], code)
    return _Fit(reps, counts, float((de * c.weights).sum() / (c.weights.sum() * t * t)), means)


def _small_gain(a: _Fit, b: _Fit, gain: float) -> bool:
    """Did going from fit ``a`` to the fit ``b`` with twice the K lower the ΔE by < ``gain``?"""
    return a.distortion - b.distortion < gain * a.distortion


def _k_ladder(kmax: int, k_min: int = 8) -> list[int]:
    """8, 16, 32, ... below ``kmax``, then ``kmax``."""
    out, k = [], k_min
    while k < kmax:
        out.append(k)
        k *= 2
    return out + [kmax]


def learn_dictionary(tiles: np.ndarray, *, max_tiles: Optional[int] = None, flips: bool = True,
                     seed: int = 0, max_colours: int = 4, k_cap: int = K_CAP,
                     representative: str = "mode", iters: int = 6, polish: int = 2,
                     min_uses: int = 2, gain: float = AUTO_GAIN) -> Dictionary:
    """Learn at most K palette-legal tiles that best rebuild ``tiles``.

    Parameters
    ----------
    tiles : ndarray, shape (N, T, T, 4), uint8
        Quantised RGBA tiles (alpha 0 / 255), e.g. every cell of many generated screens.
    max_tiles : int, optional
        K.  None: automatic, at most ``k_cap`` (see the module notes, "K").
    flips : bool
        Tiled mode (entries shown in any of four orientations); False for NES mode.
    seed : int
        Seeds k-means++; the same inputs and seed give the same dictionary.
    max_colours : int
        Opaque colours a dictionary tile may use (4 = one NES sub-palette; 0 = no limit).
    k_cap : int
        Largest automatic K.
    representative : {"mode", "medoid"}
        Per-pixel majority vote of the members then the legality pass, or the real member
        nearest the cluster mean (kept for comparison; see docs/tiles.md).
    iters : int
        Most Lloyd iterations.
    polish : int
        Rounds of re-assigning to the representatives and voting again ("mode" only).
    min_uses : int
        An entry nearest to fewer input tiles is dropped (its tiles go to their next nearest
        entry) unless every entry is that rare: it copies one generated tile, speckle and
        all, and recurs nowhere.  1 keeps every entry.
    gain : float
        Automatic K: stop doubling K when it lowers the mean ΔE by less than this share.

    Returns
    -------
    Dictionary
        At most K tiles (fewer when representatives coincide or go unused).

    Raises
    ------
    ValueError
        ``max_tiles`` <= 0 or not an int, tiles not uint8 (N, T, T, 4), no tiles, unknown
        ``representative``, ``k_cap`` < 1.
    """
    bad_k = isinstance(max_tiles, bool) or not isinstance(max_tiles, (int, np.integer))
    if max_tiles is not None and (bad_k or max_tiles <= 0):
        raise ValueError(f"max_tiles must be a positive integer (or None for automatic), "
                         f"got {max_tiles!r}")
    if representative not in ("mode", "medoid"):
        raise ValueError(f"representative must be 'mode' or 'medoid', got {representative!r}")
    if k_cap < 1:
        raise ValueError(f"k_cap must be >= 1, got {k_cap}")
    if max_colours < 0:
        raise ValueError(f"max_colours must be >= 0 (0: no limit), got {max_colours}")
    tiles = _check_tiles(tiles)
    corpus = _prepare(tiles, flips)
    u = len(corpus.idx)
    notes: list[str] = []
    if max_tiles is not None and max_tiles > u:
        notes.append(f"max_tiles={int(max_tiles)} is more than the {u} distinct tiles; using {u}")
    if u == 1:
        notes.append("every tile is the same" + (" single colour" if len(corpus.rgba) == 1 else "")
                     + "; the dictionary has one tile")
    rng = np.random.default_rng(seed)
    kw = dict(rng=rng, max_colours=max_colours, representative=representative, iters=iters,
              polish=polish, min_uses=min_uses)
    curve: list = []
    if max_tiles is not None:
        fit = _fit(corpus, min(int(max_tiles), u), **kw)
    else:
        fits: list[_Fit] = []
        for k in _k_ladder(max(1, min(k_cap, u, len(tiles) // AUTO_MIN_USES))):
            fits.append(_fit(corpus, k, init=fits[-1].centres if fits else None, **kw))
            curve.append((k, fits[-1].distortion))
            if len(fits) >= 3 and _small_gain(fits[-3], fits[-2], gain) \
                    and _small_gain(fits[-2], fits[-1], gain):
                fits.pop()
                break
        if len(fits) >= 2 and _small_gain(fits[-2], fits[-1], gain):
            fits.pop()
        fit = fits[-1]
    for msg in notes:
        log.warning("%s", msg)
    return Dictionary(tiles=corpus.rgba[fit.reps], counts=fit.counts, flips=flips,
                      k_requested=None if max_tiles is None else int(max_tiles),
                      distortion=fit.distortion, curve=curve, warnings=notes)


def _unique_reps(reps: np.ndarray, flips: bool) -> np.ndarray:
    """Drop representatives equal to another one (in some orientation with flips)."""
    if len(reps) <= 1:
        return reps
    return distinct_tiles(reps[..., None], flips=flips)[0][..., 0]


def _delta_e(feat: np.ndarray, rep_feat: np.ndarray, code: np.ndarray) -> np.ndarray:
    """Sum over pixels of ΔE76 (not squared) between each tile and its (flipped) entry."""
    shown = _aligned(rep_feat, code)
    d = feat - shown
    return np.sqrt((d * d).sum(-1)).reshape(len(feat), -1).sum(1)


# --------------------------------------------------------------------------- assignment
def _as_tiles(dictionary: Union[Dictionary, np.ndarray]) -> np.ndarray:
    tiles = dictionary.tiles if isinstance(dictionary, Dictionary) else dictionary
    return _check_tiles(np.asarray(tiles), "dictionary")


def assign(cells: np.ndarray, dictionary: Union[Dictionary, np.ndarray], *,
           flips: Optional[bool] = None, seam_weight: Union[float, str] = "auto",
           candidates: int = 8, sweeps: int = 8, max_distinct: Optional[int] = None,
           texture_weight: float = TEXTURE_WEIGHT) -> tuple[np.ndarray, np.ndarray]:
    """Choose a dictionary tile (and orientation) for every cell of one or more screens.

    Parameters
    ----------
    cells : ndarray, shape (R, C, T, T, 4) or (S, R, C, T, T, 4), uint8
        The screens' tiles on their grid (:func:`grid_tiles` cuts an image).
    dictionary : Dictionary or ndarray (K, T, T, 4) uint8
    flips : bool, optional
        Allow flipped entries; default: the dictionary's own setting (True for an array).
    seam_weight : float or "auto"
        Weight of the border term against the per-pixel term (0: independent cells);
        "auto": :func:`calibrate_seam_weight` on these cells.
    candidates : int
        Tiles considered per cell (its best by the per-pixel term).
    sweeps : int
        Most ICM sweeps.
    max_distinct : int, optional
        Most distinct tiles per screen (NES: :data:`NES_MAX_DISTINCT`).
    texture_weight : float
        Weight of the texture term (≥ 0; 0: per-pixel error only).

    Returns
    -------
    ids : ndarray, shape (R, C) or (S, R, C), int64
    orientations : ndarray, same shape, uint8 — bit 0 H, bit 1 V (0 when flips are off);
        the cell shows ``flip_tile(tiles[id], ORIENTATIONS[orientation])``.
    """
    prob = _Problem.build(cells, dictionary, flips=flips, candidates=candidates,
                          texture_weight=texture_weight)
    if max_distinct is not None and max_distinct < 1:
        raise ValueError(f"max_distinct must be >= 1, got {max_distinct}")
    lam = _check_seam_weight(seam_weight, prob, sweeps)
    v = prob.solve(lam, sweeps)
    if max_distinct is not None:
        for si in range(prob.screens):
            keep = _limit_distinct(v[si] // prob.nflip, prob.src[si], prob.var, prob.allowed,
                                   prob.nflip, max_distinct)
            if keep is not None:
                sub = _Problem(prob.src[si:si + 1], prob.var, prob.allowed
                               & np.repeat(keep, prob.nflip), prob.nflip, candidates,
                               texture_weight=prob.texture_weight)
                v[si] = sub.solve(lam, sweeps)[0]
    ids, o = v // prob.nflip, (v % prob.nflip).astype(np.uint8)
    return (ids[0], o[0]) if prob.single else (ids, o)


#: seam weights tried by :func:`calibrate_seam_weight`, smallest first
SEAM_WEIGHTS = (0.0, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6)
#: :func:`calibrate_seam_weight` stops at the first weight whose rebuilt ratio is at most the
#: target ratio × (1 + this): every step up the ladder flattens the art a little more
SEAM_TOLERANCE = 0.05


def calibrate_seam_weight(cells: np.ndarray, dictionary: Union[Dictionary, np.ndarray], *,
                          flips: Optional[bool] = None, candidates: int = 8, sweeps: int = 8,
                          weights: Sequence[float] = SEAM_WEIGHTS,
                          texture_weight: float = TEXTURE_WEIGHT,
                          target_ratio: Optional[float] = None,
                          tolerance: float = SEAM_TOLERANCE) -> dict:
    """The smallest seam weight whose rebuilt screens' seams are no stronger than the cells'.

    Rebuilding each cell on its own makes borders rougher than the screen's (the errors of
    neighbouring cells do not agree), while a large weight smooths the art away.  The screens
    being rebuilt say how strong their seams should be: the ratio of the mean ΔE76 between
    pixels that touch across tile borders to that between neighbouring pixels inside tiles
    (the generator learned it from real screens; better, give the real screens' ratio as
    ``target_ratio``).  This tries ``weights`` in order and keeps the first whose rebuilt
    screens' ratio is at most the target × (1 + ``tolerance``) (the largest if none is).

    Parameters
    ----------
    cells, dictionary, flips, candidates, sweeps, texture_weight
        As for :func:`assign`.
    weights : sequence of float
        Weights to try, ascending.
    target_ratio : float, optional
        The border/interior ratio to reach instead of the cells' own: real screens' ratio, when
        the screens being rebuilt are generated ones (:func:`seam_ratio` of real screens).
    tolerance : float
        How far above the target the rebuilt ratio may stay (a share, ≥ 0).

    Returns
    -------
    dict: ``seam_weight``, ``source_ratio`` (border / interior ΔE76 of ``cells``; inf when
    their tiles are flat inside), ``target_ratio`` (the ratio aimed at) and ``tried``: list of
    (weight, rebuilt ratio).
    """
    prob = _Problem.build(cells, dictionary, flips=flips, candidates=candidates,
                          texture_weight=texture_weight)
    return prob.calibrate(weights, sweeps, target_ratio, tolerance)


def parse_seam_weight(value: Union[float, str]) -> Union[float, str]:
    """``"auto"`` or a finite number >= 0, given as a number or as text (a config value, a
    command-line option) -> ``"auto"`` or float.

    Raises ValueError, naming ``seam_weight``, for anything else.

    >>> parse_seam_weight(" Auto "), parse_seam_weight("0.2"), parse_seam_weight(1)
    ('auto', 0.2, 1.0)
    """
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return "auto"
        try:
            v = float(text)
        except ValueError:
            v = float("nan")
    elif isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        v = float(value)
    else:
        v = float("nan")
    if not 0 <= v < float("inf"):
        raise ValueError(f"seam_weight must be 'auto' or a number >= 0, got {value!r}")
    return v


def _check_seam_weight(seam_weight, prob: "_Problem", sweeps: int) -> float:
    lam = parse_seam_weight(seam_weight)
    if lam == "auto":
        return prob.calibrate(SEAM_WEIGHTS, sweeps, None, SEAM_TOLERANCE)["seam_weight"]
    return float(lam)


class _Problem:
    """Cells, dictionary variants, each cell's candidates and the border tables between them."""

    def __init__(self, src: np.ndarray, var: np.ndarray, allowed: np.ndarray, nflip: int,
                 candidates: int, single: bool = False, texture_weight: float = TEXTURE_WEIGHT):
        if not 0 <= texture_weight < float("inf"):
            raise ValueError(f"texture_weight must be a number >= 0, got {texture_weight!r}")
        self.src, self.var, self.allowed, self.nflip = src, var, allowed, nflip
        self.single = single
        self.texture_weight = float(texture_weight)
        s, r, c = src.shape[:3]
        self.screens = s
        m = max(1, min(candidates, int(allowed.sum())))
        self._var_inner: Optional[np.ndarray] = _inner_de(var) if self.texture_weight else None
        cand, unary = _top_candidates(src, var, allowed, m, self.texture_weight,
                                      self._var_inner)
        self.cand = cand.reshape(s, r, c, m)
        self.unary = unary.reshape(s, r, c, m)
        self.h = self.v = None
        if r * c > 1 and m > 1:
            self.h, self.v = _pair_tables(var, self.cand)

    @classmethod
    def build(cls, cells, dictionary, *, flips: Optional[bool], candidates: int,
              texture_weight: float = TEXTURE_WEIGHT) -> "_Problem":
        cells = np.asarray(cells)
        single = cells.ndim == 5
        if single:
            cells = cells[None]
        if cells.dtype != np.uint8 or cells.ndim != 6 or cells.shape[-1] != 4 \
                or cells.shape[3] != cells.shape[4]:
            raise ValueError(f"cells must be uint8 (R, C, T, T, 4) or (S, R, C, T, T, 4), "
                             f"got {cells.dtype} {cells.shape}")
        if candidates < 1:
            raise ValueError(f"candidates must be >= 1, got {candidates}")
        tiles = _as_tiles(dictionary)
        if flips is None:
            flips = dictionary.flips if isinstance(dictionary, Dictionary) else True
        if tiles.shape[1] != cells.shape[3]:
            raise ValueError(f"dictionary tiles are {tiles.shape[1]} px but cells are "
                             f"{cells.shape[3]} px")
        s, r, c, t = cells.shape[:4]
        if s * r * c == 0:
            raise ValueError(f"cells has no cells: shape {cells.shape}")
        nflip = 4 if flips else 1
        flat = _clear_transparent(cells.reshape(s * r * c, t, t, 4))
        (ic, it), _, table = _colour_table(flat, tiles)
        src = table[ic].reshape((s, r, c) + table[ic].shape[1:])           # (S, R, C, T, T, ch)
        var = _variants(table[it], nflip).reshape((-1,) + src.shape[3:])  # (V, T, T, ch)
        return cls(src, var, ~_redundant_variants(it, nflip), nflip, candidates, single,
                   texture_weight)

    def solve(self, lam: float, sweeps: int) -> np.ndarray:
        """Chosen variant id of every cell (S, R, C)."""
        if self.h is None or lam == 0:
            cur = np.zeros(self.cand.shape[:3], np.int64)
        else:
            cur = _icm(self.unary, self.h, self.v, lam, sweeps)
        return np.take_along_axis(self.cand, cur[..., None], 3)[..., 0]

    def seams(self, chosen: Optional[np.ndarray] = None) -> tuple[float, float]:
        """(border, interior): mean ΔE76 between 4-neighbour pixels across tile borders and
        inside tiles, of the source cells or of a solution's tiles (variant ids (S, R, C))."""
        if chosen is None:
            strip = functools.partial(_side, self.src)
            inner = _inner_de(self.src).ravel()
        else:
            def strip(side: str) -> np.ndarray:
                return _side(self.var, side)[chosen]
            if self._var_inner is None:
                self._var_inner = _inner_de(self.var)
            inner = self._var_inner[chosen].ravel()
        d = [strip("right")[:, :, :-1] - strip("left")[:, :, 1:],
             strip("bottom")[:, :-1] - strip("top")[:, 1:]]
        de = np.concatenate([np.sqrt((x * x).sum(-1)).ravel() for x in d])
        return (float(de.mean()) if de.size else 0.0), float(inner.mean())

    def calibrate(self, weights: Sequence[float], sweeps: int,
                  target_ratio: Optional[float] = None, tolerance: float = 0.0) -> dict:
        if not 0 <= tolerance < float("inf"):
            raise ValueError(f"tolerance must be a number >= 0, got {tolerance!r}")
        border, inner = self.seams()
        source = border / inner if inner > 0 else np.inf
        target = source if target_ratio is None else float(target_ratio)
        tried = []
        for lam in weights:
            b, i = self.seams(self.solve(lam, sweeps))
            tried.append((float(lam), b / i if i > 0 else np.inf))
            if b <= target * (1 + tolerance) * i or self.h is None:
                break
        return {"seam_weight": tried[-1][0], "source_ratio": float(source),
                "target_ratio": float(target), "tried": tried}


def _inner_de(a: np.ndarray) -> np.ndarray:
    """Mean ΔE76 between 4-neighbour pixels inside each tile: (..., T, T, ch) -> (...)."""
    t = a.shape[-2]
    dx = np.sqrt(((a[..., :, 1:, :] - a[..., :, :-1, :]) ** 2).sum(-1)).sum((-1, -2))
    dy = np.sqrt(((a[..., 1:, :, :] - a[..., :-1, :, :]) ** 2).sum(-1)).sum((-1, -2))
    return (dx + dy) / max(2 * t * (t - 1), 1)


def _redundant_variants(it: np.ndarray, nflip: int) -> np.ndarray:
    """(K*nflip,) bool: a flipped form equal to an earlier form of the same tile."""
    k = len(it)
    red = np.zeros((k, nflip), bool)
    forms = [flip_tile(it[..., None], o)[..., 0].reshape(k, -1) for o in ORIENTATIONS[:nflip]]
    for f in range(1, nflip):
        for g in range(f):
            red[:, f] |= (forms[f] == forms[g]).all(1)
    return red.ravel()


def _unary(src: np.ndarray, var: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Mean ΔE76² per pixel of every cell (S, R, C, ...) to every allowed variant; (n, V)."""
    t = src.shape[3]
    x = src.reshape(-1, var[0].size)
    cv = var.reshape(len(var), -1)
    d = _sqdist(x, (x * x).sum(1), cv, (cv * cv).sum(1)) / (t * t)
    d[:, ~allowed] = np.inf
    return d


def _top_candidates(src: np.ndarray, var: np.ndarray, allowed: np.ndarray, m: int,
                    texture_weight: float = 0.0, var_inner: Optional[np.ndarray] = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's ``m`` best allowed variants by the unary term (per-pixel error plus
    ``texture_weight`` × squared texture difference), best first; ``var_inner`` is
    :func:`_inner_de` of ``var`` when the caller has it.

    Returns (variant ids (n, m) int64, unary cost (n, m) float32)."""
    x = src.reshape(-1, var[0].size)
    n = len(x)
    cand = np.empty((n, m), np.int64)
    cost = np.empty((n, m), np.float32)
    if texture_weight:
        tex_src = _inner_de(src.reshape((n,) + src.shape[3:])).astype(np.float32)
        tex_var = (_inner_de(var) if var_inner is None else var_inner).astype(np.float32)
    for s, e in _chunks(n, len(var)):
        d = _unary(x[s:e].reshape((e - s, 1, 1) + src.shape[3:]), var, allowed)
        if texture_weight:
            d += texture_weight * (tex_src[s:e, None] - tex_var[None, :]) ** 2
        part = np.argpartition(d, m - 1, axis=1)[:, :m] if m < d.shape[1] else \
            np.broadcast_to(np.arange(d.shape[1]), d.shape).copy()
        pd = np.take_along_axis(d, part, 1)
        o = np.lexsort((part, pd), axis=-1)                    # by cost, ties by variant id
        cand[s:e] = np.take_along_axis(part, o, 1)
        cost[s:e] = np.take_along_axis(pd, o, 1)
    return cand, cost


def _side(a: np.ndarray, side: str) -> np.ndarray:
    """Border strip (..., T, ch) of tiles (..., T, T, ch): right, left, bottom or top."""
    return {"right": a[..., :, -1, :], "left": a[..., :, 0, :],
            "bottom": a[..., -1, :, :], "top": a[..., 0, :, :]}[side]


def _pair_tables(var: np.ndarray, cand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Border cost of every candidate pair of every pair of neighbouring cells.

    ``h[s, r, c, i, j]``: candidate i of cell (r, c) left of candidate j of (r, c + 1);
    ``v[s, r, c, i, j]``: candidate i of (r, c) above candidate j of (r + 1, c); each the mean
    ΔE76² over the T pairs of pixels that touch across the border.
    """
    t = var.shape[1]

    def strips(side: str) -> np.ndarray:
        return _side(var, side)[cand].reshape(cand.shape + (-1,))        # (S, R, C, M, T*ch)

    def table(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ab = a @ np.swapaxes(b, -1, -2)
        out = (a * a).sum(-1)[..., :, None] + (b * b).sum(-1)[..., None, :] - 2.0 * ab
        return np.maximum(out, 0.0) / t

    h = table(strips("right")[:, :, :-1], strips("left")[:, :, 1:])
    v = table(strips("bottom")[:, :-1], strips("top")[:, 1:])
    return h.astype(np.float32), v.astype(np.float32)


def _icm(unary: np.ndarray, h: np.ndarray, v: np.ndarray, lam: float, sweeps: int) -> np.ndarray:
    """Iterated conditional modes, a checkerboard half of the cells at a time.

    unary (S, R, C, M); h, v pair tables (see :func:`_pair_tables`).  Starts from every
    cell's best unary candidate; each update lowers the total energy, so it stops at a local
    minimum or after ``sweeps`` sweeps.  Returns the chosen candidate index (S, R, C).
    """
    s, r, c, m = unary.shape
    cur = np.zeros((s, r, c), np.int64)
    if lam == 0 or r * c == 1:
        return cur
    yy, xx = np.meshgrid(np.arange(r), np.arange(c), indexing="ij")
    for _ in range(sweeps):
        changed = False
        for parity in (0, 1):
            cost = unary.copy()
            idx = cur[..., None, None]
            cost[:, :, 1:] += lam * np.take_along_axis(h, idx[:, :, :-1], 3)[:, :, :, 0]
            cost[:, :, :-1] += lam * np.take_along_axis(h, idx[:, :, 1:], 4)[..., 0]
            cost[:, 1:] += lam * np.take_along_axis(v, idx[:, :-1], 3)[:, :, :, 0]
            cost[:, :-1] += lam * np.take_along_axis(v, idx[:, 1:], 4)[..., 0]
            best = cost.argmin(3)
            sel = ((yy + xx) % 2 == parity)[None]
            new = np.where(sel, best, cur)
            changed |= bool((new != cur).any())
            cur = new
        if not changed:
            break
    return cur


def _limit_distinct(ids: np.ndarray, src: np.ndarray, var: np.ndarray, allowed: np.ndarray,
                    nflip: int, limit: int) -> Optional[np.ndarray]:
    """Tiles one screen may keep (bool (K,)), or None when it already uses at most ``limit``.

    Greedy: repeatedly drop the used tile whose cells lose least (per-pixel term) by moving
    to their best remaining used tile.
    """
    used = np.unique(ids)
    if len(used) <= limit:
        return None
    k = len(var) // nflip
    per_tile = _unary(src, var, allowed).reshape(-1, k, nflip).min(2)      # (cells, K)
    cur = ids.ravel().copy()
    keep = list(int(u) for u in used)
    while len(keep) > limit:
        sub = per_tile[:, keep]                                           # (cells, |keep|)
        rows = np.arange(len(cur))
        pos = np.searchsorted(keep, cur)
        own = sub[rows, pos]
        sub[rows, pos] = np.inf                                           # best other tile
        loss = np.bincount(pos, weights=sub.min(1) - own, minlength=len(keep))
        drop = keep.pop(int(np.argmin(loss)))
        moved = cur == drop
        cur[moved] = np.array(keep)[per_tile[moved][:, keep].argmin(1)]
    out = np.zeros(k, bool)
    out[keep] = True
    return out


# --------------------------------------------------------------------------- screens
def grid_tiles(image: np.ndarray, tile_size: int) -> np.ndarray:
    """Cut an image (H, W, 4) into its grid of tiles (H/T, W/T, T, T, 4).

    Raises ValueError when a side is not a multiple of ``tile_size`` (crop or pad first).
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 4:
        raise ValueError(f"image must be RGBA (H, W, 4), got {image.shape}")
    h, w = image.shape[:2]
    t = tile_size
    if h % t or w % t or h == 0 or w == 0:
        raise ValueError(f"image size {w}x{h} is not a positive multiple of the tile size {t}; "
                         f"crop or pad it first")
    return image.reshape(h // t, t, w // t, t, 4).transpose(0, 2, 1, 3, 4)


def render(tiles: np.ndarray, ids: np.ndarray, orientations: np.ndarray) -> np.ndarray:
    """Draw a screen: tile ``ids`` (R, C) in ``orientations`` (R, C) -> image (R*T, C*T, ch)."""
    tiles = np.asarray(tiles)
    ids = np.asarray(ids, np.int64)
    o = np.asarray(orientations, np.int64)
    if ids.shape != o.shape or ids.ndim != 2:
        raise ValueError(f"ids and orientations must be equal 2-D grids, got {ids.shape} "
                         f"and {o.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= len(tiles)):
        raise ValueError(f"ids must lie in 0..{len(tiles) - 1}")
    return join_grid(flip_variants(tiles)[ids, o])                    # (R, C, T, T, ch) joined


def rebuild(images: Sequence[np.ndarray], dictionary: Dictionary, *,
            seam_weight: Union[float, str] = "auto", max_distinct: Optional[int] = None,
            candidates: int = 8, sweeps: int = 8, texture_weight: float = TEXTURE_WEIGHT
            ) -> list[np.ndarray]:
    """Rebuild screens from a dictionary: one Tiled map (uint32 id | flip bits) per image.

    Parameters
    ----------
    images : sequence of ndarray, shape (H, W, 4), uint8
        Sides multiples of the dictionary's tile size.
    dictionary : Dictionary

    Returns
    -------
    list of ndarray, shape (H/T, W/T), uint32 — Tiled cells (:mod:`tilesets.cells`);
    ``render(tiles, *decode_cells(map))`` draws one.
    """
    t = dictionary.tiles.shape[1]
    grids = [grid_tiles(im, t) for im in images]
    out: list[Optional[np.ndarray]] = [None] * len(grids)
    by_shape: dict[tuple, list[int]] = {}
    for i, g in enumerate(grids):
        by_shape.setdefault(g.shape[:2], []).append(i)
    for shape, members in sorted(by_shape.items()):
        ids, codes = assign(np.stack([grids[i] for i in members]), dictionary,
                            seam_weight=seam_weight, max_distinct=max_distinct,
                            candidates=candidates, sweeps=sweeps, texture_weight=texture_weight)
        for j, i in enumerate(members):
            out[i] = encode_cells(ids[j], codes[j])
    return out  # type: ignore[return-value]


# --------------------------------------------------------------------------- measures
def mean_delta_e(a: np.ndarray, b: np.ndarray) -> float:
    """Mean ΔE76 per pixel between two RGBA arrays of equal shape (alpha as in the notes)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    (ia, ib), _, table = _colour_table(a.reshape(-1, 1, 1, 4), b.reshape(-1, 1, 1, 4))
    d = table[ia] - table[ib]
    return float(np.sqrt((d * d).sum(-1)).mean())


def isolated_rate(tiles: np.ndarray) -> float:
    """Share of pixels unlike all their in-tile 8-neighbours, over (N, T, T, C) uint8 tiles."""
    tiles = np.asarray(tiles)
    if len(tiles) == 0:
        return 0.0
    code = pack_colours(tiles).astype(np.int64)
    return float(_isolated(code).mean())


def seam_ratio(images: Sequence[np.ndarray], tile_size: int) -> dict:
    """Mean ΔE76 between 4-neighbour pixels across tile borders, inside tiles, and their ratio.

    Parameters
    ----------
    images : sequence of ndarray, shape (H, W, 3|4), uint8 (sides multiples of ``tile_size``)

    Returns
    -------
    dict: ``border``, ``interior``, ``ratio`` (border / interior; 1 = borders as smooth as the
    inside of tiles).
    """
    sums = {"border": [0.0, 0], "interior": [0.0, 0]}
    by_shape: dict[tuple, list[np.ndarray]] = {}
    for im in images:                         # same-sized images in one batch, colours once
        im = np.asarray(im)
        by_shape.setdefault(im.shape[:2], []).append(im[..., :3])
    for shape, group in sorted(by_shape.items()):
        lab = lab_of_pixels(np.stack(group)).astype(np.float32)               # (S, H, W, 3)
        for axis in (1, 2):
            d = np.sqrt(((np.diff(lab, axis=axis)) ** 2).sum(-1))
            pos = np.arange(1, shape[axis - 1]) % tile_size == 0    # pair (i-1, i) crosses
            sel = pos[None, :, None] if axis == 1 else pos[None, None, :]
            sel = np.broadcast_to(sel, d.shape)
            sums["border"][0] += float(d[sel].sum(dtype=np.float64))
            sums["border"][1] += int(sel.sum())
            sums["interior"][0] += float(d[~sel].sum(dtype=np.float64))
            sums["interior"][1] += int((~sel).sum())
    b = sums["border"][0] / max(sums["border"][1], 1)
    i = sums["interior"][0] / max(sums["interior"][1], 1)
    return {"border": b, "interior": i, "ratio": b / i if i > 0 else float("nan")}
