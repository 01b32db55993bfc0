"""scrape's NES ROM source: frames captured in the cynes emulator from a ROM the test builds.

The ROM is written here byte by byte (iNES header, 16 KB program, 8 KB of tile patterns): it
sets a palette, fills the first nametable with eight patterns, turns rendering on, and scrolls
one pixel to the right on every frame in which any button is held (read in the NMI handler), so
button presses change the picture and no presses keep it still.  No commercial ROM is used.
"""
from __future__ import annotations

import hashlib
import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import pytest

from stages import _capture, scrape
from stages._common import InputError, ParamError

# --------------------------------------------------------------------------- a tiny ROM
#: the few 6502 instructions the ROM needs: mnemonic -> (opcode, operand bytes or "rel")
OPS = {"SEI": (0x78, 0), "CLD": (0xD8, 0), "TXS": (0x9A, 0), "INX": (0xE8, 0), "TXA": (0x8A, 0),
       "DEY": (0x88, 0), "DEX": (0xCA, 0), "RTI": (0x40, 0),
       "LDX#": (0xA2, 1), "LDA#": (0xA9, 1), "LDY#": (0xA0, 1), "CPX#": (0xE0, 1),
       "AND#": (0x29, 1), "ORAz": (0x05, 1), "STAz": (0x85, 1), "INCz": (0xE6, 1),
       "LDAz": (0xA5, 1), "STA": (0x8D, 2), "BIT": (0x2C, 2), "LDA": (0xAD, 2), "JMP": (0x4C, 2),
       "LDA,X": (0xBD, 2), "BPL": (0x10, "rel"), "BNE": (0xD0, "rel"), "BEQ": (0xF0, "rel")}

PALETTE = [0x0F, 0x21, 0x16, 0x2A, 0x0F, 0x11, 0x27, 0x1A, 0x0F, 0x30, 0x14, 0x06,
           0x0F, 0x2C, 0x38, 0x19] * 2

PROGRAM = [
    ("label", "reset"), ("SEI",), ("CLD",), ("LDX#", 0xFF), ("TXS",),
    ("LDA#", 0), ("STA", 0x2000), ("STA", 0x2001), ("STAz", 0x00),       # rendering off, scroll 0
    ("label", "vb1"), ("BIT", 0x2002), ("BPL", "vb1"),                   # wait for two vblanks
    ("label", "vb2"), ("BIT", 0x2002), ("BPL", "vb2"),
    ("LDA", 0x2002), ("LDA#", 0x3F), ("STA", 0x2006), ("LDA#", 0x00), ("STA", 0x2006),
    ("LDX#", 0),
    ("label", "pal"), ("LDA,X", "palette"), ("STA", 0x2007), ("INX",), ("CPX#", 32),
    ("BNE", "pal"),                                                      # 32 palette entries
    ("LDA#", 0x20), ("STA", 0x2006), ("LDA#", 0x00), ("STA", 0x2006),
    ("LDY#", 4), ("LDX#", 0),
    ("label", "nt"), ("TXA",), ("AND#", 0x07), ("STA", 0x2007), ("INX",), ("BNE", "nt"),
    ("DEY",), ("BNE", "nt"),                                             # 1 KB of nametable
    ("LDA#", 0), ("STA", 0x2005), ("STA", 0x2005),
    ("LDA#", 0x80), ("STA", 0x2000), ("LDA#", 0x1E), ("STA", 0x2001),   # NMI on, show all
    ("label", "loop"), ("JMP", "loop"),
    ("label", "nmi"),                                                    # read the 8 buttons
    ("LDA#", 1), ("STA", 0x4016), ("LDA#", 0), ("STA", 0x4016), ("STAz", 0x01), ("LDX#", 8),
    ("label", "rd"), ("LDA", 0x4016), ("AND#", 0x01), ("ORAz", 0x01), ("STAz", 0x01),
    ("DEX",), ("BNE", "rd"),
    ("LDAz", 0x01), ("BEQ", "still"), ("INCz", 0x00),                   # any button: scroll
    ("label", "still"), ("LDAz", 0x00), ("STA", 0x2005), ("LDA#", 0), ("STA", 0x2005),
    ("LDA#", 0x80), ("STA", 0x2000), ("RTI",),
    ("label", "irq"), ("RTI",),
    ("label", "palette"), ("bytes", PALETTE),
]

