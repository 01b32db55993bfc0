"""Perceptual hash throughput on 16x16 tiles: tilesets.phash.phash vs imagehash.phash.

Tiles: 20,000 random RGB tiles plus the distinct 16x16 tiles of examples/screens (real pixel
art, with many flat and mirrored tiles), every one checked bit-identical to imagehash.
imagehash is timed on a 2,000-tile subset (it is slow) as
``imagehash.phash(Image.fromarray(tile))``, ours on all tiles with ``phash(tiles)`` (default:
threads on every core, at most 4).  The runs of both alternate, so both see the same
load.  Medians of 7 runs; the last line is
``phash: ours=<tiles/s> baseline=<tiles/s> ratio=<ours/baseline>``.
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from _common import example_screen_tiles  # noqa: E402
from tilesets.phash import phash, to_hex  # noqa: E402

N_RANDOM, N_BASELINE, RUNS = 20_000, 2_000, 7


def real_tiles(limit: int = 20_000) -> np.ndarray:
    t = example_screen_tiles()
    flat = np.ascontiguousarray(t).reshape(len(t), -1)
    _, first = np.unique(flat.view(np.dtype((np.void, flat.shape[1]))).ravel(), return_index=True)
    return t[np.sort(first)][:limit]


def timed(fn, tiles) -> float:
    t = time.perf_counter()
    fn(tiles)
    return len(tiles) / (time.perf_counter() - t)


def main() -> None:
    import imagehash
    from PIL import Image

    rng = np.random.default_rng(0)
    rand = rng.integers(0, 256, (N_RANDOM, 16, 16, 3), dtype=np.uint8)
    real = real_tiles()
    tiles = np.concatenate([rand, real])
    sub = tiles[rng.permutation(len(tiles))[:N_BASELINE]]
    ref = [str(imagehash.phash(Image.fromarray(t))) for t in tiles]      # oracle: every tile
    mism = sum(a != b for a, b in zip(to_hex(phash(tiles)), ref))
    print(f"tiles: {len(rand)} random + {len(real)} real distinct; all {len(tiles)} checked "
          f"against imagehash: {mism} mismatches")
    # baseline as a user holding tile arrays would call it (no hex conversion in the timing)
    base_fn = lambda ts: [imagehash.phash(Image.fromarray(t)) for t in ts]  # noqa: E731
    # interleave the runs so that both sides see the same machine load
    base, ours, ours1, o_rand, o_real = [], [], [], [], []
    for _ in range(RUNS):
        base.append(timed(base_fn, sub))
        ours.append(timed(phash, tiles))
        ours1.append(timed(lambda ts: phash(ts, workers=1), tiles))
        o_rand.append(timed(phash, rand))
        if len(real):
            o_real.append(timed(phash, real))
    med = statistics.median
    print(f"ours on random tiles: {med(o_rand):,.0f} tiles/s; on real tiles: "
          f"{med(o_real) if o_real else float('nan'):,.0f} tiles/s")
    print(f"ours, one thread: {med(ours1):,.0f} tiles/s; imagehash: {med(base):,.0f} tiles/s "
          f"(runs: {', '.join(f'{x:,.0f}' for x in base)})")
    print(f"phash: ours={med(ours):.0f} baseline={med(base):.0f} ratio={med(ours) / med(base):.1f}")


if __name__ == "__main__":
    main()
