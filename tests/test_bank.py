"""The tile domain's basics: cells and flips (tilesets/cells.py), pixel helpers
(tilesets/pixels.py), the exact bank and the image slicer (tilesets/bank.py), and the TileSet
artifact (tilesets/artifacts.py)."""
import numpy as np
import pytest

from stages._common import save_npy, save_npz, write_json
from tilesets import bank as B
from tilesets.artifacts import ArtifactError, TileSet
from tilesets.cells import (FLIP_MASK, ORIENTATIONS, Flip, cell_tiles, decode_cells, encode_cells,
                            flip_tile, flip_variants)
from tilesets.pixels import as_rgba, colours_per_tile, join_grid, lab_of_pixels, pack_colours


def _tile(seed, t=4, colours=3):
    rng = np.random.default_rng(seed)
    pal = np.array([[255, 0, 0, 255], [0, 255, 0, 255], [0, 0, 255, 255], [9, 9, 9, 255]],
                   np.uint8)[:colours]
    return pal[rng.integers(0, colours, (t, t))]


# --------------------------------------------------------------------------- cells and flips
def test_flip_bits_are_tileds_gid_bits():
    assert (int(Flip.H), int(Flip.V), int(Flip.D)) == (1 << 31, 1 << 30, 1 << 29)
    assert FLIP_MASK == 0xE0000000


def test_flip_tile_order_is_diagonal_then_horizontal_then_vertical():
    t = np.arange(4).reshape(2, 2, 1)
    # D: transpose -> [[0,2],[1,3]]; then H -> [[2,0],[3,1]]
    np.testing.assert_array_equal(flip_tile(t, Flip.D | Flip.H)[..., 0], [[2, 0], [3, 1]])


def test_flip_tile_flips_a_batch_like_each_tile():
    tiles = np.stack([_tile(1), _tile(2)])
    got = flip_tile(tiles, Flip.H | Flip.V)
    assert all(np.array_equal(got[i], tiles[i][::-1, ::-1]) for i in range(2))


def test_flip_tile_refuses_an_orientation_number():
    with pytest.raises(ValueError, match="ORIENTATIONS"):
        flip_tile(_tile(1), 1)


def test_flip_variants_follow_orientations():
    a = _tile(3)
    var = flip_variants(a[None])[0]
    assert [np.array_equal(var[o], flip_tile(a, f)) for o, f in enumerate(ORIENTATIONS)] == [True] * 4
    assert np.array_equal(var[1], a[:, ::-1]) and np.array_equal(var[2], a[::-1])


def test_cell_encoding_round_trips():
    ids, orientations = np.array([0, 5, 7, 2**29 - 1]), np.array([0, 1, 2, 3])
    cells = encode_cells(ids, orientations)
    assert cells.dtype == np.uint32 and int(cells[1]) == 5 | Flip.H and int(cells[2]) == 7 | Flip.V
    got_ids, got_o = decode_cells(cells)
    assert got_ids.tolist() == ids.tolist() and got_o.tolist() == orientations.tolist()


def test_cell_tiles_apply_each_cells_flips():
    bank = np.stack([_tile(1), _tile(2)])
    got = cell_tiles(bank, np.array([1, 0 | Flip.V], np.uint32))
    assert np.array_equal(got[0], bank[1]) and np.array_equal(got[1], bank[0][::-1])


# --------------------------------------------------------------------------- pixels
def test_lab_of_pixels_equals_converting_every_pixel():
    from palettes.colour import srgb_to_lab

    rgb = np.random.default_rng(5).integers(0, 4, (3, 7, 5, 3)).astype(np.uint8) * 85
    got = lab_of_pixels(rgb)
    assert got.shape == (3, 7, 5, 3)
    assert np.array_equal(got, srgb_to_lab(rgb.reshape(-1, 3)).reshape(got.shape))


def test_pack_colours_puts_red_lowest():
    px = np.array([[1, 2, 3], [1, 2, 4]], np.uint8)
    assert pack_colours(px).tolist() == [0x030201, 0x040201]


def test_colours_per_tile_counts_alpha_as_a_colour_channel():
    t = np.zeros((2, 2, 2, 4), np.uint8)
    t[1, 0, 0, 3] = 255                       # same RGB, other alpha
    assert colours_per_tile(t).tolist() == [1, 2]


def test_as_rgba_adds_opaque_alpha_to_rgb_only():
    rgb = np.zeros((1, 2, 2, 3), np.uint8)
    assert (as_rgba(rgb)[..., 3] == 255).all()
    rgba = np.zeros((1, 2, 2, 4), np.uint8)
    assert as_rgba(rgba) is rgba


def test_join_grid_inverts_grid_cut():
    from tilesets.artifacts import grid_cut

    img = np.arange(8 * 12 * 3, dtype=np.uint8).reshape(8, 12, 3)
    assert np.array_equal(join_grid(grid_cut(img, 4).reshape(2, 3, 4, 4, 3)), img)


# --------------------------------------------------------------------------- bank
def test_flipped_forms_share_one_bank_entry_with_flip_bits():
    a = _tile(1)
    tiles = np.stack([a, a[:, ::-1], a[::-1], a[::-1, ::-1]])
    bank = B.TileBank(tile_size=4, flips=True)
    cells = bank.add_tiles(tiles)
    assert len(bank) == 1
    assert cells.tolist() == [0, int(Flip.H), int(Flip.V), int(Flip.H | Flip.V)]


