"""scrape: gather screenshots from folders, .zip files or web pages, validated and stored by hash.

Every item is decoded fully with Pillow; valid images go to images/<sha256[:16]>.<ext>
(identical content kept once) and every item gets a row in sources.jsonl (ok / skipped /
duplicate, with the reason).  Web pages: <img>, srcset and <a href> links to images or .zip
files are collected and same-host page links followed to --depth (robots.txt obeyed for
discovered URLs).  Broken, non-image, too-small or unreachable items are skipped, never fatal.
Downloads wait in out_dir/_fetch/ so an interrupted run resumes.  See docs/data.md.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import shutil
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import urllib.robotparser
import zipfile
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Iterator, Optional

from stages._common import (IMAGE_SUFFIXES, InputError, ParamError, ProgressFn, atomic_write_bytes,
                            atomic_write_text, no_progress, param)

NAME = "scrape"
INPUTS = {"source": None}
OPTIONAL_INPUTS = ()
LIBS = ("pillow",)

log = logging.getLogger("tilegan.scrape")

#: Pillow format name -> file extension used in the store
FORMAT_EXT = {"PNG": "png", "JPEG": "jpg", "GIF": "gif", "BMP": "bmp", "WEBP": "webp",
              "TIFF": "tif", "PPM": "ppm", "TGA": "tga", "ICO": "ico", "PCX": "pcx"}
ROBOTS_AGENT = "tilegan-scrape"
USER_AGENT = f"{ROBOTS_AGENT}/0.1 (pixel-art tileset builder; python-urllib)"
FETCH_DIR = "_fetch"
#: link targets never fetched as pages (downloads, media, documents)
NOT_PAGES = frozenset(".7z .avi .bin .bz2 .css .dmg .doc .docx .epub .exe .flac .gz .ico .iso .jar .js "
                      ".json .mid .mkv .mov .mp3 .mp4 .msi .nes .ogg .pdf .ppt .rar .rom .sfc .smc "
                      ".svg .tar .tgz .ttf .txt .wav .webm .woff .woff2 .xml .xz .zip".split())


@dataclass(frozen=True)
class Params:
    depth: int = param(1, help="how many levels of same-host page links to follow from each URL "
                              "(0: only the given page)")
    max_pages: int = param(50, help="stop following links after this many pages per run")
    max_images: int = param(2000, help="stop after this many usable images")
    min_size: int = param(16, help="skip images narrower or shorter than this many pixels")
    max_mb: float = param(50.0, help="skip items larger than this many megabytes")
    timeout: float = param(20.0, help="seconds to wait for a web server before giving up")
    workers: int = param(4, help="parallel image downloads")
    robots: bool = param(True, help="obey each host's robots.txt for the pages and images it "
                                    "links (the URLs you give are always fetched)")
    any_host_images: bool = param(True, help="fetch images a page embeds or links from other hosts "
                                             "(pages are only followed on the same host)")


# --------------------------------------------------------------------------- items
@dataclass
class Item:
    """One candidate image: where it came from and its bytes (or why there are none)."""
    source: str
    data: Optional[bytes] = None
    error: Optional[str] = None


def _is_url(s: str) -> bool:
    return s.startswith(("http://", "https://"))


def _norm_source(item: Any) -> str:
    """str of an input item; repairs ``http:/host`` that ``Path('http://host')`` produces."""
    s = str(item)
    m = re.match(r"^(https?):/([^/].*)$", s)
    if m:
        s = f"{m.group(1)}://{m.group(2)}"
    return s


def _validate_params(p: Params) -> None:
    for name in ("max_pages", "max_images", "workers"):
        if getattr(p, name) < 1:
            raise ParamError(f"scrape: {name} must be at least 1, got {getattr(p, name)}")
    if p.depth < 0:
        raise ParamError(f"scrape: depth must be 0 or more, got {p.depth}")
    if p.min_size < 0:
        raise ParamError(f"scrape: min_size must be 0 or more, got {p.min_size}")
    if p.timeout <= 0 or p.max_mb <= 0:
        raise ParamError("scrape: timeout and max_mb must be positive")


# --------------------------------------------------------------------------- local sources
def _is_hidden(rel: str) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in Path(rel).parts)


def _folder_items(folder: Path, max_bytes: int) -> Iterator[Item]:
    files = sorted(f for f in folder.rglob("*") if f.is_file()
                   and not _is_hidden(f.relative_to(folder).as_posix()))
    for f in files:
        if f.suffix.lower() == ".zip":
            yield from _zip_items(f, max_bytes)
        else:
            yield _file_item(f, max_bytes)


def _file_item(f: Path, max_bytes: int) -> Item:
    try:
        size = f.stat().st_size
        if size > max_bytes:
            return Item(str(f), error=f"larger than max_mb={max_bytes / 1e6:g} ({size / 1e6:.2f} MB)")
        return Item(str(f), f.read_bytes())
    except OSError as e:
        return Item(str(f), error=f"cannot read ({e.strerror or e})")


def _zip_items(path: Path, max_bytes: int) -> Iterator[Item]:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise InputError(f"{path}: not a readable .zip file ({e})") from None
    with zf:
        yield from _zip_members(zf, str(path), max_bytes)


def _zip_members(zf: zipfile.ZipFile, name: str, max_bytes: int) -> Iterator[Item]:
    infos = sorted((i for i in zf.infolist() if not i.is_dir() and not _is_hidden(i.filename)),
                   key=lambda i: i.filename)
    for info in infos:
        src = f"{name}!{info.filename}"
        if info.file_size > max_bytes:
            yield Item(src, error=f"larger than max_mb={max_bytes / 1e6:g}")
            continue
        try:
            with zf.open(info) as f:
                data = f.read(max_bytes + 1)   # the declared size may lie (zip bombs)
            if len(data) > max_bytes:
                yield Item(src, error=f"larger than max_mb={max_bytes / 1e6:g}")
                continue
            yield Item(src, data)
        except (zipfile.BadZipFile, OSError, RuntimeError, EOFError, NotImplementedError) as e:
            yield Item(src, error=f"cannot extract from the zip ({e})")


# --------------------------------------------------------------------------- web sources
class _LinkParser(HTMLParser):
    """Collects image URLs (img src/srcset, a href to image files) and page links."""

    def __init__(self, base: str):
        super().__init__(convert_charrefs=True)
        self.base = base
        self.images: list[str] = []
        self.links: list[str] = []

    def _abs(self, url: str) -> Optional[str]:
        url = url.strip()
        if not url or url.startswith(("data:", "javascript:", "mailto:", "#", "tel:")):
            return None
        full, _frag = urllib.parse.urldefrag(urllib.parse.urljoin(self.base, url))
        return full if _is_url(full) else None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, Optional[str]]]) -> None:
        a = {k.lower(): (v or "") for k, v in attrs}
        if tag == "base" and a.get("href"):
            self.base = urllib.parse.urljoin(self.base, a["href"])
        elif tag in ("img", "source"):
            cands = [a.get("src", ""), a.get("data-src", "")]
            for part in a.get("srcset", "").split(","):
                cands.append(part.strip().split(" ")[0] if part.strip() else "")
            for c in cands:
                u = self._abs(c)
                if u:
                    self.images.append(u)
        elif tag == "a" and a.get("href"):
            u = self._abs(a["href"])
            if u:
                if _looks_like_image(u) or _suffix(u) == ".zip":
                    self.images.append(u)       # a .zip is opened and its images taken
                elif _suffix(u) not in NOT_PAGES:
                    self.links.append(u)


def _suffix(url: str) -> str:
    name = urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1].lower()
    return name[name.rfind("."):] if "." in name.strip(".") else ""


def _looks_like_image(url: str) -> bool:
    return _suffix(url) in IMAGE_SUFFIXES


class _Fetcher:
    """HTTP GET with a resumable on-disk cache in ``<out_dir>/_fetch``."""

    def __init__(self, root: Path, timeout: float, max_bytes: int):
        self.root = root
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.root.mkdir(parents=True, exist_ok=True)
        self.index_path = root / "index.jsonl"
        self.index: dict[str, dict[str, Any]] = {}
        self.reused = 0
        self._robots: dict[str, urllib.robotparser.RobotFileParser] = {}
        self._lock = threading.Lock()
        if self.index_path.exists():
            for line in self.index_path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by an interruption
                if row.get("file") and not (root / row["file"]).exists():
                    continue
                self.index[row["url"]] = row
        self.preloaded = set(self.index)

    def get(self, url: str) -> dict[str, Any]:
        """Return {url, status, ctype, file | None, error | None}; network errors are not cached."""
        hit = self.index.get(url)
        if hit is not None:
            if url in self.preloaded:
                self.reused += 1
                self.preloaded.discard(url)
            return hit
        row: dict[str, Any] = {"url": url, "status": None, "ctype": "", "file": None, "error": None}
        req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "*/*"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                row["status"] = resp.status
                row["ctype"] = resp.headers.get("Content-Type", "") or ""
                row["final_url"] = resp.geturl()
                data = resp.read(self.max_bytes + 1)
            if len(data) > self.max_bytes:
                row["error"] = f"larger than max_mb={self.max_bytes / 1e6:g}"
                data = b""
        except urllib.error.HTTPError as e:
            row["status"] = e.code
            row["error"] = f"HTTP {e.code} {e.reason}"
            data = b""
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            return dict(row, error=f"no answer ({reason})", reason=str(reason), network=True)
        if row["error"] is None:
            name = hashlib.sha256(url.encode()).hexdigest()[:24]
            atomic_write_bytes(self.root / name, data)
            row["file"] = name
        with self._lock:  # image downloads run in threads
            self.index[url] = row
            with open(self.index_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row, sort_keys=True) + "\n")
        return row

    def body(self, row: dict[str, Any]) -> bytes:
        return (self.root / row["file"]).read_bytes() if row.get("file") else b""

    def allowed(self, url: str) -> bool:
        """Whether the host's robots.txt lets us fetch ``url`` (missing robots.txt: yes)."""
        parts = urllib.parse.urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        rp = self._robots.get(origin)
        if rp is None:
            row = self.get(origin + "/robots.txt")
            rp = urllib.robotparser.RobotFileParser()
            if row.get("file") and row.get("status") == 200:
                rp.parse(self.body(row).decode("utf-8", errors="replace").splitlines())
            else:
                rp.parse([])          # no robots.txt (or unreachable): everything allowed
            self._robots[origin] = rp
        return rp.can_fetch(ROBOTS_AGENT, url)


