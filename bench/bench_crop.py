#!/usr/bin/env python3
"""crop's native-pixel detection: false-positive and hit rates, and the upscale detector's speed.

Rates (``--rates``): synthetic NES-like frames and 64x64 RGBA sprites (tests/_helpers_crop.py),
native and saved the ways users' screenshots come, go through ``crop.prepare_screen``.
A native screen must come back untouched (any change is a false positive); a saved variant
must come back at native size (and pixel-exact when lossless); a stretched or letterboxed
copy must have its stretch or letterbox found.  ``--before REV`` runs the same cases through
crop's ``prepare_screen`` at git revision REV too (e.g. f63c391, before issue #17).

Speed (``--timing``, examples/screens):

ours      stages.crop.detect_scale: finds where columns/rows change, then checks each k by
          one modulo over those positions.
baseline  for k = max..2 and every grid offset, down-sample, up-sample again (np.repeat) and
          compare with the image: the first exact match wins.

Both must agree on every screen (checked).  Reports the median over 3 rounds of the time to
process the whole corpus (images decoded beforehand), in milliseconds.

    python bench/bench_crop.py                # rates, then speed (last line: crop: ours=...)
    python bench/bench_crop.py --rates --before f63c391
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "tests"))

import _helpers_crop as H  # noqa: E402
from stages import crop  # noqa: E402
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


# --------------------------------------------------------------------------- rates
def _jpeg(a: np.ndarray) -> tuple[np.ndarray, bytes]:
    data = H.jpeg_bytes(a, 2, 90)
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).copy(), data


#: name -> (make the saved image from a native one, what it should come back as, lossy, kind)
#: kind: "native" (nothing may change), "saved" (users' saves), "true" (a real stretch/letterbox)
CASES = {
    "native frame": (lambda a: a, lambda a: a, False, "native"),
    "2x nearest": (lambda a: H.as_nearest(a, 2), lambda a: a, False, "saved"),
    "3x nearest": (lambda a: H.as_nearest(a, 3), lambda a: a, False, "saved"),
    "8:7 2x (585x480)": (lambda a: H.as_aspect_8_7(a, 2, 585), lambda a: a, False, "saved"),
    "8:7 2x (584x480)": (lambda a: H.as_aspect_8_7(a, 2, 584), lambda a: a, False, "saved"),
    "2x bilinear": (lambda a: H.as_bilinear(a, 2), lambda a: a, False, "saved"),
    "2x JPEG q90": (lambda a: _jpeg(a)[0], lambda a: a, True, "saved"),
    "8:7 1x (292x240)": (lambda a: H.as_aspect_8_7(a, 1, 292), lambda a: a, False, "true"),
    "4:3 (320x240)": (lambda a: H.as_resized(a, 320, 240), lambda a: a, False, "true"),
    "pillarbox 320x240": (lambda a: H.as_letterboxed(a, 0, 32), lambda a: a, False, "true"),
    "2x pillarbox 640x480": (lambda a: H.as_letterboxed(H.as_nearest(a, 2), 0, 64),
                             lambda a: a, False, "true"),
    "2x 256x224 in 640x480": (lambda a: H.as_letterboxed(H.as_nearest(a[8:232], 2), 16, 64),
                              lambda a: a[8:232], False, "true"),
}


def _old_prepare(rev: str):
    """crop's prepare_screen(path, opts) at git revision ``rev`` (files in, dict out)."""
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:stages/crop.py"],
                         capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "crop_before.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("crop_before", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["crop_before"] = mod
    spec.loader.exec_module(mod)
    opts = {"rgba": True, "scale": 0, "max_scale": 8, "tolerance": 0, "trim": True,
            "align": False, "stretch": True}
    tmp = Path(tempfile.mkdtemp())

    def prepare(image: np.ndarray, jpeg: bytes | None) -> np.ndarray:
        from PIL import Image

        f = tmp / ("x.jpg" if jpeg else "x.png")
        if jpeg:
            f.write_bytes(jpeg)
        else:
            Image.fromarray(image).save(f)
        r = mod.prepare_screen(str(f), opts)
        return r["screen"] if r["ok"] else np.zeros((0, 0, image.shape[2]), np.uint8)
    return prepare


