"""crop: bring screenshots to native pixels; cut 16-px-aligned training patches and tiles.

One screen (:func:`prepare_screen`; the detectors are in ``stages/_grid.py``): (1) undo an
upscale: integer nearest-neighbour blocks (exact, or averaged for JPEG) or a smoothed
(bilinear-like) one estimated by least squares, then a non-integer nearest stretch per axis
(8:7, 4:3), each only with evidence that native art cannot give; (2) remove a letterbox;
(3) find the 16-px tile grid.  The set (:class:`ScreenSelector`): unusable, too small,
single-colour, duplicate and near-duplicate screens are left out, HUD strips a game repeats
are cut, an optional per-game cap applies.  Then (4) every 16x16 tile and a seeded subset of
the patch_size patches on each screen's grid are cut (:func:`plan_patches`,
:func:`cut_patches`, :func:`cut_tiles`).  :func:`crop_stream` is the core; :func:`run` feeds it
files and streams its output to disk, so memory stays bounded for big corpora.

Writes screens/<id>.png, screens.json, patches.npy (N,S,S,C) uint8, tiles.npy (M,16,16,3)
uint8 and tiles_origin.npy (M,3) int32 = (screen index, x, y) through
:class:`tilesets.artifacts.Patches` and :class:`tilesets.artifacts.TrainingTiles`, plus
contact.png (kept and left-out screens with reasons) and crop.json.  See docs/data.md.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import time
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Union

import numpy as np

from stages._common import (InputError, ProgressFn, Skipped, StageParams, expand_inputs,
                            load_image, map_ordered, name_prefix, no_progress, param,
                            pool_workers, save_npy,
                            save_png, write_json)
from stages._grid import (SMOOTH_MAX_SCALE, TILE, block_confidence, change_positions,
                          changed_share, detect_grid, detect_scale, detect_smooth_scale,
                          downscale, find_hud, find_letterbox, fit_stretch, row_segments,
                          unsmooth, unstretch)
from tilesets.artifacts import Patches, TrainingTiles, grid_cut
from tilesets.pixels import pack_colours

NAME = "crop"
INPUTS = {"images": "scrape"}
OPTIONAL_INPUTS = ()
LIBS = ("numpy", "pillow")

log = logging.getLogger("tilegan.crop")

#: more distinct colours than this in a native screen suggests resampling or lossy compression
MANY_COLOURS = 256
#: tolerance used for JPEG files when --tolerance is 0
JPEG_TOLERANCE = 8
#: screens per game (and size) whose rows are compared to find HUD strips
HUD_SAMPLE = 64
#: fewer sampled screens than this: no HUD is looked for
HUD_MIN_SCREENS = 8
#: images with more colours than this (native pixel art has far fewer) are tested for a
#: smoothed (bilinear-like) upscale when no block upscale is found
SMOOTH_MIN_COLOURS = 32


@dataclass(frozen=True)
class Params(StageParams):
    STAGE = "crop"

    patch_size: int = param(64, help="side of the square training patches in native pixels "
                                     "(a multiple of 16: 32, 64, 128)", min=TILE, multiple_of=TILE)
    stride: int = param(16, help="step between patches in pixels (a multiple of 16)",
                        min=TILE, multiple_of=TILE)
    flip: bool = param(False, help="also add the mirror image (left-right) of every patch")
    rgba: bool = param(False, help="keep the alpha channel: patches (N,S,S,4) and RGBA screens")
    scale: int = param(0, help="upscale factor of the screenshots; 0 detects it per image", min=0)
    max_scale: int = param(8, help="largest upscale factor to look for", min=1)
    tolerance: int = param(0, help="for lossy sources: colour steps up to this (0-255) are noise "
                                   "when detecting upscaling, and blocks are averaged; 0 = exact "
                                   "(JPEG files then use 8)", min=0, max=255)
    trim: bool = param(True, help="remove uniform letterbox borders (on two opposite sides)")
    stretch: bool = param(True, help="also undo non-integer nearest-neighbour stretching per axis "
                                     "(e.g. 8:7 aspect-corrected NES captures, 256 -> 292 px)")
    align: bool = param(True, help="find the 16-px tile grid of each screen (where whole tiles "
                                   "repeat) and cut tiles and patches on it; off: grid at the "
                                   "top-left corner")
    max_patches: int = param(20000, help="keep at most this many patches (seeded random subset)",
                             min=1)
    seed: int = param(0, help="seed of the patch subset")
    workers: int = param(0, help="processes decoding images; 0 = all cores when there are many",
                         min=0)
    hud: bool = param(True, help="cut the status bars (HUD strips) that most screens of one game "
                                 "repeat at the top or bottom")
    near_duplicates: float = param(0.01, help="leave out a screen when at most this share of its "
                                              "pixels differs from the previous kept screen of "
                                              "the same game (consecutive frames); 0 = off",
                                   min=0.0, max=1.0)
    max_per_game: int = param(0, help="keep at most this many screens of one game (evenly "
                                      "spread over its screens); 0 = no cap", min=0)


# --------------------------------------------------------------------------- one screen
@dataclass
class NativeScreen:
    """One screenshot brought to native pixels by :func:`prepare_screen`.

    pixels : ndarray, shape (H, W, C), uint8 — C = 4 with ``rgba``, else 3
    scale : int — the integer upscale undone
    scale_xy : (float, float) — the whole factor undone per axis (differs from ``scale`` when a
        non-integer stretch was undone too)
    offset : (int, int) — position of the native top-left pixel in the original image
    trim : (top, left, bottom, right) — letterbox lines removed, in native pixels
    original_size : (int, int) — (width, height) of the original image
    grid : (int, int) — tile-grid phase (gx, gy) in [0, 16)
    confidence : float — share of the original that the native screen, enlarged the detected
        way, reproduces (1.0 when exact; less where the grid was estimated: JPEG, smoothing)
    steps : list of str — what was undone, in order ("2x upscale", "8:7 stretch", ...)
    warnings : list of str — estimated grids, a letterbox left in place, ...
    """

    pixels: np.ndarray
    scale: int
    scale_xy: tuple[float, float]
    offset: tuple[int, int]
    trim: tuple[int, int, int, int]
    original_size: tuple[int, int]
    grid: tuple[int, int]
    confidence: float = 1.0
    steps: list = field(default_factory=list)
    warnings: list = field(default_factory=list)


@dataclass
class Unusable:
    """A screenshot that could not be used: ``reason`` names the file and the problem."""

    reason: str


@dataclass
class Upscale:
    """What step 1 found: factors and grid offset, how (exact blocks, lossy blocks, smoothed)."""

    kx: int
    ky: int
    ox: int = 0
    oy: int = 0
    method: str = "exact"
    confidence: float = 1.0


def undo_upscale(a: np.ndarray, *, scale: int, max_scale: int,
                 tolerance: int) -> tuple[np.ndarray, Upscale]:
    """Step 1: the image at one pixel per upscaled block.

    ``scale`` > 0 is taken as given (grid at the corner); 0 detects it: k×k blocks, exact
    (:func:`detect_scale`) or, with a ``tolerance``, lossy (blocks averaged); failing that, in
    an image with more than ``SMOOTH_MIN_COLOURS`` colours, a smoothed (bilinear-like) upscale
    (:func:`detect_smooth_scale`), estimated by least squares and kept only when the estimate
    looks like pixel art (at most ``MANY_COLOURS`` colours, each used ten times on average: a
    smooth gradient is also a linear upscale, of a smaller gradient).  Raises ValueError when
    the image is smaller than ``scale``.
    """
    if scale:
        if a.shape[0] < scale or a.shape[1] < scale:
            raise ValueError(f"smaller than the given scale {scale}")
        return downscale(a, scale, mean=tolerance > 0), Upscale(scale, scale)
    k, ox, oy = detect_scale(a, max_scale=max_scale, tolerance=tolerance)
    if k > 1:
        native = downscale(a, k, ox, oy, mean=tolerance > 0)
        if not tolerance:
            return native, Upscale(k, k, ox, oy)
        conf = block_confidence(a, native, k, ox, oy, tolerance=2 * tolerance)
        return native, Upscale(k, k, ox, oy, "lossy", conf)
    if count_colours(a) > SMOOTH_MIN_COLOURS:
        with _one_blas_thread():
            fit = detect_smooth_scale(a, max_scale=min(max_scale, SMOOTH_MAX_SCALE))
            native, conf = unsmooth(a, fit) if fit is not None else (a, 0.0)
        if fit is not None:
            n = count_colours(native)
            if n <= MANY_COLOURS and n * 10 <= native.shape[0] * native.shape[1]:
                return native, Upscale(fit.kx, fit.ky, fit.ox, fit.oy, "smoothed", conf)
    return a, Upscale(1, 1)


def undo_stretch(a: np.ndarray, *, max_scale: int) -> tuple[np.ndarray, tuple[float, float]]:
    """Step 2: undo a non-integer nearest stretch on each axis (:func:`fit_stretch`).

    Returns the image and the factor undone per axis (x, y), 1.0 where none was.
    """
    factor = [1.0, 1.0]
    for axis in (1, 0):
        m = a.shape[axis]
        fit = fit_stretch(change_positions(a, axis), m, max_scale=max_scale)
        if fit is not None:
            a = unstretch(a, axis, fit.n, fit.phase)
            factor[1 - axis] = m / a.shape[axis]
    return a, (factor[0], factor[1])


def trim_letterbox(a: np.ndarray, *, min_side: int) -> tuple[np.ndarray, tuple[int, int, int, int],
                                                             Optional[str]]:
    """Step 3: remove a letterbox (:func:`find_letterbox`) unless that leaves a side shorter
    than ``min_side``; returns the image, the lines removed and a warning when it was not."""
    t, left, b, r = find_letterbox(a)
    if not (t or left or b or r):
        return a, (0, 0, 0, 0), None
    h, w = a.shape[:2]
    if h - t - b < min_side or w - left - r < min_side:
        return a, (0, 0, 0, 0), (f"letterbox (top {t}, left {left}, bottom {b}, right {r}) left "
                                 f"in place: trimming it would leave {w - left - r}x{h - t - b}, "
                                 f"less than the {min_side}x{min_side} patch")
    return a[t:h - b, left:w - r], (t, left, b, r), None


def _factor_text(fx: float, fy: float) -> str:
    return f"{fx:g}x" if fx == fy else f"{fx:g}x{fy:g}"


def prepare_screen(image: np.ndarray, params: Params, *, lossy: bool = False) -> NativeScreen:
    """Bring one screenshot to native pixels: undo upscale and stretch, trim, find the grid.

    Parameters
    ----------
    image : ndarray, shape (H, W, 4), uint8
        The decoded screenshot (RGBA: alpha takes part in the detection).
    params : Params
    lossy : bool
        The file is lossy (JPEG): detect with ``JPEG_TOLERANCE`` unless ``params.tolerance``.

    Raises
    ------
    ValueError
        The image is smaller than the given ``params.scale``.
    """
    tol = params.tolerance or (JPEG_TOLERANCE if lossy else 0)
    native, up = undo_upscale(image, scale=params.scale, max_scale=params.max_scale, tolerance=tol)
    steps, warnings = [], []
    if up.kx > 1 or up.ky > 1:
        steps.append(f"{_factor_text(up.kx, up.ky)} upscale")
    if up.method != "exact":
        what = "JPEG blocks averaged" if up.method == "lossy" else "smoothed pixels estimated"
        warnings.append(f"{_factor_text(up.kx, up.ky)} upscale grid estimated, {what} "
                        f"(confidence {up.confidence:.3f})")
    sx, sy = float(up.kx), float(up.ky)
    if params.stretch and not tol and not params.scale and up.method == "exact":
        native, (fx, fy) = undo_stretch(native, max_scale=params.max_scale)
        if (fx, fy) != (1.0, 1.0):
            steps.append(f"{_factor_text(round(fx, 4), round(fy, 4))} stretch")
        sx, sy = up.kx * fx, up.ky * fy
    trim = (0, 0, 0, 0)
    if params.trim:
        native, trim, why = trim_letterbox(native, min_side=params.patch_size)
        if why:
            warnings.append(why)
        elif any(trim):
            steps.append("letterbox (top {}, left {}, bottom {}, right {})".format(*trim))
    if not params.rgba:
        native = np.ascontiguousarray(native[..., :3])
    grid = detect_grid(native[..., :3]) if params.align else (0, 0)
    return NativeScreen(pixels=native, scale=up.kx if up.kx == up.ky else 1,
                        scale_xy=(round(sx, 4), round(sy, 4)),
                        offset=(up.ox + int(round(trim[1] * sx)), up.oy + int(round(trim[0] * sy))),
                        trim=trim, original_size=(int(image.shape[1]), int(image.shape[0])),
                        grid=grid, confidence=round(up.confidence, 4), steps=steps,
                        warnings=warnings)


def _is_jpeg(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(3) == b"\xff\xd8\xff"
    except OSError:
        return False


def prepare_file(path: str, params: Params) -> Union[NativeScreen, Unusable]:
    """Decode one screenshot file and :func:`prepare_screen` it (runs in a worker process)."""
    try:
        image = load_image(path, mode="RGBA")
    except InputError as e:
        return Unusable(str(e))
    try:
        return prepare_screen(image, params, lossy=_is_jpeg(path))
    except ValueError as e:
        return Unusable(f"{path}: {e}")


# --------------------------------------------------------------------------- which screens
@dataclass
class ScreenRecord:
    """One kept screen: a row of ``screens.json`` (see docs/data.md)."""

    index: int
    id: str
    source: str
    scale: int
    width: int
    height: int
    offset: list
    trim: list
    grid: list
    colours: int
    scale_xy: list
    original_size: list
    confidence: float = 1.0
    warnings: list = field(default_factory=list)
    game: str = ""
    hud: list = field(default_factory=lambda: [0, 0])
    #: the NES palette table the screen's colours are drawn in (``palettes.recognise``):
    #: ``{table, kind: known|fitted, mean_error, max_error}`` (ΔE76), or None (not palette art)
    palette: Optional[dict] = None

    def to_json(self) -> dict:
        return asdict(self)


class Drop(str, Enum):
    """Why a screen was left out (crop.json, the contact sheet)."""

    UNREADABLE = "unreadable"
    TOO_SMALL = "too small"
    SINGLE_COLOUR = "single colour"
    DUPLICATE = "duplicate"
    NEAR_DUPLICATE = "near-duplicate"
    CAPPED = "per-game cap"


@dataclass
class Dropped:
    """One screen left out: its source, id, game, why (:class:`Drop`) and the details."""

    source: str
    id: str
    game: str
    why: Drop
    reason: str

    def to_json(self) -> dict:
        return {"source": self.source, "id": self.id, "game": self.game,
                "why": self.why.value, "reason": self.reason}


def count_colours(a: np.ndarray) -> int:
    """Distinct RGB colours of ``a`` (H, W, C) uint8."""
    return int(np.unique(pack_colours(a[..., :3])).size)


def _screen_digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes() + str(a.shape).encode()).hexdigest()


class ScreenStore:
    """Where kept screens wait between the passes: in memory (``folder`` None) or as
    ``<folder>/<id>.png`` (the artifact's screens, so a big corpus never sits in memory)."""

    def __init__(self, folder: Optional[Path] = None, *, rgba: bool = False):
        self.folder, self.mode = folder, "RGBA" if rgba else "RGB"
        self.screens: dict[str, np.ndarray] = {}
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)

    def put(self, sid: str, a: np.ndarray) -> None:
        if self.folder is None:
            self.screens[sid] = a
        else:
            save_png(self.folder / f"{sid}.png", a)

    def get(self, sid: str) -> np.ndarray:
        if self.folder is None:
            return self.screens[sid]
        return load_image(self.folder / f"{sid}.png", mode=self.mode)

    def drop(self, sid: str) -> None:
        if self.folder is None:
            self.screens.pop(sid, None)
        else:
            (self.folder / f"{sid}.png").unlink(missing_ok=True)


