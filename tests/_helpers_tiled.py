"""Test helpers for the Tiled export: Tiled's own renderer as an oracle, pytmx cell decoding,
and a dedupe artifact made of chosen tiles and maps (written through ``TileSet`` and dedupe's
record classes, so it follows their format).

``rasterize`` runs ``QT_QPA_PLATFORM=offscreen tmxrasterizer map.tmx out.png`` (Debian package
``tiled``).  When tmxrasterizer is not on PATH, tests that need it are skipped with the reason
printed to the terminal, never silently.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np
import pytest

from stages._common import save_npy, save_npz, save_png, write_json
from stages.dedupe import Dropped, KeptTile, Reason, TrainingRef
from tilesets.artifacts import TileSet
from tilesets.cells import Flip

SKIP_REASON = "tmxrasterizer not installed: apt-get install tiled"


def require_tmxrasterizer() -> str:
    """Path of tmxrasterizer, or skip the calling test with a printed reason."""
    exe = shutil.which("tmxrasterizer")
    if exe is None:
        # Printed past pytest's capture so a skipped oracle is visible in any run.
        print(f"\nSKIPPED: {SKIP_REASON}", file=sys.__stderr__, flush=True)
        pytest.skip(SKIP_REASON)
    return exe


def rasterize(tmx: Path, out_png: Optional[Path] = None) -> np.ndarray:
    """Render ``tmx`` with Tiled's tmxrasterizer; RGBA uint8 array (H, W, 4).

    The PNG goes to ``out_png``, or to a temporary file that is removed afterwards.
    """
    if out_png is None:
        with tempfile.TemporaryDirectory(prefix="tmxrasterizer-") as tmp:
            return rasterize(tmx, Path(tmp) / "tiled.png")
    from PIL import Image

    exe = require_tmxrasterizer()
    tmx = Path(tmx)
    out_png = Path(out_png)
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    proc = subprocess.run([exe, str(tmx), str(out_png)], env=env, capture_output=True,
                          text=True, timeout=60)
    if proc.returncode != 0 or not out_png.is_file():
        raise AssertionError(f"tmxrasterizer failed on {tmx} (exit {proc.returncode}): "
                             f"{proc.stderr.strip()[-500:]}")
    with Image.open(out_png) as im:
        return np.asarray(im.convert("RGBA")).copy()


def assert_same_pixels(tiled_rgba: np.ndarray, ours: np.ndarray, what: str = "map") -> None:
    """Assert two RGBA images are identical; the message says where they differ."""
    assert tiled_rgba.shape == ours.shape, f"{what}: Tiled {tiled_rgba.shape} vs ours {ours.shape}"
    diff = np.any(tiled_rgba != ours, axis=-1)
    if diff.any():
        y, x = np.argwhere(diff)[0]
        raise AssertionError(f"{what}: {int(diff.sum())} pixels differ; first at (x={x}, y={y}): "
                             f"Tiled {tiled_rgba[y, x].tolist()} vs ours {ours[y, x].tolist()}")


def assert_matches_tiled(tmx: Path, preview_png: Path) -> None:
    """tmxrasterizer's rendering of ``tmx`` equals our preview PNG pixel for pixel."""
    from PIL import Image

    with Image.open(preview_png) as im:
        ours = np.asarray(im.convert("RGBA")).copy()
    assert_same_pixels(rasterize(tmx), ours, str(tmx))


def pytmx_cells(tmx_map) -> tuple[np.ndarray, np.ndarray]:
    """Decode pytmx's first tile layer into Tiled GIDs (no flag bits) and flip bits.

    pytmx renumbers tiles internally (one internal GID per (GID, flags) pair); this undoes it.

    Returns
    -------
    gids : ndarray, shape (rows, cols), uint32
    flips : ndarray, shape (rows, cols), uint32
        :class:`tilesets.cells.Flip` bits as in the TMX file.
    """
    inv = {internal: (tgid, flags) for tgid, pairs in tmx_map.gidmap.items()
           for internal, flags in pairs}
    layer = tmx_map.layers[0]
    rows, cols = tmx_map.height, tmx_map.width
    gids = np.zeros((rows, cols), np.uint32)
    flips = np.zeros((rows, cols), np.uint32)
    for y in range(rows):
        for x in range(cols):
            internal = layer.data[y][x]
            if internal == 0:
                continue
            tgid, f = inv[internal]
            gids[y, x] = tgid
            flips[y, x] = ((Flip.H if f.flipped_horizontally else 0)
                           | (Flip.V if f.flipped_vertically else 0)
                           | (Flip.D if f.flipped_diagonally else 0))
    return gids, flips


def load_tmx(path: Path):
    """pytmx.TiledMap of ``path`` (no image loading)."""
    import pytmx

    return pytmx.TiledMap(str(path))


