"""Crash points: every filesystem mutation of a cache commit, a checkpoint save and a publish is
cut in turn (see tests/_helpers_crash.py), and the next run must recover with nothing lost and
no corrupt cache hit.  Also: a full disk on every write path, a fully cached run writes nothing,
new files follow the umask.  No hook in production code: the recorder patches os / io."""
import dataclasses
import errno
import json
import os
import stat
import types
from pathlib import Path

import numpy as np
import pytest

from pipeline import cache as C
from pipeline import runner as R
from pipeline.config import Config
from pipeline.runner import execute
from stages import _common as S
from stages._common import StorageError, param
from tests._helpers_crash import Crash, Mutations, run_until_crash

#: crash points exercised by each test, printed at the end of each (run with -s to see them)
POINTS: dict[str, int] = {}


def make_stage(name="fake", *, fail=False):
    """A stage writing through every helper (npy, json, png, a subfolder); its files carry a
    generation number, so an old and a new artifact of the same key differ."""
    gen = [0]

    @dataclasses.dataclass(frozen=True)
    class Params:
        factor: int = param(2, help="multiply", min=1)

    def run(inputs, params, out_dir, progress=None):
        gen[0] += 1
        data = Path(inputs["data"][0]).read_bytes()
        S.save_npy(out_dir / "values.npy", np.frombuffer(data * params.factor, np.uint8))
        S.write_json(out_dir / "info.json", {"generation": gen[0]})
        S.save_png(out_dir / "img" / "tile.png", np.full((2, 2, 3), gen[0], np.uint8))
        if fail:
            raise S.InputError("boom")
        return {"generation": gen[0]}

    mod = types.ModuleType(f"stages.{name}")
    mod.NAME, mod.INPUTS, mod.Params, mod.run, mod.LIBS = name, {"data": None}, Params, run, ()
    mod.__name__ = "stages._common"  # code digest source
    return mod


def _inputs(tmp_path):
    f = tmp_path / "in.bin"
    f.write_bytes(b"abc")
    return {"data": [str(f)]}, {"data": C.digest_explicit_inputs([f])}


def _run(store, mod, inputs, digests, force=False):
    with store:
        return execute(store, mod, mod.Params(), inputs, digests, force=force,
                       progress=lambda *a, **k: None)


def _generation(artifact: Path) -> int:
    return json.loads((artifact / "info.json").read_text())["generation"]


def _kinds(store) -> set:
    return {f.kind for f in C.verify_store(store, resumable=R.has_resume_state)}


@pytest.fixture(params=["exchange", "two-renames"])
def swap(request, monkeypatch):
    """Both ways of swapping a folder in: the one-step exchange and the fallback."""
    if request.param == "two-renames":
        monkeypatch.setattr(C, "exchange", lambda a, b: False)
    return request.param


def _points(name: str, n: int) -> None:
    POINTS[name] = n
    print(f"\ncrash points {name}: {n}")


# --------------------------------------------------------------------------- commit
def test_every_crash_point_of_a_first_commit_recovers(tmp_path, swap):
    def fresh(i):
        d = tmp_path / f"p{i}"
        d.mkdir()
        mod = make_stage()
        inputs, digests = _inputs(d)
        return C.Store(d / "cache"), mod, inputs, digests

    store, mod, inputs, digests = fresh("dry")
    total = run_until_crash(lambda: _run(store, mod, inputs, digests), None,
                            extra=((C, "exchange"),)).count
    assert total >= 10
    for n in range(1, total + 1):
        store, mod, inputs, digests = fresh(n)
        rec = run_until_crash(lambda: _run(store, mod, inputs, digests), n,
                              extra=((C, "exchange"),))
        assert rec.crashed
        key, _ = C.stage_key(mod, mod.Params(), digests)
        hit = store.lookup("fake", key)
        # no corrupt hit: whatever looks like a hit checks out file by file
        assert hit is None or C.check_artifact(hit, key=key, full=True) is None, n
        res = _run(store, mod, inputs, digests)          # the next run
        assert C.check_artifact(res.artifact, key=key, full=True) is None, n
        assert (res.artifact / "values.npy").stat().st_size > 0
        assert store.latest("fake") == res.artifact
        assert _kinds(store) <= {"ok", "leftover"}, n
        C.repair(C.verify_store(store))
        assert _kinds(store) == {"ok"}, n
    _points(f"first-commit/{swap}", total)


