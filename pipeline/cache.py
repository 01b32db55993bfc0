"""Content-addressed artifact cache (DVC-style keys, Dagster-style early cut-off).

Layout::

    <root>/<stage>/<key>/            a committed artifact (manifest.json, written last, lists
                                     every file's size and sha256; see check_artifact)
    <root>/<stage>/<key>.partial/    a run in progress or interrupted (resumable state)
    <root>/<stage>/.<key>.old/       the artifact a forced rerun replaced, until it is deleted
    <root>/<stage>/LATEST            key of the most recently committed artifact
    <root>/.lock                     one writer at a time
    <root>/.input-hashes.json        memo of user input files' sha256, keyed by stat (see HashMemo)

Crash consistency (docs/architecture.md, "Guarantees"): a hit is only a complete artifact, a
commit or a publish never deletes the old folder before the new one is in place, and
``Store.recover`` finishes or undoes whatever a kill interrupted.

The key of a stage run hashes the stage name, the source of the stage module and of every project
module it imports (transitively), the versions of the libraries that change its results, the
canonical JSON of its parameters, and the *content* digests of its inputs.  Keying on content
gives early cut-off: an upstream rerun that yields identical bytes rebuilds nothing downstream.
"""
from __future__ import annotations

import ast
import ctypes
import dataclasses
import enum
import errno
import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterable, Iterator, Optional

from stages._common import (atomic_write_text, discard_on_failure, open_new, storage_error,
                            temp_sibling)

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
        try:
            atomic_write_text(self.path, data)
            self.dirty = False
        except OSError:       # incl. a full disk: the memo only saves re-reads
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


# --------------------------------------------------------------------------- crash-safe moves
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _load_renameat2() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        f = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    f.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    f.restype = ctypes.c_int
    return f


_RENAMEAT2 = _load_renameat2()


def exchange(a: Path, b: Path) -> bool:
    """Swap the two existing paths ``a`` and ``b`` in one step (Linux ``renameat2`` with
    ``RENAME_EXCHANGE``), so that neither name is ever missing.  False when the system or the
    filesystem cannot (the caller then falls back to two renames)."""
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def swap_in(new: Path, dest: Path, aside: Path) -> None:
    """Put the folder ``new`` at ``dest``; a folder already there goes to ``aside`` and is then
    deleted.  Never destructive before the new folder is in place: with ``exchange`` ``dest``
    always exists; without it, a kill between the two renames leaves the old folder at
    ``aside``, which :meth:`Store.recover` and :func:`recover_published` put back."""
    if aside.exists():
        remove_tree(aside)
    if dest.exists():
        if exchange(new, dest):
            os.replace(new, aside)
        else:
            os.replace(dest, aside)
            os.replace(new, dest)
    else:
        os.replace(new, dest)
    remove_tree(aside)


