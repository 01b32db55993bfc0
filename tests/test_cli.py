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
