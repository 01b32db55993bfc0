"""export: the tile bank as Tiled files a level designer opens, with previews and a report.

Reads dedupe's artifact (``bank.npy``, ``maps.npz``, ``tiles.json``, ``dropped.json``,
``evidence.png``) and, for the report only, train's and sample's artifacts.  Writes::

    tileset.png               every kept tile, row-major, ``columns`` per row
    tileset.tsx               external tileset; per-tile properties novelty, source_image, score,
                              colours (shown in Tiled's Properties panel)
    maps/sheet.tmx            all tiles, laid out as in tileset.png
    maps/sample_NNN.tmx       each generated screen rebuilt from kept tiles (flips as GID bits)
    maps/level.tmx            a new level made by Wave Function Collapse (tilesets/wfc.py)
    previews/<map>.png        each map rendered by tilesets/render.py (= Tiled's tmxrasterizer)
    report.html               one self-contained page: level, tiles, novelty, evidence, training
    tilegan.tiled-project     open this in Tiled (File > Open Project) to browse the maps
    nes/                      (``nes`` on) the NES bundle of tilesets/nes.py

All paths inside the files are relative, so the folder can be moved as a whole.
"""
from __future__ import annotations

import enum
import json
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from stages._common import (InputError, ParamError, ProgressFn, StageError, atomic_write_text,
                            find_artifact, no_progress, param, save_png)
from tilesets import atlas as atlas_mod
from tilesets import render as render_mod
from tilesets import tiled
from tilesets import wfc as wfc_mod

NAME = "export"
INPUTS = {"tiles": "dedupe", "train": "train", "samples": "sample"}
OPTIONAL_INPUTS = ("train", "samples")
LIBS = ("numpy", "pillow")

log = logging.getLogger("tilegan.export")

#: Most cells WFC will fill; beyond this the level takes minutes and gigabytes.
MAX_LEVEL_CELLS = 65536
#: Seconds Wave Function Collapse may take per model before the greedy fallback.
WFC_TIME_LIMIT = 30.0


class Encoding(str, enum.Enum):
    """Tile layer data encoding in the .tmx files."""
    csv = "csv"
    base64_zlib = "base64-zlib"


@dataclass(frozen=True)
class Params:
    name: str = param("tileset", help="tileset name shown in Tiled (any text; XML-escaped)")
    level_width: int = param(64, help="width of maps/level.tmx in tiles")
    level_height: int = param(15, help="height of maps/level.tmx in tiles")
    seed: int = param(0, help="seed of the Wave Function Collapse level")
    encoding: Encoding = param(Encoding.csv, help="tile layer data encoding: csv or base64-zlib")
    max_tiles: int = param(0, help="fail if the tileset would hold more tiles than this "
                                   "(0: no limit)")
    columns: int = param(16, help="tiles per row of tileset.png and maps/sheet.tmx "
                                  "(0: near-square)")
    wfc_attempts: int = param(5, help="Wave Function Collapse restarts before the greedy fallback")
    level_chunk: int = param(2, help="the level is assembled from square pieces of this many "
                                     "tiles a side, cut from the generated screens (1: from "
                                     "single tiles)")
    level_seams: int = param(12, help="besides the neighbours seen in the generated screens, "
                                      "allow this many best-matching pixel seams per piece (or "
                                      "tile) and side (0: seen neighbours only)")
    level_reuse_penalty: float = param(1.0, help="divide a piece's chance by (1 + times already "
                                                 "used) to this power, so no piece floods the "
                                                 "level (0: by frequency only)")
    report_samples: int = param(16, help="generated screens shown in report.html")
    nes: bool = param(False, help="also write the NES bundle (CHR, nametables, palette) of every "
                                  "sample and of the level into nes/")
    nes_palette: str = param("nes", help="NES palette the tiles were quantized with (built-in name "
                                         "or .pal file), to read colour numbers back for --nes")


# --------------------------------------------------------------------------- reading
def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise InputError(f"{path}: not a readable .npy file ({e})") from None


