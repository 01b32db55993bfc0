"""export: the tile set as Tiled files a level designer opens, with previews and a report.

Reads dedupe's artifact (the :class:`tilesets.artifacts.TileSet` plus ``tiles.json``,
``dropped.json``, ``evidence.png``) and, for the report only, train's and sample's artifacts
(inputs ``training_run`` and ``samples``).  Writes::

    tileset.png               every kept tile, laid out by kind (tilesets/atlas.py): groups of
                              rows, sky first, ground last, most used first; ``columns`` per row
    tileset.tsx               external tileset; per-tile properties group, uses, novelty,
                              source_image, score, colours (shown in Tiled's Properties panel);
                              a corner Wang set, the terrain brushes (tilesets/terrain.py), with
                              ``<transformations>`` allowing flipped tiles when the tile set
                              uses flips
    maps/sheet.tmx            all tiles, laid out as in tileset.png
    maps/sample_NNN.tmx       generated screens rebuilt from kept tiles (flips as GID bits):
                              the first ``max_sample_maps`` in name order (the tiles, level,
                              reuse figures and terrains come from every screen)
    maps/level.tmx            a new level made by Wave Function Collapse (tilesets/wfc.py)
    maps/level_<style>.tmx    with sample's ``styles`` (each sample's game): one more level per
                              style with at least ``STYLE_LEVEL_MIN_CELLS`` cells, made only
                              from that style's screens ("a level like this game")
    maps/sheet_<style>.tmx    beside it, every tile that style's screens use, in sheet order
    previews/<map>.png        each map rendered by tilesets/render.py (= Tiled's tmxrasterizer)
    report.html               one self-contained page: level, tileset at 1x / 3x, groups, reuse,
                              seams, novelty, evidence, training
    tilegan.tiled-project     open this in Tiled (File > Open Project) to browse the maps
    nes/                      (``nes`` on) the NES bundle of tilesets/nes.py

All paths inside the files are relative, so the folder can be moved as a whole.  A tile's id is
its place on the sheet, so the core renumbers the bank: every map, property and report entry
uses the sheet ids (``Export.layout.position[bank_id]``), the Wang set's tile ids too.
"""
from __future__ import annotations

import enum
import json
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np

from stages import _report
from stages._common import (InputError, ParamError, ProgressFn, StageError, StageParams,
                            atomic_write_text, file_safe, find_artifact, no_progress, param,
                            save_png)
from tilesets import atlas as atlas_mod
from tilesets import render as render_mod
from tilesets import tiled
from tilesets import wfc as wfc_mod
from tilesets.artifacts import ArtifactError, TileSet, load_json
from tilesets.cells import FLIP_MASK, ID_MASK, cell_tiles
from tilesets.pixels import pack_colours
from tilesets.terrain import TerrainSet, infer_terrains, wangsets_xml

NAME = "export"
INPUTS = {"tileset": "dedupe", "training_run": "train", "samples": "sample"}
OPTIONAL_INPUTS = ("training_run", "samples")
LIBS = ("numpy", "pillow")

log = logging.getLogger("tilegan.export")

#: Most cells WFC will fill; beyond this the level takes minutes and gigabytes.
MAX_LEVEL_CELLS = 65536
#: Seconds Wave Function Collapse may take per model before the greedy fallback.
WFC_TIME_LIMIT = 30.0
#: Name of the Wang set in tileset.tsx (Tiled's Terrain Sets view lists it).
TERRAIN_SET_NAME = "Terrains"


class Encoding(str, enum.Enum):
    """Tile layer data encoding in the .tmx files."""
    csv = "csv"
    base64_zlib = "base64-zlib"


