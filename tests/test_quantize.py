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