def remove_tree(path: Path) -> None:
    """Delete a folder (or file) if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def check_artifact(path: Path, *, key: Optional[str] = None, full: bool = False) -> Optional[str]:
    """What is wrong with the committed artifact folder ``path``, or None when it is complete.

    Complete means: ``manifest.json`` (written last by :meth:`Store.commit`) is readable, is
    for ``key`` when given, and every file it lists is there with its recorded size; with
    ``full=True`` also with its recorded sha256.  The size check is what every cache hit costs
    (one stat a file); the checksums are for ``pipeline verify``.
    """
    try:
        m = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "no manifest.json (a commit did not finish)"
    except (OSError, ValueError) as e:
        return f"unreadable manifest.json ({type(e).__name__})"
    if not isinstance(m, dict) or not isinstance(m.get("files"), dict):
        return "manifest.json lists no files"
    if key is not None and m.get("key") != key:
        return f"manifest.json is for key {m.get('key')!r}"
    for rel, meta in sorted(m["files"].items()):
        p = path / rel
        try:
            size = p.stat().st_size
        except OSError:
            return f"{rel} is missing"
        want = meta.get("bytes") if isinstance(meta, dict) else None
        if size != want:
            return f"{rel} is {size} bytes, the manifest says {want}"
        if full:
            try:
                digest = file_digest(p)
            except OSError as e:
                return f"{rel} cannot be read ({e.strerror or e})"
            if digest != meta.get("sha256"):
                return f"{rel} does not match its checksum"
    return None


def stray_temp_files(folder: Path) -> list[Path]:
    """Hidden ``*.tmp`` files an interrupted atomic write left in ``folder`` (e.g. LATEST's);
    only stray when no writer holds the lock."""
    try:
        return sorted(p for p in folder.iterdir()
                      if p.name.startswith(".") and p.name.endswith(".tmp") and p.is_file())
    except OSError:
        return []


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- store
PARTIAL_SUFFIX = ".partial"
ASIDE_SUFFIX = ".old"


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
        """Take the store's lock (one writer at a time).  Writes nothing when the lock file is
        there already, so a fully cached run works on a full disk."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise storage_error(self.root / ".lock", e) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise CacheError(f"{self.root}: another pipeline run is writing this cache; "
                             "wait for it to finish") from None
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

    def work_dir(self, stage: str, key: str) -> Path:
        """Where a run of (stage, key) writes (``<key>.partial``); not created."""
        return self.root / stage / f"{key}{PARTIAL_SUFFIX}"

    def aside(self, stage: str, key: str) -> Path:
        """Where a forced rerun's commit puts the artifact it replaces, until it is deleted."""
        return self.root / stage / f".{key}{ASIDE_SUFFIX}"

    def lookup(self, stage: str, key: str) -> Optional[Path]:
        """The committed artifact of (stage, key) when it is complete (see
        :func:`check_artifact`: manifest present, every file at its recorded size), else None."""
        d = self.entry(stage, key)
        return d if check_artifact(d, key=key) is None else None

    def manifest(self, artifact: Path) -> dict[str, Any]:
        try:
            return json.loads((artifact / MANIFEST).read_text())
        except (OSError, ValueError) as e:
            raise CacheError(f"{artifact}: unreadable manifest ({e}); rerun with --force") from None

    def partial(self, stage: str, key: str) -> Path:
        """A stable work directory for (stage, key): survives an interruption, so long
        stages resume from the state they left there."""
        d = self.work_dir(stage, key)
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise storage_error(d, e) from None
        return d

    def recover(self, stage: str, key: str) -> Optional[str]:
        """Finish or undo a commit of (stage, key) that a kill interrupted; call under the lock.

        - a complete artifact in place: a left-over aside copy is deleted, and so is a work
          folder of the same key (left by a cut-short ``--force`` run: forced runs start afresh,
          so nothing can resume from it);
        - an incomplete folder in place (no manifest, a file missing or cut short): deleted,
          it can never be a hit;
        - no artifact in place: a complete ``<key>.partial`` (its manifest written, the kill
          came before the rename) is moved in, else a complete aside copy is moved back.

        Returns what it did, for the log, or None when there was nothing to do.
        """
        final, work, aside = self.entry(stage, key), self.work_dir(stage, key), self.aside(stage, key)
        did = None
        try:
            if final.exists() and check_artifact(final, key=key) is not None:
                remove_tree(final)
                did = f"removed the incomplete artifact {final}"
            if not final.exists():
                for cand in (work, aside):
                    if cand.is_dir() and check_artifact(cand, key=key) is None:
                        os.replace(cand, final)
                        did = f"finished an interrupted commit of {final}"
                        break
            if aside.exists():
                remove_tree(aside)
                did = did or f"removed {aside}"
            if final.exists() and work.exists():
                remove_tree(work)
                did = did or f"removed {work}, left by a forced rerun that was cut short"
            for p in stray_temp_files(final.parent):
                p.unlink()
                did = did or f"removed {p}, left by an interrupted write"
        except OSError as e:
            raise storage_error(final, e) from None
        return did

    def commit(self, stage: str, key: str, work: Path, info: dict[str, Any]) -> Path:
        """Checksum ``work``, write its manifest last, and move it into place.

        Never destructive before the new artifact is in place: a folder already there (a forced
        rerun) is swapped out (:func:`swap_in`) and only then deleted.  A kill at any moment
        leaves either the old complete artifact, or the new one, or a state that
        :meth:`recover` completes; a hit is only ever a complete artifact.
        """
        final = self.entry(stage, key)
        try:
            files = tree_checksums(work)
            # drop hidden resumable leftovers (e.g. .ckpt tmp files) from the committed artifact
            for p in sorted(work.rglob(".*"), reverse=True):
                if p.is_file():
                    p.unlink()
            manifest = dict(info, key=key, stage=stage, files=files,
                            content_digest=digest_of_checksums(files))
            atomic_write_text(work / MANIFEST,
                              json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
            _fsync_dir(work)
            swap_in(work, final, self.aside(stage, key))
            _fsync_dir(final.parent)
        except OSError as e:
            raise storage_error(final, e) from None
        self.set_latest(stage, key)
        return final

    def set_latest(self, stage: str, key: str) -> None:
        """Point ``<stage>/LATEST`` at ``key``; writes nothing when it already does."""
        p = self.root / stage / "LATEST"
        try:
            if p.read_text().strip() == key:
                return
        except (OSError, UnicodeDecodeError):
            pass
        atomic_write_text(p, key + "\n")

    def latest(self, stage: str) -> Optional[Path]:
        p = self.root / stage / "LATEST"
        try:
            key = p.read_text().strip()
        except (OSError, UnicodeDecodeError):
            return None
        if not key or "/" in key or key.startswith("."):
            return None
        return self.lookup(stage, key)

    def entries(self, stage: str) -> list[Path]:
        d = self.root / stage
        if not d.is_dir():
            return []
        return sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")
                      and not p.name.endswith(PARTIAL_SUFFIX) and (p / MANIFEST).is_file())

    def partials(self, stage: str) -> list[Path]:
        d = self.root / stage
        if not d.is_dir():
            return []
        return sorted(p for p in d.iterdir() if p.is_dir() and p.name.endswith(PARTIAL_SUFFIX))

    def content_digest(self, artifact: Path) -> str:
        return self.manifest(artifact)["content_digest"]


