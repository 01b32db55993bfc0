"""report.html for the export stage: one self-contained page (every image inlined as base64).

Sections: the generated level (its model and figures), the tileset at 1x and 3x with its
groups, the terrain brushes (the Wang set in tileset.tsx: name, swatch, fill tile, transitions,
coverage), the kept tiles group by group (hover for their properties), the tiles' reuse (uses per
tile, distinct tiles per cell), the seams (colour difference across tile borders against inside
tiles, in the rebuilt screens and in the level), novelty, dropped tiles beside
their nearest training tiles, generated screens beside their rebuilt maps, training curves and
sample grid, and the summary of every stage that led here (read from the ``manifest.json`` the
artifact cache keeps beside each artifact).
"""
from __future__ import annotations

import base64
import html
import json
import logging
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from stages._common import IMAGE_SUFFIXES, atomic_write_text, expand_inputs, png_bytes

log = logging.getLogger("tilegan.export")

STAGE_ORDER = ("scrape", "crop", "train", "sample", "quantize", "slice", "dedupe", "export")
MAX_TILES_SHOWN = 1024
MAX_ROWS_SHOWN = 200
MAX_MANIFESTS = 4000

CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{margin-bottom:0}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
img.px{image-rendering:pixelated;image-rendering:crisp-edges}
img.px,.tiles img,.pair img{background:repeating-conic-gradient(#ddd 0 25%,#fff 0 50%) 0 0/16px 16px}
.tiles img{width:48px;height:48px;margin:1px;image-rendering:pixelated}
.sheet{display:inline-block;vertical-align:top;margin:0 1.5em .5em 0;font-size:.85em}
h3 .muted{font-weight:normal;font-size:.85em}
.pair{display:inline-block;margin:.5em;text-align:center;font-size:.8em;vertical-align:top}
.pair img{image-rendering:pixelated;margin:2px;border:1px solid #ccc}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
td,th{border:1px solid #ddd;padding:.2em .5em;text-align:left;vertical-align:top}
.muted{color:#777}.warn{color:#a40}
.scroll{overflow-x:auto}
"""


# --------------------------------------------------------------------------- helpers
def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _img_tag(data: Optional[bytes], *, alt: str, scale: float = 1.0, width: Optional[int] = None,
             title: Optional[str] = None, cls: str = "px") -> str:
    if data is None:
        return f'<p class="muted">({_esc(alt)}: not available)</p>'
    style = ""
    if width is not None:
        style = f' style="width:{int(width * scale)}px"'
    t = f' title="{_esc(title)}"' if title else ""
    return f'<img class="{cls}" alt="{_esc(alt)}"{t}{style} src="{_data_uri(data)}">'


def _png_of_file(path: Optional[Path]) -> tuple[Optional[bytes], int]:
    """PNG bytes of an image file (re-encoded if it is not a PNG) and its width."""
    if path is None or not Path(path).is_file():
        return None, 0
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            width = im.width
            if im.format == "PNG":
                return Path(path).read_bytes(), width
            return png_bytes(im.convert("RGBA")), width
    except Exception as e:  # a broken picture must not break the report
        log.warning("report: cannot read %s (%s)", path, e)
        return None, 0


def _flatten(d: Any, prefix: str = "", depth: int = 0) -> list[tuple[str, str]]:
    """(dotted key, short text) pairs of a nested dict, two levels deep."""
    if isinstance(d, dict) and d and depth < 2:
        out: list[tuple[str, str]] = []
        for k in sorted(d, key=str):
            out += _flatten(d[k], f"{prefix}.{k}" if prefix else str(k), depth + 1)
        return out
    text = json.dumps(d, default=str) if isinstance(d, (list, dict)) else str(d)
    if len(text) > 160:
        text = (f"[{len(d)} items] " if isinstance(d, list) else "") + text[:140] + "…"
    return [(prefix, text)]


def _kv_table(d: dict) -> str:
    rows = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in _flatten(d))
    return f"<table>{rows}</table>"


# --------------------------------------------------------------------------- charts (SVG)
def svg_histogram(series: Sequence[tuple[str, Sequence[float], str]], *, xlabel: str,
                  width: int = 480, height: int = 200,
                  edges: Optional[Sequence[float]] = None) -> str:
    """Inline SVG histograms, one panel per series, on shared unit bins (each its own y scale).

    ``series``: (label, values, colour).  Ranges wider than 64 get 64 equal bins; ``edges``
    gives the bins instead (drawn equally wide, labelled by their lower edge).
    """
    vals = [np.asarray([v for v in s[1] if v is not None], dtype=np.float64) for s in series]
    allv = np.concatenate([v for v in vals if v.size] or [np.zeros(0)])
    if allv.size == 0:
        return '<p class="muted">(no values)</p>'
    lo, hi = int(np.floor(allv.min())), int(np.ceil(allv.max()))
    if edges is not None:
        edges = np.asarray(edges, np.float64)
    elif hi - lo + 1 > 64:
        edges = np.linspace(lo, hi + 1, 65)
    else:
        edges = np.arange(lo, hi + 2, dtype=np.float64)
    nbins = len(edges) - 1
    panels = []
    for (label, _, colour), v in zip(series, vals):
        c = np.histogram(v, bins=edges)[0] if v.size else np.zeros(nbins, int)
        cmax = max(1, int(c.max()))
        ml, mb, mt = 44, 34, 22
        pw, ph = width - ml - 10, height - mb - mt
        bw = pw / nbins
        parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
                 f'font-size="11" font-family="sans-serif">',
                 f'<text x="{ml}" y="14" font-weight="bold">{_esc(label)} ({int(v.size)})</text>',
                 f'<line x1="{ml}" y1="{mt + ph}" x2="{ml + pw}" y2="{mt + ph}" stroke="#444"/>',
                 f'<line x1="{ml}" y1="{mt}" x2="{ml}" y2="{mt + ph}" stroke="#444"/>',
                 f'<text x="{ml - 4}" y="{mt + 8}" text-anchor="end">{cmax}</text>',
                 f'<text x="{ml - 4}" y="{mt + ph}" text-anchor="end">0</text>',
                 f'<text x="{ml + pw / 2}" y="{height - 4}" text-anchor="middle">{_esc(xlabel)}</text>']
        for b in range(nbins):
            if c[b] == 0:
                continue
            h = ph * c[b] / cmax
            w = min(max(bw - 1, 1), 40)
            x = ml + b * bw + (bw - w) / 2
            parts.append(f'<rect x="{x:.1f}" y="{mt + ph - h:.1f}" width="{w:.1f}" '
                         f'height="{h:.1f}" fill="{colour}"><title>{edges[b]:g}: {int(c[b])} '
                         f"tiles</title></rect>")
        step = max(1, nbins // 12)
        for b in range(0, nbins, step):
            parts.append(f'<text x="{ml + (b + 0.5) * bw:.1f}" y="{mt + ph + 13}" '
                         f'text-anchor="middle">{edges[b]:g}</text>')
        parts.append("</svg>")
        panels.append("".join(parts))
    return '<div class="scroll">' + " ".join(panels) + "</div>"


def svg_lines(xs: Sequence[float], series: dict[str, Sequence[float]], *, xlabel: str,
              width: int = 640, height: int = 240) -> str:
    """Inline SVG line chart of several series over shared ``xs``."""
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    x = np.asarray(xs, np.float64)
    good = {k: np.asarray(v, np.float64) for k, v in series.items() if len(v) == len(x)}
    if x.size < 2 or not good:
        return '<p class="muted">(not enough points)</p>'
    allv = np.concatenate([v[np.isfinite(v)] for v in good.values()] or [np.zeros(1)])
    lo, hi = float(allv.min()), float(allv.max())
    if hi <= lo:
        hi = lo + 1.0
    ml, mb, mt = 50, 30, 10
    pw, ph = width - ml - 10, height - mb - mt
    x0, x1 = float(x.min()), float(x.max()) if x.max() > x.min() else float(x.min()) + 1

    def px(v: float) -> float:
        return ml + pw * (v - x0) / (x1 - x0)

    def py(v: float) -> float:
        return mt + ph * (1 - (v - lo) / (hi - lo))

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-size="11" font-family="sans-serif">',
             f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>',
             f'<text x="{ml - 4}" y="{mt + 8}" text-anchor="end">{hi:.3g}</text>',
             f'<text x="{ml - 4}" y="{mt + ph}" text-anchor="end">{lo:.3g}</text>',
             f'<text x="{ml}" y="{height - 4}">{x0:g}</text>',
             f'<text x="{ml + pw}" y="{height - 4}" text-anchor="end">{x1:g}</text>',
             f'<text x="{ml + pw / 2}" y="{height - 4}" text-anchor="middle">{_esc(xlabel)}</text>']
    for i, (name, v) in enumerate(good.items()):
        col = palette[i % len(palette)]
        pts = " ".join(f"{px(a):.1f},{py(b):.1f}" for a, b in zip(x, v) if np.isfinite(b))
        parts.append(f'<polyline fill="none" stroke="{col}" stroke-width="1.2" points="{pts}"/>')
        parts.append(f'<text x="{ml + 8}" y="{mt + 14 + 14 * i}" fill="{col}">{_esc(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


# --------------------------------------------------------------------------- stage summaries
def collect_stage_summaries(dirs: Iterable[Path]) -> dict[str, dict]:
    """Summaries of the stages behind ``dirs``, read from the artifact cache's manifests.

    Each artifact directory of the cache (``<root>/<stage>/<key>/``) holds a ``manifest.json``
    with ``stage``, ``summary``, ``seconds``, ``inputs`` (name -> content digest of the
    upstream artifact) and, for explicit inputs, ``inputs_paths``.  Starting from ``dirs`` we
    follow those digests to the upstream manifests under the same root, and those paths.
    Directories without a manifest (standalone runs) add nothing.

    Returns
    -------
    dict
        stage name -> {"summary": ..., "seconds": ...}, in pipeline order.
    """
    found: dict[str, dict] = {}
    index: Optional[dict[str, Path]] = None
    queue = [Path(d) for d in dirs if Path(d).is_dir()]
    seen: set[Path] = set()
    while queue:
        d = queue.pop(0)
        try:
            d = d.resolve()
        except OSError:
            continue
        if d in seen:
            continue
        seen.add(d)
        mpath = d / "manifest.json"
        if not mpath.is_file():
            continue
        try:
            m = json.loads(mpath.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        stage = str(m.get("stage") or d.parent.name)
        if stage not in found:
            found[stage] = {"summary": m.get("summary", {}), "seconds": m.get("seconds")}
        for paths in (m.get("inputs_paths") or {}).values():  # explicit inputs of a standalone run
            if isinstance(paths, list):
                queue += [Path(p) for p in paths if isinstance(p, str) and Path(p).is_dir()]
        digests = [v for v in (m.get("inputs") or {}).values() if isinstance(v, str)]
        if digests and d.parent.name == stage:  # a cache entry: <root>/<stage>/<key>/
            if index is None:
                index = _manifest_index(d.parent.parent)
            queue += [index[g] for g in digests if g in index]
    order = {s: i for i, s in enumerate(STAGE_ORDER)}
    return {k: found[k] for k in sorted(found, key=lambda s: (order.get(s, 99), s))}


def _manifest_index(root: Path) -> dict[str, Path]:
    """content_digest -> artifact directory, over at most MAX_MANIFESTS manifests under root."""
    index: dict[str, Path] = {}
    n = 0
    for name in STAGE_ORDER:
        sd = root / name
        if not sd.is_dir():
            continue
        try:
            entries = sorted(sd.iterdir())
        except OSError:
            continue
        for ad in entries:
            mp = ad / "manifest.json"
            n += 1
            if n > MAX_MANIFESTS:
                return index
            try:
                dig = json.loads(mp.read_text(encoding="utf-8")).get("content_digest")
            except (OSError, ValueError, AttributeError):
                continue
            if isinstance(dig, str):
                index[dig] = ad
    return index


# --------------------------------------------------------------------------- sections
def _section_level(out_dir: Path, summary: dict) -> str:
    data, w = _png_of_file(out_dir / "previews" / "level.png")
    lv = summary.get("level", {})
    unit = "tile" if lv.get("chunk", 1) == 1 else f"{lv.get('chunk')}x{lv.get('chunk')}-tile piece"
    note = (f"{_esc(lv.get('method'))}: {lv.get('attempts')} attempt(s), {lv.get('backtracks')} "
            f"backtrack(s), {lv.get('violations')} neighbour pair(s) the model does not allow, "
            f"{lv.get('states')} {unit} states, {lv.get('distinct_tiles')} distinct tiles, the "
            f"most used on {100 * float(lv.get('top_share') or 0):.0f} % of cells; pixel "
            f"difference across tile borders {lv.get('seam_diff')} (inside the generated "
            f"screens: {lv.get('example_seam_diff')})")
    model = {
        "chunks": (f"{lv.get('chunk')}x{lv.get('chunk')}-tile pieces cut from the generated "
                   "screens, each next to pieces it sits beside in a screen or whose pixel "
                   "borders match best"),
        "observed+seams": ("single tiles, with the neighbours seen in the generated screens "
                           "widened by best-matching pixel seams"),
    }.get(lv.get("model"), "single tiles, each next to tiles it sits beside in the generated "
                           "screens, drawn as often as the screens show the pair"
          + (", and at the height of the screen where it usually sits" if lv.get("row_prior")
             else ""))
    because = f" Why: {_esc(lv['because'])}." if lv.get("because") else ""
    return (f"<h2>Level (maps/level.tmx)</h2><p>Made by Wave Function Collapse over "
            f"{model}.{because} {note}.</p>" + _level_table(lv) +
            f'<div class="scroll">{_img_tag(data, alt="level preview", scale=2, width=w)}</div>'
            + _style_levels(out_dir, lv.get("styles") or {}))


def _style_levels(out_dir: Path, styles: dict) -> str:
    """One level per style (the styles sample wrote into samples.json), each made from its
    style's screens only, with its figures: what "a level like this game" looks like."""
    if not styles:
        return ""
    parts = ["<h3>One level per style</h3><p>The same tiles, each level made only from the "
             "generated screens of one style (named by the model's style index, or a "
             "conditional model's label), so it keeps that game's look.</p>"]
    for style, lv in styles.items():
        name = Path(str(lv.get("map", ""))).stem
        data, w = _png_of_file(out_dir / "previews" / f"{name}.png")
        seams = (lv.get("seams") or {})
        ratio = lambda k: (seams.get(k) or {}).get("ratio")  # noqa: E731
        parts.append(
            f"<p><b>{_esc(style)}</b> ({_esc(lv.get('map'))}): {lv.get('screens')} screens, "
            f"{_esc(lv.get('method'))}, model {_esc(lv.get('model'))}, "
            f"{lv.get('distinct_tiles')} distinct tiles, border/inside {ratio('level')} "
            f"(its screens: {ratio('screens')})"
            + "".join(f"; {_esc(x)}" for x in lv.get("warnings") or []) + "</p>"
            f'<div class="scroll">{_img_tag(data, alt=f"level like {style}", scale=2, width=w)}'
            "</div>")
        if lv.get("sheet"):
            sheet, sw = _png_of_file(out_dir / "previews" / f"{Path(str(lv['sheet'])).stem}.png")
            parts.append(f"<p>Its {lv.get('tiles')} tiles, in sheet order "
                         f"({_esc(lv.get('sheet'))}), at 2×:</p>"
                         f"{_img_tag(sheet, alt=f'tiles of {style}', scale=2, width=sw)}")
    return "".join(parts)


def _level_table(lv: dict) -> str:
    """The level's figures beside the generated screens' (a designer's check that the level
    looks like the screens)."""
    rec = lv.get("recurrence") or {}
    seams = lv.get("seams") or {}
    if not rec and not seams:
        return ""

    def pct(v: Any) -> str:
        return "" if v is None else f"{100 * float(v):.1f} %"

    rows = [("model", lv.get("model"), f"tried: {', '.join(lv.get('tried') or [])}"),
            ("distinct tiles", lv.get("distinct_tiles"), rec.get("states")),
            ("commonest tile's share", pct(lv.get("top_share")), pct(lv.get("example_top_share"))),
            ("neighbour pairs no screen shows", lv.get("unseen_pairs"), 0),
            ("pairs the model does not allow (violations)", lv.get("violations"), ""),
            ("colour difference across tile borders (ΔE)",
             (seams.get("level") or {}).get("border"), (seams.get("screens") or {}).get("border")),
            ("... inside tiles (ΔE)", (seams.get("level") or {}).get("interior"),
             (seams.get("screens") or {}).get("interior")),
            ("border / inside", (seams.get("level") or {}).get("ratio"),
             (seams.get("screens") or {}).get("ratio"))]
    body = "".join(f"<tr><th>{_esc(a)}</th><td>{_esc('' if b is None else b)}</td>"
                   f"<td>{_esc('' if c is None else c)}</td></tr>" for a, b, c in rows)
    return ("<table><tr><th></th><th>level</th><th>generated screens (rebuilt)</th></tr>"
            f"{body}</table>")


def _groups(summary: dict, count: int) -> list[dict]:
    """The sheet's groups from the summary (one group of every tile when there is none)."""
    groups = [g for g in (summary.get("sheet") or {}).get("groups", []) if isinstance(g, dict)]
    return groups or [{"name": "all tiles", "kind": "", "tiles": count, "first_tile": 0,
                       "uses": None}]


def _section_tileset(out_dir: Path, summary: dict) -> str:
    """tileset.png at 1x and 3x (nearest neighbour) and the table of its groups."""
    data, w = _png_of_file(out_dir / "tileset.png")
    sheet = summary.get("sheet") or {}
    cols = int(sheet.get("columns") or summary.get("columns") or 1)
    views = "".join(
        f'<div class="sheet">{_img_tag(data, alt=f"tileset at {z}x", scale=z, width=w)}'
        f"<br>{z}×</div>" for z in (1, 3))
    rows = "".join(
        f"<tr><td>{_esc(g['name'])}</td><td>{_esc(g.get('kind', ''))}</td>"
        f"<td>{_esc(g.get('tiles'))}</td><td>{_id_range(g)}</td>"
        f"<td>{int(g.get('first_tile') or 0) // cols + 1}</td>"
        f"<td>{_esc('' if g.get('uses') is None else g['uses'])}</td></tr>"
        for g in _groups(summary, int(summary.get("tiles") or 0)))
    blank = sheet.get("blank")
    note = (f" {blank} sheet cells are left blank so that each group starts a row."
            if blank else "")
    return ("<h2>Tileset (tileset.png)</h2><p>Laid out by kind: each group of related tiles "
            "together, sky first and ground last, transitions (edges) beside the terrains they "
            f"join, the most used tiles of a group first.{note} A tile's id is its place on the "
            f'sheet. Shown at 1× and 3× (nearest neighbour).</p><div class="scroll">{views}</div>'
            "<table><tr><th>group</th><th>kind</th><th>tiles</th><th>tile ids</th>"
            f"<th>first row</th><th>cells using it</th></tr>{rows}</table>")


#: Most transition tiles shown in the terrains section.
MAX_TRANSITIONS_SHOWN = 256


def _section_terrains(summary: dict, bank: np.ndarray,
                      terrain_tiles: Optional[dict] = None) -> str:
    """The terrain brushes: per terrain its name, swatch, fill tile, transitions and coverage,
    and the transition tiles (hover for their corners)."""
    ts = summary.get("terrains")
    if not isinstance(ts, dict):
        return ""
    terrains = [t for t in ts.get("terrains") or [] if isinstance(t, dict)]
    if not terrains:
        return ('<h2>Terrains</h2><p class="muted">No terrain brush: no tile is filled with one '
                "material, so tileset.tsx has no Wang set.</p>")

    def tile_img(i: Any, label: str) -> str:
        if not isinstance(i, int) or not 0 <= i < len(bank):
            return ""
        return _img_tag(png_bytes(bank[i]), alt=label, title=f"tile {i}", cls="")

    def pct(v: Any) -> str:
        return f"{100 * float(v):.0f} %"

    rows = []
    for t in terrains:
        swatch = (f'<span style="display:inline-block;width:1.2em;height:1.2em;'
                  f'vertical-align:middle;border:1px solid #888;background:{_esc(t.get("colour"))}">'
                  f"</span> {_esc(t.get('colour'))}")
        cov = ", ".join(f"{_esc(n)} {pct(v)}" for n, v in (t.get("coverage") or {}).items())
        rows.append(f"<tr><th>{_esc(t.get('name'))}</th><td>{swatch}</td>"
                    f'<td class="tiles">{tile_img(t.get("tile"), "fill tile")}<br>'
                    f"tile {_esc(t.get('tile'))}</td><td>{_esc(t.get('fill_tiles'))}</td>"
                    f"<td>{_esc(t.get('transitions'))}</td><td>{pct(t.get('share') or 0)}</td>"
                    f"<td>{cov or '—'}</td></tr>")
    names = {t.get("index"): str(t.get("name")) for t in terrains}
    imgs = []
    for i, corners in sorted((terrain_tiles or {}).items())[:MAX_TRANSITIONS_SHOWN]:
        tip = f"tile {i}: " + " / ".join(f"{c} {names.get(v, '—')}" for c, v in zip(
            ("top-left", "top-right", "bottom-right", "bottom-left"), corners))
        if 0 <= int(i) < len(bank):
            imgs.append(_img_tag(png_bytes(bank[int(i)]), alt=f"tile {i}", title=tip, cls=""))
    more = (f'<p class="muted">first {MAX_TRANSITIONS_SHOWN} of {len(terrain_tiles)} shown</p>'
            if terrain_tiles and len(terrain_tiles) > MAX_TRANSITIONS_SHOWN else "")
    trans = (f"<details><summary>the {len(imgs)} transition tiles (hover for their corners)"
             f'</summary><div class="tiles">{"".join(imgs)}</div>{more}</details>'
             if imgs else "")
    flips = (" The tileset lets the brush draw Wang tiles flipped (&lt;transformations&gt;), "
             "unflipped ones first; coverage counts the flipped forms." if ts.get("flips")
             else "")
    return (f"<h2>Terrains (terrain brushes in tileset.tsx)</h2><p>A corner Wang set "
            f"“{_esc(ts.get('set'))}” inferred from the tiles' pixels and the rebuilt screens. In "
            "Tiled: open the tileset, switch the Tilesets panel to <i>Terrain Sets</i>, pick a "
            "terrain and paint with the <i>Terrain Brush</i> (T); Tiled chooses the transition "
            f"tiles. {_esc(ts.get('wang_tiles'))} Wang tiles, {_esc(ts.get('transitions'))} of "
            f"them transitions; {_esc(ts.get('tiles_outside'))} tiles are outside the set (a "
            "corner of no terrain). Vertex agreement "
            f"{_esc(ts.get('vertex_agreement'))}: the share of the screens' grid corners whose "
            f"four tiles agree on one terrain.{flips}</p>"
            "<table><tr><th>terrain</th><th>colour</th><th>fill tile</th><th>fill tiles</th>"
            "<th>transition tiles</th><th>share of tile corners</th><th>coverage: boundaries the "
            f"brush can draw with each other terrain</th></tr>{''.join(rows)}</table>{trans}")


def _id_range(group: dict) -> str:
    """``first–last`` tile ids of a group (``first`` alone for one tile)."""
    first, n = int(group.get("first_tile") or 0), int(group.get("tiles") or 0)
    return f"{first}–{first + n - 1}" if n > 1 else str(first)


def _section_tiles(bank: np.ndarray, props: list[dict], summary: Optional[dict] = None) -> str:
    k = int(summary.get("tiles") or 0) if summary else bank.shape[0]
    parts, shown = [], 0
    for g in _groups(summary or {}, bank.shape[0]):
        first, n = int(g.get("first_tile") or 0), int(g.get("tiles") or 0)
        imgs = []
        for i in range(first, min(first + n, bank.shape[0])):
            if shown >= MAX_TILES_SHOWN:
                break
            p = props[i] if i < len(props) else {}
            tip = f"tile {i} (GID {i + 1})" + "".join(
                f"\n{name}: {v}" for name, v in p.items() if v is not None)
            imgs.append(_img_tag(png_bytes(bank[i]), alt=f"tile {i}", title=tip, cls=""))
            shown += 1
        uses = f", {g['uses']} cells" if g.get("uses") is not None else ""
        parts.append(f"<h3>{_esc(g['name'])} <span class=muted>({n} tile{'s' * (n != 1)}"
                     f"{uses})</span></h3>"
                     f'<div class="tiles">{"".join(imgs)}</div>')
    more = (f'<p class="muted">first {MAX_TILES_SHOWN} of {k} shown; all are in tileset.png</p>'
            if k > MAX_TILES_SHOWN else "")
    return (f"<h2>Kept tiles ({k})</h2><p>Group by group, as in tileset.png. Hover a tile for "
            f"its properties (the same as in Tiled).</p>{''.join(parts)}{more}")


def _section_reuse(summary: dict, uses: Sequence[int]) -> str:
    """How often the tiles recur in the rebuilt screens."""
    r = summary.get("reuse") or {}
    if not r:
        return ""
    once = sum(1 for u in uses if u <= 1)
    text = (f"The {r.get('cells')} cells of the rebuilt screens use {r.get('tiles')} distinct "
            f"tiles: {r.get('tiles_per_cell')} per cell ({r.get('states_per_cell')} counting each "
            f"flip apart; real NES screens: about 0.2, screens whose every tile is new: 1). "
            f"{100 * float(r.get('recurring_share') or 0):.0f} % of the cells show a tile that "
            f"another cell shows too; the commonest tile covers "
            f"{100 * float(r.get('top_share') or 0):.1f} %; {once} of {len(uses)} tiles are used "
            "once or never.")
    return ("<h2>Reuse</h2><p>" + _esc(text) + "</p>"
            + svg_histogram([("tiles", list(uses), "#2c7fb8")], edges=_doubling_edges(uses),
                            xlabel="cells of the rebuilt screens using the tile (at least)"))


def _doubling_edges(values: Sequence[int]) -> list[int]:
    """Bins 0, 1, 2-3, 4-7, ... up to the largest value: uses span orders of magnitude."""
    top = max([int(v) for v in values] or [1])
    edges = [0, 1]
    while edges[-1] <= top:
        edges.append(edges[-1] * 2)
    return edges


def _section_seams(summary: dict, stage_info: Optional[dict] = None) -> str:
    """Colour difference across tile borders against inside tiles (and the real training
    screens' ratio, from slice's summary, when slice had them)."""
    seams = (summary.get("level") or {}).get("seams") or {}
    if not seams:
        return ""
    rows = "".join(
        f"<tr><th>{_esc(label)}</th><td>{_esc(v.get('border'))}</td>"
        f"<td>{_esc(v.get('interior'))}</td><td>{_esc(v.get('ratio'))}</td></tr>"
        for label, v in (("generated screens, rebuilt from the tiles", seams.get("screens") or {}),
                         ("level", seams.get("level") or {})))
    sl = (((stage_info or {}).get("slice") or {}).get("summary") or {}).get("seam_ratio") or {}
    real = sl.get("real")
    if isinstance(real, (int, float)) and real > 0:
        rows += (f"<tr><th>real training screens</th><td></td><td></td><td>{real:.3f}</td></tr>")
        note = (f"slice joined the tiles (seam weight {_esc(sl.get('seam_weight'))}) so that "
                f"the rebuilt screens come close to the real training screens' ratio")
    else:
        note = ("real screens, whose objects sit on the tile grid, measure about 1.5-2 "
                "(the example screens 1.5-1.6, the pyxel platformer screens 1.9-2.0)")
    return ("<h2>Seams</h2><p>Mean colour difference (ΔE76) between neighbouring pixels across "
            "tile borders and inside tiles. A ratio near 1 means tile borders look like the "
            f"insides of tiles; {note}. Far above the real screens' ratio, the grid shows; far "
            "below, the art is smeared across its tiles.</p>"
            "<table><tr><th></th><th>across borders</th><th>inside tiles</th>"
            f"<th>border / inside</th></tr>{rows}</table>")


def _dropped_distance(rec: dict) -> Optional[float]:
    """Distance of a dropped tile to its training twin (None for other reasons)."""
    reason = str(rec.get("reason", ""))
    if reason and not reason.startswith("training"):
        return None
    v = rec.get("distance")
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    for key in ("training", "nearest_training"):
        nt = rec.get(key)
        if isinstance(nt, dict) and isinstance(nt.get("distance"), (int, float)):
            return float(nt["distance"])
    return None


#: dedupe's novelty categories, in the order shown, with what each means
NOVELTY_KINDS = (("new", "no training tile shares its colour pattern or a 4×4 block of it"),
                 ("related", "a training tile shares a block or the pattern, but it is no copy"),
                 ("copy", "called a copy of a training tile but kept"),
                 ("common", "a plain fill tile, kept whatever the training tiles hold"))


def _section_novelty(meta: list, dropped: list) -> str:
    kinds = [m["novelty"] for m in meta if isinstance(m, dict)
             and isinstance(m.get("novelty"), str)]
    if kinds:  # dedupe's categories (the copy judge)
        rows = "".join(f"<tr><th>{_esc(k)}</th><td>{kinds.count(k)}</td><td>{_esc(why)}</td></tr>"
                       for k, why in NOVELTY_KINDS if k in kinds)
        other = sorted(set(kinds) - {k for k, _ in NOVELTY_KINDS})
        rows += "".join(f"<tr><th>{_esc(k)}</th><td>{kinds.count(k)}</td><td></td></tr>"
                        for k in other)
        return ("<h2>Novelty</h2><p>How each kept tile relates to the training tiles "
                "(dedupe's copy judge):</p><table><tr><th>novelty</th><th>tiles</th>"
                f"<th>meaning</th></tr>{rows}</table>")
    kept = [m["novelty"] for m in meta if isinstance(m, dict)
            and isinstance(m.get("novelty"), (int, float)) and m["novelty"] >= 0]
    drop = [_dropped_distance(d) for d in dropped if isinstance(d, dict)]
    drop = [d for d in drop if d is not None]
    series = [("kept tiles", kept, "#2c7fb8")]
    if drop:
        series.append(("dropped as training copies", drop, "#d95f0e"))
    unknown = sum(1 for m in meta if isinstance(m, dict) and not (
        isinstance(m.get("novelty"), (int, float)) and m["novelty"] >= 0))
    extra = (f' <span class="muted">({unknown} tiles not measured: flat, or no training '
             f"tiles given)</span>" if unknown else "")
    return ("<h2>Novelty</h2><p>Hamming distance of each tile's perceptual hash to the nearest "
            f"training tile: higher is more original.{extra}</p>"
            + svg_histogram(series, xlabel="distance to nearest training tile (bits)"))


def _section_dropped(dropped: list, evidence: Optional[Path]) -> str:
    data, w = _png_of_file(evidence)
    parts = [f"<h2>Dropped tiles ({len(dropped)})</h2>",
             "<p>Each tile called a copy beside the training tile it copies, with the kind of "
             "copy (exact, near, palette swap, shifted) and how many of its pixels differ "
             "(dedupe's evidence sheet):</p>",
             f'<div class="scroll">{_img_tag(data, alt="copy evidence", width=w)}</div>']
    if dropped:
        rows = []
        for rec in dropped[:MAX_ROWS_SHOWN]:
            if not isinstance(rec, dict):
                continue
            cells = "; ".join(f"{k}={v}" for k, v in _flatten(rec) if k != "reason")
            rows.append(f"<tr><td>{_esc(rec.get('reason', ''))}</td><td>{_esc(cells)}</td></tr>")
        more = (f'<p class="muted">first {MAX_ROWS_SHOWN} of {len(dropped)} shown (dropped.json)</p>'
                if len(dropped) > MAX_ROWS_SHOWN else "")
        parts.append(f"<details><summary>every dropped tile (dropped.json)</summary><table>"
                     f"<tr><th>reason</th><th>details</th></tr>{''.join(rows)}</table>{more}"
                     "</details>")
    return "".join(parts)


def _section_samples(out_dir: Path, sample_paths: Sequence[Path], sample_maps: list[dict],
                     n: int) -> str:
    files: list[Path] = []
    if sample_paths:
        try:
            files = expand_inputs(sample_paths, IMAGE_SUFFIXES)
        except Exception as e:  # the report never fails on an optional input
            log.warning("report: cannot list samples (%s)", e)
    by_stem = {f.stem: f for f in files}
    cards = []
    for sm in sample_maps[:n]:
        src = by_stem.get(str(sm["source_image"]))
        stem = Path(sm["map"]).stem
        rebuilt, w = _png_of_file(out_dir / "previews" / f"{stem}.png")
        orig, w0 = _png_of_file(src)
        left = (_img_tag(orig, alt="generated", scale=3, width=w0) + "<br>generated"
                if orig else "")
        cards.append(f'<div class="pair">{left}'
                     f'{"<br>" if orig else ""}{_img_tag(rebuilt, alt=stem, scale=3, width=w)}'
                     f"<br>{_esc(sm['map'])}<br><span class=muted>{_esc(sm['source_image'])}"
                     f"</span></div>")
    if not cards and files:
        for f in files[:n]:
            d, w = _png_of_file(f)
            cards.append(f'<div class="pair">{_img_tag(d, alt=f.name, scale=3, width=w)}'
                         f"<br>{_esc(f.name)}</div>")
    head = ("<h2>Generated screens</h2><p>Each generated screen beside its map rebuilt from "
            "the kept tiles (maps/sample_NNN.tmx).</p>")
    return head + ("".join(cards) or '<p class="muted">(no samples)</p>')


def _section_training(train_dirs: Sequence[Path]) -> str:
    d = next((Path(p) for p in train_dirs if Path(p).is_dir()), None)
    if d is None:
        return '<h2>Training</h2><p class="muted">(no training artifact given)</p>'
    parts = ["<h2>Training</h2>"]
    curves, w = _png_of_file(d / "curves.png")
    if curves:
        parts.append(_img_tag(curves, alt="training curves", width=w, cls=""))
    else:
        parts.append(_metrics_chart(d / "metrics.jsonl"))
    grids = sorted((d / "grids").glob("step_*.png")) if (d / "grids").is_dir() else []
    if grids:
        g, gw = _png_of_file(grids[-1])
        parts.append(f"<p>Fixed-noise samples at the last checkpoint ({_esc(grids[-1].name)}):</p>"
                     + _img_tag(g, alt="sample grid", scale=2, width=gw))
    styles = sorted((d / "grids").glob("style_*.png")) if (d / "grids").is_dir() else []
    if styles:
        names = _style_names(d)
        parts.append("<h3>One style at a time</h3><p>The same noise through each style of this "
                     "conditional model (<code>pipeline sample --like NAME</code> draws a "
                     "tile set in one of them):</p>")
        cards = []
        for i, f in enumerate(styles):
            g, gw = _png_of_file(f)
            label = names[i] if i < len(names) else f.stem[len("style_"):]
            cards.append(f'<div class="pair">{_img_tag(g, alt=label, scale=2, width=gw)}'
                         f"<br>{_esc(label)}</div>")
        parts.append("".join(cards))
    return "".join(parts)


def _style_names(train_dir: Path) -> list:
    """The style (game) names of a conditional training run, from its config.json."""
    try:
        cfg = json.loads((train_dir / "config.json").read_text(encoding="utf-8"))
        names = (cfg.get("gan") or {}).get("classes") or []
        return [str(n) for n in names] if isinstance(names, list) else []
    except (OSError, ValueError, AttributeError):
        return []


def _metrics_chart(path: Path) -> str:
    if not path.is_file():
        return '<p class="muted">(no curves.png or metrics.jsonl)</p>'
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if isinstance(r, dict) and isinstance(r.get("step"), (int, float)):
            rows.append(r)
    keys = sorted({k for r in rows for k, v in r.items()
                   if "loss" in k and isinstance(v, (int, float))})
    xs = [r["step"] for r in rows]
    series = {k: [float(r.get(k, np.nan)) for r in rows] for k in keys}
    return svg_lines(xs, series, xlabel="step")


def _section_stages(stages: dict[str, dict], summary: dict) -> str:
    parts = ["<h2>Stages</h2>"]
    stages = dict(stages)
    stages.setdefault("export", {"summary": summary, "seconds": summary.get("seconds")})
    for name, info in stages.items():
        secs = info.get("seconds")
        t = f" <span class=muted>({secs} s)</span>" if secs is not None else ""
        parts.append(f"<h3>{_esc(name)}{t}</h3>{_kv_table(info.get('summary') or {})}")
    return "".join(parts)


def _screens_note(summary: dict) -> str:
    """How many screens were rebuilt and how many became sample maps."""
    n, written = summary.get("samples"), summary.get("sample_maps")
    if n is None or written is None:
        return ""
    if written >= n:
        return f"All {n} rebuilt screens are written as maps/sample_NNN.tmx."
    return (f"{n} generated screens were rebuilt from the tiles (the level, reuse and terrains "
            f"use them all); the first {written} are written as maps/sample_NNN.tmx "
            f"(--max-sample-maps {summary.get('max_sample_maps')}; 0 writes all).")


# --------------------------------------------------------------------------- main
def write_report(out_dir: Path, *, title: str, summary: dict, bank: np.ndarray,
                 tile_meta: list, tile_props: list[dict], dropped: list,
                 evidence: Optional[Path], train_dirs: Sequence[Path],
                 sample_paths: Sequence[Path], sample_maps: list[dict],
                 upstream_dirs: Sequence[Path], report_samples: int = 16,
                 uses: Sequence[int] = (), terrain_tiles: Optional[dict] = None) -> Path:
    """Write ``out_dir/report.html`` (expects previews/ already written) and return its path.

    Parameters
    ----------
    out_dir : Path
        Export's output folder; ``previews/*.png`` are read from it.
    title : str
        Tileset name (escaped).
    summary : dict
        Export's summary (shown in the "Stages" section); ``sheet`` (groups), ``reuse`` and
        ``level`` (model, figures, ``seams``) feed their sections.
    bank : ndarray, shape (K, T, T, 4), uint8
        The sheet's tiles by tile id (blank cells included).
    tile_meta, dropped : list
        Contents of dedupe's tiles.json and dropped.json.
    tile_props : list of dict
        The per-tile properties written into tileset.tsx.
    evidence : Path or None
        dedupe's evidence.png.
    train_dirs, sample_paths : sequence of Path
        train's artifact folder and sample's images (may be empty).
    sample_maps : list of dict
        ``{"map": "maps/sample_000.tmx", "source_image": stem}`` per sample map.
    upstream_dirs : sequence of Path
        Artifact folders whose cache manifests give the per-stage summaries.
    report_samples : int
        Generated screens to show.
    uses : sequence of int
        Cells using each tile (the reuse histogram).
    terrain_tiles : dict or None
        Transition tile id -> terrain index of its four corners (top-left, top-right,
        bottom-right, bottom-left); ``summary["terrains"]`` holds the rest of the terrains.
    """
    out_dir = Path(out_dir)
    stage_info = collect_stage_summaries(list(upstream_dirs) + list(train_dirs) + list(sample_paths))
    warn = "".join(f'<li class="warn">{_esc(w)}</li>' for w in summary.get("warnings", []))
    head = (f"<p>{summary.get('tiles')} tiles of {summary.get('tile_size')}×"
            f"{summary.get('tile_size')} px, {len(summary.get('maps', []))} maps, "
            f"{summary.get('dropped')} tiles dropped by dedupe. {_screens_note(summary)} Open "
            "<code>tilegan.tiled-project</code> or <code>maps/*.tmx</code> in Tiled.</p>"
            + (f"<ul>{warn}</ul>" if warn else ""))
    body = [
        f"<h1>{_esc(title)}</h1>", head,
        _section_level(out_dir, summary),
        _section_tileset(out_dir, summary),
        _section_terrains(summary, bank, terrain_tiles),
        _section_tiles(bank, tile_props, summary),
        _section_reuse(summary, uses),
        _section_seams(summary, stage_info),
        _section_novelty(tile_meta, dropped),
        _section_dropped(dropped, evidence),
        _section_samples(out_dir, sample_paths, sample_maps, report_samples),
        _section_training(train_dirs),
        _section_stages(stage_info, summary),
    ]
    doc = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
           f"<title>{_esc(title)} — tilegan report</title><style>{CSS}</style></head><body>\n"
           + "\n".join(body) + "\n</body></html>\n")
    return atomic_write_text(out_dir / "report.html", doc)
