"""Shared helpers for stage cores: errors, image loading, atomic writes, progress.

Stages never import ``pipeline/``; everything a stage core needs that is not domain
logic (``palettes/``, ``tilesets/``) lives here.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import glob
import io
import logging
import os
import re
import secrets
import shutil
import warnings
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


class StorageError(StageError, OSError):
    """Writing failed for want of space or because the disk reported an I/O error.

    One line naming the file and the free space left; an ``OSError`` too (``errno`` is the
    original one), so code that treats a failed write as best effort still catches it.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


#: errors of the disk rather than of the program: turned into :class:`StorageError`
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EROFS, errno.EFBIG})


def human_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def free_space(path: os.PathLike | str) -> Optional[int]:
    """Bytes free for this user on the filesystem that holds ``path`` (or its nearest existing
    parent); None when it cannot be told."""
    p = Path(path)
    for q in (p, *p.parents):
        try:
            return shutil.disk_usage(q).free
        except OSError:
            continue
    return None


def storage_error(path: os.PathLike | str, e: OSError) -> OSError:
    """``e`` as a one-line :class:`StorageError` naming ``path`` and the free space, when it is a
    disk error (no space, quota, I/O error, read-only); any other ``OSError`` unchanged."""
    if isinstance(e, StorageError) or e.errno not in DISK_ERRNOS:
        return e
    free = free_space(Path(path).parent)
    left = f"{human_bytes(free)} free" if free is not None else "free space unknown"
    what = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
            errno.EIO: "I/O error from the disk", errno.EROFS: "the filesystem is read-only",
            errno.EFBIG: "file too large for the filesystem"}[e.errno]
    advice = ("free some space and rerun: finished stages stay cached and training resumes "
              "from its last checkpoint" if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
              else "check the disk, then run `pipeline verify`")
    err = StorageError(f"{path}: cannot write: {what} ({left}); {advice}")
    err.errno, err.filename = e.errno, str(path)
    return err


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
_NAME_NUMBER = re.compile(r"[\s_\-.]*\d")


def name_prefix(stem: str) -> str:
    """A screenshot's game as its file name says it: the stem up to its first number, with the
    separators before it (``smb_01`` -> ``smb``, ``ansimuz_cybercity_04_x2`` ->
    ``ansimuz_cybercity``, ``zelda-2`` -> ``zelda``); "" when the stem starts with a number.

    >>> name_prefix("pyxel_platformer_07_x3"), name_prefix("frame0001"), name_prefix("0001")
    ('pyxel_platformer', 'frame', '')
    """
    return _NAME_NUMBER.split(stem, 1)[0].strip(" _-.")


