"""stages.retile: a reference screen rebuilt from a tile set (core on arrays), its files (TMX
that pytmx and Tiled read, preview = the map's render), and `pipeline retile`."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from stages import retile as R
from stages._common import InputError, ParamError, save_npy, save_npz, write_json
from tilesets.artifacts import TileSet
from tilesets.bank import apply_cells
from tilesets.cells import encode_cells
from tilesets.render import render_map
from tilesets.tiled import bank_ids_to_gids

PAL = np.array([[0, 0, 0], [252, 252, 252], [168, 16, 0], [0, 120, 248]], np.uint8)


def _bank(k=6, seed=0):
    """``k`` distinct, asymmetric 16x16 RGBA tiles of 4x4 blocks of PAL colours with a
    one-pixel diagonal (native pixel art, not an upscale)."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < k:
        b = rng.integers(0, 4, (4, 4))
        b[0, 0], b[0, 3] = 0, 1
        if not any((b == o).all() for o in out):
            out.append(b)
    idx = np.stack([np.kron(b, np.ones((4, 4), int)) for b in out])
    idx[:, np.arange(16), np.arange(16)] = (idx[:, np.arange(16), np.arange(16)] + 1) % 4
    rgba = np.full(idx.shape + (4,), 255, np.uint8)
    rgba[..., :3] = PAL[idx]
    return rgba


def _tileset(k=6, flips=True, palette=None):
    return TileSet(_bank(k), {"m": np.zeros((1, 1), np.uint32)}, flips=flips,
                   palette=palette)


def _layout(rows=3, cols=4, k=6, seed=1, flips=True):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, k, (rows, cols))
    orient = rng.integers(0, 4, (rows, cols)) if flips else np.zeros((rows, cols), int)
    return encode_cells(ids, orient)


def _save_tileset(folder, ts):
    folder.mkdir(parents=True, exist_ok=True)
    ts.save(folder, save_npy, save_npz, write_json)
    return folder


# --------------------------------------------------------------------------- core
def test_a_screen_of_bank_tiles_comes_back_exactly():
    ts = _tileset()
    cells = _layout()
    image = apply_cells(ts.bank, cells)
    r = R.retile_image(image, ts, R.Params())
    assert np.array_equal(r.cells, cells) and np.array_equal(r.preview, image)
    assert r.warnings == [] and r.summary()["mean_delta_e"] == 0.0


def test_without_flips_no_cell_is_flipped():
    ts = _tileset(flips=False)
    image = apply_cells(ts.bank, _layout())
    r = R.retile_image(image, ts, R.Params())
    assert not (r.cells & np.uint32(0xE0000000)).any()


def test_nes_keeps_at_most_64_tiles_a_screen():
    bank = _bank(80, seed=3)
    ts = TileSet(bank, {"m": np.zeros((1, 1), np.uint32)}, flips=False)
    image = apply_cells(bank, np.arange(80, dtype=np.uint32).reshape(8, 10))
    assert R.retile_image(image, ts, R.Params()).summary()["distinct_tiles"] == 80
    assert R.retile_image(image, ts, R.Params(nes=True)).summary()["distinct_tiles"] <= 64


def test_preview_is_the_render_of_the_map():
    ts = _tileset()
    rng = np.random.default_rng(4)
    foreign = rng.integers(0, 256, (48, 64, 4)).astype(np.uint8)
    foreign[..., 3] = 255
    r = R.retile_image(foreign, ts, R.Params())
    assert np.array_equal(r.preview, render_map(bank_ids_to_gids(r.cells), ts.bank))


def test_sides_off_the_grid_are_cropped_with_a_warning_saying_how():
    ts = _tileset()
    image = apply_cells(ts.bank, _layout())[:40, :57]
    r = R.retile_image(image, ts, R.Params(), name="shot.png")
    assert r.cells.shape == (2, 3)
    assert r.warnings == ["shot.png: size 57x40 is not a multiple of 16; cropped to 48x32 "
                          "(9 px off the right, 8 px off the bottom)"]


def test_sides_off_the_grid_can_be_padded():
    ts = _tileset()
    image = apply_cells(ts.bank, _layout())[:40, :57]
    r = R.retile_image(image, ts, R.Params(pad_mode="pad"), name="shot.png")
    assert r.cells.shape == (3, 4) and "padded with transparent pixels to 64x48" in r.warnings[0]


def test_an_integer_upscale_is_retiled_at_native_pixels_with_a_warning():
    ts = _tileset()
    cells = _layout()
    image = apply_cells(ts.bank, cells).repeat(3, 0).repeat(3, 1)
    r = R.retile_image(image, ts, R.Params(), name="x3.png")
    assert np.array_equal(r.cells, cells)
    assert r.warnings == ["x3.png: 192x144 is a 3x nearest-neighbour upscale; retiled at its "
                          "native 64x48 pixels (--no-native keeps them)"]
    kept = R.retile_image(image, ts, R.Params(native=False), name="x3.png")
    assert kept.cells.shape == (9, 12)


