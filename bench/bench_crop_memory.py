#!/usr/bin/env python3
"""Peak memory of crop on a big corpus: 10,000 synthetic 256x240 screens.

The corpus: NES-like frames (tests/_helpers_crop.py: 16x16 tiles from a few hundred tile
patterns, HUD text, sprites), every one different, written as PNGs to a temporary folder
(or ``--corpus DIR``, kept for reruns).  crop runs in a child process with its defaults; a
sampler sums the resident memory (VmRSS) of that process and all its descendants (the
decoding pool) every 50 ms and keeps the peak.

ours      stages.crop at the working tree: screens streamed through a bounded pool, tiles and
          patches written piece by piece (NpyWriter), one screen in memory at a time.
baseline  stages/crop.py at git revision ``--baseline-rev`` (default f63c391, before #17),
          run the same way: it keeps every tile in a list, concatenates them and builds
          tiles.npy in memory.  ``--baseline estimate`` skips the run and prints the in-memory
          estimate instead (4 copies of tiles.npy + 3 of patches.npy: list, concatenation,
          the .npy buffer and its bytes); the line says which.

    python bench/bench_crop_memory.py                 # last line: crop_memory: ours=... MB
    python bench/bench_crop_memory.py --screens 1000 --corpus /tmp/corpus1k
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import _helpers_crop as H  # noqa: E402
from stages._common import save_png  # noqa: E402

RUNNER = """
import importlib.util, json, sys, time
sys.path.insert(0, {root!r})
spec = importlib.util.spec_from_file_location("crop_under_test", {module!r})
crop = importlib.util.module_from_spec(spec)
sys.modules["crop_under_test"] = crop
spec.loader.exec_module(crop)
t = time.time()
s = crop.run({{"images": [{corpus!r}]}}, crop.Params(), __import__("pathlib").Path({out!r}))
print(json.dumps({{"screens": s["screens"], "tiles": s["tiles"], "patches": s["patches"],
                  "seconds": round(time.time() - t, 1)}}))
"""


def make_corpus(folder: Path, n: int) -> None:
    """n different NES-like frames as PNGs (kept when already there)."""
    folder.mkdir(parents=True, exist_ok=True)
    have = len(list(folder.glob("*.png")))
    if have >= n:
        return
    t = time.time()
    for i in range(have, n):
        save_png(folder / f"frame_{i:05d}.png", H.nes_frame(i))
        if i % 1000 == 999:
            print(f"  corpus: {i + 1}/{n} screens ({time.time() - t:.0f} s)", flush=True)


def _tree_rss_kb(pid: int) -> int:
    """VmRSS of ``pid`` and all its descendants, in kB (from /proc)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def peak_memory(module: Path, corpus: Path, out: Path) -> tuple[float, str]:
    """Run crop from ``module`` on ``corpus`` in a child; (peak tree RSS in MB, its summary)."""
    code = RUNNER.format(root=str(ROOT), module=str(module), corpus=str(corpus), out=str(out))
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], _tree_rss_kb(proc.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, _ = proc.communicate()
    sampler.join()
    if proc.returncode:
        raise SystemExit(f"crop from {module} failed (exit {proc.returncode})")
    return peak[0] / 1024, stdout.strip().splitlines()[-1]


def estimate_baseline_mb(tiles: int, patches: int, patch_bytes: int) -> float:
    """The pre-#17 crop's in-memory peak: 4 copies of tiles.npy, 3 of patches.npy."""
    return (4 * tiles * 16 * 16 * 3 + 3 * patches * patch_bytes) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--screens", type=int, default=10_000)
    ap.add_argument("--corpus", type=Path, help="folder for the generated screens (kept)")
    ap.add_argument("--baseline", choices=("run", "estimate"), default="run")
    ap.add_argument("--baseline-rev", default="f63c391")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="crop_memory_"))
    corpus = args.corpus or work / "screens"
    try:
        make_corpus(corpus, args.screens)
        print(f"{args.screens} screens of 256x240 in {corpus}", flush=True)
        ours, summary = peak_memory(ROOT / "stages" / "crop.py", corpus, work / "ours")
        print(f"ours      peak {ours:8.0f} MB  {summary}", flush=True)
        shutil.rmtree(work / "ours", ignore_errors=True)
        import json

        s = json.loads(summary)
        est = estimate_baseline_mb(s["tiles"], s["patches"], 64 * 64 * 3)
        if args.baseline == "run":
            old = work / "crop_before.py"
            old.write_text(subprocess.run(
                ["git", "-C", str(ROOT), "show", f"{args.baseline_rev}:stages/crop.py"],
                capture_output=True, text=True, check=True).stdout)
            base, bsummary = peak_memory(old, corpus, work / "baseline")
            print(f"baseline  peak {base:8.0f} MB  {bsummary}  (crop at {args.baseline_rev}, run)")
            how = f"run of crop at {args.baseline_rev}"
        else:
            base = est
            how = "in-memory estimate"
        print(f"baseline in-memory estimate {est:.0f} MB (4 x tiles.npy + 3 x patches.npy)")
        print(f"(peak resident memory of crop and its workers, MB; baseline = {how}; "
              f"ratio = baseline / ours)")
        print(f"crop_memory: ours={ours:.0f} baseline={base:.0f} ratio={base / ours:.1f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
