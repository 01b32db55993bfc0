"""Synthetic screenshots for crop's native-pixel tests and benchmarks.

``nes_frame`` draws a 256x240 NES-like frame from 16x16 tiles with 1-px detail: a fixed HUD,
sky or black backdrops, clouds, hills, bricks, ground, pipes, castles, stars, water, and
sprites at arbitrary pixel positions; the level scrolls by a few pixels, and some frames blank
the left 8 columns as many NES games do.  Such art has long runs of identical rows and columns
(sky, ground, pipes), which is what used to fool crop's stretch and letterbox detection.
``sprite`` draws a 64x64 RGBA sprite (simple shapes on a transparent background).

The ``as_*`` functions save a screen the ways users' screenshots come: integer nearest
upscales, 8:7 pixel-aspect-corrected, bilinear, JPEG, letterboxed.  Everything is seeded.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

W, H, T = 256, 240, 16

# colours from the NES 2C02 palette (as most emulators show them)
SKY = (92, 148, 252)
BLACK = (0, 0, 0)
WHITE = (252, 252, 252)
BRICK = (200, 76, 12)
BROWN = (136, 20, 0)
ORANGE = (252, 152, 56)
GREEN = (0, 168, 0)
LIGHT_GREEN = (128, 208, 16)
DARK_GREEN = (0, 120, 0)
GREY = (188, 188, 188)
DARK_GREY = (116, 116, 116)
BLUE = (0, 88, 248)
DARK_BLUE = (0, 0, 168)
CYAN = (60, 188, 252)
YELLOW = (252, 188, 60)
RED = (216, 40, 0)
PINK = (248, 120, 88)

KINDS = ("overworld", "underground", "castle", "night", "water", "big_sky", "jungle")


def _fill(c) -> np.ndarray:
    return np.broadcast_to(np.array(c, np.uint8), (T, T, 3)).copy()


def _brick(face, mortar) -> np.ndarray:
    t = _fill(face)
    t[0] = t[8] = mortar
    t[0:8, 0] = mortar
    t[8:16, 8] = mortar
    t[1, 1:8] = ORANGE          # 1-px highlight rows
    t[9, 9:16] = ORANGE
    return t


def _ground(rng) -> np.ndarray:
    t = _fill(BRICK)
    t[0], t[:, 0] = ORANGE, ORANGE
    t[15], t[:, 15] = BROWN, BROWN
    for _ in range(3):                                      # irregular cracks
        y, x = rng.integers(2, 14, 2)
        t[y, x:x + rng.integers(2, 6)] = BROWN
        t[y:y + rng.integers(2, 5), x] = BROWN
    return t


def _question() -> np.ndarray:
    t = _fill(YELLOW)
    t[0], t[15], t[:, 0], t[:, 15] = BROWN, BROWN, BROWN, BROWN
    for y, x in ((3, 6), (3, 7), (3, 8), (4, 5), (4, 9), (5, 9), (6, 8), (7, 7), (8, 7), (11, 7)):
        t[y, x] = BROWN
    t[2, 2] = t[2, 13] = t[13, 2] = t[13, 13] = BROWN        # rivets
    return t


def _pipe(left: bool) -> np.ndarray:
    t = _fill(GREEN)
    if left:
        t[:, 0] = BLACK
        t[:, 3:5] = LIGHT_GREEN
        t[:, 6] = LIGHT_GREEN
    else:
        t[:, 15] = BLACK
        t[:, 9:11] = DARK_GREEN
        t[:, 13] = DARK_GREEN
    return t


def _cloud(bg, part: int) -> np.ndarray:
    im = Image.new("RGB", (T, T), bg)
    d = ImageDraw.Draw(im)
    box = [(-6, 3, 17, 17), (-2, 1, 21, 15), (-9, 4, 13, 18)][part]
    d.ellipse(box, fill=WHITE, outline=BLACK)
    return np.asarray(im).copy()


def _hill(bg, part: int) -> np.ndarray:
    im = Image.new("RGB", (T, T), bg)
    d = ImageDraw.Draw(im)
    d.ellipse([(-12, 2), (12, 30)] if part == 0 else [(3, 2), (27, 30)], fill=LIGHT_GREEN,
              outline=BLACK)
    d.point([(4 + 5 * part, 9), (5 + 5 * part, 10)], fill=DARK_GREEN)
    return np.asarray(im).copy()


def _star(rng) -> np.ndarray:
    t = _fill(BLACK)
    y, x = rng.integers(0, T, 2)
    t[y, x] = WHITE
    if rng.random() < 0.3:
        t[max(y - 1, 0), x] = t[min(y + 1, 15), x] = GREY
    return t


def _water(part: int) -> np.ndarray:
    t = _fill(BLUE)
    xs = np.arange(T)
    ys = (2 + np.round(1.5 * np.sin((xs + 5 * part) * np.pi / 8))).astype(int)
    t[ys, xs] = CYAN
    t[ys + 6, (xs + 3) % T] = DARK_BLUE
    return t


def _leaves(rng) -> np.ndarray:
    pal = np.array([DARK_GREEN, GREEN, LIGHT_GREEN, BLACK], np.uint8)
    idx = rng.integers(0, 4, (8, 8))
    return pal[np.repeat(np.repeat(idx, 2, 0), 2, 1)] if rng.random() < 0.2 else pal[
        rng.integers(0, 4, (T, T))]


def _glyphs(rng, n: int = 40) -> np.ndarray:
    """A bitmap font: n glyphs of 8x8 with 1-px strokes in a 7x7 box."""
    g = np.zeros((n, 8, 8), bool)
    for i in range(n):
        for _ in range(4):
            if rng.random() < 0.5:
                y = rng.integers(0, 7)
                x0, x1 = sorted(rng.integers(0, 7, 2))
                g[i, y, x0:x1 + 1] = True
            else:
                x = rng.integers(0, 7)
                y0, y1 = sorted(rng.integers(0, 7, 2))
                g[i, y0:y1 + 1, x] = True
    return g


_FONT = _glyphs(np.random.default_rng(1985))


def _text(img: np.ndarray, x: int, y: int, codes, colour=WHITE) -> None:
    for i, c in enumerate(codes):
        m = _FONT[c % len(_FONT)]
        img[y:y + 8, x + 8 * i:x + 8 * i + 8][m] = colour


def _sprite_bitmap(rng, h: int = 16, w: int = 16) -> np.ndarray:
    """A mirrored 3-colour character, (h, w) of palette indices 0 (transparent) .. 3."""
    half = rng.choice(4, (h, w // 2), p=[0.45, 0.25, 0.2, 0.1])
    half[:, 0] = 0
    return np.concatenate([half, half[:, ::-1]], axis=1)


#: a game's HUD labels: the same glyphs on every screen (``nes_frame(..., hud="fixed")``)
_LABELS = ((24, 16, (3, 17, 22, 9, 30)), (144, 16, (11, 4, 27, 8, 1)), (200, 16, (5, 33, 12, 20)))


def nes_frame(seed: int, kind: str | None = None, *, hud: str = "random") -> np.ndarray:
    """A native 256x240 NES-like frame: (240, 256, 3) uint8 (see the module docstring).

    ``hud``: "random" (every frame its own HUD text), "fixed" (a game's status bar: the same
    labels and coin icon on every frame, only the counters change), "bottom" (that bar at the
    bottom, over the ground, SMB3-like) or "none".
    """
    rng = np.random.default_rng(seed)
    kind = kind or KINDS[seed % len(KINDS)]
    bg = {"overworld": SKY, "big_sky": SKY, "water": BLUE}.get(kind, BLACK)
    cols, rows = 17, 15                                     # one spare column to scroll into
    tiles = {"bg": _fill(bg), "brick": _brick(BRICK, BLACK), "q": _question(),
             "pl": _pipe(True), "pr": _pipe(False), "castle": _brick(GREY, DARK_GREY),
             "blue": _brick(CYAN, DARK_BLUE)}
    tiles.update({f"g{i}": _ground(rng) for i in range(3)})
    tiles.update({f"c{i}": _cloud(bg, i) for i in range(3)})
    tiles.update({f"h{i}": _hill(bg, i) for i in range(2)})
    tiles.update({f"s{i}": _star(rng) for i in range(6)})
    tiles.update({f"w{i}": _water(i) for i in range(2)})
    tiles.update({f"l{i}": _leaves(rng) for i in range(6)})
    grid = np.full((rows, cols), "bg", object)
    ground = {"castle": "castle", "underground": "blue"}.get(kind)
    for x in range(cols):                                  # ground, with the odd gap
        if rng.random() < 0.9:
            grid[13:15, x] = ground or f"g{rng.integers(3)}"
    if kind in ("overworld", "big_sky"):
        for _ in range(rng.integers(1, 4) if kind == "overworld" else 1):
            x, y = rng.integers(0, cols - 3), rng.integers(3, 7)
            grid[y, x:x + 3] = ["c0", "c1", "c2"]
    if kind == "overworld":
        x = rng.integers(0, cols - 2)
        grid[12, x:x + 2] = ["h0", "h1"]
        if rng.random() < 0.7:
            y, x = rng.integers(7, 10), rng.integers(0, cols - 5)
            grid[y, x:x + 5] = [("q" if rng.random() < 0.3 else "brick") for _ in range(5)]
        if rng.random() < 0.6:
            x, top = rng.integers(0, cols - 2), rng.integers(9, 12)
            grid[top:13, x], grid[top:13, x + 1] = "pl", "pr"
    elif kind == "underground":
        grid[2, :] = "blue"
        y, x = rng.integers(6, 10), rng.integers(0, cols - 6)
        grid[y, x:x + 6] = "brick"
    elif kind == "castle":
        grid[2:4, :] = "castle"
        x = rng.integers(0, cols - 4)
        grid[4:8, x:x + 4] = "castle"
        grid[13:15, rng.integers(2, cols - 4):][:, :3] = "w0"       # a pit of "lava"
    elif kind == "night":
        for _ in range(rng.integers(4, 12)):
            grid[rng.integers(2, 10), rng.integers(0, cols)] = f"s{rng.integers(6)}"
    elif kind == "water":
        grid[3, :] = ["w0", "w1"] * 8 + ["w0"]
        grid[13:15, :] = "g0"
    elif kind == "jungle":
        for y in range(3, 11):
            for x in range(cols):
                if rng.random() < 0.6 + 0.04 * y:
                    grid[y, x] = f"l{rng.integers(6)}"
    img = np.concatenate([np.concatenate([tiles[n] for n in row], axis=1) for row in grid], axis=0)
    sx = int(rng.integers(0, T))                           # horizontal scroll
    img = np.ascontiguousarray(img[:, sx:sx + W])
    pal = np.array([(0, 0, 0), RED, PINK, BROWN], np.uint8)
    for _ in range(rng.integers(0, 5)):                    # sprites anywhere
        bm = _sprite_bitmap(rng, 16 if rng.random() < 0.7 else 32)
        y, x = rng.integers(40, H - bm.shape[0]), rng.integers(0, W - 16)
        img[y:y + bm.shape[0], x:x + 16][bm > 0] = pal[bm[bm > 0]]
    if hud == "random":
        img[16:40] = bg                                    # the HUD, drawn over the backdrop
        _text(img, 24, 16, rng.integers(0, 40, 5))
        _text(img, 24, 24, rng.integers(0, 10, 6))
        _text(img, 144, 16, rng.integers(0, 40, 5))
        _text(img, 152, 24, rng.integers(0, 10, 3))
        _text(img, 200, 16, rng.integers(0, 40, 4))
        _text(img, 208, 24, rng.integers(0, 10, 3))
    elif hud in ("fixed", "bottom"):
        if hud == "bottom":                                # the level sits above the bar
            img = np.ascontiguousarray(np.roll(img, -32, axis=0))
        y0 = 16 if hud == "fixed" else H - 24
        img[y0 - 8:y0 + 24] = bg if hud == "fixed" else BLACK
        for x, dy, codes in _LABELS:
            _text(img, x, y0 + dy - 16, codes)
        _text(img, 24, y0 + 8, rng.integers(0, 10, 6))     # score, coins, world, time
        img[y0 + 9:y0 + 15, 82:88] = YELLOW                # the coin icon
        img[y0 + 11, 90:94] = WHITE                        # "x"
        _text(img, 96, y0 + 8, rng.integers(0, 10, 2))
        _text(img, 152, y0 + 8, rng.integers(0, 10, 3))
        _text(img, 208, y0 + 8, rng.integers(0, 10, 3))
    if rng.random() < 0.3:                                 # NES left-column blanking
        img[:, :8] = bg if rng.random() < 0.5 else BLACK
    return img


def game_frames(n: int, seed: int = 0, *, hud: str = "fixed", repeat: int = 1) -> list[np.ndarray]:
    """n frames of one game (its HUD fixed), level kinds mixed; with ``repeat`` > 1 each frame
    is followed by ``repeat - 1`` near-copies in which one sprite moved a few pixels (as
    consecutive emulator frames are)."""
    out = []
    for i in range(n):
        a = nes_frame(seed * 1000 + i, hud=hud)
        out.append(a)
        for r in range(1, repeat):
            b = a.copy()
            b[196:212, 100 + 2 * r:164 + 2 * r] = a[196:212, 100:164]
            out.append(b)
    return out


def sprite(seed: int, size: int = 64) -> np.ndarray:
    """A (size, size, 4) uint8 sprite: simple shapes, outlined, on a transparent background."""
    rng = np.random.default_rng(seed)
    im = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    colours = [tuple(int(v) for v in rng.integers(0, 256, 3)) + (255,) for _ in range(4)]
    outline = (24, 24, 24, 255)
    for i in range(rng.integers(1, 4)):
        x0, y0 = rng.integers(4, size // 2, 2)
        x1, y1 = x0 + rng.integers(10, size // 2), y0 + rng.integers(10, size // 2)
        box = [int(x0), int(y0), int(min(x1, size - 4)), int(min(y1, size - 4))]
        shape = rng.integers(3)
        if shape == 0:
            d.ellipse(box, fill=colours[i], outline=outline)
        elif shape == 1:
            d.rectangle(box, fill=colours[i], outline=outline)
        else:
            d.polygon([(box[0], box[3]), (box[2], box[3]), ((box[0] + box[2]) // 2, box[1])],
                      fill=colours[i], outline=outline)
    for _ in range(2):                                      # eyes, highlights
        x, y = rng.integers(16, size - 16, 2)
        d.point([(int(x), int(y))], fill=colours[3])
    return np.asarray(im).copy()


# --------------------------------------------------------------------------- as users save them
def as_nearest(a: np.ndarray, k: int) -> np.ndarray:
    return np.repeat(np.repeat(a, k, 0), k, 1)


def as_resized(a: np.ndarray, width: int, height: int, resample=Image.NEAREST) -> np.ndarray:
    return np.asarray(Image.fromarray(a).resize((width, height), resample)).copy()


def as_aspect_8_7(a: np.ndarray, k: int = 2, width: int | None = None) -> np.ndarray:
    """k x nearest with the NES 8:7 pixel aspect undone horizontally (256 -> 585 at k = 2)."""
    h, w = a.shape[:2]
    return as_resized(a, width or int(round(w * k * 8 / 7)), h * k)


def as_bilinear(a: np.ndarray, k: int = 2) -> np.ndarray:
    h, w = a.shape[:2]
    return as_resized(a, w * k, h * k, Image.BILINEAR)


def as_jpeg(a: np.ndarray, k: int = 2, quality: int = 90) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(as_nearest(a, k)).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")).copy()


def jpeg_bytes(a: np.ndarray, k: int = 2, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(as_nearest(a, k)).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def as_letterboxed(a: np.ndarray, top: int, left: int, colour=BLACK) -> np.ndarray:
    """``a`` centred on a ``colour`` canvas with ``top`` lines above and below and ``left``
    columns left and right."""
    h, w, c = a.shape
    out = np.zeros((h + 2 * top, w + 2 * left, c), np.uint8)
    out[...] = np.array(colour + (255,) * (c - 3), np.uint8)[:c]
    out[top:top + h, left:left + w] = a
    return out
