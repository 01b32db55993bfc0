"""NES background files: CHR pattern table, palette, nametable + attribute table.

Entry point for the export stage (``--nes``)::

    write_nes_bundle(screens: list[np.ndarray], names: list[str], out_dir: Path, *,
                     backdrop: int | None = None, subpalettes: np.ndarray | None = None,
                     allowed: Sequence[int] | None = None) -> dict

``screens`` are (H, W) uint8 arrays of NES colour numbers ($00-$3F, e.g. the pixel values
of quantize's indexed PNGs made with ``--nes``), H ≤ 240 and W ≤ 256, both multiples of 16.
``backdrop`` / ``subpalettes`` (shape (4, 3)) are quantize's fitted set (``quantize.json``
→ ``nes``); when None they are inferred from the screens.  Files written to ``out_dir``:

* ``tiles.chr`` — pattern table shared by all screens: 8×8 tiles, 2bpp planar, 16 bytes per
  tile (8 bytes bit-plane 0, then 8 bytes bit-plane 1, MSB = leftmost pixel), padded with
  blank tiles to 4096 bytes (256 tiles); tile 0 is blank (all backdrop).  When the screens
  together need more than 256 tiles, one ``<name>.chr`` per screen is written instead.
* ``palette.pal`` — 16 bytes: 4 background sub-palettes × (backdrop, c1, c2, c3), as NES
  colour numbers (the layout of PPU $3F00-$3F0F; NES Screen Tool's 16-byte .pal).
* ``<name>.nam`` — 1024 bytes: the 32×30 nametable (960 tile numbers, row-major) followed by
  the 64-byte attribute table (8×8 bytes, each covering 32×32 pixels: bits 0-1 top-left,
  2-3 top-right, 4-5 bottom-left, 6-7 bottom-right 16×16 area).  A screen smaller than
  256×240 sits at the top-left; the rest is blank tile 0 with sub-palette 0.
* ``nes.json`` — what was written: tile counts, backdrop, sub-palettes, file names.

A screen needing more than 255 distinct non-blank 8×8 tiles has its most similar tiles
merged (``merge_tiles=True``, the default; ``nes.json`` then marks it ``"exact": false`` and
gives ``tile_merges.max_pixels_changed``, the most pixels any tile changed) or, with
``merge_tiles=False``, raises.  Returns the ``nes.json`` dict.  Raises ValueError naming the
screen when a screen is not legal (size, a colour outside its area's sub-palette).  The decoders
(:func:`decode_chr`, :func:`decode_palette`, :func:`decode_nametable`) and
:func:`render_screen` read the files back to pixels.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from palettes.nesfit import _attr_for, infer_subpalettes, merge_patterns, pattern_tiles

__all__ = ["encode_chr", "decode_chr", "encode_palette", "decode_palette", "encode_nametable",
           "decode_nametable", "render_screen", "write_nes_bundle", "SCREEN_W", "SCREEN_H"]

SCREEN_W, SCREEN_H = 256, 240
TILES_PER_TABLE = 256


def encode_chr(tiles: np.ndarray, *, pad_to: Optional[int] = TILES_PER_TABLE) -> bytes:
    """Encode 2-bit tiles as NES CHR data.

    Parameters
    ----------
    tiles : ndarray, shape (N, 8, 8), integer values 0..3
    pad_to : int or None — pad with blank tiles to this many (None: no padding)

    Returns
    -------
    bytes, length 16 * max(N, pad_to)
    """
    t = np.asarray(tiles)
    if t.ndim != 3 or t.shape[1:] != (8, 8):
        raise ValueError(f"tiles must have shape (N, 8, 8), got {t.shape}")
    if t.size and (t.min() < 0 or t.max() > 3):
        raise ValueError("tile values must be 0..3")
    if pad_to is not None and len(t) > pad_to:
        raise ValueError(f"{len(t)} tiles do not fit a pattern table of {pad_to}")
    t = t.astype(np.uint8)
    lo = np.packbits(t & 1, axis=2)[..., 0]          # (N, 8): MSB = leftmost pixel
    hi = np.packbits((t >> 1) & 1, axis=2)[..., 0]
    data = np.concatenate([lo, hi], axis=1).tobytes()
    if pad_to is not None:
        data += bytes(16 * (pad_to - len(t)))
    return data


def decode_chr(data: bytes) -> np.ndarray:
    """Decode CHR data into tiles, shape (len/16, 8, 8), uint8 values 0..3."""
    if len(data) % 16:
        raise ValueError(f"CHR data length {len(data)} is not a multiple of 16")
    a = np.frombuffer(data, np.uint8).reshape(-1, 2, 8)
    lo = np.unpackbits(a[:, 0, :, None], axis=2)
    hi = np.unpackbits(a[:, 1, :, None], axis=2)
    return (lo | (hi << 1)).astype(np.uint8)


def encode_palette(backdrop: int, subpalettes: np.ndarray) -> bytes:
    """16 bytes: for each of the 4 sub-palettes, backdrop then its 3 colours."""
    s = np.asarray(subpalettes, np.int64)
    if s.shape != (4, 3):
        raise ValueError(f"subpalettes must have shape (4, 3), got {s.shape}")
    vals = np.concatenate([np.full((4, 1), backdrop), s], axis=1).ravel()
    if vals.min() < 0 or vals.max() > 63:
        raise ValueError("NES colour numbers must be 0..63")
    return bytes(int(v) for v in vals)


def decode_palette(data: bytes) -> np.ndarray:
    """Decode a 16-byte palette file to shape (4, 4) uint8 (column 0 = backdrop slot)."""
    if len(data) != 16:
        raise ValueError(f"an NES background palette file is 16 bytes, got {len(data)}")
    return (np.frombuffer(data, np.uint8) & 0x3F).reshape(4, 4).copy()


def encode_nametable(tile_ids: np.ndarray, attr: np.ndarray) -> bytes:
    """Encode a 32×30 nametable and its attributes.

    Parameters
    ----------
    tile_ids : ndarray, shape (30, 32), integer 0..255
    attr : ndarray, shape (15, 16), integer 0..3 — sub-palette per 16×16 area

    Returns
    -------
    bytes, length 1024 (960 + 64)
    """
    t = np.asarray(tile_ids)
    a = np.asarray(attr)
    if t.shape != (30, 32) or a.shape != (15, 16):
        raise ValueError(f"need tile_ids (30, 32) and attr (15, 16), got {t.shape} {a.shape}")
    ap = np.zeros((16, 16), np.uint8)
    ap[:15] = a
    q = ap.reshape(8, 2, 8, 2)                      # (by, row-in-byte, bx, col-in-byte)
    byte = q[:, 0, :, 0] | (q[:, 0, :, 1] << 2) | (q[:, 1, :, 0] << 4) | (q[:, 1, :, 1] << 6)
    return t.astype(np.uint8).tobytes() + byte.astype(np.uint8).tobytes()


def decode_nametable(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Decode 1024 bytes into (tile_ids (30, 32) uint8, attr (15, 16) uint8)."""
    if len(data) != 1024:
        raise ValueError(f"a nametable with attributes is 1024 bytes, got {len(data)}")
    a = np.frombuffer(data, np.uint8)
    t = a[:960].reshape(30, 32).copy()
    b = a[960:].reshape(8, 8)
    q = np.zeros((8, 2, 8, 2), np.uint8)
    q[:, 0, :, 0] = b & 3
    q[:, 0, :, 1] = (b >> 2) & 3
    q[:, 1, :, 0] = (b >> 4) & 3
    q[:, 1, :, 1] = (b >> 6) & 3
    return t, q.reshape(16, 16)[:15].copy()


