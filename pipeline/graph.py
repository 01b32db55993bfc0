"""The stage graph: order, modules, upstream links."""
from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from .errors import PipelineError

#: the DAG, in topological order (each stage's INPUTS name stages that come before it)
STAGES = ("scrape", "crop", "train", "sample", "quantize", "slice", "dedupe", "export")
#: stages that keep resumable state in their work directory (``<key>.partial``) across an
#: interruption, and the file or folder there that holds it: a work folder without it has
#: nothing to resume and is started afresh
RESUME_STATE = {"scrape": "_fetch", "train": "ckpt.pt"}
RESUMABLE = frozenset(RESUME_STATE)
#: stages whose resume state is also kept when the stage *fails* (raises an error), not only
#: when it is interrupted: train's checkpoints (hours of compute; e.g. after a full disk the
#: rerun continues).  Every other failed run's work folder is deleted, so the next run starts
#: clean instead of "resuming" from a failure.
KEEP_ON_ERROR = frozenset({"train"})


def has_resume_state(stage: str, work: Path) -> bool:
    """Whether the work folder ``work`` of ``stage`` holds state an interrupted run left."""
    marker = RESUME_STATE.get(stage)
    return bool(marker) and (Path(work) / marker).exists()


def load_stage(name: str) -> ModuleType:
    if name not in STAGES:
        raise PipelineError(f"unknown stage '{name}'; stages are: {', '.join(STAGES)}")
    mod = importlib.import_module(f"stages.{name}")
    for attr in ("NAME", "INPUTS", "Params", "run"):
        if not hasattr(mod, attr):
            raise PipelineError(f"stages/{name}.py lacks {attr}: not a stage module")
    return mod


def load_all() -> dict[str, ModuleType]:
    return {n: load_stage(n) for n in STAGES}


def upstream_of(mod: ModuleType) -> dict[str, str | None]:
    return dict(mod.INPUTS)


def optional_inputs(mod: ModuleType) -> frozenset[str]:
    return frozenset(getattr(mod, "OPTIONAL_INPUTS", ()))


def primary_input(mod: ModuleType) -> str:
    return next(iter(mod.INPUTS))


def downstream_of(name: str, modules: dict[str, ModuleType]) -> list[str]:
    """Every stage that depends on ``name``, directly or not, in order."""
    hit = {name}
    for s in STAGES:
        if any(u in hit for u in modules[s].INPUTS.values() if u):
            hit.add(s)
    return [s for s in STAGES if s in hit and s != name]