def _new_prepare(image: np.ndarray, lossy: bool) -> tuple[np.ndarray, "crop.NativeScreen"]:
    if image.shape[2] == 3:
        image = np.concatenate([image, np.full(image.shape[:2] + (1,), 255, np.uint8)], axis=2)
    r = crop.prepare_screen(image, crop.Params(rgba=True, align=False), lossy=lossy)
    return r.pixels, r


def rates(n_frames: int, n_sprites: int, before: str | None) -> None:
    """Print the false-positive and hit rates (see the module docstring)."""
    crop._one_blas_thread()
    old = _old_prepare(before) if before else None
    frames = [H.nes_frame(i) for i in range(n_frames)]
    dark = {i for i in range(n_frames) if H.KINDS[i % len(H.KINDS)] in
            ("underground", "castle", "night", "big_sky")}
    print(f"{n_frames} NES-like 256x240 frames ({len(dark)} with large black or sky areas), "
          f"{n_sprites} 64x64 RGBA sprites; per case: native size / pixel-exact"
          + (f" / the same at {before}" if old else ""))
    for name, (make, want_of, lossy, kind) in CASES.items():
        size = exact = size_old = exact_old = 0
        fp_dark = found = 0
        t0 = time.perf_counter()
        for i, a in enumerate(frames):
            img = make(a)
            want = want_of(a)
            got, rec = _new_prepare(img, lossy)
            got = got[..., :3]
            size += got.shape == want.shape
            exact += got.shape == want.shape and np.array_equal(got, want)
            fp_dark += kind == "native" and i in dark and not np.array_equal(got, want)
            found += any(rec.trim) or any("stretch" in s for s in rec.steps)
            if old:
                o = old(img, _jpeg(a)[1] if lossy else None)[..., :3]
                size_old += o.shape == want.shape
                exact_old += o.shape == want.shape and np.array_equal(o, want)
        ms = (time.perf_counter() - t0) * 1000 / n_frames
        extra = f"   before: {size_old}/{n_frames} / {exact_old}/{n_frames}" if old else ""
        note = {"native": f"  false positives {n_frames - exact} ({fp_dark} on black/sky frames)",
                "saved": "", "true": f"  stretch/letterbox found {found}"}[kind]
        print(f"  {name:24s} {size:4d}/{n_frames} / {exact:4d}/{n_frames}{extra}{note}"
              f"   ({ms:.0f} ms/frame)")
    for name, make in (("native sprite", lambda s: s), ("2x nearest sprite", lambda s: H.as_nearest(s, 2))):
        ok = ok_old = 0
        for seed in range(n_sprites):
            s = H.sprite(seed)
            got, _ = _new_prepare(make(s), False)
            ok += np.array_equal(got, s)
            if old:
                ok_old += np.array_equal(old(make(s), None), s)
        extra = f"   before: {ok_old}/{n_sprites}" if old else ""
        print(f"  {name:24s} {ok:4d}/{n_sprites} pixel-exact{extra}")


# --------------------------------------------------------------------------- speed
def timing() -> None:
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rates", action="store_true", help="only the native-pixel rates")
    ap.add_argument("--timing", action="store_true", help="only the upscale-detection speed")
    ap.add_argument("--frames", type=int, default=140)
    ap.add_argument("--sprites", type=int, default=40)
    ap.add_argument("--before", help="git revision whose crop to measure beside ours")
    args = ap.parse_args()
    if not args.timing:
        rates(args.frames, args.sprites, args.before)
    if not args.rates:
        timing()


if __name__ == "__main__":
    main()
