"""Lay a tile bank out as a sheet people read (``tileset.png``), pack it, and cut it back apart.

Packing: tile ``i`` sits at row ``i // columns``, column ``i % columns``; no margin, no spacing;
unused cells are fully transparent.  This is the layout Tiled assumes for a tileset with
``columns`` set and ``margin = spacing = 0``, so a tile's place on the sheet *is* its tile id.

Layout (:func:`layout_sheet`): tiles are sorted into groups by what they look like
(:func:`describe_tile`): the colour that covers most of the tile, named from a small colour
table (:func:`tilesets.terrain.colour_name`), and its structure: ``flat`` (one colour covers
at least :data:`FLAT_SHARE` of it), ``edge`` (two colours in two coherent regions on either
side of the tile: a transition such as grass over dirt), ``foliage`` (a textured green tile),
``textured`` (anything else) or ``transparent``.  Each group starts on a new row (small groups
share rows), groups go sky first and ground last (by colour and kind, and by where their tiles
sit in the screens when the screens are tall enough), every edge group beside the lower of the
two terrains it joins, and inside a group the most used tiles come first.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from tilesets.artifacts import grid_cut
from tilesets.cells import FLIP_MASK, ID_MASK
from tilesets.pixels import as_rgba, join_grid, pack_colours
from tilesets.terrain import colour_name


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


# --------------------------------------------------------------------------- what a tile looks like
#: A tile is ``flat`` when one exact colour covers at least this share of its opaque pixels.
FLAT_SHARE = 0.85
#: An ``edge`` tile's second colour region covers at least this share of the tile ...
EDGE_MIN_SHARE = 0.2
#: ... its border with the first region is short: at most this many neighbour pairs per pixel
#: of the smaller region (a straight split of a 16-px tile: 0.12-0.3; speckle or mortar: 2-4) ...
EDGE_MAX_CONTACT = 0.6
#: ... and the two regions' centres lie at least this share of the tile side apart.
EDGE_MIN_SHIFT = 0.25
#: Tiles that are at least this share transparent form the ``transparent`` group.
CLEAR_SHARE = 0.5

#: Colour names (of :func:`tilesets.terrain.colour_name`) read as sky / air.
SKY_COLOURS = frozenset({"sky blue", "blue", "dark blue", "cyan", "white", "light grey",
                         "lavender", "black", "navy", "pink"})
#: ... as plants.
FOLIAGE_COLOURS = frozenset({"green", "dark green", "light green", "olive", "teal"})
#: ... as ground: earth, rock, brick.
GROUND_COLOURS = frozenset({"brown", "dark brown", "rust", "orange", "tan", "red", "dark red",
                            "grey", "dark grey", "slate"})


class Kind(str, enum.Enum):
    """What a group of tiles is, in sheet order (edges are placed beside their terrains)."""

    SKY = "sky"                # flat or patterned tiles of a sky colour
    FLAT = "flat"              # other flat tiles
    FOLIAGE = "foliage"        # textured green tiles
    TEXTURED = "textured"      # walls, blocks, anything patterned of another colour
    GROUND = "ground"          # textured earth / brick / rock colours
    EDGE = "edge"              # two terrains meeting inside the tile
    TRANSPARENT = "transparent"


#: Where each kind sits on the sheet, 0 = top (sky) .. 1 = bottom (ground); transparent last.
KIND_HEIGHT = {Kind.SKY: 0.0, Kind.FLAT: 0.3, Kind.FOLIAGE: 0.5, Kind.TEXTURED: 0.6,
               Kind.GROUND: 0.8, Kind.EDGE: 0.5, Kind.TRANSPARENT: 2.0}


@dataclass(frozen=True)
class TileLook:
    """What one tile looks like (:func:`describe_tile`).

    Attributes
    ----------
    colour : str
        Name of the colour covering most of the tile (``"transparent"`` for a clear tile).
    texture : str
        ``"flat"``, ``"edge"``, ``"textured"`` or ``"transparent"``.
    other : str or None
        For an edge tile, the colour on the other side; the pair reads top to bottom (or left
        to right): ``colour`` is above (left of) ``other``.
    """

    colour: str
    texture: str
    other: Optional[str] = None

    @property
    def kind(self) -> Kind:
        if self.texture == "transparent":
            return Kind.TRANSPARENT
        if self.texture == "edge":
            return Kind.EDGE
        if self.colour in SKY_COLOURS:
            return Kind.SKY
        if self.texture == "flat":
            return Kind.FLAT
        if self.colour in FOLIAGE_COLOURS:
            return Kind.FOLIAGE
        return Kind.GROUND if self.colour in GROUND_COLOURS else Kind.TEXTURED

    @property
    def group(self) -> str:
        """Name of the group the tile joins, e.g. ``"sky blue flat"``, ``"green / brown edge"``."""
        if self.texture == "transparent":
            return "transparent"
        if self.texture == "edge":
            return f"{self.colour} / {self.other} edge"
        if self.texture == "flat":
            return f"{self.colour} flat"
        return f"{self.colour} {'foliage' if self.kind is Kind.FOLIAGE else 'textured'}"


def _names_of(codes: np.ndarray, cache: dict) -> list[str]:
    """Colour name of each packed RGB code (memoised in ``cache``)."""
    out = []
    for c in codes.tolist():
        if c not in cache:
            cache[c] = colour_name((c & 255, (c >> 8) & 255, (c >> 16) & 255))
        out.append(cache[c])
    return out


def describe_tile(tile: np.ndarray, *, names: Optional[dict] = None) -> TileLook:
    """Colour and structure of one tile.

    Parameters
    ----------
    tile : ndarray, shape (T, T, 4) or (T, T, 3), uint8
    names : dict, optional
        Cache of colour names by packed RGB, shared between calls.

    Returns
    -------
    TileLook

    Examples
    --------
    >>> sky = np.zeros((16, 16, 4), np.uint8); sky[...] = (92, 148, 252, 255)
    >>> describe_tile(sky).group
    'sky blue flat'
    >>> grass = sky.copy(); grass[:5, :, :3] = (0, 168, 0); grass[5:, :, :3] = (200, 76, 12)
    >>> look = describe_tile(grass)
    >>> look.texture, look.colour
    ('edge', 'green')
    """
    t = as_rgba(np.asarray(tile))
    if t.dtype != np.uint8 or t.ndim != 3 or t.shape[0] != t.shape[1]:
        raise ValueError(f"tile must be uint8 (T, T, 3|4), got {t.dtype} {t.shape}")
    names = {} if names is None else names
    opaque = t[..., 3] > 0
    if opaque.mean() < 1.0 - CLEAR_SHARE or not opaque.any():
        return TileLook("transparent", "transparent")
    code = pack_colours(np.ascontiguousarray(t[..., :3]))
    uniq, inv, counts = np.unique(code[opaque], return_inverse=True, return_counts=True)
    if counts.max() >= FLAT_SHARE * counts.sum():
        return TileLook(_names_of(uniq[[int(counts.argmax())]], names)[0], "flat")
    # pixels by colour *name*: two shades of green are one region
    uniq_names = _names_of(uniq, names)
    labels = sorted(set(uniq_names))
    name_idx = np.array([labels.index(n) for n in uniq_names])
    region = np.full(t.shape[:2], -1)
    region[opaque] = name_idx[inv.ravel()]
    sizes = np.bincount(region[opaque], minlength=len(labels))
    order = np.argsort(-sizes, kind="stable")
    first = int(order[0])
    if len(labels) >= 2 and sizes[order[1]] >= EDGE_MIN_SHARE * opaque.sum():
        second = int(order[1])
        look = _edge(region, first, second, labels, t.shape[0])
        if look is not None:
            return look
    return TileLook(labels[first], "textured")


def _edge(region: np.ndarray, a: int, b: int, labels: list, side: int) -> Optional[TileLook]:
    """An edge look if regions ``a`` and ``b`` are two coherent areas on either side of the
    tile, else None."""
    contact = int(((region[:, :-1] == a) & (region[:, 1:] == b)).sum()
                  + ((region[:, :-1] == b) & (region[:, 1:] == a)).sum()
                  + ((region[:-1] == a) & (region[1:] == b)).sum()
                  + ((region[:-1] == b) & (region[1:] == a)).sum())
    small = min(int((region == a).sum()), int((region == b).sum()))
    if contact > EDGE_MAX_CONTACT * small:
        return None
    ya, xa = np.argwhere(region == a).mean(0)
    yb, xb = np.argwhere(region == b).mean(0)
    dy, dx = yb - ya, xb - xa
    if max(abs(dy), abs(dx)) < EDGE_MIN_SHIFT * side:
        return None
    a_first = dy > 0 if abs(dy) >= abs(dx) else dx > 0     # a above (left of) b
    top, bottom = (labels[a], labels[b]) if a_first else (labels[b], labels[a])
    return TileLook(top, "edge", bottom)


# --------------------------------------------------------------------------- the sheet
@dataclass(frozen=True)
class Group:
    """Tiles of one kind, together on the sheet.

    Attributes
    ----------
    name : str
        E.g. ``"sky blue flat"``, ``"green / brown edge"``.
    kind : Kind
    tiles : tuple of int
        Bank ids, in sheet order (most used first).
    first : int
        Tile id (sheet position) of the group's first tile.
    uses : int
        Cells using the group's tiles.
    """

    name: str
    kind: Kind
    tiles: tuple
    first: int
    uses: int

    def to_json(self) -> dict:
        return {"name": self.name, "kind": self.kind.value, "tiles": len(self.tiles),
                "first_tile": self.first, "uses": self.uses}


@dataclass(frozen=True)
class SheetLayout:
    """Where every bank tile sits on the sheet; its position is its Tiled tile id.

    Attributes
    ----------
    columns, rows : int
        Sheet size in tiles.
    position : ndarray, shape (K,), int64
        Tile id (row-major sheet position) of each bank tile.
    groups : tuple of Group
        In sheet order.
    """

    columns: int
    rows: int
    position: np.ndarray
    groups: tuple

    @property
    def tile_count(self) -> int:
        """Sheet cells, blank ones included (Tiled's ``tilecount``)."""
        return self.columns * self.rows

    def bank_of(self) -> np.ndarray:
        """Bank id at each sheet position, -1 where the sheet is blank: (tile_count,) int64."""
        out = np.full(self.tile_count, -1, np.int64)
        out[self.position] = np.arange(len(self.position))
        return out

    def group_of(self) -> list:
        """Group name at each sheet position (None where blank)."""
        out: list = [None] * self.tile_count
        for g in self.groups:
            for b in g.tiles:
                out[int(self.position[b])] = g.name
        return out

    def remap(self, cells: np.ndarray) -> np.ndarray:
        """Cells (bank id | flip bits) -> the same cells with sheet tile ids, uint32."""
        c = np.asarray(cells).astype(np.uint64)
        ids = (c & np.uint64(ID_MASK)).astype(np.int64)
        return (self.position[ids].astype(np.uint64) | (c & np.uint64(FLIP_MASK))).astype(np.uint32)

    def sheet_tiles(self, tiles: np.ndarray) -> np.ndarray:
        """Bank tiles in sheet order, blank cells fully transparent: (tile_count, T, T, 4)."""
        t = as_rgba(np.asarray(tiles))
        out = np.zeros((self.tile_count,) + t.shape[1:], np.uint8)
        out[self.position] = t
        return out


def tile_heights(maps: Sequence[np.ndarray], count: int, *, min_rows: int = 6) -> np.ndarray:
    """Mean height of each tile's cells in the maps at least ``min_rows`` tall: 0 = top row,
    1 = bottom row; NaN for a tile no such map uses.  (count,) float64."""
    total = np.zeros(count)
    n = np.zeros(count)
    for m in maps:
        m = np.asarray(m)
        if m.ndim != 2 or m.shape[0] < min_rows:
            continue
        ids = (m.astype(np.uint64) & np.uint64(ID_MASK)).astype(np.int64)
        rel = np.repeat((np.arange(m.shape[0]) / (m.shape[0] - 1))[:, None], m.shape[1], 1)
        np.add.at(total, ids.ravel(), rel.ravel())
        np.add.at(n, ids.ravel(), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def layout_sheet(tiles: np.ndarray, uses: np.ndarray, *, columns: int, by: str = "kind",
                 heights: Optional[np.ndarray] = None, styles: Optional[np.ndarray] = None,
                 style_names: Sequence[str] = ()) -> SheetLayout:
    """Lay tiles out by kind: groups of rows, sky first, ground last, most used first.

    Parameters
    ----------
    tiles : ndarray, shape (K, T, T, 3|4), uint8
    uses : ndarray, shape (K,), integer
        Cells using each tile (orders tiles inside a group).
    columns : int
        Tiles per sheet row (>= 1).
    by : {"kind", "style", "bank"}
        ``"bank"`` keeps bank order with no gaps (one group, ``"all tiles"``).  ``"style"``:
        one block of rows per style (``styles``), in ``style_names`` order, each laid out by
        kind, its groups named ``"<style>: <group>"``; tiles of no style come last.  With
        fewer than two styles among the tiles it is ``"kind"``.
    heights : ndarray, shape (K,), optional
        :func:`tile_heights`; where known, a group's mean height (weighted by uses) counts half
        in its place on the sheet, the kind's usual place the other half.
    styles : ndarray, shape (K,), int, optional
        ``by="style"``: each tile's style (an index into ``style_names``; -1 = none), e.g.
        :func:`tile_styles`.
    style_names : sequence of str

    Returns
    -------
    SheetLayout
    """
    t = np.asarray(tiles)
    k = len(t)
    u = np.asarray(uses, np.int64)
    if u.shape != (k,):
        raise ValueError(f"uses must have shape ({k},), got {u.shape}")
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    if by not in ("kind", "style", "bank"):
        raise ValueError(f"by must be 'kind', 'style' or 'bank', got {by!r}")
    if by == "style":
        st = None if styles is None else np.asarray(styles, np.int64)
        if st is not None and st.shape != (k,):
            raise ValueError(f"styles must have shape ({k},), got {st.shape}")
        if st is not None and len(set(st[st >= 0].tolist())) >= 2:
            return _style_blocks(t, u, st, list(style_names), columns=columns, heights=heights)
        by = "kind"
    if by == "bank" or k == 0:
        rows = max(1, math.ceil(k / columns))
        g = (Group("all tiles", Kind.TEXTURED, tuple(range(k)), 0, int(u.sum())),) if k else ()
        return SheetLayout(columns, rows, np.arange(k, dtype=np.int64), g)
    cache: dict = {}
    looks = [describe_tile(tile, names=cache) for tile in t]
    members = _merge_small(_group_members(looks, u), looks, u)
    order = _group_order(members, looks, u, heights)
    position = np.zeros(k, np.int64)
    groups = []
    cursor, prev_small = 0, False
    for name in order:
        ids = members[name]
        small = len(ids) < max(2, columns // 2)
        col = cursor % columns
        if col and not (small and prev_small and col + len(ids) <= columns):
            cursor += columns - col                    # start the group on a new row
        position[ids] = cursor + np.arange(len(ids))
        kind = Kind.TEXTURED if name == OTHER_GROUP else looks[ids[0]].kind
        groups.append(Group(name, kind, tuple(ids), cursor, int(u[ids].sum())))
        cursor += len(ids)
        prev_small = small
    return SheetLayout(columns, max(1, math.ceil(cursor / columns)), position, tuple(groups))


def _style_blocks(tiles: np.ndarray, uses: np.ndarray, styles: np.ndarray, names: list, *,
                  columns: int, heights: Optional[np.ndarray]) -> SheetLayout:
    """:func:`layout_sheet` ``by="style"``: each style's tiles laid out by kind as a block of
    whole rows, the blocks one after another (``names`` order, then the tiles of no style)."""
    position = np.zeros(len(tiles), np.int64)
    groups: list = []
    cursor = 0
    for s in sorted(set(styles.tolist()), key=lambda v: (v < 0, v)):
        ids = np.flatnonzero(styles == s)
        block = layout_sheet(tiles[ids], uses[ids], columns=columns, by="kind",
                             heights=None if heights is None else np.asarray(heights)[ids])
        label = names[s] if 0 <= s < len(names) else ("no style" if s < 0 else f"style {s}")
        position[ids] = cursor + block.position
        groups += [Group(f"{label}: {g.name}", g.kind, tuple(int(ids[b]) for b in g.tiles),
                         cursor + g.first, g.uses) for g in block.groups]
        cursor += block.rows * columns
    return SheetLayout(columns, max(1, cursor // columns), position, tuple(groups))


def tile_styles(maps: dict, styles: dict, count: int,
                names: Sequence[str]) -> np.ndarray:
    """Each tile's style: the style (index into ``names``) whose screens use it most; -1 for a
    tile no styled screen uses.  ``maps``: stem -> cells (bank id | flip bits); ``styles``:
    stem -> style name.  (count,) int64."""
    index = {n: i for i, n in enumerate(names)}
    counts = np.zeros((count, max(1, len(names))), np.int64)
    for stem, m in maps.items():
        if styles.get(stem) not in index:
            continue
        ids = (np.asarray(m).astype(np.uint64) & np.uint64(ID_MASK)).astype(np.int64).ravel()
        np.add.at(counts[:, index[styles[stem]]], ids, 1)
    return np.where(counts.sum(1) > 0, counts.argmax(1), -1)


#: More groups than this, and the groups of fewer than :data:`MIN_GROUP` tiles that are not
#: flat and cover less than :data:`POOL_USES` of the cells are pooled into one
#: :data:`OTHER_GROUP` (a noisy tile set would otherwise give dozens of one-tile rows; flat
#: tiles and much-used ones are what a designer paints with, so they keep their group).
MAX_GROUPS = 12
MIN_GROUP = 3
POOL_USES = 0.03
OTHER_GROUP = "other tiles"


def _group_members(looks: list, uses: np.ndarray) -> dict[str, list[int]]:
    """Group name -> bank ids, most used first.  Edge tiles of the same two colours form one
    group whichever side each colour is on, named as its most used tile reads."""
    by_key: dict[tuple, list[int]] = {}
    for i, look in enumerate(looks):
        key = (("edge",) + tuple(sorted((look.colour, str(look.other))))
               if look.texture == "edge" else ("group", look.group))
        by_key.setdefault(key, []).append(i)
    out = {}
    for ids in by_key.values():
        ids = sorted(ids, key=lambda i: (-int(uses[i]), i))
        out[looks[ids[0]].group] = ids
    return out


def _merge_small(members: dict[str, list[int]], looks: list,
                 uses: np.ndarray) -> dict[str, list[int]]:
    """Pool the small, rarely used, textured groups into :data:`OTHER_GROUP` when there are
    too many groups."""
    if len(members) <= MAX_GROUPS:
        return members
    out: dict[str, list[int]] = {}
    other: list[int] = []
    total = max(1.0, float(uses.sum()))
    for name, ids in members.items():
        look = looks[ids[0]]
        if (len(ids) < MIN_GROUP and look.texture not in ("flat", "transparent")
                and float(uses[ids].sum()) < POOL_USES * total):
            other += ids
        else:
            out[name] = ids
    if other:
        out[OTHER_GROUP] = sorted(other, key=lambda i: (-int(uses[i]), i))
    return out


def _group_order(members: dict, looks: list, uses: np.ndarray,
                 heights: Optional[np.ndarray]) -> list[str]:
    """Group names in sheet order: terrains by height, each edge group just before the lower
    of the terrains it joins (or by height when it joins none); the pooled small groups last
    but for the transparent tiles."""
    if OTHER_GROUP in members:
        members = dict(members)
        other = members.pop(OTHER_GROUP)
        order = _group_order(members, looks, uses, heights)
        at = len(order) - (order[-1] == "transparent" if order else 0)
        members[OTHER_GROUP] = other
        return order[:at] + [OTHER_GROUP] + order[at:]

    def height(name: str) -> float:
        ids = members[name]
        kind = looks[ids[0]].kind
        base = KIND_HEIGHT[kind]
        if heights is None or kind is Kind.TRANSPARENT:
            return base
        h = np.asarray(heights, np.float64)[ids]
        w = uses[ids].astype(np.float64) + 1e-9
        ok = np.isfinite(h)
        return base if not ok.any() else 0.5 * base + 0.5 * float((h[ok] * w[ok]).sum()
                                                                   / w[ok].sum())

    def key(name: str) -> tuple:
        return (height(name), -int(uses[members[name]].sum()), name)

    edges = sorted((n for n in members if looks[members[n][0]].kind is Kind.EDGE), key=key)
    order = sorted((n for n in members if n not in edges), key=key)
    colour_of = {n: looks[members[n][0]].colour for n in order}
    loose = []
    for e in edges:
        look = looks[members[e][0]]
        at = [[i for i, n in enumerate(order) if colour_of.get(n) == c]
              for c in (look.colour, look.other)]
        if at[0] and at[1]:      # before the first group of the lower of the two terrains
            order.insert(max(at[0][0], at[1][0]), e)
        elif at[0] or at[1]:     # after the last group of the one terrain there is
            order.insert(max(at[0] or at[1]) + 1, e)
        else:
            loose.append(e)
            continue
        colour_of[e] = None      # edges never anchor other edges
    for e in loose:  # by height among the others
        h = key(e)
        at = next((i for i, n in enumerate(order) if colour_of.get(n, "") is not None
                   and key(n) > h), len(order))
        order.insert(at, e)
    return order
