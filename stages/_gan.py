"""DCGAN networks for tilegan: an upsampling generator and a strided-conv discriminator.

The generator doubles its maps with DCGAN's transposed convolutions or (``upsample="nearest"``,
the train stage's default) nearest-neighbour upsampling followed by a 3×3 convolution.

The shapes follow the DCGAN family: the generator grows a ``nz``-dim noise vector from 4×4 to
``size``×``size`` by doubling, the discriminator halves its input down to 4×4 and ends in one
logit.  Sizes 32, 64 and 128 are square powers of two; more generally any
``(height, width)`` pair of multiples of 16 is accepted through ``GANConfig.height/width``:
the first layer then starts from ``(h/2^k, w/2^k)`` instead of 4×4 (256×224 starts at 8×7),
which is how whole non-square screens train on a GPU.

Everything here is pure torch; the architecture's configuration (:class:`GANConfig`) lives in
:mod:`stages._gan_config`, the training loop in :mod:`stages.train`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import torch
from torch import nn

from stages._gan_config import (UPSAMPLE, GANConfig, max_d_scales,  # noqa: F401
                                screen_span, where_rows)

#: Bumped whenever the network layout changes so that old checkpoints are refused clearly.
ARCH_VERSION = 1


def _mult(i: int, n: int) -> int:
    """Width multiplier of stage i of n (widest first), capped at 8."""
    return min(8, 2 ** (n - 1 - i))


#: Below this many output channels, nearest ×2 + 3×3 conv runs in its sub-pixel form
#: (:class:`NearestUpConv`): measured 3.2× faster (forward + backward) for the 16 -> 3 image
#: layer on one AVX2 core, and slower than the plain form from 16 output channels up.
SUBPIXEL_MAX_COUT = 4

# _PHASE[a, u, t]: for output rows of parity a, which of the conv's taps t (rows -1, 0, +1 of
# the upsampled map) land on low-resolution row offset u (-1, 0, +1).
_PHASE = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.0]],
                       [[0.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])


class NearestUpConv(nn.Conv2d):
    """Nearest-neighbour ×2 upsampling then a 3×3 convolution (padding 1), computed without
    building the upsampled map.

    Each of the four output pixel parities (a, b) sees the low-resolution input through its own
    3×3 kernel (sums of the original taps, :data:`_PHASE`), so one ordinary convolution with 4×
    the output channels at the low resolution, followed by a pixel shuffle, gives exactly the
    same result (up to float rounding) with the same arithmetic and no ×4 intermediate.  The
    weight is the plain layer's ``(cout, cin, 3, 3)``, so checkpoints are interchangeable.
    """

    def __init__(self, cin: int, cout: int):
        super().__init__(cin, cout, 3, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o, i = self.weight.shape[:2]
        ph = _PHASE.to(self.weight)
        k = torch.einsum("aus,oist,bvt->oabiuv", ph, self.weight, ph).reshape(4 * o, i, 3, 3)
        return nn.functional.pixel_shuffle(nn.functional.conv2d(x, k, padding=1), 2)


def _up(kind: str, cin: int, cout: int) -> list[nn.Module]:
    """Layers that double the spatial size: cin × s × s -> cout × 2s × 2s (no bias)."""
    if kind == "nearest":
        if cout <= SUBPIXEL_MAX_COUT:            # Identity keeps the layer indices (state keys)
            return [nn.Identity(), NearestUpConv(cin, cout)]
        return [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, 1, 1, bias=False)]
    return [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False)]


class ConditionalBatchNorm2d(nn.BatchNorm2d):
    """Batch norm whose scale and shift are the label's: ``bn(x) * gain[y] + shift[y]``.

    The normalisation itself has no affine part (``weight``/``bias`` are None), so EMA
    batch-norm calibration and ``has_batchnorm`` treat it as any batch norm; the per-class gain
    starts at 1 and the bias at 0, so an untrained layer is a plain batch norm.  It computes in
    float32 whatever the autocast (the result in the input's dtype): compiled by torch 2.13's
    inductor for one CPU thread under bf16 autocast, its backward gave NaN gradients.
    """

    def __init__(self, channels: int, n_classes: int):
        super().__init__(channels, affine=False)
        self.gain = nn.Embedding(n_classes, channels)
        self.shift = nn.Embedding(n_classes, channels)
        nn.init.ones_(self.gain.weight)
        nn.init.zeros_(self.shift.weight)

    def forward(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        if y is None:
            raise ValueError("a conditional generator needs labels y")
        with torch.autocast(x.device.type, enabled=False):
            h = super().forward(x.float())
            gain, shift = (e(y)[:, :, None, None].float() for e in (self.gain, self.shift))
            return (h * gain + shift).to(x.dtype)


class Generator(nn.Module):
    """Noise -> image (B, C, H, W) float in [-1, 1].

    ``g_arch = "dcgan"``: noise (B, nz) or (B, nz, 1, 1), a fixed H × W.  ``"fcn"``: a noise map
    (B, nz, h, w) gives an image (B, C, h·stride, w·stride), any h, w ≥ 1 (the first layer is a
    3×3 convolution instead of DCGAN's 1×1 -> bh × bw projection).  ``output = "rgb"`` ends in
    tanh; ``"palette"`` ends in logits over ``cfg.palette`` decoded by :func:`decode_palette`.
    """

    def __init__(self, cfg: GANConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        n, g = cfg.n_up, cfg.ngf
        bh, bw = cfg.base
        # a conditional G appends the label's embedding, a positional one each row's position
        zin = cfg.nz + cfg.embed_dim + int(cfg.positional)
        if cfg.g_arch == "fcn":
            # (nz [+E]) × h × w -> (ngf*m0) × h × w   (h × w = bh × bw at the training size)
            first: nn.Module = nn.Conv2d(zin, g * _mult(0, n), 3, 1, 1, bias=False)
        else:
            # (nz [+E]) × 1 × 1 -> (ngf*m0) × bh × bw   (4 × 4 for square images)
            first = nn.ConvTranspose2d(zin, g * _mult(0, n), (bh, bw), 1, 0, bias=False)
        cbn = bool(cfg.n_classes) and cfg.g_cond == "cbn"

        def norm(c: int) -> nn.Module:
            return ConditionalBatchNorm2d(c, cfg.n_classes) if cbn else nn.BatchNorm2d(c)

        layers: list[nn.Module] = [first, norm(g * _mult(0, n)), nn.ReLU(True)]
        for i in range(1, n):
            # (ngf*m_{i-1}) × s × s -> (ngf*m_i) × 2s × 2s
            layers += [*_up(cfg.upsample, g * _mult(i - 1, n), g * _mult(i, n)),
                       norm(g * _mult(i, n)),
                       nn.ReLU(True)]
        if cfg.output == "palette":
            # ngf × (H/2) × (W/2) -> K logits × H × W   (K palette colours)
            layers += _up(cfg.upsample, g * _mult(n - 1, n), len(cfg.palette))
            # (K, 3) colours in [-1, 1]; rebuilt from the config, so not in the state dict
            rgb = torch.tensor(cfg.palette, dtype=torch.float32) / 127.5 - 1.0
            self.register_buffer("palette_rgb", rgb, persistent=False)
        else:
            # ngf × (H/2) × (W/2) -> C × H × W
            layers += [*_up(cfg.upsample, g * _mult(n - 1, n), cfg.channels), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        if cfg.n_classes and not cbn:
            self.embed = nn.Embedding(cfg.n_classes, cfg.embed_dim)
        init_weights(self)

    def forward(self, z: torch.Tensor, y: Optional[torch.Tensor] = None,
                where: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``y`` (B,) int64 labels of a conditional generator (required there, else ignored).

        ``where`` (B, h) float: a positional generator's row positions
        (:func:`stages._gan_config.where_rows`, one per noise row); None = :meth:`default_where`.
        """
        if z.dim() == 2:
            if self.cfg.g_arch == "fcn":             # one vector: a constant map, training size
                z = z[:, :, None, None].expand(-1, -1, *self.cfg.base)
            else:
                z = z[:, :, None, None]
        if self.cfg.positional:
            where = self.default_where(z) if where is None else where.to(z.device)
            if where.shape != (z.shape[0], z.shape[2]):
                raise ValueError(f"where must hold one position per noise row, shape "
                                 f"({z.shape[0]}, {z.shape[2]}), got {tuple(where.shape)}")
            z = torch.cat([z, where[:, None, :, None].to(z.dtype).expand(-1, 1, -1, z.shape[3])],
                          dim=1)
        if self.cfg.n_classes:
            if y is None:
                raise ValueError("a conditional generator needs labels y")
            y = y.to(z.device)
        if self.cfg.n_classes and self.cfg.g_cond == "cbn":
            out = z
            for layer in self.main:
                out = layer(out, y) if isinstance(layer, ConditionalBatchNorm2d) else layer(out)
        else:
            if self.cfg.n_classes:
                e = self.embed(y)[:, :, None, None].to(z.dtype)
                z = torch.cat([z, e.expand(-1, -1, *z.shape[2:])], dim=1)
            out = self.main(z)
        if self.cfg.output == "palette":
            return decode_palette(out, self.palette_rgb, tau=self.cfg.gumbel_tau,
                                  hard_only=not self.training)
        return out


    def default_where(self, z: torch.Tensor) -> torch.Tensor:
        """Row positions (B, h) for noise maps ``z`` (B, nz, h, w) when none are given.

        An image taller than the training patches spans a whole screen; one of their height
        is a window whose top is its first noise value through the normal CDF (uniform over
        the heights it fits), so each image's position is fixed by its own noise: the same
        whatever the batch, and spread as the training patches' are.
        """
        h = z.shape[2]
        span = screen_span(self.cfg, h * self.cfg.stride)
        top = torch.special.ndtr(z[:, 0, 0, 0].detach().double().cpu()) * (1.0 - span)
        return torch.from_numpy(where_rows(top.numpy(), [span] * len(top), h)).to(z.device)


def decode_palette(logits: torch.Tensor, palette: torch.Tensor, *, tau: float,
                   hard_only: bool) -> torch.Tensor:
    """Per-pixel logits (B, K, H, W) over ``palette`` (K, 3) in [-1, 1] -> RGB (B, 3, H, W).

    ``hard_only`` (eval): each pixel is its argmax colour, exactly.  Otherwise a straight-through
    Gumbel-softmax: the forward value is the colour of argmax((logits + Gumbel noise) / tau),
    an exact palette colour too, and the gradient is that of the softmax's mixed colour.  The
    Gumbel noise comes from torch's global RNG (saved in checkpoints, so resumes follow).
    """
    x = logits.float().permute(0, 2, 3, 1)                             # (B, H, W, K)
    if hard_only:
        return palette[x.argmax(dim=-1)].permute(0, 3, 1, 2).contiguous()
    u = torch.rand_like(x).clamp_(1e-9, 1.0 - 1e-7)
    soft = torch.softmax((x - torch.log(-torch.log(u))) / tau, dim=-1)
    soft_rgb = soft @ palette                                          # (B, H, W, 3) mixture
    hard_rgb = palette[soft.detach().argmax(dim=-1)]                   # its argmax colour
    # straight-through: the value is hard_rgb, the gradient that of the mixture (measured
    # 1.9× faster than building one-hot vectors over channels-first logits)
    return (hard_rgb + soft_rgb - soft_rgb.detach()).permute(0, 3, 1, 2)


class Discriminator(nn.Module):
    """Image (B, C, H, W) float in [-1, 1] -> logits (B,) float32 ((B, k) for k scales)."""

    def __init__(self, cfg: GANConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        n, d = cfg.n_up, cfg.ndf
        sn = nn.utils.parametrizations.spectral_norm if cfg.spectral_norm else (lambda m: m)
        # (C [+1 row position]) × H × W -> ndf × H/2 × W/2
        layers: list[nn.Module] = [sn(nn.Conv2d(cfg.channels + int(cfg.positional), d, 4, 2, 1,
                                                bias=cfg.spectral_norm)),
                                   nn.LeakyReLU(0.2, True)]
        for i in range(1, n):
            cin, cout = d * _mult(n - i, n), d * _mult(n - 1 - i, n)
            # (ndf*m) × s × s -> (ndf*2m) × s/2 × s/2
            layers.append(sn(nn.Conv2d(cin, cout, 4, 2, 1, bias=cfg.spectral_norm)))
            if not cfg.spectral_norm:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.LeakyReLU(0.2, True))
        bh, bw = cfg.base
        # (ndf*8 [+1 minibatch-std map]) × bh × bw -> 1 × 1 × 1
        layers.append(sn(nn.Conv2d(d * _mult(0, n) + (cfg.mbstd > 0), 1, (bh, bw), 1, 0, bias=False)))
        self.main = nn.Sequential(*layers)
        if cfg.n_classes:            # projection: <embed(y), sum of last features> joins the logit
            self.embed = sn(nn.Embedding(cfg.n_classes, d * _mult(0, n) + (cfg.mbstd > 0)))
        # one smaller discriminator per extra scale (absent, so old checkpoints load, at 1)
        if cfg.d_scales > 1:
            self.coarse = nn.ModuleList(
                Discriminator(dataclasses.replace(cfg, height=cfg.height >> s, width=cfg.width >> s,
                                                  d_scales=1))
                for s in range(1, cfg.d_scales))
        init_weights(self)

    def forward(self, x: torch.Tensor, parts: int = 1, y: Optional[torch.Tensor] = None,
                where: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Logits (B,) float32, or (B, d_scales) with the full-size scale first.

        ``parts``: the batch is that many equal, contiguous sets (e.g. real then fake) that the
        minibatch-std groups must not mix.  ``y`` (B,) int64: labels of a conditional D.
        ``where`` (B, h) float: a positional D's row positions (h divides the image height;
        each covers its share of pixel rows), appended to the image as one more channel.
        """
        if self.cfg.positional:
            if where is None:
                raise ValueError("a positional discriminator needs the rows' positions (where)")
            rows = where.to(x.device, x.dtype).repeat_interleave(x.shape[2] // where.shape[1], 1)
            x = torch.cat([x, rows[:, None, :, None].expand(-1, 1, -1, x.shape[3])], dim=1)
        out = self._logits(x, parts, y)
        if self.cfg.d_scales == 1:
            return out
        outs = [out] + [d._logits(nn.functional.avg_pool2d(x, 2 ** s), parts, y)
                        for s, d in enumerate(self.coarse, 1)]
        return torch.stack(outs, dim=1)

    def _logits(self, x: torch.Tensor, parts: int, y: Optional[torch.Tensor]) -> torch.Tensor:
        """This scale's logits (B,) for ``x`` (with a positional D's position channel)."""
        if self.cfg.mbstd > 0 or self.cfg.n_classes:
            h = self.main[:-1](x)
            if self.cfg.mbstd > 0:
                h = _minibatch_std(h, self.cfg.mbstd, parts)
            out = self.main[-1](h).reshape(x.shape[0]).float()
            if self.cfg.n_classes:
                if y is None:
                    raise ValueError("a conditional discriminator needs labels y")
                out = out + (self.embed(y.to(x.device)).float()
                             * h.float().sum(dim=(2, 3))).sum(dim=1)
        else:
            out = self.main(x).reshape(x.shape[0]).float()
        return out


def _minibatch_std(h: torch.Tensor, group: int, parts: int) -> torch.Tensor:
    """Append one map: the std of ``h`` over groups of images, averaged over features.

    Groups are contiguous runs of ``g`` images, ``g`` the largest size up to ``group`` that
    divides each of the ``parts`` equal sets, so no group mixes two sets.
    """
    b = h.shape[0]
    n = b // parts
    g = max(k for k in range(1, min(group, n) + 1) if n % k == 0)
    std = h.float().view(b // g, g, *h.shape[1:]).var(dim=1, unbiased=False).add(1e-8).sqrt()
    s = std.mean(dim=(1, 2, 3)).repeat_interleave(g).to(h.dtype)          # (B,)
    return torch.cat([h, s.view(b, 1, 1, 1).expand(b, 1, *h.shape[2:])], dim=1)


def init_weights(module: nn.Module) -> None:
    """DCGAN initialisation: conv weights N(0, 0.02), batch-norm scale N(1, 0.02), bias 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            w = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
            nn.init.normal_(w, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.BatchNorm2d) for m in module.modules())


def to_uint8(x: torch.Tensor) -> "Any":
    """Generator output (B, C, H, W) in [-1, 1] -> numpy uint8 (B, H, W, C)."""
    x = ((x.detach().float().clamp(-1, 1) + 1.0) * 127.5).round_()
    return x.to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()


def from_uint8(a: "Any", *, device: "torch.device | str" = "cpu") -> torch.Tensor:
    """numpy uint8 (B, H, W, C) -> float tensor (B, C, H, W) in [-1, 1]."""
    t = torch.from_numpy(a).to(device)
    return t.permute(0, 3, 1, 2).float().mul_(1.0 / 127.5).sub_(1.0)