#: eight 8x8 patterns as (low plane, high plane) rows
PATTERNS = [([0x00] * 8, [0x00] * 8), ([0xFF] * 8, [0x00] * 8), ([0xAA, 0x55] * 4, [0x00] * 8),
            ([0x00] * 8, [0xFF] * 8), ([0xFF] * 8, [0xFF] * 8), ([0xF0] * 8, [0x0F] * 8),
            ([0x81, 0x42, 0x24, 0x18, 0x18, 0x24, 0x42, 0x81], [0x00] * 8),
            ([0xFF, 0x81, 0x81, 0x81, 0x81, 0x81, 0x81, 0xFF], [0xFF, 0, 0, 0, 0, 0, 0, 0xFF])]


def _size(ins: tuple) -> int:
    if ins[0] == "label":
        return 0
    if ins[0] == "bytes":
        return len(ins[1])
    n = OPS[ins[0]][1]
    return 2 if n == "rel" else 1 + n


def assemble(program: list[tuple], origin: int = 0xC000) -> tuple[bytes, dict[str, int]]:
    """Two passes: label addresses, then bytes."""
    labels, pc = {}, origin
    for ins in program:
        if ins[0] == "label":
            labels[ins[1]] = pc
        pc += _size(ins)
    out, pc = bytearray(), origin
    for ins in program:
        if ins[0] == "bytes":
            out += bytes(ins[1])
        elif ins[0] != "label":
            code, n = OPS[ins[0]]
            arg = labels[ins[1]] if len(ins) > 1 and isinstance(ins[1], str) else (ins[1:] or [0])[0]
            if n == "rel":
                off = arg - (pc + 2)
                assert -128 <= off < 128, ins
                out += bytes([code, off & 0xFF])
            else:
                out += bytes([code]) + arg.to_bytes(2, "little")[:n]
        pc += _size(ins)
    return bytes(out), labels


def build_rom() -> bytes:
    """iNES: 16-byte header (1 x 16 KB PRG, 1 x 8 KB CHR, mapper 0) + PRG + CHR."""
    code, labels = assemble(PROGRAM)
    prg = bytearray(16384)
    prg[:len(code)] = code
    for offset, name in ((0x3FFA, "nmi"), (0x3FFC, "reset"), (0x3FFE, "irq")):
        prg[offset:offset + 2] = labels[name].to_bytes(2, "little")
    chr_rom = bytearray(8192)
    for i, (lo, hi) in enumerate(PATTERNS):
        chr_rom[i * 16:i * 16 + 16] = bytes(lo + hi)
    return b"NES\x1a" + bytes([1, 1, 0, 0]) + bytes(8) + bytes(prg) + bytes(chr_rom)


@pytest.fixture
def rom(tmp_path: Path) -> Path:
    p = tmp_path / "Test Game (World) [!].nes"
    p.write_bytes(build_rom())
    return p


needs_emulator = pytest.mark.skipif(
    importlib.util.find_spec("cynes") is None,
    reason="the cynes emulator is not installed (pip install cynes==0.1.2); ROM capture untested")

FAST = dict(frames=120, frame_every=10)


def run(sources, out: Path, **kw):
    out.mkdir(parents=True, exist_ok=True)
    return scrape.run({"source": list(sources)}, scrape.Params(**{**FAST, **kw}), out)


