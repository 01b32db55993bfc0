"""Palette objects, palette-file loaders and the built-in palette registry.

Formats read (chosen by file suffix):

``.pal``  emulator palette: 192 bytes (64 RGB triplets) or 1536 bytes (8 emphasis
          variants of 64 colours; the first 64 are used, the rest kept in
          :attr:`Palette.emphasis`).  A JASC-PAL text file (Paint Shop Pro) is also accepted.
``.gpl``  GIMP palette (``GIMP Palette`` header, ``R G B name`` lines).
``.hex``  Lospec hex list (one ``RRGGBB`` per line, ``#`` optional).
``.png``  (or any image) a palette strip: the distinct colours in scan order.
"""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Optional

import numpy as np

from .colour import pack_rgb
from .data import BUILTIN, DEFAULT_PALETTE

__all__ = ["Palette", "PaletteError", "get_palette", "load_palette_file", "list_palettes",
           "write_swatch", "usable_indices", "MAX_COLOURS", "NES_BLACK_GROUP"]

MAX_COLOURS = 256
#: NES colour numbers that are the same black on a 2C02; only $0F of them is ever produced.
NES_BLACK_GROUP = (0x0E, 0x0F, 0x1D, 0x1E, 0x1F, 0x2E, 0x2F, 0x3E, 0x3F)
NES_FORBIDDEN = (0x0D,)      # "blacker than black": can upset TV sync, never produced


class PaletteError(ValueError):
    """A palette name or file that cannot be used; the message names it and the problem."""


@dataclasses.dataclass(frozen=True, eq=False)
class Palette:
    """A palette: up to 256 sRGB colours.

    Attributes
    ----------
    name : str
        Built-in name or the file path it came from.
    colours : ndarray, shape (K, 3), uint8
        Every entry of the palette, duplicates included (index = colour number).
    kind : str
        ``"nes"`` for a 64-entry NES palette (index = NES colour number), else ``"generic"``.
    description, source : str
    emphasis : ndarray or None, shape (8, 64, 3), uint8
        The emphasis variants of a 1536-byte ``.pal`` file.
    """
    name: str
    colours: np.ndarray
    kind: str = "generic"
    description: str = ""
    source: str = ""
    emphasis: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        c = np.asarray(self.colours)
        if c.ndim != 2 or c.shape[1] != 3 or c.dtype != np.uint8:
            raise PaletteError(f"{self.name}: colours must be a (K, 3) uint8 array, got "
                               f"{c.shape} {c.dtype}")
        if len(c) == 0:
            raise PaletteError(f"{self.name}: the palette has no colours")
        if len(c) > MAX_COLOURS:
            raise PaletteError(f"{self.name}: {len(c)} colours; an indexed PNG holds at most "
                               f"{MAX_COLOURS}, so palettes are limited to {MAX_COLOURS} colours")

    def __len__(self) -> int:
        return len(self.colours)

    def usable(self, *, drop_xd_column: bool = False) -> np.ndarray:
        """See :func:`usable_indices`."""
        return usable_indices(self, drop_xd_column=drop_xd_column)


def usable_indices(palette: Palette, *, drop_xd_column: bool = False) -> np.ndarray:
    """Indices the quantiser may produce, sorted ascending.

    Rules
    -----
    * NES palettes (``kind == "nes"``, 64 entries): $0D is never produced; the black group
      $0E $0F $1D $1E $1F $2E $2F $3E $3F collapses to $0F; any other exact duplicate
      colours collapse to the highest index (so white $20 = $30 keeps $30).  With
      ``drop_xd_column`` the whole $xD column ($0D $1D $2D $3D) is excluded.
    * Other palettes: exact duplicate colours collapse to the first (lowest) index.

    Returns
    -------
    ndarray, shape (n,), int64
    """
    cols = palette.colours
    keep = np.ones(len(cols), bool)
    if palette.kind == "nes" and len(cols) == 64:
        for i in NES_FORBIDDEN:
            keep[i] = False
        for i in NES_BLACK_GROUP:
            keep[i] = i == 0x0F
        if drop_xd_column:
            keep[[0x0D, 0x1D, 0x2D, 0x3D]] = False
        order = range(63, -1, -1)          # highest index wins among duplicates
    else:
        order = range(len(cols))
    seen: set[bytes] = set()
    for i in order:
        if not keep[i]:
            continue
        key = cols[i].tobytes()
        if key in seen:
            keep[i] = False
        else:
            seen.add(key)
    return np.flatnonzero(keep).astype(np.int64)


