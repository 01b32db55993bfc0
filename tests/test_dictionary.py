"""tilesets.dictionary: the tile budget (learned dictionary) and the seam-aware assignment."""
import logging

import numpy as np
import pytest

from tilesets import dictionary as D
from tilesets.cells import ORIENTATIONS, Flip, flip_tile

PAL = np.array([[0, 0, 0, 255], [252, 252, 252, 255], [168, 16, 0, 255], [0, 120, 248, 255],
                [0, 168, 0, 255]], np.uint8)


def _base_tiles():
    """Three clean 8x8 tiles: brick rows, a diagonal ledge, a checker; asymmetric."""
    a = np.zeros((8, 8), int)
    a[[3, 7]] = 1
    a[:3, 2] = 1
    a[4:7, 6] = 1
    b = np.full((8, 8), 3)
    b[np.tril_indices(8)] = 4
    b[0, :] = 0
    c = (np.add.outer(np.arange(8) // 2, np.arange(8) // 2) % 2) * 2
    c[:, :2] = 1
    return np.stack([PAL[a], PAL[b], PAL[c]])


def _noisy_corpus(n=90, seed=0, speckle=2):
    rng = np.random.default_rng(seed)
    base = _base_tiles()
    pick = np.arange(n) % 3
    tiles = base[pick].copy()
    for i in range(n):
        for _ in range(speckle):
            y, x = rng.integers(0, 8, 2)
            tiles[i, y, x] = PAL[rng.integers(0, len(PAL))]
    return tiles, base


def _as_set(tiles):
    """Tiles as a set, each up to orientation (Tiled mode may store any of the four)."""
    return {min(np.ascontiguousarray(flip_tile(t, ORIENTATIONS[o])).tobytes() for o in range(4))
            for t in tiles}


def _orientations(tile):
    return [flip_tile(tile, ORIENTATIONS[o]) for o in range(4)]


# --------------------------------------------------------------------------- learning
def test_max_tiles_is_respected():
    tiles, _ = _noisy_corpus()
    assert len(D.learn_dictionary(tiles, max_tiles=2)) <= 2


def test_noisy_copies_of_three_tiles_give_back_the_three_clean_tiles():
    tiles, base = _noisy_corpus()
    dic = D.learn_dictionary(tiles, max_tiles=3)
    assert _as_set(dic.tiles) == _as_set(base)
    assert sorted(dic.counts.tolist()) == [30, 30, 30]


def test_representatives_use_only_input_colours():
    tiles, _ = _noisy_corpus(speckle=6)
    dic = D.learn_dictionary(tiles, max_tiles=6)
    used = {tuple(p) for p in dic.tiles.reshape(-1, 4)}
    assert used <= {tuple(p) for p in tiles.reshape(-1, 4)}


def test_colour_limit_keeps_the_most_used_colours():
    tile = np.broadcast_to(PAL[0], (8, 8, 4)).copy()
    tile[:4] = PAL[1]
    tile[0, 0], tile[7, 7], tile[4, 0] = PAL[2], PAL[3], PAL[4]    # 5 colours, 3 of them rare
    dic = D.learn_dictionary(np.stack([tile] * 3), max_tiles=1, max_colours=2)
    assert len(np.unique(dic.tiles.reshape(-1, 4), axis=0)) == 2


def test_lone_tile_loses_its_isolated_pixel():
    tile = np.broadcast_to(PAL[3], (8, 8, 4)).copy()
    tile[4:] = PAL[4]
    speckled = tile.copy()
    speckled[2, 3] = PAL[1]
    dic = D.learn_dictionary(speckled[None], max_tiles=1)
    assert np.array_equal(dic.tiles[0], tile)


def test_an_entry_standing_for_one_tile_only_is_dropped():
    base = _base_tiles()
    odd = np.broadcast_to(PAL[2], (1, 8, 8, 4))
    tiles = np.concatenate([np.repeat(base, 5, axis=0), odd])
    assert len(D.learn_dictionary(tiles, max_tiles=4, min_uses=1)) == 4
    assert _as_set(D.learn_dictionary(tiles, max_tiles=4).tiles) == _as_set(base)


def test_same_seed_same_dictionary():
    tiles, _ = _noisy_corpus(speckle=5)
    a = D.learn_dictionary(tiles, max_tiles=5, seed=3)
    b = D.learn_dictionary(tiles, max_tiles=5, seed=3)
    assert np.array_equal(a.tiles, b.tiles) and np.array_equal(a.counts, b.counts)


def test_flipped_copies_share_one_entry_in_tiled_mode_but_not_in_nes_mode():
    base = _base_tiles()[0]
    tiles = np.stack(_orientations(base) * 3)
    assert len(D.learn_dictionary(tiles, max_tiles=4, flips=True)) == 1
    assert len(D.learn_dictionary(tiles, max_tiles=4, flips=False)) == 4


def test_automatic_k_stays_small_for_a_few_tiles():
    tiles, base = _noisy_corpus(n=150, speckle=1)
    dic = D.learn_dictionary(tiles)
    assert dic.curve and dic.curve[0][0] == 8
    assert len(dic) <= 8
    assert _as_set(base) <= _as_set(dic.tiles)


def test_automatic_k_keeps_every_entry_for_several_cells_on_a_small_corpus():
    rng = np.random.default_rng(0)
    tiles = PAL[rng.integers(0, len(PAL), (40, 8, 8))]              # 40 unrelated tiles
    dic = D.learn_dictionary(tiles)
    assert len(dic) <= 40 // D.AUTO_MIN_USES


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("k", [0, -3])
def test_non_positive_max_tiles_is_a_clear_error(k):
    tiles, _ = _noisy_corpus()
    with pytest.raises(ValueError, match="max_tiles"):
        D.learn_dictionary(tiles, max_tiles=k)


def test_max_tiles_above_the_distinct_tiles_warns_and_uses_them_all(caplog):
    base = _base_tiles()
    with caplog.at_level(logging.WARNING, logger="tilegan.tilesets.dictionary"):
        dic = D.learn_dictionary(np.concatenate([base, base]), max_tiles=50)
    assert _as_set(dic.tiles) == _as_set(base)
    assert any("max_tiles=50" in w and "3 distinct" in w for w in dic.warnings)
    assert "max_tiles=50" in caplog.text


def test_single_colour_corpus_gives_one_tile_and_a_warning():
    tiles = np.broadcast_to(PAL[3], (20, 8, 8, 4)).copy()
    dic = D.learn_dictionary(tiles, max_tiles=16)
    assert len(dic) == 1 and dic.counts.tolist() == [20]
    assert any("single colour" in w for w in dic.warnings)


def test_fully_transparent_tiles_are_one_entry():
    tiles, _ = _noisy_corpus(n=30)
    clear = np.zeros((10, 8, 8, 4), np.uint8)
    clear[..., :3] = 77                                  # colour under alpha 0 is ignored
    dic = D.learn_dictionary(np.concatenate([tiles, clear]), max_tiles=4)
    empty = [i for i, t in enumerate(dic.tiles) if not t[..., 3].any()]
    assert len(empty) == 1 and dic.counts[empty[0]] == 10
    assert not dic.tiles[empty[0]].any()


def test_empty_or_wrong_shaped_tiles_are_rejected():
    with pytest.raises(ValueError, match="empty"):
        D.learn_dictionary(np.zeros((0, 8, 8, 4), np.uint8))
    with pytest.raises(ValueError, match="RGBA"):
        D.learn_dictionary(np.zeros((3, 8, 8, 3), np.uint8))


def test_image_sides_must_be_tile_multiples():
    with pytest.raises(ValueError, match="multiple of the tile size"):
        D.grid_tiles(np.zeros((20, 16, 4), np.uint8), 8)


# --------------------------------------------------------------------------- assignment
def test_assignment_finds_the_flipped_tile_and_records_the_flip():
    base = _base_tiles()
    cells = np.stack([flip_tile(base[0], Flip.H), flip_tile(base[2], Flip.H | Flip.V)])[None]
    ids, o = D.assign(cells, base, flips=True, seam_weight=0)
    assert ids.tolist() == [[0, 2]] and o.tolist() == [[1, 3]]


def test_nes_mode_assignment_never_flips():
    base = _base_tiles()
    cells = np.stack([flip_tile(base[0], Flip.H), base[1]])[None]
    ids, o = D.assign(cells, base, flips=False, seam_weight=0)
    assert not o.any() and ids[0, 1] == 1


def _seam_case():
    """Left cell: a tile whose right column is red.  Right cell: its own pixels favour a tile
    whose left column is blue, by one pixel; the other candidate continues the red."""
    left = np.broadcast_to(PAL[4], (8, 8, 4)).copy()
    left[:, 7] = PAL[2]
    blue_edge = np.broadcast_to(PAL[1], (8, 8, 4)).copy()
    blue_edge[:, 0] = PAL[3]
    red_edge = np.broadcast_to(PAL[1], (8, 8, 4)).copy()
    red_edge[:, 0] = PAL[2]
    cell = blue_edge.copy()
    cell[5:, 0] = PAL[2]                                 # 5 blue, 3 red: a bit closer to blue
    dictionary = np.stack([left, blue_edge, red_edge])
    return np.stack([left, cell])[None], dictionary


def test_seam_term_changes_the_choice_when_the_edge_disagrees():
    cells, dictionary = _seam_case()
    ids0, _ = D.assign(cells, dictionary, flips=False, seam_weight=0)
    ids1, _ = D.assign(cells, dictionary, flips=False, seam_weight=1.0)
    assert ids0.tolist() == [[0, 1]]
    assert ids1.tolist() == [[0, 2]]


def test_calibrated_seam_weight_keeps_seams_no_stronger_than_the_cells():
    cells, dictionary = _seam_case()
    cal = D.calibrate_seam_weight(cells, dictionary, flips=False)
    assert cal["tried"][0][0] == 0 and cal["tried"][0][1] > cal["source_ratio"]
    assert cal["seam_weight"] > 0
    assert cal["tried"][-1][1] <= cal["source_ratio"] * (1 + D.SEAM_TOLERANCE)


def _texture_case():
    """A dithered cell (black/white checker), a flat grey tile of about its average colour and
    a dithered tile of another phase and colours (blue/white stripes)."""
    checker = np.add.outer(np.arange(8), np.arange(8)) % 2
    cell = PAL[np.where(checker, 1, 0)]
    grey = np.broadcast_to(np.array([119, 119, 119, 255], np.uint8), (8, 8, 4)).copy()
    stripes = PAL[np.where(np.arange(8)[None, :] % 2 == 0, 3, 1).repeat(8, 0)]
    return cell[None, None], np.stack([grey, stripes])


def test_texture_term_keeps_a_dithered_cell_dithered():
    cells, dictionary = _texture_case()
    flat, _ = D.assign(cells, dictionary, flips=False, seam_weight=0, texture_weight=0)
    kept, _ = D.assign(cells, dictionary, flips=False, seam_weight=0)
    assert flat.tolist() == [[0]]          # nearest colours alone regress to the flat average
    assert kept.tolist() == [[1]]          # the default texture weight keeps a texture
    assert D.TEXTURE_WEIGHT > 0


def test_texture_weight_must_be_a_number_at_least_zero():
    cells, dictionary = _texture_case()
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="texture_weight must be a number >= 0"):
            D.assign(cells, dictionary, texture_weight=bad)


def test_calibration_can_aim_at_another_ratio():
    cells, dictionary = _seam_case()
    own = D.calibrate_seam_weight(cells, dictionary, flips=False)
    loose = D.calibrate_seam_weight(cells, dictionary, flips=False, target_ratio=1e9)
    assert loose["seam_weight"] == 0 and loose["target_ratio"] == 1e9
    assert own["target_ratio"] == own["source_ratio"]


def test_max_distinct_caps_the_tiles_of_one_screen():
    base = _base_tiles()
    grid = np.stack([base[i % 3] for i in range(6)]).reshape(2, 3, 8, 8, 4)
    ids, _ = D.assign(grid, base, flips=False, seam_weight=0, max_distinct=2)
    assert len(np.unique(ids)) == 2


def test_nes_screen_limit_follows_the_pattern_table():
    assert D.nes_max_distinct(16) == D.NES_MAX_DISTINCT == 64
    assert D.nes_max_distinct(8) == 256


def test_rebuild_gives_tiled_cells_that_render_the_screen():
    tiles, base = _noisy_corpus()
    dic = D.learn_dictionary(tiles, max_tiles=3)
    screen = np.concatenate([np.concatenate([base[0], flip_tile(base[1], Flip.V)], 1),
                             np.concatenate([base[2], base[0]], 1)], 0)     # 16 x 16
    (cells,) = D.rebuild([screen], dic, seam_weight=0)
    assert cells.dtype == np.uint32 and cells.shape == (2, 2)
    from tilesets.cells import decode_cells
    assert np.array_equal(D.render(dic.tiles, *decode_cells(cells)), screen)


# --------------------------------------------------------------------------- measures
def test_seam_ratio_is_one_when_borders_look_like_the_inside_of_tiles():
    checker = (np.add.outer(np.arange(32), np.arange(32)) % 2 * 200).astype(np.uint8)
    r = D.seam_ratio([np.repeat(checker[..., None], 3, 2)], 8)
    assert r["ratio"] == pytest.approx(1.0)


def test_seam_ratio_is_high_when_flat_tiles_meet():
    blocks = (np.add.outer(np.arange(32) // 8, np.arange(32) // 8) % 2 * 200).astype(np.uint8)
    blocks[0, 0] = 100                                    # one interior difference, so finite
    assert D.seam_ratio([np.repeat(blocks[..., None], 3, 2)], 8)["ratio"] > 50


def test_isolated_rate_counts_lone_pixels():
    t = np.zeros((1, 4, 4, 3), np.uint8)
    t[0, 1, 1] = 255
    assert D.isolated_rate(t) == pytest.approx(1 / 16)
