"""Run stages through the artifact cache."""
from __future__ import annotations

import dataclasses
import logging
import shutil
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Optional

from . import cache as C
from .config import Config, resolve_params
from .errors import CacheError, PipelineError
from .graph import RESUMABLE, STAGES, load_all, optional_inputs, primary_input

log = logging.getLogger("tilegan.pipeline")


@dataclasses.dataclass
class StageResult:
    name: str
    key: str
    artifact: Path
    ran: bool
    seconds: float
    summary: dict[str, Any]


class ProgressBars:
    """``progress(desc, done, total, **postfix)`` drawn as tqdm bars on stderr."""

    def __init__(self, enabled: Optional[bool] = None):
        self.bars: dict[str, Any] = {}
        self.enabled = sys.stderr.isatty() if enabled is None else enabled

    def __call__(self, desc: str, done: int, total: Optional[int] = None, **postfix: Any) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        bar = self.bars.get(desc)
        if bar is None:
            bar = self.bars[desc] = tqdm(total=total, desc=desc, file=sys.stderr, leave=False,
                                         dynamic_ncols=True, mininterval=0.25)
        if total is not None and bar.total != total:
            bar.total = total
        if postfix:
            bar.set_postfix({k: (f"{v:.3g}" if isinstance(v, float) else v) for k, v in postfix.items()},
                            refresh=False)
        if done > bar.n:
            bar.update(done - bar.n)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()


def dist_rank() -> int:
    """This process's rank under torchrun (0 when not distributed)."""
    import os

    return int(os.environ.get("RANK", "0") or 0)


def inputs_as_paths(inputs: dict[str, list[str]]) -> dict[str, list[Any]]:
    return {k: [p if str(p).startswith(("http://", "https://")) else Path(p) for p in v]
            for k, v in inputs.items()}


def execute(store: C.Store, mod: ModuleType, params: Any, inputs: dict[str, list[str]],
            digests: dict[str, str], *, force: bool = False,
            progress: Optional[Callable[..., None]] = None) -> StageResult:
    """Run one stage unless its key already has an artifact."""
    name = mod.NAME
    key, payload = C.stage_key(mod, params, digests)
    hit = store.lookup(name, key)
    if hit is not None and not force:
        store.set_latest(name, key)
        return StageResult(name, key, hit, False, 0.0, store.manifest(hit).get("summary", {}))
    if dist_rank() > 0:
        # torchrun worker: reads the same work dir as rank 0 (to resume from the same
        # checkpoint) but never writes to it; rank 0 alone commits the artifact.
        work = store.root / name / f"{key}.partial"
        summary = mod.run(inputs_as_paths(inputs), params, work, progress or (lambda *a, **k: None))
        return StageResult(name, key, work, True, 0.0, summary or {})
    work = store.root / name / f"{key}.partial"
    if work.exists() and (force or name not in RESUMABLE):
        shutil.rmtree(work)
    work = store.partial(name, key)
    resumed = any(work.iterdir())
    if resumed:
        log.info("%s: resuming from the state an earlier interrupted run left", name)
    bars = progress or ProgressBars()
    started = time.time()
    try:
        summary = mod.run(inputs_as_paths(inputs), params, work, bars)
    finally:
        if progress is None:
            bars.close()
    seconds = time.time() - started
    info = dict(payload, summary=summary or {}, seconds=round(seconds, 3), started=started,
                resumed=resumed, inputs_paths={k: [str(p) for p in v] for k, v in inputs.items()})
    final = store.commit(name, key, work, info)
    return StageResult(name, key, final, True, seconds, summary or {})


def run_graph(config: Config, *, until: Optional[str] = None, force: tuple[str, ...] = (),
              source: Optional[list[str]] = None, overrides: Optional[dict[str, dict[str, Any]]] = None,
              progress: Optional[Callable[..., None]] = None,
              on_result: Optional[Callable[[StageResult], None]] = None) -> list[StageResult]:
    """Walk the DAG in order; run only stages whose key has no artifact."""
    modules = load_all()
    order = list(STAGES)
    if until:
        order = order[: order.index(until) + 1]
    overrides = overrides or {}
    results: dict[str, StageResult] = {}
    store = C.Store(config.cache)
    with store:
        for name in order:
            mod = modules[name]
            params = resolve_params(mod, config, overrides.get(name, {}))
            forced = name in force or "all" in force
            inputs, digests = {}, {}
            for inp, up in mod.INPUTS.items():
                if up is None:
                    items = source if (source and inp == primary_input(mod)) else config.stage_input(name)
                    if not items:
                        raise PipelineError(f"[{name}] has no input: set `input = ...` in pipeline.toml "
                                            f"or pass --source")
                    inputs[inp] = items
                    digests[inp] = C.digest_explicit_inputs(items, memo=store.input_memo,
                                                            refresh=forced)
                elif up in results:
                    inputs[inp] = [str(results[up].artifact)]
                    digests[inp] = store.content_digest(results[up].artifact)
                elif inp in optional_inputs(mod):
                    continue
                else:
                    raise PipelineError(f"{name} needs the output of {up}")
            res = execute(store, mod, params, inputs, digests, force=forced, progress=progress)
            results[name] = res
            if on_result:
                on_result(res)
    return [results[n] for n in order]


def stage_status(config: Config) -> list[dict[str, Any]]:
    """fresh / stale / missing for each stage under the current config.

    Writes no artifact; it may refresh the input-hash memo (``Store.input_memo``)."""
    modules = load_all()
    store = C.Store(config.cache)
    rows: list[dict[str, Any]] = []
    known: dict[str, Optional[Path]] = {}
    for name in STAGES:
        mod = modules[name]
        params = resolve_params(mod, config, {})
        digests: dict[str, str] = {}
        blocked = None
        for inp, up in mod.INPUTS.items():
            if up is None:
                items = config.stage_input(name)
                if not items:
                    blocked = "no input configured"
                    break
                try:
                    digests[inp] = C.digest_explicit_inputs(items, memo=store.input_memo)
                except Exception as e:  # missing path etc.
                    blocked = str(e)
                    break
            elif known.get(up) is not None:
                digests[inp] = store.content_digest(known[up])
            else:
                blocked = f"waits for {up}"
                break
        hit = None
        if blocked is None:
            key, _ = C.stage_key(mod, params, digests)
            hit = store.lookup(name, key)
        known[name] = hit
        any_entry = bool(store.entries(name))
        if hit is not None:
            m = store.manifest(hit)
            rows.append({"stage": name, "state": "fresh", "artifact": str(hit),
                         "seconds": m.get("seconds"), "note": ""})
        else:
            why = "parameters, code or inputs changed" if any_entry else "never built"
            rows.append({"stage": name, "state": "stale" if any_entry else "missing",
                         "artifact": "", "seconds": None, "note": blocked or why})
    return rows


def cached_input(store: C.Store, upstream: str, stage: str) -> Path:
    art = store.latest(upstream)
    if art is None:
        raise CacheError(f"{stage}: no cached output of '{upstream}' in {store.root}; run "
                         f"`pipeline run --until {upstream}` first, or pass input files")
    return art
