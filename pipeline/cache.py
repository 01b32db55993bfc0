"""Content-addressed artifact cache (DVC-style keys, Dagster-style early cut-off).

Layout::

    <root>/<stage>/<key>/            a committed artifact (has manifest.json)
    <root>/<stage>/<key>.partial/    a run in progress or interrupted (resumable state)
    <root>/<stage>/LATEST            key of the most recently committed artifact
    <root>/.lock                     one writer at a time
    <root>/.input-hashes.json        memo of user input files' sha256, keyed by stat (see HashMemo)

The key of a stage run hashes the stage name, the source of the stage module and of every project
module it imports (transitively), the versions of the libraries that change its results, the
canonical JSON of its parameters, and the *content* digests of its inputs.  Keying on content
gives early cut-off: an upstream rerun that yields identical bytes rebuilds nothing downstream.
"""
from __future__ import annotations

import ast
import dataclasses
import enum
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable, Iterator, Optional

from .errors import CacheError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PROJECT_PACKAGES = ("stages", "palettes", "tilesets")
MANIFEST = "manifest.json"
CACHE_FORMAT = 1


# --------------------------------------------------------------------------- hashing
def file_digest(path: Path, bufsize: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(bufsize)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def tree_files(root: Path) -> list[Path]:
    """Every file under ``root`` except the manifest and hidden temp files, sorted."""
    out = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != MANIFEST and not p.name.startswith("."):
            out.append(p)
    return out


def tree_checksums(root: Path) -> dict[str, dict[str, Any]]:
    return {p.relative_to(root).as_posix(): {"sha256": file_digest(p), "bytes": p.stat().st_size}
            for p in tree_files(root)}


def digest_of_checksums(files: dict[str, dict[str, Any]]) -> str:
    h = hashlib.sha256()
    for rel in sorted(files):
        h.update(rel.encode())
        h.update(b"\0")
        h.update(files[rel]["sha256"].encode())
        h.update(b"\n")
    return h.hexdigest()


# --------------------------------------------------------------------------- input-hash memo
INPUT_MEMO = ".input-hashes.json"
MEMO_FORMAT = 1
#: a file whose mtime or ctime is this close to the moment it was hashed (or in the future) is
#: not memoised: a second write within one timestamp tick (coarse clocks, FAT's 2 s mtime)
#: could otherwise keep the same stat signature with new content ("racy" entries, as in git)
MEMO_RACY_NS = 2_000_000_000
#: above this many entries, a save keeps only the files this run looked at
MEMO_MAX_ENTRIES = 200_000


def _stat_signature(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def _valid_entry(v: Any) -> bool:
    return (isinstance(v, list) and len(v) == 6
            and all(isinstance(x, int) and not isinstance(x, bool) for x in v[:5])
            and isinstance(v[5], str) and len(v[5]) == 64)


class HashMemo:
    """sha256 of user input files, remembered by stat signature so unchanged files are not re-read.

    An entry maps a file's absolute path to ``(size, mtime_ns, ctime_ns, inode, device)`` and
    its content hash; the hash is reused only when all five still match, so any write (which
    moves mtime and ctime; ``touch``/``utime`` cannot set ctime back) or replacement (new inode)
    re-reads the file.  Not seen: a content change that keeps all five equal, e.g. after setting
    the system clock back, or on filesystems that do not keep real timestamps.  Force a re-read
    with ``--force`` (it ignores the memo for that stage's inputs) or by deleting the memo file.

    The memo changes only how fast a digest is computed, never its value.  A missing, unreadable
    or malformed memo file is ignored (every file is read); writing it is best effort and atomic.

    Parameters
    ----------
    path : Path or None
        The memo file (``Store.input_memo``); None: hash every file, remember nothing.
    refresh : bool
        Do not trust the stored entries: re-read every file asked for and store fresh entries.
    """

    def __init__(self, path: Optional[Path], *, refresh: bool = False):
        self.path = Path(path) if path is not None else None
        self.refresh = refresh
        self.entries: dict[str, list] = {} if self.path is None else self._load(self.path)
        self.seen: set[str] = set()
        self.dirty = False

    @staticmethod
    def _load(path: Path) -> dict[str, list]:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):   # missing, unreadable, truncated, not UTF-8
            return {}
        if not isinstance(doc, dict) or doc.get("format") != MEMO_FORMAT:
            return {}
        files = doc.get("files")
        if not isinstance(files, dict):
            return {}
        return {k: v for k, v in files.items() if isinstance(k, str) and _valid_entry(v)}

    def digest(self, f: str | os.PathLike) -> str:
        """sha256 hex digest of the file ``f``, from the memo when its stat signature matches."""
        if self.path is None:
            return file_digest(f)
        key = os.path.abspath(f)
        sig = _stat_signature(os.stat(key))       # before reading: a write during it shows later
        e = self.entries.get(key)
        self.seen.add(key)
        if e is not None and e[:5] == sig and not self.refresh:
            return e[5]
        d = file_digest(Path(key))
        if max(sig[1], sig[2]) >= time.time_ns() - MEMO_RACY_NS:
            if self.entries.pop(key, None) is not None:
                self.dirty = True
        elif e != sig + [d]:
            self.entries[key] = sig + [d]
            self.dirty = True
        return d

    def save(self) -> None:
        """Write the memo atomically if it changed; a failure only costs re-reads next time."""
        if self.path is None or not self.dirty:
            return
        files = self.entries
        if len(files) > MEMO_MAX_ENTRIES:
            files = {k: v for k, v in files.items() if k in self.seen}
        data = json.dumps({"format": MEMO_FORMAT, "files": files}, separators=(",", ":"))
        tmp = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f"{self.path.name}.", suffix=".tmp", dir=self.path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(data)
            os.replace(tmp, self.path)
            tmp = None
            self.dirty = False
        except OSError:
            pass
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass


def input_tree(root: str | os.PathLike) -> Iterator[tuple[str, str]]:
    """``(relative posix path, path)`` of every non-hidden file under the folder ``root``, in
    no particular order: the files ``Path(root).rglob("*")`` lists whose name does not start
    with "." and that are files (symlinks followed), without pathlib's per-file overhead.
    Like rglob, hidden folders are entered and symlinked folders are not."""
    stack = [(os.fspath(root), "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except (PermissionError, FileNotFoundError, NotADirectoryError):
            continue
        for e in entries:
            try:
                if e.is_dir(follow_symlinks=False):
                    stack.append((e.path, prefix + e.name + "/"))
                elif not e.name.startswith(".") and e.is_file():
                    yield prefix + e.name, e.path
            except OSError:
                continue


def digest_explicit_inputs(items: Iterable[str | os.PathLike], *, memo: Optional[Path] = None,
                           refresh: bool = False) -> str:
    """Digest of user-given inputs: file contents for paths (folders walked), text for URLs.

    ``memo`` is a :class:`HashMemo` file (``Store.input_memo``) that spares re-reading files
    whose stat signature is unchanged; ``refresh`` re-reads every file anyway.  The digest is
    the same with or without the memo.
    """
    from stages._common import expand_inputs  # lazy: stages/ does not import pipeline/

    hm = HashMemo(memo, refresh=refresh)
    h = hashlib.sha256()
    for item in items:
        s = str(item)
        if s.startswith(("http://", "https://")):
            h.update(b"url:" + s.encode() + b"\n")
            continue
        p = Path(s)
        if p.is_dir():
            files = {rel: {"sha256": hm.digest(f)} for rel, f in input_tree(p)}
            h.update(b"dir:" + digest_of_checksums(files).encode() + b"\n")
        else:
            for f in [p] if p.exists() else expand_inputs([s]):
                h.update(b"file:" + f.name.encode() + b":" + hm.digest(f).encode() + b"\n")
    hm.save()
    return h.hexdigest()


# --------------------------------------------------------------------------- code version
def _module_file(name: str) -> Optional[Path]:
    parts = name.split(".")
    base = PROJECT_ROOT.joinpath(*parts)
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _imports_of(path: Path, modname: str) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    pkg = modname if path.name == "__init__.py" else modname.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                found.add(a.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            for a in node.names:
                found.add(f"{mod}.{a.name}")
    return {m for m in found if m.split(".")[0] in PROJECT_PACKAGES}


@lru_cache(maxsize=None)
def code_digest(modname: str) -> str:
    """Hash of a module's source and of every project module it imports, transitively,
    plus data files of the packages involved (e.g. palettes/data/*)."""
    seen: dict[str, Path] = {}
    todo = [modname]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        f = _module_file(m)
        if f is None:
            continue
        seen[m] = f
        # parent packages' __init__ run on import too
        parent = m.rpartition(".")[0]
        if parent:
            todo.append(parent)
        todo.extend(_imports_of(f, m))
    h = hashlib.sha256()
    for m in sorted(seen):
        h.update(m.encode() + b"\0" + seen[m].read_bytes())
    for pkg in sorted({m.split(".")[0] for m in seen}):
        data = PROJECT_ROOT / pkg / "data"
        if data.is_dir():
            for f in sorted(data.rglob("*")):
                if f.is_file():
                    h.update(f.relative_to(PROJECT_ROOT).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def lib_versions(libs: Iterable[str]) -> dict[str, str]:
    out = {}
    for lib in sorted(set(libs)):
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            out[lib] = "absent"
    return out


# --------------------------------------------------------------------------- params
def canonical(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: canonical(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return canonical(obj.value)
    if isinstance(obj, (list, tuple)):
        return [canonical(x) for x in obj]
    if isinstance(obj, dict):
        return {str(k): canonical(v) for k, v in sorted(obj.items())}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def stage_key(stage: ModuleType, params: Any, inputs: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """Return (key, the payload it hashes)."""
    payload = {
        "cache_format": CACHE_FORMAT,
        "stage": stage.NAME,
        "code": code_digest(stage.__name__),
        "libs": lib_versions(getattr(stage, "LIBS", ())),
        "params": canonical(params),
        "inputs": dict(sorted(inputs.items())),
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:24], payload


# --------------------------------------------------------------------------- store
class Store:
    """The artifact store under ``root`` (default ``out/cache``)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._lock_fd: Optional[int] = None

    @property
    def input_memo(self) -> Path:
        """The :class:`HashMemo` file for user inputs of this store."""
        return self.root / INPUT_MEMO

    # -- locking
    def lock(self) -> "Store":
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise CacheError(f"{self.root}: another pipeline run is writing this cache; "
                             "wait for it to finish") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd
        return self

    def unlock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> "Store":
        return self.lock()

    def __exit__(self, *exc: Any) -> None:
        self.unlock()

    # -- entries
    def entry(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def lookup(self, stage: str, key: str) -> Optional[Path]:
        d = self.entry(stage, key)
        return d if (d / MANIFEST).is_file() else None

    def manifest(self, artifact: Path) -> dict[str, Any]:
        try:
            return json.loads((artifact / MANIFEST).read_text())
        except (OSError, ValueError) as e:
            raise CacheError(f"{artifact}: unreadable manifest ({e}); rerun with --force") from None

    def partial(self, stage: str, key: str) -> Path:
        """A stable work directory for (stage, key): survives an interruption, so long
        stages resume from the state they left there."""
        d = self.root / stage / f"{key}.partial"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def commit(self, stage: str, key: str, work: Path, info: dict[str, Any]) -> Path:
        """Checksum ``work``, write its manifest, and rename it into place atomically."""
        files = tree_checksums(work)
        # drop hidden resumable leftovers (e.g. .ckpt tmp files) from the committed artifact
        for p in sorted(work.rglob(".*"), reverse=True):
            if p.is_file():
                p.unlink()
        manifest = dict(info, key=key, stage=stage, files=files,
                        content_digest=digest_of_checksums(files))
        tmp = work / f".{MANIFEST}.tmp"
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
        os.replace(tmp, work / MANIFEST)
        final = self.entry(stage, key)
        if final.exists():
            shutil.rmtree(final)
        os.replace(work, final)
        self.set_latest(stage, key)
        return final

    def set_latest(self, stage: str, key: str) -> None:
        p = self.root / stage / "LATEST"
        tmp = p.with_name(".LATEST.tmp")
        tmp.write_text(key + "\n")
        os.replace(tmp, p)

    def latest(self, stage: str) -> Optional[Path]:
        p = self.root / stage / "LATEST"
        if not p.is_file():
            return None
        return self.lookup(stage, p.read_text().strip())

    def entries(self, stage: str) -> list[Path]:
        d = self.root / stage
        if not d.is_dir():
            return []
        return sorted(p for p in d.iterdir() if p.is_dir() and (p / MANIFEST).is_file())

    def content_digest(self, artifact: Path) -> str:
        return self.manifest(artifact)["content_digest"]


def publish(artifact: Path, dest: Path, *, replace: bool) -> Path:
    """Copy an artifact's files to ``dest``.

    ``replace=True`` (our own ``out/<name>/``): build a complete copy beside ``dest`` and swap
    it in, so ``dest`` is never half-written.  ``replace=False`` (a user's ``--out`` folder):
    copy file by file (each atomically), never deleting the user's other files.
    """
    dest = Path(dest)
    files = [p for p in tree_files(artifact)]
    if replace:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
        if tmp.exists():
            shutil.rmtree(tmp)
        for p in files:
            q = tmp / p.relative_to(artifact)
            q.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, q)
        shutil.copy2(artifact / MANIFEST, tmp / ".tilegan-manifest.json")
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        if dest.exists():
            os.replace(dest, old)
        os.replace(tmp, dest)
        if old.exists():
            shutil.rmtree(old)
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    for p in files:
        q = dest / p.relative_to(artifact)
        q.parent.mkdir(parents=True, exist_ok=True)
        t = q.with_name(f".{q.name}.tmp")
        shutil.copy2(p, t)
        os.replace(t, q)
    return dest


def published_key(dest: Path) -> Optional[str]:
    try:
        return json.loads((Path(dest) / ".tilegan-manifest.json").read_text()).get("key")
    except (OSError, ValueError):
        return None