def test_every_crash_point_of_a_forced_rerun_keeps_a_complete_hit(tmp_path, swap):
    """A kill anywhere in `run --force` (the stage or its commit) leaves the old artifact or the
    new one in place: the next run is a hit, never a corrupt one (issue #18, point 1)."""
    def fresh(i):
        d = tmp_path / f"p{i}"
        d.mkdir()
        mod = make_stage()
        inputs, digests = _inputs(d)
        store = C.Store(d / "cache")
        _run(store, mod, inputs, digests)                 # generation 1 committed
        return store, mod, inputs, digests

    store, mod, inputs, digests = fresh("dry")
    total = run_until_crash(lambda: _run(store, mod, inputs, digests, force=True), None,
                            extra=((C, "exchange"),)).count
    assert total >= 10
    for n in range(1, total + 1):
        store, mod, inputs, digests = fresh(n)
        key, _ = C.stage_key(mod, mod.Params(), digests)
        rec = run_until_crash(lambda: _run(store, mod, inputs, digests, force=True), n,
                              extra=((C, "exchange"),))
        assert rec.crashed
        hit = store.lookup("fake", key)
        if swap == "exchange":
            assert hit is not None, f"point {n}: the artifact went missing"
        assert hit is None or C.check_artifact(hit, key=key, full=True) is None, n
        res = _run(store, mod, inputs, digests)          # the next, unforced run
        assert not res.ran, f"point {n}: the old artifact was lost, the stage ran again"
        assert _generation(res.artifact) in (1, 2)
        assert C.check_artifact(res.artifact, key=key, full=True) is None, n
        assert _kinds(store) <= {"ok", "leftover"}, n
    _points(f"forced-commit/{swap}", total)


# --------------------------------------------------------------------------- checkpoint
def test_every_crash_point_of_a_checkpoint_save_leaves_a_loadable_checkpoint(tmp_path):
    torch = pytest.importorskip("torch")
    from stages._checkpoint import load_checkpoint, save_checkpoint

    def state(step):
        return {"G": {"w": torch.full((4, 4), float(step))}, "config": {"size": 16},
                "step": step, "version": 1}

    def fresh(i):
        d = tmp_path / f"c{i}"
        d.mkdir()
        save_checkpoint(d / "ckpt.pt", state(1))
        return d / "ckpt.pt"

    path = fresh("dry")
    total = run_until_crash(lambda: save_checkpoint(path, state(2)), None).count
    assert total >= 3
    for n in range(1, total + 1):
        path = fresh(n)
        assert run_until_crash(lambda: save_checkpoint(path, state(2)), n).crashed
        ck = load_checkpoint(path)                        # never torn: old or new
        assert ck["step"] in (1, 2) and float(ck["G"]["w"][0, 0]) == ck["step"], n
        save_checkpoint(path, state(2))                   # the resumed run saves again
        assert load_checkpoint(path)["step"] == 2
    _points("checkpoint", total)


def test_a_commit_drops_temporary_files_a_killed_checkpoint_left(tmp_path):
    store = C.Store(tmp_path / "cache")
    work = store.partial("train", "k1")
    (work / "ckpt.pt").write_bytes(b"final")
    (work / ".ckpt.pt.123.abcd.tmp").write_bytes(b"half")
    final = store.commit("train", "k1", work, {})
    assert sorted(p.name for p in final.iterdir()) == ["ckpt.pt", "manifest.json"]


# --------------------------------------------------------------------------- publish
def _artifact(root: Path, key: str, body: str) -> Path:
    art = root / key
    (art / "maps").mkdir(parents=True)
    for rel in ("tileset.png", "tileset.tsx", "maps/a.tmx", "report.html"):
        S.atomic_write_text(art / rel, f"{body} {rel}")
    files = C.tree_checksums(art)
    S.write_json(art / "manifest.json", {"key": key, "files": files})
    return art


def _published(dest: Path) -> dict:
    return {p.relative_to(dest).as_posix(): p.read_text() for p in sorted(dest.rglob("*"))
            if p.is_file()}


def test_every_crash_point_of_a_publish_leaves_a_whole_tileset(tmp_path, swap):
    old_art = _artifact(tmp_path / "cache", "k1", "old")
    new_art = _artifact(tmp_path / "cache", "k2", "new")

    def fresh(i):
        dest = tmp_path / f"out{i}" / "tileset"
        C.publish(old_art, dest, replace=True)
        return dest

    dest = fresh("dry")
    want_old = _published(dest)
    total = run_until_crash(lambda: C.publish(new_art, dest, replace=True), None,
                            extra=((C, "exchange"),)).count
    want_new = _published(dest)
    assert total >= 8
    for n in range(1, total + 1):
        dest = fresh(n)
        assert run_until_crash(lambda: C.publish(new_art, dest, replace=True), n,
                               extra=((C, "exchange"),)).crashed
        if swap == "exchange" or dest.exists():
            assert _published(dest) in (want_old, want_new), f"point {n}: a mixed tileset"
        C.recover_published(dest)                         # what the next run does first
        assert _published(dest) in (want_old, want_new), n
        C.publish(new_art, dest, replace=True)
        assert _published(dest) == want_new
        assert C.publish_leftovers(dest) == [], n
    _points(f"publish/{swap}", total)


