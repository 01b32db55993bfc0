"""quantize: map images onto a retro palette (NES 2C02 by default), exactly and fast.

Inputs: a sample artifact (``sample_NNNN.png``) or any files / folders / globs.
Outputs (in ``out_dir``):

* ``<stem>.png`` — indexed (mode "P") PNG per input.  Its palette is the *whole* palette
  (for NES palettes index = NES colour number, so ``$0F`` is stored as 15); transparent
  pixels use one extra index (named in ``quantize.json``).
* ``quantize.json`` — palette name and RGB list, usable indices, per-image statistics
  (colours per 16×16 tile and isolated-pixel rate before / after clean-up, mean ΔE76),
  skipped inputs, and with ``nes`` the fitted backdrop + sub-palettes, error and legality.
* ``report/nes_error_map.png`` (only with ``nes``) — per-16×16-area mean ΔE of the NES fit,
  one row of maps per image (black = 0, white ≥ 30 ΔE).

See docs/colour.md.
"""
from __future__ import annotations

import concurrent.futures as cf
import logging
import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Optional

import numpy as np

from stages._common import (InputError, ParamError, ProgressFn, Skipped, expand_inputs,
                            load_image, no_progress, param, save_png, write_json)

NAME = "quantize"
INPUTS = {"images": "sample"}
OPTIONAL_INPUTS = ()
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
class Params:
    palette: str = param("nes", help="palette: a built-in name (nes, nes-ntsc, nes-ntsc-vivid, "
                         "gameboy, pico8, c64) or a .pal/.gpl/.hex/.png file")
    metric: Metric = param(Metric.lab, help="colour distance: lab (ΔE76, exact), rgb, ciede2000")
    dither: Dither = param(Dither.none, help="dithering: none, bayer2, bayer4, bayer8, floyd")
    alpha_threshold: int = param(128, help="pixels with alpha below this become transparent (0..255)")
    drop_xd_column: bool = param(False, help="never produce the NES $xD column ($0D $1D $2D $3D)")
    cleanup: int = param(1, help="pixel-art clean-up strength: 0 off; n = colour limit per 16x16 "
                         "area plus n passes of isolated-pixel removal")
    max_colours: int = param(4, help="with cleanup: at most this many colours per 16x16 area "
                             "(0 = no limit)")
    nes: bool = param(False, help="make NES-legal backgrounds: backdrop + 4 sub-palettes of 3, "
                      "one per 16x16 area, fitted across all images")
    nes_merge_tiles: bool = param(True, help="with nes: when an image has more than 256 unique "
                                  "8x8 tiles, merge the most similar ones until 256 remain "
                                  "(the error bound is reported)")


# --------------------------------------------------------------------------- helpers
def _stats(idx: np.ndarray, mask: np.ndarray) -> dict:
    from palettes.cleanup import area_colour_counts, isolated_mask

    counts = area_colour_counts(idx, mask)
    counts = counts[counts > 0]
    n = int(mask.sum())
    iso = int(isolated_mask(idx, mask).sum())
    return {"colours_per_tile": float(counts.mean()) if len(counts) else 0.0,
            "max_colours_per_tile": int(counts.max()) if len(counts) else 0,
            "isolated_rate": iso / n if n else 0.0}


def _check_params(p: Params) -> None:
    try:
        Metric(p.metric)
    except ValueError:
        raise ParamError(f"quantize: metric must be one of lab, rgb, ciede2000, got {p.metric!r}") from None
    try:
        Dither(p.dither)
    except ValueError:
        raise ParamError("quantize: dither must be one of none, bayer2, bayer4, bayer8, floyd, "
                         f"got {p.dither!r}") from None
    if not 0 <= p.alpha_threshold <= 255:
        raise ParamError(f"quantize: alpha_threshold must be 0..255, got {p.alpha_threshold}")
    if p.cleanup < 0:
        raise ParamError(f"quantize: cleanup strength must be >= 0, got {p.cleanup}")
    if p.max_colours < 0:
        raise ParamError(f"quantize: max_colours must be >= 0, got {p.max_colours}")


def _palette(p: Params):
    from palettes.io import PaletteError, get_palette

    try:
        pal = get_palette(p.palette)
    except PaletteError as e:
        raise ParamError(str(e)) from None
    usable = pal.usable(drop_xd_column=p.drop_xd_column)
    if p.nes and pal.kind != "nes":
        raise ParamError(f"quantize: --nes needs a 64-colour NES palette, {pal.name} has "
                         f"{len(pal)} colours")
    return pal, usable


def _write_indexed(out_dir: Path, src: Path, idx: np.ndarray, mask: np.ndarray, pal,
                   usable: np.ndarray) -> dict:
    """Write ``<stem>.png`` (mode "P", whole palette, extra transparent index if needed)."""
    transp = None
    pal_rgb = pal.colours
    if not mask.all():
        if len(pal) < 256:
            transp = len(pal)
            pal_rgb = np.concatenate([pal.colours, np.zeros((1, 3), np.uint8)])
        else:
            free = sorted(set(range(256)) - set(int(u) for u in usable))
            if not free:
                raise ParamError(f"{src}: has transparent pixels but the 256-colour palette "
                                 f"{pal.name} leaves no index free for transparency")
            transp = free[0]
        idx = np.where(mask, idx, transp).astype(np.uint8)
    name = f"{src.stem}.png"
    save_png(out_dir / name, idx, palette=pal_rgb, transparency=transp)
    return {"name": src.stem, "file": name, "source": str(src), "width": int(idx.shape[1]),
            "height": int(idx.shape[0]), "transparent_index": transp}


