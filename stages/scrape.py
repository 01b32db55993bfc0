"""scrape: gather screenshots from folders, .zip files, web pages or NES ROMs you own.

Every item is decoded fully with Pillow; valid images go to images/<sha256[:16]>.<ext>
(identical content kept once) and every item gets a row in sources.jsonl (ok / skipped /
duplicate, with the reason and where it came from: page, image URL, game).  Folders and zips
are taken whole unless --max-images is set; a web crawl stops at --max-web-images and
--max-pages (a cap that drops anything says so in a warning).  Web pages: <img>, srcset and
<a href> links to images or .zip files are collected and same-host page links followed to
--depth, politely (robots.txt, a per-host rate, retries with back-off) and only to public
addresses unless --allow-private.  A re-scrape asks with ETag / Last-Modified, so an unchanged
gallery costs almost nothing; an interrupted run resumes.  A .nes ROM is played in an emulator
and its frames captured.  See docs/data.md.
"""
from __future__ import annotations

import enum
import hashlib
import io
import json
import logging
import os
import re
import shutil
import time
import urllib.parse
import zipfile
import zlib
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

from stages import _capture, _fetch
from stages._common import (IMAGE_SUFFIXES, InputError, ParamError, ProgressFn, StageParams,
                            atomic_write_bytes, atomic_write_text, name_prefix, no_progress,
                            param, pixel_limit_reason)

NAME = "scrape"
INPUTS = {"source": None}
OPTIONAL_INPUTS = ()
LIBS = ("pillow", "cynes")   # cynes: the emulator that plays .nes sources

log = logging.getLogger("tilegan.scrape")

#: Pillow format name -> file extension used in the store
FORMAT_EXT = {"PNG": "png", "JPEG": "jpg", "GIF": "gif", "BMP": "bmp", "WEBP": "webp",
              "TIFF": "tif", "PPM": "ppm", "TGA": "tga", "ICO": "ico", "PCX": "pcx"}
ROBOTS_AGENT = _fetch.ROBOTS_AGENT
USER_AGENT = _fetch.USER_AGENT
SOURCES_FILE = "sources.jsonl"
#: this run's resumable state inside the work folder (deleted when the stage finishes)
FETCH_DIR = "_fetch"
#: the HTTP cache (validators + bodies), kept beside the stage's artifacts across runs
HTTP_CACHE_DIR = ".http"
ROM_SUFFIXES = (".nes",)
#: link targets never fetched as pages (downloads, media, documents)
NOT_PAGES = frozenset(".7z .avi .bin .bz2 .css .dmg .doc .docx .epub .exe .flac .gz .ico .iso .jar .js "
                      ".json .mid .mkv .mov .mp3 .mp4 .msi .nes .ogg .pdf .ppt .rar .rom .sfc .smc "
                      ".svg .tar .tgz .ttf .txt .wav .webm .woff .woff2 .xml .xz .zip".split())


@dataclass(frozen=True)
class Params(StageParams):
    STAGE = "scrape"

    depth: int = param(1, help="how many levels of same-host page links to follow from each URL "
                              "(0: only the given page)", min=0, max=20)
    max_pages: int = param(50, help="stop following links after this many pages per run", min=1)
    max_images: int = param(0, help="stop after this many usable images from all sources "
                                     "(0: no limit; folders and zips are taken whole)", min=0)
    max_web_images: int = param(2000, help="a web crawl stops after this many usable images "
                                           "(0: no limit)", min=0)
    min_size: int = param(16, help="skip images narrower or shorter than this many pixels", min=0)
    max_mb: float = param(50.0, help="skip items larger than this many megabytes (cut off while "
                                     "downloading)", min=0)
    timeout: float = param(20.0, help="seconds to wait for a web server to connect or to send "
                                      "more bytes", min=0)
    deadline: float = param(120.0, help="most seconds one web response may take in all (a server "
                                        "trickling bytes is cut off)", min=0)
    workers: int = param(4, help="parallel image downloads", min=1, max=64)
    per_host: int = param(2, help="requests in flight to one host at most", min=1, max=16)
    rate: float = param(2.0, help="request starts per second to one host at most (a robots.txt "
                                  "Crawl-delay slows it further)", min=0)
    retries: int = param(3, help="tries again after a network error, a 5xx or a 429 answer",
                         min=0, max=10)
    backoff: float = param(1.0, help="seconds before the first retry; doubled on each retry",
                           min=0)
    max_wait: float = param(60.0, help="longest wait before one retry; a server asking "
                                       "(Retry-After) for longer is not retried", min=0)
    max_redirects: int = param(5, help="redirects followed per request at most", min=0, max=30)
    robots: bool = param(True, help="obey each host's robots.txt for the pages and images it "
                                    "links (the URLs you give are always fetched)")
    any_host_images: bool = param(True, help="fetch images a page embeds or links from other hosts "
                                             "(pages are only followed on the same host)")
    allow_private: tuple[str, ...] = param((), help="private, loopback or link-local address "
                                                    "ranges to fetch from anyway, as CIDR "
                                                    "(127.0.0.1/32, 192.168.1.0/24) or 'all'")
    frames: int = param(600, help="NES ROMs: frames to emulate (60 per second of play)",
                        min=1, max=1_000_000)
    frame_every: int = param(30, help="NES ROMs: keep one frame in this many", min=1)
    seed: int = param(0, help="NES ROMs: seed of the random button presses", min=0)
    buttons: str = param("random", help="NES ROMs: 'random' (seeded) presses, or a script of "
                                        "frames:buttons steps, repeated, e.g. "
                                        "'60:none,20:start,200:right+b'")

    def check(self) -> None:
        super().check()
        for name in ("max_mb", "timeout", "deadline", "rate"):
            if getattr(self, name) <= 0:
                raise ParamError(f"scrape: {name} must be positive, got {getattr(self, name)!r}",
                                 field=name)
        if self.buttons.strip().lower() != "random":
            _capture.parse_script(self.buttons)
        try:
            _fetch.AddressPolicy.from_strings(self.allow_private)
        except ValueError as e:
            raise ParamError(f"scrape: allow_private: {e} (give CIDR ranges or 'all')",
                             field="allow_private") from None

    def fetch_policy(self) -> _fetch.FetchPolicy:
        return _fetch.FetchPolicy(
            timeout=self.timeout, deadline=self.deadline, max_bytes=int(self.max_mb * 1e6),
            retries=self.retries, backoff=self.backoff, max_wait=self.max_wait, rate=self.rate,
            per_host=self.per_host, max_redirects=self.max_redirects,
            connections=self.workers + 2,
            address=_fetch.AddressPolicy.from_strings(self.allow_private))