def _load_maps(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            maps = {k: z[k] for k in sorted(z.files)}
    except (OSError, ValueError, EOFError) as e:
        raise InputError(f"{path}: not a readable .npz file ({e})") from None
    for k, m in maps.items():
        if m.ndim != 2 or m.size == 0 or not np.issubdtype(m.dtype, np.integer):
            raise InputError(f"{path}: map '{k}' must be a non-empty 2-D integer array, "
                             f"got {m.dtype} {m.shape}")
        if int(m.min()) < 0:
            raise InputError(f"{path}: map '{k}' holds negative tile ids")
    return maps


def _load_json(path: Optional[Path], default: Any) -> Any:
    if path is None:
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not readable JSON ({e})") from None


def _check_bank(bank: np.ndarray, path: Path) -> np.ndarray:
    if bank.dtype != np.uint8 or bank.ndim != 4 or bank.shape[1] != bank.shape[2] \
            or bank.shape[3] not in (3, 4):
        raise InputError(f"{path}: expected uint8 tiles of shape (K, T, T, 4), "
                         f"got {bank.dtype} {bank.shape}")
    if bank.shape[3] == 3:
        bank = np.concatenate([bank, np.full(bank.shape[:3] + (1,), 255, np.uint8)], axis=-1)
    return bank


def _empty_bank_error(bank_path: Path, dropped: list) -> StageError:
    reasons = Counter(str(d.get("reason", "?")) for d in dropped if isinstance(d, dict))
    detail = ", ".join(f"{n} {r}" for r, n in reasons.most_common()) or "no record in dropped.json"
    top = reasons.most_common(1)[0][0] if reasons else ""
    if top.startswith("dup") or "near" in top:
        hint = ("lower dedupe's --dup-distance or --dup-fraction (the limits under which "
                "generated tiles count as near-duplicates)")
    elif top == "flat":
        hint = ("lower dedupe's --flat-fraction (every tile counted as a flat colour already "
                "kept) or generate more varied samples")
    else:
        hint = ("lower dedupe's --train-distance (the Hamming distance under which a generated "
                "tile counts as a copy of a training tile; -1 never drops)")
    return InputError(f"{bank_path}: dedupe kept no tile (dropped: {detail}); {hint}, "
                      "then rerun dedupe and export")


#: tiles.json fields written as Tiled tile properties (absent or null fields are left out)
TILE_PROPERTIES = ("novelty", "source_image", "score", "colours", "isolated", "flat", "uses")


def _tile_properties(meta: list, k: int) -> list[dict[str, Any]]:
    """Tiled properties of each kept tile from dedupe's tiles.json records.

    A negative or null novelty (not measured: flat tile, or no training tiles) is left out.
    """
    by_id: dict[int, dict] = {}
    for i, m in enumerate(meta):
        if isinstance(m, dict):
            by_id[int(m.get("id", i))] = m
    props = []
    for i in range(k):
        m = by_id.get(i, {})
        p: dict[str, Any] = {}
        for name in TILE_PROPERTIES:
            v = m.get(name)
            if name == "colours" and isinstance(v, (list, tuple)):
                v = ",".join(_colour_text(c) for c in v)
            if name == "novelty" and (not isinstance(v, (int, float)) or isinstance(v, bool)
                                      or v < 0):
                v = None
            if name == "novelty" and v is not None:
                v = int(v)
            if isinstance(v, (dict, list)):
                v = json.dumps(v, sort_keys=True)
            p[name] = v
        props.append(p)
    return props


def _colour_text(c: Any) -> str:
    if isinstance(c, (list, tuple)) and len(c) in (3, 4) and all(isinstance(v, int) for v in c):
        return "#" + "".join(f"{int(v):02x}" for v in c[:3])
    return str(c)


# --------------------------------------------------------------------------- run
def run(inputs: dict[str, list[Path]], params: Params, out_dir: Path,
        progress: ProgressFn = no_progress) -> dict:
    """Write the Tiled tileset, maps, previews and report.  See the module docstring."""
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    _validate(params)
    tiles_in = [Path(p) for p in inputs.get("tiles", [])]
    if not tiles_in:
        raise InputError("export needs dedupe's output (a folder with bank.npy and maps.npz)")
    for p in tiles_in:
        if not p.exists():
            raise InputError(f"{p}: no such file or folder")
    bank_path = find_artifact(tiles_in, "bank.npy")
    if bank_path is None:
        raise InputError(f"{tiles_in[0]}: no bank.npy here; pass dedupe's output folder")
    maps_path = find_artifact(tiles_in, "maps.npz")
    if maps_path is None:
        raise InputError(f"{bank_path.parent}: no maps.npz beside bank.npy; pass dedupe's output folder")
    meta_path = find_artifact(tiles_in, "tiles.json")
    dropped_path = find_artifact(tiles_in, "dropped.json")
    evidence_path = find_artifact(tiles_in, "evidence.png")
    warnings: list[str] = []

    bank = _check_bank(_load_npy(bank_path), bank_path)
    meta = _load_json(meta_path, [])
    dropped = _load_json(dropped_path, [])
    if not isinstance(meta, list):
        raise InputError(f"{meta_path}: expected a JSON list of per-tile records")
    if not isinstance(dropped, list):
        raise InputError(f"{dropped_path}: expected a JSON list of dropped-tile records")
    if meta_path is None:
        warnings.append("no tiles.json: tiles carry no novelty/source properties")
    k, ts = int(bank.shape[0]), int(bank.shape[1])
    if k == 0:
        raise _empty_bank_error(bank_path, dropped)
    if params.max_tiles and k > params.max_tiles:
        raise ParamError(f"{bank_path}: {k} tiles exceed max_tiles={params.max_tiles}; raise "
                         "--max-tiles, or tighten dedupe's thresholds to keep fewer tiles")
    if k >= tiled.GID_MASK:
        raise InputError(f"{bank_path}: {k} tiles do not fit Tiled's 29-bit tile ids")
    maps = _load_maps(maps_path)
    if not maps:
        raise InputError(f"{maps_path}: holds no map; rerun slice and dedupe")
    for stem, m in maps.items():
        ids = m.astype(np.uint64) & tiled.GID_MASK
        if int(ids.max()) >= k:
            raise InputError(f"{maps_path}: map '{stem}' uses tile {int(ids.max())}, but bank.npy "
                             f"has {k} tiles (0..{k - 1}); the two files do not belong together")
    semi = int(((bank[..., 3] > 0) & (bank[..., 3] < 255)).sum())
    if semi:
        warnings.append(f"{semi} semi-transparent pixels: Tiled may draw them one colour level off")

    # tileset
    progress("export", 0, 4)
    cols = atlas_mod.atlas_columns(k, params.columns)
    sheet = atlas_mod.pack_atlas(bank, columns=cols)
    save_png(out_dir / "tileset.png", sheet)
    tile_props = _tile_properties(meta, k)
    atomic_write_text(out_dir / "tileset.tsx", tiled.tileset_xml(
        name=params.name, tile_size=ts, tile_count=k, columns=cols, image_source="tileset.png",
        image_width=int(sheet.shape[1]), image_height=int(sheet.shape[0]),
        tile_properties=tile_props, properties={"generator": "tilegan"}))
    progress("export", 1, 4)

    # maps
    enc = params.encoding.value if isinstance(params.encoding, Encoding) else str(params.encoding)
    written: dict[str, np.ndarray] = {}

    def write_map(stem: str, gids: np.ndarray, props: dict[str, Any]) -> None:
        atomic_write_text(out_dir / "maps" / f"{stem}.tmx", tiled.map_xml(
            gids, tile_size=ts, tileset_source="../tileset.tsx", encoding=enc,
            layer_name=stem, properties=props))
        save_png(out_dir / "previews" / f"{stem}.png", render_mod.render_map(gids, bank))
        written[stem] = gids

    rows = max(1, math.ceil(k / cols))
    sheet_gids = np.zeros(rows * cols, np.uint32)
    sheet_gids[:k] = np.arange(1, k + 1, dtype=np.uint32)
    write_map("sheet", sheet_gids.reshape(rows, cols), {"tiles": k})
    digits = max(3, len(str(len(maps) - 1)))
    sample_maps = []
    for i, (stem, m) in enumerate(maps.items()):
        map_name = f"sample_{i:0{digits}d}"
        write_map(map_name, tiled.bank_ids_to_gids(m), {"source_image": stem})
        flipped = int(((m.astype(np.uint64) & tiled.FLIP_MASK) != 0).sum())
        sample_maps.append({"map": f"maps/{map_name}.tmx", "source_image": stem,
                            "flipped_cells": flipped})
        progress("maps", i + 1, len(maps))
    progress("export", 2, 4)

    # level
    t_wfc = time.perf_counter()

    def state_tiles(states: np.ndarray) -> np.ndarray:
        return np.stack([render_mod.flip_tile(bank[int(v) & tiled.GID_MASK], int(v))
                         for v in states])

    result = wfc_mod.make_level(maps.values(), state_tiles, width=params.level_width,
                                height=params.level_height, seed=params.seed,
                                attempts=params.wfc_attempts, seams=params.level_seams,
                                chunk=params.level_chunk,
                                reuse_penalty=params.level_reuse_penalty,
                                time_limit=WFC_TIME_LIMIT)
    level_info = dict(result.summary(), seconds=round(time.perf_counter() - t_wfc, 3))
    if result.method == "greedy-fallback":
        unseen = result.stats.get("unseen_pairs")
        warnings.append(f"level: Wave Function Collapse did not finish ({result.attempts} "
                        f"attempts); filled greedily, leaving {unseen} neighbour pairs that no "
                        "generated screen shows")
    elif params.level_chunk > 1 and result.stats.get("model") != "chunks":
        c = params.level_chunk
        warnings.append(f"level: could not be assembled from {c}x{c} pieces of the generated "
                        f"screens; made from single tiles ({result.stats.get('model')} model)")
    write_map("level", tiled.bank_ids_to_gids(result.grid),
              {"method": result.method, "model": result.stats.get("model"), "seed": params.seed,
               "violations": result.violations})
    progress("export", 3, 4)

    atomic_write_text(out_dir / "tilegan.tiled-project", tiled.project_json(folders=(".",)))

    nes_info = None
    if params.nes:
        nes_info = _write_nes(bank, _nes_screens(written, ts), out_dir / "nes", params.nes_palette)

    summary: dict[str, Any] = {
        "name": params.name,
        "tiles": k,
        "tile_size": ts,
        "columns": cols,
        "encoding": enc,
        "maps": sorted(f"maps/{s}.tmx" for s in written),
        "samples": len(maps),
        "flipped_cells": sum(s["flipped_cells"] for s in sample_maps),
        "dropped": len(dropped),
        "level": level_info,
        "warnings": warnings,
    }
    if nes_info is not None:
        summary["nes"] = nes_info

    from stages import _report  # local: only export needs it
    # The report leaves out timings so that the same inputs give the same bytes.
    shown = dict(summary, level={k: v for k, v in level_info.items() if k != "seconds"})
    _report.write_report(
        out_dir, title=params.name, summary=shown, bank=bank, tile_meta=meta,
        tile_props=tile_props, dropped=dropped, evidence=evidence_path,
        train_dirs=[Path(p) for p in inputs.get("train", []) or []],
        sample_paths=[Path(p) for p in inputs.get("samples", []) or []],
        sample_maps=sample_maps, upstream_dirs=tiles_in, report_samples=params.report_samples)
    progress("export", 4, 4)
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    return summary


def _validate(params: Params) -> None:
    if params.level_width < 1 or params.level_height < 1:
        raise ParamError(f"level size must be at least 1x1 tiles, got "
                         f"{params.level_width}x{params.level_height}")
    if params.level_width * params.level_height > MAX_LEVEL_CELLS:
        raise ParamError(f"level {params.level_width}x{params.level_height} has more than "
                         f"{MAX_LEVEL_CELLS} cells; make it smaller")
    if params.max_tiles < 0:
        raise ParamError(f"max_tiles must be >= 0 (0: no limit), got {params.max_tiles}")
    if params.columns < 0:
        raise ParamError(f"columns must be >= 0 (0: near-square), got {params.columns}")
    if params.level_seams < 0:
        raise ParamError(f"level_seams must be >= 0, got {params.level_seams}")
    if params.level_chunk < 1:
        raise ParamError(f"level_chunk must be >= 1 (1: single tiles), got {params.level_chunk}")
    if not params.level_reuse_penalty >= 0:
        raise ParamError(f"level_reuse_penalty must be >= 0, got {params.level_reuse_penalty}")
    if params.wfc_attempts < 0:
        raise ParamError(f"wfc_attempts must be >= 0, got {params.wfc_attempts}")
    if params.report_samples < 0:
        raise ParamError(f"report_samples must be >= 0, got {params.report_samples}")
    try:
        Encoding(params.encoding)
    except ValueError:
        raise ParamError(f"encoding must be csv or base64-zlib, got {params.encoding!r}") from None


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
    c = rgba.astype(np.uint32)
    keys = (c[..., 0] << 16) | (c[..., 1] << 8) | c[..., 2]
    uniq, inv = np.unique(keys, return_inverse=True)
    nums = np.zeros(uniq.shape, np.uint8)
    opaque_keys = set(np.unique(keys[rgba[..., 3] > 0]).tolist())
    for j, k in enumerate(uniq.tolist()):
        rgb = ((k >> 16) & 255, (k >> 8) & 255, k & 255)
        if rgb in lut:
            nums[j] = lut[rgb]
        elif k in opaque_keys:
            raise ParamError(f"{where}: colour #{k:06x} is not in the {pal.name} palette; quantize "
                             f"with that NES palette (and --nes) or set --nes-palette")
    out = nums[inv.reshape(keys.shape)]
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


def _nes_screens(written: dict[str, np.ndarray], ts: int) -> dict[str, np.ndarray]:
    """Screens for the NES bundle: every sample map, and the level cut into 256x240 screens."""
    screens = {k: v for k, v in written.items() if k.startswith("sample_")}
    level = written.get("level")
    if level is not None:
        sw, sh = max(1, 256 // ts), max(1, 240 // ts)
        rows, cols = level.shape
        for r in range(0, rows, sh):
            for c in range(0, cols, sw):
                tag = f"level_{c // sw:02d}" if rows <= sh else f"level_{r // sh:02d}_{c // sw:02d}"
                screens[tag] = level[r:r + sh, c:c + sw]
    return screens
