"""Copy calls (tilesets/copies.py): each pair class gets the verdict a person would give."""
from __future__ import annotations

import numpy as np
import pytest

from tilesets.copies import (CopyCall, CopyKind, CopyRules, TrainingIndex, diff_mask,
                             evidence_sheet, judge_copies, low_structure)

T = 16
SKY = (92, 148, 252)
PIPE_GREEN = (0, 168, 0)
PURPLE = (120, 40, 160)


def art(seed: int, width: int = T) -> np.ndarray:
    """Pixel art (T, width, 3): 2x2-pixel clusters in four far-apart colours."""
    rng = np.random.default_rng(seed)
    palette = np.array([[20, 20, 30], [200, 60, 40], [240, 220, 120], [40, 120, 200]], np.uint8)
    idx = rng.integers(0, 4, (T // 2, width // 2)).repeat(2, 0).repeat(2, 1)
    return palette[idx]


def flat(colour) -> np.ndarray:
    return np.broadcast_to(np.array(colour, np.uint8), (T, T, 3)).copy()


def pipe() -> np.ndarray:
    t = flat(PIPE_GREEN)
    t[:, :2] = (0, 60, 0)
    t[:, 5:7] = (120, 230, 120)
    t[:, -2:] = (0, 60, 0)
    return t


@pytest.fixture(scope="module")
def training() -> np.ndarray:
    return np.stack([art(1), art(2), pipe(), flat(PURPLE), flat(SKY), art(3)])


def one(gen: np.ndarray, training: np.ndarray, *, flips: bool = True) -> CopyCall:
    return judge_copies(gen[None], training, flips=flips)[0]


def test_exact_copy(training):
    call = one(training[0], training)
    assert (call.kind, call.training, call.pixels_differing, call.flip) == (CopyKind.EXACT, 0, 0, 0)


def test_flipped_copy_is_exact_with_the_flip(training):
    call = one(training[1][:, ::-1], training)
    assert (call.kind, call.training, call.flip) == (CopyKind.EXACT, 1, 1)


def test_flipped_copy_is_not_a_copy_without_flips(training):
    assert one(training[1][:, ::-1], training, flips=False).kind == CopyKind.NOT_COPY


def test_palette_swap(training):
    src = training[0]
    swapped = src.copy()
    for old, new in zip(np.unique(src.reshape(-1, 3), axis=0),
                        [(250, 250, 250), (0, 80, 0), (90, 0, 90), (255, 128, 0)]):
        swapped[(src == old).all(-1)] = new
    call = one(swapped, training)
    assert (call.kind, call.training) == (CopyKind.PALETTE_SWAP, 0)
    assert call.colour_distance > 10


def test_one_pixel_edit_is_near(training):
    gen = training[2].copy()
    gen[8, 8] = (255, 0, 255)
    call = one(gen, training)
    assert (call.kind, call.training, call.pixels_differing) == (CopyKind.NEAR, 2, 1)


def test_invisible_colour_change_is_near_with_no_differing_pixel(training):
    gen = training[0].astype(int)
    gen[(training[0] == training[0][0, 0]).all(-1)] += 1          # one colour moved by 1 level
    call = one(gen.astype(np.uint8), training)
    assert (call.kind, call.pixels_differing) == (CopyKind.NEAR, 0)


def test_many_edited_pixels_are_not_a_copy(training):
    gen = training[0].copy()
    rng = np.random.default_rng(9)
    for p in rng.choice(T * T, 30, replace=False):
        gen[p // T, p % T] = 255 - gen[p // T, p % T]
    assert one(gen, training).kind == CopyKind.NOT_COPY


def test_one_pixel_shift_is_shifted_with_its_offset():
    strip = art(7, width=2 * T)                  # the art continues to the right
    training = strip[None, :, :T]
    gen = strip[:, 1:T + 1]                      # one pixel over: the new column is real art
    call = one(gen, training)
    assert (call.kind, call.shift, call.pixels_differing) == (CopyKind.SHIFTED, (1, 0), 0)
    assert call.compared == T * (T - 1)


def test_shift_beyond_max_shift_is_not_a_copy():
    strip = art(7, width=2 * T)
    gen = strip[:, 3:T + 3]
    assert judge_copies(gen[None], strip[None, :, :T], flips=True,
                        rules=CopyRules(max_shift=2))[0].kind == CopyKind.NOT_COPY


def test_flat_sky_is_not_a_copy_of_a_pipe_or_a_purple_tile(training):
    no_sky = training[[0, 1, 2, 3, 5]]
    call = one(flat(SKY), no_sky)
    assert call.kind == CopyKind.NOT_COPY and call.low_structure


def test_flat_sky_equal_to_a_training_sky_is_an_exact_low_structure_copy(training):
    call = one(flat(SKY), training)
    assert (call.kind, call.training, call.low_structure) == (CopyKind.EXACT, 4, True)


def test_near_flat_sky_is_compared_by_exact_pixels_only(training):
    gen = flat(SKY)
    gen[3, 4] = gen[11, 9] = (252, 252, 252)     # two stray pixels: would be NEAR if structured
    call = one(gen, training)
    assert call.low_structure and call.kind == CopyKind.NOT_COPY


def test_simple_split_in_other_colours_is_not_a_palette_swap():
    src = flat(SKY)
    src[8:] = (200, 76, 12)                      # sky over ground: one straight border
    gen = flat((10, 10, 10))
    gen[8:] = (250, 250, 250)
    assert one(gen, src[None]).kind == CopyKind.NOT_COPY


def test_unrelated_structured_tile_is_not_a_copy(training):
    assert one(art(99), training).kind == CopyKind.NOT_COPY


def test_transparent_pixels_never_match_black():
    src = art(4)
    src[:4] = 0                                  # black band in the training tile
    gen = np.concatenate([src, np.full((T, T, 1), 255, np.uint8)], -1)
    gen[:4] = 0                                  # transparent band in the generated tile
    call = judge_copies(gen[None], src[None], flips=True)[0]
    assert call.kind != CopyKind.EXACT and call.pixels_differing >= 4 * T


def test_low_structure_rule():
    lone = flat(SKY)
    lone[5, 5] = (0, 0, 0)
    out = low_structure(np.stack([flat(SKY), lone, art(1), pipe()]))
    assert out.tolist() == [True, True, False, False]


def test_a_copy_is_found_among_many_training_tiles():
    rng = np.random.default_rng(0)
    palette = rng.integers(0, 256, (16, 3)).astype(np.uint8)
    many = palette[rng.integers(0, 16, (20000, T // 2, T // 2))].repeat(2, 1).repeat(2, 2)
    many[12345] = art(5)
    gen = art(5)
    gen[0, 0] = (255, 255, 255)
    call = judge_copies(gen[None], many, flips=True)[0]
    assert (call.kind, call.training) == (CopyKind.NEAR, 12345)


def test_index_reused_gives_the_same_calls(training):
    gens = np.stack([training[0], art(99), flat(SKY)])
    index = TrainingIndex(training, flips=True)
    assert judge_copies(gens, flips=True, index=index) == judge_copies(gens, training, flips=True)


def test_index_flips_must_match(training):
    with pytest.raises(ValueError, match="flips"):
        judge_copies(training[:1], flips=False, index=TrainingIndex(training, flips=True))


def test_tile_sizes_must_match(training):
    with pytest.raises(ValueError, match="8x8"):
        judge_copies(np.zeros((1, 8, 8, 3), np.uint8), training, flips=True)


def test_no_training_tiles_means_no_copies():
    calls = judge_copies(art(1)[None], np.zeros((0, T, T, 3), np.uint8), flips=True)
    assert calls[0].kind == CopyKind.NOT_COPY and calls[0].training == -1


def test_diff_mask_marks_the_edited_pixel(training):
    gen = training[2].copy()
    gen[3, 11] = (255, 0, 255)
    call = one(gen, training)
    mask = diff_mask(call, gen[None], training)
    assert mask.sum() == 1 and mask[3, 11]


def test_evidence_sheet_has_one_row_per_call_at_three_times(training):
    gen = np.stack([training[0], training[1][:, ::-1]])
    calls = judge_copies(gen, training, flips=True)
    one_row = evidence_sheet(calls[:1], gen, training, scale=3)
    two_rows = evidence_sheet(calls, gen, training, scale=3)
    assert one_row.dtype == np.uint8 and one_row.shape[2] == 3
    assert two_rows.shape[0] - one_row.shape[0] == 3 * T + 6
    # the generated tile appears at 3x in the first column
    assert (two_rows[22:22 + 3 * T:3, 6:6 + 3 * T:3] == gen[0]).all()
