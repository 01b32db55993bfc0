"""crop: upscale detection, letterbox trim, patch grid, tiles and origins, bad input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import _helpers_crop as H
from stages import _grid, crop, scrape
from stages._common import InputError, ParamError


def native(h: int, w: int, seed: int = 0, colours: int = 6) -> np.ndarray:
    """A random pixel-art-like screen: (h, w, 3) uint8 from a small palette."""
    rng = np.random.default_rng(seed)
    pal = rng.integers(0, 256, (colours, 3), dtype=np.uint8)
    return pal[rng.integers(0, colours, (h, w))]


def up(a: np.ndarray, k: int) -> np.ndarray:
    return np.repeat(np.repeat(a, k, 0), k, 1)


def save(path: Path, a: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)
    return path


def run(paths, out: Path, **kw):
    out.mkdir(parents=True, exist_ok=True)
    return crop.run({"images": [str(p) for p in paths]}, crop.Params(**kw), out)


def rgba(a: np.ndarray) -> np.ndarray:
    """(H, W, 3) or (H, W, 4) uint8 -> RGBA, as crop decodes every file."""
    if a.shape[2] == 4:
        return a
    return np.concatenate([a, np.full(a.shape[:2] + (1,), 255, np.uint8)], axis=2)


def core(arrays, **kw) -> "crop.CropResult":
    """crop's in-memory core on screens s0.png, s1.png, ..."""
    return crop.crop_screens([(f"s{i}.png", rgba(a)) for i, a in enumerate(arrays)],
                             crop.Params(**kw))


# --------------------------------------------------------------------------- scale detection
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_detect_scale_finds_the_factor(k):
    a = native(12, 10, seed=k)
    assert _grid.detect_scale(up(a, k)) == (k, 0, 0)


@pytest.mark.parametrize("k,cut", [(2, 1), (3, 1), (3, 2), (4, 3)])
def test_detect_scale_with_a_cut_border_and_exact_undo(k, cut):
    a = native(12, 10, seed=10 + k)
    u = up(a, k)[cut:, cut:]                       # first block row/column is partial
    got = _grid.detect_scale(u)
    assert got == (k, k - cut, k - cut)
    assert np.array_equal(_grid.downscale(u, *got), a[1:, 1:])


def test_detect_scale_native_image_is_one():
    assert _grid.detect_scale(native(40, 40, seed=3))[0] == 1


def test_detect_scale_uniform_image_is_one():
    assert _grid.detect_scale(np.zeros((32, 32, 3), np.uint8)) == (1, 0, 0)


def test_detect_scale_respects_max_scale():
    a = up(native(8, 8, seed=4), 6)
    assert _grid.detect_scale(a, max_scale=4)[0] == 3   # 6x blocks are also 3x blocks
    assert _grid.detect_scale(a, max_scale=8)[0] == 6


def test_detect_scale_lossy_needs_tolerance():
    a = up(native(16, 16, seed=5), 3)
    noise = np.random.default_rng(0).integers(-3, 4, a.shape)
    noisy = np.clip(a.astype(int) + noise, 0, 255).astype(np.uint8)
    assert _grid.detect_scale(noisy)[0] == 1
    k, ox, oy = _grid.detect_scale(noisy, tolerance=8)
    assert k == 3
    back = _grid.downscale(noisy, k, ox, oy, mean=True)
    assert np.abs(back.astype(int) - native(16, 16, seed=5)).max() <= 3


def test_downscale_takes_one_pixel_per_block():
    a = native(5, 7, seed=6)
    assert np.array_equal(_grid.downscale(up(a, 4), 4), a)


# --------------------------------------------------------------------------- letterbox
def test_trim_removes_letterbox_on_opposite_sides():
    a = native(48, 64, seed=7)
    boxed = np.zeros((48 + 16, 64 + 6, 3), np.uint8)
    boxed[8:56, 3:67] = a
    out, t = _grid.trim_borders(boxed)
    assert t == (8, 3, 8, 3) and out.shape == (48, 64, 3)


def test_trim_keeps_a_one_sided_uniform_sky():
    a = native(48, 64, seed=8)
    a[:10] = (90, 150, 250)                        # sky at the top only
    out, t = _grid.trim_borders(a)
    assert t == (0, 0, 0, 0) and out.shape == a.shape


