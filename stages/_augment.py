"""Differentiable augmentation (DiffAugment) for data-efficient GAN training.

The same random transforms are applied to real and generated images before the discriminator
sees them, so D cannot memorise a small corpus while G still learns the un-augmented
distribution (Zhao et al., 2020, "Differentiable Augmentation for Data-Efficient GAN
Training").  Every op is differentiable with respect to the images and draws its randomness
from an explicit :class:`torch.Generator`, so a training step is reproducible from its seed.

Policies: ``"translation"`` (integer shifts up to 1/8 of the side, zero fill; whole pixels
keep pixel art crisp), ``"cutout"`` (one zeroed square of half the side), ``"color"``
(brightness, saturation, contrast; alpha is left alone for RGBA).

torch is imported inside the ops, so :func:`parse_policy` checks a policy without it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    import torch

POLICIES = ("translation", "cutout", "color")


def parse_policy(policy: str) -> tuple[str, ...]:
    """Split ``"translation,cutout,color"`` into known op names; raise ValueError on others."""
    ops = tuple(p.strip() for p in policy.split(",") if p.strip())
    bad = [p for p in ops if p not in POLICIES]
    if bad:
        raise ValueError(f"unknown DiffAugment op(s) {bad}; choose from {list(POLICIES)}")
    return ops


def diff_augment(x: torch.Tensor, ops: tuple[str, ...], *,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Apply the ops in order.

    Parameters
    ----------
    x : Tensor, shape (B, C, H, W), float in [-1, 1]
    ops : tuple of str
        Op names from :data:`POLICIES`, e.g. ``parse_policy("translation,cutout,color")``.
    generator : torch.Generator, optional
        CPU generator for the random parameters (the global RNG when None).

    Returns
    -------
    Tensor, shape (B, C, H, W), same dtype and device as ``x``.
    """
    for op in ops:
        if op == "color":
            x = augment_color(x, generator=generator)
        elif op == "translation":
            x = augment_translation(x, generator=generator)
        elif op == "cutout":
            x = augment_cutout(x, generator=generator)
        else:
            raise ValueError(f"unknown DiffAugment op {op!r}")
    return x


def _rand(shape: tuple[int, ...], x: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    import torch

    return torch.rand(shape, generator=generator).to(device=x.device, dtype=x.dtype)


def augment_color(x: torch.Tensor, *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Random brightness (±0.5), saturation (×0..2) and contrast (×0.5..1.5) per image."""
    import torch

    b = x.shape[0]
    rgb, rest = x[:, :3], x[:, 3:]
    rgb = rgb + (_rand((b, 1, 1, 1), x, generator) - 0.5)
    mean_c = rgb.mean(dim=1, keepdim=True)
    rgb = (rgb - mean_c) * (_rand((b, 1, 1, 1), x, generator) * 2.0) + mean_c
    mean_all = rgb.mean(dim=(1, 2, 3), keepdim=True)
    rgb = (rgb - mean_all) * (_rand((b, 1, 1, 1), x, generator) + 0.5) + mean_all
    return torch.cat([rgb, rest], dim=1) if rest.shape[1] else rgb


def augment_translation(x: torch.Tensor, ratio: float = 0.125, *,
                        generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Shift each image by whole pixels, up to ``ratio`` of its side, filling with zeros."""
    import torch

    b, _, h, w = x.shape
    ry, rx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    if ry == 0 and rx == 0:
        return x
    dy = torch.randint(-ry, ry + 1, (b,), generator=generator).to(x.device)
    dx = torch.randint(-rx, rx + 1, (b,), generator=generator).to(x.device)
    c = x.shape[1]
    xp = torch.nn.functional.pad(x, (rx, rx, ry, ry)).contiguous()           # (B, C, H+2ry, W+2rx)
    wp = w + 2 * rx
    iy = torch.arange(h, device=x.device)[None, :] + ry - dy[:, None]        # (B, H)
    ix = torch.arange(w, device=x.device)[None, :] + rx - dx[:, None]        # (B, W)
    flat = (iy[:, :, None] * wp + ix[:, None, :]).reshape(b, 1, h * w)      # (B, 1, H*W)
    out = torch.gather(xp.reshape(b, c, -1), 2, flat.expand(b, c, h * w))
    return out.reshape(b, c, h, w)


def augment_cutout(x: torch.Tensor, ratio: float = 0.5, *,
                   generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Zero one axis-aligned square of ``ratio`` × the side at a random place per image."""
    import torch

    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (b,), generator=generator).to(x.device)
    cx = torch.randint(0, w + (1 - cw % 2), (b,), generator=generator).to(x.device)
    ys = torch.arange(h, device=x.device)[None, :] - (cy[:, None] - ch // 2)  # (B, H)
    xs = torch.arange(w, device=x.device)[None, :] - (cx[:, None] - cw // 2)  # (B, W)
    inside = (((ys >= 0) & (ys < ch))[:, :, None] & ((xs >= 0) & (xs < cw))[:, None, :])
    return x * (~inside)[:, None].to(x.dtype)
