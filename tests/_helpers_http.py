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
"""
from __future__ import annotations

import io
import threading
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

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
