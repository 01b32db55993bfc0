"""stages.dedupe: the core on arrays (training copies, flat tiles, near-duplicates, ordering,
remapping, records, evidence), and the stage on files (its artifact, image inputs, skips)."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stages import dedupe as dd
from stages._common import ParamError, StageError, save_npy, save_npz, write_json
from tilesets.artifacts import TileSet, TrainingTiles
from tilesets.cells import FLIP_MASK, ID_MASK, Flip

T = 16


def _pattern(seed, colours=((200, 40, 40), (20, 20, 160), (240, 240, 240))):
    """A structured 16x16 tile: random 4x4 blocks of a few colours."""
    rng = np.random.default_rng(seed)
    pal = np.array(colours, np.uint8)
    idx = rng.integers(0, len(pal), (4, 4)).repeat(4, 0).repeat(4, 1)
    rgb = pal[idx]
    return np.concatenate([rgb, np.full((T, T, 1), 255, np.uint8)], -1)


def _flat(rgb):
    t = np.zeros((T, T, 4), np.uint8)
    t[..., :3] = rgb
    t[..., 3] = 255
    return t


def _tileset(tiles, maps, flips=True):
    t = tiles[0].shape[0]
    return TileSet(np.stack(tiles).astype(np.uint8),
                   {k: np.asarray(v, np.uint32) for k, v in maps.items()},
                   [("img", t * i, 0) for i in range(len(tiles))], flips=flips)


def _training(tiles):
    tiles = np.stack(tiles)[..., :3].astype(np.uint8)
    return TrainingTiles(tiles, np.array([[0, 16 * i, 32] for i in range(len(tiles))], np.int64),
                         [{"id": "scr0", "source": "http://x/<a&b>.png", "scale": 1,
                           "width": 320, "height": 240}])


def _dedupe(tiles, maps, training=None, flips=True, **kw) -> dd.DedupeResult:
    return dd.dedupe(_tileset(tiles, maps, flips), _training(training) if training else None,
                     dd.Params(**kw))


def _only(records):
    (rec,) = records
    return rec


# --------------------------------------------------------------------------- training copies
def test_exact_training_copy_is_dropped_with_its_source():
    a, b = _pattern(1), _pattern(2)
    r = _dedupe([a, b], {"img": [[0, 1]]}, training=[_pattern(9), a[::-1]])   # a flipped
    assert len(r.kept) == 1 and r.count(dd.Reason.TRAINING_EXACT) == 1
    rec = _only(r.dropped)
    assert rec.tile == 0 and rec.reason == dd.Reason.TRAINING_EXACT and rec.distance == 0
    assert rec.training.source == "http://x/<a&b>.png"
    assert (rec.training.x, rec.training.y) == (16, 32)
    assert rec.flip == 2                                   # a ~ flipV(training twin)


def test_training_near_copy_is_dropped_within_train_distance():
    a, b = _pattern(1), _pattern(2)
    near = a.copy()
    near[0, 0, :3] = 255 - near[0, 0, :3]                          # one stray pixel
    r = _dedupe([a, b], {"img": [[0, 1]]}, training=[near], train_distance=10)
    assert _only(r.dropped).reason == dd.Reason.TRAINING


def test_train_distance_minus_one_only_reports_novelty():
    a = _pattern(1)
    r = _dedupe([a], {"img": [[0]]}, training=[a], train_distance=-1)
    kept = _only(r.kept)
    assert kept.novelty == 0 and kept.nearest_training.screen == "scr0"


def test_without_training_novelty_is_null():
    r = _dedupe([_pattern(1)], {"img": [[0]]})
    assert _only(r.kept).novelty is None and r.summary()["training_tiles"] == 0


def test_flat_tiles_get_no_novelty_but_a_nearest_training_tile():
    r = _dedupe([_flat((1, 2, 3)), _pattern(1)], {"img": [[0, 1]]}, training=[_pattern(9)])
    by_flat = {k.flat: k for k in r.kept}
    assert by_flat[True].novelty is None and isinstance(by_flat[False].novelty, int)
    assert by_flat[True].to_json()["nearest_training"]["distance"] >= 0


def test_hash_match_in_other_colours_is_flagged():
    a = _pattern(1)
    swap = _pattern(1, colours=((40, 200, 40), (160, 20, 20), (10, 10, 10)))
    r = _dedupe([a, _flat((9, 9, 9))], {"img": [[0, 1]]}, training=[swap], train_distance=64)
    rec = _only(r.dropped)
    assert rec.reason == dd.Reason.TRAINING and rec.same_colours is False


def test_8px_tiles_are_matched_against_split_16px_training_tiles():
    big = _pattern(1)                                               # 16x16 training tile
    quarter = np.ascontiguousarray(big[8:, :8])                     # its bottom-left 8x8
    other = np.ascontiguousarray(_pattern(2)[:8, :8])
    other[0, :] = (7, 7, 7, 255)
    r = _dedupe([quarter, other], {"img": [[0, 1]]}, training=[big])
    rec = _only(r.dropped)
    assert rec.tile == 0 and rec.reason == dd.Reason.TRAINING_EXACT
    assert (rec.training.x, rec.training.y) == (0, 32 + 8)


def test_training_tiles_the_tile_size_does_not_divide_are_a_param_error():
    with pytest.raises(ParamError, match="cannot cut"):
        dd.dedupe(_tileset([_pattern(1)[:12, :12]], {"img": [[0]]}), _training([_pattern(2)]),
                  dd.Params())


def test_all_dropped_names_the_threshold():
    a = _pattern(1)
    with pytest.raises(StageError, match="train_distance"):
        _dedupe([a], {"img": [[0]]}, training=[a])


# --------------------------------------------------------------------------- flat, duplicates
def test_flat_tiles_kept_once_per_colour_the_cleanest():
    pure = _flat((10, 200, 10))
    speck = pure.copy()
    speck[5, 5, :3] = (255, 0, 0)                                   # near-flat, same colour
    other = _flat((0, 0, 0))
    r = _dedupe([speck, pure, other], {"img": [[0, 1, 2]]})
    assert r.count(dd.Reason.FLAT) == 1 and len(r.kept) == 2
    rec = _only(r.dropped)
    assert rec.tile == 0 and rec.reason == dd.Reason.FLAT
    assert np.array_equal(r.tileset.bank[rec.replaced_by], pure)


def test_near_duplicates_merge_into_the_cleanest():
    a = _pattern(3)
    noisy = a.copy()
    noisy[7, 7, :3] = (1, 2, 3)                                     # extra colour, isolated
    r = _dedupe([noisy, a], {"img": [[0, 1]]}, dup_distance=16)
    rec = _only(r.dropped)
    assert rec.tile == 0 and rec.reason == dd.Reason.DUPLICATE
    assert np.array_equal(r.tileset.bank[rec.duplicate_of], a)


def test_flipped_near_duplicate_gets_consistent_flip_bits():
    a = _pattern(4)
    noisy_flipped = a[:, ::-1].copy()
    noisy_flipped[3, 3, :3] = (1, 2, 3)
    r = _dedupe([a, noisy_flipped], {"img": [[0, 1 | Flip.V]]}, dup_distance=16)
    assert len(r.kept) == 1
    # cell 1 showed flipV(noisy_flipped) ~ flipHV(a): it must now be tile 0 with both bits
    assert r.tileset.maps["img"].tolist() == [[0, int(Flip.H | Flip.V)]]


def test_palette_swaps_are_not_merged():
    a = _pattern(5)
    swap = _pattern(5, colours=((40, 200, 40), (160, 20, 20), (10, 10, 10)))
    assert len(_dedupe([a, swap], {"img": [[0, 1]]}, dup_distance=64).kept) == 2


def test_nes_tile_sets_never_get_flip_bits():
    a = _pattern(4)
    noisy_flipped = a[:, ::-1].copy()
    noisy_flipped[3, 3, :3] = (1, 2, 3)
    r = _dedupe([a, noisy_flipped], {"img": [[0, 1]]}, flips=False, dup_distance=64,
                dup_fraction=1.0)
    assert not (r.tileset.maps["img"] & FLIP_MASK).any() and r.tileset.flips is False


# --------------------------------------------------------------------------- order, remap, records
def test_kept_tiles_are_ordered_by_score():
    r = _dedupe([_flat((5, 5, 5)), _pattern(6), _pattern(7)], {"img": [[0, 1, 2]]})
    scores = [k.score for k in r.kept]
    assert scores == sorted(scores, reverse=True) and r.kept[-1].flat is True
    assert [k.id for k in r.kept] == [0, 1, 2]


def test_training_drop_remaps_cells_to_a_kept_tile():
    a, b = _pattern(1), _pattern(2)
    r = _dedupe([a, b], {"img": [[0, 1, 0]]}, training=[a])
    m = r.tileset.maps["img"]
    assert m.dtype == np.uint32 and ((m & ID_MASK) == 0).all()
    assert r.kept[0].uses == 3


def test_kept_records_carry_source_image_colours_and_origin():
    r = _dedupe([_pattern(1)], {"img": [[0]]})
    rec = _only(r.kept).to_json()
    assert rec["source_image"] == "img" and rec["colours"] == 3 and rec["origin"] == ["img", 0, 0]
    assert r.tileset.origins == [("img", 0, 0)]


def test_dropped_records_are_written_without_private_fields():
    a, b = _pattern(1), _pattern(2)
    rec = _only(_dedupe([a, b], {"img": [[0, 1]]}, training=[a]).dropped).to_json()
    assert set(rec) == {"tile", "source_image", "reason", "distance", "flip", "same_colours",
                        "training", "replaced_by"}
    assert set(rec["training"]) == {"screen", "source", "x", "y", "row"}


def test_max_tiles_over_limit_is_a_clear_error():
    with pytest.raises(ParamError, match="max_tiles=1"):
        _dedupe([_pattern(1), _pattern(2)], {"img": [[0, 1]]}, max_tiles=1)


def test_evidence_sheet_shows_each_training_copy():
    a, b = _pattern(1), _pattern(2)
    r = _dedupe([a, b], {"img": [[0, 1]]}, training=[a])
    im = dd.evidence_sheet(r.evidence, T)
    assert im.shape[0] >= 2 * 4 * T                                 # header + one row x4
    row = im[4 + 4 * T + 4:4 + 8 * T + 4, 4:4 + 4 * T]              # generated tile, x4
    assert np.array_equal(row[::4, ::4], a[..., :3])


@pytest.mark.parametrize("field,value", [("hash", "md5"), ("train_distance", 65),
                                         ("dup_fraction", 1.5), ("flat_fraction", 0.5),
                                         ("workers", 0)])
def test_bad_params_are_param_errors(field, value):
    with pytest.raises(ParamError, match=field):
        dd.Params(**{field: value})


# --------------------------------------------------------------------------- stage on files
def _run(tmp_path, tileset_items, training_items=None, **kw):
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    inputs = {"tileset": [tileset_items]}
    if training_items is not None:
        inputs["training_tiles"] = [training_items]
    summary = dd.run(inputs, dd.Params(**kw), out)
    load = lambda n: json.loads((out / n).read_text())  # noqa: E731
    return summary, out, load


def _slice_dir(path: Path, tiles, maps, flips=True):
    path.mkdir(parents=True, exist_ok=True)
    _tileset(tiles, maps, flips).save(path, save_npy, save_npz, write_json)
    return path


def _crop_dir(path: Path, tiles):
    path.mkdir(parents=True, exist_ok=True)
    _training(tiles).save(path, save_npy, write_json)
    return path


def test_artifact_is_the_kept_tileset_and_its_records(tmp_path):
    a, b = _pattern(1), _pattern(2)
    s_dir = _slice_dir(tmp_path / "s", [a, b], {"img": [[0, 1]]})
    summary, out, load = _run(tmp_path, s_dir, _crop_dir(tmp_path / "c", [a]))
    ts = TileSet.load(out)
    assert len(ts) == summary["kept"] == 1 and np.array_equal(ts.bank[0], b)
    assert ts.origins == [("img", 16, 0)]
    assert load("tiles.json")[0]["bank_id"] == 1
    assert load("dropped.json")[0]["training"]["source"] == "http://x/<a&b>.png"
    assert (out / "evidence.png").is_file() and summary["dropped_training_exact"] == 1


def test_training_images_given_as_files_are_cut_to_tiles(tmp_path):
    a, b = _pattern(1), _pattern(2)
    s_dir = _slice_dir(tmp_path / "s", [a, b], {"img": [[0, 1]]})
    train = np.concatenate([_pattern(8)[..., :3], a[..., :3]], axis=1)
    Image.fromarray(train).save(tmp_path / "train.png")
    summary, _, load = _run(tmp_path, s_dir, tmp_path / "train.png")
    assert summary["training_tiles"] == 2 and summary["kept"] == 1
    assert load("dropped.json")[0]["training"]["x"] == 16


def test_standalone_images_as_tileset_input(tmp_path):
    img = np.concatenate([_pattern(1), _pattern(2)], axis=1)
    Image.fromarray(img).save(tmp_path / "gen.png")
    summary, _, load = _run(tmp_path, tmp_path / "gen.png")
    assert summary["tiles_in"] == 2 and load("tiles.json")[0]["source_image"] == "gen"


def test_corrupt_user_image_is_skipped_counted_and_named(tmp_path):
    src = tmp_path / "gen"
    src.mkdir()
    Image.fromarray(np.concatenate([_pattern(1), _pattern(2)], axis=1)).save(src / "a.png")
    Image.fromarray(_pattern(3)).save(src / "c.png")
    (src / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    summary, out, _ = _run(tmp_path, src)
    assert summary["tiles_in"] == 3 and (out / "bank.npy").exists()
    assert summary["skipped"] == 1
    (item,) = summary["skipped_items"]
    assert Path(item["path"]).name == "b.png" and item["input"] == "tileset"
    assert "b.png" in item["reason"] and "not a readable image" in item["reason"]


def test_corrupt_and_tiny_training_images_are_counted(tmp_path):
    s_dir = _slice_dir(tmp_path / "s", [_pattern(1)], {"img": [[0]]})
    train = tmp_path / "train"
    train.mkdir()
    Image.fromarray(_pattern(5)[..., :3]).save(train / "ok.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(train / "tiny.png")
    (train / "bad.png").write_bytes(b"not an image")
    summary, _, _ = _run(tmp_path, s_dir, train)
    assert summary["training_tiles"] == 1 and summary["skipped"] == 2
    reasons = {Path(i["path"]).name: i["reason"] for i in summary["skipped_items"]}
    assert set(reasons) == {"bad.png", "tiny.png"} and "smaller than one 16x16 tile" in reasons["tiny.png"]
    assert {i["input"] for i in summary["skipped_items"]} == {"training_tiles"}


def test_slice_artifact_input_skips_nothing(tmp_path):
    s_dir = _slice_dir(tmp_path / "s", [_pattern(1)], {"img": [[0]]})
    summary, _, _ = _run(tmp_path, s_dir)
    assert summary["skipped"] == 0 and summary["skipped_items"] == []


def test_only_corrupt_user_images_name_the_first_problem(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(StageError, match=r"could be used \(first problem: .*bad\.png"):
        _run(tmp_path, tmp_path / "bad.png")


def test_malformed_slice_artifact_is_an_input_error(tmp_path):
    s_dir = _slice_dir(tmp_path / "s", [_pattern(1)], {"img": [[0]]})
    save_npz(s_dir / "maps.npz", img=np.array([[5]], np.uint32))
    with pytest.raises(StageError, match="do not belong together"):
        _run(tmp_path, s_dir)