# --------------------------------------------------------------------------- records
class Kind(str, enum.Enum):
    """What a source, and so an item's origin, is."""

    FOLDER = "folder"
    ZIP = "zip"
    FILE = "file"
    WEB = "web"
    ROM = "rom"


class Status(str, enum.Enum):
    OK = "ok"
    SKIPPED = "skipped"
    DUPLICATE = "duplicate"


class Reason(str, enum.Enum):
    """Why an item was skipped (``reason_code`` in sources.jsonl; the summary counts them)."""

    NOT_IMAGE = "not_image"
    BROKEN = "broken_image"
    TOO_SMALL = "too_small"
    TOO_LARGE = "too_large"
    EMPTY = "empty"
    UNREADABLE = "unreadable"          # a local file or zip member that cannot be read
    ROBOTS = "robots"
    HTTP = _fetch.Failure.HTTP.value   # counted as http_<status>
    REFUSED = _fetch.Failure.REFUSED.value
    SCHEME = _fetch.Failure.SCHEME.value
    TIMEOUT = _fetch.Failure.TIMEOUT.value
    REDIRECTS = _fetch.Failure.REDIRECTS.value
    NETWORK = _fetch.Failure.NETWORK.value


@dataclass(frozen=True)
class Provenance:
    """Where an image came from, kept in sources.jsonl for later stages.

    ``game`` is the game's name when the source gives one: for web pages the nearest heading
    (h1-h3) before the image, else the page title, else the image's alt text; for local files
    the folder (or zip folder) holding them; for ROMs the file name.  ``game_from`` says which.
    """

    kind: Kind
    page_url: Optional[str] = None
    image_url: Optional[str] = None
    game: Optional[str] = None
    game_from: Optional[str] = None
    rom_sha256: Optional[str] = None
    frame: Optional[int] = None

    def to_json(self) -> dict[str, Any]:
        return dict(asdict(self), kind=self.kind.value)


@dataclass(frozen=True)
class Payload:
    """An item's bytes, or why there are none."""

    data: Optional[bytes] = None
    reason: Optional[Reason] = None
    message: str = ""
    status: Optional[int] = None       # the HTTP status for Reason.HTTP
    content_type: str = ""


@dataclass
class Item:
    """One candidate image: its name, its origin and how to get its bytes (lazily, so a cap
    that is reached stops reading)."""

    source: str
    provenance: Provenance
    load: Callable[[], Payload]


@dataclass
class SourceRow:
    """One row of sources.jsonl."""

    source: str
    status: Status
    provenance: Provenance
    reason: str = ""
    reason_code: str = ""
    sha256: Optional[str] = None
    path: Optional[str] = None
    bytes: Optional[int] = None
    width: Optional[int] = None
    height: Optional[int] = None
    format: Optional[str] = None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = self.status.value
        d["provenance"] = self.provenance.to_json()
        return d


