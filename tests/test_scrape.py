"""scrape: folders, zips, a local web site; content addressing; clear errors."""
from __future__ import annotations

import hashlib
import json
import time
import zipfile
from pathlib import Path

import httpcore
import pytest

from stages import _fetch, scrape
from stages._common import InputError, ParamError
from tests._helpers_http import dead_url, gallery, http_site, png_bytes, send  # noqa: F401 (fixtures)


#: the local test servers live on loopback; no waiting between requests in tests
WEB = dict(allow_private=("127.0.0.1/32",), rate=1000.0, backoff=0.01, max_wait=2.0)


def run(sources, out: Path, **kw):
    out.mkdir(parents=True, exist_ok=True)
    return scrape.run({"source": list(sources)}, scrape.Params(**{**WEB, **kw}), out)


def rows(out: Path) -> list[dict]:
    return scrape.load_sources(out)


def by_name(out: Path) -> dict[str, dict]:
    return {r["source"].rsplit("/", 1)[-1].rsplit("!", 1)[-1]: r for r in rows(out)}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    d = tmp_path / "shots"
    (d / "sub").mkdir(parents=True)
    (d / "one.png").write_bytes(png_bytes(1))
    (d / "sub" / "two.gif").write_bytes(png_bytes(2, fmt="GIF"))
    (d / "sub" / "same.png").write_bytes(png_bytes(1))            # duplicate of one.png
    (d / "notes.txt").write_text("not an image")
    (d / "cut.png").write_bytes(png_bytes(3)[:50])                # truncated
    (d / "tiny.png").write_bytes(png_bytes(4, size=8))            # below min_size 16
    (d / ".hidden.png").write_bytes(png_bytes(5))                  # ignored
    return d


# --------------------------------------------------------------------------- folders and zips
def test_folder_keeps_valid_images_content_addressed(folder, tmp_path):
    out = tmp_path / "out"
    s = run([folder], out)
    assert (s["ok"], s["duplicate"], s["skipped"]) == (2, 1, 3)
    stored = sorted(p.name for p in (out / "images").iterdir())
    one = by_name(out)["one.png"]
    assert one["path"] == f"images/{one['sha256'][:16]}.png"
    assert (out / one["path"]).read_bytes() == (folder / "one.png").read_bytes()
    assert len(stored) == 2 and any(n.endswith(".gif") for n in stored)


def test_folder_rows_give_reasons_for_skipped_items(folder, tmp_path):
    out = tmp_path / "out"
    run([folder], out)
    r = by_name(out)
    assert r["notes.txt"]["status"] == "skipped" and r["notes.txt"]["reason"] == "not an image"
    assert r["cut.png"]["status"] == "skipped" and "broken image" in r["cut.png"]["reason"]
    assert "too small" in r["tiny.png"]["reason"]
    assert r["same.png"]["status"] == "duplicate" and r["same.png"]["sha256"] == r["one.png"]["sha256"]
    assert ".hidden.png" not in r
    assert r["one.png"]["width"] == 32 and r["one.png"]["format"] == "PNG"
    assert r["one.png"]["bytes"] == (folder / "one.png").stat().st_size


def test_min_size_zero_keeps_tiny_images(folder, tmp_path):
    s = run([folder], tmp_path / "out", min_size=0)
    assert s["ok"] == 3


def test_zip_members_are_scraped(tmp_path):
    z = tmp_path / "pack.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("screens/a.png", png_bytes(1))
        zf.writestr("screens/b.png", png_bytes(2))
        zf.writestr("readme.md", "hello")
        zf.writestr("__MACOSX/screens/._a.png", b"junk")
    out = tmp_path / "out"
    s = run([z], out)
    assert (s["ok"], s["skipped"]) == (2, 1)
    assert by_name(out)["a.png"]["source"] == f"{z}!screens/a.png"


