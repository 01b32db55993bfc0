#!/usr/bin/env python3
"""Rebuild the example corpus ``examples/screens/`` from the registry packages it came from.

The corpus is committed, so ``make tileset`` never runs this script.  To rebuild it::

    pip install pyxel==2.9.9 arcade==3.3.3     # the versions the committed corpus came from
    python examples/regenerate.py              # writes examples/screens/*.png

Sources (see ``examples/ATTRIBUTION.md`` for authors and licences):

* PyPI ``pyxel``: ``examples/assets/platformer.pyxres`` and ``sample.pyxres`` by Takashi Kitao
  (MIT).  A ``.pyxres`` file is a zip holding one TOML document: three 256x256 image banks of
  palette indices (rows with trailing zeros trimmed) and eight tilemaps whose rows list
  ``(u, v)`` pairs of 8x8 tiles in an image bank.  We decode it ourselves (no window needed)
  and render screens the way ``examples/10_platformer.py`` draws them: the parallax backdrop,
  the level over it with colour 2 transparent, the player and the enemies at their spawn tiles.
* PyPI ``arcade``: ``resources/assets/images/cybercity_background`` and
  ``miami_synth_parallax`` by Luis Zuno (@ansimuz), parallax layers composited at a range of
  camera positions into 256x192 and 256x240 screens.

Every screen is saved at native pixel size, except a few deliberately upscaled by an integer
factor with nearest neighbour (and one letterboxed), so that ``crop`` meets upscaled screens in
the default run; the file name says so (``*_x2.png``, ``*_x3.png``, ``*_x2_letterbox.png``).
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import sys
import tomllib
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent


def package_dir(name: str) -> Path:
    """Folder of an installed package, found without importing it (arcade needs OpenGL)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"regenerate.py needs the PyPI package {name!r}: pip install {name}")
    return Path(list(spec.submodule_search_locations)[0])


# --------------------------------------------------------------------------- pyxel
#: Pyxel's default 16-colour palette (``pyxel.DEFAULT_COLORS`` in pyxel 2.9.9).
PYXEL_COLORS = (0x000000, 0x2B335F, 0x7E2072, 0x19959C, 0x8B4852, 0x395C98, 0xA9C1FF, 0xEEEEEE,
                0xD4186C, 0xD38441, 0xE9C35B, 0x70C6A9, 0x7696DE, 0xA3A3A3, 0xFF9798, 0xEDC7B0)


def pyxel_palette() -> np.ndarray:
    """(16, 3) uint8 RGB."""
    return np.array([[(c >> 16) & 255, (c >> 8) & 255, c & 255] for c in PYXEL_COLORS], np.uint8)


def read_pyxres(path: Path) -> tuple[list[np.ndarray], list[tuple[np.ndarray, int]]]:
    """Decode a .pyxres file.

    Returns
    -------
    images : list of ndarray, shape (H, W), uint8 palette indices
    tilemaps : list of (ndarray shape (H, W, 2) int32 of (u, v) tile coordinates, image bank)
    """
    with zipfile.ZipFile(path) as z:
        doc = tomllib.loads(z.read("pyxel_resource.toml").decode("utf-8"))
    if doc.get("format_version") != 3:
        raise ValueError(f"{path}: unsupported pyxres format_version {doc.get('format_version')}")
    images = []
    for im in doc["images"]:
        a = np.zeros((im["height"], im["width"]), np.uint8)
        for y, row in enumerate(im["data"]):
            a[y, :len(row)] = row
        images.append(a)
    tilemaps = []
    for tm in doc["tilemaps"]:
        a = np.zeros((tm["height"], tm["width"], 2), np.int32)
        for y, row in enumerate(tm["data"]):
            r = np.asarray(row, np.int32)
            n = len(r) // 2
            a[y, :n] = r[:2 * n].reshape(n, 2)
        tilemaps.append((a, int(tm.get("imgsrc", 0))))
    return images, tilemaps


