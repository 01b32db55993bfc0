#!/usr/bin/env python3
"""Benchmark crop's upscale detection against the obvious brute force, on examples/screens.

ours      stages.crop.detect_scale: finds where columns/rows change, then checks each k by
          one modulo over those positions.
baseline  for k = max..2 and every grid offset, down-sample, up-sample again (np.repeat) and
          compare with the image: the first exact match wins.

Both must agree on every screen (checked).  Reports the median over 3 rounds of the time to
process the whole corpus (images decoded beforehand), in milliseconds.

    python bench/bench_crop.py
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stages._common import load_image  # noqa: E402
from stages._grid import detect_scale  # noqa: E402

MAX_SCALE = 8
ROUNDS = 3


def brute_force(a: np.ndarray, max_scale: int = MAX_SCALE) -> tuple[int, int, int]:
    h, w = a.shape[:2]
    for k in range(max_scale, 1, -1):
        for oy in range(k):
            for ox in range(k):
                hh, ww = (h - oy) // k, (w - ox) // k
                if hh < 1 or ww < 1:
                    continue
                small = a[oy + k // 2:oy + hh * k:k, ox + k // 2:ox + ww * k:k]
                big = np.repeat(np.repeat(small, k, 0), k, 1)
                body = a[oy:oy + hh * k, ox:ox + ww * k]
                # the partial blocks at the edges must continue their neighbours too
                if not np.array_equal(big, body):
                    continue
                if oy and not (a[:oy] == a[oy:oy + 1]).all():
                    continue
                if ox and not (a[:, :ox] == a[:, ox:ox + 1]).all():
                    continue
                if (a[oy + hh * k:] != a[oy + hh * k - 1:oy + hh * k]).any():
                    continue
                if (a[:, ox + ww * k:] != a[:, ox + ww * k - 1:ox + ww * k]).any():
                    continue
                return k, ox, oy
    return 1, 0, 0


def timed(fn, images) -> tuple[float, list]:
    t = time.perf_counter()
    out = [fn(a) for a in images]
    return (time.perf_counter() - t) * 1000, out


def main() -> None:
    files = sorted((ROOT / "examples" / "screens").glob("*.png"))
    images = [load_image(f) for f in files]
    ours_t, base_t = [], []
    for _ in range(ROUNDS):
        t, ours = timed(lambda a: detect_scale(a, max_scale=MAX_SCALE), images)
        ours_t.append(t)
        t, base = timed(brute_force, images)
        base_t.append(t)
        mismatch = [f.name for f, x, y in zip(files, ours, base) if x[0] != y[0]]
        if mismatch:
            raise SystemExit(f"ours and baseline disagree on {mismatch}")
    o, b = statistics.median(ours_t), statistics.median(base_t)
    scales = {}
    for k, _, _ in ours:
        scales[k] = scales.get(k, 0) + 1
    print(f"{len(images)} screens, scales found {dict(sorted(scales.items()))}")
    print(f"ours     median {o:8.1f} ms for the corpus ({o / len(images):.2f} ms/screen)")
    print(f"baseline median {b:8.1f} ms for the corpus ({b / len(images):.2f} ms/screen)")
    print("(times in ms for the whole corpus; ratio = baseline / ours, the speed-up)")
    print(f"crop: ours={o:.1f} baseline={b:.1f} ratio={b / o:.1f}")


if __name__ == "__main__":
    main()
