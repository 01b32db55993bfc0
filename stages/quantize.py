"""quantize: map images onto a retro palette (NES 2C02 by default), exactly and fast.

Inputs: a sample artifact (``sample_NNNN.png``) or any files / folders / globs; optionally
``reference``: real screens (crop's artifact, or image files / folders) whose colours the
images are drawn to before the palette mapping (``snap_delta_e``; see :mod:`palettes.snap`).
Outputs (in ``out_dir``):

* ``<stem>.png`` — indexed (mode "P") PNG per input.  Its palette is the *whole* palette
  (for NES palettes index = NES colour number, so ``$0F`` is stored as 15); transparent
  pixels use one extra index (named in ``quantize.json``).
* ``quantize.json`` — palette name and RGB list, usable indices, per-image statistics
  (colours per 16×16 tile and isolated-pixel rate before / after clean-up, mean ΔE76, the
  recognised palette, the share of pixels drawn to a reference colour), the reference colours,
  skipped inputs, and with ``nes`` the fitted backdrop + sub-palettes, error and legality.
* ``report/nes_error_map.png`` (only with ``nes``) — per-16×16-area mean ΔE of the NES fit,
  one row of maps per image (black = 0, white ≥ 30 ΔE).

An image whose colours already are an NES palette (an emulator's table, or a consistent
unknown one) is mapped colour for colour by NES number (``--no-recognise`` turns this off).
See docs/colour.md.
"""
# Shape: Params -> quantize_image (one RGBA array -> QuantizeResult, from the steps opaque_mask,
# recognised_index / snap_to_reference + nearest_index, clean_up, tile_stats) and fit_nes (one
# NES palette set across all images) -> run, which loads files (in worker processes for big
# batches) and the reference colours (load_reference), calls them and writes.  quantize_images
# is the same core for arrays in memory.
from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from stages._common import (InputError, ParamError, ProgressFn, Skipped, StageParams,
                            expand_inputs, iter_images, load_image, map_ordered, no_progress,
                            param, pool_workers, save_png, write_json)

NAME = "quantize"
INPUTS = {"images": "sample", "reference": "crop"}
OPTIONAL_INPUTS = ("reference",)
LIBS = ("numpy", "pillow")

log = logging.getLogger("tilegan.quantize")


class Metric(str, Enum):
    lab = "lab"
    rgb = "rgb"
    ciede2000 = "ciede2000"


class Dither(str, Enum):
    none = "none"
    bayer2 = "bayer2"
    bayer4 = "bayer4"
    bayer8 = "bayer8"
    floyd = "floyd"


@dataclass(frozen=True)
class Params(StageParams):
    STAGE = "quantize"

    palette: str = param("nes", help="palette: a built-in name (nes, nes-mesen, nes-ntsc, ..., "
                         "gameboy, pico8, c64; `pipeline palettes` lists them) or a "
                         ".pal/.gpl/.hex/.png file")
    metric: Metric = param(Metric.lab, help="colour distance: lab (ΔE76, exact), rgb, ciede2000")
    dither: Dither = param(Dither.none, help="dithering: none, bayer2, bayer4, bayer8, floyd")
    alpha_threshold: int = param(128, help="pixels with alpha below this become transparent (0..255)",
                                 min=0, max=255)
    drop_xd_column: bool = param(False, help="never produce the NES $xD column ($0D $1D $2D $3D)")
    cleanup: int = param(1, help="pixel-art clean-up strength: 0 off; n = colour limit per 16x16 "
                         "area plus n passes of isolated-pixel removal", min=0)
    max_colours: int = param(4, help="with cleanup: at most this many colours per 16x16 area "
                             "(0 = no limit)", min=0)
    nes: bool = param(False, help="make NES-legal backgrounds: backdrop + 4 sub-palettes of 3, "
                      "one per 16x16 area, fitted across all images")
    nes_merge_tiles: bool = param(True, help="with nes: when an image has more than 256 unique "
                                  "8x8 tiles, merge the most similar ones until 256 remain "
                                  "(the error bound is reported)")
    recognise: bool = param(True, help="with an NES palette: an image whose colours already are "
                            "an NES palette (a known emulator table, or a consistent unknown one) "
                            "is mapped colour for colour by NES number, so distinct colours stay "
                            "distinct; other images use nearest colour")
    snap_delta_e: float = param(20.0, help="with reference screens (crop's artifact in the "
                                "pipeline, or --reference): a pixel within this ΔE76 of a colour "
                                "they use takes that colour before the palette mapping, so "
                                "generated art keeps the real art's colours; 0 = off", min=0.0)

    def check(self) -> None:
        super().check()
        target_palette(self)