@dataclass(frozen=True)
class Params(StageParams):
    STAGE = "export"

    name: str = param("tileset", help="tileset name shown in Tiled (any text; XML-escaped)")
    level_width: int = param(64, help="width of maps/level.tmx in tiles", min=1)
    level_height: int = param(15, help="height of maps/level.tmx in tiles", min=1)
    seed: int = param(0, help="seed of the Wave Function Collapse level")
    encoding: Encoding = param(Encoding.csv, help="tile layer data encoding: csv or base64-zlib")
    max_tiles: int = param(0, help="fail if the tileset would hold more tiles than this "
                                   "(0: no limit)", min=0)
    columns: int = param(16, help="tiles per row of tileset.png and maps/sheet.tmx "
                                  "(0: near-square)", min=0)
    wfc_attempts: int = param(5, help="Wave Function Collapse restarts before the greedy fallback",
                              min=0)
    level_chunk: int = param(2, help="when tiles do not recur, the level is assembled from "
                                     "square pieces of this many tiles a side, cut from the "
                                     "generated screens (1: from single tiles)", min=1)
    level_seams: int = param(12, help="besides the neighbours seen in the generated screens, "
                                      "allow this many best-matching pixel seams per piece (or "
                                      "tile) and side (0: seen neighbours only)", min=0)
    level_reuse_penalty: float = param(1.0, help="divide a piece's chance by (1 + times already "
                                                 "used) to this power, so no piece floods the "
                                                 "level (0: by frequency only); single tiles "
                                                 "count only the uses beyond their share of the "
                                                 "generated screens", min=0.0)
    level_model: str = param("auto", help="what the level is made of: auto (single tiles and "
                                          "their seen neighbours when tiles recur, else pieces), "
                                          "tiles, or chunks", choices=wfc_mod.MODELS)
    sheet_layout: str = param("style", help="tileset.png layout: style (one block of rows per "
                                            "game the samples name, each laid out by kind; "
                                            "as kind when there are not two), kind (groups "
                                            "of related tiles: sky first, ground last) or "
                                            "bank (dedupe's order, best first)",
                              choices=("style", "kind", "bank"))
    report_samples: int = param(16, help="generated screens shown in report.html", min=0)
    max_sample_maps: int = param(16, help="write at most this many rebuilt screens as "
                                          "maps/sample_NNN.tmx with previews, the first in name "
                                          "order (0: all); the tiles, the level and the "
                                          "terrains still come from every screen", min=0)
    terrains: bool = param(True, help="write terrain brushes into tileset.tsx: a corner Wang "
                                      "set whose terrains are inferred from the tiles' pixels "
                                      "and the rebuilt screens (off: no Wang set)")
    nes: bool = param(False, help="also write the NES bundle (CHR, nametables, palette) of every "
                                  "sample map written and of the level into nes/")
    nes_palette: str = param("nes", help="NES palette the tiles were quantized with (built-in name "
                                         "or .pal file), to read colour numbers back for --nes")

    def check(self) -> None:
        super().check()
        if self.level_width * self.level_height > MAX_LEVEL_CELLS:
            raise ParamError(f"export: level {self.level_width}x{self.level_height} has more than "
                             f"{MAX_LEVEL_CELLS} cells; make it smaller", field="level_width")


@dataclass
class TiledMap:
    """One map to write: ``maps/<name>.tmx`` and ``previews/<name>.png``.

    gids : ndarray, shape (rows, cols), uint32 — Tiled GIDs with flip bits (0 = empty cell)
    """

    name: str
    gids: np.ndarray
    properties: dict


@dataclass
class Export:
    """Everything :func:`export_tileset` made, ready to write.

    Attributes
    ----------
    atlas : ndarray, shape (rows * T, columns * T, 4), uint8
        tileset.png.
    columns : int
    tiles : ndarray, shape (tile_count, T, T, 4), uint8
        The sheet's tiles in tile-id order (blank cells fully transparent): what every map's
        GIDs point into.
    layout : tilesets.atlas.SheetLayout
        Where each bank tile sits (its tile id) and the groups.
    tile_properties : list of dict
        Per-tile Tiled properties by tile id (tileset.tsx, and the report's tile tooltips);
        ``{}`` for blank cells.
    maps : list of TiledMap
        ``sheet``, ``sample_NNN`` (the first ``max_sample_maps`` maps of the tile set, in stem
        order), ``level``.
    sample_maps : list of dict
        ``{map, source_image, flipped_cells}`` per sample map written.
    screens : int
        Screens rebuilt from the tiles (the tile set's maps), written or not.
    level : dict
        The level's :meth:`tilesets.wfc.WfcResult.summary` plus ``seconds``; with per-style
        levels, ``styles``: ``{style: {"map", "screens", ...that level's summary}}``.
    reuse : dict
        How the rebuilt screens reuse the tiles: :meth:`tilesets.wfc.Recurrence.to_json` plus
        ``top_share`` (the commonest tile's share of the cells) and ``uses`` (cells per tile id,
        blank cells left out).
    terrains : TerrainSet or None
        The terrain brushes (tile ids = sheet ids); None when ``terrains`` is off.
    flips : bool
        The tile set draws tiles flipped (tileset.tsx then lets the terrain brush flip tiles).
    warnings : list of str
    """

    atlas: np.ndarray
    columns: int
    tiles: np.ndarray
    layout: atlas_mod.SheetLayout
    tile_properties: list
    maps: list
    sample_maps: list
    level: dict
    screens: int = 0
    reuse: dict = field(default_factory=dict)
    terrains: Optional[TerrainSet] = None
    flips: bool = False
    warnings: list = field(default_factory=list)

    def gids(self) -> dict[str, np.ndarray]:
        return {m.name: m.gids for m in self.maps}

    def wangsets_xml(self) -> list[str]:
        """The ``<wangsets>`` lines of tileset.tsx (none without terrains)."""
        return wangsets_xml(self.terrains) if self.terrains is not None else []

    def terrain_summary(self) -> Optional[dict]:
        """JSON-able account of the terrains (see :func:`terrain_summary`); None when off."""
        if self.terrains is None:
            return None
        return terrain_summary(self.terrains, flips=self.flips,
                               tiles=len(self.layout.position))

    def sheet_summary(self) -> dict:
        """JSON-able: layout, columns, tile_count, blank cells and the groups in sheet order."""
        lay = self.layout
        return {"columns": lay.columns, "rows": lay.rows, "tile_count": lay.tile_count,
                "blank": lay.tile_count - len(lay.position),
                "groups": [g.to_json() for g in lay.groups]}