# --------------------------------------------------------------------------- failures
def test_a_failed_run_leaves_no_partial_that_the_next_run_resumes(tmp_path):
    mod = make_stage("scrape", fail=True)
    inputs, digests = _inputs(tmp_path)
    store = C.Store(tmp_path / "cache")
    with pytest.raises(S.InputError):
        _run(store, mod, inputs, digests)
    assert store.partials("scrape") == []


def test_a_failed_training_keeps_its_checkpoint(tmp_path):
    mod = make_stage("train", fail=True)
    real = mod.run

    def run(inputs, params, out_dir, progress=None):
        (out_dir / "ckpt.pt").write_bytes(b"state")
        return real(inputs, params, out_dir, progress)

    mod.run = run
    inputs, digests = _inputs(tmp_path)
    store = C.Store(tmp_path / "cache")
    with pytest.raises(S.InputError):
        _run(store, mod, inputs, digests)
    (work,) = store.partials("train")
    assert (work / "ckpt.pt").read_bytes() == b"state"


def test_an_interrupted_run_keeps_its_work_folder(tmp_path):
    mod = make_stage("train")

    def run(inputs, params, out_dir, progress=None):
        (out_dir / "ckpt.pt").write_bytes(b"state")
        raise KeyboardInterrupt

    mod.run = run
    inputs, digests = _inputs(tmp_path)
    store = C.Store(tmp_path / "cache")
    with pytest.raises(KeyboardInterrupt):
        _run(store, mod, inputs, digests)
    assert len(store.partials("train")) == 1


def test_a_commit_removes_stale_partials_of_the_same_stage(tmp_path):
    store = C.Store(tmp_path / "cache")
    (tmp_path / "cache" / "fake" / "oldkey.partial").mkdir(parents=True)
    mod = make_stage()
    inputs, digests = _inputs(tmp_path)
    _run(store, mod, inputs, digests)
    assert store.partials("fake") == []


def test_verify_finds_a_corrupt_artifact_and_repair_removes_it(tmp_path):
    mod = make_stage()
    inputs, digests = _inputs(tmp_path)
    store = C.Store(tmp_path / "cache")
    res = _run(store, mod, inputs, digests)
    npy = res.artifact / "values.npy"
    npy.write_bytes(b"X" * npy.stat().st_size)           # same size: only checksums see it
    assert store.lookup("fake", res.key) == res.artifact
    found = C.verify_store(store)
    assert [f.kind for f in found] == ["corrupt"] and "checksum" in found[0].detail
    (tmp_path / "cache" / "fake" / "k.partial").mkdir()
    (tmp_path / "cache" / "fake" / ".LATEST.1.ab.tmp").write_text("x")
    removed = C.repair(C.verify_store(store))
    assert sorted(f.kind for f in removed) == ["corrupt", "leftover", "stale-partial"]
    assert C.verify_store(store) == []


def test_a_missing_file_makes_the_artifact_a_miss(tmp_path):
    mod = make_stage()
    inputs, digests = _inputs(tmp_path)
    store = C.Store(tmp_path / "cache")
    res = _run(store, mod, inputs, digests)
    (res.artifact / "values.npy").unlink()
    assert store.lookup("fake", res.key) is None
    again = _run(store, mod, inputs, digests)
    assert again.ran and (again.artifact / "values.npy").is_file()


# --------------------------------------------------------------------------- disk full
WRITERS = {
    "bytes": lambda p: S.atomic_write_bytes(p, b"x" * 100),
    "text": lambda p: S.atomic_write_text(p, "x" * 100),
    "npy": lambda p: S.save_npy(p, np.zeros(10, np.uint8)),
    "npz": lambda p: S.save_npz(p, a=np.zeros(10, np.uint8)),
    "json": lambda p: S.write_json(p, {"a": 1}),
    "png": lambda p: S.save_png(p, np.zeros((2, 2, 3), np.uint8)),
}


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_a_full_disk_is_one_line_naming_the_file_and_leaves_nothing(tmp_path, writer):
    path = tmp_path / "d" / "out.bin"
    with Mutations(fail_errno=errno.ENOSPC).active():
        with pytest.raises(StorageError) as ei:
            WRITERS[writer](path)
    msg = str(ei.value)
    assert "\n" not in msg and str(path) in msg and "no space left" in msg and "free" in msg
    assert ei.value.errno == errno.ENOSPC
    assert list((tmp_path / "d").iterdir()) == []      # no 0-byte temporary file


