"""Helpers shared by the bench scripts (run as ``python bench/<script>.py``; import this after
putting the repo root and ``bench/`` on ``sys.path``)."""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def latest(stage: str, cache: Path = ROOT / "out" / "cache") -> Optional[Path]:
    """The artifact folder ``<cache>/<stage>/LATEST`` points at, or None."""
    p = cache / stage / "LATEST"
    if not p.is_file():
        return None
    d = cache / stage / p.read_text().strip()
    return d if d.is_dir() else None


def example_screen_tiles(tile: int = 16) -> np.ndarray:
    """Every grid tile (n, tile, tile, 3) uint8 of ``examples/screens/*.png``, cut as stored
    (the right and bottom remainders dropped), in file then row-major order."""
    from PIL import Image

    out = []
    for p in sorted((ROOT / "examples" / "screens").glob("*.png")):
        a = np.asarray(Image.open(p).convert("RGB"))
        h, w = a.shape[0] // tile * tile, a.shape[1] // tile * tile
        out.append(a[:h, :w].reshape(h // tile, tile, w // tile, tile, 3)
                   .transpose(0, 2, 1, 3, 4).reshape(-1, tile, tile, 3))
    return np.concatenate(out) if out else np.zeros((0, tile, tile, 3), np.uint8)


def ratio_line(name: str, ours: Sequence[float], base: Sequence[float], *, digits: int) -> str:
    """The last line of a speed bench, ``<name>: ours=<median> baseline=<median>
    ratio=<baseline/ours>`` (> 1: ours is faster); medians printed with ``digits`` decimals."""
    mo, mb = statistics.median(ours), statistics.median(base)
    return f"{name}: ours={mo:.{digits}f} baseline={mb:.{digits}f} ratio={mb / mo:.1f}"
