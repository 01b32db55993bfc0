"""slice: a tile budget for the generated screens, and every screen rebuilt from it.

Reads quantize's indexed PNGs (or any images a user names) and cuts every image into
``tile_size`` square tiles on its grid.  A GAN paints each screen afresh, so its tiles almost
never repeat exactly; slice learns a *dictionary* of at most ``max_tiles`` clean tiles that
recur (:func:`tilesets.dictionary.learn_dictionary`: flip-aware k-means in CIELAB over every
cell of every image, each tile a per-pixel vote of its members, at most 4 colours) and
rebuilds every image from it cell by cell, preferring tiles that keep the cell's texture and
whose edges join their neighbours' (:func:`tilesets.dictionary.rebuild`); how strongly they
must join is calibrated so the rebuilt screens' border/interior contrast matches the real
training screens' (crop's artifact, an optional input).  ``max_tiles`` 0 picks K from the
distortion curve; -1 keeps every distinct tile once and maps the images exactly (no budget).

With ``flips`` on (the default) a tile stands for its H, V and HV-flipped forms and map cells
carry Tiled's flip bits (:class:`tilesets.cells.Flip`).  ``nes`` turns flips off (NES
background tiles cannot be flipped) and, with a budget, keeps every rebuilt screen NES-legal:
at most 64 distinct 16x16 tiles a screen (256 8x8 patterns, one pattern table), and the tiles
refitted to one backdrop + 4 sub-palettes of 3 colours (one sub-palette per 16x16 tile).
Palette swaps (the same pattern in other colours) are listed.

The module name shadows Python's ``slice`` builtin on purpose: the pipeline loads
``stages/<stage name>.py``, and ``slice`` is the stage's name on the command line.

Artifacts
---------
bank.npy, maps.npz, tileset.json   the tile set (:class:`tilesets.artifacts.TileSet`)
slice.json   {nes, pad_mode, max_tiles, images, counts, palette_swaps, dictionary, seams,
              nes_fit, warnings, skipped}
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Union

import numpy as np

from stages._common import (InputError, ParamError, ProgressFn, Skipped, StageParams,
                            expand_inputs, find_artifact, iter_images, no_progress, param,
                            save_npy, save_npz, write_json)
from tilesets.artifacts import ArtifactError, TileSet, load_json
from tilesets.bank import (PAD_MODES, ImageSlicer, apply_cells, fit_to_grid, normalize_alpha,
                           palette_swap_groups, unique_name)
from tilesets.cells import FLIP_MASK, cell_ids
from tilesets.pixels import join_grid
from tilesets.dictionary import (SEAM_WEIGHTS, TEXTURE_WEIGHT, Dictionary,
                                 calibrate_seam_weight, grid_tiles, learn_dictionary,
                                 mean_delta_e, nes_max_distinct, parse_seam_weight, rebuild,
                                 seam_ratio)

NAME = "slice"
INPUTS = {"images": "quantize", "training_screens": "crop"}
OPTIONAL_INPUTS = ("training_screens",)
LIBS = ("numpy", "pillow")

log = logging.getLogger("tilegan.slice")

#: ``max_tiles`` values that are not a K
AUTO_K, NO_BUDGET = 0, -1
#: NES attribute areas are 16x16: a tile of a multiple of this keeps whole areas
NES_AREA = 16


@dataclass(frozen=True)
class Params(StageParams):
    STAGE = "slice"

    tile_size: int = param(16, help="tile side in pixels (16 by default; 8 is supported)",
                           min=4, max=128)
    flips: bool = param(True, help="a tile equals its H/V/HV-flipped forms; flips are stored "
                                   "as Tiled GID flip bits")
    nes: bool = param(False, help="NES mode: no flips (NES background tiles cannot be "
                                  "flipped); with a tile budget also at most 64 distinct "
                                  "16x16 tiles per screen (one 256-pattern table) and the "
                                  "tiles refitted to one backdrop + 4 sub-palettes; needs "
                                  "tile_size a multiple of 16")
    pad_mode: str = param("crop", help="when an image side is not a multiple of tile_size: "
                                       "'crop' the remainder or 'pad' with transparent pixels",
                          choices=PAD_MODES)
    max_tiles: int = param(AUTO_K, help="tile budget K: at most K tiles, learned from every "
                                        "cell of every image, and every image rebuilt from "
                                        "them. 0 = automatic: K = 8, 16, 32, ... (at most "
                                        "256 and a quarter of the cells), stopping when two "
                                        "doublings in a row each lower the rebuilt tiles' "
                                        "mean colour error by under 5 %: past that knee new "
                                        "tiles only copy one screen's speckle. -1 = no "
                                        "budget: every distinct tile once, images mapped "
                                        "exactly (slice before the tile budget)", min=-1)
    seam_weight: str = param("auto", help="how much a cell's tile must join its neighbours' "
                                          "edges: 'auto' = the smallest weight whose rebuilt "
                                          "screens' border/interior contrast is within 5 % of "
                                          "the real training screens' (the crop artifact, "
                                          "--training-screens) or, without them, of the "
                                          "images' own; or a number >= 0 (0 = each cell on "
                                          "its own)")
    texture_weight: float = param(TEXTURE_WEIGHT, help="how much a cell's tile must keep the "
                                                       "cell's texture (the colour change "
                                                       "between neighbouring pixels inside "
                                                       "it): >= 0; 0 = nearest colours only, "
                                                       "which flattens bricks, foliage and "
                                                       "dithers to their average colour",
                                  min=0.0)
    seed: int = param(0, help="seed of the dictionary's k-means++ (same images and seed, "
                              "same tiles)")

    def check(self) -> None:
        super().check()
        self.seam()
        if self.nes and self.budget and self.tile_size % NES_AREA:
            raise ParamError(f"slice: nes with a tile budget needs tile_size a multiple of "
                             f"{NES_AREA} (one NES attribute area per tile keeps each tile on "
                             f"one sub-palette), got {self.tile_size}; or set max_tiles = -1",
                             field="tile_size")

    @property
    def budget(self) -> bool:
        """Whether a dictionary is learned (``max_tiles`` is not -1)."""
        return self.max_tiles != NO_BUDGET

    def seam(self) -> Union[str, float]:
        """``seam_weight`` as ``tilesets.dictionary.assign`` takes it: "auto" or a float."""
        return seam_weight_param(self.seam_weight, self.STAGE)


def seam_weight_param(value: Any, stage: str) -> Union[str, float]:
    """:func:`tilesets.dictionary.parse_seam_weight` with its error as a :class:`ParamError`
    naming the stage and the field."""
    try:
        return parse_seam_weight(value)
    except ValueError as e:
        raise ParamError(f"{stage}: {e}", field="seam_weight") from None


# --------------------------------------------------------------------------- results
@dataclass
class Unusable:
    """An input image that is in no map, and why."""

    path: Path
    reason: str


@dataclass
class Screen:
    """One input image on the tile grid: alpha binary, sides multiples of the tile size."""

    name: str
    rgba: np.ndarray
    palette: Optional[list]


@dataclass
class NesFitReport:
    """How NES mode made the rebuilt screens legal (:func:`nes_legal`).

    Attributes
    ----------
    palette : str
        The NES palette the tiles were fitted to.
    backdrop : int
        NES colour number shared by the sub-palettes.
    subpalettes : list of list of int
        4 × 3 NES colour numbers.
    legal : bool
        :func:`palettes.nesfit.validate_nes` of every rebuilt screen.
    problems : list of str
    max_patterns : int
        Most distinct 8x8 patterns on one screen (≤ 256 when legal).
    max_tiles : int
        Most distinct tiles on one screen.
    delta_e : float
        Mean ΔE76 of the refitted tiles against the dictionary's (opaque pixels).
    merged : int
        Tiles that became equal to another one by the refit, merged into it.
    """

    palette: str
    backdrop: int
    subpalettes: list
    legal: bool
    problems: list
    max_patterns: int
    max_tiles: int
    delta_e: float
    merged: int

    def to_json(self) -> dict:
        return {"palette": self.palette, "backdrop": self.backdrop,
                "subpalettes": self.subpalettes, "legal": self.legal,
                "problems": self.problems, "max_patterns_per_screen": self.max_patterns,
                "max_tiles_per_screen": self.max_tiles, "refit_delta_e": self.delta_e,
                "merged_tiles": self.merged}


@dataclass
class SliceResult:
    """What :func:`slice_images` made.

    Attributes
    ----------
    tileset : TileSet
        The bank (most used first with a budget) and one map per sliced image (``palette`` set
        when every image shared one and every bank colour is in it).
    counts : list of int
        Cells that use each bank tile.
    palette_swaps : list of list of int
        Groups of bank ids that are palette swaps of each other.
    warnings : list of str
        One line per thing done about unusual input (image sizes, K above the distinct tiles,
        a single-colour corpus...).
    unusable : list of Unusable
        Images in no map (smaller than one tile, fully transparent).
    dictionary : dict or None
        With a budget: ``k_requested`` (None = automatic), ``k_learned``, ``distortion`` (mean
        ΔE76 of the cells vs their nearest entry), ``curve`` [[K, ΔE]], ``unused`` (entries no
        rebuilt cell chose, dropped), ``rebuilt_delta_e`` (mean ΔE76 of the rebuilt screens vs
        the images).
    seams : dict or None
        With a budget: border/interior ΔE ratio of the images (``input``), of the rebuilt
        screens (``rebuilt``) and of the real training screens (``real``, -1 without them),
        :func:`tilesets.dictionary.seam_ratio`; and the ``seam_weight`` used.
    nes_fit : NesFitReport or None
        NES mode with a budget.
    """

    tileset: TileSet
    counts: list
    palette_swaps: list
    warnings: list = field(default_factory=list)
    unusable: list = field(default_factory=list)
    dictionary: Optional[dict] = None
    seams: Optional[dict] = None
    nes_fit: Optional[NesFitReport] = None

    def summary(self) -> dict:
        maps = list(self.tileset.maps.values())
        cells = sum(int(m.size) for m in maps)
        out = {"images": len(maps), "cells": cells, "unique": len(self.tileset),
               "distinct_per_cell": round(len(self.tileset) / cells, 4) if cells else 0.0,
               "max_tiles_per_screen": max((len(np.unique(cell_ids(m))) for m in maps),
                                           default=0),
               "flipped_cells": sum(int(((m & np.uint32(FLIP_MASK)) != 0).sum()) for m in maps),
               "palette_swap_groups": len(self.palette_swaps),
               "warnings": len(self.warnings)}
        if self.dictionary is not None:
            d = self.dictionary
            out.update(k_learned=d["k_learned"], distortion=round(d["distortion"], 3),
                       rebuilt_delta_e=round(d["rebuilt_delta_e"], 3))
        if self.seams is not None:
            out["seam_ratio"] = {k: round(v, 3) for k, v in self.seams.items()}
        if self.nes_fit is not None:
            out["nes_legal"] = self.nes_fit.legal
        return out


# --------------------------------------------------------------------------- core
def slice_images(images: Iterable[tuple[Path, np.ndarray, Optional[list]]], params: Params, *,
                 palette_name: Optional[str] = None,
                 seam_target: Optional[float] = None) -> SliceResult:
    """Cut images into tiles, learn the tile budget, and rebuild every image from it.

    Parameters
    ----------
    images : iterable of (path, rgba, palette)
        ``rgba`` uint8 (H, W, 4); ``palette`` the image's PLTE entries ([[r, g, b], ...]) or
        None.  A map is named after the path's stem (``stem-2``... when stems repeat).
    params : Params
    palette_name : str, optional
        Recorded in the tile set; in NES mode, the NES palette the tiles are fitted to.
    seam_target : float, optional
        Border/interior ΔE ratio of real screens (:func:`training_seam_ratio`) that
        ``seam_weight = "auto"`` aims the rebuilt screens at; None: the images' own.

    Returns
    -------
    SliceResult
        With no usable image (all too small or fully transparent) its tile set is empty and
        ``unusable`` says why.

    Raises
    ------
    ParamError, InputError
        What :func:`tilesets.dictionary.learn_dictionary` refuses (:func:`learn_budget`).
    """
    screens, warnings, unusable = fit_screens(images, params)
    if not screens:
        return SliceResult(TileSet(np.zeros((0, params.tile_size, params.tile_size, 4),
                                            np.uint8), {}), [], [], warnings, unusable)
    palette = _shared_palette([s.palette for s in screens])
    if not params.budget:
        return _exact(screens, params, palette, palette_name, warnings, unusable)
    return _budget(screens, params, palette, palette_name, warnings, unusable, seam_target)


def _budget(screens: list[Screen], params: Params, palette: Optional[list],
            palette_name: Optional[str], warnings: list, unusable: list,
            seam_target: Optional[float] = None) -> SliceResult:
    """The tile budget: learn, rebuild, make the tile set (NES: make it legal), measure."""
    t0 = time.perf_counter()
    dic = learn_budget(screens, params)
    log.info("slice: dictionary of %d tiles from %d cells in %.1f s", len(dic),
             sum(s.rgba.shape[0] * s.rgba.shape[1] for s in screens) // params.tile_size ** 2,
             time.perf_counter() - t0)
    warnings += dic.warnings
    maps, cal = rebuild_screens(screens, dic, params, seam_target)
    tileset = budget_tileset(dic.tiles, dict(zip([s.name for s in screens], maps)), params,
                             palette, palette_name)
    unused = len(dic) - len(tileset)
    nes_fit = None
    if params.nes:
        tileset, nes_fit = nes_legal(tileset, palette_name)
        warnings += _nes_warnings(nes_fit)
        tileset.palette = _covering_palette(tileset.bank, palette)
    rebuilt = [apply_cells(tileset.bank, tileset.maps[s.name]) for s in screens]
    info = {"k_requested": dic.k_requested, "k_learned": len(dic), "distortion": dic.distortion,
            "curve": [[int(k), float(e)] for k, e in dic.curve], "unused": unused,
            "rebuilt_delta_e": _rebuilt_delta_e(screens, rebuilt)}
    seams = {"input": _ratio([s.rgba for s in screens], params.tile_size),
             "rebuilt": _ratio(rebuilt, params.tile_size),
             "real": -1.0 if seam_target is None else float(seam_target),
             "seam_weight": float(cal["seam_weight"])}
    return SliceResult(tileset, [int(u) for u in tileset.uses()],
                       palette_swap_groups(tileset.bank, flips=tileset.flips), warnings,
                       unusable, info, seams, nes_fit)


def _flips(params: Params) -> bool:
    return bool(params.flips) and not params.nes


def fit_screens(images: Iterable[tuple[Path, np.ndarray, Optional[list]]], params: Params
                ) -> tuple[list[Screen], list[str], list[Unusable]]:
    """Put every image on the tile grid (``pad_mode``) and name it; set aside the unusable.

    Returns (screens, warnings: one line per image cropped or padded, unusable images).
    """
    t = params.tile_size
    done = "cropped" if params.pad_mode == "crop" else "padded with transparent pixels"
    screens, warnings, unusable, used = [], [], [], set()
    for path, rgba, palette in images:
        h, w = rgba.shape[:2]
        fitted = fit_to_grid(normalize_alpha(rgba), t, params.pad_mode)
        if fitted.shape[0] == 0 or fitted.shape[1] == 0:
            unusable.append(Unusable(Path(path), f"smaller than one {t}x{t} tile"))
            continue
        if not fitted[..., 3].any():
            unusable.append(Unusable(Path(path), "fully transparent: no tile to keep"))
            continue
        if (h, w) != fitted.shape[:2]:
            warnings.append(f"{path}: size {w}x{h} is not a multiple of {t}; {done} to "
                            f"{fitted.shape[1]}x{fitted.shape[0]}")
            log.warning("%s", warnings[-1])
        screens.append(Screen(unique_name(Path(path).stem, used), fitted, palette))
    return screens, warnings, unusable


def _exact(screens: list[Screen], params: Params, palette: Optional[list],
           palette_name: Optional[str], warnings: list, unusable: list) -> SliceResult:
    """No budget: every distinct tile once, every image mapped exactly."""
    slicer = ImageSlicer(tile_size=params.tile_size, flips=_flips(params),
                         pad_mode=params.pad_mode)
    for s in screens:
        slicer.add(s.name, s.rgba)
    tileset = slicer.tileset(palette=palette, palette_name=palette_name)
    return SliceResult(tileset, list(slicer.bank.counts),
                       palette_swap_groups(tileset.bank, flips=tileset.flips), warnings, unusable)


def learn_budget(screens: list[Screen], params: Params) -> Dictionary:
    """The dictionary learned from every cell of every screen.

    Raises :class:`ParamError` / :class:`InputError` for what ``learn_dictionary`` refuses.
    """
    t = params.tile_size
    cells = np.concatenate([grid_tiles(s.rgba, t).reshape(-1, t, t, 4) for s in screens])
    k = None if params.max_tiles == AUTO_K else int(params.max_tiles)
    try:
        return learn_dictionary(cells, max_tiles=k, flips=_flips(params), seed=params.seed)
    except ValueError as e:
        if "max_tiles" in str(e):
            raise ParamError(f"slice: {e}", field="max_tiles") from None
        raise InputError(f"slice: {e}") from None


def rebuild_screens(screens: list[Screen], dic: Dictionary, params: Params,
                    seam_target: Optional[float] = None) -> tuple[list[np.ndarray], dict]:
    """One uint32 map per screen, rebuilt from the dictionary with the seam- and
    texture-aware assignment (NES mode: at most
    :func:`~tilesets.dictionary.nes_max_distinct` tiles a screen), and the seam weight used
    (:func:`choose_seam_weight`; ``seam_target``: the real screens' border/interior ratio
    that ``seam_weight = "auto"`` aims at, None: the images' own)."""
    limit = nes_max_distinct(params.tile_size) if params.nes else None
    cal = choose_seam_weight(screens, dic, params, seam_target)
    return rebuild([s.rgba for s in screens], dic, seam_weight=cal["seam_weight"],
                   max_distinct=limit, texture_weight=params.texture_weight), cal


def choose_seam_weight(screens: list[Screen], dic: Dictionary, params: Params,
                       seam_target: Optional[float] = None) -> dict:
    """``{"seam_weight", "target_ratio", "source_ratio", "tried"}``: a fixed ``seam_weight``
    as given; ``"auto"`` calibrated (:func:`tilesets.dictionary.calibrate_seam_weight`) on the
    screens of the most common size against ``seam_target`` (None: the screens' own ratio)."""
    lam = params.seam()
    if lam != "auto":
        return {"seam_weight": float(lam), "target_ratio": seam_target, "source_ratio": None,
                "tried": []}
    t = params.tile_size
    by_shape: dict[tuple, list[np.ndarray]] = {}
    for s in screens:
        by_shape.setdefault(s.rgba.shape[:2], []).append(grid_tiles(s.rgba, t))
    group = max(by_shape.values(), key=len)
    cal = calibrate_seam_weight(np.stack(group), dic, weights=SEAM_WEIGHTS,
                                texture_weight=params.texture_weight,
                                target_ratio=seam_target)
    log.info("slice: seam weight %g (rebuilt border/interior ratio aimed at %.3f, %s)",
             cal["seam_weight"], cal["target_ratio"],
             "the training screens'" if seam_target is not None else "the images' own")
    return cal


def budget_tileset(tiles: np.ndarray, maps: dict[str, np.ndarray], params: Params,
                   palette: Optional[list], palette_name: Optional[str]) -> TileSet:
    """The tile set of a rebuild: tiles no map uses dropped, the rest most used first (ties
    in dictionary order), maps renumbered; each tile's origin is the first cell (in map
    order, row-major) that shows it.

    Parameters
    ----------
    tiles : ndarray, shape (K, T, T, 4), uint8 — the dictionary
    maps : dict of str to ndarray (h, w) uint32 — cells naming ``tiles``
    """
    k = len(tiles)
    uses = np.zeros(k, np.int64)
    for m in maps.values():
        uses += np.bincount(cell_ids(m).ravel(), minlength=k)
    order = np.lexsort((np.arange(k), -uses))
    order = order[uses[order] > 0]
    new_id = np.full(k, -1, np.int64)
    new_id[order] = np.arange(len(order))
    renum = {n: _renumber(m, new_id) for n, m in maps.items()}
    ts = TileSet(np.ascontiguousarray(tiles[order]), renum, _origins(renum, len(order),
                                                                     params.tile_size),
                 flips=_flips(params), palette=_covering_palette(tiles[order], palette),
                 palette_name=palette_name)
    return ts.validate()


def _renumber(m: np.ndarray, new_id: np.ndarray) -> np.ndarray:
    """Map cells with their ids replaced by ``new_id[id]`` (flip bits kept)."""
    flips = m.astype(np.uint32) & np.uint32(FLIP_MASK)
    return (new_id[cell_ids(m)].astype(np.uint32) | flips).astype(np.uint32)


def _origins(maps: dict, k: int, t: int) -> list:
    """(map name, x, y) of the first cell showing each of ``k`` tiles."""
    out: list = [None] * k
    left = k
    for name, m in maps.items():
        ids = cell_ids(m)
        u, first = np.unique(ids.ravel(), return_index=True)
        for i, f in zip(u.tolist(), first.tolist()):
            if out[i] is None:
                r, c = divmod(f, ids.shape[1])
                out[i] = (name, c * t, r * t)
                left -= 1
        if not left:
            break
    return out


def _shared_palette(palettes: list) -> Optional[list]:
    """The palette every image has, or None when they differ or one has none."""
    if palettes and all(p is not None and p == palettes[0] for p in palettes):
        return palettes[0]
    return None


def _covering_palette(bank: np.ndarray, palette: Optional[list]) -> Optional[list]:
    """``palette`` when every opaque colour of ``bank`` is one of its entries, else None."""
    if palette is None:
        return None
    entries = {tuple(int(v) for v in c) for c in palette}
    opaque = bank[..., 3] == 255
    used = {tuple(int(v) for v in c) for c in np.unique(bank[opaque][:, :3], axis=0)}
    return palette if used <= entries else None


def _rebuilt_delta_e(screens: list[Screen], rebuilt: list[np.ndarray]) -> float:
    """Mean ΔE76 per pixel of the rebuilt screens against the images."""
    a = np.concatenate([s.rgba.reshape(-1, 4) for s in screens])
    b = np.concatenate([r.reshape(-1, 4) for r in rebuilt])
    return mean_delta_e(a, b)


def training_seam_ratio(items: Iterable[Any], tile_size: int, skipped: Skipped
                        ) -> Optional[float]:
    """Border/interior ΔE ratio (:func:`tilesets.dictionary.seam_ratio`) of real screens: a
    crop artifact's ``screens/`` (the training screens, at native pixels on their tile grid),
    or image files / folders.  None when no screen has a tile with any texture.  Unreadable
    files go to ``skipped``."""
    files: list[Path] = []
    for item in items:
        p = Path(item)
        if (p / "screens").is_dir():
            files += sorted((p / "screens").glob("*.png"))
        else:
            files += expand_inputs([p])
    screens = []
    for _, rgba in iter_images(files, skipped, mode="RGBA"):
        a = fit_to_grid(normalize_alpha(rgba), tile_size, "crop")
        if a.size and a[..., 3].any():
            screens.append(a)
    if not screens:
        return None
    r = seam_ratio(screens, tile_size)["ratio"]
    return float(r) if np.isfinite(r) and r > 0 else None


def _ratio(images: list[np.ndarray], t: int) -> float:
    r = seam_ratio(images, t)["ratio"]
    return float(r) if np.isfinite(r) else -1.0


# --------------------------------------------------------------------------- NES legality
def nes_palette(palette_name: Optional[str]) -> Any:
    """The 64-colour NES palette named by quantize (or the default ``nes`` when the images
    were not quantised to an NES palette)."""
    from palettes.io import PaletteError, get_palette

    if palette_name:
        try:
            pal = get_palette(palette_name)
        except PaletteError:
            pal = None
        if pal is not None and pal.kind == "nes" and len(pal.colours) == 64:
            return pal
    return get_palette("nes")


def nes_legal(tileset: TileSet, palette_name: Optional[str]) -> tuple[TileSet, NesFitReport]:
    """Refit the bank to one backdrop + 4 sub-palettes so every rebuilt screen is NES-legal.

    Each tile (a whole number of 16x16 attribute areas) is mapped to NES colour numbers, the
    sub-palettes are fitted to the tiles' colour histograms weighted by the cells that show
    each tile (:func:`palettes.nesfit.fit_subpalettes`), and every area of every tile takes its
    best sub-palette (:func:`palettes.nesfit.apply_fit`; transparent pixels become the
    backdrop: the NES has no transparent background).  A tile is then legal wherever it is
    placed, flips are off, and a screen has at most 64 distinct 16x16 tiles, so it has at
    most 256 8x8 patterns.  Tiles the refit made equal are merged.  Every rebuilt screen is
    then checked with :func:`palettes.nesfit.validate_nes`.
    """
    from palettes.colour import srgb_to_lab
    from palettes.nearest import get_mapper
    from palettes.nesfit import apply_fit, area_histograms, fit_subpalettes, validate_nes

    pal = nes_palette(palette_name)
    lab = srgb_to_lab(pal.colours)
    usable = pal.usable()
    bank = tileset.bank
    opaque = bank[..., 3] == 255
    numbers = get_mapper(pal.colours, usable).map(np.ascontiguousarray(bank[..., :3]))
    per_tile = area_histograms(list(numbers), 64, list(opaque), area=NES_AREA)
    areas = per_tile.reshape(len(bank), -1, 64)
    uses = np.maximum(tileset.uses(), 1).astype(np.float64)
    fit = fit_subpalettes((areas * uses[:, None, None]).reshape(-1, 64), lab, usable)
    refit = np.stack([apply_fit(lab[numbers[i]], fit, lab, area=NES_AREA, mask=opaque[i])[0]
                      for i in range(len(bank))])                             # (K, T, T)
    rgba = np.concatenate([pal.colours[refit], np.full(refit.shape + (1,), 255, np.uint8)], -1)
    de = float(np.sqrt(((lab[refit] - srgb_to_lab(bank[..., :3])) ** 2).sum(-1))[opaque].mean()) \
        if opaque.any() else 0.0
    merged_ts, keep = _merge_equal(tileset, rgba)
    ids = [cell_ids(m) for m in merged_ts.maps.values()]
    screens = [join_grid(refit[keep][i][..., None])[..., 0] for i in ids]   # NES numbers
    v = validate_nes(screens, backdrop=fit.backdrop, subpalettes=fit.subpalettes,
                     allowed=usable)
    report = NesFitReport(
        palette=pal.name, backdrop=int(fit.backdrop),
        subpalettes=[[int(c) for c in s] for s in fit.subpalettes], legal=bool(v["legal"]),
        problems=list(v["problems"]),
        max_patterns=max((int(n) for n in v["tiles_per_image"] if n is not None), default=0),
        max_tiles=max((len(np.unique(i)) for i in ids), default=0),
        delta_e=round(de, 3), merged=len(bank) - len(keep))
    return merged_ts, report


def _merge_equal(tileset: TileSet, bank: np.ndarray) -> tuple[TileSet, np.ndarray]:
    """``tileset`` with ``bank`` as its tiles, equal tiles merged into the first (flips are
    off in NES mode, so equal means equal bytes); returns (tile set, the kept tiles' old
    ids in order)."""
    k = len(bank)
    _, first, inverse = np.unique(bank.reshape(k, -1), axis=0, return_index=True,
                                  return_inverse=True)
    keep = np.sort(first)
    new_of_keep = np.full(k, -1, np.int64)
    new_of_keep[keep] = np.arange(len(keep))
    new_id = new_of_keep[first[inverse.ravel()]]
    maps = {n: _renumber(m, new_id) for n, m in tileset.maps.items()}
    origins = [tileset.origins[i] for i in keep]
    ts = TileSet(np.ascontiguousarray(bank[keep]), maps, origins, flips=tileset.flips,
                 palette=tileset.palette, palette_name=tileset.palette_name)
    return ts.validate(), keep


def _nes_warnings(report: NesFitReport) -> list[str]:
    out = []
    if report.merged:
        out.append(f"nes: {report.merged} tiles became equal to another tile when refitted "
                   f"to 4 sub-palettes; merged")
    if not report.legal:
        out.append("nes: rebuilt screens are not NES-legal: " + "; ".join(report.problems[:3]))
    for msg in out:
        log.warning("%s", msg)
    return out


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
    """Slice images into a tile budget and per-image maps rebuilt from it.

    ``inputs["images"]``: quantize's artifact folder, or image files / folders / globs.
    ``inputs["training_screens"]`` (optional): crop's artifact (or real screens as files or
    folders), whose border/interior ratio ``seam_weight = "auto"`` aims the rebuild at.
    Writes the :class:`TileSet` and ``slice.json`` into ``out_dir``; returns the summary
    (:meth:`SliceResult.summary` plus ``skipped``).
    """
    items = inputs.get("images") or []
    files = _image_files(items)
    skipped = Skipped(logger=log)
    target = None
    if inputs.get("training_screens") and params.budget and params.seam() == "auto":
        target = training_seam_ratio(inputs["training_screens"], params.tile_size, skipped)
    result = slice_images(_decoded(files, skipped, progress), params,
                          palette_name=_palette_name(items), seam_target=target)
    for u in result.unusable:
        skipped.add(u.path, f"{u.path}: {u.reason}")
    if not result.tileset.maps:
        raise skipped.nothing_usable("slice", len(files))
    result.tileset.save(out_dir, save_npy, save_npz, write_json)
    write_json(Path(out_dir) / "slice.json", {
        "nes": bool(params.nes), "pad_mode": params.pad_mode, "max_tiles": params.max_tiles,
        "images": list(result.tileset.maps), "counts": result.counts,
        "palette_swaps": result.palette_swaps, "dictionary": result.dictionary,
        "seams": result.seams,
        "nes_fit": result.nes_fit.to_json() if result.nes_fit else None,
        "warnings": result.warnings, "skipped": skipped.items})
    summary = dict(result.summary(), skipped=skipped.items)
    log.info("slice: %d images, %d cells, %d tiles (%.3f distinct per cell), %d flipped cells",
             summary["images"], summary["cells"], summary["unique"],
             summary["distinct_per_cell"], summary["flipped_cells"])
    return summary
