"""Tile budget: learning a 256-tile dictionary from 10,000 tiles, ours vs MiniBatchKMeans.

Tiles (10,000 of 16×16, drawn with a fixed seed):

* ``--quantize DIR`` (or the latest ``out/cache/quantize`` artifact, when it holds at least
  10,000 cells): quantised GAN samples, cut on the tile grid, as they are;
* otherwise real-ish stand-ins: the grid tiles of the example screens (the latest crop
  artifact's ``tiles.npy``, else ``examples/screens`` cut as stored), mapped to their nearest
  NES colour (no clean-up), with GAN-like speckle added: 1.5 % of the pixels take the colour of
  a random pixel of the same tile (palette-exact, the tile's colour set unchanged).  The
  first line says which source was used.

Ours: ``tilesets.dictionary.learn_dictionary(tiles, max_tiles=256)`` in Tiled mode (flips).
Baseline: scikit-learn's ``MiniBatchKMeans(n_clusters=256, random_state=0)`` on the raw RGB
pixels (768 floats per tile).  The runs alternate (ours, baseline, ours, ...) so both see the
same machine load; medians of 3.

Distortion, measured alike for all: mean ΔE76 (CIELAB) per pixel between every input tile and
the tile that rebuilds it: our entry (nearest, in its best orientation), the baseline's
cluster centre rounded to uint8 ("raw means"), or that centre with every pixel moved to the
nearest colour (ΔE76) of the input tiles ("rounded to input colours"), each tile rebuilt by
its own k-means label.  With the stand-in corpus the error against the clean (speckle-free)
tiles is printed too, and the isolated-pixel rate of every dictionary.
Last line: ``dictionary: ours=<s> baseline=<s> ratio=<baseline/ours>`` (> 1: ours is faster).

    python bench/bench_dictionary.py [--quantize DIR] [--tiles 10000] [--k 256] [--runs 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _common import example_screen_tiles, latest, ratio_line  # noqa: E402
from tilesets import dictionary as D  # noqa: E402
from tilesets.cells import flip_variants  # noqa: E402

SPECKLE = 0.015


def _rgba(rgb: np.ndarray) -> np.ndarray:
    return np.concatenate([rgb, np.full(rgb.shape[:-1] + (1,), 255, np.uint8)], -1)


def quantized_tiles(folder: Path, tile: int = 16) -> np.ndarray:
    """Every grid tile of the PNGs of a quantize artifact (RGBA, alpha 0/255)."""
    from stages._common import load_image

    out = []
    for p in sorted(folder.glob("*.png")):
        im = load_image(p, mode="RGBA")
        h, w = im.shape[0] // tile * tile, im.shape[1] // tile * tile
        if h and w:
            out.append(D.grid_tiles(im[:h, :w], tile).reshape(-1, tile, tile, 4))
    return np.concatenate(out) if out else np.zeros((0, tile, tile, 4), np.uint8)


def example_tiles() -> tuple[np.ndarray, str]:
    """Grid tiles of the example screens (RGB) and where they came from."""
    crop = latest("crop")
    if crop is not None and (crop / "tiles.npy").is_file():
        return np.load(crop / "tiles.npy"), f"crop artifact {crop}"
    return example_screen_tiles(), "examples/screens cut as stored"


def stand_in(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, str]:
    """(speckled tiles, clean tiles, description): example tiles on the NES palette + speckle."""
    from palettes.io import get_palette
    from palettes.nearest import get_mapper

    rgb, where = example_tiles()
    pal = get_palette(None)
    clean = pal.colours[get_mapper(pal.colours, pal.usable()).map(np.ascontiguousarray(rgb))]
    clean = clean[np.sort(rng.choice(len(clean), min(n, len(clean)), replace=False))]
    noisy = clean.copy()
    ti, yi, xi = np.nonzero(rng.random(noisy.shape[:3]) < SPECKLE)
    t = clean.shape[1]
    noisy[ti, yi, xi] = clean[ti, rng.integers(0, t, len(ti)), rng.integers(0, t, len(ti))]
    return _rgba(noisy), _rgba(clean), (f"{where}, nearest NES colour, {SPECKLE:.1%} speckle "
                                        f"(stand-in for GAN samples)")


def ours_rebuilt(tiles: np.ndarray, dic: D.Dictionary) -> np.ndarray:
    """Every tile rebuilt by its nearest dictionary entry in its best orientation."""
    out = np.empty_like(tiles)
    for s in range(0, len(tiles), 2000):
        dist, code = D.tile_distance(tiles[s:s + 2000], dic.tiles, flips=dic.flips)
        j = dist.argmin(1)
        o = code[np.arange(len(j)), j]
        var = flip_variants(dic.tiles)
        out[s:s + 2000] = var[j, o]
    return out


def nearest_colours(rgb: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Each pixel of ``rgb`` (..., 3) moved to its nearest (ΔE76) colour of ``colours``."""
    from palettes.colour import srgb_to_lab

    lab_c = srgb_to_lab(colours)
    flat = rgb.reshape(-1, 3)
    uniq, inv = np.unique(flat, axis=0, return_inverse=True)
    d = ((srgb_to_lab(uniq)[:, None] - lab_c[None]) ** 2).sum(-1)
    return colours[d.argmin(1)][inv.ravel()].reshape(rgb.shape)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quantize", type=Path, default=None, help="quantize artifact folder")
    ap.add_argument("--tiles", type=int, default=10_000)
    ap.add_argument("--k", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    from sklearn.cluster import MiniBatchKMeans

    rng = np.random.default_rng(0)
    clean = None
    folder = args.quantize or latest("quantize")
    tiles = quantized_tiles(folder) if folder is not None else np.zeros((0,))
    if len(tiles) >= args.tiles:
        tiles = tiles[np.sort(rng.choice(len(tiles), args.tiles, replace=False))]
        print(f"tiles: {len(tiles)} quantised GAN sample tiles from {folder}")
    else:
        if folder is not None:
            print(f"({folder} holds only {len(tiles)} tiles; using the stand-in corpus)")
        tiles, clean, what = stand_in(args.tiles, rng)
        print(f"tiles: {len(tiles)} from {what}")
    distinct = len(D.distinct_tiles(tiles, flips=True)[0])
    print(f"distinct tiles (up to a flip): {distinct}; K = {args.k}")

    x = tiles[..., :3].reshape(len(tiles), -1).astype(np.float32)
    ours_t, base_t, dic, km = [], [], None, None
    for _ in range(args.runs):
        t = time.perf_counter()
        dic = D.learn_dictionary(tiles, max_tiles=args.k)
        ours_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        km = MiniBatchKMeans(n_clusters=args.k, random_state=0, n_init="auto").fit(x)
        base_t.append(time.perf_counter() - t)
    t = time.perf_counter()
    nes = D.learn_dictionary(tiles, max_tiles=args.k, flips=False)
    nes_t = time.perf_counter() - t

    colours = np.unique(tiles[..., :3].reshape(-1, 3), axis=0)
    centres = km.cluster_centers_.reshape((args.k,) + tiles.shape[1:3] + (3,))
    raw = _rgba(np.clip(np.round(centres), 0, 255).astype(np.uint8))
    snapped = _rgba(nearest_colours(raw[..., :3], colours))
    rebuilt = {
        f"ours, Tiled mode (flips), {len(dic)} tiles": (ours_rebuilt(tiles, dic), dic.tiles),
        f"ours, NES mode (no flips), {len(nes)} tiles": (ours_rebuilt(tiles, nes), nes.tiles),
        "MiniBatchKMeans, raw means": (raw[km.labels_], raw),
        "MiniBatchKMeans, rounded to input colours": (snapped[km.labels_], snapped),
    }
    print(f"time: ours median {statistics.median(ours_t):.2f} s {['%.2f' % v for v in ours_t]}, "
          f"NES mode {nes_t:.2f} s; MiniBatchKMeans median {statistics.median(base_t):.2f} s "
          f"{['%.2f' % v for v in base_t]}")
    print("distortion: mean ΔE76 per pixel vs the input tiles"
          + (" | vs the clean tiles" if clean is not None else "") + " | isolated pixels in "
          "the dictionary")
    for name, (rb, dict_tiles) in rebuilt.items():
        line = f"  {name}: {D.mean_delta_e(rb, tiles):.3f}"
        if clean is not None:
            line += f" | {D.mean_delta_e(rb, clean):.3f}"
        print(line + f" | {D.isolated_rate(dict_tiles):.2%}")
    if clean is not None:
        print(f"  (the input tiles themselves: {D.mean_delta_e(tiles, clean):.3f} vs clean, "
              f"isolated {D.isolated_rate(tiles):.2%}; clean {D.isolated_rate(clean):.2%})")
    print(ratio_line("dictionary", ours_t, base_t, digits=2))


if __name__ == "__main__":
    main()
