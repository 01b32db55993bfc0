"""NES background legality: sub-palette fitting, remapping and the validator.

A screen (or a set of screens sharing one palette) is NES-background legal when:

* at most 4 sub-palettes of 3 colours plus one shared backdrop colour are used;
* every 16×16 attribute area uses colours of exactly one sub-palette (plus the backdrop);
* every screen has at most 256 unique 8×8 tiles, counted as 2-bit patterns (pixel value
  0 = backdrop, 1..3 = slot in the area's sub-palette), which is what the pattern table holds.

Sub-palette slots are sorted by CIELAB L* (dark to light) so that the same shape in
different palettes shares one pattern.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

from .colour import delta_e76_sq

__all__ = ["NesFit", "fit_subpalettes", "apply_fit", "validate_nes", "infer_subpalettes",
           "area_histograms", "pattern_tiles", "AREA", "MAX_TILES"]

AREA = 16
MAX_TILES = 256


@dataclasses.dataclass
class NesFit:
    """Result of :func:`fit_subpalettes`.

    Attributes
    ----------
    backdrop : int — NES colour number shared by all sub-palettes
    subpalettes : ndarray, shape (4, 3), int64 — NES colour numbers, each row sorted by L*
    error : float — total weighted squared ΔE76 of the fit over all areas
    """
    backdrop: int
    subpalettes: np.ndarray
    error: float

    def as_json(self) -> dict:
        return {"backdrop": int(self.backdrop),
                "subpalettes": [[int(c) for c in s] for s in self.subpalettes]}


def area_histograms(images: Sequence[np.ndarray], k: int, masks: Optional[Sequence[np.ndarray]] = None,
                    *, area: int = AREA) -> np.ndarray:
    """Per-area colour histograms over palette indices.

    Parameters
    ----------
    images : sequence of ndarray (H, W), integer palette indices
    k : int — palette size
    masks : sequence of ndarray (H, W) bool, optional — pixels to count

    Returns
    -------
    ndarray, shape (A, k), float64, areas of all images in order (row-major per image)
    """
    rows = []
    for n, im in enumerate(images):
        h, w = im.shape
        m = None if masks is None else masks[n]
        for y0 in range(0, h, area):
            for x0 in range(0, w, area):
                v = im[y0:y0 + area, x0:x0 + area]
                if m is not None:
                    v = v[m[y0:y0 + area, x0:x0 + area]]
                rows.append(np.bincount(np.asarray(v, np.int64).ravel(), minlength=k)[:k])
    return np.array(rows, np.float64).reshape(-1, k)


def _cost_vec(D: np.ndarray, cols: Sequence[int]) -> np.ndarray:
    return D[:, list(cols)].min(axis=1)


def fit_subpalettes(H: np.ndarray, pal_lab: np.ndarray, allowed: np.ndarray, *, n_sub: int = 4,
                    backdrop: Optional[int] = None, n_backdrops: int = 4) -> NesFit:
    """Fit a backdrop and ``n_sub`` sub-palettes of 3 colours to per-area histograms.

    The cost of an area under a sub-palette S is Σ_c H[a, c] · min_{s ∈ S ∪ {backdrop}} ΔE76²(c, s);
    each area takes its cheapest sub-palette.  When the areas' colour sets already fit a
    backdrop + ``n_sub`` sub-palettes (a legal screen), that exact cover is returned (error 0).
    Otherwise, for each of the ``n_backdrops`` most frequent colours as backdrop (or only
    ``backdrop``), two starts — the areas' dominant colour sets packed greedily, and
    farthest-first — are refined Lloyd-style (assign areas, then coordinate descent over each
    slot among all allowed colours); the cheapest result wins.

    Parameters
    ----------
    H : ndarray, shape (A, K), float — :func:`area_histograms`
    pal_lab : ndarray, shape (K, 3), float64 — CIELAB of every palette entry
    allowed : ndarray of int — NES colour numbers that may be used

    Returns
    -------
    NesFit (sub-palette slots sorted by L*, dark to light)
    """
    D = delta_e76_sq(pal_lab[:, None, :], pal_lab[None])       # (K, K)
    allowed = np.asarray(allowed, np.int64)
    tot = H.sum(axis=0)
    aset = set(allowed.tolist())
    order = [int(c) for c in np.argsort(-tot, kind="stable") if int(c) in aset and tot[c] > 0]
    if backdrop is not None:
        bs = [int(backdrop)]
        exact_bs = bs
    else:
        bs = order[:n_backdrops] or [int(allowed[0])]
        exact_bs = order[:8]
    best: Optional[NesFit] = None
    exact = _exact_cover(H, exact_bs, n_sub)
    if exact is not None:
        best = NesFit(exact[0], exact[1], 0.0)
    else:
        for b in bs:
            for init in (_init_packed(H, b, n_sub), _init_farthest(H, D, b, n_sub)):
                subs, err = _refine(H, D, allowed, b, init)
                if best is None or err < best.error - 1e-9:
                    best = NesFit(b, subs, err)
    assert best is not None
    best.subpalettes = np.array([sorted(s, key=lambda c: (pal_lab[c, 0], c))
                                 for s in best.subpalettes], np.int64)
    return best


def _top3(h: np.ndarray, b: int) -> list[int]:
    hh = h.copy()
    hh[b] = 0
    order = np.argsort(-hh, kind="stable")
    top = [int(c) for c in order[:3] if hh[c] > 0]
    while len(top) < 3:
        top.append(top[-1] if top else b)
    return top


def _init_farthest(H: np.ndarray, D: np.ndarray, b: int, n_sub: int) -> list[list[int]]:
    """Farthest-first: the heaviest area's colours, then the worst-served area's, ..."""
    subs = [_top3(H[int(np.argmax(H.sum(axis=1)))], b)]
    while len(subs) < n_sub:
        costs = np.stack([H @ _cost_vec(D, [b] + s) for s in subs], axis=1).min(axis=1)
        j = int(np.argmax(costs))
        subs.append(list(subs[-1]) if costs[j] <= 0 else _top3(H[j], b))
    return subs


def _init_packed(H: np.ndarray, b: int, n_sub: int) -> list[list[int]]:
    """Greedy packing of the areas' dominant colour sets, most frequent sets first."""
    weight: dict[frozenset, float] = {}
    for h in H:
        hh = h.copy()
        hh[b] = 0
        top = [int(c) for c in np.argsort(-hh, kind="stable")[:3] if hh[c] > 0]
        if top:
            key = frozenset(top)
            weight[key] = weight.get(key, 0.0) + float(hh[top].sum())
    bins: list[frozenset] = []
    for key in sorted(weight, key=lambda k: (-weight[k], sorted(k))):
        for i, bn in enumerate(bins):
            if len(bn | key) <= 3:
                bins[i] = bn | key
                break
        else:
            if len(bins) < n_sub:
                bins.append(key)
    return _rows(bins, b, n_sub)


