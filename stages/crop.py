"""crop: bring screenshots to native pixels; cut 16-px-aligned training patches and tiles.

Per screen: (1) detect an integer nearest-neighbour upscale k (all colour changes fall on a
k-px grid; statistically for JPEG) and undo it exactly, likewise a non-integer per-axis stretch
(8:7 aspect-corrected captures) when unambiguous; (2) remove a uniform letterbox found on
two opposite sides; (3) find the 16-px tile grid (the phase where whole tiles repeat most);
(4) cut patch_size patches every stride px and every 16x16 tile on that grid.
Writes screens/<id>.png, screens.json, patches.npy (N,S,S,C) uint8, tiles.npy (M,16,16,3)
uint8 and tiles_origin.npy (M,3) int32 = (screen index, x, y).  See docs/data.md.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from stages._common import (InputError, ParamError, ProgressFn, Skipped, expand_inputs,
                            load_image, no_progress, param, save_npy, save_png, write_json)

NAME = "crop"
INPUTS = {"images": "scrape"}
OPTIONAL_INPUTS = ()
LIBS = ("numpy", "pillow")

log = logging.getLogger("tilegan.crop")

TILE = 16
#: more distinct colours than this in a native screen suggests resampling or lossy compression
MANY_COLOURS = 256
#: lossy upscale detection: off-grid step energy must stay below this fraction of the on-grid one
LOSSY_RATIO = 0.6
#: lossy upscale detection: block-mean reconstruction error must stay below this fraction of the
#: mean step at the block edges, on the weaker axis.  On the example corpus saved as JPEG
#: (q 95/75/50, 186 cases): no false factor, 2 upscales missed at q50 (left at k=1)
LOSSY_RECON = 0.7
#: tolerance used for JPEG files when --tolerance is 0
JPEG_TOLERANCE = 8
#: smallest non-integer stretch undone (closer to 1, a few identical neighbour lines could fake it)
STRETCH_MIN_RATIO = 1.1
#: the tile grid is searched in the top-left GRID_WINDOW² pixels (same phase as the whole)
GRID_WINDOW = 768


@dataclass(frozen=True)
class Params:
    patch_size: int = param(64, help="side of the square training patches in native pixels "
                                     "(a multiple of 16: 32, 64, 128)")
    stride: int = param(16, help="step between patches in pixels (a multiple of 16)")
    flip: bool = param(False, help="also add the mirror image (left-right) of every patch")
    rgba: bool = param(False, help="keep the alpha channel: patches (N,S,S,4) and RGBA screens")
    scale: int = param(0, help="upscale factor of the screenshots; 0 detects it per image")
    max_scale: int = param(8, help="largest upscale factor to look for")
    tolerance: int = param(0, help="for lossy sources: colour steps up to this (0-255) are noise "
                                   "when detecting upscaling, and blocks are averaged; 0 = exact "
                                   "(JPEG files then use 8)")
    trim: bool = param(True, help="remove uniform letterbox borders (on two opposite sides)")
    stretch: bool = param(True, help="also undo non-integer nearest-neighbour stretching per axis "
                                     "(e.g. 8:7 aspect-corrected NES captures, 256 -> 292 px)")
    align: bool = param(True, help="find the 16-px tile grid of each screen (where whole tiles "
                                   "repeat) and cut tiles and patches on it; off: grid at the "
                                   "top-left corner")
    max_patches: int = param(20000, help="keep at most this many patches (seeded random subset)")
    seed: int = param(0, help="seed of the patch subset")
    workers: int = param(0, help="processes decoding images; 0 = all cores when there are many")


# --------------------------------------------------------------------------- scale detection
def _change_positions(a: np.ndarray, axis: int) -> np.ndarray:
    """Indices i (1..n-1) along ``axis`` where line i differs from line i-1 anywhere.

    ``a`` has shape (H, W, C); axis 1 compares columns, axis 0 compares rows.
    """
    if a.shape[axis] < 2:
        return np.zeros(0, np.int64)
    if axis == 1:
        changed = (a[:, 1:] != a[:, :-1]).any(axis=(0, 2))
    else:
        changed = (a[1:] != a[:-1]).any(axis=(1, 2))
    return np.flatnonzero(changed) + 1


def _fits(pos: np.ndarray, k: int) -> Optional[int]:
    """The offset o in [0, k) with every position ≡ o (mod k), or None."""
    if pos.size == 0:
        return 0
    r = pos % k
    return int(r[0]) if (r == r[0]).all() else None


def _step_energy(a: np.ndarray, axis: int, tolerance: int) -> np.ndarray:
    """Mean colour step between line i-1 and line i, for i = 1..n-1 (index 0 holds i = 1).

    Steps of at most ``tolerance`` per channel count as noise (zero).
    """
    d = np.abs(np.diff(a.astype(np.int16), axis=axis))
    d[d <= tolerance] = 0
    d = d.sum(axis=2, dtype=np.int64)
    return d.mean(axis=0 if axis == 1 else 1)


def _fits_lossy(energy: np.ndarray, k: int) -> Optional[int]:
    """Offset o when the steps are concentrated on positions ≡ o (mod k), else None.

    For a k-upscale of lossy data, the mean step at one residue class (the block edges) is high
    and at every other class only compression noise: every other class must stay below
    ``LOSSY_RATIO`` times the edge class.
    """
    n = energy.size
    if n < 2 * k:
        return None
    total = energy.sum()
    if total == 0:
        return 0
    pos = np.arange(1, n + 1)
    per = np.array([energy[pos % k == r].mean() for r in range(k)])
    o = int(np.argmax(per))
    others = np.delete(per, o)
    return o if others.max() < LOSSY_RATIO * per[o] else None


def _blocks_explain(a: np.ndarray, k: int, ox: int, oy: int, ex: np.ndarray, ey: np.ndarray) -> bool:
    """Lossy check that k×k blocks explain the image: replacing every block by its mean must
    change it much less than the steps between blocks (``LOSSY_RECON``).  Rejects tile art whose
    8-px tile edges line up with the JPEG 8×8 grid but which has detail inside the tiles."""
    small = downscale(a, k, ox, oy, mean=True)
    h, w = small.shape[:2]
    body = a[oy:oy + h * k, ox:ox + w * k].astype(np.int16)
    err = np.abs(body - np.repeat(np.repeat(small, k, 0), k, 1)).sum(axis=2).mean()
    edges = [e[np.arange(1, e.size + 1) % k == o].mean() for e, o in ((ex, ox), (ey, oy)) if e.any()]
    return bool(edges) and err < LOSSY_RECON * min(edges)


def detect_scale(a: np.ndarray, *, max_scale: int = 8, tolerance: int = 0) -> tuple[int, int, int]:
    """Detect integer nearest-neighbour upscaling.

    Parameters
    ----------
    a : ndarray, shape (H, W, C), uint8
    max_scale : int
        Largest factor tried.
    tolerance : int
        0 (default): exact, for lossless sources: every change between neighbouring columns
        (rows) must fall on the block grid.  > 0: for lossy (JPEG) sources: steps up to
        ``tolerance`` per channel are noise, and the block edges must carry the mean step
        energy (every other position below ``LOSSY_RATIO`` of it).

    Returns
    -------
    (k, ox, oy) : tuple of int
        The largest k such that ``a`` is made of k×k constant blocks whose grid starts at
        column ``ox`` and row ``oy`` (0 <= ox, oy < k).  (1, 0, 0) when not upscaled, and for
        an image without any edge.

    Examples
    --------
    >>> a = np.arange(12, dtype=np.uint8).reshape(3, 4, 1)
    >>> detect_scale(np.repeat(np.repeat(a, 3, 0), 3, 1))
    (3, 0, 0)
    """
    if a.ndim != 3:
        raise ValueError(f"a must have shape (H, W, C), got {a.shape}")
    h, w = a.shape[:2]
    top = min(max_scale, max(h, w))
    if tolerance:
        ex, ey = _step_energy(a, 1, tolerance), _step_energy(a, 0, tolerance)
        if not ex.any() and not ey.any():
            return 1, 0, 0
        for k in range(top, 1, -1):
            ox, oy = _fits_lossy(ex, k), _fits_lossy(ey, k)
            if ox is not None and oy is not None and _blocks_explain(a, k, ox, oy, ex, ey):
                return k, ox, oy
        return 1, 0, 0
    px, py = _change_positions(a, 1), _change_positions(a, 0)
    if px.size == 0 and py.size == 0:
        return 1, 0, 0
    for k in range(top, 1, -1):
        ox, oy = _fits(px, k), _fits(py, k)
        if ox is not None and oy is not None and (w - ox) // k >= 1 and (h - oy) // k >= 1:
            return k, ox, oy
    return 1, 0, 0


def downscale(a: np.ndarray, k: int, ox: int = 0, oy: int = 0, *, mean: bool = False) -> np.ndarray:
    """Undo a k-upscale: one pixel per whole k×k block starting at (ox, oy).

    Parameters
    ----------
    a : ndarray, shape (H, W, C), uint8
    mean : bool
        Average each block (lossy sources; without its edge pixels when k >= 3) instead of
        taking its centre pixel.

    Returns
    -------
    ndarray, shape ((H - oy) // k, (W - ox) // k, C), uint8
    """
    if k == 1:
        return a[oy:, ox:].copy() if (ox or oy) else a
    h, w = (a.shape[0] - oy) // k, (a.shape[1] - ox) // k
    body = a[oy:oy + h * k, ox:ox + w * k]
    if mean:
        blocks = body.reshape(h, k, w, k, -1)
        if k >= 3:  # the block's edge pixels carry most of the compression ringing
            blocks = blocks[:, 1:-1, :, 1:-1]
        avg = blocks.astype(np.float32).mean(axis=(1, 3))
        return np.clip(np.rint(avg), 0, 255).astype(np.uint8)
    return body[k // 2::k, k // 2::k].copy()


_PHASES = np.arange(32) / 32.0
_TIE = 1e-3  # resamplers differ at exact ties (and compute in float32): accept either side


def fit_stretch(pos: np.ndarray, m: int, *, max_scale: int = 8,
                min_ratio: float = STRETCH_MIN_RATIO) -> Optional[tuple[int, float]]:
    """Find a non-integer nearest-neighbour stretch along one axis.

    A nearest resample from n to m > n lines maps output line j to source
    ``floor((j + phi) * n / m)``; the image can only change where that source index steps.
    Returns the smallest native length n (``m / n`` in [min_ratio, max_scale]) and a phase phi
    under which every change position in ``pos`` (as from ``_change_positions``) is such a step,
    or None: also when a second size below 1.15 n fits too (ambiguous), and unless the image
    changes at no fewer than half the native lines (evidence).
    """
    if pos.size == 0:
        return None
    lo = max(pos.size + 1, int(np.ceil(m / max_scale)))    # n lines have n-1 steps at most
    hi = min(int(np.floor(m / min_ratio)), 2 * pos.size)
    p = pos.astype(np.float64)[:, None]
    found: Optional[tuple[int, np.ndarray]] = None
    for n in range(lo, hi + 1):
        if found is not None and n >= 1.15 * found[0]:
            break
        r = n / m
        step = np.floor((p + _PHASES) * r + _TIE) > np.floor((p - 1 + _PHASES) * r - _TIE)
        ok = step.all(axis=0)
        if ok.any():
            if found is not None:
                # two native sizes within 15 % of each other both explain the image: a screen
                # with many repeated lines; refuse to guess rather than drop real lines
                return None
            found = (n, ok)
    if found is None:
        return None
    n, ok = found
    # several phases may fit; the tightest one (fewest possible steps) is the real one, then
    # the pixel-centre convention (phi = 0.5) that most scalers use
    r = n / m
    j = np.arange(1, m, dtype=np.float64)[:, None]
    phases = _PHASES[ok]
    steps = (np.floor((j + phases) * r + _TIE) > np.floor((j - 1 + phases) * r - _TIE)).sum(0)
    best = np.lexsort((np.abs(phases - 0.5), steps))[0]
    return n, float(phases[best])


def unstretch(a: np.ndarray, axis: int, n: int, phi: float) -> np.ndarray:
    """Undo a nearest stretch along ``axis`` (see :func:`fit_stretch`): one line per source line.

    Takes the middle line of each source line's run, away from the ambiguous run ends.
    """
    m = a.shape[axis]
    L = m / n                                   # run length, >= STRETCH_MIN_RATIO > 1
    start = np.arange(n) * L - phi              # run of source i: [start, start + L)
    first = np.ceil(start + _TIE)
    last = np.ceil(start + L - _TIE) - 1
    mid = np.clip(((first + last) // 2).astype(np.int64), 0, m - 1)
    return np.take(a, mid, axis=axis)


def trim_borders(a: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Remove a uniform letterbox: lines of one colour on two opposite sides.

    Returns the trimmed array and (top, left, bottom, right) lines removed.  One side alone
    (a sky, a floor) is never trimmed; a side is trimmed only when its opposite side has a
    border of the same colour.  At least one 16-px line of content is always kept.
    """
    h, w = a.shape[:2]

    def run(lines: np.ndarray) -> tuple[int, Optional[bytes]]:
        """How many leading lines (axis 0 of ``lines``, shape (L, N, C)) are one uniform colour."""
        c = lines[0, 0]
        same = (lines == c).all(axis=(1, 2))
        n = int(np.argmin(same)) if not same.all() else len(same)
        return n, (c.tobytes() if n else None)

    top, ct = run(a)
    bottom, cb = run(a[::-1])
    left, cl = run(a.transpose(1, 0, 2))
    right, cr = run(a.transpose(1, 0, 2)[::-1])
    t = b = l_ = r = 0
    if top and bottom and ct == cb and top + bottom <= h - TILE:
        t, b = top, bottom
    if left and right and cl == cr and left + right <= w - TILE:
        l_, r = left, right
    if not (t or b or l_ or r):
        return a, (0, 0, 0, 0)
    return a[t:h - b, l_:w - r], (t, l_, b, r)


def _window_hashes(a: np.ndarray, size: int = TILE) -> tuple[np.ndarray, np.ndarray]:
    """Hash and uniformity of every size×size window of ``a`` (H, W, C) uint8.

    Returns ``(hashes, uniform)``, both shape (H-size+1, W-size+1): uint64 hashes (equal windows
    have equal hashes; separable random weights, arithmetic mod 2**64) and a bool array that is
    True where the window holds a single colour.  Costs O(H·W·size), not O(H·W·size²).
    """
    h, w = a.shape[:2]
    v = np.zeros((h, w), np.uint64)
    for c in range(a.shape[2]):
        v = (v << np.uint64(8)) | a[..., c].astype(np.uint64)
    rng = np.random.default_rng(0x7113)
    wx, wy = (rng.integers(1, 2**63, size, dtype=np.uint64) | np.uint64(1) for _ in range(2))
    oh, ow = h - size + 1, w - size + 1
    with np.errstate(over="ignore"):
        v = v * np.uint64(0x9E3779B97F4A7C15) + np.uint64(0x632BE59BD9B4E019)
        rows = np.zeros((h, ow), np.uint64)
        for dx in range(size):
            rows += v[:, dx:dx + ow] * wx[dx]
        out = np.zeros((oh, ow), np.uint64)
        for dy in range(size):
            out += rows[dy:dy + oh] * wy[dy]
    # uniform: no horizontal change inside any of its rows, no vertical change in its first column
    chx = np.zeros((h, w), np.int32)
    chx[:, 1:] = v[:, 1:] != v[:, :-1]
    chy = np.zeros((h, w), np.int32)
    chy[1:] = v[1:] != v[:-1]
    ix = np.zeros((h + 1, w + 1), np.int64)
    ix[1:, 1:] = chx.cumsum(0).cumsum(1)
    # changes at columns x+1..x+size-1 over rows y..y+size-1
    y0, y1 = np.arange(oh)[:, None], np.arange(oh)[:, None] + size
    x0, x1 = np.arange(ow)[None, :] + 1, np.arange(ow)[None, :] + size
    n_h = ix[y1, x1] - ix[y0, x1] - ix[y1, x0] + ix[y0, x0]
    cy = np.zeros((h + 1, w), np.int64)
    cy[1:] = chy.cumsum(0)
    n_v = cy[size:size + oh - 0, :ow][:oh] - cy[1:1 + oh, :ow]
    return out, (n_h == 0) & (n_v == 0)


def detect_grid(a: np.ndarray, *, size: int = TILE, min_gain: int = 4) -> tuple[int, int]:
    """Find where the tile grid of a tile-based screen starts.

    Tile-based art repeats whole tiles; on the right grid the size×size cells hold fewer
    distinct pictures than on a shifted one.  For each of the size×size phases, counts the
    distinct non-uniform cells per cell and returns the phase ``(gx, gy)`` in [0, size) with
    the lowest share when it is at most 0.8 of the corner's (with at least ``min_gain``
    repeated cells); failing that, the phase with the most repeated cells when it has at least
    ``min_gain`` and 25 % more than the corner (tiles among non-tiled layers); else (0, 0).

    Parameters
    ----------
    a : ndarray, shape (H, W, C), uint8
        A native-pixel screen.

    Returns
    -------
    (gx, gy) : tuple of int
    """
    a = a[:GRID_WINDOW, :GRID_WINDOW]   # plenty of evidence; keeps big level maps cheap
    h, w = a.shape[:2]
    if h < 2 * size or w < 2 * size:
        return 0, 0
    hashes, uniform = _window_hashes(a, size)

    # Every window belongs to exactly one grid phase (x % size, y % size); count, per phase,
    # the non-uniform cells whose hash occurs more than once in that phase.
    oh, ow = hashes.shape
    yy, xx = np.divmod(np.arange(oh * ow), ow)
    phase = ((yy % size) * size + (xx % size))
    keep = ~uniform.ravel()
    ph, hv = phase[keep], hashes.ravel()[keep]
    order = np.lexsort((hv, ph))
    ph, hv = ph[order], hv[order]
    new = np.ones(ph.size, bool)
    new[1:] = (ph[1:] != ph[:-1]) | (hv[1:] != hv[:-1])
    cells = np.bincount(ph, minlength=size * size)
    distinct = np.bincount(ph[new], minlength=size * size)
    # (a) busy tile art: the true phase has clearly fewer distinct cells per cell
    ratio = np.where(cells > 0, distinct / np.maximum(cells, 1), 1.0)
    i = int(np.argmin(ratio))  # first minimum: the lowest (gy, gx) among ties
    if i and ratio[i] <= 0.8 * ratio[0] and cells[i] - distinct[i] >= min_gain:
        return i % size, i // size
    # (b) sparse repeats (tiles among non-tiled layers): clearly more cells that repeat
    same = ~new[1:]
    rep = np.zeros(ph.size, bool)
    rep[1:] |= same
    rep[:-1] |= same
    repeats = np.bincount(ph[rep], minlength=size * size)
    j = int(np.argmax(repeats))
    if j and repeats[j] >= repeats[0] + min_gain and repeats[j] >= 1.25 * repeats[0]:
        return j % size, j // size
    return 0, 0


# --------------------------------------------------------------------------- one image
def _is_jpeg(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(3) == b"\xff\xd8\xff"
    except OSError:
        return False


def prepare_screen(path: str, opts: dict[str, Any]) -> dict[str, Any]:
    """Decode one screenshot and bring it to native pixels (runs in a worker process).

    Returns {"ok": True, "screen": (H, W, C) uint8, "scale", "offset": [x, y], "trim": [t, l, b, r],
    "orig": [W, H]} or {"ok": False, "reason": str}.
    """
    mode = "RGBA" if opts["rgba"] else "RGB"
    try:
        a = load_image(path, mode="RGBA")
    except InputError as e:
        return {"ok": False, "reason": str(e)}
    tol = opts["tolerance"] or (JPEG_TOLERANCE if _is_jpeg(path) else 0)
    if opts["scale"]:
        k, ox, oy = opts["scale"], 0, 0
        if a.shape[0] < k or a.shape[1] < k:
            return {"ok": False, "reason": f"{path}: smaller than the given scale {k}"}
    else:
        k, ox, oy = detect_scale(a, max_scale=opts["max_scale"], tolerance=tol)
    native = downscale(a, k, ox, oy, mean=tol > 0 and k > 1)
    sx = sy = float(k)
    if opts["stretch"] and not tol and not opts["scale"]:
        for axis in (1, 0):
            m = native.shape[axis]
            fit = fit_stretch(_change_positions(native, axis), m, max_scale=opts["max_scale"])
            if fit is not None:
                native = unstretch(native, axis, *fit)
                if axis == 1:
                    sx = k * m / native.shape[1]
                else:
                    sy = k * m / native.shape[0]
    trim = (0, 0, 0, 0)
    if opts["trim"]:
        native, trim = trim_borders(native)
    if mode == "RGB":
        native = np.ascontiguousarray(native[..., :3])
    grid = detect_grid(native[..., :3]) if opts["align"] else (0, 0)
    return {"ok": True, "screen": native, "scale": k, "grid": list(grid),
            "scale_xy": [round(sx, 4), round(sy, 4)],
            "offset": [ox + int(round(trim[1] * sx)), oy + int(round(trim[0] * sy))],
            "trim": list(trim),
            "orig": [int(a.shape[1]), int(a.shape[0])]}


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


def _screen_ids(files: list[tuple[Path, str]]) -> list[str]:
    ids, seen = [], set()
    for f, _ in files:
        base = re.sub(r"[^A-Za-z0-9_.-]+", "_", f.stem) or "screen"
        cand, n = base, 2
        while cand in seen:
            cand, n = f"{base}-{n}", n + 1
        seen.add(cand)
        ids.append(cand)
    return ids


def _validate(p: Params) -> None:
    if p.patch_size < TILE or p.patch_size % TILE:
        raise ParamError(f"crop: patch_size must be a multiple of 16 (16, 32, 64, 128), got {p.patch_size}")
    if p.stride < TILE or p.stride % TILE:
        raise ParamError(f"crop: stride must be a multiple of 16, got {p.stride}")
    if p.scale < 0 or p.max_scale < 1:
        raise ParamError("crop: scale must be 0 (detect) or a positive factor, max_scale >= 1")
    if not 0 <= p.tolerance <= 255:
        raise ParamError(f"crop: tolerance must be within 0..255, got {p.tolerance}")
    if p.max_patches < 1:
        raise ParamError(f"crop: max_patches must be at least 1, got {p.max_patches}")
    if p.workers < 0:
        raise ParamError(f"crop: workers must be 0 (auto) or more, got {p.workers}")


def _prepare_all(files: list[tuple[Path, str]], params: Params,
                 progress: ProgressFn) -> Iterator[dict]:
    """prepare_screen over ``files``, in order; in a process pool when there are many."""
    opts = {"rgba": params.rgba, "scale": params.scale, "max_scale": params.max_scale,
            "tolerance": params.tolerance, "trim": params.trim, "align": params.align,
            "stretch": params.stretch}
    n = len(files)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = params.workers or (min(cores, 4) if n >= 16 else 1)
    progress("crop: decode", 0, n)
    if workers <= 1:
        for i, (f, _) in enumerate(files):
            yield prepare_screen(str(f), opts)
            progress("crop: decode", i + 1, n)
        return
    with ProcessPoolExecutor(max_workers=workers) as ex:
        chunk = max(1, min(16, n // (4 * workers)))
        for i, r in enumerate(ex.map(prepare_screen, [str(f) for f, _ in files], [opts] * n,
                                     chunksize=chunk)):
            yield r
            progress("crop: decode", i + 1, n)


def grid_tiles(scr: np.ndarray, gx: int = 0, gy: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Every whole 16×16 tile of ``scr`` on the grid starting at (gx, gy), row by row.

    Returns
    -------
    tiles : ndarray, shape (M, 16, 16, 3), uint8
    origin : ndarray, shape (M, 2), int64: (x, y) of each tile's top-left pixel
    """
    th, tw = (scr.shape[0] - gy) // TILE, (scr.shape[1] - gx) // TILE
    body = scr[gy:gy + th * TILE, gx:gx + tw * TILE, :3]
    g = body.reshape(th, TILE, tw, TILE, 3).transpose(0, 2, 1, 3, 4)   # (th, tw, 16, 16, 3)
    yy, xx = np.meshgrid(gy + np.arange(th) * TILE, gx + np.arange(tw) * TILE, indexing="ij")
    return (np.ascontiguousarray(g.reshape(-1, TILE, TILE, 3)),
            np.stack([xx.ravel(), yy.ravel()], axis=1).astype(np.int64))


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
    _validate(params)
    t0 = time.time()
    files = _collect(inputs.get("images") or [])
    if not files:
        raise InputError("crop: no input images; pass image files or folders, or run scrape first")
    ids = _screen_ids(files)
    prepared = _prepare_all(files, params, progress)

    S, stride = params.patch_size, params.stride
    screens_meta: list[dict[str, Any]] = []
    sizes: list[tuple[int, int]] = []       # screens are not kept in memory: (h, w) each
    tiles_l: list[np.ndarray] = []
    origin_l: list[np.ndarray] = []
    skipped = Skipped(key="source", logger=log)
    too_small = Skipped(key="source", logger=log)
    scales: dict[str, int] = {}
    grids: list[tuple[int, int]] = []
    seen: dict[str, str] = {}
    duplicates: list[dict[str, str]] = []
    many_colours: list[str] = []
    stretched = 0
    out_dir = Path(out_dir)
    (out_dir / "screens").mkdir(parents=True, exist_ok=True)
    for (f, source), sid, r in zip(files, ids, prepared):
        if not r["ok"]:
            skipped.add(source, r["reason"])
            continue
        scr = r["screen"]
        h, w = scr.shape[:2]
        if h < S or w < S:
            too_small.add(source, f"{source}: {w}x{h} native pixels (scale {r['scale']}) is "
                                  f"smaller than the {S}x{S} patch", width=w, height=h)
            continue
        if (scr == scr[:1, :1]).all():
            skipped.add(source, f"{source}: the screen is a single colour")
            continue
        digest = hashlib.sha256(np.ascontiguousarray(scr).tobytes() + str(scr.shape).encode()).hexdigest()
        if digest in seen:
            duplicates.append({"source": source, "reason": f"same pixels as {seen[digest]}"})
            continue
        seen[digest] = source
        flat = scr[..., :3].reshape(-1, 3).astype(np.uint32)
        n_colours = int(np.unique((flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2]).size)
        if n_colours > MANY_COLOURS:
            log.warning("%s has %d colours after undoing scale %d: resampled, lossy or not "
                        "pixel art? (try --tolerance for JPEG sources)", source, n_colours, r["scale"])
            many_colours.append(source)
        gx, gy = r["grid"]
        if h - gy < S or w - gx < S:
            gx, gy = 0, 0  # the shifted grid leaves no room for a patch; use the corner
        idx = len(sizes)
        sizes.append((h, w))
        grids.append((gx, gy))
        tiles_i, origin_i = grid_tiles(scr, gx, gy)
        tiles_l.append(tiles_i)
        origin_l.append(np.concatenate([np.full((len(origin_i), 1), idx), origin_i], axis=1))
        scales[str(r["scale"])] = scales.get(str(r["scale"]), 0) + 1
        if r["scale_xy"] != [float(r["scale"])] * 2:
            stretched += 1
        save_png(out_dir / "screens" / f"{sid}.png", scr)
        screens_meta.append({"index": idx, "id": sid, "source": source,
                             "scale": r["scale"], "width": w, "height": h, "offset": r["offset"],
                             "trim": r["trim"], "grid": [gx, gy], "colours": n_colours,
                             "scale_xy": r["scale_xy"],
                             "original_size": r["orig"]})

    if not sizes:
        raise InputError(_nothing_usable(len(files), skipped.items, too_small.items, S))

    # ---- patch positions on each screen's 16-px grid, seeded subset
    pos = [(i, y, x) for i, ((h, w), (gx, gy)) in enumerate(zip(sizes, grids))
           for y in range(gy, h - S + 1, stride)
           for x in range(gx, w - S + 1, stride)]
    n_flip = 2 if params.flip else 1
    total = len(pos) * n_flip
    picks = np.arange(total)
    if total > params.max_patches:
        rng = np.random.default_rng(params.seed)
        picks = np.sort(rng.choice(total, size=params.max_patches, replace=False))
    # ---- cut the picked patches, one screen at a time, from the PNGs just written
    C = 4 if params.rgba else 3
    patches = np.empty((len(picks), S, S, C), np.uint8)
    mode = "RGBA" if params.rgba else "RGB"
    cur, scr = -1, None
    for j, q in enumerate(picks):
        i, y, x = pos[q // n_flip]
        if i != cur:
            cur, scr = i, load_image(out_dir / "screens" / f"{screens_meta[i]['id']}.png", mode=mode)
        p = scr[y:y + S, x:x + S]
        patches[j] = p[:, ::-1] if q % n_flip else p
        if j % 4096 == 0:
            progress("crop: patches", j, len(picks))
    progress("crop: patches", len(picks), len(picks))

    tiles = np.concatenate(tiles_l)
    origin = np.concatenate(origin_l).astype(np.int32)

    save_npy(out_dir / "patches.npy", patches)
    save_npy(out_dir / "tiles.npy", tiles)
    save_npy(out_dir / "tiles_origin.npy", origin)
    write_json(out_dir / "screens.json", screens_meta)
    write_json(out_dir / "crop.json", {"params": asdict(params), "skipped": skipped.items,
                                       "too_small": too_small.items, "duplicates": duplicates,
                                       "many_colours": many_colours})
    return {
        "screens": len(sizes),
        "patches": int(len(patches)),
        "patches_available": int(total),
        "tiles": int(len(tiles)),
        "patch_shape": list(patches.shape[1:]),
        "scales": scales,
        "skipped": len(skipped),
        "too_small": len(too_small),
        "duplicates": len(duplicates),
        "many_colours": len(many_colours),
        "stretched": stretched,
        "skipped_items": skipped.items + [{"source": t["source"], "reason": t["reason"]}
                                          for t in too_small.items],
        "seconds": round(time.time() - t0, 3),
    }


def _nothing_usable(n: int, skipped: list[dict], too_small: list[dict], S: int) -> str:
    if too_small and not skipped:
        biggest = max(min(t["width"], t["height"]) for t in too_small)
        hint = max((s for s in (16, 32, 64, 128) if s <= biggest), default=None)
        fix = f"; use --patch-size {hint}" if hint and hint < S else ""
        what = "the image is" if n == 1 else f"all {n} images are"
        return f"crop: {what} smaller than the {S}x{S} patch{fix}"
    if skipped and not too_small:
        first = skipped[0]["reason"]
        if n == 1:
            return f"crop: the image is not usable: {first}"
        return (f"crop: none of the {n} images is usable ({first}"
                f"{f'; and {len(skipped) - 1} more' if len(skipped) > 1 else ''})")
    return (f"crop: no usable screen among {n} images: {len(skipped)} unreadable, "
            f"{len(too_small)} smaller than the {S}x{S} patch")