# --------------------------------------------------------------------------- core
def export_tileset(tileset: TileSet, tile_records: Optional[list], params: Params, *,
                   styles: Optional[dict] = None, progress: ProgressFn = no_progress) -> Export:
    """Lay out the tile set for Tiled: sheet, tile properties, the maps and a new level.

    Steps: :func:`_sheet_layout` (tiles grouped by kind; a tile's sheet position becomes its
    id) → every map renumbered to sheet ids → :func:`_sample_maps` (the first
    ``max_sample_maps``) → :func:`_level` → :func:`_terrains` → :func:`_tile_properties` by
    sheet id → :func:`_reuse`.  The level, terrains and reuse figures use every map.

    Parameters
    ----------
    tileset : TileSet
        Dedupe's kept tiles (at least one) and maps (at least one).
    tile_records : list of dict or None
        dedupe's tiles.json records (by bank id), the source of the tile properties (None: no
        tiles.json).
    params : Params
    styles : dict, optional
        Screen stem -> style name (sample's ``styles``, :func:`sample_styles`): besides
        ``level``, one level per style (:func:`_style_levels`).

    Returns
    -------
    Export

    Raises
    ------
    ParamError
        When the tile set holds more than ``max_tiles`` tiles.
    """
    bank = tileset.bank
    k = len(bank)
    if params.max_tiles and k > params.max_tiles:
        raise ParamError(f"export: {k} tiles exceed max_tiles={params.max_tiles}; raise "
                         "--max-tiles, or tighten dedupe's thresholds to keep fewer tiles")
    warnings = [] if tile_records is not None else [
        "no tiles.json: tiles carry no novelty/source properties"]
    semi = int(((bank[..., 3] > 0) & (bank[..., 3] < 255)).sum())
    if semi:
        warnings.append(f"{semi} semi-transparent pixels: Tiled may draw them one colour level off")
    progress("export", 0, 5)
    uses = tileset.uses()
    layout = _sheet_layout(tileset, uses, params, styles or {})
    tiles = layout.sheet_tiles(bank)
    atlas = atlas_mod.pack_atlas(tiles, columns=layout.columns)
    maps = {stem: layout.remap(tileset.maps[stem]) for stem in sorted(tileset.maps)}
    progress("export", 1, 5)
    written = _written_stems(maps, params.max_sample_maps)
    samples = _sample_maps({stem: maps[stem] for stem in written})
    progress("export", 2, 5)
    level, level_info, level_warnings = _level(tiles, maps, params)
    style_levels, by_style = _style_levels(tiles, maps, styles or {}, params,
                                           columns=layout.columns)
    if by_style:
        level_info = dict(level_info, styles=by_style)
    progress("export", 3, 5)
    terrains, terrain_warnings = _terrains(tiles, maps, params)
    progress("export", 4, 5)
    sample_info = [{"map": f"maps/{m.name}.tmx", "source_image": stem,
                    "flipped_cells": int(((maps[stem] & np.uint32(FLIP_MASK)) != 0).sum())}
                   for m, stem in zip(samples, written)]
    props = _tile_properties(tile_records or [], layout, uses)
    return Export(atlas, layout.columns, tiles, layout, props,
                  [_sheet_map(layout)] + samples + [level] + style_levels, sample_info, level_info,
                  screens=len(maps), reuse=_reuse(maps.values(), layout, uses),
                  terrains=terrains, flips=bool(tileset.flips),
                  warnings=warnings + level_warnings + terrain_warnings)


def _sheet_layout(tileset: TileSet, uses: np.ndarray, params: Params,
                  styles: dict) -> atlas_mod.SheetLayout:
    """Where each bank tile goes on tileset.png (:func:`tilesets.atlas.layout_sheet`; with
    ``styles``, stem -> style name, each tile belongs to the style that uses it most)."""
    k = len(tileset)
    cols = atlas_mod.atlas_columns(k, params.columns)
    maps = list(tileset.maps.values())
    names = sorted(set(styles.values()))
    return atlas_mod.layout_sheet(tileset.bank, uses, columns=cols,
                                  by=params.sheet_layout,
                                  heights=atlas_mod.tile_heights(maps, k),
                                  styles=atlas_mod.tile_styles(tileset.maps, styles, k, names),
                                  style_names=names)