# --------------------------------------------------------------------------- palette
@dataclass(frozen=True)
class TargetPalette:
    """The palette images are mapped onto, with what every step needs from it.

    Attributes
    ----------
    palette : palettes.io.Palette
    usable : ndarray, shape (n,), int64 — indices the quantiser may produce
    lab : ndarray, shape (K, 3), float64 — CIELAB of every entry
    """
    palette: Any
    usable: np.ndarray
    lab: np.ndarray

    @property
    def is_nes(self) -> bool:
        return self.palette.kind == "nes" and len(self.palette) == 64


def target_palette(params: Params) -> TargetPalette:
    """Resolve ``params.palette``; :class:`ParamError` for an unknown palette or ``nes`` with a
    palette that is not a 64-colour NES one."""
    from palettes.colour import srgb_to_lab
    from palettes.io import PaletteError, get_palette

    try:
        pal = get_palette(params.palette)
    except PaletteError as e:
        raise ParamError(str(e), field="palette") from None
    if params.nes and pal.kind != "nes":
        raise ParamError(f"quantize: --nes needs a 64-colour NES palette, {pal.name} has "
                         f"{len(pal)} colours", field="nes")
    return TargetPalette(pal, pal.usable(drop_xd_column=params.drop_xd_column),
                         srgb_to_lab(pal.colours))


# --------------------------------------------------------------------------- one image
@dataclass(frozen=True)
class TileStats:
    """Colours per 16×16 tile and isolated-pixel rate of an index image (opaque pixels)."""
    colours_per_tile: float
    max_colours_per_tile: int
    isolated_rate: float

    def as_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class QuantizeResult:
    """One quantised image.

    Attributes
    ----------
    index : ndarray, shape (H, W), uint8 — palette indices (NES colour numbers for NES palettes)
    opaque : ndarray, shape (H, W), bool — pixels that count (alpha >= the threshold)
    rgb : ndarray, shape (H, W, 3), uint8 — the source colours
    before, after : TileStats — after mapping, after clean-up
    mean_delta_e : float — mean ΔE76 between source and output colours (opaque pixels)
    match : PaletteMatch or None — the recognised NES palette (see :mod:`palettes.recognition`)
    snapped : float — share of opaque pixels drawn to a reference colour first (0 without one)
    """
    index: np.ndarray
    opaque: np.ndarray
    rgb: np.ndarray
    before: TileStats
    after: TileStats
    mean_delta_e: float
    match: Optional[Any] = None
    snapped: float = 0.0

    @property
    def transparent_pixels(self) -> int:
        return int((~self.opaque).sum())


def opaque_mask(rgba: np.ndarray, alpha_threshold: int) -> np.ndarray:
    """(H, W) bool: pixels whose alpha is at least ``alpha_threshold``."""
    return rgba[..., 3] >= alpha_threshold


def nearest_index(rgb: np.ndarray, target: TargetPalette, params: Params) -> np.ndarray:
    """(H, W) uint8: exact nearest usable colour of every pixel, with ``params.dither``."""
    from palettes.dither import dither_map
    from palettes.nearest import get_mapper

    mapper = get_mapper(target.palette.colours, target.usable, metric=Metric(params.metric).value)
    return dither_map(rgb, mapper, Dither(params.dither).value)