def test_an_io_error_is_one_line_too(tmp_path):
    with Mutations(fail_errno=errno.EIO).active():
        with pytest.raises(StorageError, match="I/O error"):
            S.write_json(tmp_path / "a.json", {})


def test_a_checkpoint_on_a_full_disk_is_one_line_and_keeps_the_last_one(tmp_path):
    torch = pytest.importorskip("torch")
    from stages._checkpoint import load_checkpoint, save_checkpoint

    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"G": {}, "config": {}, "step": 1})
    with Mutations(fail_errno=errno.ENOSPC).active():
        with pytest.raises(StorageError) as ei:
            save_checkpoint(path, {"G": {"w": torch.zeros(100)}, "config": {}, "step": 2})
    assert "\n" not in str(ei.value) and "ckpt.pt" in str(ei.value)
    assert "enforce" not in str(ei.value)
    assert load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]


def test_a_commit_on_a_full_disk_is_one_line_and_caches_nothing(tmp_path):
    mod = make_stage()
    inputs, digests = _inputs(tmp_path)
    store = C.Store(tmp_path / "cache")
    with Mutations(fail_errno=errno.ENOSPC).active():
        with pytest.raises(StorageError, match="no space left"):
            _run(store, mod, inputs, digests)
    key, _ = C.stage_key(mod, mod.Params(), digests)
    assert store.lookup("fake", key) is None and store.partials("fake") == []


def test_a_publish_on_a_full_disk_keeps_the_old_tileset_and_no_copy(tmp_path):
    old = _artifact(tmp_path / "cache", "k1", "old")
    new = _artifact(tmp_path / "cache", "k2", "new")
    dest = tmp_path / "out" / "tileset"
    C.publish(old, dest, replace=True)
    with Mutations(fail_errno=errno.ENOSPC).active():
        with pytest.raises(StorageError):
            C.publish(new, dest, replace=True)
    assert C.published_key(dest) == "k1" and C.publish_leftovers(dest) == []


def test_a_fully_cached_run_writes_nothing(tmp_path, monkeypatch):
    """Not even LATEST or the lock file: a cached run works on a full disk (#18, point 3)."""
    mod = make_stage()
    monkeypatch.setattr(R, "STAGES", ("fake",))
    monkeypatch.setattr(R, "load_all", lambda: {"fake": mod})
    monkeypatch.setattr(C, "MEMO_RACY_NS", 0)
    (tmp_path / "in.bin").write_bytes(b"abc")
    cfg = Config(tmp_path / "pipeline.toml", {},
                 {"fake": {"input": str(tmp_path / "in.bin")}})
    first = R.run_graph(cfg)
    assert first[0].ran
    with Mutations(fail_errno=errno.ENOSPC).active() as rec:
        again = R.run_graph(cfg)
    assert not again[0].ran and rec.log == []


def test_the_cli_turns_any_stray_enospc_into_one_line(monkeypatch, capsys):
    from pipeline import cli

    def boom(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", "/tmp/x/index.jsonl")

    monkeypatch.setattr(cli, "app", boom)
    with pytest.raises(SystemExit) as ei:
        cli.main(["run"])
    err = capsys.readouterr().err
    assert ei.value.code == 1 and err.count("\n") == 1
    assert "index.jsonl" in err and "no space left" in err and "internal error" not in err


# --------------------------------------------------------------------------- permissions
def test_published_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        art = _artifact(tmp_path / "cache", "k1", "x")
        dest = C.publish(art, tmp_path / "out" / "tileset", replace=True)
        mine = C.publish(art, tmp_path / "mine", replace=False)
    finally:
        os.umask(old)
    for root in (art, dest, mine):
        for p in root.rglob("*"):
            mode = stat.S_IMODE(p.stat().st_mode)
            assert mode & stat.S_IROTH, f"{p} is {oct(mode)}"
            assert not mode & stat.S_IWOTH


@pytest.mark.parametrize("data", [b"", b"garbage" * 50, b"PK\x03\x04" + b"\0" * 40])
def test_a_garbage_checkpoint_is_one_clear_line(tmp_path, data, recwarn):
    pytest.importorskip("torch")
    from stages._checkpoint import load_checkpoint

    (tmp_path / "ckpt.pt").write_bytes(data)
    with pytest.raises(S.InputError) as ei:
        load_checkpoint(tmp_path / "ckpt.pt")
    msg = str(ei.value)
    assert "\n" not in msg and "ckpt.pt" in msg and "weights_only" not in msg
    assert len(recwarn) == 0
