"""Precision and recall of the copy judge on pairs built from real screens.

Training tiles: every distinct 16x16 grid tile of the native-size example screens
(``examples/screens/*.png`` without ``_x2`` / ``_x3`` upscales) of three of the four games;
the fourth game (``ansimuz_miami``) is held out for unrelated tiles.  Generated tiles, each with
its truth (copy of a known training tile, or not a copy):

positives   exact copies (structured sources), exact copies of flat sources, flipped copies
            (H, V or HV, asymmetric sources), palette swaps (every colour replaced one-to-one by a
            visibly different one), one-pixel edits, three-pixel edits, 1-px shifted copies (cut
            from the screen one pixel off the grid, so the revealed column or row is the real
            neighbouring art)
negatives   structured tiles of the held-out game, near-flat noisy skies (one colour plus 1..20
            pixels of a similar or a dark colour), flat tiles in colours no training tile has,
            near-flat tiles of the held-out game

"Structured" sources have at least 10 % of neighbour pairs in different colours and 3 colours
(palette swaps: 2 colours), a rule independent of the judge's own thresholds.

Ours: :func:`tilesets.copies.judge_copies` with flips (a tile is a copy when its call's kind is
not ``NOT_COPY``).  Baseline: the rule dedupe used before, a greyscale phash of the tile in any
orientation within 6 bits of a training tile's, tiles whose dominant colour covers >= 95 % never
called copies.  Both are scored per generated tile.

Prints a table per class, then ``copies: precision=<p> recall=<r>`` and
``copies_f1: ours=<f1> baseline=<f1> ratio=<ours/baseline>``.  ``--sheet PATH`` writes the
evidence sheet of our calls.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from palettes.colour import srgb_to_lab  # noqa: E402
from tilesets.cells import ORIENTATIONS, flip_tile  # noqa: E402
from tilesets.copies import TrainingIndex, evidence_sheet, judge_copies  # noqa: E402
from tilesets.hashindex import HashIndex  # noqa: E402
from tilesets.phash import hash_tiles  # noqa: E402

T = 16
HELD_OUT = "ansimuz_miami"
BASELINE_DISTANCE = 6
BASELINE_FLAT = 0.95


def _orient(tiles: np.ndarray, code: int) -> np.ndarray:
    """Tiles (..., T, T, C) in orientation ``code`` (0..3, the index of ``ORIENTATIONS``)."""
    return flip_tile(tiles, ORIENTATIONS[code])


def load_screens() -> dict[str, list[np.ndarray]]:
    from PIL import Image

    games: dict[str, list[np.ndarray]] = {}
    for path in sorted((ROOT / "examples" / "screens").glob("*.png")):
        if "_x" in path.stem:
            continue
        game = path.stem.rsplit("_", 1)[0]
        with Image.open(path) as im:
            games.setdefault(game, []).append(np.asarray(im.convert("RGB")))
    return games


def grid_tiles(screen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grid tiles (N, T, T, 3) and their (y, x) pixel origins."""
    h, w = screen.shape[0] // T * T, screen.shape[1] // T * T
    ys, xs = np.meshgrid(np.arange(0, h, T), np.arange(0, w, T), indexing="ij")
    org = np.stack([ys.ravel(), xs.ravel()], 1)
    tiles = np.stack([screen[y:y + T, x:x + T] for y, x in org])
    return tiles, org


def distinct(tiles: np.ndarray) -> np.ndarray:
    flat = np.ascontiguousarray(tiles).reshape(len(tiles), -1)
    _, first = np.unique(flat.view(np.dtype((np.void, flat.shape[1]))).ravel(), return_index=True)
    return np.sort(first)


def edge_share(tiles: np.ndarray) -> np.ndarray:
    t = tiles.astype(np.int32)
    code = (t[..., 0] << 16) | (t[..., 1] << 8) | t[..., 2]
    d = (code[:, 1:] != code[:, :-1]).sum((1, 2)) + (code[:, :, 1:] != code[:, :, :-1]).sum((1, 2))
    return d / (2 * T * (T - 1))


def n_colours(tiles: np.ndarray) -> np.ndarray:
    t = tiles.astype(np.int64)
    code = ((t[..., 0] << 16) | (t[..., 1] << 8) | t[..., 2]).reshape(len(tiles), -1)
    s = np.sort(code, 1)
    return (s[:, 1:] != s[:, :-1]).sum(1) + 1


def dominant_share(tiles: np.ndarray) -> np.ndarray:
    t = tiles.astype(np.int64)
    code = ((t[..., 0] << 16) | (t[..., 1] << 8) | t[..., 2]).reshape(len(tiles), -1)
    out = np.zeros(len(tiles))
    for i, row in enumerate(code):
        out[i] = np.unique(row, return_counts=True)[1].max() / row.size
    return out


