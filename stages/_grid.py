"""Pure pixel-grid detection for screenshots: how a screen was enlarged, bordered and tiled.

Used by the crop stage (``stages/crop.py``); everything here works on uint8 arrays of shape
(H, W, C) and knows nothing of files.  See docs/data.md ("crop") for the methods and the
figures measured on them.

- :func:`detect_scale` / :func:`downscale`: integer nearest-neighbour upscales (exact, or
  statistically for lossy sources);
- :func:`fit_stretch` / :func:`unstretch`: non-integer nearest stretches along one axis;
- :func:`trim_borders`: a uniform letterbox on two opposite sides;
- :func:`detect_grid`: the phase of the 16-px tile grid.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

TILE = 16
#: lossy upscale detection: off-grid step energy must stay below this fraction of the on-grid one
LOSSY_RATIO = 0.6
#: lossy upscale detection: block-mean reconstruction error must stay below this fraction of the
#: mean step at the block edges, on the weaker axis.  On the example corpus saved as JPEG
#: (q 95/75/50, 186 cases): no false factor, 2 upscales missed at q50 (left at k=1)
LOSSY_RECON = 0.7
#: smallest non-integer stretch undone (closer to 1, a few identical neighbour lines could fake it)
STRETCH_MIN_RATIO = 1.1
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
        for k in range(top, 1, -1):
            ox, oy = _fits_lossy(ex, k), _fits_lossy(ey, k)
            if ox is not None and oy is not None and _blocks_explain(a, k, ox, oy, ex, ey):
                return k, ox, oy
        return 1, 0, 0
    px, py = change_positions(a, 1), change_positions(a, 0)
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
    under which every change position in ``pos`` (as from ``change_positions``) is such a step,
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
