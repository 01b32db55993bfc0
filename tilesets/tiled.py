"""Write Tiled files: external tilesets (.tsx), orthogonal maps (.tmx) and projects.

We write the XML ourselves (pytmx only reads) with a small serializer that escapes every
attribute value and text node, so names holding ``& < > " '`` load in Tiled, ``tmxrasterizer``
and pytmx alike.

GIDs follow Tiled's convention: ``0`` is an empty cell, a tile of the (single) tileset is
``firstgid + tile_id``, and the three high bits are the flip flags of
:class:`tilesets.cells.Flip` (the same bits as our map cells).

Examples
--------
>>> import numpy as np
>>> from tilesets.cells import Flip
>>> xml = map_xml(np.array([[1, 2 | Flip.H]], np.uint32), tile_size=16,
...               tileset_source="../tileset.tsx")
>>> "2147483650" in xml
True
"""
from __future__ import annotations

import base64
import json
import math
import re
import zlib
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from tilesets.cells import FLIP_MASK, ID_MASK

#: Format version we write, and the Tiled release it matches (Debian's tiled 1.8.2).
TMX_VERSION = "1.8"
TILED_VERSION = "1.8.2"

ENCODINGS = ("csv", "base64-zlib")

# XML 1.0 forbids these characters even as character references.
_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def xml_escape(value: Any) -> str:
    """Escape ``value`` (converted with ``str``) for an XML attribute or text node.

    All five predefined entities are escaped (``& < > " '``), and tab, newline and carriage
    return become character references so attribute values keep them.  Characters that XML 1.0
    cannot hold at all (C0 controls other than those three) are replaced by U+FFFD.

    >>> xml_escape('Tom & "Jerry" <1\\'s>')
    'Tom &amp; &quot;Jerry&quot; &lt;1&apos;s&gt;'
    """
    s = _FORBIDDEN.sub("\ufffd", str(value))
    return (s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&apos;")
            .replace("\t", "&#9;").replace("\n", "&#10;").replace("\r", "&#13;"))


def _attrs(pairs: Sequence[tuple[str, Any]]) -> str:
    return "".join(f' {k}="{xml_escape(v)}"' for k, v in pairs if v is not None)


def _property_type(value: Any) -> tuple[Optional[str], str]:
    """Tiled property type and text of ``value`` (type None = Tiled's default, string)."""
    if isinstance(value, (bool, np.bool_)):
        return "bool", "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return "int", str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if not math.isfinite(v):
            return None, str(v)
        return "float", repr(v)
    if isinstance(value, (list, tuple)):
        return None, ",".join(str(x) for x in value)
    return None, str(value)


def properties_xml(props: Optional[Mapping[str, Any]], indent: str) -> list[str]:
    """``<properties>`` lines for ``props`` (name -> bool/int/float/str/sequence).

    ``None`` values are left out.  Sequences become comma-separated strings.  Empty -> ``[]``.
    """
    if not props:
        return []
    items = [(str(k), v) for k, v in props.items() if v is not None]
    if not items:
        return []
    lines = [f"{indent}<properties>"]
    for name, value in items:
        ptype, text = _property_type(value)
        attrs = _attrs([("name", name), ("type", ptype), ("value", text)])
        lines.append(f"{indent} <property{attrs}/>")
    lines.append(f"{indent}</properties>")
    return lines


