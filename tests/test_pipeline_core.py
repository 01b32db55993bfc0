"""The cache, config resolution and error mapping, on a fake stage module."""
import dataclasses
import json
import types
from pathlib import Path

import pytest

from pipeline import cache as C
from pipeline.config import Config, coerce, load_config, resolve_params
from pipeline.errors import CacheError, ConfigError
from pipeline.runner import execute
from stages._common import param, StageError


def make_stage(name="fake", calls=None, fail=False):
    @dataclasses.dataclass(frozen=True)
    class Params:
        factor: int = param(2, help="multiply")
        label: str = param("x", help="a label")
        betas: tuple[float, float] = param((0.5, 0.9), help="two numbers")

    def run(inputs, params, out_dir, progress=None):
        if calls is not None:
            calls.append(params)
        data = b"".join(Path(p).read_bytes() for p in inputs["data"])
        (out_dir / "result.bin").write_bytes(data * params.factor)
        if fail:
            raise StageError("boom")
        return {"bytes": len(data) * params.factor}

    mod = types.ModuleType(f"stages.{name}")
    mod.NAME, mod.INPUTS, mod.Params, mod.run, mod.LIBS = name, {"data": None}, Params, run, ("numpy",)
    mod.__name__ = "stages._common"  # code digest source
    return mod


def test_second_run_is_a_cache_hit(tmp_path):
    calls = []
    mod = make_stage(calls=calls)
    f = tmp_path / "in.bin"
    f.write_bytes(b"abc")
    store = C.Store(tmp_path / "cache")
    d = {"data": C.digest_explicit_inputs([f])}
    r1 = execute(store, mod, mod.Params(), {"data": [str(f)]}, d)
    r2 = execute(store, mod, mod.Params(), {"data": [str(f)]}, d)
    assert r1.ran and not r2.ran and len(calls) == 1
    assert r1.artifact == r2.artifact
    assert (r1.artifact / "result.bin").read_bytes() == b"abcabc"
    m = json.loads((r1.artifact / "manifest.json").read_text())
    assert m["files"]["result.bin"]["bytes"] == 6 and m["summary"] == {"bytes": 6}


def test_param_change_changes_key(tmp_path):
    mod = make_stage()
    f = tmp_path / "in.bin"
    f.write_bytes(b"abc")
    d = {"data": C.digest_explicit_inputs([f])}
    k1, _ = C.stage_key(mod, mod.Params(), d)
    k2, _ = C.stage_key(mod, mod.Params(factor=3), d)
    assert k1 != k2


def test_input_content_not_path_is_keyed(tmp_path):
    a, b = tmp_path / "a" / "x.bin", tmp_path / "b" / "x.bin"
    for p in (a, b):
        p.parent.mkdir()
        p.write_bytes(b"same")
    assert C.digest_explicit_inputs([a]) == C.digest_explicit_inputs([b])
    b.write_bytes(b"other")
    assert C.digest_explicit_inputs([a]) != C.digest_explicit_inputs([b])


def test_failed_stage_leaves_no_artifact(tmp_path):
    mod = make_stage(fail=True)
    f = tmp_path / "in.bin"
    f.write_bytes(b"abc")
    store = C.Store(tmp_path / "cache")
    with pytest.raises(StageError):
        execute(store, mod, mod.Params(), {"data": [str(f)]}, {"data": "d"})
    assert store.entries("fake") == []
    assert store.latest("fake") is None


def test_lock_refuses_second_writer(tmp_path):
    s1, s2 = C.Store(tmp_path), C.Store(tmp_path)
    with s1:
        with pytest.raises(CacheError, match="another pipeline run"):
            s2.lock()
    with s2:
        pass


def test_publish_replace_swaps_whole_folder(tmp_path):
    art = tmp_path / "art"
    (art / "maps").mkdir(parents=True)
    (art / "maps" / "a.tmx").write_text("A")
    (art / "manifest.json").write_text('{"key": "k1"}')
    dest = tmp_path / "out" / "tileset"
    (dest).mkdir(parents=True)
    (dest / "stale.txt").write_text("old")
    C.publish(art, dest, replace=True)
    assert (dest / "maps" / "a.tmx").read_text() == "A"
    assert not (dest / "stale.txt").exists()
    assert C.published_key(dest) == "k1"


def test_publish_merge_keeps_user_files(tmp_path):
    art = tmp_path / "art"
    art.mkdir()
    (art / "a.png").write_text("A")
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    C.publish(art, dest, replace=False)
    assert (dest / "keep.txt").read_text() == "mine" and (dest / "a.png").read_text() == "A"


def test_config_unknown_key_is_named(tmp_path):
    mod = make_stage()
    cfg = tmp_path / "pipeline.toml"
    cfg.write_text("[fake]\nfactr = 3\n")
    with pytest.raises(ConfigError, match="unknown key 'factr'.*did you mean 'factor'"):
        load_config(cfg, {"fake": mod})


def test_config_unknown_table_is_named(tmp_path):
    cfg = tmp_path / "pipeline.toml"
    cfg.write_text("[quantise]\nx = 1\n")
    with pytest.raises(ConfigError, match=r"unknown table \[quantise\]"):
        load_config(cfg, {"quantize": make_stage("quantize")})


def test_params_precedence_defaults_toml_cli(tmp_path):
    mod = make_stage()
    cfg_path = tmp_path / "pipeline.toml"
    cfg_path.write_text('[fake]\nfactor = 5\nlabel = "toml"\n')
    cfg = load_config(cfg_path, {"fake": mod})
    p = resolve_params(mod, cfg, {"label": "cli", "betas": "0.1,0.2"})
    assert (p.factor, p.label, p.betas) == (5, "cli", (0.1, 0.2))
    assert resolve_params(mod, Config(None, {}, {}), {}).factor == 2


def test_bad_value_type_names_option():
    with pytest.raises(ConfigError, match="--steps: expected an integer"):
        coerce("many", int, "--steps")


def test_code_digest_follows_imports():
    d1 = C.code_digest("stages._common")
    assert len(d1) == 16 and d1 == C.code_digest("stages._common")
