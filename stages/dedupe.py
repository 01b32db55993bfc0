"""dedupe: drop tiles that copy the training data or each other, order the rest by quality.

Inputs: ``tileset``, slice's artifact (or image files, sliced here with 16-px tiles and flips),
and, optionally, ``training_tiles``, crop's artifact (:class:`tilesets.artifacts.TrainingTiles`)
or training image files cut on the tile grid.  Steps of :func:`dedupe`, in order:

1. **Copy calls**: every tile is judged against the distinct training tiles by
   :func:`tilesets.copies.judge_copies` (pixel by pixel in colour, after flips when the tile set
   has them and shifts of up to ``copy_shift`` pixels): ``exact``, ``near``, ``palette_swap``,
   ``shifted`` or ``not_copy``, with the training tile, the differing pixels and the alignment.
2. **Flat tiles** (one colour covers at least ``flat_fraction`` of the pixels) are kept at most
   once per dominant colour: the cleanest one (fewest colours, fewest stray pixels).
3. **Training copies**: a tile called a copy is dropped (a palette swap too, unless
   ``keep_palette_swaps``; nothing with ``drop_copies`` off).  *Plain* tiles (flat, or too little
   structure for the judge to compare them other than pixel for pixel) are never dropped as
   copies: a designer needs the plain sky even when a training screen has the same one; they are
   kept with novelty ``common``.
4. **Near-duplicates** among the remaining tiles: two tiles are near-duplicates when their
   perceptual hashes are within ``dup_distance`` bits (in some orientation when flips are on)
   *and* they differ in at most ``dup_fraction`` of their pixels (palette swaps are kept).
   Clusters are formed greedily from the cleanest tile (fewest colours, fewest isolated pixels,
   then best score); the cleanest is kept and the others point to it.
5. The kept tiles are ordered by :func:`tilesets.quality.quality` (best first) and every map
   cell is remapped: a dropped tile's cells go to the tile that replaced it (duplicate or flat)
   or to the nearest kept tile by hash (training copy), with flip bits composed so the cell still
   shows the right orientation.

Artifacts: the kept :class:`tilesets.artifacts.TileSet` (``bank.npy`` ordered, ``maps.npz``
remapped, ``tileset.json``), ``tiles.json`` (:class:`KeptTile` records: novelty and the nearest
training tile), ``dropped.json`` (:class:`Dropped` records: a copy's kind, differing pixels,
colour distance, flip, shift and training tile), ``evidence.png`` (every copy call: generated |
aligned training tile | differing pixels).
"""
from __future__ import annotations

import enum
import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from stages._common import (InputError, ParamError, ProgressFn, Skipped, StageError, StageParams,
                            expand_inputs, find_artifact, iter_images, no_progress, param,
                            save_npy, save_npz, save_png, write_json)
from tilesets.artifacts import ArtifactError, TileSet, TrainingTiles, grid_cut
from tilesets.bank import ImageSlicer
from tilesets.cells import ID_MASK, decode_cells, encode_cells, flip_variants
from tilesets.copies import CopyCall, CopyKind, CopyRules, TrainingIndex, judge_copies
from tilesets.copies import evidence_sheet as copy_evidence_sheet
from tilesets.hashindex import HashIndex, popcount64
from tilesets.phash import HASHES, hash_tiles
from tilesets.pixels import pack_colours
from tilesets.quality import TileStats, cleanliness_key, quality, tile_stats

NAME = "dedupe"
INPUTS = {"tileset": "slice", "training_tiles": "crop"}
OPTIONAL_INPUTS = ("training_tiles",)
LIBS = ("numpy", "pillow", "scipy")

log = logging.getLogger("tilegan.dedupe")

#: Tile side used when dedupe is given images instead of slice's artifact.
IMAGE_TILE_SIZE = 16


