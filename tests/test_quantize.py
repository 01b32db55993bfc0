"""quantize stage: standalone use, outputs, bad input, clean-up stats, NES mode."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from palettes.io import get_palette
from stages import quantize as q
from stages._common import InputError, ParamError


def _noisy(rng, n=64):
    pal = get_palette("nes").colours.astype(np.int64)
    cols = rng.choice([0x0F, 0x21, 0x19, 0x27, 0x30, 0x16], size=(n // 16, n // 16))
    base = pal[cols].repeat(16, 0).repeat(16, 1)
    return np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)


def _write(tmp_path, rng, k=2):
    d = tmp_path / "in"
    d.mkdir()
    for i in range(k):
        Image.fromarray(_noisy(rng)).save(d / f"sample_{i:04d}.png")
    return d


def test_outputs_indexed_pngs_and_json(tmp_path, rng):
    d = _write(tmp_path, rng)
    out = tmp_path / "out"
    out.mkdir()
    s = q.run({"images": [d]}, q.Params(), out)
    assert s["images"] == 2
    im = Image.open(out / "sample_0000.png")
    assert im.mode == "P"
    idx = np.asarray(im)
    assert set(np.unique(idx).tolist()) <= set(get_palette("nes").usable().tolist())
    doc = json.loads((out / "quantize.json").read_text())
    assert doc["palette"] == "nes" and len(doc["palette_rgb"]) == 64
    row = doc["images"][0]
    assert row["after"]["colours_per_tile"] <= row["before"]["colours_per_tile"]
    assert row["after"]["max_colours_per_tile"] <= 4
    assert row["after"]["isolated_rate"] < row["before"]["isolated_rate"]


def test_deterministic_bytes(tmp_path, rng):
    d = _write(tmp_path, rng, 1)
    outs = []
    for n in range(2):
        o = tmp_path / f"o{n}"
        o.mkdir()
        q.run({"images": [d / "sample_0000.png"]}, q.Params(), o)
        outs.append((o / "sample_0000.png").read_bytes())
    assert outs[0] == outs[1]


def test_corrupt_image_skipped_and_listed(tmp_path, rng):
    d = _write(tmp_path, rng, 1)
    (d / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    out.mkdir()
    s = q.run({"images": [d]}, q.Params(cleanup=0), out)
    assert s["images"] == 1 and "broken.png" in s["skipped"][0]["path"]


def test_only_corrupt_is_fatal(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="broken.png"):
        q.run({"images": [tmp_path / "broken.png"]}, q.Params(), tmp_path)


def test_fully_transparent_image_clear_message(tmp_path):
    Image.fromarray(np.zeros((16, 16, 4), np.uint8)).save(tmp_path / "clear.png")
    with pytest.raises(InputError, match="transparent"):
        q.run({"images": [tmp_path / "clear.png"]}, q.Params(), tmp_path / "o")


def test_alpha_maps_to_transparent_index(tmp_path):
    a = np.zeros((16, 16, 4), np.uint8)
    a[..., :3] = 200
    a[:8, :, 3] = 255
    Image.fromarray(a).save(tmp_path / "half.png")
    out = tmp_path / "o"
    out.mkdir()
    q.run({"images": [tmp_path / "half.png"]}, q.Params(cleanup=0), out)
    im = Image.open(out / "half.png")
    idx = np.asarray(im)
    assert im.info["transparency"] == 64 and (idx[8:] == 64).all() and (idx[:8] != 64).all()


def test_palette_mode_and_greyscale_inputs(tmp_path):
    Image.fromarray(np.full((16, 16), 255, np.uint8)).save(tmp_path / "g.png")
    p = Image.new("P", (16, 16), 0)
    p.putpalette([0, 0, 0])
    p.save(tmp_path / "p.png")
    out = tmp_path / "o"
    out.mkdir()
    q.run({"images": [tmp_path]}, q.Params(cleanup=0), out)
    assert (np.asarray(Image.open(out / "g.png")) == 0x30).all()
    assert (np.asarray(Image.open(out / "p.png")) == 0x0F).all()


def test_bad_param_and_palette_errors(tmp_path, rng):
    d = _write(tmp_path, rng, 1)
    with pytest.raises(ParamError, match="metric"):
        q.run({"images": [d]}, q.Params(metric="xyz"), tmp_path / "o")
    with pytest.raises(ParamError, match="nosuch"):
        q.run({"images": [d]}, q.Params(palette="nosuch"), tmp_path / "o")


def test_other_palette_file(tmp_path, rng):
    d = _write(tmp_path, rng, 1)
    (tmp_path / "p.hex").write_text("000000\nffffff\n")
    out = tmp_path / "o"
    out.mkdir()
    q.run({"images": [d]}, q.Params(palette=str(tmp_path / "p.hex"), metric="rgb"), out)
    assert set(np.unique(np.asarray(Image.open(out / "sample_0000.png"))).tolist()) <= {0, 1}


def test_nes_mode_output_is_legal(tmp_path, rng):
    from palettes.nesfit import validate_nes

    d = _write(tmp_path, rng, 3)
    out = tmp_path / "o"
    out.mkdir()
    s = q.run({"images": [d]}, q.Params(nes=True), out)
    doc = json.loads((out / "quantize.json").read_text())
    imgs = [np.asarray(Image.open(out / r["file"])) for r in doc["images"]]
    v = validate_nes(imgs, backdrop=doc["nes"]["backdrop"], subpalettes=np.array(doc["nes"]["subpalettes"]),
                     allowed=get_palette("nes").usable())
    assert s["nes_legal"] and v["legal"], v["problems"]
    assert (out / doc["nes"]["error_map"]).is_file()


def test_worker_processes_give_same_bytes(tmp_path, rng, monkeypatch):
    d = _write(tmp_path, rng, 3)
    outs = []
    for name, thresh in (("serial", 10 ** 12), ("pool", 0)):
        monkeypatch.setattr(q, "_POOL_MIN_PIXELS", thresh)
        o = tmp_path / name
        o.mkdir()
        q.run({"images": [d]}, q.Params(), o)
        outs.append([(o / f"sample_{i:04d}.png").read_bytes() for i in range(3)])
    assert outs[0] == outs[1]


def test_progress_reported(tmp_path, rng):
    d = _write(tmp_path, rng, 2)
    calls = []
    q.run({"images": [d]}, q.Params(cleanup=0), tmp_path / "o", progress=lambda *a, **k: calls.append(a))
    assert calls[-1] == ("quantize", 2, 2)


# ------------------------------------------------------------------ palette recognition (#17)
def _smb_frame() -> np.ndarray:
    """64x64 NES numbers like a Super Mario Bros. screen: sky with a cloud and a lone sparkle,
    bricks with a lone shadow pixel, water, ground, and a 3-colour sprite over two areas."""
    a = np.full((64, 64), 0x22, np.uint8)                      # sky
    a[3:11, 2:14] = 0x30                                       # cloud ...
    a[10, 2:14] = 0x21                                         # ... its blue underside
    a[2, 2:14] = 0x0F                                          # ... and outline
    a[7, 55] = 0x21                                            # a sparkle: isolated on purpose
    a[16:32, :] = 0x17                                         # bricks
    a[16:32:4, :] = 0x0F                                       # mortar
    a[17, 5] = 0x36                                            # highlight
    a[25, 40] = 0x16                                           # a lone shadow pixel
    a[32:48, :] = 0x21                                         # water
    a[34:48:5, :] = 0x30                                       # waves
    a[48:, :] = 0x27                                           # ground
    a[48:64:4, :] = 0x17
    a[40:56, 10:22] = 0x16                                     # sprite: red ...
    a[44:50, 12:20] = 0x27                                     # ... skin
    a[50:56, 12:16] = 0x18                                     # ... olive
    a[42, 12:20] = 0x0F                                        # ... dark hat brim
    return a


def _areas(a: np.ndarray):
    for y in range(0, a.shape[0], 16):
        for x in range(0, a.shape[1], 16):
            yield slice(y, y + 16), slice(x, x + 16)


def _rgba(rgb: np.ndarray) -> np.ndarray:
    return np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)


def test_same_index_map_under_every_shipped_palette_gives_the_same_numbers():
    from palettes.data import nes_table_names

    frame = _smb_frame()
    for name in nes_table_names():
        rgb = get_palette(name).colours[frame]
        out = q.quantize_images([_rgba(rgb)], q.Params(cleanup=0)).results[0]
        assert out.match is not None and out.match.table == name, name
        assert np.array_equal(out.index, frame), name


def test_smb_frame_keeps_every_colour_where_nearest_colour_merged_them():
    olc = get_palette("nes-olcnes").colours
    rgb = olc[_smb_frame()]
    assert {tuple(olc[0x21]), tuple(olc[0x22]), tuple(olc[0x17]), tuple(olc[0x16])} == \
        {(76, 154, 236), (120, 124, 236), (120, 60, 0), (152, 34, 32)}       # issue 17's colours
    n_in = len(np.unique(rgb.reshape(-1, 3), axis=0))
    out = q.quantize_images([_rgba(rgb)], q.Params(cleanup=0)).results[0]
    assert len(np.unique(out.index)) == n_in
    assert np.array_equal(out.index, _smb_frame())
    old = q.quantize_images([_rgba(rgb)], q.Params(cleanup=0, recognise=False)).results[0]
    assert len(np.unique(old.index)) < n_in                   # nearest colour merges pairs


def test_default_cleanup_changes_no_pixel_of_a_legal_area_of_recognised_art():
    from palettes.cleanup import isolated_mask

    frame = _smb_frame()
    rgb = get_palette("nes-olcnes").colours[frame]
    out = q.quantize_images([_rgba(rgb)], q.Params()).results[0]
    legal = [(ys, xs) for ys, xs in _areas(frame) if len(np.unique(frame[ys, xs])) <= 4]
    assert len(legal) < 16                                     # the sprite breaks some areas
    iso = isolated_mask(frame)
    assert sum(int(iso[ys, xs].sum()) for ys, xs in legal) >= 2   # lone pixels in legal areas
    for ys, xs in legal:
        assert np.array_equal(out.index[ys, xs], frame[ys, xs])


def test_shifted_unknown_palette_is_fitted_and_reported(tmp_path):
    pal = get_palette("nes").colours.astype(np.int64)
    frame = _smb_frame()
    Image.fromarray(np.clip(pal[frame] + (10, -8, 6), 0, 255).astype(np.uint8)).save(tmp_path / "cap.png")
    out = tmp_path / "o"
    s = q.run({"images": [tmp_path / "cap.png"]}, q.Params(cleanup=0), out)
    assert np.array_equal(np.asarray(Image.open(out / "cap.png")), frame)
    doc = json.loads((out / "quantize.json").read_text())
    m = doc["images"][0]["palette_match"]
    assert m["kind"] == "fitted" and m["table"] == "nes" and 0 <= m["mean_error"] <= m["max_error"]
    assert len({r["number"] for r in m["mapping"]}) == len(m["mapping"]) == len(np.unique(frame))
    assert s["recognised_images"] == 1 and s["fitted_images"] == 1
    assert s["recognised_tables"] == {"nes": 1}


def test_gan_like_noise_is_not_recognised_and_maps_as_nearest_colour(rng):
    from palettes.nearest import nearest_bruteforce

    nes = get_palette("nes")
    rgb = _noisy(rng)
    out = q.quantize_images([_rgba(rgb)], q.Params(cleanup=0)).results[0]
    assert out.match is None
    assert np.array_equal(out.index, nearest_bruteforce(rgb, nes.colours, nes.usable()))
    on = q.quantize_images([_rgba(rgb)], q.Params()).results[0]
    off = q.quantize_images([_rgba(rgb)], q.Params(recognise=False)).results[0]
    assert np.array_equal(on.index, off.index)


def test_recognised_sprite_keeps_its_transparency():
    frame = _smb_frame()[40:56, 8:24]
    rgba = _rgba(get_palette("nes-mesen").colours[frame])
    rgba[frame == 0x21, 3] = 0                                # the water around it is see-through
    out = q.quantize_images([rgba], q.Params(cleanup=0)).results[0]
    assert out.match is not None and out.match.table == "nes-mesen"
    assert np.array_equal(out.index[out.opaque], frame[frame != 0x21])


def test_non_nes_palette_skips_recognition():
    rgb = get_palette("nes-mesen").colours[_smb_frame()]
    out = q.quantize_images([_rgba(rgb)], q.Params(palette="pico8", cleanup=0)).results[0]
    assert out.match is None and int(out.index.max()) < 16


@pytest.mark.parametrize("kw, field", [({"alpha_threshold": 300}, "alpha_threshold"),
                                       ({"cleanup": -1}, "cleanup"), ({"max_colours": -2}, "max_colours"),
                                       ({"dither": "sparkle"}, "dither"),
                                       ({"palette": "pico8", "nes": True}, "nes")])
def test_params_refuse_bad_values_naming_the_field(kw, field):
    with pytest.raises(ParamError) as e:
        q.Params(**kw)
    assert e.value.field == field
