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
from tilesets import dictionary as D
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
    """slice_images on (stem, index array) pairs; exact slicing (no tile budget) unless
    ``max_tiles`` is given."""
    kw.setdefault("max_tiles", -1)
    return sl.slice_images([(Path(f"{n}.png"), _rgba(i), palette) for n, i in named],
                           sl.Params(**kw))


def _save_p(path, idx, transparent=None):
    im = Image.frombytes("P", (idx.shape[1], idx.shape[0]), idx.tobytes())
    im.putpalette(PAL.tobytes())
    kw = {"transparency": transparent} if transparent is not None else {}
    im.save(path, **kw)


def _run(inputs, out, **kw):
    out.mkdir(parents=True, exist_ok=True)
    kw.setdefault("max_tiles", -1)
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
    assert len(r.warnings) == 1 and "not a multiple" in caplog.text
    assert "cropped to 32x16" in r.warnings[0]


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
                             (Path("b.png"), _rgba(_tile(2)), None)], sl.Params(max_tiles=-1))
    assert mixed.tileset.palette is None


def test_image_smaller_than_a_tile_is_listed_not_mapped():
    r = _slice(("good", _tile(1)), ("tiny", _tile(2, t=8)))
    assert list(r.tileset.maps) == ["good"]
    assert [(u.path, u.reason) for u in r.unusable] == [(Path("tiny.png"),
                                                         "smaller than one 16x16 tile")]


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


def test_only_corrupt_images_is_an_input_error(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="could be used"):
        _run([tmp_path / "bad.png"], tmp_path / "o")


def test_missing_path_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        _run([tmp_path / "nope.png"], tmp_path / "o")


