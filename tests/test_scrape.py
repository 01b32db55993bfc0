"""scrape: folders, zips, a local web site; content addressing; clear errors."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from stages import scrape
from stages._common import InputError, ParamError
from tests._helpers_http import dead_url, http_site, png_bytes  # noqa: F401 (fixtures)


def run(sources, out: Path, **kw):
    out.mkdir(parents=True, exist_ok=True)
    return scrape.run({"source": list(sources)}, scrape.Params(**kw), out)


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
    assert (out / scrape.FETCH_DIR / "index.jsonl").exists()
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
