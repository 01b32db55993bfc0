"""Pure pixel-grid detection for screenshots: how a screen was enlarged, bordered and tiled.

Used by the crop stage (``stages/crop.py``); everything here works on uint8 arrays of shape
(H, W, C) and knows nothing of files.  See docs/data.md ("crop") for the methods and the
figures measured on them.

- :func:`line_evidence`: how strongly repeated lines back an enlargement (native art's runs
  of identical rows are no evidence), used by both of:
- :func:`detect_scale` / :func:`downscale`: integer nearest-neighbour upscales (exact, or
  statistically for lossy sources);
- :func:`fit_stretch` / :func:`unstretch`: non-integer nearest stretches along one axis;
- :func:`detect_smooth_scale` / :func:`unsmooth`: smoothed (bilinear-like) upscales;
- :func:`find_letterbox` / :func:`trim_borders`: a letterbox on two opposite sides;
- :func:`detect_grid`: the phase of the 16-px tile grid;
- :func:`row_segments` / :func:`find_hud`: HUD strips repeated across a game's screens.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional

import numpy as np

TILE = 16
#: lossy upscale detection: off-grid step energy must stay below this fraction of the on-grid one
LOSSY_RATIO = 0.6
#: lossy upscale detection: block-mean reconstruction error must stay below this fraction of the
#: mean step at the block edges, on the weaker axis.  On the example corpus saved as JPEG
#: (q 95/75/50, 186 cases): no false factor, 2 upscales missed at q50 (left at k=1)
LOSSY_RECON = 0.7
#: lossy upscale detection: a factor's divisor that also fits wins when enlarging its block
#: means reproduces this much larger a share of the pixels (within twice the tolerance).  An
#: NES-like frame with 2-px textures as JPEG q90 at 2x: 4x reproduces 0.669, 2x 0.95 or more
LOSSY_DIVISOR_GAIN = 0.1
#: smallest non-integer stretch undone (closer to 1, a few identical neighbour lines could fake it)
STRETCH_MIN_RATIO = 1.1
#: a stretch is undone only with at least this evidence (nats, see :func:`line_evidence`).
#: Measured (tests/_helpers_crop.py frames): 300 axes of native NES-like frames and the example
#: screens score 0, 80 of 64x64 sprites at most 6.8; NES frames stretched 8:7 at least 28.9,
#: 4:3 (256 -> 320, every repeat an exact tie) at least 18.1
STRETCH_EVIDENCE = 12.0
#: an integer upscale needs this much evidence (both axes together): few hypotheses are tried
SCALE_EVIDENCE = 8.0
#: lines on each side whose change rate weighs a forced repeat
EVIDENCE_WINDOW = 8
#: highest change rate used (one repeat weighs at most -log(0.05) = 3 nats)
EVIDENCE_CAP = 0.95
#: fits within this many nats of the best count as equal (the simplest ratio wins)
EVIDENCE_TIE = 5.0
#: a second native size (more than 2 % away) whose repeats that the best fit leaves unexplained
#: carry this much evidence makes a stretch ambiguous: it is left alone
AMBIGUOUS_EVIDENCE = 6.0
#: the tile grid is searched in the top-left GRID_WINDOW² pixels (same phase as the whole)
GRID_WINDOW = 768


# --------------------------------------------------------------------------- scale detection
def change_positions(a: np.ndarray, axis: int) -> np.ndarray:
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
        fits = {}
        for k in range(top, 1, -1):
            ox, oy = _fits_lossy(ex, k), _fits_lossy(ey, k)
            if ox is not None and oy is not None and _blocks_explain(a, k, ox, oy, ex, ey):
                fits[k] = (ox, oy)
        if not fits:
            return 1, 0, 0
        k = max(fits)
        # 2-px textures make a 2x look like a 4x: a divisor that fits too and whose blocks
        # reproduce clearly more of the image wins
        agree = {d: block_confidence(a, downscale(a, d, *fits[d], mean=True), d, *fits[d],
                                     tolerance=2 * tolerance)
                 for d in fits if k % d == 0}
        best = max(agree, key=lambda d: (agree[d] > agree[k] + LOSSY_DIVISOR_GAIN, d))
        return (best, *fits[best])
    px, py = change_positions(a, 1), change_positions(a, 0)
    if px.size == 0 and py.size == 0:
        return 1, 0, 0
    for k in range(top, 1, -1):
        ox, oy = _fits(px, k), _fits(py, k)
        if (ox is not None and oy is not None and (w - ox) // k >= 1 and (h - oy) // k >= 1
                and _grid_evidence(px, w, k, ox) + _grid_evidence(py, h, k, oy) >= SCALE_EVIDENCE):
            return k, ox, oy
    return 1, 0, 0


def _grid_evidence(pos: np.ndarray, m: int, k: int, offset: int) -> float:
    """:func:`line_evidence` of a k-upscale along one axis: every line off the block grid
    (``j % k != offset``) repeats the one before."""
    forced = np.arange(m) % k != offset
    forced[0] = False
    return line_evidence(changed_lines(pos, m), forced)


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


def block_confidence(a: np.ndarray, native: np.ndarray, k: int, ox: int = 0, oy: int = 0, *,
                     tolerance: int = 0) -> float:
    """Share of ``a``'s whole k×k blocks (from (ox, oy)) that enlarging ``native`` by k
    reproduces within ``tolerance`` levels in every channel, pixel by pixel: 1.0 for an exact
    nearest upscale; less for a lossy (JPEG) one, whose blocks were averaged."""
    h, w = native.shape[:2]
    body = a[oy:oy + h * k, ox:ox + w * k].astype(np.int16)
    again = np.repeat(np.repeat(native, k, 0), k, 1).astype(np.int16)
    return float((np.abs(body - again) <= tolerance).all(axis=-1).mean())


_PHASES = np.arange(32) / 32.0
_TIE = 1e-3  # resamplers differ at exact ties (and compute in float32): accept either side


# --------------------------------------------------------------------------- evidence
def changed_lines(pos: np.ndarray, m: int) -> np.ndarray:
    """Bool (m,): True at every position j (1..m-1) where line j differs from line j-1."""
    c = np.zeros(m, bool)
    c[pos] = True
    return c


def line_evidence(changed: np.ndarray, forced: np.ndarray,
                  pairs: Optional[np.ndarray] = None) -> float:
    """How strongly repeated lines back a resampling hypothesis (log-likelihood ratio, nats).

    A nearest-neighbour enlargement repeats lines at the positions it forces (``forced``: line
    j must equal line j-1); ``pairs`` marks positions j where an exact tie lets the repeat fall
    on j or j+1 (one of the two).  Native art repeats lines too (sky, ground, the inside of a
    tile), but in runs, where little changes; a real enlargement repeats lines evenly, also
    where the picture is busy.  So each forced repeat weighs ``-log(1 - p)`` and each tie pair
    ``-log(1 - p**2)``, where p is how often the lines around it (within ``EVIDENCE_WINDOW``,
    forced positions left out) change: a repeat amid changes is strong evidence, a repeat in
    a sky is none.  Native frames score about 0; an 8:7 stretch of an NES frame 30 to 90.

    Parameters
    ----------
    changed, forced : ndarray, shape (m,), bool
    pairs : ndarray, shape (m,), bool, optional

    Returns
    -------
    float
    """
    m = changed.size
    free = ~forced
    cc = np.concatenate([[0], np.cumsum(changed & free)])
    cf = np.concatenate([[0], np.cumsum(free)])
    i = np.arange(m)
    lo, hi = np.clip(i - EVIDENCE_WINDOW, 0, m), np.clip(i + EVIDENCE_WINDOW + 1, 0, m)
    p = np.minimum((cc[hi] - cc[lo] + 0.5) / (cf[hi] - cf[lo] + 1.0), EVIDENCE_CAP)
    ev = float(-np.log1p(-p[forced]).sum())
    if pairs is not None and pairs.any():
        ev += float(-np.log1p(-p[pairs] ** 2).sum())
    return ev


def stretch_pattern(n: int, m: int, phase: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where a nearest resample from n to m lines (``floor((j + phase) * n / m)``) must repeat.

    Returns ``(may, forced, pairs)``, bool arrays of shape (m,) over positions j (index 0
    unused): ``may`` — line j may start a new source line; ``forced`` — line j must repeat
    line j-1; ``pairs`` — an exact tie at j: one of lines j and j+1 repeats, not both.
    """
    x = (np.arange(m, dtype=np.float64) + phase) * (n / m)
    lo, hi = np.floor(x - _TIE), np.floor(x + _TIE)
    may = np.zeros(m, bool)
    may[1:] = hi[1:] > lo[:-1]
    forced = ~may
    forced[0] = False
    pairs = np.zeros(m, bool)
    pairs[1:-1] = (lo[1:-1] != hi[1:-1]) & may[1:-1] & may[2:] & (lo[2:] == hi[:-2] + 1)
    return may, forced, pairs