# --------------------------------------------------------------------------- patches and tiles
def test_patches_are_16_aligned_and_counted():
    a = native(64, 96, seed=9)
    p = core([a], patch_size=32, stride=16).patches.images
    assert p.shape == (3 * 5, 32, 32, 3) and p.dtype == np.uint8
    assert np.array_equal(p[0], a[0:32, 0:32])
    assert np.array_equal(p[6], a[16:48, 16:48])     # row 1, column 1 (5 per row)
    assert np.array_equal(p[-1], a[32:64, 64:96])


def test_patch_count_with_stride_32():
    assert len(core([native(128, 128, seed=10)], patch_size=64, stride=32).patches.images) == 9


def test_tiles_and_origins_cover_every_grid_tile():
    a = native(40, 72, seed=11)                      # 2 x 4 whole tiles (edges dropped)
    b = native(32, 32, seed=12)
    tr = core([a, b], patch_size=32).tiles
    tiles, org = tr.tiles, tr.origin
    assert tiles.shape == (8 + 4, 16, 16, 3) and org.dtype == np.int32 and org.shape == (12, 3)
    screens = [a, b]
    for t, (i, x, y) in zip(tiles, org):
        assert np.array_equal(t, screens[i][y:y + 16, x:x + 16])
    assert org[1].tolist() == [0, 16, 0] and org[4].tolist() == [0, 0, 16]


def test_upscaled_screen_is_stored_at_native_size(tmp_path):
    a = native(48, 64, seed=13)
    r = core([up(a, 3)], patch_size=32)
    rec = r.records[0]
    assert (rec.scale, rec.width, rec.height) == (3, 64, 48) and r.selector.counts()["scales"] == {"3": 1}
    assert np.array_equal(r.screens[0], a)


def test_given_scale_overrides_detection():
    assert core([up(native(32, 32, seed=14), 4)], patch_size=32, scale=2).records[0].width == 64


def test_flip_adds_mirrored_patches():
    a = native(32, 32, seed=15)
    p = core([a], patch_size=32, flip=True).patches.images
    assert p.shape[0] == 2 and np.array_equal(p[1], a[:, ::-1])


def test_rgba_keeps_alpha_in_patches_but_tiles_stay_rgb():
    a = rgba(native(32, 32, seed=16))
    a[:4, :4, 3] = 0
    r = core([a], patch_size=32, rgba=True)
    assert r.patches.images.shape == (1, 32, 32, 4) and r.patches.images[0, 0, 0, 3] == 0
    assert r.tiles.tiles.shape[-1] == 3


def test_max_patches_takes_a_seeded_subset():
    a = native(128, 128, seed=17)
    r1 = core([a], patch_size=32, max_patches=10, seed=1)
    r2 = core([a], patch_size=32, max_patches=10, seed=1)
    assert len(r1.patches.images) == 10 and r1.plan.total == 49
    assert np.array_equal(r1.patches.images, r2.patches.images)
    assert not np.array_equal(r1.patches.images, core([a], patch_size=32, max_patches=10,
                                                        seed=2).patches.images)


def test_parallel_decoding_gives_the_same_result(tmp_path):
    files = [save(tmp_path / "in" / f"{i:02d}.png", up(native(32, 48, seed=i), 1 + i % 3)) for i in range(6)]
    run(files, tmp_path / "o1", patch_size=32, workers=1)
    run(files, tmp_path / "o2", patch_size=32, workers=2)
    for name in ("patches.npy", "tiles.npy", "tiles_origin.npy", "screens.json"):
        assert (tmp_path / "o1" / name).read_bytes() == (tmp_path / "o2" / name).read_bytes()


def test_same_stem_in_two_folders_gets_distinct_ids(tmp_path):
    fa = save(tmp_path / "a" / "s.png", native(32, 32, seed=18))
    fb = save(tmp_path / "b" / "s.png", native(32, 32, seed=19))
    out = tmp_path / "out"
    run([fa, fb], out, patch_size=32)
    ids = [m["id"] for m in json.loads((out / "screens.json").read_text())]
    assert ids == ["s", "s-2"] and len(list((out / "screens").iterdir())) == 2


