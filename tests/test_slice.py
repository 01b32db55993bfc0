"""stages.slice: tiles, flips as Tiled bits, NES mode, crop/pad, artifacts."""
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stages import slice as sl
from stages._common import InputError, ParamError
from tilesets import bank as B

PAL = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)


def _tile(seed, t=16):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 4, (t, t)).astype(np.uint8)


def _save_p(path, idx, transparent=None):
    im = Image.frombytes("P", (idx.shape[1], idx.shape[0]), idx.tobytes())
    im.putpalette(PAL.tobytes())
    kw = {"transparency": transparent} if transparent is not None else {}
    im.save(path, **kw)


def _run(inputs, out, **kw):
    out.mkdir(parents=True, exist_ok=True)
    return sl.run({"images": inputs}, sl.Params(**kw), out)


def test_flipped_tile_is_stored_once_with_flip_bits(tmp_path):
    a = _tile(1)
    img = np.concatenate([a, a[:, ::-1], a[::-1]], axis=1)          # 16 x 48
    _save_p(tmp_path / "a.png", img)
    s = _run([tmp_path / "a.png"], tmp_path / "o")
    bank = np.load(tmp_path / "o" / "bank.npy")
    maps = np.load(tmp_path / "o" / "maps.npz")
    assert s["unique"] == 1 and bank.shape == (1, 16, 16, 4)
    assert maps["a"].dtype == np.uint32
    assert maps["a"].tolist() == [[0, int(B.FLIP_H), int(B.FLIP_V)]]


def test_maps_rebuild_the_input_image(tmp_path):
    a, b = _tile(1), _tile(2)
    img = np.block([[a, b[::-1]], [a[:, ::-1], b]])
    _save_p(tmp_path / "x.png", img)
    _run([tmp_path], tmp_path / "o")
    bank = np.load(tmp_path / "o" / "bank.npy")
    m = np.load(tmp_path / "o" / "maps.npz")["x"]
    want = np.asarray(Image.open(tmp_path / "x.png").convert("RGBA"))
    assert np.array_equal(B.apply_cells(bank, m), want)


def test_nes_mode_uses_no_flips(tmp_path):
    a = _tile(1)
    _save_p(tmp_path / "a.png", np.concatenate([a, a[:, ::-1]], axis=1))
    s = _run([tmp_path / "a.png"], tmp_path / "o", nes=True)
    meta = json.loads((tmp_path / "o" / "slice.json").read_text())
    assert s["unique"] == 2 and meta["flips"] is False
    assert np.load(tmp_path / "o" / "maps.npz")["a"].tolist() == [[0, 1]]


def test_tile_size_8(tmp_path):
    a = _tile(3, t=8)
    _save_p(tmp_path / "a.png", np.concatenate([a, a], axis=0))
    s = _run([tmp_path / "a.png"], tmp_path / "o", tile_size=8)
    assert s["unique"] == 1 and np.load(tmp_path / "o" / "bank.npy").shape == (1, 8, 8, 4)


def test_crop_mode_drops_the_remainder_with_a_warning(tmp_path, caplog):
    _save_p(tmp_path / "a.png", np.zeros((20, 36), np.uint8))
    with caplog.at_level(logging.WARNING):
        s = _run([tmp_path / "a.png"], tmp_path / "o")
    assert np.load(tmp_path / "o" / "maps.npz")["a"].shape == (1, 2)
    assert s["warnings"] == 1 and "not a multiple" in caplog.text


def test_pad_mode_pads_with_transparent_pixels(tmp_path):
    _save_p(tmp_path / "a.png", np.ones((20, 16), np.uint8))
    _run([tmp_path / "a.png"], tmp_path / "o", pad_mode="pad")
    bank = np.load(tmp_path / "o" / "bank.npy")
    m = np.load(tmp_path / "o" / "maps.npz")["a"]
    assert m.shape == (2, 1)
    bottom = bank[m[1, 0] & B.ID_MASK]
    assert (bottom[4:, :, 3] == 0).all() and (bottom[:4, :, 3] == 255).all()


def test_transparent_index_becomes_alpha_zero(tmp_path):
    idx = np.zeros((16, 16), np.uint8)
    idx[:, 8:] = 2
    _save_p(tmp_path / "a.png", idx, transparent=0)
    _run([tmp_path / "a.png"], tmp_path / "o")
    tile = np.load(tmp_path / "o" / "bank.npy")[0]
    assert (tile[:, :8] == 0).all() and (tile[:, 8:, 3] == 255).all()


def test_slice_json_records_palette_counts_origins_and_swaps(tmp_path):
    a = _tile(4)
    swapped = np.array([3, 2, 1, 0], np.uint8)[a]                   # same pattern, other colours
    _save_p(tmp_path / "a.png", np.concatenate([a, a, swapped], axis=1))
    _run([tmp_path / "a.png"], tmp_path / "o")
    meta = json.loads((tmp_path / "o" / "slice.json").read_text())
    assert meta["tile_size"] == 16 and meta["images"] == ["a"]
    assert meta["palette"][:4] == PAL.tolist()
    assert meta["counts"] == [2, 1]
    assert meta["origins"] == [["a", 0, 0], ["a", 32, 0]]
    assert meta["palette_swaps"] == [[0, 1]]


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


def test_bad_pad_mode_is_a_param_error(tmp_path):
    with pytest.raises(ParamError, match="pad_mode"):
        _run([tmp_path], tmp_path / "o", pad_mode="wrap")


def test_missing_path_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        _run([tmp_path / "nope.png"], tmp_path / "o")


def test_rgb_images_work_and_have_no_palette(tmp_path):
    rgb = np.zeros((16, 32, 3), np.uint8)
    rgb[:, 16:] = (10, 20, 30)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    s = _run([tmp_path / "rgb.png"], tmp_path / "o")
    meta = json.loads((tmp_path / "o" / "slice.json").read_text())
    assert s["unique"] == 2 and meta["palette"] is None


def test_same_stem_in_two_folders_gets_distinct_map_keys(tmp_path):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        _save_p(tmp_path / d / "x.png", _tile(1 if d == "a" else 2))
    _run([tmp_path / "a", tmp_path / "b"], tmp_path / "o")
    assert sorted(np.load(tmp_path / "o" / "maps.npz").files) == ["x", "x-2"]