def test_cells_rebuild_the_image_exactly():
    rng = np.random.default_rng(0)
    base = np.stack([_tile(s) for s in range(3)])
    pick = rng.integers(0, 3, 12)
    orientation = rng.integers(0, 4, 12)
    tiles = np.stack([flip_tile(base[p], ORIENTATIONS[o]) for p, o in zip(pick, orientation)])
    img = join_grid(tiles.reshape(3, 4, 4, 4, 4))
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


def test_add_image_rejects_partial_grid():
    with pytest.raises(ValueError, match="multiple"):
        B.TileBank(tile_size=8).add_image(np.zeros((10, 8, 4), np.uint8), "x")


def test_wrong_tile_shape_is_rejected():
    with pytest.raises(ValueError, match="uint8"):
        B.TileBank(tile_size=8).add_tiles(np.zeros((1, 4, 4, 4), np.uint8))


# --------------------------------------------------------------------------- image slicer
def test_unique_name_numbers_repeated_stems_from_2():
    used: set = set()
    assert [B.unique_name("x", used) for _ in range(3)] == ["x", "x-2", "x-3"]


def test_slicer_crops_or_pads_and_skips_images_without_a_tile():
    img = np.full((6, 9, 4), 255, np.uint8)
    crop = B.ImageSlicer(tile_size=4, pad_mode="crop")
    assert crop.add("a", img) == "a" and crop.maps["a"].shape == (1, 2)
    assert crop.add("tiny", img[:3]) is None and "tiny" not in crop.maps
    pad = B.ImageSlicer(tile_size=4, pad_mode="pad")
    pad.add("a", img)
    assert pad.maps["a"].shape == (2, 3)


def test_slicer_tileset_keeps_origins_and_flips():
    a = _tile(1)
    s = B.ImageSlicer(tile_size=4, flips=False)
    s.add("img", np.concatenate([a, a[:, ::-1]], axis=1))
    ts = s.tileset(palette_name="nes")
    assert len(ts) == 2 and ts.flips is False and ts.palette_name == "nes"
    assert ts.origins == [("img", 0, 0), ("img", 4, 0)]


# --------------------------------------------------------------------------- TileSet artifact
def _tileset(k=3, flips=True):
    bank = np.stack([_tile(i) for i in range(k)])
    maps = {"b": np.array([[0, 1 | Flip.H]], np.uint32), "a": np.array([[2]], np.uint32)}
    return TileSet(bank, maps, [("a", 0, 0), None, ("b", 4, 0)][:k], flips=flips,
                   palette=[[0, 0, 0]], palette_name="nes")


def _save(ts, folder):
    ts.save(folder, save_npy, save_npz, write_json)
    return folder


def test_tileset_round_trips_through_its_files(tmp_path):
    ts = _tileset()
    back = TileSet.load(_save(ts, tmp_path))
    assert np.array_equal(back.bank, ts.bank) and sorted(back.maps) == ["a", "b"]
    assert all(back.maps[k].dtype == np.uint32 and np.array_equal(back.maps[k], ts.maps[k])
               for k in ts.maps)
    assert back.origins == ts.origins and back.flips and back.palette_name == "nes"
    assert back.tile_size == 4 and back.uses().tolist() == [1, 1, 1]


def test_tileset_without_json_has_flips_on_and_no_origins(tmp_path):
    _save(_tileset(), tmp_path)
    (tmp_path / "tileset.json").unlink()
    back = TileSet.load(tmp_path)
    assert back.flips and back.origins == [None] * 3 and back.palette is None


def test_tileset_rgb_bank_gets_opaque_alpha(tmp_path):
    _save(_tileset(), tmp_path)
    save_npy(tmp_path / "bank.npy", np.zeros((3, 4, 4, 3), np.uint8))
    assert (TileSet.load(tmp_path).bank[..., 3] == 255).all()


def test_tileset_map_naming_a_missing_tile_is_refused():
    ts = _tileset()
    ts.maps["c"] = np.array([[7]], np.uint32)
    with pytest.raises(ArtifactError, match="uses tile 7.*do not belong together"):
        ts.validate()


def test_tileset_with_flips_off_refuses_flip_bits():
    with pytest.raises(ArtifactError, match="flips off"):
        _tileset(flips=False).validate()


def test_tileset_refuses_a_bank_that_is_not_square_rgba():
    with pytest.raises(ArtifactError, match=r"\(K, T, T, 4\)"):
        TileSet(np.zeros((2, 4, 8, 4), np.uint8), {}).validate()


def test_tileset_negative_cells_are_refused(tmp_path):
    _save(_tileset(), tmp_path)
    save_npz(tmp_path / "maps.npz", a=np.array([[-1]], np.int64))
    with pytest.raises(ArtifactError, match="outside"):
        TileSet.load(tmp_path)


def test_tileset_missing_maps_names_the_folder(tmp_path):
    _save(_tileset(), tmp_path)
    (tmp_path / "maps.npz").unlink()
    with pytest.raises(ArtifactError, match="no maps.npz"):
        TileSet.load(tmp_path)