def _rows(bins: Sequence[frozenset], b: int, n_sub: int) -> list[list[int]]:
    subs = []
    for bn in bins:
        row = sorted(bn)
        while len(row) < 3:
            row.append(row[-1])
        subs.append(row)
    while len(subs) < n_sub:
        subs.append(list(subs[-1]) if subs else [b, b, b])
    return subs


def _refine(H: np.ndarray, D: np.ndarray, allowed: np.ndarray, b: int, subs: list[list[int]],
            iters: int = 8) -> tuple[np.ndarray, float]:
    """Lloyd-style refinement: assign areas, then coordinate descent over each slot."""
    A = len(H)
    subs = [list(s) for s in subs]
    cand = [int(c) for c in allowed if c != b]
    prev = np.inf
    for _ in range(iters):
        E = np.stack([H @ _cost_vec(D, [b] + s) for s in subs], axis=1)      # (A, n_sub)
        assign = np.argmin(E, axis=1)
        total = float(E[np.arange(A), assign].sum())
        if total >= prev - 1e-9 or total <= 0:
            break
        prev = total
        for si in range(len(subs)):
            Hs = H[assign == si]
            if len(Hs) == 0:
                continue
            cur = subs[si]
            best = float((Hs @ _cost_vec(D, [b] + cur)).sum())
            improved = True
            while improved:
                improved = False
                for slot in range(3):
                    others = [b] + cur[:slot] + cur[slot + 1:]
                    base = D[:, others].min(axis=1)                        # (K,)
                    allc = np.minimum(base[:, None], D[:, cand])           # (K, ncand)
                    costs = (Hs @ allc).sum(axis=0)                        # (ncand,)
                    j = int(np.argmin(costs))
                    if costs[j] < best - 1e-9:
                        best = float(costs[j])
                        cur[slot] = cand[j]
                        improved = True
    E = np.stack([H @ _cost_vec(D, [b] + s) for s in subs], axis=1)
    return np.array(subs, np.int64), float(E.min(axis=1).sum())


