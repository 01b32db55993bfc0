"""sample: draw N seeded images from a trained generator (EMA weights by default).

Reads ``ckpt.pt`` from a train artifact dir (or a checkpoint path), rebuilds the generator from
the checkpoint's own config and writes ``sample_NNNN.png`` at native pixel size (RGB, or RGBA
with alpha snapped to 0/255 so transparency survives palette quantisation), plus
``samples.json``.  With ``interpolate`` > 0 it also writes ``interpolation.png``: one strip of
that many frames walking the latent space (spherical interpolation) through ``n_keyframes``
seeded points.

The core works on a generator in memory: :func:`sample_images` and :func:`interpolation_strip`
return arrays; :func:`run` finds the checkpoint, calls them and writes the files.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from stages._common import (InputError, ParamError, ProgressFn, StageParams, find_artifact,
                            no_progress, param, save_png, write_json)
from stages._gan_config import GANConfig, style_screen_height
from stages._styles import StyleIndex

NAME = "sample"
INPUTS = {"checkpoint": "train"}
OPTIONAL_INPUTS = ()
LIBS = ("torch", "numpy")

log = logging.getLogger("tilegan.sample")

CKPT_FILE = "ckpt.pt"
MANIFEST_FILE = "samples.json"
STRIP_FILE = "interpolation.png"


@dataclass(frozen=True)
class Params(StageParams):
    STAGE = "sample"

    n: int = param(512, help="Number of images to draw. 512 by default: at 64x64 that is 8,192 "
                             "16x16 tiles, enough for slice's tile budget to see which tiles "
                             "recur (512 took 5 s on a busy 2-core CPU).", min=1)
    seed: int = param(0, help="Seed of the noise vectors (same seed, same images).")
    use_ema: bool = param(True, help="Use the generator's EMA weights (else the raw generator).")
    interpolate: int = param(0, help="Frames in a latent-walk strip interpolation.png (0 = off, "
                                     "else at least 2).", min=0)
    n_keyframes: int = param(2, help="Latent points the interpolation strip passes through.", min=2)
    alpha_threshold: int = param(128, help="RGBA: alpha >= this becomes opaque, below it fully "
                                           "transparent (0 = keep the raw alpha).", min=0, max=255)
    batch: int = param(64, help="Images per generator call.", min=1)
    device: str = param("cpu", help="auto, cpu or cuda.")
    width: int = param(0, help="Sample width in pixels (0 = the training size). Larger sizes "
                               "need a generator trained with --spatial-noise; a multiple of "
                               "its stride (16 for 64-px patches).", min=0)
    height: int = param(0, help="Sample height in pixels (0 = the training size); as --width. "
                                "From a generator trained with --position, an image taller "
                                "than the training patches is a whole screen with a screen's "
                                "layout (sky above, ground below).", min=0)
    noise_scale: float = param(1.15, help="Multiply the noise by this (1 = the standard normal "
                                          "the generator trained on). Above 1 widens the "
                                          "variety the GAN under-draws: 1.15 measured 10-16 % "
                                          "better than 1 on whole screens of the example "
                                          "corpus and the same on 64-px patches "
                                          "(docs/training.md); 1.3 starts mixing styles.",
                               min=0.0)
    style_height: bool = param(False, help="Whole screens from a positional model (taller "
                                           "than its patches): draw each style at its own "
                                           "training screens' median height (a game of "
                                           "256x128 screens at 128, not stretched to "
                                           "--height); a model that records no per-style "
                                           "heights draws every screen at the corpus's median "
                                           "screen height. Off: every image --height tall.")
    like: str = param("", help="Draw every image in one style: a game of the training corpus "
                               "(a conditional model draws it; a default one keeps the samples "
                               "its style index names so). Empty = every style, in the "
                               "corpus's proportions.")

    def check(self) -> None:
        super().check()
        if not self.noise_scale > 0:
            raise ParamError(f"{self.STAGE}: noise_scale must be above 0, got {self.noise_scale}",
                             field="noise_scale")
        if self.interpolate == 1:
            raise ParamError(f"{self.STAGE}: interpolate must be 0 (off) or at least 2 frames, "
                             f"got {self.interpolate}", field="interpolate")


@dataclass(frozen=True)
class GeneratorInfo:
    """Where a loaded generator comes from: its checkpoint ``step``, which ``weights``
    ("G_ema" or "G"), its architecture ``gan`` and, when it trained on several games, the
    index that names a sample's style (:class:`stages._styles.StyleIndex`)."""

    step: int
    weights: str
    gan: GANConfig
    styles: Optional[StyleIndex] = None


