"""Property-based fuzzing (hypothesis) of everything that reads untrusted input.

Classes: the image loader (valid images in every mode and format, truncated, mutated, huge or
zero-size headers, animated, 16-bit, CMYK, palette + transparency), the palette file parsers,
the config loader, the TMX/TSX writer (names and properties with XML specials and non-ASCII,
read back with pytmx; rendered by Tiled's tmxrasterizer when it is installed) and zip sources
(scrape's public ``run``).  Each input must end in a result or a one-line error of the
project's own kind (or a counted skip) -- never another exception.

The default run is short and deterministic; ``TILEGAN_FUZZ_EXAMPLES=N`` runs N examples per
test with fresh randomness (the count reached is printed at the end; run with ``-s``).  The
pixel limit is lowered to 1 M pixels here so that a mutated header cannot make one example
slow; the bomb test below checks the real default.
"""
from __future__ import annotations

import io
import json
import logging
import os
import struct
import tempfile
import time
import warnings
import zipfile
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from stages import _common as S  # noqa: E402

SCALED = bool(os.environ.get("TILEGAN_FUZZ_EXAMPLES"))
EXAMPLES = int(os.environ.get("TILEGAN_FUZZ_EXAMPLES") or 25)
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=not SCALED,
                suppress_health_check=list(HealthCheck), print_blob=True)
#: generated inputs per class, printed at the end of the module
COUNT: Counter = Counter()


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    yield
    if COUNT:
        parts = " ".join(f"{k}={v}" for k, v in sorted(COUNT.items()))
        print(f"\nfuzz: inputs={sum(COUNT.values())} {parts}")


@pytest.fixture(autouse=True)
def small_pixel_limit(monkeypatch):
    monkeypatch.setenv(S.MAX_PIXELS_ENV, "1000000")


def one_line(e: BaseException) -> bool:
    """What the CLI prints for ``e`` (pipeline.cli.error_line) is one non-empty line."""
    from pipeline.cli import error_line

    line = error_line(e)
    return "\n" not in line and "\r" not in line and bool(line.strip())


# --------------------------------------------------------------------------- images
MODES = {   # mode -> formats Pillow writes it in
    "1": ["PNG", "GIF", "BMP", "TIFF", "PPM", "TGA"],
    "L": ["PNG", "GIF", "BMP", "TIFF", "WEBP", "JPEG", "PPM", "TGA"],
    "LA": ["PNG", "TIFF", "TGA"],
    "P": ["PNG", "GIF", "BMP", "TIFF", "TGA"],
    "P+t": ["PNG", "GIF"],
    "RGB": ["PNG", "GIF", "BMP", "TIFF", "WEBP", "JPEG", "PPM", "TGA"],
    "RGBA": ["PNG", "TIFF", "WEBP", "TGA"],
    "I;16": ["PNG", "TIFF", "PPM"],
    "I": ["TIFF"],
    "CMYK": ["TIFF", "JPEG"],
    "F": ["TIFF"],
}
SUFFIX = {"PNG": ".png", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp",
          "JPEG": ".jpg", "PPM": ".ppm", "TGA": ".tga"}


def _pil_image(mode: str, w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    if mode in ("P", "P+t"):
        im = Image.fromarray(rng.integers(0, 8, (h, w), dtype=np.uint8)).convert("P")
        im.putpalette(rng.integers(0, 256, 8 * 3, dtype=np.uint8).tobytes())
        if mode == "P+t":
            im.info["transparency"] = int(rng.integers(0, 8))
        return im
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
    if mode == "I":
        return Image.fromarray(rng.integers(-70000, 70000, (h, w), dtype=np.int32))
    if mode == "F":
        return Image.fromarray(rng.normal(0, 300, (h, w)).astype(np.float32))
    rgba = Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8), "RGBA")
    return rgba.convert(mode)


