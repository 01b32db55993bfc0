"""train: a small-data DCGAN on 16-px-aligned patches, resumable, CPU-first, DDP-ready.

Reads ``patches.npy`` (uint8, (N, S, S, C)) from a crop artifact — or user-given ``.npy`` files,
images or folders, cut into ``size``×``size`` squares — and trains the networks of
:mod:`stages._gan` with the small-data recipe chosen by measurement (docs/training.md):
hinge loss, spectral norm in D, a second discriminator on the half-size image, DiffAugment
translation on everything D sees, a generator EMA for
sampling, channels_last and flushed denormals on the CPU (bf16 autocast where the hardware
has native bf16; emulated bf16 measured 2× slower).

Options off by default (issue #16, docs/training.md): ``spatial_noise`` (a fully convolutional
generator on a noise map, sampled at any multiple of its stride), ``output = "palette"``
(per-pixel logits over the corpus's most used colours, straight-through Gumbel-softmax) and
``conditional`` (class-conditional G and projection D on each patch's game, from crop's
``patch_games.npy``) and ``position`` (with ``spatial_noise``: G and D are told each patch's
height in its screen, from crop's ``patch_rows.npy``, so whole screens get a layout).

Artifacts (``out_dir``): ``ckpt.pt`` (one dict, see :meth:`TrainingRun.checkpoint`),
``config.json``, ``metrics.jsonl`` (one row per logged step: step, lossD, lossG, ips, swd when
computed), ``grids/step_NNNNNN.png`` (a fixed noise batch through the EMA generator),
``curves.png``.

The code: :class:`Trainer` owns the networks, optimisers and EMA and makes one training step
on a batch of arrays; :class:`TrainingRun` drives it — resume, the loop with its time budget,
rollbacks, metrics, grids and checkpoints; :func:`run` loads the patches and ties them together.

Resume: ``out_dir`` is stable for a cache key, so a checkpoint left by an interrupted run is
picked up and training continues from its step.  Every step's batch, noise and augmentation
come from ``(seed, step, rank)`` alone, so a resumed run follows the uninterrupted one.

Faults: a non-finite or exploding loss rolls the run back to the last good checkpoint with both
learning rates halved, at most ``max_rollbacks`` times; then a :class:`StageError` stops it.

Scale-out: under ``torchrun`` (``WORLD_SIZE`` > 1) the networks are wrapped in
DistributedDataParallel (gloo on CPU, NCCL on CUDA), each rank takes its slice of the global
batch, and only rank 0 writes files.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from stages._augment import parse_policy
from stages._checkpoint import CKPT_VERSION, load_checkpoint, resolve_device, save_checkpoint
from stages._common import (IMAGE_SUFFIXES, InputError, ParamError, ProgressFn, Skipped,
                            StageError, StageParams, atomic_write_text, expand_inputs,
                            file_safe, find_artifact, load_image, no_progress, param, save_png,
                            write_json)
from stages._gan_config import OUTPUT, UPSAMPLE, GANConfig, max_d_scales, patch_where
from stages._styles import StyleIndex
from tilesets.artifacts import PATCHES_FILE, ArtifactError, Patches, grid_cut, load_npy

NAME = "train"

#: Values of Params.conditional.
CONDITIONAL = ("auto", "on", "off")


def conditional_mode(value: Any) -> Any:
    """``conditional`` in today's form: the flag of earlier versions (true/false) is
    "on"/"off"; anything else is returned as given (checked by Params)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return value
INPUTS = {"patches": "crop"}
OPTIONAL_INPUTS = ()
LIBS = ("torch", "numpy")

log = logging.getLogger("tilegan.train")


@dataclass(frozen=True)
class Params(StageParams):
    STAGE = "train"

    size: int = param(64, help="Patch side in pixels the GAN is built for: 32, 64 or 128 (larger "
                               "input patches are cut into size×size squares).",
                      choices=(16, 32, 64, 128, 256))
    channels: int = param(0, help="0 = as the input patches, 3 = RGB, 4 = RGBA (transparent "
                                  "sprites keep their alpha).", choices=(0, 3, 4))
    steps: int = param(3000, help="Training steps (one D and one G update each).", min=1)
    max_minutes: float = param(5.5, help="Wall-clock budget in minutes; training stops early at the "
                                         "budget and still writes the final checkpoint (0 = none).",
                               min=0)
    batch: int = param(16, help="Images per step per process.", min=1)
    lr_g: float = param(2e-4, help="Adam learning rate of the generator (> 0).")
    lr_d: float = param(4e-4, help="Adam learning rate of the discriminator (> 0).")
    lr_decay: float = param(0.0, help="Share of the run, at its end, over which both learning "
                                      "rates fall linearly to zero (the run ends at --steps or "
                                      "--max-minutes, whichever comes first); 0 = constant.",
                            min=0, max=1)
    betas: tuple = param((0.0, 0.99), help="Adam (beta1, beta2) for both networks, each in [0, 1).")
    nz: int = param(100, help="Length of the noise vector.", min=1)
    ngf: int = param(16, help="Generator base width (widest layer = 8×).", min=1)
    ndf: int = param(16, help="Discriminator base width (widest layer = 8×).", min=1)
    loss: str = param("hinge", help="GAN loss: hinge, bce (classic non-saturating DCGAN) or "
                                    "rpgan (relativistic pairing: each real image against the "
                                    "generated one of the same batch slot).",
                      choices=("hinge", "bce", "rpgan"))
    spectral_norm: bool = param(True, help="Spectral norm on D's convs (instead of batch norm).")
    upsample: str = param("nearest", help="Generator doubling: deconv (DCGAN transposed conv) or "
                                         "nearest (nearest ×2 + 3×3 conv, no checkerboard).",
                          choices=UPSAMPLE)
    d_scales: int = param(0, help="Image scales D judges: 1 = full size only; 2 or 3 add smaller "
                                  "discriminators on the image average-pooled by 2, 4 (layout and "
                                  "colour at a coarse scale); 0 = auto: 2 from 32 pixels up, else 1.",
                          min=0)
    mbstd: int = param(0, help="Minibatch standard deviation in D over groups of this many "
                               "images (ProGAN's variety check; 0 = off).", min=0)
    diffaug: str = param("translation",
                         help="DiffAugment ops applied to everything D sees, comma separated "
                              "(translation, grid8 = shifts in whole 8-px steps, tiles = "
                              "whole-tile wrapped shifts that keep the 16-px grid, cutout, "
                              "color); empty = off.")
    ema: float = param(0.999, help="Decay of the generator EMA used for grids, SWD and sampling "
                                   "(0 = off; below 1).", min=0)
    mode_seeking: float = param(0.0, help="Weight of the mode-seeking term (MSGAN): G is pushed "
                                          "to make images that differ as much as their noise "
                                          "vectors do, against mode collapse (0 = off).", min=0)
    label_smoothing: float = param(0.0, help="BCE only: real target becomes 1 - this value "
                                             "(below 0.5).", min=0)
    instance_noise: float = param(0.0, help="Std of Gaussian noise added to D's inputs, annealed "
                                            "linearly to 0 over the run (0 = off).", min=0)
    precision: str = param("auto", help="auto, fp32 or bf16 autocast.  auto = bf16 on CUDA and on "
                                        "CPUs with native bf16 (AVX512-BF16/AMX), else fp32; on "
                                        "CUDA without bf16, fp16 with a gradient scaler.",
                           choices=("auto", "fp32", "bf16"))
    seed: int = param(0, help="Seed for initialisation, data order, noise and augmentation.")
    device: str = param("auto", help="auto, cpu or cuda (cuda:N).")
    ckpt_every: int = param(250, help="Write ckpt.pt every this many steps (and at the end).", min=1)
    grid_every: int = param(250, help="Write grids/step_NNNNNN.png every this many steps.", min=1)
    swd_every: int = param(1000, help="Compute SWD against held-back real patches every this "
                                      "many steps (0 = only at the end; -1 = never).", min=-1)
    log_every: int = param(10, help="Append a metrics.jsonl row every this many steps.", min=1)
    swd_holdout: float = param(0.1, help="Share of the patches (at most 512) held back from "
                                         "training as the SWD reference (below 0.9).", min=0)
    max_rollbacks: int = param(3, help="NaN/divergence: roll back with halved learning rates at "
                                       "most this many times, then stop.", min=0)
    compile: bool = param(False, help="torch.compile the networks (dynamic=False; ~40 s warm-up).")
    spatial_noise: bool = param(False, help="Fully convolutional generator on a noise map (nz, "
                                            "size/16, size/16 at 64 px): `pipeline sample "
                                            "--width 256 --height 240` then draws whole screens "
                                            "(sides multiples of the generator's stride).")
    output: str = param("rgb", help="Generator output: rgb (tanh) or palette (per-pixel choice "
                                    "among the corpus's palette_size most used colours, trained "
                                    "through a straight-through Gumbel-softmax; samples are "
                                    "exact palette colours).", choices=OUTPUT)
    palette_size: int = param(64, help="output=palette: most frequent corpus colours kept "
                                       "(the rest of the training pixels map to the nearest).",
                              min=2, max=256)
    gumbel_tau: float = param(1.0, help="output=palette: Gumbel-softmax temperature (> 0).")
    conditional: str = param("off", help="One style at a time: a class-conditional G "
                                          "(conditional batch norm) and a projection D on each "
                                          "patch's source game (crop's patch_games.npy); "
                                          "`pipeline sample --like NAME` then draws one game's "
                                          "style. auto: when the patches come from 2 or more "
                                          "games; on: always (an error without them); off.",
                              choices=CONDITIONAL)
    position: bool = param(False, help="Tell G and D where in its screen each patch lies (its "
                                        "rows' heights, from crop's patch_rows.npy), so whole "
                                        "screens sampled with --width/--height get a screen's "
                                        "layout (sky above, ground below). Needs --spatial-noise.")

    def __post_init__(self) -> None:
        object.__setattr__(self, "conditional", conditional_mode(self.conditional))
        super().__post_init__()

    def check(self) -> None:
        """The declared ranges, then the rules :func:`param` cannot say: open upper bounds,
        positive learning rates, and the rules that involve several fields."""
        super().check()
        for name, limit in _BELOW.items():
            if not getattr(self, name) < limit:
                self._fail(name, f"{name} must be below {limit}, got {getattr(self, name)}")
        for name in ("lr_g", "lr_d"):
            if not getattr(self, name) > 0:
                self._fail(name, f"{name} must be positive, got {getattr(self, name)}")
        if len(tuple(self.betas)) != 2 or not all(0.0 <= float(b) < 1.0 for b in self.betas):
            self._fail("betas", f"betas must be two numbers in [0, 1), got {self.betas}")
        if self.d_scales > max_d_scales(self.size):
            self._fail("d_scales", f"d_scales must be 0 (auto) or 1..{max_d_scales(self.size)} "
                                   f"for size {self.size} (every scale D judges keeps at least "
                                   f"16 pixels), got {self.d_scales}")
        if self.mode_seeking > 0 and self.batch < 2:
            self._fail("mode_seeking", "mode_seeking needs batch >= 2 (it compares pairs of images)")
        try:
            parse_policy(self.diffaug)
        except ValueError as e:
            self._fail("diffaug", f"diffaug: {e}")
        if not self.gumbel_tau > 0:
            self._fail("gumbel_tau", f"gumbel_tau must be positive, got {self.gumbel_tau}")
        if self.output == "palette" and self.channels == 4:
            self._fail("output", "output=palette trains RGB only; use --channels 3 or --output rgb")
        if self.position and not self.spatial_noise:
            self._fail("position", "position needs --spatial-noise (a generator that draws "
                                   "whole screens)")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            self._fail("device", f"device must be auto, cpu or cuda, got {self.device!r}")

    def _fail(self, name: str, message: str) -> None:
        raise ParamError(f"{self.STAGE}: {message}", field=name)