def usable_numbers(numbers: np.ndarray, target: TargetPalette) -> np.ndarray:
    """Recognised NES numbers as numbers the target may produce: a usable number stays; one
    that is not (e.g. ``$20`` where ``$20 = $30``, or ``$2D`` with ``drop_xd_column``) takes the
    usable entry of the same colour, else the nearest usable one (ΔE76)."""
    from palettes.colour import delta_e76_sq

    out = np.asarray(numbers, np.int64).copy()
    usable = target.usable
    colours = target.palette.colours
    for i, n in enumerate(out):
        if n in usable:
            continue
        same = usable[(colours[usable] == colours[n]).all(axis=1)]
        out[i] = same[0] if len(same) else usable[np.argmin(delta_e76_sq(target.lab[usable],
                                                                           target.lab[n]))]
    return out


def recognised_index(rgb: np.ndarray, opaque: np.ndarray, target: TargetPalette
                     ) -> Optional[tuple[np.ndarray, Any]]:
    """Map an image that already is an NES palette by NES number.

    Returns
    -------
    (index (H, W) uint8, PaletteMatch), or None when the target is not an NES palette or the
    image is not recognised (see :func:`palettes.recognition.recognise`).  Transparent pixels
    get index 0 (they are not used).
    """
    from palettes.data import nes_table_names
    from palettes.recognition import image_colours, recognise

    if not target.is_nes:
        return None
    colours = image_colours(rgb, opaque)
    if colours is None or len(colours.colours) == 0:
        return None
    prefer = target.palette.name if target.palette.name in nes_table_names() else None
    match = recognise(colours.colours, colours.counts, prefer=prefer)
    if match is None:
        return None
    index = np.zeros(opaque.shape, np.uint8)
    index[opaque] = usable_numbers(match.numbers, target)[colours.inverse].astype(np.uint8)
    return index, match


def snap_to_reference(rgb: np.ndarray, opaque: np.ndarray, reference: Optional[np.ndarray],
                      params: Params) -> tuple[np.ndarray, float]:
    """``rgb`` with every pixel within ``params.snap_delta_e`` of a ``reference`` colour (K, 3)
    moved onto it (:func:`palettes.snap.snap_to_colours`), and the share of opaque pixels that
    moved; ``rgb`` itself and 0 without a reference or with ``snap_delta_e`` 0."""
    from palettes.snap import snap_to_colours

    if reference is None or not len(reference) or params.snap_delta_e <= 0:
        return rgb, 0.0
    snapped, moved = snap_to_colours(rgb, reference, max_delta_e=params.snap_delta_e)
    n = int(opaque.sum())
    return snapped, (float((moved & opaque).sum()) / n if n else 0.0)


def clean_up(index: np.ndarray, source_lab: np.ndarray, target: TargetPalette, params: Params,
             opaque: np.ndarray) -> np.ndarray:
    """Colour limit per 16×16 area, then isolated-pixel removal (``params.cleanup`` passes);
    see :mod:`palettes.cleanup`.  Returns ``index`` itself when clean-up is off."""
    from palettes.cleanup import limit_area_colours, remove_isolated

    if params.cleanup <= 0:
        return index
    if params.max_colours > 0:
        index = limit_area_colours(index, source_lab, target.lab, target.usable,
                                   max_colours=params.max_colours, mask=opaque)
    return remove_isolated(index, source_lab, target.lab, strength=params.cleanup, mask=opaque)


def tile_stats(index: np.ndarray, opaque: np.ndarray) -> TileStats:
    """Colours per 16×16 area (mean, max) and the share of isolated pixels, opaque pixels only."""
    from palettes.cleanup import area_colour_counts, isolated_mask

    counts = area_colour_counts(index, opaque)
    counts = counts[counts > 0]
    n = int(opaque.sum())
    iso = int(isolated_mask(index, opaque).sum())
    return TileStats(float(counts.mean()) if len(counts) else 0.0,
                     int(counts.max()) if len(counts) else 0, iso / n if n else 0.0)


