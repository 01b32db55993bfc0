"""A local web site for scrape tests: real HTTP on 127.0.0.1, random ports, no network.

``http_site`` serves a temporary folder laid out like this (``main`` host)::

    index.html    <img src=a.png> <img src=fake.png> <img src=broken.png> <img src=missing.png>
                  <a href=b.gif> <a href=page2.html> <a href=gone.html>
                  <a href=OTHER/outside.html> <img src=OTHER/remote.png>
    page2.html    <img src=c.png> <img src=a.png> <img src=a_copy.png> <a href=page3.html>
    page3.html    <img src=d.png>                 (only reached with depth >= 2)
    a.png b.gif c.png d.png (valid, distinct), a_copy.png (same bytes as a.png),
    fake.png (text), broken.png (a truncated PNG); missing.png and gone.html answer 404.

and a second server (``other`` host: same address, another port, so another host for the
crawler) with ``outside.html`` and ``remote.png``.  Every request path is logged per server.

``gallery`` serves a generated gallery whose routes fail on purpose (5xx, 429, trickling, endless
bodies, corrupt and non-image content, redirect loops, robots.txt, redirects to private hosts);
see :func:`build_gallery`.
"""
from __future__ import annotations

import hashlib
import io
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import pytest


def png_bytes(seed: int, size: int = 32, fmt: str = "PNG") -> bytes:
    """A small distinct image (random 4x4 blocks) encoded in ``fmt``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (size // 4, size // 4, 3), dtype=np.uint8)
    a = np.repeat(np.repeat(a, 4, 0), 4, 1)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format=fmt)
    return buf.getvalue()


@dataclass
class Server:
    root: Path
    base: str = ""
    requests: list[str] = field(default_factory=list)
    httpd: ThreadingHTTPServer | None = None


def _serve(root: Path) -> Server:
    srv = Server(root)

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def do_GET(self):  # noqa: N802 (http.server naming)
            srv.requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):  # keep test output quiet
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    srv.httpd = httpd
    srv.base = f"http://127.0.0.1:{httpd.server_address[1]}/"
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02},
                     daemon=True).start()
    return srv


def _stop(srv: Server) -> None:
    if srv.httpd is not None:
        srv.httpd.shutdown()
        srv.httpd.server_close()


@dataclass
class Site:
    main: Server
    other: Server

    @property
    def url(self) -> str:
        return self.main.base + "index.html"


def build_site(main_root: Path, other_root: Path, other_base: str) -> None:
    """Write the pages and images described in the module docstring."""
    main_root.mkdir(parents=True, exist_ok=True)
    other_root.mkdir(parents=True, exist_ok=True)
    a = png_bytes(1)
    (main_root / "a.png").write_bytes(a)
    (main_root / "a_copy.png").write_bytes(a)
    (main_root / "b.gif").write_bytes(png_bytes(2, fmt="GIF"))
    (main_root / "c.png").write_bytes(png_bytes(3))
    (main_root / "d.png").write_bytes(png_bytes(4))
    (main_root / "fake.png").write_bytes(b"this is not an image, only text\n")
    (main_root / "broken.png").write_bytes(png_bytes(5)[:60])
    (main_root / "index.html").write_text(f"""<!doctype html><html><body>
<h1>Screens</h1>
<img src="a.png" alt="a"><img src="fake.png"><img src="broken.png"><img src="missing.png">
<a href="b.gif">b</a> <a href="page2.html">more</a> <a href="gone.html">gone</a>
<a href="{other_base}outside.html">elsewhere</a> <img src="{other_base}remote.png">
<a href="mailto:x@example.com">mail</a> <a href="#top">top</a>
</body></html>""", encoding="utf-8")
    (main_root / "page2.html").write_text("""<html><body>