def tileset_xml(*, name: str, tile_size: int, tile_count: int, columns: int,
                image_source: str, image_width: int, image_height: int,
                tile_properties: Optional[Sequence[Optional[Mapping[str, Any]]]] = None,
                properties: Optional[Mapping[str, Any]] = None, flips: bool = False,
                extra_lines: Sequence[str] = ()) -> str:
    """Text of an external tileset (``.tsx``) cut from one atlas image.

    Parameters
    ----------
    name : str
        Tileset name shown in Tiled (escaped).
    tile_size : int
        Tile width and height in pixels.
    tile_count, columns : int
        Number of tiles, and tiles per atlas row.
    image_source : str
        Path of the atlas image relative to the .tsx file (escaped).
    image_width, image_height : int
        Atlas size in pixels.
    tile_properties : sequence of mapping or None, optional
        Custom properties of tile ``i`` at index ``i`` (shown in Tiled's tile properties).
    properties : mapping, optional
        Custom properties of the whole tileset.
    flips : bool, optional
        Write ``<transformations hflip="1" vflip="1" rotate="0" preferuntransformed="1"/>``
        (Tiled 1.5 and later): the tiles may be drawn flipped, so Tiled's terrain brush also
        uses the flipped forms of the Wang tiles, the unflipped ones first.
    extra_lines : sequence of str, optional
        Lines (without newlines, already escaped) placed after the ``<tile>`` elements, just
        before ``</tileset>``: where Tiled keeps ``<wangsets>`` (e.g.
        :func:`tilesets.terrain.wangsets_xml`).
    """
    for label, v in (("tile_size", tile_size), ("tile_count", tile_count), ("columns", columns),
                     ("image_width", image_width), ("image_height", image_height)):
        if int(v) < 0 or (label != "tile_count" and int(v) == 0):
            raise ValueError(f"{label} must be positive, got {v}")
    if tile_properties is not None and len(tile_properties) > tile_count:
        raise ValueError(f"tile_properties has {len(tile_properties)} entries for {tile_count} tiles")
    head = _attrs([("version", TMX_VERSION), ("tiledversion", TILED_VERSION), ("name", name),
                   ("tilewidth", tile_size), ("tileheight", tile_size), ("tilecount", tile_count),
                   ("columns", columns)])
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', f"<tileset{head}>"]
    if flips:  # where Tiled's own writer puts it: before the properties
        lines.append(' <transformations hflip="1" vflip="1" rotate="0" preferuntransformed="1"/>')
    lines += properties_xml(properties, " ")
    image = _attrs([("source", image_source), ("width", image_width), ("height", image_height)])
    lines.append(f" <image{image}/>")
    for i, props in enumerate(tile_properties or ()):
        body = properties_xml(props, "  ")
        if body:
            lines.append(f' <tile id="{i}">')
            lines += body
            lines.append(" </tile>")
    for line in extra_lines:
        if "\n" in line or "\r" in line:
            raise ValueError(f"extra_lines must not hold line breaks, got {line[:60]!r}")
        lines.append(line)
    lines.append("</tileset>")
    return "\n".join(lines) + "\n"


def encode_layer_data(gids: np.ndarray, encoding: str = "csv") -> tuple[list[tuple[str, str]], str]:
    """Encode a layer's GIDs as Tiled ``<data>`` attributes and text.

    Parameters
    ----------
    gids : ndarray, shape (rows, cols), integer
        GIDs with flip bits (values < 2**32).
    encoding : {"csv", "base64-zlib"}

    Returns
    -------
    attrs : list of (str, str)
    text : str
    """
    g = _as_gids(gids)
    if encoding == "csv":
        rows = [",".join(str(int(v)) for v in row) for row in g]
        return [("encoding", "csv")], "\n" + ",\n".join(rows) + "\n"
    if encoding == "base64-zlib":
        raw = np.ascontiguousarray(g, dtype="<u4").tobytes()
        text = base64.b64encode(zlib.compress(raw, 9)).decode("ascii")
        return [("encoding", "base64"), ("compression", "zlib")], "\n   " + text + "\n  "
    raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")