def quantize_image(rgba: np.ndarray, target: TargetPalette, params: Params, *,
                   reference: Optional[np.ndarray] = None) -> QuantizeResult:
    """Map one image onto the target palette and clean it up.

    Parameters
    ----------
    rgba : ndarray, shape (H, W, 4), uint8
    target : TargetPalette — from :func:`target_palette`
    params : Params
    reference : ndarray, shape (K, 3), uint8, optional
        The real screens' colours (:func:`palettes.snap.reference_colours`): pixels within
        ``params.snap_delta_e`` of one take it before the mapping (:func:`snap_to_reference`).

    Returns
    -------
    QuantizeResult

    Raises
    ------
    InputError when every pixel is transparent.

    Notes
    -----
    A recognised NES screenshot (``params.recognise``, NES target) is mapped by NES number and
    clean-up sees it as exactly on the palette: areas within the colour limit and deliberate
    single pixels stay as they are.  Dithering and the reference snap do not apply to it.
    Clean-up judges the other images by their colours after the snap; ``mean_delta_e`` is
    against the colours as given.
    """
    from palettes.colour import srgb_to_lab

    opaque = opaque_mask(rgba, params.alpha_threshold)
    if not opaque.any():
        raise InputError(f"every pixel is transparent (alpha < {params.alpha_threshold}); "
                         "nothing to quantise")
    rgb = np.ascontiguousarray(rgba[..., :3])
    recognised = recognised_index(rgb, opaque, target) if params.recognise else None
    source_lab = srgb_to_lab(rgb)
    snapped = 0.0
    if recognised is not None:
        index, match = recognised
        cleanup_lab = target.lab[index]        # exactly on the palette: nothing looks like noise
    else:
        drawn, snapped = snap_to_reference(rgb, opaque, reference, params)
        index, match = nearest_index(drawn, target, params), None
        cleanup_lab = source_lab if drawn is rgb else srgb_to_lab(drawn)
    before = tile_stats(index, opaque)
    index = clean_up(index, cleanup_lab, target, params, opaque)
    delta_e = np.sqrt(((source_lab - target.lab[index]) ** 2).sum(-1))[opaque]
    return QuantizeResult(index, opaque, rgb, before, tile_stats(index, opaque),
                          float(delta_e.mean()), match, snapped)


# --------------------------------------------------------------------------- NES across images
@dataclass
class NesReport:
    """One NES palette set across all images (:func:`fit_nes`).

    Attributes
    ----------
    fit : palettes.nesfit.NesFit — backdrop and sub-palettes
    images : list of ndarray (H, W) uint8 — the NES-legal screens (no transparency)
    attributes : list of ndarray — sub-palette per 16×16 area, per image
    area_errors : list of ndarray — mean ΔE76 per area against the cleaned image
    delta_e : list of float — mean ΔE76 of each final screen against its source
    merges : list of dict — tile merges (:func:`palettes.nesfit.merge_patterns` info + image)
    validation : dict — :func:`palettes.nesfit.validate_nes` of the screens
    """
    fit: Any
    images: list
    attributes: list
    area_errors: list
    delta_e: list
    merges: list
    validation: dict

    def as_json(self, error_map: str) -> dict:
        v = self.validation
        return {**self.fit.as_json(),
                "mean_area_error": float(np.concatenate([e.ravel() for e in self.area_errors]).mean()),
                "legal": bool(v["legal"]), "problems": v["problems"],
                "tiles_per_image": v["tiles_per_image"], "tile_merges": self.merges,
                "error_map": error_map}


def merge_tiles(index: np.ndarray, attr: np.ndarray, fit: Any, name: str) -> tuple[np.ndarray, Optional[dict]]:
    """Merge near-identical 8×8 tiles of one NES screen when it has more than 256."""
    from palettes.nesfit import MAX_TILES, merge_patterns, pattern_tiles, patterns_to_image

    h, w = index.shape
    if h % 8 or w % 8:
        return index, None
    pats = pattern_tiles(index, attr, fit.backdrop, fit.subpalettes)
    if len(np.unique(pats.reshape(len(pats), -1), axis=0)) <= MAX_TILES:
        return index, None
    merged, info = merge_patterns(pats, MAX_TILES)
    info["image"] = name
    log.info("%s: merged %d near-identical 8x8 tiles (%d -> %d), at most %d of 64 pixels "
             "changed per tile", name, info["merges"], info["unique_before"], info["unique_after"],
             info["max_pixels_changed"])
    return patterns_to_image(merged, attr, fit.backdrop, fit.subpalettes, h, w), info


