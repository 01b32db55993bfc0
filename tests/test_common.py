"""stages/_common.py: declared parameter ranges (param / check_params / StageParams) and the
image iterator that skips and records unreadable files."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np
import pytest
from PIL import Image

from stages._common import ParamError, Skipped, StageParams, check_params, iter_images, param


class Mode(str, Enum):
    A = "a"
    B = "b"


@dataclass(frozen=True)
class P(StageParams):
    STAGE = "demo"
    size: int = param(16, help="side", min=16, max=128, multiple_of=16)
    ratio: float = param(0.5, help="share", min=0.0, max=1.0)
    mode: Mode = param(Mode.A, help="an enum: its members are the choices")
    kind: str = param("x", help="a plain choice", choices=("x", "y"))


def test_declared_defaults_pass():
    assert P().size == 16


@pytest.mark.parametrize("kw, message", [
    ({"size": 8}, "demo: size must be within 16..128, got 8"),
    ({"size": 24}, "demo: size must be a multiple of 16, got 24"),
    ({"ratio": 1.5}, "demo: ratio must be within 0.0..1.0, got 1.5"),
    ({"mode": "c"}, "demo: mode must be one of a, b, got 'c'"),
    ({"kind": "z"}, "demo: kind must be one of x, y, got 'z'"),
    ({"size": "big"}, "demo: size must be a number, got 'big'"),
])
def test_a_value_outside_its_declaration_names_stage_field_rule_and_value(kw, message):
    with pytest.raises(ParamError) as e:
        P(**kw)
    assert str(e.value) == message
    assert e.value.field == next(iter(kw))


def test_check_params_works_on_any_dataclass_with_declared_fields():
    @dataclass(frozen=True)
    class Plain:
        n: int = param(1, help="n", min=1)

    check_params(Plain(), "plain")
    with pytest.raises(ParamError, match="plain: n must be at least 1, got 0"):
        check_params(Plain(n=0), "plain")


def test_cross_field_rules_go_in_check():
    @dataclass(frozen=True)
    class Q(StageParams):
        STAGE = "q"
        lo: int = param(0, help="lo", min=0)
        hi: int = param(1, help="hi", min=0)

        def check(self) -> None:
            super().check()
            if self.lo > self.hi:
                raise ParamError("q: lo must not exceed hi", field="lo")

    with pytest.raises(ParamError, match="lo must not exceed hi"):
        Q(lo=3, hi=2)
    with pytest.raises(ParamError, match="hi must be at least 0"):
        Q(hi=-1)


def test_iter_images_yields_good_files_and_records_bad_ones_in_order(tmp_path):
    tile = np.random.default_rng(1).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(tile).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"not a png")
    Image.fromarray(tile[::-1]).save(tmp_path / "c.png")
    skipped = Skipped()
    got = [(p.name, im.shape) for p, im in iter_images(
        [tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"], skipped, mode="RGBA")]
    assert got == [("a.png", (16, 16, 4)), ("c.png", (16, 16, 4))]
    assert len(skipped) == 1 and skipped.items[0]["path"] == str(tmp_path / "b.png")
    assert skipped.first_reason().startswith(f"{tmp_path / 'b.png'}: not a readable image")
