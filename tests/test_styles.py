"""Tests for the style index (stages._styles): naming a sample's game from its pixels."""
from __future__ import annotations

import numpy as np
import pytest

from stages._styles import PER_STYLE, StyleIndex


def _games(n: int = 40, size: int = 32, seed: int = 0):
    """Patches of two games: "night" dark blue with light bricks, "dusk" orange with dark
    windows; each patch a random arrangement, so no two are equal."""
    rng = np.random.default_rng(seed)
    out, labels = [], []
    for i in range(n):
        g = i % 2
        base = np.array([20, 30, 90] if g == 0 else [230, 120, 40], np.uint8)
        mark = np.array([200, 190, 150] if g == 0 else [40, 10, 30], np.uint8)
        im = np.tile(base, (size, size, 1))
        for _ in range(6):
            y, x = rng.integers(0, size - 4, 2)
            im[y:y + 4, x:x + 8] = mark
        out.append(im)
        labels.append(g)
    return np.stack(out), np.array(labels)


def test_index_names_unseen_patches_by_their_game():
    patches, labels = _games()
    index = StyleIndex.build(patches, labels, ["night", "dusk"])
    fresh, truth = _games(20, seed=9)
    assert (index.classify(fresh) == truth).all()


def test_larger_images_are_judged_window_by_window():
    patches, labels = _games()
    index = StyleIndex.build(patches, labels, ["night", "dusk"])
    fresh, truth = _games(6, seed=3)
    wide = np.concatenate([fresh[0], fresh[2], fresh[4]], axis=1)[None]      # three nights
    assert index.classify(wide).tolist() == [0]
    odd = fresh[1][:30, :30][None]                                             # sides not x16
    assert index.classify(odd).tolist() == [1]


def test_index_keeps_a_bounded_even_pick_and_round_trips_through_a_checkpoint():
    import torch

    patches, labels = _games(2 * PER_STYLE + 20)
    index = StyleIndex.build(patches, labels, ["night", "dusk"])
    assert np.bincount(index.labels).tolist() == [PER_STYLE, PER_STYLE]
    back = StyleIndex.from_state(torch.load(_saved(index.to_state()), weights_only=True))
    assert back.names == index.names and np.array_equal(back.thumbs, index.thumbs)
    assert StyleIndex.from_state({"names": ["a"]}) is None                      # malformed
    assert StyleIndex.build(patches, np.zeros(len(patches)), ["one"]) is None   # one game


def _saved(state):
    import io

    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return buf