def _sheet_map(layout: atlas_mod.SheetLayout) -> TiledMap:
    """Every tile once, where it sits on tileset.png (blank sheet cells stay empty)."""
    bank_of = layout.bank_of()
    gids = np.where(bank_of >= 0, np.arange(1, layout.tile_count + 1), 0).astype(np.uint32)
    return TiledMap("sheet", gids.reshape(layout.rows, layout.columns),
                    {"tiles": int(len(layout.position)), "groups": len(layout.groups)})


def _written_stems(maps: dict[str, np.ndarray], limit: int) -> list[str]:
    """The stems whose screens become maps/sample_NNN.tmx: the first ``limit`` in name order
    (0: all)."""
    stems = sorted(maps)
    return stems[:limit] if limit else stems


def _sample_maps(maps: dict[str, np.ndarray]) -> list[TiledMap]:
    """One map per generated screen, numbered in stem order."""
    digits = max(3, len(str(len(maps) - 1)))
    return [TiledMap(f"sample_{i:0{digits}d}", tiled.bank_ids_to_gids(m), {"source_image": stem})
            for i, (stem, m) in enumerate(maps.items())]


def style_level_heights(groups: dict[str, dict[str, np.ndarray]], params: Params) -> dict:
    """Rows of each style's level: ``params.level_height``, except when the styles' screens
    differ in height (sample drew each at its own screen height, ``--style-height``): then a
    style whose screens are all shorter gets a level as tall as they are (a game of 8-row
    screens, an 8-row level laid out as they are, not their layout stretched over 15)."""
    rows = {style: {int(m.shape[0]) for m in g.values()} for style, g in groups.items()}
    if len({r for rs in rows.values() for r in rs}) < 2:
        return {style: params.level_height for style in groups}
    return {style: min(params.level_height, max(rs)) for style, rs in rows.items()}


def _level(tiles: np.ndarray, maps: dict[str, np.ndarray],
           params: Params, height: int = 0) -> tuple[TiledMap, dict, list[str]]:
    """A new level by Wave Function Collapse over the generated screens (cells in sheet ids,
    ``tiles`` in sheet order), ``height`` rows tall (0: ``params.level_height``), its summary
    (with ``seconds``) and the warnings it deserves."""
    t0 = time.perf_counter()
    result = wfc_mod.make_level(maps.values(), partial(cell_tiles, tiles),
                                width=params.level_width, height=height or params.level_height,
                                seed=params.seed, attempts=params.wfc_attempts,
                                seams=params.level_seams, chunk=params.level_chunk,
                                reuse_penalty=params.level_reuse_penalty,
                                model=params.level_model, time_limit=WFC_TIME_LIMIT)
    info = dict(result.summary(), seconds=round(time.perf_counter() - t0, 3))
    warnings = []
    model = result.stats.get("model")
    if result.method == "greedy-fallback":
        warnings.append(f"level: Wave Function Collapse did not finish ({result.attempts} "
                        f"attempts); filled greedily, leaving {result.stats.get('unseen_pairs')} "
                        "neighbour pairs that no generated screen shows")
    elif result.stats.get("tried", [model])[0] == "chunks" and model != "chunks":
        c = params.level_chunk
        warnings.append(f"level: could not be assembled from {c}x{c} pieces of the generated "
                        f"screens; made from single tiles ({model} model)")
    elif model == "observed+seams":
        warnings.append("level: the neighbours seen in the generated screens could not fill it; "
                        "widened with best-matching pixel seams")
    level = TiledMap("level", tiled.bank_ids_to_gids(result.grid),
                     {"method": result.method, "model": model,
                      "seed": params.seed, "violations": result.violations})
    return level, info, warnings


#: A style gets its own level when its screens hold at least this many cells: 16 samples of
#: 64×64, or two whole screens (fewer show too few tile pairs for a level that looks like them).
STYLE_LEVEL_MIN_CELLS = 256


