"""stages.dedupe: training copies, flat tiles, near-duplicates, ordering, remapping, reports."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stages import dedupe as dd
from stages._common import ParamError, StageError, save_npy, save_npz, write_json
from tilesets import bank as B

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


def _slice_dir(path: Path, tiles, maps, flips=True):
    path.mkdir(parents=True, exist_ok=True)
    save_npy(path / "bank.npy", np.stack(tiles).astype(np.uint8))
    save_npz(path / "maps.npz", **{k: np.asarray(v, np.uint32) for k, v in maps.items()})
    write_json(path / "slice.json", {"tile_size": T, "flips": flips,
                                     "origins": [["img", 16 * i, 0] for i in range(len(tiles))]})
    return path


def _crop_dir(path: Path, tiles):
    path.mkdir(parents=True, exist_ok=True)
    tiles = np.stack(tiles)[..., :3].astype(np.uint8)
    save_npy(path / "tiles.npy", tiles)
    save_npy(path / "tiles_origin.npy", np.array([[0, 16 * i, 32] for i in range(len(tiles))],
                                                 np.int32))
    write_json(path / "screens.json", [{"id": "scr0", "source": "http://x/<a&b>.png", "scale": 1,
                                        "width": 320, "height": 240}])
    return path


def _run(tmp_path, tiles_dir, training_dir=None, **kw):
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    inputs = {"tiles": [tiles_dir]}
    if training_dir is not None:
        inputs["training"] = [training_dir]
    summary = dd.run(inputs, dd.Params(**kw), out)
    load = lambda n: json.loads((out / n).read_text())  # noqa: E731
    return summary, out, load


def test_exact_training_copy_is_dropped_with_its_source(tmp_path):
    a, b = _pattern(1), _pattern(2)
    s_dir = _slice_dir(tmp_path / "s", [a, b], {"img": [[0, 1]]})
    c_dir = _crop_dir(tmp_path / "c", [_pattern(9), a[::-1]])      # a flipped, in training
    summary, out, load = _run(tmp_path, s_dir, c_dir)
    assert summary["kept"] == 1 and summary["dropped_training_exact"] == 1
    rec = load("dropped.json")[0]
    assert rec["tile"] == 0 and rec["reason"] == "training_exact" and rec["distance"] == 0
    assert rec["training"]["source"] == "http://x/<a&b>.png"
    assert (rec["training"]["x"], rec["training"]["y"]) == (16, 32)


def test_training_near_copy_is_dropped_within_train_distance(tmp_path):
    a, b = _pattern(1), _pattern(2)
    near = a.copy()
    near[0, 0, :3] = 255 - near[0, 0, :3]                         # one stray pixel
    s_dir = _slice_dir(tmp_path / "s", [a, b], {"img": [[0, 1]]})
    c_dir = _crop_dir(tmp_path / "c", [near])
    summary, _, load = _run(tmp_path, s_dir, c_dir, train_distance=10)
    assert summary["dropped_training"] + summary["dropped_training_exact"] == 1
    assert load("dropped.json")[0]["reason"] == "training"


def test_train_distance_minus_one_only_reports_novelty(tmp_path):
    a = _pattern(1)
    s_dir = _slice_dir(tmp_path / "s", [a], {"img": [[0]]})
    c_dir = _crop_dir(tmp_path / "c", [a])
    summary, _, load = _run(tmp_path, s_dir, c_dir, train_distance=-1)
    meta = load("tiles.json")[0]
    assert summary["kept"] == 1 and meta["novelty"] == 0
    assert meta["nearest_training"]["screen"] == "scr0"


def test_without_training_novelty_is_null(tmp_path):
    s_dir = _slice_dir(tmp_path / "s", [_pattern(1)], {"img": [[0]]})
    summary, _, load = _run(tmp_path, s_dir)
    assert load("tiles.json")[0]["novelty"] is None and summary["training_tiles"] == 0


def test_flat_tiles_kept_once_per_colour_the_cleanest(tmp_path):
    pure = _flat((10, 200, 10))
    speck = pure.copy()
    speck[5, 5, :3] = (255, 0, 0)                                   # near-flat, same colour
    other = _flat((0, 0, 0))
    s_dir = _slice_dir(tmp_path / "s", [speck, pure, other], {"img": [[0, 1, 2]]})
    summary, out, load = _run(tmp_path, s_dir)
    assert summary["dropped_flat"] == 1 and summary["kept"] == 2
    rec = load("dropped.json")[0]
    assert rec["tile"] == 0 and rec["reason"] == "flat"
    bank = np.load(out / "bank.npy")
    assert np.array_equal(bank[rec["replaced_by"]], pure)


def test_near_duplicates_merge_into_the_cleanest(tmp_path):
    a = _pattern(3)
    noisy = a.copy()
    noisy[7, 7, :3] = (1, 2, 3)                                     # extra colour, isolated
    s_dir = _slice_dir(tmp_path / "s", [noisy, a], {"img": [[0, 1]]})
    summary, out, load = _run(tmp_path, s_dir, dup_distance=16)
    assert summary["dropped_duplicate"] == 1
    rec = load("dropped.json")[0]
    assert rec["tile"] == 0 and rec["reason"] == "duplicate"
    assert np.array_equal(np.load(out / "bank.npy")[rec["duplicate_of"]], a)


def test_flipped_near_duplicate_gets_consistent_flip_bits(tmp_path):
    a = _pattern(4)
    noisy_flipped = a[:, ::-1].copy()
    noisy_flipped[3, 3, :3] = (1, 2, 3)
    s_dir = _slice_dir(tmp_path / "s", [a, noisy_flipped], {"img": [[0, int(1 | B.FLIP_V)]]})
    summary, out, _ = _run(tmp_path, s_dir, dup_distance=16)
    assert summary["kept"] == 1
    m = np.load(out / "maps.npz")["img"]
    # cell 1 showed flipV(noisy_flipped) ~ flipHV(a): it must now be tile 0 with both bits
    assert m.tolist() == [[0, int(B.FLIP_H | B.FLIP_V)]]


def test_palette_swaps_are_not_merged(tmp_path):
    a = _pattern(5)
    swap = _pattern(5, colours=((40, 200, 40), (160, 20, 20), (10, 10, 10)))
    s_dir = _slice_dir(tmp_path / "s", [a, swap], {"img": [[0, 1]]})
    summary, _, _ = _run(tmp_path, s_dir, dup_distance=64)
    assert summary["kept"] == 2


def test_kept_tiles_are_ordered_by_score(tmp_path):
    tiles = [_flat((5, 5, 5)), _pattern(6), _pattern(7)]
    s_dir = _slice_dir(tmp_path / "s", tiles, {"img": [[0, 1, 2]]})
    _, _, load = _run(tmp_path, s_dir)
    scores = [t["score"] for t in load("tiles.json")]
    assert scores == sorted(scores, reverse=True)
    assert load("tiles.json")[-1]["flat"] is True


def test_training_drop_remaps_cells_to_a_kept_tile(tmp_path):
    a, b = _pattern(1), _pattern(2)
    s_dir = _slice_dir(tmp_path / "s", [a, b], {"img": [[0, 1, 0]]})
    c_dir = _crop_dir(tmp_path / "c", [a])
    _, out, _ = _run(tmp_path, s_dir, c_dir)
    m = np.load(out / "maps.npz")["img"]
    assert m.dtype == np.uint32 and ((m & B.ID_MASK) == 0).all()


def test_all_dropped_names_the_threshold(tmp_path):
    a = _pattern(1)
    s_dir = _slice_dir(tmp_path / "s", [a], {"img": [[0]]})
    c_dir = _crop_dir(tmp_path / "c", [a])
    with pytest.raises(StageError, match="train_distance"):
        _run(tmp_path, s_dir, c_dir)


def test_max_tiles_over_limit_is_a_clear_error(tmp_path):
    s_dir = _slice_dir(tmp_path / "s", [_pattern(1), _pattern(2)], {"img": [[0, 1]]})
    with pytest.raises(ParamError, match="max_tiles=1"):
        _run(tmp_path, s_dir, max_tiles=1)


def test_evidence_sheet_shows_each_training_copy(tmp_path):
    a, b = _pattern(1), _pattern(2)
    s_dir = _slice_dir(tmp_path / "s", [a, b], {"img": [[0, 1]]})
    c_dir = _crop_dir(tmp_path / "c", [a])
    _, out, _ = _run(tmp_path, s_dir, c_dir)
    im = np.asarray(Image.open(out / "evidence.png").convert("RGB"))
    assert im.shape[0] >= 2 * 4 * T                                 # header + one row x4
    row = im[4 + 4 * T + 4:4 + 8 * T + 4, 4:4 + 4 * T]              # generated tile, x4
    assert np.array_equal(row[::4, ::4], a[..., :3])


def test_training_images_given_as_files_are_cut_to_tiles(tmp_path):
    a, b = _pattern(1), _pattern(2)
    s_dir = _slice_dir(tmp_path / "s", [a, b], {"img": [[0, 1]]})
    train = np.concatenate([_pattern(8)[..., :3], a[..., :3]], axis=1)
    Image.fromarray(train).save(tmp_path / "train.png")
    summary, _, load = _run(tmp_path, s_dir, tmp_path / "train.png")
    assert summary["training_tiles"] == 2 and summary["kept"] == 1
    assert load("dropped.json")[0]["training"]["x"] == 16


def test_tiles_json_carries_source_image_and_colours(tmp_path):
    s_dir = _slice_dir(tmp_path / "s", [_pattern(1)], {"img": [[0]]})
    _, _, load = _run(tmp_path, s_dir)
    meta = load("tiles.json")[0]
    assert meta["source_image"] == "img" and meta["colours"] == 3 and meta["id"] == 0


def test_unknown_hash_is_a_param_error(tmp_path):
    s_dir = _slice_dir(tmp_path / "s", [_pattern(1)], {"img": [[0]]})
    with pytest.raises(ParamError, match="hash"):
        _run(tmp_path, s_dir, hash="md5")


def test_8px_tiles_are_matched_against_split_16px_training_tiles(tmp_path):
    big = _pattern(1)                                               # 16x16 training tile
    quarter = np.ascontiguousarray(big[8:, :8])                     # its bottom-left 8x8
    other = np.ascontiguousarray(_pattern(2)[:8, :8])
    other[0, :] = (7, 7, 7, 255)
    s_dir = tmp_path / "s"
    s_dir.mkdir()
    save_npy(s_dir / "bank.npy", np.stack([quarter, other]))
    save_npz(s_dir / "maps.npz", img=np.array([[0, 1]], np.uint32))
    write_json(s_dir / "slice.json", {"tile_size": 8, "flips": True,
                                      "origins": [["img", 0, 0], ["img", 8, 0]]})
    c_dir = _crop_dir(tmp_path / "c", [big])
    summary, _, load = _run(tmp_path, s_dir, c_dir)
    rec = load("dropped.json")[0]
    assert rec["tile"] == 0 and rec["reason"] == "training_exact"
    assert (rec["training"]["x"], rec["training"]["y"]) == (0, 32 + 8)


def test_nes_slices_never_get_flip_bits(tmp_path):
    a = _pattern(4)
    noisy_flipped = a[:, ::-1].copy()
    noisy_flipped[3, 3, :3] = (1, 2, 3)
    s_dir = _slice_dir(tmp_path / "s", [a, noisy_flipped], {"img": [[0, 1]]}, flips=False)
    _, out, _ = _run(tmp_path, s_dir, dup_distance=64, dup_fraction=1.0)
    m = np.load(out / "maps.npz")["img"]
    assert (m >> np.uint32(30) == 0).all()


def test_standalone_images_as_tiles_input(tmp_path):
    img = np.concatenate([_pattern(1), _pattern(2)], axis=1)
    Image.fromarray(img).save(tmp_path / "gen.png")
    summary, out, load = _run(tmp_path, tmp_path / "gen.png")
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
    assert Path(item["path"]).name == "b.png" and item["input"] == "tiles"
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
    assert {i["input"] for i in summary["skipped_items"]} == {"training"}


def test_slice_artifact_input_skips_nothing(tmp_path):
    s_dir = _slice_dir(tmp_path / "s", [_pattern(1)], {"img": [[0]]})
    summary, _, _ = _run(tmp_path, s_dir)
    assert summary["skipped"] == 0 and summary["skipped_items"] == []


def test_only_corrupt_user_images_name_the_first_problem(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(StageError, match=r"could be used \(first problem: .*bad\.png"):
        _run(tmp_path, tmp_path / "bad.png")


# --------------------------------------------------------------------------- quality score
def test_quality_counts_colours_and_isolated_pixels():
    from tilesets.quality import tile_stats

    t = np.zeros((1, 4, 4, 3), np.uint8)
    t[0, 1, 1] = (255, 0, 0)                                        # one isolated pixel
    t[0, 3, 2:] = (0, 0, 255)                                       # a 2-pixel run: not isolated
    s = tile_stats(t)
    assert s.colours.tolist() == [3] and s.isolated.tolist() == [1]
    assert s.dominant[0] == pytest.approx(13 / 16)


def test_quality_prefers_structure_over_flat_and_clean_over_speckled():
    from tilesets.quality import quality

    flat = np.zeros((8, 8, 3), np.uint8)
    stripes = flat.copy()
    stripes[::2] = 255
    speckled = stripes.copy()
    speckled[1, 1] = speckled[3, 5] = speckled[5, 2] = (255, 0, 0)
    q = quality(np.stack([flat, stripes, speckled]))
    assert q[1] > q[2] > q[0]


def test_quality_weights_change_the_order():
    from tilesets.quality import quality

    many = np.arange(64 * 3, dtype=np.uint8).reshape(1, 8, 8, 3)   # 64 colours, all edges
    few = np.zeros((1, 8, 8, 3), np.uint8)
    few[0, :, 4:] = 255                                               # 2 colours, one edge
    both = np.concatenate([many, few])
    assert quality(both)[1] > quality(both)[0]
    assert quality(both, w_colours=0.0, w_isolated=0.0)[0] >= quality(both, w_colours=0.0,
                                                                      w_isolated=0.0)[1]


def test_flat_tiles_get_no_novelty(tmp_path):
    s_dir = _slice_dir(tmp_path / "s", [_flat((1, 2, 3)), _pattern(1)], {"img": [[0, 1]]})
    c_dir = _crop_dir(tmp_path / "c", [_pattern(9)])
    _, _, load = _run(tmp_path, s_dir, c_dir)
    meta = {m["flat"]: m for m in load("tiles.json")}
    assert meta[True]["novelty"] is None and isinstance(meta[False]["novelty"], int)


def test_hash_match_in_other_colours_is_flagged(tmp_path):
    a = _pattern(1)
    swap = _pattern(1, colours=((40, 200, 40), (160, 20, 20), (10, 10, 10)))
    s_dir = _slice_dir(tmp_path / "s", [a, _flat((9, 9, 9))], {"img": [[0, 1]]})
    c_dir = _crop_dir(tmp_path / "c", [swap])
    _, _, load = _run(tmp_path, s_dir, c_dir, train_distance=64)
    rec = load("dropped.json")[0]
    assert rec["reason"] == "training" and rec["same_colours"] is False
