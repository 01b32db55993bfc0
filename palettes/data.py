"""Built-in palettes: three NES 2C02 palettes and a few other retro palettes.

Sources (see docs/colour.md): the ``nes`` table is the widely used FCEUX-style
2C02 table; ``nes-ntsc`` and ``nes-ntsc-vivid`` are computed here from the 2C02
composite-signal model described on the NESdev wiki ("NTSC video": four luma
levels, twelve hue phases 30° apart, YIQ decoding).  Game Boy (DMG green),
PICO-8 and C64 (Pepto's measured VIC-II colours) are the commonly published values.
"""
from __future__ import annotations

import math

import numpy as np

_NES_FCEUX_HEX = """
747474 24188C 0000A8 44009C 8C0074 A80010 A40000 7C0800 402C00 004400 005000 003C14 183C5C 000000 000000 000000
BCBCBC 0070EC 2038EC 8000F0 BC00BC E40058 D82800 C84C0C 887000 009400 00A800 009038 008088 000000 000000 000000
FCFCFC 3CBCFC 5C94FC CC88FC F478FC FC74B4 FC7460 FC9838 F0BC3C 80D010 4CDC48 58F898 00E8D8 787878 000000 000000
FCFCFC A8E4FC C4D4FC D4C8FC FCC4FC FCC4D8 FCBCB0 FCD8A8 FCE4A0 E0FCA0 A8F0BC B0FCCC 9CFCF0 C4C4C4 000000 000000
"""

_GAMEBOY_HEX = "0F380F 306230 8BAC0F 9BBC0F"

_PICO8_HEX = """000000 1D2B53 7E2553 008751 AB5236 5F574F C2C3C7 FFF1E8
FF004D FFA300 FFEC27 00E436 29ADFF 83769C FF77A8 FFCCAA"""

_C64_HEX = """000000 FFFFFF 68372B 70A4B2 6F3D86 588D43 352879 B8C76F
6F4F25 433900 9A6759 444444 6C6C6C 9AD284 6C5EB5 959595"""


def _hex_table(text: str) -> np.ndarray:
    vals = [int(h, 16) for h in text.split()]
    return np.array([[(v >> 16) & 255, (v >> 8) & 255, v & 255] for v in vals], dtype=np.uint8)


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


def _register(name: str, colours: np.ndarray, kind: str, description: str, source: str) -> None:
    colours.setflags(write=False)
    BUILTIN[name] = (colours, kind, description, source)


_register("nes", _hex_table(_NES_FCEUX_HEX), "nes",
          "NES 2C02, the classic FCEUX-style table",
          "FCEUX default 2C02 table, as published in many NES tools")
_register("nes-ntsc", nes_ntsc_palette(), "nes",
          "NES 2C02 decoded from the NTSC composite-signal model",
          "computed from NESdev wiki 'NTSC video' signal levels")
_register("nes-ntsc-vivid", nes_ntsc_palette(saturation=1.35, contrast=1.05), "nes",
          "NES 2C02 composite model, saturation 1.35 / contrast 1.05 (a 'vivid' TV)",
          "computed from NESdev wiki 'NTSC video' signal levels")
_register("gameboy", _hex_table(_GAMEBOY_HEX), "generic",
          "Game Boy DMG 4-shade green", "commonly published DMG LCD shades")
_register("pico8", _hex_table(_PICO8_HEX), "generic",
          "PICO-8 16 colours", "PICO-8 manual palette")
_register("c64", _hex_table(_C64_HEX), "generic",
          "Commodore 64, 16 colours (Pepto's VIC-II measurement)", "Pepto's C64 palette")

DEFAULT_PALETTE = "nes"