@dataclass(frozen=True)
class LineFit:
    """A nearest resample along one axis: ``n`` native lines drawn with ``phase``; ``evidence``
    from :func:`line_evidence`."""

    n: int
    phase: float
    evidence: float


def _stretch_candidates(pos: np.ndarray, m: int, lo: int,
                        hi: int) -> list[tuple[LineFit, np.ndarray, np.ndarray]]:
    """Every (n, phase) with n in [lo, hi] under which the change positions ``pos`` are all
    possible steps (and no tie pair changes twice): its fit, forced repeats and tie pairs."""
    changed = changed_lines(pos, m)
    p = pos.astype(np.float64)[:, None]
    out = []
    for n in range(lo, hi + 1):
        r = n / m
        ok = (np.floor((p + _PHASES) * r + _TIE) > np.floor((p - 1 + _PHASES) * r - _TIE)).all(0)
        seen: set[bytes] = set()
        for phase in sorted(_PHASES[ok], key=lambda ph: abs(ph - 0.5)):   # equal fits: centre
            may, forced, pairs = stretch_pattern(n, m, float(phase))
            key = forced.tobytes() + pairs.tobytes()
            if key in seen or (pairs[:-1] & changed[:-1] & changed[1:]).any():
                continue
            seen.add(key)
            out.append((LineFit(n, float(phase), line_evidence(changed, forced, pairs)),
                        forced, pairs))
    return out