def render_screen(tiles: np.ndarray, palette16: np.ndarray, tile_ids: np.ndarray,
                  attr: np.ndarray) -> np.ndarray:
    """Render a screen to NES colour numbers the way the PPU would.

    Parameters
    ----------
    tiles : ndarray, shape (N, 8, 8) — :func:`decode_chr`
    palette16 : ndarray, shape (4, 4) — :func:`decode_palette`; value 0 of any tile shows
        the backdrop ``palette16[0, 0]``
    tile_ids : ndarray, shape (30, 32); attr : ndarray, shape (15, 16)

    Returns
    -------
    ndarray, shape (240, 256), uint8
    """
    pix = tiles[tile_ids.astype(np.intp)]                       # (30, 32, 8, 8)
    pix = pix.transpose(0, 2, 1, 3).reshape(240, 256)
    big = np.repeat(np.repeat(attr, 16, 0), 16, 1)[:240, :256]
    out = palette16[big, pix]
    out[pix == 0] = palette16[0, 0]
    return out.astype(np.uint8)


def _atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def write_nes_bundle(screens: Sequence[np.ndarray], names: Sequence[str], out_dir: "os.PathLike | str",
                     *, backdrop: Optional[int] = None, subpalettes: Optional[np.ndarray] = None,
                     allowed: Optional[Sequence[int]] = None, merge_tiles: bool = True) -> dict:
    """Write CHR + palette + nametables for a set of screens; see the module docstring."""
    out_dir = Path(out_dir)
    if len(screens) != len(names):
        raise ValueError(f"{len(screens)} screens but {len(names)} names")
    if not screens:
        raise ValueError("no screens to write")
    if len(set(names)) != len(names):
        raise ValueError("screen names must be unique")
    scr = []
    for nm, s in zip(names, screens):
        a = np.asarray(s)
        if a.ndim != 2:
            raise ValueError(f"screen {nm}: expected an (H, W) array of NES colour numbers, got {a.shape}")
        h, w = a.shape
        if h > SCREEN_H or w > SCREEN_W or h % 16 or w % 16 or h == 0 or w == 0:
            raise ValueError(f"screen {nm}: size {w}x{h} must be at most 256x240 and a multiple "
                             f"of 16 in both directions")
        if a.max() > 63:
            raise ValueError(f"screen {nm}: value {int(a.max())} is not an NES colour number")
        if allowed is not None:
            bad = sorted(set(np.unique(a).tolist()) - set(int(x) for x in allowed))
            if bad:
                raise ValueError(f"screen {nm}: colours {', '.join(f'${v:02X}' for v in bad)} are "
                                 f"not allowed")
        scr.append(a.astype(np.uint8))
    if subpalettes is None:
        inf = infer_subpalettes(scr, backdrop=backdrop)
        if inf is None:
            raise ValueError("the screens are not NES-legal: no backdrop + 4 sub-palettes of 3 "
                             "colours cover every 16x16 area (run quantize with --nes)")
        backdrop, subpalettes = inf
    elif backdrop is None:
        raise ValueError("a backdrop colour is needed with explicit sub-palettes")
    subs = np.asarray(subpalettes, np.int64)
    per_screen = []
    for nm, a in zip(names, scr):
        attr, bad = _attr_for(a, int(backdrop), subs, 16)
        if bad:
            ax, ay, cols = bad[0]
            raise ValueError(f"screen {nm}: 16x16 area ({ax}, {ay}) uses "
                             + " ".join(f"${c:02X}" for c in cols) + f", which no sub-palette holds "
                             f"(and {len(bad) - 1} more such areas)")
        pats = pattern_tiles(a, attr, int(backdrop), subs)          # (th*tw, 8, 8)
        merged = None
        with_blank = np.concatenate([np.zeros((1, 64), np.uint8), pats.reshape(len(pats), -1)])
        if len(np.unique(with_blank, axis=0)) > TILES_PER_TABLE:      # tile 0 is always blank
            if not merge_tiles:
                raise ValueError(f"screen {nm}: more than {TILES_PER_TABLE} unique 8x8 tiles "
                                 f"(with the blank tile 0); merge near-identical tiles (merge_tiles=True) or "
                                 f"use a smaller screen")
            pats, merged = merge_patterns(pats, TILES_PER_TABLE - 1)
        per_screen.append((a.shape, attr, pats, merged))

    def table_for(pat_sets):
        blank = np.zeros((1, 8, 8), np.uint8)
        allp = np.concatenate([blank] + [p for p in pat_sets])
        keys = allp.reshape(len(allp), -1)
        _, first, inv = np.unique(keys, axis=0, return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")           # first-appearance order, blank first
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        return allp[first[order]], rank[inv.reshape(-1)][1:]

    uniq_all, ids_all = table_for([p for _, _, p, _ in per_screen])
    shared = len(uniq_all) <= TILES_PER_TABLE
    out_dir.mkdir(parents=True, exist_ok=True)
    info: dict = {"backdrop": int(backdrop), "subpalettes": subs.tolist(), "palette": "palette.pal",
                  "shared_chr": shared, "screens": []}
    _atomic(out_dir / "palette.pal", encode_palette(int(backdrop), subs))
    if shared:
        table = uniq_all
        _atomic(out_dir / "tiles.chr", encode_chr(table))
        info["chr"] = "tiles.chr"
        info["tiles"] = int(len(table))
    offset = 0
    for nm, (shape, attr, pats, merged) in zip(names, per_screen):
        if shared:
            ids = ids_all[offset:offset + len(pats)]
            offset += len(pats)
            chr_name = "tiles.chr"
            ntiles = int(len(np.unique(ids)))
        else:
            table, ids = table_for([pats])
            if len(table) > TILES_PER_TABLE:
                raise ValueError(f"screen {nm}: {len(table)} unique 8x8 tiles, more than the 256 a "
                                 f"pattern table holds; merge near-identical tiles or split the screen")
            chr_name = f"{nm}.chr"
            _atomic(out_dir / chr_name, encode_chr(table))
            ntiles = int(len(table))
        h, w = shape
        tid = np.zeros((30, 32), np.uint8)
        tid[:h // 8, :w // 8] = np.asarray(ids, np.uint8).reshape(h // 8, w // 8)
        at = np.zeros((15, 16), np.uint8)
        at[:attr.shape[0], :attr.shape[1]] = attr
        _atomic(out_dir / f"{nm}.nam", encode_nametable(tid, at))
        row = {"name": nm, "nametable": f"{nm}.nam", "chr": chr_name,
               "width": int(w), "height": int(h), "tiles": ntiles, "exact": merged is None}
        if merged is not None:
            row["tile_merges"] = merged
        info["screens"].append(row)
    _atomic(out_dir / "nes.json", (json.dumps(info, indent=2, sort_keys=True) + "\n").encode())
    return info
