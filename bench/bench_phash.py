"""Perceptual hash throughput on 16x16 tiles: tilesets.phash.phash vs imagehash.phash.

Tiles: 20,000 random RGB tiles plus the distinct 16x16 tiles of examples/screens (real pixel
art, with many flat and mirrored tiles).  imagehash is timed on a subset (it is slow), ours on
all tiles; every tile of the subset is checked bit-identical.  Medians of several runs; the last
line is ``phash: ours=<tiles/s> baseline=<tiles/s> ratio=<ours/baseline>``.
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tilesets.phash import phash, to_hex  # noqa: E402

N_RANDOM, N_BASELINE, RUNS = 20_000, 4_000, 5


def real_tiles(limit: int = 20_000) -> np.ndarray:
    from PIL import Image

    out = []
    for p in sorted((ROOT / "examples" / "screens").glob("*.png")):
        a = np.asarray(Image.open(p).convert("RGB"))
        h, w = a.shape[0] // 16 * 16, a.shape[1] // 16 * 16
        out.append(a[:h, :w].reshape(h // 16, 16, w // 16, 16, 3).transpose(0, 2, 1, 3, 4)
                   .reshape(-1, 16, 16, 3))
    if not out:
        return np.zeros((0, 16, 16, 3), np.uint8)
    t = np.concatenate(out)
    flat = np.ascontiguousarray(t).reshape(len(t), -1)
    _, first = np.unique(flat.view(np.dtype((np.void, flat.shape[1]))).ravel(), return_index=True)
    return t[np.sort(first)][:limit]


def rate(fn, tiles, runs):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn(tiles)
        times.append(time.perf_counter() - t)
    return len(tiles) / statistics.median(times)


def main() -> None:
    import imagehash
    from PIL import Image

    rng = np.random.default_rng(0)
    rand = rng.integers(0, 256, (N_RANDOM, 16, 16, 3), dtype=np.uint8)
    real = real_tiles()
    tiles = np.concatenate([rand, real])
    sub = tiles[rng.permutation(len(tiles))[:N_BASELINE]]
    ref = lambda ts: [str(imagehash.phash(Image.fromarray(t))) for t in ts]  # noqa: E731
    base = rate(ref, sub, 3)
    mism = sum(a != b for a, b in zip(to_hex(phash(sub)), ref(sub)))
    print(f"tiles: {len(rand)} random + {len(real)} real distinct; checked {len(sub)} against "
          f"imagehash: {mism} mismatches")
    for name, ts in (("random", rand), ("real", real)):
        if len(ts):
            print(f"ours on {name} tiles: {rate(phash, ts, RUNS):,.0f} tiles/s")
    ours = rate(phash, tiles, RUNS)
    ours1 = rate(lambda ts: phash(ts, workers=1), tiles, RUNS)
    print(f"ours, one thread: {ours1:,.0f} tiles/s; imagehash: {base:,.0f} tiles/s")
    print(f"phash: ours={ours:.0f} baseline={base:.0f} ratio={ours / base:.1f}")


if __name__ == "__main__":
    main()
