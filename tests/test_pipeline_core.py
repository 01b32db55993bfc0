"""The cache, config resolution and error mapping, on a fake stage module."""
import dataclasses
import json
import os
import re
import time
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


# --------------------------------------------------------------------------- input-hash memo
@pytest.fixture
def reads(monkeypatch):
    """Names of the files whose bytes ``file_digest`` read; memo entries trusted at once."""
    seen = []
    real = C.file_digest

    def counting(path, *a, **kw):
        seen.append(Path(path).name)
        return real(path, *a, **kw)

    monkeypatch.setattr(C, "file_digest", counting)
    monkeypatch.setattr(C, "MEMO_RACY_NS", 0)   # files written just now count as settled
    return seen


def _inputs(tmp_path, n=3):
    d = tmp_path / "shots"
    d.mkdir()
    for i in range(n):
        (d / f"s{i}.png").write_bytes(bytes([i]) * (10 + i))
    return d


def test_memo_spares_rereading_unchanged_files(tmp_path, reads):
    d = _inputs(tmp_path)
    memo = tmp_path / "cache" / C.INPUT_MEMO
    k1 = C.digest_explicit_inputs([d], memo=memo)
    assert sorted(reads) == ["s0.png", "s1.png", "s2.png"] and memo.is_file()
    reads.clear()
    assert C.digest_explicit_inputs([d], memo=memo) == k1
    assert reads == []


@pytest.mark.parametrize("form", ["dir", "file", "glob"])
def test_memo_never_changes_the_digest(tmp_path, reads, form):
    d = _inputs(tmp_path)
    items = {"dir": [d], "file": [d / "s1.png", d / "s0.png"], "glob": [str(d / "*.png")]}[form]
    memo = tmp_path / "cache" / C.INPUT_MEMO
    plain = C.digest_explicit_inputs(items)
    assert C.digest_explicit_inputs(items, memo=memo) == plain       # cold memo
    assert C.digest_explicit_inputs(items, memo=memo) == plain       # warm memo


def _grow(f: Path) -> None:
    f.write_bytes(b"longer content")                                   # new size


def _same_size_later_mtime(f: Path) -> None:
    st = f.stat()
    f.write_bytes(b"\xff" * st.st_size)                               # same size, new bytes
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # a later edit


@pytest.mark.parametrize("name,edit", [("s1.png", _grow), ("s2.png", _same_size_later_mtime)],
                         ids=["size-changed", "same-size-new-mtime"])
def test_memo_rereads_an_edited_file(tmp_path, reads, name, edit):
    d = _inputs(tmp_path)
    memo = tmp_path / C.INPUT_MEMO
    k1 = C.digest_explicit_inputs([d], memo=memo)
    edit(d / name)
    reads.clear()
    k2 = C.digest_explicit_inputs([d], memo=memo)
    assert reads == [name] and k2 != k1 and k2 == C.digest_explicit_inputs([d])


def test_memo_sees_an_edit_that_puts_the_mtime_back(tmp_path, reads):
    d = _inputs(tmp_path)
    memo = tmp_path / C.INPUT_MEMO
    f = d / "s0.png"
    st = f.stat()
    k1 = C.digest_explicit_inputs([d], memo=memo)
    time.sleep(0.05)                                   # past the filesystem's timestamp tick
    f.write_bytes(b"\xee" * st.st_size)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))   # mtime restored; ctime cannot be
    reads.clear()
    assert C.digest_explicit_inputs([d], memo=memo) != k1 and reads == ["s0.png"]


def test_memo_does_not_trust_a_file_written_moments_ago(tmp_path, reads, monkeypatch):
    monkeypatch.setattr(C, "MEMO_RACY_NS", 60_000_000_000)
    d = _inputs(tmp_path, n=1)
    memo = tmp_path / C.INPUT_MEMO
    C.digest_explicit_inputs([d], memo=memo)
    C.digest_explicit_inputs([d], memo=memo)
    assert reads == ["s0.png", "s0.png"]


@pytest.mark.parametrize("text", ["", "{not json", "[1, 2]", '{"format": 99, "files": {}}',
                                  '{"format": 1, "files": {"/x": [1, 2]}}', "\x00\xff" * 10])
