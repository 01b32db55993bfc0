"""Palette recognition: is an image already drawn in an NES palette, and which colour is which
NES colour number?

Emulators ship many NES palette tables (see ``palettes/data/README.md``), so a screenshot's
colours are NES colours, but not those of our default table: nearest-colour mapping onto one
table merges colours that another table keeps apart (sky and water, brick and shadow).  This
module finds the colour-for-colour correspondence instead, so a screen keeps its exact index
map:

1. **Known table.**  Every distinct image colour lies within :data:`KNOWN_TOLERANCE` ΔE76 of a
   *different* distinct entry of one shipped table (a one-to-one assignment that minimises the
   summed ΔE76, :func:`scipy.optimize.linear_sum_assignment`).  Table entries that share one
   colour (the blacks ``$0D $0E $0F $1D ...``, ``$20 = $30`` in many tables) are one entry; the
   colour gets the number the quantiser would produce (``$0F``, ``$30``, see
   :func:`palettes.io.usable_indices`).  The table with the least mean error wins; ties go to
   ``prefer`` and then to the table order of :func:`palettes.data.nes_table_names`.
2. **Fitted table.**  When no table matches, a consistent unknown palette (a capture card's
   colour shift, a TV's brightness, an emulator table we do not ship) is fitted: per table, a
   per-channel gain and offset in sRGB (``rgb' = gain * rgb + offset``, clipped) and a one-to-one
   assignment of image colours to the table's shifted entries are refined in turn (assignment on
   ΔE76, then least squares for the transform, until the assignment stops changing).  The fit is
   accepted when at least :data:`MIN_FIT_COLOURS` colours take part, the mean residual is at most
   :data:`FIT_MEAN_TOLERANCE` and the worst at most :data:`FIT_MAX_TOLERANCE` ΔE76, and the
   transform stays within :data:`GAIN_RANGE` / :data:`OFFSET_LIMIT`.
3. Otherwise (more than :data:`MAX_COLOURS` colours — GAN output, photos, JPEG — or no fit):
   ``None``, and callers keep nearest-colour mapping.

Entry points: :func:`recognise` (distinct colours in, :class:`PaletteMatch` or None out),
:func:`image_colours` and :func:`recognise_image` for pixel arrays.
"""
from __future__ import annotations

import dataclasses
import functools
from enum import Enum
from typing import Optional, Sequence

import numpy as np

from .colour import delta_e76_sq, pack_rgb, srgb_float_to_lab, srgb_to_lab, unpack_rgb

__all__ = ["PaletteMatch", "MatchKind", "ColourTransform", "ImageColours", "recognise",
           "recognise_image", "image_colours", "KNOWN_TOLERANCE", "FIT_MEAN_TOLERANCE",
           "FIT_MAX_TOLERANCE", "MIN_FIT_COLOURS", "MAX_COLOURS"]

#: ΔE76: an image colour this close to a table entry is that entry (tables saved losslessly
#: match exactly; this allows for 8-bit rounding in a tool that converted the screenshot)
KNOWN_TOLERANCE = 2.0
#: fitted palettes: the largest accepted mean residual ΔE76 after the colour transform
FIT_MEAN_TOLERANCE = 3.5
#: fitted palettes: the largest accepted residual ΔE76 of any one colour
FIT_MAX_TOLERANCE = 9.0
#: fitted palettes need at least this many distinct colours (fewer fit too easily)
MIN_FIT_COLOURS = 8
#: more distinct colours than this is not a palette image (an NES table has 52-56 distinct
#: colours; a real frame shows at most 25 at once)
MAX_COLOURS = 56
#: fitted transform: allowed gain per channel and offset (8-bit levels) per channel
GAIN_RANGE = (0.75, 1.33)
OFFSET_LIMIT = 48.0
_FIT_ROUNDS = 12


class MatchKind(str, Enum):
    """How the image's colours were matched to a table."""

    known = "known"      # entries of a shipped table, within KNOWN_TOLERANCE
    fitted = "fitted"    # a shipped table after a fitted per-channel gain and offset


@dataclasses.dataclass(frozen=True)
class ColourTransform:
    """``rgb' = clip(gain * rgb + offset, 0, 255)`` per sRGB channel (8-bit levels)."""

    gain: tuple[float, float, float] = (1.0, 1.0, 1.0)
    offset: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        """Transform colours (..., 3) -> float64 (..., 3) in [0, 255]."""
        x = np.asarray(rgb, np.float64) * np.asarray(self.gain) + np.asarray(self.offset)
        return np.clip(x, 0.0, 255.0)

    def as_json(self) -> dict:
        return {"gain": [round(g, 4) for g in self.gain],
                "offset": [round(o, 2) for o in self.offset]}


