"""Frames from NES ROMs you own, played in an emulator: scrape's ``.nes`` source.

Emulator: **cynes** (PyPI, MIT licence).  Chosen over nes-py because it is a headless emulator
with nothing else attached: manylinux wheels (no compiler, no SDL window, no Gym stack), a frame
as a numpy array of shape (240, 256, 3) at the console's native resolution after every
``step()``, a controller register we set per frame, and save states (``save()``/``load()``) that
let an interrupted capture continue where it stopped.  nes-py builds its C++ core from source and
brings Gym and OpenCV-style wrappers we would not use.  cynes supports the common mappers
(NROM, MMC1, UxROM, CNROM, MMC3, ...); a ROM it cannot run is a one-line error.

A capture plays ``frames`` frames with scripted or seeded random button presses and keeps one
frame in ``every``; identical frames are dropped here (scrape then stores each kept frame once
by content hash).  Everything is deterministic: the same ROM, settings and emulator version give
the same frames.

Resuming: every kept frame is written to the capture's work folder (``frames.jsonl`` + PNGs)
together with an emulator save state, so a rerun replays the kept frames from disk and goes on
emulating from the last saved frame.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np

from stages._common import InputError, ParamError, atomic_write_bytes, png_bytes

log = logging.getLogger("tilegan.scrape")

INES_MAGIC = b"NES\x1a"
NATIVE = (240, 256)   # (height, width) of an NES frame
#: controller bits (cynes: bit 0 right ... bit 7 A, player 1 in the low byte)
BUTTONS = {"none": 0x00, "right": 0x01, "left": 0x02, "down": 0x04, "up": 0x08,
           "start": 0x10, "select": 0x20, "b": 0x40, "a": 0x80}


@dataclass(frozen=True)
class CaptureSettings:
    """How to play a ROM: ``frames`` emulated, one kept in ``every``, with ``buttons``
    (``"random"`` presses drawn from ``seed``, or a script ``"60:none,30:start,120:right+a"``
    of frames:buttons steps, repeated to the end)."""

    frames: int = 600
    every: int = 30
    seed: int = 0
    buttons: str = "random"

    @classmethod
    def from_params(cls, p: Any) -> "CaptureSettings":
        return cls(frames=p.frames, every=p.frame_every, seed=p.seed, buttons=p.buttons)


def parse_script(text: str) -> list[tuple[int, int]]:
    """``"60:none,30:start,120:right+a"`` -> ``[(60, 0x00), (30, 0x10), (120, 0x81)]``.

    Raises :class:`ParamError` naming the step that does not parse.
    """
    steps = []
    for part in (s.strip() for s in text.split(",")):
        m = re.fullmatch(r"(\d+)\s*:\s*([a-z+ ]+)", part.lower())
        names = [n.strip() for n in m.group(2).split("+")] if m else []
        if not m or int(m.group(1)) < 1 or any(n not in BUTTONS for n in names):
            raise ParamError(f"scrape: buttons: cannot read {part!r}; write frames:buttons steps "
                             f"such as '60:none,30:start,120:right+a' (buttons: "
                             f"{', '.join(BUTTONS)}), or 'random'", field="buttons")
        mask = 0
        for n in names:
            mask |= BUTTONS[n]
        steps.append((int(m.group(1)), mask))
    return steps


def input_schedule(settings: CaptureSettings) -> np.ndarray:
    """The controller value for every frame, shape (frames,), uint8.

    Random: a button combination (directions, A, B, now and then Start) held for 4-40 frames,
    drawn from ``seed``.  A script repeats until ``frames`` frames are covered.
    """
    n = settings.frames
    out = np.zeros(n, np.uint8)
    if settings.buttons.strip().lower() == "random":
        rng = np.random.default_rng(settings.seed)
        pads = [0x00, 0x01, 0x02, 0x04, 0x08, 0x81, 0x41, 0x82, 0x80, 0x40, 0xC1, 0x10]
        weights = np.array([3, 6, 3, 1, 1, 4, 3, 2, 2, 2, 2, 1], float)
        i = 0
        while i < n:
            hold = int(rng.integers(4, 41))
            out[i:i + hold] = pads[int(rng.choice(len(pads), p=weights / weights.sum()))]
            i += hold
        return out
    steps = parse_script(settings.buttons)
    i = 0
    while i < n:
        for count, mask in steps:
            out[i:i + count] = mask
            i += count
            if i >= n:
                break
    return out


def read_rom(path: Path) -> bytes:
    """The ROM's bytes after checking the iNES header; :class:`InputError` names the file."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot read the ROM ({e.strerror or e})") from None
    if data[:4] != INES_MAGIC or len(data) < 16 + 16384:
        raise InputError(f"{path}: not an iNES ROM (a .nes file starts with 'NES' and 0x1A and "
                         f"holds at least 16 KB of program)")
    return data


