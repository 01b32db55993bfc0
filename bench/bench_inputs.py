"""Cache-key cost of an explicit input folder: with the stat-keyed hash memo vs without.

Writes 2,000 small files (8 KiB of random bytes each, ~16 MB, like a folder of small
screenshots) into a temporary folder, waits until their timestamps are older than the memo's
"racy" window, then times ``pipeline.cache.digest_explicit_inputs`` on the folder:

* baseline: no memo, every file read and hashed (what each `pipeline run` / `status` did);
* ours: a warm memo (``out/cache/.input-hashes.json`` in real use), files only stat'ed.

Both sides run alternately, 7 times each, on files already in the page cache (the baseline's
best case: a cold cache makes it slower still).  Both digests are checked to be equal.
Last line: ``inputs: ours=<ms> baseline=<ms> ratio=<baseline/ours>`` (> 1: ours is faster).
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from pipeline import cache as C  # noqa: E402

N_FILES, FILE_BYTES, RUNS = 2_000, 8 * 1024, 7


def timed(fn) -> tuple[float, str]:
    t = time.perf_counter()
    d = fn()
    return (time.perf_counter() - t) * 1000.0, d


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench_inputs.") as tmp:
        src, memo = Path(tmp) / "shots", Path(tmp) / "cache" / C.INPUT_MEMO
        for i in range(N_FILES):
            sub = src / f"level{i % 20:02d}"
            sub.mkdir(parents=True, exist_ok=True)
            (sub / f"shot{i:05d}.png").write_bytes(os.urandom(FILE_BYTES))
        time.sleep(C.MEMO_RACY_NS / 1e9 + 0.2)        # let the files settle past the racy window
        cold, d_cold = timed(lambda: C.digest_explicit_inputs([src], memo=memo))
        base, ours = [], []
        for _ in range(RUNS):
            b, d_base = timed(lambda: C.digest_explicit_inputs([src]))
            o, d_ours = timed(lambda: C.digest_explicit_inputs([src], memo=memo))
            assert d_base == d_ours == d_cold, "the memo changed the digest"
            base.append(b)
            ours.append(o)
        size = memo.stat().st_size
    mb, mo = statistics.median(base), statistics.median(ours)
    print(f"{N_FILES} files x {FILE_BYTES // 1024} KiB; first call (builds the memo, "
          f"{size / 1024:.0f} KiB): {cold:.0f} ms; digests equal with and without the memo")
    print(f"no memo: {', '.join(f'{x:.0f}' for x in base)} ms; "
          f"warm memo: {', '.join(f'{x:.0f}' for x in ours)} ms")
    print(f"inputs: ours={mo:.1f} baseline={mb:.1f} ratio={mb / mo:.1f}")


if __name__ == "__main__":
    main()