@dataclass
class Budget:
    """The caps on usable images; counts what each cap dropped."""

    max_images: int = 0
    max_web_images: int = 0
    ok: int = 0
    ok_web: int = 0
    dropped: Counter = field(default_factory=Counter)

    def full(self, kind: Kind) -> Optional[str]:
        """The name of the cap that stops another item of ``kind``, or None."""
        if self.max_images and self.ok >= self.max_images:
            return "max_images"
        if kind is Kind.WEB and self.max_web_images and self.ok_web >= self.max_web_images:
            return "max_web_images"
        return None

    def room(self, kind: Kind) -> Optional[int]:
        """How many more usable images of ``kind`` the caps allow (None: no cap)."""
        left = [cap - n for cap, n in ((self.max_images, self.ok),
                                       (self.max_web_images if kind is Kind.WEB else 0, self.ok_web))
                if cap]
        return max(0, min(left)) if left else None

    def took(self, kind: Kind) -> None:
        self.ok += 1
        self.ok_web += kind is Kind.WEB


def _is_url(s: str) -> bool:
    return s.startswith(("http://", "https://"))


def _norm_source(item: Any) -> str:
    """str of an input item; repairs ``http:/host`` that ``Path('http://host')`` produces."""
    s = str(item)
    m = re.match(r"^(https?):/([^/].*)$", s)
    if m:
        s = f"{m.group(1)}://{m.group(2)}"
    return s


def _fixed(payload: Payload) -> Callable[[], Payload]:
    return lambda: payload


# --------------------------------------------------------------------------- sources
@dataclass(frozen=True)
class Source:
    kind: Kind
    location: str


def plan_sources(raw: Iterable[Any]) -> list[Source]:
    """Classify the user's sources; raise :class:`InputError` for none or a missing path."""
    out = []
    for item in raw:
        s = _norm_source(item)
        if _is_url(s):
            out.append(Source(Kind.WEB, s))
            continue
        p = Path(s)
        if not p.exists():
            raise InputError(f"{s}: no such file or folder")
        kind = (Kind.FOLDER if p.is_dir() else Kind.ZIP if p.suffix.lower() == ".zip"
                else Kind.ROM if p.suffix.lower() in ROM_SUFFIXES else Kind.FILE)
        out.append(Source(kind, s))
    if not out:
        raise InputError("scrape: no source given; pass a folder, a .zip file, a .nes ROM or an "
                         "http(s) URL")
    return out


# --------------------------------------------------------------------------- local sources
def _is_hidden(rel: str) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in Path(rel).parts)


def folder_items(folder: Path, max_bytes: int) -> Iterator[Item]:
    """Every file under ``folder`` (sorted, hidden ones left out); zips are opened.

    A file's game is its folder's name, unless the folder's files start with different names
    (``smb_01.png``, ``zelda_01.png`` side by side): then each file's name up to its first
    number (:func:`stages._common.name_prefix`)."""
    files = sorted(f for f in folder.rglob("*") if f.is_file()
                   and not _is_hidden(f.relative_to(folder).as_posix()))
    prefixes: dict[Path, set[str]] = {}
    for f in files:
        if f.suffix.lower() != ".zip":
            prefixes.setdefault(f.parent, set()).add(name_prefix(f.stem))
    for f in files:
        if f.suffix.lower() == ".zip":
            yield from zip_items(f, max_bytes)
        elif len(prefixes[f.parent]) > 1 and name_prefix(f.stem):
            yield file_item(f, max_bytes, game=name_prefix(f.stem), kind=Kind.FOLDER,
                            game_from="file name")
        else:
            yield file_item(f, max_bytes, game=f.parent.name or None, kind=Kind.FOLDER)


def file_item(f: Path, max_bytes: int, *, game: Optional[str] = None, kind: Kind = Kind.FILE,
              game_from: str = "folder") -> Item:
    def load() -> Payload:
        try:
            size = f.stat().st_size
            if size > max_bytes:
                return Payload(reason=Reason.TOO_LARGE, message=f"larger than max_mb="
                               f"{max_bytes / 1e6:g} ({size / 1e6:.2f} MB)")
            return Payload(f.read_bytes())
        except OSError as e:
            return Payload(reason=Reason.UNREADABLE, message=f"cannot read ({e.strerror or e})")

    return Item(str(f), Provenance(kind, game=game, game_from=game_from if game else None), load)


def zip_items(path: Path, max_bytes: int) -> Iterator[Item]:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:  # (#18)
        raise InputError(f"{path}: not a readable .zip file ({e})") from None
    with zf:
        yield from zip_members(zf, str(path), max_bytes,
                               Provenance(Kind.ZIP, game=path.stem, game_from="zip"))


