"""The colour domain: palettes, palette files, exact nearest colour, dithering, clean-up and
NES background legality.  Numpy / PIL only (numba speeds up the hot loops when present).

Main entry points::

    from palettes import get_palette, list_palettes, write_swatch, get_mapper
    pal = get_palette("nes")                     # or a .pal / .gpl / .hex / .png path
    idx = get_mapper(pal.colours, pal.usable()).map(rgb)   # exact CIELAB nearest colour
"""
from .io import (MAX_COLOURS, Palette, PaletteError, get_palette, list_palettes,  # noqa: F401
                 load_palette_file, usable_indices, write_swatch)
from .nearest import NearestMapper, get_mapper, nearest_bruteforce  # noqa: F401

__all__ = ["Palette", "PaletteError", "MAX_COLOURS", "get_palette", "list_palettes",
           "load_palette_file", "usable_indices", "write_swatch", "NearestMapper", "get_mapper",
           "nearest_bruteforce"]
