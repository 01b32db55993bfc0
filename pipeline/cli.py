"""The `pipeline` command: one Typer subcommand per stage, plus run / status / palettes.

Stage subcommands are generated from each stage's ``Params`` dataclass, so options map
one-to-one onto fields and their help text is the field's ``help`` metadata.
"""
from __future__ import annotations

import dataclasses
import enum
import inspect
import logging
import os
import sys
import time
import typing
import warnings
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from . import cache as C
from .config import field_types, load_config, resolve_params
from .errors import PipelineError
from .graph import STAGES, load_all, load_stage, optional_inputs, primary_input
from .graph import has_resume_state
from .runner import (StageResult, cached_input, execute, publish_dest, resolve_all, run_graph,
                     safe_dirname, stage_status)

DEBUG_ENV = "TILEGAN_DEBUG"
USER_ERROR_PACKAGES = ("pipeline", "stages", "palettes", "tilesets")

app = typer.Typer(
    name="pipeline",
    help="tilegan: retro screenshots in, an NES-authentic 16x16 tileset for Tiled out.\n\n"
         "Stages: scrape -> crop -> train -> sample -> quantize -> slice -> dedupe -> export. "
         "`pipeline run` walks them all through the artifact cache.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="pipeline.toml to read "
                                                   "(default: ./pipeline.toml if present).")]


def _setup_logging(verbose: bool = False) -> None:
    root = logging.getLogger("tilegan")
    if not root.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(h)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


def skipped_count(summary: dict[str, Any]) -> int:
    """How many inputs a stage skipped, read from any of the three summary shapes in one place:
    a record list ``skipped_items`` beside a count ``skipped`` (crop, scrape, dedupe; crop's
    list also holds its too-small images), a record list ``skipped`` (slice), a record list
    ``skipped`` beside ``skipped_count`` (quantize).  The largest figure wins, so a stage that
    counts some skips in one key and some in another is not under-reported."""
    n = 0
    for key in ("skipped_items", "skipped", "skipped_count"):
        v = summary.get(key)
        if isinstance(v, (list, tuple)):
            n = max(n, len(v))
        elif isinstance(v, int) and not isinstance(v, bool):
            n = max(n, v)
    return n


def _fmt_summary(summary: dict[str, Any], limit: int = 4) -> str:
    """The first ``limit`` short scalar figures of a summary, plus ``skipped=N`` when a stage
    skipped inputs (so a corrupt file never goes unnoticed in the one-line table)."""
    parts = []
    for k, v in summary.items():
        if k in ("skipped", "skipped_count"):
            continue
        if isinstance(v, (int, float, str)) and not isinstance(v, bool) and len(str(v)) < 24:
            parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
        if len(parts) >= limit:
            break
    n = skipped_count(summary)
    if n:
        parts.append(f"skipped={n}")
    return " ".join(parts)


def _print_table(results: list[StageResult], total: float) -> None:
    err = sys.stderr
    print("", file=err)
    print(f"{'stage':<9} {'status':<7} {'time':>8}  summary", file=err)
    for r in results:
        status = "ran" if r.ran else "cached"
        print(f"{r.name:<9} {status:<7} {r.seconds:>7.1f}s  {_fmt_summary(r.summary)}", file=err)
    print(f"{'total':<9} {'':<7} {total:>7.1f}s", file=err)


