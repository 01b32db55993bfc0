"""Positional models (issue #16, whole screens): where in its screen each patch lies, from crop
to the networks and back out of sample."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from stages import crop, sample, train
from stages._common import InputError, ParamError
from stages._gan import Discriminator, Generator
from stages._gan_config import (GANConfig, patch_where, screen_span, style_screen_height,
                                where_rows)
from tilesets.artifacts import ArtifactError, Patches

pytestmark = pytest.mark.usefixtures("torch_one_thread")

CFG = GANConfig(height=32, width=32, nz=8, ngf=4, ndf=4, g_arch="fcn", upsample="nearest",
                d_scales=2, screen_height=96)


def striped_screen(height: int, width: int = 64) -> np.ndarray:
    """RGBA screen whose every pixel row has its own colour (row y: red = y)."""
    a = np.zeros((height, width, 4), np.uint8)
    a[..., 0] = np.arange(height, dtype=np.uint8)[:, None]
    a[..., 1] = 40
    a[..., 3] = 255
    return a


def test_crop_records_each_patch_top_row_and_its_screen_height():
    screens = [striped_screen(96), striped_screen(64)]
    r = crop.crop_screens([(f"s{i}.png", s) for i, s in enumerate(screens)],
                          crop.Params(patch_size=32, stride=16, max_patches=1000, flip=True))
    rows = r.patches.rows
    assert rows.shape == (len(r.patches.images), 2) and rows.dtype == np.int32
    # a patch's first row is red = its top row in the screen; its screen's height rides along
    assert np.array_equal(r.patches.images[:, 0, 0, 0], rows[:, 0])
    assert sorted(set(rows[:, 1].tolist())) == [64, 96]
    assert set(rows[rows[:, 1] == 96, 0].tolist()) == {0, 16, 32, 48, 64}


def test_patch_rows_survive_save_and_load_and_bad_rows_are_refused(tmp_path):
    images = np.zeros((3, 32, 32, 3), np.uint8)
    rows = np.array([[0, 96], [32, 96], [64, 96]], np.int32)
    Patches(images, rows=rows).save(tmp_path, lambda p, a: np.save(p, a))
    assert np.array_equal(Patches.load(tmp_path).rows, rows)
    with pytest.raises(ArtifactError, match="patch_rows.npy"):      # last patch leaves its screen
        Patches(images, rows=np.array([[0, 96], [32, 96], [80, 96]], np.int32)).validate()


def test_where_rows_run_from_the_screen_top_to_its_bottom():
    whole = where_rows([0.0], [1.0], 4)[0]
    assert np.allclose(whole, [-0.75, -0.25, 0.25, 0.75])             # cell centres, symmetric
    top, bottom = patch_where(np.array([[0, 96], [64, 96]]), 32, 2)
    assert np.allclose(top, [2 * 8 / 96 - 1, 2 * 24 / 96 - 1])
    assert np.allclose(bottom, [2 * 72 / 96 - 1, 2 * 88 / 96 - 1])
    assert screen_span(CFG, 32) == pytest.approx(1 / 3)              # a patch: a window
    assert screen_span(CFG, 64) == 1.0 and screen_span(CFG, 240) == 1.0   # taller: whole screens


def test_a_positional_config_needs_the_fcn_generator_and_a_screen_as_tall_as_a_patch():
    with pytest.raises(ValueError, match="fcn"):
        GANConfig(height=32, width=32, screen_height=96).validate()
    with pytest.raises(ValueError, match="screen_height"):
        GANConfig(height=32, width=32, g_arch="fcn", screen_height=16).validate()


def test_generator_draws_differently_at_another_height_of_the_screen():
    torch.manual_seed(0)
    G = Generator(CFG).eval()
    z = torch.randn(2, *CFG.noise_shape())
    with torch.no_grad():
        cells = CFG.noise_shape()[1]
        top = G(z, where=torch.from_numpy(where_rows([0, 0], [1 / 3] * 2, cells)))
        low = G(z, where=torch.from_numpy(where_rows([2 / 3] * 2, [1 / 3] * 2, cells)))
    assert not torch.allclose(top, low)


def test_default_positions_span_a_whole_screen_and_depend_only_on_each_image_noise():
    G = Generator(CFG)
    big = torch.randn(3, 8, 6, 5)                   # 6 cells of 8 px = 48 > 32: a whole screen
    w = G.default_where(big)
    assert torch.allclose(w, torch.from_numpy(where_rows([0] * 3, [1] * 3, 6)))
    small = torch.randn(64, *CFG.noise_shape())
    w = G.default_where(small)
    assert float(w.min()) >= -1 and float(w.max()) <= 1
    assert float(w[:, 0].max() - w[:, 0].min()) > 0.5                 # windows all over the screen
    assert torch.equal(G.default_where(small[5:6]), w[5:6])           # batch does not matter


def test_discriminator_judges_the_position_it_is_given():
    torch.manual_seed(0)
    D = Discriminator(CFG)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with pytest.raises(ValueError, match="where"):
        D(x)
    up = D(x, where=torch.from_numpy(where_rows([0, 0], [1 / 3] * 2, 2)))
    down = D(x, where=torch.from_numpy(where_rows([2 / 3] * 2, [1 / 3] * 2, 2)))
    assert up.shape == (2, 2) and not torch.allclose(up, down)


def test_position_needs_spatial_noise_and_patch_rows(tmp_path):
    with pytest.raises(ParamError, match="spatial-noise"):
        train.Params(position=True)
    npy = tmp_path / "p.npy"
    np.save(npy, np.zeros((8, 32, 32, 3), np.uint8))
    with pytest.raises(InputError, match="patch_rows.npy"):
        train.run({"patches": [npy]}, _tiny(), tmp_path / "out")


def _tiny(**kw) -> train.Params:
    return train.Params(**{**train.TINY, "size": 32, "spatial_noise": True, "position": True,
                           **kw})


def _artifact(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (24, 32, 32, 3), dtype=np.uint8)
    rows = np.stack([(np.arange(24) % 3) * 32, np.full(24, 96)], 1).astype(np.int32)
    folder.mkdir(parents=True)
    Patches(images, rows=rows).save(folder, lambda p, a: np.save(p, a))
    return folder


def test_loading_rows_for_smaller_squares_gives_each_square_its_own_row(tmp_path):
    art = _artifact(tmp_path / "crop")
    rows = train.load_patch_rows([art], 24 * 4, 16)                   # each 32-px patch -> 4 squares
    assert rows[:4].tolist() == [[0, 96], [0, 96], [16, 96], [16, 96]]
    assert rows[4:8].tolist() == [[32, 96], [32, 96], [48, 96], [48, 96]]


def test_a_positional_model_trains_resumes_and_samples_whole_screens(tmp_path):
    art = _artifact(tmp_path / "crop")
    out = tmp_path / "out"
    out.mkdir()
    s = train.run({"patches": [art]}, _tiny(steps=2), out)
    ck = torch.load(out / "ckpt.pt", weights_only=True)
    assert ck["config"]["gan"]["screen_height"] == 96 and s["steps"] == 2
    s = train.run({"patches": [art]}, _tiny(steps=4), out)            # resumes from step 2
    assert s["resumed_from"] == 2 and s["steps"] == 4
    G, info = sample.load_generator(out / "ckpt.pt")
    images = sample.sample_images(G, 2, seed=0, width=64, height=96)
    assert images.shape == (2, 96, 64, 3)
    # a wider noise keeps each patch-sized image's window where the unscaled draw puts it
    z = torch.randn(3, *G.cfg.noise_shape(), generator=torch.Generator().manual_seed(1))
    wide = sample.sample_images(G, 3, seed=1, noise_scale=1.3)
    assert np.array_equal(wide, sample.generate(G, z * 1.3, batch=3, where=G.default_where(z)))
    assert not np.array_equal(wide, sample.generate(G, z * 1.3, batch=3))


def _two_game_artifact(folder: Path) -> Path:
    """Game "tall" cut from 96-px screens, game "short" from 64-px ones."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (24, 32, 32, 3), dtype=np.uint8)
    games = np.arange(24, dtype=np.int32) % 2
    rows = np.stack([np.where(games == 0, (np.arange(24) % 3) * 32, (np.arange(24) % 2) * 32),
                     np.where(games == 0, 96, 64)], 1).astype(np.int32)
    folder.mkdir(parents=True)
    Patches(images, games, ["tall", "short"], rows).save(folder, lambda p, a: np.save(p, a))
    return folder


