"""Terrain brushes (tilesets/terrain.py): materials from pixels, a corner Wang set Tiled reads,
and a map painted with it that Tiled renders without holes."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from palettes.colour import srgb_to_lab
from tilesets import tiled
from tilesets.terrain import (TerrainRules, TerrainSet, colour_name, corner_fill,
                              infer_terrains, wangsets_xml)

T = 16
H = T // 2
SKY = (92, 148, 252)
BRICK, MORTAR, GRASS = (200, 76, 12), (100, 40, 10), (0, 168, 0)
LEAF, LEAF_DARK = (30, 110, 40), (10, 60, 20)
QUAD = [(slice(0, H), slice(0, H)), (slice(0, H), slice(H, T)), (slice(H, T), slice(H, T)),
        (slice(H, T), slice(0, H))]                       # TL, TR, BR, BL


def brick() -> np.ndarray:
    g = np.zeros((T, T, 3), np.uint8)
    g[:] = BRICK
    g[::4] = MORTAR
    for r in range(0, T, 4):
        g[r:r + 4, (0 if r % 8 == 0 else 4)::8] = MORTAR
    return g


def leaves() -> np.ndarray:
    g = np.zeros((T, T, 3), np.uint8)
    g[:] = LEAF
    yy, xx = np.mgrid[:T, :T]
    g[(yy * 3 + xx * 5) % 7 == 0] = LEAF_DARK
    return g


def compose(corners, fills) -> np.ndarray:
    """An RGBA tile whose quadrants come from ``fills[terrain]``; ground under sky gets grass."""
    out = np.zeros((T, T, 3), np.uint8)
    for q, (ys, xs) in enumerate(QUAD):
        out[ys, xs] = fills[corners[q]][ys, xs]
    if corners[3] == 2 and corners[0] == 1:
        out[H:H + 2, :H] = GRASS
    if corners[2] == 2 and corners[1] == 1:
        out[H:H + 2, H:] = GRASS
    return np.concatenate([out, np.full((T, T, 1), 255, np.uint8)], -1)


def corner_tileset(terrains=(1, 2)) -> tuple[np.ndarray, list[tuple]]:
    """Every corner combination of the given terrains (1 sky, 2 brick ground, 3 leaves)."""
    fills = {1: np.broadcast_to(np.array(SKY, np.uint8), (T, T, 3)), 2: brick(), 3: leaves()}
    combos = [(a, b, c, d) for a in terrains for b in terrains for c in terrains
              for d in terrains]
    return np.stack([compose(c, fills) for c in combos]), combos


def wangid_of(c) -> list[int]:
    return [0, c[1], 0, c[2], 0, c[3], 0, c[0]]


def hills(cols: int = 13, rows: int = 9, seed: int = 0, terrains=(1, 2)) -> np.ndarray:
    """A vertex grid: sky above a random skyline of the last terrain."""
    rng = np.random.default_rng(seed)
    v = np.full((rows, cols), terrains[0], np.int64)
    for x, h in enumerate(rng.integers(2, rows - 2, cols)):
        v[h:, x] = terrains[-1]
    return v


def screens(tiles_combos, n: int = 6, terrains=(1, 2)) -> list[np.ndarray]:
    table = {i: wangid_of(c) for i, c in enumerate(tiles_combos)}
    return [corner_fill(hills(seed=s, terrains=terrains), table).astype(np.uint32)
            for s in range(n)]


@pytest.fixture(scope="module")
def sky_ground():
    tiles, combos = corner_tileset()
    maps = screens(combos)
    return tiles, combos, maps, infer_terrains(tiles, maps)


def write_tileset(folder: Path, tiles: np.ndarray, ts: TerrainSet) -> Path:
    """tileset.png + tileset.tsx (our tileset writer, our <wangsets> spliced in)."""
    from PIL import Image

    cols = 4
    rows = -(-len(tiles) // cols)
    atlas = np.zeros((rows * T, cols * T, 4), np.uint8)
    for i, t in enumerate(tiles):
        atlas[(i // cols) * T:(i // cols + 1) * T, (i % cols) * T:(i % cols + 1) * T] = t
    Image.fromarray(atlas).save(folder / "tileset.png")
    xml = tiled.tileset_xml(name="terrain test", tile_size=T, tile_count=len(tiles), columns=cols,
                            image_source="tileset.png", image_width=cols * T,
                            image_height=rows * T)
    xml = xml.replace("</tileset>\n", "\n".join(wangsets_xml(ts)) + "\n</tileset>\n")
    (folder / "tileset.tsx").write_text(xml)
    return folder / "tileset.tsx"


def nearest_colour(pixels: np.ndarray, colours: dict) -> int:
    """Wang colour index whose colour is nearest (Lab) to the mean colour of ``pixels``."""
    mean = srgb_to_lab(pixels.reshape(-1, 3)).mean(0)
    return min(colours, key=lambda i: ((srgb_to_lab(np.array(colours[i], np.uint8)) - mean) ** 2)
               .sum())


def hex_rgb(h: str) -> tuple:
    return tuple(int(h[i:i + 2], 16) for i in (1, 3, 5))


# --------------------------------------------------------------------------- inference
def by_name(ts: TerrainSet) -> dict:
    """Terrains by name; the ground's name (a brick colour + "brick") is keyed "brick"."""
    return {("brick" if t.name.endswith(" brick") else t.name): t for t in ts.terrains}