def bltm(dst: np.ndarray, bank: np.ndarray, tmap: np.ndarray, u: int, v: int,
         colkey: int | None = None, wrap: int | None = None) -> None:
    """Draw the tilemap region starting at pixel (u, v) over the whole of ``dst`` (H, W).

    ``wrap``: repeat the region horizontally every ``wrap`` pixels (for a looping backdrop).
    """
    h, w = dst.shape
    for y in range(h):
        ty, py = divmod(v + y, 8)
        tiles = tmap[ty]
        xs = np.arange(u, u + w)
        if wrap:
            xs %= wrap
        tx, px = xs // 8, xs % 8
        uv = tiles[tx]
        row = bank[uv[:, 1] * 8 + py, uv[:, 0] * 8 + px]
        if colkey is None:
            dst[y] = row
        else:
            keep = row != colkey
            dst[y, keep] = row[keep]


def blt(dst: np.ndarray, bank: np.ndarray, x: int, y: int, u: int, v: int, w: int, h: int,
        colkey: int, flip: bool = False) -> None:
    """Draw a sprite from an image bank with a transparent colour, clipped to ``dst``."""
    spr = bank[v:v + h, u:u + w]
    if flip:
        spr = spr[:, ::-1]
    H, W = dst.shape
    for j in range(h):
        for i in range(w):
            yy, xx = y + j, x + i
            if 0 <= yy < H and 0 <= xx < W and spr[j, i] != colkey:
                dst[yy, xx] = spr[j, i]