@dataclass(frozen=True)
class Params(StageParams):
    STAGE = "dedupe"

    drop_copies: bool = param(True, help="drop the tiles called copies of a training tile (off: "
                                         "keep them, only report the calls)")
    keep_palette_swaps: bool = param(False, help="keep a tile that is a training tile's pattern "
                                                 "in other colours (flagged novelty: copy)")
    copy_tolerance: float = param(3.0, help="two pixels differ when their colours are more than "
                                            "this ΔE76 apart (one just-noticeable step: 2.3)",
                                  min=0.0, max=100.0)
    copy_fraction: float = param(0.06, help="a near or shifted copy differs from its training "
                                            "tile in at most this share of the pixels (0.06: 15 "
                                            "of 256, e.g. a corner of other background)",
                                 min=0.0, max=0.49)
    copy_shift: int = param(2, help="look for copies shifted by up to this many pixels",
                            min=0, max=4)
    hash: str = param("phash", help="perceptual hash finding near-duplicate generated tiles: "
                                    "phash, dhash or ahash (imagehash-identical)",
                      choices=tuple(sorted(HASHES)))
    dup_distance: int = param(10, help="merge tiles whose hashes are within this many bits of "
                                      "each other (-1: no merging)", min=-1, max=64)
    dup_fraction: float = param(0.1, help="near-duplicates may differ in at most this share of "
                                          "their pixels (1.0: hash distance alone decides)",
                                min=0.0, max=1.0)
    flat_fraction: float = param(0.95, help="a tile whose most common colour covers at least this "
                                            "share of its pixels is flat: kept once per colour "
                                            "(more than 0.5)", max=1.0)
    max_tiles: int = param(0, help="fail if more tiles than this are kept (0: no limit)", min=0)
    w_structure: float = param(1.0, help="quality score weight of structure (edge density)")
    w_colours: float = param(0.5, help="quality score penalty weight of colours beyond 4")
    w_isolated: float = param(1.0, help="quality score penalty weight of isolated pixels")
    evidence_max: int = param(2000, help="at most this many copy calls in evidence.png "
                                         "(dropped.json lists them all; 0: no limit)", min=0)
    evidence_near: int = param(24, help="also show this many kept tiles closest to a training "
                                        "tile in evidence.png (the calls not made)", min=0)
    workers: int = param(2, help="threads for hashing and hash searches", min=1)

    def check(self) -> None:
        super().check()
        if not self.flat_fraction > 0.5:  # the dominant colour is read at the sorted middle
            raise ParamError(f"dedupe: flat_fraction must be in (0.5, 1], got {self.flat_fraction}",
                             field="flat_fraction")

    def rules(self) -> CopyRules:
        """The copy judge's thresholds (the others: :class:`tilesets.copies.CopyRules`')."""
        return CopyRules(pixel_tolerance=self.copy_tolerance, near_fraction=self.copy_fraction,
                         max_shift=self.copy_shift)

    def drops(self, kind: CopyKind) -> bool:
        """Whether a (non-plain) tile called ``kind`` is dropped."""
        if not self.drop_copies or kind == CopyKind.NOT_COPY:
            return False
        return not (kind == CopyKind.PALETTE_SWAP and self.keep_palette_swaps)


# --------------------------------------------------------------------------- records
class Status(enum.IntEnum):
    """What became of a tile of the input bank."""

    KEPT = 0
    TRAINING = 1     # a copy of a training tile
    DUPLICATE = 2    # a near-duplicate of a kept tile
    FLAT = 3         # a flat tile of a colour already kept


class Reason(str, enum.Enum):
    """Why a tile was dropped (``reason`` in dropped.json)."""

    TRAINING = "training"      # a copy of a training tile; ``kind`` says which
    DUPLICATE = "duplicate"
    FLAT = "flat"


class Novelty(str, enum.Enum):
    """A kept tile's relation to the training tiles (``novelty`` in tiles.json)."""

    NEW = "new"            # no training tile shares its colour pattern or a 4x4 block of it
    RELATED = "related"    # a training tile shares a block or the pattern, but it is no copy
    COPY = "copy"          # called a copy but kept (keep_palette_swaps, or drop_copies off)
    COMMON = "common"      # a plain fill tile (flat or near-flat): kept whatever training holds


@dataclass(frozen=True)
class TrainingRef:
    """Where a training tile comes from: screen id, source, pixel position, row in the tiles."""

    screen: Union[str, int]
    source: Optional[str]
    x: int
    y: int
    row: int

    def label(self) -> str:
        """One short line for the evidence sheet: the source's file name (else the screen id)
        and the position."""
        name = str(self.source or "").replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
        name = name if len(name) <= 32 else "..." + name[-29:]
        return f"{name or f'screen {self.screen}'} at {self.x},{self.y}"


def _call_json(call: CopyCall) -> dict:
    """The judge's numbers of a call, as dropped.json and tiles.json write them."""
    return {"kind": call.kind.value, "pixels_differing": call.pixels_differing,
            "compared": call.compared, "colour_distance": round(call.colour_distance, 2),
            "flip": call.flip, "shift": list(call.shift)}