def test_scrape_artifact_input_keeps_the_original_source(tmp_path):
    src = tmp_path / "shots"
    save(src / "level1.png", up(native(32, 32, seed=20), 2))
    art = tmp_path / "scraped"
    art.mkdir()
    scrape.run({"source": [src]}, scrape.Params(), art)
    out = tmp_path / "out"
    crop.run({"images": [art]}, crop.Params(patch_size=32), out)
    meta = json.loads((out / "screens.json").read_text())[0]
    assert meta["source"] == str(src / "level1.png") and meta["scale"] == 2


# --------------------------------------------------------------------------- bad input
def test_corrupt_image_is_skipped_and_counted(tmp_path):
    good = save(tmp_path / "good.png", native(32, 32, seed=21))
    bad = tmp_path / "bad.png"
    bad.write_bytes(good.read_bytes()[:40])
    s = run([good, bad], tmp_path / "out", patch_size=32)
    assert s["screens"] == 1 and s["skipped"] == 1 and "bad.png" in s["skipped_items"][0]["reason"]


def test_image_smaller_than_patch_is_skipped():
    r = core([native(64, 64, seed=22), native(32, 48, seed=23)])
    assert len(r.records) == 1 and len(r.selector.too_small) == 1


def test_all_images_too_small_is_input_error_with_advice():
    msg = r"all 3 images are smaller than the 64x64 patch; use --patch-size 32"
    with pytest.raises(InputError, match=msg):
        core([native(40, 48, seed=i) for i in range(3)])


def test_only_corrupt_images_is_input_error(tmp_path):
    bad = tmp_path / "x.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(InputError, match="the image is not usable: .*x.png: not a readable image"):
        run([bad], tmp_path / "out")


def test_no_input_is_input_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no input images"):
        run([tmp_path / "empty"], tmp_path / "out")


def test_missing_file_is_input_error(tmp_path):
    with pytest.raises(InputError, match="nope.png: no such file"):
        run([tmp_path / "nope.png"], tmp_path / "out")


@pytest.mark.parametrize("kw,field", [({"stride": 8}, "stride"), ({"patch_size": 40}, "patch_size"),
                                      ({"tolerance": 300}, "tolerance"),
                                      ({"max_patches": 0}, "max_patches"), ({"workers": -1}, "workers")])
def test_bad_params_are_param_errors(kw, field):
    with pytest.raises(ParamError, match=f"crop: {field} must be") as e:
        crop.Params(**kw)
    assert e.value.field == field


# --------------------------------------------------------------------------- tile grid
def tiled(rows: int, cols: int, seed: int = 0, n_tiles: int = 5) -> np.ndarray:
    """A screen made of 16x16 tiles drawn from a small random tile set."""
    rng = np.random.default_rng(seed)
    bank = np.stack([native(16, 16, seed=100 + seed * 10 + t) for t in range(n_tiles)])
    ids = rng.integers(0, n_tiles, (rows, cols))
    return bank[ids].transpose(0, 2, 1, 3, 4).reshape(rows * 16, cols * 16, 3)


def test_detect_grid_finds_a_shifted_tile_grid():
    a = tiled(8, 10, seed=1)[3:, 5:]                 # cut 3 rows and 5 columns off
    assert _grid.detect_grid(a) == (11, 13)


def test_detect_grid_on_a_big_map_where_every_phase_repeats():
    a = tiled(60, 60, seed=5)[5:, 9:]                # 5 tiles: shifted cells repeat too
    assert _grid.detect_grid(a) == (7, 11)


def test_detect_grid_keeps_the_corner_for_unaligned_screens():
    assert _grid.detect_grid(tiled(8, 10, seed=2)) == (0, 0)
    assert _grid.detect_grid(native(80, 96, seed=3)) == (0, 0)   # no repeated tiles at all


def test_tiles_follow_the_detected_grid():
    a = tiled(6, 6, seed=3)[0:, 7:]                  # grid at x = 9
    r = core([a], patch_size=32)
    org = r.tiles.origin
    assert set(org[:, 1] % 16) == {9} and set(org[:, 2] % 16) == {0}
    assert r.records[0].grid == [9, 0]
    assert set(core([a], patch_size=32, align=False).tiles.origin[:, 1] % 16) == {0}


def test_identical_screens_are_kept_once():
    a = native(32, 32, seed=30)
    r = core([a, up(a, 2)], patch_size=32)
    assert len(r.records) == 1 and len(r.selector.duplicates) == 1


def test_single_colour_screen_is_skipped():
    r = core([native(32, 32, seed=31), np.zeros((64, 64, 3), np.uint8)], patch_size=32)
    assert len(r.records) == 1 and "single colour" in r.selector.skipped.first_reason()