def test_each_style_median_screen_height_is_measured_over_its_own_patches():
    rows = np.array([[0, 128], [0, 128], [64, 240], [0, 240], [0, 192]])
    labels = np.array([0, 0, 1, 1, 2])
    assert train.style_screen_heights(rows, labels, ["a", "b", "c"]) == (128, 240, 192)
    assert train.style_screen_heights(rows, labels, ["a", "b", "c", "d"])[3] == 192  # no patches
    assert train.style_screen_heights(None, labels, ["a", "b"]) == ()
    assert train.style_screen_heights(rows, None, []) == ()


def test_a_style_is_drawn_at_its_own_screen_height_rounded_to_the_stride():
    cfg = GANConfig(height=32, width=32, nz=8, ngf=4, ndf=4, g_arch="fcn", upsample="nearest",
                    classes=("a", "b"), screen_height=96, class_height=(128, 70))
    assert style_screen_height(cfg, 240, 0) == 128
    assert cfg.stride == 8 and style_screen_height(cfg, 240, 1) == 72   # 70: nearest multiple
    assert style_screen_height(cfg, 240) == 96                 # no style: the corpus's median
    assert style_screen_height(cfg, 32, 0) == 32               # a patch, not a whole screen
    old = GANConfig(**{**cfg.to_dict(), "class_height": ()})   # checkpoints from before
    assert style_screen_height(old, 240, 0) == 96
    with pytest.raises(ValueError, match="class_height"):
        GANConfig(**{**cfg.to_dict(), "class_height": (128,)}).validate()


