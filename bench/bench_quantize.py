"""Benchmark: exact CIELAB nearest colour (ours) vs PIL's Image.quantize(palette=..., dither=NONE).

Run: ``python bench/bench_quantize.py``.  Prints figures for GAN-like images (noisy, many
colours) and clean pixel art, PIL's disagreement with the exact answers, the time to get the
lookup state ready (cold build and load from the disk cache), and ends with

    quantize: ours=<x> MP/s baseline=<y> MP/s ratio=<r>

for the GAN-like images (medians of 21 rounds; in each round ours, ours single-threaded and
PIL run one after the other, so a change of machine load hits all three alike).  "ours" is
``NearestMapper.map`` exactly as the quantize stage calls it, which **uses all CPU cores**
(the image is split between threads for >= 256 K pixels); PIL's ``quantize`` uses **one
core**.  The single-threaded figure, comparable core for core with PIL, is printed beside
it.  Ours is exact (every pixel equals the float64 brute force, checked here on a sample);
PIL's answer is approximate (its 512 KB colour cache holds one answer per 4x4x4 cell).
It also prints what palette recognition costs per image (a GAN-like image and palette art).
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image  # noqa: E402

from palettes.io import get_palette  # noqa: E402
from palettes.nearest import NearestMapper, _cpu_count, get_mapper, nearest_bruteforce  # noqa: E402

REPEATS = 21
SIZE = 1024


def gan_like(rng: np.random.Generator, pal: np.ndarray, n: int = SIZE,
             sigma: float = 16.0) -> np.ndarray:
    """What raw DCGAN samples look like: 16x16 areas of 4 palette colours in 4x4-pixel blobs,
    plus per-pixel Gaussian noise.  sigma = 16 is calibrated so that after exact NES
    quantisation a 16x16 tile holds ~14.5 colours, the figure measured on real samples after
    6 minutes of CPU training (issue 5: 14.7); nearly every pixel is a distinct colour."""
    a = n // 16
    cols = pal[rng.integers(0, len(pal), (a, a, 4))].astype(np.float64)     # (a, a, 4, 3)
    pick = rng.integers(0, 4, (n // 4, n // 4)).repeat(4, 0).repeat(4, 1)
    ay = np.arange(n) // 16
    base = cols[ay[:, None], ay[None, :], pick]
    img = base + rng.normal(0, sigma, base.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def uniform(rng: np.random.Generator, pal: np.ndarray, n: int = SIZE) -> np.ndarray:
    """Worst case: every pixel an independent uniformly random colour."""
    return rng.integers(0, 256, (n, n, 3)).astype(np.uint8)


def pixel_art(rng: np.random.Generator, pal: np.ndarray, n: int = SIZE) -> np.ndarray:
    """Clean pixel art: palette colours only, 4-colour 16x16 areas with 1-px detail."""
    img = np.empty((n, n, 3), np.uint8)
    for y in range(0, n, 16):
        for x in range(0, n, 16):
            c = pal[rng.integers(0, len(pal), 4)]
            img[y:y + 16, x:x + 16] = c[rng.integers(0, 4, (16, 16))]
    return img


def median_rates(fns: dict, mp: float) -> dict:
    """MP/s of each function: median over REPEATS rounds, the functions interleaved within
    each round so that a change of machine load hits all of them alike."""
    for fn in fns.values():
        fn()                                                       # warm-up (JIT, caches)
    ts: dict = {k: [] for k in fns}
    for _ in range(REPEATS):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            ts[k].append(time.perf_counter() - t)
    return {k: mp / float(np.median(v)) for k, v in ts.items()}


def recognition_cost(rng: np.random.Generator, pal) -> str:
    """What palette recognition adds per image (quantize runs it on every image with an NES
    palette): a GAN-like image is refused after a 32 K-pixel sample; palette art (here drawn in
    Mesen's table) is counted whole and matched against every shipped table."""
    from palettes.io import get_palette as gp
    from palettes.recognition import recognise_image

    gan = gan_like(rng, pal.colours[pal.usable()])
    art = pixel_art(rng, gp("nes-mesen").colours[gp("nes-mesen").usable()])
    recognise_image(art)                                           # warm-up (scipy import)
    out = []
    for kind, img in (("gan-like", gan), ("palette art", art)):
        ts = []
        for _ in range(5):
            t = time.perf_counter()
            m = recognise_image(img)
            ts.append(time.perf_counter() - t)
        what = f"recognised as {m.table} ({len(m.numbers)} colours)" if m else "not a palette image"
        out.append(f"{kind} {img.shape[1]}x{img.shape[0]}: {np.median(ts) * 1000:.1f} ms, {what}")
    return "palette recognition: " + "; ".join(out)


def main() -> None:
    pal = get_palette("nes")
    usable = pal.usable()
    rng = np.random.default_rng(0)
    # lookup state: cold build (JIT already compiled once) and load from the disk cache
    with tempfile.TemporaryDirectory() as td:
        os.environ["TILEGAN_CACHE"] = td
        NearestMapper(pal.colours, usable)                         # warm the JIT + write cache
        t = time.perf_counter()
        NearestMapper(pal.colours, usable, use_cache=False)
        t_build = time.perf_counter() - t
        t = time.perf_counter()
        NearestMapper(pal.colours, usable)
        t_load = time.perf_counter() - t
    os.environ.pop("TILEGAN_CACHE")
    m = get_mapper(pal.colours, usable)
    pal_img = Image.new("P", (1, 1))
    pal_img.putpalette(pal.colours[usable].tobytes() + bytes(3 * (256 - len(usable))))
    ncol = len(usable)

    def pil_q(im):
        return im.quantize(palette=pal_img, dither=Image.Dither.NONE)

    results = {}
    for kind, maker in (("gan-like", gan_like), ("pixel-art", pixel_art), ("uniform", uniform)):
        imgs = [maker(rng, pal.colours[usable]) for _ in range(2)]
        mp = sum(i.shape[0] * i.shape[1] for i in imgs) / 1e6
        pims = [Image.fromarray(i) for i in imgs]
        rates = median_rates({"ours": lambda: [m.map(i) for i in imgs],
                              "ours1": lambda: [m.map(i, threads=1) for i in imgs],
                              "pil": lambda: [pil_q(p) for p in pims]}, mp)
        ours, ours1, base = rates["ours"], rates["ours1"], rates["pil"]
        # exactness on a 1/16 sample of pixels
        x = imgs[0][::4, ::4].reshape(-1, 3)
        exact_lab = nearest_bruteforce(x, pal.colours, usable)
        exact_rgb = nearest_bruteforce(x, pal.colours, usable, metric="rgb")
        pil_idx = usable[np.asarray(pil_q(pims[0]))[::4, ::4].reshape(-1).clip(0, ncol - 1)]
        ours_idx = m.map(x)
        uniq = len(np.unique(imgs[0].reshape(-1, 3), axis=0))
        from palettes.cleanup import area_colour_counts
        cpt = area_colour_counts(m.map(imgs[0])).mean()
        print(f"{kind:9s} {SIZE}x{SIZE} x2, {uniq} distinct colours/image, {cpt:.1f} colours per "
              f"16x16 tile after quantisation: ours {ours:7.1f} MP/s ({_cpu_count()} threads; "
              f"{ours1:6.1f} single-threaded), PIL {base:7.1f} MP/s; ours vs exact "
              f"Lab: {np.mean(ours_idx != exact_lab) * 100:.3f}% differ; PIL vs exact RGB: "
              f"{np.mean(pil_idx != exact_rgb) * 100:.2f}% differ, vs exact Lab: "
              f"{np.mean(pil_idx != exact_lab) * 100:.2f}%")
        results[kind] = (ours, base)
    print(f"lookup state: build {t_build:.2f} s (cold, no cache), "
          f"load from disk cache {t_load * 1000:.0f} ms")
    print(recognition_cost(rng, pal))
    ours, base = results["gan-like"]
    print(f"quantize: ours={ours:.1f} MP/s baseline={base:.1f} MP/s ratio={ours / base:.2f}")


if __name__ == "__main__":
    main()