# --------------------------------------------------------------------------- fixtures
def make_tiles(k: int, *, tile_size: int = 16, seed: int = 0) -> np.ndarray:
    """``k`` distinct, asymmetric RGBA tiles (so flips are visible), some with transparent
    pixels; tile 1 (if present) is fully transparent."""
    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 256, (8, 3), dtype=np.uint8)
    idx = rng.integers(0, 8, (k, tile_size, tile_size))
    tiles = np.zeros((k, tile_size, tile_size, 4), np.uint8)
    tiles[..., :3] = palette[idx]
    tiles[..., 3] = 255
    tiles[:, 0, 0, :3] = [255, 0, 0]  # a marker in one corner: flips move it
    if k > 2:
        tiles[2, :4, :, 3] = 0  # partly transparent
    if k > 1:
        tiles[1] = 0  # fully transparent
    return tiles


def make_maps(k: int, *, n: int = 6, rows: int = 4, cols: int = 4, seed: int = 0,
              flips: bool = True) -> dict[str, np.ndarray]:
    """``n`` small maps of bank ids < ``k`` with repeated neighbours (so WFC can tile them);
    some cells carry Tiled flip bits."""
    rng = np.random.default_rng(seed)
    maps = {}
    for i in range(n):
        m = np.zeros((rows, cols), np.uint32)
        m[: rows // 2] = rng.integers(0, max(1, k // 3), (rows // 2, cols))
        m[rows // 2:] = rng.integers(0, k, (rows - rows // 2, cols))
        if flips:
            f = rng.integers(0, 4, (rows, cols)).astype(np.uint32)
            m |= np.where(f == 1, Flip.H, 0).astype(np.uint32)
            m |= np.where(f == 2, Flip.V, 0).astype(np.uint32)
            m |= np.where(f == 3, Flip.H | Flip.V, 0).astype(np.uint32)
        maps[f"gen_{i:04d}"] = m
    return maps


def make_dedupe_dir(root: Path, *, k: int = 12, tile_size: int = 16, n_maps: int = 6,
                    source_names: Optional[list[str]] = None, seed: int = 0,
                    bank: Optional[np.ndarray] = None,
                    maps: Optional[dict[str, np.ndarray]] = None, flips: bool = True) -> Path:
    """A dedupe artifact of chosen tiles and maps: the TileSet, tiles.json, dropped.json and
    evidence.png.  Tile 0 is flat with no novelty; tiles have novelty 4 + i % 9."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if bank is None:
        bank = make_tiles(k, tile_size=tile_size, seed=seed)
    k = bank.shape[0]
    if maps is None:
        maps = make_maps(k, n=n_maps, seed=seed) if k else {}
    stems = sorted(maps) or ["none"]
    names = source_names or stems
    TileSet(bank, maps, [(names[i % len(names)], 0, 0) for i in range(k)],
            flips=flips).save(root, save_npy, save_npz, write_json)
    near = TrainingRef("s.png", "examples/a.png", 16, 32, 0)
    kept = [KeptTile(id=i, bank_id=i, novelty=None if i == 0 else 4 + i % 9,
                     nearest_training=None if i == 0 else near, call=None,
                     origin=(names[i % len(names)], 0, 0), colours=3 + i % 2, isolated=i % 3,
                     flat=i == 0, score=round(1.0 - i / max(k, 1), 4), uses=1 + i % 4,
                     hash="00ff00ff00ff00ff") for i in range(k)]
    write_json(root / "tiles.json", [t.to_json() for t in kept])
    dropped = [Dropped(100 + j, Reason.TRAINING, stems[0], distance=j % 3, flip=0,
                       training=TrainingRef("s", "examples/a.png", 16 * j, 0, j),
                       replaced_by=0) for j in range(5)]
    dropped.append(Dropped(200, Reason.DUPLICATE, stems[0], distance=1, flip=0,
                           duplicate_of_bank=3, duplicate_of=3, replaced_by=3))
    write_json(root / "dropped.json", [d.to_json() for d in dropped])
    ev = np.zeros((20, 60, 3), np.uint8)
    ev[:, :30] = [200, 40, 40]
    ev[:, 30:] = [40, 40, 200]
    save_png(root / "evidence.png", ev)
    return root


def make_train_dir(root: Path) -> Path:
    """A train artifact: metrics.jsonl, curves.png and one sample grid."""
    root = Path(root)
    (root / "grids").mkdir(parents=True, exist_ok=True)
    with open(root / "metrics.jsonl", "w") as f:
        for s in range(0, 50, 5):
            f.write(json.dumps({"step": s, "loss_d": 1.0 / (1 + s), "loss_g": 0.5 + s / 100}) + "\n")
    save_png(root / "curves.png", np.full((30, 40, 3), 128, np.uint8))
    save_png(root / "grids" / "step_000050.png", np.full((32, 32, 3), 64, np.uint8))
    return root


def make_samples_dir(root: Path, stems: list[str], size: int = 64) -> Path:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    for s in stems:
        save_png(root / f"{s}.png", rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    return root