class ScreenSelector:
    """Decides which prepared screens are kept, screen by screen in input order, then as a set.

    :meth:`add` (one pass, one screen in memory): unusable files and single-colour screens
    are skipped (``skipped``), screens smaller than one patch too (``too_small``), and so are
    screens whose native pixels equal an earlier one's (``duplicates``) or differ from the
    previous kept screen of the same game in at most ``near_duplicates`` of their pixels
    (``near``); one with more than ``MANY_COLOURS`` colours is kept but flagged.
    :meth:`finish` (the set): cuts the HUD strips each game repeats (:func:`find_hud`, from
    up to ``HUD_SAMPLE`` screens per game and size), applies ``max_per_game`` and numbers the
    kept screens.  Every screen left out is in ``dropped`` with the reason.

    Parameters
    ----------
    params : Params
    games : list of str
        The game of every input, in input order (for HUD sampling).
    """

    def __init__(self, params: Params, games: Sequence[str] = ()):
        self.params = params
        self.records: list[ScreenRecord] = []
        self.dropped: list[Dropped] = []
        self.skipped = Skipped(key="source", logger=log)
        self.too_small = Skipped(key="source", logger=log)
        self.duplicates: list[dict[str, str]] = []
        self.many_colours: list[str] = []
        self.huds: list[dict[str, Any]] = []
        self._seen: dict[str, str] = {}
        self._last: Optional[tuple[str, np.ndarray, str]] = None     # game, pixels, source
        self._removed: set[int] = set()        # id() of records left out by finish()
        self._position = 0
        self._sampled = _hud_sample_positions(games)
        self._signatures: dict[tuple[str, int, int], list] = {}

    # ---- one screen at a time
    def add(self, source: str, sid: str, prepared: Union[NativeScreen, Unusable],
            game: str = "") -> Optional[ScreenRecord]:
        """The record of the kept screen, or None when it is left out."""
        position, self._position = self._position, self._position + 1
        if isinstance(prepared, Unusable):
            self._drop(source, sid, game, Drop.UNREADABLE, prepared.reason, self.skipped)
            return None
        scr, S = prepared.pixels, self.params.patch_size
        h, w = scr.shape[:2]
        for why in prepared.warnings:
            log.warning("%s: %s", source, why)
        if h < S or w < S:
            after = f" after undoing {' and '.join(prepared.steps)}" if prepared.steps else ""
            self._drop(source, sid, game, Drop.TOO_SMALL, f"{source}: {w}x{h} native pixels"
                       f"{after} is smaller than the {S}x{S} patch", self.too_small,
                       width=w, height=h)
            return None
        if (scr == scr[:1, :1]).all():
            self._drop(source, sid, game, Drop.SINGLE_COLOUR,
                       f"{source}: the screen is a single colour", self.skipped)
            return None
        digest = _screen_digest(scr)
        if digest in self._seen:
            self._duplicate(source, sid, game, self._seen[digest])
            return None
        if self._near_duplicate(source, sid, game, scr):
            return None
        self._seen[digest] = source
        self._last = (game, scr, source)
        n_colours = count_colours(scr)
        if n_colours > MANY_COLOURS:
            log.warning("%s has %d colours after undoing scale %d: resampled, lossy or not "
                        "pixel art? (try --tolerance for JPEG sources)", source, n_colours,
                        prepared.scale)
            self.many_colours.append(source)
        if self.params.hud and position in self._sampled:
            self._signatures.setdefault((game, h, w), []).append(row_segments(scr))
        rec = ScreenRecord(index=len(self.records), id=sid, source=source, scale=prepared.scale,
                           width=w, height=h, offset=list(prepared.offset),
                           trim=list(prepared.trim), grid=_usable_grid(prepared.grid, h, w, S),
                           colours=n_colours, scale_xy=list(prepared.scale_xy),
                           original_size=list(prepared.original_size),
                           confidence=prepared.confidence, warnings=list(prepared.warnings),
                           game=game, palette=screen_palette(scr))
        self.records.append(rec)
        return rec

    def _drop(self, source: str, sid: str, game: str, why: Drop, reason: str,
              into: Optional[Skipped] = None, **extra: Any) -> None:
        if into is not None:
            into.add(source, reason, **extra)
        else:
            log.info("left out %s", reason)
        self.dropped.append(Dropped(source, sid, game, why, reason))

    def _duplicate(self, source: str, sid: str, game: str, first: str) -> None:
        self.duplicates.append({"source": source, "reason": f"same pixels as {first}"})
        self._drop(source, sid, game, Drop.DUPLICATE, f"{source}: same pixels as {first}")

    def _near_duplicate(self, source: str, sid: str, game: str, scr: np.ndarray) -> bool:
        limit = self.params.near_duplicates
        if not limit or self._last is None or self._last[0] != game:
            return False
        share = changed_share(scr, self._last[1])
        if share > limit:
            return False
        self._drop(source, sid, game, Drop.NEAR_DUPLICATE,
                   f"{source}: {share:.2%} of the pixels differ from the previous screen "
                   f"{self._last[2]}")
        return True

    # ---- the set
    def finish(self, store: ScreenStore, progress: ProgressFn = no_progress) -> None:
        """Cut HUD strips, cap each game, drop what is left out from ``store``, number the rest."""
        self._cut_huds(store, progress)
        self._cap_games()
        for r in self.records:
            if id(r) in self._removed:
                store.drop(r.id)
        self.records = [r for r in self.records if id(r) not in self._removed]
        for i, r in enumerate(self.records):
            r.index = i

    def _cut_huds(self, store: ScreenStore, progress: ProgressFn) -> None:
        S = self.params.patch_size
        for (game, h, w), sigs in sorted(self._signatures.items()):
            top, bottom = find_hud(np.stack([s[0] for s in sigs]), np.stack([s[1] for s in sigs]),
                                   min_screens=HUD_MIN_SCREENS)
            if not (top or bottom):
                continue
            group = [r for r in self.records if (r.game, r.height, r.width) == (game, h, w)]
            hud = {"game": game, "width": w, "height": h, "top": top, "bottom": bottom,
                   "screens": len(group), "sampled": len(sigs)}
            if h - top - bottom < S:
                hud["left"] = (f"HUD strips of {top} + {bottom} rows left in place: cutting them "
                               f"would leave {h - top - bottom} rows, less than the {S}x{S} patch")
                log.warning("%s: %s", game, hud["left"])
                self.huds.append(hud)
                continue
            log.info("%s: HUD strips cut from %d screens of %dx%d: top %d, bottom %d rows",
                     game, len(group), w, h, top, bottom)
            self.huds.append(hud)
            seen: dict[str, str] = {}
            for n, rec in enumerate(group):
                a = store.get(rec.id)[top:h - bottom]
                digest = _screen_digest(a)
                if digest in seen:          # the same screen once its counters are gone
                    self._duplicate(rec.source, rec.id, game, seen[digest])
                    self._removed.add(id(rec))
                    continue
                seen[digest] = rec.source
                store.put(rec.id, a)
                grid = detect_grid(a[..., :3]) if self.params.align else (0, 0)
                rec.height, rec.hud = h - top - bottom, [top, bottom]
                rec.offset = [rec.offset[0], rec.offset[1] + int(round(top * rec.scale_xy[1]))]
                rec.grid, rec.colours = _usable_grid(grid, rec.height, w, S), count_colours(a)
                progress("crop: HUD", n + 1, len(group))

    def _cap_games(self) -> None:
        cap = self.params.max_per_game
        if not cap:
            return
        by_game: dict[str, list[ScreenRecord]] = {}
        for r in self.records:
            if id(r) not in self._removed:
                by_game.setdefault(r.game, []).append(r)
        for game, recs in sorted(by_game.items()):
            if len(recs) <= cap:
                continue
            keep = set(np.unique(np.round(np.linspace(0, len(recs) - 1, cap)).astype(int)))
            log.warning("%s: %d screens, %d kept (--max-per-game %d)", game, len(recs), cap, cap)
            for i, r in enumerate(recs):
                if i not in keep:
                    self._removed.add(id(r))
                    self._drop(r.source, r.id, game, Drop.CAPPED,
                               f"{r.source}: {game} has {len(recs)} screens, {cap} kept "
                               f"(evenly spread)")

    # ---- reports
    def nothing_usable(self, n: int) -> InputError:
        """The error when no screen was kept: says why and what to do."""
        S = self.params.patch_size
        skipped, too_small = self.skipped.items, self.too_small.items
        if too_small and not skipped:
            biggest = max(min(t["width"], t["height"]) for t in too_small)
            hint = max((s for s in (16, 32, 64, 128) if s <= biggest), default=None)
            fix = f"; use --patch-size {hint}" if hint and hint < S else ""
            what = "the image is" if n == 1 else f"all {n} images are"
            return InputError(f"crop: {what} smaller than the {S}x{S} patch{fix}")
        if skipped and not too_small:
            first = skipped[0]["reason"]
            if n == 1:
                return InputError(f"crop: the image is not usable: {first}")
            more = f"; and {len(skipped) - 1} more" if len(skipped) > 1 else ""
            return InputError(f"crop: none of the {n} images is usable ({first}{more})")
        return InputError(f"crop: no usable screen among {n} images: {len(skipped)} unreadable, "
                          f"{len(too_small)} smaller than the {S}x{S} patch")

    def counts(self) -> dict[str, Any]:
        """Scales, stretched and estimated screens among the kept ones."""
        scales: dict[str, int] = {}
        for r in self.records:
            scales[str(r.scale)] = scales.get(str(r.scale), 0) + 1
        return {"scales": scales,
                "stretched": sum(r.scale_xy != [float(r.scale)] * 2 for r in self.records),
                "estimated": sum(r.confidence < 1.0 for r in self.records)}

    def report(self) -> dict:
        """What was left out and why (crop.json)."""
        return {"skipped": self.skipped.items, "too_small": self.too_small.items,
                "duplicates": self.duplicates, "many_colours": self.many_colours,
                "hud": self.huds,
                "dropped": [d.to_json() for d in self.dropped
                            if d.why in (Drop.NEAR_DUPLICATE, Drop.CAPPED)]}


