"""Palette recognition (palettes/recognition.py): known tables, duplicates, fitted unknown
palettes, and what is not a palette."""
from __future__ import annotations

import numpy as np
import pytest

from palettes.data import nes_table_names
from palettes.io import get_palette
from palettes.recognition import (FIT_MAX_TOLERANCE, FIT_MEAN_TOLERANCE, MAX_COLOURS, MatchKind,
                                  image_colours, recognise, recognise_image)

#: colours of a Super Mario Bros.-like overworld frame (background and sprite palettes)
SMB_NUMBERS = [0x0F, 0x22, 0x29, 0x1A, 0x36, 0x17, 0x30, 0x21, 0x27, 0x16, 0x18, 0x12, 0x2A,
               0x01, 0x11, 0x3C, 0x07, 0x28, 0x38, 0x19, 0x00, 0x10, 0x2C, 0x15]


def _frame_numbers(size: int = 64) -> np.ndarray:
    """An index map of NES numbers: 16x16 areas of 3-4 SMB colours with single-pixel detail."""
    a = np.empty((size, size), np.uint8)
    for n, (y, x) in enumerate(np.ndindex(size // 16, size // 16)):
        cols = [SMB_NUMBERS[(3 * n + k) % len(SMB_NUMBERS)] for k in range(4)]
        blk = np.full((16, 16), cols[0], np.uint8)
        blk[4:12, 4:12] = cols[1]
        blk[6:10, 2:14] = cols[2]
        blk[1, 1] = cols[3]
        a[16 * y:16 * y + 16, 16 * x:16 * x + 16] = blk
    return a


@pytest.mark.parametrize("name", nes_table_names())
def test_frame_rendered_under_each_table_is_recognised_as_that_table(name):
    numbers = _frame_numbers()
    colours = get_palette(name).colours
    assert len(np.unique(colours[SMB_NUMBERS], axis=0)) == len(SMB_NUMBERS)   # all distinct here
    m = recognise_image(colours[numbers])
    assert m is not None and m.table == name and m.kind is MatchKind.known
    assert m.max_error == 0.0
    by_colour = {c.tobytes(): int(n) for c, n in zip(m.colours, m.numbers)}
    back = np.array([by_colour[colours[v].tobytes()] for v in numbers.ravel()]).reshape(numbers.shape)
    assert np.array_equal(back, numbers)


def test_issue_smb_colours_map_to_distinct_numbers():
    # sky/water and brick/shadow of issue 17: nearest-colour onto the FCEUX table merges each pair
    cols = np.array([[76, 154, 236], [120, 124, 236], [120, 60, 0], [152, 34, 32], [0, 0, 0],
                     [236, 238, 236]], np.uint8)
    m = recognise(cols)
    assert m is not None and m.table == "nes-olcnes"
    assert m.numbers.tolist() == [0x21, 0x22, 0x17, 0x16, 0x0F, 0x30]


def test_duplicate_blacks_become_0f_and_duplicates_are_reported():
    rgb = get_palette("nes-rp2c03").colours                   # $0B = $1A = #009200
    m = recognise(rgb[[0x0D, 0x1A, 0x21, 0x16, 0x30]])
    assert m is not None and m.table == "nes-rp2c03"
    by = dict(zip(m.numbers.tolist(), m.alike))
    assert 0x0F in by and {0x0D, 0x0E, 0x2E, 0x3F} <= set(by[0x0F])
    assert by[0x1A] == (0x0B, 0x1A)
    row = [r for r in m.as_json()["mapping"] if r["number"] == 0x1A][0]
    assert row["same_colour_in_table"] == [0x0B, 0x1A]


def test_prefer_wins_a_tie_between_tables_that_share_the_colours():
    cols = get_palette("nes-mesen").colours[[0x01, 0x11, 0x21]]   # equal in nes-mesen and nes-yuv
    assert recognise(cols).table == "nes-mesen"
    m = recognise(cols, prefer="nes-yuv")
    assert m.table == "nes-yuv" and "nes-mesen" in m.ties


def test_uniform_shift_is_fitted_one_to_one_with_its_error():
    pal = get_palette("nes").colours
    shifted = np.clip(pal[SMB_NUMBERS].astype(int) + (12, -10, 8), 0, 255).astype(np.uint8)
    m = recognise(shifted)
    assert m is not None and m.kind is MatchKind.fitted and m.table == "nes"
    assert m.numbers.tolist() == SMB_NUMBERS
    assert len(set(m.numbers.tolist())) == len(SMB_NUMBERS)
    assert m.mean_error < 1.0 and m.transform.offset == pytest.approx((12, -10, 8), abs=1.5)
    doc = m.as_json()
    assert doc["kind"] == "fitted" and doc["transform"] is not None and "mean_error" in doc


def test_darker_capture_is_fitted():
    pal = get_palette("nes-mesen").colours
    dim = np.round(pal[SMB_NUMBERS] * 0.88).astype(np.uint8)
    m = recognise(dim)
    assert m is not None and m.kind is MatchKind.fitted and m.table == "nes-mesen"
    assert m.numbers.tolist() == SMB_NUMBERS


def test_fit_is_not_tried_without_fit_or_with_few_colours():
    pal = get_palette("nes").colours
    shifted = np.clip(pal[SMB_NUMBERS].astype(int) + 12, 0, 255).astype(np.uint8)
    assert recognise(shifted, fit=False) is None
    assert recognise(shifted[:4]) is None


@pytest.mark.parametrize("name", ["pico8", "c64"])
def test_other_retro_palettes_are_not_nes(name):
    assert recognise(get_palette(name).colours) is None


def test_random_colour_sets_are_not_recognised(rng):
    for k in (8, 12, 24):
        for _ in range(10):
            cols = np.unique(rng.integers(0, 256, (k, 3)).astype(np.uint8), axis=0)
            assert recognise(cols) is None


def test_too_many_colours_is_not_a_palette_image(rng):
    img = rng.integers(0, 256, (64, 64, 3)).astype(np.uint8)
    assert image_colours(img) is None
    assert recognise_image(img) is None
    cols = np.unique(rng.integers(0, 256, (MAX_COLOURS + 1, 3)).astype(np.uint8), axis=0)
    assert recognise(cols) is None


def test_image_colours_counts_and_inverse_respect_the_mask():
    img = np.zeros((2, 3, 3), np.uint8)
    img[0, 1] = (255, 0, 0)
    img[1, 2] = (0, 0, 255)
    mask = np.ones((2, 3), bool)
    mask[1, 2] = False
    ic = image_colours(img, mask)
    assert ic.colours.tolist() == [[0, 0, 0], [255, 0, 0]]
    assert ic.counts.tolist() == [4, 1]
    assert ic.inverse.tolist() == [0, 1, 0, 0, 0]


def test_bad_colour_arrays_are_refused():
    with pytest.raises(TypeError):
        recognise(np.zeros((2, 3), np.int64))
    with pytest.raises(ValueError, match="distinct"):
        recognise(np.zeros((2, 3), np.uint8))


def test_tolerances_are_ordered():
    assert 0 < FIT_MEAN_TOLERANCE < FIT_MAX_TOLERANCE