def decode(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


# --------------------------------------------------------------------------- capture core
@needs_emulator
def test_frames_are_native_256x240(rom):
    frames = list(_capture.capture(rom, _capture.CaptureSettings(frames=60, every=10)))
    assert frames and all(decode(f.png).shape == (240, 256, 3) for f in frames)
    assert len(np.unique(decode(frames[-1].png).reshape(-1, 3), axis=0)) >= 4   # it rendered


@needs_emulator
def test_identical_frames_are_kept_once(rom):
    still = _capture.CaptureSettings(frames=120, every=10, buttons="120:none")
    assert len(list(_capture.capture(rom, still))) == 1


@needs_emulator
def test_button_presses_change_the_frames(rom):
    moving = _capture.CaptureSettings(frames=120, every=10, buttons="120:right")
    frames = list(_capture.capture(rom, moving))
    assert len(frames) == 12 and len({f.png for f in frames}) == 12


@needs_emulator
def test_capture_is_deterministic_and_seeded(rom):
    s = _capture.CaptureSettings(frames=120, every=10, seed=3)
    a = [f.png for f in _capture.capture(rom, s)]
    b = [f.png for f in _capture.capture(rom, s)]
    assert a == b
    assert _capture.input_schedule(s).tolist() != \
        _capture.input_schedule(_capture.CaptureSettings(frames=120, seed=4)).tolist()


# --------------------------------------------------------------------------- through scrape
@needs_emulator
def test_scrape_of_a_rom_records_its_hash_and_frames(rom, tmp_path):
    out = tmp_path / "out"
    s = run([rom], out, buttons="120:right")
    rows = scrape.load_sources(out)
    assert s["ok"] == len(rows) == 12
    prov = rows[0]["provenance"]
    assert prov["kind"] == "rom" and prov["game"] == "Test Game" and prov["game_from"] == "rom"
    assert prov["rom_sha256"] == hashlib.sha256(rom.read_bytes()).hexdigest()
    assert [r["provenance"]["frame"] for r in rows] == list(range(9, 120, 10))
    assert all((r["width"], r["height"]) == (256, 240) for r in rows)
    assert rows[0]["source"] == f"{rom}#frame=9"


@needs_emulator
def test_interrupted_capture_resumes_without_replaying(rom, tmp_path, monkeypatch):
    whole = tmp_path / "whole"
    run([rom], whole, buttons="120:right")
    out = tmp_path / "out"
    out.mkdir()
    steps = {"n": 0}
    real = _capture._emulator

    def counting(path):
        nes = real(path)

        class Counted:
            def __getattr__(self, name):
                return getattr(nes, name)

            def __setattr__(self, name, value):
                setattr(nes, name, value)

            def step(self):
                steps["n"] += 1
                if steps["n"] == 75 and not getattr(counting, "resumed", False):
                    raise KeyboardInterrupt
                return nes.step()

        return Counted()

    monkeypatch.setattr(_capture, "_emulator", counting)
    with pytest.raises(KeyboardInterrupt):
        run([rom], out, buttons="120:right")
    counting.resumed = True
    steps["n"] = 0
    run([rom], out, buttons="120:right")
    assert steps["n"] == 120 - 70          # went on from the state saved at frame 69
    assert (out / "sources.jsonl").read_bytes() == (whole / "sources.jsonl").read_bytes()
    assert not (out / scrape.FETCH_DIR).exists()


@needs_emulator
def test_cap_stops_the_capture_with_a_warning(rom, tmp_path, caplog):
    with caplog.at_level("WARNING", logger="tilegan.scrape"):
        s = run([rom], tmp_path / "out", buttons="120:right", max_images=2)
    assert s["ok"] == 2 and s["capped"] == {"rom_frames_not_played": 100}
    assert "2 reached: 100 ROM frame(s) not played" in caplog.text


# --------------------------------------------------------------------------- no emulator needed
def test_script_is_read_as_frames_and_buttons():
    assert _capture.parse_script("60:none, 30:start,120:right+a") == [(60, 0), (30, 0x10), (120, 0x81)]
    s = _capture.CaptureSettings(frames=7, buttons="2:a,3:none")
    assert _capture.input_schedule(s).tolist() == [0x80, 0x80, 0, 0, 0, 0x80, 0x80]


@pytest.mark.parametrize("bad", ["60:jump", "x:start", "0:a", "60"])
def test_bad_script_is_param_error(bad):
    with pytest.raises(ParamError, match="buttons"):
        scrape.Params(buttons=bad)


def test_not_a_rom_is_one_clear_error(tmp_path):
    bad = tmp_path / "game.nes"
    bad.write_bytes(b"hello")
    with pytest.raises(InputError, match=r"game.nes: not an iNES ROM"):
        run([bad], tmp_path / "out")


def test_rom_names_lose_their_tags():
    assert _capture.game_title(Path("Contra (USA) [!].nes")) == "Contra"
    assert _capture.game_title(Path("Mega Man 2.nes")) == "Mega Man 2"


def test_built_rom_has_an_ines_header_and_vectors():
    data = build_rom()
    assert data[:4] == b"NES\x1a" and len(data) == 16 + 16384 + 8192
    reset = int.from_bytes(data[16 + 0x3FFC:16 + 0x3FFE], "little")
    assert reset == 0xC000
    assert json.dumps(list(data[4:6])) == "[1, 1]"
