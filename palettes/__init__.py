"""The colour domain: palettes, palette files, exact nearest colour, dithering, clean-up,
NES palette recognition and NES background legality.  Numpy / PIL only (numba speeds up the
hot loops when present; scipy does the one-to-one colour assignment).

Main entry points::

    from palettes import get_palette, list_palettes, write_swatch, get_mapper, recognise
    pal = get_palette("nes")                     # or a .pal / .gpl / .hex / .png path
    idx = get_mapper(pal.colours, pal.usable()).map(rgb)   # exact CIELAB nearest colour
    match = recognise(colours)                   # which NES table, which colour is which number
"""
from .io import (MAX_COLOURS, Palette, PaletteError, get_palette, list_palettes,  # noqa: F401
                 load_palette_file, usable_indices, write_swatch)
from .nearest import NearestMapper, get_mapper, nearest_bruteforce  # noqa: F401
from .recognition import PaletteMatch, image_colours, recognise, recognise_image  # noqa: F401

__all__ = ["Palette", "PaletteError", "MAX_COLOURS", "get_palette", "list_palettes",
           "load_palette_file", "usable_indices", "write_swatch", "NearestMapper", "get_mapper",
           "nearest_bruteforce", "PaletteMatch", "recognise", "recognise_image", "image_colours"]