<img src="c.png"><img src="a.png"><img srcset="a_copy.png 1x, c.png 2x"><a href="page3.html">deeper</a>
</body></html>""", encoding="utf-8")
    (main_root / "page3.html").write_text('<html><body><img src="d.png"></body></html>',
                                          encoding="utf-8")
    (other_root / "outside.html").write_text('<html><body><img src="ext.png"></body></html>',
                                             encoding="utf-8")
    (other_root / "remote.png").write_bytes(png_bytes(6))
    (other_root / "ext.png").write_bytes(png_bytes(7))


@pytest.fixture
def http_site(tmp_path: Path) -> Iterator[Site]:
    """Two local HTTP servers serving the test site; see the module docstring."""
    other = _serve(tmp_path / "other_host")
    main = _serve(tmp_path / "main_host")
    (tmp_path / "other_host").mkdir(exist_ok=True)
    build_site(tmp_path / "main_host", tmp_path / "other_host", other.base)
    try:
        yield Site(main, other)
    finally:
        _stop(main)
        _stop(other)


@pytest.fixture
def dead_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (a port that was just closed)."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/index.html"


# --------------------------------------------------------------------------- a gallery with faults
class Gallery:
    """A generated gallery on 127.0.0.1 whose routes misbehave on purpose (see :func:`gallery`).

    ``hits`` logs ``(path, status, request headers)`` per request; ``sent`` counts the body bytes
    a route managed to write; ``max_in_flight`` is the most requests handled at once.
    """

    def __init__(self) -> None:
        self.routes: dict[str, Callable[[BaseHTTPRequestHandler], int]] = {}
        self.hits: list[tuple[str, int, dict[str, str]]] = []
        self.sent: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.base = ""
        self.port = 0
        self.httpd: Optional[ThreadingHTTPServer] = None

    def url(self, path: str) -> str:
        return self.base + path.lstrip("/")

    def paths(self, status: Optional[int] = None) -> list[str]:
        return [p for p, s, _ in self.hits if status is None or s == status]

    # ------------------------------------------------------------------ route builders
    def static(self, path: str, body: bytes, ctype: str = "image/png") -> None:
        """A resource with ETag and Last-Modified that answers conditional requests with 304."""
        tag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        stamp = "Mon, 01 Jan 2024 00:00:00 GMT"

        def route(h: BaseHTTPRequestHandler) -> int:
            inm, ims = h.headers.get("If-None-Match"), h.headers.get("If-Modified-Since")
            if (inm == tag) if inm is not None else (ims == stamp):   # RFC 9110: ETag first
                h.send_response(304)
                h.send_header("ETag", tag)
                h.send_header("Content-Length", "0")
                h.end_headers()
                return 304
            return send(h, 200, body, ctype, [("ETag", tag), ("Last-Modified", stamp)])

        self.routes[path] = route

    def failing_first(self, path: str, body: bytes, status: int, extra=()) -> None:
        """``status`` on the first request, then the body."""
        def route(h: BaseHTTPRequestHandler) -> int:
            if self.calls[path] == 1:
                return send(h, status, b"try later", "text/plain", list(extra))
            return send(h, 200, body, "image/png")

        self.routes[path] = route

    def redirect(self, path: str, location: str) -> None:
        self.routes[path] = lambda h: send(h, 302, b"", "text/plain", [("Location", location)])

    def trickle(self, path: str, *, n: int = 100, delay: float = 1.0, in_headers: bool = False) -> None:
        """Send one byte every ``delay`` seconds (of the body, or of the headers)."""
        def route(h: BaseHTTPRequestHandler) -> int:
            head = (f"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n"
                    f"Content-Length: {n}\r\n\r\n").encode()
            try:
                if in_headers:
                    for i in range(len(head)):
                        h.wfile.write(head[i:i + 1])
                        h.wfile.flush()
                        time.sleep(delay)
                else:
                    h.wfile.write(head)
                for _ in range(n):
                    h.wfile.write(b"\x00")
                    h.wfile.flush()
                    self.sent[path] = self.sent.get(path, 0) + 1
                    time.sleep(delay)
            except OSError:
                pass
            h.close_connection = True
            return 200

        self.routes[path] = route

    def endless(self, path: str, total: int) -> None:
        """A body of ``total`` bytes with no Content-Length, written until the client hangs up."""
        def route(h: BaseHTTPRequestHandler) -> int:
            h.send_response(200)
            h.send_header("Content-Type", "image/png")
            h.send_header("Connection", "close")
            h.end_headers()
            chunk = b"\x89PNG" + b"\x00" * (64 * 1024 - 4)
            try:
                while self.sent.get(path, 0) < total:
                    h.wfile.write(chunk)
                    self.sent[path] = self.sent.get(path, 0) + len(chunk)
            except OSError:
                pass
            h.close_connection = True
            return 200

        self.routes[path] = route


def send(h: BaseHTTPRequestHandler, status: int, body: bytes, ctype: str,
         headers: list[tuple[str, str]] = ()) -> int:
    h.send_response(status)
    h.send_header("Content-Type", ctype)
    h.send_header("Content-Length", str(len(body)))
    for k, v in headers:
        h.send_header(k, v)
    h.end_headers()
    h.wfile.write(body)
    return status


def serve_gallery(g: Gallery) -> Gallery:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):  # noqa: N802 (http.server naming)
            path = self.path.split("?", 1)[0]
            with g.lock:
                g.calls[path] = g.calls.get(path, 0) + 1
                g.in_flight += 1
                g.max_in_flight = max(g.max_in_flight, g.in_flight)
            try:
                route = g.routes.get(path)
                status = route(self) if route else send(self, 404, b"not here", "text/plain")
            finally:
                with g.lock:
                    g.in_flight -= 1
            g.hits.append((path, status, {k: v for k, v in self.headers.items()}))

        def log_message(self, *args):
            pass

    class Quiet(ThreadingHTTPServer):
        def handle_error(self, request, client_address):  # a client hanging up is expected here
            pass

    httpd = Quiet(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    g.httpd = httpd
    g.port = httpd.server_address[1]
    g.base = f"http://127.0.0.1:{g.port}/"
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    return g


def corrupt_png(seed: int) -> bytes:
    """A PNG whose header is fine and whose pixel data is garbage."""
    data = bytearray(png_bytes(seed))
    idat = data.index(b"IDAT")
    for i in range(idat + 8, min(idat + 40, len(data) - 16)):
        data[i] ^= 0x5A
    return bytes(data)


def build_gallery(g: Gallery) -> None:
    """The pages and faults the gallery serves (private.test resolves to 10.0.0.7 in the tests)::

        /robots.txt           Disallow: /private/
        /index.html           title "Contra - Screens | Test Gallery"; <h2>Contra</h2> then
                              ok1, flaky (500 then 200), busy (429 Retry-After: 1 then 200),
                              slow (1 byte/s), huge (endless), corrupt PNG, page.png (an HTML
                              page), data.bin (octet-stream), missing (404), a redirect loop,
                              private/x.png (robots), go/private.png (redirect to 10.0.0.7),
                              go/file.png (redirect to file://); <h2>Mega Man</h2> then ok2;
                              links to sub/page.html and private/secret.html (robots)
        /sub/page.html        title "Castlevania - Sub page": ../img/ok3.png, /img/ok4.png, ok5.png
    """
    g.routes["/robots.txt"] = lambda h: send(h, 200, b"User-agent: *\nDisallow: /private/\n",
                                             "text/plain")
    g.static("/index.html", f"""<!doctype html><html><head><title>Contra - Screens | Test Gallery</title>
</head><body><h1>Gallery</h1><h2>Contra</h2>
<img src="img/ok1.png" alt="Contra stage 1"> <img src="img/flaky.png"> <img src="img/busy.png">
<img src="img/slow.png"> <img src="img/huge.png"> <img src="img/corrupt.png">
<img src="img/page.png"> <img src="img/data.bin"> <img src="img/missing.png">
<img src="loop/a.png"> <img src="private/x.png"> <img src="go/private.png"> <img src="go/file.png">
<h2>Mega Man</h2><a href="img/ok2.png">Mega Man title screen</a>
<a href="sub/page.html">more</a> <a href="private/secret.html">secret</a>
</body></html>""".encode(), "text/html; charset=utf-8")
    g.static("/sub/page.html", b"""<html><head><title>Castlevania - Sub page</title></head><body>
<img src="../img/ok3.png"><img src="/img/ok4.png"><img src="ok5.png" alt="hall">
</body></html>""", "text/html")
    for i, path in enumerate(("/img/ok1.png", "/img/ok2.png", "/img/ok3.png", "/img/ok4.png",
                              "/sub/ok5.png", "/private/x.png")):
        g.static(path, png_bytes(40 + i))
    g.static("/private/secret.html", b"<html><body><img src='/img/ok1.png'></body></html>",
             "text/html")
    g.failing_first("/img/flaky.png", png_bytes(50), 500)
    g.failing_first("/img/busy.png", png_bytes(51), 429, [("Retry-After", "1")])
    g.trickle("/img/slow.png")
    g.endless("/img/huge.png", 64 * 1024 * 1024)
    g.static("/img/corrupt.png", corrupt_png(52))
    g.static("/img/page.png", b"<!doctype html><html><body>Not found, sorry</body></html>",
             "text/html")
    g.static("/img/data.bin", bytes(range(256)) * 4, "application/octet-stream")
    g.redirect("/loop/a.png", "/loop/b.png")
    g.redirect("/loop/b.png", "/loop/a.png")
    g.redirect("/go/private.png", f"http://private.test:{g.port}/img/ok1.png")
    g.redirect("/go/file.png", "file:///etc/passwd")


@pytest.fixture
def gallery() -> Iterator[Gallery]:
    """The faulty gallery of :func:`build_gallery`, served on 127.0.0.1."""
    g = serve_gallery(Gallery())
    build_gallery(g)
    try:
        yield g
    finally:
        g.httpd.shutdown()
        g.httpd.server_close()