def zip_members(zf: zipfile.ZipFile, name: str, max_bytes: int, origin: Provenance) -> Iterator[Item]:
    """Items of an open zip; a member in a folder takes the folder's name as its game."""
    infos = sorted((i for i in zf.infolist()
                    if i.filename and not i.is_dir() and not _is_hidden(i.filename)),
                   key=lambda i: i.filename)
    for info in infos:
        folder = Path(info.filename).parent.name
        prov = origin
        if folder and origin.game_from in (None, "zip"):
            prov = Provenance(origin.kind, origin.page_url, origin.image_url, folder, "zip folder")

        def load(info: zipfile.ZipInfo = info) -> Payload:
            too_big = Payload(reason=Reason.TOO_LARGE, message=f"larger than max_mb={max_bytes / 1e6:g}")
            if info.file_size > max_bytes:
                return too_big
            try:
                with zf.open(info) as f:
                    data = f.read(max_bytes + 1)   # the declared size may lie (zip bombs)
            except (zipfile.BadZipFile, OSError, RuntimeError, EOFError, NotImplementedError,
                    ValueError, zlib.error) as e:   # a name not UTF-8, bad deflate data (#18)
                return Payload(reason=Reason.UNREADABLE, message=f"cannot extract from the zip ({e})")
            return too_big if len(data) > max_bytes else Payload(data)

        yield Item(f"{name}!{info.filename}", prov, load)


# --------------------------------------------------------------------------- NES ROMs
def rom_items(path: Path, settings: _capture.CaptureSettings, budget: Budget,
              work: Path) -> Iterator[Item]:
    """The distinct frames of a ROM played in the emulator (see :mod:`stages._capture`), each
    with the ROM's sha256 and frame number in its provenance; stops when a cap is full."""
    sha = hashlib.sha256(_capture.read_rom(path)).hexdigest()
    origin = Provenance(Kind.ROM, game=_capture.game_title(path), game_from="rom", rom_sha256=sha)
    last = -1
    for frame in _capture.capture(path, settings, work=work / f"rom-{sha[:16]}",
                                  stop=lambda: budget.full(Kind.ROM) is not None):
        last = frame.index
        yield Item(f"{path}#frame={frame.index}", replace(origin, frame=frame.index),
                   _fixed(Payload(frame.png, content_type="image/png")))
    if budget.full(Kind.ROM) and last < settings.frames - 1:
        budget.dropped["rom_frames_not_played"] += settings.frames - 1 - last


# --------------------------------------------------------------------------- web pages
@dataclass
class ImageRef:
    """An image a page shows or links, with the text around it that may name the game."""

    url: str
    alt: str = ""
    heading: str = ""


@dataclass
class PageLinks:
    images: list[ImageRef] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    title: str = ""


def _text(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip()[:120]


class _PageParser(HTMLParser):
    """Collects image URLs (img src/srcset/data-src, a href to images or zips), page links,
    the title and the headings before each image."""

    def __init__(self, base: str):
        super().__init__(convert_charrefs=True)
        self.base = base
        self.page = PageLinks()
        self._heading = ""
        self._capture: Optional[str] = None
        self._buf: list[str] = []
        self._anchor: Optional[tuple[ImageRef, list[str]]] = None

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
        elif tag in ("title", "h1", "h2", "h3"):
            self._capture, self._buf = tag, []
        elif tag in ("img", "source"):
            cands = [a.get("src", ""), a.get("data-src", "")]
            for part in a.get("srcset", "").split(","):
                cands.append(part.strip().split(" ")[0] if part.strip() else "")
            alt = _text(a.get("alt", "") or a.get("title", ""))
            for c in cands:
                u = self._abs(c)
                if u:
                    self.page.images.append(ImageRef(u, alt, self._heading))
            if self._anchor and alt:
                self._anchor[1].append(alt)
        elif tag == "a" and a.get("href"):
            u = self._abs(a["href"])
            if u:
                if _looks_like_image(u) or _suffix(u) == ".zip":
                    ref = ImageRef(u, _text(a.get("title", "")), self._heading)
                    self.page.images.append(ref)   # a .zip is opened and its images taken
                    self._anchor = (ref, [])
                elif _suffix(u) not in NOT_PAGES:
                    self.page.links.append(u)

    def handle_endtag(self, tag: str) -> None:
        if tag == self._capture:
            text = _text("".join(self._buf))
            if tag == "title":
                self.page.title = self.page.title or text
            else:
                self._heading = text
            self._capture = None
        elif tag == "a" and self._anchor:
            ref, words = self._anchor
            ref.alt = ref.alt or _text(" ".join(words))
            self._anchor = None

    def handle_data(self, data: str) -> None:
        if self._capture:
            self._buf.append(data)
        if self._anchor:
            self._anchor[1].append(data)


def parse_page(html: str, base: str) -> PageLinks:
    """The images, links, title and headings of one HTML page (lenient with broken markup)."""
    parser = _PageParser(base)
    try:
        parser.feed(html)
        parser.close()
    except Exception as e:  # html.parser is lenient; be safe on odd input
        log.warning("%s: HTML not fully parsed (%s)", base, e)
    return parser.page


def game_name(ref: ImageRef, title: str) -> tuple[Optional[str], Optional[str]]:
    """(game, where it came from): nearest heading, else the page title, else the alt text.

    A title is cut at its first `` - `` / `` | `` / `` — `` (site names usually follow).
    """
    if ref.heading:
        return ref.heading, "heading"
    if title:
        return re.split(r"\s+[-|–—:]\s+", title)[0].strip() or title, "title"
    if ref.alt:
        return ref.alt, "alt"
    return None, None


def _suffix(url: str) -> str:
    name = urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1].lower()
    return name[name.rfind("."):] if "." in name.strip(".") else ""


