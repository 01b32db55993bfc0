"""Tests for the sample stage: its core on a generator in memory (a tiny checkpoint trained for a
few steps, or a hand-made module), and its folder contract."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stages import sample, train
from stages._common import InputError, ParamError


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _train(root: Path, channels: int) -> Path:
    rng = np.random.default_rng(0)
    patches = rng.integers(0, 256, (8, 32, 32, channels), dtype=np.uint8)
    if channels == 4:
        patches[..., 3] = np.where(patches[..., 3] > 127, 255, 0)
    np.save(root / "p.npy", patches)
    out = root / f"train{channels}"
    out.mkdir()
    train.run({"patches": [root / "p.npy"]},
              train.Params(**{**train.TINY, "size": 32, "channels": channels, "steps": 2}), out)
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    return _train(tmp_path_factory.mktemp("ck"), 3)


@pytest.fixture(scope="module")
def trained_rgba(tmp_path_factory) -> Path:
    return _train(tmp_path_factory.mktemp("ck4"), 4)


def _generator(trained: Path, use_ema: bool = True):
    return sample.load_generator(trained / "ckpt.pt", use_ema=use_ema)


def test_writes_n_native_size_pngs_and_a_manifest(trained, tmp_path):
    s = sample.run({"checkpoint": [trained]}, sample.Params(n=5), tmp_path)
    files = sorted(p.name for p in tmp_path.glob("sample_*.png"))
    assert files == [f"sample_{i:04d}.png" for i in range(5)]
    with Image.open(tmp_path / files[0]) as im:
        assert im.size == (32, 32) and im.mode == "RGB"
    meta = json.loads((tmp_path / "samples.json").read_text())
    assert meta["n"] == 5 and meta["seed"] == 0 and meta["weights"] == "G_ema"
    assert meta["files"] == files and s["step"] == 2


def test_same_seed_same_images_whatever_the_batch_other_seed_other_images(trained):
    G, _ = _generator(trained)
    a = sample.sample_images(G, 4, seed=3, batch=3)
    assert a.shape == (4, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, sample.sample_images(G, 4, seed=3, batch=4))
    assert not np.array_equal(a, sample.sample_images(G, 4, seed=4))


def test_noise_scale_multiplies_the_seeds_noise(trained):
    import torch

    G, _ = _generator(trained)
    plain = sample.sample_images(G, 3, seed=5)
    assert np.array_equal(plain, sample.sample_images(G, 3, seed=5, noise_scale=1.0))
    wide = sample.sample_images(G, 3, seed=5, noise_scale=1.5)
    assert not np.array_equal(plain, wide)
    z = torch.randn(3, G.cfg.nz, generator=torch.Generator().manual_seed(5)) * 1.5
    assert np.array_equal(wide, sample.generate(G, z, batch=3))        # exactly 1.5 x the draw


def test_the_sample_stage_uses_its_noise_scale_and_the_default_widens_it(trained, tmp_path):
    assert sample.Params().noise_scale == 1.15
    for scale in (1.0, 1.15):
        sample.run({"checkpoint": [trained]}, sample.Params(n=2, noise_scale=scale),
                   tmp_path / str(scale))
    G, _ = _generator(trained)
    for scale in (1.0, 1.15):
        want = sample.sample_images(G, 2, seed=0, noise_scale=scale)
        with Image.open(tmp_path / str(scale) / "sample_0001.png") as im:
            assert np.array_equal(np.asarray(im.convert("RGB")), want[1])


def test_raw_generator_differs_from_ema(trained):
    G_ema, ema = _generator(trained)
    G_raw, raw = _generator(trained, use_ema=False)
    assert (ema.weights, raw.weights) == ("G_ema", "G") and raw.step == 2
    assert not np.array_equal(sample.sample_images(G_ema, 2, seed=0),
                              sample.sample_images(G_raw, 2, seed=0))


def test_accepts_a_checkpoint_file_path(trained, tmp_path):
    s = sample.run({"checkpoint": [trained / "ckpt.pt"]}, sample.Params(n=1), tmp_path)
    assert s["n"] == 1 and (tmp_path / "sample_0000.png").is_file()


def test_interpolation_strip_has_one_frame_per_step(trained):
    G, _ = _generator(trained)
    strip = sample.interpolation_strip(G, 7, keyframes=2, seed=0)
    assert strip.shape == (32, 7 * 32, 3)
    assert not np.array_equal(strip[:, :32], strip[:, -32:])          # the walk moves


def test_run_writes_the_interpolation_strip(trained, tmp_path):
    s = sample.run({"checkpoint": [trained]}, sample.Params(n=1, interpolate=3), tmp_path)
    assert s["interpolation"] == "interpolation.png"
    with Image.open(tmp_path / "interpolation.png") as im:
        assert im.size == (3 * 32, 32)


def test_rgba_samples_keep_binary_alpha(trained_rgba):
    G, _ = _generator(trained_rgba)
    images = sample.sample_images(G, 3, seed=0)
    assert images.shape[-1] == 4
    assert set(np.unique(images[..., 3]).tolist()) <= {0, 255}


class _Constant(torch.nn.Module):
    """A 'generator' that returns the same 1×2 RGBA image for every noise vector."""

    def __init__(self, image):
        super().__init__()
        self.image = torch.nn.Parameter(torch.tensor(image).permute(2, 0, 1)[None])

    def forward(self, z, y=None, where=None):
        return self.image.expand(len(z), -1, -1, -1)


def test_alpha_threshold_snaps_alpha_and_blackens_transparent_pixels():
    # pixel 0: alpha 0.2 -> 153 (opaque); pixel 1: alpha -0.5 -> 64 (transparent)
    G = _Constant([[[1.0, 0.0, -1.0, 0.2], [1.0, 1.0, 1.0, -0.5]]])
    out = sample.generate(G, torch.zeros(2, 3), batch=1, alpha_threshold=128)
    assert out.shape == (2, 1, 2, 4)
    assert out[0, 0].tolist() == [[255, 128, 0, 255], [0, 0, 0, 0]]
    raw = sample.generate(G, torch.zeros(1, 3), batch=1, alpha_threshold=0)
    assert raw[0, 0, :, 3].tolist() == [153, 64]


def test_missing_checkpoint_names_the_folder(tmp_path):
    with pytest.raises(InputError, match="no ckpt.pt"):
        sample.run({"checkpoint": [tmp_path]}, sample.Params(), tmp_path / "o")


def test_corrupt_checkpoint_is_an_input_error(tmp_path):
    (tmp_path / "ckpt.pt").write_bytes(b"garbage")
    with pytest.raises(InputError, match="ckpt.pt: not a readable"):
        sample.run({"checkpoint": [tmp_path]}, sample.Params(), tmp_path / "o")


@pytest.mark.parametrize("field,value,message", [
    ("n", 0, "n must be at least 1"),
    ("batch", 0, "batch must be at least 1"),
    ("interpolate", -1, "interpolate must be at least 0"),
    ("interpolate", 1, "interpolate must be 0 \\(off\\) or at least 2"),
    ("n_keyframes", 1, "n_keyframes must be at least 2"),
    ("alpha_threshold", 256, "alpha_threshold must be within 0..255"),
    ("noise_scale", 0.0, "noise_scale must be above 0"),
    ("noise_scale", -1.0, "noise_scale must be at least 0"),
])
def test_params_out_of_range_are_refused_naming_the_field(field, value, message):
    with pytest.raises(ParamError, match=f"sample: {message}") as e:
        sample.Params(**{field: value})
    assert e.value.field == field


# ------------------------------------------------------------------ whole screens (spatial noise)
@pytest.fixture(scope="module")
def trained_spatial(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sp")
    rng = np.random.default_rng(0)
    np.save(root / "p.npy", rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8))
    out = root / "train"
    out.mkdir()
    train.run({"patches": [root / "p.npy"]},
              train.Params(**{**train.TINY, "size": 32, "steps": 2, "spatial_noise": True}), out)
    return out


def test_spatial_generator_samples_a_whole_256x240_screen(trained_spatial, tmp_path):
    out = tmp_path / "s"
    summary = sample.run({"checkpoint": [trained_spatial]},
                         sample.Params(n=2, width=256, height=240), out)
    assert summary["size"] == [240, 256]
    assert Image.open(out / "sample_0000.png").size == (256, 240)


def test_spatial_samples_are_deterministic_per_seed(trained_spatial):
    G, _ = sample.load_generator(trained_spatial / "ckpt.pt")
    a = sample.sample_images(G, 3, seed=5, batch=1, width=64, height=48)
    b = sample.sample_images(G, 3, seed=5, batch=3, width=64, height=48)
    assert a.shape == (3, 48, 64, 3) and np.array_equal(a, b)


def test_fixed_size_generator_refuses_a_larger_size_naming_spatial_noise(trained):
    G, _ = sample.load_generator(trained / "ckpt.pt")
    with pytest.raises(ParamError, match="--spatial-noise"):
        sample.sample_images(G, 1, seed=0, width=256, height=240)


def test_spatial_size_off_the_stride_names_the_nearest_sizes(trained_spatial):
    G, _ = sample.load_generator(trained_spatial / "ckpt.pt")
    with pytest.raises(ParamError, match="width 250 is not a multiple of .* stride 8; use 248 or 256"):
        sample.sample_images(G, 1, seed=0, width=250)


def test_spatial_interpolation_strip_walks_noise_maps(trained_spatial):
    G, _ = sample.load_generator(trained_spatial / "ckpt.pt")
    assert sample.interpolation_strip(G, 3, keyframes=2, seed=0).shape == (32, 96, 3)