def best_share_differing(tiles: np.ndarray, training: np.ndarray, max_shift: int = 2) -> np.ndarray:
    """Brute force: the smallest share of differing pixels (exact RGB) of each tile against
    every training tile, over the four orientations and shifts up to ``max_shift``."""
    pk = lambda a: ((a[..., 0].astype(np.uint32) << 16) | (a[..., 1].astype(np.uint32) << 8)
                    | a[..., 2])
    g = pk(tiles)
    best = np.ones(len(tiles))
    for c in range(4):
        a = pk(np.ascontiguousarray(_orient(training, c)))
        for dy in range(-max_shift, max_shift + 1):
            for dx in range(-max_shift, max_shift + 1):
                gy0, gy1 = max(0, -dy), T - max(0, dy)
                gx0, gx1 = max(0, -dx), T - max(0, dx)
                gs = g[:, gy0:gy1, gx0:gx1].reshape(len(g), 1, -1)
                ts = a[:, gy0 + dy:gy1 + dy, gx0 + dx:gx1 + dx].reshape(1, len(a), -1)
                for s in range(0, len(g), 16):
                    d = (gs[s:s + 16] != ts).mean(-1).min(1)
                    best[s:s + 16] = np.minimum(best[s:s + 16], d)
    return best


def lab_dist(a, b) -> float:
    return float(np.sqrt(((srgb_to_lab(np.asarray(a)) - srgb_to_lab(np.asarray(b))) ** 2).sum()))


def far_colour(rng, avoid, min_de: float = 12.0) -> np.ndarray:
    while True:
        c = rng.integers(0, 256, 3).astype(np.uint8)
        if all(lab_dist(c, a) > min_de for a in avoid):
            return c