def test_screen_with_many_colours_is_flagged_but_kept():
    yy, xx = np.mgrid[0:64, 0:64]
    smooth = np.stack([yy * 4, xx * 4, (yy + xx) * 2], axis=-1).astype(np.uint8)  # 4096 colours
    r = core([smooth], patch_size=32)
    assert len(r.records) == 1 and len(r.selector.many_colours) == 1
    assert r.records[0].colours == 4096


# --------------------------------------------------------------------------- the example corpus
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_example_corpus_is_small_and_attributed():
    files = sorted((EXAMPLES / "screens").glob("*.png"))
    assert 40 <= len(files) <= 150
    assert sum(f.stat().st_size for f in EXAMPLES.rglob("*") if f.is_file()) < 10e6
    attribution = (EXAMPLES / "ATTRIBUTION.md").read_text(encoding="utf-8")
    for prefix in {f.name.split("_")[0] + "_" + f.name.split("_")[1] for f in files}:
        assert f"`{prefix}_" in attribution, prefix
    assert "Permission is hereby granted" in attribution and "You can re-distribute" in attribution


def test_example_corpus_upscales_are_detected():
    from stages._common import load_image

    for f in sorted((EXAMPLES / "screens").glob("*.png")):
        want = 3 if "_x3" in f.stem else 2 if "_x2" in f.stem else 1
        assert _grid.detect_scale(load_image(f))[0] == want, f.name


def jpeg(a: np.ndarray, q: int = 90) -> np.ndarray:
    import io

    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=q)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def test_detect_scale_on_jpeg_with_tolerance():
    a = up(tiled(6, 6, seed=40), 3)
    j = jpeg(a)
    assert _grid.detect_scale(j)[0] == 1             # exact mode: JPEG noise breaks the blocks
    assert _grid.detect_scale(j, tolerance=8)[0] == 3


def test_lossy_mode_does_not_invent_a_factor_for_native_jpeg():
    assert _grid.detect_scale(jpeg(tiled(8, 8, seed=41), q=50), tolerance=8)[0] == 1


def test_jpeg_files_use_lossy_detection_automatically(tmp_path):
    a = up(tiled(4, 4, seed=42), 2)
    f = tmp_path / "shot.jpg"
    Image.fromarray(a).save(f, "JPEG", quality=92)
    out = tmp_path / "out"
    run([f], out, patch_size=32)
    meta = json.loads((out / "screens.json").read_text())[0]
    assert (meta["scale"], meta["width"]) == (2, 64)


# --------------------------------------------------------------------------- non-integer stretch
def test_8_to_7_aspect_stretch_is_undone_exactly():
    a = native(48, 112, seed=50)
    wide = np.asarray(Image.fromarray(a).resize((128, 96), Image.NEAREST))   # x 8:7, y x2
    r = core([wide], patch_size=32)
    assert r.records[0].scale_xy == [round(128 / 112, 4), 2.0] and r.selector.counts()["stretched"] == 1
    assert np.array_equal(r.screens[0], a)


def test_stretch_off_keeps_the_stretched_width():
    wide = np.asarray(Image.fromarray(native(48, 112, seed=51)).resize((128, 48), Image.NEAREST))
    assert core([wide], patch_size=32, stretch=False).records[0].width == 128


def test_fit_stretch_finds_nothing_in_native_images():
    for seed in range(5):
        a = native(64, 96, seed=60 + seed)
        assert _grid.fit_stretch(_grid.change_positions(a, 1), 96) is None
        assert _grid.fit_stretch(_grid.change_positions(a, 0), 64) is None


def steps_of(n: int, m: int) -> set[int]:
    """Lines j where a centre-convention nearest resample n -> m steps to a new source line."""
    src = np.floor((np.arange(m) + 0.5) * n / m).astype(int)
    return set(np.flatnonzero(np.diff(src)) + 1)


def test_fit_stretch_finds_the_native_size():
    assert _grid.fit_stretch(np.array(sorted(steps_of(112, 128))), 128).n == 112


def test_fit_stretch_refuses_an_ambiguous_fit():
    both = np.array(sorted(steps_of(100, 125) & steps_of(110, 125)))   # fits 100 and 110
    assert len(both) > 60 and _grid.fit_stretch(both, 125) is None


