"""Tile-budget figures of issue #15 on held-back real screens.

Inputs: a crop artifact (the real screens, ``screens/*.png``) and a quantize artifact (the
generated samples, palette PNGs), by default the latest ones under ``--cache`` (``out/cache``).
Every 5th real screen (sorted by name) is held back; the others give the real-vs-real floor.
With ``--holdout DIR`` (the crop artifact of screens the model never saw, e.g. ``pipeline crop
held/*.png --out DIR``) all of those are the held-back screens and the ``--crop`` screens (the
training screens) give the floor: the honest protocol when the model was trained on ``--crop``.

Palette-fair: the real screens go through the quantize artifact's own palette mapping (its
``palette_rgb``, ``usable_indices`` and ``metric``; nearest colour, no clean-up), so real and
generated art use the same colours.

The dictionary is learned from every cell of every sample (``learn_dictionary``, ``--max-tiles``
or automatic K; Tiled mode unless ``--nes``) and every sample is rebuilt from it by
``rebuild`` with slice's default seam and texture weights (or ``--seam-weight``,
``--texture-weight``); seam weight 0 and texture weight 0 are shown for comparison, and the
seam weight a calibration against the real screens' border ratio would pick.  Figures:

* reuse: distinct tiles per cell over the same number of cells (whole screens in order, the
  last one cut) — rebuilt samples vs held-back real screens (and the unreduced samples);
  distinct up to a flip in Tiled mode;
* isolated pixels (unlike all in-tile 8-neighbours): the dictionary's tiles vs the real
  screens' tiles (and the rebuilt and unreduced samples' cells);
* seams: mean ΔE76 across tile borders / inside tiles, rebuilt vs real, and of a 64×15 level
  made by export's Wave Function Collapse from the rebuilt maps (``tilesets.wfc.make_level``
  with export's defaults);
* SWD (``stages._metrics.swd``, sample-sized crops of the held-back screens on the tile grid)
  of the rebuilt samples and of the unreduced quantised samples against the held-back
  screens, with the real-vs-real floor (other real screens' crops, as many as there are
  samples).

    python bench/quality_tiles.py [--crop DIR] [--quantize DIR] [--cache out/cache]
           [--max-tiles K] [--nes] [--seed 0] [--seam-weight W] [--texture-weight W]
           [--holdout DIR] [--swd-size N]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _common import latest  # noqa: E402
from tilesets import dictionary as D  # noqa: E402
from tilesets.cells import decode_cells  # noqa: E402

TILE = 16


def to_grid(im: np.ndarray) -> np.ndarray:
    h, w = im.shape[0] // TILE * TILE, im.shape[1] // TILE * TILE
    return im[:h, :w]


def load_samples(folder: Path) -> tuple[list[np.ndarray], dict]:
    from stages._common import load_image

    meta = json.loads((folder / "quantize.json").read_text())
    files = [folder / r["file"] for r in meta.get("images", []) if "file" in r]
    return [to_grid(load_image(f, mode="RGBA")) for f in files], meta


def load_real(folder: Path, meta: dict) -> list[np.ndarray]:
    """The crop artifact's screens through the quantize artifact's palette mapping (RGBA)."""
    from palettes.nearest import get_mapper
    from stages._common import load_image

    pal = np.asarray(meta["palette_rgb"], np.uint8)
    usable = np.asarray(meta.get("usable_indices") or np.arange(len(pal)))
    mapper = get_mapper(pal, usable, metric=meta.get("metric", "lab"))
    out = []
    for p in sorted((folder / "screens").glob("*.png")):
        rgb = to_grid(load_image(p, mode="RGB"))
        if rgb.size:
            q = pal[mapper.map(np.ascontiguousarray(rgb))]
            out.append(np.concatenate([q, np.full(q.shape[:2] + (1,), 255, np.uint8)], -1))
    return out


def crops(screens: list[np.ndarray], h: int, w: int) -> np.ndarray:
    """Non-overlapping (h, w) crops on the tile grid, RGB."""
    out = [s[y:y + h, x:x + w, :3] for s in screens
           for y in range(0, s.shape[0] - h + 1, h) for x in range(0, s.shape[1] - w + 1, w)]
    return np.stack(out) if out else np.zeros((0, h, w, 3), np.uint8)


def cells(screens: list[np.ndarray]) -> list[np.ndarray]:
    return [D.grid_tiles(s, TILE).reshape(-1, TILE, TILE, 4) for s in screens]


def reuse(per_screen: list[np.ndarray], n: int, flips: bool) -> float:
    """Distinct tiles per cell among the first ``n`` cells (screens in order)."""
    t = np.concatenate(per_screen)[:n]
    return len(D.distinct_tiles(t, flips=flips)[0]) / max(len(t), 1)


def reuse_ids(maps: list[np.ndarray], n: int) -> float:
    ids = np.concatenate([decode_cells(m)[0].ravel() for m in maps])[:n]
    return len(np.unique(ids)) / max(len(ids), 1)


def grid_alignment(images: list[np.ndarray]) -> tuple[float, float, tuple[int, int]]:
    """Border/interior ratio on the tile grid, and the highest ratio of a grid shifted by
    (dy, dx) in 4-px steps: art drawn on the grid has its strongest seams at (0, 0)."""
    def at(dy: int, dx: int) -> float:
        return D.seam_ratio([to_grid(im[dy:, dx:]) for im in images], TILE)["ratio"]

    off = {(dy, dx): at(dy, dx) for dy in range(0, TILE, 4) for dx in range(0, TILE, 4)
           if dy or dx}
    best = max(off, key=off.get)
    return at(0, 0), off[best], best


def grid_alignment_text(images: np.ndarray) -> str:
    """``"on / best off"`` of :func:`grid_alignment` for a stack of RGB (or RGBA) images."""
    if images.shape[-1] == 3:
        images = np.concatenate([images, np.full(images.shape[:3] + (1,), 255, np.uint8)], -1)
    on, off, _ = grid_alignment(list(images))
    return f"{on:.2f} / {off:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", type=Path, default=ROOT / "out" / "cache")
    ap.add_argument("--crop", type=Path, default=None, help="crop artifact (real screens)")
    ap.add_argument("--quantize", type=Path, default=None, help="quantize artifact (samples)")
    ap.add_argument("--max-tiles", type=int, default=None, help="K (default: automatic)")
    ap.add_argument("--nes", action="store_true", help="NES mode: no flips, <= 64 tiles a screen")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--holdout", type=Path, default=None,
                    help="crop artifact of held-back screens (default: every 5th --crop screen)")
    ap.add_argument("--seam-weight", type=float, default=None, help="default: slice's")
    ap.add_argument("--texture-weight", type=float, default=None, help="default: slice's")
    ap.add_argument("--swd-size", type=int, default=0,
                    help="score SWD on NxN crops on the tile grid of every image (samples and "
                         "held-back screens alike) instead of sample-sized crops: for whole-"
                         "screen samples larger than some held-back screens (default: off)")
    args = ap.parse_args()
    from stages.slice import Params as SliceParams

    lam = SliceParams().seam() if args.seam_weight is None else args.seam_weight
    mu = SliceParams().texture_weight if args.texture_weight is None else args.texture_weight
    crop = args.crop or latest("crop", args.cache)
    quant = args.quantize or latest("quantize", args.cache)
    for name, d in (("crop", crop), ("quantize", quant)):
        if d is None:
            sys.exit(f"quality_tiles: no {name} artifact under {args.cache}; pass --{name} DIR "
                     f"or --cache DIR")
    samples, meta = load_samples(quant)
    real = load_real(crop, meta)
    if args.holdout is not None:
        held, other = load_real(args.holdout, meta), real
    else:
        held, other = real[::5], [s for i, s in enumerate(real) if i % 5]
    flips = not args.nes
    print(f"real: {crop} ({len(other)} screens for the floor, {len(held)} held back"
          f"{' from ' + str(args.holdout) if args.holdout else ''}; palette "
          f"{meta.get('palette')}, nearest colour, no clean-up)")
    print(f"samples: {quant} ({len(samples)} images {samples[0].shape[1]}x{samples[0].shape[0]})")

    sample_cells = cells(samples)
    tiles = np.concatenate(sample_cells)
    t0 = time.perf_counter()
    dic = D.learn_dictionary(tiles, max_tiles=args.max_tiles, flips=flips, seed=args.seed)
    t_learn = time.perf_counter() - t0
    limit = D.NES_MAX_DISTINCT if args.nes else None
    grids = [D.grid_tiles(s, TILE) for s in samples]
    same_shape = len({g.shape for g in grids}) == 1
    s_real = D.seam_ratio(held, TILE)
    s_train = D.seam_ratio(other, TILE)              # what slice aims at: the training screens
    cal = D.calibrate_seam_weight(np.stack(grids), dic, texture_weight=mu,
                                  target_ratio=s_train["ratio"]) if same_shape else None
    if lam == "auto":
        lam = cal["seam_weight"] if cal is not None else "auto"
    t0 = time.perf_counter()
    maps = D.rebuild(samples, dic, seam_weight=lam, texture_weight=mu, max_distinct=limit)
    t_rebuild = time.perf_counter() - t0
    draw = [D.render(dic.tiles, *decode_cells(m)) for m in maps]
    variants = {"rebuilt, seam weight 0": dict(seam_weight=0.0, texture_weight=mu),
                "rebuilt, old defaults (seam weight 0.2, texture weight 0)":
                    dict(seam_weight=0.2, texture_weight=0.0)}
    other_draws = {name: [D.render(dic.tiles, *decode_cells(m))
                          for m in D.rebuild(samples, dic, max_distinct=limit, **kw)]
                   for name, kw in variants.items()}
    curve = ", ".join(f"{k}: {v:.2f}" for k, v in dic.curve)
    print(f"dictionary: {len(dic)} tiles from {len(tiles)} cells "
          f"({len(D.distinct_tiles(tiles, flips=flips)[0])} distinct), "
          f"K {'automatic' if args.max_tiles is None else args.max_tiles}"
          + (f" (mean ΔE per K: {curve})" if curve else "")
          + f", distortion {dic.distortion:.2f} ΔE, learn {t_learn:.2f} s, "
          f"rebuild {t_rebuild:.2f} s")
    for w in dic.warnings:
        print(f"  warning: {w}")
    if cal is not None:
        tried = ", ".join(f"{lam:g}: {r:.3f}" for lam, r in cal["tried"])
        print(f"seam weight {lam}, texture weight {mu:g}; calibrated to the training screens' "
              f"border/interior ratio {cal['target_ratio']:.3f} (as slice does) the seam weight "
              f"is {cal['seam_weight']:g} (samples' own ratio {cal['source_ratio']:.3f}; "
              f"rebuilt ratio by weight: {tried})")

    real_cells = cells(held)
    n = min(sum(len(c) for c in sample_cells), sum(len(c) for c in real_cells))
    r_real = reuse(real_cells, n, flips)
    r_ours = reuse_ids(maps, n)
    print(f"\nreuse (distinct tiles per cell over {n} cells): rebuilt {r_ours:.3f}, real "
          f"{r_real:.3f} (ratio {r_ours / r_real:.2f}, target <= 1.5), unreduced samples "
          f"{reuse(sample_cells, n, flips):.3f}")
    iso_real = D.isolated_rate(np.concatenate(real_cells))
    iso_dic = D.isolated_rate(dic.tiles)
    print(f"isolated pixels: dictionary tiles {iso_dic:.3%}, real {iso_real:.3%} (ratio "
          f"{iso_dic / max(iso_real, 1e-12):.2f}, target <= 2); rebuilt cells "
          f"{D.isolated_rate(np.concatenate(cells(draw))):.3%}, unreduced samples "
          f"{D.isolated_rate(tiles):.3%}")
    print(f"seams (border / interior ΔE): real {s_real['ratio']:.3f} "
          f"({s_real['border']:.2f} / {s_real['interior']:.2f})")
    for name, ims in (("real", held), ("unreduced samples", samples)):
        on, off, where = grid_alignment(ims)
        print(f"  grid alignment of the {name}: ratio {on:.3f} on the tile grid, at most "
              f"{off:.3f} off it (shift {where[0]},{where[1]} px)")
    from functools import partial

    from stages.export import Params as ExportParams
    from tilesets import wfc
    from tilesets.cells import cell_tiles

    ep = ExportParams()
    level = wfc.make_level(maps, partial(cell_tiles, dic.tiles), width=ep.level_width,
                           height=ep.level_height, seed=ep.seed, attempts=ep.wfc_attempts,
                           seams=ep.level_seams, chunk=ep.level_chunk,
                           reuse_penalty=ep.level_reuse_penalty, model=ep.level_model,
                           time_limit=60.0)
    lv = (level.stats.get("seams") or {}).get("level") or {}
    if lv.get("ratio"):
        print(f"  level ({ep.level_width}x{ep.level_height}, {level.stats.get('model')} model): "
              f"{lv['ratio']:.3f} ({lv['border']:.2f} / {lv['interior']:.2f}), "
              f"{lv['ratio'] / s_real['ratio'] - 1:+.1%} vs real (target within 15 %)")
    for name, ims in [("rebuilt", draw), *other_draws.items(), ("unreduced samples", samples)]:
        s = D.seam_ratio(ims, TILE)
        print(f"  {name}: {s['ratio']:.3f} ({s['border']:.2f} / {s['interior']:.2f}), "
              f"{s['ratio'] / s_real['ratio'] - 1:+.1%} vs real (target within 15 %)")

    from stages._metrics import swd

    if args.swd_size:
        h = w = args.swd_size
        def cut(ims: list[np.ndarray]) -> list[np.ndarray]:
            return list(crops(ims, h, w))
        samples, draw = cut(samples), cut(draw)
        other_draws = {name: cut(d) for name, d in other_draws.items()}
    else:
        h, w = samples[0].shape[:2]
    ref = crops(held, h, w)
    if len(ref) < 2 or len(samples) < 2:
        print(f"SWD: needs at least 2 held-back crops of {w}x{h} and 2 samples; skipped")
        return
    rng = np.random.default_rng(args.seed)
    pool = crops(other, h, w)
    floor_set = pool[np.sort(rng.choice(len(pool), min(len(pool), len(samples)), replace=False))]
    same = np.stack([s[..., :3] for s in samples if s.shape[:2] == (h, w)])
    def score(ims: list[np.ndarray]) -> dict:
        return swd(np.stack([d[..., :3] for d in ims if d.shape[:2] == (h, w)]), ref,
                   seed=args.seed)

    res = {"rebuilt": score(draw), **{name: score(d) for name, d in other_draws.items()},
           "unreduced samples": swd(same, ref, seed=args.seed),
           "floor (other real screens)": swd(floor_set, ref, seed=args.seed)}
    print(f"SWD vs {len(ref)} held-back {w}x{h} crops (lower is better; n = images per set):")
    for name, r in res.items():
        print(f"  {name}: {r['swd']:.1f} (per level, finest first: "
              f"{' / '.join(f'{v:.1f}' for v in r['levels'])}; n={r['n']})")
    print(f"quality_tiles: rebuilt={res['rebuilt']['swd']:.1f} "
          f"unreduced={res['unreduced samples']['swd']:.1f} "
          f"floor={res['floor (other real screens)']['swd']:.1f}")


if __name__ == "__main__":
    main()