def _exact_cover(H: np.ndarray, bs: Sequence[int], n_sub: int) -> Optional[tuple[int, list]]:
    """A backdrop + sub-palettes that represent every area with zero error, if one exists."""
    area_sets = {frozenset(np.flatnonzero(h > 0).tolist()) for h in H}
    for b in bs:
        sets = {t - {b} for t in area_sets}
        if any(len(t) > 3 for t in sets):
            continue
        bins = _pack_sets(_maximal(sets), n_sub)
        if bins is not None:
            return int(b), _rows(bins, b, n_sub)
    return None


def apply_fit(src_lab: np.ndarray, fit: NesFit, pal_lab: np.ndarray, *, area: int = AREA,
              mask: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Remap one image onto a fitted NES palette set.

    Each area tries every sub-palette (with the backdrop), maps each pixel to the nearest of
    its 4 colours (ΔE76 to the *source* colour) and keeps the sub-palette with least error.
    Transparent pixels (``mask`` False) become the backdrop.

    Parameters
    ----------
    src_lab : ndarray, shape (H, W, 3), float64 — colours to represent (source or cleaned)

    Returns
    -------
    idx : ndarray, shape (H, W), uint8 — NES colour numbers
    attr : ndarray, shape (ceil(H/16), ceil(W/16)), uint8 — sub-palette per area
    err : ndarray, shape like ``attr``, float64 — mean ΔE76 per area
    """
    h, w = src_lab.shape[:2]
    ah, aw = (h + area - 1) // area, (w + area - 1) // area
    idx = np.full((h, w), fit.backdrop, np.uint8)
    attr = np.zeros((ah, aw), np.uint8)
    err = np.zeros((ah, aw), np.float64)
    sets = [np.array([fit.backdrop] + [int(c) for c in s], np.int64) for s in fit.subpalettes]
    for ay in range(ah):
        for ax in range(aw):
            ys, xs = slice(ay * area, (ay + 1) * area), slice(ax * area, (ax + 1) * area)
            x = src_lab[ys, xs]
            m = np.ones(x.shape[:2], bool) if mask is None else mask[ys, xs]
            if not m.any():
                continue
            best = None
            for si, cols in enumerate(sets):
                d = delta_e76_sq(x[:, :, None, :], pal_lab[cols][None, None])   # (h, w, 4)
                j = np.argmin(d, axis=2)
                dm = np.sqrt(np.take_along_axis(d, j[..., None], 2)[..., 0])
                e = float(dm[m].sum())
                if best is None or e < best[0]:
                    best = (e, si, cols[j], float(dm[m].mean()))
            assert best is not None
            blk = np.where(m, best[2], fit.backdrop).astype(np.uint8)
            idx[ys, xs] = blk
            attr[ay, ax] = best[1]
            err[ay, ax] = best[3]
    return idx, attr, err


def pattern_tiles(idx: np.ndarray, attr: np.ndarray, backdrop: int, subpalettes: np.ndarray,
                  *, area: int = AREA) -> np.ndarray:
    """2-bit pattern values of a legal screen.

    Parameters
    ----------
    idx : ndarray, shape (H, W) with H, W multiples of 8 — NES colour numbers
    attr : ndarray, shape (ceil(H/16), ceil(W/16)) — sub-palette per area

    Returns
    -------
    ndarray, shape (H/8 * W/8, 8, 8), uint8 values 0..3 (row-major tile order)

    Raises
    ------
    ValueError if a pixel's colour is not in its area's sub-palette or the backdrop.
    """
    h, w = idx.shape
    if h % 8 or w % 8:
        raise ValueError(f"screen size {w}x{h} is not a multiple of 8")
    vals = np.zeros((h, w), np.uint8)
    big = np.repeat(np.repeat(attr, area, 0), area, 1)[:h, :w]
    ok = idx == backdrop
    for s in range(len(subpalettes)):
        sel = big == s
        for slot in range(2, -1, -1):       # the first slot wins if a sub-palette repeats a colour
            hit = sel & (idx == subpalettes[s][slot]) & ~(idx == backdrop)
            vals[hit] = slot + 1
            ok |= hit
    if not ok.all():
        y, x = np.argwhere(~ok)[0]
        raise ValueError(f"pixel ({x}, {y}) colour ${int(idx[y, x]):02X} is not in sub-palette "
                         f"{int(big[y, x])} of its 16x16 area nor the backdrop")
    return vals.reshape(h // 8, 8, w // 8, 8).transpose(0, 2, 1, 3).reshape(-1, 8, 8)


def _maximal(sets) -> list:
    """The non-empty sets (of <= 3 colours) not contained in another one; O(n)."""
    from itertools import combinations

    sets = {t for t in sets if t}
    dominated = set()
    for t in sets:
        for k in range(1, len(t)):
            dominated.update(frozenset(c) for c in combinations(sorted(t), k))
    return [t for t in sets if t not in dominated]


def _pack_sets(sets: list, max_sub: int, limit: int = 200_000) -> Optional[list]:
    """Group colour sets into <= max_sub bins whose unions have <= 3 colours (backtracking)."""
    if sum(1 for t in sets if len(t) == 3) > max_sub:
        return None                                   # each full set needs a bin of its own
    sets = sorted(sets, key=lambda t: (-len(t), sorted(t)))
    bins: list[frozenset] = []
    nodes = 0

    def place(i: int) -> bool:
        nonlocal nodes
        nodes += 1
        if nodes > limit:
            return False
        if i == len(sets):
            return True
        s = sets[i]
        tried = set()
        for k in range(len(bins)):
            u = bins[k] | s
            if len(u) <= 3 and u not in tried:
                tried.add(u)
                old = bins[k]
                bins[k] = u
                if place(i + 1):
                    return True
                bins[k] = old
        if len(bins) < max_sub:
            bins.append(s)
            if place(i + 1):
                return True
            bins.pop()
        return False

    return list(bins) if place(0) else None


def infer_subpalettes(images: Sequence[np.ndarray], *, area: int = AREA,
                      backdrop: Optional[int] = None, max_sub: int = 4) -> Optional[tuple[int, np.ndarray]]:
    """Find a backdrop and <= ``max_sub`` sub-palettes that make every area legal, if any.

    Tries each colour (most frequent first, or only ``backdrop``) as backdrop; the areas'
    remaining colour sets (<= 3 colours each), minus those contained in another, are packed
    into <= ``max_sub`` groups of <= 3 colours by a backtracking search (bounded; it finds a
    cover whenever one exists for ordinary screens).  Returns ``(backdrop, subpalettes
    (max_sub, 3) int64)`` with each row sorted, or None when no cover is found.
    """
    counts: dict[int, int] = {}
    area_sets: set = set()
    for im in images:
        h, w = im.shape
        for y0 in range(0, h, area):
            for x0 in range(0, w, area):
                u, c = np.unique(im[y0:y0 + area, x0:x0 + area], return_counts=True)
                area_sets.add(frozenset(int(v) for v in u))
                for v, n in zip(u, c):
                    counts[int(v)] = counts.get(int(v), 0) + int(n)
    cands = [backdrop] if backdrop is not None else sorted(counts, key=lambda v: (-counts[v], v))
    for b in cands:
        sets = {t - {b} for t in area_sets}
        if any(len(t) > 3 for t in sets):
            continue
        bins = _pack_sets(_maximal(sets), max_sub)
        if bins is None:
            continue
        return int(b), np.array(_rows(bins, b, max_sub), np.int64)
    return None


def _attr_for(im: np.ndarray, backdrop: int, subs: np.ndarray, area: int) -> tuple[np.ndarray, list]:
    h, w = im.shape
    ah, aw = (h + area - 1) // area, (w + area - 1) // area
    attr = np.zeros((ah, aw), np.uint8)
    bad = []
    sets = [set(int(c) for c in s) | {backdrop} for s in subs]
    for ay in range(ah):
        for ax in range(aw):
            u = set(int(v) for v in np.unique(im[ay * area:(ay + 1) * area, ax * area:(ax + 1) * area]))
            fits = [i for i, s in enumerate(sets) if u <= s]
            if fits:
                attr[ay, ax] = fits[0]
            else:
                bad.append((ax, ay, sorted(u)))
    return attr, bad


def validate_nes(images: Sequence[np.ndarray], *, backdrop: Optional[int] = None,
                 subpalettes: Optional[np.ndarray] = None, allowed: Optional[Sequence[int]] = None,
                 area: int = AREA, max_tiles: int = MAX_TILES) -> dict:
    """Check NES background legality of one screen or a set sharing one palette set.

    Parameters
    ----------
    images : sequence of ndarray (H, W), integer NES colour numbers
    backdrop, subpalettes : optional — the palette set to check against (inferred if None)
    allowed : optional — NES colour numbers that may appear (e.g. excluding $0D)

    Returns
    -------
    dict with ``legal`` (bool), ``problems`` (list of str), ``backdrop``, ``subpalettes``,
    ``tiles_per_image`` (unique 8×8 patterns per image), ``attributes`` (list of (h, w) arrays)
    """
    problems: list[str] = []
    images = [np.asarray(im) for im in images]
    for n, im in enumerate(images):
        if im.ndim != 2:
            problems.append(f"image {n}: expected a 2-D index array, got shape {im.shape}")
        elif im.shape[0] % area or im.shape[1] % area:
            problems.append(f"image {n}: size {im.shape[1]}x{im.shape[0]} is not a multiple of {area}")
        elif im.size and int(im.max()) > 63:
            problems.append(f"image {n}: value {int(im.max())} is not an NES colour number (0..63)")
    if allowed is not None:
        al = set(int(a) for a in allowed)
        for n, im in enumerate(images):
            bad = sorted(set(np.unique(im).tolist()) - al)
            if bad:
                problems.append(f"image {n}: uses colours that are not allowed: "
                                + ", ".join(f"${v:02X}" for v in bad))
    res = {"legal": False, "problems": problems, "backdrop": None, "subpalettes": None,
           "tiles_per_image": [], "attributes": []}
    if problems:
        return res
    if subpalettes is None:
        inf = infer_subpalettes(images, area=area, backdrop=backdrop)
        if inf is None:
            problems.append("no backdrop + 4 sub-palettes of 3 colours cover every 16x16 area")
            return res
        backdrop, subpalettes = inf
    else:
        subpalettes = np.asarray(subpalettes, np.int64)
        if subpalettes.shape != (4, 3) or backdrop is None:
            problems.append(f"need a backdrop and 4 sub-palettes of 3 colours, got "
                            f"{subpalettes.shape}")
            return res
    res["backdrop"] = int(backdrop)
    res["subpalettes"] = subpalettes.tolist()
    for n, im in enumerate(images):
        attr, bad = _attr_for(im, int(backdrop), subpalettes, area)
        res["attributes"].append(attr)
        for ax, ay, cols in bad[:5]:
            problems.append(f"image {n}: area ({ax}, {ay}) uses "
                            + " ".join(f"${c:02X}" for c in cols) + ", which no sub-palette holds")
        if bad:
            res["tiles_per_image"].append(None)
            continue
        pats = pattern_tiles(im, attr, int(backdrop), subpalettes, area=area)
        nt = len(np.unique(pats.reshape(len(pats), -1), axis=0))
        res["tiles_per_image"].append(nt)
        if nt > max_tiles:
            problems.append(f"image {n}: {nt} unique 8x8 tiles, more than the {max_tiles} a "
                            f"pattern table holds; merge near-identical tiles or use a smaller screen")
    res["legal"] = not problems
    return res


def merge_patterns(pats: np.ndarray, max_tiles: int = MAX_TILES) -> tuple[np.ndarray, dict]:
    """Merge near-identical 8×8 patterns until at most ``max_tiles`` unique ones remain.

    Greedy: repeatedly replace the rarer tile of the closest pair (fewest differing pixels;
    ties: the rarer tile, then the lower id) by the other one.

    Parameters
    ----------
    pats : ndarray, shape (N, 8, 8), uint8 values 0..3 — :func:`pattern_tiles`

    Returns
    -------
    merged : ndarray, shape (N, 8, 8), uint8
    info : dict — ``unique_before``, ``unique_after``, ``merges``, ``max_pixels_changed`` (the
        error bound: no tile changes in more than this many of its 64 pixels)
    """
    flat = pats.reshape(len(pats), 64)
    uniq, inv, counts = np.unique(flat, axis=0, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    n = len(uniq)
    info = {"unique_before": int(n), "unique_after": int(n), "merges": 0, "max_pixels_changed": 0}
    if n <= max_tiles:
        return pats.copy(), info
    dist = (uniq[:, None, :] != uniq[None, :, :]).sum(axis=2).astype(np.float64)
    np.fill_diagonal(dist, np.inf)
    target = np.arange(n)
    cnt = counts.astype(np.float64)
    alive = np.ones(n, bool)
    worst = 0
    while alive.sum() > max_tiles:
        # cost: pixel distance, then prefer moving the rarer tile
        i, j = np.unravel_index(np.argmin(dist), dist.shape)
        src, dst = (i, j) if (cnt[i], i) <= (cnt[j], j) else (j, i)
        worst = max(worst, int(dist[i, j]))
        target[target == src] = dst
        cnt[dst] += cnt[src]
        alive[src] = False
        dist[src, :] = np.inf
        dist[:, src] = np.inf
        info["merges"] += 1
    # distance of every original tile to its final representative
    final = target[inv]
    changed = (uniq[inv] != uniq[final]).sum(axis=1)
    info["unique_after"] = int(alive.sum())
    info["max_pixels_changed"] = int(changed.max())
    del worst
    return uniq[final].reshape(-1, 8, 8).astype(np.uint8), info


def patterns_to_image(pats: np.ndarray, attr: np.ndarray, backdrop: int, subpalettes: np.ndarray,
                      h: int, w: int, *, area: int = AREA) -> np.ndarray:
    """Inverse of :func:`pattern_tiles`: 2-bit tiles + attributes back to NES colour numbers.

    Returns
    -------
    ndarray, shape (h, w), uint8
    """
    vals = pats.reshape(h // 8, w // 8, 8, 8).transpose(0, 2, 1, 3).reshape(h, w)
    big = np.repeat(np.repeat(attr, area, 0), area, 1)[:h, :w]
    cols = np.concatenate([np.full((len(subpalettes), 1), backdrop), np.asarray(subpalettes)], 1)
    return cols[big, vals].astype(np.uint8)