def file_safe(name: str, *, default: str, limit: int = 40) -> str:
    """``name`` (a game or style) as part of a file name: letters, digits, '-' and '_' kept,
    anything else '_', outer '_' dropped, at most ``limit`` characters; ``default`` if nothing
    is left."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name).strip("_")[:limit]
    return safe or default


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
#: default pixel limit per image: 64 M pixels, twice an 8K screen (7680x4320 = 33 M)
DEFAULT_MAX_PIXELS = 64_000_000
#: environment variable that changes the limit (a number of pixels, e.g. 200000000 or 2e8)
MAX_PIXELS_ENV = "TILEGAN_MAX_PIXELS"


def pixel_limit() -> int:
    """The pixel limit per image: ``$TILEGAN_MAX_PIXELS`` when set, else 64 M.

    Raises :class:`ParamError` when the variable is set to something that is not a positive
    number.
    """
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        n = int(float(raw))
    except ValueError:
        n = 0
    if n <= 0:
        raise ParamError(f"{MAX_PIXELS_ENV}={raw!r}: must be a positive number of pixels")
    return n


def pixel_limit_reason(width: int, height: int, limit: Optional[int] = None) -> Optional[str]:
    """Why an image of ``width`` x ``height`` is refused, or None when it is within the limit
    (``limit`` defaults to :func:`pixel_limit`).  Checked from the header, before decoding."""
    limit = pixel_limit() if limit is None else limit
    if width * height <= limit:
        return None
    return (f"{width}x{height} is {width * height / 1e6:.1f} M pixels, over the limit of "
            f"{limit / 1e6:g} M (a screenshot is far smaller; raise {MAX_PIXELS_ENV} to allow it)")


def load_image(path: os.PathLike | str, *, mode: str = "RGB",
               max_pixels: Optional[int] = None) -> np.ndarray:
    """Decode an image file into a uint8 array, shape (H, W, C).

    ``mode`` is "RGB" (C=3) or "RGBA" (C=4).  Palette, greyscale, 16-bit and CMYK inputs are
    converted; palette transparency becomes alpha.  An image whose header declares more than
    ``max_pixels`` pixels (default :func:`pixel_limit`: ``$TILEGAN_MAX_PIXELS`` or 64 M) is
    refused before any pixel is decoded, so a small file cannot take gigabytes.  Of an
    animated image (GIF, APNG, WebP) only the first frame is used, with a warning that gives
    the frame count.  Raises :class:`InputError` naming the file when it cannot be decoded,
    is too large or has no pixels.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    limit = pixel_limit() if max_pixels is None else max_pixels
    caught: list = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                why = pixel_limit_reason(w, h, limit)
                if why:
                    raise InputError(f"{path}: {why}")
                if w == 0 or h == 0:
                    raise InputError(f"{path}: the image has no pixels")
                if getattr(im, "is_animated", False):
                    log.warning("%s: animated image with %d frames; only the first is used",
                                path, getattr(im, "n_frames", 0))
                    im.seek(0)
                im.load()
                arr = pil_to_array(im, mode=mode)
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except MemoryError:
        raise InputError(f"{path}: not enough memory to decode this image") from None
    except Exception as e:  # Pillow raises many types for bad files (incl. DecompressionBombError)
        msg = " ".join(str(e).split()) or type(e).__name__
        if isinstance(e, (UnidentifiedImageError, OSError, SyntaxError, ValueError)):
            raise InputError(f"{path}: not a readable image ({msg})") from None
        raise InputError(f"{path}: not a usable image ({type(e).__name__}: {msg})") from None
    finally:
        # Pillow's own warnings on a damaged file ("Corrupt EXIF data", "Truncated File Read"):
        # one log line each, naming the file, instead of Python's two-line warning output
        for msg in dict.fromkeys(" ".join(str(w.message).split()) for w in caught):
            log.warning("%s: %s", path, msg)
    if arr.ndim != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
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
    """Convert a PIL image of any mode into uint8 RGB or RGBA, shape (H, W, 3 or 4).

    16-bit and 32-bit greyscale is scaled to 8 bits (by 257 when any value is above 255) with
    integer arithmetic, so a large image does not take eight bytes a pixel on the way.
    """
    if mode not in ("RGB", "RGBA"):
        raise ValueError(f"mode must be 'RGB' or 'RGBA', got {mode!r}")
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(im)
        if a.dtype.kind == "u":
            a = a.astype(np.uint32)
        else:
            a = np.clip(a, 0, 65535).astype(np.uint32)
        if a.max(initial=0) > 255:
            a = (a * 255 + 32767) // 65535
        a = a.astype(np.uint8)
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
def temp_sibling(path: os.PathLike | str) -> Path:
    """A fresh hidden name beside ``path`` for writing it atomically: ``.<name>.<pid>.<rand>.tmp``.

    Hidden, so a cache commit leaves it out; ``pipeline verify --repair`` removes strays."""
    p = Path(path)
    return p.with_name(f".{p.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def open_new(path: os.PathLike | str) -> int:
    """Create ``path`` (which must not exist) for writing; its mode follows the umask, as for
    any new file (mkstemp would give 0600)."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)


@contextlib.contextmanager
def discard_on_failure(tmp: os.PathLike | str, target: os.PathLike | str, *,
                       cause: Optional[Callable[[BaseException], BaseException]] = None
                       ) -> Iterator[None]:
    """Run the body; if it raises, remove ``tmp`` (a file or a folder, quietly if it is gone)
    and re-raise: an ``OSError`` as :func:`storage_error` naming ``target``.

    ``cause(e)``, when given, picks the error to report for ``e`` (a writer's own OSError that a
    library wrapped in one of its own)."""
    try:
        yield
    except BaseException as e:
        tmp = Path(tmp)
        try:
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp)
            else:
                os.unlink(tmp)
        except OSError:
            pass
        err = cause(e) if cause is not None else e
        if isinstance(err, OSError):
            raise storage_error(target, err) from None
        raise


def atomic_write_bytes(path: os.PathLike | str, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary sibling, fsync and ``os.replace``.

    A reader never sees a half-written file, even if the process is killed mid-write; the
    file's permissions follow the umask.  A full disk or an I/O error raises a one-line
    :class:`StorageError` naming ``path`` and the free space, and leaves no temporary file.
    """
    path = Path(path)
    tmp = temp_sibling(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = open_new(tmp)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except OSError as e:
        raise storage_error(path, e) from None
    return path


def atomic_write_text(path: os.PathLike | str, text: str) -> Path:
    """:func:`atomic_write_bytes` of ``text`` encoded as UTF-8."""
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


# --------------------------------------------------------------------------- process pools
def pool_workers(n_items: int, requested: int = 0, *, min_items: int = 16, cap: int = 4) -> int:
    """How many worker processes to use for ``n_items`` items.

    ``requested`` when > 0; otherwise the cores this process may use (at most ``cap``) when
    there are at least ``min_items`` items (a pool costs more than it saves on a few), else 1.
    """
    if requested > 0:
        return requested
    if n_items < min_items:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, cap))


def map_ordered(fn: Callable[[Any], Any], items: Iterable[Any], *, workers: int = 1,
                ahead: int = 0, mp_context: Any = None,
                initializer: Optional[Callable[[], None]] = None) -> Iterator[Any]:
    """``fn(item)`` for every item, yielded in the order of ``items``.

    With ``workers`` > 1 the calls run in a process pool (``fn`` and the items must pickle:
    a module-level function, or ``functools.partial`` of one).  At most ``ahead`` calls
    (default 4 per worker) run or wait beyond the result being yielded, so results never pile
    up in memory when the consumer is slower than the pool, and ``items`` may be a generator.
    ``initializer`` runs once in each worker (not in-process when ``workers`` <= 1).
    """
    if workers <= 1:
        for item in items:
            yield fn(item)
        return
    import collections
    import concurrent.futures as cf

    ahead = ahead or 4 * workers
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp_context,
                                initializer=initializer) as ex:
        pending: collections.deque = collections.deque()
        try:
            for item in items:
                pending.append(ex.submit(fn, item))
                if len(pending) > ahead:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()
