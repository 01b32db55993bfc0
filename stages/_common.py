"""Shared helpers for stage cores: errors, image loading, atomic writes, progress.

Stages never import ``pipeline/``; everything a stage core needs that is not domain
logic (``palettes/``, ``tilesets/``) lives here.
"""
from __future__ import annotations

import dataclasses
import glob
import io
import logging
import os
import tempfile
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import numpy as np

log = logging.getLogger("tilegan")

IMAGE_SUFFIXES = (".png", ".gif", ".bmp", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".ppm", ".tga")


class StageError(Exception):
    """A problem the user can fix; the CLI prints it as one line and exits 1."""


class InputError(StageError):
    """Bad or missing input: a path, an image, a file format."""


class ParamError(StageError):
    """A parameter value that cannot work.

    ``field`` names the offending ``Params`` field when there is one, so the pipeline can say
    which file, table and key (or which ``--option``) gave the value.
    """

    def __init__(self, message: str, *, field: Optional[str] = None):
        super().__init__(message)
        self.field = field


# --------------------------------------------------------------------------- progress
#: ``progress(desc, done, total, **postfix)``: report that ``done`` of ``total`` units of the
#: task called ``desc`` are finished.  ``total`` may be None.  The CLI draws a bar per ``desc``.
ProgressFn = Callable[..., None]


def no_progress(desc: str, done: int, total: Optional[int] = None, **postfix: Any) -> None:
    """Default progress callback: does nothing."""


def param(default: Any, help: str, *, min: Optional[float] = None, max: Optional[float] = None,
          choices: Optional[Sequence[Any]] = None, multiple_of: Optional[int] = None,
          **kw: Any) -> Any:
    """A dataclass field with CLI help text and its allowed values, declared once.

    ``min``/``max`` bound a number (inclusive), ``choices`` lists the allowed values (a ``str``
    Enum field's members are its choices already), ``multiple_of`` asks for a multiple of an
    integer.  :func:`check_params` enforces them; ``StageParams`` calls it on construction.
    """
    if isinstance(default, (list, dict, set)):
        raise TypeError("use tuples for sequence defaults so Params stays frozen/hashable")
    meta = {"help": help, **kw}
    for name, value in (("min", min), ("max", max), ("choices", choices), ("multiple_of", multiple_of)):
        if value is not None:
            meta[name] = tuple(value) if name == "choices" else value
    return dataclasses.field(default=default, metadata=meta)


def _field_choices(f: dataclasses.Field, value: Any) -> Optional[tuple]:
    if "choices" in f.metadata:
        return f.metadata["choices"]
    if isinstance(f.default, Enum):
        return tuple(m.value for m in type(f.default))
    return None


def _range_text(lo: Any, hi: Any) -> str:
    if lo is not None and hi is not None:
        return f"within {lo}..{hi}"
    return f"at least {lo}" if lo is not None else f"at most {hi}"


def check_params(params: Any, stage: str) -> None:
    """Check every field of a ``Params`` instance against what its :func:`param` declared.

    Raises :class:`ParamError` (with ``field`` set) naming the stage, the field, the rule and
    the value: ``crop: stride must be a multiple of 16, got 24``.
    """
    for f in dataclasses.fields(params):
        v = getattr(params, f.name)
        meta = f.metadata
        choices = _field_choices(f, v)
        if choices is not None:
            plain = v.value if isinstance(v, Enum) else v
            if plain not in choices:
                raise ParamError(f"{stage}: {f.name} must be one of "
                                 f"{', '.join(str(c) for c in choices)}, got {plain!r}", field=f.name)
        lo, hi = meta.get("min"), meta.get("max")
        if lo is None and hi is None and "multiple_of" not in meta:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ParamError(f"{stage}: {f.name} must be a number, got {v!r}", field=f.name)
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise ParamError(f"{stage}: {f.name} must be {_range_text(lo, hi)}, got {v!r}",
                             field=f.name)
        k = meta.get("multiple_of")
        if k and v % k:
            raise ParamError(f"{stage}: {f.name} must be a multiple of {k}, got {v!r}", field=f.name)


class StageParams:
    """Base of every stage's frozen ``Params`` dataclass: values are checked on construction.

    Subclasses set ``STAGE`` (the stage name used in messages) and may override
    :meth:`check` for rules that involve several fields (call ``super().check()`` first).
    """

    STAGE = "stage"

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        check_params(self, self.STAGE)


