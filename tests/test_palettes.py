"""Palettes: loaders, colour maths, exact nearest colour, dithering, clean-up."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from palettes.colour import ciede2000, srgb_to_lab
from palettes.io import (Palette, PaletteError, get_palette, list_palettes, load_palette_file,
                         usable_indices, write_swatch)
from palettes.nearest import NearestMapper, get_mapper, nearest_bruteforce


@pytest.fixture(scope="module")
def nes_mapper():
    pal = get_palette("nes")
    return pal, get_mapper(pal.colours, pal.usable())


# ------------------------------------------------------------------ palettes
def test_builtin_palettes_listed_with_default_nes():
    names = {d["name"]: d for d in list_palettes()}
    assert {"nes", "nes-ntsc", "nes-ntsc-vivid", "gameboy", "pico8", "c64"} <= set(names)
    assert names["nes"]["default"] and names["nes"]["colours"] == 64
    assert names["gameboy"]["colours"] == 4 and names["pico8"]["colours"] == 16


@pytest.mark.parametrize("name", ["nes", "nes-ntsc", "nes-ntsc-vivid"])
def test_nes_blacks_collapse_to_0f_and_0d_never_usable(name):
    u = set(get_palette(name).usable().tolist())
    assert 0x0D not in u
    assert 0x0F in u
    assert not u & {0x0E, 0x1D, 0x1E, 0x1F, 0x2E, 0x2F, 0x3E, 0x3F}


def test_drop_xd_column_removes_whole_column():
    u = set(get_palette("nes").usable(drop_xd_column=True).tolist())
    assert not u & {0x0D, 0x1D, 0x2D, 0x3D}
    assert 0x2D in set(get_palette("nes").usable().tolist())


def test_generic_duplicates_keep_first():
    p = Palette("t", np.array([[1, 2, 3], [9, 9, 9], [1, 2, 3]], np.uint8))
    assert usable_indices(p).tolist() == [0, 1]


def test_pal_loader_192_and_1536(tmp_path):
    cols = np.arange(192, dtype=np.uint8)
    (tmp_path / "a.pal").write_bytes(cols.tobytes())
    p = load_palette_file(tmp_path / "a.pal")
    assert len(p) == 64 and p.kind == "nes" and p.colours[1].tolist() == [3, 4, 5]
    (tmp_path / "b.pal").write_bytes(np.tile(cols, 8).tobytes())
    q = load_palette_file(tmp_path / "b.pal")
    assert len(q) == 64 and q.emphasis.shape == (8, 64, 3)


def test_jasc_pal_text_loader(tmp_path):
    f = tmp_path / "j.pal"
    f.write_text("JASC-PAL\n0100\n2\n255 0 0\n0 0 255\n")
    assert load_palette_file(f).colours.tolist() == [[255, 0, 0], [0, 0, 255]]
    f.write_text("JASC-PAL\n0100\n3\n255 0 0\n0 0 255\n")
    with pytest.raises(PaletteError, match="3 colours"):
        load_palette_file(f)


def test_pal_wrong_size_names_file(tmp_path):
    (tmp_path / "bad.pal").write_bytes(bytes(100))
    with pytest.raises(PaletteError, match=r"bad\.pal.*100 bytes"):
        load_palette_file(tmp_path / "bad.pal")


def test_gpl_loader_and_bad_line(tmp_path):
    f = tmp_path / "p.gpl"
    f.write_text("GIMP Palette\nName: t\nColumns: 2\n# c\n255 0 0 red\n0 0 255\tblue\n")
    assert load_palette_file(f).colours.tolist() == [[255, 0, 0], [0, 0, 255]]
    f.write_text("GIMP Palette\n255 0 0\n1 2 x\n")
    with pytest.raises(PaletteError, match=r"p\.gpl:3"):
        load_palette_file(f)


def test_hex_loader_and_bad_line(tmp_path):
    f = tmp_path / "p.hex"
    f.write_text("ff0000\n#00ff00\n\n0000ff\n")
    assert load_palette_file(f).colours.tolist() == [[255, 0, 0], [0, 255, 0], [0, 0, 255]]
    f.write_text("ff0000\nzz0000\n")
    with pytest.raises(PaletteError, match=r"p\.hex:2"):
        load_palette_file(f)


def test_png_strip_loader_in_scan_order(tmp_path):
    a = np.zeros((2, 6, 3), np.uint8)
    a[:, 0:2] = (10, 20, 30)
    a[:, 2:4] = (200, 0, 0)
    a[:, 4:6] = (10, 20, 30)
    Image.fromarray(a).save(tmp_path / "s.png")
    assert load_palette_file(tmp_path / "s.png").colours.tolist() == [[10, 20, 30], [200, 0, 0]]


def test_more_than_256_colours_refused(tmp_path):
    f = tmp_path / "big.hex"
    f.write_text("\n".join(f"{i:06x}" for i in range(300)))
    with pytest.raises(PaletteError, match="300 colours"):
        load_palette_file(f)


def test_unknown_palette_name_lists_builtins():
    with pytest.raises(PaletteError, match="pico8"):
        get_palette("nosuch")


def test_swatch_png(tmp_path):
    p = write_swatch("pico8", tmp_path / "sw.png", cell=4, columns=8)
    a = np.asarray(Image.open(p).convert("RGB"))
    assert a.shape == (8, 32, 3)
    assert a[0, 0].tolist() == [0, 0, 0] and a[5, 1].tolist() == get_palette("pico8").colours[8].tolist()


# ------------------------------------------------------------------ shipped NES tables
def test_every_shipped_nes_table_has_64_colours_a_name_and_a_source():
    from palettes.data import DATA_DIR, NES_TABLE_FILES, read_table_file

    names = set()
    for stem in NES_TABLE_FILES:
        meta, colours = read_table_file(DATA_DIR / f"{stem}.hex")
        assert colours.shape == (64, 3) and meta["source"] and meta["description"]
        assert get_palette(meta["name"]).kind == "nes"
        names.add(meta["name"])
    assert len(names) == len(NES_TABLE_FILES)
    assert (DATA_DIR / "README.md").read_text().count(".hex`") >= len(NES_TABLE_FILES)


def test_default_nes_table_is_fceux_six_bit_levels():
    # FCEUX palettes.h stores 6-bit levels shifted left by 2: $01 = (0x09, 0x06, 0x23) << 2
    c = get_palette("nes").colours
    assert c[0x01].tolist() == [0x09 << 2, 0x06 << 2, 0x23 << 2]
    assert c[0x23].tolist() == [0x33 << 2, 0x22 << 2, 0x3F << 2]
    assert c[0x3D].tolist() == [0x31 << 2] * 3


def test_nes_tables_differ_from_each_other():
    from palettes.data import nes_table_names

    tables = {n: get_palette(n).colours.tobytes() for n in nes_table_names()}
    assert len(set(tables.values())) == len(tables)


def test_table_file_with_a_bad_line_names_file_and_line(tmp_path):
    from palettes.data import read_table_file

    f = tmp_path / "t.hex"
    f.write_text("; name: t\n" + "000000\n" * 10 + "12345g\n")
    with pytest.raises(ValueError, match=r"t\.hex:12"):
        read_table_file(f)
    f.write_text("000000\n" * 63)
    with pytest.raises(ValueError, match="63"):
        read_table_file(f)


# ------------------------------------------------------------------ colour maths
def test_lab_reference_values():
    lab = srgb_to_lab(np.array([[255, 255, 255], [255, 0, 0]]))
    assert np.allclose(lab[0], [100, 0, 0], atol=1e-6)
    assert np.allclose(lab[1], [53.2408, 80.0925, 67.2032], atol=1e-3)


def test_ciede2000_sharma_pair():
    d = ciede2000(np.array([50, 2.6772, -79.7751]), np.array([50, 0, -82.7485]))
    assert d == pytest.approx(2.0425, abs=1e-4)


# ------------------------------------------------------------------ exact nearest colour
def _hard_colours(rng, n=120_000):
    """Random colours plus colours right around palette Voronoi boundaries (midpoints)."""
    pal = get_palette("nes").colours.astype(np.int64)
    x = rng.integers(0, 256, (n, 3))
    i, j = rng.integers(0, 64, (2, n // 2))
    mid = (pal[i] + pal[j]) // 2 + rng.integers(-2, 3, (n // 2, 3))
    return np.clip(np.concatenate([x, mid]), 0, 255).astype(np.uint8)


def test_lab_mapper_equals_bruteforce(nes_mapper, rng):
    pal, m = nes_mapper
    x = _hard_colours(rng)
    assert np.array_equal(m.map(x), nearest_bruteforce(x, pal.colours, pal.usable()))


def test_lab_mapper_full_table_equals_kernel(nes_mapper, rng):
    pal, m = nes_mapper
    x = rng.integers(0, 256, (50_000, 3)).astype(np.uint8)
    assert np.array_equal(m.map(x, use_numba=False), m.map(x))


def test_lab_kernel_whole_cube_equals_table_rgb_rgba_threads(nes_mapper):
    """The numba kernel on all 2^24 colours (RGB and RGBA input, one or two threads) equals
    the numpy decoding of the table (itself checked against brute force in the slow test)."""
    _, m = nes_mapper
    full = m.full_table()
    p = np.arange(1 << 24, dtype=np.uint32)
    rgba = np.stack([(p >> 16).astype(np.uint8), (p >> 8).astype(np.uint8), p.astype(np.uint8),
                     np.full(p.shape, 7, np.uint8)], -1)
    assert np.array_equal(m.map(rgba, threads=1), full)
    assert np.array_equal(m.map(rgba, threads=2), full)
    rgb = np.ascontiguousarray(rgba[:, :3])
    assert np.array_equal(m.map(rgb, threads=2), full)
    assert np.array_equal(m.map(rgba[:, :3]), full)          # non-contiguous input


def test_wide_palette_uint16_table_and_escape_records(tmp_path, monkeypatch, rng):
    """A 256-colour palette: direct answers >= 128 need the uint16 coarse table, and the dense
    palette leaves many cells with > 4 distinct answers (escape records to raw blocks).
    Kernel, numpy decoding and the scalar lookup used by error diffusion are all exact."""
    import numba as nb

    from palettes.nearest import _get_numba_kernel

    monkeypatch.setenv("TILEGAN_CACHE", str(tmp_path))
    cols = np.random.default_rng(11).integers(0, 256, (256, 3)).astype(np.uint8)
    m = NearestMapper(cols)
    assert m.coarse.dtype == np.uint16 and len(m.raw) > 0
    x = np.concatenate([rng.integers(0, 256, (60_000, 3)),
                        np.clip((cols[rng.integers(0, 256, 30_000)].astype(int)
                                 + cols[rng.integers(0, 256, 30_000)]) // 2
                                + rng.integers(-2, 3, (30_000, 3)), 0, 255)]).astype(np.uint8)
    ref = nearest_bruteforce(x, cols)
    assert np.array_equal(m.map(x), ref)
    assert np.array_equal(m.map(x, use_numba=False), ref)
    lookup = _get_numba_kernel().lookup

    @nb.njit
    def scalar(px, coarse, recs, raw, n_rec):
        out = np.empty(len(px), np.uint8)
        for i in range(len(px)):
            out[i] = lookup(np.uint32(px[i, 0]), np.uint32(px[i, 1]), np.uint32(px[i, 2]),
                            coarse, recs, raw, n_rec)
        return out

    assert np.array_equal(scalar(x, m.coarse, m.recs, m.raw.reshape(-1), np.uint32(m.n_rec)), ref)
    # reloaded from the disk cache: same tables
    m2 = NearestMapper(cols)
    assert np.array_equal(m2.coarse, m.coarse) and np.array_equal(m2.recs, m.recs)


def test_rgb_table_exact_and_reloaded_from_disk_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TILEGAN_CACHE", str(tmp_path))
    pal = get_palette("pico8")
    m = NearestMapper(pal.colours, pal.usable(), metric="rgb")
    full = m.full_table()
    rng = np.random.default_rng(5)
    p = rng.integers(0, 1 << 24, 200_000)
    rgb = np.stack([(p >> 16) & 255, (p >> 8) & 255, p & 255], -1).astype(np.uint8)
    assert np.array_equal(full[p], nearest_bruteforce(rgb, pal.colours, metric="rgb"))
    # the table was cached on disk and loads back identical
    m2 = NearestMapper(pal.colours, pal.usable(), metric="rgb")
    assert np.array_equal(m2.full_table(), full)


def test_mapper_never_produces_excluded_indices(nes_mapper, rng):
    pal, m = nes_mapper
    x = np.concatenate([rng.integers(0, 256, (20000, 3)), np.zeros((10, 3), int)]).astype(np.uint8)
    out = set(np.unique(m.map(x)).tolist())
    assert out <= set(pal.usable().tolist())
    assert m.map(np.zeros((1, 3), np.uint8))[0] == 0x0F


def test_ciede2000_metric_matches_bruteforce(rng):
    pal = get_palette("c64")
    m = NearestMapper(pal.colours, metric="ciede2000")
    x = rng.integers(0, 256, (3000, 3)).astype(np.uint8)
    assert np.array_equal(m.map(x), nearest_bruteforce(x, pal.colours, metric="ciede2000"))


# ------------------------------------------------------------------ dithering
@pytest.mark.parametrize("mode", ["none", "bayer2", "bayer4", "bayer8", "floyd"])
def test_dither_modes_run_and_stay_in_palette(nes_mapper, mode):
    from palettes.dither import dither_map

    pal, m = nes_mapper
    g = np.linspace(0, 255, 32)
    img = np.stack(np.broadcast_arrays(g[None, :], g[:, None], 128 + 0 * g[None, :]), -1).astype(np.uint8)
    out = dither_map(img, m, mode)
    assert out.shape == (32, 32)
    assert set(np.unique(out).tolist()) <= set(pal.usable().tolist())
    if mode != "none":
        assert not np.array_equal(out, dither_map(img, m, "none"))


def test_dither_none_is_deterministic(nes_mapper, rng):
    from palettes.dither import dither_map

    _, m = nes_mapper
    img = rng.integers(0, 256, (20, 20, 3)).astype(np.uint8)
    assert np.array_equal(dither_map(img, m, "none"), dither_map(img.copy(), m, "none"))


# ------------------------------------------------------------------ clean-up
def _clean_art():
    """32x32 NES-style art: 4 colours per 16x16 area, a lone 'star' pixel, 1-px lines."""
    a = np.full((32, 32), 0x0F, np.uint8)
    a[4, 4] = 0x30                       # a star: isolated on purpose
    a[16:, :] = 0x19
    a[20, :] = 0x29                      # 1-px line
    a[24:28, 8:12] = 0x07
    a[2:10, 20:28] = 0x16
    a[5, 23] = 0x30                      # highlight
    return a


def test_cleanup_leaves_clean_art_unchanged(nes_mapper):
    from palettes.cleanup import limit_area_colours, remove_isolated

    pal, m = nes_mapper
    art = _clean_art()
    rgb = pal.colours[art]
    idx = m.map(rgb)
    assert np.array_equal(idx, art)
    lab, pl = srgb_to_lab(rgb), srgb_to_lab(pal.colours)
    out = remove_isolated(limit_area_colours(idx, lab, pl, pal.usable(), max_colours=4), lab, pl,
                          strength=2)
    assert np.array_equal(out, art)


def test_cleanup_reduces_isolated_pixels_and_colours_on_noise(nes_mapper, rng):
    from palettes.cleanup import area_colour_counts, isolated_mask, limit_area_colours, remove_isolated

    pal, m = nes_mapper
    base = pal.colours[_clean_art()].astype(np.int64)
    rgb = np.clip(base + rng.normal(0, 14, base.shape), 0, 255).astype(np.uint8)
    idx = m.map(rgb)
    lab, pl = srgb_to_lab(rgb), srgb_to_lab(pal.colours)
    lim = limit_area_colours(idx, lab, pl, pal.usable(), max_colours=4)
    out = remove_isolated(lim, lab, pl, strength=1)
    assert area_colour_counts(out).max() <= 4 < area_colour_counts(idx).max()
    assert isolated_mask(out).sum() < isolated_mask(idx).sum()


@pytest.mark.slow
def test_lab_mapper_whole_cube_equals_bruteforce(nes_mapper):
    """All 2^24 colours, NES palette, CIELAB: the table equals the float64 brute force."""
    pal, m = nes_mapper
    full = m.full_table().reshape(256, 256, 256)
    g, b = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    for r in range(256):
        rgb = np.stack([np.full_like(g, r), g, b], -1).astype(np.uint8)
        ref = nearest_bruteforce(rgb, pal.colours, pal.usable())
        assert np.array_equal(full[r], ref), f"r={r}"


def test_numba_and_numpy_builders_agree_on_whole_cube():
    """The fast (numba) builder and the plain numpy builder give identical tables."""
    pytest.importorskip("numba")
    from palettes.nearest import _build_tables, _build_tables_numba

    pal = get_palette("gameboy")
    a = _build_tables_numba(pal.colours, pal.usable(), "rgb")
    b = _build_tables(pal.colours, pal.usable(), "rgb")
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