def fit_nes(results: Sequence[QuantizeResult], names: Sequence[str], target: TargetPalette,
            params: Params) -> NesReport:
    """Fit one backdrop + 4 sub-palettes across all cleaned images, remap each image onto it
    (transparent pixels become the backdrop), merge tiles where there are too many, validate."""
    from palettes.colour import srgb_to_lab
    from palettes.nesfit import apply_fit, area_histograms, fit_subpalettes, validate_nes

    hist = area_histograms([r.index for r in results], len(target.palette),
                           [r.opaque for r in results])
    fit = fit_subpalettes(hist, target.lab, target.usable)
    images, attrs, errors = [], [], []
    for r in results:
        # remap the cleaned colours (not the source): keeps what clean-up removed
        index, attr, err = apply_fit(target.lab[r.index], fit, target.lab, mask=r.opaque)
        images.append(index)
        attrs.append(attr)
        errors.append(err)
    merges = []
    for i, name in enumerate(names):
        if params.nes_merge_tiles:
            images[i], info = merge_tiles(images[i], attrs[i], fit, name)
            if info is not None:
                merges.append(info)
    delta_e = [float(np.sqrt(((srgb_to_lab(r.rgb) - target.lab[im]) ** 2).sum(-1))[r.opaque].mean())
               for r, im in zip(results, images)]
    v = validate_nes(images, backdrop=fit.backdrop, subpalettes=fit.subpalettes,
                     allowed=target.usable)
    if not v["legal"]:
        hint = "" if params.nes_merge_tiles else " (turn nes_merge_tiles on to merge near-identical tiles)"
        log.warning("NES legality: %s%s", "; ".join(v["problems"][:3]), hint)
    return NesReport(fit, images, attrs, errors, delta_e, merges, v)


@dataclass
class QuantizedBatch:
    """:func:`quantize_images`' result: one :class:`QuantizeResult` per image, and the NES
    report when ``params.nes`` (its ``images`` are then the final screens)."""
    results: list
    nes: Optional[NesReport] = None


def quantize_images(images: Sequence[np.ndarray], params: Params, *,
                    names: Optional[Sequence[str]] = None,
                    reference: Optional[np.ndarray] = None) -> QuantizedBatch:
    """The stage's core on arrays: :func:`quantize_image` on each (H, W, 4) uint8 RGBA image
    (drawn to the ``reference`` colours (K, 3) first, when given), then :func:`fit_nes` across
    them when ``params.nes``.  Raises :class:`InputError` for an image with no opaque pixel."""
    target = target_palette(params)
    results = [quantize_image(np.asarray(im, np.uint8), target, params, reference=reference)
               for im in images]
    names = list(names) if names is not None else [f"image_{i:04d}" for i in range(len(results))]
    nes = fit_nes(results, names, target, params) if params.nes else None
    return QuantizedBatch(results, nes)


# --------------------------------------------------------------------------- reference
#: at most this many of a crop artifact's patches (evenly spaced) are counted for the reference
#: colours, and at most this many image files: enough for every colour with a real share
REFERENCE_PATCHES = 8192
REFERENCE_FILES = 2000


def _evenly(n: int, k: int) -> np.ndarray:
    """At most ``k`` indices spread evenly over ``range(n)``."""
    return np.unique(np.linspace(0, n - 1, min(n, k)).round().astype(np.int64)) if n else \
        np.zeros(0, np.int64)


def _reference_images(items: Sequence[Any], skipped: Skipped):
    """Yield the reference images: a crop artifact's patches, else its ``screens/``, else the
    image files of ``items``; unreadable files go to ``skipped``."""
    from tilesets.artifacts import ArtifactError, Patches

    files: list[Path] = []
    for item in items:
        p = Path(item)
        if Patches.exists(p):
            try:
                patches = Patches.load(p, mmap=True).images
            except ArtifactError as e:
                raise InputError(f"quantize: reference {p}: {e}") from None
            pick = _evenly(len(patches), REFERENCE_PATCHES)
            for s in range(0, len(pick), 512):
                yield np.asarray(patches[pick[s:s + 512]])
        elif (p / "screens").is_dir():
            files += sorted((p / "screens").glob("*.png"))
        else:
            files += expand_inputs([p])
    files = [files[i] for i in _evenly(len(files), REFERENCE_FILES)]
    for _, rgba in iter_images(files, skipped, mode="RGBA"):
        yield rgba


