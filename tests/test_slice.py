"""stages.slice: the core on arrays (flips, NES mode, crop/pad, palettes, stems), and the
stage on files (quantize's listing, PNG palettes and transparency, skipped images, artifacts)."""
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stages import slice as sl
from stages._common import InputError, ParamError
from tilesets import bank as B
from tilesets.artifacts import TileSet
from tilesets.cells import ID_MASK, Flip

PAL = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)


def _tile(seed, t=16):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 4, (t, t)).astype(np.uint8)


def _rgba(idx):
    """Index array (H, W) -> opaque RGBA pixels of PAL."""
    out = np.full(idx.shape + (4,), 255, np.uint8)
    out[..., :3] = PAL[idx]
    return out


def _slice(*named, palette=None, **kw):
    """slice_images on (stem, index array) pairs."""
    return sl.slice_images([(Path(f"{n}.png"), _rgba(i), palette) for n, i in named],
                           sl.Params(**kw))


def _save_p(path, idx, transparent=None):
    im = Image.frombytes("P", (idx.shape[1], idx.shape[0]), idx.tobytes())
    im.putpalette(PAL.tobytes())
    kw = {"transparency": transparent} if transparent is not None else {}
    im.save(path, **kw)


def _run(inputs, out, **kw):
    out.mkdir(parents=True, exist_ok=True)
    return sl.run({"images": inputs}, sl.Params(**kw), out)


# --------------------------------------------------------------------------- core
def test_flipped_tile_is_stored_once_with_flip_bits():
    a = _tile(1)
    r = _slice(("a", np.concatenate([a, a[:, ::-1], a[::-1]], axis=1)))
    assert len(r.tileset) == 1 and r.tileset.bank.shape == (1, 16, 16, 4)
    assert r.tileset.maps["a"].dtype == np.uint32
    assert r.tileset.maps["a"].tolist() == [[0, int(Flip.H), int(Flip.V)]]
    assert r.summary()["flipped_cells"] == 2


def test_maps_rebuild_the_input_image():
    a, b = _tile(1), _tile(2)
    img = np.block([[a, b[::-1]], [a[:, ::-1], b]])
    ts = _slice(("x", img)).tileset
    assert np.array_equal(B.apply_cells(ts.bank, ts.maps["x"]), _rgba(img))


def test_nes_mode_uses_no_flips():
    a = _tile(1)
    r = _slice(("a", np.concatenate([a, a[:, ::-1]], axis=1)), nes=True)
    assert len(r.tileset) == 2 and r.tileset.flips is False
    assert r.tileset.maps["a"].tolist() == [[0, 1]]


def test_tile_size_8():
    a = _tile(3, t=8)
    r = _slice(("a", np.concatenate([a, a], axis=0)), tile_size=8)
    assert len(r.tileset) == 1 and r.tileset.bank.shape == (1, 8, 8, 4)


def test_crop_mode_drops_the_remainder_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        r = _slice(("a", np.zeros((20, 36), np.uint8)))
    assert r.tileset.maps["a"].shape == (1, 2)
    assert len(r.warnings) == 1 and "not a multiple" in caplog.text and "cropped" in r.warnings[0]


def test_pad_mode_pads_with_transparent_pixels():
    r = _slice(("a", np.ones((20, 16), np.uint8)), pad_mode="pad")
    m = r.tileset.maps["a"]
    assert m.shape == (2, 1)
    bottom = r.tileset.bank[m[1, 0] & ID_MASK]
    assert (bottom[4:, :, 3] == 0).all() and (bottom[:4, :, 3] == 255).all()


def test_counts_origins_and_palette_swaps():
    a = _tile(4)
    swapped = np.array([3, 2, 1, 0], np.uint8)[a]                   # same pattern, other colours
    r = _slice(("a", np.concatenate([a, a, swapped], axis=1)))
    assert r.counts == [2, 1]
    assert r.tileset.origins == [("a", 0, 0), ("a", 32, 0)]
    assert r.palette_swaps == [[0, 1]]


def test_palette_is_kept_only_when_every_image_shares_it():
    pal = PAL.tolist()
    assert _slice(("a", _tile(1)), ("b", _tile(2)), palette=pal).tileset.palette == pal
    mixed = sl.slice_images([(Path("a.png"), _rgba(_tile(1)), pal),
                             (Path("b.png"), _rgba(_tile(2)), None)], sl.Params())
    assert mixed.tileset.palette is None


def test_image_smaller_than_a_tile_is_listed_not_mapped():
    r = _slice(("good", _tile(1)), ("tiny", _tile(2, t=8)))
    assert list(r.tileset.maps) == ["good"] and r.too_small == [Path("tiny.png")]


