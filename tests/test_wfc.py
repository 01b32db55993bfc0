"""Wave Function Collapse over learned tile adjacencies (tilesets/wfc.py)."""
from __future__ import annotations

import numpy as np
import pytest

from tests._helpers_tiled import make_maps
from tilesets.cells import ID_MASK, Flip
from tilesets.wfc import (add_seam_pairs, border_interior, chunk_pixels, count_violations,
                         expand_chunks, generate, greedy_fill, learn_adjacency, learn_chunks,
                         make_level, measure_recurrence, pair_weights, row_prior,
                         seam_difference)


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
    a = learn_adjacency([np.array([[3, 3 | Flip.H]], np.uint32)])
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
    assert r.stats["tried"] == ["observed"]  # no tile pixels, no chunk model


def test_time_limit_sends_wfc_to_the_fallback(adj):
    r = generate(adj, width=20, height=8, seed=0, time_limit=0.0)
    assert r.method == "greedy-fallback" and r.stats["timed_out"]


# --------------------------------------------------------------------------- chunks
def generated_like_screens(n: int = 24, *, cells: int = 4, tile: int = 8, flat_share: float = 0.15,
                           seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """Maps shaped like the pipeline's generated screens, and their tile bank.

    ``n`` screens of ``cells`` x ``cells`` tiles, each cut from a smooth colour gradient, so
    tiles meet cleanly inside a screen; after dedupe nearly every tile occurs once, except one
    flat dark tile (id 0) that covers about ``flat_share`` of the cells.  Over single tiles the
    seen pairs of such screens only cycle through the flat tile.

    Returns
    -------
    maps : list of ndarray, shape (cells, cells), uint32
    bank : ndarray, shape (K, tile, tile, 4), uint8
    """
    rng = np.random.default_rng(seed)
    tiles = [np.full((tile, tile, 4), [20, 20, 30, 255], np.uint8)]
    side = cells * tile
    yy, xx = np.mgrid[0:side, 0:side] / side
    maps = []
    for _ in range(n):
        a, b, c = rng.random((3, 3)) * 255
        img = np.full((side, side, 4), 255, np.uint8)
        img[..., :3] = (a + (b - a) * yy[..., None] + (c - a) * xx[..., None] / 2).clip(0, 255)
        m = np.zeros((cells, cells), np.uint32)
        for y in range(cells):
            for x in range(cells):
                if rng.random() >= flat_share:
                    m[y, x] = len(tiles)
                    tiles.append(img[y * tile:(y + 1) * tile, x * tile:(x + 1) * tile])
        maps.append(m)
    return maps, np.stack(tiles)


#: Colours of :func:`recurring_world` (NES-like): sky, white, green, dark green, brown,
#: dark brown, black.
SKY, WHITE, GREEN, DARK_GREEN = (92, 148, 252), (252, 252, 252), (0, 168, 0), (0, 88, 0)
BROWN, DARK_BROWN, BLACK = (200, 76, 12), (124, 40, 0), (0, 0, 0)
#: Tile ids of :func:`recurring_world`.
W_SKY, W_CLOUD, W_GRASS, W_DIRT, W_BRICK, W_BUSH, W_LEAVES = range(7)


def world_tiles(tile: int = 16) -> np.ndarray:
    """The seven tiles of :func:`recurring_world`, RGBA (7, tile, tile, 4): flat sky, a cloud
    on sky, grass over dirt, dirt, brick, a bush on sky, leaves."""
    t = tile
    yy, xx = np.mgrid[0:t, 0:t]
    out = np.zeros((7, t, t, 4), np.uint8)
    out[..., 3] = 255

    def paint(i, mask, colour):
        out[i, mask, :3] = colour

    everywhere = np.ones((t, t), bool)
    paint(W_SKY, everywhere, SKY)
    paint(W_CLOUD, everywhere, SKY)
    paint(W_CLOUD, ((xx - 0.6 * t) / (0.45 * t)) ** 2 + ((yy - 0.55 * t) / (0.3 * t)) ** 2 <= 1,
          WHITE)                                             # off-centre: flips show
    dots = (xx * 7 + yy * 3) % 11 == 0
    paint(W_DIRT, everywhere, BROWN)
    paint(W_DIRT, dots, DARK_BROWN)
    paint(W_GRASS, everywhere, BROWN)
    paint(W_GRASS, dots, DARK_BROWN)
    paint(W_GRASS, yy < 5 * t // 16, GREEN)
    paint(W_BRICK, everywhere, BROWN)
    paint(W_BRICK, (yy % (t // 2) == 0) | ((xx + (yy // (t // 2)) * (t // 2)) % t == 0), BLACK)
    paint(W_BUSH, everywhere, SKY)
    paint(W_BUSH, ((xx - t / 2) / (0.5 * t)) ** 2 + ((yy - t) / (0.6 * t)) ** 2 <= 1, GREEN)
    paint(W_LEAVES, everywhere, GREEN)
    paint(W_LEAVES, (xx * 5 + yy * 9) % 7 < 2, DARK_GREEN)
    return out


def recurring_world(n: int = 24, *, rows: int = 10, cols: int = 12, tile: int = 16,
                    seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """Screens rebuilt from a small dictionary: seven tiles used many times each.

    Ground (grass over dirt) fills the bottom 2-3 rows, stepping up and down between column
    runs; sky above, clouds (some flipped) in the top rows, brick platforms, bushes on the
    grass, leaf clusters.  Every screen reads bottom (ground) to top (sky), so tiles recur and
    rows have structure.

    Returns
    -------
    maps : list of ndarray, shape (rows, cols), uint32 (tile id | flip bits)
    bank : ndarray, shape (7, tile, tile, 4), uint8 (:func:`world_tiles`)
    """
    rng = np.random.default_rng(seed)
    maps = []
    for _ in range(n):
        m = np.full((rows, cols), W_SKY, np.uint32)
        x = 0
        while x < cols:
            run = int(rng.integers(3, 7))
            top = rows - int(rng.integers(2, 4))
            m[top, x:x + run] = W_GRASS
            m[top + 1:, x:x + run] = W_DIRT
            for c in range(x, min(cols, x + run)):
                if rng.random() < 0.2:
                    m[top - 1, c] = W_BUSH
            x += run
        for c in np.flatnonzero(rng.random(cols) < 0.25):
            m[int(rng.integers(0, 2)), c] = W_CLOUD | (int(Flip.H) if rng.random() < 0.5 else 0)
        y, c0 = int(rng.integers(2, rows - 5)), int(rng.integers(0, cols - 4))
        m[y, c0:c0 + int(rng.integers(2, 5))] = W_BRICK
        if rng.random() < 0.5:
            c0 = int(rng.integers(0, cols - 1))
            m[rows - 6:rows - 4, c0:c0 + 2] = W_LEAVES
        maps.append(m)
    return maps, world_tiles(tile)


@pytest.fixture(scope="module")
def screens():
    maps, bank = generated_like_screens()
    return maps, (lambda states: bank[np.asarray(states, np.int64) & ID_MASK])


def test_learn_chunks_cuts_every_window_and_counts_touching_pairs():
    blocks, a = learn_chunks([np.arange(16).reshape(4, 4)], 2)
    assert blocks.shape == (9, 2, 2) and blocks.dtype == np.uint32
    assert a.n_states == 9 and a.weights.sum() == 9
    first = {tuple(b.ravel()): i for i, b in enumerate(blocks)}
    top_left, top_right = first[(0, 1, 4, 5)], first[(2, 3, 6, 7)]
    bottom_left = first[(8, 9, 12, 13)]
    assert a.right[top_left, top_right] == 1 and a.down[top_left, bottom_left] == 1
    assert a.right.sum() == 3 and a.down.sum() == 3  # windows two apart, never overlapping


def test_learn_chunks_merges_equal_windows_and_skips_small_maps():
    blocks, a = learn_chunks([np.zeros((3, 4), np.uint32), np.array([[5, 6, 7]])], 2)
    assert blocks.shape == (1, 2, 2) and a.weights.tolist() == [6.0]
    assert a.right[0, 0] == 2 and a.down[0, 0] == 0
    with pytest.raises(ValueError, match="no map holds a 3x3 chunk"):
        learn_chunks([np.zeros((2, 5), np.uint32)], 3)


def test_expand_chunks_lays_out_blocks_and_crops():
    blocks = np.arange(8, dtype=np.uint32).reshape(2, 2, 2)
    cells = expand_chunks(np.array([[0, 1], [1, 0]]), blocks, width=3, height=3)
    np.testing.assert_array_equal(cells, [[0, 1, 4], [2, 3, 6], [4, 5, 0]])
    with pytest.raises(ValueError, match="cannot cover"):
        expand_chunks(np.array([[0]]), blocks, width=3, height=2)


def test_chunk_pixels_put_the_tiles_of_a_chunk_side_by_side():
    tiles = _flat_tiles([0, 10, 20, 30])
    px = chunk_pixels(np.array([[[0, 1], [2, 3]]]), lambda v: tiles[v])
    assert px.shape == (1, 8, 8, 4)
    assert px[0, 0, 0, 0] == 0 and px[0, 0, 7, 0] == 10 and px[0, 7, 0, 0] == 20
    assert px[0, 7, 7, 0] == 30


def test_seam_difference_measures_touching_pixels_only():
    tiles = _flat_tiles([0, 10])
    tiles[0, 1:3, 1:3] = 200  # inside the tile: not on a border
    st = lambda v: tiles[np.asarray(v)]  # noqa: E731
    assert seam_difference([np.array([[0, 0], [0, 0]])], st) == 0.0
    # channels 0-2 differ by 10 on every border pixel, alpha by 0
    assert seam_difference([np.array([[0, 1]])], st) == pytest.approx(7.5)
    assert np.isnan(seam_difference([np.array([[1]])], st))


def test_reuse_penalty_spreads_states_over_the_grid():
    # any state may sit next to any other; state 0 is drawn far more often by weight alone
    s = 10
    full = np.ones((s, s), np.int64)
    a = learn_adjacency([np.zeros((1, 1), np.uint32)])
    a = type(a)(states=np.arange(s, dtype=np.uint32), weights=np.r_[20.0, np.ones(s - 1)],
                right=full, down=full)
    plain = generate(a, width=20, height=10, seed=0)
    spread = generate(a, width=20, height=10, seed=0, reuse_penalty=2.0)
    share = lambda g: np.bincount(g.ravel()).max() / g.size  # noqa: E731
    assert share(plain.grid) > 0.5 and share(spread.grid) < 0.3
    assert spread.violations == 0
    with pytest.raises(ValueError, match="reuse_penalty"):
        generate(a, width=2, height=2, reuse_penalty=-1)


def test_tiles_alone_flood_the_level_from_generated_like_screens(screens):
    # the failure chunks fix: over single tiles only the flat tile can repeat
    maps, st = screens
    r = make_level(maps, st, width=64, height=15, seed=0, chunk=1)
    assert r.stats["model"] == "observed" and r.stats["top_share"] > 0.8


def test_chunk_level_uses_many_tiles_and_no_tile_floods_it(screens):
    maps, st = screens
    for seed in range(3):
        r = make_level(maps, st, width=64, height=15, seed=seed)
        assert r.stats["model"] == "chunks" and r.stats["chunk"] == 2
        assert r.method in ("wfc", "wfc-backtracking") and r.violations == 0
        assert r.grid.shape == (15, 64) and r.grid.dtype == np.uint32
        assert r.stats["top_share"] <= 0.25
        assert r.stats["distinct_tiles"] >= 150  # of 331
        assert r.stats["seam_diff"] <= 1.25 * r.stats["example_seam_diff"]


def test_chunk_level_is_made_of_screen_windows_meeting_at_allowed_seams(screens):
    maps, st = screens
    r = make_level(maps, st, width=63, height=15, seed=4)  # odd sizes: the last chunks cropped
    blocks, adj = learn_chunks(maps, 2)
    wide = add_seam_pairs(adj, chunk_pixels(blocks[adj.states], st), per_side=12)
    ids = {b.tobytes(): i for i, b in enumerate(blocks)}
    full = r.grid[:14, :62]  # whole chunks only
    chunk_grid = np.array([[ids[np.ascontiguousarray(full[y:y + 2, x:x + 2]).tobytes()]
                            for x in range(0, 62, 2)] for y in range(0, 14, 2)])
    assert count_violations(chunk_grid, wide) == 0
    # inside a chunk every tile pair is one a screen shows
    tile_adj = learn_adjacency(maps)
    assert sum(count_violations(full[y:y + 2, x:x + 2], tile_adj)
               for y in range(0, 14, 2) for x in range(0, 62, 2)) == 0
    assert r.stats["unseen_pairs"] > 0  # chunk borders: pixel seams, not seen pairs


def test_chunk_level_is_deterministic_by_seed(screens):
    maps, st = screens
    a, b, c = (make_level(maps, st, width=30, height=12, seed=s) for s in (3, 3, 4))
    np.testing.assert_array_equal(a.grid, b.grid)
    assert a.summary() == b.summary()
    assert not np.array_equal(a.grid, c.grid)


def test_chunk_model_that_cannot_tile_falls_back_to_tiles():
    # no two chunks ever touch (maps 3 wide) and no seams: the tile model takes over
    r = make_level([np.ones((3, 3), np.uint32)], _tiles_by_value, width=8, height=6, seed=0,
                   seams=0, model="chunks")
    assert r.stats["tried"] == ["chunks", "observed"] and r.stats["model"] == "observed"
    assert r.method == "wfc" and r.violations == 0 and r.attempts >= 1


def test_every_model_failing_ends_in_the_greedy_fill():
    maps = [np.array([[1, 2, 3], [4, 5, 6]], np.uint32)]  # no vertical cycle, no chunk pair
    r = make_level(maps, _tiles_by_value, width=8, height=6, seed=0, seams=0)
    assert r.stats["tried"] == ["chunks", "observed"] and r.method == "greedy-fallback"
    assert r.violations == count_violations(r.grid, learn_adjacency(maps)) > 0
    assert r.grid.shape == (6, 8) and np.isin(r.grid, np.arange(1, 7)).all()


def test_make_level_rejects_bad_chunk_and_seams():
    with pytest.raises(ValueError, match="chunk"):
        make_level([np.ones((2, 2), np.uint32)], _tiles_by_value, width=4, height=4, chunk=0)
    with pytest.raises(ValueError, match="seams"):
        make_level([np.ones((2, 2), np.uint32)], _tiles_by_value, width=4, height=4, seams=-1)


def _tiles_by_value(states):
    return _flat_tiles([(int(v) * 40) % 256 for v in states])


# --------------------------------------------------------------------------- recurring tiles
@pytest.fixture(scope="module")
def world():
    maps, bank = recurring_world()
    return maps, (lambda states: bank[np.asarray(states, np.int64) & ID_MASK])


def test_measure_recurrence_counts_tiles_states_and_reused_cells():
    r = measure_recurrence([np.array([[1, 1, 2]], np.uint32),
                            np.array([[1 | Flip.H, 3]], np.uint32)])
    assert (r.cells, r.tiles, r.states) == (5, 3, 4)
    assert r.tiles_per_cell == pytest.approx(0.6) and r.states_per_cell == pytest.approx(0.8)
    assert r.recurring_share == pytest.approx(0.6)  # the three cells of tile 1
    assert not r.recurring
    assert measure_recurrence(recurring_world(4)[0]).recurring


def test_recurring_tiles_make_a_level_of_seen_tile_pairs_only(world):
    maps, st = world
    for seed in range(3):
        r = make_level(maps, st, width=40, height=10, seed=seed)
        assert r.stats["model"] == "observed" and r.stats["tried"] == ["observed"]
        assert r.stats["because"].startswith("tiles recur")
        assert r.method in ("wfc", "wfc-backtracking")
        assert r.violations == 0 == count_violations(r.grid, learn_adjacency(maps))
        assert r.stats["unseen_pairs"] == 0
        # the level reuses tiles about as the screens do
        assert r.stats["top_share"] == pytest.approx(r.stats["example_top_share"], abs=0.1)


def test_screens_whose_tiles_do_not_recur_get_a_level_of_pieces(screens):
    maps, st = screens
    r = make_level(maps, st, width=32, height=12, seed=0)
    assert r.stats["model"] == "chunks" and r.stats["because"].startswith("tiles do not recur")
    assert not r.stats["recurrence"]["recurring"]


def test_recurring_tiles_whose_pairs_only_tile_one_way_fall_back_to_pieces():
    # eleven 2x2 screens, each three times: tiles recur, but the only pair that repeats in both
    # directions is the flat tile 0 beside itself, so the seen pairs fill a level with tile 0
    pictures = [np.arange(4 * i + 1, 4 * i + 5, dtype=np.uint32).reshape(2, 2) for i in range(10)]
    maps = (pictures + [np.zeros((2, 2), np.uint32)]) * 3
    r = make_level(maps, _tiles_by_value, width=16, height=8, seed=0)
    assert r.stats["recurrence"]["recurring"]
    assert r.stats["tried"] == ["observed", "chunks"] and r.stats["model"] == "chunks"
    assert "fill the level with one tile" in r.stats["because"]
    assert r.stats["top_share"] < 0.5
    forced = make_level(maps, _tiles_by_value, width=16, height=8, seed=0, model="tiles")
    assert forced.stats["model"] == "observed" and forced.stats["top_share"] == 1.0


def test_row_prior_favours_each_state_where_the_screens_have_it():
    top, bottom = 1, 2
    maps = [np.array([[top] * 3] * 3 + [[bottom] * 3] * 3, np.uint32)] * 2
    f = row_prior(maps, np.array([top, bottom], np.uint32), 12)
    assert f.shape == (12, 2)
    assert f[0, 0] > 1.5 and f[0, 1] < 0.5       # sky-like state on top
    assert f[-1, 1] > 1.5 and f[-1, 0] < 0.5     # ground-like state at the bottom
    assert row_prior([m[:4] for m in maps], np.array([top, bottom], np.uint32), 12) is None


def test_row_prior_puts_ground_at_the_bottom_and_sky_on_top(world):
    maps, st = world
    for seed in range(3):
        g = make_level(maps, st, width=40, height=10, seed=seed).grid & ID_MASK
        assert (g[-1] == W_DIRT).mean() >= 0.95 and np.isin(g[0], [W_SKY, W_CLOUD]).mean() >= 0.95
    flat = [make_level(maps, st, width=40, height=10, seed=s, row_priors=False).grid & ID_MASK
            for s in range(3)]
    assert np.mean([(g[-1] == W_DIRT).mean() for g in flat]) < 0.9  # the prior does it


def test_pair_weights_say_how_much_more_often_than_chance_a_pair_occurs():
    a = learn_adjacency([np.array([[1, 2, 1, 2, 1, 3]], np.uint32)])
    right, down = pair_weights(a)
    # 5 right pairs: 1->2 twice, 2->1 twice, 1->3 once; rows: 1 has 3, columns: 2 has 2
    assert right[0, 1] == pytest.approx(2 * 5 / (3 * 2))
    assert right[0, 2] == pytest.approx(1 * 5 / (3 * 1))
    assert right[1, 2] == 0 and not down.any()
    plain, _ = pair_weights(a, frequency=False)
    assert plain[0, 1] == plain[0, 2] == 1.0


def test_frequency_weighting_follows_the_screens_pairs():
    # after tile 1 comes tile 2 eleven times out of twelve; tile 3 is common elsewhere
    row = [1, 2] * 9 + [1, 3, 1, 2, 3, 3, 3, 1, 2]
    maps = [np.array([row], np.uint32)] + [np.array([[3] * 20], np.uint32)] * 6
    adj = learn_adjacency(maps)

    def after_one(frequency):
        g = generate(adj, width=400, height=1, seed=0, frequency=frequency).grid[0]
        nxt = g[1:][g[:-1] == 1]
        return (nxt == 2).mean()

    assert after_one(True) > 0.7 and after_one(False) < 0.5


def test_reuse_share_lets_recurring_tiles_recur(world):
    maps, _ = world
    adj = learn_adjacency(maps)
    share = adj.weights / adj.weights.sum()

    def top(**kw):
        return np.mean([np.unique(generate(adj, width=40, height=10, seed=s, frequency=True,
                                           reuse_penalty=1.0, **kw).grid,
                                  return_counts=True)[1].max() / 400 for s in range(3)])

    assert top(reuse_share=share) > top() + 0.1


def test_border_interior_compares_pixels_across_borders_with_pixels_inside():
    tiles = _flat_tiles([0, 255])
    st = lambda v: tiles[np.asarray(v)]  # noqa: E731
    flat = border_interior([np.array([[0, 1]])], st)
    assert flat["border"] == pytest.approx(100.0, abs=0.01)  # black against white
    assert flat["interior"] == 0.0 and flat["ratio"] is None
    tiles[1, :, :2, :3] = 0  # the white tile's left columns black: the border now agrees
    smooth = border_interior([np.array([[0, 1]])], st)
    assert smooth["border"] < 40.0 and smooth["interior"] > 0 and smooth["ratio"] is not None
    assert border_interior([], st) == {"border": None, "interior": None, "ratio": None}


def test_a_tile_over_a_quarter_of_the_level_and_twice_its_screen_share_floods_it():
    from tilesets.wfc import floods

    assert floods(0.37, 0.077)           # a style level's black block (measured: 37 % vs 7.7 %)
    assert floods(0.28, 0.078)
    assert not floods(0.6, 0.6)          # sky may cover as much of the level as of the screens
    assert not floods(0.2, 0.05)         # under a quarter of the level: left alone