def load_reference(items: Sequence[Any], params: Params) -> tuple[Any, Skipped]:
    """The reference screens' colours (:class:`palettes.snap.ReferenceColours`) and the
    reference files that could not be read.

    ``items``: crop's artifact (its training patches, up to ``REFERENCE_PATCHES`` evenly
    spaced) or image files / folders (up to ``REFERENCE_FILES``).  :class:`InputError` when
    they hold no opaque pixel.
    """
    from palettes.snap import reference_colours

    skipped = Skipped(logger=log)
    ref = reference_colours(_reference_images(items, skipped),
                            alpha_threshold=params.alpha_threshold)
    if not len(ref.colours):
        why = f" ({skipped.items[0]['reason']})" if skipped.items else ""
        raise InputError(f"quantize: the reference {', '.join(map(str, items))} has no opaque "
                         f"pixel to take colours from{why}")
    log.info("quantize: %d reference colours (of %d) cover %.1f%% of %d reference pixels",
             len(ref.colours), ref.total_colours, 100 * ref.covered, ref.pixels)
    return ref, skipped


# --------------------------------------------------------------------------- files
def input_files(inputs: dict[str, list[Path]]) -> list[Path]:
    """The image files to quantise, sorted; their stems must differ (outputs are named by stem)."""
    items = inputs.get("images") or []
    if not items:
        raise InputError("quantize: no input images given")
    files = [f for f in expand_inputs(items) if f.name != "manifest.json"]
    if not files:
        raise InputError(f"quantize: no image files found in {', '.join(map(str, items))}")
    stems: dict[str, Path] = {}
    for f in files:
        if f.stem in stems:
            raise InputError(f"quantize: two inputs share the name {f.stem!r} ({stems[f.stem]} and "
                             f"{f}); outputs are named after the input stem")
        stems[f.stem] = f
    return files


def write_indexed(out_dir: Path, src: Path, index: np.ndarray, opaque: np.ndarray,
                  target: TargetPalette) -> dict:
    """Write ``<stem>.png`` (mode "P", whole palette, an extra transparent index if needed);
    returns its ``quantize.json`` row (name, file, source, size, transparent index)."""
    pal = target.palette
    transp = None
    pal_rgb = pal.colours
    if not opaque.all():
        if len(pal) < 256:
            transp = len(pal)
            pal_rgb = np.concatenate([pal.colours, np.zeros((1, 3), np.uint8)])
        else:
            free = sorted(set(range(256)) - set(int(u) for u in target.usable))
            if not free:
                raise ParamError(f"{src}: has transparent pixels but the 256-colour palette "
                                 f"{pal.name} leaves no index free for transparency")
            transp = free[0]
        index = np.where(opaque, index, transp).astype(np.uint8)
    name = f"{src.stem}.png"
    save_png(out_dir / name, index, palette=pal_rgb, transparency=transp)
    return {"name": src.stem, "file": name, "source": str(src), "width": int(index.shape[1]),
            "height": int(index.shape[0]), "transparent_index": transp}


def result_row(file_row: dict, result: QuantizeResult) -> dict:
    """A ``quantize.json`` image row: the file fields plus the image's statistics."""
    return {**file_row, "transparent_pixels": result.transparent_pixels,
            "mean_delta_e": result.mean_delta_e, "before": result.before.as_json(),
            "after": result.after.as_json(), "snapped_share": result.snapped,
            "palette_match": result.match.as_json() if result.match is not None else None}


@dataclass
class FileOutcome:
    """What became of one input file: an error, or its result (kept for the NES fit) and/or
    its ``quantize.json`` row (when the PNG is already written)."""
    path: str
    error: Optional[str] = None
    result: Optional[QuantizeResult] = None
    row: Optional[dict] = None


