"""Wave Function Collapse over tile adjacencies learned from example maps.

The model is the "simple tiled" form of WFC with adjacencies read off example maps (equivalent
to the overlapping model with 2-cell patterns on a tile grid): every distinct cell value of the
examples, flip bits included, is a state; state ``b`` may sit right of / below state ``a`` only if
that pair occurs somewhere in the examples, and states are drawn with their frequency as weight.

Generation (:func:`generate`) is seeded and deterministic:

1. observe the undecided cell of lowest Shannon entropy (ties broken by the seeded RNG), draw a
   state by weight (times :data:`SEAM_WEIGHT` per decided neighbour it meets only through a
   seam pair), propagate the constraints (arc consistency) over the whole grid;
2. on a contradiction, backtrack: restore the grid before the latest decision and forbid that
   choice; after ``max_backtracks`` backtracks, restart with the same RNG stream (``attempts``);
3. if every attempt fails (or the time limit passes), fall back to a greedy fill: cells in
   reading order, each drawn among the states allowed right of its left neighbour and below its
   upper neighbour, weighted by how often; where no state fits both, one fitting either is
   used and the pair is counted as a violation.  The result says which path was taken.

:func:`make_level` chains these: WFC over the seen pairs, then (if that falls back) WFC over
the seen pairs widened with the best-matching pixel seams of each tile (:func:`add_seam_pairs`),
then the greedy fill.

A WFC success has no violation at all: every horizontal and vertical pair of the output is
allowed by the model (:func:`count_violations` is 0); with the observed-only model that means
every pair occurs in the examples.  ``stats["unseen_pairs"]`` counts pairs never seen.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

import numpy as np


#: Default cap on distinct states in :func:`make_level` (the most frequent are kept).
MAX_STATES = 2048
#: Memory budget of the backtracking history, in bytes.
HISTORY_BYTES = 256 << 20


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
        ``unseen_pairs``: adjacent pairs never seen in the examples (seam pairs included).
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
    weights = np.zeros(s, np.float64)
    right = np.zeros(s * s, np.int64)
    down = np.zeros(s * s, np.int64)
    for g in grids:
        pos = np.minimum(np.searchsorted(states, g), s - 1)
        idx = np.where(states[pos] == g, pos, -1)
        known = idx >= 0
        weights += np.bincount(idx[known], minlength=s)
        for rel, a, b in ((right, idx[:, :-1], idx[:, 1:]), (down, idx[:-1, :], idx[1:, :])):
            ok = (a >= 0) & (b >= 0)
            if ok.any():
                rel += np.bincount(a[ok] * s + b[ok], minlength=s * s)
    return Adjacency(states=states.astype(np.uint32), weights=weights,
                     right=right.reshape(s, s), down=down.reshape(s, s))


def add_seam_pairs(adj: Adjacency, state_tiles: np.ndarray, *, per_side: int = 2) -> Adjacency:
    """Add, for every state and side, the ``per_side`` best-matching seams as allowed pairs.

    Generated screens are small, so many tiles are seen with one neighbour per side or, at a
    screen's edge, none: their adjacency graph has dead ends and WFC cannot fill a large level.
    This adds pairs whose touching pixel rows / columns are closest (squared RGBA distance), so
    every tile can continue on each side with a visually continuous neighbour.  Added pairs get
    count 1 and are marked in ``seam_right`` / ``seam_down``.

    Parameters
    ----------
    adj : Adjacency
    state_tiles : ndarray, shape (S, T, T, C), uint8
        Pixels of each state (flips applied), in the order of ``adj.states``.
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
        self._support: dict[tuple[bytes, int], np.ndarray] = {}

    # -- state
    def snapshot(self) -> tuple:
        return (self.dom.copy(), self.count.copy(), self.sw.copy(), self.swl.copy())

    def restore(self, snap: tuple) -> None:
        self.dom, self.count, self.sw, self.swl = snap

    def set_domain(self, y: int, x: int, new: np.ndarray) -> None:
        self.dom[y, x] = new
        self.count[y, x] = int(new.sum())
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
             time_limit: Optional[float] = None) -> WfcResult:
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
    rng = np.random.default_rng(seed)
    pair_r, pair_d = _pair_weights(adj)
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
               seams: int = 2, time_limit: Optional[float] = None,
               max_states: Optional[int] = MAX_STATES) -> WfcResult:
    """Learn adjacencies from ``maps`` and generate a level, widening the model if needed.

    1. WFC over the pairs seen in ``maps``;
    2. if that falls back and ``seams > 0``, WFC again over the seen pairs plus ``seams``
       best-matching seams per tile and side (:func:`add_seam_pairs`);
    3. otherwise the greedy fallback of the widest model tried.

    Parameters
    ----------
    maps : iterable of ndarray, shape (rows, cols), integer
        Example grids.
    state_tiles : callable, optional
        ``state_tiles(states) -> ndarray (S, T, T, C)``: pixels of each state (flips applied);
        required for step 2.
    width, height, seed, attempts, time_limit
        As in :func:`generate` (``time_limit`` applies to each model).
    max_states : int, optional
        As in :func:`learn_adjacency` (default :data:`MAX_STATES`).
    seams : int, optional
        Seam partners per tile and side for step 2 (0: never widen).

    Returns
    -------
    WfcResult
        ``stats["model"]`` is ``"observed"`` or ``"observed+seams"``; ``stats["states"]`` the
        number of states.
    """
    maps = list(maps)
    adj = learn_adjacency(maps, max_states=max_states)
    result = generate(adj, width=width, height=height, seed=seed, attempts=attempts,
                      time_limit=time_limit)
    result.stats.update(model="observed", states=adj.n_states)
    if result.method != "greedy-fallback" or seams <= 0 or state_tiles is None:
        return result
    wide = add_seam_pairs(adj, state_tiles(adj.states), per_side=seams)
    second = generate(wide, width=width, height=height, seed=seed, attempts=attempts,
                      time_limit=time_limit)
    second.attempts += result.attempts
    second.backtracks += result.backtracks
    second.contradictions += result.contradictions
    second.stats.update(model="observed+seams", states=adj.n_states)
    return second


def _stats(grid: np.ndarray, adj: Adjacency) -> dict:
    return {"unseen_pairs": count_violations(grid, adj, observed_only=True),
            "distinct_states": int(np.unique(grid).size)}


#: Weight of a seam pair (see :func:`add_seam_pairs`) relative to one observation of a pair.
SEAM_WEIGHT = 0.1


def _pair_weights(adj: Adjacency) -> tuple[np.ndarray, np.ndarray]:
    """1 for a seen pair, :data:`SEAM_WEIGHT` for a seam pair, 0 otherwise.

    Seen pairs are not weighted by their counts: the state weights already carry frequency,
    and count products feed back until one tile (the sky) fills the level.
    """
    r = (adj.right > 0).astype(np.float64)
    d = (adj.down > 0).astype(np.float64)
    if adj.seam_right is not None:
        r[adj.seam_right] = SEAM_WEIGHT
    if adj.seam_down is not None:
        d[adj.seam_down] = SEAM_WEIGHT
    return r, d


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
