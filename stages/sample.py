"""sample: draw N seeded images from a trained generator (EMA weights by default).

Reads ``ckpt.pt`` from a train artifact dir (or a checkpoint path), rebuilds the generator from
the checkpoint's own config and writes ``sample_NNNN.png`` at native pixel size (RGB, or RGBA
with alpha snapped to 0/255 so transparency survives palette quantisation), plus
``samples.json``.  With ``interpolate`` > 0 it also writes ``interpolation.png``: one strip of
that many frames walking the latent space (spherical interpolation) through ``n_keyframes``
seeded points.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stages._common import (InputError, ParamError, ProgressFn, find_artifact, no_progress, param,
                            save_png, write_json)

NAME = "sample"
INPUTS = {"checkpoint": "train"}
OPTIONAL_INPUTS = ()
LIBS = ("torch", "numpy")

log = logging.getLogger("tilegan.sample")


@dataclass(frozen=True)
class Params:
    n: int = param(16, help="Number of images to draw.")
    seed: int = param(0, help="Seed of the noise vectors (same seed, same images).")
    use_ema: bool = param(True, help="Use the generator's EMA weights (else the raw generator).")
    interpolate: int = param(0, help="Frames in a latent-walk strip interpolation.png (0 = off).")
    n_keyframes: int = param(2, help="Latent points the interpolation strip passes through.")
    alpha_threshold: int = param(128, help="RGBA: alpha >= this becomes opaque, below it fully "
                                           "transparent (0 = keep the raw alpha).")
    batch: int = param(64, help="Images per generator call.")
    device: str = param("cpu", help="auto, cpu or cuda.")


def load_generator(path: Path, *, use_ema: bool = True, device: Any = "cpu") -> tuple[Any, dict]:
    """Rebuild the generator stored in a train checkpoint.

    Returns
    -------
    (Generator in eval mode on ``device``, checkpoint metadata dict with step/config/weights)
    """
    from stages._gan import GANConfig, Generator
    from stages._checkpoint import load_checkpoint

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
    meta = {"step": int(ck.get("step", 0)), "weights": key, "gan": cfg.to_dict()}
    return G, meta


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


def generate(G: Any, z: Any, *, batch: int, alpha_threshold: int = 128) -> np.ndarray:
    """uint8 (N, H, W, C) images for noise z (N, nz)."""
    import torch

    from stages._gan import to_uint8

    dev = next(G.parameters()).device
    out = []
    with torch.inference_mode():
        for i in range(0, len(z), batch):
            out.append(to_uint8(G(z[i:i + batch].to(dev))))
    imgs = np.concatenate(out) if out else np.zeros((0, 1, 1, 3), np.uint8)
    if imgs.shape[-1] == 4 and alpha_threshold > 0:
        a = imgs[..., 3]
        imgs[..., 3] = np.where(a >= alpha_threshold, 255, 0).astype(np.uint8)
        imgs[..., :3][a < alpha_threshold] = 0
    return imgs


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
        ``{"n", "seed", "weights", "step", "size": [h, w], "channels", "files", "interpolation"}``.
    """
    import torch

    from stages._checkpoint import resolve_device

    p = params
    if p.n < 1:
        raise ParamError(f"n must be at least 1, got {p.n}")
    if p.batch < 1:
        raise ParamError(f"batch must be at least 1, got {p.batch}")
    if p.interpolate < 0 or p.interpolate == 1:
        raise ParamError(f"interpolate must be 0 (off) or at least 2 frames, got {p.interpolate}")
    if p.n_keyframes < 2:
        raise ParamError(f"n_keyframes must be at least 2, got {p.n_keyframes}")
    if not 0 <= p.alpha_threshold <= 255:
        raise ParamError(f"alpha_threshold must be in 0..255, got {p.alpha_threshold}")
    paths = [Path(x) for x in (inputs.get("checkpoint") or [])]
    if not paths:
        raise InputError("no checkpoint given: pass a train artifact folder or a ckpt.pt file")
    ck = find_artifact(paths, "ckpt.pt") or next((q for q in paths if q.is_file()), None)
    if ck is None:
        raise InputError(f"{paths[0]}: no ckpt.pt there (run `pipeline train` first)")
    G, meta = load_generator(ck, use_ema=p.use_ema, device=resolve_device(p.device))
    nz = int(meta["gan"]["nz"])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    z = torch.randn(p.n, nz, generator=torch.Generator().manual_seed(int(p.seed)))
    files = []
    done = 0
    progress("sample", 0, p.n)
    for i in range(0, p.n, p.batch):
        imgs = generate(G, z[i:i + p.batch], batch=p.batch, alpha_threshold=p.alpha_threshold)
        for j, im in enumerate(imgs):
            name = f"sample_{i + j:04d}.png"
            save_png(out_dir / name, im)
            files.append(name)
        done += len(imgs)
        progress("sample", done, p.n)
    strip = None
    if p.interpolate:
        walk = latent_walk(nz, p.interpolate, p.n_keyframes, seed=p.seed)
        frames = generate(G, walk, batch=p.batch, alpha_threshold=p.alpha_threshold)
        save_png(out_dir / "interpolation.png", np.concatenate(list(frames), axis=1))
        strip = "interpolation.png"
    summary = {"n": int(p.n), "seed": int(p.seed), "weights": meta["weights"],
               "step": meta["step"],
               "size": [int(meta["gan"]["height"]), int(meta["gan"]["width"])],
               "channels": int(meta["gan"]["channels"]), "files": files,
               "interpolation": strip}
    write_json(out_dir / "samples.json", summary)
    return {**{k: v for k, v in summary.items() if k != "files"}, "checkpoint": str(ck)}
