"""Artifact formats shared between stages, each written once: ``load``, ``save``, ``validate``.

A stage reads another stage's artifact only through these classes, so a format changes in one
place.  Files inside an artifact folder:

- :class:`Patches` (crop → train): ``patches.npy`` uint8 (N, S, S, C), C = 3 or 4; optionally
  ``patch_games.npy`` int32 (N,), each patch's game as an index into ``patch_game_names.npy``
  (unicode strings, sorted).
- :class:`TrainingTiles` (crop → dedupe): ``tiles.npy`` uint8 (M, T, T, 3) every grid-aligned
  tile of every training screen, ``tiles_origin.npy`` int32 (M, 3) = (screen index, x, y), and
  ``screens.json`` (one record per screen: ``id``, ``source``, ``width``, ``height``, ...).
- :class:`TileSet` (slice → dedupe → export): the tile bank and the maps that use it
  (see its docstring).

Savers write atomically through the ``save`` callbacks the caller passes (the domain layer does
not know the stage helpers); loaders raise :class:`ArtifactError` naming the file and problem.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from tilesets.cells import FLIP_MASK, ID_MASK, cell_ids
from tilesets.pixels import as_rgba


class ArtifactError(ValueError):
    """An artifact file is missing, unreadable or malformed (the message names the file)."""


PATCHES_FILE = "patches.npy"
PATCH_GAMES_FILE = "patch_games.npy"
PATCH_GAME_NAMES_FILE = "patch_game_names.npy"
PATCH_ROWS_FILE = "patch_rows.npy"
TILES_FILE = "tiles.npy"
TILES_ORIGIN_FILE = "tiles_origin.npy"
SCREENS_FILE = "screens.json"

#: ``save_npy(path, array)`` / ``write_json(path, obj)``: atomic writers supplied by the caller.
SaveNpy = Callable[[Path, np.ndarray], Any]
WriteJson = Callable[[Path, Any], Any]


def load_npy(path: Path, *, mmap: bool = False) -> np.ndarray:
    """``np.load`` without pickles; a missing or malformed file raises :class:`ArtifactError`."""
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing") from None
    except (OSError, ValueError, EOFError) as e:
        raise ArtifactError(f"{path}: not a readable .npy array ({e})") from None


def load_json(path: Path, default: Any = None) -> Any:
    """A JSON file, or ``default`` when it does not exist (malformed → :class:`ArtifactError`)."""
    if not path.exists():
        if default is not None:
            return default
        raise ArtifactError(f"{path}: missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{path}: not readable JSON ({e})") from None


def grid_cut(images: np.ndarray, size: int) -> np.ndarray:
    """Cut images into non-overlapping ``size`` squares, row-major per image.

    Parameters
    ----------
    images : ndarray, shape (N, H, W, C) or (H, W, C)
        ``H`` and ``W`` are cropped down to multiples of ``size``.
    size : int

    Returns
    -------
    ndarray, shape (N * (H // size) * (W // size), size, size, C)

    >>> grid_cut(np.zeros((2, 32, 48, 3), np.uint8), 16).shape
    (12, 16, 16, 3)
    """
    a = images[None] if images.ndim == 3 else images
    n, h, w, c = a.shape
    ny, nx = h // size, w // size
    a = a[:, :ny * size, :nx * size].reshape(n, ny, size, nx, size, c)
    return a.transpose(0, 1, 3, 2, 4, 5).reshape(-1, size, size, c)


def _check_uint8_images(a: np.ndarray, path: Path, what: str, channels: tuple[int, ...]) -> None:
    if a.dtype != np.uint8 or a.ndim != 4 or a.shape[1] != a.shape[2] or a.shape[-1] not in channels:
        shape = "S, S, " + "|".join(map(str, channels))
        raise ArtifactError(f"{path}: expected uint8 {what} shaped (N, {shape}), got "
                            f"{a.dtype} {a.shape}")


@dataclass
class Patches:
    """Training patches: ``images`` uint8 (N, S, S, C), C = 3 (RGB) or 4 (RGBA).

    ``games`` (optional) int32 (N,): each patch's source game as an index into ``game_names``
    (list of str); None when unknown (older artifacts, user arrays).
    ``rows`` (optional) int32 (N, 2): each patch's top row in its screen and that screen's
    height, in native pixels (where in a screen it was cut: a positional model learns layout
    from it); None when unknown.
    """

    images: np.ndarray
    games: Optional[np.ndarray] = None
    game_names: list = field(default_factory=list)
    rows: Optional[np.ndarray] = None

    def validate(self, where: Path = Path(PATCHES_FILE)) -> "Patches":
        _check_uint8_images(self.images, where, "patches", (3, 4))
        if self.games is not None:
            g = self.games
            where = where.with_name(PATCH_GAMES_FILE)
            if (g.ndim != 1 or g.dtype.kind not in "iu" or len(g) != len(self.images)
                    or (len(g) and not 0 <= int(g.min()) <= int(g.max()) < len(self.game_names))):
                raise ArtifactError(f"{where}: expected {len(self.images)} integer game indices "
                                    f"below {len(self.game_names)}, got {g.dtype} {g.shape}")
        if self.rows is not None:
            r, S = self.rows, self.images.shape[1] if self.images.ndim == 4 else 0
            if (r.ndim != 2 or r.shape != (len(self.images), 2) or r.dtype.kind not in "iu"
                    or (len(r) and (int(r[:, 0].min()) < 0
                                    or bool((r[:, 0] + S > r[:, 1]).any())))):
                raise ArtifactError(f"{where.with_name(PATCH_ROWS_FILE)}: expected "
                                    f"({len(self.images)}, 2) integer (top row, screen height) "
                                    f"pairs with each patch inside its screen, got "
                                    f"{r.dtype} {r.shape}")
        return self

    def save(self, folder: Path, save_npy: SaveNpy) -> None:
        self.validate(folder / PATCHES_FILE)
        save_npy(folder / PATCHES_FILE, self.images)
        if self.games is not None:
            save_npy(folder / PATCH_GAMES_FILE, np.asarray(self.games, np.int32))
            save_npy(folder / PATCH_GAME_NAMES_FILE, np.asarray(list(self.game_names), dtype=str))
        if self.rows is not None:
            save_npy(folder / PATCH_ROWS_FILE, np.asarray(self.rows, np.int32))

    @classmethod
    def load(cls, folder: Path, *, mmap: bool = False) -> "Patches":
        path = Path(folder) / PATCHES_FILE
        games, names = None, []
        if (Path(folder) / PATCH_GAMES_FILE).is_file():
            games = load_npy(Path(folder) / PATCH_GAMES_FILE)
            names = [str(x) for x in load_npy(Path(folder) / PATCH_GAME_NAMES_FILE).tolist()]
        rows = (load_npy(Path(folder) / PATCH_ROWS_FILE)
                if (Path(folder) / PATCH_ROWS_FILE).is_file() else None)
        return cls(load_npy(path, mmap=mmap), games, names, rows).validate(path)

    @staticmethod
    def exists(folder: Path) -> bool:
        return (Path(folder) / PATCHES_FILE).is_file()


@dataclass
class TrainingTiles:
    """Every grid-aligned tile of every training screen, with where it came from.

    tiles : ndarray, shape (M, T, T, 3), uint8
    origin : ndarray, shape (M, 3), int — (screen index, x, y) in that screen's pixels
    screens : list of dict — one record per screen (``id``, ``source``, ``width``, ``height``...)
    """

    tiles: np.ndarray
    origin: np.ndarray
    screens: list = field(default_factory=list)

    def validate(self, where: Path = Path(TILES_FILE)) -> "TrainingTiles":
        _check_uint8_images(self.tiles, where, "tiles", (3, 4))
        o = self.origin
        if o.ndim != 2 or o.shape[1] != 3 or len(o) != len(self.tiles):
            raise ArtifactError(f"{where.parent / TILES_ORIGIN_FILE}: expected ({len(self.tiles)}, 3) "
                                f"origins for {len(self.tiles)} tiles, got {o.shape}")
        return self

    @property
    def tile_size(self) -> int:
        return int(self.tiles.shape[1])

    def save(self, folder: Path, save_npy: SaveNpy, write_json: WriteJson) -> None:
        folder = Path(folder)
        self.validate(folder / TILES_FILE)
        save_npy(folder / TILES_FILE, self.tiles)
        save_npy(folder / TILES_ORIGIN_FILE, np.asarray(self.origin, np.int32))
        write_json(folder / SCREENS_FILE, self.screens)

    @classmethod
    def load(cls, folder: Path, *, mmap: bool = False) -> "TrainingTiles":
        """Load crop's training tiles; an absent ``tiles_origin.npy`` gives zero origins."""
        folder = Path(folder)
        tiles = load_npy(folder / TILES_FILE, mmap=mmap)
        op = folder / TILES_ORIGIN_FILE
        origin = (load_npy(op).astype(np.int64) if op.exists()
                  else np.zeros((len(tiles), 3), np.int64))
        screens = load_json(folder / SCREENS_FILE, default=[])
        return cls(tiles, origin, screens).validate(folder / TILES_FILE)

    @staticmethod
    def exists(folder: Path) -> bool:
        return (Path(folder) / TILES_FILE).is_file()

    def split(self, size: int) -> "TrainingTiles":
        """The same tiles cut into ``size`` squares (``size`` divides the tile side)."""
        t = self.tile_size
        if size == t:
            return self
        if size > t or t % size:
            raise ArtifactError(f"training tiles are {t} px; cannot cut them into {size}-px tiles")
        k = t // size
        sub = grid_cut(np.asarray(self.tiles), size)
        dy, dx = np.meshgrid(np.arange(k) * size, np.arange(k) * size, indexing="ij")
        o = np.repeat(np.asarray(self.origin, np.int64), k * k, axis=0)
        o[:, 1] += np.tile(dx.ravel(), len(self.tiles))
        o[:, 2] += np.tile(dy.ravel(), len(self.tiles))
        return TrainingTiles(sub, o, self.screens)


BANK_FILE = "bank.npy"
MAPS_FILE = "maps.npz"
TILESET_FILE = "tileset.json"

#: ``save_npz(path, **arrays)``: atomic .npz writer supplied by the caller.
SaveNpz = Callable[..., Any]


@dataclass
class TileSet:
    """A tile bank and the maps that use it (slice → dedupe → export).

    Files: ``bank.npy`` (the tiles), ``maps.npz`` (one array per image stem) and
    ``tileset.json`` (``tile_size``, ``flips``, ``origins``, ``palette``, ``palette_name``).

    Attributes
    ----------
    bank : ndarray, shape (K, T, T, 4), uint8
        RGBA tiles; alpha is 0 or 255 and transparent pixels are (0, 0, 0, 0).
    maps : dict of str to ndarray, shape (h, w), uint32
        Per image stem, one cell per tile: bank id | :class:`tilesets.cells.Flip` bits; the cell
        shows ``flip_tile(bank[id], bits)``.
    origins : list, length K
        Per bank tile, ``(image stem, x, y)`` in pixels of a place it comes from, or None.
    flips : bool
        Whether a tile stands for its H, V and HV-flipped forms too; when False no cell carries
        a flip bit (NES mode).
    palette : list of [r, g, b] or None
        The PLTE entries shared by every source image (indexed PNGs), else None.
    palette_name : str or None
        Name of the palette the images were quantized with, when known.
    """

    bank: np.ndarray
    maps: dict
    origins: list = field(default_factory=list)
    flips: bool = True
    palette: Optional[list] = None
    palette_name: Optional[str] = None

    def __post_init__(self) -> None:
        if not self.origins:
            self.origins = [None] * len(self.bank)

    @property
    def tile_size(self) -> int:
        return int(self.bank.shape[1])

    def __len__(self) -> int:
        return len(self.bank)

    def uses(self) -> np.ndarray:
        """Cells that show each bank tile, over all maps: (K,) int64."""
        out = np.zeros(len(self.bank), np.int64)
        for m in self.maps.values():
            out += np.bincount(cell_ids(m).ravel(), minlength=len(self.bank))
        return out

    def validate(self, where: Path = Path(".")) -> "TileSet":
        """Check shapes, dtypes and that every cell names a bank tile; ``where`` = the folder."""
        b = self.bank
        bank_path, maps_path = Path(where) / BANK_FILE, Path(where) / MAPS_FILE
        if b.dtype != np.uint8 or b.ndim != 4 or b.shape[1] != b.shape[2] or b.shape[3] != 4:
            raise ArtifactError(f"{bank_path}: expected uint8 tiles shaped (K, T, T, 4), got "
                                f"{b.dtype} {b.shape}")
        k = len(b)
        if k >= ID_MASK:
            raise ArtifactError(f"{bank_path}: {k} tiles do not fit Tiled's 29-bit tile ids")
        if len(self.origins) != k:
            raise ArtifactError(f"{Path(where) / TILESET_FILE}: {len(self.origins)} origins for "
                                f"{k} tiles")
        for stem, m in self.maps.items():
            _check_map(m, stem, k, self.flips, maps_path)
        return self

    def save(self, folder: Path, save_npy: SaveNpy, save_npz: SaveNpz,
             write_json: WriteJson) -> None:
        folder = Path(folder)
        self.validate(folder)
        save_npy(folder / BANK_FILE, self.bank)
        save_npz(folder / MAPS_FILE, **self.maps)
        write_json(folder / TILESET_FILE, {
            "tile_size": self.tile_size, "flips": bool(self.flips),
            "origins": [list(o) if o is not None else None for o in self.origins],
            "palette": self.palette, "palette_name": self.palette_name})

    @classmethod
    def load(cls, folder: Path) -> "TileSet":
        """Load and validate; RGB banks get opaque alpha, maps become uint32.

        Without ``tileset.json`` the tile set has flips on and no origins or palette.
        """
        folder = Path(folder)
        bank = load_npy(folder / BANK_FILE)
        if bank.ndim == 4 and bank.shape[-1] == 3 and bank.dtype == np.uint8:
            bank = as_rgba(bank)
        maps_path = folder / MAPS_FILE
        if not maps_path.is_file():
            raise ArtifactError(f"{folder}: {BANK_FILE} has no {MAPS_FILE} beside it")
        try:
            with np.load(maps_path, allow_pickle=False) as z:
                maps = {k: z[k] for k in sorted(z.files)}
        except (OSError, ValueError, EOFError) as e:
            raise ArtifactError(f"{maps_path}: not a readable .npz file ({e})") from None
        meta = load_json(folder / TILESET_FILE, default={})
        if not isinstance(meta, dict):
            raise ArtifactError(f"{folder / TILESET_FILE}: expected a JSON object")
        t = meta.get("tile_size")
        if t is not None and bank.ndim == 4 and t != bank.shape[1]:
            raise ArtifactError(f"{folder / TILESET_FILE}: tile_size {t} but {BANK_FILE} holds "
                                f"{bank.shape[1]}-px tiles")
        origins = [tuple(o) if o is not None else None for o in meta.get("origins") or []]
        ts = cls(bank, maps, origins, flips=bool(meta.get("flips", True)),
                 palette=meta.get("palette"), palette_name=meta.get("palette_name"))
        ts.validate(folder)
        ts.maps = {k: m.astype(np.uint32) for k, m in maps.items()}
        return ts

    @staticmethod
    def exists(folder: Path) -> bool:
        return (Path(folder) / BANK_FILE).is_file()


def _check_map(m: np.ndarray, stem: str, k: int, flips: bool, path: Path) -> None:
    if m.ndim != 2 or m.size == 0 or not np.issubdtype(m.dtype, np.integer):
        raise ArtifactError(f"{path}: map '{stem}' must be a non-empty 2-D integer array, "
                            f"got {m.dtype} {m.shape}")
    if int(m.min()) < 0 or int(m.max()) > 0xFFFFFFFF:
        raise ArtifactError(f"{path}: map '{stem}' holds values outside 0..2**32-1")
    top = int(cell_ids(m).max())
    if top >= k:
        raise ArtifactError(f"{path}: map '{stem}' uses tile {top}, but {BANK_FILE} has {k} "
                            f"tiles; the two files do not belong together")
    if not flips and (np.asarray(m).astype(np.uint64) & np.uint64(FLIP_MASK)).any():
        raise ArtifactError(f"{path}: map '{stem}' has flip bits, but the tile set has flips off")