def test_same_stem_twice_gets_distinct_map_keys():
    r = _slice(("x", _tile(1)), ("x", _tile(2)))
    assert list(r.tileset.maps) == ["x", "x-2"]


def test_bad_params_are_param_errors():
    with pytest.raises(ParamError, match="pad_mode"):
        sl.Params(pad_mode="wrap")
    with pytest.raises(ParamError, match="tile_size"):
        sl.Params(tile_size=2)


# --------------------------------------------------------------------------- stage on files
def test_artifact_is_a_tileset_plus_slice_json(tmp_path):
    a = _tile(4)
    _save_p(tmp_path / "a.png", np.concatenate([a, a], axis=1))
    s = _run([tmp_path / "a.png"], tmp_path / "o")
    ts = TileSet.load(tmp_path / "o")
    meta = json.loads((tmp_path / "o" / "slice.json").read_text())
    assert s["unique"] == len(ts) == 1 and ts.palette[:4] == PAL.tolist()
    assert meta["images"] == ["a"] and meta["counts"] == [2] and meta["skipped"] == []


def test_quantize_listing_limits_the_images_and_names_the_palette(tmp_path):
    _save_p(tmp_path / "a.png", _tile(1))
    (tmp_path / "report").mkdir()
    _save_p(tmp_path / "report" / "error.png", _tile(2))
    (tmp_path / "quantize.json").write_text(json.dumps(
        {"palette": {"name": "nes"}, "images": [{"file": "a.png"}]}))
    s = _run([tmp_path], tmp_path / "o")
    assert s["images"] == 1 and TileSet.load(tmp_path / "o").palette_name == "nes"


def test_transparent_index_becomes_alpha_zero(tmp_path):
    idx = np.zeros((16, 16), np.uint8)
    idx[:, 8:] = 2
    _save_p(tmp_path / "a.png", idx, transparent=0)
    _run([tmp_path / "a.png"], tmp_path / "o")
    tile = TileSet.load(tmp_path / "o").bank[0]
    assert (tile[:, :8] == 0).all() and (tile[:, 8:, 3] == 255).all()


def test_rgb_images_have_no_palette(tmp_path):
    rgb = np.zeros((16, 32, 3), np.uint8)
    rgb[:, 16:] = (10, 20, 30)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    s = _run([tmp_path / "rgb.png"], tmp_path / "o")
    assert s["unique"] == 2 and TileSet.load(tmp_path / "o").palette is None


def test_corrupt_image_is_skipped_and_counted(tmp_path):
    _save_p(tmp_path / "good.png", _tile(1))
    (tmp_path / "bad.png").write_bytes(b"not a png")
    s = _run([tmp_path], tmp_path / "o")
    assert s["images"] == 1 and len(s["skipped"]) == 1 and "bad.png" in s["skipped"][0]["path"]


def test_image_smaller_than_a_tile_is_skipped_with_a_warning(tmp_path, caplog):
    _save_p(tmp_path / "good.png", _tile(1))
    _save_p(tmp_path / "tiny.png", _tile(2, t=8))
    with caplog.at_level(logging.WARNING, logger="tilegan.slice"):
        s = _run([tmp_path], tmp_path / "o")
    assert [Path(i["path"]).name for i in s["skipped"]] == ["tiny.png"]
    assert "smaller than one 16x16 tile" in s["skipped"][0]["reason"]
    assert any("skipped" in r.getMessage() and "tiny.png" in r.getMessage() for r in caplog.records)


def test_iter_images_yields_good_files_and_records_bad_ones_in_order(tmp_path):
    from stages._common import Skipped, iter_images

    _save_p(tmp_path / "a.png", _tile(1))
    (tmp_path / "b.png").write_bytes(b"not a png")
    _save_p(tmp_path / "c.png", _tile(3))
    skipped = Skipped()
    got = [(p.name, im.shape) for p, im in iter_images(
        [tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"], skipped, mode="RGBA")]
    assert got == [("a.png", (16, 16, 4)), ("c.png", (16, 16, 4))]
    assert len(skipped) == 1 and skipped.items[0]["path"] == str(tmp_path / "b.png")
    assert skipped.first_reason().startswith(f"{tmp_path / 'b.png'}: not a readable image")


def test_only_corrupt_images_is_an_input_error(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="could be used"):
        _run([tmp_path / "bad.png"], tmp_path / "o")


def test_missing_path_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        _run([tmp_path / "nope.png"], tmp_path / "o")