def test_zip_inside_a_folder_is_opened(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    with zipfile.ZipFile(d / "inner.zip", "w") as zf:
        zf.writestr("x.png", png_bytes(9))
    s = run([d], tmp_path / "out")
    assert s["ok"] == 1


def test_identical_content_from_two_sources_is_stored_once(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x.png").write_bytes(png_bytes(1))
    (b / "y.png").write_bytes(png_bytes(1))
    out = tmp_path / "out"
    s = run([a, b], out)
    assert (s["ok"], s["duplicate"]) == (1, 1)
    assert len(list((out / "images").iterdir())) == 1


def test_same_input_gives_same_bytes(folder, tmp_path):
    run([folder], tmp_path / "o1")
    run([folder], tmp_path / "o2")
    first, second = (tmp_path / d / "sources.jsonl" for d in ("o1", "o2"))
    assert first.read_bytes() == second.read_bytes()


# --------------------------------------------------------------------------- fatal errors
def test_missing_path_is_input_error(tmp_path):
    with pytest.raises(InputError, match="no such file or folder"):
        run([tmp_path / "nope"], tmp_path / "out")


def test_empty_folder_is_input_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty"):
        run([tmp_path / "empty"], tmp_path / "out")


def test_folder_without_any_image_is_input_error_naming_reasons(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "a.txt").write_text("x")
    with pytest.raises(InputError, match="no usable image.*a.txt: not an image"):
        run([d], tmp_path / "out")


def test_no_source_is_input_error(tmp_path):
    with pytest.raises(InputError, match="no source"):
        run([], tmp_path / "out")


def test_bad_param_is_param_error(folder, tmp_path):
    with pytest.raises(ParamError, match="depth"):
        run([folder], tmp_path / "out", depth=-1)


def test_not_a_zip_is_input_error(tmp_path):
    z = tmp_path / "bad.zip"
    z.write_bytes(b"nope")
    with pytest.raises(InputError, match="bad.zip: not a readable .zip"):
        run([z], tmp_path / "out")


# --------------------------------------------------------------------------- the web
def test_url_depth1_collects_images_and_counts_broken_ones(http_site, tmp_path):
    out = tmp_path / "out"
    s = run([http_site.url], out, depth=1)
    r = by_name(out)
    # a, b (linked), remote (other host, embedded), c (page2); a_copy is a duplicate
    assert s["ok"] == 4
    assert {n for n, x in r.items() if x["status"] == "ok"} == {"a.png", "b.gif", "remote.png", "c.png"}
    assert r["a_copy.png"]["status"] == "duplicate"
    assert r["fake.png"]["reason"] == "not an image"
    assert "broken image" in r["broken.png"]["reason"]
    assert "404" in r["missing.png"]["reason"]
    assert "page not fetched: HTTP 404" in r["gone.html"]["reason"]
    assert "d.png" not in r                              # page3 is at depth 2
    assert s["skipped"] == 4 and len(s["skipped_items"]) == 4


def test_url_depth2_reaches_nested_page(http_site, tmp_path):
    out = tmp_path / "out"
    run([http_site.url], out, depth=2)
    assert by_name(out)["d.png"]["status"] == "ok"


def test_url_depth0_reads_only_the_given_page(http_site, tmp_path):
    out = tmp_path / "out"
    run([http_site.url], out, depth=0)
    assert "c.png" not in by_name(out)
    assert "/page2.html" not in http_site.main.requests


def test_external_host_pages_are_not_followed(http_site, tmp_path):
    run([http_site.url], tmp_path / "out", depth=3)
    assert "/outside.html" not in http_site.other.requests
    assert "/ext.png" not in http_site.other.requests
    assert "/remote.png" in http_site.other.requests       # an embedded image is fetched


def test_any_host_images_off_keeps_to_the_page_host(http_site, tmp_path):
    out = tmp_path / "out"
    run([http_site.url], out, any_host_images=False)
    assert "remote.png" not in by_name(out)
    assert http_site.other.requests == []


def test_max_pages_limits_crawl(http_site, tmp_path):
    run([http_site.url], tmp_path / "out", depth=3, max_pages=1)
    assert [p for p in http_site.main.requests if p.endswith(".html")] == ["/index.html"]


def test_url_of_an_image_is_scraped(http_site, tmp_path):
    out = tmp_path / "out"
    s = run([http_site.main.base + "c.png"], out)
    assert s["ok"] == 1 and by_name(out)["c.png"]["width"] == 32


def test_unreachable_url_is_input_error_naming_it(dead_url, tmp_path):
    with pytest.raises(InputError, match=r"127\.0\.0\.1.*does not answer.*check the address"):
        run([dead_url], tmp_path / "out", timeout=5)


def test_start_page_404_is_input_error(http_site, tmp_path):
    with pytest.raises(InputError, match="404"):
        run([http_site.main.base + "nothing.html"], tmp_path / "out")


def test_interrupted_url_scrape_resumes_without_refetching(http_site, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    calls = {"n": 0}
    real = scrape.inspect_image

    def dying(data, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(data, **kw)

    monkeypatch.setattr(scrape, "inspect_image", dying)
    with pytest.raises(KeyboardInterrupt):
        run([http_site.url], out)
    assert (out / scrape.FETCH_DIR / "journal.jsonl").exists()
    monkeypatch.setattr(scrape, "inspect_image", real)
    n_before = len(http_site.main.requests)
    s = run([http_site.url], out)
    again = http_site.main.requests[n_before:]
    assert s["ok"] == 4 and s["refetch_avoided"] > 0
    assert "/index.html" not in again and "/a.png" not in again
    assert not (out / scrape.FETCH_DIR).exists()         # the artifact holds no download cache


def test_url_with_path_mangled_by_pathlib_still_works(http_site, tmp_path):
    s = run([Path(http_site.url)], tmp_path / "out")     # Path() turns // into /
    assert s["ok"] == 4


def test_sources_jsonl_has_contract_fields(folder, tmp_path):
    out = tmp_path / "out"
    run([folder], out)
    line = (out / "sources.jsonl").read_text().splitlines()[0]
    assert set(json.loads(line)) >= {"source", "status", "reason", "sha256", "path", "bytes",
                                      "width", "height", "format"}


def test_robots_txt_is_obeyed_for_linked_pages_and_images(http_site, tmp_path):
    (http_site.main.root / "robots.txt").write_text(
        "User-agent: *\nDisallow: /page2.html\nDisallow: /b.gif\n")
    out = tmp_path / "out"
    run([http_site.url], out)
    r = by_name(out)
    assert "robots" in r["page2.html"]["reason"] and "robots" in r["b.gif"]["reason"]
    assert "/page2.html" not in http_site.main.requests and "/b.gif" not in http_site.main.requests
    assert r["a.png"]["status"] == "ok"


def test_robots_off_fetches_everything(http_site, tmp_path):
    (http_site.main.root / "robots.txt").write_text("User-agent: *\nDisallow: /\n")
    s = run([http_site.url], tmp_path / "out", robots=False)
    assert s["ok"] == 4


def test_zip_linked_from_a_page_is_opened(http_site, tmp_path):
    root = http_site.main.root
    with zipfile.ZipFile(root / "pack.zip", "w") as zf:
        zf.writestr("shots/p1.png", png_bytes(11))
        zf.writestr("shots/p2.png", png_bytes(12))
    (root / "packs.html").write_text('<a href="pack.zip">pack</a> <a href="manual.pdf">pdf</a>')
    out = tmp_path / "out"
    s = run([http_site.main.base + "packs.html"], out)
    assert s["ok"] == 2
    assert by_name(out)["p1.png"]["source"] == http_site.main.base + "pack.zip!shots/p1.png"
    assert "/manual.pdf" not in http_site.main.requests      # not a page, not an image


def test_max_images_stops_early(folder, tmp_path):
    s = run([folder], tmp_path / "out", max_images=1)
    assert s["ok"] == 1


def test_oversized_item_is_skipped(folder, tmp_path):
    with pytest.raises(InputError, match=r"one.png: larger than max_mb=0.0002"):
        run([folder], tmp_path / "out", max_mb=0.0002)   # 200 bytes: every image is too big


def test_stale_images_from_an_interrupted_run_are_removed(folder, tmp_path):
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    (out / "images" / "0123456789abcdef.png").write_bytes(png_bytes(99))
    run([folder], out)
    assert not (out / "images" / "0123456789abcdef.png").exists()
    assert len(list((out / "images").iterdir())) == 2


# --------------------------------------------------------------------------- a gallery with faults
@pytest.fixture
def fake_dns(monkeypatch):
    """private.test -> 10.0.0.7, meta.test -> 169.254.169.254, six.test -> ::1,
    loop.test -> 127.0.0.1, mixed.test -> a public and a private address; the rest as usual."""
    table = {"private.test": ["10.0.0.7"], "meta.test": ["169.254.169.254"], "six.test": ["::1"],
             "loop.test": ["127.0.0.1"], "mixed.test": ["93.184.216.34", "192.168.1.9"]}
    real = _fetch.resolve
    monkeypatch.setattr(_fetch, "resolve", lambda host, port: table.get(host) or real(host, port))
    return table


GALLERY = dict(deadline=1.0, timeout=3.0, max_mb=0.5)


def test_gallery_counts_every_fault_by_reason(gallery, fake_dns, tmp_path):
    out = tmp_path / "out"
    s = run([gallery.url("index.html")], out, depth=1, **GALLERY)
    assert s["ok"] == 7           # ok1-5, flaky (after a 500), busy (after a 429)
    assert s["reasons"] == {"address_refused": 1, "bad_scheme": 1, "broken_image": 1,
                            "http_404": 1, "not_image": 2, "page_robots": 1, "redirects": 1,
                            "robots": 1, "timeout": 1, "too_large": 1}
    assert s["retries"] == 2 and s["pages"] == 2


def test_gallery_rows_say_why(gallery, fake_dns, tmp_path):
    out = tmp_path / "out"
    run([gallery.url("index.html")], out, **GALLERY)
    r = by_name(out)
    assert "deadline of 1 s" in r["slow.png"]["reason"]
    assert "larger than max_mb=0.5" in r["huge.png"]["reason"]
    assert r["page.png"]["reason"] == "not an image (an HTML page)"
    assert r["data.bin"]["reason"] == "not an image (served as application/octet-stream)"
    assert "redirect loop" in r["a.png"]["reason"]
    assert "private.test resolves to 10.0.0.7, a private address" in r["private.png"]["reason"]
    assert "only http and https" in r["file.png"]["reason"]
    assert r["x.png"]["reason"] == "disallowed by robots.txt"


def test_gallery_retries_a_500_and_waits_out_a_429(gallery, fake_dns, tmp_path):
    out = tmp_path / "out"
    run([gallery.url("index.html")], out, **GALLERY)
    r = by_name(out)
    assert r["flaky.png"]["status"] == "ok" and r["busy.png"]["status"] == "ok"
    busy = [i for i, (p, _, _) in enumerate(gallery.hits) if p == "/img/busy.png"]
    assert [gallery.hits[i][1] for i in busy] == [429, 200]


def test_robots_disallowed_paths_are_never_requested(gallery, fake_dns, tmp_path):
    run([gallery.url("index.html")], tmp_path / "out", **GALLERY)
    assert not [p for p in gallery.paths() if p.startswith("/private/")]


def test_trickling_body_is_cut_off_at_the_deadline(gallery, tmp_path):
    f = _fetch.Fetcher(_fetch.FetchPolicy(deadline=0.8, timeout=5.0, address=LOOPBACK, rate=1000),
                       _fetch.HttpCache(tmp_path / "http"))
    t0 = time.monotonic()
    got = f.get(gallery.url("img/slow.png"))
    took = time.monotonic() - t0
    assert got.failure is _fetch.Failure.TIMEOUT and "deadline" in got.message
    assert 0.7 < took < 1.6 and gallery.sent["/img/slow.png"] <= 2


def test_trickling_headers_are_cut_off_at_the_deadline(gallery, tmp_path):
    gallery.trickle("/img/slowhead.png", delay=0.2, in_headers=True)
    f = _fetch.Fetcher(_fetch.FetchPolicy(deadline=0.8, timeout=5.0, address=LOOPBACK, rate=1000),
                       _fetch.HttpCache(tmp_path / "http"))
    t0 = time.monotonic()
    got = f.get(gallery.url("img/slowhead.png"))
    assert got.failure is _fetch.Failure.TIMEOUT and time.monotonic() - t0 < 1.6


def test_endless_body_is_cut_at_the_size_cap_while_streaming(gallery, tmp_path):
    f = _fetch.Fetcher(_fetch.FetchPolicy(max_bytes=300_000, address=LOOPBACK, rate=1000),
                       _fetch.HttpCache(tmp_path / "http"))
    got = f.get(gallery.url("img/huge.png"))
    assert got.failure is _fetch.Failure.TOO_LARGE
    time.sleep(0.2)
    assert gallery.sent["/img/huge.png"] < 32 * 1024 * 1024   # of 64 MiB offered


def test_declared_length_over_the_cap_is_refused_before_reading(gallery, tmp_path):
    gallery.static("/img/big.png", b"\x89PNG" + bytes(400_000))
    f = _fetch.Fetcher(_fetch.FetchPolicy(max_bytes=300_000, address=LOOPBACK, rate=1000),
                       _fetch.HttpCache(tmp_path / "http"))
    got = f.get(gallery.url("img/big.png"))
    assert got.failure is _fetch.Failure.TOO_LARGE and "0.40 MB" in got.message


# --------------------------------------------------------------------------- conditional requests
def test_second_scrape_revalidates_and_reuses_stored_bytes(gallery, fake_dns, tmp_path):
    first = run([gallery.url("index.html")], tmp_path / "one", **GALLERY)
    n = len(gallery.hits)
    second = run([gallery.url("index.html")], tmp_path / "two", **GALLERY)
    again = gallery.hits[n:]
    static = [(p, st, h) for p, st, h in again if p.endswith((".html", ".png")) and
              p not in ("/img/slow.png", "/img/huge.png", "/img/missing.png") and
              not p.startswith(("/loop/", "/go/"))]
    assert static and all(st == 304 and "If-None-Match" in h for p, st, h in static
                          if p not in ("/img/flaky.png", "/img/busy.png"))
    assert second["ok"] == first["ok"] and second["not_modified"] >= 8
    assert (tmp_path / "one" / "sources.jsonl").read_bytes() == \
        (tmp_path / "two" / "sources.jsonl").read_bytes()
    for img in (tmp_path / "one" / "images").iterdir():
        assert (tmp_path / "two" / "images" / img.name).read_bytes() == img.read_bytes()


def test_changed_resource_is_fetched_again(gallery, fake_dns, tmp_path):
    run([gallery.url("img/ok1.png")], tmp_path / "one")
    gallery.static("/img/ok1.png", png_bytes(77))          # new content, new ETag
    run([gallery.url("img/ok1.png")], tmp_path / "two")
    assert [st for p, st, _ in gallery.hits if p == "/img/ok1.png"] == [200, 200]
    sha = by_name(tmp_path / "two")["ok1.png"]["sha256"]
    assert sha == hashlib.sha256(png_bytes(77)).hexdigest()


def test_http_cache_keeps_one_body_per_url_after_compaction(gallery, tmp_path):
    run([gallery.url("img/ok1.png")], tmp_path / "one")
    gallery.static("/img/ok1.png", png_bytes(78))
    run([gallery.url("img/ok1.png")], tmp_path / "two")
    cache = tmp_path / scrape.HTTP_CACHE_DIR
    new = hashlib.sha256(png_bytes(78)).hexdigest()
    assert [f.name for f in (cache / "bodies").iterdir()] == [new]   # the old body is gone
    assert [json.loads(x)["sha256"] for x in (cache / "index.jsonl").read_text().splitlines()] == [new]


# --------------------------------------------------------------------------- provenance
def test_provenance_names_page_image_and_game(gallery, fake_dns, tmp_path):
    out = tmp_path / "out"
    run([gallery.url("index.html")], out, **GALLERY)
    r = by_name(out)
    p1 = r["ok1.png"]["provenance"]
    assert p1 == {"kind": "web", "page_url": gallery.url("index.html"),
                  "image_url": gallery.url("img/ok1.png"), "game": "Contra",
                  "game_from": "heading", "rom_sha256": None, "frame": None}
    assert r["ok2.png"]["provenance"]["game"] == "Mega Man"        # a link under another heading
    assert r["ok5.png"]["provenance"]["game"] == "Castlevania"     # from the title
    assert r["ok5.png"]["provenance"]["game_from"] == "title"
    assert r["ok5.png"]["provenance"]["image_url"] == gallery.url("sub/ok5.png")


def test_local_files_take_their_folder_name_as_game(tmp_path):
    d = tmp_path / "shots"
    (d / "Super Mario Bros").mkdir(parents=True)
    (d / "Super Mario Bros" / "1.png").write_bytes(png_bytes(1))
    z = d / "Contra.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("a.png", png_bytes(2))
        zf.writestr("Stage 2/b.png", png_bytes(3))
    out = tmp_path / "out"
    run([d], out)
    r = by_name(out)
    assert r["1.png"]["provenance"]["game"] == "Super Mario Bros"
    assert r["1.png"]["provenance"]["kind"] == "folder" and r["a.png"]["provenance"]["kind"] == "zip"
    assert r["a.png"]["provenance"]["game"] == "Contra"
    assert r["b.png"]["provenance"]["game"] == "Stage 2"


def test_a_folder_of_several_games_names_each_file_by_its_name(tmp_path):
    d = tmp_path / "screens"
    d.mkdir()
    for i, name in enumerate(["ansimuz_cybercity_01_x2.png", "ansimuz_cybercity_02.png",
                              "pyxel_platformer_00.png", "smb-3.png"]):
        (d / name).write_bytes(png_bytes(10 + i))
    out = tmp_path / "out"
    run([d], out)
    prov = {k: v["provenance"] for k, v in by_name(out).items()}
    assert prov["ansimuz_cybercity_01_x2.png"]["game"] == "ansimuz_cybercity"
    assert prov["ansimuz_cybercity_02.png"]["game"] == "ansimuz_cybercity"
    assert prov["pyxel_platformer_00.png"]["game"] == "pyxel_platformer"
    assert prov["smb-3.png"]["game"] == "smb"
    assert prov["smb-3.png"]["game_from"] == "file name"


def test_title_is_cut_before_the_site_name():
    page = scrape.parse_page("<title>Contra - NES | Gallery</title><img src='a.png' alt='x'>",
                             "http://h/")
    assert scrape.game_name(page.images[0], page.title) == ("Contra", "title")


def test_alt_text_names_the_game_when_the_page_gives_nothing_else():
    page = scrape.parse_page("<img src='a.png' alt=' Zelda  II '>", "http://h/")
    assert scrape.game_name(page.images[0], page.title) == ("Zelda II", "alt")


# --------------------------------------------------------------------------- address guard
LOOPBACK = _fetch.AddressPolicy.from_strings(["127.0.0.1/32"])


@pytest.fixture
def connects(monkeypatch):
    """Every address a connection is opened to; anything but 127.0.0.1 fails the test."""
    seen: list[str] = []
    real = httpcore.SyncBackend.connect_tcp

    def spy(self, host, port, *a, **kw):
        seen.append(host)
        if host != "127.0.0.1":
            raise AssertionError(f"tried to connect to {host}")
        return real(self, host, port, *a, **kw)

    monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", spy)
    return seen


@pytest.mark.parametrize("host, kind", [("private.test", "private"), ("meta.test", "link-local"),
                                        ("six.test", "loopback"), ("mixed.test", "private")])
def test_private_addresses_are_refused_before_connecting(fake_dns, connects, tmp_path, host, kind):
    with pytest.raises(InputError, match=rf"{host}.*resolves to .*a {kind} address"):
        run([f"http://{host}/index.html"], tmp_path / "out", allow_private=())
    assert connects == []


def test_loopback_literal_is_refused_by_default(connects, tmp_path):
    with pytest.raises(InputError, match=r"127\.0\.0\.1 is a loopback address.*allow-private"):
        run(["http://127.0.0.1:9/index.html"], tmp_path / "out", allow_private=())
    assert connects == []


def test_allowed_range_connects_to_the_checked_address(gallery, fake_dns, tmp_path):
    out = tmp_path / "out"
    s = run([f"http://loop.test:{gallery.port}/img/ok1.png"], out)   # loop.test -> 127.0.0.1
    assert s["ok"] == 1
    assert gallery.hits[-1][2]["Host"] == f"loop.test:{gallery.port}"


def test_redirect_to_a_private_host_is_refused(gallery, fake_dns, connects, tmp_path):
    f = _fetch.Fetcher(_fetch.FetchPolicy(address=LOOPBACK, rate=1000),
                       _fetch.HttpCache(tmp_path / "http"))
    got = f.get(gallery.url("go/private.png"))
    assert got.failure is _fetch.Failure.REFUSED and "10.0.0.7" in got.message
    assert set(connects) == {"127.0.0.1"}


def test_embedded_image_on_a_private_host_is_refused(gallery, fake_dns, connects, tmp_path):
    out = tmp_path / "out"
    gallery.static("/img/own.png", png_bytes(90))
    gallery.static("/emb.html", (f'<img src="/img/own.png"><img src="http://meta.test:'
                                 f'{gallery.port}/img/ok1.png">').encode(), "text/html")
    s = run([gallery.url("emb.html")], out)
    assert s["ok"] == 1 and s["reasons"] == {"address_refused": 1}
    assert set(connects) == {"127.0.0.1"}


@pytest.mark.parametrize("ip, kind", [("10.1.2.3", "private"), ("172.16.0.1", "private"),
                                      ("192.168.0.1", "private"), ("127.0.0.1", "loopback"),
                                      ("169.254.169.254", "link-local"), ("224.0.0.1", "multicast"),
                                      ("0.0.0.0", "unspecified"), ("::1", "loopback"),
                                      ("fe80::1", "link-local"), ("fc00::1", "private"),
                                      ("::ffff:10.0.0.1", "private"), ("93.184.216.34", None),
                                      ("2606:4700::1", None)])
def test_address_kinds(ip, kind):
    assert _fetch.address_kind(ip) == kind


@pytest.mark.parametrize("ip", ["100.64.0.1", "240.0.0.1", "192.0.2.1", "2001:db8::1"])
def test_other_non_public_ranges_are_refused(ip):
    assert _fetch.AddressPolicy().refusal(ip)


def test_allow_private_all_lifts_the_guard():
    assert _fetch.AddressPolicy.from_strings(["all"]).refusal("10.0.0.1") is None
    assert _fetch.AddressPolicy.from_strings(["10.0.0.0/8"]).refusal("192.168.0.1")


def test_bad_allow_private_is_param_error():
    with pytest.raises(ParamError, match="allow_private"):
        scrape.Params(allow_private=("not-a-network",))


# --------------------------------------------------------------------------- politeness
def _fetcher(tmp_path, sleeps=None, **kw):
    policy = _fetch.FetchPolicy(**{"address": LOOPBACK, "rate": 1000.0, **kw})
    sleep = sleeps.append if sleeps is not None else time.sleep
    return _fetch.Fetcher(policy, _fetch.HttpCache(tmp_path / "http"), sleep=sleep)


def test_retry_after_is_honoured(gallery, tmp_path):
    gallery.failing_first("/r.png", png_bytes(1), 429, [("Retry-After", "7")])
    sleeps: list[float] = []
    got = _fetcher(tmp_path, sleeps, max_wait=10).get(gallery.url("r.png"))
    assert got.ok and any(6.9 < s <= 7.0 for s in sleeps)


def test_retry_after_longer_than_max_wait_is_not_retried(gallery, tmp_path):
    gallery.failing_first("/r.png", png_bytes(1), 429, [("Retry-After", "3600")])
    sleeps: list[float] = []
    got = _fetcher(tmp_path, sleeps, max_wait=10).get(gallery.url("r.png"))
    assert got.failure is _fetch.Failure.HTTP and got.status == 429
    assert "asks to wait 3600 s" in got.message and max(sleeps, default=0) < 10
    assert gallery.calls["/r.png"] == 1


def test_5xx_backs_off_exponentially_then_gives_up(gallery, tmp_path):
    gallery.routes["/down.png"] = lambda h: send(h, 503, b"down", "text/plain")
    sleeps: list[float] = []
    got = _fetcher(tmp_path, sleeps, retries=3, backoff=0.5, max_wait=1.5).get(gallery.url("down.png"))
    assert got.status == 503 and gallery.calls["/down.png"] == 4
    assert [s for s in sleeps if s >= 0.4] == pytest.approx([0.5, 1.0, 1.5], abs=0.05)  # 2.0 capped


def test_404_is_not_retried(gallery, tmp_path):
    got = _fetcher(tmp_path).get(gallery.url("nope.png"))
    assert got.status == 404 and gallery.calls["/nope.png"] == 1


def test_redirect_limit(gallery, tmp_path):
    for i in range(4):
        gallery.redirect(f"/r{i}", f"/r{i + 1}")
    gallery.static("/r4", png_bytes(1))
    assert _fetcher(tmp_path, max_redirects=4).get(gallery.url("r0")).ok
    got = _fetcher(tmp_path / "b", max_redirects=3).get(gallery.url("r0"))
    assert got.failure is _fetch.Failure.REDIRECTS and "max_redirects=3" in got.message


def test_host_gate_spaces_request_starts():
    sleeps: list[float] = []
    gate = _fetch.HostGate(rate=10.0, per_host=4, sleep=sleeps.append, clock=lambda: 100.0)
    for _ in range(4):
        with gate.slot("a"):
            pass
    with gate.slot("b"):          # another host has its own schedule
        pass
    assert sleeps == pytest.approx([0.1, 0.2, 0.3])


def test_host_gate_defer_holds_the_host():
    sleeps: list[float] = []
    gate = _fetch.HostGate(rate=1000.0, per_host=1, sleep=sleeps.append, clock=lambda: 0.0)
    gate.defer("a", 5.0)
    with gate.slot("a"):
        pass
    assert sleeps == [5.0]


def test_per_host_concurrency_is_bounded(gallery, tmp_path):
    def slow(h):
        time.sleep(0.15)
        return send(h, 200, png_bytes(1), "image/png")

    for i in range(6):
        gallery.routes[f"/s{i}.png"] = slow
    f = _fetcher(tmp_path, per_host=2)
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(6) as ex:
        assert all(g.ok for g in ex.map(f.get, [gallery.url(f"s{i}.png") for i in range(6)]))
    assert gallery.max_in_flight == 2


def test_rate_limit_spaces_real_requests(gallery, tmp_path):
    f = _fetcher(tmp_path, rate=10.0)
    t0 = time.monotonic()
    for i in (1, 2, 3, 4):
        f.get(gallery.url(f"img/ok{i}.png"))
    assert time.monotonic() - t0 >= 0.29


def test_robots_crawl_delay_slows_the_host(gallery, tmp_path):
    gallery.routes["/robots.txt"] = lambda h: send(h, 200, b"User-agent: *\nCrawl-delay: 3\n",
                                                   "text/plain")
    f = _fetcher(tmp_path)
    assert f.robots.allowed(gallery.url("img/ok1.png"))
    assert f.gate._interval[f"127.0.0.1:{gallery.port}"] == 3.0


def test_robots_txt_5xx_disallows_the_host(gallery, tmp_path):
    gallery.routes["/robots.txt"] = lambda h: send(h, 500, b"oops", "text/plain")
    f = _fetcher(tmp_path, retries=0)
    assert not f.robots.allowed(gallery.url("img/ok1.png"))


def test_user_agent_is_sent(gallery, tmp_path):
    _fetcher(tmp_path).get(gallery.url("img/ok1.png"))
    assert gallery.hits[-1][2]["User-Agent"].startswith("tilegan-scrape/")


# --------------------------------------------------------------------------- sniffing
@pytest.mark.parametrize("data, kind", [(png_bytes(1), "png"), (png_bytes(1, fmt="GIF"), "gif"),
                                        (png_bytes(1, fmt="JPEG"), "jpeg"),
                                        (png_bytes(1, fmt="WEBP"), "webp"),
                                        (b"PK\x03\x04rest", "zip"), (b"  <!DOCTYPE html><p>", "html"),
                                        (b"plain text", None)])
def test_sniff_reads_magic_bytes(data, kind):
    assert scrape.sniff(data) == kind


# --------------------------------------------------------------------------- caps
def _shots(tmp_path, n):
    d = tmp_path / "many"
    d.mkdir()
    for i in range(n):
        (d / f"{i:03d}.png").write_bytes(png_bytes(100 + i))
    return d


def test_local_folder_is_taken_whole_by_default(tmp_path):
    s = run([_shots(tmp_path, 5)], tmp_path / "out", max_web_images=2)
    assert s["ok"] == 5 and s["capped"] == {}
    assert scrape.Params().max_images == 0


def test_a_cap_that_drops_local_files_warns_with_the_count(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="tilegan.scrape"):
        s = run([_shots(tmp_path, 5)], tmp_path / "out", max_images=2)
    assert s["ok"] == 2 and s["capped"] == {"max_images": 3}
    assert "max_images=2 reached: 3 item(s) not taken" in caplog.text


def test_web_cap_drops_with_a_warning_and_fetches_no_more(gallery, fake_dns, tmp_path, caplog):
    with caplog.at_level("WARNING", logger="tilegan.scrape"):
        s = run([gallery.url("sub/page.html")], tmp_path / "out", max_web_images=1, workers=1)
    assert s["ok"] == 1 and s["capped"] == {"max_web_images": 2}
    assert "max_web_images=1 reached: 2 item(s)" in caplog.text
    assert "/sub/ok5.png" not in gallery.paths()


def test_page_cap_warns_with_the_count(http_site, tmp_path, caplog):
    with caplog.at_level("WARNING", logger="tilegan.scrape"):
        s = run([http_site.url], tmp_path / "out", depth=3, max_pages=1)
    assert s["capped"] == {"max_pages": 2}            # page2.html and gone.html
    assert "max_pages=1 reached: 2 linked page(s)" in caplog.text
