"""Built-in palettes: NES palette tables (published emulator tables and our own NTSC-model
computations) and a few other retro palettes.

The NES tables are data files in ``palettes/data/*.hex`` (64 ``RRGGBB`` lines, NES colour
numbers $00-$3F in order, after ``; name:`` / ``; description:`` / ``; source:`` header
lines); ``palettes/data/README.md`` lists them with where each one is published.  ``nes``
(the default) is FCEUX's default 2C02 table.  ``nes-ntsc`` and ``nes-ntsc-vivid`` are
computed here from the 2C02 composite-signal model described on the NESdev wiki ("NTSC
video": four luma levels, twelve hue phases 30° apart, YIQ decoding).  Game Boy (DMG green),
PICO-8 and C64 (Pepto's measured VIC-II colours) are the commonly published values.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

#: folder of the NES palette tables (``*.hex``) and their README
DATA_DIR = Path(__file__).resolve().parent / "data"

#: published NES tables, in the order they are listed and tried by palette recognition
NES_TABLE_FILES = ("fceux", "mesen", "olcnes", "composite-direct-fbx", "nes-classic-fbx",
                   "original-hardware-fbx", "pvm-style-fbx", "unsaturated-v6-fbx", "yuv-v3-fbx",
                   "sony-cxa2025as", "wavebeam", "rp2c03")

_GAMEBOY_HEX = "0F380F 306230 8BAC0F 9BBC0F"

_PICO8_HEX = """000000 1D2B53 7E2553 008751 AB5236 5F574F C2C3C7 FFF1E8
FF004D FFA300 FFEC27 00E436 29ADFF 83769C FF77A8 FFCCAA"""

_C64_HEX = """000000 FFFFFF 68372B 70A4B2 6F3D86 588D43 352879 B8C76F
6F4F25 433900 9A6759 444444 6C6C6C 9AD284 6C5EB5 959595"""


def _hex_table(text: str) -> np.ndarray:
    vals = [int(h, 16) for h in text.split()]
    return np.array([[(v >> 16) & 255, (v >> 8) & 255, v & 255] for v in vals], dtype=np.uint8)


def read_table_file(path: Path) -> tuple[dict[str, str], np.ndarray]:
    """Read one ``palettes/data/*.hex`` table.

    Returns
    -------
    meta : dict with the header's ``name``, ``description`` and ``source``
    colours : ndarray, shape (64, 3), uint8 — entry ``n`` is NES colour number ``n``

    Raises
    ------
    ValueError naming the file when a line is not ``RRGGBB`` or there are not 64 colours.
    """
    meta: dict[str, str] = {}
    rows: list[str] = []
    for ln, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        s = line.strip()
        if s.startswith(";"):
            key, sep, value = s[1:].partition(":")
            if sep and key.strip() in ("name", "description", "source"):
                meta[key.strip()] = value.strip()
            continue
        if s:
            if len(s) != 6 or any(c not in "0123456789abcdefABCDEF" for c in s):
                raise ValueError(f"{path}:{ln}: expected RRGGBB, got {s!r}")
            rows.append(s)
    if len(rows) != 64:
        raise ValueError(f"{path}: an NES table needs 64 colours, found {len(rows)}")
    return meta, _hex_table(" ".join(rows))


def nes_ntsc_palette(*, saturation: float = 1.0, hue_deg: float = 0.0, brightness: float = 0.0,
                     contrast: float = 1.0) -> np.ndarray:
    """Compute a 64-colour 2C02 palette from the composite-signal model.

    Each colour ``$LH`` is a square wave between a low and a high voltage (per luma row L)
    that is "high" for 6 of the 12 colour-clock phases starting at hue H; hue 0 is a
    constant high level, hue 13 a constant low level, hues 14-15 black.  The wave is
    decoded to YIQ by averaging over one colour-clock cycle and then to sRGB with the
    FCC YIQ matrix.  Levels are the normalised voltages given on the NESdev wiki.

    Parameters
    ----------
    saturation, hue_deg, brightness, contrast : float
        Decoder knobs, as on a TV set.

    Returns
    -------
    ndarray, shape (64, 3), uint8
    """
    low = (0.228, 0.312, 0.552, 0.880)
    high = (0.616, 0.840, 1.100, 1.100)
    black, white = 0.312, 1.100
    out = np.zeros((64, 3), np.uint8)
    for lum in range(4):
        for hue in range(16):
            samples = []
            for p in range(12):
                if hue == 0:
                    v = high[lum]
                elif hue == 13:
                    v = low[lum]
                elif hue >= 14:
                    v = black
                else:
                    v = high[lum] if (hue + p) % 12 < 6 else low[lum]
                samples.append((v - black) / (white - black))
            y = i = q = 0.0
            for p, v in enumerate(samples):
                ang = math.pi * (p + 0.5) / 6.0 + math.radians(hue_deg + 105.0)
                y += v / 12.0
                i += v * math.cos(ang) / 12.0
                q += v * math.sin(ang) / 12.0
            y = (y + brightness) * contrast
            i *= 2.0 * saturation
            q *= 2.0 * saturation
            r = y + 0.946882 * i + 0.623557 * q
            g = y - 0.274788 * i - 0.635691 * q
            b = y - 1.108545 * i + 1.709007 * q
            out[lum * 16 + hue] = [min(255, max(0, round(255.0 * c))) for c in (r, g, b)]
    # hue 14/15 and $1D are the black level; $0D is "blacker than black" (clipped to 0).
    return out


#: name -> (colours uint8 (K, 3), kind, description, source)
BUILTIN: dict[str, tuple[np.ndarray, str, str, str]] = {}
#: names of the NES tables computed by :func:`nes_ntsc_palette` rather than published
GENERATED: set[str] = set()


def _register(name: str, colours: np.ndarray, kind: str, description: str, source: str) -> None:
    colours.setflags(write=False)
    BUILTIN[name] = (colours, kind, description, source)


def _register_table(stem: str) -> None:
    meta, colours = read_table_file(DATA_DIR / f"{stem}.hex")
    _register(meta["name"], colours, "nes", meta.get("description", ""),
              meta.get("source", "") + f" [palettes/data/{stem}.hex]")


_register_table(NES_TABLE_FILES[0])                                    # "nes", the default
_register("nes-ntsc", nes_ntsc_palette(), "nes",
          "NES 2C02 decoded from the NTSC composite-signal model",
          "computed from NESdev wiki 'NTSC video' signal levels")
_register("nes-ntsc-vivid", nes_ntsc_palette(saturation=1.35, contrast=1.05), "nes",
          "NES 2C02 composite model, saturation 1.35 / contrast 1.05 (a 'vivid' TV)",
          "computed from NESdev wiki 'NTSC video' signal levels")
GENERATED.update(("nes-ntsc", "nes-ntsc-vivid"))
_register("gameboy", _hex_table(_GAMEBOY_HEX), "generic",
          "Game Boy DMG 4-shade green", "commonly published DMG LCD shades")
_register("pico8", _hex_table(_PICO8_HEX), "generic",
          "PICO-8 16 colours", "PICO-8 manual palette")
_register("c64", _hex_table(_C64_HEX), "generic",
          "Commodore 64, 16 colours (Pepto's VIC-II measurement)", "Pepto's C64 palette")
for _stem in NES_TABLE_FILES[1:]:
    _register_table(_stem)
del _stem

DEFAULT_PALETTE = "nes"


def nes_table_names() -> list[str]:
    """Every built-in NES table: the published ones (in :data:`NES_TABLE_FILES` order), then
    the generated ones."""
    names = [n for n, v in BUILTIN.items() if v[1] == "nes"]
    return [n for n in names if n not in GENERATED] + [n for n in names if n in GENERATED]
