"""Colour maths: sRGB <-> CIELAB (D65) and the ΔE76 / CIEDE2000 colour differences.

All functions work on float64 arrays so that the exact nearest-colour search
(:mod:`palettes.nearest`) and the brute-force reference agree bit for bit.
"""
from __future__ import annotations

import numpy as np

__all__ = ["srgb_to_linear", "srgb_to_lab", "srgb_float_to_lab", "rgb_to_lab_table",
           "delta_e76_sq", "ciede2000", "lab_to_srgb", "pack_rgb", "unpack_rgb"]

# sRGB (IEC 61966-2-1) primaries, D65 white, XYZ scaled so that Y(white) = 1.
_M = np.array([[0.4124564, 0.3575761, 0.1804375],
               [0.2126729, 0.7151522, 0.0721750],
               [0.0193339, 0.1191920, 0.9503041]], dtype=np.float64)
_WHITE = _M.sum(axis=1)                  # XYZ of RGB (1, 1, 1): exactly the D65 white of this matrix
_DELTA = 6.0 / 29.0


def srgb_to_linear(v: np.ndarray) -> np.ndarray:
    """Undo the sRGB transfer curve.

    Parameters
    ----------
    v : ndarray, any shape, values in [0, 255] (any real dtype)

    Returns
    -------
    ndarray, same shape, float64 in [0, 1]
    """
    c = np.asarray(v, dtype=np.float64) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


#: linear-light value of each 8-bit sRGB code, shape (256,), float64
_LIN8 = srgb_to_linear(np.arange(256))


def _f(t: np.ndarray) -> np.ndarray:
    return np.where(t > _DELTA ** 3, np.cbrt(t), t / (3 * _DELTA ** 2) + 4.0 / 29.0)


def _xyz_to_lab(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    fx, fy, fz = _f(x / _WHITE[0]), _f(y / _WHITE[1]), _f(z / _WHITE[2])
    return np.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1)


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """Convert 8-bit sRGB colours to CIELAB (D65).

    Parameters
    ----------
    rgb : ndarray, shape (..., 3), integer values 0..255 (uint8 or int)

    Returns
    -------
    lab : ndarray, shape (..., 3), float64 (L* in [0, 100])

    Notes
    -----
    The linearisation uses a 256-entry table and the XYZ sum is formed as
    ``M[:,0]*R + M[:,1]*G + M[:,2]*B`` in that order; :func:`rgb_to_lab_table`
    uses the very same arithmetic, so both give identical bits.
    """
    a = np.asarray(rgb)
    if a.shape[-1:] != (3,):
        raise ValueError(f"rgb must have shape (..., 3), got {a.shape}")
    idx = a.astype(np.intp)
    if idx.size and (idx.min() < 0 or idx.max() > 255):
        raise ValueError("rgb values must lie in 0..255")
    return _linear_to_lab(_LIN8[idx[..., 0]], _LIN8[idx[..., 1]], _LIN8[idx[..., 2]])


def srgb_float_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of sRGB colours given as real numbers (e.g. colours after a fitted gain).

    Parameters
    ----------
    rgb : ndarray, shape (..., 3), real values in [0, 255]

    Returns
    -------
    lab : ndarray, shape (..., 3), float64 (for integer input within rounding of
    :func:`srgb_to_lab`, which uses a lookup table instead)
    """
    lin = srgb_to_linear(rgb)
    return _linear_to_lab(lin[..., 0], lin[..., 1], lin[..., 2])


def rgb_to_lab_table(r_values: np.ndarray) -> np.ndarray:
    """CIELAB of every colour (r, g, b) with r in ``r_values`` and any g, b.

    Parameters
    ----------
    r_values : ndarray, shape (n,), int in 0..255

    Returns
    -------
    lab : ndarray, shape (n, 256, 256, 3), float64, ``lab[i, g, b] = srgb_to_lab((r_values[i], g, b))``
    """
    return _linear_to_lab(_LIN8[np.asarray(r_values, np.intp)][:, None, None],
                          _LIN8[:, None][None], _LIN8[None, None, :])


def _linear_to_lab(r: np.ndarray, g: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Linear-light sRGB channels (broadcastable arrays) -> CIELAB (D65)."""
    x = _M[0, 0] * r + _M[0, 1] * g + _M[0, 2] * b
    y = _M[1, 0] * r + _M[1, 1] * g + _M[1, 2] * b
    z = _M[2, 0] * r + _M[2, 1] * g + _M[2, 2] * b
    return _xyz_to_lab(x, y, z)


