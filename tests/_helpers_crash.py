"""A recorder of filesystem mutations for crash-point tests, with no hook in production code.

:class:`Mutations` monkeypatches the os / io / builtins functions that change a filesystem
(create, write, rename, replace, unlink, rmdir, mkdir, plus the cache's one-step folder swap)
and numbers every call that would change something.  With ``crash_at=N`` the N-th mutation
and every one after it raise :class:`Crash`, a ``BaseException`` like a ``kill -9`` seen from
the inside: the clean-up handlers of the code under test cannot change the disk any more
either, so the state left is the state a kill at that point leaves.  A write that is hit is
torn: half its bytes reach the file first.  ``fail_errno`` instead makes every data write
raise ``OSError(errno)`` (a full disk) while renames and deletes still work.

The idea follows SQLite's crash tests and the ALICE study of application crash consistency:
record the sequence once, then replay it, cutting it at each point in turn.
"""
from __future__ import annotations

import builtins
import contextlib
import io
import os
from typing import Any, Callable, Iterator, Optional

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


class Crash(BaseException):
    """The process "died" at this mutation."""


class _File:
    """A writable file object whose writes are mutation points."""

    def __init__(self, f: Any, rec: "Mutations", name: str):
        self._f, self._rec, self._name = f, rec, name

    def write(self, b: Any) -> int:
        n = len(b)
        try:
            self._rec.point("write", self._name)
        except Crash:
            if not self._rec.torn_done:          # a torn write: half the bytes reach the file
                self._rec.torn_done = True
                self._f.write(b[: n // 2])
                self._f.flush()
            raise
        if self._rec.fail_errno is not None and n:
            raise OSError(self._rec.fail_errno, os.strerror(self._rec.fail_errno), self._name)
        return self._f.write(b)

    def __enter__(self) -> "_File":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._f.close()

    def __iter__(self) -> Iterator[Any]:
        return iter(self._f)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


class Mutations:
    """Count (and optionally cut at) every filesystem mutation made inside ``with rec.active():``.

    Attributes
    ----------
    log : list of (op, path)
        Every mutation point reached, in order.
    crashed : bool
        Whether the crash point was reached.
    """

    def __init__(self, crash_at: Optional[int] = None, *, fail_errno: Optional[int] = None,
                 extra: tuple[tuple[Any, str], ...] = ()):
        self.crash_at = crash_at
        self.fail_errno = fail_errno
        self.extra = extra
        self.log: list[tuple[str, str]] = []
        self.crashed = False
        self.torn_done = False

    @property
    def count(self) -> int:
        return len(self.log)

    def point(self, op: str, path: Any) -> None:
        if self.crashed:
            raise Crash(f"after the crash: {op} {path}")
        self.log.append((op, str(path)))
        if self.crash_at is not None and len(self.log) >= self.crash_at:
            self.crashed = True
            raise Crash(f"crash at mutation {len(self.log)}: {op} {path}")

    @contextlib.contextmanager
    def active(self) -> Iterator["Mutations"]:
        saved: list[tuple[Any, str, Any]] = []

        def patch(obj: Any, name: str, new: Callable) -> None:
            saved.append((obj, name, getattr(obj, name)))
            setattr(obj, name, new)

        real = {n: getattr(os, n) for n in ("rename", "replace", "unlink", "remove", "rmdir",
                                            "mkdir", "open", "write", "ftruncate", "truncate")}
        real_open = io.open

        def simple(op: str, fn: Callable, exists_check: bool = False) -> Callable:
            def wrapper(path: Any, *a: Any, **kw: Any) -> Any:
                dir_fd = kw.get("dir_fd")
                if exists_check and dir_fd is None and os.path.lexists(path):
                    return fn(path, *a, **kw)      # raises FileExistsError: no change
                self.point(op, path if dir_fd is None else f"<dir_fd>/{path}")
                return fn(path, *a, **kw)
            return wrapper

        def os_open(path: Any, flags: int, *a: Any, **kw: Any) -> int:
            creates = flags & os.O_CREAT and not os.path.lexists(path)
            if creates or flags & os.O_TRUNC:
                self.point("create", path)
            return real["open"](path, flags, *a, **kw)

        def os_write(fd: int, data: Any) -> int:
            self.point("write", f"<fd {fd}>")
            if self.fail_errno is not None:
                raise OSError(self.fail_errno, os.strerror(self.fail_errno))
            return real["write"](fd, data)

        def open_(file: Any, mode: str = "r", *a: Any, **kw: Any) -> Any:
            writing = any(c in mode for c in "wax+")
            if writing and not isinstance(file, int):
                self.point("create", file)
            f = real_open(file, mode, *a, **kw)
            return _File(f, self, str(file)) if writing else f

        def two(op: str, fn: Callable) -> Callable:
            def wrapper(src: Any, dst: Any, *a: Any, **kw: Any) -> Any:
                self.point(op, f"{src} -> {dst}")
                return fn(src, dst, *a, **kw)
            return wrapper

        patch(os, "rename", two("rename", real["rename"]))
        patch(os, "replace", two("replace", real["replace"]))
        patch(os, "unlink", simple("unlink", real["unlink"]))
        patch(os, "remove", simple("unlink", real["remove"]))
        patch(os, "rmdir", simple("rmdir", real["rmdir"]))
        patch(os, "mkdir", simple("mkdir", real["mkdir"], exists_check=True))
        patch(os, "open", os_open)
        patch(os, "write", os_write)
        patch(os, "ftruncate", lambda fd, n: (self.point("truncate", f"<fd {fd}>"),
                                              real["ftruncate"](fd, n))[1])
        patch(io, "open", open_)
        patch(builtins, "open", open_)
        for obj, name in self.extra:
            patch(obj, name, two(name, getattr(obj, name)))
        try:
            yield self
        finally:
            for obj, name, old in reversed(saved):
                setattr(obj, name, old)


def run_until_crash(fn: Callable[[], Any], crash_at: Optional[int], **kw: Any) -> Mutations:
    """Run ``fn`` with mutation ``crash_at`` cut; the Crash (if reached) is swallowed."""
    rec = Mutations(crash_at, **kw)
    with rec.active():
        try:
            fn()
        except Crash:
            pass
    return rec