# --------------------------------------------------------------------------- run / status
@app.command("run")
def run_cmd(
    until: Annotated[Optional[str], typer.Option(help=f"Stop after this stage ({', '.join(STAGES)}).")] = None,
    force: Annotated[Optional[list[str]], typer.Option(help="Re-run this stage even if cached "
                                                       "('all' for every stage). Repeatable.")] = None,
    source: Annotated[Optional[list[str]], typer.Option(help="Screenshots to start from: folder, "
                                                        ".zip or http(s) URL (default: [scrape] input "
                                                        "in pipeline.toml). Repeatable.")] = None,
    config: ConfigOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Run the whole DAG (or up to --until) through the cache; publish out/<name>/.

    Only stages whose inputs, parameters or code changed are re-done."""
    _setup_logging(verbose)
    if until and until not in STAGES:
        raise typer.BadParameter(f"unknown stage '{until}'; stages are: {', '.join(STAGES)}",
                                 param_hint="--until")
    for f in force or ():
        if f != "all" and f not in STAGES:
            raise typer.BadParameter(f"unknown stage '{f}'", param_hint="--force")
    modules = load_all()
    cfg = load_config(config, modules)
    t0 = time.time()
    log = logging.getLogger("tilegan.pipeline")

    def on_result(r: StageResult) -> None:
        log.info("%s: %s in %.1fs %s", r.name, "ran" if r.ran else "cached", r.seconds,
                 _fmt_summary(r.summary))

    results = run_graph(cfg, until=until, force=tuple(force or ()), source=source,
                        on_result=on_result, publish=True)
    last = results[-1]
    _print_table(results, time.time() - t0)
    if last.name == "export":
        print(publish_dest(cfg, resolve_params(modules["export"], cfg, {})))
    else:
        print(last.artifact)


@app.command("verify")
def verify_cmd(
    repair: Annotated[bool, typer.Option("--repair", help="Delete incomplete or corrupt "
                                         "artifacts and stale leftovers, saying what went.")] = False,
    quick: Annotated[bool, typer.Option("--quick", help="Check file sizes only, not checksums.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Check every cached artifact against its manifest (sizes and sha256) and list leftovers.

    Incomplete or corrupt artifacts, work folders of failed runs (`.partial`) and temporary
    files of interrupted writes are listed; `--repair` deletes them (the next `pipeline run`
    rebuilds what is missing). A training checkpoint an interrupted run left is kept. Exit
    code 1 when problems remain."""
    modules = load_all()
    cfg = load_config(config, modules)
    store = C.Store(cfg.cache)
    published = []
    if "export" in modules:
        try:
            published.append(publish_dest(cfg, resolve_all(cfg, ["export"], modules=modules)["export"]))
        except PipelineError:
            pass
    with store:
        found = C.verify_store(store, full=not quick, resumable=has_resume_state,
                               published=published)
        removed = C.repair(found) if repair else []
    counts: dict[str, int] = {}
    for f in found:
        counts[f.kind] = counts.get(f.kind, 0) + 1
        if f.kind != "ok":
            gone = " -> removed" if f in removed else ""
            typer.echo(f"{f.kind:<13} {f.path}: {f.detail}{gone}")
    problems = sum(1 for f in found if f.removable) - len(removed)
    figures = " ".join(f"{k}={counts.get(k, 0)}" for k in
                       ("ok", "corrupt", "incomplete", "stale-partial", "resumable", "leftover"))
    typer.echo(f"verify: {figures} removed={len(removed)}")
    if problems:
        typer.secho(f"{problems} problem(s); `pipeline verify --repair` removes them", fg="red", err=True)
        raise typer.Exit(1)


@app.command("status")
def status_cmd(config: ConfigOpt = None) -> None:
    """Show each stage as fresh / stale / missing for the current config."""
    modules = load_all()
    cfg = load_config(config, modules)
    for row in stage_status(cfg):
        colour = {"fresh": "green", "stale": "yellow", "missing": "red"}[row["state"]]
        state = typer.style(f"{row['state']:<8}", fg=colour)
        detail = row["artifact"] or row["note"]
        typer.echo(f"{row['stage']:<9} {state} {detail}")


@app.command("palettes")
def palettes_cmd(
    swatch: Annotated[Optional[str], typer.Option(help="Palette name or file to draw as a swatch PNG.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Where to write the swatch PNG.")] = None,
) -> None:
    """List the built-in palettes, or write a swatch PNG of one."""
    import palettes as P

    if swatch:
        dest = out or Path(f"{Path(swatch).stem}.png")
        P.write_swatch(swatch, dest)
        typer.echo(dest)
        return
    for row in P.list_palettes():
        default = " (default)" if row.get("default") else ""
        typer.echo(f"{row['name']:<20} {row['colours']:>4} colours  {row.get('description', '')}{default}")


# --------------------------------------------------------------------------- stage commands
def _option_for(field: dataclasses.Field, tp: Any) -> tuple[Any, Any]:
    """(annotation, default) for a Params field as a Typer option; None = 'not given'."""
    helptext = field.metadata.get("help", "")
    default = field.default
    shown = default.value if isinstance(default, enum.Enum) else default
    if isinstance(shown, tuple):
        shown = ",".join(str(x) for x in shown)
    flag = "--" + field.name.replace("_", "-")
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        tp = [a for a in typing.get_args(tp) if a is not type(None)][0]
        origin = typing.get_origin(tp)
    if tp is bool:
        opt = typer.Option(f"{flag}/--no-{field.name.replace('_', '-')}",
                           help=f"{helptext} [default: {'on' if default else 'off'}]", show_default=False)
        return Annotated[Optional[bool], opt], None
    if origin in (tuple, list) or tp in (tuple, list):
        opt = typer.Option(flag, help=f"{helptext} Comma-separated. [default: {shown}]", show_default=False)
        return Annotated[Optional[str], opt], None
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        opt = typer.Option(flag, help=f"{helptext} [default: {shown}]", show_default=False)
        return Annotated[Optional[tp], opt], None
    if tp in (int, float, str, Path):
        opt = typer.Option(flag, help=f"{helptext} [default: {shown}]", show_default=False)
        return Annotated[Optional[tp], opt], None
    opt = typer.Option(flag, help=f"{helptext} [default: {shown}]", show_default=False)
    return Annotated[Optional[str], opt], None


def _reflow(doc: str) -> str:
    """Module docstring -> help text: paragraphs re-flowed, RST literals made plain."""
    paras = [" ".join(line.strip() for line in p.splitlines()) for p in doc.strip().split("\n\n")]
    return "\n\n".join(p.replace("``", "`").replace(":class:", "").replace(":func:", "")
                       .replace(":mod:", "") for p in paras if p)


def _make_stage_command(name: str, mod: Any) -> None:
    prim = primary_input(mod)
    up = mod.INPUTS[prim]
    others = [k for k in mod.INPUTS if k != prim]
    types = field_types(mod.Params)
    fields = dataclasses.fields(mod.Params)
    reserved = {"inputs", "out", "force", "config", "verbose"} | set(others)
    params = [
        inspect.Parameter("inputs", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                          annotation=Annotated[Optional[list[str]], typer.Argument(
                              help=(f"Input files, folders or globs ({prim})."
                                    + (f" Default: the cached output of `{up}`." if up else
                                       " A folder, a .zip or an http(s) URL.")),
                              show_default=False)]),
        inspect.Parameter("out", inspect.Parameter.KEYWORD_ONLY, default=None,
                          annotation=Annotated[Optional[Path], typer.Option(
                              "--out", "-o", help="Also copy the results into this folder.")]),
    ]
    for o in others:
        opt_help = f"Input '{o}' (default: the cached output of `{mod.INPUTS[o]}`)."
        if o in optional_inputs(mod):
            opt_help += " Optional."
        params.append(inspect.Parameter(o, inspect.Parameter.KEYWORD_ONLY, default=None,
                                        annotation=Annotated[Optional[list[str]], typer.Option(
                                            "--" + o.replace("_", "-"), help=opt_help)]))
    for f in fields:
        if f.name in reserved:
            raise RuntimeError(f"stages/{name}.py: parameter name '{f.name}' is reserved")
        ann, default = _option_for(f, types[f.name])
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                        annotation=ann))
    params += [
        inspect.Parameter("force", inspect.Parameter.KEYWORD_ONLY, default=False,
                          annotation=Annotated[bool, typer.Option("--force", help="Re-run even if cached.")]),
        inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ConfigOpt),
        inspect.Parameter("verbose", inspect.Parameter.KEYWORD_ONLY, default=False,
                          annotation=Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")]),
    ]

    def command(**kw: Any) -> None:
        _setup_logging(kw.pop("verbose"))
        _run_single(name, kw)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__name__ = f"{name}_cmd"
    command.__doc__ = _reflow(mod.__doc__ or f"The {name} stage.")
    app.command(name, help=command.__doc__)(command)