# --------------------------------------------------------------------------- loaders
def _colours_array(name: str, rows: list[tuple[int, int, int]]) -> np.ndarray:
    if not rows:
        raise PaletteError(f"{name}: the palette file holds no colours")
    if len(rows) > MAX_COLOURS:
        raise PaletteError(f"{name}: {len(rows)} colours; palettes are limited to {MAX_COLOURS} "
                           f"(an indexed PNG cannot hold more)")
    return np.array(rows, dtype=np.uint8).reshape(-1, 3)


def _load_pal(path: Path) -> Palette:
    data = path.read_bytes()
    if data[:8] == b"JASC-PAL":
        return _load_jasc(path, data.decode("ascii", errors="replace"))
    if len(data) == 192:
        return Palette(str(path), np.frombuffer(data, np.uint8).reshape(64, 3).copy(), "nes",
                       source=str(path))
    if len(data) == 1536:
        allc = np.frombuffer(data, np.uint8).reshape(8, 64, 3).copy()
        return Palette(str(path), allc[0].copy(), "nes", source=str(path), emphasis=allc)
    raise PaletteError(f"{path}: an emulator .pal must be 192 bytes (64 colours) or 1536 bytes "
                       f"(64 colours x 8 emphasis variants); this one is {len(data)} bytes")


def _load_jasc(path: Path, text: str) -> Palette:
    lines = text.splitlines()
    if len(lines) < 3:
        raise PaletteError(f"{path}: a JASC-PAL file needs a header, a version and a count")
    try:
        count = int(lines[2].strip())
    except ValueError:
        raise PaletteError(f"{path}:3: expected the colour count, got {lines[2].strip()!r}") from None
    rows = []
    for ln, line in enumerate(lines[3:], start=4):
        if not line.strip():
            continue
        rows.append(_parse_rgb_triplet(path, ln, line.split()[:3], line))
    if len(rows) != count:
        raise PaletteError(f"{path}: header says {count} colours, found {len(rows)}")
    return Palette(str(path), _colours_array(str(path), rows), source=str(path))


def _parse_rgb_triplet(path: Path, ln: int, parts: list[str], line: str) -> tuple[int, int, int]:
    if len(parts) < 3:
        raise PaletteError(f"{path}:{ln}: expected 'R G B', got {line.strip()!r}")
    try:
        vals = tuple(int(p) for p in parts[:3])
    except ValueError:
        raise PaletteError(f"{path}:{ln}: expected three integers 0..255, got {line.strip()!r}") from None
    if any(v < 0 or v > 255 for v in vals):
        raise PaletteError(f"{path}:{ln}: colour values must be 0..255, got {line.strip()!r}")
    return vals  # type: ignore[return-value]


def _load_gpl(path: Path) -> Palette:
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.splitlines()
    if not lines or lines[0].strip() != "GIMP Palette":
        raise PaletteError(f"{path}:1: a GIMP palette must start with the line 'GIMP Palette'")
    rows = []
    name = ""
    for ln, line in enumerate(lines[1:], start=2):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if s.startswith("Name:"):
            name = s[5:].strip()
            continue
        if s.startswith("Columns:"):
            continue
        rows.append(_parse_rgb_triplet(path, ln, s.split(), line))
    return Palette(str(path), _colours_array(str(path), rows), description=name, source=str(path))


_HEX_RE = re.compile(r"^#?([0-9a-fA-F]{6})$")


def _load_hex(path: Path) -> Palette:
    rows = []
    for ln, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        s = line.strip()
        if not s or s.startswith(";"):
            continue
        m = _HEX_RE.match(s)
        if not m:
            raise PaletteError(f"{path}:{ln}: expected a colour as RRGGBB (6 hex digits), "
                               f"got {s!r}")
        v = int(m.group(1), 16)
        rows.append(((v >> 16) & 255, (v >> 8) & 255, v & 255))
    return Palette(str(path), _colours_array(str(path), rows), source=str(path))


