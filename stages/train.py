"""train: a small-data DCGAN on 16-px-aligned patches, resumable, CPU-first, DDP-ready.

Reads ``patches.npy`` (uint8, (N, S, S, C)) from a crop artifact — or user-given ``.npy`` files,
images or folders, cut into ``size``×``size`` squares — and trains the networks of
:mod:`stages._gan` with the small-data recipe chosen by measurement (docs/training.md):
hinge loss, spectral norm in D, a second discriminator on the half-size image, DiffAugment
translation on everything D sees, a generator EMA for
sampling, channels_last and flushed denormals on the CPU (bf16 autocast where the hardware
has native bf16; emulated bf16 measured 2× slower).

Artifacts (``out_dir``): ``ckpt.pt`` (one dict, see :func:`save_checkpoint`), ``config.json``,
``metrics.jsonl`` (one row per logged step: step, lossD, lossG, ips, swd when computed),
``grids/step_NNNNNN.png`` (a fixed noise batch through the EMA generator), ``curves.png``.

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
from typing import Any, Callable, Optional

import numpy as np

from stages._checkpoint import CKPT_VERSION, load_checkpoint, resolve_device, save_checkpoint
from stages._common import (IMAGE_SUFFIXES, InputError, ParamError, ProgressFn, Skipped,
                            StageError, atomic_write_text, expand_inputs, find_artifact,
                            load_image, no_progress, param, save_png, write_json)

NAME = "train"
INPUTS = {"patches": "crop"}
OPTIONAL_INPUTS = ()
LIBS = ("torch", "numpy")

#: Version of the checkpoint dict layout (bump on incompatible changes).

log = logging.getLogger("tilegan.train")


@dataclass(frozen=True)
class Params:
    size: int = param(64, help="Patch side in pixels the GAN is built for: 32, 64 or 128 (larger "
                               "input patches are cut into size×size squares).")
    channels: int = param(0, help="0 = as the input patches, 3 = RGB, 4 = RGBA (transparent "
                                  "sprites keep their alpha).")
    steps: int = param(3000, help="Training steps (one D and one G update each).")
    max_minutes: float = param(5.5, help="Wall-clock budget in minutes; training stops early at the "
                                         "budget and still writes the final checkpoint (0 = none).")
    batch: int = param(16, help="Images per step per process.")
    lr_g: float = param(2e-4, help="Adam learning rate of the generator.")
    lr_d: float = param(4e-4, help="Adam learning rate of the discriminator.")
    lr_decay: float = param(0.0, help="Share of the run, at its end, over which both learning "
                                      "rates fall linearly to zero (the run ends at --steps or "
                                      "--max-minutes, whichever comes first); 0 = constant.")
    betas: tuple = param((0.0, 0.99), help="Adam (beta1, beta2) for both networks.")
    nz: int = param(100, help="Length of the noise vector.")
    ngf: int = param(16, help="Generator base width (widest layer = 8×).")
    ndf: int = param(16, help="Discriminator base width (widest layer = 8×).")
    loss: str = param("hinge", help="GAN loss: hinge or bce (classic non-saturating DCGAN).")
    spectral_norm: bool = param(True, help="Spectral norm on D's convs (instead of batch norm).")
    upsample: str = param("nearest", help="Generator doubling: deconv (DCGAN transposed conv) or "
                                         "nearest (nearest ×2 + 3×3 conv, no checkerboard).")
    d_scales: int = param(0, help="Image scales D judges: 1 = full size only; 2 or 3 add smaller "
                                  "discriminators on the image average-pooled by 2, 4 (layout and "
                                  "colour at a coarse scale); 0 = auto: 2 from 32 pixels up, else 1.")
    mbstd: int = param(0, help="Minibatch standard deviation in D over groups of this many "
                               "images (ProGAN's variety check; 0 = off).")
    diffaug: str = param("translation",
                         help="DiffAugment ops applied to everything D sees, comma separated "
                              "(translation, cutout, color); empty = off.")
    ema: float = param(0.999, help="Decay of the generator EMA used for grids, SWD and sampling "
                                   "(0 = off).")
    mode_seeking: float = param(0.0, help="Weight of the mode-seeking term (MSGAN): G is pushed "
                                          "to make images that differ as much as their noise "
                                          "vectors do, against mode collapse (0 = off).")
    label_smoothing: float = param(0.0, help="BCE only: real target becomes 1 - this value.")
    instance_noise: float = param(0.0, help="Std of Gaussian noise added to D's inputs, annealed "
                                            "linearly to 0 over the run (0 = off).")
    precision: str = param("auto", help="auto, fp32 or bf16 autocast.  auto = bf16 on CUDA and on "
                                        "CPUs with native bf16 (AVX512-BF16/AMX), else fp32; on "
                                        "CUDA without bf16, fp16 with a gradient scaler.")
    seed: int = param(0, help="Seed for initialisation, data order, noise and augmentation.")
    device: str = param("auto", help="auto, cpu or cuda (cuda:N).")
    ckpt_every: int = param(250, help="Write ckpt.pt every this many steps (and at the end).")
    grid_every: int = param(250, help="Write grids/step_NNNNNN.png every this many steps.")
    swd_every: int = param(1000, help="Compute SWD against held-back real patches every this "
                                      "many steps (0 = only at the end; -1 = never).")
    log_every: int = param(10, help="Append a metrics.jsonl row every this many steps.")
    swd_holdout: float = param(0.1, help="Share of the patches (at most 512) held back from "
                                         "training as the SWD reference.")
    max_rollbacks: int = param(3, help="NaN/divergence: roll back with halved learning rates at "
                                       "most this many times, then stop.")
    compile: bool = param(False, help="torch.compile the networks (dynamic=False; ~40 s warm-up).")


#: Overrides for a smoke run that finishes in about a second (tests, CI).
TINY = dict(steps=3, batch=4, ngf=8, ndf=8, nz=16, ckpt_every=2, grid_every=2, swd_every=0,
            log_every=1, max_minutes=0.0)

#: Parameters that may change between an interrupted run and its resume without breaking it.
_RESUME_FREE = {"steps", "max_minutes", "ckpt_every", "grid_every", "swd_every", "log_every",
                "device", "compile", "max_rollbacks"}

#: Test hooks (never set in production).  ``_FAULT_HOOK(step, lossD) -> lossD`` may poison a
#: loss; ``_STEP_HOOK(step)`` runs after each step (a test slows training down with it).
_FAULT_HOOK: Optional[Callable[[int, Any], Any]] = None
_STEP_HOOK: Optional[Callable[[int], None]] = None

_DIVERGED = 1e4          # |loss| above this counts as divergence


def resolve_d_scales(p: Params) -> int:
    """``d_scales`` with 0 (auto) resolved: 2 (full size + half size) from 32 pixels up, else 1."""
    return p.d_scales or (2 if p.size >= 32 else 1)


def gan_config(p: Params, channels: int) -> "Any":
    """The network architecture (stages._gan.GANConfig) these parameters train."""
    from stages._gan import GANConfig

    return GANConfig(height=p.size, width=p.size, channels=channels, nz=p.nz, ngf=p.ngf,
                     ndf=p.ndf, spectral_norm=p.spectral_norm, upsample=p.upsample,
                     d_scales=resolve_d_scales(p), mbstd=p.mbstd)


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


# --------------------------------------------------------------------------- validation
def _validate(p: Params) -> None:
    if p.size not in (16, 32, 64, 128, 256):
        raise ParamError(f"size must be 32, 64 or 128 (got {p.size})")
    if p.channels not in (0, 3, 4):
        raise ParamError(f"channels must be 0 (auto), 3 (RGB) or 4 (RGBA), got {p.channels}")
    for name in ("steps", "batch", "nz", "ngf", "ndf", "ckpt_every", "grid_every", "log_every"):
        if int(getattr(p, name)) < 1:
            raise ParamError(f"{name} must be at least 1, got {getattr(p, name)}")
    from stages._gan import max_d_scales

    if not 0 <= p.d_scales <= max_d_scales(p.size):
        raise ParamError(f"d_scales must be 0 (auto) or 1..{max_d_scales(p.size)} for size "
                         f"{p.size} (every scale D judges keeps at least 16 pixels), got {p.d_scales}")
    if p.mbstd < 0:
        raise ParamError(f"mbstd must be >= 0 (0 = off), got {p.mbstd}")
    if p.loss not in ("hinge", "bce"):
        raise ParamError(f"loss must be 'hinge' or 'bce', got {p.loss!r}")
    from stages._gan import UPSAMPLE

    if p.upsample not in UPSAMPLE:
        raise ParamError(f"upsample must be one of {', '.join(UPSAMPLE)}, got {p.upsample!r}")
    if p.precision not in ("auto", "fp32", "bf16"):
        raise ParamError(f"precision must be 'auto', 'fp32' or 'bf16', got {p.precision!r}")
    if not (0.0 <= p.ema < 1.0):
        raise ParamError(f"ema must be in [0, 1), got {p.ema}")
    if not (0.0 <= p.label_smoothing < 0.5):
        raise ParamError(f"label_smoothing must be in [0, 0.5), got {p.label_smoothing}")
    if p.mode_seeking < 0:
        raise ParamError(f"mode_seeking must be >= 0 (0 = off), got {p.mode_seeking}")
    if p.mode_seeking > 0 and p.batch < 2:
        raise ParamError("mode_seeking needs batch >= 2 (it compares pairs of images)")
    if p.instance_noise < 0:
        raise ParamError(f"instance_noise must be >= 0, got {p.instance_noise}")
    if len(tuple(p.betas)) != 2 or not all(0.0 <= float(b) < 1.0 for b in p.betas):
        raise ParamError(f"betas must be two numbers in [0, 1), got {p.betas}")
    if p.lr_g <= 0 or p.lr_d <= 0:
        raise ParamError("lr_g and lr_d must be positive")
    if not (0.0 <= p.swd_holdout < 0.9):
        raise ParamError(f"swd_holdout must be in [0, 0.9), got {p.swd_holdout}")
    if not (0.0 <= p.lr_decay <= 1.0):
        raise ParamError(f"lr_decay must be in [0, 1] (a share of the run), got {p.lr_decay}")
    if p.max_minutes < 0:
        raise ParamError(f"max_minutes must be >= 0, got {p.max_minutes}")
    from stages._augment import parse_policy
    try:
        parse_policy(p.diffaug)
    except ValueError as e:
        raise ParamError(f"diffaug: {e}") from None
    if not (p.device in ("auto", "cpu", "cuda") or p.device.startswith("cuda:")):
        raise ParamError(f"device must be auto, cpu or cuda, got {p.device!r}")


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

    ``paths`` is a crop artifact dir (its ``patches.npy``) or ``.npy`` files / images / folders.
    Images are cut into non-overlapping ``size`` squares; patches larger than ``size`` are cut
    into ``size`` squares too.  ``channels`` 0 keeps the channels of the (first) .npy input.  Returns the array and a list of skipped inputs with reasons.
    """
    skipped = Skipped(logger=log)
    arrays: list[np.ndarray] = []
    art = find_artifact(paths, "patches.npy")
    files = [art] if art is not None else expand_inputs(paths, IMAGE_SUFFIXES + (".npy",))
    mode = "RGBA" if channels == 4 else "RGB"
    if channels == 0:                    # auto: the first .npy decides; images are RGB
        first = next((f for f in files if f.suffix.lower() == ".npy"), None)
        channels = 3
        if first is not None:
            try:
                channels = 4 if np.load(first, mmap_mode="r").shape[-1] == 4 else 3
            except (OSError, ValueError):
                pass
    for f in files:
        if f.suffix.lower() == ".npy":
            try:
                a = np.load(f, allow_pickle=False)
            except (OSError, ValueError) as e:
                raise InputError(f"{f}: not a readable .npy array ({e})") from None
            if a.dtype != np.uint8 or a.ndim not in (3, 4) or a.shape[-1] not in (3, 4):
                raise InputError(f"{f}: expected uint8 patches shaped (N, S, S, 3|4), got "
                                 f"{a.dtype} {a.shape}")
            if a.ndim == 3:
                a = a[None]
        else:
            try:
                a = load_image(f, mode=mode)[None]
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
        ny, nx = h // size, w // size
        a = a[:, :ny * size, :nx * size].reshape(len(a), ny, size, nx, size, channels)
        arrays.append(a.transpose(0, 1, 3, 2, 4, 5).reshape(-1, size, size, channels))
    if not arrays:
        where = ", ".join(str(p) for p in paths) or "(no input)"
        raise InputError(f"{where}: no usable training patches"
                         + (f" ({len(skipped)} file(s) skipped)" if skipped else ""))
    return np.ascontiguousarray(np.concatenate(arrays)), skipped.items


