"""Wave Function Collapse over learned tile adjacencies (tilesets/wfc.py)."""
from __future__ import annotations

import numpy as np
import pytest

from tests._helpers_tiled import make_maps
from tilesets import tiled
from tilesets.wfc import (add_seam_pairs, count_violations, generate, greedy_fill,
                         learn_adjacency, make_level)


@pytest.fixture
def adj():
    return learn_adjacency(make_maps(12, n=8, seed=3).values())


def test_learn_adjacency_counts_right_and_down_pairs():
    a = learn_adjacency([np.array([[1, 2], [1, 2]]), np.array([[1, 1]])])
    np.testing.assert_array_equal(a.states, [1, 2])
    np.testing.assert_array_equal(a.weights, [4, 2])
    np.testing.assert_array_equal(a.right, [[1, 2], [0, 0]])  # 1->2 twice, 1->1 once
    np.testing.assert_array_equal(a.down, [[1, 0], [0, 1]])


def test_flip_bits_make_distinct_states():
    a = learn_adjacency([np.array([[3, 3 | tiled.FLIP_H]], np.uint32)])
    assert a.n_states == 2


def test_same_seed_gives_same_level(adj):
    a = generate(adj, width=24, height=10, seed=7)
    b = generate(adj, width=24, height=10, seed=7)
    np.testing.assert_array_equal(a.grid, b.grid)
    assert a.summary() == b.summary()


def test_different_seeds_give_different_levels(adj):
    grids = [generate(adj, width=24, height=10, seed=s).grid for s in range(3)]
    assert not all(np.array_equal(grids[0], g) for g in grids[1:])


def test_solved_level_has_only_seen_neighbour_pairs(adj):
    for seed in range(4):
        r = generate(adj, width=20, height=8, seed=seed)
        assert r.method in ("wfc", "wfc-backtracking")
        assert r.violations == 0 == count_violations(r.grid, adj)
        assert r.grid.shape == (8, 20) and r.grid.dtype == np.uint32
        assert np.isin(r.grid, adj.states).all()


def test_backtracking_recovers_from_contradictions(adj):
    results = [generate(adj, width=20, height=8, seed=s) for s in range(6)]
    backtracked = [r for r in results if r.backtracks > 0]
    assert backtracked, "fixture should force at least one backtrack"
    assert all(r.violations == 0 for r in backtracked)


def test_impossible_model_falls_back_to_greedy_fill():
    # one 1x3 example: no vertical pair was ever seen, so no 2-row grid satisfies the model
    a = learn_adjacency([np.array([[1, 2, 3]])])
    r = generate(a, width=5, height=3, seed=0)
    assert r.method == "greedy-fallback"
    assert r.grid.shape == (3, 5) and np.isin(r.grid, a.states).all()
    assert r.violations == count_violations(r.grid, a) > 0


def test_zero_attempts_goes_straight_to_fallback(adj):
    r = generate(adj, width=6, height=4, seed=1, attempts=0)
    assert r.method == "greedy-fallback" and r.attempts == 0


def test_greedy_fill_prefers_seen_pairs():
    a = learn_adjacency([np.array([[1, 2, 1, 2], [2, 1, 2, 1]])])
    g = greedy_fill(a, width=6, height=4, rng=np.random.default_rng(0))
    assert count_violations(g, a) == 0


def test_count_violations_counts_unseen_pairs():
    a = learn_adjacency([np.array([[1, 2]])])
    assert count_violations(np.array([[1, 2]]), a) == 0
    assert count_violations(np.array([[2, 1]]), a) == 1
    assert count_violations(np.array([[1], [2]]), a) == 1
    assert count_violations(np.array([[7, 2]]), a) == 1  # unknown state


def test_bad_sizes_are_rejected(adj):
    with pytest.raises(ValueError, match="width and height"):
        generate(adj, width=0, height=3)
    with pytest.raises(ValueError, match="at least one map"):
        learn_adjacency([])


# --------------------------------------------------------------------------- seams, make_level
def _flat_tiles(colours):
    """One 4x4 RGBA tile per colour value."""
    return np.stack([np.full((4, 4, 4), [c, c, c, 255], np.uint8) for c in colours])


def test_add_seam_pairs_links_tiles_whose_edges_match():
    a = learn_adjacency([np.array([[0, 1]]), np.array([[2], [3]])])
    tiles = _flat_tiles([10, 200, 10, 200])
    tiles[0, :, -1] = [99, 99, 99, 255]  # tile 0's right edge ...
    tiles[2, :, 0] = [99, 99, 99, 255]   # ... matches tile 2's left edge exactly
    wide = add_seam_pairs(a, tiles, per_side=1)
    assert wide.right[0, 2] > 0 and wide.seam_right[0, 2]
    assert wide.right[0, 1] > 0 and not wide.seam_right[0, 1]  # seen pair kept, not marked
    assert count_violations(np.array([[0, 2]]), wide) == 0
    assert count_violations(np.array([[0, 2]]), wide, observed_only=True) == 1


def test_make_level_widens_the_model_when_seen_pairs_cannot_tile():
    maps = [np.array([[1, 2, 3]])]  # no vertical pair: no 2-row level from seen pairs alone
    tiles = {1: 10, 2: 20, 3: 30}
    r = make_level(maps, lambda states: _flat_tiles([tiles[int(s)] for s in states]),
                   width=6, height=4, seed=0, seams=1)
    assert r.stats["model"] == "observed+seams"
    assert r.method in ("wfc", "wfc-backtracking") and r.violations == 0
    assert r.stats["unseen_pairs"] > 0


def test_make_level_without_seams_reports_the_fallback():
    r = make_level([np.array([[1, 2, 3]])], None, width=6, height=4, seed=0, seams=0)
    assert r.stats["model"] == "observed" and r.method == "greedy-fallback"


def test_time_limit_sends_wfc_to_the_fallback(adj):
    r = generate(adj, width=20, height=8, seed=0, time_limit=0.0)
    assert r.method == "greedy-fallback" and r.stats["timed_out"]