def game_title(path: Path) -> str:
    """The game's name from a ROM file name: ``Contra (USA) [!].nes`` -> ``Contra``."""
    name = re.sub(r"\s*[\(\[][^\)\]]*[\)\]]", "", Path(path).stem).strip()
    return name or Path(path).stem


def _emulator(path: Path) -> Any:
    try:
        import cynes
    except ImportError:
        raise InputError(f"{path}: capturing from a ROM needs the cynes emulator; install it with "
                         f"`pip install cynes` (or `pip install tilegan[rom]`)") from None
    try:
        return cynes.NES(str(path))
    except Exception as e:  # noqa: BLE001 - cynes raises plain exceptions for unsupported ROMs
        raise InputError(f"{path}: the emulator cannot run this ROM ({e}); cynes runs the common "
                         f"mappers (NROM, MMC1, UxROM, CNROM, MMC3...)") from None


@dataclass(frozen=True)
class Frame:
    """One kept frame: its number in the run and its PNG bytes (native 256x240, RGB)."""

    index: int
    png: bytes


class CaptureState:
    """A capture's resumable state in ``work``: kept frames (``frames.jsonl`` + ``<n>.png``)
    and the emulator save state after the last of them (``state.npy``, ``state.json``)."""

    def __init__(self, work: Optional[Path]):
        self.work = work
        self.frames: list[Frame] = []
        self.next_frame = 0
        self.seen: set[str] = set()
        self.state: Optional[np.ndarray] = None
        if work is None:
            return
        work.mkdir(parents=True, exist_ok=True)
        meta = work / "state.json"
        try:
            info = json.loads(meta.read_text())
            state = np.load(work / "state.npy", allow_pickle=False)
        except (OSError, ValueError):
            return                          # nothing usable: start from frame 0
        frames = []
        for line in (work / "frames.jsonl").read_text().splitlines() if (work / "frames.jsonl").is_file() else []:
            try:
                row = json.loads(line)
                png = (work / f"{row['index']}.png").read_bytes()
            except (ValueError, KeyError, OSError):
                return
            if row["index"] < info["next_frame"]:
                frames.append(Frame(row["index"], png))
        self.frames = frames
        self.next_frame = int(info["next_frame"])
        self.seen = set(info.get("seen", []))
        self.state = state

    def keep(self, frame: Frame, pixels_hash: str, state: np.ndarray) -> None:
        self.frames.append(frame)
        self.seen.add(pixels_hash)
        self.next_frame = frame.index + 1
        if self.work is None:
            return
        atomic_write_bytes(self.work / f"{frame.index}.png", frame.png)
        with open(self.work / "frames.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"index": frame.index}) + "\n")
        import io

        buf = io.BytesIO()
        np.save(buf, state, allow_pickle=False)
        atomic_write_bytes(self.work / "state.npy", buf.getvalue())
        atomic_write_bytes(self.work / "state.json", json.dumps(
            {"next_frame": self.next_frame, "seen": sorted(self.seen)}).encode())


def capture(rom: Path, settings: CaptureSettings, *, work: Optional[Path] = None,
            stop: Callable[[], bool] = lambda: False) -> Iterator[Frame]:
    """Play ``rom`` and yield its distinct kept frames, in order.

    Parameters
    ----------
    rom : Path
        An iNES ROM file the user owns.
    settings : CaptureSettings
    work : Path, optional
        Resumable state; frames already kept there are yielded without emulating again.
    stop : callable
        Checked before emulating on; True ends the capture (a cap is full).

    Yields
    ------
    Frame
        ``png`` encodes an RGB image of shape (240, 256, 3), uint8 (deterministic bytes).
    """
    read_rom(rom)
    schedule = input_schedule(settings)
    state = CaptureState(work)
    yield from state.frames
    if state.next_frame >= settings.frames or stop():
        return
    nes = _emulator(rom)
    if state.state is not None:
        nes.load(state.state)
    for i in range(state.next_frame, settings.frames):
        nes.controller = int(schedule[i])
        pixels = nes.step()
        if nes.has_crashed:
            log.warning("%s: the emulated CPU crashed at frame %d; capture ends there", rom, i)
            return
        if i % settings.every != settings.every - 1:
            continue
        if pixels.shape[:2] != NATIVE:
            raise InputError(f"{rom}: the emulator gave a {pixels.shape} frame, not 240x256")
        digest = hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()
        if digest in state.seen:
            continue
        frame = Frame(i, png_bytes(np.array(pixels, np.uint8)))
        state.keep(frame, digest, nes.save())
        yield frame
        if stop():
            return
