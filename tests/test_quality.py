"""tilesets.quality: per-tile measurements and the quality score."""
import numpy as np
import pytest

from tilesets.quality import cleanliness_key, quality, tile_stats


def test_quality_counts_colours_and_isolated_pixels():
    t = np.zeros((1, 4, 4, 3), np.uint8)
    t[0, 1, 1] = (255, 0, 0)                                        # one isolated pixel
    t[0, 3, 2:] = (0, 0, 255)                                       # a 2-pixel run: not isolated
    s = tile_stats(t)
    assert s.colours.tolist() == [3] and s.isolated.tolist() == [1]
    assert s.dominant[0] == pytest.approx(13 / 16)


def test_quality_prefers_structure_over_flat_and_clean_over_speckled():
    flat = np.zeros((8, 8, 3), np.uint8)
    stripes = flat.copy()
    stripes[::2] = 255
    speckled = stripes.copy()
    speckled[1, 1] = speckled[3, 5] = speckled[5, 2] = (255, 0, 0)
    q = quality(np.stack([flat, stripes, speckled]))
    assert q[1] > q[2] > q[0]


def test_quality_weights_change_the_order():
    many = np.arange(64 * 3, dtype=np.uint8).reshape(1, 8, 8, 3)   # 64 colours, all edges
    few = np.zeros((1, 8, 8, 3), np.uint8)
    few[0, :, 4:] = 255                                               # 2 colours, one edge
    both = np.concatenate([many, few])
    assert quality(both)[1] > quality(both)[0]
    assert quality(both, w_colours=0.0, w_isolated=0.0)[0] >= quality(both, w_colours=0.0,
                                                                      w_isolated=0.0)[1]


def test_cleanliness_orders_by_colours_then_isolated_pixels():
    t = np.zeros((3, 4, 4, 3), np.uint8)
    t[1, 1, 1] = 9                                                  # 2 colours, 1 isolated
    t[2, 0, :] = 9                                                  # 2 colours, none isolated
    key = cleanliness_key(tile_stats(t))
    assert np.argsort(key).tolist() == [0, 2, 1]