def test_two_terrains_found_and_named(sky_ground):
    ts = sky_ground[3]
    assert {n: t.texture for n, t in by_name(ts).items()} == {"sky blue": "flat",
                                                              "brick": "textured"}
    assert by_name(ts)["brick"].name == "rust brick"


def test_every_corner_combination_becomes_a_wang_tile(sky_ground):
    tiles, combos, _, ts = sky_ground
    names = by_name(ts)
    ours = {1: names["sky blue"].index, 2: names["brick"].index}
    assert ts.wang_tiles == tuple(range(16))
    assert ts.coverage() == {(1, 2): 1.0}
    assert [tuple(ts.corners[i]) for i in range(16)] == [tuple(ours[v] for v in c)
                                                          for c in combos]


def test_screens_built_by_corners_agree_at_every_vertex(sky_ground):
    assert sky_ground[3].vertex_agreement == 1.0


def test_fill_tiles_represent_their_terrain(sky_ground):
    names = by_name(sky_ground[3])
    assert (names["sky blue"].tile, names["sky blue"].fill_tiles) == (0, (0,))
    assert (names["brick"].tile, names["brick"].fill_tiles) == (15, (15,))


def test_representative_is_the_most_used_fill_tile(sky_ground):
    tiles, combos, maps, _ = sky_ground
    cloud = tiles[0].copy()
    cloud[3, 5, :3] = (250, 250, 250)                     # a second sky tile
    more = np.concatenate([tiles, cloud[None]])
    busy = [np.where(m == 0, np.uint32(16), m) for m in maps]
    sky = by_name(infer_terrains(more, busy))["sky blue"]
    assert sky.tile == 16 and set(sky.fill_tiles) == {0, 16}


def test_flipped_cells_are_read_through_their_flips():
    tiles, combos = corner_tileset()
    half = combos.index((1, 2, 2, 1))                     # sky on the left, ground on the right
    h_bit = np.uint32(1 << 31)
    # ground fill | the half tile flipped horizontally (ground on its left now) | sky fill
    row = np.array([[15, half | h_bit, 0]], np.uint32)
    assert infer_terrains(tiles, [row]).vertex_agreement == 1.0
    # the same cells read without the flip would disagree at the shared vertices
    assert infer_terrains(tiles, [row & np.uint32(0x1FFFFFFF)]).vertex_agreement < 1.0


def test_diagonal_flips_are_read_through_too():
    tiles, combos = corner_tileset()
    top = combos.index((1, 1, 2, 2))                      # sky above, ground below
    d_bit = np.uint32(1 << 29)
    # the transposed top/bottom tile shows sky on its left, ground on its right
    row = np.array([[0, top | d_bit, 15]], np.uint32)
    assert infer_terrains(tiles, [row]).vertex_agreement == 1.0
    assert infer_terrains(tiles, [row & np.uint32(0x1FFFFFFF)]).vertex_agreement < 1.0


def flip_reduced(combos) -> tuple[list[int], dict]:
    """One tile per corner pattern up to H/V flips: the kept combos' indices, and for every
    combo the cell (kept index | flip bits) that shows it."""
    kept, cell = [], {}
    flips = ((0, (0, 1, 2, 3)), (1 << 31, (1, 0, 3, 2)), (1 << 30, (3, 2, 1, 0)),
             (3 << 30, (2, 3, 0, 1)))
    for i, c in enumerate(combos):
        for bits, perm in flips:
            stored = tuple(c[p] for p in perm)            # the tile that, flipped, shows c
            if stored in [combos[k] for k in kept]:
                cell[i] = kept.index(combos.index(stored)) | bits
                break
        else:
            cell[i] = len(kept)
            kept.append(i)
    return kept, cell


