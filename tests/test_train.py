"""Tests for the train stage, its networks (stages._gan), DiffAugment and metrics.

Everything runs tiny models (ngf 4-8, a handful of steps) on hand-made patches.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
import pytest
import torch

from stages import train
from stages._augment import (augment_cutout, augment_tiles, augment_translation, diff_augment,
                             parse_policy)
from stages._common import InputError, ParamError, StageError
from stages._gan import Discriminator, GANConfig, Generator
from stages._metrics import colours_per_tile, share_over, swd

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def tiny(**kw) -> train.Params:
    """The smoke configuration (train.TINY) at 32×32 unless overridden."""
    return train.Params(**{**train.TINY, "size": 32, **kw})


def make_patches(path: Path, n: int = 24, size: int = 32, channels: int = 3, seed: int = 0) -> Path:
    """``blocky`` patches saved as .npy at ``path``."""
    np.save(path, blocky(n, size, channels, seed))
    return path


def blocky(n: int = 24, size: int = 32, channels: int = 3, seed: int = 0) -> np.ndarray:
    """Blocky two-colour patches, uint8 (n, size, size, channels): flat 8×8 blocks, pixel-art-like."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 2, (n, size // 8, size // 8))
    colours = rng.integers(0, 256, (n, 2, channels), dtype=np.uint8)
    a = colours[np.arange(n)[:, None, None], blocks]                   # (n, s/8, s/8, C)
    a = a.repeat(8, axis=1).repeat(8, axis=2)
    if channels == 4:
        a[..., 3] = np.where(blocks.repeat(8, 1).repeat(8, 2) == 0, 0, 255)
    return np.ascontiguousarray(a)


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture
def patches(tmp_path: Path) -> Path:
    return make_patches(tmp_path / "patches.npy")


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------ parameters
@pytest.mark.parametrize("field,value,message", [
    ("size", 48, "size must be one of"),
    ("channels", 2, "channels must be one of"),
    ("steps", 0, "steps must be at least 1"),
    ("batch", 0, "batch must be at least 1"),
    ("nz", 0, "nz must be at least 1"),
    ("ckpt_every", 0, "ckpt_every must be at least 1"),
    ("log_every", 0, "log_every must be at least 1"),
    ("swd_every", -2, "swd_every must be at least -1"),
    ("max_minutes", -1.0, "max_minutes must be at least 0"),
    ("lr_decay", 1.5, "lr_decay must be within 0..1"),
    ("loss", "wgan", "loss must be one of hinge, bce"),
    ("upsample", "bilinear", "upsample must be one of deconv, nearest"),
    ("precision", "fp16", "precision must be one of"),
    ("mbstd", -1, "mbstd must be at least 0"),
    ("mode_seeking", -1.0, "mode_seeking must be at least 0"),
    ("instance_noise", -0.1, "instance_noise must be at least 0"),
    ("max_rollbacks", -1, "max_rollbacks must be at least 0"),
    ("ema", 1.0, "ema must be below 1"),
    ("label_smoothing", 0.5, "label_smoothing must be below 0.5"),
    ("swd_holdout", 0.9, "swd_holdout must be below 0.9"),
    ("lr_g", 0.0, "lr_g must be positive"),
    ("lr_d", -1e-4, "lr_d must be positive"),
    ("betas", (0.5, 1.0), "betas must be two numbers in"),
    ("betas", (0.5,), "betas must be two numbers in"),
    ("diffaug", "translation,blur", "diffaug: unknown DiffAugment op"),
    ("device", "tpu", "device must be auto, cpu or cuda"),
    ("d_scales", 3, "d_scales must be 0 \\(auto\\) or 1..2 for size 32"),
    ("mode_seeking", 1.0, "mode_seeking needs batch >= 2"),
])
def test_params_out_of_range_are_refused_naming_the_field(field, value, message):
    with pytest.raises(ParamError, match=f"train: {message}") as e:
        tiny(**{field: value, **({"batch": 1} if message.endswith("batch >= 2") else {})})
    assert e.value.field == field


def test_params_are_checked_without_importing_torch():
    code = ("import sys; from stages import train, sample; train.Params(); sample.Params(); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([PY, "-c", code], cwd=ROOT, check=True, timeout=60)


# ------------------------------------------------------------------ networks
@pytest.mark.parametrize("size,channels", [(32, 3), (64, 3), (128, 3), (64, 4)])
def test_networks_map_noise_to_image_and_image_to_one_logit(size, channels):
    cfg = GANConfig(height=size, width=size, channels=channels, nz=8, ngf=4, ndf=4)
    G, D = Generator(cfg), Discriminator(cfg)
    x = G(torch.randn(2, 8))
    assert x.shape == (2, channels, size, size)
    assert float(x.detach().abs().max()) <= 1.0
    assert D(x).shape == (2,)


@pytest.mark.parametrize("size", [32, 64, 128])
def test_nearest_upsampling_generator_builds_every_size(size):
    cfg = GANConfig(height=size, width=size, nz=8, ngf=4, ndf=4, upsample="nearest")
    G = Generator(cfg)
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in G.main[3:])
    assert G(torch.randn(2, 8)).shape == (2, 3, size, size)


