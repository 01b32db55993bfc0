"""The export stage: the core on a TileSet (maps, level, limits), and the files it writes
(Tiled files, previews, report: the artifact contract) from a dedupe artifact."""
from __future__ import annotations

import json
import re
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from stages import export
from stages._common import InputError, ParamError, StageError, save_npy, save_npz, write_json
from tests._helpers_tiled import (assert_matches_tiled, load_tmx, make_dedupe_dir, make_maps,
                                  make_samples_dir, make_tiles, make_train_dir, pytmx_cells)
from tests import test_terrain as tt
from tests.test_wfc import W_DIRT, W_SKY, generated_like_screens, recurring_world
from tilesets import atlas
from tilesets import tiled as tiled_mod
from tilesets.artifacts import TileSet
from tilesets.cells import FLIP_MASK, ID_MASK
from tilesets.render import render_map
from tilesets.tiled import bank_ids_to_gids

SPECIAL = 'Bob & "Alice" <\'s> set'


def run_export(tmp_path: Path, dd: Path, dirname: str = "out", **params) -> tuple[Path, dict]:
    out = tmp_path / dirname
    out.mkdir()
    inputs = {"tileset": [dd]}
    for key in ("training_run", "samples"):
        if key in params:
            inputs[key] = [params.pop(key)]
    p = export.Params(**{"level_width": 16, "level_height": 6, **params})
    return out, export.run(inputs, p, out)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    dd = make_dedupe_dir(tmp / "dedupe", k=12, source_names=[SPECIAL, "gen_0001"])
    tr = make_train_dir(tmp / "train")
    sm = make_samples_dir(tmp / "samples", [f"gen_{i:04d}" for i in range(6)])
    out, summary = run_export(tmp, dd, name=SPECIAL, training_run=tr, samples=sm, columns=5)
    return dd, out, summary


def test_writes_every_artifact(exported):
    _, out, summary = exported
    for rel in ("tileset.png", "tileset.tsx", "maps/sheet.tmx", "maps/level.tmx",
                "maps/sample_000.tmx", "maps/sample_005.tmx", "previews/level.png",
                "previews/sheet.png", "previews/sample_000.png", "report.html",
                "tilegan.tiled-project"):
        assert (out / rel).is_file(), rel
    assert summary["tiles"] == 12 and summary["samples"] == 6
    assert len(summary["maps"]) == 8


def _sheet_position(dd: Path) -> np.ndarray:
    """Tile id (sheet position) of each bank tile of a dedupe artifact, from the core."""
    ts = TileSet.load(dd)
    return export.export_tileset(ts, None, export.Params(level_width=4, level_height=2,
                                                         columns=5)).layout.position