def screen_palette(scr: np.ndarray) -> Optional[dict]:
    """Which NES palette table a screen is drawn in, for the report (see docs/colour.md).

    scr : ndarray, shape (H, W, 3|4), uint8 — transparent pixels (RGBA) are left out.
    Returns ``{table, kind, mean_error, max_error}`` or None when the colours are no NES
    palette (too many colours, or no table or one-to-one fit matches).
    """
    from palettes import recognise_image

    mask = scr[..., 3] >= 128 if scr.shape[-1] == 4 else None
    match = recognise_image(np.ascontiguousarray(scr[..., :3]), mask)
    if match is None:
        return None
    return {"table": match.table, "kind": str(getattr(match.kind, "value", match.kind)),
            "mean_error": round(match.mean_error, 3), "max_error": round(match.max_error, 3)}


def _palette_counts(records: Sequence[ScreenRecord]) -> dict:
    """Screens per recognised palette table (``none`` = not NES palette art)."""
    out: dict[str, int] = {}
    for r in records:
        key = r.palette["table"] if r.palette else "none"
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items()))


def _usable_grid(grid: Sequence[int], h: int, w: int, S: int) -> list[int]:
    """The tile-grid phase, or the corner when the shifted grid leaves no room for a patch."""
    gx, gy = grid
    return [0, 0] if h - gy < S or w - gx < S else [int(gx), int(gy)]


