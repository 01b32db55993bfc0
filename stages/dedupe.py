"""dedupe: drop tiles that copy the training data or each other, order the rest by quality.

Inputs: ``tileset``, slice's artifact (or image files, sliced here with 16-px tiles and flips),
and, optionally, ``training_tiles``, crop's artifact (:class:`tilesets.artifacts.TrainingTiles`)
or training image files cut on the tile grid.  Steps of :func:`dedupe`, in order:

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

Artifacts: the kept :class:`tilesets.artifacts.TileSet` (``bank.npy`` ordered, ``maps.npz``
remapped, ``tileset.json``), ``tiles.json`` (:class:`KeptTile` records), ``dropped.json``
(:class:`Dropped` records), ``evidence.png``.
"""
from __future__ import annotations

import enum
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from stages._common import (InputError, ParamError, ProgressFn, Skipped, StageError, StageParams,
                            expand_inputs, find_artifact, iter_images, no_progress, param,
                            save_npy, save_npz, save_png, write_json)
from tilesets.artifacts import ArtifactError, TileSet, TrainingTiles, grid_cut
from tilesets.bank import ImageSlicer
from tilesets.cells import ID_MASK, ORIENTATIONS, decode_cells, encode_cells, flip_tile, flip_variants
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

    hash: str = param("phash", help="perceptual hash: phash, dhash or ahash (imagehash-identical)",
                      choices=tuple(sorted(HASHES)))
    train_distance: int = param(6, help="drop a tile whose hash is within this many bits of a "
                                        "training tile's (-1: never drop, only report novelty)",
                                min=-1, max=64)
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
    evidence_max: int = param(200, help="at most this many rows in evidence.png", min=0)
    workers: int = param(2, help="threads for hashing and hash searches", min=1)

    def check(self) -> None:
        super().check()
        if not self.flat_fraction > 0.5:  # the dominant colour is read at the sorted middle
            raise ParamError(f"dedupe: flat_fraction must be in (0.5, 1], got {self.flat_fraction}",
                             field="flat_fraction")


# --------------------------------------------------------------------------- records
class Status(enum.IntEnum):
    """What became of a tile of the input bank."""

    KEPT = 0
    TRAINING = 1     # a copy of a training tile
    DUPLICATE = 2    # a near-duplicate of a kept tile
    FLAT = 3         # a flat tile of a colour already kept


class Reason(str, enum.Enum):
    """Why a tile was dropped (``reason`` in dropped.json)."""

    TRAINING = "training"
    TRAINING_EXACT = "training_exact"
    DUPLICATE = "duplicate"
    FLAT = "flat"


@dataclass(frozen=True)
class TrainingRef:
    """Where a training tile comes from: screen id, source, pixel position, row in the tiles."""

    screen: Union[str, int]
    source: Optional[str]
    x: int
    y: int
    row: int