@dataclasses.dataclass(frozen=True)
class PaletteMatch:
    """The NES colour number of every distinct colour of an image.

    Attributes
    ----------
    table : str
        Name of the shipped table the colours are (or were fitted to), e.g. ``"nes-mesen"``.
    kind : MatchKind
    colours : ndarray, shape (K, 3), uint8 — the image's distinct colours
    numbers : ndarray, shape (K,), int64 — NES colour number of each colour
    errors : ndarray, shape (K,), float64 — ΔE76 from each colour to its table entry (after the
        transform when fitted)
    counts : ndarray, shape (K,), int64 — pixels of each colour (1 each when not given)
    alike : tuple of tuple of int
        Per colour, every number that has this colour in the table (one number unless the
        table repeats the colour, e.g. the blacks).
    transform : ColourTransform or None — the fitted transform (``kind == fitted``)
    ties : tuple of str — other tables that match as well (``kind == known``)
    """
    table: str
    kind: MatchKind
    colours: np.ndarray
    numbers: np.ndarray
    errors: np.ndarray
    counts: np.ndarray
    alike: tuple
    transform: Optional[ColourTransform] = None
    ties: tuple = ()

    @property
    def mean_error(self) -> float:
        """Mean ΔE76 over the distinct colours."""
        return float(self.errors.mean()) if len(self.errors) else 0.0

    @property
    def max_error(self) -> float:
        return float(self.errors.max()) if len(self.errors) else 0.0

    def as_json(self) -> dict:
        """A JSON-ready summary: table, kind, errors, transform, ties and the colour mapping."""
        mapping = []
        for c, n, e, k, same in zip(self.colours, self.numbers, self.errors, self.counts, self.alike):
            row = {"rgb": "#%02X%02X%02X" % tuple(int(v) for v in c), "number": int(n),
                   "nes": f"${int(n):02X}", "pixels": int(k), "error": round(float(e), 3)}
            if len(same) > 1:
                row["same_colour_in_table"] = [int(s) for s in same]
            mapping.append(row)
        return {"table": self.table, "kind": self.kind.value, "colours": int(len(self.numbers)),
                "mean_error": round(self.mean_error, 3), "max_error": round(self.max_error, 3),
                "transform": self.transform.as_json() if self.transform else None,
                "ties": list(self.ties), "mapping": mapping}


# --------------------------------------------------------------------------- tables
@dataclasses.dataclass(frozen=True)
class _Table:
    """A table's distinct colours, their Lab, and the number each stands for."""
    name: str
    rgb: np.ndarray          # (M, 3) uint8, distinct colours
    lab: np.ndarray          # (M, 3) float64
    number: np.ndarray       # (M,) int64: the number an image colour equal to this entry gets
    alike: tuple             # (M,) tuples of every number with this colour


@functools.lru_cache(maxsize=None)
def _table(name: str) -> _Table:
    from .io import get_palette

    pal = get_palette(name)
    usable = set(int(u) for u in pal.usable())
    groups: dict[bytes, list[int]] = {}
    for n, c in enumerate(pal.colours):
        groups.setdefault(c.tobytes(), []).append(n)
    rgb, number, alike = [], [], []
    for key, nums in groups.items():
        rgb.append(np.frombuffer(key, np.uint8))
        pick = [n for n in nums if n in usable]
        number.append(pick[0] if pick else min(nums))
        alike.append(tuple(nums))
    rgb_a = np.array(rgb, np.uint8)
    return _Table(name, rgb_a, srgb_to_lab(rgb_a), np.array(number, np.int64), tuple(alike))


def _table_order(tables: Optional[Sequence[str]], prefer: Optional[str]) -> list[str]:
    from .data import nes_table_names

    names = list(tables) if tables is not None else nes_table_names()
    if prefer in names:
        names.remove(prefer)
        names.insert(0, prefer)
    return names


def _assign(d: np.ndarray) -> np.ndarray:
    """One-to-one assignment of rows (image colours) to columns (entries): column per row."""
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(d)
    out = np.empty(d.shape[0], np.int64)
    out[rows] = cols
    return out


