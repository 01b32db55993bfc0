"""The checkpoint contract shared by train (writes ckpt.pt) and sample (reads it), and device
selection.  torch is imported lazily so that loading the CLI stays fast."""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Optional

from stages._common import InputError, ParamError, discard_on_failure, open_new, temp_sibling

#: version of the checkpoint dict (ckpt.pt)
CKPT_VERSION = 1


class _Writer:
    """A file object for torch.save that remembers the OSError a write raised: torch wraps it
    in a multi-line RuntimeError (``[enforce fail at inline_container.cc]``) of its own."""

    def __init__(self, f: Any):
        self.f = f
        self.error: Optional[OSError] = None

    def write(self, b: Any) -> int:
        try:
            return self.f.write(b)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        try:
            self.f.flush()
        except OSError as e:
            self.error = e
            raise


def save_checkpoint(path: Path, state: dict) -> None:
    """Write ``state`` with torch.save to a temporary sibling, fsync, then os.replace it into
    place: a kill at any moment leaves the previous checkpoint or the new one, never a torn file.

    The file follows the umask.  A full disk or an I/O error raises one line
    (:class:`~stages._common.StorageError`) naming the file and the free space, and removes
    the temporary file; the previous checkpoint stays, so a rerun resumes from it.
    """
    import torch

    path = Path(path)
    tmp = temp_sibling(path)
    w: Optional[_Writer] = None
    with discard_on_failure(tmp, path, cause=lambda e: (w and w.error) or e):
        fd = open_new(tmp)
        with os.fdopen(fd, "wb") as f:
            w = _Writer(f)
            torch.save(state, w)
            w.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


def load_checkpoint(path: Path, *, map_location: Any = "cpu") -> dict:
    """Load a checkpoint with ``torch.load(weights_only=True)``; InputError when unreadable.

    The error is one line whatever torch says (its own messages for a damaged file run to
    several lines of advice about ``weights_only``)."""
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ck = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise InputError(f"{path}: no such checkpoint") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, not a checkpoint") from None
    except Exception as e:  # torch raises many types for a corrupt file
        raise InputError(f"{path}: not a readable tilegan checkpoint "
                         f"({_why_unreadable(e)}); delete it or rerun with --force") from None
    if not isinstance(ck, dict) or "G" not in ck or "config" not in ck:
        raise InputError(f"{path}: not a tilegan checkpoint (no generator or config)")
    version = ck.get("version", 0)
    if isinstance(version, int) and version > CKPT_VERSION:
        raise InputError(f"{path}: checkpoint version {ck.get('version')} is newer than this "
                         f"tilegan ({CKPT_VERSION}); update tilegan")
    return ck


def _why_unreadable(e: BaseException) -> str:
    """A short reason for a torch.load failure, never more than one line."""
    text = str(e)
    if "central directory" in text or "zip archive" in text:
        return "truncated or damaged file"
    if isinstance(e, EOFError) or "Ran out of input" in text:
        return "empty or truncated file"
    if "Unsupported operand" in text or "invalid load key" in text or "WeightsUnpickler" in text:
        return "not a checkpoint file"
    first = " ".join(text.split())[:120] or type(e).__name__
    return f"{type(e).__name__}: {first}"


def resolve_device(name: str) -> "Any":
    """'auto' -> cuda when available else cpu; 'cuda' without a GPU raises ParamError."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ParamError(f"device={name} but no CUDA GPU is visible to torch "
                         f"(torch {torch.__version__}); use --device cpu")
    return torch.device(name)
