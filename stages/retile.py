"""retile: a reference screen rebuilt from the tile set, as a Tiled map with a preview.

"The layout of that screen, in our new tiles": a user's screenshot or sketch of any size is
put on the tile grid and rebuilt cell by cell from a tile set's bank (the tile budget slice
learned, after dedupe) with the same seam-aware assignment slice uses
(:func:`tilesets.dictionary.assign`).  Not a pipeline stage: ``pipeline retile IMAGE`` reads
the latest dedupe artifact (or slice's, or ``--tileset DIR``) and writes into ``--out``.

Before the assignment the image is prepared, each step saying what it did:

1. alpha made binary (0 / 255); a fully transparent image is an error;
2. an integer nearest-neighbour upscale (a 3x emulator screenshot) is undone as crop does
   it (``native``, :func:`stages._grid.detect_scale`);
3. sides that are not tile multiples are cropped or padded (``pad_mode``);
4. colours the tile set's palette lacks are mapped to its nearest colour (CIELAB): the
   tile set's shared PNG palette, else its named palette, else the bank's own colours.

Files (``out_dir``)
-------------------
<stem>.tmx            the map (one tile layer), referencing the tile set beside it
<stem>.png            its preview, drawn by :func:`tilesets.render.render_map` (as Tiled draws)
<stem>.json           source, tile set, warnings, grid, distinct tiles, mean ΔE76
tileset_<digest>.tsx  the bank as an external Tiled tileset (bank order), and its .png sheet;
                      named by content so maps retiled from other tile sets stay valid
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np

from stages._common import (InputError, ParamError, StageParams, atomic_write_text,
                            load_image, param, save_png, write_json)
from tilesets.artifacts import ArtifactError, TileSet
from tilesets.atlas import pack_atlas
from tilesets.bank import PAD_MODES, fit_to_grid, normalize_alpha, unique_name
from tilesets.cells import cell_ids, encode_cells
from tilesets.dictionary import (TEXTURE_WEIGHT, assign, grid_tiles, mean_delta_e,
                                 nes_max_distinct, parse_seam_weight)
from tilesets.pixels import pack_colours
from tilesets.render import render_map
from tilesets.tiled import bank_ids_to_gids, map_xml, tileset_xml

log = logging.getLogger("tilegan.retile")

#: tiles per row of the tile sheet written beside the maps
SHEET_COLUMNS = 16


@dataclass(frozen=True)
class Params(StageParams):
    STAGE = "retile"

    pad_mode: str = param("crop", help="when an image side is not a multiple of the tile size: "
                                       "'crop' the remainder or 'pad' with transparent pixels",
                          choices=PAD_MODES)
    seam_weight: str = param("auto", help="how much a cell's tile must join its neighbours' "
                                          "edges: 'auto' (borders no rougher than the image's "
                                          "own) or a number >= 0 (0 = each cell on its own)")
    native: bool = param(True, help="undo an integer nearest-neighbour upscale first (a 3x "
                                    "screenshot is retiled at its native pixels), as crop "
                                    "detects it")
    nes: bool = param(False, help="at most 64 distinct 16x16 tiles in the screen (one NES "
                                  "pattern table)")
    texture_weight: float = param(TEXTURE_WEIGHT, help="how much a cell's tile must keep the "
                                                       "cell's texture (>= 0; 0 = nearest "
                                                       "colours only)", min=0.0)

    def check(self) -> None:
        super().check()
        self.seam()

    def seam(self) -> Union[str, float]:
        try:
            return parse_seam_weight(self.seam_weight)
        except ValueError as e:
            raise ParamError(f"retile: {e}", field="seam_weight") from None


@dataclass
class Retiled:
    """One reference image rebuilt from a tile set (:func:`retile_image`).

    Attributes
    ----------
    cells : ndarray, shape (R, C), uint32
        Bank id | :class:`tilesets.cells.Flip` bits, as in ``maps.npz``.
    image : ndarray, shape (R*T, C*T, 4), uint8
        The image as it was rebuilt (native pixels, on the grid, palette colours).
    preview : ndarray, shape (R*T, C*T, 4), uint8
        The map drawn with the bank, as Tiled draws it.
    error : float
        Mean ΔE76 per pixel between ``image`` and ``preview``.
    warnings : list of str
        What was done to the image.
    """

    cells: np.ndarray
    image: np.ndarray
    preview: np.ndarray
    error: float
    warnings: list = field(default_factory=list)

    def summary(self) -> dict:
        return {"rows": int(self.cells.shape[0]), "cols": int(self.cells.shape[1]),
                "distinct_tiles": int(len(np.unique(cell_ids(self.cells)))),
                "mean_delta_e": round(self.error, 3), "warnings": list(self.warnings)}


# --------------------------------------------------------------------------- core
def retile_image(rgba: np.ndarray, tileset: TileSet, params: Params, *,
                 name: str = "image") -> Retiled:
    """Rebuild one image from ``tileset``'s bank, cell by cell, seam-aware.

    Parameters
    ----------
    rgba : ndarray, shape (H, W, 4), uint8
        Any size.
    tileset : TileSet
        Its bank is the dictionary; ``flips`` says whether cells may show flipped tiles.
    params : Params
    name : str
        How warnings name the image.


    Raises
    ------
    InputError
        A fully transparent image, an image smaller than one tile, or an empty bank.
    """
    if len(tileset) == 0:
        raise InputError("retile: the tile set has no tiles")
    rgba = np.asarray(rgba)
    if rgba.dtype != np.uint8 or rgba.ndim != 3 or rgba.shape[2] != 4:
        raise InputError(f"{name}: expected an RGBA image, got {rgba.dtype} {rgba.shape}")
    image = normalize_alpha(rgba)
    if not image[..., 3].any():
        raise InputError(f"{name}: the image is fully transparent; nothing to retile")
    warnings: list[str] = []
    if params.native:
        image = _native(image, name, warnings)
    best = rebuild_image(image, tileset, params, name=name)
    best.warnings[:0] = warnings
    for w in best.warnings:
        log.warning("%s", w)
    return best


def rebuild_image(image: np.ndarray, tileset: TileSet, params: Params, *,
                  name: str = "image") -> Retiled:
    """An alpha-normalised image (H, W, 4) put on the grid, its colours on the tile set's
    palette, and rebuilt; the warnings say what was done to it."""
    warnings: list[str] = []
    t = tileset.tile_size
    image = _on_grid(image, t, params.pad_mode, name, warnings)
    image = _palette_colours(image, tileset, name, warnings)
    ids, orient = assign(grid_tiles(image, t), tileset.bank, flips=tileset.flips,
                         seam_weight=params.seam(), texture_weight=params.texture_weight,
                         max_distinct=nes_max_distinct(t) if params.nes else None)
    cells = encode_cells(ids, orient)
    preview = render_map(bank_ids_to_gids(cells), tileset.bank)
    return Retiled(cells, image, preview, mean_delta_e(image, preview), warnings)


def _native(image: np.ndarray, name: str, warnings: list) -> np.ndarray:
    """The image at one pixel per block when it is an integer nearest-neighbour upscale, as
    crop detects it (:func:`stages._grid.detect_scale`: blocks on a grid, backed by lines
    that repeat amid changing ones; pixel art's own runs are no evidence)."""
    from stages._grid import detect_scale, downscale

    k, ox, oy = detect_scale(image)
    if k <= 1:
        return image
    out = downscale(image, k, ox, oy)
    h, w = image.shape[:2]
    warnings.append(f"{name}: {w}x{h} is a {k}x nearest-neighbour upscale; retiled at its "
                    f"native {out.shape[1]}x{out.shape[0]} pixels (--no-native keeps them)")
    return out


def _on_grid(image: np.ndarray, t: int, pad_mode: str, name: str, warnings: list) -> np.ndarray:
    h, w = image.shape[:2]
    if h % t == 0 and w % t == 0:
        return image
    out = fit_to_grid(image, t, pad_mode)
    if out.shape[0] == 0 or out.shape[1] == 0:
        raise InputError(f"{name}: {w}x{h} is smaller than one {t}x{t} tile")
    if pad_mode == "crop":
        done = (f"cropped to {out.shape[1]}x{out.shape[0]} ({w % t} px off the right, "
                f"{h % t} px off the bottom)")
    else:
        done = (f"padded with transparent pixels to {out.shape[1]}x{out.shape[0]} "
                f"(right and bottom)")
    warnings.append(f"{name}: size {w}x{h} is not a multiple of {t}; {done}")
    return out


def tileset_palette(tileset: TileSet) -> tuple[np.ndarray, str]:
    """The colours a tile set's tiles are drawn from, (P, 3) uint8, and where they come from:
    its shared PNG palette, else its named palette, else the bank's own opaque colours."""
    if tileset.palette:
        return np.asarray(tileset.palette, np.uint8).reshape(-1, 3), "the tile set's palette"
    if tileset.palette_name:
        from palettes.io import PaletteError, get_palette

        try:
            return get_palette(tileset.palette_name).colours, f"palette {tileset.palette_name}"
        except PaletteError:
            pass
    bank = tileset.bank
    return np.unique(bank[bank[..., 3] == 255][:, :3], axis=0), "the tiles' colours"


def _palette_colours(image: np.ndarray, tileset: TileSet, name: str,
                     warnings: list) -> np.ndarray:
    """Opaque colours not in the tile set's palette take their nearest palette colour."""
    from palettes.nearest import get_mapper

    colours, source = tileset_palette(tileset)
    if len(colours) == 0:
        return image
    opaque = image[..., 3] == 255
    known = np.isin(pack_colours(image[..., :3]), pack_colours(colours))
    off = opaque & ~known
    if not off.any():
        return image
    n_off = len(np.unique(pack_colours(image[off][:, :3])))
    out = image.copy()
    out[..., :3][off] = colours[get_mapper(colours).map(np.ascontiguousarray(image[off][:, :3]))]
    warnings.append(f"{name}: {n_off} colours ({off.sum() / opaque.sum():.0%} of the opaque "
                    f"pixels) are not in {source}; mapped to its nearest colours")
    return out


# --------------------------------------------------------------------------- files
def tileset_name(tileset: TileSet) -> str:
    """``tileset_<12 hex>``: a digest of the bank, so two tile sets never share a file."""
    h = hashlib.sha256(np.ascontiguousarray(tileset.bank).tobytes())
    h.update(str(bool(tileset.flips)).encode())
    return f"tileset_{h.hexdigest()[:12]}"


def tile_sheet(bank: np.ndarray, columns: int = SHEET_COLUMNS) -> np.ndarray:
    """The bank laid out in rows of ``columns`` tiles, tile i at row i // columns (RGBA,
    unused cells transparent): (rows*T, columns*T, 4) uint8."""
    return pack_atlas(bank, columns=max(1, columns))


def write_tileset(tileset: TileSet, out_dir: Path) -> Path:
    """Write ``<tileset_name>.png`` and ``.tsx`` into ``out_dir`` (once); returns the .tsx."""
    stem = tileset_name(tileset)
    tsx = Path(out_dir) / f"{stem}.tsx"
    if tsx.is_file() and (Path(out_dir) / f"{stem}.png").is_file():
        return tsx
    sheet = tile_sheet(tileset.bank)
    save_png(Path(out_dir) / f"{stem}.png", sheet)
    cols = sheet.shape[1] // tileset.tile_size
    atomic_write_text(tsx, tileset_xml(
        name=stem, tile_size=tileset.tile_size, tile_count=len(tileset), columns=cols,
        image_source=f"{stem}.png", image_width=sheet.shape[1], image_height=sheet.shape[0]))
    return tsx


def write_retiled(result: Retiled, tileset: TileSet, out_dir: Path, stem: str, *,
                  source: str, tileset_source: str) -> list[Path]:
    """Write ``<stem>.tmx``, ``<stem>.png`` and ``<stem>.json`` (and the tile set once)."""
    out_dir = Path(out_dir)
    tsx = write_tileset(tileset, out_dir)
    tmx = out_dir / f"{stem}.tmx"
    atomic_write_text(tmx, map_xml(bank_ids_to_gids(result.cells), tile_size=tileset.tile_size,
                                   tileset_source=tsx.name,
                                   properties={"retiled_from": source}))
    png = save_png(out_dir / f"{stem}.png", result.preview)
    info = write_json(out_dir / f"{stem}.json", dict(result.summary(), source=source,
                                                     tileset=tileset_source, tsx=tsx.name))
    return [tmx, png, info]


def load_tileset(folder: Path) -> TileSet:
    """A tile set artifact (dedupe's or slice's folder), as an :class:`InputError` if bad."""
    folder = Path(folder)
    if not TileSet.exists(folder):
        raise InputError(f"{folder}: not a tile set (no bank.npy); pass a dedupe or slice "
                         f"artifact folder")
    try:
        return TileSet.load(folder)
    except ArtifactError as e:
        raise InputError(str(e)) from None


def retile_files(images: Sequence[Union[str, Path]], tileset_dir: Path, out_dir: Path,
                 params: Params) -> list[dict[str, Any]]:
    """Retile every image file into ``out_dir``; one summary per image (with ``files``).

    Raises :class:`InputError` for an unreadable image or tile set; nothing is written for
    an image that fails, and images before it keep their files.
    """
    tileset = load_tileset(tileset_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    done: list[dict[str, Any]] = []
    used: set[str] = set()
    for path in images:
        path = Path(path)
        rgba = load_image(path, mode="RGBA")
        result = retile_image(rgba, tileset, params, name=str(path))
        stem = unique_name(path.stem, used)
        files = write_retiled(result, tileset, out_dir, stem, source=str(path),
                              tileset_source=str(tileset_dir))
        done.append(dict(result.summary(), source=str(path), files=[str(f) for f in files]))
    return done
