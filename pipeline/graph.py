"""The stage graph: order, modules, upstream links."""
from __future__ import annotations

import importlib
from types import ModuleType

from .errors import PipelineError

#: the DAG, in topological order (each stage's INPUTS name stages that come before it)
STAGES = ("scrape", "crop", "train", "sample", "quantize", "slice", "dedupe", "export")
#: stages that keep resumable state in their work directory across an interruption
RESUMABLE = frozenset({"scrape", "train"})


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