def lab_to_srgb(lab: np.ndarray) -> np.ndarray:
    """Convert CIELAB (D65) back to 8-bit sRGB, rounding and clipping.

    Parameters
    ----------
    lab : ndarray, shape (..., 3), float

    Returns
    -------
    ndarray, shape (..., 3), uint8
    """
    lab = np.asarray(lab, np.float64)
    fy = (lab[..., 0] + 16.0) / 116.0
    fx = fy + lab[..., 1] / 500.0
    fz = fy - lab[..., 2] / 200.0

    def finv(t):
        return np.where(t > _DELTA, t ** 3, 3 * _DELTA ** 2 * (t - 4.0 / 29.0))

    xyz = np.stack([finv(fx) * _WHITE[0], finv(fy) * _WHITE[1], finv(fz) * _WHITE[2]], -1)
    lin = xyz @ np.linalg.inv(_M).T
    lin = np.clip(lin, 0.0, 1.0)
    srgb = np.where(lin <= 0.0031308, lin * 12.92, 1.055 * lin ** (1 / 2.4) - 0.055)
    return np.clip(np.round(srgb * 255.0), 0, 255).astype(np.uint8)


def delta_e76_sq(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """Squared CIE76 colour difference, broadcasting over leading axes.

    Parameters
    ----------
    lab1, lab2 : ndarray, shape (..., 3), float64

    Returns
    -------
    ndarray, broadcast shape without the last axis, float64.  The sum is taken
    as ``dL² + da² + db²`` in that order (the nearest-colour search relies on it).
    """
    d = np.asarray(lab1) - np.asarray(lab2)
    return d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1] + d[..., 2] * d[..., 2]


def ciede2000(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """CIEDE2000 colour difference (kL = kC = kH = 1), broadcasting.

    Parameters
    ----------
    lab1, lab2 : ndarray, shape (..., 3), float

    Returns
    -------
    ndarray, broadcast shape without the last axis, float64
    """
    lab1 = np.asarray(lab1, np.float64)
    lab2 = np.asarray(lab2, np.float64)
    L1, a1, b1 = lab1[..., 0], lab1[..., 1], lab1[..., 2]
    L2, a2, b2 = lab2[..., 0], lab2[..., 1], lab2[..., 2]
    C1 = np.hypot(a1, b1)
    C2 = np.hypot(a2, b2)
    Cm = (C1 + C2) / 2.0
    G = 0.5 * (1.0 - np.sqrt(Cm ** 7 / (Cm ** 7 + 25.0 ** 7)))
    a1p, a2p = (1.0 + G) * a1, (1.0 + G) * a2
    C1p, C2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360.0
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360.0
    dLp = L2 - L1
    dCp = C2p - C1p
    dh = h2p - h1p
    dh = np.where(dh > 180.0, dh - 360.0, np.where(dh < -180.0, dh + 360.0, dh))
    dh = np.where(C1p * C2p == 0.0, 0.0, dh)
    dHp = 2.0 * np.sqrt(C1p * C2p) * np.sin(np.radians(dh) / 2.0)
    Lpm = (L1 + L2) / 2.0
    Cpm = (C1p + C2p) / 2.0
    hsum = h1p + h2p
    hpm = np.where(np.abs(h1p - h2p) > 180.0,
                   np.where(hsum < 360.0, (hsum + 360.0) / 2.0, (hsum - 360.0) / 2.0), hsum / 2.0)
    hpm = np.where(C1p * C2p == 0.0, hsum, hpm)
    T = (1.0 - 0.17 * np.cos(np.radians(hpm - 30.0)) + 0.24 * np.cos(np.radians(2.0 * hpm))
         + 0.32 * np.cos(np.radians(3.0 * hpm + 6.0)) - 0.20 * np.cos(np.radians(4.0 * hpm - 63.0)))
    dtheta = 30.0 * np.exp(-(((hpm - 275.0) / 25.0) ** 2))
    Rc = 2.0 * np.sqrt(Cpm ** 7 / (Cpm ** 7 + 25.0 ** 7))
    Sl = 1.0 + 0.015 * (Lpm - 50.0) ** 2 / np.sqrt(20.0 + (Lpm - 50.0) ** 2)
    Sc = 1.0 + 0.045 * Cpm
    Sh = 1.0 + 0.015 * Cpm * T
    Rt = -np.sin(np.radians(2.0 * dtheta)) * Rc
    return np.sqrt((dLp / Sl) ** 2 + (dCp / Sc) ** 2 + (dHp / Sh) ** 2
                   + Rt * (dCp / Sc) * (dHp / Sh))


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 colours -> (...) uint32 ``R << 16 | G << 8 | B`` (one number per colour,
    ordered as the colours are by R, then G, then B)."""
    rgb = np.asarray(rgb)
    return ((rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8)
            | rgb[..., 2])


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """The inverse of :func:`pack_rgb`: (...) ``R << 16 | G << 8 | B`` -> (..., 3) uint8."""
    packed = np.asarray(packed)
    return np.stack([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255], -1).astype(np.uint8)
