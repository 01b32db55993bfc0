"""The sheet laid out for people (tilesets/atlas.py): what a tile looks like, groups of rows in
sky-to-ground order, tile ids that follow the sheet."""
from __future__ import annotations

import numpy as np
import pytest

from tests.test_wfc import BROWN, DARK_BROWN, DARK_GREEN, GREEN, SKY, WHITE, world_tiles
from tilesets.atlas import (OTHER_GROUP, Kind, describe_tile, layout_sheet,
                            pack_atlas, tile_heights, tile_styles, unpack_atlas)
from tilesets.cells import FLIP_MASK, ID_MASK, Flip

T = 16


def _tile(colour) -> np.ndarray:
    t = np.zeros((T, T, 4), np.uint8)
    t[..., :3] = colour
    t[..., 3] = 255
    return t


def _sky(i: int) -> np.ndarray:
    """Flat sky with a small white speck at a place given by ``i`` (distinct, still flat)."""
    t = _tile(SKY)
    t[i % 12:i % 12 + 2, i // 12:i // 12 + 2, :3] = WHITE
    return t


def _grass(i: int) -> np.ndarray:
    """Green over brown, the line at row 4 + i % 3, a dark speck at column i."""
    t = _tile(BROWN)
    t[:4 + i % 3, :, :3] = GREEN
    t[12, i % T, :3] = DARK_BROWN
    return t


def _brick(i: int) -> np.ndarray:
    """Brown with dark mortar lines, offset by ``i``."""
    t = _tile(BROWN)
    t[(np.arange(T) + i) % 8 == 0, :, :3] = DARK_BROWN
    t[:, (np.arange(T) + 2 * i) % 8 == 0, :3] = DARK_BROWN
    return t


def _leaves(i: int) -> np.ndarray:
    t = _tile(GREEN)
    yy, xx = np.mgrid[0:T, 0:T]
    t[(xx * 5 + yy * (3 + i)) % 7 < 2, :3] = DARK_GREEN
    return t


@pytest.fixture(scope="module")
def kinds():
    """A shuffled bank of 6 sky, 3 leaves, 5 grass-edge and 8 brick tiles, with uses."""
    tiles = ([("sky", _sky(i)) for i in range(6)] + [("leaves", _leaves(i)) for i in range(3)]
             + [("grass", _grass(i)) for i in range(5)] + [("brick", _brick(i)) for i in range(8)])
    order = np.random.default_rng(1).permutation(len(tiles))
    names = [tiles[i][0] for i in order]
    bank = np.stack([tiles[i][1] for i in order])
    uses = np.random.default_rng(2).integers(1, 50, len(bank))
    return names, bank, uses


# --------------------------------------------------------------------------- describe_tile
def test_a_one_colour_tile_is_flat_and_named_by_its_colour():
    look = describe_tile(_sky(3))
    assert look.texture == "flat" and look.colour == "sky blue" and look.kind is Kind.SKY
    assert look.group == "sky blue flat"


def test_two_colour_regions_split_across_the_tile_make_an_edge_read_top_to_bottom():
    look = describe_tile(_grass(0))
    assert look.texture == "edge" and look.kind is Kind.EDGE
    assert look.colour == "green" and look.other == describe_tile(_tile(BROWN)).colour
    upside_down = describe_tile(_grass(0)[::-1])
    assert (upside_down.colour, upside_down.other) == (look.other, look.colour)


def test_mortar_lines_and_speckle_are_texture_not_an_edge():
    assert describe_tile(_brick(0)).texture == "textured"
    assert describe_tile(_brick(0)).kind is Kind.GROUND
    speckle = _tile(GREEN)
    speckle[::2, ::2, :3] = DARK_GREEN  # a quarter of the pixels, scattered
    assert describe_tile(speckle).texture == "textured"


def test_textured_green_is_foliage_and_a_clear_tile_is_transparent():
    assert describe_tile(_leaves(0)).kind is Kind.FOLIAGE
    assert describe_tile(_leaves(0)).group.endswith("foliage")
    clear = np.zeros((T, T, 4), np.uint8)
    clear[:2, :2] = [10, 10, 10, 255]
    assert describe_tile(clear).kind is Kind.TRANSPARENT


# --------------------------------------------------------------------------- layout_sheet
def test_tiles_of_one_kind_sit_together_in_rows_of_their_own(kinds):
    names, bank, uses = kinds
    lay = layout_sheet(bank, uses, columns=4)
    for g in lay.groups:
        pos = np.sort(lay.position[list(g.tiles)])
        np.testing.assert_array_equal(pos, np.arange(pos[0], pos[0] + len(pos)))  # contiguous
        assert len({names[b] for b in g.tiles}) == 1                              # one kind
        assert g.first == pos[0]
    big = [g for g in lay.groups if len(g.tiles) >= 2]
    assert all(g.first % 4 == 0 for g in big)  # groups of >= columns/2 tiles start a row
    assert sorted(lay.position.tolist()) == sorted(set(lay.position.tolist()))  # one tile a cell


def test_groups_go_sky_first_ground_last_with_the_edge_before_the_ground(kinds):
    names, bank, uses = kinds
    lay = layout_sheet(bank, uses, columns=4)
    assert [g.kind for g in lay.groups] == [Kind.SKY, Kind.FOLIAGE, Kind.EDGE, Kind.GROUND]
    assert [names[g.tiles[0]] for g in lay.groups] == ["sky", "leaves", "grass", "brick"]


def test_inside_a_group_the_most_used_tiles_come_first(kinds):
    names, bank, uses = kinds
    for g in layout_sheet(bank, uses, columns=4).groups:
        u = uses[list(g.tiles)]
        assert (np.diff(u) <= 0).all()
        assert g.uses == int(u.sum())


def test_sheet_ids_show_the_same_pixels_as_bank_ids(kinds):
    names, bank, uses = kinds
    lay = layout_sheet(bank, uses, columns=4)
    sheet = lay.sheet_tiles(bank)
    assert sheet.shape == (lay.tile_count, T, T, 4)
    cells = np.array([[3, 5 | Flip.H], [0 | Flip.V, 21]], np.uint32)
    remapped = lay.remap(cells)
    np.testing.assert_array_equal(remapped & FLIP_MASK, cells & FLIP_MASK)
    np.testing.assert_array_equal(sheet[remapped & ID_MASK], bank[cells & ID_MASK])
    atlas = pack_atlas(sheet, columns=lay.columns)
    np.testing.assert_array_equal(unpack_atlas(atlas, tile_size=T, count=lay.tile_count), sheet)
    blank = lay.bank_of() < 0
    assert not sheet[blank].any()  # blank cells fully transparent
    assert [lay.group_of()[i] is None for i in range(lay.tile_count)] == blank.tolist()


def test_small_groups_share_a_row():
    w = world_tiles()  # seven tiles, seven groups of one
    lay = layout_sheet(w, np.arange(7, 0, -1), columns=8)
    assert len(lay.groups) == 7 and lay.rows == 1 and lay.tile_count == 8


def _speckled(a, b) -> np.ndarray:
    t = _tile(a)
    t[::2, ::2, :3] = b
    return t


def test_many_small_rarely_used_textured_groups_are_pooled_into_other_tiles():
    colours = [(i * 37 % 256, i * 91 % 256, i * 53 % 256) for i in range(40)]
    odd = [_speckled(c, colours[(i + 7) % 40]) for i, c in enumerate(colours)]
    flat = [_tile(c) for c in colours[:20]]
    bank = np.stack(odd + flat + [_speckled((235, 215, 50), (0, 0, 0))])
    uses = np.ones(len(bank), np.int64)
    uses[-1] = 100                                       # one much-used odd tile
    lay = layout_sheet(bank, uses, columns=8)
    names = [g.name for g in lay.groups]
    assert OTHER_GROUP in names and names[-1] == OTHER_GROUP
    pooled = set(next(g for g in lay.groups if g.name == OTHER_GROUP).tiles)
    assert pooled and pooled <= set(range(40))           # only rarely used textured tiles
    assert len(bank) - 1 not in pooled                   # the much-used one keeps its group
    assert sum(len(g.tiles) for g in lay.groups) == len(bank)
    few = layout_sheet(bank[:3], uses[:3], columns=8)    # few groups: nothing pooled
    assert OTHER_GROUP not in [g.name for g in few.groups]


def test_bank_layout_keeps_the_bank_order_without_gaps(kinds):
    _, bank, uses = kinds
    lay = layout_sheet(bank, uses, columns=5, by="bank")
    np.testing.assert_array_equal(lay.position, np.arange(len(bank)))
    assert lay.tile_count == 25 and len(lay.groups) == 1


def test_where_tiles_sit_in_the_screens_moves_their_group():
    # a flat yellow tile (usually above foliage) that the screens show at the bottom, and a
    # textured green one they show at the top
    yellow, green = _tile((235, 215, 50)), _leaves(0)
    bank = np.stack([yellow, green])
    assert [g.tiles for g in layout_sheet(bank, np.ones(2), columns=4).groups] == [(0,), (1,)]
    maps = [np.array([[1, 1]] * 5 + [[0, 0]] * 5, np.uint32)]
    h = tile_heights(maps, 2)
    assert h[1] < 0.3 < 0.7 < h[0]
    moved = layout_sheet(bank, np.ones(2), columns=4, heights=h)
    assert [g.tiles for g in moved.groups] == [(1,), (0,)]
    assert np.isnan(tile_heights([m[:4] for m in maps], 2)).all()  # short screens say nothing


def test_style_layout_gives_each_game_a_block_of_whole_rows_laid_out_by_kind(kinds):
    names, bank, uses = kinds
    style = np.array([0 if n in ("sky", "grass") else 1 for n in names])
    style[names.index("brick")] = -1                                 # one tile no game uses
    lay = layout_sheet(bank, uses, columns=4, by="style", styles=style,
                       style_names=["day", "night"])
    pos = lay.position
    day, night, none = (np.flatnonzero(style == s) for s in (0, 1, -1))
    assert pos[day].max() < pos[night].min() and pos[night].max() < pos[none].min()
    assert pos[night].min() % 4 == 0 and pos[none].min() % 4 == 0    # each block starts a row
    assert [g.name.split(":")[0] for g in lay.groups] == sorted(
        (g.name.split(":")[0] for g in lay.groups), key=["day", "night", "no style"].index)
    for g in lay.groups:                                             # kinds inside each block
        assert len({names[b] for b in g.tiles}) == 1
        assert len({int(style[b]) for b in g.tiles}) == 1
    assert sorted(pos.tolist()) == sorted(set(pos.tolist()))
    # one style, or none: the kind layout
    one = layout_sheet(bank, uses, columns=4, by="style", styles=np.zeros(len(bank), int))
    np.testing.assert_array_equal(one.position, layout_sheet(bank, uses, columns=4).position)
    np.testing.assert_array_equal(layout_sheet(bank, uses, columns=4, by="style").position,
                                  one.position)


def test_a_tile_belongs_to_the_style_whose_screens_use_it_most():
    maps = {"a": np.array([[0, 0, 1]], np.uint32), "b": np.array([[1, 1, 2]], np.uint32),
            "c": np.array([[3 | FLIP_MASK]], np.uint32)}
    got = tile_styles(maps, {"a": "day", "b": "night", "c": "day"}, 5, ["day", "night"])
    assert got.tolist() == [0, 1, 1, 0, -1]                           # tile 4: no screen


def test_bad_arguments_are_rejected(kinds):
    _, bank, uses = kinds
    with pytest.raises(ValueError, match="uses"):
        layout_sheet(bank, uses[:3], columns=4)
    with pytest.raises(ValueError, match="columns"):
        layout_sheet(bank, uses, columns=0)
    with pytest.raises(ValueError, match="by"):
        layout_sheet(bank, uses, columns=4, by="colour")
    with pytest.raises(ValueError, match="styles"):
        layout_sheet(bank, uses, columns=4, by="style", styles=np.zeros(3, int))