def load_generator(path: Path, *, use_ema: bool = True, device: Any = "cpu") -> tuple[Any, GeneratorInfo]:
    """Rebuild the generator stored in a train checkpoint.

    Returns
    -------
    (Generator in eval mode on ``device``, :class:`GeneratorInfo`)
    """
    from stages._checkpoint import load_checkpoint
    from stages._gan import Generator

    ck = load_checkpoint(path, map_location="cpu")
    try:
        cfg = GANConfig.from_dict(ck["config"]["gan"])
        G = Generator(cfg)
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{path}: the checkpoint's generator config is unusable ({e})") from None
    key = "G_ema" if use_ema and "G_ema" in ck else "G"
    if use_ema and key != "G_ema":
        log.warning("%s has no EMA weights; sampling the raw generator", path)
    try:
        G.load_state_dict(ck[key])
    except RuntimeError as e:
        raise InputError(f"{path}: generator weights do not match its config ({e})") from None
    G = G.to(device).eval().requires_grad_(False)
    styles = StyleIndex.from_state(ck["styles"]) if "styles" in ck else None
    return G, GeneratorInfo(step=int(ck.get("step", 0)), weights=key, gan=cfg, styles=styles)


def _slerp(a: "Any", b: "Any", t: float) -> "Any":
    import torch

    an, bn = a / a.norm(), b / b.norm()
    omega = torch.arccos((an * bn).sum().clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    if float(so) < 1e-6:
        return (1 - t) * a + t * b
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b


def latent_walk(nz: int, frames: int, keyframes: int, *, seed: int) -> "Any":
    """(frames, nz) noise vectors sliding by slerp through ``keyframes`` seeded points."""
    import torch

    g = torch.Generator().manual_seed(int(seed) + 1_000_003)
    keys = torch.randn(keyframes, nz, generator=g)
    ts = np.linspace(0.0, keyframes - 1, frames)
    out = []
    for t in ts:
        i = min(int(t), keyframes - 2)
        out.append(_slerp(keys[i], keys[i + 1], float(t - i)))
    return torch.stack(out)


def sample_size(cfg: GANConfig, *, width: int = 0, height: int = 0) -> tuple[int, int]:
    """(height, width) a generator of ``cfg`` draws for the asked size (0 = training size).

    Raises
    ------
    ParamError
        A size other than the training size from a fixed-size (dcgan) generator, naming
        ``--spatial-noise``; a size that is not a positive multiple of the fcn generator's stride.
    """
    h, w = height or cfg.height, width or cfg.width
    if cfg.g_arch != "fcn":
        if (h, w) != (cfg.height, cfg.width):
            raise ParamError(f"sample: this generator draws only {cfg.width}x{cfg.height} images; "
                             f"{w}x{h} needs one trained with `pipeline train --spatial-noise`",
                             field="width" if w != cfg.width else "height")
        return h, w
    for name, v in (("width", w), ("height", h)):
        if v % cfg.stride:
            lo = max(cfg.stride, v // cfg.stride * cfg.stride)
            raise ParamError(f"sample: {name} {v} is not a multiple of this generator's stride "
                             f"{cfg.stride}; use {lo} or {lo + cfg.stride}", field=name)
    return h, w


def style_labels(cfg: GANConfig, n: int, *, like: str = "", seed: int = 0) -> "Any":
    """(n,) int64 labels for a conditional generator: all ``like``'s index, or seeded random
    styles drawn in the training corpus's proportions (``GANConfig.style_prior``; a stream of
    their own, so the noise of ``seed`` is the same either way); None for an unconditional one.

    Raises
    ------
    ParamError
        ``like`` given to an unconditional generator, or not one of its styles.
    """
    import torch

    if not cfg.n_classes:
        if like:
            raise ParamError(f"sample: --like {like!r} needs a model that knows styles: one "
                             "trained on a crop artifact of several games, or with "
                             "`pipeline train --conditional on`; this one has none",
                             field="like")
        return None
    if like:
        if like not in cfg.classes:
            raise ParamError(f"sample: --like {like!r} is not one of this model's styles: "
                             f"{', '.join(cfg.classes)}", field="like")
        return torch.full((n,), cfg.classes.index(like), dtype=torch.int64)
    g = torch.Generator().manual_seed(int(seed) + 2_000_003)
    prior = torch.tensor(cfg.style_prior(), dtype=torch.float64)
    return torch.multinomial(prior, n, replacement=True, generator=g) if n else \
        torch.zeros(0, dtype=torch.int64)


def image_styles(cfg: GANConfig, images: np.ndarray, *, like: str = "", seed: int = 0,
                 styles: Optional[StyleIndex] = None) -> Optional[list]:
    """Each image's style name: ``like`` for all; a conditional generator's labels as
    :func:`sample_images` draws them; else the style ``styles`` names from its pixels; None
    when there is no way to tell (an unconditional model of one game)."""
    if like:
        return [like] * len(images)
    labels = style_labels(cfg, len(images), seed=seed)
    if labels is not None:
        return [cfg.classes[int(i)] for i in labels]
    if styles is None or not len(images):
        return None
    return [styles.names[int(i)] for i in styles.classify(images)]


def generate(G: Any, z: Any, *, batch: int, alpha_threshold: int = 128,
             labels: Any = None, where: Any = None) -> np.ndarray:
    """uint8 (N, H, W, C) images for noise z (N, nz) or noise maps (N, nz, h, w), ``batch``
    at a time; ``labels`` (N,) int64: the styles of a conditional generator; ``where`` (N, h):
    a positional generator's row positions (None: its :meth:`Generator.default_where`).

    RGBA: alpha >= ``alpha_threshold`` becomes 255, below it 0 with black colour (0 = keep).
    """
    import torch

    from stages._gan import to_uint8

    dev = next(G.parameters()).device
    out = []
    with torch.inference_mode():
        for i in range(0, len(z), batch):
            zi = z[i:i + batch].to(dev)
            yi = None if labels is None else labels[i:i + batch].to(dev)
            wi = None if where is None else where[i:i + batch]
            out.append(to_uint8(G(zi, yi, wi)))
    imgs = np.concatenate(out) if out else np.zeros((0, 1, 1, 3), np.uint8)
    if imgs.shape[-1] == 4 and alpha_threshold > 0:
        a = imgs[..., 3]
        imgs[..., 3] = np.where(a >= alpha_threshold, 255, 0).astype(np.uint8)
        imgs[..., :3][a < alpha_threshold] = 0
    return imgs


def sample_images(G: Any, n: int, *, seed: int, batch: int = 64, alpha_threshold: int = 128,
                  width: int = 0, height: int = 0, like: str = "",
                  styles: Optional[StyleIndex] = None, noise_scale: float = 1.0,
                  progress: ProgressFn = no_progress) -> np.ndarray:
    """``n`` images from generator ``G`` for the noise of ``seed``.

    Parameters
    ----------
    G : stages._gan.Generator
        In eval mode (see :func:`load_generator`).
    n : int
    seed : int
        Seeds the (n, nz) standard-normal noise (a spatial generator: (n, nz, h, w) noise
        maps): same seed, same images, whatever ``batch``.
    batch : int
        Images per generator call.
    alpha_threshold : int
        See :func:`generate`.
    width, height : int
        Image size (0 = the training size); see :func:`sample_size`.
    like : str
        Every image in this style: a conditional generator draws it (see
        :func:`style_labels`); an unconditional one with ``styles`` keeps only the images
        that index names so (:func:`keep_style`).
    styles : StyleIndex, optional
        The checkpoint's style index (:attr:`GeneratorInfo.styles`).
    noise_scale : float
        The noise is ``noise_scale`` × the seed's standard normal draw (1: as in training).
        A positional generator's window heights are taken from the unscaled draw, so only the
        images widen, not where in a screen a patch-sized image lies.
    progress : callable
        ``progress("sample", done, n)`` before the first batch and after each one.

    Returns
    -------
    ndarray, shape (n, H, W, C), uint8
    """
    import torch

    if like and not G.cfg.n_classes and styles is not None:
        return keep_style(G, n, like, styles, seed=seed, batch=batch,
                          alpha_threshold=alpha_threshold, width=width, height=height,
                          noise_scale=noise_scale, progress=progress)
    h, w = sample_size(G.cfg, width=width, height=height)
    shape = (G.cfg.nz,) if G.cfg.g_arch != "fcn" else G.cfg.noise_shape(h, w)
    z = torch.randn(n, *shape, generator=torch.Generator().manual_seed(int(seed)))
    images = _draw(G, z, style_labels(G.cfg, n, like=like, seed=seed), None,
                   noise_scale=noise_scale, batch=batch, alpha_threshold=alpha_threshold,
                   progress=progress)
    return np.stack(images) if images else np.zeros((0, h, w, G.cfg.channels), np.uint8)


def _draw(G: Any, z: Any, labels: Any, rows: Optional[np.ndarray], *, noise_scale: float,
          batch: int, alpha_threshold: int, progress: ProgressFn) -> list[np.ndarray]:
    """Image i of noise ``z`` (n, nz[, h, w]) and ``labels`` (n,) (None: unconditional), from
    the top ``rows[i]`` noise rows (None: all of them), ``batch`` at a time among images of the
    same height; the noise is scaled by ``noise_scale``, a positional generator's windows come
    from the unscaled draw.  ``progress("sample", done, n)`` before the first batch and after
    each one."""
    n = len(z)
    groups = ([np.arange(n)] if rows is None
              else [np.flatnonzero(rows == r) for r in sorted(set(rows.tolist()))])
    out: list = [None] * n
    progress("sample", 0, n)
    done = 0
    for idx in groups:
        zi = z[idx] if rows is None else z[idx][:, :, :int(rows[idx[0]])]
        where = G.default_where(zi) if G.cfg.positional else None
        for i in range(0, len(idx), batch):
            part = idx[i:i + batch]
            imgs = generate(G, zi[i:i + batch] * float(noise_scale), batch=batch,
                            alpha_threshold=alpha_threshold,
                            labels=None if labels is None else labels[part],
                            where=None if where is None else where[i:i + batch])
            for k, im in zip(part, imgs):
                out[k] = im
            done += len(part)
            progress("sample", done, n)
    return out


def sample_screens(G: Any, n: int, *, seed: int, batch: int = 64, alpha_threshold: int = 128,
                   width: int = 0, height: int = 0, like: str = "",
                   styles: Optional[StyleIndex] = None, noise_scale: float = 1.0,
                   progress: ProgressFn = no_progress) -> list[np.ndarray]:
    """As :func:`sample_images`, but each whole screen at its style's own screen height
    (:func:`stages._gan_config.style_screen_height`): a list of ``n`` uint8 (H_i, W, C) arrays.

    A conditional model's images keep their styles and noise: image i's noise is the top
    H_i / stride rows of the (n, nz, h, w) draw that :func:`sample_images` makes at the asked
    ``height`` for the same seed, so a style drawn at the asked height is the same image
    either way.  Images that are not whole screens (not taller than the training patches) or
    a model without positions: :func:`sample_images` unchanged.
    """
    import torch

    cfg = G.cfg
    h, w = sample_size(cfg, width=width, height=height)
    if not cfg.positional or h <= cfg.height:
        return list(sample_images(G, n, seed=seed, batch=batch, alpha_threshold=alpha_threshold,
                                  width=width, height=height, like=like, styles=styles,
                                  noise_scale=noise_scale, progress=progress))
    labels = style_labels(cfg, n, like=like, seed=seed)
    if labels is None:                  # one height for all: the corpus's screens'
        return list(sample_images(G, n, seed=seed, batch=batch, alpha_threshold=alpha_threshold,
                                  width=w, height=style_screen_height(cfg, h), like=like,
                                  styles=styles, noise_scale=noise_scale, progress=progress))
    z = torch.randn(n, *cfg.noise_shape(h, w), generator=torch.Generator().manual_seed(int(seed)))
    rows = np.array([style_screen_height(cfg, h, int(y)) // cfg.stride for y in labels])
    return _draw(G, z, labels, rows, noise_scale=noise_scale, batch=batch,
                 alpha_threshold=alpha_threshold, progress=progress)


#: ``--like`` on an unconditional model draws at most this many times ``n`` images (plus one
#: batch) looking for ``n`` in the style.
LIKE_MAX_DRAWS = 40


def keep_style(G: Any, n: int, like: str, styles: StyleIndex, *, seed: int, batch: int = 64,
               alpha_threshold: int = 128, width: int = 0, height: int = 0,
               noise_scale: float = 1.0, progress: ProgressFn = no_progress) -> np.ndarray:
    """``n`` images of an unconditional generator that ``styles`` names ``like``: rounds of
    ``batch`` images (round r uses the noise of seed ``seed + 7919 r``, so the result depends
    only on ``seed``), keeping those in the style, in order.

    Raises
    ------
    ParamError
        ``like`` is not one of the index's styles, or fewer than ``n`` turned up in
        :data:`LIKE_MAX_DRAWS` × ``n`` draws (the message gives the style's share).
    """
    if like not in styles.names:
        raise ParamError(f"sample: --like {like!r} is not one of this model's styles: "
                         f"{', '.join(styles.names)}", field="like")
    want = styles.names.index(like)
    kept: list[np.ndarray] = []
    drawn = found = 0
    progress("sample", 0, n)
    limit = LIKE_MAX_DRAWS * n + batch
    r = 0
    while found < n and drawn < limit:
        images = sample_images(G, batch, seed=seed + 7919 * r, batch=batch,
                               alpha_threshold=alpha_threshold, width=width, height=height,
                               noise_scale=noise_scale)
        hit = images[styles.classify(images) == want]
        kept.append(hit[:n - found])
        found += len(kept[-1])
        drawn += len(images)
        r += 1
        progress("sample", found, n)
    if found < n:
        raise ParamError(f"sample: only {found} of {drawn} images this model drew look like "
                         f"{like!r} ({100 * found / max(drawn, 1):.1f} %); ask for fewer (--n) or "
                         "train one style at a time (`pipeline train --conditional on`)",
                         field="like")
    return np.concatenate(kept)


def interpolation_strip(G: Any, frames: int, *, keyframes: int, seed: int, batch: int = 64,
                        alpha_threshold: int = 128, like: str = "") -> np.ndarray:
    """A latent walk (:func:`latent_walk`) through ``G`` as one strip, shape (H, frames*W, C)
    (a spatial generator walks through whole noise maps of its training size; a conditional
    one stays in the style ``like``, else its first)."""
    shape = G.cfg.noise_shape()
    walk = latent_walk(int(np.prod(shape)), frames, keyframes, seed=seed)
    if G.cfg.g_arch == "fcn":
        walk = walk.reshape(frames, *shape)
    labels = style_labels(G.cfg, frames, like=like or (G.cfg.classes[0] if G.cfg.n_classes else ""))
    images = generate(G, walk, batch=batch, alpha_threshold=alpha_threshold, labels=labels)
    return np.concatenate(list(images), axis=1)


def find_checkpoint(paths: list[Path]) -> Path:
    """``ckpt.pt`` of a train artifact folder, or the first checkpoint file given."""
    paths = [Path(x) for x in paths]
    if not paths:
        raise InputError("no checkpoint given: pass a train artifact folder or a ckpt.pt file")
    ck = find_artifact(paths, CKPT_FILE) or next((q for q in paths if q.is_file()), None)
    if ck is None:
        raise InputError(f"{paths[0]}: no ckpt.pt there (run `pipeline train` first)")
    return ck


@dataclass(frozen=True)
class SampleResult:
    """What a sample run wrote: ``n`` images of ``seed`` from ``weights`` at checkpoint
    ``step``, ``size`` [h, w] with ``channels`` (the tallest, when ``heights`` lists each
    file's height because they differ: ``--style-height``), the PNG ``files`` and the
    ``interpolation`` strip's file name (None when off)."""

    n: int
    seed: int
    weights: str
    step: int
    size: list
    channels: int
    files: list
    interpolation: Optional[str]
    like: str = ""
    styles: Optional[list] = None
    heights: Optional[list] = None

    def manifest(self) -> dict:
        """The content of samples.json (``like`` only when a style was asked for; ``styles``,
        each file's style name, only when the model knows styles)."""
        out = {"n": self.n, "seed": self.seed, "weights": self.weights, "step": self.step,
               "size": self.size, "channels": self.channels, "files": self.files,
               "interpolation": self.interpolation}
        if self.like:
            out["like"] = self.like
        if self.styles is not None:
            out["styles"] = self.styles
        if self.heights is not None:
            out["heights"] = self.heights
        return out

    def to_summary(self, checkpoint: Path) -> dict:
        """The stage summary: the manifest without the file list, plus the checkpoint used."""
        out = {k: v for k, v in self.manifest().items()
               if k not in ("files", "styles", "heights")}
        if self.styles is not None:                         # how many screens of each style
            out["styles"] = {name: self.styles.count(name) for name in sorted(set(self.styles))}
        if self.heights is not None:                        # each style's height, or all heights
            out["heights"] = ({name: h for name, h in sorted(zip(self.styles, self.heights))}
                              if self.styles is not None else sorted(set(self.heights)))
        return {**out, "checkpoint": str(checkpoint)}


def run(inputs: dict[str, list[Path]], params: Params, out_dir: Path,
        progress: ProgressFn = no_progress) -> dict:
    """Write ``params.n`` images (and an optional latent-walk strip) into ``out_dir``.

    Parameters
    ----------
    inputs : dict
        ``{"checkpoint": [train artifact dir | path to a .pt checkpoint]}``.
    params : Params
    out_dir : Path
    progress : callable
        ``progress("sample", done, n)``.

    Returns
    -------
    dict
        :meth:`SampleResult.to_summary`: ``n``, ``seed``, ``weights``, ``step``, ``size``,
        ``channels``, ``interpolation`` and ``checkpoint``.
    """
    from stages._checkpoint import resolve_device

    p = params
    ckpt = find_checkpoint(inputs.get("checkpoint") or [])
    G, info = load_generator(ckpt, use_ema=p.use_ema, device=resolve_device(p.device))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    draw = sample_screens if p.style_height else sample_images
    images = draw(G, p.n, seed=p.seed, batch=p.batch, alpha_threshold=p.alpha_threshold,
                  width=p.width, height=p.height, like=p.like, styles=info.styles,
                  noise_scale=p.noise_scale, progress=progress)
    files = [f"sample_{i:04d}.png" for i in range(len(images))]
    for name, image in zip(files, images):
        save_png(out_dir / name, image)
    if p.interpolate:
        save_png(out_dir / STRIP_FILE, interpolation_strip(
            G, p.interpolate, keyframes=p.n_keyframes, seed=p.seed, batch=p.batch,
            alpha_threshold=p.alpha_threshold, like=p.like if G.cfg.n_classes else ""))
    heights = [int(im.shape[0]) for im in images]
    same = len(set(heights)) <= 1
    result = SampleResult(n=int(p.n), seed=int(p.seed), weights=info.weights, step=info.step,
                          size=[max(heights, default=0), int(images[0].shape[1]) if len(images)
                                else 0],
                          channels=int(info.gan.channels), files=files,
                          interpolation=STRIP_FILE if p.interpolate else None, like=p.like,
                          styles=image_styles(G.cfg, np.asarray(images) if same else images,
                                              like=p.like, seed=p.seed, styles=info.styles),
                          heights=None if same else heights)
    write_json(out_dir / MANIFEST_FILE, result.manifest())
    return result.to_summary(ckpt)
