"""Wave Function Collapse over tile adjacencies learned from example maps.

Two models share one solver:

- **tiles** ("simple tiled" WFC with adjacencies read off example maps, equivalent to the
  overlapping model with 2-cell patterns on a tile grid): every distinct cell value of the
  examples, flip bits included, is a state; state ``b`` may sit right of / below state ``a``
  only if that pair occurs somewhere in the examples (:func:`learn_adjacency`).  Draws are
  weighted by how often: a state's chance given its decided neighbours is its frequency times,
  per neighbour, how much more often than chance the two sit that way in the examples
  (:func:`pair_weights`), and, when the examples are tall enough, times how often it occurs at
  that height of a screen (:func:`row_prior`: sky on top, ground at the bottom);
- **chunks**: every distinct ``c`` x ``c`` window of cells cut from the examples is a state
  (:func:`learn_chunks`); chunk ``b`` may sit right of / below chunk ``a`` if the two windows
  touch that way in an example.  Small generated screens give few such pairs, so the model is
  widened with the best-matching *pixel seams* of every state and side (:func:`add_seam_pairs`).
  Inside a chunk every tile pair is one the examples show; between chunks the pixels meet at a
  seam chosen for continuity.

Which one :func:`make_level` uses depends on whether the examples' tiles *recur*
(:func:`measure_recurrence`): screens rebuilt from a small tile dictionary reuse each tile many
times, so the seen tile pairs form a rich graph and the tile model makes a level whose every
neighbour pair occurs in a screen.  Screens whose tiles are each used about once give a sparse
tile graph whose only cycles run through the one flat tile (a level of single tiles is then
nearly all that tile); for them the level is made of coherent generated pieces (chunks).  The
same happens when tiles recur but too few screens were seen to give their pairs room: a level
that one tile floods is made again from chunks.

Generation (:func:`generate`) is seeded and deterministic:

1. observe the undecided cell of lowest Shannon entropy (ties broken by the seeded RNG), draw a
   state by weight (times the pair factors of its decided neighbours, times the row factor,
   divided by ``(1 + uses) ** reuse_penalty`` where ``uses`` counts the cells that already hold
   it, or only those beyond its share in the examples), propagate the constraints (arc
   consistency) over the whole grid;
2. on a contradiction, backtrack: restore the grid before the latest decision and forbid that
   choice; after ``max_backtracks`` backtracks, restart with the same RNG stream (``attempts``);
3. if every attempt fails (or the time limit passes), fall back to a greedy fill: cells in
   reading order, each drawn among the states allowed right of its left neighbour and below its
   upper neighbour, weighted by how often; where no state fits both, one fitting either is
   used and the pair is counted as a violation.  The result says which path was taken.

:func:`make_level` chains these: for recurring tiles, WFC over the seen tile pairs; otherwise
WFC over chunks (seen chunk pairs widened with seams), then (if that falls back, or no example
holds a whole chunk) WFC over the seen tile pairs; then over the seen tile pairs widened with
seams, then the greedy fill.

A WFC success has no violation at all: every horizontal and vertical pair of the output is
allowed by the model it was made with (:func:`count_violations` is 0 on that model's grid, the
chunk grid for the chunk model).  ``stats["unseen_pairs"]`` counts the *tile* pairs of the level
that no example shows, ``stats["seam_diff"]`` / ``stats["example_seam_diff"]`` measure how
well pixels meet across tile borders in the level and in the examples (:func:`seam_difference`),
and ``stats["seams"]`` compares the colour difference across tile borders with the one inside
tiles, in the level and in the examples (:func:`border_interior`; ratio 1 = tile borders do
not show).
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

import numpy as np

from tilesets.pixels import join_grid

#: Default cap on distinct states in :func:`make_level` (the most frequent are kept).
MAX_STATES = 2048
#: Memory budget of the backtracking history, in bytes.
HISTORY_BYTES = 256 << 20
#: Default side, in tiles, of the chunks :func:`make_level` builds the level from.
CHUNK = 2
#: Default best-matching seam partners per state and side in :func:`make_level`.
SEAMS = 12
#: Default reuse penalty of :func:`make_level` (see :func:`generate`).
REUSE_PENALTY = 1.0
#: Tiles *recur* when the examples hold at most this many distinct cell values (tile + flips)
#: per cell, i.e. every state is used at least twice on average (:func:`measure_recurrence`).
RECUR_PER_CELL = 0.5
#: Examples shorter than this many rows carry no row prior (a crop of 4 rows says little about
#: where a tile sits on a screen).
ROW_PRIOR_MIN_ROWS = 6
#: Most row bands of the row prior.
ROW_PRIOR_BANDS = 16
#: Pseudo-counts that pull each band's state distribution towards the overall one.
ROW_PRIOR_SMOOTHING = 4.0
#: Models :func:`make_level` knows: ``auto`` picks ``tiles`` when tiles recur, else ``chunks``.
MODELS = ("auto", "tiles", "chunks")


@dataclass(frozen=True)
class Adjacency:
    """Tile adjacencies learned from example maps.

    Attributes
    ----------
    states : ndarray, shape (S,), uint32
        Distinct cell values, sorted.
    weights : ndarray, shape (S,), float64
        How often each state occurs.
    right : ndarray, shape (S, S), int64
        ``right[a, b]``: how often state ``b`` sits directly right of state ``a``.
    down : ndarray, shape (S, S), int64
        ``down[a, b]``: how often state ``b`` sits directly below state ``a``.
    """

    states: np.ndarray
    weights: np.ndarray
    right: np.ndarray
    down: np.ndarray
    #: (S, S) bool: pairs of ``right`` / ``down`` added by :func:`add_seam_pairs`, not seen.
    seam_right: Optional[np.ndarray] = None
    seam_down: Optional[np.ndarray] = None

    @property
    def n_states(self) -> int:
        return int(self.states.shape[0])


@dataclass
class WfcResult:
    """Outcome of :func:`generate`.

    Attributes
    ----------
    grid : ndarray, shape (height, width), uint32
        Cell values (states of the adjacency model).
    method : str
        ``"wfc"`` (solved without backtracking), ``"wfc-backtracking"`` (solved after at least one
        backtrack or restart) or ``"greedy-fallback"`` (WFC gave up).
    attempts : int
        WFC attempts made (restarts + 1).
    backtracks : int
        Backtracks over all attempts.
    contradictions : int
        Contradictions met over all attempts.
    violations : int
        Adjacent pairs in ``grid`` the model does not allow (0 unless the fallback ran).
    stats : dict
        ``unseen_pairs``: adjacent pairs never seen in the examples (seam pairs included);
        ``distinct_states``.  :func:`make_level` adds the figures listed there.
    """

    grid: np.ndarray
    method: str
    attempts: int
    backtracks: int
    contradictions: int
    violations: int
    stats: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """JSON-able dict of everything but the grid."""
        return {"method": self.method, "attempts": self.attempts, "backtracks": self.backtracks,
                "contradictions": self.contradictions, "violations": self.violations,
                **self.stats}


def learn_adjacency(maps: Iterable[np.ndarray], *, max_states: Optional[int] = None) -> Adjacency:
    """Count states and their right / down neighbours over example maps.

    Parameters
    ----------
    maps : iterable of ndarray, shape (rows, cols), integer
        Example grids of cell values (e.g. bank id | flip bits).
    max_states : int, optional
        Keep only this many states, the most frequent (ties: lower value first); pairs that
        involve a dropped state are not counted.  Bounds memory (S * S counts) and time.

    Returns
    -------
    Adjacency

    Raises
    ------
    ValueError
        If no map is given or a map is not a non-empty 2-D integer array.
    """
    grids = []
    for i, m in enumerate(maps):
        a = np.asarray(m)
        if a.ndim != 2 or a.size == 0 or not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"map {i} must be a non-empty 2-D integer array, got {a.dtype} {a.shape}")
        grids.append(a.astype(np.uint64))
    if not grids:
        raise ValueError("learn_adjacency needs at least one map")
    if max_states is not None and max_states < 1:
        raise ValueError(f"max_states must be >= 1, got {max_states}")
    values, counts = np.unique(np.concatenate([g.ravel() for g in grids]), return_counts=True)
    if max_states is not None and values.size > max_states:
        order = np.lexsort((values, -counts))[:max_states]  # most frequent first
        values = np.sort(values[order])
    states = values
    s = states.shape[0]
    # Pair codes of all grids are gathered first: one bincount over S * S, not one per grid.
    cells: list[np.ndarray] = []
    pairs: dict[str, list[np.ndarray]] = {"right": [], "down": []}
    for g in grids:
        pos = np.minimum(np.searchsorted(states, g), s - 1)
        idx = np.where(states[pos] == g, pos, -1)
        cells.append(idx[idx >= 0])
        for name, a, b in (("right", idx[:, :-1], idx[:, 1:]), ("down", idx[:-1, :], idx[1:, :])):
            ok = (a >= 0) & (b >= 0)
            pairs[name].append(a[ok] * s + b[ok])
    weights = np.bincount(np.concatenate(cells), minlength=s).astype(np.float64)
    right, down = (np.bincount(np.concatenate(pairs[n]), minlength=s * s).astype(np.int64)
                   for n in ("right", "down"))
    return Adjacency(states=states.astype(np.uint32), weights=weights,
                     right=right.reshape(s, s), down=down.reshape(s, s))


@dataclass(frozen=True)
class Recurrence:
    """How much the example maps reuse their tiles (:func:`measure_recurrence`).

    Attributes
    ----------
    cells : int
        Cells over all maps.
    tiles : int
        Distinct tile ids (flip bits ignored).
    states : int
        Distinct cell values (tile id and flip bits).
    tiles_per_cell, states_per_cell : float
        ``tiles / cells`` and ``states / cells`` (real NES screens: about 0.2 tiles per cell;
        screens whose tiles are each used once: near 1).
    recurring_share : float
        Share of cells whose tile id is used by at least one other cell.
    """

    cells: int
    tiles: int
    states: int
    tiles_per_cell: float
    states_per_cell: float
    recurring_share: float

    @property
    def recurring(self) -> bool:
        """At most :data:`RECUR_PER_CELL` states per cell: each state is seen twice on average."""
        return self.states_per_cell <= RECUR_PER_CELL

    def to_json(self) -> dict:
        return {"cells": self.cells, "tiles": self.tiles, "states": self.states,
                "tiles_per_cell": round(self.tiles_per_cell, 4),
                "states_per_cell": round(self.states_per_cell, 4),
                "recurring_share": round(self.recurring_share, 4), "recurring": self.recurring}


def measure_recurrence(maps: Iterable[np.ndarray]) -> Recurrence:
    """Count cells, distinct tiles and distinct states of example maps.

    Parameters
    ----------
    maps : iterable of ndarray, shape (rows, cols), integer
        Cell values (bank id | flip bits).

    Returns
    -------
    Recurrence

    Examples
    --------
    >>> r = measure_recurrence([np.array([[1, 1, 2, 1 | (1 << 31)]])])
    >>> (r.tiles, r.states, r.recurring_share)
    (2, 3, 0.75)
    """
    cells = np.concatenate([np.asarray(m).astype(np.uint64).ravel() for m in maps]
                           or [np.zeros(0, np.uint64)])
    n = int(cells.size)
    if n == 0:
        return Recurrence(0, 0, 0, 0.0, 0.0, 0.0)
    ids, counts = np.unique(cells & np.uint64((1 << 29) - 1), return_counts=True)
    states = int(np.unique(cells).size)
    return Recurrence(cells=n, tiles=int(ids.size), states=states,
                      tiles_per_cell=ids.size / n, states_per_cell=states / n,
                      recurring_share=float(counts[counts >= 2].sum()) / n)


def row_prior(maps: Iterable[np.ndarray], states: np.ndarray, height: int, *,
              min_rows: int = ROW_PRIOR_MIN_ROWS, bands: int = ROW_PRIOR_BANDS,
              smoothing: float = ROW_PRIOR_SMOOTHING) -> Optional[np.ndarray]:
    """How much more (or less) often each state occurs at each height of a screen.

    The rows of every example map at least ``min_rows`` tall, and the rows of the level, are
    cut into ``b = min(bands, height, tallest example)`` bands by relative height (band of row
    ``y`` of ``h`` rows = ``y * b // h``).  For band ``k`` and state ``s`` the factor is
    ``P(s | k) / P(s)`` over those examples, with ``P(s | k)`` pulled towards ``P(s)`` by
    ``smoothing`` pseudo-cells: above 1 where a state is common at that height (sky at the
    top, ground at the bottom), below 1 where it is rare.

    Parameters
    ----------
    maps : iterable of ndarray, shape (rows, cols), integer
    states : ndarray, shape (S,)
        Sorted states of the model (cell values); cells with other values are left out.
    height : int
        Rows of the level.
    min_rows, bands, smoothing
        As above.

    Returns
    -------
    ndarray, shape (height, S), float64, or None
        Factor of each state on each level row; None when no example is ``min_rows`` tall.
    """
    tall = [np.asarray(m).astype(np.uint64) for m in maps]
    tall = [m for m in tall if m.ndim == 2 and m.shape[0] >= min_rows]
    st = np.asarray(states).astype(np.uint64)
    s = st.size
    if not tall or s == 0 or height < 1:
        return None
    b = max(1, min(bands, height, max(m.shape[0] for m in tall)))
    counts = np.zeros((b, s), np.float64)
    for m in tall:
        h = m.shape[0]
        pos = np.minimum(np.searchsorted(st, m), s - 1)
        known = st[pos] == m
        band = np.repeat((np.arange(h) * b // h)[:, None], m.shape[1], axis=1)
        np.add.at(counts, (band[known], pos[known]), 1.0)
    total = counts.sum()
    if total == 0:
        return None
    p = counts.sum(0) / total                               # P(s)
    cond = (counts + smoothing * p) / (counts.sum(1, keepdims=True) + smoothing)  # P(s | band)
    factor = np.where(p > 0, cond / np.maximum(p, 1e-300), 1.0)
    return factor[np.arange(height) * b // height]


def pair_weights(adj: Adjacency, *, frequency: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Factor each neighbour pair gives a draw: ``(right, down)``, each (S, S) float64.

    With ``frequency``, a seen pair ``(a, b)`` gets ``n(a, b) * N / (n(a, ·) * n(·, b))``: how
    many times more often ``b`` follows ``a`` than it would by chance (so the state's own
    frequency times these factors is its chance given its neighbours, as in a Markov chain);
    without, 1.  Pairs added by :func:`add_seam_pairs` get :data:`SEAM_WEIGHT` times the
    smallest factor of a seen pair, pairs not allowed 0.
    """
    out = []
    for counts, seam in ((adj.right, adj.seam_right), (adj.down, adj.seam_down)):
        c = counts.astype(np.float64)
        seen = c > 0
        if seam is not None:
            c = np.where(seam, 0.0, c)
            seen &= ~seam
        if frequency and c.sum() > 0:
            n = c.sum()
            rows = c.sum(1, keepdims=True)
            cols = c.sum(0, keepdims=True)
            w = np.where(seen, c * n / np.maximum(rows * cols, 1e-300), 0.0)
        else:
            w = seen.astype(np.float64)
        if seam is not None:
            low = float(w[seen].min()) if seen.any() else 1.0
            w[seam] = SEAM_WEIGHT * low
        out.append(w)
    return out[0], out[1]


def learn_chunks(maps: Iterable[np.ndarray], size: int, *,
                 max_states: Optional[int] = None) -> tuple[np.ndarray, Adjacency]:
    """Cut every ``size`` x ``size`` window of cells out of example maps; learn chunk neighbours.

    Every window position counts (windows overlap), so a 4x4 map gives nine 2x2 chunks.  Chunk
    ``b`` is seen right of chunk ``a`` when ``b``'s window starts ``size`` cells right of
    ``a``'s in the same map (the two touch without overlapping); likewise below.

    Parameters
    ----------
    maps : iterable of ndarray, shape (rows, cols), integer
        Example grids of cell values; maps smaller than a chunk contribute nothing.
    size : int
        Chunk side in cells (>= 1; 1 gives the tile model of :func:`learn_adjacency`).
    max_states : int, optional
        As in :func:`learn_adjacency`: keep only the most frequent chunks.

    Returns
    -------
    blocks : ndarray, shape (K, size, size), uint32
        Every distinct window, in lexicographic order of its cells.
    adj : Adjacency
        States are indices into ``blocks`` (all of them, or the ``max_states`` most frequent);
        weights count the windows.

    Raises
    ------
    ValueError
        If ``size < 1``, a map is not a non-empty 2-D integer array, or no map holds a chunk.

    Examples
    --------
    >>> blocks, adj = learn_chunks([np.arange(16).reshape(4, 4)], 2)
    >>> blocks.shape, adj.n_states, int(adj.right.sum()), int(adj.down.sum())
    ((9, 2, 2), 9, 3, 3)
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    ids_per_map, windows = [], []
    for i, m in enumerate(maps):
        a = np.asarray(m)
        if a.ndim != 2 or a.size == 0 or not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"map {i} must be a non-empty 2-D integer array, "
                             f"got {a.dtype} {a.shape}")
        if a.shape[0] < size or a.shape[1] < size:
            continue
        v = np.lib.stride_tricks.sliding_window_view(a.astype(np.uint32), (size, size))
        ids_per_map.append(v.shape[:2])
        windows.append(v.reshape(-1, size * size))
    if not windows:
        raise ValueError(f"no map holds a {size}x{size} chunk")
    blocks, inv = np.unique(np.concatenate(windows), axis=0, return_inverse=True)
    inv = inv.ravel()
    # Windows ``size`` apart become neighbours in the grids of one phase (py, px).
    phases, start = [], 0
    for shape in ids_per_map:
        n = shape[0] * shape[1]
        ids = inv[start:start + n].reshape(shape)
        start += n
        phases += [ids[py::size, px::size] for py in range(min(size, shape[0]))
                   for px in range(min(size, shape[1]))]
    adj = learn_adjacency(phases, max_states=max_states)
    return blocks.reshape(-1, size, size).astype(np.uint32), adj


def expand_chunks(grid: np.ndarray, blocks: np.ndarray, *, width: int, height: int) -> np.ndarray:
    """Lay the chunks of a chunk grid out as cells and crop to ``height`` x ``width``.

    Parameters
    ----------
    grid : ndarray, shape (rows, cols), integer
        Indices into ``blocks``.
    blocks : ndarray, shape (K, c, c)
    width, height : int
        Size of the cell grid wanted (at most ``cols * c`` by ``rows * c``).

    Returns
    -------
    ndarray, shape (height, width), dtype of ``blocks``
    """
    g = np.asarray(grid)
    b = np.asarray(blocks)
    c = b.shape[1]
    rows, cols = g.shape
    if width > cols * c or height > rows * c:
        raise ValueError(f"a {rows}x{cols} grid of {c}x{c} chunks cannot cover "
                         f"{height}x{width} cells")
    cells = b[g].transpose(0, 2, 1, 3).reshape(rows * c, cols * c)
    return cells[:height, :width]


def _cell_pixels(cells: np.ndarray, state_tiles: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Pixels of every cell of an integer array: shape ``cells.shape + (T, T, C)``, each
    distinct value looked up once through ``state_tiles``."""
    values, inv = np.unique(np.asarray(cells), return_inverse=True)
    return np.asarray(state_tiles(values))[inv.reshape(np.shape(cells))]


def chunk_pixels(blocks: np.ndarray, state_tiles: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Pixels of each chunk: its cells' tiles (from ``state_tiles``) put side by side.

    Returns
    -------
    ndarray, shape (K, c * T, c * T, C), dtype of ``state_tiles``' output
    """
    return join_grid(_cell_pixels(blocks, state_tiles))  # (K, c, c, T, T, C) -> (K, cT, cT, C)


def seam_difference(grids: Iterable[np.ndarray],
                    state_tiles: Callable[[np.ndarray], np.ndarray]) -> float:
    """Mean absolute difference between the pixels that touch across every tile border.

    For each horizontal neighbour pair the right pixel column of the left tile is compared with
    the left column of the right tile, channel by channel (likewise rows for vertical pairs);
    the figure is pooled over all borders of all ``grids``.  Lower is smoother; natural images
    are not 0 (edges of objects cross borders), so compare a level with its examples.

    Parameters
    ----------
    grids : iterable of ndarray, shape (rows, cols), integer
        Cell values (states of ``state_tiles``).
    state_tiles : callable
        ``state_tiles(values) -> ndarray (V, T, T, C)``, pixels of each value.

    Returns
    -------
    float
        NaN when no grid has a border (every grid is one cell).
    """
    total, count = 0.0, 0
    for g in grids:
        g = np.asarray(g)
        cells = _cell_pixels(g, state_tiles).astype(np.int16)  # (rows, cols, T, T, C)
        if g.shape[1] > 1:
            d = np.abs(cells[:, :-1, :, -1] - cells[:, 1:, :, 0])
            total += float(d.sum())
            count += d.size
        if g.shape[0] > 1:
            d = np.abs(cells[:-1, :, -1] - cells[1:, :, 0])
            total += float(d.sum())
            count += d.size
    return total / count if count else float("nan")


def border_interior(grids: Iterable[np.ndarray],
                    state_tiles: Callable[[np.ndarray], np.ndarray]) -> dict:
    """Mean colour difference (ΔE76) of 4-neighbour pixels across tile borders and inside tiles.

    The grids are drawn and measured by :func:`tilesets.dictionary.seam_ratio` (every pair of
    horizontally or vertically adjacent pixels counts once, in CIELAB, alpha ignored).  Real
    screens, whose objects sit on the tile grid, measure about 1.5-2 (the example screens
    1.5, the pyxel platformer screens 2.0); a level whose pieces do not join measures far
    higher, one smeared across its tiles lower.

    Parameters
    ----------
    grids : iterable of ndarray, shape (rows, cols), integer
        Cell values.
    state_tiles : callable
        ``state_tiles(values) -> ndarray (V, T, T, C)``, pixels of each value.

    Returns
    -------
    dict
        ``border``, ``interior`` (mean ΔE76, None where nothing was measured) and ``ratio``
        (``border / interior``; None when the interior is uniform or nothing was measured).
    """
    from tilesets.dictionary import seam_ratio

    images, t, multi = [], 0, False
    for g in grids:
        g = np.asarray(g)
        if g.size == 0:
            continue
        img = join_grid(_cell_pixels(g, state_tiles))[..., :3]       # (rows*T, cols*T, 3)
        t = img.shape[0] // g.shape[0]
        multi |= g.shape[0] > 1 or g.shape[1] > 1
        images.append(img)
    if not images:
        return {"border": None, "interior": None, "ratio": None}
    r = seam_ratio(images, t)
    border = r["border"] if multi else None
    interior = r["interior"] if t > 1 else None
    ratio = border / interior if border is not None and interior else None
    return {"border": _round(border), "interior": _round(interior),
            "ratio": None if ratio is None else round(float(ratio), 3)}


def add_seam_pairs(adj: Adjacency, state_tiles: np.ndarray, *, per_side: int = 2) -> Adjacency:
    """Add, for every state and side, the ``per_side`` best-matching seams as allowed pairs.

    Generated screens are small, so many tiles (and chunks) are seen with one neighbour per
    side or, at a screen's edge, none: their adjacency graph has dead ends and WFC cannot fill a
    large level.  This adds pairs whose touching pixel rows / columns are closest (squared RGBA
    distance), both the best ``b`` for each ``a`` and the best ``a`` for each ``b``, so every
    state can continue on each side with a visually continuous neighbour.  Added pairs get
    count 1 and are marked in ``seam_right`` / ``seam_down``.

    Parameters
    ----------
    adj : Adjacency
    state_tiles : ndarray, shape (S, T, T, C), uint8
        Pixels of each state (flips applied; a chunk's pixels for chunk states, see
        :func:`chunk_pixels`), in the order of ``adj.states``.
    per_side : int, optional
        Seam partners added per state and side (0 returns ``adj`` unchanged).

    Returns
    -------
    Adjacency
    """
    s = adj.n_states
    t = np.asarray(state_tiles)
    if t.ndim != 4 or t.shape[0] != s:
        raise ValueError(f"state_tiles must have shape ({s}, T, T, C), got {t.shape}")
    if per_side < 0:
        raise ValueError(f"per_side must be >= 0, got {per_side}")
    if per_side == 0 or s < 2:
        return adj
    f = t.astype(np.float32)
    pairs = {
        # a's right column against b's left column; a's bottom row against b's top row
        "right": (f[:, :, -1, :].reshape(s, -1), f[:, :, 0, :].reshape(s, -1), adj.right),
        "down": (f[:, -1, :, :].reshape(s, -1), f[:, 0, :, :].reshape(s, -1), adj.down),
    }
    out = {}
    for name, (edge_a, edge_b, counts) in pairs.items():
        d = ((edge_a ** 2).sum(1)[:, None] + (edge_b ** 2).sum(1)[None, :]
             - 2.0 * edge_a @ edge_b.T)
        d = np.maximum(d, 0.0)
        d[counts > 0] = np.inf  # already allowed
        m = min(per_side, s)
        add = np.zeros((s, s), bool)
        rows = np.argsort(d, axis=1, kind="stable")[:, :m]  # best b for each a
        add[np.repeat(np.arange(s), m), rows.ravel()] = True
        cols = np.argsort(d, axis=0, kind="stable")[:m, :]  # best a for each b
        add[cols.ravel(), np.tile(np.arange(s), m)] = True
        add &= np.isfinite(d)
        new = counts.copy()
        new[add] = 1
        out[name] = (new, add)
    return Adjacency(states=adj.states, weights=adj.weights, right=out["right"][0],
                     down=out["down"][0], seam_right=out["right"][1], seam_down=out["down"][1])


def count_violations(grid: np.ndarray, adj: Adjacency, *, observed_only: bool = False) -> int:
    """Number of horizontal and vertical neighbour pairs of ``grid`` the model does not allow.

    With ``observed_only``, pairs added by :func:`add_seam_pairs` count as violations too, so
    the result is the number of pairs never seen in the examples.  Cells whose value is not a
    state of ``adj`` count as violating every pair they are in.
    """
    if observed_only and adj.seam_right is not None:
        adj = Adjacency(states=adj.states, weights=adj.weights,
                        right=np.where(adj.seam_right, 0, adj.right),
                        down=np.where(adj.seam_down, 0, adj.down))
    g = np.asarray(grid).astype(np.uint64)
    pos = np.searchsorted(adj.states.astype(np.uint64), g)
    pos = np.minimum(pos, adj.n_states - 1)
    known = adj.states.astype(np.uint64)[pos] == g
    bad = 0
    if g.shape[1] > 1:
        ok = (adj.right[pos[:, :-1], pos[:, 1:]] > 0) & known[:, :-1] & known[:, 1:]
        bad += int((~ok).sum())
    if g.shape[0] > 1:
        ok = (adj.down[pos[:-1, :], pos[1:, :]] > 0) & known[:-1, :] & known[1:, :]
        bad += int((~ok).sum())
    return bad


class _Contradiction(Exception):
    pass


class _Solver:
    """One WFC grid: boolean domains (H, W, S), arc-consistency propagation, and per-cell
    domain size / weight sums kept up to date so picking the next cell is O(H * W)."""

    #: supports of domains larger than this are memoised (they recur while the grid is open)
    SMALL = 32
    CACHE = 1024

    def __init__(self, adj: Adjacency, height: int, width: int):
        self.h, self.w, self.s = height, width, adj.n_states
        r = adj.right > 0
        d = adj.down > 0
        # (dy, dx, allowed[a, b]: b may sit at (y+dy, x+dx) when a is at (y, x))
        self.dirs = ((0, 1, r), (0, -1, r.T.copy()), (1, 0, d), (-1, 0, d.T.copy()))
        # The same relations as CSR lists (partners of each state): sparse models propagate
        # in time proportional to the partners, not to S.
        self.csr = []
        for _, _, m in self.dirs:
            deg = m.sum(axis=1)
            indptr = np.zeros(self.s + 1, np.int64)
            np.cumsum(deg, out=indptr[1:])
            self.csr.append((deg, indptr, np.nonzero(m)[1].astype(np.int64)))
        w = adj.weights.astype(np.float64)
        self.weights = w
        self.wlogw = w * np.log(np.maximum(w, 1e-300))
        self.dom = np.ones((height, width, self.s), bool)
        self.count = np.full((height, width), self.s, np.int64)
        self.sw = np.full((height, width), w.sum())
        self.swl = np.full((height, width), self.wlogw.sum())
        #: cells decided to each state (domain of one), for the reuse penalty
        self.uses = np.zeros(self.s, np.int64)
        self._support: dict[tuple[bytes, int], np.ndarray] = {}

    # -- state
    def snapshot(self) -> tuple:
        return (self.dom.copy(), self.count.copy(), self.sw.copy(), self.swl.copy(),
                self.uses.copy())

    def restore(self, snap: tuple) -> None:
        self.dom, self.count, self.sw, self.swl, self.uses = snap

    def set_domain(self, y: int, x: int, new: np.ndarray) -> None:
        # Domains only shrink between snapshots, so a cell reaches one state at most once.
        was = int(self.count[y, x])
        self.dom[y, x] = new
        self.count[y, x] = int(new.sum())
        if self.count[y, x] == 1 and was != 1:
            self.uses[int(np.argmax(new))] += 1
        self.sw[y, x] = float(self.weights[new].sum())
        self.swl[y, x] = float(self.wlogw[new].sum())

    # -- propagation
    def _support_of(self, here: np.ndarray, k: int, n_here: int) -> np.ndarray:
        if n_here <= self.SMALL:
            return self._support_now(here, k)
        key = (np.packbits(here).tobytes(), k)
        sup = self._support.get(key)
        if sup is None:
            if len(self._support) >= self.CACHE:
                self._support.clear()
            sup = self._support[key] = self._support_now(here, k)
        return sup

    def _support_now(self, here: np.ndarray, k: int) -> np.ndarray:
        """States allowed next to some state of ``here`` in direction ``k``."""
        if self.s <= 256:
            return self.dirs[k][2][here].any(axis=0)
        deg, indptr, indices = self.csr[k]
        idx = np.flatnonzero(here)
        counts = deg[idx]
        total = int(counts.sum())
        if total * 8 > idx.size * self.s:  # dense relation: a row-wise OR is cheaper
            return self.dirs[k][2][idx].any(axis=0)
        sup = np.zeros(self.s, bool)
        if total:
            offs = np.repeat(indptr[idx] - np.cumsum(counts) + counts, counts)
            sup[indices[offs + np.arange(total)]] = True
        return sup

    def propagate(self, cells: Iterable[tuple[int, int]]) -> None:
        queue = deque(cells)
        queued = set(queue)
        while queue:
            y, x = queue.popleft()
            queued.discard((y, x))
            here = self.dom[y, x]
            n_here = int(self.count[y, x])
            for k, (dy, dx, _) in enumerate(self.dirs):
                ny, nx = y + dy, x + dx
                if not (0 <= ny < self.h and 0 <= nx < self.w):
                    continue
                there = self.dom[ny, nx]
                new = there & self._support_of(here, k, n_here)
                n_new = int(new.sum())
                if n_new == self.count[ny, nx]:
                    continue
                if n_new == 0:
                    raise _Contradiction((ny, nx))
                self.set_domain(ny, nx, new)
                if (ny, nx) not in queued:
                    queued.add((ny, nx))
                    queue.append((ny, nx))

    def pick_cell(self, rng: np.random.Generator) -> Optional[tuple[int, int]]:
        open_ = np.flatnonzero(self.count.ravel() > 1)
        if open_.size == 0:
            return None
        sw = self.sw.ravel()[open_]
        ent = np.log(sw) - self.swl.ravel()[open_] / sw
        ent = ent + rng.random(open_.size) * 1e-6
        i = int(open_[int(np.argmin(ent))])
        return divmod(i, self.w)

    def grid(self, states: np.ndarray) -> np.ndarray:
        return states[np.argmax(self.dom, axis=2)]


def generate(adj: Adjacency, *, width: int, height: int, seed: int = 0, attempts: int = 5,
             max_backtracks: int = 200, history: Optional[int] = None,
             time_limit: Optional[float] = None, reuse_penalty: float = 0.0,
             frequency: bool = False, row_factors: Optional[np.ndarray] = None,
             reuse_share: Optional[np.ndarray] = None) -> WfcResult:
    """Generate a ``height`` x ``width`` grid of states by Wave Function Collapse.

    Parameters
    ----------
    adj : Adjacency
        Model from :func:`learn_adjacency`.
    width, height : int
        Output size in cells (both >= 1).
    seed : int, optional
        RNG seed; the same seed and model give the same grid.
    attempts : int, optional
        WFC runs before falling back to the greedy fill (>= 0; 0 goes straight to the fallback).
    max_backtracks : int, optional
        Backtracks allowed per attempt before restarting.
    history : int, optional
        Decisions remembered for backtracking; each costs ``H * W * S`` bytes.  Default: as many
        as fit in :data:`HISTORY_BYTES`, at most 64.
    time_limit : float, optional
        Seconds WFC may take over all attempts; past it, the greedy fallback fills the grid.
    reuse_penalty : float, optional
        Each draw divides a state's weight by ``(1 + uses) ** reuse_penalty``, ``uses`` being
        the cells that already hold it, so no state floods the grid (0: classic WFC).  It only
        changes which allowed state is drawn, never what is allowed.
    frequency : bool, optional
        Weigh each decided neighbour's pair by how often it occurs (:func:`pair_weights`);
        default: 1 for every seen pair.
    row_factors : ndarray, shape (height, S), optional
        Multiplies a state's weight on each row (:func:`row_prior`).
    reuse_share : ndarray, shape (S,), optional
        Each state's share of the examples' cells: ``uses`` then counts only the cells beyond
        that share of the cells decided so far, so recurring states may recur as often as in
        the examples and only a flood is held back.

    Returns
    -------
    WfcResult
    """
    if width < 1 or height < 1:
        raise ValueError(f"width and height must be >= 1, got {width}x{height}")
    if history is None:
        history = int(max(1, min(64, HISTORY_BYTES // max(1, width * height * adj.n_states))))
    if attempts < 0 or max_backtracks < 0 or history < 1:
        raise ValueError("attempts and max_backtracks must be >= 0 and history >= 1")
    if adj.n_states == 0:
        raise ValueError("the adjacency model has no state")
    if not reuse_penalty >= 0:
        raise ValueError(f"reuse_penalty must be >= 0, got {reuse_penalty}")
    if row_factors is not None and np.shape(row_factors) != (height, adj.n_states):
        raise ValueError(f"row_factors must have shape ({height}, {adj.n_states}), "
                         f"got {np.shape(row_factors)}")
    if reuse_share is not None and np.shape(reuse_share) != (adj.n_states,):
        raise ValueError(f"reuse_share must have shape ({adj.n_states},)")
    rng = np.random.default_rng(seed)
    pair_r, pair_d = pair_weights(adj, frequency=frequency)
    deadline = None if time_limit is None else time.perf_counter() + float(time_limit)
    backtracks_total = contradictions = 0
    timed_out = False
    for attempt in range(1, attempts + 1):
        solver = _Solver(adj, height, width)
        backtracks = 0
        try:
            solver.propagate((y, x) for y in range(height) for x in range(width))
        except _Contradiction:
            contradictions += 1
            break  # the model admits no grid of this size at all: restarts cannot help
        stack: deque = deque(maxlen=history)
        solved = False
        while True:
            if deadline is not None and time.perf_counter() > deadline:
                timed_out = True
                break
            cell = solver.pick_cell(rng)
            if cell is None:
                solved = True
                break
            y, x = cell
            options = np.flatnonzero(solver.dom[y, x])
            p = adj.weights[options] * _context(solver, pair_r, pair_d, y, x, options)
            if row_factors is not None:
                p = p * row_factors[y, options]
            if reuse_penalty:
                p = p / (1.0 + _excess_uses(solver, options, reuse_share)) ** reuse_penalty
            if not p.sum() > 0:
                p = adj.weights[options].copy()
            choice = int(rng.choice(options, p=p / p.sum()))
            stack.append((solver.snapshot(), y, x, choice))
            only = np.zeros(adj.n_states, bool)
            only[choice] = True
            solver.set_domain(y, x, only)
            try:
                solver.propagate([(y, x)])
                continue
            except _Contradiction:
                contradictions += 1
            # Backtrack: restore the grid before the latest decision and forbid that choice;
            # a cell with no choice left sends us one decision further back.
            recovered = False
            while stack and backtracks < max_backtracks:
                backtracks += 1
                snap, sy, sx, sc = stack.pop()
                solver.restore(snap)
                left = solver.dom[sy, sx].copy()
                left[sc] = False
                if not left.any():
                    continue
                solver.set_domain(sy, sx, left)
                try:
                    solver.propagate([(sy, sx)])
                    recovered = True
                    break
                except _Contradiction:
                    contradictions += 1
            if not recovered:
                break
        backtracks_total += backtracks
        if timed_out:
            break
        if solved:
            grid = solver.grid(adj.states)
            method = "wfc" if attempt == 1 and backtracks == 0 else "wfc-backtracking"
            return WfcResult(grid=grid.astype(np.uint32), method=method, attempts=attempt,
                             backtracks=backtracks_total, contradictions=contradictions,
                             violations=count_violations(grid, adj),
                             stats=_stats(grid, adj))
    made = min(attempt, attempts) if attempts else 0
    grid = greedy_fill(adj, width=width, height=height, rng=rng)
    return WfcResult(grid=grid, method="greedy-fallback", attempts=made,
                     backtracks=backtracks_total, contradictions=contradictions,
                     violations=count_violations(grid, adj),
                     stats=dict(_stats(grid, adj), timed_out=timed_out))


def make_level(maps: Iterable[np.ndarray], state_tiles: Optional[Callable[[np.ndarray], np.ndarray]]
               = None, *, width: int, height: int, seed: int = 0, attempts: int = 5,
               seams: int = SEAMS, chunk: int = CHUNK, reuse_penalty: float = REUSE_PENALTY,
               time_limit: Optional[float] = None, max_states: Optional[int] = MAX_STATES,
               model: str = "auto", row_priors: bool = True) -> WfcResult:
    """Learn from ``maps`` and generate a level: from tiles when they recur, else from chunks.

    1. ``model="tiles"``, or ``"auto"`` and the tiles of ``maps`` recur
       (:func:`measure_recurrence`), or ``chunk`` is 1: WFC over the tile pairs seen in
       ``maps`` (flip bits part of the state), draws weighted by pair frequency and, for
       examples at least :data:`ROW_PRIOR_MIN_ROWS` tall, by row (:func:`row_prior`).  With
       ``"auto"``, a level whose commonest tile *floods* it (more than :data:`FLOOD_SHARE` of
       the cells and :data:`FLOOD_RATIO` times its share of the examples: too few pairs seen
       for anything else to tile a large grid) is made again from chunks, if they succeed;
    2. otherwise WFC over ``chunk`` x ``chunk`` chunks cut from ``maps`` (:func:`learn_chunks`),
       allowed next to each other where an example shows them so or where their pixels are
       among the ``seams`` best-matching seams of either (:func:`add_seam_pairs`); the chunk
       grid covers the level and is cropped to it.  Skipped when ``state_tiles`` is not given
       or no map holds a whole chunk; if it falls back, step 1's tile model is tried;
    3. if the tile model falls back and ``seams > 0``: WFC over the seen tile pairs plus
       ``seams`` best-matching seams per tile and side;
    4. otherwise the greedy fallback of the last model tried.

    Parameters
    ----------
    maps : iterable of ndarray, shape (rows, cols), integer
        Example grids.
    state_tiles : callable, optional
        ``state_tiles(states) -> ndarray (S, T, T, C)``: pixels of each cell value (flips
        applied); required for steps 2 and 3 and for the seam figures.
    width, height, seed, attempts, time_limit
        As in :func:`generate` (``time_limit`` applies to each model).
    seams : int, optional
        Best-matching seam partners per state (chunk or tile) and side (0: seen pairs only).
    chunk : int, optional
        Chunk side in tiles for step 2 (1: tiles only).
    reuse_penalty : float, optional
        As in :func:`generate`; for the tile models only the uses beyond a state's share of the
        examples count (recurring tiles may recur, a flood may not).
    max_states : int, optional
        As in :func:`learn_adjacency`, for tiles and for chunks (default :data:`MAX_STATES`).
    model : {"auto", "tiles", "chunks"}
        Which model to try first (``"chunks"`` with ``chunk == 1`` means tiles).
    row_priors : bool, optional
        Use :func:`row_prior` in the tile models (when the examples are tall enough).

    Returns
    -------
    WfcResult
        ``grid`` holds cell values of ``maps``; ``violations`` counts pairs the model used does
        not allow (for chunks: pairs of neighbouring chunks; for the ``observed`` tile model
        this is every tile pair no example shows).  ``attempts``, ``backtracks`` and
        ``contradictions`` add up every model tried.  ``stats``: ``model`` (``"observed"``,
        ``"chunks"`` or ``"observed+seams"``), ``tried`` (models in the order tried),
        ``because`` (why the first model was chosen), ``recurrence``
        (:meth:`Recurrence.to_json` of ``maps``), ``row_prior`` (whether it was used),
        ``chunk`` (1 for tile models), ``states``, ``distinct_states`` (of the model used),
        ``distinct_tiles`` and ``top_share`` (share of the commonest cell value) of the level
        with ``example_top_share`` beside it, ``unseen_pairs`` (tile pairs no example shows)
        and, with ``state_tiles``, ``seam_diff`` / ``example_seam_diff``
        (:func:`seam_difference` of the level / of ``maps``) and ``seams``
        (``{"level": ..., "screens": ...}``, each a :func:`border_interior`: ΔE across tile
        borders, inside tiles, and their ratio).
    """
    maps = [np.asarray(m) for m in maps]
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    if seams < 0:
        raise ValueError(f"seams must be >= 0, got {seams}")
    if model not in MODELS:
        raise ValueError(f"model must be one of {', '.join(MODELS)}, got {model!r}")
    tile_adj = learn_adjacency(maps, max_states=max_states)
    rec = measure_recurrence(maps)
    first, because = _first_model(rec, model, chunk, state_tiles is not None, maps)
    opts = dict(seed=seed, attempts=attempts, time_limit=time_limit, reuse_penalty=reuse_penalty)
    prior = row_prior(maps, tile_adj.states, height) if row_priors else None
    tile_opts = dict(opts, frequency=True, row_factors=prior,
                     reuse_share=tile_adj.weights / tile_adj.weights.sum())
    tried: list[WfcResult] = []
    result: Optional[WfcResult] = None
    chunk_args = (maps, chunk, seams, state_tiles, max_states, width, height, opts)
    if first == "chunks":
        r = _chunk_level(*chunk_args)
        tried.append(r)
        if r.method != "greedy-fallback":
            result = r
    if result is None:
        tried += _tile_level(tile_adj, seams, state_tiles, width, height, tile_opts)
        result = tried[-1]
        share = _top_share(result.grid)
        ex_share = float(tile_adj.weights.max() / tile_adj.weights.sum())
        if (model == "auto" and first == "observed" and rec.recurring
                and _can_chunk(maps, chunk, state_tiles is not None)
                and floods(share, ex_share)):
            r = _chunk_level(*chunk_args)
            tried.append(r)
            if r.method != "greedy-fallback":
                because += (f", but their seen pairs fill the level with one tile ({share:.0%} of "
                            f"the cells, {ex_share:.0%} in the screens): pieces")
                result = r
    result.attempts = sum(t.attempts for t in tried)
    result.backtracks = sum(t.backtracks for t in tried)
    result.contradictions = sum(t.contradictions for t in tried)
    _, counts = np.unique(result.grid, return_counts=True)
    result.stats.update(tried=[t.stats["model"] for t in tried], because=because,
                        recurrence=rec.to_json(),
                        row_prior=prior is not None and result.stats["model"] != "chunks",
                        unseen_pairs=count_violations(result.grid, tile_adj),
                        distinct_tiles=int(counts.size),
                        top_share=round(float(counts.max()) / result.grid.size, 4),
                        example_top_share=round(float(tile_adj.weights.max())
                                                / float(tile_adj.weights.sum()), 4))
    if state_tiles is not None:
        result.stats.update(seam_diff=_round(seam_difference([result.grid], state_tiles)),
                            example_seam_diff=_round(seam_difference(maps, state_tiles)),
                            seams={"level": border_interior([result.grid], state_tiles),
                                   "screens": border_interior(maps, state_tiles)})
    return result


#: A level of recurring tiles *floods* (and :func:`make_level` tries chunks instead) when its
#: commonest tile covers more than this share of the cells ... (0.5 let one style's level of
#: 43 screens keep a block of black over 37 % of it, 4.8 times the screens' 7.7 %)
FLOOD_SHARE = 0.25
#: ... and more than this many times its share of the examples' cells.
FLOOD_RATIO = 2.0


def floods(share: float, example_share: float) -> bool:
    """Whether a level whose commonest tile takes ``share`` of its cells (``example_share`` of
    the examples') is flooded by it: above :data:`FLOOD_SHARE` and :data:`FLOOD_RATIO` times
    the examples' share."""
    return share > max(FLOOD_SHARE, FLOOD_RATIO * example_share)


def _top_share(grid: np.ndarray) -> float:
    _, counts = np.unique(grid, return_counts=True)
    return float(counts.max()) / grid.size


def _can_chunk(maps: list[np.ndarray], chunk: int, has_pixels: bool) -> bool:
    return chunk > 1 and has_pixels and any(m.shape[0] >= chunk and m.shape[1] >= chunk
                                            for m in maps)


def _chunk_level(maps: list[np.ndarray], chunk: int, seams: int,
                 state_tiles: Callable[[np.ndarray], np.ndarray], max_states: Optional[int],
                 width: int, height: int, opts: dict) -> WfcResult:
    """WFC over chunks widened with seams; on success ``grid`` is expanded to cells."""
    blocks, adj = learn_chunks(maps, chunk, max_states=max_states)
    if seams:
        adj = add_seam_pairs(adj, chunk_pixels(blocks[adj.states], state_tiles), per_side=seams)
    r = generate(adj, width=-(-width // chunk), height=-(-height // chunk), **opts)
    r.stats.update(model="chunks", chunk=chunk, states=adj.n_states)
    if r.method != "greedy-fallback":
        r.grid = expand_chunks(r.grid, blocks, width=width, height=height)
    return r


def _tile_level(tile_adj: Adjacency, seams: int,
                state_tiles: Optional[Callable[[np.ndarray], np.ndarray]], width: int,
                height: int, opts: dict) -> list[WfcResult]:
    """WFC over the seen tile pairs, then (if that falls back) widened with seams."""
    r = generate(tile_adj, width=width, height=height, **opts)
    r.stats.update(model="observed", chunk=1, states=tile_adj.n_states)
    out = [r]
    if r.method == "greedy-fallback" and seams and state_tiles is not None:
        wide = add_seam_pairs(tile_adj, state_tiles(tile_adj.states), per_side=seams)
        r = generate(wide, width=width, height=height, **opts)
        r.stats.update(model="observed+seams", chunk=1, states=wide.n_states)
        out.append(r)
    return out


def _first_model(rec: Recurrence, model: str, chunk: int, has_pixels: bool,
                 maps: list[np.ndarray]) -> tuple[str, str]:
    """``("observed" | "chunks", why)``: the model :func:`make_level` tries first."""
    per_cell = f"{rec.states_per_cell:.3g} distinct tiles per cell, flips apart"
    if model == "tiles" or chunk == 1:
        return "observed", "single tiles asked for"
    can_chunk = _can_chunk(maps, chunk, has_pixels)
    if model == "auto" and rec.recurring:
        return "observed", f"tiles recur ({per_cell} <= {RECUR_PER_CELL})"
    if not can_chunk:
        why = "no tile pixels" if not has_pixels else f"no screen holds a {chunk}x{chunk} piece"
        return "observed", f"pieces impossible ({why})"
    if model == "chunks":
        return "chunks", "pieces asked for"
    return "chunks", f"tiles do not recur ({per_cell} > {RECUR_PER_CELL})"


def _round(x: Optional[float]) -> Optional[float]:
    """``x`` to 2 decimals; None or NaN (nothing measured) becomes None, which JSON can hold."""
    return None if x is None or x != x else round(float(x), 2)


def _stats(grid: np.ndarray, adj: Adjacency) -> dict:
    return {"unseen_pairs": count_violations(grid, adj, observed_only=True),
            "distinct_states": int(np.unique(grid).size)}


#: Weight of a seam pair (see :func:`add_seam_pairs`) relative to one observation of a pair.
SEAM_WEIGHT = 0.1


def _excess_uses(solver: "_Solver", options: np.ndarray,
                 share: Optional[np.ndarray]) -> np.ndarray:
    """Cells holding each option, or (with ``share``) only those beyond its expected share."""
    uses = solver.uses[options].astype(np.float64)
    if share is None:
        return uses
    return np.maximum(0.0, uses - share[options] * float(solver.uses.sum()))


def _context(solver: "_Solver", pair_r: np.ndarray, pair_d: np.ndarray, y: int, x: int,
             options: np.ndarray) -> np.ndarray:
    """Factor for each option from the kind of pair it makes with the decided neighbours.

    The domains already guarantee every option is *allowed*; this makes pairs seen in the
    generated screens more likely than seam-only ones.
    """
    f = np.ones(options.size)
    h, w = solver.h, solver.w
    for dy, dx in ((0, -1), (0, 1), (-1, 0), (1, 0)):
        ny, nx = y + dy, x + dx
        if not (0 <= ny < h and 0 <= nx < w) or solver.count[ny, nx] != 1:
            continue
        n = int(np.argmax(solver.dom[ny, nx]))
        if dx == -1:
            f *= pair_r[n, options]
        elif dx == 1:
            f *= pair_r[options, n]
        elif dy == -1:
            f *= pair_d[n, options]
        else:
            f *= pair_d[options, n]
    return f


def greedy_fill(adj: Adjacency, *, width: int, height: int,
                rng: np.random.Generator) -> np.ndarray:
    """Fill a grid in reading order with the most compatible states (fallback of :func:`generate`).

    Each cell draws, weighted by pair counts, among the states seen both right of its left
    neighbour and below its upper neighbour; if none is, among those seen next to either; if
    still none, by overall frequency.

    Returns
    -------
    ndarray, shape (height, width), uint32
    """
    s = adj.n_states
    idx = np.zeros((height, width), np.int64)
    freq = adj.weights / adj.weights.sum()
    for y in range(height):
        for x in range(width):
            left = adj.right[idx[y, x - 1]].astype(np.float64) if x > 0 else None
            up = adj.down[idx[y - 1, x]].astype(np.float64) if y > 0 else None
            if left is not None and up is not None:
                both = left * up
                if both.any():
                    score = both
                else:
                    score = left + up
            elif left is not None:
                score = left
            elif up is not None:
                score = up
            else:
                score = freq.copy()
            if not score.any():
                score = freq.copy()
            idx[y, x] = int(rng.choice(s, p=score / score.sum()))
    return adj.states[idx].astype(np.uint32)