@st.composite
def image_files(draw):
    mode = draw(st.sampled_from(sorted(MODES)))
    fmt = draw(st.sampled_from(MODES[mode]))
    w, h = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    im = _pil_image(mode, w, h, draw(st.integers(0, 2**16)))
    buf = io.BytesIO()
    kw = {"transparency": im.info["transparency"]} if "transparency" in im.info else {}
    im.save(buf, format=fmt, **kw)
    data = buf.getvalue()
    how = draw(st.sampled_from(["intact", "truncated", "mutated", "garbage-tail", "empty"]))
    if how == "truncated":
        data = data[: draw(st.integers(0, max(0, len(data) - 1)))]
    elif how == "mutated":
        b = bytearray(data)
        for _ in range(draw(st.integers(1, 4))):
            b[draw(st.integers(0, len(b) - 1))] = draw(st.integers(0, 255))
        data = bytes(b)
    elif how == "garbage-tail":
        data += draw(st.binary(max_size=64))
    elif how == "empty":
        data = b""
    suffix = draw(st.sampled_from([SUFFIX[fmt], SUFFIX[fmt], ".png", ".bin", ""]))
    return {"mode": mode, "format": fmt, "size": (h, w), "how": how, "data": data,
            "suffix": suffix}


def _load(data: bytes, suffix: str, mode: str = "RGB"):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / f"in{suffix}"
        p.write_bytes(data)
        try:
            return p, S.load_image(p, mode=mode), None
        except S.InputError as e:
            return p, None, e


@FUZZ
@given(case=image_files(), out_mode=st.sampled_from(["RGB", "RGBA"]))
def test_fuzz_image_loader_gives_pixels_or_one_clear_error(case, out_mode):
    COUNT["image"] += 1
    p, arr, err = _load(case["data"], case["suffix"], out_mode)
    if err is not None:
        assert one_line(err) and str(err).startswith(str(p)), str(err)
        assert case["how"] != "intact" or case["format"] in ("WEBP",), str(err)
        return
    assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == len(out_mode)
    assert arr.shape[0] > 0 and arr.shape[1] > 0
    if case["how"] == "intact":
        assert arr.shape[:2] == case["size"]


def _png_header(w: int, h: int, bit_depth: int = 1, colour: int = 0, idat: bytes = b"") -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bit_depth, colour, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


@FUZZ
@given(w=st.integers(0, 2**31 - 1), h=st.integers(0, 2**31 - 1),
       fmt=st.sampled_from(["png", "gif", "bmp"]), idat=st.binary(max_size=32))
def test_fuzz_huge_or_empty_headers_are_refused_before_decoding(w, h, fmt, idat):
    COUNT["image-header"] += 1
    if fmt == "png":
        data = _png_header(w, h, idat=zlib.compress(idat))
    elif fmt == "gif":
        w, h = w & 0xFFFF, h & 0xFFFF
        data = b"GIF89a" + struct.pack("<HHBBB", w, h, 0, 0, 0) + b",\0\0\0\0" + \
            struct.pack("<HH", w, h) + b"\0\x02\x02\x44\x01\0;"
    else:
        w, h = w & 0x7FFFFFFF, h & 0x7FFFFFFF
        data = b"BM" + struct.pack("<IHHI", 0, 0, 0, 54) + struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, 0, 0, 0, 0, 0) + idat
    t0 = time.perf_counter()
    p, arr, err = _load(data, f".{fmt}")
    assert time.perf_counter() - t0 < 2.0
    if w * h > 1_000_000:
        assert err is not None, (w, h)
    if err is not None:
        assert one_line(err) and str(err).startswith(str(p))
    else:
        assert arr.shape[:2] == (h, w)


@FUZZ
@given(frames=st.integers(2, 5), fmt=st.sampled_from(["GIF", "PNG", "WEBP"]),
       w=st.integers(1, 12), h=st.integers(1, 12), seed=st.integers(0, 999))
def test_fuzz_animated_images_use_frame_one_and_say_so(frames, fmt, w, h, seed, caplog):
    COUNT["image-animated"] += 1
    ims = [_pil_image("RGB", w, h, seed + i) for i in range(frames)]
    if fmt == "GIF":
        ims = [im.quantize(8) for im in ims]
    buf = io.BytesIO()
    ims[0].save(buf, format=fmt, save_all=True, append_images=ims[1:], duration=50, loop=0,
                **({"lossless": True} if fmt == "WEBP" else {}))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tilegan"):
        p, arr, err = _load(buf.getvalue(), f".{fmt.lower()}")
    assert err is None, str(err)
    assert arr.shape == (h, w, 3)
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        n = im.n_frames
        first = S.pil_to_array(im.convert("RGBA"), mode="RGB")
    if n > 1:   # an encoder may merge identical frames
        assert any(f"{n} frames" in r.getMessage() for r in caplog.records)
    assert np.array_equal(arr, first)