def test_corrupt_memo_is_ignored_and_replaced(tmp_path, reads, text):
    d = _inputs(tmp_path)
    memo = tmp_path / C.INPUT_MEMO
    memo.write_text(text, encoding="latin-1")
    assert C.digest_explicit_inputs([d], memo=memo) == C.digest_explicit_inputs([d])
    assert json.loads(memo.read_text())["format"] == C.MEMO_FORMAT
    reads.clear()
    C.digest_explicit_inputs([d], memo=memo)
    assert reads == []


def test_memo_entry_with_a_wrong_hash_shape_is_ignored(tmp_path, reads):
    d = _inputs(tmp_path, n=1)
    memo = tmp_path / C.INPUT_MEMO
    k1 = C.digest_explicit_inputs([d], memo=memo)
    doc = json.loads(memo.read_text())
    for v in doc["files"].values():
        v[5] = "not-a-sha256"
    memo.write_text(json.dumps(doc))
    reads.clear()
    assert C.digest_explicit_inputs([d], memo=memo) == k1 and reads == ["s0.png"]


def test_refresh_rereads_every_file(tmp_path, reads):
    d = _inputs(tmp_path)
    memo = tmp_path / C.INPUT_MEMO
    k1 = C.digest_explicit_inputs([d], memo=memo)
    reads.clear()
    assert C.digest_explicit_inputs([d], memo=memo, refresh=True) == k1 and len(reads) == 3


def test_unwritable_memo_folder_costs_only_rereads(tmp_path, reads):
    d = _inputs(tmp_path, n=1)
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    memo = blocker / C.INPUT_MEMO
    assert C.digest_explicit_inputs([d], memo=memo) == C.digest_explicit_inputs([d])


def test_run_graph_keys_scrape_through_the_store_memo(tmp_path, reads, monkeypatch):
    from pipeline import runner

    d = _inputs(tmp_path)
    mod = make_stage("scrape")
    mod.INPUTS = {"source": None}
    mod.run = lambda inputs, params, out_dir, progress=None: {"n": len(inputs["source"])}
    monkeypatch.setattr(runner, "load_all", lambda: {"scrape": mod})
    monkeypatch.setattr(runner, "STAGES", ("scrape",))
    cfg = Config(None, {"cache": str(tmp_path / "cache")}, {"scrape": {"input": str(d)}})
    r1 = runner.run_graph(cfg)[0]
    assert (tmp_path / "cache" / C.INPUT_MEMO).is_file()
    reads.clear()
    r2 = runner.run_graph(cfg)[0]
    assert r2.key == r1.key and not r2.ran
    assert [x for x in reads if x.startswith("s")] == []
    assert [row["state"] for row in runner.stage_status(cfg)] == ["fresh"]
    assert [x for x in reads if x.startswith("s")] == []