#: Upper bounds a value must stay strictly below (``param``'s bounds are inclusive).
_BELOW = {"ema": 1.0, "label_smoothing": 0.5, "swd_holdout": 0.9}

#: Overrides for a smoke run that finishes in about a second (tests, CI).
TINY = dict(steps=3, batch=4, ngf=8, ndf=8, nz=16, ckpt_every=2, grid_every=2, swd_every=0,
            log_every=1, max_minutes=0.0)

#: Parameters that may change between an interrupted run and its resume without breaking it.
_RESUME_FREE = {"steps", "max_minutes", "ckpt_every", "grid_every", "swd_every", "log_every",
                "device", "compile", "max_rollbacks"}

_DIVERGED = 1e4          # |loss| above this counts as divergence

#: Streams of the seeded RNGs (``[seed, stream, ...]``), one per kind of random draw: data order,
#: a step's noise and augmentation, the fixed grid/SWD noise, the SWD floor's pick (the SWD
#: holdout uses 7, in stages._metrics).
_SEED_EPOCH, _SEED_STEP, _SEED_FIXED_NOISE, _SEED_FLOOR = 1, 2, 3, 5


def resolve_d_scales(p: Params) -> int:
    """``d_scales`` with 0 (auto) resolved: 2 (full size + half size) from 32 pixels up, else 1."""
    return p.d_scales or (2 if p.size >= 32 else 1)


def gan_config(p: Params, channels: int, palette: Optional[np.ndarray] = None,
               classes: tuple = (), class_share: tuple = (),
               screen_height: int = 0, class_height: tuple = ()) -> GANConfig:
    """The network architecture these parameters train (``palette`` (K, 3) uint8: the colours
    of ``output = "palette"``, see :func:`corpus_palette`; ``classes``: the style names of a
    ``conditional`` model, ``class_share`` their shares of the training patches;
    ``screen_height``: the training screens' median height of a ``position`` model,
    ``class_height`` each style's, when it is conditional too)."""
    pal = () if palette is None or p.output != "palette" else tuple(
        tuple(int(x) for x in c) for c in palette)
    return GANConfig(height=p.size, width=p.size, channels=channels, nz=p.nz, ngf=p.ngf,
                     ndf=p.ndf, spectral_norm=p.spectral_norm, upsample=p.upsample,
                     d_scales=resolve_d_scales(p), mbstd=p.mbstd,
                     g_arch="fcn" if p.spatial_noise else "dcgan", output=p.output,
                     palette=pal, gumbel_tau=float(p.gumbel_tau),
                     classes=tuple(classes), class_share=tuple(class_share),
                     g_cond="cbn" if classes else "concat",
                     screen_height=int(screen_height) if p.position else 0,
                     class_height=tuple(int(h) for h in class_height)
                     if p.position and classes else ())


