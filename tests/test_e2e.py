"""The whole DAG through the `pipeline` command on a tiny corpus: artifacts, cache, errors."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests._helpers_pipeline import tiny_pipeline_toml

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "screens"

TINY = tiny_pipeline_toml(steps=4, max_minutes=3.0, grid_every=2, swd_every=4)


def run_cli(cwd, *args, check=True):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="2")
    env.pop("TILEGAN_DEBUG", None)
    p = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"pipeline {' '.join(args)} failed ({p.returncode}):\n{p.stderr}")
    return p


def cache_entries(project, stage):
    d = project / "out" / "cache" / stage
    return sorted(p.name for p in d.iterdir() if (p / "manifest.json").is_file()) if d.is_dir() else []


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    proj = tmp_path_factory.mktemp("proj")
    screens = proj / "screens"
    screens.mkdir()
    for f in sorted(EXAMPLES.glob("*.png"))[::12][:6]:
        shutil.copy(f, screens / f.name)
    (proj / "pipeline.toml").write_text(TINY)
    run_cli(proj, "run")
    return proj


def test_run_writes_every_artifact(project):
    out = project / "out" / "tileset"
    for rel in ("tileset.png", "tileset.tsx", "maps/sheet.tmx", "maps/level.tmx", "report.html",
                "tilegan.tiled-project"):
        assert (out / rel).is_file(), rel
    samples = sorted((out / "maps").glob("sample_*.tmx"))
    assert len(samples) == 4
    previews = sorted((out / "previews").glob("*.png"))
    assert len(previews) == len(list((out / "maps").glob("*.tmx")))
    for stage in ("scrape", "crop", "train", "sample", "quantize", "slice", "dedupe", "export"):
        assert len(cache_entries(project, stage)) == 1, stage
    crop = project / "out" / "cache" / "crop" / cache_entries(project, "crop")[0]
    patches = np.load(crop / "patches.npy")
    assert patches.ndim == 4 and patches.shape[1:3] == (32, 32) and patches.dtype == np.uint8
    train = project / "out" / "cache" / "train" / cache_entries(project, "train")[0]
    assert (train / "ckpt.pt").is_file() and (train / "metrics.jsonl").read_text().strip()
    q = project / "out" / "cache" / "quantize" / cache_entries(project, "quantize")[0]
    pngs = sorted(q.glob("*.png"))
    assert len(pngs) == 4 and all(Image.open(p).mode == "P" for p in pngs)


def test_every_map_loads_in_pytmx(project):
    import pytmx

    out = project / "out" / "tileset"
    for tmx in sorted((out / "maps").glob("*.tmx")):
        m = pytmx.TiledMap(str(tmx), image_loader=lambda *a, **k: (lambda *x: None))
        assert m.tilewidth == 16 and m.tileheight == 16
        assert len(m.layers) >= 1


def test_every_map_renders_in_tiled_as_our_preview(project):
    from tests._helpers_tiled import assert_matches_tiled, require_tmxrasterizer

    require_tmxrasterizer()
    out = project / "out" / "tileset"
    maps = sorted((out / "maps").glob("*.tmx"))
    assert maps
    for tmx in maps:
        assert_matches_tiled(tmx, out / "previews" / f"{tmx.stem}.png")


def test_second_run_runs_no_stage(project):
    before = {s: cache_entries(project, s) for s in ("crop", "train", "export")}
    p = run_cli(project, "run")
    lines = [ln for ln in p.stderr.splitlines() if ln.split()[:1] and ln.split()[0] in
             ("scrape", "crop", "train", "sample", "quantize", "slice", "dedupe", "export")
             and len(ln.split()) > 1 and ln.split()[1] in ("ran", "cached")]
    assert len(lines) == 8 and all(ln.split()[1] == "cached" for ln in lines), p.stderr
    assert {s: cache_entries(project, s) for s in before} == before
    st = run_cli(project, "status")
    assert st.stdout.count("fresh") == 8, st.stdout


def test_quantize_param_change_reruns_quantize_and_after_only(project, tmp_path):
    cfg = project / "pipeline.toml"
    original = cfg.read_text()
    try:
        cfg.write_text(original.replace('palette = "nes"', 'palette = "gameboy"'))
        st = run_cli(project, "status")
        assert "quantize  " in st.stdout and "stale" in st.stdout.split("quantize")[1].splitlines()[0]
        run_cli(project, "run")
        for s in ("scrape", "crop", "train", "sample"):
            assert len(cache_entries(project, s)) == 1, s
        for s in ("quantize", "slice", "dedupe", "export"):
            assert len(cache_entries(project, s)) == 2, s
    finally:
        cfg.write_text(original)
    # back to the original parameters: everything is a cache hit again
    p = run_cli(project, "run")
    assert " ran " not in p.stderr


def test_identical_upstream_bytes_rebuild_nothing_downstream(project):
    """Early cut-off: forcing crop to rerun yields the same bytes, so train stays cached."""
    train_before = cache_entries(project, "train")
    p = run_cli(project, "run", "--until", "train", "--force", "crop")
    assert "crop      ran" in p.stderr and "train     cached" in p.stderr, p.stderr
    assert cache_entries(project, "train") == train_before


def test_standalone_quantize_on_user_files(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(src / f"shot{i}.png")
    out = tmp_path / "q"
    p = run_cli(tmp_path, "quantize", str(src / "shot0.png"), str(src / "shot1.png"), "--out", str(out))
    assert Path(p.stdout.strip().splitlines()[-1]) == out
    for i in range(2):
        im = Image.open(out / f"shot{i}.png")
        assert im.mode == "P" and im.size == (48, 32)


@pytest.mark.parametrize("case", ["empty", "missing", "url", "corrupt", "small", "typo"])
def test_bad_input_is_one_clear_line(tmp_path, case):
    args: list[str]
    if case == "empty":
        (tmp_path / "empty").mkdir()
        args, expect = ["scrape", "empty"], "empty"
    elif case == "missing":
        args, expect = ["scrape", "nowhere"], "nowhere"
    elif case == "url":
        args, expect = ["scrape", "http://127.0.0.1:9/shots.html", "--timeout", "2"], "127.0.0.1:9"
    elif case == "corrupt":
        (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
        args, expect = ["crop", "bad.png"], "bad.png"
    elif case == "small":
        Image.new("RGB", (20, 20), (1, 2, 3)).save(tmp_path / "tiny.png")
        args, expect = ["crop", "tiny.png"], "patch"
    else:
        (tmp_path / "pipeline.toml").write_text("[quantize]\npalete = 'nes'\n")
        args, expect = ["status"], "palete"
    p = run_cli(tmp_path, *args, check=False)
    assert p.returncode == 1, p.stderr
    err = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
    assert err and err[-1].startswith("error:") and expect in err[-1], p.stderr
    assert "Traceback" not in p.stderr