def _is_html(row: dict[str, Any], body: bytes) -> bool:
    ct = row.get("ctype", "").lower()
    if "html" in ct:
        return True
    if ct and not ct.startswith("text/"):
        return False
    head = body[:512].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html")) or b"<body" in body[:4096].lower()


def _decode_html(row: dict[str, Any], body: bytes) -> str:
    m = re.search(r"charset=([\w-]+)", row.get("ctype", ""), re.I)
    enc = m.group(1) if m else "utf-8"
    try:
        return body.decode(enc, errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")


def _crawl(start: str, fetcher: _Fetcher, p: Params, pages_budget: list[int],
           progress: ProgressFn) -> tuple[list[str], list[Item]]:
    """BFS from ``start``. Returns (image URLs in discovery order, failed-page items)."""
    first = fetcher.get(start)
    if first.get("network"):
        raise InputError(f"{start}: the URL does not answer ({first['reason']}); check the address "
                         f"and the network")
    if first["error"]:
        raise InputError(f"{start}: the server answered {first['error']}; check the address")
    body = fetcher.body(first)
    if not _is_html(first, body):
        return [start], []  # the URL is an image (or something to validate as one)
    host = urllib.parse.urlsplit(first.get("final_url") or start).netloc.lower()
    images: list[str] = []
    seen_img: set[str] = set()
    failed: list[Item] = []
    seen_pages = {start}
    queue: deque[tuple[str, int, dict[str, Any]]] = deque([(start, 0, first)])
    pages_budget[0] -= 1
    n_pages = 0
    while queue:
        url, d, row = queue.popleft()
        if row is None:
            if pages_budget[0] <= 0:
                log.info("max_pages reached; not following %s", url)
                continue
            if p.robots and not fetcher.allowed(url):
                failed.append(Item(url, error="page not fetched: disallowed by robots.txt"))
                continue
            pages_budget[0] -= 1
            row = fetcher.get(url)
        if row["error"]:
            failed.append(Item(url, error=f"page not fetched: {row['error']}"))
            continue
        body = fetcher.body(row)
        if not _is_html(row, body):
            ct = row.get("ctype", "").lower()
            if ct.startswith("image/") and url not in seen_img:
                seen_img.add(url)
                images.append(url)
            continue
        n_pages += 1
        progress("scrape: pages", n_pages, None)
        parser = _LinkParser(row.get("final_url") or url)
        try:
            parser.feed(_decode_html(row, body))
            parser.close()
        except Exception as e:  # html.parser is lenient; be safe on odd input
            log.warning("%s: HTML not fully parsed (%s)", url, e)
        for u in parser.images:
            same = urllib.parse.urlsplit(u).netloc.lower() == host
            if u not in seen_img and (same or p.any_host_images):
                seen_img.add(u)
                images.append(u)
        if d < p.depth:
            for u in parser.links:
                if urllib.parse.urlsplit(u).netloc.lower() != host or u in seen_pages:
                    continue
                seen_pages.add(u)
                queue.append((u, d + 1, None))  # fetched when dequeued
    return images, failed


def _url_items(urls: list[str], fetcher: _Fetcher, p: Params, given: frozenset[str]) -> Iterator[Item]:
    def one(u: str) -> Item:
        if p.robots and u not in given and not fetcher.allowed(u):
            return Item(u, error="disallowed by robots.txt")
        row = fetcher.get(u)
        if row["error"]:
            return Item(u, error=row["error"])
        return Item(u, fetcher.body(row))

    def expand(item: Item) -> Iterator[Item]:
        """Yield the item, or the members of a downloaded .zip."""
        if item.data is not None and item.data[:4] == b"PK\x03\x04":
            try:
                zf = zipfile.ZipFile(io.BytesIO(item.data))
            except zipfile.BadZipFile as e:
                yield Item(item.source, error=f"broken .zip ({e})")
                return
            yield from _zip_members(zf, item.source, int(p.max_mb * 1e6))
        else:
            yield item

    with ThreadPoolExecutor(max_workers=p.workers) as ex:
        # map keeps input order, so the result does not depend on download timing; chunks keep
        # an early stop (max_images) from downloading everything that was queued
        step = 4 * p.workers
        for i in range(0, len(urls), step):
            for item in ex.map(one, urls[i:i + step]):
                yield from expand(item)


# --------------------------------------------------------------------------- validation
def inspect_image(data: bytes, *, min_size: int = 0) -> tuple[Optional[dict[str, Any]], Optional[str]]:
    """Decode ``data`` fully with Pillow.

    Returns ``(info, None)`` with info = {format, width, height, ext} for a valid image, or
    ``(None, reason)``.
    """
    from PIL import Image

    if not data:
        return None, "empty file"
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            fmt = im.format or "?"
            w, h = im.size
    except Image.DecompressionBombError as e:
        return None, f"image too large to decode safely ({e})"
    except Exception as e:  # Pillow raises many types for broken data
        msg = str(e) or type(e).__name__
        if "cannot identify image file" in msg:
            return None, "not an image"
        return None, f"broken image ({msg})"
    if w == 0 or h == 0:
        return None, "image has no pixels"
    if w < min_size or h < min_size:
        return None, f"too small ({w}x{h} < {min_size}x{min_size})"
    return {"format": fmt, "width": w, "height": h, "ext": FORMAT_EXT.get(fmt, fmt.lower())}, None


# --------------------------------------------------------------------------- run
def run(inputs: dict[str, list[Any]], params: Params, out_dir: Path,
        progress: ProgressFn = no_progress) -> dict:
    """Collect, validate and store the images of every source.

    Parameters
    ----------
    inputs : dict
        ``{"source": [...]}``: folders, ``.zip`` files, image files, or http(s) URLs.
    params : Params
    out_dir : Path
        Receives ``images/<sha256[:16]>.<ext>`` and ``sources.jsonl``.

    Returns
    -------
    dict
        ``{ok, skipped, duplicate, pages, sources, skipped_items: [{source, reason}], bytes}``.
    """
    _validate_params(params)
    sources = [_norm_source(s) for s in (inputs.get("source") or [])]
    if not sources:
        raise InputError("scrape: no source given; pass a folder, a .zip file or an http(s) URL")
    for s in sources:
        if not _is_url(s) and not Path(s).exists():
            raise InputError(f"{s}: no such file or folder")
    out_dir = Path(out_dir)
    img_dir = out_dir / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    max_bytes = int(params.max_mb * 1e6)
    fetcher: Optional[_Fetcher] = None
    pages_budget = [params.max_pages]
    n_pages = 0

    def items() -> Iterator[Item]:
        nonlocal fetcher, n_pages
        for s in sources:
            if _is_url(s):
                if fetcher is None:
                    fetcher = _Fetcher(out_dir / FETCH_DIR, params.timeout, max_bytes)
                before = pages_budget[0]
                urls, failed = _crawl(s, fetcher, params, pages_budget, progress)
                n_pages += before - pages_budget[0]
                yield from failed
                yield from _url_items(urls, fetcher, params, frozenset(sources))
            else:
                p = Path(s)
                if p.is_dir():
                    yield from _folder_items(p, max_bytes)
                elif p.suffix.lower() == ".zip":
                    yield from _zip_items(p, max_bytes)
                else:
                    yield _file_item(p, max_bytes)

    rows: list[dict[str, Any]] = []
    by_hash: dict[str, str] = {}
    counts = {"ok": 0, "skipped": 0, "duplicate": 0}
    total_bytes = 0
    t0 = time.time()
    for item in items():
        if counts["ok"] >= params.max_images:
            log.info("max_images=%d reached; stopping", params.max_images)
            break
        row: dict[str, Any] = {"source": item.source, "status": "skipped", "reason": item.error or "",
                               "sha256": None, "path": None, "bytes": None, "width": None,
                               "height": None, "format": None}
        if item.data is not None:
            row["bytes"] = len(item.data)
            row["sha256"] = hashlib.sha256(item.data).hexdigest()
            info, why = inspect_image(item.data, min_size=params.min_size)
            if info is None:
                row["reason"] = why
            else:
                row.update(width=info["width"], height=info["height"], format=info["format"])
                rel = f"images/{row['sha256'][:16]}.{info['ext']}"
                row["path"] = rel
                if row["sha256"] in by_hash:
                    row["status"] = "duplicate"
                    row["reason"] = f"same content as {by_hash[row['sha256']]}"
                else:
                    by_hash[row["sha256"]] = item.source
                    dest = out_dir / rel
                    if not dest.exists() or dest.stat().st_size != len(item.data):
                        atomic_write_bytes(dest, item.data)
                    row["status"] = "ok"
                    row["reason"] = ""
                    total_bytes += len(item.data)
        counts[row["status"]] += 1
        rows.append(row)
        if row["status"] == "skipped":
            log.info("skipped %s: %s", item.source, row["reason"])
        progress("scrape", len(rows), None, ok=counts["ok"], skipped=counts["skipped"])

    atomic_write_text(out_dir / "sources.jsonl",
                      "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    reused = fetcher.reused if fetcher else 0
    if counts["ok"] == 0:
        skipped = [r for r in rows if r["status"] == "skipped"]
        detail = "; ".join(f"{Path(r['source']).name if not _is_url(r['source']) else r['source']}: "
                           f"{r['reason']}" for r in skipped[:3])
        more = f" (and {len(skipped) - 3} more)" if len(skipped) > 3 else ""
        what = ", ".join(sources)
        if not rows:
            raise InputError(f"{what}: no files found; the source is empty")
        raise InputError(f"{what}: no usable image among {len(rows)} item(s): {detail}{more}")
    if fetcher is not None:
        shutil.rmtree(out_dir / FETCH_DIR, ignore_errors=True)
    # an interrupted earlier run may have stored images this run did not keep (a site changed)
    kept = {r["path"] for r in rows if r["status"] == "ok"}
    for f in img_dir.iterdir():
        if f"images/{f.name}" not in kept:
            f.unlink()
    return {
        "ok": counts["ok"],
        "skipped": counts["skipped"],
        "duplicate": counts["duplicate"],
        "pages": n_pages,
        "bytes": total_bytes,
        "sources": sources,
        "refetch_avoided": reused,
        "seconds": round(time.time() - t0, 3),
        "skipped_items": [{"source": r["source"], "reason": r["reason"]}
                          for r in rows if r["status"] == "skipped"],
    }


def load_sources(artifact: os.PathLike | str) -> list[dict[str, Any]]:
    """Read ``sources.jsonl`` of a scrape artifact (list of row dicts)."""
    path = Path(artifact) / "sources.jsonl" if Path(artifact).is_dir() else Path(artifact)
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