def decode_layer_data(text: str, encoding: str, shape: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`encode_layer_data`: uint32 GIDs, shape ``shape``."""
    if encoding == "csv":
        vals = [int(v) for v in text.replace("\n", "").split(",") if v.strip()]
        arr = np.array(vals, dtype=np.uint64).astype(np.uint32)
    elif encoding == "base64-zlib":
        arr = np.frombuffer(zlib.decompress(base64.b64decode(text.strip())), dtype="<u4")
    else:
        raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    return arr.reshape(shape).astype(np.uint32)


def _as_gids(gids: np.ndarray) -> np.ndarray:
    g = np.asarray(gids)
    if g.ndim != 2 or g.shape[0] == 0 or g.shape[1] == 0:
        raise ValueError(f"gids must be a non-empty 2-D array, got shape {g.shape}")
    if not np.issubdtype(g.dtype, np.integer):
        raise TypeError(f"gids must be integers, got {g.dtype}")
    if g.size and (int(g.min()) < 0 or int(g.max()) > 0xFFFFFFFF):
        raise ValueError("gids must lie in [0, 2**32)")
    return g.astype(np.uint32)


def map_xml(gids: np.ndarray, *, tile_size: int, tileset_source: str, firstgid: int = 1,
            encoding: str = "csv", layer_name: str = "Tiles",
            properties: Optional[Mapping[str, Any]] = None,
            layer_properties: Optional[Mapping[str, Any]] = None) -> str:
    """Text of an orthogonal, finite ``.tmx`` map with one tile layer and one external tileset.

    Parameters
    ----------
    gids : ndarray, shape (rows, cols), integer
        Tiled GIDs (``0`` = empty, ``firstgid + id`` = tile ``id``) with flip bits.
    tile_size : int
        Tile width and height in pixels.
    tileset_source : str
        Path of the ``.tsx`` relative to the map file (escaped).
    firstgid : int, optional
        GID of the tileset's first tile (default 1).
    encoding : {"csv", "base64-zlib"}, optional
        Layer data encoding.
    layer_name : str, optional
        Name of the tile layer (escaped).
    properties, layer_properties : mapping, optional
        Custom properties of the map and of the layer.
    """
    g = _as_gids(gids)
    rows, cols = g.shape
    if int(tile_size) <= 0:
        raise ValueError(f"tile_size must be positive, got {tile_size}")
    if int(firstgid) < 1:
        raise ValueError(f"firstgid must be >= 1, got {firstgid}")
    head = _attrs([("version", TMX_VERSION), ("tiledversion", TILED_VERSION),
                   ("orientation", "orthogonal"), ("renderorder", "right-down"),
                   ("width", cols), ("height", rows), ("tilewidth", tile_size),
                   ("tileheight", tile_size), ("infinite", 0), ("nextlayerid", 2),
                   ("nextobjectid", 1)])
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', f"<map{head}>"]
    lines += properties_xml(properties, " ")
    lines.append(f" <tileset{_attrs([('firstgid', firstgid), ('source', tileset_source)])}/>")
    layer = _attrs([("id", 1), ("name", layer_name), ("width", cols), ("height", rows)])
    lines.append(f" <layer{layer}>")
    lines += properties_xml(layer_properties, "  ")
    attrs, text = encode_layer_data(g, encoding)
    lines.append(f"  <data{_attrs(attrs)}>{text}</data>")
    lines.append(" </layer>")
    lines.append("</map>")
    return "\n".join(lines) + "\n"


def project_json(*, folders: Sequence[str] = (".",)) -> str:
    """Text of a ``.tiled-project`` file listing ``folders`` (relative to the project file)."""
    doc = {
        "automappingRulesFile": "",
        "commands": [],
        "extensionsPath": "extensions",
        "folders": [str(f) for f in folders],
        "objectTypesFile": "",
        "propertyTypes": [],
    }
    return json.dumps(doc, indent=4) + "\n"


def bank_ids_to_gids(cells: np.ndarray, *, firstgid: int = 1) -> np.ndarray:
    """Convert tilegan tile cells (bank id in the low 29 bits + flip bits) to Tiled GIDs.

    Parameters
    ----------
    cells : ndarray, shape (rows, cols), integer
        Values ``id | flips`` as stored in ``maps.npz``.

    Returns
    -------
    ndarray, shape (rows, cols), uint32
        ``(id + firstgid) | flips``.
    """
    c = np.asarray(cells).astype(np.uint64)
    ids = c & np.uint64(ID_MASK)
    flips = c & np.uint64(FLIP_MASK)
    return ((ids + int(firstgid)) | flips).astype(np.uint32)
