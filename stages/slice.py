"""slice: cut images into tiles, keep each distinct tile once, and map every image.

Reads quantize's indexed PNGs (or any images a user names), cuts them into ``tile_size`` square
tiles on the grid, and builds an exact tile bank (:class:`tilesets.bank.ImageSlicer`).  With
``flips`` on (the default) a tile equals its H, V and HV-flipped forms: it is stored once and
map cells carry Tiled's flip bits (:class:`tilesets.cells.Flip`).  ``nes`` turns flips off
(NES background tiles cannot be flipped).  Palette swaps (the same pattern in other colours)
are detected and listed.

The module name shadows Python's ``slice`` builtin on purpose: the pipeline loads
``stages/<stage name>.py``, and ``slice`` is the stage's name on the command line.

Artifacts
---------
bank.npy, maps.npz, tileset.json   the tile set (:class:`tilesets.artifacts.TileSet`)
slice.json   {nes, pad_mode, images, counts, palette_swaps, warnings, skipped}
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np

from stages._common import (InputError, ProgressFn, Skipped, StageParams, expand_inputs,
                            find_artifact, iter_images, no_progress, param, save_npy, save_npz,
                            write_json)
from tilesets.artifacts import ArtifactError, TileSet, load_json
from tilesets.bank import PAD_MODES, ImageSlicer, palette_swap_groups
from tilesets.cells import FLIP_MASK

NAME = "slice"
INPUTS = {"images": "quantize"}
OPTIONAL_INPUTS = ()
LIBS = ("numpy", "pillow")

log = logging.getLogger("tilegan.slice")


@dataclass(frozen=True)
class Params(StageParams):
    STAGE = "slice"

    tile_size: int = param(16, help="tile side in pixels (16 by default; 8 is supported)",
                           min=4, max=128)
    flips: bool = param(True, help="a tile equals its H/V/HV-flipped forms; flips are stored "
                                   "as Tiled GID flip bits")
    nes: bool = param(False, help="NES mode: no flips (NES background tiles cannot be flipped)")
    pad_mode: str = param("crop", help="when an image side is not a multiple of tile_size: "
                                       "'crop' the remainder or 'pad' with transparent pixels",
                          choices=PAD_MODES)


@dataclass
class SliceResult:
    """What :func:`slice_images` made.

    Attributes
    ----------
    tileset : TileSet
        The bank and one map per sliced image (``palette`` set when every image shared one).
    counts : list of int
        Cells that use each bank tile.
    palette_swaps : list of list of int
        Groups of bank ids that are palette swaps of each other.
    warnings : list of str
        One line per image whose size is not a multiple of the tile size.
    too_small : list of Path
        Images that hold no whole tile (not in any map).
    """

    tileset: TileSet
    counts: list
    palette_swaps: list
    warnings: list = field(default_factory=list)
    too_small: list = field(default_factory=list)

    def summary(self) -> dict:
        maps = self.tileset.maps.values()
        return {"images": len(self.tileset.maps),
                "cells": sum(int(m.size) for m in maps),
                "unique": len(self.tileset),
                "flipped_cells": sum(int(((m & np.uint32(FLIP_MASK)) != 0).sum()) for m in maps),
                "palette_swap_groups": len(self.palette_swaps),
                "warnings": len(self.warnings)}


# --------------------------------------------------------------------------- core
def slice_images(images: Iterable[tuple[Path, np.ndarray, Optional[list]]], params: Params, *,
                 palette_name: Optional[str] = None) -> SliceResult:
    """Cut images into one tile bank and a map per image.

    Parameters
    ----------
    images : iterable of (path, rgba, palette)
        ``rgba`` uint8 (H, W, 4); ``palette`` the image's PLTE entries ([[r, g, b], ...]) or
        None.  A map is named after the path's stem (``stem-2``... when stems repeat).
    params : Params
    palette_name : str, optional
        Recorded in the tile set.

    Returns
    -------
    SliceResult
    """
    t = params.tile_size
    slicer = ImageSlicer(tile_size=t, flips=_flips(params), pad_mode=params.pad_mode)
    warnings, too_small, palettes = [], [], []
    for path, rgba, palette in images:
        if not slicer.on_grid(rgba):
            h, w = rgba.shape[:2]
            done = "cropped" if params.pad_mode == "crop" else "padded with transparent pixels"
            warnings.append(f"{path}: size {w}x{h} is not a multiple of {t}; {done}")
            log.warning("%s", warnings[-1])
        if slicer.add(Path(path).stem, rgba) is None:
            too_small.append(Path(path))
        else:
            palettes.append(palette)
    tileset = slicer.tileset(palette=_shared_palette(palettes), palette_name=palette_name)
    return SliceResult(tileset, list(slicer.bank.counts),
                       palette_swap_groups(tileset.bank, flips=tileset.flips), warnings, too_small)


def _flips(params: Params) -> bool:
    return bool(params.flips) and not params.nes


def _shared_palette(palettes: list) -> Optional[list]:
    """The palette every image has, or None when they differ or one has none."""
    if palettes and all(p is not None and p == palettes[0] for p in palettes):
        return palettes[0]
    return None


# --------------------------------------------------------------------------- inputs
def _image_files(items: list) -> list[Path]:
    """The images to slice: a quantize artifact's listed images, or every image given."""
    if not items:
        raise InputError("slice: no input images; pass image files or quantize's output folder")
    files = expand_inputs(items)
    listing = _quantize_json(items)
    if listing is not None:  # a quantize artifact: only its images, not report/ error maps
        listed = {(listing.parent / r["file"]).resolve()
                  for r in _listed_images(listing) if "file" in r}
        if listed:
            files = [f for f in files if f.resolve() in listed]
    if not files:
        raise InputError(f"slice: no image files in {', '.join(str(i) for i in items)}")
    return files