@dataclass
class Dropped:
    """One dropped tile (a dropped.json record).

    ``flip`` is an orientation (index into :data:`tilesets.cells.ORIENTATIONS`): the dropped
    tile looks like its partner (training tile or kept duplicate) flipped that way.
    ``training_tile`` indexes :attr:`DistinctTraining.tiles`; it is not written.
    """

    tile: int
    reason: Reason
    source_image: Optional[str] = None
    distance: Optional[int] = None
    flip: Optional[int] = None
    same_colours: Optional[bool] = None
    training: Optional[TrainingRef] = None
    training_tile: Optional[int] = None
    colour: Optional[int] = None
    duplicate_of_bank: Optional[int] = None
    duplicate_of: Optional[int] = None
    replaced_by: int = -1

    def to_json(self) -> dict:
        out: dict[str, Any] = {"tile": self.tile, "source_image": self.source_image,
                               "reason": self.reason.value, "replaced_by": self.replaced_by}
        for name in ("distance", "flip", "same_colours", "colour", "duplicate_of_bank",
                     "duplicate_of"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.training is not None:
            out["training"] = asdict(self.training)
        return out


@dataclass
class KeptTile:
    """One kept tile (a tiles.json record); ``id`` is its place in the kept bank, ``bank_id``
    in the input bank.  ``novelty`` is the hash distance to the nearest training tile, None
    when not measured (no training tiles, or a flat tile: its hash is rounding noise);
    ``nearest_distance`` is that distance even for flat tiles."""

    id: int
    bank_id: int
    novelty: Optional[int]
    nearest_training: Optional[TrainingRef]
    nearest_distance: Optional[int]
    origin: Optional[tuple]
    colours: int
    isolated: int
    flat: bool
    score: float
    uses: int
    hash: str

    def to_json(self) -> dict:
        near = None
        if self.nearest_training is not None:
            r = self.nearest_training
            near = {"screen": r.screen, "source": r.source, "x": r.x, "y": r.y,
                    "distance": self.nearest_distance}
        return {"id": self.id, "bank_id": self.bank_id, "novelty": self.novelty,
                "nearest_training": near,
                "source_image": self.origin[0] if self.origin else None,
                "origin": list(self.origin) if self.origin else None,
                "colours": self.colours, "isolated": self.isolated, "flat": self.flat,
                "score": self.score, "uses": self.uses, "hash": self.hash}


@dataclass
class EvidenceRow:
    """A training copy beside its training twin (shown in the generated tile's orientation)."""

    generated: np.ndarray
    training: np.ndarray
    label: str


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
class DedupeResult:
    """Output of :func:`dedupe`: the kept tile set and the record of every decision."""

    tileset: TileSet
    kept: list[KeptTile]
    dropped: list[Dropped]
    evidence: list[EvidenceRow]
    hash: str
    tiles_in: int
    training_tiles: int = 0
    training_distinct: int = 0
    #: novelty of the kept non-flat tiles (empty without training tiles)
    novelty: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def count(self, reason: Reason) -> int:
        return sum(1 for d in self.dropped if d.reason == reason)

    def summary(self) -> dict:
        nov = self.novelty
        return {
            "hash": self.hash, "tiles_in": self.tiles_in, "kept": len(self.kept),
            "dropped_training": self.count(Reason.TRAINING),
            "dropped_training_exact": self.count(Reason.TRAINING_EXACT),
            "dropped_duplicate": self.count(Reason.DUPLICATE),
            "dropped_flat": self.count(Reason.FLAT),
            "training_tiles": self.training_tiles, "training_distinct": self.training_distinct,
            "novelty_min": int(nov.min()) if len(nov) else None,
            "novelty_median": float(np.median(nov)) if len(nov) else None,
            "evidence_rows": len(self.evidence)}


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
        return cls(np.full(k, Status.KEPT, np.int8), np.full(k, -1, np.int64), np.zeros(k, np.uint8))

    def drop(self, i: int, record: Dropped, status: Status, replacement: int = -1,
             orientation: int = 0) -> None:
        self.status[i] = status
        self.replaced[i] = replacement
        self.orientation[i] = orientation
        self.records[i] = record


@dataclass
class _Nearest:
    """Each generated tile's nearest training tile by hash, over its four orientations."""

    novelty: np.ndarray        # (K,) int64 Hamming distance, -1 without training tiles
    uid: np.ndarray            # (K,) int64 index into DistinctTraining.tiles, -1 without
    orientation: np.ndarray    # (K,) uint8 orientation of the generated tile that matched
    index: Optional[HashIndex] = None


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
    stats = tile_stats(tiles)
    score = quality(tiles, w_structure=params.w_structure, w_colours=params.w_colours,
                    w_isolated=params.w_isolated, stats=stats)
    clean = cleanliness_key(stats)
    hashes = orientation_hashes(tiles, params.hash, params.workers)       # (K, 4)
    is_flat = stats.dominant >= params.flat_fraction
    decisions = _Decisions.empty(k)
    _drop_flat_repeats(tiles, is_flat, score, clean, decisions)
    candidates = np.flatnonzero(~is_flat)
    nearest = _nearest_training(hashes, distinct, params)
    if distinct is not None and params.train_distance >= 0:
        _drop_training_copies(tiles, hashes, candidates, distinct, nearest, params, decisions)
    progress("dedupe", 2, 5)
    alive = candidates[decisions.status[candidates] == Status.KEPT]
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
    return DedupeResult(
        tileset=out,
        kept=_kept_records(tileset, out, kept, stats, score, is_flat, hashes, nearest, distinct),
        dropped=dropped,
        evidence=_evidence_rows(tiles, dropped, distinct, params.evidence_max),
        hash=params.hash, tiles_in=k,
        training_tiles=distinct.total if distinct is not None else 0,
        training_distinct=len(distinct.tiles) if distinct is not None else 0,
        novelty=(nearest.novelty[kept[~is_flat[kept]]] if distinct is not None
                 else np.zeros(0, np.int64)))


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


def orientation_hashes(tiles: np.ndarray, method: str, workers: int) -> np.ndarray:
    """Perceptual hashes of the four orientations of every tile: (K, 4) uint64, column =
    orientation (alpha ignored)."""
    var = flip_variants(_rgb(tiles))                          # (K, 4, T, T, 3)
    k = len(tiles)
    return hash_tiles(var.reshape((k * 4,) + var.shape[2:]), method, workers=workers).reshape(k, 4)


def _drop_flat_repeats(tiles: np.ndarray, is_flat: np.ndarray, score: np.ndarray,
                       clean: np.ndarray, decisions: _Decisions) -> None:
    """Step 1: keep the cleanest flat tile of each dominant colour, drop the others."""
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


def _nearest_training(hashes: np.ndarray, distinct: Optional[DistinctTraining],
                      params: Params) -> _Nearest:
    """Novelty: the Hamming distance from each tile to its nearest training tile."""
    k = len(hashes)
    if distinct is None:
        return _Nearest(np.full(k, -1, np.int64), np.full(k, -1, np.int64), np.zeros(k, np.uint8))
    index = HashIndex(hash_tiles(distinct.tiles, params.hash, workers=params.workers),
                      workers=params.workers)
    ids, dists = index.nearest(hashes.ravel())
    ids, dists = ids.reshape(k, 4), dists.reshape(k, 4)
    o = dists.argmin(axis=1)
    rows = np.arange(k)
    return _Nearest(dists[rows, o], ids[rows, o], o.astype(np.uint8), index)


def _exact_copies(tiles: np.ndarray, hashes: np.ndarray, look: np.ndarray,
                  distinct: DistinctTraining, index: HashIndex) -> tuple[np.ndarray, np.ndarray]:
    """For the tiles ``look`` (hash distance 0 to the training set): the training tile whose
    pixels equal the tile in some orientation, and that orientation; -1 where none does."""
    k = len(tiles)
    exact = np.full(k, -1, np.int64)
    orientation = np.zeros(k, np.uint8)
    if not len(look):
        return exact, orientation
    lims, mids, _ = index.radius_search(hashes[look].ravel(), 0)   # equal pixels => equal hashes
    qrow = np.repeat(np.arange(len(look) * 4), np.diff(lims))
    ti, oc = look[qrow // 4], (qrow % 4).astype(np.uint8)
    var = flip_variants(_rgb(tiles))
    eq = np.zeros(len(mids), bool)
    for s in range(0, len(mids), 8192):
        part = slice(s, s + 8192)
        eq[part] = (distinct.tiles[mids[part]] == var[ti[part], oc[part]]).all(axis=(1, 2, 3))
    hit = np.flatnonzero(eq)[::-1]                             # reversed: first hit wins below
    exact[ti[hit]] = mids[hit]
    orientation[ti[hit]] = oc[hit]
    return exact, orientation


def _drop_training_copies(tiles: np.ndarray, hashes: np.ndarray, candidates: np.ndarray,
                          distinct: DistinctTraining, nearest: _Nearest, params: Params,
                          decisions: _Decisions) -> None:
    """Step 2: drop tiles within ``train_distance`` of a training tile, or equal to one."""
    look = candidates[nearest.novelty[candidates] == 0]
    exact, exact_orientation = _exact_copies(tiles, hashes, look, distinct, nearest.index)
    hits = candidates[(nearest.novelty[candidates] <= params.train_distance)
                      | (exact[candidates] >= 0)]
    hit_uid = np.where(exact[hits] >= 0, exact[hits], nearest.uid[hits])
    gen_sig = dict(zip(hits.tolist(), _colour_set_signature(_rgb(tiles[hits])).tolist()))
    uniq_uid = np.unique(hit_uid)
    train_sig = dict(zip(uniq_uid.tolist(),
                         _colour_set_signature(distinct.tiles[uniq_uid]).tolist()))
    for i in hits.tolist():
        is_exact = exact[i] >= 0
        uid = int(exact[i] if is_exact else nearest.uid[i])
        o = int(exact_orientation[i] if is_exact else nearest.orientation[i])
        decisions.drop(i, Dropped(
            i, Reason.TRAINING_EXACT if is_exact else Reason.TRAINING,
            distance=0 if is_exact else int(nearest.novelty[i]), flip=o,
            same_colours=bool(gen_sig[i] == train_sig[uid]), training=distinct.ref(uid),
            training_tile=uid), Status.TRAINING)


def _merge_near_duplicates(tiles: np.ndarray, hashes: np.ndarray, alive: np.ndarray,
                           score: np.ndarray, clean: np.ndarray, flips: bool, params: Params,
                           decisions: _Decisions) -> None:
    """Step 3: cluster near-duplicates among ``alive`` from the cleanest tile down."""
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
    """Step 4a: the kept bank ids, best score first (ties: lower id)."""
    status = decisions.status
    kept = np.flatnonzero(status == Status.KEPT)
    if len(kept) == 0:
        n_train = int((status == Status.TRAINING).sum())
        raise StageError(
            f"dedupe: every one of the {len(status)} tiles was dropped ({n_train} as training "
            f"copies within train_distance={params.train_distance}); loosen train_distance (e.g. "
            f"--train-distance {max(params.train_distance - 2, -1)}) or train longer")
    if params.max_tiles and len(kept) > params.max_tiles:
        raise ParamError(
            f"dedupe: {len(kept)} tiles kept, more than max_tiles={params.max_tiles}; raise "
            f"max_tiles, or merge more near-duplicates with a larger dup_distance / dup_fraction")
    return kept[np.lexsort((kept, -score[kept]))]


def _replace_training_copies(hashes: np.ndarray, kept: np.ndarray, flips: bool,
                             decisions: _Decisions) -> None:
    """Step 4b: a training copy's cells go to the nearest kept tile by hash over orientations
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
    """Step 4c: every map's cells, pointing at kept ids with composed flips."""
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


def _kept_records(tileset: TileSet, out: TileSet, kept: np.ndarray, stats: TileStats,
                  score: np.ndarray,
                  is_flat: np.ndarray, hashes: np.ndarray, nearest: _Nearest,
                  distinct: Optional[DistinctTraining]) -> list[KeptTile]:
    """tiles.json: one record per kept tile, in kept order."""
    uses = out.uses()
    records = []
    for rank, i in enumerate(kept.tolist()):
        found = distinct is not None and nearest.uid[i] >= 0
        records.append(KeptTile(
            id=rank, bank_id=i,
            # a flat tile's hash is rounding noise: its distance says nothing, so no novelty
            novelty=int(nearest.novelty[i]) if distinct is not None and not is_flat[i] else None,
            nearest_training=distinct.ref(int(nearest.uid[i])) if found else None,
            nearest_distance=int(nearest.novelty[i]) if found else None,
            origin=tileset.origins[i],
            colours=int(stats.colours[i]), isolated=int(stats.isolated[i]),
            flat=bool(is_flat[i]), score=round(float(score[i]), 6), uses=int(uses[rank]),
            hash=format(int(hashes[i, 0]), "016x")))
    return records


def _evidence_rows(tiles: np.ndarray, dropped: list[Dropped],
                   distinct: Optional[DistinctTraining], limit: int) -> list[EvidenceRow]:
    """Training copies, closest first (exact copies on top), at most ``limit``."""
    copies = sorted((d for d in dropped if d.training_tile is not None),
                    key=lambda d: (d.distance, d.tile))
    rows = []
    for d in copies[:limit]:
        ref = d.training
        label = (f"bank {d.tile}: {d.reason.value}\nHamming distance {d.distance}\n"
                 f"screen {ref.screen} at {ref.x},{ref.y}\n{str(ref.source or '')[-36:]}")
        twin = flip_tile(distinct.tiles[d.training_tile], ORIENTATIONS[d.flip])  # as generated
        rows.append(EvidenceRow(tiles[d.tile], twin, label))
    return rows


def _rgb(tiles: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(tiles[..., :3])


def _colour_set_signature(tiles: np.ndarray) -> np.ndarray:
    """Order-free 64-bit signature of each tile's set of RGB colours, (N,) uint64."""
    n = len(tiles)
    out = np.zeros(n, np.uint64)
    for s in range(0, n, 4096):                       # bounded memory for big training sets
        packed = pack_colours(tiles[s:s + 4096].reshape(-1, tiles[0].size // 3, 3))
        srt = np.sort(packed.astype(np.uint64), axis=1)
        distinct = np.ones(srt.shape, bool)
        distinct[:, 1:] = srt[:, 1:] != srt[:, :-1]
        with np.errstate(over="ignore"):
            mixed = (srt + np.uint64(0x9E3779B97F4A7C15)) * np.uint64(0xBF58476D1CE4E5B9)
            mixed ^= mixed >> np.uint64(31)
            mixed *= np.uint64(0x94D049BB133111EB)
        out[s:s + 4096] = np.where(distinct, mixed, np.uint64(0)).sum(axis=1, dtype=np.uint64)
    return out


def evidence_sheet(rows: list[EvidenceRow], t: int) -> np.ndarray:
    """The rows as one RGB image (tiles scaled x4, generated | training | label)."""
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
    for r, row in enumerate(rows, start=1):
        y = pad + r * (s + pad)
        g = row.generated.copy()
        # show transparency as a dark checker so it differs from black
        if g.shape[-1] == 4:
            chk = ((np.add.outer(np.arange(t), np.arange(t)) % 2) * 40 + 60).astype(np.uint8)
            alpha = g[..., 3:4] > 0
            g = np.where(alpha, g[..., :3], chk[..., None].repeat(3, -1))
        gi = Image.fromarray(np.ascontiguousarray(g[..., :3])).resize((s, s), Image.NEAREST)
        ti = Image.fromarray(np.ascontiguousarray(row.training[..., :3])).resize((s, s),
                                                                                 Image.NEAREST)
        im.paste(gi, (pad, y))
        im.paste(ti, (2 * pad + s, y))
        for j, line in enumerate(row.label.split("\n")[:4]):
            draw.text((3 * pad + 2 * s, y + 2 + 12 * j), line, fill=(230, 230, 230))
    return np.asarray(im)


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
    save_png(out_dir / "evidence.png", evidence_sheet(result.evidence, tileset.tile_size))
    progress("dedupe", 5, 5)
    items_skipped = [dict(s, input=name) for name, sk in skipped.items() for s in sk.items]
    s = result.summary()
    log.info("dedupe: %d -> %d tiles (%d training, %d exact, %d duplicate, %d flat)%s",
             s["tiles_in"], s["kept"], s["dropped_training"], s["dropped_training_exact"],
             s["dropped_duplicate"], s["dropped_flat"],
             f"; {len(items_skipped)} input image(s) skipped" if items_skipped else "")
    return dict(s, skipped=len(items_skipped), skipped_items=items_skipped)