# --------------------------------------------------------------------------- verify / repair
@dataclasses.dataclass
class Finding:
    """One thing ``pipeline verify`` found: ``kind`` is ok / corrupt / incomplete /
    stale-partial / resumable / leftover; ``removable`` ones go with ``--repair``."""

    kind: str
    path: Path
    detail: str = ""

    @property
    def removable(self) -> bool:
        return self.kind in ("corrupt", "incomplete", "stale-partial", "leftover")


def verify_store(store: Store, *, full: bool = True,
                 resumable: Callable[[str, Path], bool] = lambda stage, p: False,
                 published: Iterable[Path] = ()) -> list[Finding]:
    """Check every artifact of ``store`` (checksums with ``full``) and list its leftovers.

    ``resumable(stage, partial_dir)`` tells a ``.partial`` folder that holds resume state (a
    training checkpoint: kept) from a stale one.  ``published`` folders (``out/<name>/``) are
    checked for publish leftovers beside them.  Call under the lock."""
    found: list[Finding] = []
    root = store.root
    if root.is_dir():
        for p in sorted(root.iterdir()):
            if p.is_file() and p.name.startswith(".") and p.name.endswith(".tmp"):
                found.append(Finding("leftover", p, "temporary file of an interrupted write"))
        for sdir in sorted(q for q in root.iterdir() if q.is_dir() and not q.name.startswith(".")):
            for p in sorted(sdir.iterdir()):
                name = p.name
                if name.startswith("."):
                    if name.endswith(".tmp") or name.endswith(ASIDE_SUFFIX):
                        found.append(Finding("leftover", p, "left by an interrupted write or commit"))
                    continue
                if not p.is_dir():
                    continue
                if name.endswith(PARTIAL_SUFFIX):
                    if resumable(sdir.name, p):
                        found.append(Finding("resumable", p, "an interrupted run's resume state "
                                             "(kept; the next run continues from it)"))
                    else:
                        found.append(Finding("stale-partial", p, "work folder of a failed or "
                                             "interrupted run, nothing to resume"))
                    continue
                problem = check_artifact(p, key=name, full=full)
                if problem is None:
                    found.append(Finding("ok", p))
                elif not (p / MANIFEST).exists():
                    found.append(Finding("incomplete", p, problem))
                else:
                    found.append(Finding("corrupt", p, problem))
    for dest in published:
        for p in publish_leftovers(Path(dest)):
            found.append(Finding("leftover", p, "left by an interrupted publish"))
    return found