# --------------------------------------------------------------------------- matching
def _match_known(lab: np.ndarray, tab: _Table, tol: float) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """(entry per colour, ΔE76 per colour) when every colour is a distinct entry of ``tab``."""
    if len(lab) > len(tab.lab):
        return None
    d = np.sqrt(delta_e76_sq(lab[:, None, :], tab.lab[None]))
    if d.min(axis=1).max() > tol:
        return None
    col = _assign(d)
    err = d[np.arange(len(lab)), col]
    if err.max() > tol:
        return None
    return col, err


def _fit_channel(x: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """Least-squares gain and offset with ``x ≈ gain * ref + offset``; clipped levels (0, 255 in
    the image) are left out.  Degenerate data gives gain 1 and the mean difference."""
    keep = (x > 0) & (x < 255)
    if keep.sum() >= 3:
        x, ref = x[keep], ref[keep]
    if len(x) == 0:
        return 1.0, 0.0
    if len(x) < 3 or np.ptp(ref) < 16.0:
        return 1.0, float(np.clip((x - ref).mean(), -OFFSET_LIMIT, OFFSET_LIMIT))
    gain, offset = np.polyfit(ref, x, 1)
    gain = float(np.clip(gain, *GAIN_RANGE))
    offset = float(np.clip((x - gain * ref).mean(), -OFFSET_LIMIT, OFFSET_LIMIT))
    return gain, offset


def _fit_table(rgb: np.ndarray, lab: np.ndarray, tab: _Table
               ) -> Optional[tuple[np.ndarray, np.ndarray, ColourTransform]]:
    """Alternate assignment and per-channel transform; (entry per colour, residual, transform)."""
    if len(rgb) > len(tab.rgb):
        return None
    x = rgb.astype(np.float64)
    ref = tab.rgb.astype(np.float64)
    tf = ColourTransform()
    col: Optional[np.ndarray] = None
    for _ in range(_FIT_ROUNDS):
        d = np.sqrt(delta_e76_sq(lab[:, None, :], srgb_float_to_lab(tf.apply(ref))[None]))
        new = _assign(d)
        if col is not None and np.array_equal(new, col):
            break
        col = new
        fits = [_fit_channel(x[:, ch], ref[col, ch]) for ch in range(3)]
        tf = ColourTransform(tuple(g for g, _ in fits), tuple(o for _, o in fits))
    assert col is not None
    d = np.sqrt(delta_e76_sq(lab[:, None, :], srgb_float_to_lab(tf.apply(ref))[None]))
    col = _assign(d)
    return col, d[np.arange(len(lab)), col], tf


def _check_colours(colours: np.ndarray) -> np.ndarray:
    c = np.asarray(colours)
    if c.ndim != 2 or c.shape[1] != 3:
        raise ValueError(f"colours_rgb must have shape (K, 3), got {c.shape}")
    if c.dtype != np.uint8:
        raise TypeError(f"colours_rgb must be uint8, got {c.dtype}")
    if len(np.unique(pack_rgb(c))) != len(c):
        raise ValueError("colours_rgb must hold distinct colours")
    return c


def recognise(colours_rgb: np.ndarray, counts: Optional[np.ndarray] = None, *,
              tables: Optional[Sequence[str]] = None, prefer: Optional[str] = None,
              fit: bool = True) -> Optional[PaletteMatch]:
    """Recognise a set of distinct colours as an NES palette.

    Parameters
    ----------
    colours_rgb : ndarray, shape (K, 3), uint8
        Distinct colours (e.g. every colour of a screenshot).
    counts : ndarray, shape (K,), int, optional
        Pixels of each colour; only reported.
    tables : sequence of str, optional
        Built-in NES palette names to try (default: every shipped table,
        :func:`palettes.data.nes_table_names`).
    prefer : str, optional
        A table tried first, so that it wins ties (e.g. the palette being quantised to).
    fit : bool
        Also try a fitted unknown palette when no table matches.

    Returns
    -------
    PaletteMatch, or None when the colours are not (recognisably) an NES palette.

    Examples
    --------
    >>> from palettes.io import get_palette
    >>> m = recognise(get_palette("nes-mesen").colours[[0x0F, 0x16, 0x21, 0x30]])
    >>> m.table, m.numbers.tolist()
    ('nes-mesen', [15, 22, 33, 48])
    """
    cols = _check_colours(colours_rgb)
    k = len(cols)
    if k == 0 or k > MAX_COLOURS:
        return None
    cnt = np.ones(k, np.int64) if counts is None else np.asarray(counts, np.int64).reshape(k)
    lab = srgb_to_lab(cols)
    names = _table_order(tables, prefer)
    found = []
    for order, name in enumerate(names):
        tab = _table(name)
        m = _match_known(lab, tab, KNOWN_TOLERANCE)
        if m is not None:
            found.append((round(float(m[1].mean()), 6), order, name, m))
    if found:
        found.sort(key=lambda f: (f[0], f[1]))
        best = found[0]
        tab, (col, err) = _table(best[2]), best[3]
        ties = tuple(f[2] for f in found[1:] if f[0] <= best[0])
        return PaletteMatch(best[2], MatchKind.known, cols, tab.number[col], err, cnt,
                            tuple(tab.alike[c] for c in col), None, ties)
    if not fit or k < MIN_FIT_COLOURS:
        return None
    fits = []
    for order, name in enumerate(names):
        tab = _table(name)
        r = _fit_table(cols, lab, tab)
        if r is not None:
            fits.append((float(r[1].mean()), order, name, r))
    if not fits:
        return None
    fits.sort(key=lambda f: (f[0], f[1]))
    mean, _, name, (col, err, tf) = fits[0]
    if mean > FIT_MEAN_TOLERANCE or err.max() > FIT_MAX_TOLERANCE:
        return None
    tab = _table(name)
    return PaletteMatch(name, MatchKind.fitted, cols, tab.number[col], err, cnt,
                        tuple(tab.alike[c] for c in col), tf, ())


# --------------------------------------------------------------------------- images
@dataclasses.dataclass(frozen=True)
class ImageColours:
    """The distinct colours of an image's counted pixels.

    Attributes
    ----------
    colours : ndarray, shape (K, 3), uint8 — sorted by ``R << 16 | G << 8 | B``
    counts : ndarray, shape (K,), int64
    inverse : ndarray, shape (N,), int64 — colour of each counted pixel, in row-major order
    """
    colours: np.ndarray
    counts: np.ndarray
    inverse: np.ndarray


#: pixels looked at first: an image with more distinct colours among them is refused at once
_SAMPLE = 1 << 15


def image_colours(rgb: np.ndarray, mask: Optional[np.ndarray] = None, *,
                  limit: int = MAX_COLOURS) -> Optional[ImageColours]:
    """Distinct colours of an image, or None when it has more than ``limit``.

    Parameters
    ----------
    rgb : ndarray, shape (H, W, 3), uint8
    mask : ndarray, shape (H, W), bool, optional — pixels to count (e.g. opaque ones)
    limit : int

    Notes
    -----
    1 K, then ~32 K evenly spaced pixels are looked at first: a noisy image (GAN output, a
    photo) is refused there, so the check costs well under a millisecond where it fails; otherwise the
    sample's colours usually are all the colours, and every pixel is looked up among them
    through a 16 MB colour table (only the rows of those colours are touched).
    """
    a = np.asarray(rgb)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise ValueError(f"rgb must be an (H, W, 3) uint8 array, got {a.shape} {a.dtype}")
    flat = a.reshape(-1, 3)
    keep = None if mask is None else np.asarray(mask, bool).reshape(-1)
    for size in (1024, _SAMPLE):
        step = max(1, len(flat) // size)
        sample = flat[::step] if keep is None else flat[::step][keep[::step]]
        known = np.unique(pack_rgb(sample))
        if len(known) > limit:
            return None
    packed = pack_rgb(flat if keep is None else flat[keep])
    lut = np.zeros(1 << 24, np.uint8)       # colour -> 1 + its rank among the sample's colours
    lut[known] = np.arange(1, len(known) + 1)
    rank = lut[packed]
    if rank.all():
        uniq, inverse = known, rank.astype(np.int64) - 1
        counts = np.bincount(inverse, minlength=len(uniq))
    else:                                   # colours the sample missed
        uniq, inverse, counts = np.unique(packed, return_inverse=True, return_counts=True)
        if len(uniq) > limit:
            return None
    return ImageColours(unpack_rgb(uniq), counts.astype(np.int64), inverse.reshape(-1).astype(np.int64))


def recognise_image(rgb: np.ndarray, mask: Optional[np.ndarray] = None,
                    **kw) -> Optional[PaletteMatch]:
    """:func:`recognise` on the distinct colours of an image (see :func:`image_colours`);
    keyword arguments go to :func:`recognise`."""
    ic = image_colours(rgb, mask)
    if ic is None or len(ic.colours) == 0:
        return None
    return recognise(ic.colours, ic.counts, **kw)