def _looks_like_image(url: str) -> bool:
    return _suffix(url) in IMAGE_SUFFIXES


#: leading bytes of the formats scrape meets
MAGIC = ((b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpeg"), (b"GIF87a", "gif"),
         (b"GIF89a", "gif"), (b"BM", "bmp"), (b"II*\x00", "tiff"), (b"MM\x00*", "tiff"),
         (b"\x00\x00\x01\x00", "ico"), (b"PK\x03\x04", "zip"), (b"NES\x1a", "nes"))


def sniff(data: bytes) -> Optional[str]:
    """The format the first bytes announce ("png", "jpeg", ..., "zip", "html"), or None."""
    for magic, name in MAGIC:
        if data.startswith(magic):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    head = data[:1024].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<body" in head:
        return "html"
    return None


def _is_html(content_type: str, body: bytes) -> bool:
    ct = content_type.lower()
    if "html" in ct:
        return True
    if ct and not ct.startswith("text/"):
        return sniff(body) == "html" and not ct.startswith("image/")
    return sniff(body) == "html"


def _decode_html(content_type: str, body: bytes) -> str:
    m = re.search(r"charset=([\w-]+)", content_type, re.I)
    enc = m.group(1) if m else "utf-8"
    try:
        return body.decode(enc, errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class Found:
    """An image URL the crawl found, with the page that showed it."""

    url: str
    page_url: Optional[str]
    game: Optional[str] = None
    game_from: Optional[str] = None

    def provenance(self) -> Provenance:
        return Provenance(Kind.WEB, self.page_url, self.url, self.game, self.game_from)


@dataclass
class Crawl:
    """What a crawl from one start URL found."""

    images: list[Found] = field(default_factory=list)
    failed: list[Item] = field(default_factory=list)
    pages: int = 0
    pages_not_followed: int = 0


def _payload(f: _fetch.Fetched, what: str = "") -> Payload:
    """A failed fetch as a skip reason (``what`` prefixes the message, e.g. 'page not fetched: ')."""
    reason = Reason(f.failure.value) if f.failure else None
    return Payload(reason=reason, message=what + f.message, status=f.status,
                   content_type=f.content_type)


def _start_error(url: str, f: _fetch.Fetched) -> InputError:
    if f.failure in (_fetch.Failure.NETWORK, _fetch.Failure.TIMEOUT):
        return InputError(f"{url}: the URL does not answer ({f.message}); check the address and "
                          f"the network")
    if f.failure is _fetch.Failure.HTTP:
        return InputError(f"{url}: the server answered {f.message}; check the address")
    return InputError(f"{url}: {f.message}")


def crawl(start: str, fetcher: _fetch.Fetcher, p: Params, pages_left: list[int],
          progress: ProgressFn = no_progress) -> Crawl:
    """Breadth-first from ``start`` over same-host pages up to ``p.depth``.

    ``pages_left`` is the run's page budget (a one-element list, shared by all start URLs).
    Raises :class:`InputError` when ``start`` itself cannot be fetched.
    """
    first = fetcher.get(start)
    if not first.ok:
        raise _start_error(start, first)
    body = fetcher.body(first)
    result = Crawl()
    if not _is_html(first.content_type, body):
        result.images.append(Found(start, None))  # the URL is an image (or a zip) itself
        return result
    host = urllib.parse.urlsplit(first.final_url).netloc.lower()
    seen_img: set[str] = set()
    seen_pages = {start}
    queue: deque[tuple[str, int, Optional[_fetch.Fetched]]] = deque([(start, 0, first)])
    pages_left[0] -= 1
    while queue:
        url, d, got = queue.popleft()
        if got is None:
            if pages_left[0] <= 0:
                result.pages_not_followed += 1
                continue
            if p.robots and not fetcher.robots.allowed(url):
                result.failed.append(Item(url, Provenance(Kind.WEB, page_url=url), _fixed(Payload(
                    reason=Reason.ROBOTS, message="page not fetched: disallowed by robots.txt"))))
                continue
            pages_left[0] -= 1
            got = fetcher.get(url)
        if not got.ok:
            result.failed.append(Item(url, Provenance(Kind.WEB, page_url=url),
                                      _fixed(_payload(got, "page not fetched: "))))
            continue
        body = fetcher.body(got)
        if not _is_html(got.content_type, body):
            if got.content_type.lower().startswith("image/") and url not in seen_img:
                seen_img.add(url)
                result.images.append(Found(url, None))
            continue
        result.pages += 1
        progress("scrape: pages", result.pages, None)
        page = parse_page(_decode_html(got.content_type, body), got.final_url)
        for ref in page.images:
            same = urllib.parse.urlsplit(ref.url).netloc.lower() == host
            if ref.url not in seen_img and (same or p.any_host_images):
                seen_img.add(ref.url)
                result.images.append(Found(ref.url, url, *game_name(ref, page.title)))
        if d < p.depth:
            for u in page.links:
                if urllib.parse.urlsplit(u).netloc.lower() != host or u in seen_pages:
                    continue
                seen_pages.add(u)
                queue.append((u, d + 1, None))  # fetched when dequeued
    return result


def fetch_image(found: Found, fetcher: _fetch.Fetcher, *, robots: bool, given: frozenset[str]) -> Payload:
    """The bytes behind one found image URL (robots.txt checked unless the user gave it)."""
    if robots and found.url not in given and not fetcher.robots.allowed(found.url):
        return Payload(reason=Reason.ROBOTS, message="disallowed by robots.txt")
    got = fetcher.get(found.url)
    if not got.ok:
        return _payload(got)
    return Payload(fetcher.body(got), content_type=got.content_type)


def web_items(found: list[Found], fetcher: _fetch.Fetcher, p: Params, budget: Budget,
              given: frozenset[str]) -> Iterator[Item]:
    """Items for found image URLs, downloaded ``p.workers`` at a time in input order (so the
    result does not depend on timing); a downloaded .zip yields its members.  Once a cap is
    full the rest are yielded unfetched (the caller counts them as dropped)."""
    max_bytes = int(p.max_mb * 1e6)

    def expand(f: Found, got: Payload) -> Iterator[Item]:
        if got.data is not None and sniff(got.data) == "zip":
            try:
                zf = zipfile.ZipFile(io.BytesIO(got.data))
            except zipfile.BadZipFile as e:
                yield Item(f.url, f.provenance(), _fixed(Payload(reason=Reason.UNREADABLE,
                                                                 message=f"broken .zip ({e})")))
                return
            yield from zip_members(zf, f.url, max_bytes, f.provenance())
        else:
            yield Item(f.url, f.provenance(), _fixed(got))

    def get(f: Found) -> Payload:
        return fetch_image(f, fetcher, robots=p.robots, given=given)

    i = 0
    with ThreadPoolExecutor(max_workers=p.workers) as ex:
        while i < len(found):
            if budget.full(Kind.WEB):
                for f in found[i:]:
                    yield Item(f.url, f.provenance(), lambda f=f: get(f))
                return
            # never more in flight than the caps still need, so a cap stops the downloads
            room = budget.room(Kind.WEB)
            step = 4 * p.workers if room is None else min(4 * p.workers, room)
            chunk = found[i:i + step]
            i += len(chunk)
            for f, g in zip(chunk, ex.map(get, chunk)):
                yield from expand(f, g)


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
            too_big = pixel_limit_reason(*im.size)   # before decoding (#18): a pixel bomb
            if too_big:
                return None, too_big
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


def judge(payload: Payload, *, min_size: int) -> tuple[Optional[dict[str, Any]], Optional[Reason], str]:
    """Validate an item's bytes: ``(info, None, "")`` or ``(None, reason, message)``.

    Magic bytes first (an HTML page served as an image is named as such), then a full decode.
    """
    if payload.data is None:
        return None, payload.reason or Reason.UNREADABLE, payload.message
    if sniff(payload.data) == "html":
        return None, Reason.NOT_IMAGE, "not an image (an HTML page)"
    info, why = inspect_image(payload.data, min_size=min_size)
    if info is not None:
        return info, None, ""
    ct = payload.content_type.split(";")[0].strip().lower()
    if why == "not an image":
        return None, Reason.NOT_IMAGE, why + (f" (served as {ct})" if ct and not ct.startswith("image/")
                                              else "")
    if why == "empty file":
        return None, Reason.EMPTY, why
    if why.startswith("too small"):
        return None, Reason.TOO_SMALL, why
    if why.startswith("image too large"):
        return None, Reason.TOO_LARGE, why
    return None, Reason.BROKEN, why


class ImageStore:
    """``images/<sha256[:16]>.<ext>`` under an artifact folder, written atomically."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.images = self.root / "images"
        self.images.mkdir(parents=True, exist_ok=True)

    def put(self, sha256: str, ext: str, data: bytes) -> str:
        rel = f"images/{sha256[:16]}.{ext}"
        dest = self.root / rel
        if not dest.exists() or dest.stat().st_size != len(data):
            atomic_write_bytes(dest, data)
        return rel

    def prune(self, keep: set[str]) -> None:
        """Delete stored images no kept row names (an interrupted earlier run's leftovers)."""
        for f in self.images.iterdir():
            if f"images/{f.name}" not in keep:
                f.unlink()


def collect(items: Iterable[Item], store: ImageStore, *, min_size: int, budget: Budget,
            progress: ProgressFn = no_progress) -> list[SourceRow]:
    """Validate, de-duplicate and store every item; one row each.  Items past a full cap are
    not read, only counted in ``budget.dropped``."""
    rows: list[SourceRow] = []
    by_hash: dict[str, str] = {}
    for item in items:
        cap = budget.full(item.provenance.kind)
        if cap:
            budget.dropped[cap] += 1
            continue
        payload = item.load()
        row = SourceRow(item.source, Status.SKIPPED, item.provenance)
        if payload.data is not None:
            row.bytes = len(payload.data)
            row.sha256 = hashlib.sha256(payload.data).hexdigest()
        info, reason, message = judge(payload, min_size=min_size)
        if info is None:
            row.reason = message
            row.reason_code = reason.value if reason else ""
            if reason is Reason.HTTP and payload.status:
                row.reason_code = f"http_{payload.status}"
            if message.startswith("page not fetched"):
                row.reason_code = "page_" + row.reason_code
            log.info("skipped %s: %s", item.source, message)
        else:
            row.width, row.height, row.format = info["width"], info["height"], info["format"]
            row.path = f"images/{row.sha256[:16]}.{info['ext']}"
            if row.sha256 in by_hash:
                row.status = Status.DUPLICATE
                row.reason = f"same content as {by_hash[row.sha256]}"
            else:
                by_hash[row.sha256] = item.source
                store.put(row.sha256, info["ext"], payload.data)
                row.status = Status.OK
                budget.took(item.provenance.kind)
        rows.append(row)
        progress("scrape", len(rows), None, ok=budget.ok)
    return rows


# --------------------------------------------------------------------------- the web session
class WebSession:
    """The fetcher for a run, opened on the first URL: the HTTP cache lives beside the stage's
    artifacts (``<out_dir>/../.http``), this run's journal in ``<out_dir>/_fetch``."""

    def __init__(self, out_dir: Path, params: Params):
        self.out_dir = Path(out_dir)
        self.params = params
        self.fetcher: Optional[_fetch.Fetcher] = None
        self.pages = 0
        self.pages_left = [params.max_pages]
        self.pages_not_followed = 0

    def open(self) -> _fetch.Fetcher:
        if self.fetcher is None:
            cache = _fetch.HttpCache(http_cache_dir(self.out_dir))
            self.fetcher = _fetch.Fetcher(self.params.fetch_policy(), cache,
                                          journal=self.out_dir / FETCH_DIR / "journal.jsonl")
        return self.fetcher

    def items(self, start: str, budget: Budget, given: frozenset[str],
              progress: ProgressFn) -> Iterator[Item]:
        if budget.full(Kind.WEB):
            log.warning("%s: not crawled, the image cap is already reached", start)
            budget.dropped["sources_not_read"] += 1
            return
        fetcher = self.open()
        found = crawl(start, fetcher, self.params, self.pages_left, progress)
        self.pages += found.pages
        self.pages_not_followed += found.pages_not_followed
        yield from found.failed
        yield from web_items(found.images, fetcher, self.params, budget, given)

    def counts(self) -> dict[str, int]:
        c = dict(self.fetcher.counts) if self.fetcher else {}
        return {"pages": self.pages, "requests": c.get("requests", 0),
                "not_modified": c.get("not_modified", 0), "refetch_avoided": c.get("resumed", 0),
                "retries": c.get("retries", 0)}

    def finish(self) -> None:
        """After a successful run: drop the journal, compact the HTTP cache."""
        if self.fetcher is not None:
            self.fetcher.close()
            self.fetcher.cache.compact()
        shutil.rmtree(self.out_dir / FETCH_DIR, ignore_errors=True)

    def close(self) -> None:
        if self.fetcher is not None:
            self.fetcher.close()


def http_cache_dir(out_dir: Path) -> Path:
    """Where the HTTP cache lives: beside the stage's artifacts (``out/cache/scrape/.http``),
    so every scrape run, whatever its parameters, can revalidate what an earlier one fetched."""
    return Path(out_dir).resolve().parent / HTTP_CACHE_DIR


def iter_items(sources: list[Source], p: Params, web: WebSession, budget: Budget,
               progress: ProgressFn = no_progress) -> Iterator[Item]:
    """Every candidate item of every source, in order."""
    max_bytes = int(p.max_mb * 1e6)
    given = frozenset(s.location for s in sources if s.kind is Kind.WEB)
    for s in sources:
        path = Path(s.location)
        if s.kind is Kind.WEB:
            yield from web.items(s.location, budget, given, progress)
        elif s.kind is Kind.FOLDER:
            yield from folder_items(path, max_bytes)
        elif s.kind is Kind.ZIP:
            yield from zip_items(path, max_bytes)
        elif s.kind is Kind.ROM:
            yield from rom_items(path, _capture.CaptureSettings.from_params(p), budget,
                                 web.out_dir / FETCH_DIR)
        else:
            yield file_item(path, max_bytes)


def warn_caps(budget: Budget, web: WebSession, p: Params) -> dict[str, int]:
    """One warning per cap that dropped input, with the count; the counts for the summary."""
    dropped = dict(budget.dropped)
    if web.pages_not_followed:
        dropped["max_pages"] = web.pages_not_followed
    text = {
        "max_images": f"max_images={p.max_images} reached: {{n}} item(s) not taken "
                      f"(0 takes everything)",
        "max_web_images": f"max_web_images={p.max_web_images} reached: {{n}} item(s) not taken "
                          f"(0 takes everything)",
        "max_pages": f"max_pages={p.max_pages} reached: {{n}} linked page(s) not fetched",
        "sources_not_read": "an image cap was full: {n} source(s) not read",
        "rom_frames_not_played": f"max_images={p.max_images} reached: {{n}} ROM frame(s) not played",
    }
    for cap, n in sorted(dropped.items()):
        log.warning("scrape: " + text[cap].format(n=n))
    return dropped


def no_usable_error(sources: list[Source], rows: list[SourceRow]) -> InputError:
    what = ", ".join(s.location for s in sources)
    if not rows:
        return InputError(f"{what}: no files found; the source is empty")
    skipped = [r for r in rows if r.status is Status.SKIPPED]
    detail = "; ".join(f"{r.source if _is_url(r.source) else Path(r.source).name}: {r.reason}"
                       for r in skipped[:3])
    more = f" (and {len(skipped) - 3} more)" if len(skipped) > 3 else ""
    return InputError(f"{what}: no usable image among {len(rows)} item(s): {detail}{more}")


def summarize(rows: list[SourceRow], web: WebSession, dropped: dict[str, int],
              sources: list[Source], seconds: float) -> dict[str, Any]:
    """The JSON summary: counts, counts per reason, the caps that dropped input, web figures."""
    count = Counter(r.status for r in rows)
    skipped = [r for r in rows if r.status is Status.SKIPPED]
    return {
        "ok": count[Status.OK], "skipped": count[Status.SKIPPED],
        "duplicate": count[Status.DUPLICATE],
        "bytes": sum(r.bytes or 0 for r in rows if r.status is Status.OK),
        "reasons": dict(sorted(Counter(r.reason_code for r in skipped).items())),
        "capped": dropped, **web.counts(),
        "sources": [s.location for s in sources], "seconds": round(seconds, 3),
        "skipped_items": [{"source": r.source, "reason": r.reason} for r in skipped],
    }


# --------------------------------------------------------------------------- run
def run(inputs: dict[str, list[Any]], params: Params, out_dir: Path,
        progress: ProgressFn = no_progress) -> dict:
    """Collect, validate and store the images of every source.

    ``inputs["source"]``: folders, ``.zip`` files, image files, ``.nes`` ROMs or http(s) URLs.
    ``out_dir`` receives ``images/<sha256[:16]>.<ext>`` and ``sources.jsonl``.  Returns the
    summary of :func:`summarize`.
    """
    sources = plan_sources(inputs.get("source") or [])
    out_dir = Path(out_dir)
    store = ImageStore(out_dir)
    budget = Budget(params.max_images, params.max_web_images)
    web = WebSession(out_dir, params)
    t0 = time.monotonic()
    try:
        rows = collect(iter_items(sources, params, web, budget, progress), store,
                       min_size=params.min_size, budget=budget, progress=progress)
    finally:
        web.close()
    atomic_write_text(out_dir / SOURCES_FILE,
                      "".join(json.dumps(r.to_json(), sort_keys=True) + "\n" for r in rows))
    dropped = warn_caps(budget, web, params)
    if budget.ok == 0:
        raise no_usable_error(sources, rows)
    web.finish()
    store.prune({r.path for r in rows if r.status is Status.OK and r.path})
    return summarize(rows, web, dropped, sources, time.monotonic() - t0)


def load_sources(artifact: os.PathLike | str) -> list[dict[str, Any]]:
    """Read ``sources.jsonl`` of a scrape artifact (list of row dicts)."""
    path = Path(artifact) / SOURCES_FILE if Path(artifact).is_dir() else Path(artifact)
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