def _quantize_one(path: str, p: Params, out_dir: Optional[str] = None) -> dict:
    """Worker: load, map and clean one image.

    With ``out_dir`` (non-NES runs) the indexed PNG is written here and only statistics are
    returned, so memory stays flat over thousands of files; otherwise the arrays are
    returned for the NES fit across all images."""
    from palettes.cleanup import limit_area_colours, remove_isolated
    from palettes.colour import srgb_to_lab
    from palettes.dither import dither_map
    from palettes.nearest import get_mapper

    pal, usable = _palette(p)
    try:
        rgba = load_image(path, mode="RGBA")
    except InputError as e:
        return {"path": path, "error": str(e)}
    mask = rgba[..., 3] >= p.alpha_threshold
    if not mask.any():
        return {"path": path, "error": f"{path}: every pixel is transparent (alpha < "
                                       f"{p.alpha_threshold}); nothing to quantise"}
    rgb = np.ascontiguousarray(rgba[..., :3])
    mapper = get_mapper(pal.colours, usable, metric=Metric(p.metric).value)
    idx = dither_map(rgb, mapper, Dither(p.dither).value)
    before = _stats(idx, mask)
    pal_lab = srgb_to_lab(pal.colours)
    src_lab = srgb_to_lab(rgb)
    if p.cleanup > 0:
        if p.max_colours > 0:
            idx = limit_area_colours(idx, src_lab, pal_lab, usable, max_colours=p.max_colours,
                                     mask=mask)
        idx = remove_isolated(idx, src_lab, pal_lab, strength=p.cleanup, mask=mask)
    after = _stats(idx, mask)
    de = np.sqrt(((src_lab - pal_lab[idx]) ** 2).sum(-1))[mask]
    res = {"path": path, "before": before, "after": after, "mean_delta_e": float(de.mean()),
           "transparent_pixels": int((~mask).sum())}
    if out_dir is not None:
        res["row"] = _write_indexed(Path(out_dir), Path(path), idx, mask, pal, usable)
    else:
        res.update(idx=idx, mask=mask, rgb=rgb)
    return res


#: use worker processes when the inputs hold at least this many pixels in total (starting a
#: worker costs ~2-3 s of imports and JIT loading, a 64x64 image ~10-30 ms of work)
_POOL_MIN_PIXELS = 8_000_000


def _total_pixels(files: list[Path]) -> int:
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


