"""Tests for the sample stage on a tiny checkpoint trained for a few steps."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stages import sample, train
from stages._common import InputError, ParamError


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


def _bytes(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.glob("sample_*.png"))}


def test_writes_n_native_size_pngs_and_a_manifest(trained, tmp_path):
    s = sample.run({"checkpoint": [trained]}, sample.Params(n=5), tmp_path)
    files = sorted(p.name for p in tmp_path.glob("sample_*.png"))
    assert files == [f"sample_{i:04d}.png" for i in range(5)]
    with Image.open(tmp_path / files[0]) as im:
        assert im.size == (32, 32) and im.mode == "RGB"
    meta = json.loads((tmp_path / "samples.json").read_text())
    assert meta["n"] == 5 and meta["seed"] == 0 and meta["weights"] == "G_ema"
    assert meta["files"] == files and s["step"] == 2


def test_same_seed_same_bytes_other_seed_other_images(trained, tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    sample.run({"checkpoint": [trained]}, sample.Params(n=4, seed=3, batch=3), a)
    sample.run({"checkpoint": [trained]}, sample.Params(n=4, seed=3, batch=4), b)
    sample.run({"checkpoint": [trained]}, sample.Params(n=4, seed=4), c)
    assert _bytes(a) == _bytes(b)
    assert _bytes(a) != _bytes(c)


def test_raw_generator_differs_from_ema(trained, tmp_path):
    sample.run({"checkpoint": [trained]}, sample.Params(n=2), tmp_path / "e")
    s = sample.run({"checkpoint": [trained]}, sample.Params(n=2, use_ema=False), tmp_path / "g")
    assert s["weights"] == "G"
    assert _bytes(tmp_path / "e") != _bytes(tmp_path / "g")


def test_accepts_a_checkpoint_file_path(trained, tmp_path):
    s = sample.run({"checkpoint": [trained / "ckpt.pt"]}, sample.Params(n=1), tmp_path)
    assert s["n"] == 1 and (tmp_path / "sample_0000.png").is_file()


def test_interpolation_strip_has_one_frame_per_step(trained, tmp_path):
    s = sample.run({"checkpoint": [trained]}, sample.Params(n=1, interpolate=7), tmp_path)
    assert s["interpolation"] == "interpolation.png"
    with Image.open(tmp_path / "interpolation.png") as im:
        assert im.size == (7 * 32, 32)
        strip = np.asarray(im)
    first, last = strip[:, :32], strip[:, -32:]
    assert not np.array_equal(first, last)              # the walk moves


def test_rgba_samples_keep_binary_alpha(trained_rgba, tmp_path):
    sample.run({"checkpoint": [trained_rgba]}, sample.Params(n=3), tmp_path)
    with Image.open(tmp_path / "sample_0000.png") as im:
        assert im.mode == "RGBA"
        alpha = np.asarray(im)[..., 3]
    assert set(np.unique(alpha).tolist()) <= {0, 255}


def test_missing_checkpoint_names_the_folder(tmp_path):
    with pytest.raises(InputError, match="no ckpt.pt"):
        sample.run({"checkpoint": [tmp_path]}, sample.Params(), tmp_path / "o")


def test_corrupt_checkpoint_is_an_input_error(tmp_path):
    (tmp_path / "ckpt.pt").write_bytes(b"garbage")
    with pytest.raises(InputError, match="ckpt.pt: not a readable"):
        sample.run({"checkpoint": [tmp_path]}, sample.Params(), tmp_path / "o")


def test_one_interpolation_frame_is_refused(trained, tmp_path):
    with pytest.raises(ParamError, match="interpolate"):
        sample.run({"checkpoint": [trained]}, sample.Params(interpolate=1), tmp_path)