def _fraction_distance(ratio: float, max_den: int = 8) -> float:
    """How far ``ratio`` is from the nearest fraction p/q with q <= ``max_den`` (2, 8/7, 4/3,
    16/7, ...): scalers enlarge by such ratios, so among equally good fits the nearest wins."""
    return min(abs(ratio - round(ratio * q) / q) for q in range(1, max_den + 1))


def fit_stretch(pos: np.ndarray, m: int, *, max_scale: int = 8,
                min_ratio: float = STRETCH_MIN_RATIO) -> Optional[LineFit]:
    """Find a non-integer nearest-neighbour stretch along one axis, or None.

    A nearest resample from n to m > n lines maps output line j to source
    ``floor((j + phi) * n / m)``; the image can only change where that source index steps, and
    must repeat the line everywhere else.  Every (n, phi) with ``m / n`` in [min_ratio,
    max_scale] under which all change positions ``pos`` (from :func:`change_positions`) are
    steps is weighed by :func:`line_evidence`.  The best is returned when its evidence reaches
    ``STRETCH_EVIDENCE`` (fits within ``EVIDENCE_TIE`` of it count as equal: the one whose
    ratio m / n is nearest a simple fraction wins, so 480 -> 240 beats 480 -> 239), unless
    another size more than 2 % away explains repeats that the best leaves unexplained with
    ``AMBIGUOUS_EVIDENCE`` or more: then the picture is ambiguous and left alone.  No stretch is the default: native art's repeated lines sit in runs, where
    they are no evidence.
    """
    if pos.size == 0:
        return None
    lo = max(pos.size + 1, int(np.ceil(m / max_scale)))    # n lines have n-1 steps at most
    hi = int(np.floor(m / min_ratio))
    cands = _stretch_candidates(pos, m, lo, hi)
    if not cands:
        return None
    top = max(f.evidence for f, _, _ in cands)
    if top < STRETCH_EVIDENCE:
        return None
    best, forced, pairs = max(
        (c for c in cands if c[0].evidence >= top - EVIDENCE_TIE),
        key=lambda c: (-_fraction_distance(m / c[0].n), c[0].evidence, -abs(c[0].phase - 0.5)))
    covered = forced | pairs | np.roll(pairs, 1)
    changed = changed_lines(pos, m)
    for f, other_forced, other_pairs in cands:
        if abs(f.n - best.n) <= 0.02 * best.n:
            continue
        # a tie pair of the other fit is explained when the best one covers either line
        extra = line_evidence(changed, other_forced & ~covered,
                              other_pairs & ~covered & ~np.roll(covered, -1))
        if extra >= AMBIGUOUS_EVIDENCE:
            return None
    return best


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


