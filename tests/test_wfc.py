"""Wave Function Collapse over learned tile adjacencies (tilesets/wfc.py)."""
from __future__ import annotations

import numpy as np
import pytest

from tests._helpers_tiled import make_maps
from tilesets import tiled
from tilesets.wfc import count_violations, generate, greedy_fill, learn_adjacency


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
