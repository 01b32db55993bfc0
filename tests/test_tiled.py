"""Tiled writing (tilesets/tiled.py), atlas packing and our preview renderer against Tiled's."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stages._common import atomic_write_text, save_png
from tests._helpers_tiled import (assert_same_pixels, load_tmx, make_tiles, pytmx_cells,
                                  rasterize)
from tilesets import tiled
from tilesets.atlas import atlas_columns, pack_atlas, unpack_atlas
from tilesets.cells import FLIP_MASK, ID_MASK, Flip
from tilesets.render import render_map

ALL_FLIPS = [0, Flip.H, Flip.V, Flip.D, Flip.H | Flip.V, Flip.H | Flip.D, Flip.V | Flip.D,
             FLIP_MASK]
SPECIAL = 'Tom & Jerry\'s <"best"> tiles'


def write_tileset(root: Path, tiles: np.ndarray, *, columns: int = 4, name: str = "t",
                  tile_properties=None) -> Path:
    sheet = pack_atlas(tiles, columns=columns)
    save_png(root / "tileset.png", sheet)
    cols = atlas_columns(len(tiles), columns)
    return atomic_write_text(root / "tileset.tsx", tiled.tileset_xml(
        name=name, tile_size=tiles.shape[1], tile_count=len(tiles), columns=cols,
        image_source="tileset.png", image_width=sheet.shape[1], image_height=sheet.shape[0],
        tile_properties=tile_properties))


def write_map(root: Path, gids: np.ndarray, *, encoding="csv", name="m", **kw) -> Path:
    (root / "maps").mkdir(exist_ok=True)
    return atomic_write_text(root / "maps" / f"{name}.tmx", tiled.map_xml(
        gids, tile_size=16, tileset_source="../tileset.tsx", encoding=encoding, **kw))


def flip_grid(k: int) -> np.ndarray:
    """Every tile in every flip combination, plus one empty cell."""
    g = np.array([[(i % k + 1) | f for f in ALL_FLIPS] for i in range(k)], np.uint32)
    g[0, 0] = 0
    return g


# --------------------------------------------------------------------------- escaping
def test_xml_escape_covers_the_five_entities_and_newlines():
    assert tiled.xml_escape(SPECIAL) == "Tom &amp; Jerry&apos;s &lt;&quot;best&quot;&gt; tiles"
    assert tiled.xml_escape("a\nb\tc") == "a&#10;b&#9;c"


def test_xml_escape_replaces_characters_xml_cannot_hold():
    assert tiled.xml_escape("a\x00b\x1f") == "a\ufffdb\ufffd"


def test_special_names_load_back_unchanged_in_pytmx(tmp_path):
    tiles = make_tiles(3)
    write_tileset(tmp_path, tiles, name=SPECIAL,
                  tile_properties=[{"source_image": SPECIAL + "\nline 2"}, None, None])
    tmx = write_map(tmp_path, np.array([[1, 2, 3]], np.uint32), layer_name=SPECIAL,
                    properties={"source_image": SPECIAL})
    text = tmx.read_text()
    assert "&amp;" in text and "<\"" not in text
    m = load_tmx(tmx)
    assert m.tilesets[0].name == SPECIAL
    assert m.layers[0].name == SPECIAL
    assert m.properties["source_image"] == SPECIAL
    assert m.get_tile_properties_by_gid(m.layers[0].data[0][0])["source_image"] == SPECIAL + "\nline 2"


def test_special_names_still_render_in_tiled(tmp_path):
    tiles = make_tiles(3)
    write_tileset(tmp_path, tiles, name=SPECIAL)
    gids = np.array([[1, 2, 3]], np.uint32)
    tmx = write_map(tmp_path, gids, layer_name=SPECIAL, properties={"x": SPECIAL})
    assert_same_pixels(rasterize(tmx), render_map(gids, tiles))


# --------------------------------------------------------------------------- layer data
@pytest.mark.parametrize("encoding", ["csv", "base64-zlib"])
def test_layer_data_round_trips(encoding):
    g = flip_grid(5)
    attrs, text = tiled.encode_layer_data(g, encoding)
    back = tiled.decode_layer_data(text, encoding, g.shape)
    np.testing.assert_array_equal(back, g)


def test_unknown_encoding_is_rejected():
    with pytest.raises(ValueError, match="encoding"):
        tiled.encode_layer_data(np.ones((2, 2), np.uint32), "xml")


@pytest.mark.parametrize("encoding", ["csv", "base64-zlib"])
def test_pytmx_reads_gids_and_flip_flags(tmp_path, encoding):
    tiles = make_tiles(5)
    write_tileset(tmp_path, tiles)
    g = flip_grid(5)
    m = load_tmx(write_map(tmp_path, g, encoding=encoding))
    gids, flips = pytmx_cells(m)
    np.testing.assert_array_equal(gids, g & ID_MASK)
    np.testing.assert_array_equal(flips, g & FLIP_MASK)


def test_bank_ids_to_gids_keeps_flips_and_offsets_ids():
    cells = np.array([[0, 3 | Flip.H], [5 | Flip.V | Flip.H, 1]], np.uint32)
    g = tiled.bank_ids_to_gids(cells)
    np.testing.assert_array_equal(g, [[1, 4 | Flip.H], [6 | Flip.V | Flip.H, 2]])


def test_map_xml_rejects_negative_gids():
    with pytest.raises(ValueError, match="gids"):
        tiled.map_xml(np.array([[-1]]), tile_size=16, tileset_source="t.tsx")


# --------------------------------------------------------------------------- tileset
def test_tile_properties_have_tiled_types(tmp_path):
    tiles = make_tiles(2)
    write_tileset(tmp_path, tiles, tile_properties=[
        {"novelty": 7, "score": 0.5, "source_image": "a", "colours": 3, "flat": True},
        {"novelty": None, "source_image": "b"}])
    m = load_tmx(write_map(tmp_path, np.array([[1, 2]], np.uint32)))
    p0 = m.get_tile_properties_by_gid(m.layers[0].data[0][0])
    p1 = m.get_tile_properties_by_gid(m.layers[0].data[0][1])
    assert (p0["novelty"], p0["score"], p0["source_image"], p0["colours"], p0["flat"]) == (7, 0.5, "a", 3, True)
    assert "novelty" not in p1 and p1["source_image"] == "b"


def _flip_tileset(tmp_path: Path, **kw) -> Path:
    sheet = pack_atlas(make_tiles(2), columns=2)
    save_png(tmp_path / "tileset.png", sheet)
    return atomic_write_text(tmp_path / "tileset.tsx", tiled.tileset_xml(
        name="t", tile_size=16, tile_count=2, columns=2, image_source="tileset.png",
        image_width=32, image_height=16, tile_properties=[{"a": 1}, None],
        properties={"generator": "test"}, **kw))


WANGSET = [" <wangsets>", '  <wangset name="w" type="corner" tile="0">',
           '   <wangcolor name="c" color="#ff0000" tile="0" probability="1"/>',
           '   <wangtile tileid="0" wangid="0,1,0,1,0,1,0,1"/>', "  </wangset>", " </wangsets>"]


def test_transformations_and_extra_lines_go_where_tiled_writes_them(tmp_path):
    import xml.etree.ElementTree as ET

    root = ET.parse(_flip_tileset(tmp_path, flips=True, extra_lines=WANGSET)).getroot()
    # Tiled 1.8's own writer: transformations, properties, image, tiles, wangsets
    assert [c.tag for c in root] == ["transformations", "properties", "image", "tile",
                                     "wangsets"]
    assert root.find("transformations").attrib == {"hflip": "1", "vflip": "1", "rotate": "0",
                                                   "preferuntransformed": "1"}
    plain = ET.parse(_flip_tileset(tmp_path)).getroot()
    assert plain.find("transformations") is None and plain.find("wangsets") is None


def test_tiled_reads_the_transformations_and_the_spliced_wang_set(tmp_path):
    from tests.test_terrain import tiled_reads_tileset

    doc = tiled_reads_tileset(_flip_tileset(tmp_path, flips=True, extra_lines=WANGSET),
                              tmp_path)
    assert doc["transformations"] == {"hflip": True, "vflip": True, "rotate": False,
                                      "preferuntransformed": True}
    assert doc["wangsets"][0]["wangtiles"] == [{"tileid": 0, "wangid": [0, 1] * 4}]


def test_extra_lines_with_line_breaks_are_refused(tmp_path):
    with pytest.raises(ValueError, match="line breaks"):
        _flip_tileset(tmp_path, extra_lines=["<a>\n</a>"])


def test_project_file_is_json_with_folders():
    doc = json.loads(tiled.project_json(folders=(".",)))
    assert doc["folders"] == ["."]


# --------------------------------------------------------------------------- atlas
def test_atlas_round_trips_and_pads_with_transparency():
    tiles = make_tiles(5)
    a = pack_atlas(tiles, columns=2)
    assert a.shape == (48, 32, 4)
    np.testing.assert_array_equal(unpack_atlas(a, tile_size=16, count=5), tiles)
    assert not a[32:, 16:].any()


def test_atlas_columns_auto_is_near_square():
    assert atlas_columns(10, 0) == 4
    assert atlas_columns(3, 16) == 3


def test_rgb_tiles_get_opaque_alpha():
    a = pack_atlas(np.zeros((1, 16, 16, 3), np.uint8))
    assert (a[..., 3] == 255).all()


# --------------------------------------------------------------------------- renderer

def test_render_rejects_gid_outside_tileset():
    with pytest.raises(ValueError, match="GID"):
        render_map(np.array([[9]], np.uint32), make_tiles(2))


def test_render_empty_cell_is_transparent_black():
    out = render_map(np.array([[0, 1]], np.uint32), make_tiles(1))
    assert not out[:, :16].any() and (out[:, 16:, 3] == 255).all()


@pytest.mark.parametrize("encoding", ["csv", "base64-zlib"])
def test_tiled_renders_every_flip_like_our_preview(tmp_path, encoding):
    tiles = make_tiles(5)  # tile 1 fully transparent, tile 2 partly
    write_tileset(tmp_path, tiles, columns=3)
    g = flip_grid(5)
    tmx = write_map(tmp_path, g, encoding=encoding)
    assert_same_pixels(rasterize(tmx), render_map(g, tiles), f"{encoding} flips")


def test_tiled_renders_8px_tiles_like_our_preview(tmp_path):
    tiles = make_tiles(4, tile_size=8)
    sheet = pack_atlas(tiles, columns=2)
    save_png(tmp_path / "tileset.png", sheet)
    atomic_write_text(tmp_path / "tileset.tsx", tiled.tileset_xml(
        name="t8", tile_size=8, tile_count=4, columns=2, image_source="tileset.png",
        image_width=16, image_height=16))
    g = np.array([[1, 2 | Flip.H], [3 | Flip.V, 4 | Flip.D]], np.uint32)
    tmx = atomic_write_text(tmp_path / "m.tmx", tiled.map_xml(g, tile_size=8, tileset_source="tileset.tsx"))
    assert_same_pixels(rasterize(tmx), render_map(g, tiles), "8px")


def test_missing_tmxrasterizer_skips_with_a_printed_install_hint(monkeypatch):
    import io
    import shutil
    import sys

    from tests._helpers_tiled import require_tmxrasterizer

    terminal = io.StringIO()
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(sys, "__stderr__", terminal)
    with pytest.raises(pytest.skip.Exception, match="apt-get install tiled"):
        require_tmxrasterizer()
    assert "SKIPPED: tmxrasterizer not installed" in terminal.getvalue()