def _fit_channels(a: np.ndarray, channels: int) -> np.ndarray:
    if a.shape[-1] == channels:
        return a
    if channels == 3:
        return a[..., :3]
    return np.concatenate([a, np.full(a.shape[:-1] + (1,), 255, np.uint8)], axis=-1)


@functools.lru_cache(maxsize=4)
def _epoch_perm(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, 1, epoch]).permutation(n)


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


# --------------------------------------------------------------------------- checkpoint
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
    import contextlib

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


# --------------------------------------------------------------------------- the trainer
class Trainer:
    """Networks, optimisers, EMA and one training step; no file I/O except checkpoints."""

    def __init__(self, p: Params, cfg: "Any", device: "Any", *, world: int = 1, rank: int = 0):
        import torch

        from stages._augment import parse_policy
        from stages._gan import Discriminator, Generator

        self.p, self.cfg, self.device, self.world, self.rank = p, cfg, device, world, rank
        torch.manual_seed(p.seed)
        self.G = Generator(cfg).to(device)
        self.D = Discriminator(cfg).to(device)
        if device.type == "cpu":
            self.G = self.G.to(memory_format=torch.channels_last)
            self.D = self.D.to(memory_format=torch.channels_last)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self._ema_bn_stale = True
        self.optG = torch.optim.Adam(self.G.parameters(), lr=p.lr_g, betas=tuple(p.betas))
        self.optD = torch.optim.Adam(self.D.parameters(), lr=p.lr_d, betas=tuple(p.betas))
        self.autocast, amp_dtype = _autocast(device, p.precision)
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
        self.ops = parse_policy(p.diffaug)
        self.lr_scale, self.rollbacks = 1.0, 0
        self.lr_sched = 1.0                      # schedule factor (lr_decay), set per step
        self.d_has_bn = not cfg.spectral_norm
        self.Gf, self.Df = self.G, self.D        # forward callables (DDP / compiled wrappers)
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [device.index] if device.type == "cuda" else None
            self.Gf = DDP(self.G, device_ids=ids)
            self.Df = DDP(self.D, device_ids=ids)
        if p.compile:
            self.Gf = torch.compile(self.Gf, dynamic=False)
            self.Df = torch.compile(self.Df, dynamic=False)
        self.Dm = torch.compile(self.D, dynamic=False) if p.compile and world > 1 else (
            self.Df if world == 1 else self.D)

    # ----------------------------------------------------------------- state
    def state(self) -> dict:
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

    def _apply_lr(self) -> None:
        for g in self.optG.param_groups:
            g["lr"] = self.p.lr_g * self.lr_scale * self.lr_sched
        for g in self.optD.param_groups:
            g["lr"] = self.p.lr_d * self.lr_scale * self.lr_sched

    def set_progress(self, done: float) -> None:
        """Set the learning rates for a run that is ``done`` (0..1) finished (``lr_decay``)."""
        f = lr_factor(self.p.lr_decay, done)
        if f != self.lr_sched:
            self.lr_sched = f
            self._apply_lr()

    # ----------------------------------------------------------------- one step
    def step(self, step: int, real_u8: np.ndarray) -> tuple[float, float, bool]:
        """One D update and one G update on a uint8 (B, S, S, C) batch.

        Returns (lossD, lossG, ok) averaged over ranks; ok is False when a loss is non-finite
        or exploded on any rank (then nothing should be kept from this step).
        """
        import torch
        import torch.nn.functional as F

        from stages._augment import diff_augment
        from stages._gan import from_uint8

        p, dev = self.p, self.device
        gen = torch.Generator().manual_seed(_step_seed(p.seed, 2, step, self.rank, self.rollbacks))
        real = from_uint8(real_u8, device=dev)
        if dev.type == "cpu":
            real = real.contiguous(memory_format=torch.channels_last)
        b = real.shape[0]
        z = torch.randn(b, self.cfg.nz, 1, 1, generator=gen).to(dev)
        sigma = p.instance_noise * max(0.0, 1.0 - step / max(1, p.steps))

        def d_input(x: torch.Tensor) -> torch.Tensor:
            if self.ops:
                x = diff_augment(x, self.ops, generator=gen)
            if sigma > 0:
                x = x + sigma * torch.randn(x.shape, generator=gen).to(dev, x.dtype)
            return x

        with self.autocast():
            fake = self.Gf(z)
        # ---- discriminator
        self.optD.zero_grad(set_to_none=True)
        real_in, fake_in = d_input(real), d_input(fake.detach().float())
        with self.autocast():
            if self.d_has_bn and self.world == 1:
                lr_, lf_ = self.Df(real_in), self.Df(fake_in)
            else:
                both = self.Df(torch.cat([real_in, fake_in]), parts=2)
                lr_, lf_ = both[:b], both[b:]
        if p.loss == "hinge":
            lossD = F.relu(1.0 - lr_).mean() + F.relu(1.0 + lf_).mean()
        else:
            lossD = (F.binary_cross_entropy_with_logits(lr_, torch.full_like(lr_, 1.0 - p.label_smoothing))
                     + F.binary_cross_entropy_with_logits(lf_, torch.zeros_like(lf_)))
        if _FAULT_HOOK is not None:
            lossD = _FAULT_HOOK(step, lossD)
        self.scaler.scale(lossD).backward()
        self.scaler.step(self.optD)
        # ---- generator
        self.optG.zero_grad(set_to_none=True)
        self.D.requires_grad_(False)
        with self.autocast():
            lg = self.Dm(d_input(fake.float()))
        lossG = -lg.mean() if p.loss == "hinge" else F.softplus(-lg).mean()
        if p.mode_seeking > 0:
            lossG = lossG + p.mode_seeking * mode_seeking_term(fake.float(), z)
        self.scaler.scale(lossG).backward()
        self.scaler.step(self.optG)
        self.scaler.update()
        self.D.requires_grad_(True)
        # ---- health and logging, agreed across ranks
        vals = torch.stack([lossD.detach().float(), lossG.detach().float()]).cpu()
        bad = float(not bool(torch.isfinite(vals).all()) or bool((vals.abs() > _DIVERGED).any()))
        if self.world > 1:
            import torch.distributed as dist

            t = torch.cat([torch.nan_to_num(vals, nan=0.0, posinf=0.0, neginf=0.0),
                           torch.tensor([bad])]).to(dev)
            dist.all_reduce(t)
            t = t.cpu()
            vals, bad = t[:2] / self.world, float(t[2])
        ok = bad == 0
        if ok:
            self._update_ema(step)
        return float(vals[0]), float(vals[1]), ok

    def _update_ema(self, step: int) -> None:
        import torch

        if self.p.ema <= 0:
            self.G_ema.load_state_dict(self.G.state_dict())
            self._ema_bn_stale = True
            return
        d = min(self.p.ema, (1.0 + step) / (10.0 + step))
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
        gen = torch.Generator().manual_seed(_step_seed(self.p.seed, 3, 0, 0, 0))
        saved = [m.momentum for m in bns]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None                            # cumulative moving average
        self.G_ema.train()
        with torch.no_grad():
            for i in range(0, n, batch):
                self.G_ema(torch.randn(min(batch, n - i), self.cfg.nz, 1, 1, generator=gen).to(self.device))
        self.G_ema.eval()
        for m, mom in zip(bns, saved):
            m.momentum = mom

    def params_finite(self) -> bool:
        import torch

        return all(bool(torch.isfinite(t).all()) for m in (self.G, self.D)
                   for t in m.state_dict().values() if t.is_floating_point())

    def generate(self, z: "Any", *, batch: int = 256) -> np.ndarray:
        """uint8 (N, S, S, C) images from the EMA generator (eval mode) for noise z."""
        import torch

        from stages._gan import to_uint8

        self._calibrate_ema_bn()
        out = []
        with torch.inference_mode():
            for i in range(0, len(z), batch):
                out.append(to_uint8(self.G_ema(z[i:i + batch].to(self.device))))
        return np.concatenate(out)

    def checksum(self) -> float:
        """Sum of |weights| of G's parameters (ranks in sync agree on it; BN running
        statistics are per rank under DDP and left out)."""
        return float(sum(float(t.detach().double().abs().sum()) for t in self.G.parameters()))