# --------------------------------------------------------------------------- tile budget
def _blocky(n, seed=0, t=16):
    """``n`` distinct structured tiles: 4x4 blocks of PAL indices, asymmetric."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        b = rng.integers(0, 4, (4, 4))
        b[0, 0], b[0, 3] = 0, 1                     # no tile equals a flip of another
        if not any((b == o).all() for o in out):
            out.append(b)
    return np.stack([np.kron(b, np.ones((t // 4, t // 4), int)) for b in out])


def _screens(base, n=24, rows=4, cols=4, speckle=0.0, seed=1):
    """(path, rgba, None) screens of ``rows`` x ``cols`` cells drawn from ``base`` (index
    tiles), with a share ``speckle`` of pixels set to a random PAL colour; and the layouts."""
    rng = np.random.default_rng(seed)
    t = base.shape[1]
    out, layouts = [], []
    for i in range(n):
        ids = rng.integers(0, len(base), (rows, cols))
        idx = base[ids].transpose(0, 2, 1, 3).reshape(rows * t, cols * t)
        noise = rng.random(idx.shape) < speckle
        idx = np.where(noise, rng.integers(0, 4, idx.shape), idx)
        out.append((Path(f"s{i:03d}.png"), _rgba(idx), None))
        layouts.append(ids)
    return out, layouts


def _budget(images, **kw):
    return sl.slice_images(images, sl.Params(**kw))


def test_budget_keeps_at_most_max_tiles():
    images, _ = _screens(_blocky(8), speckle=0.02)
    r = _budget(images, max_tiles=4)
    assert 1 <= len(r.tileset) <= 4
    assert max(int((m & ID_MASK).max()) for m in r.tileset.maps.values()) < len(r.tileset)


def test_clean_screens_come_back_exactly_from_the_budget():
    images, _ = _screens(_blocky(6))
    r = _budget(images)
    assert len(r.tileset) == 6
    for (path, rgba, _), m in zip(images, r.tileset.maps.values()):
        assert np.array_equal(B.apply_cells(r.tileset.bank, m), rgba), path


def test_speckled_screens_reuse_a_few_clean_tiles():
    base = _blocky(6)
    images, layouts = _screens(base, n=32, speckle=0.02)
    exact = _budget(images, max_tiles=-1).summary()["distinct_per_cell"]
    r = _budget(images, seam_weight="0")
    assert exact > 0.5 and r.summary()["distinct_per_cell"] < 0.02
    clean = _rgba(base.reshape(-1, 16))
    shown = [B.apply_cells(r.tileset.bank, m) for m in r.tileset.maps.values()]
    hits = [np.array_equal(im[16 * y:16 * y + 16, 16 * x:16 * x + 16],
                           clean[16 * ids[y, x]:16 * ids[y, x] + 16])
            for im, ids in zip(shown, layouts) for y in range(4) for x in range(4)]
    assert np.mean(hits) > 0.95


def test_bank_is_only_used_tiles_most_used_first_with_counts_from_the_maps():
    images, _ = _screens(_blocky(6), speckle=0.02)
    r = _budget(images)
    uses = r.tileset.uses()
    assert r.counts == uses.tolist() and sum(r.counts) == r.summary()["cells"]
    assert (uses > 0).all() and (np.diff(uses) <= 0).all()
    name, x, y = r.tileset.origins[0]
    cell = r.tileset.maps[name][y // 16, x // 16]
    assert int(cell) & ID_MASK == 0


def test_budget_records_the_dictionary_and_the_seams():
    images, _ = _screens(_blocky(6), speckle=0.02)
    r = _budget(images)
    d = r.dictionary
    assert d["k_requested"] is None and d["curve"] and d["k_learned"] >= len(r.tileset)
    assert d["distortion"] >= 0 and set(r.seams) == {"input", "rebuilt", "real", "seam_weight"}
    assert r.seams["real"] == -1.0                       # no training screens given


def test_auto_seam_weight_aims_at_the_training_screens_ratio():
    images, _ = _screens(_blocky(6), speckle=0.04)
    rough = sl.slice_images(images, sl.Params(), seam_target=100.0)    # real borders: strong
    smooth = sl.slice_images(images, sl.Params(), seam_target=0.01)    # real borders: none
    assert rough.seams["seam_weight"] == 0.0
    assert smooth.seams["seam_weight"] == max(D.SEAM_WEIGHTS)
    assert smooth.seams["rebuilt"] < rough.seams["rebuilt"]
    fixed = sl.slice_images(images, sl.Params(seam_weight="0.3"), seam_target=0.01)
    assert fixed.seams["seam_weight"] == 0.3                           # a number is kept


def test_run_reads_the_training_screens_of_a_crop_artifact(tmp_path):
    images, _ = _screens(_blocky(6), n=8, speckle=0.03)
    src = tmp_path / "q"
    src.mkdir()
    for path, rgba, _ in images:
        Image.fromarray(rgba).save(src / path.name)
    crop_art = tmp_path / "crop" / "screens"
    crop_art.mkdir(parents=True)
    real = [rgba for _, rgba, _ in _screens(_blocky(6), n=4, seed=7)[0]]
    for i, rgba in enumerate(real):
        Image.fromarray(rgba).save(crop_art / f"r{i}.png")
    Image.new("RGB", (4, 4)).save(crop_art / "tiny.png")            # no tile: left out
    (crop_art / "broken.png").write_bytes(b"not a png")             # unreadable: skipped
    out = tmp_path / "out"
    out.mkdir()
    summary = sl.run({"images": [src], "training_screens": [crop_art.parent]}, sl.Params(), out)
    info = json.loads((out / "slice.json").read_text())
    assert info["seams"]["real"] == pytest.approx(D.seam_ratio(real, 16)["ratio"])
    assert any("broken.png" in str(k) for k in summary["skipped"])


def test_same_seed_same_bank():
    images, _ = _screens(_blocky(8), speckle=0.03)
    a, b = _budget(images, seed=3), _budget(images, seed=3)
    assert np.array_equal(a.tileset.bank, b.tileset.bank)


def test_texture_weight_is_checked_and_reaches_the_rebuild():
    with pytest.raises(ParamError, match="texture_weight"):
        sl.Params(texture_weight=-1.0)
    checker = np.add.outer(np.arange(16), np.arange(16)) % 2
    dither = np.where(checker[..., None], [252, 252, 252, 255], [0, 0, 0, 255]).astype(np.uint8)
    grey = np.full((16, 16, 4), [119, 119, 119, 255], np.uint8)
    stripes = np.where((np.arange(16) % 2 == 0)[None, :, None], [0, 120, 248, 255],
                       [252, 252, 252, 255]).repeat(16, 0).astype(np.uint8)
    from tilesets.dictionary import Dictionary
    dic = Dictionary(tiles=np.stack([grey, stripes]), counts=np.ones(2, np.int64), flips=False)
    shots = [sl.Screen(name="a", rgba=np.concatenate([dither, dither], 1), palette=None)]
    for weight, want in ((0.0, 0), (sl.Params().texture_weight, 1)):
        (m,), _ = sl.rebuild_screens(shots, dic, sl.Params(texture_weight=weight, seam_weight="0"))
        assert (m & 0xFFFFFFF).tolist() == [[want, want]]


def test_fixed_seam_weight_is_a_number_or_auto():
    assert sl.Params(seam_weight="0.5").seam() == 0.5 and sl.Params().seam() == "auto"
    assert sl.Params(seam_weight="auto").seam() == "auto"
    for bad in ("-1", "heavy", "nan"):
        with pytest.raises(ParamError, match="seam_weight must be 'auto' or a number >= 0"):
            sl.Params(seam_weight=bad)


# --------------------------------------------------------------------------- NES mode
def test_nes_budget_never_flips_and_keeps_64_tiles_a_screen():
    base = _blocky(100, seed=5)
    ids = np.arange(100).reshape(10, 10)
    idx = base[ids].transpose(0, 2, 1, 3).reshape(160, 160)
    r = _budget([(Path("big.png"), _rgba(idx), None)], nes=True, max_tiles=100)
    m = r.tileset.maps["big"]
    assert r.tileset.flips is False and not (m & np.uint32(0xE0000000)).any()
    assert len(np.unique(m & ID_MASK)) <= 64 and r.nes_fit.max_tiles <= 64


def test_nes_budget_screens_are_nes_legal():
    from palettes.io import get_palette
    from palettes.nesfit import validate_nes

    images, _ = _screens(_blocky(12, seed=2), speckle=0.02)
    r = _budget(images, nes=True)
    fit = r.nes_fit
    assert fit.legal and fit.problems == [] and fit.max_patterns <= 256
    nes = get_palette("nes")
    number = {tuple(nes.colours[i].tolist()): int(i) for i in nes.usable()[::-1]}
    screens = [np.vectorize(lambda *c: number[c])(*B.apply_cells(r.tileset.bank, m)[..., :3]
                                                  .transpose(2, 0, 1))
               for m in r.tileset.maps.values()]
    v = validate_nes(screens, backdrop=fit.backdrop, subpalettes=np.array(fit.subpalettes))
    assert v["legal"], v["problems"]
    assert (r.tileset.bank[..., 3] == 255).all()


def test_nes_budget_needs_tiles_of_whole_attribute_areas():
    with pytest.raises(ParamError, match="multiple of 16"):
        sl.Params(nes=True, tile_size=8)
    assert sl.Params(nes=True, tile_size=8, max_tiles=-1).nes


# --------------------------------------------------------------------------- bad input
def test_max_tiles_above_the_distinct_tiles_warns_and_uses_them_all():
    images, _ = _screens(_blocky(5))
    r = _budget(images, max_tiles=50)
    assert len(r.tileset) == 5
    assert any("max_tiles=50 is more than the 5 distinct tiles; using 5" in w for w in r.warnings)


def test_negative_max_tiles_is_one_clear_error():
    with pytest.raises(ParamError, match=r"max_tiles must be at least -1, got -3") as e:
        sl.Params(max_tiles=-3)
    assert e.value.field == "max_tiles" and "\n" not in str(e.value)


def test_zero_max_tiles_means_automatic_and_the_help_says_so():
    import dataclasses

    help_text = {f.name: f.metadata["help"] for f in dataclasses.fields(sl.Params)}["max_tiles"]
    assert "0 = automatic" in help_text and "-1 = no budget" in help_text
    images, _ = _screens(_blocky(6), speckle=0.02)
    assert _budget(images, max_tiles=0).dictionary["k_requested"] is None


def test_sides_off_the_grid_are_cropped_or_padded_with_a_warning():
    images, _ = _screens(_blocky(4), n=4)
    odd = (Path("odd.png"), images[0][1][:40, :50], None)
    r = _budget(images + [odd])
    assert r.tileset.maps["odd"].shape == (2, 3)
    assert any(w == "odd.png: size 50x40 is not a multiple of 16; cropped to 48x32"
               for w in r.warnings)
    r = _budget(images + [odd], pad_mode="pad")
    assert r.tileset.maps["odd"].shape == (3, 4)
    assert any("padded with transparent pixels to 64x48" in w for w in r.warnings)


def test_fully_transparent_image_is_set_aside():
    images, _ = _screens(_blocky(4), n=4)
    clear = (Path("clear.png"), np.zeros((32, 32, 4), np.uint8), None)
    r = _budget(images + [clear])
    assert "clear" not in r.tileset.maps and len(r.tileset.maps) == 4
    assert [(u.path.name, u.reason) for u in r.unusable] == [
        ("clear.png", "fully transparent: no tile to keep")]


def test_only_transparent_images_is_one_input_error(tmp_path):
    rgba = np.zeros((32, 32, 4), np.uint8)
    Image.fromarray(rgba).save(tmp_path / "clear.png")
    with pytest.raises(InputError, match="none of the 1 input image.*fully transparent"):
        _run([tmp_path / "clear.png"], tmp_path / "o", max_tiles=0)


def test_single_colour_corpus_gives_one_tile_and_a_warning():
    images = [(Path(f"f{i}.png"), _rgba(np.full((32, 48), 2, np.uint8)), None) for i in range(3)]
    r = _budget(images)
    assert len(r.tileset) == 1 and all(m.tolist() == [[0] * 3] * 2 for m in r.tileset.maps.values())
    assert any("single colour" in w and "one tile" in w for w in r.warnings)


def test_a_failed_slice_keeps_what_is_cached(tmp_path):
    from pipeline import cache as C
    from pipeline.runner import execute

    good, bad = tmp_path / "good", tmp_path / "bad"
    good.mkdir()
    bad.mkdir()
    _save_p(good / "a.png", np.concatenate([_tile(1), _tile(2)], axis=1))
    Image.fromarray(np.zeros((16, 16, 4), np.uint8)).save(bad / "clear.png")
    store = C.Store(tmp_path / "cache")
    with store:
        first = execute(store, sl, sl.Params(), {"images": [str(good)]}, {"images": "g"})
        with pytest.raises(InputError):
            execute(store, sl, sl.Params(), {"images": [str(bad)]}, {"images": "b"})
    assert store.latest("slice") == first.artifact and TileSet.load(first.artifact).maps


# --------------------------------------------------------------------------- artifact (budget)
def test_budget_artifact_is_a_tileset_plus_slice_json(tmp_path):
    images, _ = _screens(_blocky(6), n=6, speckle=0.02)
    for path, rgba, _ in images:
        Image.fromarray(rgba[..., :3]).save(tmp_path / path.name)
    s = _run([tmp_path], tmp_path / "o", max_tiles=0)
    ts = TileSet.load(tmp_path / "o")
    meta = json.loads((tmp_path / "o" / "slice.json").read_text())
    assert s["unique"] == len(ts) and s["images"] == 6 and s["cells"] == 96
    assert meta["counts"] == ts.uses().tolist() and meta["max_tiles"] == 0
    assert meta["dictionary"]["curve"] and meta["seams"]["input"] > 0
    assert meta["nes_fit"] is None and isinstance(meta["warnings"], list)
    assert s["distinct_per_cell"] == round(len(ts) / 96, 4) and "k_learned" in s
