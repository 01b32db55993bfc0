"""tilesets.bank: exact unique tiles, flip identity with Tiled flip bits, palette swaps."""
import numpy as np
import pytest

from tilesets import bank as B


def _tile(seed, t=4, colours=3):
    rng = np.random.default_rng(seed)
    pal = np.array([[255, 0, 0, 255], [0, 255, 0, 255], [0, 0, 255, 255], [9, 9, 9, 255]],
                   np.uint8)[:colours]
    return pal[rng.integers(0, colours, (t, t))]


def test_flipped_forms_share_one_bank_entry_with_flip_bits():
    a = _tile(1)
    tiles = np.stack([a, a[:, ::-1], a[::-1], a[::-1, ::-1]])
    bank = B.TileBank(tile_size=4, flips=True)
    cells = bank.add_tiles(tiles)
    assert len(bank) == 1
    assert cells.tolist() == [0, int(B.FLIP_H), int(B.FLIP_V), int(B.FLIP_H | B.FLIP_V)]


def test_cells_rebuild_the_image_exactly():
    rng = np.random.default_rng(0)
    base = np.stack([_tile(s) for s in range(3)])
    pick = rng.integers(0, 3, 12)
    codes = rng.integers(0, 4, 12)
    tiles = np.stack([B.flip_tile(base[p], c) for p, c in zip(pick, codes)])
    img = tiles.reshape(3, 4, 4, 4, 4).transpose(0, 2, 1, 3, 4).reshape(12, 16, 4)
    bank = B.TileBank(tile_size=4)
    cells = bank.add_image(img, "x")
    assert len(bank) == 3
    assert np.array_equal(B.apply_cells(bank.array(), cells), img)


def test_nes_mode_keeps_flipped_tiles_apart_and_sets_no_bits():
    a = _tile(2)
    bank = B.TileBank(tile_size=4, flips=False)
    cells = bank.add_tiles(np.stack([a, a[:, ::-1]]))
    assert len(bank) == 2 and cells.tolist() == [0, 1]


def test_identical_tiles_are_counted_and_first_origin_kept():
    a = _tile(3)
    bank = B.TileBank(tile_size=4)
    bank.add_tiles(np.stack([a, a]), origins=[("img", 0, 0), ("img", 4, 0)])
    bank.add_tiles(a[None], origins=[("other", 8, 8)])
    assert bank.counts == [3] and bank.origins == [("img", 0, 0)]


def test_normalize_alpha_zeroes_transparent_colour():
    px = np.array([[[10, 20, 30, 0], [10, 20, 30, 200], [1, 2, 3, 127]]], np.uint8)
    out = B.normalize_alpha(px)
    assert out.tolist() == [[[0, 0, 0, 0], [10, 20, 30, 255], [0, 0, 0, 0]]]


def test_palette_swap_is_grouped_even_when_flipped():
    a = _tile(4)
    swap = a.copy()
    red, green = np.all(a == [255, 0, 0, 255], -1), np.all(a == [0, 255, 0, 255], -1)
    swap[red], swap[green] = [0, 255, 0, 255], [255, 0, 0, 255]
    other = _tile(5)
    tiles = np.stack([a, other, swap[:, ::-1]])
    assert B.palette_swap_groups(tiles, flips=True) == [[0, 2]]
    assert B.palette_swap_groups(tiles, flips=False) == []


def test_flat_tiles_are_not_palette_swaps():
    flat = np.zeros((2, 4, 4, 4), np.uint8)
    flat[1] = 255
    assert B.palette_swap_groups(flat) == []


def test_cell_encoding_round_trips():
    ids, codes = np.array([0, 5, 7, 2**29 - 1]), np.array([0, 1, 2, 3])
    cells = B.encode_cells(ids, codes)
    assert cells.dtype == np.uint32
    got_ids, got_codes = B.decode_cells(cells)
    assert got_ids.tolist() == ids.tolist() and got_codes.tolist() == codes.tolist()


def test_cut_tiles_rejects_partial_grid():
    with pytest.raises(ValueError, match="multiple"):
        B.cut_tiles(np.zeros((10, 8, 4), np.uint8), 8)


def test_wrong_tile_shape_is_rejected():
    with pytest.raises(ValueError, match="uint8"):
        B.TileBank(tile_size=8).add_tiles(np.zeros((1, 4, 4, 4), np.uint8))