# --------------------------------------------------------------------------- helpers
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


def _read_metrics(path: Path, upto: int) -> list[dict]:
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


def _write_metrics(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


# --------------------------------------------------------------------------- run
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
        ``progress("train", step, total, lossD=, lossG=, ips=)``.

    Returns
    -------
    dict
        Summary: steps done, stop reason, final SWD and the real-vs-real floor, img/s, wall
        time, patch counts, device, rollbacks, skipped inputs, and ``crispness``: colours
        per 16×16 tile after nearest-NES-colour mapping for the final samples and the
        held-back real patches.
    """
    import torch

    _validate(params)
    p = params
    out_dir = Path(out_dir)
    t_start = time.perf_counter()

    # ---- distributed setup
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(p.device)
    rank, created_pg = 0, False
    if world > 1:
        import torch.distributed as dist

        if device.type == "cuda":
            local = int(os.environ.get("LOCAL_RANK", "0"))
            device = torch.device("cuda", local)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            created_pg = True
        rank, world = dist.get_rank(), dist.get_world_size()
    main = rank == 0
    if not main:
        progress = no_progress
    if device.type == "cpu":
        torch.set_flush_denormal(True)       # a saturating D otherwise slows steps ~2.4×
    try:
        return _run(inputs, p, out_dir, progress, device, world, rank, main, t_start)
    finally:
        if created_pg:
            import torch.distributed as dist

            dist.destroy_process_group()


def _run(inputs: dict, p: Params, out_dir: Path, progress: ProgressFn, device: Any,
         world: int, rank: int, main: bool, t_start: float) -> dict:
    import torch

    from stages._gan import ARCH_VERSION
    from stages._metrics import crispness, sample_swd_reference, swd

    patches, skipped = load_patches(list(inputs.get("patches") or []), size=p.size,
                                    channels=p.channels)
    train_idx, holdout = sample_swd_reference(patches, holdout=p.swd_holdout, seed=p.seed)
    train = patches[train_idx]
    n = len(train)
    cfg = gan_config(p, patches.shape[-1])
    tr = Trainer(p, cfg, device, world=world, rank=rank)
    plain = _plain_params(p)
    config = {"params": plain, "gan": cfg.to_dict(), "arch_version": ARCH_VERSION,
              "world_size": world, "device": str(device), "n_patches": int(len(patches)),
              "n_train": int(n), "n_holdout": int(0 if holdout is None else len(holdout))}

    # fixed noise for grids and SWD (independent of training randomness)
    gfix = torch.Generator().manual_seed(_step_seed(p.seed, 3))
    grid_z = torch.randn(64, p.nz, 1, 1, generator=gfix)
    swd_z = torch.randn(0 if holdout is None else len(holdout), p.nz, 1, 1, generator=gfix)

    # ---- resume
    ckpt_path = out_dir / "ckpt.pt"
    metrics_path = out_dir / "metrics.jsonl"
    start, elapsed0, resumed_from = 0, 0.0, None
    if ckpt_path.exists():
        try:
            ck = load_checkpoint(ckpt_path)
            old = ck["config"]["params"]
            same = (ck["config"].get("gan") == cfg.to_dict() and all(
                old.get(k) == v for k, v in plain.items() if k not in _RESUME_FREE))
        except (InputError, KeyError, TypeError) as e:
            log.warning("ignoring unusable checkpoint %s: %s", ckpt_path, e)
            ck, same = None, False
        if ck is not None and same:
            tr.load_state(ck)
            _set_rng_state(ck["rng"])
            start, elapsed0 = int(ck["step"]), float(ck.get("elapsed", 0.0))
            resumed_from = start
            log.info("resuming from %s at step %d", ckpt_path, start)
        elif ck is not None:
            log.warning("%s was written with other parameters; starting over", ckpt_path)
    if world > 1:                        # every rank must resume from the same step
        import torch.distributed as dist

        t = torch.tensor([start], dtype=torch.int64, device=device)
        dist.broadcast(t, 0)
        if int(t.item()) != start:
            raise StageError(f"rank {rank} found a checkpoint at step {start} in {out_dir} but "
                             f"rank 0 starts at step {int(t.item())}; all ranks need the same "
                             "shared output folder")
    rows = _read_metrics(metrics_path, start) if resumed_from is not None else []
    good = _cpu_copy(tr.state())
    good_step = start

    def checkpoint(step: int, elapsed: float) -> None:
        nonlocal good, good_step
        good, good_step = _cpu_copy(tr.state()), step
        if main:
            _write_metrics(metrics_path, rows)
            st = dict(good, step=int(step), elapsed=float(elapsed), version=CKPT_VERSION,
                      config=config, rng=_rng_state())
            save_checkpoint(ckpt_path, st)

    def grid(step: int) -> None:
        if main:
            cols = int(math.ceil(math.sqrt(len(grid_z))))
            save_png(out_dir / "grids" / f"step_{step:06d}.png", _tile_grid(tr.generate(grid_z), cols))

    def eval_swd(step: int, crisp: Optional[dict] = None) -> Optional[float]:
        if holdout is None or not main:
            return None
        fake = tr.generate(swd_z)
        if crisp is not None:                            # final: colours per tile as well
            crisp.update(samples=crispness(fake), real=crispness(holdout))
        return round(swd(fake, holdout, seed=p.seed)["swd"], 3)

    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(out_dir / "config.json", config)
    swd_floor = None
    if main and holdout is not None:
        ref = train[np.random.default_rng([p.seed, 5]).choice(n, min(n, len(holdout)), replace=False)]
        swd_floor = round(swd(ref, holdout, seed=p.seed)["swd"], 3)

    # ---- loop
    budget = p.max_minutes * 60.0 if p.max_minutes > 0 else math.inf
    gb = p.batch * world
    step, reason = start, "steps"
    lossD = lossG = float("nan")
    t_loop, ips, last_swd = time.perf_counter(), 0.0, None
    t_prev, step_prev = t_loop, start
    progress("train", step, p.steps)
    while step < p.steps:
        elapsed = elapsed0 + time.perf_counter() - t_loop
        if world > 1 and budget < math.inf:      # ranks must agree on when the budget ends
            import torch.distributed as dist

            t = torch.tensor([elapsed], dtype=torch.float64, device=device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            elapsed = float(t.item())
        if elapsed >= budget:
            reason = "max_minutes"
            break
        tr.set_progress(max(step / p.steps, elapsed / budget))
        idx = batch_indices(p.seed, step, n, gb)[rank * p.batch:(rank + 1) * p.batch]
        lossD, lossG, ok = tr.step(step, train[np.sort(idx)])
        if not ok:
            if tr.rollbacks >= p.max_rollbacks:
                if main:
                    _write_metrics(metrics_path, rows)
                raise StageError(
                    f"training diverged at step {step} (lossD={lossD}, lossG={lossG}) and "
                    f"{tr.rollbacks} rollback(s) with halved learning rates did not help; "
                    f"lower --lr-g/--lr-d, try --loss hinge --spectral-norm, or change --seed")
            log.warning("step %d: non-finite or exploding loss (D=%s, G=%s); rolling back to "
                        "step %d with learning rates x%.3g", step, lossD, lossG, good_step,
                        tr.lr_scale / 2)
            rb = tr.rollbacks + 1
            tr.load_state(good)
            tr.rollbacks, tr.lr_scale = rb, tr.lr_scale / 2
            tr._apply_lr()
            rows[:] = [r for r in rows if r["step"] <= good_step]
            rows.append({"step": good_step, "event": "rollback", "bad_step": step,
                         "lr_scale": tr.lr_scale})
            step = good_step
            continue
        step += 1
        if _STEP_HOOK is not None:
            _STEP_HOOK(step)
        swd_now = p.swd_every > 0 and step % p.swd_every == 0 and step != p.steps
        if step % p.log_every == 0 or step == p.steps or swd_now:
            now = time.perf_counter()
            ips = gb * (step - step_prev) / max(now - t_prev, 1e-9)
            row = {"step": step, "lossD": round(lossD, 5), "lossG": round(lossG, 5),
                   "ips": round(ips, 1)}
            if swd_now:
                row["swd"] = last_swd = eval_swd(step)
            t_prev, step_prev = time.perf_counter(), step
            rows.append(row)
            progress("train", step, p.steps, lossD=round(lossD, 3), lossG=round(lossG, 3),
                     ips=round(ips))
        if step % p.grid_every == 0:
            grid(step)
        if step % p.ckpt_every == 0 and step != p.steps:
            if not tr.params_finite():
                raise StageError(f"training produced non-finite weights at step {step}")
            checkpoint(step, elapsed0 + time.perf_counter() - t_loop)
    # ---- final artifacts
    loop_seconds = time.perf_counter() - t_loop
    if step > start and not (rows and rows[-1]["step"] == step and "lossD" in rows[-1]):
        rows.append({"step": step, "lossD": round(lossD, 5), "lossG": round(lossG, 5),
                     "ips": round(gb * (step - step_prev) / max(time.perf_counter() - t_prev, 1e-9), 1)})
    wall_train = elapsed0 + loop_seconds
    crisp: dict = {}
    if p.swd_every >= 0:
        last_swd = eval_swd(step, crisp)
        if last_swd is not None:
            if rows and rows[-1]["step"] == step and "lossD" in rows[-1]:
                rows[-1]["swd"] = last_swd
            else:
                rows.append({"step": step, "swd": last_swd})
    if step % p.grid_every != 0 or step == start:
        grid(step)
    checkpoint(step, wall_train)
    if main:
        plot_curves(rows, out_dir / "curves.png")
    done_steps = step - start
    summary = {
        "steps": int(step), "target_steps": int(p.steps), "stopped": reason,
        "resumed_from": resumed_from, "swd": last_swd, "swd_floor": swd_floor,
        "crispness": crisp or None,
        "img_per_s": round(gb * done_steps / max(loop_seconds, 1e-9), 1),
        "train_seconds": round(wall_train, 1),
        "wall_seconds": round(time.perf_counter() - t_start, 1),
        "n_patches": int(len(patches)), "n_train": int(n),
        "n_holdout": int(0 if holdout is None else len(holdout)),
        "device": str(device), "precision": resolve_precision(p.precision, device),
        "world_size": int(world),
        "rollbacks": int(tr.rollbacks), "skipped": skipped, "g_checksum": tr.checksum(),
    }
    if reason == "max_minutes":
        log.warning("stopped at step %d of %d: the %.1f-minute budget ran out", step, p.steps,
                    p.max_minutes)
    return summary