@dataclass
class Dropped:
    """One dropped tile (a dropped.json record).

    ``flip`` is an orientation (index into :data:`tilesets.cells.ORIENTATIONS`): the dropped
    tile looks like its partner (training tile or kept duplicate) flipped that way.  A training
    copy carries the judge's ``call`` (written as ``kind``, ``pixels_differing``, ``compared``,
    ``colour_distance``, ``flip``, ``shift``) and the ``training`` tile's origin; a duplicate its
    hash ``distance``.
    """

    tile: int
    reason: Reason
    source_image: Optional[str] = None
    call: Optional[CopyCall] = None
    training: Optional[TrainingRef] = None
    distance: Optional[int] = None
    flip: Optional[int] = None
    colour: Optional[int] = None
    duplicate_of_bank: Optional[int] = None
    duplicate_of: Optional[int] = None
    replaced_by: int = -1

    def to_json(self) -> dict:
        out: dict[str, Any] = {"tile": self.tile, "source_image": self.source_image,
                               "reason": self.reason.value, "replaced_by": self.replaced_by}
        if self.call is not None:
            out.update(_call_json(self.call))
        for name in ("distance", "flip", "colour", "duplicate_of_bank", "duplicate_of"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.training is not None:
            out["training"] = asdict(self.training)
        return out


@dataclass
class KeptTile:
    """One kept tile (a tiles.json record); ``id`` is its place in the kept bank, ``bank_id``
    in the input bank.  ``novelty`` is a :class:`Novelty` (None without training tiles);
    ``nearest_training`` the training tile the judge compared it with (its call in ``call``),
    None when no training tile shares a block or the pattern with it."""

    id: int
    bank_id: int
    novelty: Optional[Novelty]
    nearest_training: Optional[TrainingRef]
    call: Optional[CopyCall]
    origin: Optional[tuple]
    colours: int
    isolated: int
    flat: bool
    score: float
    uses: int
    hash: str

    def to_json(self) -> dict:
        near = None
        if self.nearest_training is not None and self.call is not None:
            near = dict(asdict(self.nearest_training), **_call_json(self.call))
        return {"id": self.id, "bank_id": self.bank_id,
                "novelty": getattr(self.novelty, "value", self.novelty),
                "nearest_training": near,
                "source_image": self.origin[0] if self.origin else None,
                "origin": list(self.origin) if self.origin else None,
                "colours": self.colours, "isolated": self.isolated, "flat": self.flat,
                "score": self.score, "uses": self.uses, "hash": self.hash}


@dataclass
class DistinctTraining:
    """The distinct training tiles and where the first copy of each was cut.

    tiles : ndarray, shape (U, T, T, 3), uint8
    first : ndarray, shape (U,) — row of each tile's first copy in ``source``
    source : TrainingTiles — every training tile, split to the generated tile size
    """

    tiles: np.ndarray
    first: np.ndarray
    source: TrainingTiles

    @property
    def total(self) -> int:
        return len(self.source.tiles)

    def ref(self, uid: int) -> TrainingRef:
        row = int(self.first[uid])
        screen_i, x, y = (int(v) for v in self.source.origin[row])
        screens = self.source.screens
        scr = screens[screen_i] if 0 <= screen_i < len(screens) else {}
        return TrainingRef(scr.get("id", screen_i), scr.get("source"), x, y, row)


@dataclass
class Evidence:
    """The rows of evidence.png: copy calls (dropped or kept) first, then the kept tiles closest
    to a training tile; ``labels`` say what was decided and where the training tile is from."""

    calls: list[CopyCall]
    labels: list[str]
    bank: np.ndarray                   # (K, T, T, 4) the input bank (calls index it)
    training: np.ndarray               # (U, T, T, 3) the distinct training tiles
    max_rows: Optional[int] = None

    def sheet(self, *, scale: int = 3) -> np.ndarray:
        """evidence.png: generated | aligned training | differing pixels, per row (H, W, 3)."""
        return copy_evidence_sheet(self.calls, self.bank, self.training, scale=scale,
                                   labels=self.labels, max_rows=self.max_rows)


@dataclass
class DedupeResult:
    """Output of :func:`dedupe`: the kept tile set and the record of every decision."""

    tileset: TileSet
    kept: list[KeptTile]
    dropped: list[Dropped]
    evidence: Evidence
    hash: str
    tiles_in: int
    training_tiles: int = 0
    training_distinct: int = 0
    #: the judge's call on every input tile (empty without training tiles)
    calls: list[CopyCall] = field(default_factory=list)

    def count(self, reason: Reason) -> int:
        return sum(1 for d in self.dropped if d.reason == reason)

    def copies_dropped(self) -> dict[str, int]:
        """Dropped training copies by kind, every copy kind listed."""
        n = Counter(d.call.kind.value for d in self.dropped if d.call is not None)
        return {k.value: n.get(k.value, 0) for k in CopyKind if k != CopyKind.NOT_COPY}

    def novelty_counts(self) -> dict[str, int]:
        """Kept tiles per novelty class (empty without training tiles)."""
        n = Counter(k.novelty.value for k in self.kept if k.novelty is not None)
        return {v.value: n.get(v.value, 0) for v in Novelty} if n else {}

    def summary(self) -> dict:
        return {
            "hash": self.hash, "tiles_in": self.tiles_in, "kept": len(self.kept),
            "dropped_training": self.count(Reason.TRAINING),
            "dropped_copies": self.copies_dropped(),
            "dropped_duplicate": self.count(Reason.DUPLICATE),
            "dropped_flat": self.count(Reason.FLAT),
            "training_tiles": self.training_tiles, "training_distinct": self.training_distinct,
            "novelty": self.novelty_counts(),
            "evidence_rows": len(self.evidence.calls)}


# --------------------------------------------------------------------------- core
@dataclass
class _Decisions:
    """Per input tile: status, the tile that replaces it and how it is flipped, and records."""

    status: np.ndarray                      # (K,) int8 Status
    replaced: np.ndarray                    # (K,) int64 bank id of the replacement
    orientation: np.ndarray                 # (K,) uint8: dropped ~ flip(replacement, this)
    records: dict = field(default_factory=dict)    # bank id -> Dropped

    @classmethod
    def empty(cls, k: int) -> "_Decisions":
        return cls(np.full(k, Status.KEPT, np.int8), np.full(k, -1, np.int64),
                   np.zeros(k, np.uint8))

    def drop(self, i: int, record: Dropped, status: Status, replacement: int = -1,
             orientation: int = 0) -> None:
        self.status[i] = status
        self.replaced[i] = replacement
        self.orientation[i] = orientation
        self.records[i] = record


def dedupe(tileset: TileSet, training: Optional[TrainingTiles], params: Params, *,
           progress: ProgressFn = no_progress) -> DedupeResult:
    """Drop training copies, flat repeats and near-duplicates; order and remap the rest.

    Parameters
    ----------
    tileset : TileSet
        The generated tiles and maps (at least one tile).
    training : TrainingTiles or None
        Tiles of the training screens (RGB or RGBA; alpha is ignored), cut to the tile set's
        tile size here; None: only flat tiles and near-duplicates are dropped.
    params : Params

    Returns
    -------
    DedupeResult

    Raises
    ------
    StageError
        When every tile would be dropped; ParamError when more than ``max_tiles`` are kept or
        the training tiles cannot be cut to the tile size.
    """
    tiles, k = tileset.bank, len(tileset)
    distinct = distinct_training(training, tileset.tile_size) if training is not None else None
    progress("dedupe", 1, 5)
    calls = judge_bank(tiles, distinct, flips=tileset.flips, rules=params.rules())
    stats = tile_stats(tiles)
    score = quality(tiles, w_structure=params.w_structure, w_colours=params.w_colours,
                    w_isolated=params.w_isolated, stats=stats)
    clean = cleanliness_key(stats)
    hashes = orientation_hashes(tiles, params.hash, params.workers)       # (K, 4)
    is_flat = stats.dominant >= params.flat_fraction
    plain = is_flat | np.array([c.low_structure for c in calls], bool) if calls else is_flat
    progress("dedupe", 2, 5)
    decisions = _Decisions.empty(k)
    _drop_flat_repeats(tiles, is_flat, score, clean, decisions)
    if distinct is not None:
        _drop_training_copies(calls, plain, distinct, params, decisions)
    alive = np.flatnonzero(~is_flat & (decisions.status == Status.KEPT))
    _merge_near_duplicates(tiles, hashes, alive, score, clean, tileset.flips, params, decisions)
    progress("dedupe", 3, 5)
    kept = _kept_in_order(decisions, score, params)
    _replace_training_copies(hashes, kept, tileset.flips, decisions)
    new_id = np.full(k, -1, np.int64)
    new_id[kept] = np.arange(len(kept))
    out = TileSet(tiles[kept], _remap(tileset, new_id, decisions),
                  [tileset.origins[i] for i in kept.tolist()], flips=tileset.flips,
                  palette=tileset.palette, palette_name=tileset.palette_name)
    progress("dedupe", 4, 5)
    dropped = _dropped_records(tileset, new_id, decisions)
    kept_records = _kept_records(tileset, out, kept, stats, score, is_flat, plain, hashes, calls,
                                 distinct)
    return DedupeResult(
        tileset=out, kept=kept_records, dropped=dropped,
        evidence=_evidence(tiles, dropped, kept_records, distinct, params),
        hash=params.hash, tiles_in=k,
        training_tiles=distinct.total if distinct is not None else 0,
        training_distinct=len(distinct.tiles) if distinct is not None else 0,
        calls=calls)


def distinct_training(training: TrainingTiles, tile_size: int) -> Optional[DistinctTraining]:
    """Cut training tiles to ``tile_size``, drop alpha, keep each distinct tile once (first
    copy, in order); None when there is no training tile."""
    try:
        split = training.split(tile_size)
    except ArtifactError as e:
        raise ParamError(f"dedupe: {e}; slice with the training tile size or a divisor of "
                         f"it") from None
    tiles = np.asarray(split.tiles)[..., :3]
    if len(tiles) == 0:
        return None
    flat = np.ascontiguousarray(tiles).reshape(len(tiles), -1)
    keys = flat.view(np.dtype((np.void, flat.shape[1]))).ravel()
    _, first = np.unique(keys, return_index=True)
    first = np.sort(first)
    return DistinctTraining(np.ascontiguousarray(tiles[first]), first, split)


def judge_bank(tiles: np.ndarray, distinct: Optional[DistinctTraining], *, flips: bool,
               rules: CopyRules) -> list[CopyCall]:
    """Step 1: the copy judge's call on every tile (``[]`` without training tiles).

    The :class:`tilesets.copies.TrainingIndex` is built once over the distinct training tiles;
    a call's ``training`` indexes ``distinct.tiles``.
    """
    if distinct is None:
        return []
    index = TrainingIndex(distinct.tiles, flips=flips)
    return judge_copies(tiles, flips=flips, index=index, rules=rules)


def orientation_hashes(tiles: np.ndarray, method: str, workers: int) -> np.ndarray:
    """Perceptual hashes of the four orientations of every tile: (K, 4) uint64, column =
    orientation (alpha ignored)."""
    var = flip_variants(_rgb(tiles))                          # (K, 4, T, T, 3)
    k = len(tiles)
    return hash_tiles(var.reshape((k * 4,) + var.shape[2:]), method, workers=workers).reshape(k, 4)


def _drop_flat_repeats(tiles: np.ndarray, is_flat: np.ndarray, score: np.ndarray,
                       clean: np.ndarray, decisions: _Decisions) -> None:
    """Step 2: keep the cleanest flat tile of each dominant colour, drop the others."""
    if not is_flat.any():
        return
    k = len(tiles)
    srt = np.sort(pack_colours(tiles.reshape(k, -1, 4)), axis=1)
    dom = srt[:, srt.shape[1] // 2]        # the dominant colour covers more than half the row
    for colour in np.unique(dom[is_flat]):
        members = np.flatnonzero(is_flat & (dom == colour))
        best = members[np.lexsort((members, -score[members], clean[members]))[0]]
        for m in members.tolist():
            if m != best:
                decisions.drop(m, Dropped(m, Reason.FLAT, colour=int(colour),
                                          duplicate_of_bank=int(best)), Status.FLAT, int(best))


def _drop_training_copies(calls: list[CopyCall], plain: np.ndarray, distinct: DistinctTraining,
                          params: Params, decisions: _Decisions) -> None:
    """Step 3: drop the tiles still kept that the judge calls copies (plain tiles never)."""
    for call in calls:
        i = call.generated
        if decisions.status[i] != Status.KEPT or plain[i] or not params.drops(call.kind):
            continue
        record = Dropped(i, Reason.TRAINING, call=call, training=distinct.ref(call.training))
        decisions.drop(i, record, Status.TRAINING)


def _merge_near_duplicates(tiles: np.ndarray, hashes: np.ndarray, alive: np.ndarray,
                           score: np.ndarray, clean: np.ndarray, flips: bool, params: Params,
                           decisions: _Decisions) -> None:
    """Step 4: cluster near-duplicates among ``alive`` from the cleanest tile down."""
    if params.dup_distance < 0 or len(alive) < 2:
        return
    nbrs = _near_duplicate_pairs(tiles, hashes, alive, flips, params)
    order = alive[np.lexsort((alive, -score[alive], clean[alive]))]
    assigned = np.zeros(len(tiles), bool)
    for i in order.tolist():
        if assigned[i]:
            continue
        assigned[i] = True
        for j, o in nbrs.get(i, ()):
            if assigned[j]:
                continue
            assigned[j] = True
            hd = int(popcount64(hashes[j, 0] ^ hashes[i, o]))
            decisions.drop(j, Dropped(j, Reason.DUPLICATE, distance=hd, flip=int(o),
                                      duplicate_of_bank=int(i)),
                           Status.DUPLICATE, i, o)           # t_j ~= flip(t_i, o)


def _near_duplicate_pairs(tiles: np.ndarray, hashes: np.ndarray, alive: np.ndarray, flips: bool,
                          params: Params) -> dict[int, list[tuple[int, int]]]:
    """Tile -> [(other tile, orientation)] for every pair within both duplicate limits."""
    orientations = (0, 1, 2, 3) if flips else (0,)
    sub_index = HashIndex(hashes[alive, 0])
    q = hashes[alive][:, list(orientations)].ravel()                   # (A*F,)
    lims, nb, _ = sub_index.radius_search(q, params.dup_distance)
    qrow = np.repeat(np.arange(len(q)), np.diff(lims))
    a_i = alive[qrow // len(orientations)]
    o_i = np.asarray(orientations, np.uint8)[qrow % len(orientations)]
    a_j = alive[nb]
    keep = a_i != a_j
    a_i, a_j, o_i = a_i[keep], a_j[keep], o_i[keep]
    if len(a_i) and params.dup_fraction < 1.0:
        # colour-aware check: flip(t_i, o) ~ t_j in at most dup_fraction of the pixels
        npix = tiles.shape[1] * tiles.shape[2]
        var = flip_variants(tiles)
        ok = np.zeros(len(a_i), bool)
        for s in range(0, len(a_i), 4096):
            d = (var[a_i[s:s + 4096], o_i[s:s + 4096]] != tiles[a_j[s:s + 4096]]).any(-1)
            ok[s:s + 4096] = d.sum(axis=(1, 2)) <= params.dup_fraction * npix
        a_i, a_j, o_i = a_i[ok], a_j[ok], o_i[ok]
    nbrs: dict[int, list[tuple[int, int]]] = {}
    for i, j, o in zip(a_i.tolist(), a_j.tolist(), o_i.tolist()):
        nbrs.setdefault(i, []).append((j, o))
        nbrs.setdefault(j, []).append((i, o))
    return nbrs


def _kept_in_order(decisions: _Decisions, score: np.ndarray, params: Params) -> np.ndarray:
    """Step 5a: the kept bank ids, best score first (ties: lower id)."""
    status = decisions.status
    kept = np.flatnonzero(status == Status.KEPT)
    if len(kept) == 0:
        kinds = Counter(r.call.kind.value for r in decisions.records.values()
                        if r.call is not None)
        detail = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        swaps = (" or --keep-palette-swaps" if kinds.get(CopyKind.PALETTE_SWAP.value) else "")
        raise StageError(
            f"dedupe: every one of the {len(status)} tiles was dropped, "
            f"{sum(kinds.values())} as copies of training tiles ({detail}); keep them with "
            f"--no-drop-copies (the calls are still reported){swaps}, or train longer")
    if params.max_tiles and len(kept) > params.max_tiles:
        raise ParamError(
            f"dedupe: {len(kept)} tiles kept, more than max_tiles={params.max_tiles}; raise "
            f"max_tiles, or merge more near-duplicates with a larger dup_distance / dup_fraction")
    return kept[np.lexsort((kept, -score[kept]))]


def _replace_training_copies(hashes: np.ndarray, kept: np.ndarray, flips: bool,
                             decisions: _Decisions) -> None:
    """Step 5b: a training copy's cells go to the nearest kept tile by hash over orientations
    (ties: the better-ranked tile)."""
    dropped = np.flatnonzero(decisions.status == Status.TRAINING)
    if not len(dropped):
        return
    orientations = (0, 1, 2, 3) if flips else (0,)
    q = hashes[dropped][:, list(orientations)].ravel()
    nid, nd = HashIndex(hashes[kept, 0]).nearest(q)
    nid, nd = nid.reshape(-1, len(orientations)), nd.reshape(-1, len(orientations))
    for r, i in enumerate(dropped):
        b = int(np.argmin(nd[r] * (len(kept) + 1) + nid[r]))
        decisions.replaced[i] = kept[nid[r, b]]
        # flip(t_i, o) ~ t_kept  =>  t_i ~ flip(t_kept, o)
        decisions.orientation[i] = orientations[b]


def _remap(tileset: TileSet, new_id: np.ndarray, decisions: _Decisions) -> dict[str, np.ndarray]:
    """Step 5c: every map's cells, pointing at kept ids with composed flips."""
    k = len(tileset)
    final_id = new_id.copy()
    final_orientation = np.zeros(k, np.uint8)
    for i in np.flatnonzero(decisions.status != Status.KEPT):
        final_id[i] = new_id[decisions.replaced[i]]
        final_orientation[i] = decisions.orientation[i]
    out = {}
    for stem, m in tileset.maps.items():
        ids, o = decode_cells(m)
        out[stem] = encode_cells(final_id[ids], o ^ final_orientation[ids]).reshape(m.shape)
        if not tileset.flips:
            out[stem] &= np.uint32(ID_MASK)
    return out


def _dropped_records(tileset: TileSet, new_id: np.ndarray,
                     decisions: _Decisions) -> list[Dropped]:
    """The records of every dropped tile, by input bank id, with their kept replacements."""
    out = []
    for i in sorted(decisions.records):
        rec = decisions.records[i]
        origin = tileset.origins[i]
        rec.source_image = origin[0] if origin else None
        rec.replaced_by = int(new_id[decisions.replaced[i]])
        if rec.duplicate_of_bank is not None:
            rec.duplicate_of = int(new_id[rec.duplicate_of_bank])
        out.append(rec)
    return out


def _novelty(i: int, calls: list[CopyCall], plain: np.ndarray) -> Novelty:
    """A kept tile's :class:`Novelty` from its call (training tiles given)."""
    if plain[i]:
        return Novelty.COMMON
    call = calls[i]
    if call.is_copy:
        return Novelty.COPY
    return Novelty.RELATED if call.training >= 0 else Novelty.NEW


def _kept_records(tileset: TileSet, out: TileSet, kept: np.ndarray, stats: TileStats,
                  score: np.ndarray, is_flat: np.ndarray, plain: np.ndarray, hashes: np.ndarray,
                  calls: list[CopyCall], distinct: Optional[DistinctTraining]) -> list[KeptTile]:
    """tiles.json: one record per kept tile, in kept order."""
    uses = out.uses()
    records = []
    for rank, i in enumerate(kept.tolist()):
        call = calls[i] if calls else None
        found = distinct is not None and call is not None and call.training >= 0
        records.append(KeptTile(
            id=rank, bank_id=i,
            novelty=_novelty(i, calls, plain) if distinct is not None else None,
            nearest_training=distinct.ref(call.training) if found else None,
            call=call if found else None,
            origin=tileset.origins[i],
            colours=int(stats.colours[i]), isolated=int(stats.isolated[i]),
            flat=bool(is_flat[i]), score=round(float(score[i]), 6), uses=int(uses[rank]),
            hash=format(int(hashes[i, 0]), "016x")))
    return records


def _evidence(tiles: np.ndarray, dropped: list[Dropped], kept: list[KeptTile],
              distinct: Optional[DistinctTraining], params: Params) -> Evidence:
    """evidence.png's rows: every copy call (dropped, then kept ones: plain tiles equal to a
    training tile, kept palette swaps), strongest kind and fewest differing pixels first; then
    the ``evidence_near`` kept non-copies closest to a training tile."""
    empty = np.zeros((0,) + tiles.shape[1:3] + (3,), np.uint8)
    if distinct is None:
        return Evidence([], [], tiles, empty)
    rank = {k: r for r, k in enumerate(CopyKind)}

    def order(c: CopyCall) -> tuple:
        return rank[c.kind], c.pixels_differing, c.colour_distance, c.generated

    rows = sorted(((d.call, f"dropped; {d.training.label()}") for d in dropped
                   if d.call is not None), key=lambda r: order(r[0]))
    kept_copies = [(k.call, f"kept ({k.novelty.value}); {k.nearest_training.label()}")
                   for k in kept if k.call is not None and k.call.is_copy]
    rows += sorted(kept_copies, key=lambda r: order(r[0]))
    near = sorted(((k.call, f"kept ({k.novelty.value}); {k.nearest_training.label()}")
                   for k in kept if k.call is not None and not k.call.is_copy),
                  key=lambda r: (r[0].pixels_differing / max(r[0].compared, 1), order(r[0])))
    rows += near[:params.evidence_near]
    return Evidence([c for c, _ in rows], [lab for _, lab in rows], tiles, distinct.tiles,
                    max_rows=params.evidence_max or None)


def _rgb(tiles: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(tiles[..., :3])


# --------------------------------------------------------------------------- inputs
def _artifact_or_files(items: list, marker: str, artifact: Any, upstream: str) -> tuple[Any, list]:
    """``(artifact.load(folder), [])`` when a folder among ``items`` holds ``marker``, else
    ``(None, image files)``; a malformed artifact or no file at all is an InputError."""
    path = find_artifact(items, marker)
    if path is not None:
        try:
            return artifact.load(path.parent), []
        except ArtifactError as e:
            raise InputError(f"{e}; pass {upstream}'s output") from None
    files = expand_inputs(items)
    if not files:
        raise InputError(f"dedupe: no images and no {marker} in {', '.join(map(str, items))}")
    return None, files


def _load_tileset(items: list, skipped: Skipped) -> TileSet:
    """Slice's artifact, or user images sliced here; unusable images go to ``skipped``."""
    tileset, files = _artifact_or_files(items, "bank.npy", TileSet, "slice")
    if tileset is not None:
        return tileset
    t = IMAGE_TILE_SIZE
    slicer = ImageSlicer(tile_size=t, flips=True, pad_mode="crop")
    for path, rgba in iter_images(files, skipped, mode="RGBA"):
        if slicer.add(path.stem, rgba) is None:
            skipped.add(path, f"{path}: smaller than one {t}x{t} tile")
    if not slicer.maps:
        raise skipped.nothing_usable("dedupe", len(files))
    return slicer.tileset()


def _load_training(items: list, tile_size: int, skipped: Skipped) -> Optional[TrainingTiles]:
    """Crop's artifact, or user images cut on the ``tile_size`` grid (unusable: ``skipped``)."""
    if not items:
        return None
    training, files = _artifact_or_files(items, "tiles.npy", TrainingTiles, "crop")
    if training is not None:
        return training
    t = tile_size
    parts, origins, screens = [], [], []
    for path, rgb in iter_images(files, skipped, mode="RGB"):
        h, w = rgb.shape[0] // t * t, rgb.shape[1] // t * t
        if h == 0 or w == 0:
            skipped.add(path, f"{path}: smaller than one {t}x{t} tile")
            continue
        cut = grid_cut(rgb, t)
        k = np.arange(len(cut))
        origins.append(np.stack([np.full(len(cut), len(screens)), k % (w // t) * t,
                                 k // (w // t) * t], 1))
        screens.append({"id": path.stem, "source": str(path), "width": w, "height": h})
        parts.append(cut)
    if not parts:
        raise skipped.nothing_usable("dedupe", len(files), "training image(s)")
    return TrainingTiles(np.concatenate(parts), np.concatenate(origins).astype(np.int64), screens)


# --------------------------------------------------------------------------- run
def run(inputs: dict[str, list[Any]], params: Params, out_dir: Path,
        progress: ProgressFn = no_progress) -> dict:
    """Load the tile set (and training tiles), call :func:`dedupe`, write its artifacts.

    ``inputs``: ``tileset`` (slice's folder or images) and, optional, ``training_tiles``
    (crop's folder or images).  Returns :meth:`DedupeResult.summary` plus the input images
    that could not be used: ``skipped`` (how many) and ``skipped_items``
    (``[{path, reason, input: "tileset" | "training_tiles"}]``).
    """
    items = inputs.get("tileset") or []
    if not items:
        raise InputError("dedupe: no tile set given; pass slice's output folder or image files")
    skipped = {"tileset": Skipped(logger=log), "training_tiles": Skipped(logger=log)}
    tileset = _load_tileset(items, skipped["tileset"])
    if len(tileset) == 0:
        raise InputError(f"dedupe: {items[0]}: the tile bank is empty")
    training = _load_training(inputs.get("training_tiles") or [], tileset.tile_size,
                              skipped["training_tiles"])
    result = dedupe(tileset, training, params, progress=progress)
    out_dir = Path(out_dir)
    result.tileset.save(out_dir, save_npy, save_npz, write_json)
    write_json(out_dir / "tiles.json", [t.to_json() for t in result.kept])
    write_json(out_dir / "dropped.json", [d.to_json() for d in result.dropped])
    save_png(out_dir / "evidence.png", result.evidence.sheet())
    progress("dedupe", 5, 5)
    items_skipped = [dict(s, input=name) for name, sk in skipped.items() for s in sk.items]
    s = result.summary()
    kinds = ", ".join(f"{n} {k}" for k, n in s["dropped_copies"].items() if n)
    log.info("dedupe: %d -> %d tiles (dropped: %d training copies%s, %d duplicates, %d flat "
             "repeats)%s", s["tiles_in"], s["kept"], s["dropped_training"],
             f" [{kinds}]" if kinds else "",
             s["dropped_duplicate"], s["dropped_flat"],
             f"; {len(items_skipped)} input image(s) skipped" if items_skipped else "")
    return dict(s, skipped=len(items_skipped), skipped_items=items_skipped)