# --------------------------------------------------------------------------- smoothed upscales
#: largest factor tried for smoothed (bilinear-like) upscales
SMOOTH_MAX_SCALE = 4
#: a smoothed k-upscale leaves lines that k-times-fewer samples explain: the residual RMS of
#: that fit over the RMS step between neighbour pixels is at most 0.0045 for bilinear 2x of
#: NES-like frames and at least 0.42 for native ones
SMOOTH_RESIDUAL = 0.05
#: lines sampled per axis to test a smoothed upscale
SMOOTH_LINES = 32
#: recovered colours within this many levels (each channel) of a frequent colour snap to it
PALETTE_RADIUS = 4


@dataclass(frozen=True)
class SmoothFit:
    """A smoothed (bilinear-like) upscale: factor and grid offset per axis, and the fit's
    residual (see ``SMOOTH_RESIDUAL``)."""

    kx: int
    ox: int
    ky: int
    oy: int
    residual: float


@functools.lru_cache(maxsize=64)
def linear_upscale_matrix(m: int, k: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The linear-interpolation k-upscale of ``n = ceil((m + offset) / k)`` samples to m.

    Output j samples the source at ``(j + offset + 0.5) / k - 0.5`` (pixel centres, edges
    clamped), as Pillow's BILINEAR and most GPU scalers do.  Returns ``(A, Q)``: A has shape
    (m, n); Q (m, n) is an orthonormal basis of its columns (``x - (x @ Q) @ Q.T`` is what A
    cannot explain of lines x).
    """
    n = -(-(m + offset) // k)
    x = (np.arange(m) + offset + 0.5) / k - 0.5
    i0 = np.floor(x).astype(np.int64)
    f = x - i0
    a = np.zeros((m, n))
    rows = np.arange(m)
    np.add.at(a, (rows, np.clip(i0, 0, n - 1)), 1 - f)
    np.add.at(a, (rows, np.clip(i0 + 1, 0, n - 1)), f)
    return a, np.linalg.qr(a)[0]


def _busy_lines(a: np.ndarray, axis: int, count: int = SMOOTH_LINES) -> np.ndarray:
    """The ``count`` lines along ``axis`` with the most pixel-to-pixel change, channels summed:
    (L, m) float (the test needs detail; a line across a sky tells nothing)."""
    lines = np.moveaxis(a, axis, 1).astype(np.int32).sum(axis=2)          # (lines, m)
    busy = np.abs(np.diff(lines, axis=1)).sum(axis=1)
    idx = np.sort(np.argsort(-busy, kind="stable")[:count])
    return lines[idx].astype(np.float64)


def _unexplained(x: np.ndarray, k: int, o: int) -> float:
    """RMS of what a linear k-upscale (offset o) cannot explain of lines ``x`` (L, m)."""
    q = linear_upscale_matrix(x.shape[1], k, o)[1]
    return float(np.sqrt(((x - (x @ q) @ q.T) ** 2).mean()))


def _smooth_axis(a: np.ndarray, axis: int, max_scale: int) -> Optional[tuple[float, int, int]]:
    """(residual, k, offset) of the best smoothed-upscale fit along ``axis``, or None.

    Every factor and offset is tried on a few lines; the best is confirmed on more.
    """
    m = a.shape[axis]
    x = _busy_lines(a, axis)
    detail = float(np.sqrt((np.diff(x, axis=1) ** 2).mean()))
    if detail == 0:
        return None
    few = x[::4]
    tries = [(_unexplained(few, k, o), k, o)
             for k in range(2, min(max_scale, m // 2) + 1) for o in range(k)]
    if not tries:
        return None
    r, k, o = min(tries)
    if r >= 2 * SMOOTH_RESIDUAL * detail:
        return None
    return _unexplained(x, k, o) / detail, k, o


def detect_smooth_scale(a: np.ndarray, *, max_scale: int = SMOOTH_MAX_SCALE) -> Optional[SmoothFit]:
    """Detect a smoothed (bilinear-like) integer upscale, or None.

    Such an image has no blocks of one colour, but each line is a linear interpolation of k
    times fewer samples: for every factor k and grid offset, lines sampled across the image are
    fitted by least squares through :func:`linear_upscale_matrix`; the upscale is accepted on
    both axes when the residual is below ``SMOOTH_RESIDUAL`` of the image's pixel-to-pixel
    steps (pixel art, with its sharp edges, cannot be explained so).

    Parameters
    ----------
    a : ndarray, shape (H, W, C), uint8
    """
    fx, fy = _smooth_axis(a, 1, max_scale), _smooth_axis(a, 0, max_scale)
    if fx is None or fy is None or max(fx[0], fy[0]) >= SMOOTH_RESIDUAL:
        return None
    return SmoothFit(kx=fx[1], ox=fx[2], ky=fy[1], oy=fy[2], residual=max(fx[0], fy[0]))


def snap_colours(values: np.ndarray, *, radius: int = PALETTE_RADIUS) -> np.ndarray:
    """Round estimated pixels and snap each to a frequent colour within ``radius`` levels.

    The palette is built greedily from the most frequent rounded colours (seen twice or more,
    none within ``radius`` of one already taken), so estimation noise of a level or two goes
    back to the art's own colours.

    Parameters
    ----------
    values : ndarray, shape (H, W, C), float

    Returns
    -------
    ndarray, shape (H, W, C), uint8
    """
    r = np.clip(np.rint(values), 0, 255).astype(np.int64)
    c = r.shape[-1]
    packed = (r << (8 * np.arange(c))).sum(axis=-1).ravel()
    keys, inv, cnt = np.unique(packed, return_inverse=True, return_counts=True)
    cols = (keys[:, None] >> (8 * np.arange(c))) & 255
    palette: list[np.ndarray] = []
    for i in np.argsort(-cnt, kind="stable"):
        if cnt[i] < 2:
            break
        if all(np.abs(cols[i] - p).max() > radius for p in palette):
            palette.append(cols[i])
    if not palette:
        return r.astype(np.uint8)
    pal = np.array(palette)
    dist = np.abs(cols[:, None, :] - pal[None]).max(axis=-1)
    near = dist.argmin(axis=1)
    snapped = np.where((dist[np.arange(len(cols)), near] <= radius)[:, None], pal[near], cols)
    return snapped[inv.ravel()].reshape(r.shape).astype(np.uint8)


def unsmooth(a: np.ndarray, fit: SmoothFit) -> tuple[np.ndarray, float]:
    """Undo a smoothed upscale: least-squares native samples, snapped to the art's colours.

    Returns
    -------
    native : ndarray, shape (ceil((H + oy) / ky), ceil((W + ox) / kx), C), uint8
    confidence : float
        Share of ``a``'s pixels that enlarging ``native`` the same way reproduces within 2
        levels in every channel (1.0: the estimate explains the whole image).
    """
    h, w = a.shape[:2]
    up_x, px = linear_upscale_matrix(w, fit.kx, fit.ox)[0], _least_squares(w, fit.kx, fit.ox)
    up_y, py = linear_upscale_matrix(h, fit.ky, fit.oy)[0], _least_squares(h, fit.ky, fit.oy)
    native = snap_colours(_apply_separable(a.astype(np.float64), py, px))
    again = _apply_separable(native.astype(np.float64), up_y, up_x)
    confidence = float((np.abs(again - a) <= 2.5).all(axis=-1).mean())
    return native, confidence


@functools.lru_cache(maxsize=16)
def _least_squares(m: int, k: int, offset: int) -> np.ndarray:
    """The (n, m) matrix giving the samples s whose linear k-upscale ``A @ s`` is nearest to a
    line (least squares): ``R^-1 Q^T`` from ``A = Q R``."""
    a, q = linear_upscale_matrix(m, k, offset)
    return np.linalg.solve(q.T @ a, q.T)


def _apply_separable(a: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``rows @ a @ cols.T`` on every channel of ``a`` (H, W, C): shape (R, Cc, C)."""
    h, w, c = a.shape
    t = (rows @ a.reshape(h, w * c)).reshape(-1, w, c)                  # (R, W, C)
    t = cols @ t.transpose(1, 0, 2).reshape(w, -1)                       # (Cc, R*C)
    return t.reshape(cols.shape[0], -1, c).transpose(1, 0, 2)


#: full output sizes (width, height) of consoles and old PCs: a screen of exactly such a size
#: in native pixels has nothing around it to trim (its black edges are the picture)
CONSOLE_SIZES = frozenset({(256, 240), (256, 224), (256, 239), (256, 192), (160, 144),
                           (240, 160), (320, 224), (320, 200)})
#: a letterbox is wide (this share of the lines on each side, or more) or the picture starts
#: sharply after it (this share of its first line, on one side at least, differs from the bar)
WIDE_BAR = 0.08
SHARP_EDGE = 0.5


def _uniform_run(lines: np.ndarray) -> tuple[int, Optional[np.ndarray]]:
    """How many leading lines (axis 0 of ``lines``, shape (L, N, C)) are one colour, and it."""
    c = lines[0, 0]
    same = (lines == c).all(axis=(1, 2))
    n = int(np.argmin(same)) if not same.all() else len(same)
    return n, (c if n else None)


def _bar_pair(lines: np.ndarray, keep: int) -> tuple[int, int]:
    """Letterbox lines to remove at the start and end of axis 0 of ``lines`` (L, N, C)."""
    a, ca = _uniform_run(lines)
    b, cb = _uniform_run(lines[::-1])
    if not (a and b) or not np.array_equal(ca, cb):
        return 0, 0
    if lines.shape[2] == 4 and ca[3] != 255:
        return 0, 0                       # a transparent background is no letterbox
    if abs(a - b) > 1:                    # one side is the bar plus picture of the bar's colour
        a = b = min(a, b)

    def starts_sharply(inner: np.ndarray) -> bool:
        return bool((inner != ca).any(axis=-1).mean() >= SHARP_EDGE)

    if min(a, b) < WIDE_BAR * len(lines) and not (
            starts_sharply(lines[a]) or starts_sharply(lines[len(lines) - 1 - b])):
        return 0, 0
    if a + b > len(lines) - keep:
        return 0, 0
    return a, b


def find_letterbox(a: np.ndarray, *, keep: int = TILE) -> tuple[int, int, int, int]:
    """Find a letterbox: opaque lines of one colour on two opposite sides.

    One side alone (a sky, a floor) is never a letterbox, nor a transparent background, nor
    anything around a screen whose size is in ``CONSOLE_SIZES``.  A bar is centred, so when the
    two sides' uniform runs differ by more than one line, only the narrower run is taken (from
    both).  The bars must be wide (``WIDE_BAR``) or the picture must start sharply after them
    (``SHARP_EDGE``): a thin band of sky on both sides of a frame is picture.  At least
    ``keep`` lines are left on each axis.

    Returns
    -------
    (top, left, bottom, right) : tuple of int
        Lines to remove.
    """
    h, w = a.shape[:2]
    if (w, h) in CONSOLE_SIZES:
        return 0, 0, 0, 0
    t, b = _bar_pair(a, keep)
    left, r = _bar_pair(a.transpose(1, 0, 2), keep)
    return t, left, b, r


def trim_borders(a: np.ndarray, *, keep: int = TILE) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Remove a letterbox (:func:`find_letterbox`).

    Returns the trimmed array and (top, left, bottom, right) lines removed.
    """
    t, left, b, r = find_letterbox(a, keep=keep)
    if not (t or b or left or r):
        return a, (0, 0, 0, 0)
    h, w = a.shape[:2]
    return a[t:h - b, left:w - r], (t, left, b, r)


def window_hashes(a: np.ndarray, size: int = TILE) -> tuple[np.ndarray, np.ndarray]:
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
    hashes, uniform = window_hashes(a, size)

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


# --------------------------------------------------------------------------- HUD strips
#: width of the row segments compared across screens
HUD_SEGMENT = 8
#: a HUD strip is at most this share of the screen's height (top or bottom)
HUD_MAX_SHARE = 1 / 3
#: a segment is fixed when at least this share of a game's screens show it the same
HUD_AGREE = 0.8
#: a HUD row has at least this share of its segments fixed, one of them with detail
HUD_ROW_FIXED = 0.75
#: a row with fewer fixed segments than this share moves with the game: the HUD ends before it
HUD_MOVING = 0.5
#: a HUD strip has at least this many rows with fixed detail (text, icons, a frame)
HUD_MIN_ROWS = 3
#: rows with changing segments (scores, timers) right under the last fixed one join the strip
HUD_COUNTER_ROWS = 8


def hud_bands(h: int) -> int:
    """Rows examined at the top and at the bottom of an h-row screen."""
    return int(h * HUD_MAX_SHARE)


def row_segments(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signatures of the top and bottom bands of a screen, for :func:`find_hud`.

    A segment's signature is its pattern, not its colours: each pixel is labelled with the
    position of the first pixel of the segment that has its colour, so the same text or icon
    on a blue sky and on a black cave signs alike, and every one-colour segment signs 0.

    Parameters
    ----------
    a : ndarray, shape (H, W, C), uint8

    Returns
    -------
    hashes : ndarray, shape (2, B, W // HUD_SEGMENT), uint32
        Per band (top rows from the top down, bottom rows from the bottom up), row and
        ``HUD_SEGMENT``-pixel segment, its pattern (3 bits per pixel).
    uniform : ndarray, shape (2, B, W // HUD_SEGMENT), bool
        The segment is one colour.
    """
    h, w = a.shape[:2]
    b, s = hud_bands(h), w // HUD_SEGMENT
    rows = np.concatenate([a[:b], a[h - b:][::-1]])[:, :s * HUD_SEGMENT, :3].astype(np.uint32)
    v = ((rows[..., 0] << 16) | (rows[..., 1] << 8) | rows[..., 2]).reshape(2 * b, s, HUD_SEGMENT)
    first = np.argmax(v[..., :, None] == v[..., None, :], axis=-1).astype(np.uint32)
    hashes = (first << (3 * np.arange(HUD_SEGMENT, dtype=np.uint32))).sum(axis=-1, dtype=np.uint32)
    return hashes.reshape(2, b, s), (hashes == 0).reshape(2, b, s)


def _hud_rows(hashes: np.ndarray, uniform: np.ndarray) -> int:
    """Rows of HUD at the edge of one band: hashes/uniform of shape (N screens, B, S)."""
    n, b, s = hashes.shape
    srt = np.sort(hashes, axis=0)
    new = np.ones_like(srt, bool)
    new[1:] = srt[1:] != srt[:-1]
    # the most common value per (row, segment) and how many screens show it
    run_id = np.cumsum(new, axis=0)
    best_count = np.zeros((b, s), np.int64)
    mode = srt[0].copy()
    for r in range(1, n + 1):
        count = (run_id == r).sum(axis=0)
        take = count > best_count
        best_count = np.where(take, count, best_count)
        first = np.argmax(run_id == r, axis=0)
        mode = np.where(take, np.take_along_axis(srt, first[None], 0)[0], mode)
    fixed = best_count >= HUD_AGREE * n
    mode_uniform = (uniform & (hashes == mode[None])).any(axis=0)
    share = fixed.mean(axis=1)
    detail = (fixed & ~mode_uniform).any(axis=1) & (share >= HUD_ROW_FIXED)
    quiet = fixed.all(axis=1) & mode_uniform.all(axis=1)
    moving = np.flatnonzero(share < HUD_MOVING)
    if moving.size == 0:
        return 0                              # nothing moves at all: a still game, not a HUD
    end = int(moving[0])
    rows = np.flatnonzero(detail[:end])
    if rows.size < HUD_MIN_ROWS:
        return 0
    cut = int(rows[-1]) + 1
    for y in range(cut, min(end, cut + HUD_COUNTER_ROWS)):
        if not quiet[y]:                       # counters: their digits change, the rest fixed
            cut = y + 1
    return cut


def find_hud(hashes: np.ndarray, uniform: np.ndarray, *,
             min_screens: int = 8) -> tuple[int, int]:
    """Find the HUD strips (score bars) that most screens of one game repeat.

    Rows are cut into ``HUD_SEGMENT``-pixel segments; a segment is fixed when at least
    ``HUD_AGREE`` of the screens show it the same.  From the top edge down (and the bottom edge
    up), the strip runs to the last row with fixed detail (a fixed segment of more than one
    colour, on a row at least ``HUD_ROW_FIXED`` fixed) before the first row that moves (under
    ``HUD_MOVING`` fixed: the playfield), plus the counter rows right under it, and needs
    ``HUD_MIN_ROWS`` such rows.  Nothing is cut when nothing moves (a still game) or from
    fewer than ``min_screens`` screens.

    Parameters
    ----------
    hashes, uniform : ndarray, shape (N, 2, B, S)
        :func:`row_segments` of N screens of one game and size.

    Returns
    -------
    (top, bottom) : tuple of int
        Rows to cut at the top and at the bottom.
    """
    if len(hashes) < min_screens:
        return 0, 0
    return (_hud_rows(hashes[:, 0], uniform[:, 0]), _hud_rows(hashes[:, 1], uniform[:, 1]))


def changed_share(a: np.ndarray, b: np.ndarray) -> float:
    """Share of pixels that differ between two screens of the same shape (1.0 otherwise)."""
    if a.shape != b.shape:
        return 1.0
    return float((a != b).any(axis=-1).mean())