# --------------------------------------------------------------------------- native pixels (#17)
# Synthetic NES-like frames and sprites (tests/_helpers_crop.py), native and saved the ways
# users' screenshots come.  bench/bench_crop.py measures the same on 140 frames and 40 sprites.
FRAMES = [H.nes_frame(i) for i in range(14)]          # two of each kind


def prepare(a: np.ndarray, *, lossy: bool = False, **kw) -> "crop.NativeScreen":
    return crop.prepare_screen(rgba(a), crop.Params(**kw), lossy=lossy)


def test_native_nes_frames_are_left_alone():
    for a in FRAMES:
        r = prepare(a)
        assert np.array_equal(r.pixels, a) and r.steps == [] and r.warnings == []


def test_native_sprites_on_transparent_backgrounds_are_left_alone():
    for seed in range(20):
        s = H.sprite(seed)
        r = prepare(s, rgba=True)
        assert np.array_equal(r.pixels, s) and r.steps == [], seed


@pytest.mark.parametrize("variant", [
    lambda a: H.as_nearest(a, 2),
    lambda a: H.as_nearest(a, 3),
    lambda a: H.as_aspect_8_7(a, 2, 585),
    lambda a: H.as_aspect_8_7(a, 2, 584),
    lambda a: H.as_aspect_8_7(a, 1, 292),
    lambda a: H.as_resized(a, 320, 240),                    # 4:3
    lambda a: H.as_letterboxed(a, 0, 32),                   # in a 320x240 window
    lambda a: H.as_letterboxed(H.as_nearest(a, 2), 0, 64),  # 2x in 640x480
], ids=["2x", "3x", "8:7 585", "8:7 584", "8:7 292", "4:3", "pillarbox", "2x pillarbox"])
def test_lossless_variants_come_back_pixel_exact(variant):
    for a in FRAMES[::2]:
        r = prepare(variant(a))
        assert np.array_equal(r.pixels, a) and r.confidence == 1.0 and r.warnings == []


def test_letterboxed_224_line_screen_in_a_4_3_window_comes_back():
    a = FRAMES[0][8:232]                                    # 256x224, overscan cropped
    r = prepare(H.as_letterboxed(H.as_nearest(a, 2), 16, 64))
    assert np.array_equal(r.pixels, a) and r.trim == (8, 32, 8, 32)


def test_bilinear_2x_is_estimated_with_a_warning_and_a_confidence():
    for a in FRAMES[:3]:
        r = prepare(H.as_bilinear(a, 2))
        assert r.pixels.shape == a.shape and (r.pixels != a).any(axis=-1).mean() < 1e-3
        assert r.scale == 2 and 0.99 <= r.confidence <= 1.0
        assert "grid estimated" in r.warnings[0] and "confidence" in r.warnings[0]


def test_jpeg_2x_comes_back_to_native_size_with_a_warning():
    a = FRAMES[1]
    r = prepare(H.as_jpeg(a, 2, quality=90), lossy=True)
    assert r.pixels.shape == a.shape and r.scale == 2
    assert 0.5 < r.confidence < 1.0 and "JPEG" in r.warnings[0]


def test_a_smooth_gradient_is_not_taken_for_a_smoothed_upscale():
    yy, xx = np.mgrid[0:64, 0:64]
    ramp = np.stack([yy * 4, xx * 4, (yy + xx) * 2], axis=-1).astype(np.uint8)
    assert _grid.detect_smooth_scale(ramp) is not None          # a ramp is a linear upscale...
    assert prepare(ramp, patch_size=32).pixels.shape == ramp.shape  # ...but not of pixel art


def test_line_evidence_weighs_repeats_amid_changes_not_in_runs():
    m = 64
    busy = np.ones(m, bool)
    busy[0] = False
    forced = np.zeros(m, bool)
    forced[8:56:8] = True
    changed = busy & ~forced                      # every line changes except the forced ones
    sky = np.zeros(m, bool)                       # nothing changes: repeats everywhere
    assert _grid.line_evidence(changed, forced) > 10 * _grid.line_evidence(sky, forced)


def test_tile_art_with_long_runs_is_not_a_stretch():
    a = FRAMES[5]                                 # big sky: long runs of identical rows
    for axis in (0, 1):
        assert _grid.fit_stretch(_grid.change_positions(a, axis), a.shape[axis]) is None


