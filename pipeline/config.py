"""Parameters resolve as: dataclass defaults < pipeline.toml [stage] table < CLI options."""
from __future__ import annotations

import dataclasses
import difflib
import enum
import tomllib
import typing
from pathlib import Path
from typing import Any, Optional

from .errors import ConfigError

DEFAULT_CONFIG = "pipeline.toml"
#: keys of the [pipeline] table
PIPELINE_KEYS = {"out": "out", "cache": None}
#: extra keys every [stage] table accepts besides the Params fields
STAGE_EXTRA_KEYS = ("input",)


@dataclasses.dataclass
class Config:
    path: Optional[Path]
    pipeline: dict[str, Any]
    stages: dict[str, dict[str, Any]]

    @property
    def display(self) -> str:
        """The config file as messages name it: relative to the current folder when inside it."""
        if self.path is None:
            return "config"
        try:
            return str(self.path.relative_to(Path.cwd()))
        except ValueError:
            return str(self.path)

    @property
    def out(self) -> Path:
        base = self.path.parent if self.path else Path.cwd()
        return (base / self.pipeline.get("out", "out")).resolve()

    @property
    def cache(self) -> Path:
        c = self.pipeline.get("cache")
        return Path(c).resolve() if c else self.out / "cache"

    def stage_input(self, stage: str) -> Optional[list[str]]:
        v = self.stages.get(stage, {}).get("input")
        if v is None:
            return None
        items = [v] if isinstance(v, str) else list(v)
        base = self.path.parent if self.path else Path.cwd()
        out = []
        for s in items:
            if s.startswith(("http://", "https://")) or Path(s).is_absolute():
                out.append(s)
            else:
                out.append(str(base / s))
        return out


def _suggest(word: str, options: list[str]) -> str:
    m = difflib.get_close_matches(word, options, n=1)
    return f" (did you mean '{m[0]}'?)" if m else ""


def load_config(path: Optional[Path], stage_modules: dict[str, Any], *, required: bool = False) -> Config:
    """Read and validate ``pipeline.toml``; an unknown table or key is a ConfigError."""
    if path is None:
        cand = Path.cwd() / DEFAULT_CONFIG
        path = cand if cand.is_file() else None
    elif not Path(path).is_file():
        raise ConfigError(f"{path}: no such config file")
    if path is None:
        if required:
            raise ConfigError(f"no {DEFAULT_CONFIG} in {Path.cwd()}; pass --config")
        return Config(None, {}, {})
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}); TOML files are UTF-8") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror or e})") from None
    pipeline_tbl = data.pop("pipeline", {})
    if not isinstance(pipeline_tbl, dict):
        raise ConfigError(f"{path}: [pipeline] must be a table")
    for k, v in pipeline_tbl.items():
        if k not in PIPELINE_KEYS:
            raise ConfigError(f"{path}: unknown key '{k}' in [pipeline]{_suggest(k, list(PIPELINE_KEYS))}")
        if not isinstance(v, str) or not v.strip() or "\0" in v:
            raise ConfigError(f"{path} [pipeline] {k}: expected a folder path, got {v!r}")
    stages: dict[str, dict[str, Any]] = {}
    for name, tbl in data.items():
        if name not in stage_modules:
            raise ConfigError(f"{path}: unknown table [{name}]{_suggest(name, list(stage_modules))}")
        if not isinstance(tbl, dict):
            raise ConfigError(f"{path}: [{name}] must be a table")
        fields = {f.name for f in dataclasses.fields(stage_modules[name].Params)}
        for k in tbl:
            if k not in fields and k not in STAGE_EXTRA_KEYS:
                raise ConfigError(f"{path}: unknown key '{k}' in [{name}]"
                                  f"{_suggest(k, sorted(fields) + list(STAGE_EXTRA_KEYS))}")
        inp = tbl.get("input")
        if inp is not None and not (_is_path_text(inp) or (
                isinstance(inp, list) and inp and all(_is_path_text(s) for s in inp))):
            raise ConfigError(f"{path} [{name}] input: expected a path or URL, or a list of "
                              f"them, got {inp!r}")
        stages[name] = dict(tbl)
    return Config(Path(path).resolve(), pipeline_tbl, stages)


def _is_path_text(v: Any) -> bool:
    return isinstance(v, str) and bool(v.strip()) and "\0" not in v


def field_types(params_cls: type) -> dict[str, Any]:
    return typing.get_type_hints(params_cls)


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a TOML/CLI value to the dataclass field type, or raise ConfigError."""
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return coerce(value, args[0], where)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            choices = ", ".join(str(m.value) for m in tp)
            raise ConfigError(f"{where}: '{value}' is not one of {choices}") from None
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    if tp in (tuple, list):  # bare annotation: numbers where they parse as numbers
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(_number_or_str(v) for v in value)
    if origin in (tuple, list):
        args = typing.get_args(tp)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if args and args[-1] is Ellipsis:
            return tuple(coerce(v, args[0], where) for v in value)
        if args and len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(coerce(v, a, where) for v, a in zip(value, args or [str] * len(value)))
    if tp is Path:
        return Path(value)
    return value


def resolve_params(stage: Any, config: Config, cli: dict[str, Any]) -> Any:
    """defaults < pipeline.toml [stage] < CLI options (``None`` on the CLI = not given).

    Every value is converted to its field's type and checked against what the field declares
    (``param(min=, max=, choices=, multiple_of=)``, enum members) and the stage's own
    cross-field rules, so a bad value fails here, before any stage runs.  The ConfigError names
    where the value came from: ``pipeline.toml [train] steps: must be at least 1, got -5`` or
    ``--steps: ...``.
    """
    from stages._common import ParamError, check_params

    cls = stage.Params
    types = field_types(cls)
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for k, v in config.stages.get(stage.NAME, {}).items():
        if k in STAGE_EXTRA_KEYS:
            continue
        origin[k] = f"{config.display} [{stage.NAME}] {k}"
        values[k] = coerce(v, types[k], origin[k])
    for k, v in cli.items():
        if v is None:
            continue
        if k not in types:
            raise ConfigError(f"unknown option '{k}' for {stage.NAME}")
        origin[k] = f"--{k.replace('_', '-')}"
        values[k] = coerce(v, types[k], origin[k])
    try:
        params = cls(**values)
        check_params(params, stage.NAME)
    except ParamError as e:
        raise ConfigError(_located(e, stage.NAME, origin, config)) from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{stage.NAME}: {e}") from None
    return params


def _located(e: Exception, stage: str, origin: dict[str, str], config: Config) -> str:
    """A ParamError's message with its field's source in front of it: ``stage: steps must be
    at least 1, got -5`` -> ``pipeline.toml [train] steps: must be at least 1, got -5``."""
    msg = str(e)
    field = getattr(e, "field", None)
    for prefix in (f"{stage}: ", f"{stage} "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
            break
    if not field:
        return f"{config.display} [{stage}]: {msg}" if config.path else f"{stage}: {msg}"
    where = origin.get(field) or (f"{config.display} [{stage}] {field} (default)" if config.path
                                  else f"{stage} {field}")
    for lead in (f"{field} ", f"{field}: ", f"{field}="):
        if msg.startswith(lead):
            msg = msg[len(lead):]
            break
    return f"{where}: {msg}"


def _number_or_str(v: Any) -> Any:
    if isinstance(v, str):
        for cast in (int, float):
            try:
                return cast(v)
            except ValueError:
                pass
    return v