def _run_single(name: str, kw: dict[str, Any]) -> None:
    modules = load_all()
    mod = modules[name]
    cfg = load_config(kw.pop("config"), modules)
    force = kw.pop("force")
    out = kw.pop("out")
    explicit = kw.pop("inputs")
    prim = primary_input(mod)
    store = C.Store(cfg.cache)
    given_inputs = {k: kw.pop(k, None) for k in mod.INPUTS if k != prim}
    params = resolve_params(mod, cfg, kw)          # bad values fail before any input is read
    inputs: dict[str, list[str]] = {}
    digests: dict[str, str] = {}
    for inp, up in mod.INPUTS.items():
        given = explicit if inp == prim else given_inputs.get(inp)
        if inp == prim and not given and up is None:
            given = cfg.stage_input(name)
        if given:
            for g in given:
                if not g.startswith(("http://", "https://")) and not any(ch in g for ch in "*?[") \
                        and not Path(g).exists():
                    raise PipelineError(f"{g}: no such file or folder")
            inputs[inp] = list(given)
            digests[inp] = C.digest_explicit_inputs(given, memo=store.input_memo, refresh=force)
        elif up is None:
            raise PipelineError(f"{name}: give a source (folder, .zip or URL), or set `input` in "
                                f"[{name}] of pipeline.toml")
        elif explicit and inp != prim:
            if inp in optional_inputs(mod):
                continue
            raise PipelineError(f"{name}: with explicit inputs, also pass --{inp.replace('_', '-')}")
        else:
            if store.latest(up) is None and inp in optional_inputs(mod):
                continue
            art = cached_input(store, up, name)  # explains what to run when it is missing
            inputs[inp] = [str(art)]
            digests[inp] = store.content_digest(art)
    t0 = time.time()
    from .runner import dist_rank

    if dist_rank() > 0:  # torchrun worker: rank 0 owns the store
        execute(store, mod, params, inputs, digests, force=force)
        return
    with store:
        res = execute(store, mod, params, inputs, digests, force=force)
    _print_table([res], time.time() - t0)
    if out is not None:
        C.publish(res.artifact, out, replace=False)
        print(out)
    else:
        print(res.artifact)


