"""dedupe: drop tiles that copy the training data or each other, order the rest by quality.

Inputs: slice's artifact (or image files, sliced here with 16-px tiles and flips) and,
optionally, crop's artifact (``tiles.npy``, ``tiles_origin.npy``, ``screens.json``) or training
image files cut on the tile grid.  Steps, in order:

1. **Flat tiles** (one colour covers at least ``flat_fraction`` of the pixels) are kept at most
   once per dominant colour: the cleanest one (fewest colours, fewest stray pixels).  Flat tiles
   are never treated as copies of training tiles (every game has a plain sky), and their
   perceptual hash is meaningless (a flat image's DCT is pure rounding noise).
2. **Training copies**: a tile whose perceptual hash, in any of its four orientations, lies
   within ``train_distance`` bits of a training tile's is dropped.  Greyscale hashes cannot see
   colour, so each hash match is paired with an exact colour-aware check: a tile whose pixels
   equal a training tile's (in some orientation) is reported as ``training_exact``; a hash match
   in other colours is still a structural copy (``training``) and says ``same_colours: false``.
3. **Near-duplicates** among the remaining tiles: two tiles are near-duplicates when their hashes
   are within ``dup_distance`` bits (in some orientation when flips are on) *and* they differ
   in at most ``dup_fraction`` of their pixels (the colour-aware key: palette swaps are kept).
   Clusters are formed greedily from the cleanest tile (fewest colours, fewest isolated pixels,
   then best score); the cleanest is kept and the others point to it.
4. The kept tiles are ordered by :func:`tilesets.quality.quality` (best first) and every map
   cell is remapped: a dropped tile's cells go to the tile that replaced it (duplicate or flat)
   or to the nearest kept tile by hash (training copy), with flip bits composed so the cell still
   shows the right orientation.

Artifacts: ``bank.npy`` (kept, ordered), ``maps.npz`` (uint32, remapped), ``tiles.json``,
``dropped.json``, ``evidence.png``.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from stages._common import (InputError, ParamError, ProgressFn, Skipped, StageError,
                            expand_inputs, find_artifact, iter_images, no_progress, param,
                            save_npy, save_npz, save_png, write_json)
from tilesets import bank as bank_mod
from tilesets.hashindex import HashIndex, popcount64
from tilesets.phash import HASHES, hash_tiles
from tilesets.quality import cleanliness_key, quality, tile_stats

NAME = "dedupe"
INPUTS = {"tiles": "slice", "training": "crop"}
OPTIONAL_INPUTS = ("training",)
LIBS = ("numpy", "pillow", "scipy")

log = logging.getLogger("tilegan.dedupe")


@dataclass(frozen=True)
class Params:
    hash: str = param("phash", help="perceptual hash: phash, dhash or ahash (imagehash-identical)")
    train_distance: int = param(6, help="drop a tile whose hash is within this many bits of a "
                                        "training tile's (-1: never drop, only report novelty)")
    dup_distance: int = param(10, help="merge tiles whose hashes are within this many bits of "
                                      "each other (-1: no merging)")
    dup_fraction: float = param(0.1, help="near-duplicates may differ in at most this share of "
                                          "their pixels (1.0: hash distance alone decides)")
    flat_fraction: float = param(0.95, help="a tile whose most common colour covers at least this "
                                            "share of its pixels is flat: kept once per colour")
    max_tiles: int = param(0, help="fail if more tiles than this are kept (0: no limit)")
    w_structure: float = param(1.0, help="quality score weight of structure (edge density)")
    w_colours: float = param(0.5, help="quality score penalty weight of colours beyond 4")
    w_isolated: float = param(1.0, help="quality score penalty weight of isolated pixels")
    evidence_max: int = param(200, help="at most this many rows in evidence.png")
    workers: int = param(2, help="threads for hashing and hash searches")


# --------------------------------------------------------------------------- inputs
@dataclass
class _Generated:
    tiles: np.ndarray            # (K, T, T, 4) uint8
    maps: dict                   # stem -> uint32 (h, w)
    origins: list                # per tile [image, x, y] or None
    flips: bool
    tile_size: int


@dataclass
class _Training:
    tiles: np.ndarray            # (U, T, T, 3) uint8, distinct
    first: np.ndarray            # (U,) row of each distinct tile's first occurrence
    origin: np.ndarray           # (M, 3) int64 (screen index, x, y)
    screens: list                # [{id, source, ...}]
    total: int


def _load_generated(items: list, skipped: Skipped) -> _Generated:
    """Slice's artifact, or user images sliced here; unusable images go to ``skipped``."""
    bank_path = find_artifact(items, "bank.npy")
    if bank_path is not None:
        folder = bank_path.parent
        maps_path = folder / "maps.npz"
        meta_path = folder / "slice.json"
        if not maps_path.exists():
            raise InputError(f"{folder}: bank.npy has no maps.npz beside it; pass slice's output")
        try:
            tiles = np.load(bank_path, allow_pickle=False)
            with np.load(maps_path, allow_pickle=False) as z:
                maps = {k: (z[k].astype(np.int64) & 0xFFFFFFFF).astype(np.uint32) for k in z.files}
            meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        except (OSError, ValueError) as e:
            raise InputError(f"{folder}: cannot read slice's artifact ({e})") from None
        if tiles.dtype != np.uint8 or tiles.ndim != 4 or tiles.shape[1] != tiles.shape[2]:
            raise InputError(f"{bank_path}: expected uint8 (K, T, T, C) tiles, got "
                             f"{tiles.dtype} {tiles.shape}")
        if tiles.shape[-1] == 3:
            tiles = np.concatenate([tiles, np.full(tiles.shape[:3] + (1,), 255, np.uint8)], -1)
        t = int(tiles.shape[1])
        origins = meta.get("origins") or [None] * len(tiles)
        flips = bool(meta.get("flips", True))
        for stem, m in maps.items():
            ids = m & bank_mod.ID_MASK
            if ids.size and int(ids.max()) >= len(tiles):
                raise InputError(f"{maps_path}: map '{stem}' uses tile {int(ids.max())} but "
                                 f"bank.npy has {len(tiles)}")
        return _Generated(tiles, maps, list(origins), flips, t)
    # user images: slice them here (16-px tiles, flips on, crop the remainder)
    files = expand_inputs(items)
    if not files:
        raise InputError(f"dedupe: no images and no bank.npy in {', '.join(map(str, items))}")
    bank = bank_mod.TileBank(tile_size=16, flips=True)
    maps = {}
    for path, rgba in iter_images(files, skipped, mode="RGBA"):
        rgba = bank_mod.fit_to_grid(bank_mod.normalize_alpha(rgba), 16, "crop")
        if rgba.size == 0:
            skipped.add(path, f"{path}: smaller than one 16x16 tile")
            continue
        stem = path.stem if path.stem not in maps else f"{path.stem}-{len(maps)}"
        maps[stem] = bank.add_image(rgba, stem)
    if not maps:
        raise skipped.nothing_usable("dedupe", len(files))
    return _Generated(bank.array(), maps, [list(o) for o in bank.origins], True, 16)