# --------------------------------------------------------------------------- run
def run(inputs: dict[str, list[Path]], params: Params, out_dir: Path,
        progress: ProgressFn = no_progress) -> dict:
    """Quantise every input image; see the module docstring for the artifacts."""
    from palettes.colour import srgb_to_lab
    from palettes.nearest import get_mapper

    _check_params(params)
    pal, usable = _palette(params)
    out_dir = Path(out_dir)
    items = inputs.get("images") or []
    if not items:
        raise InputError("quantize: no input images given")
    files = expand_inputs(items)
    files = [f for f in files if f.name != "manifest.json"]
    if not files:
        raise InputError(f"quantize: no image files found in {', '.join(map(str, items))}")
    stems: dict[str, Path] = {}
    for f in files:
        if f.stem in stems:
            raise InputError(f"quantize: two inputs share the name {f.stem!r} ({stems[f.stem]} and "
                             f"{f}); outputs are named after the input stem")
        stems[f.stem] = f
    # build (or load) the lookup table once, before any worker needs it
    if Metric(params.metric) != Metric.ciede2000:
        get_mapper(pal.colours, usable, metric=Metric(params.metric).value)

    n = len(files)
    direct = None if params.nes else str(out_dir)     # non-NES: workers write their PNG
    progress("quantize", 0, n)
    results: list[Optional[dict]] = [None] * n
    ncpu = os.cpu_count() or 1
    if ncpu > 1 and n > 1 and _total_pixels(files) >= _POOL_MIN_PIXELS:
        import multiprocessing as mp

        with cf.ProcessPoolExecutor(max_workers=min(ncpu, 8), mp_context=mp.get_context("spawn"),
                                    initializer=_worker_init) as ex:
            futs = {ex.submit(_quantize_one, str(f), params, direct): i for i, f in enumerate(files)}
            done = 0
            for fut in cf.as_completed(futs):
                results[futs[fut]] = fut.result()
                done += 1
                progress("quantize", done, n)
    else:
        for i, f in enumerate(files):
            results[i] = _quantize_one(str(f), params, direct)
            progress("quantize", i + 1, n)

    skipped = Skipped(logger=log)
    for r in results:
        if r and "error" in r:
            skipped.add(r["path"], r["error"])
    good = [r for r in results if r and "error" not in r]
    if not good:
        reasons = "; ".join(s["reason"] for s in skipped.items[:3])
        raise InputError(f"quantize: no usable image among {n} input(s): {reasons}")

    pal_lab = srgb_to_lab(pal.colours)
    nes_info: Optional[dict] = None
    if params.nes:
        from palettes.nesfit import (MAX_TILES, apply_fit, area_histograms, fit_subpalettes,
                                     merge_patterns, pattern_tiles, patterns_to_image, validate_nes)

        H = area_histograms([r["idx"] for r in good], len(pal), [r["mask"] for r in good])
        fit = fit_subpalettes(H, pal_lab, usable)
        maps = []
        total_err = []
        for r in good:
            # remap the cleaned colours (not the source): keeps what clean-up removed
            idx, attr, err = apply_fit(pal_lab[r["idx"]], fit, pal_lab, mask=r["mask"])
            r["idx"] = idx
            r["opaque"] = r["mask"]
            r["mask"] = np.ones_like(r["mask"])          # NES backgrounds have no transparency
            r["nes_attr"] = attr
            r["nes_error"] = float(err.mean())
            maps.append(err)
            total_err.append(err.ravel())
        merges = []
        for r in good:
            h, w = r["idx"].shape
            if h % 8 or w % 8:
                continue
            pats = pattern_tiles(r["idx"], r["nes_attr"], fit.backdrop, fit.subpalettes)
            if len(np.unique(pats.reshape(len(pats), -1), axis=0)) <= MAX_TILES:
                continue
            if not params.nes_merge_tiles:
                continue
            merged, minfo = merge_patterns(pats, MAX_TILES)
            r["idx"] = patterns_to_image(merged, r["nes_attr"], fit.backdrop, fit.subpalettes, h, w)
            minfo["image"] = Path(r["path"]).stem
            merges.append(minfo)
            log.info("%s: merged %d near-identical 8x8 tiles (%d -> %d), at most %d of 64 pixels "
                     "changed per tile", minfo["image"], minfo["merges"], minfo["unique_before"],
                     minfo["unique_after"], minfo["max_pixels_changed"])
        for r in good:
            final_de = np.sqrt(((srgb_to_lab(r["rgb"]) - pal_lab[r["idx"]]) ** 2).sum(-1))
            r["nes_delta_e"] = float(final_de[r["opaque"]].mean())
        v = validate_nes([r["idx"] for r in good], backdrop=fit.backdrop,
                         subpalettes=fit.subpalettes, allowed=usable)
        emap = _error_map_png(out_dir, maps)
        nes_info = {**fit.as_json(), "mean_area_error": float(np.concatenate(total_err).mean()),
                    "legal": bool(v["legal"]), "problems": v["problems"],
                    "tiles_per_image": v["tiles_per_image"], "tile_merges": merges,
                    "error_map": str(emap.relative_to(out_dir))}
        if not v["legal"]:
            hint = ("" if params.nes_merge_tiles else
                    " (turn nes_merge_tiles on to merge near-identical tiles)")
            log.warning("NES legality: %s%s", "; ".join(v["problems"][:3]), hint)

    rows = []
    for r in good:
        row = r["row"] if "row" in r else _write_indexed(out_dir, Path(r["path"]), r["idx"],
                                                          r["mask"], pal, usable)
        row.update(transparent_pixels=r["transparent_pixels"], mean_delta_e=r["mean_delta_e"],
                   before=r["before"], after=r["after"])
        if params.nes:
            row["nes_attributes"] = r["nes_attr"].tolist()
            row["nes_mean_area_error"] = r["nes_error"]
            row["nes_mean_delta_e"] = r["nes_delta_e"]
        rows.append(row)

    def mean(key: str, sub: str) -> float:
        return float(np.mean([row[key][sub] for row in rows]))

    summary: dict[str, Any] = {
        "images": len(rows), "skipped_count": len(skipped), "skipped": skipped.items,
        "palette": pal.name,
        "colours_per_tile_before": mean("before", "colours_per_tile"),
        "colours_per_tile_after": mean("after", "colours_per_tile"),
        "isolated_rate_before": mean("before", "isolated_rate"),
        "isolated_rate_after": mean("after", "isolated_rate"),
        "mean_delta_e": float(np.mean([row["mean_delta_e"] for row in rows])),
    }
    if nes_info is not None:
        summary["nes_legal"] = nes_info["legal"]
        summary["nes_mean_area_error"] = nes_info["mean_area_error"]
        summary["nes_mean_delta_e"] = float(np.mean([row["nes_mean_delta_e"] for row in rows]))
    doc = {"palette": pal.name, "palette_rgb": pal.colours.tolist(),
           "palette_kind": pal.kind, "usable_indices": [int(u) for u in usable],
           "metric": Metric(params.metric).value, "dither": Dither(params.dither).value,
           "cleanup": params.cleanup, "max_colours": params.max_colours,
           "images": rows, "skipped": skipped.items, "nes": nes_info, "summary": summary}
    write_json(out_dir / "quantize.json", doc)
    return summary
