"""The checkpoint contract shared by train (writes ckpt.pt) and sample (reads it), and device
selection.  torch is imported lazily so that loading the CLI stays fast."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from stages._common import InputError, ParamError

#: version of the checkpoint dict (ckpt.pt)
CKPT_VERSION = 1


def save_checkpoint(path: Path, state: dict) -> None:
    """Write ``state`` with torch.save to a temporary sibling, then os.replace it into place."""
    import torch

    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path, *, map_location: Any = "cpu") -> dict:
    """Load a checkpoint with ``torch.load(weights_only=True)``; InputError when unreadable."""
    import torch

    try:
        ck = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise InputError(f"{path}: no such checkpoint") from None
    except Exception as e:  # torch raises many types for a corrupt file
        raise InputError(f"{path}: not a readable tilegan checkpoint ({e})") from None
    if not isinstance(ck, dict) or "G" not in ck or "config" not in ck:
        raise InputError(f"{path}: not a tilegan checkpoint (no generator or config)")
    if ck.get("version", 0) > CKPT_VERSION:
        raise InputError(f"{path}: checkpoint version {ck.get('version')} is newer than this "
                         f"tilegan ({CKPT_VERSION}); update tilegan")
    return ck


def resolve_device(name: str) -> "Any":
    """'auto' -> cuda when available else cpu; 'cuda' without a GPU raises ParamError."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ParamError(f"device={name} but no CUDA GPU is visible to torch "
                         f"(torch {torch.__version__}); use --device cpu")
    return torch.device(name)