def _sheet_tiles(out: Path, ts: int = 16) -> np.ndarray:
    """tileset.png cut into its tiles, by tile id."""
    from PIL import Image

    with Image.open(out / "tileset.png") as im:
        a = np.asarray(im.convert("RGBA"))
    return atlas.unpack_atlas(a, tile_size=ts, count=(a.shape[0] // ts) * (a.shape[1] // ts))


def test_pytmx_loads_every_map_with_the_right_tiles_and_flips(exported):
    # a map's GIDs point, through tileset.png, at the very tiles its bank ids named
    dd, out, _ = exported
    ts = TileSet.load(dd)
    sheet = _sheet_tiles(out)
    for i, stem in enumerate(sorted(ts.maps)):
        m = load_tmx(out / "maps" / f"sample_{i:03d}.tmx")
        gids, flips = pytmx_cells(m)
        np.testing.assert_array_equal(sheet[gids.astype(np.int64) - 1],
                                      ts.bank[ts.maps[stem] & ID_MASK])
        np.testing.assert_array_equal(gids, _sheet_position(dd)[ts.maps[stem] & ID_MASK] + 1)
        np.testing.assert_array_equal(flips, ts.maps[stem] & FLIP_MASK)
        assert m.properties["source_image"] == stem
    assert (flips != 0).any()


def test_sheet_holds_every_tile_once_where_it_sits_on_tileset_png(exported):
    dd, out, _ = exported
    gids, flips = pytmx_cells(load_tmx(out / "maps" / "sheet.tmx"))
    assert gids.shape[1] == 5 and not flips.any()
    used = gids.ravel() != 0
    assert used.sum() == 12  # every tile once; blank sheet cells stay empty
    np.testing.assert_array_equal(gids.ravel()[used], np.flatnonzero(used) + 1)
    np.testing.assert_array_equal(np.sort(gids.ravel()[used] - 1), np.sort(_sheet_position(dd)))


def test_tileset_carries_tile_properties_and_escaped_name(exported):
    dd, out, _ = exported
    text = (out / "tileset.tsx").read_text()
    assert "Bob &amp; &quot;Alice&quot; &lt;&apos;s&gt; set" in text
    m = load_tmx(out / "maps" / "sheet.tmx")
    assert m.tilesets[0].name == SPECIAL
    pos = _sheet_position(dd)
    props = m.get_tile_properties_by_gid(m.gidmap[int(pos[1]) + 1][0][0])  # bank tile 1
    assert props["novelty"] == 5 and props["source_image"] == "gen_0001"
    assert isinstance(props["score"], float) and props["colours"] == 4
    p0 = m.get_tile_properties_by_gid(m.gidmap[int(pos[0]) + 1][0][0])
    assert p0["source_image"] == SPECIAL and "novelty" not in p0
    uses = TileSet.load(dd).uses()
    assert props["uses"] == uses[1] and p0["uses"] == uses[0]
    assert isinstance(props["group"], str) and props["group"]


def test_every_map_renders_in_tiled_exactly_as_our_preview(exported):
    _, out, _ = exported
    for tmx in sorted((out / "maps").glob("*.tmx")):
        assert_matches_tiled(tmx, out / "previews" / f"{tmx.stem}.png")


def test_base64_zlib_maps_render_in_tiled_and_load_in_pytmx(tmp_path):
    dd = make_dedupe_dir(tmp_path / "dd", k=8)
    out, s = run_export(tmp_path, dd, encoding=export.Encoding.base64_zlib)
    assert 'compression="zlib"' in (out / "maps" / "sample_000.tmx").read_text()
    assert s["encoding"] == "base64-zlib"
    for tmx in sorted((out / "maps").glob("*.tmx")):
        load_tmx(tmx)
        assert_matches_tiled(tmx, out / "previews" / f"{tmx.stem}.png")


def _core(bank, maps, styles=None, **params) -> export.Export:
    """export_tileset on a TileSet of ``bank`` and ``maps`` (no tiles.json records)."""
    p = export.Params(**{"level_width": 16, "level_height": 6, **params})
    return export.export_tileset(TileSet(bank, maps), [], p, styles=styles)


def test_core_numbers_sample_maps_in_stem_order_with_flip_counts():
    maps = make_maps(5, n=3)
    ex = _core(make_tiles(5), {k: maps[k] for k in reversed(sorted(maps))})
    names = [m.name for m in ex.maps]
    assert names == ["sheet", "sample_000", "sample_001", "sample_002", "level"]
    assert [s["source_image"] for s in ex.sample_maps] == sorted(maps)
    first = maps[sorted(maps)[0]]
    assert ex.sample_maps[0]["flipped_cells"] == int(((first & FLIP_MASK) != 0).sum())
    pos = ex.layout.position
    gids = (pos[first & ID_MASK] + 1).astype(np.uint32) | (first & FLIP_MASK)
    np.testing.assert_array_equal(ex.gids()["sample_000"], gids)


def test_core_warns_when_tiles_json_is_missing():
    maps = make_maps(4, n=2)
    ex = export.export_tileset(TileSet(make_tiles(4), maps), None,
                               export.Params(level_width=8, level_height=4))
    assert ex.warnings[0].startswith("no tiles.json")
    with_records = _core(make_tiles(4), maps, level_width=8, level_height=4)
    assert not any(w.startswith("no tiles.json") for w in with_records.warnings)


def test_level_says_why_its_model_and_is_solved_without_violations(exported):
    # the fixture's 6 maps of 4x4 cells reuse 12 tiles (tiles recur), but so few pairs are seen
    # that single tiles would flood the level with one tile: it is made of 2x2 pieces instead
    _, out, summary = exported
    lv = summary["level"]
    assert summary["reuse"]["recurring"] and lv["because"].startswith("tiles recur")
    assert "fill the level with one tile" in lv["because"]
    assert lv["tried"] == ["observed", "chunks"] and lv["model"] == "chunks"
    assert lv["method"] in ("wfc", "wfc-backtracking") and lv["violations"] == 0
    m = load_tmx(out / "maps" / "level.tmx")
    assert m.properties["model"] == "chunks" and m.properties["violations"] == 0
    gids, _ = pytmx_cells(m)
    assert gids.shape == (6, 16) and (gids > 0).all()


def _generated_like() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    maps, bank = generated_like_screens(tile=16)
    return bank, {f"gen_{i:04d}": m for i, m in enumerate(maps)}


def test_level_from_generated_like_screens_is_not_one_flooding_tile():
    # 4x4 screens of once-used tiles plus one flat tile: the case whose single-tile level
    # was nearly all that flat tile
    ex = _core(*_generated_like(), level_width=64, level_height=15)
    lv = ex.level
    assert lv["model"] == "chunks" and lv["violations"] == 0 and not ex.warnings
    assert lv["top_share"] <= 0.25 and lv["distinct_tiles"] >= 150
    assert lv["seam_diff"] <= 1.25 * lv["example_seam_diff"]
    gids = ex.gids()["level"] & ID_MASK
    assert np.bincount(gids.ravel()).max() / gids.size == pytest.approx(lv["top_share"], abs=1e-3)


def test_report_describes_a_level_made_of_pieces(tmp_path):
    bank, maps = _generated_like()
    out, s = run_export(tmp_path, make_dedupe_dir(tmp_path / "dd", bank=bank, maps=maps),
                        level_width=32, level_height=15)
    html = (out / "report.html").read_text()
    assert "2x2-tile pieces cut from the generated screens" in html
    assert f"{s['level']['distinct_tiles']} distinct tiles" in html


# --------------------------------------------------------------------------- recurring tiles, sheet
def _world() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    maps, bank = recurring_world()
    return bank, {f"gen_{i:04d}": m for i, m in enumerate(maps)}


@pytest.fixture(scope="module")
def world_export():
    bank, maps = _world()
    return bank, maps, _core(bank, maps, level_width=40, level_height=10)


def test_every_map_shows_the_same_pixels_as_before_the_sheet_layout(world_export):
    # tile ids follow the sheet, so the maps are renumbered: their pictures must not change
    bank, maps, ex = world_export
    assert not np.array_equal(ex.layout.position, np.arange(len(bank)))  # ids did move
    assert len(ex.sample_maps) == 16 < len(maps)         # max_sample_maps
    for s in ex.sample_maps:
        name, stem = Path(s["map"]).stem, s["source_image"]
        np.testing.assert_array_equal(render_map(ex.gids()[name], ex.tiles),
                                      render_map(bank_ids_to_gids(maps[stem]), bank))
    level = ex.gids()["level"]
    as_bank = ex.layout.bank_of()[(level & ID_MASK).astype(np.int64) - 1].astype(np.uint32)
    np.testing.assert_array_equal(render_map(level, ex.tiles),
                                  render_map(bank_ids_to_gids(as_bank | (level & FLIP_MASK)), bank))


def test_tile_properties_name_each_tiles_group_and_uses(world_export):
    bank, maps, ex = world_export
    uses = TileSet(bank, maps).uses()
    for g in ex.layout.groups:
        for b in g.tiles:
            p = ex.tile_properties[int(ex.layout.position[b])]
            assert p["group"] == g.name and p["uses"] == uses[b]
    blank = ex.layout.bank_of() < 0
    assert all(p == {} for p, b in zip(ex.tile_properties, blank) if b)


def test_sheet_layout_bank_keeps_dedupes_order():
    bank, maps = _world()
    ex = _core(bank, maps, sheet_layout="bank")
    np.testing.assert_array_equal(ex.layout.position, np.arange(len(bank)))
    assert ex.layout.tile_count == len(bank) and len(ex.layout.groups) == 1


def test_level_from_recurring_tiles_keeps_to_seen_pairs_with_ground_at_the_bottom(world_export):
    bank, maps, ex = world_export
    lv = ex.level
    assert lv["model"] == "observed" and lv["because"].startswith("tiles recur")
    assert lv["violations"] == 0 and lv["unseen_pairs"] == 0 and lv["row_prior"]
    cells = ex.layout.bank_of()[(ex.gids()["level"] & ID_MASK).astype(np.int64) - 1]
    assert (cells[-1] == W_DIRT).mean() >= 0.9 and (cells[0] == W_SKY).mean() >= 0.5
    assert set(lv["seams"]) == {"level", "screens"}
    assert lv["seams"]["level"]["ratio"] <= 1.25 * lv["seams"]["screens"]["ratio"]


def test_level_model_chunks_can_be_asked_for():
    bank, maps = _world()
    ex = _core(bank, maps, level_model="chunks")
    assert ex.level["model"] == "chunks" and ex.level["because"] == "pieces asked for"


def test_report_shows_the_sheet_at_1x_and_3x_its_groups_reuse_and_seams(tmp_path):
    bank, maps = _world()
    out, s = run_export(tmp_path, make_dedupe_dir(tmp_path / "dd", bank=bank, maps=maps),
                        level_width=24, level_height=10)
    html = (out / "report.html").read_text()
    for heading in ("Tileset (tileset.png)", "Reuse", "Seams"):
        assert f"<h2>{heading}" in html, heading
    width = s["sheet"]["columns"] * 16
    assert f'alt="tileset at 1x" style="width:{width}px"' in html
    assert f'alt="tileset at 3x" style="width:{3 * width}px"' in html
    assert "image-rendering:pixelated" in html
    for g in s["sheet"]["groups"]:
        assert f"<h3>{g['name']}" in html  # the kept tiles, group by group
    assert f"{s['reuse']['tiles']} distinct tiles" in html
    assert "single tiles, each next to tiles it sits beside" in html and "tiles recur" in html
    ratio = s["level"]["seams"]["screens"]["ratio"]
    assert f"<td>{ratio}</td>" in html
    assert "cells of the rebuilt screens using the tile" in html  # the uses histogram


def test_uses_histogram_bins_double():
    from stages import _report

    assert _report._doubling_edges([5, 1]) == [0, 1, 2, 4, 8]
    assert _report._doubling_edges([]) == [0, 1, 2]


def test_novelty_categories_become_string_properties_and_a_table_in_the_report():
    from stages import _report

    records = [{"id": 0, "novelty": "common"}, {"id": 1, "novelty": "new"},
               {"id": 2, "novelty": 7}, {"id": 3, "novelty": -1}]
    ex = export.export_tileset(TileSet(make_tiles(4), make_maps(4, n=2)), records,
                               export.Params(level_width=8, level_height=4, sheet_layout="bank"))
    assert [p.get("novelty") for p in ex.tile_properties] == ["common", "new", 7, None]
    html = _report._section_novelty(records[:2], [])
    assert "<th>new</th><td>1</td>" in html and "<th>common</th><td>1</td>" in html


def test_level_params_default_to_the_wfc_defaults():
    from tilesets import wfc

    p = export.Params()
    assert (p.level_chunk, p.level_seams, p.level_reuse_penalty) == (
        wfc.CHUNK, wfc.SEAMS, wfc.REUSE_PENALTY)


def test_level_chunk_1_builds_the_level_from_single_tiles():
    ex = _core(*_generated_like(), level_width=64, level_height=15, level_chunk=1)
    assert ex.level["model"] == "observed" and ex.level["chunk"] == 1
    assert ex.level["top_share"] > 0.8  # why chunks are the default


def test_level_fallback_is_reported():
    # one 1x3 screen: no vertical neighbour pair, so no 6-row level exists in the seen pairs
    ex = _core(make_tiles(3), {"only": np.array([[0, 1, 2]], np.uint32)}, level_seams=0)
    assert ex.level["method"] == "greedy-fallback" and ex.level["unseen_pairs"] > 0
    assert any("filled greedily" in w for w in ex.warnings)
    level = next(m for m in ex.maps if m.name == "level")
    assert level.properties["method"] == "greedy-fallback"


def test_level_widened_with_seams_when_seen_pairs_cannot_tile():
    ex = _core(make_tiles(3), {"only": np.array([[0, 1, 2]], np.uint32)})
    assert ex.level["model"] == "observed+seams" and ex.level["violations"] == 0
    assert ex.level["because"].startswith("pieces impossible")
    assert any("widened with best-matching pixel seams" in w for w in ex.warnings)


def test_paths_in_files_are_relative(exported):
    _, out, _ = exported
    assert re.search(r'<tileset firstgid="1" source="../tileset.tsx"/>',
                     (out / "maps" / "level.tmx").read_text())
    assert '<image source="tileset.png"' in (out / "tileset.tsx").read_text()
    assert json.loads((out / "tilegan.tiled-project").read_text())["folders"] == ["."]


def test_report_is_self_contained_and_has_every_section(exported):
    _, out, _ = exported
    html = (out / "report.html").read_text()
    srcs = re.findall(r'src="([^"]*)"', html)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    for heading in ("Level", "Tileset", "Kept tiles", "Reuse", "Seams", "Novelty",
                    "Dropped tiles", "Generated screens", "Training", "Stages"):
        assert f"<h2>{heading}" in html, heading
    assert "<svg" in html  # novelty histogram
    assert "Bob &amp; &quot;Alice&quot;" in html and SPECIAL not in html


def test_report_shows_upstream_stage_summaries_from_cache_manifests(tmp_path):
    cache = tmp_path / "cache"
    dd = make_dedupe_dir(cache / "dedupe" / "k1", k=6)
    sl = cache / "slice" / "k0"
    sl.mkdir(parents=True)
    write_json(sl / "manifest.json", {"stage": "slice", "content_digest": "abc",
                                      "summary": {"unique_tiles": 77}, "seconds": 1.5})
    write_json(dd / "manifest.json", {"stage": "dedupe", "inputs": {"tileset": "abc"},
                                      "summary": {"kept": 6}, "seconds": 0.5})
    out, _ = run_export(tmp_path, dd)
    html = (out / "report.html").read_text()
    assert "<h3>slice" in html and "unique_tiles" in html and "<h3>dedupe" in html


def test_runs_without_train_and_samples(tmp_path):
    dd = make_dedupe_dir(tmp_path / "dd", k=5)
    out, s = run_export(tmp_path, dd)
    assert "no training artifact" in (out / "report.html").read_text()


def test_accepts_the_artifact_files_themselves(tmp_path):
    dd = make_dedupe_dir(tmp_path / "dd", k=5)
    out = tmp_path / "out"
    out.mkdir()
    s = export.run({"tileset": [dd / "bank.npy", dd / "maps.npz", dd / "tiles.json"]},
                   export.Params(level_width=8, level_height=4), out)
    assert s["tiles"] == 5 and (out / "maps" / "level.tmx").is_file()


def test_same_inputs_give_same_bytes(tmp_path):
    dd = make_dedupe_dir(tmp_path / "dd", k=6)
    a, _ = run_export(tmp_path, dd, dirname="a")
    b, _ = run_export(tmp_path, dd, dirname="b")
    for f in sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file()):
        assert (a / f).read_bytes() == (b / f).read_bytes(), f


# --------------------------------------------------------------------------- bad input
def _empty_dedupe(tmp_path: Path, kinds: list[str]) -> Path:
    """A dedupe artifact that kept nothing: every tile dropped as a training copy of ``kinds``."""
    dd = make_dedupe_dir(tmp_path / "dd", bank=np.zeros((0, 16, 16, 4), np.uint8), maps={})
    write_json(dd / "dropped.json", [{"tile": i, "reason": "training", "kind": k,
                                      "pixels_differing": 3} for i, k in enumerate(kinds)])
    return dd


def test_empty_bank_names_the_copy_judges_options(tmp_path):
    dd = _empty_dedupe(tmp_path, ["near", "near", "exact"])
    with pytest.raises(StageError, match=r"kept no tile \(dropped: 3 training \(2 near, 1 exact\)"
                                         r"\).*--copy-fraction.*--no-drop-copies") as e:
        run_export(tmp_path, dd)
    assert "train-distance" not in str(e.value) and "keep-palette-swaps" not in str(e.value)


def test_empty_bank_of_palette_swaps_suggests_keeping_them(tmp_path):
    dd = _empty_dedupe(tmp_path, ["palette_swap", "palette_swap", "near"])
    with pytest.raises(StageError, match=r"2 palette swap.*--keep-palette-swaps"):
        run_export(tmp_path, dd)


def test_empty_bank_from_duplicates_names_the_duplicate_threshold(tmp_path):
    dd = make_dedupe_dir(tmp_path / "dd", bank=np.zeros((0, 16, 16, 4), np.uint8), maps={})
    write_json(dd / "dropped.json", [{"tile": i, "reason": "duplicate"} for i in range(3)])
    with pytest.raises(StageError, match="dup-distance"):
        run_export(tmp_path, dd)


def test_tileset_over_max_tiles_is_refused():
    with pytest.raises(ParamError, match="12 tiles exceed max_tiles=10"):
        _core(make_tiles(12), make_maps(12, n=1), max_tiles=10)


def test_missing_bank_is_an_input_error(tmp_path):
    (tmp_path / "nothing").mkdir()
    with pytest.raises(InputError, match="no bank.npy"):
        run_export(tmp_path, tmp_path / "nothing")


def test_corrupt_bank_is_an_input_error(tmp_path):
    dd = make_dedupe_dir(tmp_path / "dd", k=4)
    (dd / "bank.npy").write_bytes(b"not numpy")
    with pytest.raises(InputError, match="bank.npy: not a readable"):
        run_export(tmp_path, dd)


def test_wrong_bank_shape_is_an_input_error(tmp_path):
    dd = make_dedupe_dir(tmp_path / "dd", k=4)
    save_npy(dd / "bank.npy", np.zeros((4, 16, 8, 4), np.uint8))
    with pytest.raises(InputError, match=r"\(K, T, T, 4\)"):
        run_export(tmp_path, dd)


def test_map_using_a_missing_tile_is_an_input_error(tmp_path):
    dd = make_dedupe_dir(tmp_path / "dd", bank=make_tiles(4))
    save_npz(dd / "maps.npz", **make_maps(10, n=2))               # ids up to 9, 4 tiles
    with pytest.raises(InputError, match="do not belong together"):
        run_export(tmp_path, dd)


@pytest.mark.parametrize("field,value,msg", [("level_width", 0, "level_width must be at least 1"),
                                             ("level_width", 5000, "more than 65536 cells"),
                                             ("max_tiles", -1, "max_tiles"),
                                             ("columns", -2, "columns"),
                                             ("level_chunk", 0, "level_chunk"),
                                             ("level_reuse_penalty", -1.0,
                                              "level_reuse_penalty"),
                                             ("encoding", "xml", "encoding")])
def test_bad_params_are_param_errors(field, value, msg):
    with pytest.raises(ParamError, match=msg):
        export.Params(**{field: value})


def _nes_bank(k: int = 6) -> np.ndarray:
    """Tiles drawn from one NES sub-palette ($0F backdrop, $16, $27, $30): NES-legal."""
    from palettes.io import get_palette

    cols = get_palette("nes").colours[[0x0F, 0x16, 0x27, 0x30]]
    idx = np.random.default_rng(2).integers(0, 4, (k, 16, 16))
    bank = np.full((k, 16, 16, 4), 255, np.uint8)
    bank[..., :3] = cols[idx]
    return bank


def test_nes_bundle_holds_every_sample_and_level_screen(tmp_path):
    from tilesets.nes import decode_chr, decode_nametable, decode_palette, render_screen

    bank = _nes_bank()
    dd = make_dedupe_dir(tmp_path / "dd", bank=bank, maps=make_maps(6, n=2, flips=False),
                         flips=False)
    out, s = run_export(tmp_path, dd, nes=True, level_width=32, level_height=15)
    names = sorted(x["name"] for x in s["nes"]["screens"])
    assert names == ["level_00", "level_01", "sample_000", "sample_001"]
    nes = out / "nes"
    tiles = decode_chr((nes / "tiles.chr").read_bytes())
    pal = decode_palette((nes / "palette.pal").read_bytes())
    ids, attr = decode_nametable((nes / "sample_000.nam").read_bytes())
    screen = render_screen(tiles, pal, ids, attr)[:64, :64]
    from PIL import Image
    with Image.open(out / "previews" / "sample_000.png") as im:
        preview = np.asarray(im.convert("RGBA"))
    np.testing.assert_array_equal(screen, export._nes_numbers(preview, "nes", "test"))


def test_nes_needs_nes_palette_colours(tmp_path):
    dd = make_dedupe_dir(tmp_path / "dd", k=4)  # random colours
    with pytest.raises(ParamError, match="not in the nes palette"):
        run_export(tmp_path, dd, nes=True)


def test_nes_bundle_errors_become_param_errors(tmp_path, monkeypatch):
    fake = types.ModuleType("tilesets.nes")

    def write_nes_bundle(screens, names, out_dir, **kw):
        raise ValueError("screen sample_000: too many colours")

    fake.write_nes_bundle = write_nes_bundle
    monkeypatch.setitem(sys.modules, "tilesets.nes", fake)
    dd = make_dedupe_dir(tmp_path / "dd", bank=_nes_bank(), maps=make_maps(6, n=2, flips=False))
    with pytest.raises(ParamError, match="nes output: screen sample_000"):
        run_export(tmp_path, dd, nes=True)


# --------------------------------------------------------------------------- terrain brushes
def _plain_tile(corners, fills) -> np.ndarray:
    """An RGBA tile whose quadrants come from ``fills[terrain]`` (no grass: flips keep it)."""
    out = np.zeros((16, 16, 4), np.uint8)
    out[..., 3] = 255
    for q, (ys, xs) in enumerate(tt.QUAD):
        out[ys, xs, :3] = fills[corners[q]][ys, xs]
    return out


def _terrain_world(n: int = 6) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A recurring, flip-aware dictionary as slice builds it: sky and brick ground, one tile
    per corner pattern up to H/V flips (7 tiles), and ``n`` hilly screens that draw the other
    9 patterns with flip bits."""
    fills = {1: np.broadcast_to(np.array(tt.SKY, np.uint8), (16, 16, 3)), 2: tt.brick()}
    combos = [(a, b, c, d) for a in (1, 2) for b in (1, 2) for c in (1, 2) for d in (1, 2)]
    kept, cell = tt.flip_reduced(combos)
    bank = np.stack([_plain_tile(combos[k], fills) for k in kept])
    table = {i: tt.wangid_of(c) for i, c in enumerate(combos)}
    lut = np.array([cell[i] for i in range(16)], np.uint32)
    maps = {f"gen_{s:04d}": lut[tt.corner_fill(tt.hills(seed=s), table)] for s in range(n)}
    return bank, maps


@pytest.fixture(scope="module")
def terrain_export(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("terrain")
    bank, maps = _terrain_world()
    dd = make_dedupe_dir(tmp / "dd", bank=bank, maps=maps)
    out, summary = run_export(tmp, dd, level_width=16, level_height=8)
    return out, summary


def _wang_tiles(out: Path) -> tuple[dict, dict]:
    """tileset.tsx's Wang set as we wrote it: {tile id: wangid}, {colour index: rgb}."""
    root = ET.parse(out / "tileset.tsx").getroot()
    (wset,) = root.findall("wangsets/wangset")
    assert wset.get("type") == "corner"
    colours = {i + 1: tt.hex_rgb(c.get("color")) for i, c in enumerate(wset.findall("wangcolor"))}
    return ({int(w.get("tileid")): [int(v) for v in w.get("wangid").split(",")]
             for w in wset.findall("wangtile")}, colours)


def test_exported_wang_labels_agree_with_the_tiles_pixels(terrain_export):
    out, _ = terrain_export
    wang, colours = _wang_tiles(out)
    sheet = _sheet_tiles(out)
    assert len(wang) == 7
    for tid, wid in wang.items():
        for q, slot in enumerate((7, 1, 3, 5)):
            ys, xs = tt.QUAD[q]
            assert tt.nearest_colour(sheet[tid][ys, xs, :3], colours) == wid[slot], (tid, q)


def test_exported_terrains_are_named_and_summarised(terrain_export):
    out, s = terrain_export
    t = s["terrains"]
    by_name = {("brick" if x["name"].endswith(" brick") else x["name"]): x
               for x in t["terrains"]}
    assert sorted(by_name) == ["brick", "sky blue"]
    assert (t["wang_tiles"], t["transitions"], t["tiles_outside"], t["flips"]) == (7, 5, 0, True)
    assert t["vertex_agreement"] == 1.0
    sky, ground = by_name["sky blue"], by_name["brick"]
    assert sky["coverage"] == {ground["name"]: 1.0} and ground["coverage"] == {"sky blue": 1.0}
    assert (sky["transitions"], ground["transitions"]) == (5, 5)
    assert (sky["texture"], ground["texture"]) == ("flat", "textured")
    sheet = _sheet_tiles(out)
    assert (sheet[sky["tile"]][..., :3] == tt.SKY).all()  # the sky's fill tile is plain sky


def test_tiled_reads_the_exported_wang_set_and_transformations(terrain_export, tmp_path):
    out, s = terrain_export
    doc = tt.tiled_reads_tileset(out / "tileset.tsx", tmp_path)
    (wset,) = doc["wangsets"]
    assert (wset["type"], wset["name"]) == ("corner", export.TERRAIN_SET_NAME)
    assert [(c["name"], c["color"], c["tile"]) for c in wset["colors"]] == [
        (x["name"], x["colour"], x["tile"]) for x in s["terrains"]["terrains"]]
    assert {w["tileid"]: w["wangid"] for w in wset["wangtiles"]} == _wang_tiles(out)[0]
    assert doc["transformations"] == {"hflip": True, "vflip": True, "rotate": False,
                                      "preferuntransformed": True}


def test_map_painted_with_the_exported_brushes_renders_without_holes(terrain_export, tmp_path):
    import os

    from tests._helpers_tiled import rasterize

    out, s = terrain_export
    doc = tt.tiled_reads_tileset(out / "tileset.tsx", tmp_path)
    (wset,) = doc["wangsets"]
    colours = {i + 1: tt.hex_rgb(c["color"]) for i, c in enumerate(wset["colors"])}
    index = {x["name"]: x["index"] for x in s["terrains"]["terrains"]}
    sky = index.pop("sky blue")
    (ground,) = index.values()
    painted = np.where(tt.hills(cols=21, rows=13, seed=7) == 1, sky, ground)
    painted[2:5, 3:8] = ground                             # a floating island
    painted[8:10, 12:16] = sky                             # a cave
    flips = doc["transformations"]["hflip"] and doc["transformations"]["vflip"]
    cells = tt.corner_fill(painted, {w["tileid"]: w["wangid"] for w in wset["wangtiles"]},
                           flips=flips)
    assert (cells >= 0).all() and (cells >> 30).any()     # flipped tiles fill the gaps
    tmx = tmp_path / "painted.tmx"
    tmx.write_text(tiled_mod.map_xml(bank_ids_to_gids(cells.astype(np.uint32)), tile_size=16,
                                     tileset_source=os.path.relpath(out / "tileset.tsx",
                                                                    tmp_path)))
    img = rasterize(tmx, tmp_path / "painted.png")
    rows, cols = cells.shape
    assert img.shape == (rows * 16, cols * 16, 4)
    assert (img[..., 3] == 255).all(), "a cell rendered empty"
    for r in range(rows):
        for c in range(cols):
            cell = img[r * 16:(r + 1) * 16, c * 16:(c + 1) * 16, :3]
            want = (painted[r, c], painted[r, c + 1], painted[r + 1, c + 1], painted[r + 1, c])
            for q, (ys, xs) in enumerate(tt.QUAD):
                assert tt.nearest_colour(cell[ys, xs], colours) == want[q], (r, c, q)


def test_report_lists_the_terrains(terrain_export):
    out, s = terrain_export
    html = (out / "report.html").read_text()
    assert "<h2>Terrains (terrain brushes in tileset.tsx)</h2>" in html
    for t in s["terrains"]["terrains"]:
        assert f"<tr><th>{t['name']}</th>" in html and f"background:{t['colour']}" in html
    assert "the 5 transition tiles" in html and "flipped" in html


def test_terrains_off_writes_no_wang_set(tmp_path):
    bank, maps = _terrain_world(n=2)
    out, s = run_export(tmp_path, make_dedupe_dir(tmp_path / "dd", bank=bank, maps=maps),
                        terrains=False)
    text = (out / "tileset.tsx").read_text()
    assert "<wangsets>" not in text and "<transformations" not in text
    assert s["terrains"] is None and "<h2>Terrains" not in (out / "report.html").read_text()


def test_tile_set_without_flips_gets_no_transformations(tmp_path):
    tiles, combos = tt.corner_tileset()                   # all 16 patterns, NES-like
    maps = {f"gen_{i}": m for i, m in enumerate(tt.screens(combos, n=3))}
    dd = make_dedupe_dir(tmp_path / "dd", bank=tiles, maps=maps, flips=False)
    out, s = run_export(tmp_path, dd)
    text = (out / "tileset.tsx").read_text()
    assert "<wangsets>" in text and "<transformations" not in text
    assert s["terrains"]["wang_tiles"] == 16 and not s["terrains"]["flips"]
    assert text.index("</tile>") < text.index("<wangsets>") < text.index("</tileset>")


def test_no_terrain_is_a_warning_not_an_error():
    ex = _core(np.zeros((2, 16, 16, 4), np.uint8), make_maps(2, n=1, flips=False))
    assert ex.terrains is not None and not ex.terrains.terrains and ex.wangsets_xml() == []
    assert any("no terrain brush" in w for w in ex.warnings)


# --------------------------------------------------------------------------- sample maps cap
def test_max_sample_maps_caps_the_maps_written_not_the_screens_used(tmp_path):
    dd = make_dedupe_dir(tmp_path / "dd", k=8, n_maps=6)
    out, s = run_export(tmp_path, dd, max_sample_maps=2)
    assert sorted(p.name for p in (out / "maps").glob("sample_*.tmx")) == [
        "sample_000.tmx", "sample_001.tmx"]
    assert sorted(p.name for p in (out / "previews").glob("sample_*.png")) == [
        "sample_000.png", "sample_001.png"]
    assert (s["samples"], s["sample_maps"]) == (6, 2)
    assert s["reuse"]["cells"] == 6 * 16                   # every screen still counts
    html = (out / "report.html").read_text()
    assert "6 generated screens were rebuilt from the tiles" in html
    assert "the first 2 are written as maps/sample_NNN.tmx" in html


def test_max_sample_maps_0_writes_every_screen():
    bank, maps = _world()
    assert len(maps) > 16
    assert len(_core(bank, maps, max_sample_maps=0).sample_maps) == len(maps)
    assert len(_core(bank, maps).sample_maps) == 16        # the default


def test_report_seams_show_the_real_screens_ratio_when_slice_had_them():
    from stages._report import _section_seams

    summary = {"level": {"seams": {"screens": {"border": 12.3, "interior": 6.9, "ratio": 1.78},
                                   "level": {"border": 12.6, "interior": 7.1, "ratio": 1.78}}}}
    info = {"slice": {"summary": {"seam_ratio": {"real": 1.509, "seam_weight": 0.4}}}}
    html = _section_seams(summary, info)
    assert "real training screens" in html and "1.509" in html and "seam weight 0.4" in html
    assert "real training screens" not in _section_seams(summary, {})


# ------------------------------------------------------------------ one level per style
def _two_styles(n: int = 16):
    """Screens of two styles on disjoint tiles: "day" is the recurring world, "night" the same
    layouts on colour-inverted copies of its tiles (ids 7-13)."""
    from tests.test_wfc import recurring_world

    day, bank = recurring_world(n, seed=1)
    night_bank = bank.copy()
    night_bank[..., :3] = 255 - night_bank[..., :3]
    k = np.uint32(len(bank))
    maps = {f"s_{i:03d}": m for i, m in enumerate(day)}
    maps.update({f"s_{n + i:03d}": (m & ~np.uint32(ID_MASK)) | ((m & np.uint32(ID_MASK)) + k)
                 for i, m in enumerate(day)})
    styles = {f"s_{i:03d}": "day" if i < n else "night" for i in range(2 * n)}
    return np.concatenate([bank, night_bank]), maps, styles


def _bank_ids(ex: export.Export, name: str) -> set:
    gids = ex.gids()[name] & ID_MASK
    return {int(ex.layout.bank_of()[g - 1]) for g in np.unique(gids) if g}


def test_each_style_gets_a_level_made_only_of_its_own_tiles():
    bank, maps, styles = _two_styles()
    ex = _core(bank, maps, styles=styles)
    names = [m.name for m in ex.maps]
    assert names[-5:] == ["level", "level_day", "sheet_day", "level_night", "sheet_night"]
    assert _bank_ids(ex, "sheet_night") == set(range(7, 14))      # every night tile, only they
    assert ex.level["styles"]["night"]["tiles"] == 7
    assert _bank_ids(ex, "level_day") <= set(range(7))
    assert _bank_ids(ex, "level_night") <= set(range(7, 14))
    by = ex.level["styles"]
    assert set(by) == {"day", "night"} and by["night"]["map"] == "maps/level_night.tmx"
    assert by["day"]["screens"] == 16 and by["day"]["violations"] == 0


def test_no_style_levels_without_two_styles_of_enough_cells():
    bank, maps, styles = _two_styles()
    few = {s: "day" for s in styles}
    few.update({s: "rare" for s in sorted(styles)[-2:]})    # "rare": 2 screens of 120 cells
    assert 2 * 120 < export.STYLE_LEVEL_MIN_CELLS <= 3 * 120
    assert [m.name for m in _core(bank, maps, styles=few).maps][-1] == "level"
    assert "styles" not in _core(bank, maps).level                 # unconditional: as before


def test_export_reads_the_styles_from_samples_json_and_shows_each_level(tmp_path):
    bank, maps, styles = _two_styles()
    samples = tmp_path / "samples"
    samples.mkdir()
    files = [f"{stem}.png" for stem in sorted(styles)]
    write_json(samples / "samples.json", {"files": files,
                                          "styles": [styles[Path(f).stem] for f in files]})
    dd = make_dedupe_dir(tmp_path / "dd", bank=bank, maps=maps)
    out = tmp_path / "out"
    out.mkdir()
    s = export.run({"tileset": [dd], "samples": [samples]},
                   export.Params(level_width=16, level_height=6), out)
    assert {"maps/level_day.tmx", "maps/level_night.tmx"} <= set(s["maps"])
    assert (out / "previews" / "level_night.png").exists()
    html = (out / "report.html").read_text()
    assert "One level per style" in html and "level like night" in html
    assert "tiles of night" in html and (out / "maps" / "sheet_night.tmx").exists()
    assert export.sample_styles([tmp_path / "nowhere"]) == {}


def test_a_style_drawn_at_its_own_shorter_height_gets_a_level_that_tall():
    bank, maps, styles = _two_styles()
    short = {k: (m[-5:] if styles[k] == "night" else m) for k, m in maps.items()}
    ex = _core(bank, short, styles=styles, level_height=8)
    rows = {name: ex.gids()[name].shape[0] for name in ("level", "level_day", "level_night")}
    assert rows == {"level": 8, "level_day": 8, "level_night": 5}
    same = _core(bank, maps, styles=styles, level_height=8)        # equal heights: as asked
    assert {same.gids()[n].shape[0] for n in ("level_day", "level_night")} == {8}


def test_the_sheet_puts_each_style_tiles_together_and_kind_layout_mixes_them():
    bank, maps, styles = _two_styles()
    ex = _core(bank, maps, styles=styles)
    pos = ex.layout.position
    assert pos[:7].max() < pos[7:].min()                       # day's tiles, then night's
    assert pos[7:].min() % ex.columns == 0                     # night starts a row of its own
    heads = [g["name"].split(": ")[0] for g in ex.sheet_summary()["groups"]]
    assert heads == sorted(heads) and set(heads) == {"day", "night"}
    kind = _core(bank, maps, styles=styles, sheet_layout="kind")
    assert not any(":" in g["name"] for g in kind.sheet_summary()["groups"])
    # a sample map shows the same tiles whichever the layout
    s0 = ex.gids()["sample_000"]
    np.testing.assert_array_equal(ex.tiles[(s0 & ID_MASK) - 1],
                                  kind.tiles[(kind.gids()["sample_000"] & ID_MASK) - 1])