def _split_tiles(tiles: np.ndarray, origin: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
    """Split (M, S, S, 3) tiles into (M*(S/t)^2, t, t, 3) with origins moved accordingly."""
    m, s = tiles.shape[:2]
    if s == t:
        return tiles, origin
    if s % t:
        raise ParamError(f"dedupe: training tiles are {s}x{s}, which the tile size {t} does not "
                         f"divide; use tile_size {s} or a divisor of it in slice")
    k = s // t
    sub = tiles.reshape(m, k, t, k, t, 3).transpose(0, 1, 3, 2, 4, 5).reshape(-1, t, t, 3)
    dy, dx = np.meshgrid(np.arange(k) * t, np.arange(k) * t, indexing="ij")
    o = np.repeat(origin, k * k, axis=0).copy()
    o[:, 1] += np.tile(dx.ravel(), m)
    o[:, 2] += np.tile(dy.ravel(), m)
    return sub, o


def _load_training(items: list, t: int, skipped: Skipped) -> Optional[_Training]:
    """Crop's artifact, or user images cut on the ``t`` grid; unusable images go to ``skipped``."""
    if not items:
        return None
    tiles_path = find_artifact(items, "tiles.npy")
    if tiles_path is not None:
        folder = tiles_path.parent
        try:
            tiles = np.load(tiles_path, allow_pickle=False)
            op = folder / "tiles_origin.npy"
            origin = (np.load(op, allow_pickle=False).astype(np.int64) if op.exists()
                      else np.zeros((len(tiles), 3), np.int64))
            sp = folder / "screens.json"
            screens = json.loads(sp.read_text()) if sp.exists() else []
        except (OSError, ValueError) as e:
            raise InputError(f"{folder}: cannot read crop's artifact ({e})") from None
        if tiles.dtype != np.uint8 or tiles.ndim != 4 or tiles.shape[-1] not in (3, 4):
            raise InputError(f"{tiles_path}: expected uint8 (M, S, S, 3) tiles, got "
                             f"{tiles.dtype} {tiles.shape}")
        if len(origin) != len(tiles):
            raise InputError(f"{folder}: tiles_origin.npy has {len(origin)} rows for "
                             f"{len(tiles)} tiles")
        tiles = tiles[..., :3]
        if tiles.shape[1] < t:
            raise ParamError(f"dedupe: training tiles are {tiles.shape[1]} px, smaller than the "
                             f"generated tiles ({t} px)")
        tiles, origin = _split_tiles(tiles, origin, t)
    else:
        files = expand_inputs(items)
        if not files:
            raise InputError(f"dedupe: no training images in {', '.join(map(str, items))}")
        parts, origins, screens = [], [], []
        for path, rgb in iter_images(files, skipped, mode="RGB"):
            h, w = rgb.shape[0] // t * t, rgb.shape[1] // t * t
            if h == 0 or w == 0:
                skipped.add(path, f"{path}: smaller than one {t}x{t} tile")
                continue
            cut = bank_mod.cut_tiles(rgb[:h, :w], t)
            gw = w // t
            k = np.arange(len(cut))
            origins.append(np.stack([np.full(len(cut), len(screens)), k % gw * t, k // gw * t], 1))
            screens.append({"id": path.stem, "source": str(path), "width": w, "height": h})
            parts.append(cut)
        if not parts:
            raise skipped.nothing_usable("dedupe", len(files), "training image(s)")
        tiles = np.concatenate(parts)
        origin = np.concatenate(origins).astype(np.int64)
    total = len(tiles)
    if total == 0:
        return None
    flat = np.ascontiguousarray(tiles).reshape(total, -1)
    keys = flat.view(np.dtype((np.void, flat.shape[1]))).ravel()
    _, first = np.unique(keys, return_index=True)
    first = np.sort(first)
    return _Training(np.ascontiguousarray(tiles[first]), first, origin, screens, total)


# --------------------------------------------------------------------------- helpers
def _rgb(tiles: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(tiles[..., :3])


def _orient_hashes(tiles: np.ndarray, method: str, workers: int) -> np.ndarray:
    """Hashes of the four orientations: (K, 4) uint64, column = flip code."""
    var = bank_mod.flip_variants(_rgb(tiles))                # (K, 4, T, T, 3)
    k = len(tiles)
    h = hash_tiles(var.reshape((k * 4,) + var.shape[2:]), method, workers=workers)
    return h.reshape(k, 4)


def _colour_set_signature(tiles: np.ndarray) -> np.ndarray:
    """Order-free 64-bit signature of each tile's set of RGB colours, (N,) uint64."""
    n = len(tiles)
    out = np.zeros(n, np.uint64)
    for s in range(0, n, 4096):                       # bounded memory for big training sets
        code = tiles[s:s + 4096].reshape(-1, tiles[0].size // 3, 3).astype(np.uint32)
        packed = (code[..., 0] | code[..., 1] << 8 | code[..., 2] << 16).astype(np.uint64)
        srt = np.sort(packed, axis=1)
        distinct = np.ones(srt.shape, bool)
        distinct[:, 1:] = srt[:, 1:] != srt[:, :-1]
        with np.errstate(over="ignore"):
            mixed = (srt + np.uint64(0x9E3779B97F4A7C15)) * np.uint64(0xBF58476D1CE4E5B9)
            mixed ^= mixed >> np.uint64(31)
            mixed *= np.uint64(0x94D049BB133111EB)
        out[s:s + 4096] = np.where(distinct, mixed, np.uint64(0)).sum(axis=1, dtype=np.uint64)
    return out


def _training_ref(tr: _Training, uid: int) -> dict:
    row = int(tr.first[uid])
    screen_i, x, y = (int(v) for v in tr.origin[row])
    scr = tr.screens[screen_i] if 0 <= screen_i < len(tr.screens) else {}
    return {"screen": scr.get("id", screen_i), "source": scr.get("source"), "x": x, "y": y,
            "row": row}


def _evidence_sheet(rows: list[tuple[np.ndarray, np.ndarray, str]], t: int) -> np.ndarray:
    """Rows of (generated RGBA tile, training RGB tile, label) -> RGB sheet, tiles scaled x4."""
    from PIL import Image, ImageDraw, ImageFont

    s = t * 4
    pad = 4
    text_w = 260
    if not rows:
        im = Image.new("RGB", (360, 40), (32, 32, 32))
        ImageDraw.Draw(im).text((8, 14), "no tile was dropped as a training copy",
                                fill=(230, 230, 230))
        return np.asarray(im)
    width = pad + s + pad + s + pad + text_w
    height = pad + (len(rows) + 1) * (s + pad)
    im = Image.new("RGB", (width, height), (32, 32, 32))
    draw = ImageDraw.Draw(im)
    try:                                            # Pillow's small bitmap font: fast to draw
        draw.font = ImageFont.load_default_imagefont()
    except AttributeError:                          # Pillow < 10.1
        pass
    draw.text((pad, pad + s // 2 - 5), "generated", fill=(230, 230, 230))
    draw.text((2 * pad + s, pad + s // 2 - 5), "training", fill=(230, 230, 230))
    for r, (gen, train, label) in enumerate(rows, start=1):
        y = pad + r * (s + pad)
        g = gen.copy()
        # show transparency as a dark checker so it differs from black
        if g.shape[-1] == 4:
            chk = ((np.add.outer(np.arange(t), np.arange(t)) % 2) * 40 + 60).astype(np.uint8)
            alpha = g[..., 3:4] > 0
            g = np.where(alpha, g[..., :3], chk[..., None].repeat(3, -1))
        gi = Image.fromarray(np.ascontiguousarray(g[..., :3])).resize((s, s), Image.NEAREST)
        ti = Image.fromarray(np.ascontiguousarray(train[..., :3])).resize((s, s), Image.NEAREST)
        im.paste(gi, (pad, y))
        im.paste(ti, (2 * pad + s, y))
        for j, line in enumerate(label.split("\n")[:4]):
            draw.text((3 * pad + 2 * s, y + 2 + 12 * j), line, fill=(230, 230, 230))
    return np.asarray(im)


def _validate(p: Params) -> None:
    if p.hash not in HASHES:
        raise ParamError(f"dedupe: hash must be one of {', '.join(sorted(HASHES))}, got {p.hash!r}")
    for name in ("train_distance", "dup_distance"):
        v = getattr(p, name)
        if not isinstance(v, int) or not -1 <= v <= 64:
            raise ParamError(f"dedupe: {name} must be an integer in -1..64, got {v!r}")
    if not 0.0 <= p.dup_fraction <= 1.0:
        raise ParamError(f"dedupe: dup_fraction must be in 0..1, got {p.dup_fraction}")
    if not 0.5 < p.flat_fraction <= 1.0:
        raise ParamError(f"dedupe: flat_fraction must be in (0.5, 1], got {p.flat_fraction}")
    if p.max_tiles < 0:
        raise ParamError(f"dedupe: max_tiles must be >= 0 (0: no limit), got {p.max_tiles}")
    if p.workers < 1:
        raise ParamError(f"dedupe: workers must be >= 1, got {p.workers}")


# --------------------------------------------------------------------------- run
def run(inputs: dict[str, list[Any]], params: Params, out_dir: Path,
        progress: ProgressFn = no_progress) -> dict:
    """Drop training copies, flat repeats and near-duplicates; order and remap the rest.

    Parameters
    ----------
    inputs : dict
        ``{"tiles": [slice's folder or images], "training": [crop's folder or images]}``;
        ``training`` may be missing or empty (then only the generated tiles are deduplicated).
    params : Params
    out_dir : Path
        Receives ``bank.npy``, ``maps.npz``, ``tiles.json``, ``dropped.json``, ``evidence.png``.

    Returns
    -------
    dict
        Counts: ``tiles_in, kept, dropped_training, dropped_training_exact, dropped_duplicate,
        dropped_flat, training_tiles, training_distinct``, novelty statistics, and the input
        images that could not be used (corrupt, or smaller than one tile): ``skipped`` (how
        many) and ``skipped_items`` (``[{path, reason, input: "tiles" | "training"}]``).
    """
    _validate(params)
    out_dir = Path(out_dir)
    items = inputs.get("tiles") or []
    if not items:
        raise InputError("dedupe: no tiles given; pass slice's output folder or image files")
    skipped_gen, skipped_train = Skipped(logger=log), Skipped(logger=log)
    gen = _load_generated(items, skipped_gen)
    tiles, t = gen.tiles, gen.tile_size
    k = len(tiles)
    if k == 0:
        raise InputError(f"dedupe: {items[0]}: the tile bank is empty")
    tr = _load_training(inputs.get("training") or [], t, skipped_train)
    skipped = ([dict(s, input="tiles") for s in skipped_gen.items]
               + [dict(s, input="training") for s in skipped_train.items])
    progress("dedupe", 1, 5)

    stats = tile_stats(tiles)
    score = quality(tiles, w_structure=params.w_structure, w_colours=params.w_colours,
                    w_isolated=params.w_isolated, stats=stats)
    clean = cleanliness_key(stats)
    gh = _orient_hashes(tiles, params.hash, params.workers)            # (K, 4)
    npix = t * t
    status = np.zeros(k, np.int8)            # 0 kept, 1 training, 2 duplicate, 3 flat
    replaced = np.full(k, -1, np.int64)      # tile that replaces a dropped one
    rel_code = np.zeros(k, np.uint8)         # dropped ~= flip(replacement, code)
    records: dict[int, dict] = {}

    # 1. flat tiles ------------------------------------------------------------------------
    is_flat = stats.dominant >= params.flat_fraction
    if is_flat.any():
        code = tiles.reshape(k, -1, 4).astype(np.uint32)
        packed = code[..., 0] | code[..., 1] << 8 | code[..., 2] << 16 | code[..., 3] << 24
        srt = np.sort(packed, axis=1)
        # dominant colour = the value at the middle of the sorted row (it covers > half)
        dom = srt[:, npix // 2]
        for colour in np.unique(dom[is_flat]):
            members = np.flatnonzero(is_flat & (dom == colour))
            best = members[np.lexsort((members, -score[members], clean[members]))[0]]
            for m in members:
                if m != best:
                    status[m] = 3
                    replaced[m] = best
                    records[int(m)] = {"reason": "flat", "colour": int(colour),
                                       "duplicate_of_bank": int(best)}
    candidates = np.flatnonzero(~is_flat)

    # 2. training copies ---------------------------------------------------------------------
    novelty = np.full(k, -1, np.int64)
    near_uid = np.full(k, -1, np.int64)
    near_code = np.zeros(k, np.uint8)
    if tr is not None:
        th = hash_tiles(tr.tiles, params.hash, workers=params.workers)
        index = HashIndex(th, workers=params.workers)
        ids, dists = index.nearest(gh.ravel())
        ids, dists = ids.reshape(k, 4), dists.reshape(k, 4)
        o = dists.argmin(axis=1)
        novelty = dists[np.arange(k), o]
        near_uid = ids[np.arange(k), o]
        near_code = o.astype(np.uint8)
        # exact colour-aware check: equal pixels imply equal hashes, so look at hash-0 matches
        exact = np.full(k, -1, np.int64)
        exact_code = np.zeros(k, np.uint8)
        look = candidates[novelty[candidates] == 0]            # equal pixels => equal hashes
        if len(look):
            lims, mids, _ = index.radius_search(gh[look].ravel(), 0)
            qrow = np.repeat(np.arange(len(look) * 4), np.diff(lims))
            ti, oc = look[qrow // 4], (qrow % 4).astype(np.uint8)
            var = bank_mod.flip_variants(_rgb(tiles))
            eq = np.zeros(len(mids), bool)
            for s in range(0, len(mids), 8192):
                sl_ = slice(s, s + 8192)
                eq[sl_] = (tr.tiles[mids[sl_]] == var[ti[sl_], oc[sl_]]).all(axis=(1, 2, 3))
            hit = np.flatnonzero(eq)[::-1]                     # reversed: first hit wins below
            exact[ti[hit]] = mids[hit]
            exact_code[ti[hit]] = oc[hit]
        if params.train_distance >= 0:
            hits = candidates[(novelty[candidates] <= params.train_distance)
                              | (exact[candidates] >= 0)]
            hit_uid = np.where(exact[hits] >= 0, exact[hits], near_uid[hits])
            gen_sig = dict(zip(hits.tolist(), _colour_set_signature(_rgb(tiles[hits])).tolist()))
            uniq_uid = np.unique(hit_uid)
            tr_sig = dict(zip(uniq_uid.tolist(),
                              _colour_set_signature(tr.tiles[uniq_uid]).tolist()))
            for i in hits.tolist():
                status[i] = 1
                is_exact = exact[i] >= 0
                uid = int(exact[i] if is_exact else near_uid[i])
                c = int(exact_code[i] if is_exact else near_code[i])
                same_colours = gen_sig[i] == tr_sig[uid]
                records[int(i)] = {"reason": "training_exact" if is_exact else "training",
                                   "distance": 0 if is_exact else int(novelty[i]),
                                   "flip": c, "same_colours": bool(same_colours),
                                   "training": _training_ref(tr, uid), "_uid": uid}
    progress("dedupe", 2, 5)

    # 3. near-duplicates among generated tiles --------------------------------------------------
    alive = candidates[status[candidates] == 0]
    if params.dup_distance >= 0 and len(alive) > 1:
        codes = (0, 1, 2, 3) if gen.flips else (0,)
        sub_index = HashIndex(gh[alive, 0])
        q = gh[alive][:, list(codes)].ravel()                       # (A*F,)
        lims, nb, _ = sub_index.radius_search(q, params.dup_distance)
        qrow = np.repeat(np.arange(len(q)), np.diff(lims))
        a_i = alive[qrow // len(codes)]
        c_i = np.asarray(codes, np.uint8)[qrow % len(codes)]
        a_j = alive[nb]
        keep = a_i != a_j
        a_i, a_j, c_i = a_i[keep], a_j[keep], c_i[keep]
        # colour-aware check: flip(t_i, c) ~ t_j in at most dup_fraction of the pixels
        if len(a_i) and params.dup_fraction < 1.0:
            var = bank_mod.flip_variants(tiles)
            ok = np.zeros(len(a_i), bool)
            for s in range(0, len(a_i), 4096):
                d = (var[a_i[s:s + 4096], c_i[s:s + 4096]] != tiles[a_j[s:s + 4096]]).any(-1)
                ok[s:s + 4096] = d.sum(axis=(1, 2)) <= params.dup_fraction * npix
            a_i, a_j, c_i = a_i[ok], a_j[ok], c_i[ok]
        nbrs: dict[int, list[tuple[int, int]]] = {}
        for i, j, c in zip(a_i.tolist(), a_j.tolist(), c_i.tolist()):
            nbrs.setdefault(i, []).append((j, c))
            nbrs.setdefault(j, []).append((i, c))
        order = alive[np.lexsort((alive, -score[alive], clean[alive]))]
        assigned = np.zeros(k, bool)
        for i in order.tolist():
            if assigned[i]:
                continue
            assigned[i] = True
            for j, c in nbrs.get(i, ()):
                if assigned[j]:
                    continue
                assigned[j] = True
                status[j] = 2
                replaced[j] = i
                rel_code[j] = c                  # t_j ~= flip(t_i, c)
                hd = int(popcount64(gh[j, 0] ^ gh[i, c]))
                records[j] = {"reason": "duplicate", "distance": hd, "flip": int(c),
                              "duplicate_of_bank": int(i)}
    progress("dedupe", 3, 5)

    # 4. order, replace, remap --------------------------------------------------------------------
    kept = np.flatnonzero(status == 0)
    if len(kept) == 0:
        n_train = int((status == 1).sum())
        raise StageError(
            f"dedupe: every one of the {k} tiles was dropped ({n_train} as training copies within "
            f"train_distance={params.train_distance}); loosen train_distance (e.g. "
            f"--train-distance {max(params.train_distance - 2, -1)}) or train longer")
    if params.max_tiles and len(kept) > params.max_tiles:
        raise ParamError(
            f"dedupe: {len(kept)} tiles kept, more than max_tiles={params.max_tiles}; raise "
            f"max_tiles, or merge more near-duplicates with a larger dup_distance / dup_fraction")
    kept = kept[np.lexsort((kept, -score[kept]))]
    new_id = np.full(k, -1, np.int64)
    new_id[kept] = np.arange(len(kept))
    # training copies: nearest kept tile by hash over orientations (ties: better-ranked tile)
    train_dropped = np.flatnonzero(status == 1)
    if len(train_dropped):
        kept_index = HashIndex(gh[kept, 0])
        codes = (0, 1, 2, 3) if gen.flips else (0,)
        q = gh[train_dropped][:, list(codes)].ravel()
        nid, nd = kept_index.nearest(q)
        nid, nd = nid.reshape(-1, len(codes)), nd.reshape(-1, len(codes))
        for r, i in enumerate(train_dropped):
            row_key = nd[r] * (len(kept) + 1) + nid[r]
            b = int(np.argmin(row_key))
            replaced[i] = kept[nid[r, b]]
            rel_code[i] = codes[b]          # flip(t_i, c) ~ t_kept  =>  t_i ~ flip(t_kept, c)
    # follow replacement to a kept tile (duplicates and flats point at kept tiles already)
    final_id = new_id.copy()
    final_code = np.zeros(k, np.uint8)
    for i in np.flatnonzero(status != 0):
        final_id[i] = new_id[replaced[i]]
        final_code[i] = rel_code[i]
        records[int(i)]["replaced_by"] = int(final_id[i])
    out_maps = {}
    for stem, m in gen.maps.items():
        ids, fl = bank_mod.decode_cells(m)
        out_maps[stem] = bank_mod.encode_cells(final_id[ids], fl ^ final_code[ids]).reshape(m.shape)
        if not gen.flips:
            out_maps[stem] &= bank_mod.ID_MASK
    out_bank = tiles[kept]
    progress("dedupe", 4, 5)

    # 5. reports ----------------------------------------------------------------------------------
    uses = np.zeros(len(kept), np.int64)
    for m in out_maps.values():
        uses += np.bincount((m & bank_mod.ID_MASK).astype(np.int64).ravel(), minlength=len(kept))
    tiles_meta = []
    for rank, i in enumerate(kept.tolist()):
        origin = gen.origins[i] if i < len(gen.origins) else None
        nearest = None
        if tr is not None and near_uid[i] >= 0:
            ref = _training_ref(tr, int(near_uid[i]))
            nearest = {"screen": ref["screen"], "source": ref["source"], "x": ref["x"],
                       "y": ref["y"], "distance": int(novelty[i])}
        tiles_meta.append({
            "id": rank, "bank_id": i,
            # a flat tile's hash is rounding noise: its distance says nothing, so no novelty
            "novelty": int(novelty[i]) if tr is not None and not is_flat[i] else None,
            "nearest_training": nearest,
            "source_image": origin[0] if origin else None,
            "origin": list(origin) if origin else None,
            "colours": int(stats.colours[i]), "isolated": int(stats.isolated[i]),
            "flat": bool(is_flat[i]), "score": round(float(score[i]), 6), "uses": int(uses[rank]),
            "hash": format(int(gh[i, 0]), "016x"),
        })
    dropped = []
    evidence_rows = []
    for i in sorted(records):
        rec = records[i]
        uid = rec.pop("_uid", None)
        if "duplicate_of_bank" in rec:
            rec["duplicate_of"] = int(new_id[rec["duplicate_of_bank"]])
        origin = gen.origins[i] if i < len(gen.origins) else None
        dropped.append({"tile": i, "source_image": origin[0] if origin else None, **rec})
        if uid is not None:
            evidence_rows.append((rec["distance"], i, uid, rec))
    # closest copies first (exact copies on top); at most evidence_max rows
    evidence_rows.sort(key=lambda r: (r[0], r[1]))
    sheet_rows = []
    for dist, i, uid, rec in evidence_rows[:params.evidence_max]:
        ref = rec["training"]
        label = (f"bank {i}: {rec['reason']}\nHamming distance {dist}\n"
                 f"screen {ref['screen']} at {ref['x']},{ref['y']}\n"
                 f"{str(ref['source'] or '')[-36:]}")
        twin = bank_mod.flip_tile(tr.tiles[uid], int(rec["flip"]))       # shown as generated
        sheet_rows.append((tiles[i], twin, label))
    save_npy(out_dir / "bank.npy", out_bank)
    save_npz(out_dir / "maps.npz", **out_maps)
    write_json(out_dir / "tiles.json", tiles_meta)
    write_json(out_dir / "dropped.json", dropped)
    save_png(out_dir / "evidence.png", _evidence_sheet(sheet_rows, t))
    progress("dedupe", 5, 5)

    counts = {reason: sum(1 for d in dropped if d["reason"] == reason)
              for reason in ("training", "training_exact", "duplicate", "flat")}
    nov = novelty[kept[~is_flat[kept]]] if tr is not None else np.zeros(0)
    summary = {
        "hash": params.hash, "tiles_in": k, "kept": int(len(kept)),
        "dropped_training": counts["training"], "dropped_training_exact": counts["training_exact"],
        "dropped_duplicate": counts["duplicate"], "dropped_flat": counts["flat"],
        "training_tiles": tr.total if tr is not None else 0,
        "training_distinct": len(tr.tiles) if tr is not None else 0,
        "novelty_min": int(nov.min()) if len(nov) else None,
        "novelty_median": float(np.median(nov)) if len(nov) else None,
        "evidence_rows": len(sheet_rows),
        "skipped": len(skipped),
        "skipped_items": skipped,
    }
    log.info("dedupe: %d -> %d tiles (%d training, %d exact, %d duplicate, %d flat)%s", k,
             len(kept), counts["training"], counts["training_exact"], counts["duplicate"],
             counts["flat"], f"; {len(skipped)} input image(s) skipped" if skipped else "")
    return summary