# --------------------------------------------------------------------------- paths
def expand_inputs(items: Iterable[os.PathLike | str], suffixes: Sequence[str] = IMAGE_SUFFIXES,
                  *, recursive: bool = True) -> list[Path]:
    """Expand files, folders and glob patterns into a sorted, de-duplicated file list.

    Folders are searched (recursively by default) for files whose suffix is in ``suffixes``.
    A path that does not exist and matches no glob raises :class:`InputError`.
    """
    out: list[Path] = []
    for item in items:
        s = str(item)
        p = Path(s)
        if p.is_dir():
            it = p.rglob("*") if recursive else p.iterdir()
            out.extend(sorted(f for f in it if f.is_file() and f.suffix.lower() in suffixes))
        elif p.is_file():
            out.append(p)
        elif any(ch in s for ch in "*?["):
            matches = sorted(Path(m) for m in glob.glob(s, recursive=True) if Path(m).is_file())
            if not matches:
                raise InputError(f"{s}: the pattern matches no file")
            out.extend(matches)
        else:
            raise InputError(f"{s}: no such file or folder")
    seen: set[Path] = set()
    uniq = []
    for f in out:
        r = f.resolve()
        if r not in seen:
            seen.add(r)
            uniq.append(f)
    return uniq


# --------------------------------------------------------------------------- images
def load_image(path: os.PathLike | str, *, mode: str = "RGB") -> np.ndarray:
    """Decode an image file into a uint8 array, shape (H, W, C).

    ``mode`` is "RGB" (C=3) or "RGBA" (C=4).  Palette, greyscale, 16-bit and CMYK inputs are
    converted; palette transparency becomes alpha.  Raises :class:`InputError` naming the file
    when it cannot be decoded or has no pixels.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            arr = pil_to_array(im, mode=mode)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except Exception as e:  # Pillow raises many types for bad files (incl. DecompressionBombError)
        if isinstance(e, (UnidentifiedImageError, OSError, SyntaxError, ValueError)):
            raise InputError(f"{path}: not a readable image ({e})") from None
        raise InputError(f"{path}: not a usable image ({type(e).__name__}: {e})") from None
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"{path}: the image has no pixels")
    return arr


class Skipped:
    """The inputs a stage skipped, in order, each with the reason: ``{key: name, "reason": why}``.

    A corrupt image inside a batch is never fatal: the stage records it here, logs one warning
    and carries on; the list goes into the stage summary (fatal only when nothing is left).

    Parameters
    ----------
    key : str
        Name of the field that identifies the input: ``"path"`` for files (slice, quantize,
        dedupe), ``"source"`` where inputs may be URLs (crop).
    logger : logging.Logger
        Where the one-line ``skipped <reason>`` warning goes.
    """

    def __init__(self, *, key: str = "path", logger: logging.Logger = log):
        self.key = key
        self.logger = logger
        self.items: list[dict[str, Any]] = []

    def add(self, name: Any, reason: str, **extra: Any) -> None:
        """Record ``name`` as skipped because of ``reason`` (a message that names the file)."""
        self.logger.warning("skipped %s", reason)
        self.items.append({self.key: str(name), "reason": reason, **extra})

    def first_reason(self) -> str:
        """The first recorded reason, or "" when nothing was skipped."""
        return self.items[0]["reason"] if self.items else ""

    def nothing_usable(self, stage: str, n: int, what: str = "input image(s)") -> "InputError":
        """The error for a stage left with nothing: names the count and the first problem."""
        return InputError(f"{stage}: none of the {n} {what} could be used "
                          f"(first problem: {self.first_reason() or 'unknown'})")

    def __len__(self) -> int:
        return len(self.items)


def iter_images(paths: Iterable[os.PathLike | str], skipped: Skipped, *,
                mode: str = "RGB") -> Iterator[tuple[Path, np.ndarray]]:
    """Yield ``(path, image)`` for every decodable file in ``paths``, in order.

    An unreadable file (see :func:`load_image`) is recorded in ``skipped`` with the
    :class:`InputError` message as its reason, and the loop carries on.

    Examples
    --------
    >>> skipped = Skipped()
    >>> for path, rgb in iter_images(files, skipped, mode="RGB"):  # doctest: +SKIP
    ...     use(rgb)
    """
    for path in paths:
        try:
            image = load_image(path, mode=mode)
        except InputError as e:
            skipped.add(path, str(e))
            continue
        yield Path(path), image


def pil_to_array(im: "Any", *, mode: str = "RGB") -> np.ndarray:
    """Convert a PIL image of any mode into uint8 RGB or RGBA."""
    if mode not in ("RGB", "RGBA"):
        raise ValueError(f"mode must be 'RGB' or 'RGBA', got {mode!r}")
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if a.max(initial=0) > 255 else 255.0
        a = np.clip(np.round(a / hi * 255.0), 0, 255).astype(np.uint8)
        rgb = np.repeat(a[..., None], 3, axis=-1)
        if mode == "RGBA":
            return np.concatenate([rgb, np.full(a.shape + (1,), 255, np.uint8)], axis=-1)
        return rgb
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if mode == "RGB" and im.mode in ("RGBA", "LA", "PA"):
        # Composite on black is wrong for sprites; keep colour, drop alpha.
        im = im.convert("RGBA")
        return np.asarray(im, dtype=np.uint8)[..., :3].copy()
    return np.asarray(im.convert(mode), dtype=np.uint8).copy()


def png_bytes(arr_or_image: "Any", *, palette: Optional[np.ndarray] = None,
              transparency: Optional[int] = None) -> bytes:
    """Encode deterministic PNG bytes (no timestamps, no text chunks).

    ``arr_or_image`` is a PIL image or a uint8 array: (H, W) index array (then ``palette``,
    shape (K, 3) uint8, is required), (H, W, 3) RGB or (H, W, 4) RGBA.
    """
    from PIL import Image

    if isinstance(arr_or_image, np.ndarray):
        a = arr_or_image
        if a.dtype != np.uint8:
            raise TypeError(f"image array must be uint8, got {a.dtype}")
        if a.ndim == 2:
            if palette is None:
                raise ValueError("an index image needs a palette")
            a = np.ascontiguousarray(a)
            im = Image.frombytes("P", (a.shape[1], a.shape[0]), a.tobytes())
            pal = np.asarray(palette, np.uint8).reshape(-1, 3)
            im.putpalette(pal.tobytes(), rawmode="RGB")
        elif a.ndim == 3 and a.shape[2] in (3, 4):
            im = Image.fromarray(np.ascontiguousarray(a))
        else:
            raise ValueError(f"unsupported image array shape {a.shape}")
    else:
        im = arr_or_image
    buf = io.BytesIO()
    kw: dict[str, Any] = {"optimize": False, "compress_level": 6}
    if transparency is not None:
        kw["transparency"] = transparency
    im.save(buf, format="PNG", **kw)
    return buf.getvalue()


def save_png(path: os.PathLike | str, arr_or_image: "Any", **kw: Any) -> Path:
    """Write a deterministic PNG atomically (see :func:`png_bytes`)."""
    return atomic_write_bytes(path, png_bytes(arr_or_image, **kw))


# --------------------------------------------------------------------------- atomic writes
def atomic_write_bytes(path: os.PathLike | str, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary sibling and ``os.replace``.

    A reader never sees a half-written file, even if the process is killed mid-write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path: os.PathLike | str, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def save_npy(path: os.PathLike | str, arr: np.ndarray) -> Path:
    """Save one array as .npy atomically."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return atomic_write_bytes(path, buf.getvalue())


def save_npz(path: os.PathLike | str, **arrays: np.ndarray) -> Path:
    """Save arrays as an uncompressed .npz atomically (deterministic member order)."""
    buf = io.BytesIO()
    np.savez(buf, **{k: arrays[k] for k in sorted(arrays)})
    return atomic_write_bytes(path, buf.getvalue())


def write_json(path: os.PathLike | str, obj: Any) -> Path:
    import json

    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def find_artifact(paths: Sequence[os.PathLike | str], name: str) -> Optional[Path]:
    """Return ``<dir>/<name>`` for the first directory in ``paths`` that has it, or a path
    in ``paths`` whose file name is ``name``."""
    for p in paths:
        p = Path(p)
        if p.is_dir() and (p / name).exists():
            return p / name
        if p.is_file() and p.name == name:
            return p
    return None


def iter_chunks(seq: Sequence[Any], n: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]