@pytest.mark.parametrize("cin,cout,h,w", [(5, 3, 6, 7), (16, 4, 8, 8), (3, 1, 1, 2)])
def test_subpixel_upconv_equals_upsample_then_conv(cin, cout, h, w):
    from stages._gan import NearestUpConv

    torch.manual_seed(0)
    fast = NearestUpConv(cin, cout)
    plain = torch.nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
    plain.load_state_dict(fast.state_dict())              # same weight, same checkpoint keys
    x1 = torch.randn(2, cin, h, w, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    y1 = fast(x1)
    y2 = plain(torch.nn.functional.interpolate(x2, scale_factor=2, mode="nearest"))
    assert y1.shape == (2, cout, 2 * h, 2 * w)
    torch.testing.assert_close(y1, y2, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(y1)
    y1.backward(g)
    y2.backward(g)
    torch.testing.assert_close(x1.grad, x2.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast.weight.grad, plain.weight.grad, atol=1e-4, rtol=1e-5)


def test_generator_image_layer_uses_subpixel_form_and_keeps_checkpoint_keys():
    from stages import _gan

    cfg = GANConfig(height=32, width=32, nz=8, ngf=8, ndf=4, upsample="nearest")
    G = Generator(cfg)
    assert isinstance(G.main[-2], _gan.NearestUpConv)     # the 8 -> 3 image layer
    assert not isinstance(G.main[-6], _gan.NearestUpConv)  # wide layers keep the plain form
    old = _gan.SUBPIXEL_MAX_COUT
    try:
        _gan.SUBPIXEL_MAX_COUT = 0
        G_plain = Generator(cfg)
    finally:
        _gan.SUBPIXEL_MAX_COUT = old
    assert G_plain.state_dict().keys() == G.state_dict().keys()
    G_plain.load_state_dict(G.state_dict())
    G.eval(), G_plain.eval()
    z = torch.randn(3, 8)
    torch.testing.assert_close(G(z), G_plain(z), atol=1e-5, rtol=1e-5)


def test_multiscale_discriminator_judges_pooled_copies_side_by_side():
    cfg = GANConfig(height=64, width=64, nz=8, ngf=4, ndf=4, d_scales=3)
    D = Discriminator(cfg).eval()               # eval: no power iteration between calls
    x = torch.randn(2, 3, 64, 64)
    out = D(x)
    assert out.shape == (2, 3)
    torch.testing.assert_close(out[:, 0], D.main(x).reshape(2))            # full size first
    torch.testing.assert_close(out[:, 2], D.coarse[1](torch.nn.functional.avg_pool2d(x, 4)))
    one = Discriminator(GANConfig(height=64, width=64, nz=8, ngf=4, ndf=4))
    assert not any(k.startswith("coarse") for k in one.state_dict())      # old checkpoints load


def test_minibatch_std_groups_never_mix_real_and_fake():
    from stages._gan import _minibatch_std

    h = torch.zeros(12, 2, 4, 4)
    h[6:] = torch.arange(6.0)[:, None, None, None]          # the fake half varies, the real does not
    out = _minibatch_std(h, 4, parts=2)                      # 6 per part: groups of 3
    assert out.shape == (12, 3, 4, 4)
    assert torch.all(out[:6, 2] < 1e-3)                      # real groups see no spread
    assert torch.allclose(out[6:, 2], torch.full((6, 4, 4), (2 / 3) ** 0.5), atol=1e-4)
    D = Discriminator(GANConfig(height=32, width=32, nz=8, ngf=4, ndf=4, mbstd=4, d_scales=2)).eval()
    assert D(torch.randn(8, 3, 32, 32), parts=2).shape == (8, 2)


def _trainer(**options) -> train.Trainer:
    p = tiny(**options)
    return train.Trainer(p, train.gan_config(p, 3), torch.device("cpu"))


@pytest.mark.parametrize("options", [{"mbstd": 2}, {"d_scales": 2}, {"d_scales": 1},
                                     {"spectral_norm": False, "loss": "bce"}])
def test_trainer_steps_with_every_discriminator_layout(options):
    trainer, real = _trainer(**options), blocky(4)
    for step in range(3):
        lossD, lossG, ok = trainer.step(step, real)
        assert ok and np.isfinite(lossD) and np.isfinite(lossG)


def test_d_scales_auto_is_two_scales_from_32_pixels_up():
    assert train.gan_config(train.Params(size=32), 3).d_scales == 2
    assert train.gan_config(train.Params(size=16), 3).d_scales == 1
    assert train.gan_config(train.Params(size=64, d_scales=1), 3).d_scales == 1


def test_non_square_screen_size_builds():
    cfg = GANConfig(height=224, width=256, nz=8, ngf=2, ndf=2, spectral_norm=False)
    x = Generator(cfg)(torch.randn(1, 8))
    assert x.shape == (1, 3, 224, 256)
    assert Discriminator(cfg)(x).shape == (1,)


def test_size_that_cannot_double_is_refused():
    with pytest.raises(ValueError, match="12x12 cannot be built by doubling"):
        GANConfig(height=12, width=12).validate()


# ------------------------------------------------------------------ augmentation and metrics
def test_translation_shifts_by_whole_pixels_with_zero_fill():
    x = torch.arange(1, 1 + 2 * 16 * 16, dtype=torch.float32).reshape(2, 1, 16, 16)
    y = augment_translation(x, generator=torch.Generator().manual_seed(3))
    # every output value is either 0 (fill) or a value of the same image: no blending
    for i in range(2):
        vals = set(y[i].unique().tolist()) - {0.0}
        assert vals <= set(x[i].unique().tolist())


def test_cutout_zeroes_a_half_side_square():
    x = torch.ones(4, 3, 16, 16)
    y = augment_cutout(x, generator=torch.Generator().manual_seed(0))
    zeros = (y[:, 0] == 0).sum(dim=(1, 2))
    assert (zeros > 0).all() and (zeros <= 64).all()


def test_tile_translation_keeps_every_pixel_on_its_grid_place():
    b, h, w = 64, 48, 64
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    x = torch.stack([ys % 16, xs % 16, ys * w + xs]).float()[None].repeat(b, 1, 1, 1)
    y = augment_tiles(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(y[:, :2], x[:, :2])                      # same place in its tile
    assert torch.equal(y[:, 2].reshape(b, -1).sort(1).values,   # nothing lost or filled in
                       x[:, 2].reshape(b, -1).sort(1).values)
    assert (y[:, 2] != x[:, 2]).any(dim=(1, 2)).sum() > b // 2   # most images moved
    odd = torch.rand(2, 3, 20, 20)
    assert torch.equal(augment_tiles(odd), odd)                 # off the 16-px grid: left alone


def test_grid8_translation_shifts_by_whole_8px_steps():
    b, h, w = 32, 64, 64
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    x = torch.stack([ys % 8 + 1, xs % 8 + 1]).float()[None].repeat(b, 1, 1, 1)
    y = augment_translation(x, generator=torch.Generator().manual_seed(3), step=8)
    inside = y[:, 0] > 0                                   # zero fill where nothing came in
    assert torch.equal(y[:, :2][inside[:, None].expand(-1, 2, -1, -1)],
                       x[:, :2][inside[:, None].expand(-1, 2, -1, -1)])   # same 8-px grid place
    assert (~inside).any(dim=(1, 2)).sum() > b // 2                     # most images moved
    z = diff_augment(x, parse_policy("grid8"), generator=torch.Generator().manual_seed(3))
    assert torch.equal(z, y)


def test_diffaug_keeps_shape_and_gradients():
    x = torch.rand(3, 4, 16, 16, requires_grad=True)
    y = diff_augment(x, parse_policy("translation,tiles,cutout,color"),
                     generator=torch.Generator().manual_seed(0))
    y.sum().backward()
    assert y.shape == x.shape and x.grad is not None
    assert torch.equal(y[:, 3] != 0, y[:, 3] != 0)        # alpha exists and untouched by colour


def test_swd_is_lower_for_same_distribution_than_for_noise():
    base, other = blocky(64, seed=1), blocky(64, seed=2)
    noise = np.random.default_rng(0).integers(0, 256, base.shape, dtype=np.uint8)
    same = swd(base, other, seed=0, n_per_image=16)["swd"]
    diff = swd(base, noise, seed=0, n_per_image=16)["swd"]
    assert same < diff


def test_colours_per_tile_counts_distinct_colours():
    img = np.zeros((1, 16, 32, 3), np.uint8)
    img[0, :, 16:, 0] = np.arange(16)[:, None]                           # 16 colours in tile 2
    counts = colours_per_tile(img)
    assert counts.tolist() == [1, 16]
    assert share_over(counts, 4) == 0.5


# ------------------------------------------------------------------ data order
def test_batch_indices_depend_only_on_seed_and_step():
    a = train.batch_indices(7, 5, 30, 8)
    assert np.array_equal(a, train.batch_indices(7, 5, 30, 8))
    assert not np.array_equal(a, train.batch_indices(8, 5, 30, 8))
    # one epoch of steps covers every index exactly once
    epoch = np.concatenate([train.batch_indices(7, s, 32, 8) for s in range(4)])
    assert sorted(epoch.tolist()) == list(range(32))


def test_images_are_cut_into_size_squares(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((40, 70, 3), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(tmp_path / "small.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    arr, skipped = train.load_patches([tmp_path], size=32, channels=4)
    assert arr.shape == (2, 32, 32, 4) and arr.dtype == np.uint8
    assert {Path(s["path"]).name for s in skipped} == {"small.png", "bad.png"}


def test_crop_artifact_folder_is_read_through_its_patches_file(tmp_path):
    a = np.arange(2 * 32 * 32 * 3).astype(np.uint8).reshape(2, 32, 32, 3)
    np.save(tmp_path / "patches.npy", a)
    np.save(tmp_path / "other.npy", np.zeros((1, 64, 64, 4), np.uint8))  # not the artifact
    arr, skipped = train.load_patches([tmp_path], size=16, channels=0)
    assert arr.shape == (8, 16, 16, 3) and not skipped
    assert np.array_equal(arr[1], a[0, :16, 16:])                    # row-major squares


def test_crop_artifact_with_malformed_patches_names_the_file(tmp_path):
    np.save(tmp_path / "patches.npy", np.zeros((2, 32, 48, 3), np.uint8))
    with pytest.raises(InputError, match="patches.npy: expected uint8 patches"):
        train.load_patches([tmp_path], size=16, channels=0)


def test_patches_smaller_than_size_name_the_file(tmp_path):
    p = make_patches(tmp_path / "p.npy", size=16 * 2)
    with pytest.raises(InputError, match="p.npy.*smaller than size=64"):
        train.load_patches([p], size=64, channels=3)


# ------------------------------------------------------------------ one run
def test_summary_reports_swd_floor_and_colours_per_tile(tmp_path):
    p = make_patches(tmp_path / "p.npy", n=200)                  # 20 held back for SWD
    out = tmp_path / "out"
    out.mkdir()
    s = train.run({"patches": [p]}, tiny(steps=1), out)
    assert s["n_holdout"] == 20 and s["swd"] > 0 and s["swd_floor"] > 0
    real, fake = s["crispness"]["real"], s["crispness"]["samples"]
    # two flat colours per patch: at most 2 NES colours in every 16×16 tile
    assert real["tiles_over_4"] == 0 and 1 <= real["colours_per_tile"] <= 2
    assert set(fake) == {"colours_per_tile", "tiles_over_4"} and fake["colours_per_tile"] >= 1


def test_crispness_tells_noise_from_flat_pixel_art():
    from stages._metrics import crispness

    noise = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    flat = np.zeros((4, 32, 32, 3), np.uint8)
    flat[:, :, 16:] = (200, 40, 40)
    assert crispness(noise)["tiles_over_4"] == 1.0 and crispness(noise)["colours_per_tile"] > 20
    assert crispness(flat) == {"colours_per_tile": 1.0, "tiles_over_4": 0.0}


def test_one_step_writes_every_artifact(patches, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    calls = []
    s = train.run({"patches": [patches]}, tiny(steps=1, grid_every=1),
                  out, progress=lambda *a, **k: calls.append((a, k)))
    for name in ("ckpt.pt", "config.json", "metrics.jsonl", "curves.png",
                 "grids/step_000001.png"):
        assert (out / name).is_file(), name
    assert s["steps"] == 1 and s["n_patches"] == 24
    row = metrics(out)[0]
    assert row["step"] == 1 and {"lossD", "lossG", "ips"} <= row.keys()
    assert calls[-1][0] == ("train", 1, 1) and "lossD" in calls[-1][1]


def test_rgba_training_keeps_four_channels(tmp_path):
    p = make_patches(tmp_path / "p.npy", channels=4)
    out = tmp_path / "out"
    out.mkdir()
    train.run({"patches": [p]}, tiny(steps=1), out)          # channels=0: from the patches
    from PIL import Image

    with Image.open(out / "grids" / "step_000001.png") as im:
        assert im.mode == "RGBA"


def test_ema_generator_gets_batch_norm_statistics_of_its_own_weights():
    p = tiny(ema=0.9)
    cfg = GANConfig(height=32, width=32, nz=16, ngf=8, ndf=8)
    trainer = train.Trainer(p, cfg, torch.device("cpu"))
    real = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype(np.uint8)
    for step in range(3):
        trainer.step(step, real)
    g_bn = [m for m in trainer.G.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    g_mean = [m.running_mean.clone() for m in g_bn]
    trainer._calibrate_ema_bn(n=64, batch=64)
    bn = [m for m in trainer.G_ema.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    # the raw generator keeps its own statistics; the EMA's differ from them
    assert all(torch.equal(a, m.running_mean) for a, m in zip(g_mean, g_bn))
    assert not all(torch.allclose(a, m.running_mean) for a, m in zip(g_mean, bn))
    # eval mode with the re-estimated statistics ≈ batch statistics of those same noise vectors
    gen = torch.Generator().manual_seed(train._step_seed(p.seed, 3, 0, 0, 0))
    z = torch.randn(64, 16, 1, 1, generator=gen)
    with torch.no_grad():
        y_eval = trainer.G_ema(z)
        trainer.G_ema.train()
        for m in bn:
            m.momentum = 0.0                                  # batch statistics, buffers untouched
        y_batch = trainer.G_ema(z)
    assert torch.allclose(y_eval, y_batch, atol=2e-2)


def test_checkpoint_loads_with_weights_only_and_restores_generator(patches, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    train.run({"patches": [patches]}, tiny(), out)
    ck = torch.load(out / "ckpt.pt", weights_only=True)
    assert {"G", "D", "G_ema", "optG", "optD", "step", "rng", "config", "version"} <= ck.keys()
    assert ck["step"] == 3 and ck["config"]["params"]["ngf"] == 8
    assert {"torch", "numpy", "python"} <= ck["rng"].keys()
    G = Generator(GANConfig.from_dict(ck["config"]["gan"]))
    G.load_state_dict(ck["G_ema"])
    assert G(torch.randn(1, 16)).shape == (1, 3, 32, 32)


def test_nearest_upsampling_run_restores_from_its_checkpoint(patches, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    train.run({"patches": [patches]}, tiny(upsample="nearest"), out)
    ck = torch.load(out / "ckpt.pt", weights_only=True)
    assert ck["config"]["gan"]["upsample"] == "nearest"
    G = Generator(GANConfig.from_dict(ck["config"]["gan"]))
    G.load_state_dict(ck["G_ema"])                           # same layout as the trained one
    assert G(torch.randn(1, 16)).shape == (1, 3, 32, 32)


def test_max_minutes_stops_early_and_still_writes_checkpoint(patches, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    s = train.run({"patches": [patches]}, tiny(steps=50, max_minutes=1e-9), out)
    assert s["stopped"] == "max_minutes" and s["steps"] < 50
    assert (out / "ckpt.pt").is_file()


def test_lr_factor_is_flat_then_falls_linearly_to_zero():
    assert [train.lr_factor(0.0, d) for d in (0.0, 0.9, 1.0)] == [1.0, 1.0, 1.0]
    assert [train.lr_factor(0.25, d) for d in (0.0, 0.75, 0.875, 1.0)] == [1.0, 1.0, 0.5, 0.0]
    assert train.lr_factor(1.0, 0.25) == pytest.approx(0.75)


def test_lr_decay_lowers_both_learning_rates_by_the_step_count(patches, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    p = tiny(steps=8, ckpt_every=100, lr_decay=0.5, lr_d=4e-4)
    s = train.run({"patches": [patches]}, p, out)
    assert s["steps"] == 8
    ck = torch.load(out / "ckpt.pt", weights_only=True)
    # the last step (7 of 8 done) ran at (1 - 7/8) / 0.5 = 1/4 of the base rates
    assert ck["optG"]["param_groups"][0]["lr"] == pytest.approx(p.lr_g / 4)
    assert ck["optD"]["param_groups"][0]["lr"] == pytest.approx(4e-4 / 4)


def test_mode_seeking_term_punishes_images_closer_than_their_noise():
    z = torch.tensor([0.0, 0.0, 2.0, 2.0]).view(4, 1, 1, 1)           # pairs (0, 2), (1, 3)
    spread = torch.tensor([-1.0, -1.0, 1.0, 1.0]).view(4, 1, 1, 1)    # |dG| = 2 = |dz|
    assert float(train.mode_seeking_term(spread, z)) == pytest.approx(1.0, rel=1e-4)
    collapsed = torch.zeros(4, 1, 1, 1, requires_grad=True)
    close = (collapsed + torch.tensor([0.0, 0.0, 0.1, 0.1]).view(4, 1, 1, 1))
    term = train.mode_seeking_term(close, z)
    assert float(term.detach()) == pytest.approx(20.0, rel=1e-3)      # 1 / (0.1 / 2)
    term.backward()                                                    # descent pulls pairs apart
    g = collapsed.grad.flatten()
    assert g[0] > 0 and g[2] < 0


def test_hinge_and_bce_losses_on_hand_made_logits():
    F = torch.nn.functional
    real, fake = torch.tensor([2.0, 0.0]), torch.tensor([-2.0, 0.5])
    # hinge: mean relu(1 - real) = 0.5, mean relu(1 + fake) = 0.75; G: -mean(fake) = 0.75
    assert float(train.discriminator_loss(real, fake, kind="hinge")) == pytest.approx(1.25)
    assert float(train.generator_loss(fake, kind="hinge")) == pytest.approx(0.75)
    smoothed = (F.binary_cross_entropy_with_logits(real, torch.full((2,), 0.9))
                + F.binary_cross_entropy_with_logits(fake, torch.zeros(2)))
    assert float(train.discriminator_loss(real, fake, kind="bce", label_smoothing=0.1)) == \
        pytest.approx(float(smoothed))
    assert float(train.generator_loss(fake, kind="bce")) == pytest.approx(
        float(F.softplus(-fake).mean()))


def test_rpgan_loss_pairs_each_real_image_with_its_slots_fake():
    real, fake = torch.tensor([2.0, 0.0]), torch.tensor([-2.0, 0.5])
    # D: mean softplus(fake - real) over the slots (-4 and 0.5), not over all pairs
    d = (torch.nn.functional.softplus(torch.tensor(-4.0)) + torch.nn.functional.softplus(
        torch.tensor(0.5))) / 2
    assert float(train.discriminator_loss(real, fake, kind="rpgan")) == pytest.approx(float(d))
    assert float(train.discriminator_loss(real, fake.flip(0), kind="rpgan")) != pytest.approx(float(d))
    g = (torch.nn.functional.softplus(torch.tensor(4.0)) + torch.nn.functional.softplus(
        torch.tensor(-0.5))) / 2
    assert float(train.generator_loss(fake, kind="rpgan", real_logits=real)) == pytest.approx(float(g))
    with pytest.raises(ValueError, match="real batch"):
        train.generator_loss(fake, kind="rpgan")


def test_rpgan_training_steps_move_both_networks():
    trainer = _trainer(loss="rpgan")
    before = {n: {k: v.clone() for k, v in getattr(trainer, n).state_dict().items()}
              for n in ("G", "D")}
    lossD, lossG, ok = trainer.step(0, blocky(4))
    assert ok and np.isfinite(lossD) and np.isfinite(lossG)
    for n in ("G", "D"):
        assert any(not torch.equal(v, before[n][k])
                   for k, v in getattr(trainer, n).state_dict().items()), n


def test_roll_back_restores_the_state_and_halves_both_learning_rates():
    p = tiny()
    trainer = _trainer()
    good = train._cpu_copy(trainer.state())
    trainer.step(0, blocky(4))
    changed = lambda: [k for k, v in trainer.G.state_dict().items() if not torch.equal(v, good["G"][k])]
    assert changed()
    trainer.roll_back(good)
    assert not changed() and trainer.rollbacks == 1 and trainer.lr_scale == 0.5
    assert trainer.optG.param_groups[0]["lr"] == pytest.approx(p.lr_g / 2)
    assert trainer.optD.param_groups[0]["lr"] == pytest.approx(p.lr_d / 2)


def test_mode_seeking_term_reaches_the_generator_loss():
    real = blocky(4)
    lossD_plain, lossG_plain, _ = _trainer().step(0, real)
    lossD_seeking, lossG_seeking, ok = _trainer(mode_seeking=1.0).step(0, real)
    # same seed, same first D update: G's first loss differs by the (positive) term alone
    assert ok and lossD_seeking == lossD_plain
    assert lossG_seeking > lossG_plain + 0.5


def test_rerun_with_finished_checkpoint_resumes_without_training(patches, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    train.run({"patches": [patches]}, tiny(), out)
    s = train.run({"patches": [patches]}, tiny(), out)
    assert s["resumed_from"] == 3 and s["steps"] == 3


def test_checkpoint_with_other_params_is_not_resumed(patches, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    train.run({"patches": [patches]}, tiny(), out)
    s = train.run({"patches": [patches]}, tiny(lr_g=1e-3), out)
    assert s["resumed_from"] is None


def test_checkpoint_from_before_the_style_and_position_fields_is_resumed(patches, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    train.run({"patches": [patches]}, tiny(), out)
    ck = torch.load(out / "ckpt.pt", weights_only=True)
    for k in ("class_share", "g_cond", "screen_height"):      # a checkpoint of older versions
        ck["config"]["gan"].pop(k)
    ck["config"]["params"]["conditional"] = False
    ck["config"]["params"].pop("position")                   # parameters added since: defaults
    torch.save(ck, out / "ckpt.pt")
    s = train.run({"patches": [patches]}, tiny(), out)
    assert s["resumed_from"] == 3


# ------------------------------------------------------------------ faults
def _poison_d_loss(monkeypatch, poisoned_calls) -> list[int]:
    """Make D's loss NaN on the given calls (0-based; call k is step k until a rollback)."""
    calls = []
    d_loss = train.discriminator_loss

    def poisoned(*args, **kw):
        loss = d_loss(*args, **kw)
        calls.append(len(calls))
        return loss * float("nan") if poisoned_calls(calls[-1]) else loss

    monkeypatch.setattr(train, "discriminator_loss", poisoned)
    return calls


def test_nan_rolls_back_to_last_checkpoint_with_halved_lr(patches, tmp_path, monkeypatch):
    calls = _poison_d_loss(monkeypatch, lambda call: call == 4)
    out = tmp_path / "out"
    out.mkdir()
    s = train.run({"patches": [patches]}, tiny(steps=6, ckpt_every=3), out)
    # steps 0-3, step 4 poisoned, back to step 3: steps 3, 4, 5 again
    assert len(calls) == 8 and s["rollbacks"] == 1 and s["steps"] == 6
    ck = torch.load(out / "ckpt.pt", weights_only=True)
    assert ck["optG"]["param_groups"][0]["lr"] == pytest.approx(tiny().lr_g / 2)
    events = [r for r in metrics(out) if r.get("event") == "rollback"]
    assert events == [{"step": 3, "event": "rollback", "bad_step": 4, "lr_scale": 0.5}]
    assert all(np.isfinite(r["lossD"]) for r in metrics(out) if "lossD" in r)


def test_persistent_nan_stops_with_a_clear_error(patches, tmp_path, monkeypatch):
    _poison_d_loss(monkeypatch, lambda call: True)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(StageError, match="diverged at step 0.*2 rollback"):
        train.run({"patches": [patches]}, tiny(max_rollbacks=2), out)


def test_persistent_nan_of_a_compiled_run_says_to_try_without_compile(patches, tmp_path,
                                                                       monkeypatch):
    _poison_d_loss(monkeypatch, lambda call: True)
    monkeypatch.setattr(torch, "compile", lambda f, **kw: f)    # the message, not inductor
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(StageError, match="it was compiled: try without --compile"):
        train.run({"patches": [patches]}, tiny(max_rollbacks=1, compile=True), out)


# ------------------------------------------------------------------ resume after SIGKILL
_CHILD = """
import sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
import torch
torch.set_num_threads(1)
from stages import train
slowly = lambda *args, **kw: time.sleep(0.3)        # progress comes after every step here
p = train.Params(**{params!r})
train.run({{"patches": [Path({patches!r})]}}, p, Path({out!r}), **({{"progress": slowly}} if {slow} else {{}}))
"""


def _child(out: Path, patches: Path, params: dict, slow: bool) -> list[str]:
    code = _CHILD.format(root=str(ROOT), slow=slow, params=params, patches=str(patches),
                         out=str(out))
    return [PY, "-c", code]


def test_sigkill_mid_run_then_rerun_follows_uninterrupted_run(patches, tmp_path):
    params = {**train.TINY, "size": 32, "steps": 12, "ckpt_every": 4, "grid_every": 4}
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    ref.mkdir()
    cut.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    train.run({"patches": [patches]}, train.Params(**params), ref)     # one thread, like the child

    proc = subprocess.Popen(_child(cut, patches, params, True), env=env)
    deadline = time.time() + 90
    while not (cut / "ckpt.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.4)                                        # now somewhere past the checkpoint
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(cut / "ckpt.pt", weights_only=True)["step"]
    assert 4 <= killed_at < 12, "the child was not killed mid-run"

    subprocess.run(_child(cut, patches, params, False), check=True, env=env, timeout=120)
    a = {r["step"]: r for r in metrics(ref) if "lossD" in r}
    b = {r["step"]: r for r in metrics(cut) if "lossD" in r}
    assert sorted(a) == sorted(b) == list(range(1, 13))
    for s in range(killed_at + 1, 13):
        assert b[s]["lossD"] == pytest.approx(a[s]["lossD"], abs=1e-4)
        assert b[s]["lossG"] == pytest.approx(a[s]["lossG"], abs=1e-4)
    ca = torch.load(ref / "ckpt.pt", weights_only=True)
    cb = torch.load(cut / "ckpt.pt", weights_only=True)
    assert ca["step"] == cb["step"] == 12
    for k in ca["G_ema"]:
        assert torch.allclose(ca["G_ema"][k].float(), cb["G_ema"][k].float(), atol=1e-4), k
    files = lambda d: sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())
    assert files(ref) == files(cut)


# ------------------------------------------------------------------ DDP
_DDP_SCRIPT = """
import json, os, sys
from pathlib import Path
sys.path.insert(0, {root!r})
import torch
torch.set_num_threads(1)
from stages import train
p = train.Params(**{params!r})
rank = os.environ["RANK"]
if {fast_clock_rank1} and rank == "1":      # rank 1's clock runs twice as fast as rank 0's
    import time

    class FastClock:
        def __getattr__(self, name):
            return getattr(time, name)

        def perf_counter(self):
            return 2.0 * time.perf_counter()

    train.time = FastClock()
s = train.run({{"patches": [Path({patches!r})]}}, p, Path({out!r}))
Path({out!r}, "rank" + rank + ".json").write_text(json.dumps(s))
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_ddp(tmp_path: Path, out: Path, patches: Path, params: dict,
             fast_clock_rank1: bool = False) -> tuple[dict, dict]:
    """Train with 2 gloo processes under torchrun; returns both ranks' summaries."""
    script = tmp_path / "ddp.py"
    script.write_text(_DDP_SCRIPT.format(root=str(ROOT), params=params, patches=str(patches),
                                         out=str(out), fast_clock_rank1=fast_clock_rank1))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([str(Path(PY).parent / "torchrun"), "--nproc_per_node=2",
                        f"--master_port={_free_port()}", str(script)],
                       env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    return (json.loads((out / "rank0.json").read_text()),
            json.loads((out / "rank1.json").read_text()))


_NEEDS_TORCHRUN = pytest.mark.skipif(not (Path(PY).parent / "torchrun").exists(),
                                     reason="torchrun not installed")


@pytest.mark.slow
@_NEEDS_TORCHRUN
def test_two_process_gloo_ddp_keeps_ranks_in_sync(patches, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    params = {**train.TINY, "size": 32, "steps": 4, "ckpt_every": 2}
    script = tmp_path / "ddp.py"
    s0, s1 = _run_ddp(tmp_path, out, patches, params)
    assert s0["world_size"] == s1["world_size"] == 2
    assert s0["g_checksum"] == pytest.approx(s1["g_checksum"], rel=1e-6)
    ck = torch.load(out / "ckpt.pt", weights_only=True)
    assert ck["step"] == 4 and ck["config"]["world_size"] == 2
    assert len(list(out.glob("*.pt"))) == 1 and not list(out.glob(".*tmp"))
    assert len(metrics(out)) == 4                   # written once, by rank 0


@pytest.mark.slow
@_NEEDS_TORCHRUN
def test_ddp_ranks_agree_when_the_time_budget_ends(patches, tmp_path):
    """With --max-minutes, a rank whose clock runs ahead must not stop alone (the other
    rank would wait for it forever): all ranks stop after the same step, with one
    checkpoint, and the learning-rate schedule (which follows the budget) stays in sync."""
    out = tmp_path / "out"
    out.mkdir()
    params = {**train.TINY, "size": 32, "steps": 10 ** 6, "ckpt_every": 10 ** 6,
              "grid_every": 10 ** 6, "max_minutes": 0.05, "lr_decay": 0.5}
    s0, s1 = _run_ddp(tmp_path, out, patches, params, fast_clock_rank1=True)
    assert s0["stopped"] == s1["stopped"] == "max_minutes"
    assert s0["steps"] == s1["steps"] > 0
    assert s0["g_checksum"] == pytest.approx(s1["g_checksum"], rel=1e-6)
    ck = torch.load(out / "ckpt.pt", weights_only=True)
    assert ck["step"] == s0["steps"]
    assert ck["optG"]["param_groups"][0]["lr"] < 0.5 * train.Params().lr_g


# ------------------------------------------------------------------ spatial noise (fcn) and palette output
def test_spatial_generator_draws_any_multiple_of_its_stride():
    cfg = GANConfig(height=32, width=32, nz=8, ngf=4, ndf=4, g_arch="fcn")
    G = Generator(cfg).eval()
    assert cfg.stride == 8 and cfg.noise_shape() == (8, 4, 4)
    assert G(torch.randn(2, *cfg.noise_shape())).shape == (2, 3, 32, 32)
    assert G(torch.randn(1, *cfg.noise_shape(240, 256))).shape == (1, 3, 240, 256)


def test_spatial_generator_left_columns_do_not_depend_on_the_width():
    """Outside the receptive field of the right border, a wider noise map whose left part is
    the narrow one's gives the same pixels (fully convolutional, eval-mode batch norm)."""
    torch.manual_seed(0)
    cfg = GANConfig(height=32, width=32, nz=8, ngf=4, ndf=4, g_arch="fcn", upsample="nearest")
    G = Generator(cfg).eval()
    z = torch.randn(1, 8, 4, 32)                                     # 256 px wide
    with torch.no_grad():
        wide, narrow = G(z), G(z[..., :16])                           # 128 px wide
    # border reach: 3×3 convs at strides 8, 4, 2, 1 -> 8 + 4 + 2 + 1 = 15 px (and rounding)
    assert torch.allclose(wide[..., :128 - 16], narrow[..., :128 - 16], atol=1e-5)
    assert not torch.allclose(wide[..., :128], narrow, atol=1e-5)


def test_palette_generator_emits_only_palette_colours_and_passes_gradients():
    pal = ((0, 0, 0), (255, 255, 255), (200, 40, 16))
    cfg = GANConfig(height=32, width=32, nz=8, ngf=4, ndf=4, output="palette", palette=pal)
    G = Generator(cfg)
    out = G(torch.randn(3, 8))                                        # train mode: Gumbel ST
    colours = {tuple(c) for c in out.detach().permute(0, 2, 3, 1).reshape(-1, 3).tolist()}
    expect = {tuple(v / 127.5 - 1 for v in c) for c in pal}
    assert all(min(sum(abs(a - b) for a, b in zip(c, e)) for e in expect) < 1e-5 for c in colours)
    out.mean().backward()
    assert G.main[0].weight.grad is not None and G.main[0].weight.grad.abs().sum() > 0
    from stages._gan import to_uint8
    images = to_uint8(G.eval()(torch.randn(3, 8)))
    assert {tuple(c) for c in images.reshape(-1, 3).tolist()} <= set(pal)


def test_corpus_palette_keeps_the_most_frequent_colours_and_maps_the_rest_to_nearest():
    a = np.zeros((1, 4, 4, 3), np.uint8)
    a[0, :2] = (250, 0, 0)
    a[0, 3, 3] = (240, 10, 0)                                         # rare: maps to red
    pal = train.corpus_palette(a, 2)
    assert {tuple(c) for c in pal.tolist()} == {(0, 0, 0), (250, 0, 0)}
    mapped = train.map_to_palette(a, pal)
    assert tuple(mapped[0, 3, 3]) == (250, 0, 0) and tuple(mapped[0, 3, 0]) == (0, 0, 0)


def test_palette_and_spatial_options_are_off_by_default():
    cfg = train.gan_config(train.Params(), 3)
    assert (cfg.g_arch, cfg.output, cfg.palette) == ("dcgan", "rgb", ())


def test_palette_output_refuses_rgba():
    with pytest.raises(ParamError, match="output=palette trains RGB only"):
        train.Params(output="palette", channels=4)


def test_palette_spatial_run_keeps_the_palette_in_a_weights_only_checkpoint(patches, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    train.run({"patches": [patches]}, tiny(output="palette", spatial_noise=True, palette_size=8),
              out)
    ck = torch.load(out / "ckpt.pt", weights_only=True)
    gan = GANConfig.from_dict(ck["config"]["gan"])
    assert gan.g_arch == "fcn" and gan.output == "palette" and 2 <= len(gan.palette) <= 8
    G = Generator(gan)
    G.load_state_dict(ck["G_ema"])
    from stages._gan import to_uint8
    images = to_uint8(G.eval()(torch.randn(2, *gan.noise_shape(64, 96))))
    assert images.shape == (2, 64, 96, 3)
    assert {tuple(c) for c in images.reshape(-1, 3).tolist()} <= set(gan.palette)
    # the resume check accepts its own checkpoint: a rerun does not start over
    again = train.run({"patches": [patches]},
                      tiny(output="palette", spatial_noise=True, palette_size=8), out)
    assert again["resumed_from"] == 3


def test_checkpoint_without_the_new_fields_loads_as_today_s_generator():
    d = GANConfig(height=32, width=32).to_dict()
    for k in ("g_arch", "output", "palette", "gumbel_tau"):
        d.pop(k)
    cfg = GANConfig.from_dict(d)
    assert (cfg.g_arch, cfg.output) == ("dcgan", "rgb")


# ------------------------------------------------------------------ one style at a time (conditional)
def _crop_artifact(folder: Path, games: list[str]) -> Path:
    """A crop-like artifact: blocky patches, each game's patches one half of a two-tone range."""
    from tilesets.artifacts import Patches

    folder.mkdir(parents=True, exist_ok=True)
    images = blocky(24, 32)
    labels = np.arange(24) % len(games)
    rows = np.stack([(np.arange(24) % 3) * 32, np.full(24, 96)], 1).astype(np.int32)
    Patches(images, labels.astype(np.int32), games, rows).save(folder, lambda p, a: np.save(p, a))
    return folder


def test_patches_keep_their_games_through_save_and_load(tmp_path):
    from tilesets.artifacts import Patches

    _crop_artifact(tmp_path / "c", ["contra", "smb"])
    p = Patches.load(tmp_path / "c")
    assert p.game_names == ["contra", "smb"] and p.games.tolist() == [0, 1] * 12


def test_patch_games_out_of_range_are_refused_naming_the_file(tmp_path):
    from tilesets.artifacts import ArtifactError, Patches

    with pytest.raises(ArtifactError, match="patch_games.npy"):
        Patches(blocky(2, 32), np.array([0, 2], np.int32), ["a", "b"]).validate()


def test_crop_labels_each_patch_with_its_screen_s_game():
    from stages import crop
    from tests._helpers_crop import game_frames

    def rgba(a):
        return np.concatenate([a, np.full(a.shape[:2] + (1,), 255, np.uint8)], axis=2)

    frames = game_frames(4, seed=1)
    items = ([(f"smb/f{i}.png", rgba(a)) for i, a in enumerate(frames[:2])]
             + [(f"zelda/f{i}.png", rgba(a)) for i, a in enumerate(frames[2:])])
    r = crop.crop_screens(items, crop.Params(max_patches=40, near_duplicates=0))
    p = r.patches
    assert p.game_names == ["smb", "zelda"] == sorted({rec.game for rec in r.records})
    per_screen = [len(r.plan.of_screen(rec.index)) for rec in r.records]
    want = np.repeat([p.game_names.index(rec.game) for rec in r.records], per_screen)
    assert p.games.tolist() == want.tolist() and len(p.games) == len(p.images)


def test_conditional_networks_take_the_label_into_account():
    torch.manual_seed(0)
    cfg = GANConfig(height=32, width=32, nz=8, ngf=4, ndf=4, classes=("a", "b"))
    G, D = Generator(cfg).eval(), Discriminator(cfg)
    z = torch.randn(2, 8)
    a, b = G(z, torch.tensor([0, 0])), G(z, torch.tensor([1, 1]))
    assert not torch.allclose(a, b)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert not torch.allclose(D(x, y=torch.tensor([0, 0])), D(x, y=torch.tensor([1, 1])))


def test_conditional_batch_norm_generator_takes_label_and_noise_and_old_layout_still_builds():
    from stages._gan import ConditionalBatchNorm2d

    torch.manual_seed(0)
    cfg = GANConfig(height=32, width=32, nz=8, ngf=4, ndf=4, classes=("a", "b"), g_cond="cbn")
    G = Generator(cfg)
    assert any(isinstance(m, ConditionalBatchNorm2d) for m in G.modules())
    assert not hasattr(G, "embed") and cfg.embed_dim == 0     # the noise is the only input
    with torch.no_grad():                                      # train the per-class gains a bit
        for m in G.modules():
            if isinstance(m, ConditionalBatchNorm2d):
                m.gain.weight[1].mul_(-1.0)
    z = torch.randn(4, 8)                                      # batch statistics (train mode)
    a, b = G(z, torch.zeros(4, dtype=torch.long)), G(z, torch.ones(4, dtype=torch.long))
    assert not torch.allclose(a, b)                            # the label matters
    assert (a[0] - a[1]).abs().mean() > 0.1 * a.abs().mean()   # so does the noise, within a style
    with pytest.raises(ValueError, match="labels"):
        G(z)
    old = Generator(GANConfig(height=32, width=32, nz=8, ngf=4, ndf=4, classes=("a", "b")))
    assert "embed.weight" in old.state_dict()                  # checkpoints from before g_cond
    with pytest.raises(ValueError, match="g_cond"):
        GANConfig(height=32, width=32, classes=("a", "b"), g_cond="film").validate()


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile on a CPU needs a C++ compiler (g++), not installed")
def test_compiled_conditional_generator_has_finite_gradients_under_bf16_on_one_thread():
    # torch 2.13's inductor, one CPU thread, bf16 autocast: the compiled backward of an
    # affine-free batch norm times the class gains gave NaN gradients (finite loss), so
    # `train --compile` of a conditional model diverged at step 1; the norm now runs in fp32
    p = train.Params(conditional="on")
    cfg = train.gan_config(p, 3, classes=("a", "b", "c"), class_share=(0.3, 0.3, 0.4))
    torch.manual_seed(0)
    G = Generator(cfg).train()
    z, y = torch.randn(16, cfg.nz), torch.randint(0, 3, (16,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = torch.compile(G, dynamic=False)(z, y)
    out.float().mean().backward()
    bad = [k for k, q in G.named_parameters() if not torch.isfinite(q.grad).all()]
    assert bad == [] and torch.isfinite(out).all()


def test_conditional_run_stores_the_styles_and_samples_one_at_a_time(tmp_path):
    from stages import sample

    art = _crop_artifact(tmp_path / "crop", ["contra", "smb"])
    out = tmp_path / "o"
    out.mkdir()
    train.run({"patches": [art]}, tiny(conditional=True), out)
    G, info = sample.load_generator(out / "ckpt.pt")
    assert info.gan.classes == ("contra", "smb") and info.gan.g_cond == "cbn"
    like = sample.sample_images(G, 2, seed=0, like="smb")
    other = sample.sample_images(G, 2, seed=0, like="contra")
    mixed = sample.sample_images(G, 2, seed=0)
    assert like.shape == mixed.shape == (2, 32, 32, 3) and not np.array_equal(like, other)
    with pytest.raises(ParamError, match="not one of this model's styles: contra, smb"):
        sample.sample_images(G, 1, seed=0, like="zelda")
    grids = sorted(p.name for p in (out / "grids").glob("style_*.png"))
    assert grids == ["style_00_contra.png", "style_01_smb.png"]        # one grid per style
    a, b = (np.asarray(Image.open(out / "grids" / g)) for g in grids)
    assert a.shape == b.shape and not np.array_equal(a, b)
    from stages._report import _section_training
    html = _section_training([out])
    assert "One style at a time" in html and ">contra<" in html and ">smb<" in html


def test_mixture_labels_follow_the_prior_on_every_run_of_indices():
    from stages._gan_config import prior_labels

    prior = (0.3, 0.6, 0.004, 0.096)
    for start, n in ((0, 256), (1000, 64), (7, 500)):
        counts = np.bincount(prior_labels(prior, n, start=start), minlength=4)
        assert np.abs(counts - np.array(prior) * n).max() <= 2
    assert prior_labels(prior, 8, start=3) == prior_labels(prior, 11)[3:]   # fixed per index


def test_conditional_model_records_and_samples_the_corpus_s_style_mix(tmp_path):
    from stages import sample
    from tilesets.artifacts import Patches

    art = tmp_path / "crop"
    art.mkdir()
    labels = np.array([0] * 20 + [1] * 4, np.int32)            # "smb" is a sixth of the corpus
    Patches(blocky(24, 32), labels, ["contra", "smb"]).save(art, lambda p, a: np.save(p, a))
    out = tmp_path / "o"
    out.mkdir()
    train.run({"patches": [art]}, tiny(conditional=True, swd_holdout=0.0), out)
    G, info = sample.load_generator(out / "ckpt.pt")
    assert info.gan.class_share == pytest.approx((20 / 24, 4 / 24))
    drawn = sample.style_labels(info.gan, 6000, seed=0)
    assert np.bincount(drawn.numpy(), minlength=2) / 6000 == pytest.approx((5 / 6, 1 / 6), abs=0.02)
    shots = tmp_path / "s"
    summary = sample.run({"checkpoint": [out]}, sample.Params(n=12, seed=3), shots)
    manifest = json.loads((shots / "samples.json").read_text())
    drawn = [info.gan.classes[i] for i in sample.style_labels(info.gan, 12, seed=3)]
    assert manifest["styles"] == drawn                                     # one per file
    assert len(manifest["styles"]) == len(manifest["files"]) == 12
    assert sum(summary["styles"].values()) == 12 and set(summary["styles"]) <= {"contra", "smb"}
    # checkpoints from before the shares were recorded draw every style equally often
    old = GANConfig.from_dict({k: v for k, v in info.gan.to_dict().items() if k != "class_share"})
    assert old.style_prior() == (0.5, 0.5)
    with pytest.raises(ValueError, match="class_share"):
        GANConfig(height=32, width=32, classes=("a", "b"), class_share=(1.0,)).validate()


def test_default_model_of_several_games_names_each_sample_s_style(tmp_path, monkeypatch):
    from stages import sample

    art = _crop_artifact(tmp_path / "crop", ["contra", "smb"])
    out = tmp_path / "o"
    out.mkdir()
    train.run({"patches": [art]}, tiny(steps=2), out)                  # unconditional
    G, info = sample.load_generator(out / "ckpt.pt")
    assert not G.cfg.n_classes and info.styles.names == ("contra", "smb")
    shots = tmp_path / "s"
    sample.run({"checkpoint": [out]}, sample.Params(n=8, seed=1), shots)
    names = json.loads((shots / "samples.json").read_text())["styles"]
    assert len(names) == 8 and set(names) <= {"contra", "smb"}
    common = max(set(names), key=names.count)
    got = sample.sample_images(G, 5, seed=2, like=common, styles=info.styles)
    assert len(got) == 5 and {info.styles.names[i] for i in info.styles.classify(got)} == {common}
    never = "smb" if common == "contra" else "contra"
    monkeypatch.setattr(type(info.styles), "classify",
                        lambda self, im: np.full(len(im), self.names.index(common), np.int64))
    with pytest.raises(ParamError, match=f"look like '{never}'"):
        sample.sample_images(G, 2, seed=0, like=never, styles=info.styles)


def test_like_on_an_unconditional_model_names_the_option(patches, tmp_path):
    from stages import sample

    out = tmp_path / "o"
    out.mkdir()
    train.run({"patches": [patches]}, tiny(steps=1), out)
    G, _ = sample.load_generator(out / "ckpt.pt")
    with pytest.raises(ParamError, match="--conditional"):
        sample.sample_images(G, 1, seed=0, like="smb")


def test_auto_trains_one_style_at_a_time_only_when_the_patches_name_several_games(patches,
                                                                                   tmp_path):
    art = _crop_artifact(tmp_path / "crop", ["contra", "smb"])
    for name, inp, want in (("two", art, ("contra", "smb")), ("loose", patches, ())):
        out = tmp_path / name
        out.mkdir()
        train.run({"patches": [inp]}, tiny(steps=1, conditional="auto"), out)
        ck = torch.load(out / "ckpt.pt", weights_only=True)
        assert GANConfig.from_dict(ck["config"]["gan"]).classes == want
    assert train.Params(conditional=True).conditional == "on"     # the old flag still reads
    assert train.Params(conditional=False).conditional == "off"
    with pytest.raises(ParamError, match="conditional"):
        train.Params(conditional="maybe")


def test_conditional_without_patch_games_names_what_is_missing(patches, tmp_path):
    with pytest.raises(InputError, match="patch_games.npy"):
        train.run({"patches": [patches]}, tiny(conditional=True), tmp_path)


@pytest.mark.slow
@_NEEDS_TORCHRUN
def test_gloo_ddp_trains_the_spatial_palette_conditional_positional_model_in_sync(tmp_path):
    art = _crop_artifact(tmp_path / "crop", ["contra", "smb"])
    out = tmp_path / "out"
    out.mkdir()
    params = {**train.TINY, "size": 32, "steps": 4, "ckpt_every": 2, "spatial_noise": True,
              "output": "palette", "palette_size": 8, "conditional": True, "position": True}
    s0, s1 = _run_ddp(tmp_path, out, art, params)
    assert s0["world_size"] == s1["world_size"] == 2
    assert s0["g_checksum"] == pytest.approx(s1["g_checksum"], rel=1e-6)
    ck = torch.load(out / "ckpt.pt", weights_only=True)
    gan = GANConfig.from_dict(ck["config"]["gan"])
    assert ck["step"] == 4 and gan.g_arch == "fcn" and gan.classes == ("contra", "smb")
    assert gan.screen_height == 96


def test_isolated_share_counts_pixels_unlike_all_neighbours():
    from stages._metrics import isolated_share

    a = np.zeros((1, 5, 5, 3), np.uint8)
    assert isolated_share(a) == 0.0
    a[0, 2, 2] = 255                                   # one lone pixel among 9 interior ones
    assert isolated_share(a) == pytest.approx(1 / 9)
    a[0, 2, 3] = 255                                   # now it has a like neighbour
    assert isolated_share(a) == 0.0