def quantize_file(path: str, target: TargetPalette, params: Params,
                  out_dir: Optional[str] = None, reference: Optional[np.ndarray] = None
                  ) -> FileOutcome:
    """Load and quantise one file (drawn to the ``reference`` colours first, when given).  With
    ``out_dir`` the PNG is written here and only its row is kept (memory stays flat over
    thousands of files); without, the result is kept for the NES fit across all images.  A bad
    file is an outcome with an error naming it."""
    try:
        result = quantize_image(load_image(path, mode="RGBA"), target, params, reference=reference)
    except InputError as e:
        msg = str(e)
        return FileOutcome(path, error=msg if msg.startswith(str(path)) else f"{path}: {msg}")
    if out_dir is None:
        return FileOutcome(path, result=result)
    row = write_indexed(Path(out_dir), Path(path), result.index, result.opaque, target)
    return FileOutcome(path, row=result_row(row, result))


#: use worker processes when the inputs hold at least this many pixels in total (starting a
#: worker costs ~2-3 s of imports and JIT loading, a 64x64 image ~10-30 ms of work)
_POOL_MIN_PIXELS = 8_000_000


def _total_pixels(files: Sequence[Path]) -> int:
    from PIL import Image

    total = 0
    for f in files:
        try:
            with Image.open(f) as im:
                total += im.size[0] * im.size[1]
        except Exception:
            pass
    return total


def _worker_init() -> None:
    import palettes.nearest

    palettes.nearest.DEFAULT_THREADS = 1          # one process per core already
    try:
        import numba
        numba.set_num_threads(1)
    except Exception:
        pass


def quantize_files(files: Sequence[Path], target: TargetPalette, params: Params,
                   out_dir: Optional[Path], progress: ProgressFn = no_progress, *,
                   reference: Optional[np.ndarray] = None) -> list[FileOutcome]:
    """:func:`quantize_file` over ``files`` in order: in worker processes (spawned, one per core,
    at most 8) when there are several files holding >= ``_POOL_MIN_PIXELS`` pixels together."""
    import multiprocessing as mp

    if Metric(params.metric) != Metric.ciede2000:      # build (or load) the table once, first
        nearest_index(np.zeros((1, 1, 3), np.uint8), target, params)
    workers = pool_workers(len(files), min_items=2, cap=8) \
        if _total_pixels(files) >= _POOL_MIN_PIXELS else 1
    work = functools.partial(quantize_file, target=target, params=params,
                             out_dir=None if out_dir is None else str(out_dir), reference=reference)
    outcomes = []
    progress("quantize", 0, len(files))
    for outcome in map_ordered(work, [str(f) for f in files], workers=workers,
                               mp_context=mp.get_context("spawn"), initializer=_worker_init):
        outcomes.append(outcome)
        progress("quantize", len(outcomes), len(files))
    return outcomes


def _error_map_png(out_dir: Path, maps: list[np.ndarray]) -> Path:
    """Per-area mean ΔE maps, 8 px per area, 8 images per row: grey level = ΔE (white >= 30),
    images separated by blue lines."""
    scale = 8
    h = max(m.shape[0] for m in maps) * scale
    w = max(m.shape[1] for m in maps) * scale
    cols = min(8, len(maps))
    rows = (len(maps) + cols - 1) // cols
    img = np.empty((rows * (h + 2), cols * (w + 2), 3), np.uint8)
    img[:] = (40, 80, 200)
    for n, m in enumerate(maps):
        r, c = divmod(n, cols)
        v = np.clip(m / 30.0 * 255.0, 0, 255).astype(np.uint8)
        v = np.repeat(np.repeat(v, scale, 0), scale, 1)
        y0, x0 = r * (h + 2) + 1, c * (w + 2) + 1
        img[y0:y0 + v.shape[0], x0:x0 + v.shape[1]] = v[..., None]
    return save_png(out_dir / "report" / "nes_error_map.png", img)