def _hud_sample_positions(games: Sequence[str]) -> set[int]:
    """Input positions whose screens feed HUD detection: up to ``HUD_SAMPLE`` per game, evenly
    spread over the game's inputs."""
    by_game: dict[str, list[int]] = {}
    for i, g in enumerate(games):
        by_game.setdefault(g, []).append(i)
    out: set[int] = set()
    for positions in by_game.values():
        picks = np.unique(np.round(np.linspace(0, len(positions) - 1,
                                               min(HUD_SAMPLE, len(positions)))).astype(int))
        out.update(positions[i] for i in picks)
    return out


# --------------------------------------------------------------------------- patches and tiles
def _positions(rec: ScreenRecord, S: int, stride: int) -> tuple[int, int]:
    """Patch positions on a screen: (rows, columns) of patch origins on its grid."""
    gx, gy = rec.grid
    return len(range(gy, rec.height - S + 1, stride)), len(range(gx, rec.width - S + 1, stride))


@dataclass
class PatchPlan:
    """Which patches are cut: a seeded subset of every position (and mirror) of every screen.

    Positions are numbered screen by screen, row by row; with ``flip`` each position counts
    twice (``q // 2`` the position, ``q % 2`` = 1 the mirror).  ``picks`` (sorted) index that
    numbering; ``starts[i]`` is screen i's first number.
    """

    picks: np.ndarray
    starts: np.ndarray
    n_flip: int
    total: int

    def of_screen(self, i: int) -> np.ndarray:
        """Screen i's picked numbers, made local to the screen."""
        lo, hi = np.searchsorted(self.picks, [self.starts[i], self.starts[i + 1]])
        return self.picks[lo:hi] - self.starts[i]