def test_coverage_and_brush_count_flipped_tiles_when_flips_are_allowed():
    tiles, combos = corner_tileset()
    kept, _ = flip_reduced(combos)
    assert len(kept) == 7                                 # 16 patterns, 7 up to flips
    ts = infer_terrains(tiles[kept])
    assert len(ts.wang_tiles) == 7
    assert list(ts.coverage().values())[0] < 1.0
    assert list(ts.coverage(flips=True).values())[0] == 1.0
    table = {i: ts.wangid(i) for i in ts.wang_tiles}
    painted = hills(seed=3)
    sky = ts.corners[0, 0]
    painted = np.where(painted == 1, sky, 3 - sky)
    assert (corner_fill(painted, table) < 0).any()
    cells = corner_fill(painted, table, flips=True)
    assert (cells >= 0).all() and (cells >> 30).any()
    unflipped = corner_fill(painted, table)
    ok = unflipped >= 0                                   # untransformed tiles preferred
    assert (cells[ok] == unflipped[ok]).all()


def test_third_material_is_found_automatically():
    tiles, combos = corner_tileset(terrains=(1, 2, 3))
    ts = infer_terrains(tiles, screens(combos, terrains=(1, 3)))
    names = [t.name for t in ts.terrains]
    assert len(names) == 3 and any("foliage" in n for n in names)
    assert len(ts.wang_tiles) == 81


def test_far_material_without_a_fill_tile_stays_out():
    tiles, combos = corner_tileset()
    odd = tiles[0].copy()
    odd[:H, :H, :3] = (255, 0, 255)                       # a magenta corner, never a fill
    ts = infer_terrains(np.concatenate([tiles, odd[None]]), screens(combos))
    assert len(ts.terrains) == 2 and 16 not in ts.wang_tiles
    assert ts.corners[16, 0] == 0


def test_material_count_respects_the_rules(sky_ground):
    tiles, _, maps, _ = sky_ground
    assert len(infer_terrains(tiles, maps, rules=TerrainRules(min_materials=1,
                                                               max_materials=1)).terrains) == 1


def test_no_tiles_no_terrains():
    ts = infer_terrains(np.zeros((2, T, T, 4), np.uint8))      # fully transparent
    assert ts.terrains == () and wangsets_xml(ts) == []


def test_colour_names():
    assert [colour_name(c) for c in (SKY, (0, 0, 0), (20, 80, 30))] == [
        "sky blue", "black", "dark green"]


def test_corner_fill_picks_matching_tiles_and_marks_gaps():
    table = {0: wangid_of((1, 1, 1, 1)), 5: wangid_of((1, 1, 2, 2)), 7: wangid_of((2, 2, 2, 2))}
    v = np.array([[1, 1, 1], [2, 2, 1], [2, 2, 2]])
    assert corner_fill(v, table).tolist() == [[5, -1], [7, -1]]


# --------------------------------------------------------------------------- the .tsx
def test_wangsets_xml_escapes_names(sky_ground):
    ts = sky_ground[3]
    odd = TerrainSet('a & <b> "c"', ts.terrains, ts.corners, ts.materials, ts.wang_tiles,
                     ts.tile, ts.vertex_agreement)
    root = ET.fromstring("\n".join(wangsets_xml(odd)))
    assert root.find("wangset").get("name") == 'a & <b> "c"'


def test_wang_labels_agree_with_pixels_in_the_written_tsx(sky_ground, tmp_path):
    tiles, _, _, ts = sky_ground
    root = ET.parse(write_tileset(tmp_path, tiles, ts)).getroot()
    wset = root.find("wangsets/wangset")
    assert wset.get("type") == "corner"
    colours = {i + 1: hex_rgb(c.get("color")) for i, c in enumerate(wset.findall("wangcolor"))}
    checked = 0
    for wt in wset.findall("wangtile"):
        wid = [int(v) for v in wt.get("wangid").split(",")]
        tile = tiles[int(wt.get("tileid")), ..., :3]
        for q, slot in enumerate((7, 1, 3, 5)):
            ys, xs = QUAD[q]
            assert nearest_colour(tile[ys, xs], colours) == wid[slot], (wt.attrib, q)
            checked += 1
    assert checked == 64


