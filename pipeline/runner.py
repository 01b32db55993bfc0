"""Run stages through the artifact cache."""
from __future__ import annotations

import dataclasses
import logging
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterable, Optional

from . import cache as C
from .config import Config, resolve_params
from .errors import CacheError, PipelineError
from .graph import (KEEP_ON_ERROR, STAGES, has_resume_state, load_all, optional_inputs,
                    primary_input)

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
    """Run one stage unless its key already has a complete artifact.  Call under the lock.

    A run that raises an error deletes its work folder (``<key>.partial``), except a train
    run's resume state (:data:`~pipeline.graph.KEEP_ON_ERROR`), so the next run starts clean;
    an interrupted run (Ctrl-C, a kill) keeps it and the next run resumes from it.
    """
    name = mod.NAME
    key, payload = C.stage_key(mod, params, digests)
    if dist_rank() > 0:
        # torchrun worker: reads the same work dir as rank 0 (to resume from the same
        # checkpoint) but never writes to it; rank 0 alone commits the artifact.
        hit = store.lookup(name, key)
        if hit is not None and not force:
            return StageResult(name, key, hit, False, 0.0, store.manifest(hit).get("summary", {}))
        work = store.work_dir(name, key)
        summary = mod.run(inputs_as_paths(inputs), params, work, progress or (lambda *a, **k: None))
        return StageResult(name, key, work, True, 0.0, summary or {})
    did = store.recover(name, key)
    if did:
        log.warning("%s: %s", name, did)
    hit = store.lookup(name, key)
    if hit is not None and not force:
        store.set_latest(name, key)
        return StageResult(name, key, hit, False, 0.0, store.manifest(hit).get("summary", {}))
    work = store.work_dir(name, key)
    resumed = not force and has_resume_state(name, work)
    if work.exists() and not resumed:
        _remove(work)
    work = store.partial(name, key)
    if resumed:
        log.info("%s: resuming from the state an earlier interrupted run left in %s", name, work)
    bars = progress or ProgressBars()
    started = time.time()
    try:
        try:
            summary = mod.run(inputs_as_paths(inputs), params, work, bars)
        finally:
            if progress is None:
                bars.close()
        seconds = time.time() - started
        info = dict(payload, summary=summary or {}, seconds=round(seconds, 3), started=started,
                    resumed=resumed, inputs_paths={k: [str(p) for p in v] for k, v in inputs.items()})
        final = store.commit(name, key, work, info)
    except Exception:
        _clean_failed(name, work)
        raise
    _clean_stale_partials(store, name, keep=work)
    return StageResult(name, key, final, True, seconds, summary or {})


def _remove(path: Path) -> None:
    try:
        C.remove_tree(path)
    except OSError as e:
        raise C.storage_error(path, e) from None


def _clean_failed(name: str, work: Path) -> None:
    """After a stage raised: keep train's checkpoints, delete any other work folder."""
    if name in KEEP_ON_ERROR and has_resume_state(name, work):
        log.info("%s: kept %s; the next run resumes from its checkpoint", name, work)
        return
    try:
        C.remove_tree(work)
    except OSError as e:  # the stage's own error matters more
        log.warning("%s: could not remove %s (%s)", name, work, e)


def _clean_stale_partials(store: C.Store, name: str, keep: Path) -> None:
    """After a commit: delete the stage's other work folders that hold nothing to resume."""
    for p in store.partials(name):
        if p != keep and not has_resume_state(name, p):
            try:
                C.remove_tree(p)
                log.debug("%s: removed the stale work folder %s", name, p)
            except OSError:
                pass


def safe_dirname(name: str) -> str:
    """A tileset name (any text, escaped in the XML) as a folder name under out/."""
    import re

    cleaned = re.sub(r"[^A-Za-z0-9._ -]+", "_", name).strip(" .") or "tileset"
    return cleaned[:80]


def publish_dest(config: Config, export_params: Any) -> Path:
    """``out/<name>/``: where ``pipeline run`` publishes export's artifact."""
    return config.out / safe_dirname(export_params.name)


def resolve_all(config: Config, stages: Iterable[str],
                overrides: Optional[dict[str, dict[str, Any]]] = None,
                modules: Optional[dict[str, ModuleType]] = None) -> dict[str, Any]:
    """Every listed stage's parameters, resolved and checked before anything runs: a bad value
    anywhere is a ConfigError naming its file, table and key (or option) up front."""
    modules = modules or load_all()
    overrides = overrides or {}
    return {name: resolve_params(modules[name], config, overrides.get(name, {})) for name in stages}


def run_graph(config: Config, *, until: Optional[str] = None, force: tuple[str, ...] = (),
              source: Optional[list[str]] = None, overrides: Optional[dict[str, dict[str, Any]]] = None,
              progress: Optional[Callable[..., None]] = None,
              on_result: Optional[Callable[[StageResult], None]] = None,
              publish: bool = False) -> list[StageResult]:
    """Walk the DAG in order; run only stages whose key has no artifact.

    Every stage's parameters are checked first.  With ``publish`` and a run that reaches
    export, its artifact is copied to ``out/<name>/`` (:func:`publish_dest`) under the cache
    lock, atomically, and only when that folder holds another key."""
    modules = load_all()
    order = list(STAGES)
    if until:
        order = order[: order.index(until) + 1]
    all_params = resolve_all(config, order, overrides, modules)
    results: dict[str, StageResult] = {}
    store = C.Store(config.cache)
    with store:
        for name in order:
            mod = modules[name]
            params = all_params[name]
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
        last = results[order[-1]]
        if publish and last.name == "export":
            dest = publish_dest(config, all_params["export"])
            did = C.recover_published(dest)
            if did:
                log.warning("publish: %s", did)
            if C.published_key(dest) != last.key:
                C.publish(last.artifact, dest, replace=True)
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
