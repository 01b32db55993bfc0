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
SKY = (92, 148, 252)
ART = ((20, 20, 30), (200, 60, 40), (240, 220, 120), (40, 120, 200))


def _art(seed, colours=ART, width=T):
    """Pixel art (T, width, 4): 2x2-pixel clusters in far-apart colours (structured, so the
    judge compares it by near, shifted and swapped copies as well as exact ones)."""
    rng = np.random.default_rng(seed)
    pal = np.array(colours, np.uint8)
    rgb = pal[rng.integers(0, len(pal), (T // 2, width // 2)).repeat(2, 0).repeat(2, 1)]
    return np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], -1)


def _pipe():
    t = _flat((0, 168, 0))
    t[:, :2, :3] = (0, 60, 0)
    t[:, 5:7, :3] = (120, 230, 120)
    t[:, -2:, :3] = (0, 60, 0)
    return t


def _dropped_copy(r, tile):
    rec = _only([d for d in r.dropped if d.tile == tile])
    assert rec.reason == dd.Reason.TRAINING
    return rec


def test_exact_training_copy_is_dropped_with_its_source():
    a, b = _art(1), _art(2)
    r = _dedupe([a, b], {"img": [[0, 1]]}, training=[_art(9), a])
    rec = _only(r.dropped).to_json()
    assert (rec["tile"], rec["kind"], rec["pixels_differing"], rec["flip"]) == (0, "exact", 0, 0)
    assert rec["training"] == {"screen": "scr0", "source": "http://x/<a&b>.png", "x": 16,
                               "y": 32, "row": 1}
    assert r.summary()["dropped_copies"]["exact"] == 1


def test_flipped_copy_is_exact_with_the_flip():
    a = _art(1)
    r = _dedupe([a, _art(2)], {"img": [[0, 1]]}, training=[a[::-1]])
    rec = _dropped_copy(r, 0)
    assert rec.call.kind == dd.CopyKind.EXACT and rec.to_json()["flip"] == 2   # a = flipV(twin)


def test_flipped_copy_is_no_copy_in_nes_mode():
    a = _art(1)
    r = _dedupe([a, _art(2)], {"img": [[0, 1]]}, training=[a[::-1]], flips=False)
    assert r.dropped == [] and len(r.kept) == 2


def test_palette_swap_is_dropped_as_a_palette_swap():
    a = _art(1)
    swap = _art(1, colours=((240, 240, 240), (30, 160, 60), (90, 30, 140), (250, 150, 0)))
    r = _dedupe([swap, _art(2)], {"img": [[0, 1]]}, training=[a])
    rec = _dropped_copy(r, 0).to_json()
    assert rec["kind"] == "palette_swap" and rec["colour_distance"] > 20


def test_keep_palette_swaps_keeps_and_flags_them():
    a = _art(1)
    swap = _art(1, colours=((240, 240, 240), (30, 160, 60), (90, 30, 140), (250, 150, 0)))
    r = _dedupe([swap], {"img": [[0]]}, training=[a], keep_palette_swaps=True)
    kept = _only(r.kept).to_json()
    assert kept["novelty"] == "copy" and kept["nearest_training"]["kind"] == "palette_swap"


def test_one_pixel_edit_is_dropped_as_near():
    a = _art(1)
    edited = a.copy()
    edited[5, 9, :3] = (255, 0, 255)
    r = _dedupe([edited, _art(2)], {"img": [[0, 1]]}, training=[a])
    rec = _dropped_copy(r, 0).to_json()
    assert (rec["kind"], rec["pixels_differing"], rec["compared"]) == ("near", 1, T * T)


def test_copy_with_a_corner_of_other_background_is_near():
    a = _art(1)
    edited = a.copy()
    edited[:3, -4:, :3] = (255, 0, 255)                          # 12 pixels: 4.7 % of the tile
    r = _dedupe([edited, _art(2)], {"img": [[0, 1]]}, training=[a])
    assert _dropped_copy(r, 0).to_json()["kind"] == "near"


def test_shifted_copy_is_dropped_as_shifted_with_its_offset():
    wide = _art(1, width=T + 2)
    r = _dedupe([np.ascontiguousarray(wide[:, 1:T + 1]), _art(2)], {"img": [[0, 1]]},
                training=[np.ascontiguousarray(wide[:, :T])])
    rec = _dropped_copy(r, 0).to_json()
    assert (rec["kind"], rec["shift"], rec["pixels_differing"]) == ("shifted", [1, 0], 0)


def test_flat_sky_is_not_a_copy_of_a_pipe_or_a_purple_tile():
    sky = _flat(SKY)
    r = _dedupe([sky, _art(2)], {"img": [[0, 1]]}, training=[_pipe(), _flat((120, 40, 160))])
    assert r.dropped == []
    by_flat = {k.flat: k.to_json() for k in r.kept}
    assert by_flat[True]["novelty"] == "common" and by_flat[True]["nearest_training"] is None


def test_flat_tile_equal_to_a_training_tile_is_kept_as_common():
    r = _dedupe([_flat(SKY), _art(2)], {"img": [[0, 1]]}, training=[_flat(SKY)])
    assert r.dropped == []
    sky = _only([k.to_json() for k in r.kept if k.flat])
    assert sky["novelty"] == "common" and sky["nearest_training"]["kind"] == "exact"


def test_flat_tile_the_judge_calls_near_is_kept_as_common():
    speckled = _flat(SKY)
    for k in range(10):                                          # 96 % sky, 10 scattered dots
        speckled[1 + k % 5 * 3, 1 + k // 5 * 7 + k % 3, :3] = (0, 0, 0)
    twin = speckled.copy()
    twin[14, 14, :3] = (0, 0, 0)                                 # one more dot
    r = _dedupe([speckled, _art(2)], {"img": [[0, 1]]}, training=[twin])
    assert r.calls[0].kind == dd.CopyKind.NEAR and r.dropped == []
    sky = _only([k.to_json() for k in r.kept if k.flat])
    assert sky["novelty"] == "common" and sky["nearest_training"]["kind"] == "near"


def test_many_edited_pixels_are_related_not_a_copy():
    a = _art(1)
    edited = a.copy()
    edited[2:7, 3:9, :3] = (255, 0, 255)                         # 30 pixels repainted
    r = _dedupe([edited], {"img": [[0]]}, training=[a])
    kept = _only(r.kept).to_json()
    assert kept["novelty"] == "related"
    near = kept["nearest_training"]
    assert (near["kind"], near["pixels_differing"], near["x"]) == ("not_copy", 30, 0)


def test_unrelated_tile_is_new():
    other = _art(7, colours=((250, 250, 250), (10, 90, 30), (130, 20, 90), (255, 170, 60)))
    kept = _only(_dedupe([other], {"img": [[0]]}, training=[_art(1)]).kept).to_json()
    assert kept["novelty"] == "new" and kept["nearest_training"] is None


def test_drop_copies_off_keeps_copies_and_reports_them():
    a = _art(1)
    r = _dedupe([a], {"img": [[0]]}, training=[a], drop_copies=False)
    kept = _only(r.kept).to_json()
    assert kept["novelty"] == "copy" and kept["nearest_training"]["screen"] == "scr0"
    assert len(r.evidence.calls) == 1


def test_without_training_novelty_is_null():
    r = _dedupe([_pattern(1)], {"img": [[0]]})
    assert _only(r.kept).novelty is None and r.summary()["training_tiles"] == 0
    assert r.evidence.calls == []


def test_8px_tiles_are_matched_against_split_16px_training_tiles():
    big = _pattern(1)                                               # 16x16 training tile
    quarter = np.ascontiguousarray(big[8:, :8])                     # its bottom-left 8x8
    other = np.ascontiguousarray(_pattern(2)[:8, :8])
    other[0, :] = (7, 7, 7, 255)
    r = _dedupe([quarter, other], {"img": [[0, 1]]}, training=[big])
    rec = _only(r.dropped)
    assert rec.tile == 0 and rec.call.kind == dd.CopyKind.EXACT
    assert (rec.training.x, rec.training.y) == (0, 32 + 8)


def test_training_tiles_the_tile_size_does_not_divide_are_a_param_error():
    with pytest.raises(ParamError, match="cannot cut"):
        dd.dedupe(_tileset([_pattern(1)[:12, :12]], {"img": [[0]]}), _training([_pattern(2)]),
                  dd.Params())


def test_all_dropped_names_the_option_that_keeps_them():
    a = _art(1)
    with pytest.raises(StageError, match=r"1 exact\); keep them with --no-drop-copies"):
        _dedupe([a], {"img": [[0]]}, training=[a])


def test_evidence_sheet_has_one_row_per_copy_call():
    a, b = _art(1), _art(2)
    edited = b.copy()
    edited[0, 0, :3] = (255, 0, 255)
    bank = [a, edited, _flat(SKY), _art(3)]
    r = _dedupe(bank, {"img": [[0, 1, 2, 3]]}, training=[a, b, _flat(SKY)], evidence_near=0)
    assert [(c.generated, c.kind.value) for c in r.evidence.calls] == [
        (0, "exact"), (1, "near"), (2, "exact")]                   # dropped, dropped, kept sky
    assert r.evidence.labels[2].startswith("kept (common)")
    im = r.evidence.sheet()
    assert im.shape[0] == 6 + 16 + 3 * (3 * T + 6)                 # copies.evidence_sheet rows
    for row, g in enumerate((0, 1, 2)):                             # generated tile at 3x
        y = 22 + row * (3 * T + 6)
        assert (im[y:y + 3 * T:3, 6:6 + 3 * T:3] == bank[g][..., :3]).all()


def test_evidence_shows_the_closest_kept_tiles_after_the_copies():
    a = _art(1)
    edited = a.copy()
    edited[2:7, 3:9, :3] = (255, 0, 255)
    r = _dedupe([edited], {"img": [[0]]}, training=[a], evidence_near=5)
    (call,) = r.evidence.calls
    assert call.kind == dd.CopyKind.NOT_COPY and r.evidence.labels[0].startswith("kept (related)")


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
    a, b = _art(1), _art(2)
    rec = _only(_dedupe([a, b], {"img": [[0, 1]]}, training=[a]).dropped).to_json()
    assert set(rec) == {"tile", "source_image", "reason", "kind", "pixels_differing",
                        "compared", "colour_distance", "flip", "shift", "training",
                        "replaced_by"}
    assert set(rec["training"]) == {"screen", "source", "x", "y", "row"}


def test_max_tiles_over_limit_is_a_clear_error():
    with pytest.raises(ParamError, match="max_tiles=1"):
        _dedupe([_pattern(1), _pattern(2)], {"img": [[0, 1]]}, max_tiles=1)


@pytest.mark.parametrize("field,value", [("hash", "md5"), ("copy_shift", 5),
                                         ("copy_fraction", 0.5), ("copy_tolerance", -1.0),
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
    assert (out / "evidence.png").is_file() and summary["dropped_copies"]["exact"] == 1
    assert load("dropped.json")[0]["kind"] == "exact"


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