BOMB_PROBE = """
import resource, sys, time, zlib, struct
sys.path.insert(0, sys.argv[1])
from stages._common import load_image, InputError
import PIL.PngImagePlugin
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
try:
    load_image(sys.argv[2])
    print("accepted")
except InputError as e:
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{time.perf_counter() - t0:.4f} {(after - before) / 1024:.2f} {e}")
"""


def test_a_pixel_bomb_is_refused_fast_and_small(monkeypatch, tmp_path):
    """A 20 KB PNG declaring 13000x13000 1-bit pixels: refused before decoding, at the default
    limit, in well under 1 s and 100 MB (issue #18, point 2).  Measured in a fresh process:
    time of the call, and how much the peak RSS grew during it."""
    import subprocess
    import sys

    monkeypatch.delenv(S.MAX_PIXELS_ENV)
    rows = b"".join(b"\0" + bytes(13000 // 8 + 1) for _ in range(13000))
    data = _png_header(13000, 13000, idat=zlib.compress(rows, 9))
    assert 15_000 < len(data) < 25_000
    (tmp_path / "bomb.png").write_bytes(data)
    root = str(Path(__file__).resolve().parent.parent)
    r = subprocess.run([sys.executable, "-c", BOMB_PROBE, root, str(tmp_path / "bomb.png")],
                       capture_output=True, text=True, timeout=60)
    seconds, grown_mb, err = r.stdout.strip().split(" ", 2)
    print(f"\npixel bomb: {len(data)} bytes refused in {float(seconds) * 1000:.1f} ms, "
          f"peak RSS grew {float(grown_mb):.1f} MB: {err}")
    assert "13000x13000" in err and "limit" in err
    assert float(seconds) < 1.0 and float(grown_mb) < 100


def test_the_pixel_limit_is_configurable(monkeypatch):
    im = io.BytesIO()
    Image.new("RGB", (40, 30)).save(im, format="PNG")
    monkeypatch.setenv(S.MAX_PIXELS_ENV, "1000")
    assert "40x30" in str(_load(im.getvalue(), ".png")[2])
    monkeypatch.setenv(S.MAX_PIXELS_ENV, "1200")
    assert _load(im.getvalue(), ".png")[1].shape == (30, 40, 3)
    monkeypatch.setenv(S.MAX_PIXELS_ENV, "lots")
    with pytest.raises(S.ParamError, match=S.MAX_PIXELS_ENV):
        S.pixel_limit()


def test_sixteen_bit_greyscale_scales_to_eight_bits():
    im = Image.fromarray(np.array([[0, 257, 65535]], np.uint16))
    assert S.pil_to_array(im)[0, :, 0].tolist() == [0, 1, 255]


# --------------------------------------------------------------------------- palettes
_hex_line = st.one_of(
    st.from_regex(r"\A#?[0-9a-fA-F]{6}\Z"),
    st.from_regex(r"\A;[^\n\r]{0,10}\Z"),
    st.text(alphabet="0123456789abcdefABCDEF# ;xyz\t\u00e9", max_size=9),
)
_gpl_line = st.one_of(
    st.tuples(st.integers(-5, 300), st.integers(-5, 300), st.integers(-5, 300),
              st.text(max_size=6)).map(lambda t: f"{t[0]} {t[1]} {t[2]} {t[3]}"),
    st.sampled_from(["#", "Name: x", "Columns: 4", "", "1 2", "a b c"]),
    st.text(max_size=12),
)


@st.composite
def palette_files(draw):
    kind = draw(st.sampled_from(["hex", "gpl", "pal", "jasc", "strip", "random"]))
    if kind == "hex":
        lines = draw(st.lists(_hex_line, max_size=300))
        return ".hex" if draw(st.booleans()) else ".txt", "\n".join(lines).encode("utf-8")
    if kind == "gpl":
        lines = draw(st.lists(_gpl_line, max_size=40))
        head = "GIMP Palette" if draw(st.integers(0, 4)) else draw(st.text(max_size=12))
        return ".gpl", "\n".join([head] + lines).encode("utf-8", "surrogatepass")
    if kind == "pal":
        n = draw(st.sampled_from([192, 1536, 0, 191, 193, 3]))
        return ".pal", draw(st.binary(min_size=n, max_size=n))
    if kind == "jasc":
        rows = draw(st.lists(st.tuples(st.integers(-1, 256), st.integers(0, 255),
                                       st.integers(0, 255)), max_size=20))
        count = draw(st.one_of(st.just(str(len(rows))), st.text(max_size=4)))
        text = "JASC-PAL\n0100\n" + count + "\n" + "\n".join(f"{r} {g} {b}" for r, g, b in rows)
        return ".pal", text.encode()
    if kind == "strip":
        w, h = draw(st.integers(1, 40)), draw(st.integers(1, 12))
        k = draw(st.integers(1, 300))
        rng = np.random.default_rng(draw(st.integers(0, 999)))
        cols = rng.integers(0, 256, (k, 3), dtype=np.uint8)
        arr = cols[rng.integers(0, k, (h, w))]
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG")
        data = buf.getvalue()
        if draw(st.booleans()):
            data = data[: draw(st.integers(0, len(data)))]
        return ".png", data
    return draw(st.sampled_from([".pal", ".gpl", ".hex", ".png", ".gif", ".bin"])), \
        draw(st.binary(max_size=300))


@FUZZ
@given(f=palette_files())
def test_fuzz_palette_files_load_or_fail_in_one_line(f):
    from palettes import PaletteError, load_palette_file

    COUNT["palette"] += 1
    suffix, data = f
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / f"pal{suffix}"
        p.write_bytes(data)
        try:
            pal = load_palette_file(p)
        except PaletteError as e:
            assert one_line(e) and str(p) in str(e), str(e)
            return
    assert pal.colours.dtype == np.uint8 and pal.colours.ndim == 2 and pal.colours.shape[1] == 3
    assert 1 <= len(pal.colours) <= 256


# --------------------------------------------------------------------------- config
def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if v != v else ("inf" if v == float("inf") else
                                     "-inf" if v == float("-inf") else repr(v))
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(v)


def _config_strategy():
    from pipeline.graph import STAGES, load_all

    modules = load_all()
    fields = {s: [f for f in modules[s].Params.__dataclass_fields__] + ["input"] for s in STAGES}
    scalar = st.one_of(st.integers(-2**63, 2**63 - 1), st.floats(), st.booleans(),
                       st.text(max_size=12), st.sampled_from(["nes", "auto", "cpu", "csv", "0,1",
                                                              "screens", "phash", "none", ""]))
    value = st.one_of(scalar, st.lists(scalar, max_size=3),
                      st.dictionaries(st.text(max_size=3), scalar, max_size=2))
    table_name = st.one_of(st.sampled_from(list(STAGES) + ["pipeline"]), st.text(max_size=8))

    @st.composite
    def docs(draw):
        if draw(st.integers(0, 9)) == 0:
            return draw(st.one_of(st.binary(max_size=80),
                                  st.text(max_size=80).map(lambda s: s.encode("utf-8"))))
        lines = []
        for name in draw(st.lists(table_name, max_size=4, unique=True)):
            keys = fields.get(name, ["out", "cache"] if name == "pipeline" else [])
            key = st.one_of(st.sampled_from(keys), st.text(max_size=6)) if keys else st.text(max_size=6)
            lines.append(f"[{json.dumps(name)}]")
            for k in draw(st.lists(key, max_size=4, unique=True)):
                lines.append(f"{json.dumps(k)} = {_toml_value(draw(value))}")
        return "\n".join(lines).encode("utf-8", "surrogatepass")

    return modules, docs()


_MODULES_AND_DOCS = None


def _docs():
    global _MODULES_AND_DOCS
    if _MODULES_AND_DOCS is None:
        _MODULES_AND_DOCS = _config_strategy()
    return _MODULES_AND_DOCS


@FUZZ
@given(data=st.data())
def test_fuzz_config_loads_or_fails_with_a_config_error(data):
    from pipeline.config import load_config
    from pipeline.errors import PipelineError
    from pipeline.graph import STAGES
    from pipeline.runner import resolve_all

    modules, docs = _docs()
    doc = data.draw(docs)
    COUNT["config"] += 1
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "pipeline.toml"
        p.write_bytes(doc)
        try:
            cfg = load_config(p, modules)
            resolve_all(cfg, STAGES, modules=modules)
            for s in STAGES:
                cfg.stage_input(s)
            cfg.out, cfg.cache
        except PipelineError as e:
            assert one_line(e), str(e)


# --------------------------------------------------------------------------- Tiled writer
_names = st.one_of(st.text(max_size=16),
                   st.text(alphabet="&<>\"' \t\n\r]]>é漢字\u0000\u0001\ufffe\U0001f600", max_size=12))
_prop_values = st.one_of(st.text(max_size=16), st.integers(-2**31, 2**31 - 1), st.booleans(),
                         st.floats(allow_nan=False, allow_infinity=False, width=64), _names)
_TMX_SKIP_PRINTED = []


def _xml_text(s: str) -> str:
    """What a conforming XML reader gives back for ``s`` after our escaping."""
    import re

    return re.sub("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]", "\ufffd", s)


#: names pytmx uses for its own attributes: it refuses (or trips on) a custom property so named,
#: which Tiled accepts; such inputs are checked with a plain XML parser only
PYTMX_RESERVED = frozenset("""name width height id type class gid path source image trans
    properties tiles frames colliders probability firstgid tilecount columns tilewidth tileheight
    version tiledversion orientation renderorder infinite nextlayerid nextobjectid visible opacity
    offsetx offsety data encoding compression margin spacing parent filename background_color
    layers tilesets offset""".split())


def _prop_text(v) -> str:
    from tilesets.tiled import _property_type

    return _xml_text(_property_type(v)[1])


def _xml_props(node) -> dict:
    p = node.find("properties")
    return {} if p is None else {e.get("name"): e.get("value") for e in p.findall("property")}


@FUZZ
@given(name=_names, layer=_names, props=st.dictionaries(_names, _prop_values, max_size=4),
       tile_props=st.lists(st.dictionaries(_names, _prop_values, max_size=2), max_size=3),
       encoding=st.sampled_from(["csv", "base64-zlib"]), seed=st.integers(0, 999))
def test_fuzz_tmx_and_tsx_round_trip_through_pytmx(name, layer, props, tile_props, encoding, seed):
    import shutil
    import subprocess
    import xml.etree.ElementTree as ET

    import pytmx

    from tilesets import tiled

    COUNT["tiled"] += 1
    n = 4
    rng = np.random.default_rng(seed)
    gids = rng.integers(0, n + 1, (3, 5)).astype(np.uint32)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        Image.fromarray(rng.integers(0, 256, (16, 16 * n, 4), dtype=np.uint8)).save(d / "t.png")
        (d / "t.tsx").write_text(tiled.tileset_xml(
            name=name, tile_size=16, tile_count=n, columns=n, image_source="t.png",
            image_width=16 * n, image_height=16, tile_properties=tile_props, properties=props),
            encoding="utf-8")
        (d / "m.tmx").write_text(tiled.map_xml(gids, tile_size=16, tileset_source="t.tsx",
                                               encoding=encoding, layer_name=layer,
                                               properties=props), encoding="utf-8")
        # 1. any XML reader gets back exactly what was written
        want = {_xml_text(k): _prop_text(v) for k, v in props.items()}
        ts, mp = ET.parse(d / "t.tsx").getroot(), ET.parse(d / "m.tmx").getroot()
        assert ts.get("name") == _xml_text(name) and _xml_props(ts) == want
        assert mp.find("layer").get("name") == _xml_text(layer) and _xml_props(mp) == want
        tiles = {int(t.get("id")): _xml_props(t) for t in ts.findall("tile")}
        for i, tp in enumerate(tile_props):
            assert tiles.get(i, {}) == {_xml_text(k): _prop_text(v) for k, v in tp.items()}
        data = mp.find("layer").find("data")
        assert np.array_equal(tiled.decode_layer_data(data.text, encoding, gids.shape), gids)
        # 2. pytmx loads it (unless a property name shadows one of pytmx's own attributes)
        names = set(want) | {_xml_text(k) for tp in tile_props for k in tp}
        reserved = PYTMX_RESERVED | {a for c in (pytmx.TiledMap, pytmx.TiledTileset,
                                                 pytmx.TiledTileLayer) for a in dir(c)}
        if not names & reserved:
            m = pytmx.TiledMap(str(d / "m.tmx"), image_loader=lambda *a, **k: (lambda *x: None))
            assert m.tilesets[0].name == _xml_text(name)
            assert m.layers[0].name == _xml_text(layer)
            assert set(m.properties) == set(want)
        # 3. Tiled's own renderer draws it
        exe = shutil.which("tmxrasterizer")
        if exe is None:
            if not _TMX_SKIP_PRINTED:
                _TMX_SKIP_PRINTED.append(1)
                print("\nfuzz: tmxrasterizer not installed (apt-get install tiled); "
                      "the XML parser and pytmx alone check the TMX/TSX writer here")
            return
        r = subprocess.run([exe, str(d / "m.tmx"), str(d / "out.png")], capture_output=True,
                           timeout=60, env=dict(os.environ, QT_QPA_PLATFORM="offscreen"))
        assert r.returncode == 0 and (d / "out.png").is_file(), r.stderr


# --------------------------------------------------------------------------- zip sources
def _png(seed: int, size: int = 24) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


_member_names = st.one_of(
    st.sampled_from(["a.png", "dir/b.png", "../evil.png", "/abs.png", "a/../../c.png",
                     "__MACOSX/._a.png", ".hidden.png", "C:\\win.png", "dir/", "ünï.png",
                     "x" * 200 + ".png"]),
    st.text(min_size=1, max_size=20).filter(lambda s: "\x00" not in s),
)
_member_data = st.one_of(
    st.integers(0, 50).map(_png),
    st.integers(0, 50).map(lambda s: _png(s)[: 40 + s]),
    st.binary(max_size=200),
    st.just(b""),
    st.just(_png_header(20000, 20000)),
)


@st.composite
def zip_sources(draw):
    buf = io.BytesIO()
    members = draw(st.lists(st.tuples(_member_names, _member_data,
                                      st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])),
                            max_size=6))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(buf, "w") as zf:
            for name, data, comp in members:
                zf.writestr(zipfile.ZipInfo(name), data, compress_type=comp)
    data = buf.getvalue()
    how = draw(st.sampled_from(["intact", "intact", "truncated", "mutated"]))
    if how == "truncated":
        data = data[: draw(st.integers(0, len(data)))]
    elif how == "mutated" and data:
        b = bytearray(data)
        for _ in range(draw(st.integers(1, 4))):
            b[draw(st.integers(0, len(b) - 1))] = draw(st.integers(0, 255))
        data = bytes(b)
    return data, how, len(members)


@FUZZ
@given(z=zip_sources())
def test_fuzz_zip_sources_give_counted_skips_or_one_clear_error(z):
    from stages import scrape

    COUNT["zip"] += 1
    data, how, n = z
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        (d / "src.zip").write_bytes(data)
        out = d / "out"
        out.mkdir()
        before = sorted(p for p in d.rglob("*") if out not in p.parents and p != out)
        try:
            summary = scrape.run({"source": [str(d / "src.zip")]}, scrape.Params(), out)
        except S.StageError as e:
            assert one_line(e), str(e)
            summary = None
        after = sorted(p for p in d.rglob("*") if out not in p.parents and p != out)
        assert after == before, "scrape wrote outside its folder"
        if summary is not None:
            assert summary["ok"] >= 1
            assert summary["ok"] + summary["skipped"] + summary["duplicate"] <= max(n, 1)
            for p in out.rglob("*"):
                assert out in p.resolve().parents