def test_a_console_sized_screen_is_not_trimmed():
    a = np.zeros((240, 256, 3), np.uint8)
    a[:, 32:224] = native(240, 192, seed=80)      # black columns on both sides: picture
    assert _grid.find_letterbox(a) == (0, 0, 0, 0)
    assert _grid.find_letterbox(a[:, 3:253]) == (0, 29, 0, 29)   # any other size: a bar


def test_a_thin_uniform_band_on_both_sides_is_picture():
    a = native(64, 80, seed=81, colours=3)
    a[:, :3] = a[:, -3:] = (90, 150, 250)         # sky at both edges, picture starts softly
    a[40:, 3] = a[40:, -4] = (0, 0, 0)
    a[:40, 3] = a[:40, -4] = (90, 150, 250)
    a[:40, 4] = a[:40, -5] = (90, 150, 250)
    assert _grid.find_letterbox(a) == (0, 0, 0, 0)


def test_a_transparent_background_is_not_a_letterbox():
    s = H.sprite(3)
    assert _grid.find_letterbox(s) == (0, 0, 0, 0)
    opaque = s.copy()
    opaque[..., 3] = 255
    opaque[opaque[..., :3].sum(-1) == 0] = (0, 0, 0, 255)
    assert any(_grid.find_letterbox(H.as_letterboxed(opaque, 12, 12)))


def test_a_letterbox_is_left_in_place_with_a_warning_when_trimming_goes_below_the_patch():
    a = H.as_letterboxed(native(48, 80, seed=82), 20, 0)       # 88 lines: 48 after trimming
    r = prepare(a, patch_size=64)
    assert r.pixels.shape[:2] == (88, 80) and r.trim == (0, 0, 0, 0)
    assert "letterbox (top 20" in r.warnings[0] and "64x64 patch" in r.warnings[0]
    assert prepare(a, patch_size=32).trim == (20, 0, 20, 0)


def test_a_screen_too_small_after_undoing_says_which_step():
    r = core([up(native(48, 48, seed=83), 2), native(64, 64, seed=84)], patch_size=64)
    reason = r.selector.too_small.first_reason()
    assert "48x48 native pixels after undoing 2x upscale" in reason


def test_several_unusable_images_are_summed_up_in_one_line(tmp_path):
    for name in ("a.png", "b.png"):
        (tmp_path / name).write_bytes(b"junk")
    with pytest.raises(InputError, match=r"none of the 2 images is usable \(.*a.png.*; and 1 more\)"):
        run([tmp_path / "a.png", tmp_path / "b.png"], tmp_path / "out")


# --------------------------------------------------------------------------- the artifact
def test_npy_writer_bytes_equal_np_save(tmp_path):
    import io

    a = native(48, 16, seed=70).reshape(3, 16, 16, 3)
    w = crop.NpyWriter(tmp_path / "x.npy", a.shape)
    w.write(a[:1])
    w.write(a[1:])
    got = w.close()
    buf = io.BytesIO()
    np.save(buf, a)
    assert Path(got.filename).read_bytes() == buf.getvalue() and np.array_equal(got, a)


def test_npy_writer_refuses_a_short_file(tmp_path):
    w = crop.NpyWriter(tmp_path / "x.npy", (2, 16, 16, 3))
    w.write(np.zeros((1, 16, 16, 3), np.uint8))
    with pytest.raises(RuntimeError, match="1 rows written, 2 expected"):
        w.close()


def test_run_writes_the_core_result_as_artifacts(tmp_path):
    from tilesets.artifacts import Patches, TrainingTiles

    arrays = [up(native(48, 64, seed=71), 2), tiled(4, 5, seed=72)[3:, 5:], native(64, 80, seed=73)]
    files = [save(tmp_path / "in" / f"s{i}.png", a) for i, a in enumerate(arrays)]
    out = tmp_path / "out"
    s = run(files, out, patch_size=32, max_patches=20, flip=True)
    want = crop.crop_screens([(str(f), rgba(a)) for f, a in zip(files, arrays)],
                             crop.Params(patch_size=32, max_patches=20, flip=True))
    tiles = TrainingTiles.load(out)
    assert np.array_equal(Patches.load(out).images, want.patches.images)
    assert np.array_equal(tiles.tiles, want.tiles.tiles)
    assert np.array_equal(tiles.origin, want.tiles.origin)
    assert tiles.screens == [r.to_json() for r in want.records]
    assert sorted(p.name for p in out.iterdir()) == ["contact.png", "crop.json",
                                                     "patch_game_names.npy", "patch_games.npy",
                                                     "patch_rows.npy", "patches.npy",
                                                     "screens", "screens.json", "tiles.npy",
                                                     "tiles_origin.npy"]
    assert (s["screens"], s["patches"], s["tiles"]) == (3, 20, len(want.tiles.tiles))


