"""crop: bring screenshots to native pixels; cut 16-px-aligned training patches and tiles.

Per screen (:func:`prepare_screen`, detection in ``stages/_grid.py``): (1) detect an integer
nearest-neighbour upscale k (all colour changes fall on a k-px grid; statistically for JPEG)
and undo it exactly, likewise a non-integer per-axis stretch (8:7 aspect-corrected captures)
when unambiguous; (2) remove a uniform letterbox found on two opposite sides; (3) find the
16-px tile grid (the phase where whole tiles repeat most).  Then (:class:`ScreenSelector`)
unusable, too small, single-colour and repeated screens are left out, and (4) patch_size
patches every stride px and every 16x16 tile on that grid are cut (:func:`plan_patches`,
:func:`cut_screen`).

Writes screens/<id>.png, screens.json, patches.npy (N,S,S,C) uint8, tiles.npy (M,16,16,3)
uint8 and tiles_origin.npy (M,3) int32 = (screen index, x, y), through
:class:`tilesets.artifacts.Patches` and :class:`tilesets.artifacts.TrainingTiles`.
See docs/data.md.
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
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence, Union

import numpy as np

from stages._common import (InputError, ProgressFn, Skipped, StageParams, expand_inputs,
                            load_image, map_ordered, no_progress, param, pool_workers, save_npy,
                            save_png, write_json)
from stages._grid import (SMOOTH_MAX_SCALE, TILE, block_confidence, change_positions,
                          detect_grid, detect_scale, detect_smooth_scale, downscale,
                          find_letterbox, fit_stretch, unsmooth, unstretch)
from tilesets.artifacts import Patches, TrainingTiles, grid_cut

NAME = "crop"
INPUTS = {"images": "scrape"}
OPTIONAL_INPUTS = ()
LIBS = ("numpy", "pillow")

log = logging.getLogger("tilegan.crop")

#: more distinct colours than this in a native screen suggests resampling or lossy compression
MANY_COLOURS = 256
#: tolerance used for JPEG files when --tolerance is 0
JPEG_TOLERANCE = 8
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
        fit = detect_smooth_scale(a, max_scale=min(max_scale, SMOOTH_MAX_SCALE))
        if fit is not None:
            native, conf = unsmooth(a, fit)
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

    def to_json(self) -> dict:
        return asdict(self)


def count_colours(a: np.ndarray) -> int:
    """Distinct RGB colours of ``a`` (H, W, C) uint8."""
    flat = a[..., :3].reshape(-1, 3).astype(np.uint32)
    return int(np.unique((flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2]).size)


def _screen_digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes() + str(a.shape).encode()).hexdigest()


class ScreenSelector:
    """Decides, screen by screen in input order, which prepared screens are kept.

    Left out (and recorded): unusable files and single-colour screens (``skipped``), screens
    smaller than one patch (``too_small``) and screens whose native pixels equal an earlier
    one's (``duplicates``).  A kept screen gets the next index and a :class:`ScreenRecord`;
    one with more than ``MANY_COLOURS`` colours is kept but flagged (``many_colours``).
    """

    def __init__(self, params: Params):
        self.params = params
        self.records: list[ScreenRecord] = []
        self.skipped = Skipped(key="source", logger=log)
        self.too_small = Skipped(key="source", logger=log)
        self.duplicates: list[dict[str, str]] = []
        self.many_colours: list[str] = []
        self.scales: dict[str, int] = {}
        self.stretched = 0
        self.estimated = 0
        self._seen: dict[str, str] = {}

    def add(self, source: str, sid: str,
            prepared: Union[NativeScreen, Unusable]) -> Optional[ScreenRecord]:
        """The record of the kept screen, or None when it is left out."""
        if isinstance(prepared, Unusable):
            self.skipped.add(source, prepared.reason)
            return None
        scr, S = prepared.pixels, self.params.patch_size
        h, w = scr.shape[:2]
        for why in prepared.warnings:
            log.warning("%s: %s", source, why)
        if h < S or w < S:
            after = f" after undoing {' and '.join(prepared.steps)}" if prepared.steps else ""
            self.too_small.add(source, f"{source}: {w}x{h} native pixels{after} is smaller than "
                                       f"the {S}x{S} patch", width=w, height=h)
            return None
        if (scr == scr[:1, :1]).all():
            self.skipped.add(source, f"{source}: the screen is a single colour")
            return None
        digest = _screen_digest(scr)
        if digest in self._seen:
            self.duplicates.append({"source": source, "reason": f"same pixels as {self._seen[digest]}"})
            return None
        self._seen[digest] = source
        n_colours = count_colours(scr)
        if n_colours > MANY_COLOURS:
            log.warning("%s has %d colours after undoing scale %d: resampled, lossy or not "
                        "pixel art? (try --tolerance for JPEG sources)", source, n_colours,
                        prepared.scale)
            self.many_colours.append(source)
        gx, gy = prepared.grid
        if h - gy < S or w - gx < S:
            gx, gy = 0, 0  # the shifted grid leaves no room for a patch; use the corner
        k = prepared.scale
        self.scales[str(k)] = self.scales.get(str(k), 0) + 1
        if list(prepared.scale_xy) != [float(k)] * 2:
            self.stretched += 1
        rec = ScreenRecord(index=len(self.records), id=sid, source=source, scale=k, width=w,
                           height=h, offset=list(prepared.offset), trim=list(prepared.trim),
                           grid=[gx, gy], colours=n_colours, scale_xy=list(prepared.scale_xy),
                           original_size=list(prepared.original_size),
                           confidence=prepared.confidence, warnings=list(prepared.warnings))
        if prepared.confidence < 1.0:
            self.estimated += 1
        self.records.append(rec)
        return rec

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

    def report(self) -> dict:
        """What was left out and why (crop.json)."""
        return {"skipped": self.skipped.items, "too_small": self.too_small.items,
                "duplicates": self.duplicates, "many_colours": self.many_colours}


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
    S, stride, n_flip = params.patch_size, params.stride, 2 if params.flip else 1
    gx, gy = rec.grid
    _, nx = _positions(rec, S, stride)
    out = np.empty((len(local), S, S, screen.shape[2]), np.uint8)
    for j, q in enumerate(local):
        row, col = divmod(int(q) // n_flip, nx)
        y, x = gy + row * stride, gx + col * stride
        p = screen[y:y + S, x:x + S]
        out[j] = p[:, ::-1] if q % n_flip else p
    return out


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


# --------------------------------------------------------------------------- in-memory core
@dataclass
class CropResult:
    """What :func:`crop_screens` makes of a set of screenshots."""

    screens: list                 # native pixels of each kept screen, (H, W, C) uint8
    records: list                 # ScreenRecord per kept screen
    patches: Patches
    tiles: TrainingTiles
    selector: ScreenSelector
    plan: PatchPlan


def crop_screens(images: Iterable[tuple[str, np.ndarray]], params: Params) -> CropResult:
    """The whole crop on decoded screenshots held in memory (tests, small corpora).

    Parameters
    ----------
    images : iterable of (source, ndarray of shape (H, W, 4) uint8)
        The screenshots, RGBA, in order; ``source`` names each (and gives its id).
    params : Params

    Raises
    ------
    InputError
        No screen is usable.
    """
    sel = ScreenSelector(params)
    screens = []
    items = list(images)
    for (source, image), sid in zip(items, screen_ids([Path(s) for s, _ in items])):
        try:
            prepared: Union[NativeScreen, Unusable] = prepare_screen(image, params)
        except ValueError as e:
            prepared = Unusable(f"{source}: {e}")
        if sel.add(source, sid, prepared) is not None:
            screens.append(prepared.pixels)
    if not sel.records:
        raise sel.nothing_usable(len(items))
    plan = plan_patches(sel.records, params)
    patches = [cut_patches(s, r, plan.of_screen(r.index), params) for s, r in zip(screens, sel.records)]
    tiles = [cut_tiles(s, r) for s, r in zip(screens, sel.records)]
    return CropResult(screens, sel.records, Patches(np.concatenate(patches)),
                      TrainingTiles(np.concatenate([t for t, _ in tiles]),
                                    np.concatenate([o for _, o in tiles]),
                                    [r.to_json() for r in sel.records]), sel, plan)


# --------------------------------------------------------------------------- inputs
def _collect(paths: Sequence[Any]) -> list[tuple[Path, str]]:
    """(file, source) pairs from scrape artifacts and/or user files, folders, globs."""
    out: list[tuple[Path, str]] = []
    loose: list[Any] = []
    for p in paths:
        p = Path(p)
        if p.is_dir() and (p / "sources.jsonl").is_file():
            rows = [json.loads(line) for line in (p / "sources.jsonl").read_text("utf-8").splitlines()
                    if line.strip()]
            for r in rows:
                if r.get("status") == "ok" and r.get("path"):
                    out.append((p / r["path"], str(r.get("source") or r["path"])))
        else:
            loose.append(p)
    if loose:
        out.extend((f, str(f)) for f in expand_inputs(loose))
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


def _prepare_all(files: Sequence[Path], params: Params,
                 progress: ProgressFn) -> Iterator[Union[NativeScreen, Unusable]]:
    """:func:`prepare_file` over ``files``, in order; in a process pool when there are many."""
    n = len(files)
    progress("crop: decode", 0, n)
    work = functools.partial(prepare_file, params=params)
    workers = pool_workers(n, params.workers)
    with _one_blas_thread():
        for i, r in enumerate(map_ordered(work, [str(f) for f in files], workers=workers,
                                          initializer=_one_blas_thread)):
            yield r
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


def _cut_all(out_dir: Path, records: Sequence[ScreenRecord], plan: PatchPlan,
             params: Params, progress: ProgressFn) -> tuple[Patches, TrainingTiles]:
    """Second pass: cut tiles and picked patches from the written screens, one at a time."""
    S, mode = params.patch_size, "RGBA" if params.rgba else "RGB"
    patches = NpyWriter(out_dir / "patches.npy", (len(plan.picks), S, S, 4 if params.rgba else 3))
    tiles = NpyWriter(out_dir / "tiles.npy", (sum(tile_count(r) for r in records), TILE, TILE, 3))
    origins = []
    for rec in records:
        screen = load_image(out_dir / "screens" / f"{rec.id}.png", mode=mode)
        patches.write(cut_patches(screen, rec, plan.of_screen(rec.index), params))
        t, o = cut_tiles(screen, rec)
        tiles.write(t)
        origins.append(o)
        progress("crop: patches", rec.index + 1, len(records))
    return (Patches(patches.close()),
            TrainingTiles(tiles.close(), np.concatenate(origins), [r.to_json() for r in records]))


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
        Counts (screens, patches, tiles, skipped, too_small), the scales found, the skipped list.
    """
    t0, out_dir = time.time(), Path(out_dir)
    files = _collect(inputs.get("images") or [])
    if not files:
        raise InputError("crop: no input images; pass image files or folders, or run scrape first")
    (out_dir / "screens").mkdir(parents=True, exist_ok=True)
    sel = ScreenSelector(params)
    prepared = _prepare_all([f for f, _ in files], params, progress)
    for (_, source), sid, screen in zip(files, screen_ids([f for f, _ in files]), prepared):
        if sel.add(source, sid, screen) is not None:
            save_png(out_dir / "screens" / f"{sid}.png", screen.pixels)
    if not sel.records:
        raise sel.nothing_usable(len(files))
    plan = plan_patches(sel.records, params)
    patches, tiles = _cut_all(out_dir, sel.records, plan, params, progress)
    patches.save(out_dir, _commit_npy)
    tiles.save(out_dir, _commit_npy, write_json)
    write_json(out_dir / "crop.json", {"params": asdict(params), **sel.report()})
    return {**_summary(sel, plan, patches, tiles), "seconds": round(time.time() - t0, 3)}


def _summary(sel: ScreenSelector, plan: PatchPlan, patches: Patches, tiles: TrainingTiles) -> dict:
    return {
        "screens": len(sel.records),
        "patches": int(len(patches.images)),
        "patches_available": plan.total,
        "tiles": int(len(tiles.tiles)),
        "patch_shape": list(patches.images.shape[1:]),
        "scales": sel.scales,
        "skipped": len(sel.skipped),
        "too_small": len(sel.too_small),
        "duplicates": len(sel.duplicates),
        "many_colours": len(sel.many_colours),
        "stretched": sel.stretched,
        "estimated": sel.estimated,
        "skipped_items": sel.skipped.items + [{"source": t["source"], "reason": t["reason"]}
                                              for t in sel.too_small.items],
    }