def _style_levels(tiles: np.ndarray, maps: dict[str, np.ndarray], styles: dict,
                  params: Params, *, columns: int) -> tuple[list[TiledMap], dict]:
    """One level per style (``level_<style>``) from that style's screens alone, for every style
    whose screens hold at least :data:`STYLE_LEVEL_MIN_CELLS` cells, when two or more qualify (one
    style's level is ``level`` itself), each followed by the style's tiles
    (:func:`_style_sheet`).  Returns the maps and ``{style: summary}`` (the maps' paths, its
    screens and tiles and the level's summary; warnings go into the summary)."""
    groups: dict[str, dict] = {}
    for stem, m in maps.items():
        if stem in styles:
            groups.setdefault(str(styles[stem]), {})[stem] = m
    groups = {k: v for k, v in sorted(groups.items())
              if sum(m.size for m in v.values()) >= STYLE_LEVEL_MIN_CELLS}
    if len(groups) < 2:
        return [], {}
    heights = style_level_heights(groups, params)
    out, info, used = [], {}, set()
    for style, group in groups.items():
        slug = file_safe(style, default="style")
        slug = slug if slug not in used else f"{slug}-{len(used)}"    # "a b" and "a_b"
        used.add(slug)
        level, summary, warnings = _level(tiles, group, params, heights[style])
        level.name = f"level_{slug}"
        level.properties = dict(level.properties, style=style, screens=len(group))
        sheet = _style_sheet(group, style, slug, columns=columns)
        out += [level, sheet]
        summary.pop("seconds", None)             # the report must not change with timing
        info[style] = dict(summary, map=f"maps/{level.name}.tmx", screens=len(group),
                           sheet=f"maps/{sheet.name}.tmx",
                           tiles=int(sheet.properties["tiles"]), warnings=warnings)
    return out, info