def _register_stages() -> None:
    for name in STAGES:
        try:
            mod = load_stage(name)
        except ModuleNotFoundError as e:
            if e.name == f"stages.{name}":
                continue  # stage not written yet
            raise
        _make_stage_command(name, mod)


_register_stages()

from .retile import retile_cmd  # noqa: E402 - not a stage: writes no cache entry of its own

app.command("retile")(retile_cmd)


# --------------------------------------------------------------------------- entry point
def _is_user_error(e: BaseException) -> bool:
    from stages._common import StageError

    if isinstance(e, (PipelineError, StageError)):
        return True
    mod = type(e).__module__.split(".")[0]
    return mod in USER_ERROR_PACKAGES and isinstance(e, Exception)


def error_line(e: BaseException) -> str:
    """An error's message as exactly one line: control characters (a newline in a zip member's
    name, say) are shown escaped, as Python writes them in a string."""
    text = str(e).strip() or type(e).__name__
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def main(argv: Optional[list[str]] = None) -> None:
    """Console entry point: user errors become one red line on stderr and exit code 1."""
    from stages._common import DISK_ERRNOS, StageError, storage_error

    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0")
    # Pillow's own bomb warning is redundant: our pixel limit (TILEGAN_MAX_PIXELS) is lower and
    # refuses such images with a one-line reason
    warnings.filterwarnings("ignore", message=r"Image size \(\d+ pixels\) exceeds limit")
    try:
        rv = app(args=argv, standalone_mode=False)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        typer.secho("interrupted: nothing cached was lost; rerun to resume", fg="red", err=True)
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - mapped below
        if type(e).__name__ == "Abort":
            typer.secho("aborted", fg="red", err=True)
            sys.exit(1)
        if hasattr(e, "show") and hasattr(e, "exit_code"):  # usage errors: exit 2
            e.show()
            sys.exit(e.exit_code)
        if debug:
            raise
        if isinstance(e, OSError) and not isinstance(e, StageError) and e.errno in DISK_ERRNOS:
            e = storage_error(e.filename or "(a file)", e)   # any write path: one line
        if _is_user_error(e) or isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError)):
            typer.secho(f"error: {error_line(e)}", fg="red", err=True)
        else:
            typer.secho(f"internal error: {type(e).__name__}: {error_line(e)} (set {DEBUG_ENV}=1 "
                        "for the traceback)", fg="red", err=True)
        sys.exit(1)
    sys.exit(rv if isinstance(rv, int) else 0)