def test_input_tree_lists_what_rglob_lists(tmp_path):
    root = tmp_path / "in"
    for rel in ("a.png", "sub/b.png", "sub/deep/c.png", ".hidden_dir/d.png", "a-b/e.png",
                ".hidden_file.png", "sub/.f.png"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(rel.encode())
    (root / "empty").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.png").write_bytes(b"x")
    (root / "link.png").symlink_to(root / "a.png")
    (root / "linked_dir").symlink_to(outside, target_is_directory=True)
    (root / "broken.png").symlink_to(tmp_path / "nowhere.png")
    expected = {f.relative_to(root).as_posix() for f in root.rglob("*")
                if f.is_file() and not f.name.startswith(".")}
    got = dict(C.input_tree(root))
    assert set(got) == expected
    assert set(got) == {"a.png", "sub/b.png", "sub/deep/c.png", ".hidden_dir/d.png", "a-b/e.png",
                        "link.png"}
    assert Path(got["sub/deep/c.png"]).read_bytes() == b"sub/deep/c.png"


def test_folder_digest_is_unchanged_from_the_pathlib_walk(tmp_path):
    """Old caches stay valid: the folder digest equals the one the rglob-based walk gave."""
    root = _inputs(tmp_path)
    (root / "nested").mkdir()
    (root / "nested" / "n.png").write_bytes(b"n")
    files = {f.relative_to(root).as_posix(): {"sha256": C.file_digest(f)}
             for f in sorted(root.rglob("*")) if f.is_file() and not f.name.startswith(".")}
    import hashlib

    old = hashlib.sha256(b"dir:" + C.digest_of_checksums(files).encode() + b"\n").hexdigest()
    assert C.digest_explicit_inputs([root]) == old
    assert C.digest_explicit_inputs([root], memo=tmp_path / C.INPUT_MEMO) == old


# --------------------------------------------------------------------------- config up front
def make_checked_stage(name="fake", calls=None, converted=True):
    """A stage whose Params declares a range, converted to StageParams or not (both must be
    checked by resolve_params)."""
    from stages._common import StageParams

    base = (StageParams,) if converted else ()

    @dataclasses.dataclass(frozen=True)
    class Params(*base):
        STAGE = name
        steps: int = param(10, help="steps", min=1)
        mode: str = param("a", help="mode", choices=("a", "b"))

    def run(inputs, params, out_dir, progress=None):
        if calls is not None:
            calls.append(name)
        (out_dir / "x.txt").write_text("x")
        return {}

    mod = types.ModuleType(f"stages.{name}")
    mod.NAME, mod.INPUTS, mod.Params, mod.run, mod.LIBS = name, {"data": None}, Params, run, ()
    mod.__name__ = "stages._common"
    return mod


@pytest.mark.parametrize("converted", [True, False])
def test_range_error_names_file_table_and_key(tmp_path, monkeypatch, converted):
    monkeypatch.chdir(tmp_path)
    mod = make_checked_stage("train", converted=converted)
    (tmp_path / "pipeline.toml").write_text("[train]\nsteps = -5\n")
    cfg = load_config(tmp_path / "pipeline.toml", {"train": mod})
    with pytest.raises(ConfigError) as ei:
        resolve_params(mod, cfg, {})
    assert str(ei.value) == "pipeline.toml [train] steps: must be at least 1, got -5"


def test_choice_error_from_the_command_line_names_the_option():
    mod = make_checked_stage("train", converted=False)
    with pytest.raises(ConfigError, match=r"^--mode: must be one of a, b, got 'c'$"):
        resolve_params(mod, Config(None, {}, {}), {"mode": "c"})


def test_run_checks_every_stage_before_running_the_first(tmp_path, monkeypatch):
    from pipeline import runner as R

    calls = []
    first, second = make_checked_stage("one", calls), make_checked_stage("two", calls)
    second.INPUTS = {"data": "one"}
    monkeypatch.setattr(R, "STAGES", ("one", "two"))
    monkeypatch.setattr(R, "load_all", lambda: {"one": first, "two": second})
    (tmp_path / "in.txt").write_text("x")
    (tmp_path / "pipeline.toml").write_text(f'[one]\ninput = "{tmp_path / "in.txt"}"\n'
                                            '[two]\nsteps = "abc"\n')
    cfg = load_config(tmp_path / "pipeline.toml", {"one": first, "two": second})
    with pytest.raises(ConfigError, match=r"\[two\] steps: expected an integer, got 'abc'"):
        R.run_graph(cfg)
    assert calls == [] and not (tmp_path / "out").exists()


@pytest.mark.parametrize("text, where", [
    ('[fake]\ninput = 5\n', "[fake] input"),
    ('[fake]\ninput = []\n', "[fake] input"),
    ('[pipeline]\nout = 5\n', "[pipeline] out"),
    ('pipeline = 3\n', "[pipeline] must be a table"),
])
def test_config_shapes_are_checked_when_loaded(tmp_path, text, where):
    (tmp_path / "pipeline.toml").write_text(text)
    with pytest.raises(ConfigError, match=re.escape(where)):
        load_config(tmp_path / "pipeline.toml", {"fake": make_stage()})


def test_a_config_that_is_not_utf8_is_one_clear_error(tmp_path):
    (tmp_path / "pipeline.toml").write_bytes(b"[fake]\nlabel = \"\xff\xfe\"\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(tmp_path / "pipeline.toml", {"fake": make_stage()})