def repair(findings: Iterable[Finding]) -> list[Finding]:
    """Delete what ``verify_store`` marked removable; returns what was removed."""
    removed = []
    for f in findings:
        if f.removable and (f.path.exists() or f.path.is_symlink()):
            try:
                remove_tree(f.path)
            except OSError as e:
                raise storage_error(f.path, e) from None
            removed.append(f)
    return removed


# --------------------------------------------------------------------------- publish
def publish_leftovers(dest: Path) -> list[Path]:
    """Temporary and set-aside copies an interrupted publish left beside ``dest``."""
    parent = dest.parent
    if not parent.is_dir():
        return []
    pre = (f".{dest.name}.tmp-", f".{dest.name}.old-")
    return sorted(p for p in parent.iterdir() if p.name.startswith(pre))


def recover_published(dest: Path) -> Optional[str]:
    """Undo what an interrupted publish left beside ``dest``: when ``dest`` is missing (a kill
    between the two renames of the fallback swap), the set-aside previous copy goes back; then
    every leftover is deleted.  Call under the lock.  Returns what it did, or None."""
    dest = Path(dest)
    left = publish_leftovers(dest)
    if not left:
        return None
    did = []
    try:
        if not dest.exists():
            olds = [p for p in left if p.name.startswith(f".{dest.name}.old-") and p.is_dir()
                    and (p / PUBLISHED_MANIFEST).is_file()]
            if olds:
                os.replace(olds[-1], dest)
                did.append(f"restored {dest}")
        for p in publish_leftovers(dest):
            remove_tree(p)
            did.append(f"removed {p}")
    except OSError as e:
        raise storage_error(dest, e) from None
    return "; ".join(did)


PUBLISHED_MANIFEST = ".tilegan-manifest.json"


def _copy_file(src: Path, dst: Path) -> None:
    """Copy bytes (no metadata: the new file's mode follows the umask)."""
    with open(src, "rb") as fi:
        fd = open_new(dst)
        with os.fdopen(fd, "wb") as fo:
            shutil.copyfileobj(fi, fo, 1 << 20)


def publish(artifact: Path, dest: Path, *, replace: bool) -> Path:
    """Copy an artifact's files to ``dest``.

    ``replace=True`` (our own ``out/<name>/``): build a complete copy beside ``dest`` and swap
    it in (:func:`swap_in`), so ``dest`` is never half-written and, where the system can swap
    two folders in one step (Linux), never missing.  Call it under the store's lock.
    ``replace=False`` (a user's ``--out`` folder): copy file by file (each atomically), never
    deleting the user's other files.  New files follow the umask.  A full disk raises a one-line
    :class:`~stages._common.StorageError` and leaves no temporary copy.
    """
    dest = Path(dest)
    files = tree_files(artifact)
    if replace:
        tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
        with discard_on_failure(tmp, dest):
            dest.parent.mkdir(parents=True, exist_ok=True)
            recover_published(dest)
            for p in files:
                q = tmp / p.relative_to(artifact)
                q.parent.mkdir(parents=True, exist_ok=True)
                _copy_file(p, q)
            _copy_file(artifact / MANIFEST, tmp / PUBLISHED_MANIFEST)
            swap_in(tmp, dest, dest.with_name(f".{dest.name}.old-{os.getpid()}"))
        return dest
    for p in files:
        q = dest / p.relative_to(artifact)
        t = temp_sibling(q)
        with discard_on_failure(t, q):
            q.parent.mkdir(parents=True, exist_ok=True)
            _copy_file(p, t)
            os.replace(t, q)
    return dest


def published_key(dest: Path) -> Optional[str]:
    try:
        return json.loads((Path(dest) / PUBLISHED_MANIFEST).read_text()).get("key")
    except (OSError, ValueError, AttributeError):
        return None