def _load_image_strip(path: Path) -> Palette:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            rgb = np.asarray(im.convert("RGB"), np.uint8).reshape(-1, 3)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise PaletteError(f"{path}: not a readable palette image ({e})") from None
    if rgb.size == 0:
        raise PaletteError(f"{path}: the palette image has no pixels")
    _, first = np.unique(pack_rgb(rgb), return_index=True)
    if len(first) > MAX_COLOURS:
        raise PaletteError(f"{path}: {len(first)} distinct colours; a palette strip may hold at "
                           f"most {MAX_COLOURS}")
    cols = rgb[np.sort(first)]
    kind = "nes" if len(cols) == 64 else "generic"
    return Palette(str(path), cols.copy(), kind, source=str(path))


_LOADERS = {".pal": _load_pal, ".gpl": _load_gpl, ".hex": _load_hex, ".txt": _load_hex}


def load_palette_file(path: os.PathLike | str) -> Palette:
    """Load a palette file (``.pal``, ``.gpl``, ``.hex`` or an image strip).

    Raises
    ------
    PaletteError
        Naming the file (and line) when it is missing, malformed, or holds > 256 colours.
    """
    p = Path(path)
    if not p.is_file():
        raise PaletteError(f"{p}: no such palette file")
    loader = _LOADERS.get(p.suffix.lower(), _load_image_strip)
    return loader(p)


def get_palette(spec: "str | os.PathLike | Palette | None" = None) -> Palette:
    """Resolve a built-in palette name, a palette file path or a :class:`Palette`.

    ``None`` gives the documented default (``"nes"``).
    """
    if isinstance(spec, Palette):
        return spec
    if spec is None or spec == "":
        spec = DEFAULT_PALETTE
    s = str(spec)
    if s.lower() in BUILTIN:
        cols, kind, desc, src = BUILTIN[s.lower()]
        return Palette(s.lower(), cols, kind, desc, src)
    p = Path(s)
    if p.exists() or p.suffix.lower() in (".pal", ".gpl", ".hex", ".png", ".gif", ".bmp"):
        return load_palette_file(p)
    raise PaletteError(f"{s}: not a built-in palette ({', '.join(sorted(BUILTIN))}) "
                       f"and not a palette file")


def list_palettes() -> list[dict]:
    """Describe every built-in palette (for ``pipeline palettes``).

    Returns
    -------
    list of dict with keys ``name, colours, usable, kind, default, description, source``
    """
    out = []
    for name in BUILTIN:
        pal = get_palette(name)
        out.append({"name": name, "colours": len(pal), "usable": int(len(pal.usable())),
                    "kind": pal.kind, "default": name == DEFAULT_PALETTE,
                    "description": pal.description, "source": pal.source})
    return out


def write_swatch(name: "str | os.PathLike | Palette", path: os.PathLike | str, *, cell: int = 16,
                 columns: int = 16) -> Path:
    """Write a swatch PNG of a palette: one ``cell``×``cell`` square per entry in index order,
    ``columns`` per row; entries the quantiser never produces carry a diagonal cross.

    Returns
    -------
    Path of the written PNG.
    """
    from PIL import Image

    if cell < 3 or columns < 1:
        raise ValueError("cell must be >= 3 and columns >= 1")
    pal = get_palette(name)
    usable = set(pal.usable().tolist())
    n = len(pal)
    rows = (n + columns - 1) // columns
    img = np.zeros((rows * cell, columns * cell, 3), np.uint8)
    for i, c in enumerate(pal.colours):
        y, x = divmod(i, columns)
        tile = img[y * cell:(y + 1) * cell, x * cell:(x + 1) * cell]
        tile[:] = c
        if i not in usable:
            mark = (255, 255, 255) if int(c.astype(int).sum()) < 384 else (0, 0, 0)
            d = np.arange(cell)
            tile[d, d] = mark
            tile[d, cell - 1 - d] = mark
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(img).save(tmp, format="PNG", optimize=False, compress_level=6)
    os.replace(tmp, path)
    return path