def _quantize_json(items: list) -> Optional[Path]:
    return find_artifact(items, "quantize.json")


def _listed_images(listing: Path) -> list:
    """The ``images`` records of a quantize.json (malformed: InputError)."""
    try:
        doc = load_json(listing)
    except ArtifactError as e:
        raise InputError(str(e)) from None
    return doc.get("images", []) if isinstance(doc, dict) else []


def _palette_name(items: list) -> Optional[str]:
    """The palette name quantize.json records, if any."""
    listing = _quantize_json(items)
    if listing is None:
        return None
    try:
        name = load_json(listing).get("palette")
    except (ArtifactError, AttributeError):
        return None
    return name.get("name") if isinstance(name, dict) else name


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


def _decoded(files: list[Path], skipped: Skipped,
             progress: ProgressFn) -> Iterable[tuple[Path, np.ndarray, Optional[list]]]:
    """(path, rgba, palette) of every readable file; unreadable ones go to ``skipped``."""
    for done, (path, rgba) in enumerate(iter_images(files, skipped, mode="RGBA"), start=1):
        yield path, rgba, _read_palette(path)
        progress("slice", done + len(skipped), len(files))


# --------------------------------------------------------------------------- run
def run(inputs: dict[str, list[Any]], params: Params, out_dir: Path,
        progress: ProgressFn = no_progress) -> dict:
    """Slice images into a bank of unique tiles and per-image maps.

    ``inputs["images"]``: quantize's artifact folder, or image files / folders / globs.
    Writes the :class:`TileSet` and ``slice.json`` into ``out_dir``; returns the summary
    ``{images, cells, unique, flipped_cells, palette_swap_groups, skipped, warnings}``.
    """
    items = inputs.get("images") or []
    files = _image_files(items)
    skipped = Skipped(logger=log)
    result = slice_images(_decoded(files, skipped, progress), params,
                          palette_name=_palette_name(items))
    for path in result.too_small:
        skipped.add(path, f"{path}: smaller than one {params.tile_size}x{params.tile_size} tile")
    if not result.tileset.maps:
        raise skipped.nothing_usable("slice", len(files))
    result.tileset.save(out_dir, save_npy, save_npz, write_json)
    write_json(Path(out_dir) / "slice.json", {
        "nes": bool(params.nes), "pad_mode": params.pad_mode,
        "images": list(result.tileset.maps), "counts": [int(c) for c in result.counts],
        "palette_swaps": result.palette_swaps, "warnings": result.warnings,
        "skipped": skipped.items})
    summary = dict(result.summary(), skipped=skipped.items)
    log.info("slice: %d images, %d cells, %d unique tiles (%d flipped cells)",
             summary["images"], summary["cells"], summary["unique"], summary["flipped_cells"])
    return summary