def plan_patches(records: Sequence[ScreenRecord], params: Params) -> PatchPlan:
    """Number every patch position of every screen and pick at most ``max_patches``."""
    S, n_flip = params.patch_size, 2 if params.flip else 1
    counts = [n_flip * ny * nx for ny, nx in (_positions(r, S, params.stride) for r in records)]
    starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
    total = int(starts[-1])
    picks = np.arange(total)
    if total > params.max_patches:
        rng = np.random.default_rng(params.seed)
        picks = np.sort(rng.choice(total, size=params.max_patches, replace=False))
    return PatchPlan(picks=picks, starts=starts, n_flip=n_flip, total=total)


def cut_patches(screen: np.ndarray, rec: ScreenRecord, local: np.ndarray,
                params: Params) -> np.ndarray:
    """The picked patches of one screen (``local`` from :meth:`PatchPlan.of_screen`).

    Returns
    -------
    ndarray, shape (len(local), S, S, C), uint8
    """
    S, n_flip = params.patch_size, 2 if params.flip else 1
    out = np.empty((len(local), S, S, screen.shape[2]), np.uint8)
    for j, (q, (y, x)) in enumerate(zip(local, patch_origins(rec, local, params))):
        p = screen[y:y + S, x:x + S]
        out[j] = p[:, ::-1] if q % n_flip else p
    return out


