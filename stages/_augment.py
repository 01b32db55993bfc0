"""Differentiable augmentation (DiffAugment) for data-efficient GAN training.

The same random transforms are applied to real and generated images before the discriminator
sees them, so D cannot memorise a small corpus while G still learns the un-augmented
distribution (Zhao et al., 2020, "Differentiable Augmentation for Data-Efficient GAN
Training").  Every op is differentiable with respect to the images and draws its randomness
from an explicit :class:`torch.Generator`, so a training step is reproducible from its seed.

Policies: ``"translation"`` (integer shifts up to 1/8 of the side, zero fill; whole pixels
keep pixel art crisp), ``"tiles"`` (shifts by whole 16-px tiles, wrapped around: every pixel
stays on its place in the tile grid, so D can still tell art drawn on the grid from art drawn
off it, and the wrapped edge is a tile border like any other), ``"grid8"`` (as
``"translation"``, but in whole steps of 8 px, the NES pattern grid: D keeps seeing where the
8-px grid lies), ``"cutout"`` (one zeroed square of half the side), ``"color"``
(brightness, saturation, contrast; alpha is left alone for RGBA).

torch is imported inside the ops, so :func:`parse_policy` checks a policy without it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    import torch

POLICIES = ("translation", "grid8", "tiles", "cutout", "color")

#: the step of ``"grid8"``'s shifts: the NES pattern grid (8×8), so a shift keeps every pixel's
#: place in the 8-px grid (and, shifted by 8 or 16, in the 16-px tile grid's halves)
GRID_STEP = 8

#: the tile grid ``"tiles"`` keeps (pixels); a side that is not a multiple of it is left alone
TILE = 16


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
        elif op == "tiles":
            x = augment_tiles(x, generator=generator)
        elif op == "grid8":
            x = augment_translation(x, generator=generator, step=GRID_STEP)
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
                        generator: Optional[torch.Generator] = None, step: int = 1) -> torch.Tensor:
    """Shift each image by whole pixels, up to ``ratio`` of its side, filling with zeros;
    ``step`` > 1 shifts only by multiples of it (at least one step either way)."""
    import torch

    b, _, h, w = x.shape
    ry, rx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    if step > 1:
        ry, rx = max(ry, step) // step * step, max(rx, step) // step * step
    if ry == 0 and rx == 0:
        return x
    dy = torch.randint(-(ry // step), ry // step + 1, (b,), generator=generator).to(x.device) * step
    dx = torch.randint(-(rx // step), rx // step + 1, (b,), generator=generator).to(x.device) * step
    c = x.shape[1]
    xp = torch.nn.functional.pad(x, (rx, rx, ry, ry)).contiguous()           # (B, C, H+2ry, W+2rx)
    wp = w + 2 * rx
    iy = torch.arange(h, device=x.device)[None, :] + ry - dy[:, None]        # (B, H)
    ix = torch.arange(w, device=x.device)[None, :] + rx - dx[:, None]        # (B, W)
    flat = (iy[:, :, None] * wp + ix[:, None, :]).reshape(b, 1, h * w)      # (B, 1, H*W)
    out = torch.gather(xp.reshape(b, c, -1), 2, flat.expand(b, c, h * w))
    return out.reshape(b, c, h, w)


def augment_tiles(x: torch.Tensor, tile: int = TILE, *,
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Roll each image by a random whole number of tiles along each axis (wrapping around).

    Pixels keep their place in the ``tile`` grid, nothing is lost or filled in; a side that
    is not a multiple of ``tile`` (or is a single tile) is not shifted.
    """
    import torch

    b, c, h, w = x.shape
    ny = h // tile if h % tile == 0 else 1
    nx = w // tile if w % tile == 0 else 1
    if ny == 1 and nx == 1:
        return x
    dy = torch.randint(0, ny, (b,), generator=generator).to(x.device) * tile
    dx = torch.randint(0, nx, (b,), generator=generator).to(x.device) * tile
    iy = (torch.arange(h, device=x.device)[None, :] - dy[:, None]) % h        # (B, H)
    ix = (torch.arange(w, device=x.device)[None, :] - dx[:, None]) % w        # (B, W)
    flat = (iy[:, :, None] * w + ix[:, None, :]).reshape(b, 1, h * w)
    out = torch.gather(x.contiguous().reshape(b, c, -1), 2, flat.expand(b, c, h * w))
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