def test_sample_style_height_draws_each_game_at_its_screens_height(tmp_path):
    art = _two_game_artifact(tmp_path / "crop")
    out = tmp_path / "train"
    out.mkdir()
    train.run({"patches": [art]}, _tiny(steps=2, conditional="on"), out)
    ck = torch.load(out / "ckpt.pt", weights_only=True)
    assert ck["config"]["gan"]["class_height"] == (96, 64)
    G, _ = sample.load_generator(out / "ckpt.pt")
    both = sample.sample_screens(G, 6, seed=3, width=64, height=128, noise_scale=1.15)
    labels = sample.style_labels(G.cfg, 6, seed=3)
    assert [im.shape[0] for im in both] == [96 if y == 0 else 64 for y in labels.tolist()]
    assert {im.shape[0] for im in both} == {96, 64}
    # the same noise as one draw at the asked height: its top rows, per style
    z = torch.randn(6, *G.cfg.noise_shape(128, 64), generator=torch.Generator().manual_seed(3))
    i = int(np.flatnonzero(labels.numpy() == 1)[0])
    zi = z[i:i + 1, :, :64 // G.cfg.stride]
    want = sample.generate(G, zi * 1.15, batch=1, labels=labels[i:i + 1],
                           where=G.default_where(zi))
    assert np.array_equal(both[i], want[0])
    # the stage writes them, says each file's height, and the plain draw stays as asked
    shots = tmp_path / "shots"
    s = sample.run({"checkpoint": [out]}, sample.Params(n=6, seed=3, width=64, height=128,
                                                          style_height=True), shots)
    assert s["heights"] == {"short": 64, "tall": 96} and s["size"] == [96, 64]
    meta = json.loads((shots / "samples.json").read_text())
    assert meta["heights"] == [im.shape[0] for im in both]
    plain = sample.run({"checkpoint": [out]}, sample.Params(n=6, seed=3, width=64, height=128),
                       tmp_path / "plain")
    assert plain["size"] == [128, 64] and "heights" not in plain