def test_colours_off_the_palette_are_mapped_first_with_a_warning():
    ts = _tileset(palette=PAL.tolist())
    cells = _layout()
    image = apply_cells(ts.bank, cells).copy()
    white = (image[..., :3] == PAL[1]).all(-1)
    image[white, :3] = (240, 240, 235)                        # an off-palette near-white
    r = R.retile_image(image, ts, R.Params(), name="s.png")
    assert np.array_equal(r.cells, cells)
    assert len(r.warnings) == 1 and r.warnings[0].startswith("s.png: 1 colours (")
    assert "not in the tile set's palette; mapped to its nearest colours" in r.warnings[0]


def test_fully_transparent_image_is_one_clear_error():
    with pytest.raises(InputError, match=r"^clear.png: the image is fully transparent; "
                                         r"nothing to retile$"):
        R.retile_image(np.zeros((32, 32, 4), np.uint8), _tileset(), R.Params(), name="clear.png")


def test_image_smaller_than_a_tile_is_one_clear_error():
    tiny = np.full((8, 12, 4), 255, np.uint8)
    with pytest.raises(InputError, match="12x8 is smaller than one 16x16 tile"):
        R.retile_image(tiny, _tileset(), R.Params(), name="tiny.png")


def test_bad_seam_weight_is_a_param_error():
    with pytest.raises(ParamError, match="retile: seam_weight must be 'auto' or a number >= 0"):
        R.Params(seam_weight="-2")


# --------------------------------------------------------------------------- files
def _foreign_png(path, seed=5):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (37, 50, 3)).astype(np.uint8)).save(path)
    return path


def test_foreign_image_gives_a_tmx_pytmx_loads_whose_render_is_the_preview(tmp_path):
    from tests._helpers_tiled import load_tmx, pytmx_cells

    ts = _tileset(palette=PAL.tolist())
    art = _save_tileset(tmp_path / "art", ts)
    rows = R.retile_files([_foreign_png(tmp_path / "shot.png")], art, tmp_path / "out",
                          R.Params())
    tmx = tmp_path / "out" / "shot.tmx"
    assert rows[0]["files"][0] == str(tmx) and rows[0]["warnings"]
    m = load_tmx(tmx)
    gids, flips = pytmx_cells(m)
    assert (m.width, m.height, m.tilewidth) == (3, 2, 16) and gids.min() >= 1
    preview = np.asarray(Image.open(tmp_path / "out" / "shot.png").convert("RGBA"))
    assert np.array_equal(render_map(gids | flips, ts.bank), preview)
    info = json.loads((tmp_path / "out" / "shot.json").read_text())
    assert info["tsx"] == R.tileset_name(ts) + ".tsx" and info["rows"] == 2


def test_written_map_renders_in_tiled_as_the_preview(tmp_path):
    from tests._helpers_tiled import assert_matches_tiled, require_tmxrasterizer

    require_tmxrasterizer()
    art = _save_tileset(tmp_path / "art", _tileset())
    R.retile_files([_foreign_png(tmp_path / "shot.png")], art, tmp_path / "out", R.Params())
    assert_matches_tiled(tmp_path / "out" / "shot.tmx", tmp_path / "out" / "shot.png")


def test_tile_sheet_holds_tile_i_at_row_i_div_columns():
    bank = _bank(20)
    sheet = R.tile_sheet(bank, columns=16)
    assert sheet.shape == (32, 256, 4)
    assert np.array_equal(sheet[16:32, 48:64], bank[19]) and not sheet[16:, 64:].any()


def test_two_tile_sets_never_share_a_tileset_file():
    other = TileSet(_bank(6, seed=9), {"m": np.zeros((1, 1), np.uint32)})
    assert R.tileset_name(_tileset()) != R.tileset_name(other)
    assert R.tileset_name(_tileset()) == R.tileset_name(_tileset())


def test_not_a_tileset_folder_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="not a tile set"):
        R.retile_files([_foreign_png(tmp_path / "s.png")], tmp_path, tmp_path / "o", R.Params())


# --------------------------------------------------------------------------- CLI
def test_cli_retile_writes_the_map_and_prints_it(tmp_path):
    from pipeline.cli import app

    art = _save_tileset(tmp_path / "art", _tileset())
    shot = _foreign_png(tmp_path / "shot.png")
    res = CliRunner().invoke(app, ["retile", str(shot), "--tileset", str(art),
                                   "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert str(tmp_path / "o" / "shot.tmx") in res.stdout
    assert (tmp_path / "o" / R.tileset_name(TileSet.load(art))).with_suffix(".tsx").is_file()


def test_cli_retile_without_a_cached_tileset_is_one_line(tmp_path, capsys):
    from pipeline.cli import main

    (tmp_path / "pipeline.toml").write_text(f'[pipeline]\nout = "{tmp_path / "out"}"\n')
    shot = _foreign_png(tmp_path / "shot.png")
    with pytest.raises(SystemExit) as e:
        main(["retile", str(shot), "--config", str(tmp_path / "pipeline.toml")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 1 and "\n" not in err and "no tile set in the cache" in err
