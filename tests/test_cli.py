"""The `pipeline` command surface: every stage is a subcommand and every option has help."""
import dataclasses

import pytest
import typer
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.graph import STAGES, load_stage

runner = CliRunner()


def test_every_stage_is_a_subcommand():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for name in (*STAGES, "run", "status", "palettes"):
        assert name in res.output


@pytest.mark.parametrize("stage", STAGES)
def test_every_option_has_help(stage):
    cmd = typer.main.get_command(app).commands[stage]
    for p in cmd.params:
        assert getattr(p, "help", None), f"{stage}: {p.name} has no help"
    names = {p.name for p in cmd.params}
    for f in dataclasses.fields(load_stage(stage).Params):
        assert f.name in names, f"{stage}: Params.{f.name} is not a CLI option"


def test_usage_error_exits_2():
    res = runner.invoke(app, ["quantize", "--no-such-option"])
    assert res.exit_code == 2


def test_unknown_until_stage_is_a_usage_error():
    res = runner.invoke(app, ["run", "--until", "bake"])
    assert res.exit_code == 2 and "bake" in res.output


def test_tileset_name_becomes_a_safe_folder_name():
    from pipeline.cli import safe_dirname

    assert safe_dirname("tileset") == "tileset"
    assert safe_dirname("../Bricks & <Pipes>") == "_Bricks _ _Pipes_"
    assert "/" not in safe_dirname("a/b") and safe_dirname("...") == "tileset"


@pytest.fixture
def tilegan_logger():
    """Undo what the commands' logging setup does to the 'tilegan' logger."""
    import logging

    lg = logging.getLogger("tilegan")
    state = (list(lg.handlers), lg.propagate, lg.level)
    yield lg
    lg.handlers[:], lg.propagate, lg.level = state[0], state[1], state[2]


def test_summary_line_shows_skipped_inputs_whichever_key_holds_them():
    from pipeline.cli import _fmt_summary

    assert _fmt_summary({"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "skipped": 2}).endswith("skipped=2")
    assert _fmt_summary({"a": 1, "b": 2, "c": 3, "d": 4, "skipped": 0}) == "a=1 b=2 c=3 d=4"
    assert _fmt_summary({"images": 3, "skipped": [{"path": "x", "reason": "bad"}]}) == \
        "images=3 skipped=1"
    assert _fmt_summary({"images": 3, "skipped_count": 1, "skipped": [{}]}) == \
        "images=3 skipped=1"


def test_crop_summary_counts_too_small_images_as_skipped():
    from pipeline.cli import _fmt_summary, skipped_count

    crop = {"screens": 3, "patches": 40, "patches_available": 90, "tiles": 120, "skipped": 1,
            "too_small": 2, "skipped_items": [{"source": "a"}, {"source": "b"}, {"source": "c"}]}
    assert skipped_count(crop) == 3
    assert _fmt_summary(crop) == "screens=3 patches=40 patches_available=90 tiles=120 skipped=3"


def test_standalone_dedupe_counts_a_corrupt_user_image(tmp_path, tilegan_logger, monkeypatch):
    import json

    from pipeline import cache as C

    monkeypatch.setattr(C, "MEMO_RACY_NS", 0)   # trust the just-written inputs' timestamps

    import numpy as np
    from PIL import Image

    src = tmp_path / "gen"
    src.mkdir()
    rng = np.random.default_rng(3)
    for name in ("a", "c"):
        tile = rng.integers(0, 3, (4, 4)).repeat(4, 0).repeat(4, 1)
        Image.fromarray((tile * 100).astype(np.uint8)).convert("RGB").save(src / f"{name}.png")
    (src / "b.png").write_bytes(b"not an image at all")
    cfg = tmp_path / "pipeline.toml"
    cfg.write_text(f'[pipeline]\ncache = "{tmp_path / "cache"}"\n')
    res = runner.invoke(app, ["dedupe", str(src), "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    assert "skipped=1" in res.output
    (manifest,) = (tmp_path / "cache" / "dedupe").glob("*/manifest.json")
    summary = json.loads(manifest.read_text())["summary"]
    assert summary["skipped"] == 1
    assert summary["skipped_items"][0]["path"] == str(src / "b.png")
    assert "not a readable image" in summary["skipped_items"][0]["reason"]
    assert (tmp_path / "cache" / ".input-hashes.json").is_file()


def test_verify_lists_damage_and_repair_removes_it(tmp_path):
    from pipeline import cache as C

    cache = tmp_path / "cache"
    store = C.Store(cache)
    for key in ("good", "bad"):
        work = store.partial("crop", key)
        (work / "patches.npy").write_bytes(b"12345678")
        store.commit("crop", key, work, {})
    (cache / "crop" / "bad" / "patches.npy").write_bytes(b"XXXXXXXX")   # same size, other bytes
    (cache / "crop" / "nokey").mkdir()                                   # a commit that never finished
    (cache / "crop" / "dead.partial").mkdir()
    cfg = tmp_path / "pipeline.toml"
    cfg.write_text(f'[pipeline]\ncache = "{cache}"\nout = "{tmp_path / "out"}"\n')
    res = runner.invoke(app, ["verify", "--config", str(cfg)])
    assert res.exit_code == 1
    assert "corrupt" in res.output and "does not match its checksum" in res.output
    assert "incomplete" in res.output and "stale-partial" in res.output
    assert "verify: ok=1 corrupt=1 incomplete=1 stale-partial=1" in res.output
    res = runner.invoke(app, ["verify", "--repair", "--config", str(cfg)])
    assert res.exit_code == 0 and res.output.count("-> removed") == 3
    assert sorted(p.name for p in (cache / "crop").iterdir()) == ["LATEST", "good"]
    res = runner.invoke(app, ["verify", "--config", str(cfg)])
    assert res.exit_code == 0 and "verify: ok=1 corrupt=0" in res.output


def test_error_line_escapes_control_characters():
    from pipeline.cli import error_line

    assert error_line(ValueError("a.zip!evil\nname: not an image")) == \
        "a.zip!evil\\nname: not an image"


def test_the_shipped_config_loads_and_every_stage_parameter_resolves():
    from pathlib import Path

    from pipeline.config import load_config, resolve_params

    root = Path(__file__).resolve().parent.parent
    modules = {name: load_stage(name) for name in STAGES}
    config = load_config(root / "pipeline.toml", modules, required=True)
    params = {name: resolve_params(modules[name], config, {}) for name in STAGES}
    assert all(Path(p).is_dir() for p in config.stage_input("scrape"))     # the example corpus
    assert config.out == (root / "out").resolve()
    # make tileset draws whole screens with a layout, one style per game of the corpus
    assert params["train"].position and params["train"].spatial_noise
    assert params["train"].conditional == "auto"
    assert (params["sample"].width, params["sample"].height) == (256, 240)
    assert params["sample"].n * (256 // 16) * (240 // 16) >= 8000      # slice's budget
