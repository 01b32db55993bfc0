"""The GAN's architecture as data: :class:`GANConfig` and the rules it must satisfy.

Torch-free, so that stage parameters can be checked (and the CLI can start) without importing
torch; the networks these configurations build live in :mod:`stages._gan`.
"""
from __future__ import annotations

import bisect
import dataclasses
import itertools
from dataclasses import dataclass
from typing import Any, Optional

#: How the generator may double its maps (see GANConfig.upsample).
UPSAMPLE = ("deconv", "nearest")

#: Generator layouts (see GANConfig.g_arch).
G_ARCH = ("dcgan", "fcn")

#: How a conditional generator takes its label (see GANConfig.g_cond).
G_COND = ("cbn", "concat")

#: What the generator's last layer emits (see GANConfig.output).
OUTPUT = ("rgb", "palette")


@dataclass(frozen=True)
class GANConfig:
    """Architecture of a generator/discriminator pair.

    Attributes
    ----------
    height, width : int
        Output image size in pixels; both multiples of 2**n_up where n_up is chosen so the
        smaller side starts at 4 (32 -> 3 doublings, 64 -> 4, 128 -> 5).
    channels : int
        3 for RGB, 4 for RGBA.
    nz : int
        Length of the noise vector.
    ngf, ndf : int
        Base widths of the generator and discriminator (the widest layer is 8× this).
    spectral_norm : bool
        Spectral normalisation on every discriminator conv (and no batch norm in D).
    upsample : str
        How the generator doubles its maps: ``deconv`` (DCGAN's 4×4 stride-2 transposed
        convolution) or ``nearest`` (nearest-neighbour ×2 then a 3×3 convolution, which cannot
        produce the checkerboard pattern of uneven transposed-conv overlap).
    d_scales : int
        Number of image scales the discriminator judges: 1 = the image only (DCGAN); k > 1
        adds k - 1 smaller discriminators of the same design that see the image average-pooled
        by 2, 4, … (each scale's smaller side stays at least 16), which judge layout and colour
        at a coarse scale.  Their logits come out side by side, shape (B, k).
    mbstd : int
        Minibatch standard deviation (ProGAN): before its last layer D appends one feature map
        holding the mean standard deviation of its features over groups of this many images,
        so a generator that makes too-similar images is caught; 0 = off.
    g_arch : str
        ``dcgan``: a noise vector (nz,) grown from one 1×1 cell (the image size is fixed);
        ``fcn``: fully convolutional on a noise *map* (nz, h/stride, w/stride), ``stride`` =
        2**n_up, so the same weights draw any size that is a multiple of the stride (spatial
        GAN): a generator trained on 64×64 patches samples 256×240 screens.
    output : str
        ``rgb``: ``channels`` values through tanh; ``palette``: per-pixel logits over
        ``palette``'s colours, decoded to RGB by a straight-through Gumbel-softmax in training
        (temperature ``gumbel_tau``) and by argmax in eval mode, so samples are exact palette
        colours.
    palette : tuple of (r, g, b)
        The colours of ``output = "palette"`` (uint8 triples, stored with the checkpoint).
    gumbel_tau : float
        Gumbel-softmax temperature of ``output = "palette"`` in training.
    classes : tuple of str
        Class-conditional networks (empty = unconditional): the style names (source games),
        label ``i`` is ``classes[i]``.  G concatenates a learned embedding of the label to its
        noise; D adds a projection term (Miyato & Koyama's projection discriminator).
    g_cond : str
        How a conditional generator takes its label: ``cbn`` (conditional batch norm: every
        batch norm normalises without its own scale and shift, and the label's learned gain
        and bias take their place, as in the projection-discriminator paper's generator) or
        ``concat`` (a learned embedding of the label concatenated to every noise cell; the
        layout of conditional checkpoints written before ``g_cond`` existed).  With
        ``concat``, batch norm divides by a batch spread that the *styles'* differences
        dominate, so the noise's share shrinks as training separates the styles: measured on
        the example corpus, each style collapsed to one image (within-style spread 2-3 grey
        levels against 54 for an unconditional model).
    class_share : tuple of float
        Each class's share of the training patches (same order as ``classes``; empty =
        equal shares, as in checkpoints written before it was recorded).  Sampling without a
        style asked for draws the styles in these proportions (:meth:`style_prior`), so the
        mixture matches the corpus: a one-screen style is not a quarter of the samples.
    screen_height : int
        0: the networks do not know where in a screen a patch lies.  > 0 (``g_arch = "fcn"``
        only): a *positional* model.  G takes one more noise channel, each noise cell's
        vertical position in its screen (:func:`where_rows`: -1 top, +1 bottom), and D one more
        image channel, the same position per pixel row; real patches come with theirs (crop's
        ``patch_rows.npy``) and fakes are drawn at the same positions, so G learns what belongs
        at each height of a screen.  A sample taller than the patches is a whole screen, top
        to bottom; one of the patches' height is a window of ``height / screen_height`` (the
        training screens' median height) at a height its noise picks
        (``Generator.default_where``).
    class_height : tuple of int
        A positional conditional model's median training-screen height per class, in pixels
        (same order as ``classes``; empty = not recorded, as in checkpoints written before it
        was): ``sample --style-height`` draws each style's whole screens at its own height
        (:func:`style_screen_height`), so a game of 256×128 screens is not stretched to 240.
    """

    height: int = 64
    width: int = 64
    channels: int = 3
    nz: int = 100
    ngf: int = 32
    ndf: int = 32
    spectral_norm: bool = True
    upsample: str = "deconv"
    d_scales: int = 1
    mbstd: int = 0
    g_arch: str = "dcgan"
    output: str = "rgb"
    palette: tuple = ()
    gumbel_tau: float = 1.0
    classes: tuple = ()
    class_share: tuple = ()
    g_cond: str = "concat"
    screen_height: int = 0
    class_height: tuple = ()

    @property
    def n_classes(self) -> int:
        """Number of styles of a conditional model (0 = unconditional)."""
        return len(self.classes)

    def style_prior(self) -> tuple:
        """Each class's sampling probability: ``class_share`` normalised, else equal shares
        (empty for an unconditional model)."""
        if not self.classes:
            return ()
        if not self.class_share:
            return tuple(1.0 / len(self.classes) for _ in self.classes)
        total = float(sum(self.class_share))
        return tuple(float(s) / total for s in self.class_share)

    @property
    def positional(self) -> bool:
        """Whether G and D take each row's position in its screen (``screen_height`` > 0)."""
        return self.screen_height > 0

    @property
    def embed_dim(self) -> int:
        """Length of the label embedding the generator concatenates to each noise cell."""
        return min(32, self.nz) if self.classes and self.g_cond == "concat" else 0

    @property
    def stride(self) -> int:
        """Pixels per generator noise cell along each side (fcn: sizes must be multiples)."""
        return 2 ** self.n_up

    def noise_shape(self, height: int = 0, width: int = 0) -> tuple[int, int, int]:
        """Shape of one noise sample: (nz, 1, 1) for dcgan; (nz, h/stride, w/stride) for fcn
        at ``height`` × ``width`` (0 = the training size)."""
        if self.g_arch != "fcn":
            return self.nz, 1, 1
        h, w = height or self.height, width or self.width
        return self.nz, h // self.stride, w // self.stride

    @property
    def n_up(self) -> int:
        """Number of doubling stages between the first feature map and the image."""
        k = 0
        while (self.height % 2 ** (k + 1) == 0 and self.width % 2 ** (k + 1) == 0
               and min(self.height, self.width) // 2 ** (k + 1) >= 4):
            k += 1
        return k

    @property
    def base(self) -> tuple[int, int]:
        """Spatial size (h, w) of the first generator feature map / last D feature map."""
        f = 2 ** self.n_up
        return self.height // f, self.width // f

    def validate(self) -> None:
        """Raise ValueError naming the field when the configuration cannot build."""
        for name in ("height", "width", "nz", "ngf", "ndf"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.upsample not in UPSAMPLE:
            raise ValueError(f"upsample must be one of {', '.join(UPSAMPLE)}, got {self.upsample!r}")
        if self.channels not in (3, 4):
            raise ValueError(f"channels must be 3 (RGB) or 4 (RGBA), got {self.channels}")
        if not 1 <= self.d_scales <= max_d_scales(min(self.height, self.width)):
            raise ValueError(f"d_scales must be at least 1 and keep every scale at least 16 "
                             f"pixels: {self.height}x{self.width} allows at most "
                             f"{max_d_scales(min(self.height, self.width))}, got {self.d_scales}")
        if self.g_arch not in G_ARCH:
            raise ValueError(f"g_arch must be one of {', '.join(G_ARCH)}, got {self.g_arch!r}")
        if self.output not in OUTPUT:
            raise ValueError(f"output must be one of {', '.join(OUTPUT)}, got {self.output!r}")
        if self.output == "palette":
            if self.channels != 3:
                raise ValueError("output 'palette' needs RGB (channels 3)")
            if len(self.palette) < 2 or any(len(c) != 3 for c in self.palette):
                raise ValueError(f"output 'palette' needs at least 2 (r, g, b) colours, "
                                 f"got {len(self.palette)}")
            if not self.gumbel_tau > 0:
                raise ValueError(f"gumbel_tau must be positive, got {self.gumbel_tau}")
        if self.g_cond not in G_COND:
            raise ValueError(f"g_cond must be one of {', '.join(G_COND)}, got {self.g_cond!r}")
        if len(self.classes) == 1:
            raise ValueError("a conditional model needs at least 2 classes")
        if self.class_share and (len(self.class_share) != len(self.classes)
                                 or not all(float(s) >= 0 for s in self.class_share)
                                 or not sum(self.class_share) > 0):
            raise ValueError(f"class_share must hold one non-negative share per class "
                             f"({len(self.classes)}) with a positive sum, got {self.class_share}")
        if self.screen_height < 0 or (self.screen_height and self.screen_height < self.height):
            raise ValueError(f"screen_height must be 0 or at least the patch height "
                             f"{self.height}, got {self.screen_height}")
        if self.class_height and (len(self.class_height) != len(self.classes)
                                  or not self.screen_height
                                  or not all(int(h) >= self.height for h in self.class_height)):
            raise ValueError(f"class_height must hold one screen height (at least the patch "
                             f"height {self.height}) per class ({len(self.classes)}) of a "
                             f"positional model, got {self.class_height}")
        if self.screen_height and self.g_arch != "fcn":
            raise ValueError("a positional model (screen_height > 0) needs g_arch 'fcn' "
                             "(train with --spatial-noise)")
        if self.n_up < 2 or max(self.base) > 4 * min(self.base):
            raise ValueError(f"image size {self.height}x{self.width} cannot be built by doubling: "
                             "use sides such as 32, 64, 128 or 256x224")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GANConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        if "palette" in kw:       # JSON / older pickles give lists
            kw["palette"] = tuple(tuple(int(x) for x in c) for c in kw["palette"])
        if "classes" in kw:
            kw["classes"] = tuple(str(c) for c in kw["classes"])
        if "class_share" in kw:
            kw["class_share"] = tuple(float(x) for x in kw["class_share"])
        if "class_height" in kw:
            kw["class_height"] = tuple(int(x) for x in kw["class_height"])
        return cls(**kw)


#: Fractional part of the golden ratio: (i + 0.5) times it, modulo 1, spreads any run of
#: consecutive indices evenly over [0, 1) (a low-discrepancy sequence).
_GOLDEN = 0.6180339887498949


def prior_labels(prior: "tuple | list", n: int, *, start: int = 0) -> list:
    """Labels ``start .. start + n - 1`` of a deterministic sequence whose label frequencies
    follow ``prior`` (probabilities, one per class) on every run of consecutive indices, each
    class within a label or two of its expected count, the classes interleaved.

    It gives SWD samples, grids and batch-norm calibration the corpus's mixture of styles
    without drawing random numbers (so their noise stays fixed).
    """
    cum = list(itertools.accumulate(float(p) for p in prior))
    if not cum:
        return []
    last = len(cum) - 1
    return [min(last, bisect.bisect_right(cum, ((i + 0.5) * _GOLDEN) % 1.0 * cum[-1]))
            for i in range(start, start + n)]


def max_d_scales(side: int) -> int:
    """Most discriminator scales an image whose smaller side is ``side`` allows (each scale
    halves it; all but the first must keep at least 16 pixels)."""
    return max(1, (side // 16).bit_length())


def where_rows(tops: Any, spans: Any, cells: int) -> Any:
    """Vertical positions of ``cells`` noise rows: (B, cells) float32 in [-1, 1].

    ``tops`` and ``spans`` (B,) are fractions of the screen's height: where the image's top
    row lies and how much of the screen it covers.  Row r's value is its centre,
    ``2 * (top + (r + 0.5) / cells * span) - 1`` (-1 = the screen's top edge, +1 its bottom).
    """
    import numpy as np

    t = np.asarray(tops, np.float64).reshape(-1, 1)
    s = np.asarray(spans, np.float64).reshape(-1, 1)
    r = (np.arange(cells, dtype=np.float64) + 0.5) / cells
    return (2.0 * (t + r[None] * s) - 1.0).astype(np.float32)


def patch_where(rows: Any, size: int, cells: int) -> Any:
    """:func:`where_rows` of patches ``size`` pixels tall cut at ``rows`` (B, 2) int = (top
    row, screen height) in pixels, as crop records them."""
    import numpy as np

    r = np.asarray(rows, np.float64).reshape(-1, 2)
    h = np.maximum(r[:, 1], size)
    return where_rows(r[:, 0] / h, size / h, cells)


def style_screen_height(cfg: GANConfig, height: int, label: Optional[int] = None) -> int:
    """The height in pixels to draw a whole screen of style ``label`` at (None: any style):
    that style's median training-screen height (``cfg.class_height``), else the median of all
    training screens (``cfg.screen_height``), rounded to the nearest multiple of the stride.
    ``height`` itself when it is not a whole screen (not taller than the patches), the model
    is not positional, or the rounded height would not be taller than the patches."""
    if not cfg.positional or height <= cfg.height:
        return height
    h = cfg.class_height[label] if (label is not None and cfg.class_height) else cfg.screen_height
    h = int(round(h / cfg.stride)) * cfg.stride
    return h if h > cfg.height else height


def screen_span(cfg: GANConfig, height: int) -> float:
    """The share of a screen that an image ``height`` pixels tall covers under ``cfg``: an
    image taller than the training patches is a whole screen (1: ``sample --height 240``
    draws screens 240 tall, top to bottom); one the patches' height is a window of
    ``height / screen_height`` (the training screens' median height)."""
    if not cfg.screen_height or height > cfg.height:
        return 1.0
    return min(1.0, height / cfg.screen_height)