def patch_origins(rec: ScreenRecord, local: np.ndarray, params: Params) -> np.ndarray:
    """Top-left (y, x) on the screen of each picked patch (``local`` as in :func:`cut_patches`).

    Returns
    -------
    ndarray, shape (len(local), 2), int32
    """
    n_flip = 2 if params.flip else 1
    _, nx = _positions(rec, params.patch_size, params.stride)
    row, col = np.divmod(np.asarray(local, np.int64) // n_flip, nx)
    gx, gy = rec.grid
    return np.stack([gy + row * params.stride, gx + col * params.stride], 1).astype(np.int32)


def cut_tiles(screen: np.ndarray, rec: ScreenRecord) -> tuple[np.ndarray, np.ndarray]:
    """Every whole 16×16 tile of a screen on its grid, row by row.

    Returns
    -------
    tiles : ndarray, shape (M, 16, 16, 3), uint8
    origin : ndarray, shape (M, 3), int32 — (screen index, x, y) of each tile's top-left pixel
    """
    gx, gy = rec.grid
    tiles = grid_cut(screen[gy:, gx:, :3], TILE)
    th, tw = (rec.height - gy) // TILE, (rec.width - gx) // TILE
    yy, xx = np.meshgrid(gy + np.arange(th) * TILE, gx + np.arange(tw) * TILE, indexing="ij")
    origin = np.stack([np.full(th * tw, rec.index), xx.ravel(), yy.ravel()], axis=1)
    return np.ascontiguousarray(tiles), origin.astype(np.int32)


def tile_count(rec: ScreenRecord) -> int:
    gx, gy = rec.grid
    return ((rec.height - gy) // TILE) * ((rec.width - gx) // TILE)


# --------------------------------------------------------------------------- contact sheet
CONTACT_FILE = "contact.png"
#: the contact sheet shows at most this many kept screens (a seeded sample) ...
SHEET_KEPT = 96
#: ... and this many screens left out (the first ones)
SHEET_DROPPED = 160
#: thumbnails fit in this box (width, height)
THUMB = (128, 120)
_SHEET_COLUMNS = 8
_LABEL_H = 24


def thumbnail(a: np.ndarray) -> np.ndarray:
    """A screen reduced by an integer factor to fit ``THUMB`` (RGB uint8)."""
    from PIL import Image

    k = max(1, -(-a.shape[1] // THUMB[0]), -(-a.shape[0] // THUMB[1]))
    im = Image.fromarray(np.ascontiguousarray(a[..., :3]))
    return np.asarray(im.reduce(k) if k > 1 else im)


class ContactSheet:
    """Thumbnails of kept and left-out screens, drawn with the reasons into ``contact.png``.

    Memory stays bounded: at most ``SHEET_KEPT`` kept screens (a reservoir sample seeded by
    ``seed``) and the first ``SHEET_DROPPED`` left out are held, as small thumbnails.
    """

    def __init__(self, seed: int = 0):
        self.kept: dict[str, tuple[np.ndarray, int]] = {}   # id -> (thumbnail, original height)
        self.dropped: dict[str, np.ndarray] = {}
        self._rng = np.random.default_rng(seed)
        self._seen_kept = 0

    def add_kept(self, sid: str, a: np.ndarray) -> None:
        self._seen_kept += 1
        if len(self.kept) < SHEET_KEPT:
            self.kept[sid] = (thumbnail(a), a.shape[0])
            return
        j = int(self._rng.integers(self._seen_kept))
        if j < SHEET_KEPT:                                   # reservoir: replace entry j
            del self.kept[list(self.kept)[j]]
            self.kept[sid] = (thumbnail(a), a.shape[0])

    def add_dropped(self, sid: str, a: Optional[np.ndarray]) -> None:
        if len(self.dropped) < SHEET_DROPPED and a is not None:
            self.dropped[sid] = thumbnail(a)

    def render(self, records: Sequence[ScreenRecord], dropped: Sequence[Dropped]) -> np.ndarray:
        """The sheet: a header with the counts, the left-out screens with their reasons, then
        the sample of kept screens (HUD strips that were cut shaded red).  RGB uint8."""
        from PIL import Image, ImageDraw

        cells: list[tuple[Optional[np.ndarray], str, str, Optional[tuple[int, int, int]]]] = []
        for d in dropped[:SHEET_DROPPED]:
            thumb = self.dropped.get(d.id)
            if thumb is None and d.id in self.kept:            # left out after pass 1
                thumb = self.kept[d.id][0]
            cells.append((thumb, d.why.value, d.id, None))
        by_id = {r.id: r for r in records}
        for sid, (thumb, h) in self.kept.items():
            r = by_id.get(sid)
            if r is not None:
                cells.append((thumb, f"kept x{r.scale}" + (" est." if r.confidence < 1 else ""),
                              sid, (r.hud[0], r.hud[1], h)))
        cw, ch = THUMB[0] + 4, THUMB[1] + _LABEL_H + 4
        rows = max(1, -(-len(cells) // _SHEET_COLUMNS))
        sheet = Image.new("RGB", (cw * _SHEET_COLUMNS, 28 + rows * ch), (40, 40, 40))
        draw = ImageDraw.Draw(sheet)
        why = {}
        for d in dropped:
            why[d.why.value] = why.get(d.why.value, 0) + 1
        left = ", ".join(f"{n} {w}" for w, n in sorted(why.items())) or "none"
        draw.text((4, 4), f"kept {len(records)} (showing {sum(c[3] is not None for c in cells)}), "
                          f"left out {len(dropped)}: {left}", fill=(235, 235, 235))
        for n, (thumb, label, sid, hud) in enumerate(cells):
            x, y = (n % _SHEET_COLUMNS) * cw + 2, 28 + (n // _SHEET_COLUMNS) * ch
            if thumb is not None:
                tile = Image.fromarray(thumb)
                if hud and (hud[0] or hud[1]):
                    tile = _shade_hud(thumb, *hud)
                sheet.paste(tile, (x, y))
            else:
                draw.rectangle([x, y, x + THUMB[0] - 1, y + THUMB[1] - 1], outline=(120, 120, 120))
            colour = (140, 220, 140) if hud is not None else (240, 140, 120)
            draw.text((x, y + THUMB[1] + 1), label[:22], fill=colour)
            draw.text((x, y + THUMB[1] + 12), sid[:22], fill=(190, 190, 190))
        return np.asarray(sheet)


def _shade_hud(thumb: np.ndarray, top: int, bottom: int, height: int) -> "Any":
    """The thumbnail with the HUD strips that were cut tinted red."""
    from PIL import Image

    t = thumb.astype(np.int16).copy()
    k = height / thumb.shape[0]
    rows = np.zeros(thumb.shape[0], bool)
    rows[:int(round(top / k))] = True
    if bottom:
        rows[thumb.shape[0] - int(round(bottom / k)):] = True
    t[rows] = (t[rows] + np.array([160, 0, 0])) // 2
    return Image.fromarray(t.clip(0, 255).astype(np.uint8))


# --------------------------------------------------------------------------- the core
@dataclass
class CropResult:
    """What crop makes of a set of screenshots (:func:`crop_screens`, :func:`crop_stream`)."""

    records: list                 # ScreenRecord per kept screen, in order
    patches: Patches
    tiles: TrainingTiles
    selector: ScreenSelector
    plan: PatchPlan
    sheet: np.ndarray             # the contact sheet, (H, W, 3) uint8
    screens: list = field(default_factory=list)   # native pixels per kept screen (in memory)


#: ``sink(name, shape)``: where an output array of ``shape`` goes, piece by piece
#: (an :class:`NpyWriter`, or :class:`ArraySink` in memory)
SinkFactory = Callable[[str, tuple], Any]


class ArraySink:
    """:class:`NpyWriter`'s interface in memory: ``write`` pieces, ``close`` gives the array."""

    def __init__(self, name: str, shape: tuple):
        self.shape, self.parts = shape, []

    def write(self, a: np.ndarray) -> None:
        self.parts.append(a)

    def close(self) -> np.ndarray:
        return np.concatenate(self.parts) if self.parts else np.zeros(self.shape, np.uint8)


def crop_stream(items: Iterable[tuple[InputFile, str, Union[NativeScreen, Unusable]]],
                params: Params, games: Sequence[str], store: ScreenStore, sink: SinkFactory,
                progress: ProgressFn = no_progress) -> CropResult:
    """The core: prepared screens in, kept screens, patches and tiles out.

    Pass 1 takes the screens one by one (:class:`ScreenSelector`), keeping the kept ones in
    ``store``; the set is then finished (HUD strips, per-game cap), the patches planned
    (:func:`plan_patches`), and pass 2 cuts every kept screen from ``store`` into ``sink``.

    Parameters
    ----------
    items : iterable of (InputFile, id, NativeScreen or Unusable)
    params : Params
    games : list of str
        Every input's game, in order (the same order as ``items``).
    store : ScreenStore
    sink : SinkFactory

    Raises
    ------
    InputError
        No screen is usable.
    """
    sel = ScreenSelector(params, games)
    sheet = ContactSheet(params.seed)
    n = 0
    for f, sid, prepared in items:
        n += 1
        pixels = prepared.pixels if isinstance(prepared, NativeScreen) else None
        if sel.add(f.source, sid, prepared, f.game) is not None:
            store.put(sid, pixels)
            sheet.add_kept(sid, pixels)
        else:
            sheet.add_dropped(sid, pixels)
    sel.finish(store, progress)
    if not sel.records:
        raise sel.nothing_usable(n)
    plan = plan_patches(sel.records, params)
    S, C = params.patch_size, 4 if params.rgba else 3
    patch_sink = sink("patches.npy", (len(plan.picks), S, S, C))
    tile_sink = sink("tiles.npy", (sum(tile_count(r) for r in sel.records), TILE, TILE, 3))
    origins = []
    for rec in sel.records:
        screen = store.get(rec.id)
        patch_sink.write(cut_patches(screen, rec, plan.of_screen(rec.index), params))
        t, o = cut_tiles(screen, rec)
        tile_sink.write(t)
        origins.append(o)
        progress("crop: patches", rec.index + 1, len(sel.records))
    tiles = TrainingTiles(tile_sink.close(), np.concatenate(origins),
                          [r.to_json() for r in sel.records])
    names = sorted({r.game for r in sel.records})          # each patch's game, for train
    picks = [plan.of_screen(r.index) for r in sel.records]
    labels = np.concatenate([np.full(len(q), names.index(r.game), np.int32)
                             for r, q in zip(sel.records, picks)])
    rows = np.concatenate([np.stack([patch_origins(r, q, params)[:, 0], np.full(len(q), r.height)], 1)
                           for r, q in zip(sel.records, picks)]).astype(np.int32)  # in its screen
    return CropResult(sel.records, Patches(patch_sink.close(), labels, names, rows), tiles, sel, plan,
                      sheet.render(sel.records, sel.dropped))


def crop_screens(images: Iterable[tuple[str, np.ndarray]], params: Params) -> CropResult:
    """The whole crop on decoded screenshots held in memory (tests, small corpora).

    Parameters
    ----------
    images : iterable of (source, ndarray of shape (H, W, 4) uint8)
        The screenshots, RGBA, in order; ``source`` names each (and gives its id and game).
    params : Params
    """
    items = list(images)
    files = [InputFile(Path(s), s) for s, _ in items]
    games = game_names(files)
    files = [InputFile(f.path, f.source, g) for f, g in zip(files, games)]

    def prepared() -> Iterator[tuple[InputFile, str, Union[NativeScreen, Unusable]]]:
        for f, sid, (source, image) in zip(files, screen_ids([f.path for f in files]), items):
            try:
                yield f, sid, prepare_screen(image, params)
            except ValueError as e:
                yield f, sid, Unusable(f"{source}: {e}")

    store = ScreenStore()
    result = crop_stream(prepared(), params, games, store, ArraySink)
    result.screens = [store.get(r.id) for r in result.records]
    return result


# --------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class InputFile:
    """One input image: the file, the source it is reported as (a URL for scraped images) and
    its game ("" until :func:`game_names` names it)."""

    path: Path
    source: str
    game: str = ""


def _collect(paths: Sequence[Any]) -> list[InputFile]:
    """Input files from scrape artifacts and/or user files, folders, globs.

    A scrape artifact's ``sources.jsonl`` may name each image's game (``provenance.game``, or
    a top-level ``game``); files without one are named by :func:`game_names`.
    """
    out: list[InputFile] = []
    loose: list[Any] = []
    for p in paths:
        p = Path(p)
        if p.is_dir() and (p / "sources.jsonl").is_file():
            for r in _read_sources(p / "sources.jsonl"):
                if r.get("status") == "ok" and r.get("path"):
                    prov = r.get("provenance") if isinstance(r.get("provenance"), dict) else {}
                    game = prov.get("game") or r.get("game") or ""
                    out.append(InputFile(p / r["path"], str(r.get("source") or r["path"]),
                                         str(game).strip() if isinstance(game, str) else ""))
        else:
            loose.append(p)
    if loose:
        out.extend(InputFile(f, str(f)) for f in expand_inputs(loose))
    games = game_names(out)
    return [InputFile(f.path, f.source, g) for f, g in zip(out, games)]


def _read_sources(path: Path) -> list[dict]:
    rows = []
    for n, line in enumerate(path.read_text("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise InputError(f"{path}: line {n} is not JSON; rerun scrape") from None
        if isinstance(row, dict):
            rows.append(row)
    return rows


def game_names(files: Sequence[InputFile]) -> list[str]:
    """The game of every input: the one its source names (scrape's provenance); else, in a
    folder whose file names start differently (``smb_01.png``, ``zelda_01.png``), the file
    name up to its first number (:func:`stages._common.name_prefix`); else the folder's name."""
    prefixes: dict[str, set[str]] = {}
    parts = []
    for f in files:
        src = Path(f.source.split("?", 1)[0].rstrip("/"))
        folder, prefix = src.parent.name, name_prefix(src.stem)
        parts.append((folder, prefix))
        prefixes.setdefault(str(src.parent), set()).add(prefix)
    out = []
    for f, (folder, prefix) in zip(files, parts):
        parent = str(Path(f.source.split("?", 1)[0].rstrip("/")).parent)
        if f.game:
            out.append(f.game)
        elif prefix and len(prefixes[parent]) > 1:
            out.append(prefix)
        else:
            out.append(folder or prefix or "screens")
    return out


def screen_ids(files: Sequence[Path]) -> list[str]:
    """A file-name-safe id per file: its stem, made unique (``s``, ``s-2``, ...)."""
    ids, seen = [], set()
    for f in files:
        base = re.sub(r"[^A-Za-z0-9_.-]+", "_", f.stem) or "screen"
        cand, n = base, 2
        while cand in seen:
            cand, n = f"{base}-{n}", n + 1
        seen.add(cand)
        ids.append(cand)
    return ids


def _one_blas_thread() -> Any:
    """Keep BLAS to one thread (a context manager; also in effect when merely called): the
    least-squares products here are small, crop runs screens in parallel instead, and BLAS
    threads spinning on a busy machine made them 10x slower.  No-op without threadpoolctl."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _prepare_all(files: Sequence[InputFile], params: Params, progress: ProgressFn
                 ) -> Iterator[tuple[InputFile, str, Union[NativeScreen, Unusable]]]:
    """(file, id, :func:`prepare_file`) over ``files``, in order; in a process pool when
    there are many (at most a few screens ahead, so memory stays bounded)."""
    n = len(files)
    progress("crop: decode", 0, n)
    work = functools.partial(prepare_file, params=params)
    workers = pool_workers(n, params.workers)
    ids = screen_ids([f.path for f in files])
    with _one_blas_thread():
        done = map_ordered(work, [str(f.path) for f in files], workers=workers,
                           initializer=_one_blas_thread)
        for i, (f, sid, r) in enumerate(zip(files, ids, done)):
            yield f, sid, r
            progress("crop: decode", i + 1, n)


# --------------------------------------------------------------------------- streaming output
_PARTIAL = ".partial"


class NpyWriter:
    """Write a ``.npy`` file of known shape piece by piece, so it is never whole in memory.

    The bytes equal ``np.save`` of the whole array.  The file is written as
    ``<folder>/.<name>.partial``; :meth:`close` checks that every row came and returns it as a
    read-only memmap, which :func:`_commit_npy` moves into place when an artifact class saves it.
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: Any = np.uint8):
        self.path = path.with_name(f".{path.name}{_PARTIAL}")
        self.shape, self.dtype, self.rows = tuple(shape), np.dtype(dtype), 0
        self._f = open(self.path, "wb")
        np.lib.format.write_array_header_1_0(self._f, {
            "descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
            "shape": self.shape})

    def write(self, a: np.ndarray) -> None:
        if a.dtype != self.dtype or a.shape[1:] != self.shape[1:]:
            raise ValueError(f"{self.path}: rows of {a.dtype} {a.shape[1:]} do not fit "
                             f"{self.dtype} {self.shape}")
        self._f.write(np.ascontiguousarray(a).tobytes())
        self.rows += len(a)

    def close(self) -> np.ndarray:
        self._f.close()
        if self.rows != self.shape[0]:
            raise RuntimeError(f"{self.path}: {self.rows} rows written, {self.shape[0]} expected")
        return np.load(self.path, mmap_mode="r", allow_pickle=False)


def _commit_npy(path: Path, arr: np.ndarray) -> None:
    """``save_npy`` for the artifact classes: an array that :class:`NpyWriter` already wrote is
    moved into place; any other array is saved."""
    src = getattr(arr, "filename", None)
    if isinstance(arr, np.memmap) and src and Path(src).name.endswith(_PARTIAL):
        os.replace(src, path)
    else:
        save_npy(path, arr)


# --------------------------------------------------------------------------- run
def run(inputs: dict[str, list[Any]], params: Params, out_dir: Path,
        progress: ProgressFn = no_progress) -> dict:
    """Native-pixel screens, training patches and 16×16 training tiles.

    Parameters
    ----------
    inputs : dict
        ``{"images": [...]}``: scrape artifact folders (with ``sources.jsonl``) and/or image
        files, folders and glob patterns.
    params : Params
    out_dir : Path

    Returns
    -------
    dict
        Counts (screens, patches, tiles, skipped, too_small, ...), the scales found, the
        skipped list.
    """
    t0, out_dir = time.time(), Path(out_dir)
    files = _collect(inputs.get("images") or [])
    if not files:
        raise InputError("crop: no input images; pass image files or folders, or run scrape first")
    store = ScreenStore(out_dir / "screens", rgba=params.rgba)
    result = crop_stream(_prepare_all(files, params, progress), params, [f.game for f in files],
                         store, lambda name, shape: NpyWriter(out_dir / name, shape), progress)
    result.patches.save(out_dir, _commit_npy)
    result.tiles.save(out_dir, _commit_npy, write_json)
    save_png(out_dir / CONTACT_FILE, result.sheet)
    write_json(out_dir / "crop.json", {"params": asdict(params), **result.selector.report()})
    return {**_summary(result), "seconds": round(time.time() - t0, 3)}


def _summary(result: CropResult) -> dict:
    sel, patches = result.selector, result.patches.images
    near = sum(d.why == Drop.NEAR_DUPLICATE for d in sel.dropped)
    return {
        "screens": len(result.records),
        "patches": int(len(patches)),
        "patches_available": result.plan.total,
        "tiles": int(len(result.tiles.tiles)),
        "patch_shape": list(patches.shape[1:]),
        **sel.counts(),
        "skipped": len(sel.skipped),
        "too_small": len(sel.too_small),
        "duplicates": len(sel.duplicates),
        "near_duplicates": near,
        "capped": sum(d.why == Drop.CAPPED for d in sel.dropped),
        "hud_cut": sum(any(r.hud) for r in result.records),
        "games": len({r.game for r in result.records}),
        "many_colours": len(sel.many_colours),
        "palettes": _palette_counts(result.records),
        "skipped_items": sel.skipped.items + [{"source": t["source"], "reason": t["reason"]}
                                              for t in sel.too_small.items],
    }