# --------------------------------------------------------------------------- screens fit for training
def game(frames, name="smb", start=0):
    """(source, RGBA) pairs of one game's frames, as files in a folder named after it."""
    return [(f"{name}/frame_{start + i:03d}.png", rgba(a)) for i, a in enumerate(frames)]


def test_a_hud_repeated_by_a_game_is_cut_from_all_its_screens():
    frames = H.game_frames(12, seed=1, hud="fixed")
    r = crop.crop_screens(game(frames), crop.Params())
    assert all(rec.hud == [31, 0] and rec.height == 240 - 31 for rec in r.records)
    assert all(np.array_equal(s, a[31:]) for s, a in zip(r.screens, frames))
    assert r.records[0].offset == [0, 31]
    assert r.selector.huds[0]["top"] == 31 and r.selector.huds[0]["screens"] == 12


def test_a_bottom_status_bar_is_cut():
    r = crop.crop_screens(game(H.game_frames(12, seed=2, hud="bottom")), crop.Params())
    assert {tuple(rec.hud) for rec in r.records} == {(0, 24)}


def test_no_hud_is_cut_when_the_top_rows_change_from_screen_to_screen():
    r = crop.crop_screens(game(FRAMES), crop.Params(near_duplicates=0))
    assert all(rec.hud == [0, 0] for rec in r.records) and r.selector.huds == []


def test_hud_cut_can_be_turned_off():
    r = crop.crop_screens(game(H.game_frames(12, seed=1)), crop.Params(hud=False))
    assert all(rec.hud == [0, 0] and rec.height == 240 for rec in r.records)


def test_a_hud_is_left_in_place_when_cutting_it_goes_below_the_patch():
    frames = H.game_frames(12, seed=1)                            # 240 rows, HUD 31 of them
    r = crop.crop_screens(game(frames), crop.Params(patch_size=224, stride=16))
    assert all(rec.hud == [0, 0] and rec.height == 240 for rec in r.records)
    assert "less than the 224x224 patch" in r.selector.huds[0]["left"]


def test_consecutive_near_duplicate_frames_are_left_out():
    frames = H.game_frames(4, seed=3, repeat=3)                   # each frame + 2 near-copies
    r = crop.crop_screens(game(frames), crop.Params(hud=False))
    assert [rec.id for rec in r.records] == ["frame_000", "frame_003", "frame_006", "frame_009"]
    near = [d for d in r.selector.dropped if d.why == crop.Drop.NEAR_DUPLICATE]
    assert len(near) == 8 and "differ from the previous screen" in near[0].reason
    assert len(crop.crop_screens(game(frames), crop.Params(hud=False, near_duplicates=0))
               .records) == 12


def test_near_duplicates_are_only_looked_for_within_a_game():
    a, b = H.game_frames(1, seed=4, repeat=2)
    r = crop.crop_screens(game([a], "smb") + game([b], "zelda"), crop.Params(hud=False))
    assert len(r.records) == 2


def test_max_per_game_keeps_evenly_spread_screens_of_each_game():
    many = game([H.nes_frame(100 + i) for i in range(7)], "smb")
    few = game([H.nes_frame(200 + i) for i in range(2)], "zelda")
    r = crop.crop_screens(many + few, crop.Params(max_per_game=3, hud=False))
    assert [rec.id for rec in r.records] == ["frame_000", "frame_003", "frame_006",
                                             "frame_000-2", "frame_001-2"]
    assert [rec.index for rec in r.records] == [0, 1, 2, 3, 4]
    capped = [d for d in r.selector.dropped if d.why == crop.Drop.CAPPED]
    assert len(capped) == 4 and "smb has 7 screens, 3 kept" in capped[0].reason


