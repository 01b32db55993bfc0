"""Draw generated colours to the colours a set of real screens uses (the corpus's colours).

A generator paints soft, in-between colours.  Mapped straight onto the NES palette, a pixel a
few ΔE from one of the corpus's colours can fall on the far side of the border between two NES
colours and take a colour the real art never has there, so colour masses break up after
quantize.  :func:`snap_to_colours` first moves every pixel within ``max_delta_e`` (ΔE76) of a
corpus colour onto it; the palette mapping then treats generated and real pixels alike.  Pixels
further than that from every corpus colour (new colours, or transitions between two very
different ones) are left for the palette mapping as they are.

:func:`reference_colours` finds the colours: those covering at least ``min_share`` of the
opaque pixels of the real images, so a few stray pixels of a rare colour do not become targets.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from .colour import delta_e76_sq, pack_rgb, srgb_to_lab, unpack_rgb

__all__ = ["ReferenceColours", "reference_colours", "snap_to_colours", "DEFAULT_MIN_SHARE"]

#: a colour covering less than this share of the reference pixels is not a snap target
DEFAULT_MIN_SHARE = 0.0005
#: unique source colours compared against the reference per block (bounds the memory of the
#: (block, K) distance matrix)
_BLOCK = 4096


@dataclass(frozen=True)
class ReferenceColours:
    """The colours of a set of real images.

    Attributes
    ----------
    colours : ndarray, shape (K, 3), uint8 — the kept colours, commonest first
    shares : ndarray, shape (K,), float64 — each one's share of all counted pixels
    total_colours : int — distinct colours counted, before the ``min_share`` cut
    pixels : int — opaque pixels counted
    """
    colours: np.ndarray
    shares: np.ndarray
    total_colours: int
    pixels: int

    @property
    def covered(self) -> float:
        """Share of the counted pixels whose colour was kept."""
        return float(self.shares.sum())

    def as_json(self) -> dict:
        return {"colours": int(len(self.colours)), "distinct_colours": self.total_colours,
                "pixels": self.pixels, "covered": round(self.covered, 6)}


def reference_colours(images: Iterable[np.ndarray], *, min_share: float = DEFAULT_MIN_SHARE,
                      alpha_threshold: int = 128) -> ReferenceColours:
    """Count the colours of ``images`` and keep those covering at least ``min_share``.

    Parameters
    ----------
    images : iterable of ndarray, each (H, W, 3) or (H, W, 4) uint8 (or a (N, H, W, C) stack)
        RGBA pixels with alpha below ``alpha_threshold`` are not counted.
    min_share : float in [0, 1)

    Returns
    -------
    ReferenceColours (no colours when no pixel was counted)
    """
    if not 0.0 <= min_share < 1.0:
        raise ValueError(f"min_share must be in [0, 1), got {min_share}")
    counts: dict[int, int] = {}
    for im in images:
        im = np.asarray(im)
        rgb = im[..., :3]
        if im.shape[-1] == 4:
            rgb = rgb[im[..., 3] >= alpha_threshold]
        keys, n = np.unique(pack_rgb(rgb.reshape(-1, 3)), return_counts=True)
        for k, c in zip(keys.tolist(), n.tolist()):
            counts[k] = counts.get(k, 0) + c
    total = sum(counts.values())
    if not total:
        return ReferenceColours(np.zeros((0, 3), np.uint8), np.zeros(0), 0, 0)
    keys = np.fromiter(counts.keys(), np.uint32, len(counts))
    n = np.fromiter(counts.values(), np.int64, len(counts))
    order = np.lexsort((keys, -n))                  # commonest first, ties by colour value
    keys, shares = keys[order], n[order] / total
    keep = shares >= min_share
    return ReferenceColours(unpack_rgb(keys[keep]), shares[keep], len(keys), int(total))


def snap_to_colours(rgb: np.ndarray, colours: np.ndarray, *, max_delta_e: float
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Move each pixel within ``max_delta_e`` (ΔE76) of one of ``colours`` onto the nearest.

    Parameters
    ----------
    rgb : ndarray, shape (..., 3), uint8
    colours : ndarray, shape (K, 3), uint8
    max_delta_e : float — 0 (or no colours) leaves the image as it is

    Returns
    -------
    (snapped, moved): ndarray (..., 3) uint8, and (...) bool True where the colour changed.
    Ties go to the earlier colour.
    """
    rgb = np.asarray(rgb, np.uint8)
    colours = np.asarray(colours, np.uint8).reshape(-1, 3)
    if max_delta_e <= 0 or not len(colours) or not rgb.size:
        return rgb.copy(), np.zeros(rgb.shape[:-1], bool)
    keys, inverse = np.unique(pack_rgb(rgb.reshape(-1, 3)), return_inverse=True)
    uniq = unpack_rgb(keys)
    ref_lab = srgb_to_lab(colours)
    target = uniq.copy()
    limit = float(max_delta_e) ** 2
    for s in range(0, len(uniq), _BLOCK):
        lab = srgb_to_lab(uniq[s:s + _BLOCK])
        d = delta_e76_sq(lab[:, None, :], ref_lab[None, :, :])
        j = np.argmin(d, axis=1)
        near = d[np.arange(len(j)), j] < limit
        target[s:s + _BLOCK][near] = colours[j[near]]
    snapped = target[inverse.reshape(-1)].reshape(rgb.shape)
    return snapped, (snapped != rgb).any(-1)