def corpus_palette(images: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` most frequent RGB colours of ``images`` (..., 3|4) uint8 -> (≤k, 3) uint8.

    Ties go to the smaller packed colour value (deterministic); fewer colours than ``k`` are
    all kept.
    """
    packed = _pack_rgb(images)
    colours, counts = np.unique(packed, return_counts=True)
    keep = np.sort(colours[np.lexsort((colours, -counts))[:k]])
    return np.stack([(keep >> 16) & 255, (keep >> 8) & 255, keep & 255], axis=1).astype(np.uint8)


def map_to_palette(images: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """``images`` (..., 3) uint8 with every colour replaced by its nearest (RGB Euclidean)
    colour of ``palette`` (K, 3) uint8; computed once per distinct colour."""
    colours, inverse = np.unique(_pack_rgb(images), return_inverse=True)
    rgb = np.stack([(colours >> 16) & 255, (colours >> 8) & 255, colours & 255], 1).astype(np.int32)
    d = ((rgb[:, None, :] - palette[None].astype(np.int32)) ** 2).sum(-1)
    return palette[d.argmin(1)][inverse.reshape(images.shape[:-1])]


def _pack_rgb(images: np.ndarray) -> np.ndarray:
    a = images[..., :3].astype(np.int64)
    return (a[..., 0] << 16) | (a[..., 1] << 8) | a[..., 2]


def _plain_params(p: Params) -> dict[str, Any]:
    """Params as a dict of plain Python values (safe for weights_only loading and JSON)."""
    out = {}
    for f in dataclasses.fields(p):
        v = getattr(p, f.name)
        if isinstance(v, tuple):
            v = [float(x) if isinstance(x, float) else x for x in v]
        elif hasattr(v, "value"):
            v = v.value
        out[f.name] = v
    return out


# --------------------------------------------------------------------------- data
def load_patches(paths: list[Path], *, size: int, channels: int) -> tuple[np.ndarray, list]:
    """Load training patches as uint8 (N, size, size, channels).

    ``paths`` is a crop artifact dir (its :class:`~tilesets.artifacts.Patches`) or ``.npy``
    files / images / folders.  Images are cut into non-overlapping ``size`` squares; patches
    larger than ``size`` are cut into ``size`` squares too.  ``channels`` 0 keeps the channels
    of the (first) .npy input.  Returns the array and a list of skipped inputs with reasons.
    """
    skipped = Skipped(logger=log)
    artifact = find_artifact(paths, PATCHES_FILE)
    files = [artifact] if artifact is not None else expand_inputs(paths, IMAGE_SUFFIXES + (".npy",))
    channels = channels or _channels_of_first_npy(files)
    arrays: list[np.ndarray] = []
    for f in files:
        if f.suffix.lower() == ".npy":
            a = _read_npy(f, is_artifact=f == artifact)
        else:
            try:
                a = load_image(f, mode="RGBA" if channels == 4 else "RGB")[None]
            except InputError as e:
                skipped.add(f, str(e))
                continue
        a = _fit_channels(a, channels)
        h, w = a.shape[1:3]
        if h < size or w < size:
            if f.suffix.lower() == ".npy":
                raise InputError(f"{f}: patches are {h}x{w} pixels, smaller than size={size}; "
                                 f"train with --size {min(h, w)} or crop bigger patches")
            skipped.add(f, f"{f}: {w}x{h} is smaller than {size}x{size}")
            continue
        arrays.append(grid_cut(a, size))
    if not arrays:
        where = ", ".join(str(p) for p in paths) or "(no input)"
        raise InputError(f"{where}: no usable training patches"
                         + (f" ({len(skipped)} file(s) skipped)" if skipped else ""))
    return np.ascontiguousarray(np.concatenate(arrays)), skipped.items


def crop_patches(paths: list[Path]) -> Optional[Patches]:
    """The crop artifact among ``paths`` (memory-mapped :class:`Patches`: its games and rows),
    or None for other inputs."""
    artifact = find_artifact(paths, PATCHES_FILE)
    if artifact is None:
        return None
    try:
        return Patches.load(artifact.parent, mmap=True)
    except ArtifactError as e:
        raise InputError(str(e)) from None


def load_patch_games(paths: list[Path], n_patches: int) -> tuple[Optional[np.ndarray], list]:
    """Each loaded patch's game (int64 (n_patches,), an index into the returned names) from a
    crop artifact's ``patch_games.npy``; (None, []) for other inputs or older artifacts.

    Crop's patches cut into smaller ``size`` squares (:func:`load_patches`) keep their game.
    """
    p = crop_patches(paths)
    if p is None or p.games is None or not len(p.games) or n_patches % len(p.games):
        return None, []
    return np.repeat(p.games.astype(np.int64), n_patches // len(p.games)), list(p.game_names)


def load_patch_rows(paths: list[Path], n_patches: int, size: int) -> Optional[np.ndarray]:
    """Each loaded patch's (top row, screen height) in pixels (int64 (n_patches, 2)) from a
    crop artifact's ``patch_rows.npy``; None for other inputs or older artifacts.

    Crop's patches cut into smaller ``size`` squares (:func:`load_patches`, row-major) get
    their own rows.
    """
    p = crop_patches(paths)
    if p is None or p.rows is None or not len(p.rows) or n_patches % len(p.rows):
        return None
    k = n_patches // len(p.rows)                       # size squares per crop patch
    nx = max(1, int(round(math.sqrt(k))))
    rows = np.repeat(p.rows.astype(np.int64), k, axis=0)
    rows[:, 0] += np.tile((np.arange(k) // nx) * size, len(p.rows))
    return rows


def _channels_of_first_npy(files: list[Path]) -> int:
    """4 when the first .npy input holds RGBA, else 3 (images alone train as RGB)."""
    first = next((f for f in files if f.suffix.lower() == ".npy"), None)
    if first is None:
        return 3
    try:
        return 4 if load_npy(first, mmap=True).shape[-1] == 4 else 3
    except ArtifactError:
        return 3


def _read_npy(path: Path, *, is_artifact: bool) -> np.ndarray:
    """uint8 (N, H, W, C) from crop's ``patches.npy`` or a user's array (N, H, W, C) / (H, W, C)."""
    try:
        if is_artifact:
            return Patches.load(path.parent).images
        a = load_npy(path)
    except ArtifactError as e:
        raise InputError(str(e)) from None
    if a.dtype != np.uint8 or a.ndim not in (3, 4) or a.shape[-1] not in (3, 4):
        raise InputError(f"{path}: expected uint8 patches shaped (N, S, S, 3|4), got "
                         f"{a.dtype} {a.shape}")
    return a[None] if a.ndim == 3 else a


def _fit_channels(a: np.ndarray, channels: int) -> np.ndarray:
    if a.shape[-1] == channels:
        return a
    if channels == 3:
        return a[..., :3]
    return np.concatenate([a, np.full(a.shape[:-1] + (1,), 255, np.uint8)], axis=-1)


@dataclass(frozen=True)
class TrainingData:
    """The loaded patches split into what trains and what SWD compares against.

    Attributes
    ----------
    patches : ndarray, shape (N, S, S, C), uint8
        Everything loaded.
    train : ndarray, shape (n_train, S, S, C), uint8
    holdout : ndarray, shape (n_holdout, S, S, C), uint8, or None
        Real patches held back from training as the SWD reference (None when the corpus is
        too small to spare them, see :func:`stages._metrics.sample_swd_reference`).
    labels : ndarray, shape (n_train,), int64, or None
        The style (game index) of each training patch for a ``conditional`` model.
    rows : ndarray, shape (n_train, 2), int64, or None
        Each training patch's (top row, screen height) in pixels, for a ``position`` model.
    """

    patches: np.ndarray
    train: np.ndarray
    holdout: Optional[np.ndarray]
    labels: Optional[np.ndarray] = None
    rows: Optional[np.ndarray] = None

    @classmethod
    def split(cls, patches: np.ndarray, *, holdout: float, seed: int,
              labels: Optional[np.ndarray] = None,
              rows: Optional[np.ndarray] = None) -> "TrainingData":
        """``labels`` (N,) int64 per patch (a conditional model's styles) or None, ``rows``
        (N, 2) their positions or None; the result's are those of ``train``."""
        from stages._metrics import sample_swd_reference

        train_idx, held = sample_swd_reference(patches, holdout=holdout, seed=seed)
        return cls(patches, patches[train_idx], held,
                   None if labels is None else labels[train_idx],
                   None if rows is None else rows[train_idx])

    @property
    def n_holdout(self) -> int:
        return 0 if self.holdout is None else len(self.holdout)

    def counts(self) -> dict[str, int]:
        """``n_patches``, ``n_train``, ``n_holdout`` (for config.json and the summary)."""
        return {"n_patches": int(len(self.patches)), "n_train": int(len(self.train)),
                "n_holdout": int(self.n_holdout)}


@functools.lru_cache(maxsize=4)
def _epoch_perm(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, _SEED_EPOCH, epoch]).permutation(n)


def batch_indices(seed: int, step: int, n: int, global_batch: int) -> np.ndarray:
    """Indices of the global batch of ``step``: consecutive slices of per-epoch permutations.

    A pure function of its arguments, so data order survives any interruption.
    """
    out = np.empty(global_batch, np.int64)
    pos, filled = step * global_batch, 0
    while filled < global_batch:
        epoch, off = divmod(pos, n)
        take = min(n - off, global_batch - filled)
        out[filled:filled + take] = _epoch_perm(seed, epoch, n)[off:off + take]
        filled += take
        pos += take
    return out


def _step_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0])


# --------------------------------------------------------------------------- RNG state
def _rng_state() -> dict:
    import torch

    np_state = np.random.get_state()
    st = {"torch": torch.get_rng_state(),
          "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                    "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
          "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]]}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict) -> None:
    import torch

    torch.set_rng_state(st["torch"])
    n = st["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["gauss"]))
    py = st["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _cpu_copy(obj: Any) -> Any:
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu_copy(v) for v in obj)
    return obj


# --------------------------------------------------------------------------- device
def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX); emulated bf16 measured
    ~2× *slower* than fp32 on an AVX512 Xeon without it (docs/training.md)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="ignore")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: "Any") -> str:
    """'auto' -> 'bf16' on CUDA or native-bf16 CPUs, else 'fp32'."""
    if precision != "auto":
        return precision
    if device.type == "cuda" or cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def _autocast(device: "Any", precision: str) -> tuple[Any, Any]:
    """(autocast context factory, dtype or None) for the device and precision."""
    import torch

    precision = resolve_precision(precision, device)
    if precision == "fp32":
        return contextlib.nullcontext, None
    if device.type == "cuda":
        dtype = (torch.bfloat16 if precision == "bf16" and torch.cuda.is_bf16_supported()
                 else torch.float16)
        return (lambda: torch.autocast("cuda", dtype=dtype)), dtype
    if precision == "bf16":
        return (lambda: torch.autocast("cpu", dtype=torch.bfloat16)), torch.bfloat16
    return contextlib.nullcontext, None


@dataclass(frozen=True)
class Ranks:
    """Where this process trains: ``world`` processes, this one's ``rank`` and ``device``."""

    world: int
    rank: int
    device: Any

    @property
    def main(self) -> bool:
        """Rank 0, the one that writes files."""
        return self.rank == 0


@contextlib.contextmanager
def process_group(device_name: str) -> Iterator[Ranks]:
    """Resolve the device and, under ``torchrun`` (``WORLD_SIZE`` > 1), join the process group
    (NCCL on CUDA, gloo on CPU) for the block; one process alone needs no group."""
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_name)
    rank, created = 0, False
    if world > 1:
        import torch.distributed as dist

        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            created = True
        rank, world = dist.get_rank(), dist.get_world_size()
    if device.type == "cpu":
        torch.set_flush_denormal(True)       # a saturating D otherwise slows steps ~2.4×
    try:
        yield Ranks(world, rank, device)
    finally:
        if created:
            import torch.distributed as dist

            dist.destroy_process_group()


def _rank0_value(value: int, device: Any) -> int:
    """Rank 0's ``value``, on every rank."""
    import torch
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.broadcast(t, 0)
    return int(t.item())


def _max_over_ranks(value: float, device: Any) -> float:
    """The largest ``value`` of all ranks, on every rank."""
    import torch
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


# --------------------------------------------------------------------------- losses
def discriminator_loss(real_logits: "Any", fake_logits: "Any", *, kind: str,
                       label_smoothing: float = 0.0) -> "Any":
    """D's loss on its logits for real and generated images (any equal shapes, float32).

    ``kind`` "hinge": mean relu(1 - real) + mean relu(1 + fake); "bce": binary cross-entropy
    with target 1 - ``label_smoothing`` for real and 0 for fake; "rpgan" (relativistic
    pairing): mean softplus(fake - real), slot by slot.
    """
    import torch
    import torch.nn.functional as F

    if kind == "rpgan":
        return F.softplus(fake_logits - real_logits).mean()
    if kind == "hinge":
        return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()
    return (F.binary_cross_entropy_with_logits(
                real_logits, torch.full_like(real_logits, 1.0 - label_smoothing))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))


def generator_loss(fake_logits: "Any", *, kind: str, real_logits: "Any" = None) -> "Any":
    """G's loss on D's logits for its images: -mean (hinge), non-saturating BCE, or "rpgan":
    mean softplus(real - fake) against D's logits for the real images of the same slots
    (``real_logits``, constants to G)."""
    import torch.nn.functional as F

    if kind == "rpgan":
        if real_logits is None:
            raise ValueError("the rpgan loss needs D's logits for the real batch")
        return F.softplus(real_logits - fake_logits).mean()
    return -fake_logits.mean() if kind == "hinge" else F.softplus(-fake_logits).mean()


def mode_seeking_term(fake: "Any", z: "Any") -> "Any":
    """MSGAN's mode-seeking term: pair the batch's first half with its second half and return
    1 / (mean |G(z1) - G(z2)| / mean |z1 - z2|), which falls as images spread out as much as
    their noise vectors do (a generator that maps many z to one image pays for it)."""
    h = fake.shape[0] // 2
    ratio = ((fake[:h] - fake[h:2 * h]).abs().mean()
             / (z[:h] - z[h:2 * h]).abs().mean().clamp_min(1e-8))
    return 1.0 / (ratio + 1e-5)


def lr_factor(decay: float, done: float) -> float:
    """Learning-rate factor at ``done`` (0..1) of a run whose last ``decay`` share falls
    linearly to zero: 1 before that share, 0 at the very end."""
    if decay <= 0:
        return 1.0
    return min(1.0, max(0.0, (1.0 - done) / decay))


# --------------------------------------------------------------------------- the trainer
class Trainer:
    """Networks, optimisers, EMA and one training step on arrays; no file I/O.

    Attributes
    ----------
    G, D, G_ema : torch.nn.Module
        The generator, the discriminator and the generator's weight average (used to sample).
    G_forward, D_forward : callable
        What a training step calls to run G and D: the modules themselves, or their
        DistributedDataParallel and/or torch.compile wrappers.
    D_forward_for_G : callable
        D as the generator's update runs it.  D is frozen there, so under DDP it is the bare
        module (compiled when asked): nothing of D's must be synchronised across ranks.
    lr_scale : float
        Halved by each rollback (:meth:`roll_back`).
    rollbacks : int
        Rollbacks so far.
    """

    def __init__(self, params: Params, cfg: GANConfig, device: "Any", *, world: int = 1,
                 rank: int = 0):
        import torch

        from stages._gan import Discriminator, Generator

        self.params, self.cfg, self.device, self.world, self.rank = params, cfg, device, world, rank
        torch.manual_seed(params.seed)
        self.G = Generator(cfg).to(device)
        self.D = Discriminator(cfg).to(device)
        if device.type == "cpu":
            self.G = self.G.to(memory_format=torch.channels_last)
            self.D = self.D.to(memory_format=torch.channels_last)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self._ema_bn_stale = True
        betas = tuple(params.betas)
        self.optG = torch.optim.Adam(self.G.parameters(), lr=params.lr_g, betas=betas)
        self.optD = torch.optim.Adam(self.D.parameters(), lr=params.lr_d, betas=betas)
        self.autocast, amp_dtype = _autocast(device, params.precision)
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
        self.augment_ops = parse_policy(params.diffaug)
        self.lr_scale, self.rollbacks = 1.0, 0
        self.lr_sched = 1.0                      # schedule factor (lr_decay), set per step
        self.d_has_bn = not cfg.spectral_norm
        self.G_forward, self.D_forward = self._wrap(self.G), self._wrap(self.D)
        if world == 1:
            self.D_forward_for_G = self.D_forward
        else:
            self.D_forward_for_G = (torch.compile(self.D, dynamic=False) if params.compile
                                    else self.D)

    def _wrap(self, module: "Any") -> "Any":
        """``module`` in DDP across ranks (when world > 1), then compiled (when asked)."""
        import torch

        forward = module
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            forward = DDP(module, device_ids=[self.device.index] if self.device.type == "cuda"
                          else None)
        return torch.compile(forward, dynamic=False) if self.params.compile else forward

    # ----------------------------------------------------------------- state
    def state(self) -> dict:
        """Weights, optimiser states, EMA, ``lr_scale`` and ``rollbacks`` (checkpoint keys)."""
        self._calibrate_ema_bn()
        return {"G": self.G.state_dict(), "D": self.D.state_dict(), "G_ema": self.G_ema.state_dict(),
                "optG": self.optG.state_dict(), "optD": self.optD.state_dict(),
                "lr_scale": float(self.lr_scale), "rollbacks": int(self.rollbacks)}

    def load_state(self, st: dict) -> None:
        self.G.load_state_dict(st["G"])
        self.D.load_state_dict(st["D"])
        self.G_ema.load_state_dict(st["G_ema"])
        self.optG.load_state_dict(st["optG"])
        self.optD.load_state_dict(st["optD"])
        self.lr_scale = float(st.get("lr_scale", 1.0))
        self.rollbacks = int(st.get("rollbacks", 0))
        self._apply_lr()

    def roll_back(self, good: dict) -> None:
        """Return to ``good`` (an earlier :meth:`state`) with both learning rates halved."""
        rollbacks = self.rollbacks + 1
        self.load_state(good)
        self.rollbacks, self.lr_scale = rollbacks, self.lr_scale / 2
        self._apply_lr()

    def _apply_lr(self) -> None:
        for g in self.optG.param_groups:
            g["lr"] = self.params.lr_g * self.lr_scale * self.lr_sched
        for g in self.optD.param_groups:
            g["lr"] = self.params.lr_d * self.lr_scale * self.lr_sched

    def set_progress(self, done: float) -> None:
        """Set the learning rates for a run that is ``done`` (0..1) finished (``lr_decay``)."""
        f = lr_factor(self.params.lr_decay, done)
        if f != self.lr_sched:
            self.lr_sched = f
            self._apply_lr()

    # ----------------------------------------------------------------- one step
    def step(self, step: int, real_u8: np.ndarray, labels: Optional[np.ndarray] = None,
             rows: Optional[np.ndarray] = None) -> tuple[float, float, bool]:
        """One D update and one G update on a uint8 (B, S, S, C) batch (``labels`` (B,): the
        styles of a conditional model; ``rows`` (B, 2): the patches' (top row, screen height)
        for a positional one; its fakes are drawn with the same labels and positions).

        All randomness (noise, augmentation) comes from ``(seed, step, rank, rollbacks)``.
        Returns (lossD, lossG, ok) averaged over ranks; ok is False when a loss is non-finite
        or exploded on any rank (then nothing should be kept from this step).
        """
        import torch

        from stages._gan import from_uint8

        p, dev = self.params, self.device
        gen = torch.Generator().manual_seed(_step_seed(p.seed, _SEED_STEP, step, self.rank,
                                                       self.rollbacks))
        real = from_uint8(real_u8, device=dev)
        if dev.type == "cpu":
            real = real.contiguous(memory_format=torch.channels_last)
        z = torch.randn(real.shape[0], *self.cfg.noise_shape(), generator=gen).to(dev)
        y = None if not self.cfg.n_classes else torch.as_tensor(labels, dtype=torch.int64).to(dev)
        where = None
        if self.cfg.positional:
            if rows is None:
                raise ValueError("a positional model trains on patches with their rows")
            where = torch.from_numpy(patch_where(rows, real.shape[2], z.shape[2])).to(dev)
        noise_std = p.instance_noise * max(0.0, 1.0 - step / max(1, p.steps))
        with self.autocast():
            fake = self.G_forward(z, y, where)
        lossD = self._update_discriminator(real, fake, gen, noise_std, y, where)
        lossG = self._update_generator(fake, z, gen, noise_std, y, where, real=real)
        lossD, lossG, ok = self._agree_on_losses(lossD, lossG)
        if ok:
            self._update_ema(step)
        return lossD, lossG, ok

    def _discriminator_input(self, x: "Any", gen: "Any", noise_std: float) -> "Any":
        """What D sees of images ``x``: DiffAugment, then instance noise of std ``noise_std``."""
        import torch

        from stages._augment import diff_augment

        if self.augment_ops:
            x = diff_augment(x, self.augment_ops, generator=gen)
        if noise_std > 0:
            x = x + noise_std * torch.randn(x.shape, generator=gen).to(self.device, x.dtype)
        return x

    def _update_discriminator(self, real: "Any", fake: "Any", gen: "Any",
                              noise_std: float, y: "Any" = None, where: "Any" = None) -> "Any":
        """One optimiser step of D on a real and a generated batch; returns its loss."""
        import torch

        p, b = self.params, real.shape[0]
        self.optD.zero_grad(set_to_none=True)
        real_in = self._discriminator_input(real, gen, noise_std)
        fake_in = self._discriminator_input(fake.detach().float(), gen, noise_std)
        with self.autocast():
            if self.d_has_bn and self.world == 1:        # batch norm: separate batches
                real_logits = self.D_forward(real_in, 1, y, where)
                fake_logits = self.D_forward(fake_in, 1, y, where)
            else:
                both = self.D_forward(torch.cat([real_in, fake_in]), 2,
                                      None if y is None else torch.cat([y, y]),
                                      None if where is None else torch.cat([where, where]))
                real_logits, fake_logits = both[:b], both[b:]
        loss = discriminator_loss(real_logits, fake_logits, kind=p.loss,
                                  label_smoothing=p.label_smoothing)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optD)
        return loss

    def _update_generator(self, fake: "Any", z: "Any", gen: "Any", noise_std: float,
                          y: "Any" = None, where: "Any" = None, real: "Any" = None) -> "Any":
        """One optimiser step of G through the (frozen) D; returns its loss.  The rpgan loss
        also scores ``real`` with the updated D (no gradients)."""
        import torch

        p = self.params
        self.optG.zero_grad(set_to_none=True)
        self.D.requires_grad_(False)
        real_logits = None
        if p.loss == "rpgan":
            with torch.no_grad(), self.autocast():
                real_logits = self.D_forward_for_G(
                    self._discriminator_input(real, gen, noise_std), 1, y, where).float()
        with self.autocast():
            fake_logits = self.D_forward_for_G(
                self._discriminator_input(fake.float(), gen, noise_std), 1, y, where)
        loss = generator_loss(fake_logits, kind=p.loss, real_logits=real_logits)
        if p.mode_seeking > 0:
            loss = loss + p.mode_seeking * mode_seeking_term(fake.float(), z)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optG)
        self.scaler.update()
        self.D.requires_grad_(True)
        return loss

    def _agree_on_losses(self, lossD: "Any", lossG: "Any") -> tuple[float, float, bool]:
        """(lossD, lossG) averaged over ranks and whether every rank's were finite and sane."""
        import torch

        vals = torch.stack([lossD.detach().float(), lossG.detach().float()]).cpu()
        bad = float(not bool(torch.isfinite(vals).all()) or bool((vals.abs() > _DIVERGED).any()))
        if self.world > 1:
            import torch.distributed as dist

            t = torch.cat([torch.nan_to_num(vals, nan=0.0, posinf=0.0, neginf=0.0),
                           torch.tensor([bad])]).to(self.device)
            dist.all_reduce(t)
            t = t.cpu()
            vals, bad = t[:2] / self.world, float(t[2])
        return float(vals[0]), float(vals[1]), bad == 0

    def _update_ema(self, step: int) -> None:
        import torch

        if self.params.ema <= 0:
            self.G_ema.load_state_dict(self.G.state_dict())
            self._ema_bn_stale = True
            return
        d = min(self.params.ema, (1.0 + step) / (10.0 + step))
        with torch.no_grad():
            ep = list(self.G_ema.parameters())
            gp = [q.detach() for q in self.G.parameters()]
            torch._foreach_lerp_(ep, gp, 1.0 - d)
        self._ema_bn_stale = True

    def _calibrate_ema_bn(self, n: int = 256, batch: int = 128) -> None:
        """Give G_ema batch-norm statistics that match its own (averaged) weights.

        The raw generator's running statistics describe the raw weights, not their average;
        sampling the EMA with them washes colours out.  So, before G_ema is used or saved,
        its statistics are re-estimated from ``n`` fixed noise vectors (a cumulative average
        in train mode, then back to eval mode).  Deterministic: same weights, same statistics.
        """
        import torch

        if not self._ema_bn_stale:
            return
        self._ema_bn_stale = False
        bns = [m for m in self.G_ema.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        if not bns:
            return
        gen = torch.Generator().manual_seed(_step_seed(self.params.seed, _SEED_FIXED_NOISE, 0, 0, 0))
        saved = [m.momentum for m in bns]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None                            # cumulative moving average
        self.G_ema.train()
        with torch.no_grad():
            for i in range(0, n, batch):
                k = min(batch, n - i)
                self.G_ema(torch.randn(k, *self.cfg.noise_shape(), generator=gen).to(self.device),
                           self.mixture_labels(k, start=i))
        self.G_ema.eval()
        for m, mom in zip(bns, saved):
            m.momentum = mom

    def params_finite(self) -> bool:
        import torch

        return all(bool(torch.isfinite(t).all()) for m in (self.G, self.D)
                   for t in m.state_dict().values() if t.is_floating_point())

    def mixture_labels(self, n: int, *, start: int = 0) -> "Any":
        """Labels ``start .. start + n - 1`` of :func:`~stages._gan_config.prior_labels` (None
        when unconditional): the styles of grids, SWD samples and batch-norm calibration, in
        the training patches' proportions, as the batches G trains on."""
        import torch

        from stages._gan_config import prior_labels

        if not self.cfg.n_classes:
            return None
        return torch.tensor(prior_labels(self.cfg.style_prior(), n, start=start),
                            dtype=torch.int64).to(self.device)

    def generate(self, z: "Any", *, batch: int = 256, style: Optional[int] = None) -> np.ndarray:
        """uint8 (N, S, S, C) images from the EMA generator (eval mode) for noise z (a
        conditional model draws the styles in the corpus's proportions, :meth:`mixture_labels`,
        or only ``style``)."""
        import torch

        from stages._gan import to_uint8

        self._calibrate_ema_bn()
        out = []
        with torch.inference_mode():
            for i in range(0, len(z), batch):
                k = len(z[i:i + batch])
                y = self.mixture_labels(k, start=i)
                if style is not None and y is not None:
                    y = torch.full_like(y, int(style))
                out.append(to_uint8(self.G_ema(z[i:i + batch].to(self.device), y)))
        return np.concatenate(out)

    def checksum(self) -> float:
        """Sum of |weights| of G's parameters (ranks in sync agree on it; BN running
        statistics are per rank under DDP and left out)."""
        return float(sum(float(t.detach().double().abs().sum()) for t in self.G.parameters()))


# --------------------------------------------------------------------------- pictures
#: images in each style's grid (grids/style_<name>.png) of a conditional model
STYLE_GRID = 16


def style_file_name(name: str, index: int) -> str:
    """A file-name-safe form of a style (game) name; the index keeps names unique."""
    return f"{index:02d}_{file_safe(name, default='style')}"


def _tile_grid(images: np.ndarray, cols: int) -> np.ndarray:
    n, h, w, c = images.shape
    rows = math.ceil(n / cols)
    grid = np.zeros((rows * h, cols * w, c), np.uint8)
    for i, im in enumerate(images):
        r, q = divmod(i, cols)
        grid[r * h:(r + 1) * h, q * w:(q + 1) * w] = im
    return grid


def plot_curves(rows: list[dict], path: Path) -> None:
    """Write a PNG of lossD/lossG (and SWD when logged) against step."""
    steps = [r["step"] for r in rows if "lossD" in r]
    ld = [r["lossD"] for r in rows if "lossD" in r]
    lg = [r["lossG"] for r in rows if "lossD" in r]
    sw = [(r["step"], r["swd"]) for r in rows if r.get("swd") is not None]
    try:
        import io

        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from PIL import Image

        fig = Figure(figsize=(10 if sw else 6, 3.5), dpi=100)
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, 2 if sw else 1, squeeze=False)
        ax = axes[0][0]
        ax.plot(steps, ld, label="loss D", lw=1)
        ax.plot(steps, lg, label="loss G", lw=1)
        ax.set_xlabel("step")
        ax.set_title("losses")
        ax.legend()
        if sw:
            ax2 = axes[0][1]
            ax2.plot([s for s, _ in sw], [v for _, v in sw], "o-", color="C2")
            ax2.set_xlabel("step")
            ax2.set_title("SWD vs held-back real patches (lower is better)")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", metadata={"Software": None})
        buf.seek(0)
        with Image.open(buf) as im:
            save_png(path, im.convert("RGB"))
    except ImportError:
        _plot_pil(steps, [("loss D", ld, (31, 119, 180)), ("loss G", lg, (255, 127, 14))], sw, path)


def _plot_pil(steps: list, series: list, sw: list, path: Path) -> None:
    from PIL import Image, ImageDraw

    w, h, m = 640, 300, 30
    im = Image.new("RGB", (w, h), "white")
    dr = ImageDraw.Draw(im)
    dr.rectangle([m, m, w - m, h - m], outline="black")
    allv = [v for _, vals, _ in series for v in vals] + [v for _, v in sw]
    if steps and allv:
        lo, hi = min(allv), max(allv)
        hi = hi if hi > lo else lo + 1
        s0, s1 = min(steps), max(max(steps), min(steps) + 1)

        def xy(s: float, v: float) -> tuple[float, float]:
            return (m + (s - s0) / (s1 - s0) * (w - 2 * m), h - m - (v - lo) / (hi - lo) * (h - 2 * m))

        for i, (name, vals, col) in enumerate(series + [("SWD", [v for _, v in sw], (44, 160, 44))]):
            xs = steps if name != "SWD" else [s for s, _ in sw]
            if len(vals) > 1:
                dr.line([xy(s, v) for s, v in zip(xs, vals)], fill=col, width=1)
            dr.text((m + 5 + 80 * i, 8), name, fill=col)
    save_png(path, im)


# --------------------------------------------------------------------------- the run
CKPT_FILE = "ckpt.pt"
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"
CURVES_FILE = "curves.png"


@dataclass
class MetricsLog:
    """The rows of ``metrics.jsonl`` and the clock behind their img/s figures.

    A row is ``{"step", "lossD", "lossG", "ips"}`` (plus ``"swd"`` when computed), or an event
    ``{"step", "event": "rollback", "bad_step", "lr_scale"}``.
    """

    rows: list
    global_batch: int
    step_prev: int = 0
    t_prev: float = 0.0

    def restart_clock(self, step: int) -> None:
        """img/s counts from now and ``step``."""
        self.t_prev, self.step_prev = time.perf_counter(), step

    def images_per_s(self, step: int) -> float:
        return self.global_batch * (step - self.step_prev) / max(time.perf_counter() - self.t_prev, 1e-9)

    def last_losses_at(self, step: int) -> bool:
        """Whether the last row holds the losses of ``step``."""
        return bool(self.rows) and self.rows[-1]["step"] == step and "lossD" in self.rows[-1]

    def truncate(self, step: int) -> None:
        """Forget the rows after ``step`` (a rollback to it)."""
        self.rows[:] = [r for r in self.rows if r["step"] <= step]

    def save(self, path: Path) -> None:
        atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in self.rows))

    @staticmethod
    def read(path: Path, upto: int) -> list[dict]:
        """The rows of a metrics file up to step ``upto`` (unreadable lines are skipped)."""
        rows = []
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if r.get("step", 0) <= upto:
                    rows.append(r)
        return rows


@dataclass
class TrainClock:
    """Training seconds — the time before a resume plus this run's loop — against the budget."""

    max_minutes: float
    before: float = 0.0
    t_loop: float = 0.0

    @property
    def budget(self) -> float:
        return self.max_minutes * 60.0 if self.max_minutes > 0 else math.inf

    def start(self) -> None:
        self.t_loop = time.perf_counter()

    def loop_seconds(self) -> float:
        return time.perf_counter() - self.t_loop

    def elapsed(self) -> float:
        return self.before + self.loop_seconds()


@dataclass
class TrainResult:
    """What a finished run reports (:meth:`to_summary` is the stage summary).

    Attributes
    ----------
    steps, target_steps : int
        Steps done; steps asked for.
    stopped : str
        Why the loop ended: "steps" or "max_minutes".
    resumed_from : int or None
        Step of the checkpoint the run continued from.
    swd, swd_floor : float or None
        Final SWD of EMA samples against the held-back patches; the same for real training
        patches (the floor).
    crispness : dict or None
        ``{"samples": ..., "real": ...}``, each ``colours_per_tile`` and ``tiles_over_4`` after
        nearest-NES-colour mapping (:func:`stages._metrics.crispness`).
    img_per_s, train_seconds, wall_seconds : float
        Images per second in this run's loop; training time including before a resume; the
        whole call.
    n_patches, n_train, n_holdout : int
    device, precision : str
    world_size, rollbacks : int
    skipped : list of dict
        Inputs that were skipped, with reasons.
    g_checksum : float
        Sum of |G's weights| (ranks in sync agree on it).
    """

    steps: int
    target_steps: int
    stopped: str
    resumed_from: Optional[int]
    swd: Optional[float]
    swd_floor: Optional[float]
    crispness: Optional[dict]
    img_per_s: float
    train_seconds: float
    wall_seconds: float
    n_patches: int
    n_train: int
    n_holdout: int
    device: str
    precision: str
    world_size: int
    rollbacks: int
    skipped: list
    g_checksum: float

    def to_summary(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


class TrainingRun:
    """Drives a :class:`Trainer` over the data and writes the train artifact into ``out_dir``.

    Holds what the loop shares between steps: the step to roll back to, the metrics rows and
    the clock.  Only the main rank writes files; every rank trains.
    """

    def __init__(self, params: Params, trainer: Trainer, data: TrainingData, out_dir: Path,
                 ranks: Ranks, progress: ProgressFn = no_progress,
                 styles: Optional[StyleIndex] = None):
        import torch

        from stages._gan import ARCH_VERSION

        self.params, self.trainer, self.data, self.ranks = params, trainer, data, ranks
        # saved beside the weights in every checkpoint: sample names styles with it
        self.style_state = None if styles is None else styles.to_state()
        self.out_dir = Path(out_dir)
        self.progress = progress if ranks.main else no_progress
        self.config = {"params": _plain_params(params), "gan": trainer.cfg.to_dict(),
                       "arch_version": ARCH_VERSION, "world_size": ranks.world,
                       "device": str(ranks.device), **data.counts()}
        # fixed noise for grids and SWD (independent of training randomness)
        fixed = torch.Generator().manual_seed(_step_seed(params.seed, _SEED_FIXED_NOISE))
        shape = trainer.cfg.noise_shape()
        self.grid_z = torch.randn(64, *shape, generator=fixed)   # conditional: corpus mixture
        self.swd_z = torch.randn(data.n_holdout, *shape, generator=fixed)
        self.global_batch = params.batch * ranks.world
        self.start, self.resumed_from = 0, None
        self.clock = TrainClock(params.max_minutes)
        self.log = MetricsLog([], self.global_batch)
        self.good_state, self.good_step = {}, 0         # what a rollback returns to
        self.last_losses = (math.nan, math.nan)      # (lossD, lossG) of the latest step
        self.swd_floor: Optional[float] = None
        self.last_swd: Optional[float] = None

    # ----------------------------------------------------------------- before the loop
    def resume(self) -> None:
        """Continue from ``ckpt.pt`` when the same configuration wrote it; all ranks agree."""
        ck = self._usable_checkpoint()
        if ck is not None:
            self.trainer.load_state(ck)
            _set_rng_state(ck["rng"])
            self.start, self.clock.before = int(ck["step"]), float(ck.get("elapsed", 0.0))
            self.resumed_from = self.start
            log.info("resuming from %s at step %d", self.out_dir / CKPT_FILE, self.start)
        if self.ranks.world > 1:
            self._check_ranks_agree_on_start()
        if self.resumed_from is not None:
            self.log.rows = MetricsLog.read(self.out_dir / METRICS_FILE, self.start)
        self.good_state, self.good_step = _cpu_copy(self.trainer.state()), self.start

    def _check_ranks_agree_on_start(self) -> None:
        rank0_start = _rank0_value(self.start, self.ranks.device)
        if rank0_start != self.start:
            raise StageError(f"rank {self.ranks.rank} found a checkpoint at step {self.start} in "
                             f"{self.out_dir} but rank 0 starts at step {rank0_start}; all ranks "
                             "need the same shared output folder")

    def _usable_checkpoint(self) -> Optional[dict]:
        """The checkpoint in ``out_dir`` if one is there, readable and written by parameters
        that a resume may follow (only those in ``_RESUME_FREE`` may differ), else None."""
        path = self.out_dir / CKPT_FILE
        if not path.exists():
            return None
        try:
            ck = load_checkpoint(path)
            old = ck["config"]["params"]
            # through GANConfig, so fields added since (their defaults) compare equal
            defaults = _plain_params(Params())          # fields added since: their defaults
            same = (GANConfig.from_dict(ck["config"]["gan"]) == self.trainer.cfg and all(
                _resume_value(k, old.get(k, defaults[k])) == v
                for k, v in self.config["params"].items() if k not in _RESUME_FREE))
        except (InputError, KeyError, TypeError) as e:
            log.warning("ignoring unusable checkpoint %s: %s", path, e)
            return None
        if not same:
            log.warning("%s was written with other parameters; starting over", path)
            return None
        return ck

    def prepare(self) -> None:
        """Write config.json and measure the SWD floor (real training patches vs held back)."""
        from stages._metrics import swd

        if not self.ranks.main:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_json(self.out_dir / CONFIG_FILE, self.config)
        train, holdout = self.data.train, self.data.holdout
        if holdout is not None:
            n = len(train)
            pick = np.random.default_rng([self.params.seed, _SEED_FLOOR]).choice(
                n, min(n, len(holdout)), replace=False)
            self.swd_floor = round(swd(train[pick], holdout, seed=self.params.seed)["swd"], 3)

    # ----------------------------------------------------------------- the loop
    def train(self) -> tuple[int, str]:
        """Train from ``start`` to ``steps`` or the budget; returns (last step, stop reason)."""
        p, step = self.params, self.start
        self.clock.start()
        self.log.restart_clock(step)
        self.progress("train", step, p.steps)
        while step < p.steps:
            elapsed = self._agreed_elapsed()
            if elapsed >= self.clock.budget:
                return step, "max_minutes"
            self.trainer.set_progress(max(step / p.steps, elapsed / self.clock.budget))
            lossD, lossG, ok = self.trainer.step(step, *self._batch(step))
            self.last_losses = (lossD, lossG)
            if not ok:
                step = self._roll_back(step, lossD, lossG)
                continue
            step += 1
            self._after_step(step, lossD, lossG)
        return step, "steps"

    def _agreed_elapsed(self) -> float:
        """Training seconds so far; under DDP with a budget, the largest of all ranks, so that
        every rank stops after the same step."""
        elapsed = self.clock.elapsed()
        if self.ranks.world > 1 and self.clock.budget < math.inf:
            elapsed = _max_over_ranks(elapsed, self.ranks.device)
        return elapsed

    def _batch(self, step: int) -> tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]:
        """This rank's slice of the global batch of ``step``: uint8 (batch, S, S, C), its
        labels (batch,) and rows (batch, 2) (None without them)."""
        b, rank = self.params.batch, self.ranks.rank
        idx = np.sort(batch_indices(self.params.seed, step, len(self.data.train),
                                    self.global_batch)[rank * b:(rank + 1) * b])
        labels, rows = self.data.labels, self.data.rows
        return (self.data.train[idx], None if labels is None else labels[idx],
                None if rows is None else rows[idx])

    def _roll_back(self, step: int, lossD: float, lossG: float) -> int:
        """Return to the last checkpoint with halved learning rates (or stop when that has
        been tried ``max_rollbacks`` times); returns the step to continue from."""
        trainer = self.trainer
        if trainer.rollbacks >= self.params.max_rollbacks:
            if self.ranks.main:
                self.log.save(self.out_dir / METRICS_FILE)
            raise StageError(
                f"training diverged at step {step} (lossD={lossD}, lossG={lossG}) and "
                f"{trainer.rollbacks} rollback(s) with halved learning rates did not help; "
                f"lower --lr-g/--lr-d, try --loss hinge --spectral-norm, or change --seed"
                + ("; it was compiled: try without --compile, or with --precision fp32"
                   if self.params.compile else ""))
        log.warning("step %d: non-finite or exploding loss (D=%s, G=%s); rolling back to "
                    "step %d with learning rates x%.3g", step, lossD, lossG, self.good_step,
                    trainer.lr_scale / 2)
        trainer.roll_back(self.good_state)
        self.log.truncate(self.good_step)
        self.log.rows.append({"step": self.good_step, "event": "rollback", "bad_step": step,
                              "lr_scale": trainer.lr_scale})
        return self.good_step

    def _after_step(self, step: int, lossD: float, lossG: float) -> None:
        """Log, draw the grid and checkpoint when ``step`` (just done) is due for them."""
        p = self.params
        swd_now = p.swd_every > 0 and step % p.swd_every == 0 and step != p.steps
        if step % p.log_every == 0 or step == p.steps or swd_now:
            ips = self.log.images_per_s(step)
            row = {"step": step, "lossD": round(lossD, 5), "lossG": round(lossG, 5),
                   "ips": round(ips, 1)}
            if swd_now:
                row["swd"] = self.last_swd = self.eval_swd()
            self.log.restart_clock(step)
            self.log.rows.append(row)
            self.progress("train", step, p.steps, lossD=round(lossD, 3), lossG=round(lossG, 3),
                          ips=round(ips))
        if step % p.grid_every == 0:
            self.save_grid(step)
        if step % p.ckpt_every == 0 and step != p.steps:
            if not self.trainer.params_finite():
                raise StageError(f"training produced non-finite weights at step {step}")
            self.checkpoint(step, self.clock.elapsed())

    # ----------------------------------------------------------------- outputs
    def checkpoint(self, step: int, elapsed: float) -> None:
        """Remember the trainer's state as the one to roll back to; the main rank writes the
        metrics and ``ckpt.pt``: the state plus ``step``, ``elapsed`` (training seconds),
        ``version``, ``config``, ``rng`` (the global RNG states) and, for patches of several
        games, ``styles`` (:meth:`stages._styles.StyleIndex.to_state`)."""
        self.good_state, self.good_step = _cpu_copy(self.trainer.state()), step
        if self.ranks.main:
            self.log.save(self.out_dir / METRICS_FILE)
            extra = {} if self.style_state is None else {"styles": self.style_state}
            save_checkpoint(self.out_dir / CKPT_FILE,
                            dict(self.good_state, step=int(step), elapsed=float(elapsed),
                                 version=CKPT_VERSION, config=self.config, rng=_rng_state(),
                                 **extra))

    def save_grid(self, step: int) -> None:
        """grids/step_NNNNNN.png: the fixed grid noise through the EMA generator (main rank)."""
        if self.ranks.main:
            cols = int(math.ceil(math.sqrt(len(self.grid_z))))
            save_png(self.out_dir / "grids" / f"step_{step:06d}.png",
                     _tile_grid(self.trainer.generate(self.grid_z), cols))

    def save_style_grids(self) -> None:
        """grids/style_<name>.png: one grid per style of a conditional model, the same fixed
        noise through each (main rank; nothing for an unconditional model)."""
        if self.ranks.main and self.trainer.cfg.n_classes:
            z = self.grid_z[:STYLE_GRID]
            cols = int(math.ceil(math.sqrt(len(z))))
            for i, name in enumerate(self.trainer.cfg.classes):
                save_png(self.out_dir / "grids" / f"style_{style_file_name(name, i)}.png",
                         _tile_grid(self.trainer.generate(z, style=i), cols))

    def eval_swd(self, crisp: Optional[dict] = None) -> Optional[float]:
        """SWD of EMA samples against the held-back patches (main rank; None without them).

        ``crisp``, when given, is filled with the colours per tile of samples and real patches.
        """
        from stages._metrics import crispness, swd

        holdout = self.data.holdout
        if holdout is None or not self.ranks.main:
            return None
        fake = self.trainer.generate(self.swd_z)
        if crisp is not None:
            crisp.update(samples=crispness(fake), real=crispness(holdout))
        return round(swd(fake, holdout, seed=self.params.seed)["swd"], 3)

    def finish(self, step: int, reason: str, *, skipped: list, t_start: float) -> TrainResult:
        """Final metrics row with SWD, grid, checkpoint and curves; returns the result."""
        p, ranks = self.params, self.ranks
        loop_seconds = self.clock.loop_seconds()
        crisp = self._final_metrics(step)
        if step % p.grid_every != 0 or step == self.start:
            self.save_grid(step)
        self.save_style_grids()
        self.checkpoint(step, self.clock.before + loop_seconds)
        if ranks.main:
            plot_curves(self.log.rows, self.out_dir / CURVES_FILE)
        return TrainResult(
            steps=int(step), target_steps=int(p.steps), stopped=reason,
            resumed_from=self.resumed_from, swd=self.last_swd, swd_floor=self.swd_floor,
            crispness=crisp or None,
            img_per_s=round(self.global_batch * (step - self.start) / max(loop_seconds, 1e-9), 1),
            train_seconds=round(self.clock.before + loop_seconds, 1),
            wall_seconds=round(time.perf_counter() - t_start, 1), **self.data.counts(),
            device=str(ranks.device), precision=resolve_precision(p.precision, ranks.device),
            world_size=int(ranks.world), rollbacks=int(self.trainer.rollbacks), skipped=skipped,
            g_checksum=self.trainer.checksum())

    def _final_metrics(self, step: int) -> dict:
        """The last step's losses (if not logged yet) and the final SWD join the metrics rows;
        returns the crispness of final samples and real patches ({} when not measured)."""
        rows = self.log.rows
        if step > self.start and not self.log.last_losses_at(step):
            lossD, lossG = self.last_losses
            rows.append({"step": step, "lossD": round(lossD, 5), "lossG": round(lossG, 5),
                         "ips": round(self.log.images_per_s(step), 1)})
        crisp: dict = {}
        if self.params.swd_every >= 0:
            self.last_swd = self.eval_swd(crisp)
            if self.last_swd is not None:
                if self.log.last_losses_at(step):
                    rows[-1]["swd"] = self.last_swd
                else:
                    rows.append({"step": step, "swd": self.last_swd})
        return crisp


def _resume_value(name: str, value: Any) -> Any:
    """A parameter as an older checkpoint recorded it, in today's form."""
    return conditional_mode(value) if name == "conditional" else value


def conditional_labels(params: Params, labels: Optional[np.ndarray],
                       names: list) -> tuple[Optional[np.ndarray], list]:
    """The patches' games (``labels`` (N,) int64 and ``names``, from
    :func:`load_patch_games`) as a conditional run's styles, or (None, []) for an unconditional
    one: ``conditional`` "on", or "auto" when the patches carry 2 or more games.

    Raises
    ------
    InputError
        ``conditional`` "on" without per-patch games (not a crop artifact, or one written
        before crop recorded them), or with a single game.
    """
    if params.conditional == "off":
        return None, []
    if params.conditional == "auto":
        if labels is None or len(names) < 2:
            log.info("one style (%s): training an unconditional model",
                     names[0] if names else "no per-patch games")
            return None, []
        return labels, names
    if labels is None:
        raise InputError("train --conditional needs each patch's game: give a crop artifact "
                         "with patch_games.npy (rerun `pipeline crop`), not loose images or arrays")
    if len(names) < 2:
        raise InputError(f"train --conditional needs patches of at least 2 games; these are all "
                         f"{names[0] if names else '(unnamed)'}")
    return labels, names


def style_screen_heights(rows: Optional[np.ndarray], labels: Optional[np.ndarray],
                         classes: Sequence) -> tuple:
    """Each style's median screen height in pixels, over its patches' ``rows`` (N, 2) = (top
    row, screen height) and ``labels`` (N,): what ``sample --style-height`` draws it at; ()
    without rows or styles.  A style without patches (all held back) takes the median of all."""
    if rows is None or labels is None or not len(classes):
        return ()
    overall = int(np.median(rows[:, 1]))
    return tuple(int(np.median(rows[labels == c, 1])) if np.any(labels == c) else overall
                 for c in range(len(classes)))


def position_rows(params: Params, paths: list[Path], n_patches: int) -> Optional[np.ndarray]:
    """The patches' rows (:func:`load_patch_rows`) for a ``position`` model, else None.

    Raises
    ------
    InputError
        ``position`` without per-patch rows (loose images or arrays, or a crop artifact
        written before crop recorded them).
    """
    if not params.position:
        return None
    rows = load_patch_rows(paths, n_patches, params.size)
    if rows is None:
        raise InputError("train --position needs where each patch lies in its screen: give a "
                         "crop artifact with patch_rows.npy (rerun `pipeline crop`), not loose "
                         "images or arrays")
    return rows


def run(inputs: dict[str, list[Path]], params: Params, out_dir: Path,
        progress: ProgressFn = no_progress) -> dict:
    """Train the GAN on the patches and write the train artifact into ``out_dir``.

    Parameters
    ----------
    inputs : dict
        ``{"patches": [crop artifact dir | .npy files | images | folders]}``.
    params : Params
    out_dir : Path
        Existing directory; a ``ckpt.pt`` already there (from an interrupted run of the same
        configuration) is resumed.
    progress : callable
        ``progress("train", step, total, lossD=, lossG=, ips=)``, on every logged step.

    Returns
    -------
    dict
        :meth:`TrainResult.to_summary`: steps done, stop reason, final SWD and the
        real-vs-real floor, img/s, wall time, patch counts, device, rollbacks, skipped inputs
        and the colours per tile of samples and real patches.
    """
    t_start = time.perf_counter()
    with process_group(params.device) as ranks:
        patches, skipped = load_patches(list(inputs.get("patches") or []), size=params.size,
                                        channels=params.channels)
        # each patch's game rides along (an unconditional G ignores it): the style index
        games, game_names = load_patch_games(list(inputs.get("patches") or []), len(patches))
        _, classes = conditional_labels(params, games, game_names)
        rows = position_rows(params, list(inputs.get("patches") or []), len(patches))
        data = TrainingData.split(patches, holdout=params.swd_holdout, seed=params.seed,
                                  labels=games, rows=rows)
        palette = None
        if params.output == "palette":         # D sees real patches in the same colours
            palette = corpus_palette(data.train, params.palette_size)
            data = dataclasses.replace(data, train=map_to_palette(data.train, palette))
        share = () if not classes else tuple(   # each style's share of the batches
            float(c) for c in np.bincount(data.labels, minlength=len(classes)) / len(data.labels))
        screen_h = 0 if rows is None else int(np.median(rows[:, 1]))
        trainer = Trainer(params, gan_config(params, patches.shape[-1], palette, classes, share,
                                             screen_h, style_screen_heights(rows, games, classes)),
                          ranks.device, world=ranks.world, rank=ranks.rank)
        styles = None if data.labels is None else StyleIndex.build(
            data.train, data.labels, game_names, seed=params.seed)
        training = TrainingRun(params, trainer, data, Path(out_dir), ranks, progress,
                               styles=styles)
        training.resume()
        training.prepare()
        step, reason = training.train()
        result = training.finish(step, reason, skipped=skipped, t_start=t_start)
    if reason == "max_minutes":
        log.warning("stopped at step %d of %d: the %.1f-minute budget ran out", step,
                    params.steps, params.max_minutes)
    return result.to_summary()