def test_game_names_from_provenance_prefix_or_folder():
    files = [crop.InputFile(Path("x"), "shots/mixed/smb_01.png"),
             crop.InputFile(Path("x"), "shots/mixed/zelda-2.png"),
             crop.InputFile(Path("x"), "shots/contra/frame_0001.png"),
             crop.InputFile(Path("x"), "shots/contra/frame_0002.png"),
             crop.InputFile(Path("x"), "https://ex.org/g/shot_1.png", "Mega Man 2")]
    assert crop.game_names(files) == ["smb", "zelda", "contra", "contra", "Mega Man 2"]


def test_scrape_provenance_names_the_game(tmp_path):
    art = tmp_path / "scraped"
    (art / "images").mkdir(parents=True)
    rows = []
    for i, prov in enumerate([{"kind": "web", "game": "Contra"}, None, {"kind": "folder"}]):
        save(art / "images" / f"{i}.png", native(64, 64, seed=90 + i))
        row = {"source": f"https://ex.org/p{i}/{i}.png", "status": "ok", "path": f"images/{i}.png"}
        if prov is not None:
            row["provenance"] = prov
        rows.append(json.dumps(row))
    rows.append(json.dumps({"source": "y", "status": "skipped", "provenance": "odd"}))
    (art / "sources.jsonl").write_text("\n".join(rows) + "\n")
    files = crop._collect([art])
    assert [f.game for f in files] == ["Contra", "p1", "p2"]


def test_the_contact_sheet_shows_left_out_screens_first(tmp_path):
    frames = H.game_frames(2, seed=5, repeat=2)
    r = crop.crop_screens(game(frames), crop.Params(hud=False))
    sheet = r.sheet
    assert sheet.ndim == 3 and sheet.shape[2] == 3 and sheet.shape[1] == 8 * (crop.THUMB[0] + 4)
    thumb = crop.thumbnail(frames[1])                          # the near-duplicate, first cell
    assert np.array_equal(sheet[28:28 + thumb.shape[0], 2:2 + thumb.shape[1]], thumb)
    files = [save(tmp_path / "in" / f"f{i}.png", a) for i, a in enumerate(frames)]
    run(files, tmp_path / "out", hud=False)
    assert Image.open(tmp_path / "out" / "contact.png").size == (sheet.shape[1], sheet.shape[0])


def test_the_example_corpus_loses_nothing_to_hud_near_duplicates_or_caps(tmp_path):
    r = crop.run({"images": [EXAMPLES / "screens"]}, crop.Params(), tmp_path)
    assert (r["screens"], r["hud_cut"], r["near_duplicates"], r["capped"]) == (62, 0, 0, 0)
    assert r["games"] == 4      # ansimuz_cybercity, ansimuz_miami, pyxel_platformer, pyxel_sample


def test_jpeg_of_a_frame_with_2px_textures_is_2x_not_4x():
    a = H.nes_frame(125)                          # jungle leaves drawn in 2x2 pixels
    assert _grid.detect_scale(H.as_jpeg(a, 2, quality=90), tolerance=8)[0] == 2


def test_screens_json_names_the_nes_palette_a_frame_is_drawn_in():
    # the same native frame drawn in the 2C02 colours and in Mesen's table: each screen
    # reports its own table; GAN-like noise reports none
    from palettes import get_palette, recognise_image

    frame = H.nes_frame(3)[..., :3]
    match = recognise_image(frame)
    assert match is not None
    flat = frame.reshape(-1, 3)
    which = np.argmin(np.abs(flat[:, None, :].astype(int) - match.colours[None].astype(int)).sum(2), 1)
    mesen = np.asarray(get_palette("nes-mesen").colours, np.uint8)
    redrawn = mesen[match.numbers[which]].reshape(frame.shape)
    noise = np.random.default_rng(0).integers(0, 256, (240, 256, 3), dtype=np.uint8)

    def rgba(a):
        return np.concatenate([a, np.full(a.shape[:2] + (1,), 255, np.uint8)], -1)

    result = crop.crop_screens([("a/frame.png", rgba(frame)), ("b/mesen.png", rgba(redrawn)),
                                ("c/noise.png", rgba(noise))], crop.Params(patch_size=32, stride=32))
    by_source = {r.source: r.palette for r in result.records}
    assert by_source["a/frame.png"]["table"] == match.table
    assert by_source["b/mesen.png"]["table"] == "nes-mesen"
    assert by_source["b/mesen.png"]["kind"] == "known" and by_source["b/mesen.png"]["max_error"] <= 2.0
    assert by_source["c/noise.png"] is None
