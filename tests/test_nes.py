"""NES legality validator, sub-palette fitting and CHR / palette / nametable files."""
from __future__ import annotations

import numpy as np
import pytest

from palettes.colour import srgb_to_lab
from palettes.io import get_palette
from palettes.nesfit import apply_fit, area_histograms, fit_subpalettes, validate_nes
from tilesets.nes import (decode_chr, decode_nametable, decode_palette, encode_chr,
                          encode_nametable, render_screen, write_nes_bundle)

SUBS = np.array([[0x01, 0x11, 0x21], [0x06, 0x16, 0x26], [0x09, 0x19, 0x29], [0x00, 0x10, 0x30]])
BACK = 0x0F


def legal_screen(h=240, w=256, seed=0):
    """A hand-made legal screen: each 16x16 area draws from one sub-palette + backdrop."""
    rng = np.random.default_rng(seed)
    attr = rng.integers(0, 4, (h // 16, w // 16))
    shapes = rng.integers(0, 4, (6, 8, 8))                     # a few 8x8 shapes (values 0..3)
    pick = rng.integers(0, 6, (h // 8, w // 8))
    vals = shapes[pick].transpose(0, 2, 1, 3).reshape(h, w)
    big = np.repeat(np.repeat(attr, 16, 0), 16, 1)
    cols = np.concatenate([np.full((4, 1), BACK), SUBS], 1)
    return cols[big, vals].astype(np.uint8), attr


def test_chr_roundtrip_and_layout():
    t = np.zeros((2, 8, 8), np.uint8)
    t[0, 0, 0] = 1                       # leftmost pixel, plane 0 -> MSB of byte 0
    t[1, 7, 7] = 3                       # bottom-right pixel, both planes
    data = encode_chr(t, pad_to=None)
    assert len(data) == 32 and data[0] == 0x80 and data[8] == 0
    assert data[16 + 7] == 0x01 and data[16 + 15] == 0x01
    assert np.array_equal(decode_chr(data), t)


def test_nametable_attribute_roundtrip():
    rng = np.random.default_rng(3)
    tid = rng.integers(0, 256, (30, 32))
    attr = rng.integers(0, 4, (15, 16))
    data = encode_nametable(tid, attr)
    assert len(data) == 1024
    t2, a2 = decode_nametable(data)
    assert np.array_equal(t2, tid) and np.array_equal(a2, attr)
    # byte 0 of the attribute table: areas (0,0) (1,0) (0,1) (1,1) in bits 0-1, 2-3, 4-5, 6-7
    assert data[960] == attr[0, 0] | attr[0, 1] << 2 | attr[1, 0] << 4 | attr[1, 1] << 6


def test_validator_accepts_legal_screen():
    s, _ = legal_screen()
    v = validate_nes([s], backdrop=BACK, subpalettes=SUBS)
    assert v["legal"], v["problems"]
    assert validate_nes([s])["legal"]                       # inferred palette set


def test_validator_rejects_five_colours_in_an_area():
    s, _ = legal_screen()
    s[0:2, 0:2] = [[0x01, 0x06], [0x09, 0x00]]
    v = validate_nes([s], backdrop=BACK, subpalettes=SUBS)
    assert not v["legal"] and "area (0, 0)" in v["problems"][0]


def test_validator_rejects_too_many_tiles():
    rng = np.random.default_rng(0)
    s = np.where(rng.random((240, 256)) < 0.5, BACK, 0x01).astype(np.uint8)
    v = validate_nes([s], backdrop=BACK, subpalettes=SUBS)
    assert not v["legal"] and "256" in " ".join(v["problems"])


def test_validator_rejects_0d():
    s, _ = legal_screen(32, 32)
    s[0, 0] = 0x0D
    assert not validate_nes([s], allowed=get_palette("nes").usable())["legal"]


def test_fit_produces_legal_output_for_noisy_images():
    pal = get_palette("nes")
    pl = srgb_to_lab(pal.colours)
    rng = np.random.default_rng(1)
    imgs = [rng.choice(pal.usable(), size=(32, 48)) for _ in range(3)]
    H = area_histograms(imgs, 64)
    fit = fit_subpalettes(H, pl, pal.usable())
    outs = [apply_fit(pl[im], fit, pl)[0] for im in imgs]
    v = validate_nes(outs, backdrop=fit.backdrop, subpalettes=fit.subpalettes, allowed=pal.usable())
    assert v["legal"], v["problems"]


def test_fit_keeps_a_legal_screen_exactly():
    pal = get_palette("nes")
    pl = srgb_to_lab(pal.colours)
    s, _ = legal_screen(64, 64, seed=4)
    fit = fit_subpalettes(area_histograms([s], 64), pl, pal.usable())
    out, _, err = apply_fit(pl[s], fit, pl)
    assert np.array_equal(out, s) and err.max() == 0


def test_bundle_roundtrip_real_legal_screen(tmp_path):
    s, attr = legal_screen()
    info = write_nes_bundle([s], ["level1"], tmp_path, backdrop=BACK, subpalettes=SUBS)
    tiles = decode_chr((tmp_path / "tiles.chr").read_bytes())
    pal16 = decode_palette((tmp_path / "palette.pal").read_bytes())
    tid, at = decode_nametable((tmp_path / "level1.nam").read_bytes())
    assert len((tmp_path / "tiles.chr").read_bytes()) == 4096 and info["tiles"] <= 7
    assert np.array_equal(render_screen(tiles, pal16, tid, at), s)
    # same sub-palette per area as the hand-made screen (sub-palettes are distinct here)
    assert np.array_equal(at, attr)
    assert pal16[:, 1:].tolist() == SUBS.tolist() and (pal16[:, 0] == BACK).all()


def test_bundle_small_screens_and_inferred_palette(tmp_path):
    a, _ = legal_screen(64, 64, seed=1)
    b, _ = legal_screen(32, 48, seed=2)
    info = write_nes_bundle([a, b], ["a", "b"], tmp_path)
    tiles = decode_chr((tmp_path / "tiles.chr").read_bytes())
    pal16 = decode_palette((tmp_path / "palette.pal").read_bytes())
    for name, s in (("a", a), ("b", b)):
        tid, at = decode_nametable((tmp_path / f"{name}.nam").read_bytes())
        r = render_screen(tiles, pal16, tid, at)
        h, w = s.shape
        assert np.array_equal(r[:h, :w], s) and (r[h:] == info["backdrop"]).all()


def test_bundle_rejects_illegal_screen(tmp_path):
    s, _ = legal_screen(32, 32)
    s[0:2, 0:2] = [[0x01, 0x06], [0x09, 0x00]]
    with pytest.raises(ValueError, match="area"):
        write_nes_bundle([s], ["bad"], tmp_path, backdrop=BACK, subpalettes=SUBS)


def test_merge_patterns_reaches_limit_with_bound():
    from palettes.nesfit import merge_patterns

    rng = np.random.default_rng(0)
    base = rng.integers(0, 4, (40, 8, 8))
    pats = np.repeat(base, 10, axis=0)
    noisy = pats.copy()
    flip = rng.random(noisy.shape) < 0.03                 # ~2 pixels changed per tile
    noisy[flip] = (noisy[flip] + 1) % 4
    merged, info = merge_patterns(noisy.astype(np.uint8), 40)
    assert info["unique_before"] > 40 and info["unique_after"] == 40
    assert len(np.unique(merged.reshape(len(merged), -1), axis=0)) == 40
    changed = (merged != noisy).reshape(len(noisy), -1).sum(axis=1)
    assert changed.max() == info["max_pixels_changed"] <= 12


def test_quantize_nes_merges_tiles_of_a_busy_screen(tmp_path):
    import json

    from PIL import Image

    from stages import quantize as q

    rng = np.random.default_rng(2)
    pal = get_palette("nes")
    # a full screen of noise in two colours: far more than 256 distinct 8x8 tiles
    s = np.where(rng.random((240, 256)) < 0.5, 0x0F, 0x30)
    Image.fromarray(pal.colours[s]).save(tmp_path / "busy.png")
    out = tmp_path / "o"
    out.mkdir()
    summ = q.run({"images": [tmp_path / "busy.png"]}, q.Params(nes=True, cleanup=0), out)
    doc = json.loads((out / "quantize.json").read_text())
    assert summ["nes_legal"], doc["nes"]["problems"]
    assert doc["nes"]["tile_merges"][0]["unique_before"] > 256
    assert doc["nes"]["tiles_per_image"][0] <= 256


def test_infer_finds_cover_that_needs_search():
    from palettes.nesfit import infer_subpalettes

    # area sets {1,2} {3,4} {1,5} {2,5} ... only the cover {1,2,5} {3,4,x} ... works with 2 bins
    a = np.full((16, 16 * 4), BACK, np.uint8)
    for k, cols in enumerate([(1, 2), (3, 4), (1, 5), (2, 5)]):
        a[:8, 16 * k:16 * k + 16] = cols[0]
        a[8:, 16 * k:16 * k + 16] = cols[1]
    res = infer_subpalettes([a], max_sub=2, backdrop=BACK)
    assert res is not None
    b, subs = res
    assert sorted(map(tuple, subs.tolist())) == [(1, 2, 5), (3, 4, 4)]


def test_bundle_merges_a_screen_with_too_many_tiles(tmp_path):
    rng = np.random.default_rng(0)
    s = np.where(rng.random((240, 256)) < 0.5, BACK, 0x01).astype(np.uint8)
    with pytest.raises(ValueError, match="256"):
        write_nes_bundle([s], ["busy"], tmp_path / "strict", backdrop=BACK, subpalettes=SUBS,
                         merge_tiles=False)
    info = write_nes_bundle([s], ["busy"], tmp_path, backdrop=BACK, subpalettes=SUBS)
    row = info["screens"][0]
    assert not row["exact"] and row["tiles"] <= 256
    tiles = decode_chr((tmp_path / "tiles.chr").read_bytes())
    tid, at = decode_nametable((tmp_path / "busy.nam").read_bytes())
    r = render_screen(tiles, decode_palette((tmp_path / "palette.pal").read_bytes()), tid, at)
    per_tile = (r != s).reshape(30, 8, 32, 8).transpose(0, 2, 1, 3).reshape(-1, 64).sum(1)
    assert per_tile.max() <= row["tile_merges"]["max_pixels_changed"]


def test_quantize_nes_keeps_a_legal_screen_unchanged(tmp_path):
    """A real NES-legal screen through `quantize --nes` (default clean-up) comes back
    pixel-identical, with the same sub-palette per area, and through the NES files too."""
    import json

    from PIL import Image

    from stages import quantize as q

    pal = get_palette("nes")
    s, attr = legal_screen(seed=7)
    Image.fromarray(pal.colours[s]).save(tmp_path / "screen.png")
    out = tmp_path / "q"
    out.mkdir()
    summ = q.run({"images": [tmp_path / "screen.png"]}, q.Params(nes=True), out)
    got = np.asarray(Image.open(out / "screen.png"))
    assert np.array_equal(got, s) and summ["nes_mean_area_error"] == 0
    nes = json.loads((out / "quantize.json").read_text())["nes"]
    info = write_nes_bundle([got], ["screen"], tmp_path / "nes", backdrop=nes["backdrop"],
                            subpalettes=np.array(nes["subpalettes"]))
    d = tmp_path / "nes"
    r = render_screen(decode_chr((d / "tiles.chr").read_bytes()),
                      decode_palette((d / "palette.pal").read_bytes()),
                      *decode_nametable((d / "screen.nam").read_bytes()))
    assert np.array_equal(r, s) and info["screens"][0]["exact"]
    # same grouping of areas into sub-palettes as the original (up to renaming)
    _, at = decode_nametable((d / "screen.nam").read_bytes())
    pairs = set(zip(attr.ravel().tolist(), at.ravel().tolist()))
    assert len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs})
