"""`pipeline retile IMAGE...`: a reference screen rebuilt from the cached tile set.

Registered on the app by :mod:`pipeline.cli`; the work is :mod:`stages.retile`'s.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import cache as C
from .config import load_config
from .errors import PipelineError
from .graph import load_all


def retile_cmd(
    images: Annotated[list[Path], typer.Argument(
        help="Reference screens (screenshots, sketches) of any size.", show_default=False)],
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="Folder for the maps, previews and tile set "
                            "(default: <pipeline out>/retile).", show_default=False)] = None,
    tileset: Annotated[Optional[Path], typer.Option(
        "--tileset", help="A tile set folder (a dedupe or slice artifact; default: the latest "
                          "dedupe artifact, or slice's when it is newer or there is none).",
        show_default=False)] = None,
    pad_mode: Annotated[str, typer.Option(
        help="Sides off the tile grid: 'crop' the remainder or 'pad' with transparent "
             "pixels.")] = "crop",
    seam_weight: Annotated[str, typer.Option(
        help="'auto' or a number >= 0: how much tiles must join their neighbours.")] = "auto",
    texture_weight: Annotated[Optional[float], typer.Option(
        help="How much a cell's tile must keep the cell's texture (>= 0; 0 = nearest colours "
             "only, which flattens textures). Default: the retile stage's (16).",
        show_default=False)] = None,
    native: Annotated[bool, typer.Option(
        "--native/--no-native", help="Undo an integer nearest-neighbour upscale first (a "
                                     "3x screenshot is retiled at its native pixels).")] = True,
    nes: Annotated[bool, typer.Option(
        "--nes/--no-nes", help="At most 64 distinct 16x16 tiles in a screen.")] = False,
    config: Annotated[Optional[Path], typer.Option(
        "--config", "-c", help="pipeline.toml to read (default: ./pipeline.toml if "
                               "present).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Rebuild reference screens from the tile set, cell by cell with slice's seam-aware
    assignment: one .tmx (with the tile set's .tsx and .png beside it) and a preview PNG per
    image.  Prints the files written."""
    from stages import retile as R

    from .cli import _setup_logging

    _setup_logging(verbose)
    extra = {} if texture_weight is None else {"texture_weight": texture_weight}
    params = R.Params(pad_mode=pad_mode, seam_weight=seam_weight, native=native, nes=nes,
                      **extra)
    cfg = load_config(config, load_all())
    if tileset is None:
        tileset = cached_tileset(C.Store(cfg.cache))
    for image in images:
        if not image.exists():
            raise PipelineError(f"{image}: no such file")
    for row in R.retile_files(images, tileset, out or cfg.out / "retile", params):
        typer.echo(row["files"][0])


def cached_tileset(store: C.Store) -> Path:
    """The latest dedupe artifact, or the latest slice artifact when it is newer (slice ran
    again since) or dedupe never ran."""
    found = []
    for stage in ("dedupe", "slice"):
        art = store.latest(stage)
        if art is not None:
            found.append((float(store.manifest(art).get("started") or 0.0), stage, art))
    if not found:
        raise PipelineError("retile: no tile set in the cache; run `pipeline run --until "
                            "dedupe` first, or pass --tileset DIR")
    started, stage, art = found[0]
    if len(found) == 2 and found[1][0] > started:
        started, stage, art = found[1]
    logging.getLogger("tilegan.retile").info("retile: tiles of %s (%s)", art, stage)
    return Path(art)