def pyxel_platformer_screens(assets: Path, *, width: int = 256,
                             step: int = 64) -> list[tuple[str, np.ndarray]]:
    """Screens of the Pyxel platformer level, (H=128, W=width, 3) uint8 each."""
    pal = pyxel_palette()
    images, tilemaps = read_pyxres(assets / "platformer.pyxres")
    bank = images[0].copy()
    tmap = tilemaps[0][0]
    transparent = 2
    spawn = {(0, 1): (0, 24), (1, 1): (16, 24), (2, 1): (0, 32)}  # spawn tile -> enemy sprite
    spawns = [(x, y, spawn[(int(tmap[y, x, 0]), int(tmap[y, x, 1]))])
              for y in range(16) for x in range(256) if (int(tmap[y, x, 0]), int(tmap[y, x, 1])) in spawn]
    bank[8:16, 0:24] = transparent       # the game hides the spawn marker tiles
    out = []
    level_w = 256 * 8
    for k, scroll in enumerate(range(0, level_w - width + 1, step)):
        scr = np.zeros((128, width), np.uint8)
        bltm(scr, bank, tmap, (scroll // 4) % 128, 128, wrap=256)  # parallax backdrop, 256 px wide
        bltm(scr, bank, tmap, scroll, 0, colkey=transparent)      # the level
        for i, (tx, ty, (u, v)) in enumerate(spawns):
            x = tx * 8 - scroll
            if -8 < x < width:
                blt(scr, bank, x, ty * 8, u + 8 * (k % 2), v, 8, 8, transparent, flip=(i + k) % 2 == 0)
        # the player, standing on the first floor below the top third of the screen
        px = 40 + (k * 24) % 80
        col = tmap[:16, (scroll + px) // 8]
        floor = next((y for y in range(4, 16) if tuple(col[y]) == (1, 0) or col[y, 0] >= 4), 15)
        blt(scr, bank, px, floor * 8 - 8, 8 * (k % 3), 16, 8, 8, transparent, flip=k % 2 == 1)
        out.append((f"pyxel_platformer_{k:02d}", pal[scr]))
    return out


def pyxel_sample_screen(assets: Path) -> list[tuple[str, np.ndarray]]:
    """The 128x128 platformer scene in tilemap 0 of Pyxel's sample.pyxres."""
    pal = pyxel_palette()
    images, tilemaps = read_pyxres(assets / "sample.pyxres")
    tmap, src = tilemaps[0]
    scr = np.zeros((128, 128), np.uint8)
    bltm(scr, images[src], tmap, 0, 0)
    return [("pyxel_sample_00", pal[scr])]


# --------------------------------------------------------------------------- ansimuz parallax
def _layer(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGBA")


def _paste_wrapped(canvas: Image.Image, layer: Image.Image, offset: int, y: int = 0) -> None:
    """Tile ``layer`` horizontally across ``canvas``, shifted left by ``offset`` pixels."""
    lw = layer.width
    x = -(offset % lw)
    while x < canvas.width:
        canvas.alpha_composite(layer, (x, y)) if x >= 0 else canvas.alpha_composite(
            layer.crop((-x, 0, lw, layer.height)), (0, y))
        x += lw


def parallax_screens(prefix: str, layers: list[tuple[Path, float]], size: tuple[int, int],
                     cams: range, sprite: list[Path] | None = None) -> list[tuple[str, np.ndarray]]:
    """Composite parallax layers (path, speed) at each camera x; (H, W, 3) uint8 screens."""
    ims = [(_layer(p), s) for p, s in layers]
    sprites = [_layer(p) for p in sprite] if sprite else []
    out = []
    for k, cam in enumerate(cams):
        canvas = Image.new("RGBA", size, (0, 0, 0, 255))
        for im, speed in ims:
            _paste_wrapped(canvas, im, int(cam * speed), y=size[1] - im.height)
        if sprites:
            car = sprites[k % len(sprites)]
            canvas.alpha_composite(car, ((size[0] - car.width) // 2 - 20 + (k * 13) % 40,
                                         size[1] - car.height - 4))
        out.append((f"{prefix}_{k:02d}", np.asarray(canvas.convert("RGB"), np.uint8).copy()))
    return out


# --------------------------------------------------------------------------- main
def upscale(a: np.ndarray, k: int) -> np.ndarray:
    return np.repeat(np.repeat(a, k, axis=0), k, axis=1)


def letterbox(a: np.ndarray, top: int, left: int) -> np.ndarray:
    h, w, c = a.shape
    out = np.zeros((h + 2 * top, w + 2 * left, c), np.uint8)
    out[top:top + h, left:left + w] = a
    return out


def build(out_dir: Path) -> list[Path]:
    pyxel_assets = package_dir("pyxel") / "examples" / "assets"
    arcade_img = package_dir("arcade") / "resources" / "assets" / "images"
    cyber = arcade_img / "cybercity_background"
    miami = arcade_img / "miami_synth_parallax"

    screens: list[tuple[str, np.ndarray]] = []
    screens += pyxel_platformer_screens(pyxel_assets)
    screens += pyxel_sample_screen(pyxel_assets)
    screens += parallax_screens(
        "ansimuz_cybercity",
        [(cyber / "far-buildings.png", 0.25), (cyber / "back-buildings.png", 0.5),
         (cyber / "foreground.png", 1.0)],
        (256, 192), range(0, 704, 44))
    screens += parallax_screens(
        "ansimuz_miami",
        [(miami / "layers" / "back.png", 0.1), (miami / "layers" / "buildings.png", 0.2),
         (miami / "layers" / "palms.png", 0.35), (miami / "layers" / "highway.png", 1.0)],
        (256, 240), range(0, 896, 56),
        sprite=[miami / "car" / f"car-running{i}.png" for i in range(4)])

    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.png"):
        old.unlink()
    written = []
    for i, (name, arr) in enumerate(screens):
        # A few screens are stored upscaled, as screenshots often are; crop undoes it.
        if i % 9 == 4:
            name, arr = f"{name}_x2", upscale(arr, 2)
        elif i % 9 == 7:
            name, arr = f"{name}_x3", upscale(arr, 3)
        elif i % 23 == 11:
            name, arr = f"{name}_x2_letterbox", letterbox(upscale(arr, 2), 16, 8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG", optimize=True)
        p = out_dir / f"{name}.png"
        p.write_bytes(buf.getvalue())
        written.append(p)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=HERE / "screens", help="output folder")
    args = ap.parse_args(argv)
    files = build(args.out)
    total = sum(f.stat().st_size for f in files)
    print(f"wrote {len(files)} screens, {total / 1e6:.2f} MB, to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
