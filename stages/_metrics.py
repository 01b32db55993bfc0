"""Image-quality metrics that need no downloaded weights.

* :func:`swd` — Sliced Wasserstein Distance between the 7×7 neighbourhoods of two image sets
  on every level of a Laplacian pyramid, after the recipe of Karras et al. (ProGAN, 2018):
  random neighbourhoods per image and level, each set normalised per channel by its own mean
  and std, 4 × 128 random unit directions, distances ×1e3, averaged over levels.  Lower is
  better; two disjoint halves of the same real corpus give the "floor".
* :func:`crispness` — the same after nearest-NES-colour mapping, as reported by ``train``.
* :func:`isolated_share` — share of pixels unlike all 8 neighbours (speckle; real pixel art
  has almost none).
* :func:`colours_per_tile` — distinct colours in every grid-aligned 16×16 tile; NES tiles use at
  most 4 (3 + the shared background), so the share of tiles above 4 measures crispness.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from tilesets import pixels
from tilesets.artifacts import grid_cut

_GAUSS = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def _blur(x: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    k = torch.tensor(np.outer(_GAUSS, _GAUSS), dtype=x.dtype)[None, None].repeat(c, 1, 1, 1)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), k, groups=c)


def laplacian_pyramid(images: np.ndarray, *, min_size: int = 16) -> list[torch.Tensor]:
    """Laplacian pyramid of a batch, finest level first, ending with the coarse Gaussian level.

    Parameters
    ----------
    images : ndarray, shape (N, H, W, C), uint8
    min_size : int
        Stop when the smaller side of the next level would drop below this.

    Returns
    -------
    list of Tensor, each (N, C, h, w) float32 (pixel scale 0..255).
    """
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    levels = []
    while min(x.shape[2:]) // 2 >= min_size:
        small = _blur(x)[:, :, ::2, ::2]
        up = torch.zeros_like(x)
        up[:, :, ::2, ::2] = small * 4.0
        levels.append(x - _blur(up))
        x = small
    levels.append(x)
    return levels


def _descriptors(level: torch.Tensor, n_per_image: int, rng: np.random.Generator,
                 patch: int = 7) -> np.ndarray:
    n, c, h, w = level.shape
    a = level.numpy()
    ys = rng.integers(0, h - patch + 1, size=(n, n_per_image))
    xs = rng.integers(0, w - patch + 1, size=(n, n_per_image))
    off = np.arange(patch)
    yy = (ys[:, :, None] + off)[:, :, :, None]                              # (N, K, p, 1)
    xx = (xs[:, :, None] + off)[:, :, None, :]                              # (N, K, 1, p)
    ii = np.arange(n)[:, None, None, None]
    d = a.transpose(0, 2, 3, 1)[ii, yy, xx]                                 # (N, K, p, p, C)
    d = d.reshape(n * n_per_image, patch * patch, c)
    d = d - d.mean(axis=(0, 1), keepdims=True)
    d = d / (d.std(axis=(0, 1), keepdims=True) + 1e-8)
    return d.reshape(n * n_per_image, -1).astype(np.float32)


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, *, rng: np.random.Generator,
                       repeats: int = 4, dirs: int = 128) -> float:
    """Mean 1-D Wasserstein distance of two point sets along random unit directions.

    ``a`` and ``b`` are (M, D) float arrays with the same M.
    """
    if a.shape != b.shape:
        raise ValueError(f"descriptor sets differ in shape: {a.shape} vs {b.shape}")
    total = 0.0
    at, bt = np.ascontiguousarray(a.T), np.ascontiguousarray(b.T)          # (D, M)
    for _ in range(repeats):
        d = rng.standard_normal((dirs, a.shape[1])).astype(np.float32)
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        pa = np.sort(d @ at, axis=1)                                        # (dirs, M)
        pb = np.sort(d @ bt, axis=1)
        total += float(np.abs(pa - pb).mean())
    return total / repeats


def swd(images_a: np.ndarray, images_b: np.ndarray, *, seed: int = 0,
        n_per_image: int = 64, min_size: int = 16) -> dict:
    """Sliced Wasserstein Distance on Laplacian-pyramid neighbourhoods (×1e3, ProGAN scale).

    Parameters
    ----------
    images_a, images_b : ndarray, shape (N, H, W, C), uint8
        Two image sets of the same size and channels; the larger set is subsampled so both
        contribute the same number of images.
    seed : int
        Seeds the neighbourhood positions, the subsampling and the directions.

    Returns
    -------
    dict
        ``{"swd": mean over levels, "levels": [per level, finest first], "n": images per set}``.
    """
    if images_a.shape[1:] != images_b.shape[1:]:
        raise ValueError(f"image sets differ in shape: {images_a.shape[1:]} vs {images_b.shape[1:]}")
    rng = np.random.default_rng(seed)
    n = min(len(images_a), len(images_b))
    if n < 2:
        raise ValueError("SWD needs at least 2 images per set")
    a = images_a[np.sort(rng.choice(len(images_a), n, replace=False))]
    b = images_b[np.sort(rng.choice(len(images_b), n, replace=False))]
    la = laplacian_pyramid(a, min_size=min_size)
    lb = laplacian_pyramid(b, min_size=min_size)
    per = []
    for xa, xb in zip(la, lb):
        da = _descriptors(xa, n_per_image, rng)
        db = _descriptors(xb, n_per_image, rng)
        per.append(sliced_wasserstein(da, db, rng=rng) * 1e3)
    return {"swd": float(np.mean(per)), "levels": [float(v) for v in per], "n": int(n)}


def colours_per_tile(images: np.ndarray, *, tile: int = 16) -> np.ndarray:
    """Number of distinct colours in every grid-aligned tile.

    Parameters
    ----------
    images : ndarray, shape (N, H, W, C), uint8
        H and W are cropped down to multiples of ``tile``.  For RGBA, fully transparent pixels
        count as one colour.

    Returns
    -------
    ndarray, shape (N * H//tile * W//tile,), int64
        Tiles in row-major order per image (:func:`tilesets.artifacts.grid_cut`).
    """
    if images.shape[-1] == 4:
        images = np.where(images[..., 3:4] == 0, 0, images).astype(np.uint8, copy=False)
    return pixels.colours_per_tile(grid_cut(images, tile))


def isolated_share(images: np.ndarray) -> float:
    """Share (0..1) of interior pixels whose colour differs from all 8 neighbours.

    Parameters
    ----------
    images : ndarray, shape (N, H, W, C), uint8 (every channel compared; H, W ≥ 3)
    """
    a = np.ascontiguousarray(images)
    if a.shape[1] < 3 or a.shape[2] < 3:
        return 0.0
    packed = a.view(np.dtype((np.void, a.shape[-1] * a.dtype.itemsize)))[..., 0]
    centre = packed[:, 1:-1, 1:-1]
    h, w = centre.shape[1:]
    alone = np.ones(centre.shape, bool)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            if (dy, dx) != (1, 1):
                alone &= packed[:, dy:dy + h, dx:dx + w] != centre
    return float(alone.mean()) if alone.size else 0.0


def share_over(counts: np.ndarray, limit: int = 4) -> float:
    """Fraction of tiles with more than ``limit`` colours (0..1)."""
    return float(np.mean(counts > limit)) if len(counts) else 0.0


def crispness(images: np.ndarray, *, tile: int = 16) -> dict:
    """Colours per ``tile``×``tile`` tile after mapping every pixel to its nearest NES colour.

    The mapping is the quantize stage's exact CIELAB nearest colour on the default NES palette
    with no clean-up, so the figures say how speckled raw samples look to a level designer.

    Parameters
    ----------
    images : ndarray, shape (N, H, W, C), uint8 (alpha ignored)

    Returns
    -------
    dict: ``colours_per_tile`` (mean) and ``tiles_over_4`` (share of tiles with > 4 colours).
    """
    from palettes.io import get_palette
    from palettes.nearest import get_mapper

    pal = get_palette(None)
    idx = get_mapper(pal.colours, pal.usable()).map(np.ascontiguousarray(images[..., :3]))
    counts = colours_per_tile(idx[..., None], tile=tile)
    return {"colours_per_tile": round(float(counts.mean()), 2) if len(counts) else 0.0,
            "tiles_over_4": round(share_over(counts, 4), 4)}


def sample_swd_reference(patches: np.ndarray, *, holdout: float, seed: int,
                         max_holdout: int = 512) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Split ``patches`` into (train indices, held-back real patches) for SWD.

    Returns all indices and None when the corpus is too small to spare a holdout (< 32).
    """
    n = len(patches)
    k = min(max_holdout, int(n * holdout))
    if holdout <= 0 or k < 16:
        return np.arange(n), None
    rng = np.random.default_rng([seed, 7])
    perm = rng.permutation(n)
    return np.sort(perm[k:]), patches[np.sort(perm[:k])]