def palette_swap(tile: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``tile`` (T, T, 3) with every colour replaced one-to-one by a random colour more than
    12 ΔE76 from the colour it replaces and from the replacements drawn before it."""
    uniq = np.unique(tile.reshape(-1, 3), axis=0)
    new = []
    for c in uniq:
        new.append(far_colour(rng, [c] + new, 12.0))
    out = tile.copy()
    for c, nc in zip(uniq, new):
        out[(tile == c).all(-1)] = nc
    return out


def build(seed: int = 0):
    """Training tiles and the labelled generated tiles."""
    rng = np.random.default_rng(seed)
    games = load_screens()
    train_parts, train_src, new_screens = [], [], []
    for game, screens in sorted(games.items()):
        if game == HELD_OUT:
            continue
        if len(screens) > 1:
            new_screens.append(screens[-1])          # a new screen of a training game
        for si, scr in enumerate(screens[:-1] if len(screens) > 1 else screens):
            tiles, org = grid_tiles(scr)
            train_parts.append(tiles)
            train_src += [(game, si, int(y), int(x)) for y, x in org]
    all_train = np.concatenate(train_parts)
    keep = distinct(all_train)
    training = all_train[keep]
    src = [train_src[k] for k in keep]
    where = {s: i for i, s in enumerate(src)}
    edges, cols = edge_share(training), n_colours(training)
    structured = np.flatnonzero((edges >= 0.10) & (cols >= 3))
    two_col = np.flatnonzero((edges >= 0.10) & (cols >= 2))
    flat_src = np.flatnonzero(cols == 1)
    train_codes = {bytes(t) for t in training.reshape(len(training), -1)}

    items = []                                  # (tile, class, positive, source row)

    def add(tile, cls, pos, source=-1):
        items.append((np.ascontiguousarray(tile, np.uint8), cls, pos, source))

    n = 100
    for i in rng.choice(structured, n, replace=False):
        add(training[i], "exact copy", True, i)
    for i in rng.choice(flat_src, min(30, len(flat_src)), replace=False):
        add(training[i], "exact copy, flat", True, i)
    done = 0
    for i in rng.permutation(structured):
        code = int(rng.integers(1, 4))
        f = _orient(training[i], code)
        if (f == training[i]).all():
            continue
        add(f, "flipped copy", True, i)
        done += 1
        if done == n:
            break
    for i in rng.choice(two_col, n, replace=False):
        add(palette_swap(training[i], rng), "palette swap", True, i)
    for i in rng.choice(two_col, n // 2, replace=False):
        out = palette_swap(training[i], rng)
        add(_orient(out, int(rng.integers(1, 4))), "flipped palette swap", True, i)
    for i in rng.choice(structured, n // 2, replace=False):
        t = training[i]
        out = t.astype(int)
        for c in np.unique(t.reshape(-1, 3), axis=0):      # another palette variant
            out[(t == c).all(-1)] += rng.integers(-2, 3, 3)
        add(out.clip(0, 255), "copy in a palette variant (each colour +-2)", True, i)
    for k_px, cls in ((1, "one-pixel edit"), (3, "three-pixel edit")):
        for i in rng.choice(structured, n, replace=False):
            out = training[i].copy()
            pal = np.unique(out.reshape(-1, 3), axis=0)
            for p in rng.choice(T * T, k_px, replace=False):
                y, x = divmod(int(p), T)
                others = [c for c in pal if lab_dist(c, out[y, x]) > 10]
                out[y, x] = others[rng.integers(len(others))] if others else 255 - out[y, x]
            add(out, cls, True, i)
    # shifted copies: the art off the grid, cut from the screen itself (real revealed pixels)
    for step, cls, count in ((1, "1-px shifted copy", n),
                             (2, "2-px shifted copy (x and y)", n // 2)):
        done = 0
        for i in rng.permutation(structured):
            game, si, y, x = src[i]
            scr = games[game][si]
            if step == 1:
                dx, dy = [(1, 0), (-1, 0), (0, 1), (0, -1)][int(rng.integers(4))]
            else:
                dx, dy = int(rng.choice([-2, 2])), int(rng.choice([-2, 2]))
            y2, x2 = y + dy, x + dx
            if y2 < 0 or x2 < 0 or y2 + T > scr.shape[0] or x2 + T > scr.shape[1]:
                continue
            add(scr[y2:y2 + T, x2:x2 + T], cls, True, i)
            done += 1
            if done == count:
                break
    # negatives
    held = np.concatenate([grid_tiles(s)[0] for s in games[HELD_OUT]])
    held = held[distinct(held)]
    held = np.array([t for t in held if bytes(t.reshape(-1)) not in train_codes])
    he, hc = edge_share(held), n_colours(held)
    hs = np.flatnonzero((he >= 0.10) & (hc >= 3))
    for i in rng.choice(hs, min(150, len(hs)), replace=False):
        add(held[i], "unrelated structured (held-out game)", False)
    hf = np.flatnonzero(he < 0.05)
    for i in rng.choice(hf, min(50, len(hf)), replace=False):
        add(held[i], "unrelated near-flat (held-out game)", False)
    # new screens of the training games: tiles unlike every training tile (more than 20 % of the
    # compared pixels differ in every orientation and shift up to 2 px, brute force), so surely
    # not copies
    fresh = np.concatenate([grid_tiles(sc)[0] for sc in new_screens])
    fresh = fresh[distinct(fresh)]
    fresh = fresh[(edge_share(fresh) >= 0.10) & (n_colours(fresh) >= 3)]
    unlike = np.flatnonzero(best_share_differing(fresh, training) > 0.20)
    for i in rng.choice(unlike, min(150, len(unlike)), replace=False):
        add(fresh[i], "new screen of a training game, unlike any", False)
    # simple two-colour patterns (a straight split, a lone pixel) in other colours
    simple = np.flatnonzero((cols == 2) & (edges < 0.05))
    for i in rng.choice(simple, min(50, len(simple)), replace=False):
        add(palette_swap(training[i], rng), "simple two-colour pattern, recoloured", False)
    flat_colours = [training[i, 0, 0] for i in flat_src]
    for j in range(100):
        if j % 2 == 0:      # sky blue
            base = np.array([rng.integers(60, 140), rng.integers(140, 200), rng.integers(220, 256)],
                            np.uint8)
        else:               # any colour
            base = rng.integers(0, 256, 3).astype(np.uint8)
        out = np.broadcast_to(base, (T, T, 3)).copy()
        k = int(rng.integers(1, 21))
        noise = (base.astype(int) + rng.integers(-14, 15, 3)).clip(0, 255).astype(np.uint8) \
            if j % 4 < 2 else (base // 3).astype(np.uint8)
        for p in rng.choice(T * T, k, replace=False):
            out[p // T, p % T] = noise
        if bytes(out.reshape(-1)) in train_codes:
            continue
        add(out, "near-flat noisy sky", False)
    for _ in range(50):
        c = far_colour(rng, flat_colours, 3.0)
        add(np.broadcast_to(c, (T, T, 3)), "flat, colour not in training", False)
    return training, items


def baseline_calls(generated: np.ndarray, training: np.ndarray) -> np.ndarray:
    """The greyscale-phash rule: any orientation within 6 bits, flat tiles never copies."""
    th = hash_tiles(training, "phash")
    index = HashIndex(th)
    var = np.stack([_orient(generated, c) for c in range(4)], 1)
    gh = hash_tiles(np.ascontiguousarray(var).reshape((-1, T, T, 3)), "phash")
    _, d = index.nearest(gh)
    best = d.reshape(-1, 4).min(1)
    return (best <= BASELINE_DISTANCE) & (dominant_share(generated) < BASELINE_FLAT)


def scores(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    tp = int((pred & truth).sum())
    fp = int((pred & ~truth).sum())
    fn = int((~pred & truth).sum())
    p = tp / max(tp + fp, 1)
    r = tp / max(tp + fn, 1)
    f1 = 2 * p * r / max(p + r, 1e-12)
    return p, r, f1


def scale(m: int, seed: int = 0) -> None:
    """Time the index and the judge with ``m`` training tiles: 16x16 windows at any pixel
    offset of every example screen (real art, mostly distinct), 1,000 queries of which half
    are copies (a third edited by a pixel, a third shifted by one)."""
    rng = np.random.default_rng(seed)
    screens = [s for g in load_screens().values() for s in g]
    per = -(-m // len(screens))
    parts = []
    for scr in screens:
        ys = rng.integers(0, scr.shape[0] - T + 1, per)
        xs = rng.integers(0, scr.shape[1] - T + 1, per)
        parts.append(np.stack([scr[y:y + T, x:x + T] for y, x in zip(ys, xs)]))
    training = np.concatenate(parts)[:m]
    q = rng.choice(m, 500, replace=False)
    gen = training[q].copy()
    gen[::3, 5, 5] = 255 - gen[::3, 5, 5]
    gen[1::3] = np.concatenate([gen[1::3, :, 1:], gen[1::3, :, -1:]], axis=2)
    novel = np.concatenate([grid_tiles(s)[0] for s in screens])[:500].copy()
    novel[:, ::2, ::2] = novel[:, 1::2, 1::2]            # altered art: rarely a copy
    t0 = time.perf_counter()
    index = TrainingIndex(training, flips=True)
    t1 = time.perf_counter()
    calls = judge_copies(np.concatenate([gen, novel]), flips=True, index=index)
    t2 = time.perf_counter()
    found = sum(c.is_copy for c in calls[:500])
    print(f"scale: {m} training tiles: index {t1 - t0:.1f} s, judge 1,000 tiles {t2 - t1:.1f} s; "
          f"{found}/500 planted copies found, {sum(c.is_copy for c in calls[500:])}/500 of the "
          f"altered tiles called copies")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sheet", type=Path, help="write our evidence sheet (copy calls) here")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale", type=int, default=0,
                    help="also time the index and the judge with this many training tiles")
    args = ap.parse_args()
    if args.scale:
        scale(args.scale, args.seed)
    training, items = build(args.seed)
    gen = np.stack([it[0] for it in items])
    cls = [it[1] for it in items]
    truth = np.array([it[2] for it in items])
    source = np.array([it[3] for it in items])
    t0 = time.perf_counter()
    index = TrainingIndex(training, flips=True)
    t1 = time.perf_counter()
    calls = judge_copies(gen, flips=True, index=index)
    t2 = time.perf_counter()
    ours = np.array([c.is_copy for c in calls])
    base = baseline_calls(gen, training)
    print(f"training tiles: {len(training)} distinct; generated tiles: {len(gen)} "
          f"({int(truth.sum())} copies, {int((~truth).sum())} not); index {t1 - t0:.2f} s, "
          f"judge {t2 - t1:.2f} s")
    print(f"{'class':40s} {'n':>4s} {'truth':>6s} {'ours':>6s} {'phash':>6s}  (share called copy)")
    for c in dict.fromkeys(cls):
        m = np.array([x == c for x in cls])
        print(f"{c:40s} {int(m.sum()):4d} {'copy' if truth[m][0] else 'not':>6s} "
              f"{ours[m].mean():6.2f} {base[m].mean():6.2f}")
    right = np.array([c.training == s for c, s in zip(calls, source)])
    pos_called = ours & truth
    print(f"ours: the named training tile is the true source in "
          f"{int((right & pos_called).sum())} of {int(pos_called.sum())} correct copy calls")
    p, r, f1 = scores(ours, truth)
    bp, br, bf1 = scores(base, truth)
    print(f"phash rule (distance <= {BASELINE_DISTANCE}, flat excluded): precision={bp:.3f} "
          f"recall={br:.3f} f1={bf1:.3f}")
    if args.sheet:
        from PIL import Image

        shown = [c for c in calls if c.is_copy or truth[c.generated]]
        labels = [f"{cls[c.generated]} (truth: {'copy' if truth[c.generated] else 'not'})"
                  for c in shown]
        Image.fromarray(evidence_sheet(shown, gen, training, labels=labels)).save(args.sheet)
    print(f"copies: precision={p:.3f} recall={r:.3f}")
    print(f"copies_f1: ours={f1:.3f} baseline={bf1:.3f} ratio={f1 / max(bf1, 1e-12):.2f}")


if __name__ == "__main__":
    main()