def write_nes_outputs(good: list[FileOutcome], params: Params, target: TargetPalette,
                      out_dir: Path) -> tuple[list[dict], dict]:
    """Fit the NES palette set across the kept images, write their PNGs and the error map;
    returns the image rows and the ``nes`` block of ``quantize.json``."""
    results = [o.result for o in good]
    report = fit_nes(results, [Path(o.path).stem for o in good], target, params)
    emap = _error_map_png(out_dir, report.area_errors)
    rows = []
    for i, (o, r) in enumerate(zip(good, results)):
        file_row = write_indexed(out_dir, Path(o.path), report.images[i],
                                 np.ones_like(r.opaque), target)
        rows.append({**result_row(file_row, r), "nes_attributes": report.attributes[i].tolist(),
                     "nes_mean_area_error": float(report.area_errors[i].mean()),
                     "nes_mean_delta_e": report.delta_e[i]})
    return rows, report.as_json(str(emap.relative_to(out_dir)))


def summarise(rows: list[dict], skipped: Skipped, target: TargetPalette,
              nes: Optional[dict], reference: Optional[dict] = None) -> dict[str, Any]:
    """The stage summary: counts, palette, mean statistics, recognised palettes, NES figures."""
    def mean(key: str, sub: str) -> float:
        return float(np.mean([row[key][sub] for row in rows]))

    tables: dict[str, int] = {}
    for row in rows:
        if row["palette_match"] is not None:
            t = row["palette_match"]["table"]
            tables[t] = tables.get(t, 0) + 1
    summary: dict[str, Any] = {
        "images": len(rows), "skipped_count": len(skipped), "skipped": skipped.items,
        "palette": target.palette.name,
        "colours_per_tile_before": mean("before", "colours_per_tile"),
        "colours_per_tile_after": mean("after", "colours_per_tile"),
        "isolated_rate_before": mean("before", "isolated_rate"),
        "isolated_rate_after": mean("after", "isolated_rate"),
        "mean_delta_e": float(np.mean([row["mean_delta_e"] for row in rows])),
        "recognised_images": sum(tables.values()),
        "fitted_images": sum(1 for row in rows if row["palette_match"] is not None
                             and row["palette_match"]["kind"] == "fitted"),
        "recognised_tables": dict(sorted(tables.items())),
        "reference_colours": reference["colours"] if reference else 0,
        "snapped_share": float(np.mean([row["snapped_share"] for row in rows])),
    }
    if nes is not None:
        summary["nes_legal"] = nes["legal"]
        summary["nes_mean_area_error"] = nes["mean_area_error"]
        summary["nes_mean_delta_e"] = float(np.mean([row["nes_mean_delta_e"] for row in rows]))
    return summary


# --------------------------------------------------------------------------- run
def run(inputs: dict[str, list[Path]], params: Params, out_dir: Path,
        progress: ProgressFn = no_progress) -> dict:
    """Quantise every input image; see the module docstring for the artifacts."""
    target = target_palette(params)
    out_dir = Path(out_dir)
    files = input_files(inputs)
    ref = ref_json = None
    if inputs.get("reference") and params.snap_delta_e > 0:
        ref, ref_skipped = load_reference(inputs["reference"], params)
        ref_json = {**ref.as_json(), "sources": [str(p) for p in inputs["reference"]],
                    "snap_delta_e": params.snap_delta_e, "skipped": ref_skipped.items}
    outcomes = quantize_files(files, target, params, None if params.nes else out_dir, progress,
                              reference=None if ref is None else ref.colours)
    skipped = Skipped(logger=log)
    for o in outcomes:
        if o.error is not None:
            skipped.add(o.path, o.error)
    good = [o for o in outcomes if o.error is None]
    if not good:
        reasons = "; ".join(s["reason"] for s in skipped.items[:3])
        raise InputError(f"quantize: no usable image among {len(files)} input(s): {reasons}")
    if params.nes:
        rows, nes = write_nes_outputs(good, params, target, out_dir)
    else:
        rows, nes = [o.row for o in good], None
    summary = summarise(rows, skipped, target, nes, ref_json)
    write_json(out_dir / "quantize.json", {
        "palette": target.palette.name, "palette_rgb": target.palette.colours.tolist(),
        "palette_kind": target.palette.kind, "usable_indices": [int(u) for u in target.usable],
        "metric": Metric(params.metric).value, "dither": Dither(params.dither).value,
        "cleanup": params.cleanup, "max_colours": params.max_colours,
        "recognise": params.recognise, "reference": ref_json, "images": rows,
        "skipped": skipped.items, "nes": nes,
        "summary": summary})
    return summary