def _style_sheet(group: dict[str, np.ndarray], style: str, slug: str, *,
                 columns: int) -> TiledMap:
    """``sheet_<slug>``: every tile one style's screens use, once, in sheet order (so by
    kind, as on tileset.png), ``columns`` per row: that game's palette of tiles to paint from."""
    ids = np.unique(np.concatenate([(m & np.uint32(ID_MASK)).ravel() for m in group.values()]))
    rows = -(-len(ids) // columns)
    gids = np.zeros(rows * columns, np.uint32)
    gids[:len(ids)] = ids.astype(np.uint32) + 1
    return TiledMap(f"sheet_{slug}", gids.reshape(rows, columns),
                    {"style": style, "tiles": int(len(ids))})


def sample_styles(sample_paths: list[Path]) -> dict:
    """Screen stem -> style name from sample's ``samples.json`` (``styles`` beside ``files``,
    written when the model knows styles: its style index or a conditional model's labels);
    ``{}`` when there is none or it is unreadable (the per-style levels are an extra: a
    warning-free no-op, never a failed export)."""
    manifest = find_artifact([Path(p) for p in sample_paths], "samples.json")
    if manifest is None:
        return {}
    try:
        data = load_json(manifest)
    except ArtifactError:
        return {}
    if not isinstance(data, dict):
        return {}
    files, styles = data.get("files"), data.get("styles")
    if not isinstance(files, list) or not isinstance(styles, list) or len(files) != len(styles):
        return {}
    return {Path(str(f)).stem: str(s) for f, s in zip(files, styles)}


def _terrains(tiles: np.ndarray, maps: dict[str, np.ndarray],
              params: Params) -> tuple[Optional[TerrainSet], list[str]]:
    """The terrain brushes of the sheet's tiles (``tiles`` in sheet order, blank cells
    transparent, so they stay out) over every rebuilt screen (``maps`` in sheet ids), and the
    warnings they deserve; (None, []) when ``terrains`` is off."""
    if not params.terrains:
        return None, []
    ts = infer_terrains(tiles, list(maps.values()), name=TERRAIN_SET_NAME)
    if not ts.terrains:
        return ts, ["terrains: no tile is filled with one material, so tileset.tsx has no "
                    "terrain brush"]
    return ts, []


def terrain_summary(ts: TerrainSet, *, flips: bool, tiles: int) -> dict:
    """JSON-able account of a terrain set, for the summary and the report.

    Parameters
    ----------
    ts : TerrainSet
    flips : bool
        Whether the brush may flip tiles (coverage then counts flipped Wang tiles).
    tiles : int
        Tiles on the sheet (blank cells left out): those not in the set are counted.

    Returns
    -------
    dict
        ``set``, ``type``, ``flips``, ``wang_tiles``, ``transitions``, ``tiles_outside``,
        ``vertex_agreement``, ``terrains`` (per terrain: ``index``, ``name``, ``colour``
        "#rrggbb", ``texture``, ``tile`` (its fill tile), ``fill_tiles``, ``transitions`` (Wang
        tiles mixing it with another terrain), ``share`` of the quadrants, ``coverage`` {other
        terrain's name: share of the 14 mixed corner patterns the brush can draw}).
    """
    cov = ts.coverage(flips=flips)
    names = {t.index: t.name for t in ts.terrains}
    trans = ts.transitions
    rows = []
    for t in ts.terrains:
        pairs = {names[b if a == t.index else a]: round(v, 3) for (a, b), v in cov.items()
                 if t.index in (a, b)}
        rows.append({"index": t.index, "name": t.name,
                     "colour": "#" + "".join(f"{int(c):02x}" for c in t.colour),
                     "texture": t.texture, "tile": t.tile, "fill_tiles": len(t.fill_tiles),
                     "transitions": sum(1 for i in trans if t.index in ts.corners[i]),
                     "share": round(t.share, 3), "coverage": pairs})
    return {"set": ts.name, "type": "corner", "flips": bool(flips),
            "wang_tiles": len(ts.wang_tiles), "transitions": len(trans),
            "tiles_outside": int(tiles) - len(ts.wang_tiles),
            "vertex_agreement": round(ts.vertex_agreement, 3), "terrains": rows}


def _reuse(maps: Iterable[np.ndarray], layout: atlas_mod.SheetLayout, uses: np.ndarray) -> dict:
    """How the rebuilt screens reuse the tiles (see :attr:`Export.reuse`)."""
    rec = wfc_mod.measure_recurrence(maps).to_json()
    total = max(1, int(uses.sum()))
    return dict(rec, top_share=round(float(uses.max(initial=0)) / total, 4),
                uses=[int(uses[b]) for b in layout.bank_of() if b >= 0])


#: tiles.json fields written as Tiled tile properties (absent or null fields are left out);
#: ``group`` and ``uses`` come from the sheet layout and the maps.
TILE_PROPERTIES = ("group", "uses", "novelty", "source_image", "score", "colours", "isolated",
                   "flat")


def _tile_properties(meta: list, layout: atlas_mod.SheetLayout,
                     uses: np.ndarray) -> list[dict[str, Any]]:
    """Tiled properties of each sheet cell (by tile id; ``{}`` where the sheet is blank) from
    dedupe's tiles.json records (by bank id), the tile's group and its uses in the maps.

    Novelty is dedupe's category (``new``, ``related``, ``copy``, ``common``) or, in older
    artifacts, a Hamming distance; a negative or null one (not measured) is left out.
    """
    by_id: dict[int, dict] = {}
    for i, m in enumerate(meta):
        if isinstance(m, dict):
            by_id[int(m.get("id", i))] = m
    group_of = layout.group_of()
    props = []
    for tile_id, b in enumerate(layout.bank_of().tolist()):
        if b < 0:
            props.append({})
            continue
        m = dict(by_id.get(b, {}), group=group_of[tile_id], uses=int(uses[b]))
        p: dict[str, Any] = {}
        for name in TILE_PROPERTIES:
            v = m.get(name)
            if name == "colours" and isinstance(v, (list, tuple)):
                v = ",".join(_colour_text(c) for c in v)
            if name == "novelty":
                v = _novelty(v)
            if isinstance(v, (dict, list)):
                v = json.dumps(v, sort_keys=True)
            p[name] = v
        props.append(p)
    return props


def _novelty(v: Any) -> Any:
    """A tiles.json novelty as a Tiled property value: the category text, or an int distance;
    None when not measured."""
    if isinstance(v, str):
        return v or None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
        return None
    return int(v)


def _colour_text(c: Any) -> str:
    if isinstance(c, (list, tuple)) and len(c) in (3, 4) and all(isinstance(v, int) for v in c):
        return "#" + "".join(f"{int(v):02x}" for v in c[:3])
    return str(c)



# --------------------------------------------------------------------------- inputs
def _load_inputs(items: list[Path]) -> tuple[TileSet, Optional[list], list, Optional[Path]]:
    """Dedupe's artifact: tile set, tiles.json records (None when absent), dropped.json records
    and evidence.png (None when absent).

    Raises InputError naming the file when one is missing or malformed, and when the tile set
    holds no tile (with the dedupe threshold to loosen) or no map.
    """
    if not items:
        raise InputError("export needs dedupe's output (a folder with bank.npy and maps.npz)")
    for p in items:
        if not p.exists():
            raise InputError(f"{p}: no such file or folder")
    bank_path = find_artifact(items, "bank.npy")
    if bank_path is None:
        raise InputError(f"{items[0]}: no bank.npy here; pass dedupe's output folder")
    meta_path = find_artifact(items, "tiles.json")
    try:
        tileset = TileSet.load(bank_path.parent)
        meta = load_json(meta_path) if meta_path is not None else None
        dropped_path = find_artifact(items, "dropped.json")
        dropped = load_json(dropped_path) if dropped_path is not None else []
    except ArtifactError as e:
        raise InputError(str(e)) from None
    if meta is not None and not isinstance(meta, list):
        raise InputError(f"{meta_path}: expected a JSON list of per-tile records")
    if not isinstance(dropped, list):
        raise InputError(f"{dropped_path}: expected a JSON list of dropped-tile records")
    if len(tileset) == 0:
        raise _empty_bank_error(bank_path, dropped)
    if not tileset.maps:
        raise InputError(f"{bank_path.parent / 'maps.npz'}: holds no map; rerun slice and dedupe")
    return tileset, meta, dropped, find_artifact(items, "evidence.png")


def _empty_bank_error(bank_path: Path, dropped: list) -> StageError:
    records = [d for d in dropped if isinstance(d, dict)]
    reasons = Counter(str(d.get("reason", "?")) for d in records)
    kinds = Counter(str(d["kind"]) for d in records
                    if str(d.get("reason", "")).startswith("training") and d.get("kind"))
    parts = []
    for r, n in reasons.most_common():
        of = ", ".join(f"{m} {k.replace('_', ' ')}" for k, m in kinds.most_common())
        parts.append(f"{n} {r}" + (f" ({of})" if r.startswith("training") and of else ""))
    detail = ", ".join(parts) or "no record in dropped.json"
    top = reasons.most_common(1)[0][0] if reasons else ""
    if top.startswith("dup") or "near" in top:
        hint = ("lower dedupe's --dup-distance or --dup-fraction (the limits under which "
                "generated tiles count as near-duplicates)")
    elif top == "flat":
        hint = ("lower dedupe's --flat-fraction (every tile counted as a flat colour already "
                "kept) or generate more varied samples")
    else:
        swaps = "add --keep-palette-swaps (most calls are palette swaps), " if (
            kinds and kinds.most_common(1)[0][0] == "palette_swap") else ""
        hint = (f"dedupe called them copies of training tiles: {swaps}lower --copy-fraction (the "
                "share of pixels in which a near or shifted copy may differ from its training "
                "tile), or pass --no-drop-copies to keep them and only report the calls")
    return InputError(f"{bank_path}: dedupe kept no tile (dropped: {detail}); {hint}, "
                      "then rerun dedupe and export")



# --------------------------------------------------------------------------- writing
def _write(out_dir: Path, ex: Export, params: Params) -> None:
    """tileset.png, tileset.tsx, every map with its preview, and the Tiled project file."""
    ts = int(ex.tiles.shape[1])
    save_png(out_dir / "tileset.png", ex.atlas)
    wang = ex.wangsets_xml()
    atomic_write_text(out_dir / "tileset.tsx", tiled.tileset_xml(
        name=params.name, tile_size=ts, tile_count=ex.layout.tile_count, columns=ex.columns,
        image_source="tileset.png", image_width=int(ex.atlas.shape[1]),
        image_height=int(ex.atlas.shape[0]), tile_properties=ex.tile_properties,
        properties={"generator": "tilegan"}, flips=bool(wang) and ex.flips, extra_lines=wang))
    for m in ex.maps:
        atomic_write_text(out_dir / "maps" / f"{m.name}.tmx", tiled.map_xml(
            m.gids, tile_size=ts, tileset_source="../tileset.tsx",
            encoding=Encoding(params.encoding).value, layer_name=m.name, properties=m.properties))
        save_png(out_dir / "previews" / f"{m.name}.png", render_mod.render_map(m.gids, ex.tiles))
    atomic_write_text(out_dir / "tilegan.tiled-project", tiled.project_json(folders=(".",)))


# --------------------------------------------------------------------------- run
def run(inputs: dict[str, list[Path]], params: Params, out_dir: Path,
        progress: ProgressFn = no_progress) -> dict:
    """Write the Tiled tileset, maps, previews and report.  See the module docstring."""
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    items = [Path(p) for p in inputs.get("tileset", [])]
    tileset, meta, dropped, evidence = _load_inputs(items)
    ex = export_tileset(tileset, meta, params, progress=progress,
                        styles=sample_styles(list(inputs.get("samples") or [])))
    _write(out_dir, ex, params)
    summary: dict[str, Any] = {
        "name": params.name, "tiles": len(tileset), "tile_size": tileset.tile_size,
        "columns": ex.columns, "encoding": Encoding(params.encoding).value,
        "maps": sorted(f"maps/{m.name}.tmx" for m in ex.maps), "samples": ex.screens,
        "sample_maps": len(ex.sample_maps), "max_sample_maps": params.max_sample_maps,
        "flipped_cells": sum(s["flipped_cells"] for s in ex.sample_maps),
        "dropped": len(dropped), "sheet": ex.sheet_summary(),
        "reuse": {k: v for k, v in ex.reuse.items() if k != "uses"}, "level": ex.level,
        "terrains": ex.terrain_summary(), "warnings": ex.warnings}
    if params.nes:
        summary["nes"] = _write_nes(ex.tiles, _nes_screens(ex.gids(), tileset.tile_size),
                                    out_dir / "nes", params.nes_palette)
    # The report leaves out timings so that the same inputs give the same bytes.
    _report.write_report(
        out_dir, title=params.name, summary=dict(summary, level={
            k: v for k, v in ex.level.items() if k != "seconds"}),
        bank=ex.tiles, tile_meta=meta or [], tile_props=ex.tile_properties, dropped=dropped,
        evidence=evidence, train_dirs=[Path(p) for p in inputs.get("training_run") or []],
        sample_paths=[Path(p) for p in inputs.get("samples") or []],
        sample_maps=ex.sample_maps, upstream_dirs=items, report_samples=params.report_samples,
        uses=ex.reuse.get("uses", []), terrain_tiles=_terrain_tiles(ex.terrains))
    progress("export", 5, 5)
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    return summary


def _terrain_tiles(ts: Optional[TerrainSet]) -> dict[int, list[int]]:
    """Transition tile id -> its corners' terrain indices (top-left, top-right, bottom-right,
    bottom-left), for the report."""
    if ts is None:
        return {}
    return {int(i): [int(v) for v in ts.corners[i]] for i in ts.transitions}


# --------------------------------------------------------------------------- NES
def _nes_numbers(rgba: np.ndarray, palette_spec: str, where: str) -> np.ndarray:
    """NES colour numbers (H, W) uint8 of an RGBA image whose colours come from an NES palette.

    Transparent pixels become $0F (black, the usual backdrop).  A colour that is not in the
    palette raises ParamError naming ``where``.
    """
    from palettes.io import PaletteError, get_palette  # lazy: only the NES output needs it

    try:
        pal = get_palette(palette_spec)
    except PaletteError as e:
        raise ParamError(f"nes_palette: {e}") from None
    if pal.kind != "nes" or len(pal) != 64:
        raise ParamError(f"nes_palette: {pal.name} is not a 64-colour NES palette")
    lut = {}
    for i in pal.usable()[::-1]:  # lowest usable index wins among equal colours
        lut[tuple(int(v) for v in pal.colours[i])] = int(i)
    keys = pack_colours(rgba[..., :3])
    uniq, inv = np.unique(keys, return_inverse=True)
    inv = inv.reshape(keys.shape)
    rgb = np.stack([uniq & 255, (uniq >> 8) & 255, (uniq >> 16) & 255], axis=1)
    opaque = np.zeros(len(uniq), bool)
    opaque[np.unique(inv[rgba[..., 3] > 0])] = True
    nums = np.zeros(uniq.shape, np.uint8)
    for j in np.lexsort((rgb[:, 2], rgb[:, 1], rgb[:, 0])):  # RGB order: names the lowest bad one
        colour = tuple(int(v) for v in rgb[j])
        if colour in lut:
            nums[j] = lut[colour]
        elif opaque[j]:
            raise ParamError(f"{where}: colour #{bytes(colour).hex()} is not in the {pal.name} "
                             f"palette; quantize with that NES palette (and --nes) or set "
                             f"--nes-palette")
    out = nums[inv]
    out[rgba[..., 3] == 0] = 0x0F
    return out


def _write_nes(bank: np.ndarray, screens: dict[str, np.ndarray], out: Path, palette: str) -> dict:
    """Write the NES bundle of ``screens`` (name -> GIDs) with ``tilesets.nes.write_nes_bundle``.

    Each screen is rendered to pixels, mapped to NES colour numbers and handed over as
    ``write_nes_bundle([numbers (H, W) uint8, ...], [name, ...], out)``; backdrop and
    sub-palettes are inferred there.  Its ValueError (a screen that is not NES-legal) becomes
    a ParamError.
    """
    try:
        from tilesets.nes import write_nes_bundle
    except ImportError as e:
        raise ParamError(f"nes output is not available in this build ({e}); run without --nes") from None
    names = sorted(screens)
    numbers = [_nes_numbers(render_mod.render_map(screens[n], bank), palette, f"screen {n}")
               for n in names]
    out.mkdir(parents=True, exist_ok=True)
    try:
        info = write_nes_bundle(numbers, names, out)
    except ValueError as e:
        raise ParamError(f"nes output: {e}") from None
    return dict(info) if isinstance(info, dict) else {"written": str(out)}


def _nes_screens(maps: dict[str, np.ndarray], ts: int) -> dict[str, np.ndarray]:
    """Screens for the NES bundle (name -> GIDs): every sample map, and the level cut into
    256x240 screens."""
    screens = {k: v for k, v in maps.items() if k.startswith("sample_")}
    level = maps.get("level")
    if level is not None:
        sw, sh = max(1, 256 // ts), max(1, 240 // ts)
        rows, cols = level.shape
        for r in range(0, rows, sh):
            for c in range(0, cols, sw):
                tag = f"level_{c // sw:02d}" if rows <= sh else f"level_{r // sh:02d}_{c // sw:02d}"
                screens[tag] = level[r:r + sh, c:c + sw]
    return screens
