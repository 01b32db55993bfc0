"""Terrain brushes for Tiled: materials inferred from the tiles' pixels, as a corner Wang set.

Tiled paints terrain with *Wang sets*: each tile says which terrain ("Wang colour") covers each
of its corners, and the terrain brush picks, cell by cell, a tile whose corners match the
corners the designer painted.  Setting those labels up by hand is slow; here they come from the
tiles themselves and from how the tiles sit together in the rebuilt screens:

1. **Quadrants.**  Every tile is cut into its four T/2 x T/2 quadrants (top-left, top-right,
   bottom-right, bottom-left), one per corner.  Each quadrant is described by its mean colour
   in CIELAB, its lightness spread and its edge density (the share of neighbouring pixel pairs
   whose colours visibly differ), and weighted by how many map cells use its tile.
2. **Materials.**  The quadrants are clustered with weighted k-means (k-means++ seeding, fixed
   seed).  The number of materials k is the first k in ``min_materials..max_materials`` after
   which one more cluster lowers the distortion by less than ``elbow`` (default: 25 %), or
   whose clusters are already tighter than ``tight`` (4 ΔE root-mean-square).
3. **Adjacency.**  In a corner Wang set the four cells around a grid vertex must agree on that
   vertex's terrain.  Each quadrant therefore also looks at the quadrants it meets at the
   vertices of the rebuilt screens (flips taken into account): a quadrant about equally close
   to two materials joins the one its neighbours have (``smoothing`` in feature units, ΔE).
4. **Terrains.**  A material becomes a terrain (a ``<wangcolor>``) only if at least one tile
   is filled with it (all four corners), so the brush can paint its inside.  Quadrants of a
   material without a fill tile (ground under a strip of grass) join the nearest terrain when
   it is close (``reassign_distance``); otherwise their tiles stay out of the set.  Tiles whose four
   corners are all terrains are the Wang tiles; tiles with two or more terrains are the
   transitions.  Each terrain is named from its most distinctive colour (frequent in it,
   rarer in the others), looked up in a small colour table over Lab ("sky blue", "dark
   green", "brown"), and its texture ("flat", "striped", "textured": "dark green foliage",
   "brown brick", "black void"), and its representative tile is its most used fill tile.

Why a corner set: terrains are areas (sky, ground, foliage) and a tile between two areas is
described by which area each of its corners lies in — exactly Tiled's corner type.  An edge set
labels the middles of the sides (for paths, fences and pipes: lines, not areas); a mixed set
needs all eight labels and many more tiles to be complete.

The ``wangid`` Tiled stores (since 1.5) has eight entries — top, top-right, right,
bottom-right, bottom, bottom-left, left, top-left — with 0 for "unset"; a corner set fills the
odd (corner) entries with 1-based Wang colour indices.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence, Union

import numpy as np

from palettes.colour import srgb_to_lab
from tilesets.pixels import lab_of_pixels
from tilesets.tiled import xml_escape

__all__ = ["Terrain", "TerrainSet", "TerrainRules", "infer_terrains", "wangsets_xml",
           "quadrant_features", "colour_name", "corner_fill", "CORNERS"]

#: Corner order used throughout: top-left, top-right, bottom-right, bottom-left.
CORNERS = ("top-left", "top-right", "bottom-right", "bottom-left")
#: Position of each corner (in CORNERS order) in Tiled's 8-entry wangid.
_WANGID_SLOT = (7, 1, 3, 5)

_H_BIT = 1 << 31
_V_BIT = 1 << 30
_D_BIT = 1 << 29
_ID_MASK = (1 << 29) - 1
#: The flips a tileset with ``<transformations hflip="1" vflip="1">`` lets Tiled's brush use
#: (none, H, V, HV: :data:`tilesets.cells.ORIENTATIONS`' order), as map-cell flip bits, and
#: which stored corner (CORNERS order) each shows at each corner.
_FLIP_BITS = (0, _H_BIT, _V_BIT, _H_BIT | _V_BIT)
_FLIP_CORNERS = ((0, 1, 2, 3), (1, 0, 3, 2), (3, 2, 1, 0), (2, 3, 0, 1))

# (name, sRGB) reference colours for naming terrains (nearest in Lab)
_COLOUR_TABLE = (
    ("black", (0, 0, 0)), ("dark grey", (70, 70, 70)), ("grey", (128, 128, 128)),
    ("light grey", (190, 190, 190)), ("white", (250, 250, 250)),
    ("red", (200, 30, 30)), ("dark red", (110, 20, 25)), ("rust", (185, 80, 25)),
    ("orange", (235, 130, 30)),
    ("brown", (125, 75, 35)), ("dark brown", (70, 40, 20)), ("tan", (200, 160, 110)),
    ("yellow", (235, 215, 50)), ("olive", (120, 120, 30)), ("green", (50, 170, 50)),
    ("dark green", (20, 80, 30)), ("light green", (150, 220, 120)), ("teal", (20, 140, 140)),
    ("dark teal", (15, 60, 70)), ("cyan", (80, 220, 230)), ("sky blue", (100, 160, 250)),
    ("blue", (40, 70, 210)), ("dark blue", (30, 40, 110)), ("navy", (20, 25, 70)),
    ("slate", (75, 85, 115)), ("purple", (120, 50, 170)),
    ("dark purple", (55, 25, 75)), ("lavender", (170, 140, 230)), ("magenta", (210, 50, 180)),
    ("pink", (240, 150, 190)),
)
_TABLE_LAB = srgb_to_lab(np.array([c for _, c in _COLOUR_TABLE], np.uint8))
_FAMILY = {"green": "foliage", "dark green": "foliage", "light green": "foliage",
           "olive": "foliage", "brown": "brick", "dark brown": "brick", "red": "brick",
           "dark red": "brick", "rust": "brick", "orange": "brick", "tan": "brick", "grey": "stone",
           "dark grey": "stone", "light grey": "stone"}


@dataclass(frozen=True)
class TerrainRules:
    """Options of :func:`infer_terrains`.

    Attributes
    ----------
    min_materials, max_materials : int
        Range of the number of materials (k-means clusters) tried.
    elbow : float
        Stop at the first k where one more cluster lowers the distortion by less than this share.
    texture_weight : float
        Weight of the texture features (lightness spread, 40 x edge density) against the Lab
        mean in the clustering distance.
    smoothing : float
        How much agreement with the quadrants met at map vertices counts, in ΔE: a quadrant
        joins its neighbours' material when that one is at most this much farther.
    reassign_distance : float
        A quadrant whose material has no fill tile (say, ground under a strip of grass) joins
        the nearest terrain when that terrain's centre is at most this far (clustering units,
        about ΔE), or at most twice as far but no more than half as far as the second nearest
        terrain; otherwise its tile stays out of the Wang set.
    tight : float
        Clusters whose root-mean-square spread is already at most this (ΔE) are not split.
    max_distance : float
        A quadrant farther than this from every material centre (a rare colour the clustering
        absorbed into a big material) gets no material, so its tile stays out of the set.
    pixel_tolerance : float
        ΔE76 above which neighbouring pixels count as an edge.
    seed : int
    """

    min_materials: int = 2
    max_materials: int = 8
    elbow: float = 0.25
    texture_weight: float = 0.5
    smoothing: float = 6.0
    reassign_distance: float = 25.0
    tight: float = 4.0
    max_distance: float = 50.0
    pixel_tolerance: float = 3.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.min_materials <= self.max_materials <= 32:
            raise ValueError(f"need 1 <= min_materials <= max_materials <= 32, got "
                             f"{self.min_materials}..{self.max_materials}")
        if not 0.0 <= self.elbow < 1.0:
            raise ValueError(f"elbow must be in [0, 1), got {self.elbow}")
        if min(self.texture_weight, self.smoothing, self.reassign_distance, self.tight,
               self.max_distance, self.pixel_tolerance) < 0:
            raise ValueError("texture_weight, smoothing, reassign_distance, tight, max_distance "
                             "and pixel_tolerance must be >= 0")


@dataclass(frozen=True)
class Terrain:
    """One terrain (a Wang colour).

    Attributes
    ----------
    index : int
        1-based Wang colour index (as in ``wangid``).
    name : str
        Readable name, e.g. "sky blue" or "dark green foliage" (unique in the set).
    colour : tuple of int
        The sRGB colour that marks its quadrants out from the other terrains' (frequent there,
        rarer elsewhere; weighted by use): the swatch Tiled shows and the colour it is named
        after.
    texture : str
        "flat", "striped" or "textured".
    tile : int
        Representative tile (its most used fill tile).
    fill_tiles : tuple of int
        Tiles with this terrain at all four corners.
    share : float
        Share of the (use-weighted) quadrants labelled with it.
    """

    index: int
    name: str
    colour: tuple
    texture: str
    tile: int
    fill_tiles: tuple
    share: float


@dataclass(frozen=True)
class TerrainSet:
    """Terrains inferred for a tile dictionary, ready to become a Tiled corner Wang set.

    Attributes
    ----------
    name : str
        Name of the Wang set.
    terrains : tuple of Terrain
    corners : ndarray, shape (K, 4), int64
        Terrain index (1-based) of each tile's corners in :data:`CORNERS` order, 0 where the
        corner's material is not a terrain or the quadrant is transparent.
    materials : ndarray, shape (K, 4), int64
        The material (cluster, 0-based) of every quadrant, -1 for transparent ones.
    wang_tiles : tuple of int
        Tiles whose four corners are all terrains (written as ``<wangtile>``), ascending.
    tile : int
        The tile that represents the whole set (its most used transition tile, else the first
        terrain's tile; -1 when there is no terrain).
    vertex_agreement : float
        Share of the rebuilt screens' grid vertices whose touching quadrants all carry one
        material: how well corner labels describe the screens (1.0 = perfectly).
    k_curve : tuple of float
        Distortion for k = 1, 2, ... (the curve the material count was read from).
    """

    name: str
    terrains: tuple
    corners: np.ndarray
    materials: np.ndarray
    wang_tiles: tuple
    tile: int
    vertex_agreement: float
    k_curve: tuple = field(default=())

    @property
    def transitions(self) -> tuple:
        """Wang tiles with two or more terrains."""
        return tuple(i for i in self.wang_tiles if len(set(self.corners[i].tolist())) > 1)

    def patterns(self, *, flips: bool = False) -> set:
        """The corner patterns (CORNERS order) the Wang tiles show; with ``flips``, also as
        drawn flipped horizontally, vertically or both (a tileset whose
        ``<transformations>`` allow flips)."""
        perms = _FLIP_CORNERS if flips else _FLIP_CORNERS[:1]
        return {tuple(int(self.corners[i, p]) for p in perm) for i in self.wang_tiles
                for perm in perms}

    def coverage(self, *, flips: bool = False) -> dict:
        """For every pair of terrains, the share of the 14 mixed corner patterns that have a
        Wang tile (1.0: the brush can draw any boundary between the two); with ``flips``,
        flipped Wang tiles count too (see :meth:`patterns`)."""
        have = self.patterns(flips=flips)
        out = {}
        idx = [t.index for t in self.terrains]
        for a in idx:
            for b in idx:
                if a < b:
                    combos = [(a if m & 1 else b, a if m & 2 else b, a if m & 4 else b,
                               a if m & 8 else b) for m in range(1, 15)]
                    out[(a, b)] = sum(c in have for c in combos) / 14.0
        return out

    def wangid(self, tile: int) -> list[int]:
        """Tiled's 8-entry wangid of ``tile`` (corners in the odd slots)."""
        out = [0] * 8
        for c, slot in enumerate(_WANGID_SLOT):
            out[slot] = int(self.corners[tile, c])
        return out


# --------------------------------------------------------------------------- features
def _quadrants(tiles: np.ndarray) -> np.ndarray:
    """(K, T, T, C) -> (K, 4, T/2, T/2, C) in CORNERS order."""
    t = tiles.shape[1]
    h = t // 2
    return np.stack([tiles[:, :h, :h], tiles[:, :h, h:2 * h], tiles[:, h:2 * h, h:2 * h],
                     tiles[:, h:2 * h, :h]], axis=1)


def quadrant_features(tiles: np.ndarray, *, pixel_tolerance: float = 3.0
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Colour and texture of every tile quadrant.

    Parameters
    ----------
    tiles : ndarray, shape (K, T, T, 4|3), uint8
    pixel_tolerance : float
        ΔE76 above which two neighbouring pixels count as an edge.

    Returns
    -------
    features : ndarray, shape (K, 4, 7), float64
        Per quadrant (CORNERS order): L, a, b (mean over opaque pixels), the standard deviation
        of L, the edge density (share of visibly different neighbour pairs), and the shares of
        horizontal-neighbour and vertical-neighbour edges (for stripes).
    opaque : ndarray, shape (K, 4), bool
        Quadrants with at least half of their pixels opaque.
    """
    tiles = np.asarray(tiles)
    if tiles.dtype != np.uint8 or tiles.ndim != 4 or tiles.shape[1] != tiles.shape[2] \
            or tiles.shape[-1] not in (3, 4) or tiles.shape[1] < 2:
        raise ValueError(f"tiles must be uint8 (K, T, T, 3|4) with T >= 2, got "
                         f"{tiles.dtype} {tiles.shape}")
    q = _quadrants(tiles)                                   # (K, 4, h, h, C)
    k = len(tiles)
    alpha = q[..., 3] >= 128 if tiles.shape[-1] == 4 else np.ones(q.shape[:-1], bool)
    lab = lab_of_pixels(q[..., :3])          # (K, 4, h, h, 3)
    w = alpha.astype(np.float64)
    n = np.maximum(w.sum((2, 3)), 1.0)
    mean = (lab * w[..., None]).sum((2, 3)) / n[..., None]
    var = (((lab[..., 0] - mean[..., 0, None, None]) ** 2) * w).sum((2, 3)) / n
    dh = np.sqrt(((lab[:, :, :, 1:] - lab[:, :, :, :-1]) ** 2).sum(-1)) > pixel_tolerance
    dv = np.sqrt(((lab[:, :, 1:] - lab[:, :, :-1]) ** 2).sum(-1)) > pixel_tolerance
    dh |= alpha[:, :, :, 1:] != alpha[:, :, :, :-1]
    dv |= alpha[:, :, 1:] != alpha[:, :, :-1]
    eh = dh.mean((2, 3))
    ev = dv.mean((2, 3))
    feats = np.concatenate([mean, np.sqrt(var)[..., None], ((eh + ev) / 2)[..., None],
                            eh[..., None], ev[..., None]], -1)
    opaque = alpha.reshape(k, 4, -1).mean(-1) >= 0.5
    return feats, opaque


def _cluster_space(feats: np.ndarray, rules: TerrainRules) -> np.ndarray:
    """Features -> the clustering space: Lab mean, and weighted lightness spread and edges."""
    w = rules.texture_weight
    return np.concatenate([feats[..., :3], w * feats[..., 3:4], w * 40.0 * feats[..., 4:5]], -1)


# --------------------------------------------------------------------------- k-means
def _kmeans(x: np.ndarray, w: np.ndarray, k: int, rng: np.random.Generator, *, iters: int = 60,
            n_init: int = 3) -> tuple[np.ndarray, np.ndarray, float]:
    """Weighted k-means (k-means++ seeding); best of ``n_init``: (centres, labels, distortion)."""
    best = None
    for _ in range(n_init):
        centres = [x[rng.choice(len(x), p=w / w.sum())]]
        for _ in range(1, k):
            d = np.min(((x[:, None] - np.array(centres)[None]) ** 2).sum(-1), 1) * w
            if d.sum() <= 0:
                break
            centres.append(x[rng.choice(len(x), p=d / d.sum())])
        c = np.array(centres)
        for _ in range(iters):
            d = ((x[:, None] - c[None]) ** 2).sum(-1)
            lab = d.argmin(1)
            new = np.array([(x[lab == j] * w[lab == j, None]).sum(0) / w[lab == j].sum()
                            if w[lab == j].sum() > 0 else c[j] for j in range(len(c))])
            if np.allclose(new, c):
                break
            c = new
        d = ((x[:, None] - c[None]) ** 2).sum(-1)
        lab = d.argmin(1)
        sse = float((d[np.arange(len(x)), lab] * w).sum())
        if best is None or sse < best[2] - 1e-9:
            best = (c, lab, sse)
    return best


def _choose_k(x: np.ndarray, w: np.ndarray, rules: TerrainRules
              ) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Cluster for k = 1.. and keep the first k after which the next one gains < elbow."""
    n_distinct = len(np.unique(np.round(x, 6), axis=0))
    top = min(rules.max_materials, n_distinct)
    fits = {}
    curve = []
    for k in range(1, top + 2):
        if k > n_distinct:
            break
        fits[k] = _kmeans(x, w, k, np.random.default_rng(rules.seed + k))
        curve.append(fits[k][2])
    chosen = min(max(rules.min_materials, 1), top)
    tight_sse = rules.tight ** 2 * float(w.sum())
    for k in range(max(rules.min_materials, 1), top + 1):
        chosen = k
        if k + 1 not in fits or fits[k][2] <= tight_sse:
            break
        if fits[k + 1][2] > (1.0 - rules.elbow) * fits[k][2]:
            break
    c, lab, _ = fits[chosen]
    return c, lab, tuple(curve)


# --------------------------------------------------------------------------- adjacency
def _decode(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Map cells -> tile ids and the H, V and D flip bits (bool arrays)."""
    c = np.asarray(cells).astype(np.uint64)
    ids = (c & np.uint64(_ID_MASK)).astype(np.int64)
    h = ((c >> np.uint64(31)) & np.uint64(1)).astype(bool)
    v = ((c >> np.uint64(30)) & np.uint64(1)).astype(bool)
    d = ((c >> np.uint64(29)) & np.uint64(1)).astype(bool)
    return ids, h, v, d


def _stored_corner(shown: int, h: np.ndarray, v: np.ndarray,
                   d: Union[np.ndarray, bool] = False) -> np.ndarray:
    """Which stored quadrant a cell shows at corner ``shown`` (CORNERS order), given flips.

    Tiled draws the diagonal flip (swap x and y) first, then H, then V; undone in reverse.
    """
    top = shown in (0, 1)
    left = shown in (0, 3)
    top = np.where(v, not top, top)
    left = np.where(h, not left, left)
    top, left = np.where(d, left, top), np.where(d, top, left)
    return np.where(top, np.where(left, 0, 1), np.where(left, 3, 2))


def _vertex_groups(maps: Sequence[np.ndarray], k: int) -> list[np.ndarray]:
    """For every map vertex, the quadrant nodes (tile * 4 + corner) that meet there.

    Returns a list of int64 arrays of shape (V, 4), -1 where a cell is missing (map border).
    """
    out = []
    for cells in maps:
        ids, fh, fv, fd = _decode(cells)
        rows, cols = ids.shape
        if ids.size and (ids.min() < 0 or ids.max() >= k):
            raise ValueError(f"a map refers to tile {int(ids.max())} but there are {k} tiles")
        pad = np.full((rows + 2, cols + 2), -1, np.int64)
        node = {}
        for shown in range(4):
            n = ids * 4 + _stored_corner(shown, fh, fv, fd)
            p = pad.copy()
            p[1:-1, 1:-1] = n
            node[shown] = p
        # vertex (i, j), i in 0..rows, j in 0..cols: cells (i-1, j-1) BR, (i-1, j) BL,
        # (i, j-1) TR, (i, j) TL  (padded indices shift by one)
        br = node[2][0:rows + 1, 0:cols + 1]
        bl = node[3][0:rows + 1, 1:cols + 2]
        tr = node[1][1:rows + 2, 0:cols + 1]
        tl = node[0][1:rows + 2, 1:cols + 2]
        out.append(np.stack([tl, tr, br, bl], -1).reshape(-1, 4))
    return out


def _uses(maps: Sequence[np.ndarray], k: int) -> np.ndarray:
    uses = np.zeros(k, np.int64)
    for cells in maps:
        ids = _decode(cells)[0]
        uses += np.bincount(ids.ravel(), minlength=k)[:k]
    return uses


def _smooth(labels: np.ndarray, dist: np.ndarray, groups: list[np.ndarray], n_nodes: int,
            valid: np.ndarray, strength: float, rounds: int = 5) -> np.ndarray:
    """Relabel quadrants towards the material of the quadrants they meet at map vertices.

    cost(node, m) = distance to centre m - strength * (share of the node's vertex neighbours
    labelled m); a node keeps its label unless another is cheaper.
    """
    if strength <= 0 or not groups:
        return labels
    pairs = []
    for g in groups:
        for a in range(4):
            for b in range(4):
                if a != b:
                    ok = (g[:, a] >= 0) & (g[:, b] >= 0)
                    pairs.append(np.stack([g[ok, a], g[ok, b]], 1))
    if not pairs:
        return labels
    pr = np.concatenate(pairs)
    pr = pr[valid[pr[:, 0]] & valid[pr[:, 1]]]
    if not len(pr):
        return labels
    m = dist.shape[1]
    lab = labels.copy()
    deg = np.bincount(pr[:, 0], minlength=n_nodes).astype(np.float64)
    for _ in range(rounds):
        hist = np.zeros((n_nodes, m))
        ok = lab[pr[:, 1]] >= 0
        np.add.at(hist, (pr[ok, 0], lab[pr[ok, 1]]), 1.0)
        share = hist / np.maximum(deg, 1.0)[:, None]
        cost = dist - strength * share
        new = np.where(valid, cost.argmin(1), -1)
        if (new == lab).all():
            break
        lab = new
    return lab


def _agreement(labels: np.ndarray, groups: list[np.ndarray]) -> float:
    """Share of map vertices whose quadrants (2 or 4 of them) all carry one label."""
    agree = total = 0
    for g in groups:
        lab = np.where(g >= 0, labels[np.maximum(g, 0)], -2)
        present = g >= 0
        many = present.sum(1) >= 2
        first = np.where(present, lab, -3).max(1)
        same = np.all(~present | (lab == first[:, None]), 1)
        agree += int((same & many).sum())
        total += int(many.sum())
    return agree / total if total else 1.0


# --------------------------------------------------------------------------- names
def colour_name(rgb: Sequence[int]) -> str:
    """Nearest name in a small colour table (in CIELAB), e.g. ``(92, 148, 252) -> 'sky blue'``."""
    lab = srgb_to_lab(np.asarray(rgb, np.uint8).reshape(1, 3))[0]
    return _COLOUR_TABLE[int(((_TABLE_LAB - lab) ** 2).sum(1).argmin())][0]


def _distinctive_colours(quads: np.ndarray, w: np.ndarray, groups: Sequence[np.ndarray]
                         ) -> list[tuple]:
    """For each group of quadrants, the colour that most marks it out from the others.

    ``quads`` (N, P, C) are weighted by ``w`` (N,).  The colour of a group maximises
    ``p(c | group) * log(p(c | group) / p(c))`` (its share of the group's pixels, weighted by
    how much more often it occurs there than overall), so black outlines shared by every
    material do not name them all "black".  A single group gets its most frequent colour.
    """
    px = quads.reshape(-1, quads.shape[-1])
    wt = np.repeat(w, quads.shape[1])
    owner = np.repeat(np.arange(len(quads)), quads.shape[1])
    keep = px[:, 3] >= 128 if quads.shape[-1] == 4 else np.ones(len(px), bool)
    codes = (px[:, 0].astype(np.int64) << 16) | (px[:, 1].astype(np.int64) << 8) | px[:, 2]
    uniq, inv = np.unique(codes[keep], return_inverse=True)
    inv = inv.ravel()
    total = np.bincount(inv, weights=wt[keep], minlength=len(uniq))
    p_all = total / max(total.sum(), 1e-12)
    out = []
    for members in groups:
        sel = np.isin(owner[keep], members)
        hist = np.bincount(inv[sel], weights=wt[keep][sel], minlength=len(uniq))
        p = hist / max(hist.sum(), 1e-12)
        if len(groups) > 1:
            with np.errstate(divide="ignore", invalid="ignore"):
                score = np.where(p > 0, p * np.log(p / np.maximum(p_all, 1e-12)), -np.inf)
        else:
            score = p
        c = int(uniq[int(np.argmax(score))])
        out.append(((c >> 16) & 255, (c >> 8) & 255, c & 255))
    return out


def _texture(feats: np.ndarray, w: np.ndarray) -> str:
    """'flat', 'striped' or 'textured' from the weighted mean edge statistics (N, 7)."""
    ww = w / max(w.sum(), 1e-12)
    edge = float((feats[:, 4] * ww).sum())
    eh = float((feats[:, 5] * ww).sum())
    ev = float((feats[:, 6] * ww).sum())
    if edge < 0.08:
        return "flat"
    if max(eh, ev) > 2.5 * max(min(eh, ev), 1e-9):
        return "striped"
    return "textured"


def _terrain_name(rgb: Sequence[int], texture: str) -> str:
    colour = colour_name(rgb)
    if texture == "flat":
        return "black void" if colour == "black" else colour
    if texture == "striped":
        return f"{colour} stripes"
    noun = _FAMILY.get(colour)
    return f"{colour} {noun}" if noun else f"{colour} textured"


# --------------------------------------------------------------------------- inference
def infer_terrains(tiles: np.ndarray,
                   maps: Union[Mapping[str, np.ndarray], Sequence[np.ndarray]] = (), *,
                   rules: TerrainRules = TerrainRules(), name: str = "Terrains") -> TerrainSet:
    """Infer terrains from a tile dictionary and the screens rebuilt from it.

    Parameters
    ----------
    tiles : ndarray, shape (K, T, T, 4) or (K, T, T, 3), uint8
        The dictionary (tile ``i`` = Tiled tile id ``i``).
    maps : mapping or sequence of ndarray (rows, cols), uint32
        The rebuilt screens as map cells (low 29 bits the tile id, bit 31 horizontal flip, bit
        30 vertical flip, as in ``maps.npz``).  They weight the quadrants by use and supply the
        vertex adjacencies; may be empty (then every tile counts once and no smoothing).
    rules : TerrainRules
    name : str
        Name of the Wang set.

    Returns
    -------
    TerrainSet
    """
    tiles = np.asarray(tiles)
    map_list = list(maps.values()) if isinstance(maps, Mapping) else list(maps)
    k = len(tiles)
    feats, opaque = quadrant_features(tiles, pixel_tolerance=rules.pixel_tolerance)
    quads = _quadrants(tiles).reshape((k * 4, -1, tiles.shape[-1]))     # (K*4, P, C)
    if k == 0 or not opaque.any():
        return TerrainSet(name, (), np.zeros((k, 4), np.int64), np.full((k, 4), -1, np.int64),
                          (), -1, 1.0, ())
    uses = _uses(map_list, k) if map_list else np.zeros(k, np.int64)
    node_w = np.repeat((1.0 + uses).astype(np.float64), 4)               # (K*4,)
    x_all = _cluster_space(feats, rules).reshape(k * 4, -1)
    valid = opaque.ravel().copy()
    centres, lab_v, curve = _choose_k(x_all[valid], node_w[valid], rules)
    dist = np.sqrt(((x_all[:, None] - centres[None]) ** 2).sum(-1))      # (K*4, m)
    valid = valid & (dist.min(1) <= rules.max_distance)     # outliers get no material
    labels = np.full(k * 4, -1, np.int64)
    labels[opaque.ravel()] = lab_v
    labels[~valid] = -1
    groups = _vertex_groups(map_list, k) if map_list else []
    labels = _smooth(labels, dist, groups, k * 4, valid, rules.smoothing)
    mat = labels.reshape(k, 4)
    m = len(centres)
    # materials with a fill tile become terrains, most used first
    full = (mat >= 0).all(1) & (mat == mat[:, :1]).all(1)
    weights = np.bincount(labels[valid], weights=node_w[valid], minlength=m)
    order = [j for j in np.argsort(-weights, kind="stable").tolist()
             if (full & (mat[:, 0] == j)).any()]
    terrain_of = {mj: i + 1 for i, mj in enumerate(order)}
    # quadrants of materials without a fill tile join the nearest terrain when close enough
    if order:
        kept = np.array(order)
        orphan = (labels >= 0) & ~np.isin(labels, kept)
        dk = np.sort(dist[:, kept], axis=1)
        near = kept[dist[:, kept].argmin(1)]
        second = dk[:, 1] if len(kept) > 1 else np.full(k * 4, np.inf)
        r = rules.reassign_distance
        close = (dk[:, 0] <= r) | ((dk[:, 0] <= 2 * r) & (dk[:, 0] <= 0.5 * second))
        labels = np.where(orphan & close, near, labels)
        mat = labels.reshape(k, 4)
        full = (mat >= 0).all(1) & (mat == mat[:, :1]).all(1)
        weights = np.bincount(labels[valid], weights=node_w[valid], minlength=m)
    agreement = _agreement(labels, groups)
    lut = np.zeros(m + 1, np.int64)                  # material (shifted by one) -> terrain
    for mj, ti in terrain_of.items():
        lut[mj + 1] = ti
    corners = lut[mat + 1]
    terrains, used_names = [], set()
    swatches = _distinctive_colours(quads, node_w, [np.flatnonzero(labels == mj) for mj in order])
    for mj, rgb in zip(order, swatches):
        members = labels == mj
        fills = np.flatnonzero(full & (mat[:, 0] == mj))
        # representative: most used fill tile, then the one closest to the centre
        closeness = dist.reshape(k, 4, m)[fills, :, mj].mean(1)
        rep = int(fills[np.lexsort((fills, closeness, -uses[fills]))[0]])
        wm = node_w[members]
        texture = _texture(feats.reshape(k * 4, -1)[members], wm)
        nm = _terrain_name(rgb, texture)
        base, j = nm, 2
        while nm in used_names:
            nm = f"{base} {j}"
            j += 1
        used_names.add(nm)
        terrains.append(Terrain(terrain_of[mj], nm, rgb, texture, rep,
                                tuple(int(f) for f in fills),
                                float(weights[mj] / weights.sum())))
    wang = tuple(int(i) for i in np.flatnonzero((corners > 0).all(1)))
    trans = [i for i in wang if len(set(corners[i].tolist())) > 1]
    if trans:
        set_tile = int(max(trans, key=lambda i: (uses[i], -i)))
    else:
        set_tile = terrains[0].tile if terrains else -1
    return TerrainSet(name, tuple(terrains), corners, mat, wang, set_tile, float(agreement),
                      curve)


# --------------------------------------------------------------------------- Tiled XML
def _hex(rgb: Sequence[int]) -> str:
    return "#" + "".join(f"{int(v):02x}" for v in rgb)


def wangsets_xml(terrain_set: TerrainSet, *, indent: str = " ") -> list[str]:
    """``<wangsets>`` lines for a ``.tsx`` (to splice in after the ``<tile>`` elements).

    Parameters
    ----------
    terrain_set : TerrainSet
    indent : str
        Indentation of the ``<wangsets>`` element (children get one more space each level).

    Returns
    -------
    list of str
        Lines without newlines; empty when the set has no terrain.
    """
    ts = terrain_set
    if not ts.terrains:
        return []
    i1, i2 = indent + " ", indent + "  "
    lines = [f"{indent}<wangsets>",
             f'{i1}<wangset name="{xml_escape(ts.name)}" type="corner" tile="{int(ts.tile)}">']
    for t in ts.terrains:
        lines.append(f'{i2}<wangcolor name="{xml_escape(t.name)}" color="{_hex(t.colour)}" '
                     f'tile="{int(t.tile)}" probability="1"/>')
    for i in ts.wang_tiles:
        wid = ",".join(str(v) for v in ts.wangid(i))
        lines.append(f'{i2}<wangtile tileid="{int(i)}" wangid="{wid}"/>')
    lines.append(f"{i1}</wangset>")
    lines.append(f"{indent}</wangsets>")
    return lines


# --------------------------------------------------------------------------- the brush rule
def corner_fill(vertex_terrain: np.ndarray, wangids: Mapping[int, Sequence[int]], *,
                flips: bool = False) -> np.ndarray:
    """Tiled's corner-set rule: for every cell, a tile whose corners match the painted vertices.

    Parameters
    ----------
    vertex_terrain : ndarray, shape (rows + 1, cols + 1), int
        Terrain (1-based Wang colour) painted at each grid vertex.
    wangids : mapping tile id -> 8-entry wangid
        The Wang tiles (e.g. as Tiled itself read them back from the .tsx).
    flips : bool
        The tileset allows flipped tiles (``<transformations hflip="1" vflip="1"
        preferuntransformed="1"/>``): a pattern no Wang tile shows as stored may be drawn by
        one flipped horizontally, vertically or both.  Unflipped tiles come first, as
        ``preferuntransformed`` asks.

    Returns
    -------
    ndarray, shape (rows, cols), int64
        Each cell as a map cell: the tile id (the lowest id among equal matches) with the flip
        bits it is drawn with (bit 31 H, bit 30 V; only with ``flips``); -1 where no Wang
        tile has the cell's four corners (Tiled would leave such a cell empty).
    """
    v = np.asarray(vertex_terrain)
    rows, cols = v.shape[0] - 1, v.shape[1] - 1
    table: dict[tuple, int] = {}
    for o in range(len(_FLIP_BITS) if flips else 1):
        for tid in sorted(wangids):
            w = list(wangids[tid])
            stored = [int(w[s]) for s in _WANGID_SLOT]
            key = tuple(stored[p] for p in _FLIP_CORNERS[o])
            table.setdefault(key, int(tid) | _FLIP_BITS[o])
    out = np.full((rows, cols), -1, np.int64)
    for r in range(rows):
        for c in range(cols):
            key = (int(v[r, c]), int(v[r, c + 1]), int(v[r + 1, c + 1]), int(v[r + 1, c]))
            out[r, c] = table.get(key, -1)
    return out
