"""Drawing generated colours to the real screens' colours before quantize (palettes.snap and
quantize's ``reference`` input)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from palettes.io import get_palette
from palettes.snap import reference_colours, snap_to_colours
from stages import quantize as q
from stages._common import InputError

#: a corpus colour whose nearest NES colour is $26, and a generated colour 4.6 ΔE from it whose
#: nearest NES colour is $36: mapped alone, the generated pixel leaves the real art's colour
CORPUS = (200, 120, 90)
NEAR = (200, 128, 98)


def _flat(colour, size=16, alpha=None):
    im = np.zeros((size, size, 4), np.uint8)
    im[..., :3] = colour
    im[..., 3] = 255 if alpha is None else alpha
    return im


def test_reference_colours_keeps_common_colours_commonest_first_and_skips_transparent():
    a = _flat((10, 20, 30))
    a[:4, :, :3] = (200, 0, 0)                     # 64 of 256 pixels
    a[0, 0, :3] = (1, 2, 3)                        # one stray pixel (of the red rows)
    hidden = _flat((0, 255, 0), alpha=0)           # transparent: not counted
    ref = reference_colours([a, hidden], min_share=0.01)
    assert ref.colours.tolist() == [[10, 20, 30], [200, 0, 0]]
    assert ref.shares == pytest.approx([192 / 256, 63 / 256])
    assert ref.total_colours == 3 and ref.pixels == 256
    assert ref.covered == pytest.approx(255 / 256)


def test_snap_moves_only_pixels_within_the_limit():
    rgb = np.array([[NEAR, (0, 255, 0), CORPUS]], np.uint8)
    snapped, moved = snap_to_colours(rgb, np.array([CORPUS], np.uint8), max_delta_e=20)
    assert snapped.tolist() == [[list(CORPUS), [0, 255, 0], list(CORPUS)]]
    assert moved.tolist() == [[True, False, False]]
    tight, moved = snap_to_colours(rgb, np.array([CORPUS], np.uint8), max_delta_e=4)
    assert np.array_equal(tight, rgb) and not moved.any()          # 4.6 ΔE is beyond 4


def test_snap_zero_or_no_colours_leaves_the_image():
    rgb = np.array([[NEAR]], np.uint8)
    for colours, limit in ((np.array([CORPUS], np.uint8), 0), (np.zeros((0, 3), np.uint8), 20)):
        out, moved = snap_to_colours(rgb, colours, max_delta_e=limit)
        assert np.array_equal(out, rgb) and not moved.any()


def test_quantize_maps_a_generated_colour_as_the_corpus_colour_it_stands_for():
    target = q.target_palette(q.Params())
    plain = q.quantize_image(_flat(NEAR), target, q.Params())
    drawn = q.quantize_image(_flat(NEAR), target, q.Params(),
                             reference=np.array([CORPUS], np.uint8))
    corpus = q.quantize_image(_flat(CORPUS), target, q.Params())
    assert set(plain.index.ravel().tolist()) == {0x36}
    assert set(drawn.index.ravel().tolist()) == set(corpus.index.ravel().tolist()) == {0x26}
    assert drawn.snapped == 1.0 and plain.snapped == 0.0
    off = q.quantize_image(_flat(NEAR), target, q.Params(snap_delta_e=0),
                           reference=np.array([CORPUS], np.uint8))
    assert np.array_equal(off.index, plain.index)


def test_a_recognised_nes_screenshot_is_not_drawn_to_the_reference():
    pal = get_palette("nes").colours
    rng = np.random.default_rng(0)
    idx = rng.choice([0x0F, 0x16, 0x21, 0x30], size=(4, 4)).repeat(8, 0).repeat(8, 1)
    shot = np.concatenate([pal[idx], np.full(idx.shape + (1,), 255, np.uint8)], -1)
    ref = np.array([pal[0x06], pal[0x11], pal[0x10]], np.uint8)       # each near one of them
    target = q.target_palette(q.Params())
    r = q.quantize_image(shot, target, q.Params(), reference=ref)
    assert r.match is not None and r.snapped == 0.0
    assert np.array_equal(r.index, idx)


def _one_sample(tmp_path):
    """A folder holding one generated image of the colour NEAR, and an empty output folder."""
    src, out = tmp_path / "samples", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    Image.fromarray(_flat(NEAR)[..., :3]).save(src / "sample_0000.png")
    return src, out


def _numbers(png):
    """The NES numbers an indexed PNG uses."""
    return set(np.asarray(Image.open(png)).ravel().tolist())


def _crop_artifact(tmp_path, colours):
    art = tmp_path / "crop"
    art.mkdir()
    patches = np.stack([_flat(c, size=8) for c in colours])
    np.save(art / "patches.npy", patches)
    return art


def test_run_takes_the_reference_from_a_crop_artifact_and_records_it(tmp_path):
    src, out = _one_sample(tmp_path)
    art = _crop_artifact(tmp_path, [CORPUS, CORPUS, (0, 0, 0)])
    s = q.run({"images": [src], "reference": [art]}, q.Params(), out)
    assert _numbers(out / "sample_0000.png") == {0x26}
    doc = json.loads((out / "quantize.json").read_text())
    assert doc["reference"]["colours"] == 2 and doc["reference"]["sources"] == [str(art)]
    assert doc["images"][0]["snapped_share"] == 1.0
    assert s["reference_colours"] == 2 and s["snapped_share"] == 1.0


def test_run_with_snap_off_ignores_the_reference(tmp_path):
    src, out = _one_sample(tmp_path)
    q.run({"images": [src], "reference": [_crop_artifact(tmp_path, [CORPUS])]},
          q.Params(snap_delta_e=0), out)
    assert _numbers(out / "sample_0000.png") == {0x36}
    assert json.loads((out / "quantize.json").read_text())["reference"] is None


def test_reference_files_skip_a_corrupt_one_and_fail_clearly_when_nothing_is_left(tmp_path):
    src, out = _one_sample(tmp_path)
    ref = tmp_path / "screens"
    ref.mkdir()
    (ref / "broken.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="no opaque pixel.*broken.png"):
        q.run({"images": [src], "reference": [ref]}, q.Params(), out)
    Image.fromarray(_flat(CORPUS)[..., :3]).save(ref / "real.png")
    q.run({"images": [src], "reference": [ref]}, q.Params(), out)
    doc = json.loads((out / "quantize.json").read_text())
    assert doc["reference"]["colours"] == 1
    assert [s["path"] for s in doc["reference"]["skipped"]] == [str(ref / "broken.png")]
    assert doc["skipped"] == []


def test_cli_quantize_takes_a_reference_folder(tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli import app

    src = tmp_path / "gen"
    src.mkdir()
    Image.fromarray(_flat(NEAR)[..., :3]).save(src / "a.png")
    ref = tmp_path / "real"
    ref.mkdir()
    Image.fromarray(_flat(CORPUS)[..., :3]).save(ref / "screen.png")
    cfg = tmp_path / "pipeline.toml"
    cfg.write_text(f'[pipeline]\ncache = "{tmp_path / "cache"}"\n')
    res = CliRunner().invoke(app, ["quantize", str(src), "--reference", str(ref), "--out",
                                   str(tmp_path / "o"), "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    assert _numbers(tmp_path / "o" / "a.png") == {0x26}