# --------------------------------------------------------------------------- Tiled itself
def _tiled() -> str:
    exe = shutil.which("tiled")
    if exe is None:
        reason = "tiled not installed (apt-get install tiled): Tiled's own checks skipped"
        print(f"\nSKIPPED: {reason}", file=sys.__stderr__, flush=True)
        pytest.skip(reason)
    return exe


def tiled_reads_tileset(tsx: Path, home: Path) -> dict:
    """Tiled's own reading of ``tsx``: ``tiled --export-tileset json`` (its .tsx parser)."""
    out = tsx.with_suffix(".json")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", HOME=str(home),
               XDG_CONFIG_HOME=str(home / ".config"))
    proc = subprocess.run([_tiled(), "--export-tileset", "json", str(tsx), str(out)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and out.is_file(), proc.stderr[-500:]
    return json.loads(out.read_text())


def test_tiled_reads_our_wang_set(sky_ground, tmp_path):
    tiles, _, _, ts = sky_ground
    doc = tiled_reads_tileset(write_tileset(tmp_path, tiles, ts), tmp_path)
    (wset,) = doc["wangsets"]
    assert (wset["type"], wset["name"], wset["tile"]) == ("corner", ts.name, ts.tile)
    assert [(c["name"], c["tile"]) for c in wset["colors"]] == [(t.name, t.tile)
                                                                  for t in ts.terrains]
    assert {w["tileid"]: w["wangid"] for w in wset["wangtiles"]} == {
        i: ts.wangid(i) for i in ts.wang_tiles}


def brush(painted: np.ndarray, wangtiles: list) -> np.ndarray:
    """Tiled's corner-set brush rule, written here from Tiled's documented wangid order (top,
    top-right, right, bottom-right, bottom, bottom-left, left, top-left): each cell takes a
    Wang tile whose four corners equal the painted vertices (-1: none, an empty cell)."""
    by_corners = {}
    for w in sorted(wangtiles, key=lambda w: w["tileid"]):
        wid = w["wangid"]
        by_corners.setdefault((wid[7], wid[1], wid[3], wid[5]), w["tileid"])
    rows, cols = painted.shape[0] - 1, painted.shape[1] - 1
    return np.array([[by_corners.get((painted[r, c], painted[r, c + 1], painted[r + 1, c + 1],
                                      painted[r + 1, c]), -1) for c in range(cols)]
                     for r in range(rows)])


def test_map_painted_with_the_brush_renders_without_holes(sky_ground, tmp_path):
    from tests._helpers_tiled import rasterize

    tiles, _, _, ts = sky_ground
    doc = tiled_reads_tileset(write_tileset(tmp_path, tiles, ts), tmp_path)
    (wset,) = doc["wangsets"]
    colours = {i + 1: hex_rgb(c["color"]) for i, c in enumerate(wset["colors"])}
    # what a designer paints: ground hills, a floating island and a cave, on a corner grid
    names = by_name(ts)
    sky, ground = names["sky blue"].index, names["brick"].index
    painted = np.where(hills(cols=21, rows=13, seed=7) == 1, sky, ground)
    painted[2:5, 3:8] = ground
    painted[8:10, 12:16] = sky
    cells = brush(painted, wset["wangtiles"])
    assert (cells >= 0).all()
    assert (cells == corner_fill(painted, {w["tileid"]: w["wangid"]
                                           for w in wset["wangtiles"]})).all()
    gids = tiled.bank_ids_to_gids(cells.astype(np.uint32))
    tmx = tmp_path / "painted.tmx"
    tmx.write_text(tiled.map_xml(gids, tile_size=T, tileset_source="tileset.tsx"))
    img = rasterize(tmx, tmp_path / "painted.png")
    rows, cols = cells.shape
    assert img.shape == (rows * T, cols * T, 4)
    assert (img[..., 3] == 255).all(), "a cell rendered empty"
    for r in range(rows):
        for c in range(cols):
            cell = img[r * T:(r + 1) * T, c * T:(c + 1) * T, :3]
            want = (painted[r, c], painted[r, c + 1], painted[r + 1, c + 1], painted[r + 1, c])
            for q, (ys, xs) in enumerate(QUAD):
                assert nearest_colour(cell[ys, xs], colours) == want[q], (r, c, q)
