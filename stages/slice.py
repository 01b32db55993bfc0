"""slice: cut images into tiles, keep each distinct tile once, and map every image.

Reads quantize's indexed PNGs (or any images a user names), cuts them into ``tile_size`` square
tiles on the grid, and builds an exact tile bank (:class:`tilesets.bank.TileBank`).  With
``flips`` on (the default) a tile equals its H, V and HV-flipped forms: it is stored once and
map cells carry Tiled's flip bits (bit 31 horizontal, bit 30 vertical, low 29 bits = bank id).
``nes`` turns flips off (NES background tiles cannot be flipped).  Palette swaps (the same
pattern in other colours) are detected and listed.

Artifacts
---------
bank.npy    uint8 (K, T, T, 4) RGBA unique tiles, alpha 0/255, transparent pixels (0,0,0,0)
maps.npz    one uint32 array (H/T, W/T) per image stem: bank id | flip bits
slice.json  {tile_size, flips, nes, images, palette, palette_name, counts, origins,
             palette_swaps, pad_mode, warnings}
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from stages._common import (InputError, ParamError, ProgressFn, Skipped, expand_inputs,
                            find_artifact, iter_images, no_progress, param, save_npy, save_npz,
                            write_json)
from tilesets.bank import TileBank, fit_to_grid, normalize_alpha, palette_swap_groups

NAME = "slice"
INPUTS = {"images": "quantize"}
OPTIONAL_INPUTS = ()
LIBS = ("numpy", "pillow")

log = logging.getLogger("tilegan.slice")

PAD_MODES = ("crop", "pad")


@dataclass(frozen=True)
class Params:
    tile_size: int = param(16, help="tile side in pixels (16 by default; 8 is supported)")
    flips: bool = param(True, help="a tile equals its H/V/HV-flipped forms; flips are stored "
                                   "as Tiled GID flip bits")
    nes: bool = param(False, help="NES mode: no flips (NES background tiles cannot be flipped)")
    pad_mode: str = param("crop", help="when an image side is not a multiple of tile_size: "
                                       "'crop' the remainder or 'pad' with transparent pixels")


def _validate(params: Params) -> None:
    if not isinstance(params.tile_size, int) or not 4 <= params.tile_size <= 128:
        raise ParamError(f"slice: tile_size must be an integer in 4..128 (16 or 8 usually), "
                         f"got {params.tile_size!r}")
    if params.pad_mode not in PAD_MODES:
        raise ParamError(f"slice: pad_mode must be one of {', '.join(PAD_MODES)}, "
                         f"got {params.pad_mode!r}")


def _read_palette(path: Path) -> Optional[list[list[int]]]:
    """The PLTE entries of a mode "P" PNG, or None for other modes."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode != "P":
                return None
            pal = im.getpalette() or []
    except Exception:  # noqa: BLE001 - load_image reports unreadable files
        return None
    return [list(pal[i:i + 3]) for i in range(0, len(pal) - len(pal) % 3, 3)]


def _unique_stem(stem: str, used: set) -> str:
    name, k = stem, 2
    while name in used:
        name = f"{stem}-{k}"
        k += 1
    used.add(name)
    return name


def run(inputs: dict[str, list[Any]], params: Params, out_dir: Path,
        progress: ProgressFn = no_progress) -> dict:
    """Slice images into a bank of unique tiles and per-image maps.

    Parameters
    ----------
    inputs : dict
        ``{"images": [...]}``: quantize's artifact folder, or image files / folders / globs.
    params : Params
    out_dir : Path
        Receives ``bank.npy``, ``maps.npz`` and ``slice.json``.

    Returns
    -------
    dict
        ``{images, cells, unique, flipped_cells, palette_swap_groups, skipped, warnings}``.
    """
    _validate(params)
    out_dir = Path(out_dir)
    items = inputs.get("images") or []
    if not items:
        raise InputError("slice: no input images; pass image files or quantize's output folder")
    files = expand_inputs(items)
    listing = find_artifact(items, "quantize.json")
    if listing is not None:  # a quantize artifact: only its images, not report/ error maps
        listed = {(listing.parent / r["file"]).resolve()
                  for r in json.loads(listing.read_text()).get("images", []) if "file" in r}
        if listed:
            files = [f for f in files if f.resolve() in listed]
    if not files:
        raise InputError(f"slice: no image files in {', '.join(str(i) for i in items)}")
    flips = bool(params.flips) and not params.nes
    t = params.tile_size
    bank = TileBank(tile_size=t, flips=flips)
    maps: dict[str, np.ndarray] = {}
    names: list[str] = []
    skipped = Skipped(logger=log)
    warnings: list[str] = []
    palettes: list[Optional[list]] = []
    used: set = set()
    for path, rgba in iter_images(files, skipped, mode="RGBA"):
        h, w = rgba.shape[:2]
        if h % t or w % t:
            msg = (f"{path}: size {w}x{h} is not a multiple of {t}; "
                   f"{'cropped' if params.pad_mode == 'crop' else 'padded with transparent pixels'}")
            log.warning("%s", msg)
            warnings.append(msg)
        rgba = fit_to_grid(normalize_alpha(rgba), t, params.pad_mode)
        if rgba.shape[0] == 0 or rgba.shape[1] == 0:
            skipped.add(path, f"{path}: smaller than one {t}x{t} tile")
            continue
        stem = _unique_stem(path.stem, used)
        maps[stem] = bank.add_image(rgba, stem)
        names.append(stem)
        palettes.append(_read_palette(path))
        progress("slice", len(names) + len(skipped), len(files))
    if not maps:
        raise skipped.nothing_usable("slice", len(files))
    tiles = bank.array()
    palette = palettes[0] if palettes and all(p is not None and p == palettes[0]
                                              for p in palettes) else None
    palette_name = None
    qjson = find_artifact(items, "quantize.json")
    if qjson is not None:
        try:
            palette_name = json.loads(qjson.read_text()).get("palette")
            if isinstance(palette_name, dict):
                palette_name = palette_name.get("name")
        except (OSError, ValueError, AttributeError):
            palette_name = None
    swaps = palette_swap_groups(tiles, flips=flips)
    cells = sum(int(m.size) for m in maps.values())
    flipped = sum(int((m >> np.uint32(30)).astype(bool).sum()) for m in maps.values())

    save_npy(out_dir / "bank.npy", tiles)
    save_npz(out_dir / "maps.npz", **maps)
    meta = {
        "tile_size": t,
        "flips": flips,
        "nes": bool(params.nes),
        "pad_mode": params.pad_mode,
        "images": names,
        "palette": palette,
        "palette_name": palette_name,
        "counts": [int(c) for c in bank.counts],
        "origins": [list(o) for o in bank.origins],
        "palette_swaps": swaps,
        "warnings": warnings,
        "skipped": skipped.items,
    }
    write_json(out_dir / "slice.json", meta)
    log.info("slice: %d images, %d cells, %d unique tiles (%d flipped cells)",
             len(names), cells, len(tiles), flipped)
    return {"images": len(names), "cells": cells, "unique": len(tiles), "flipped_cells": flipped,
            "palette_swap_groups": len(swaps), "skipped": skipped.items, "warnings": len(warnings)}
