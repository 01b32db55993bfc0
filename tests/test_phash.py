"""tilesets.phash: bit-identical to imagehash (the oracle) on random and pixel-art-like tiles."""
import numpy as np
import pytest
from PIL import Image

imagehash = pytest.importorskip("imagehash")

from tilesets import phash as ph


def _pixel_art_tiles(rng, n, size=16, colours=4):
    """Few-colour tiles with flat, mirrored and blocky members (the hard cases for ties)."""
    pal = rng.integers(0, 256, (n, colours, 3), dtype=np.uint8)
    idx = rng.integers(0, colours, (n, size // 2, size // 2)).repeat(2, 1).repeat(2, 2)
    tiles = pal[np.arange(n)[:, None, None], idx]
    tiles[: n // 4] = tiles[: n // 4, :1, :1]                       # flat
    q = n // 4
    tiles[q:2 * q, :, size // 2:] = tiles[q:2 * q, :, size // 2 - 1::-1]   # mirrored
    return tiles


def _oracle(fn, tiles, **kw):
    return [str(fn(Image.fromarray(t), **kw)) for t in tiles]


@pytest.fixture(scope="module")
def tiles16():
    rng = np.random.default_rng(7)
    rand = rng.integers(0, 256, (800, 16, 16, 3), dtype=np.uint8)
    return np.concatenate([rand, _pixel_art_tiles(rng, 1200)])


def test_phash_matches_imagehash_on_2000_tiles(tiles16):
    assert ph.to_hex(ph.phash(tiles16)) == _oracle(imagehash.phash, tiles16)


def test_dhash_matches_imagehash_on_2000_tiles(tiles16):
    assert ph.to_hex(ph.dhash(tiles16)) == _oracle(imagehash.dhash, tiles16)


def test_ahash_matches_imagehash_on_2000_tiles(tiles16):
    assert ph.to_hex(ph.ahash(tiles16)) == _oracle(imagehash.average_hash, tiles16)


def test_phash_matches_imagehash_on_8px_tiles():
    rng = np.random.default_rng(3)
    tiles = np.concatenate([rng.integers(0, 256, (200, 8, 8, 3), dtype=np.uint8),
                            _pixel_art_tiles(rng, 200, size=8)])
    for fn, ref in ((ph.phash, imagehash.phash), (ph.dhash, imagehash.dhash),
                    (ph.ahash, imagehash.average_hash)):
        assert ph.to_hex(fn(tiles)) == _oracle(ref, tiles)


def test_rgba_alpha_is_ignored_like_pillow():
    rng = np.random.default_rng(5)
    rgba = rng.integers(0, 256, (50, 16, 16, 4), dtype=np.uint8)
    assert ph.to_hex(ph.phash(rgba)) == [str(imagehash.phash(Image.fromarray(t)))
                                         for t in rgba]


def test_other_hash_sizes_match_imagehash():
    rng = np.random.default_rng(9)
    tiles = rng.integers(0, 256, (100, 16, 16, 3), dtype=np.uint8)
    got = ph.to_hex(ph.phash(tiles, hash_size=4, highfreq_factor=2), bits=16)
    assert got == _oracle(imagehash.phash, tiles, hash_size=4, highfreq_factor=2)


def test_flat_tiles_of_every_grey_level_match():
    tiles = np.repeat(np.arange(256, dtype=np.uint8), 16 * 16 * 3).reshape(256, 16, 16, 3)
    assert ph.to_hex(ph.phash(tiles)) == _oracle(imagehash.phash, tiles)


def test_threads_and_chunks_do_not_change_results(tiles16):
    a = ph.phash(tiles16, workers=1, chunk=4096)
    b = ph.phash(tiles16, workers=2, chunk=97)
    assert np.array_equal(a, b)


def test_to_grey_is_pillows_convert_L():
    rgb = np.arange(16 * 16 * 3, dtype=np.uint32).reshape(1, 16, 16, 3).astype(np.uint8) * 7
    want = np.asarray(Image.fromarray(rgb[0]).convert("L"))
    assert np.array_equal(ph.to_grey(rgb)[0], want)


def test_pillow_resize_matches_pillow_lanczos():
    g = (np.arange(16 * 16, dtype=np.uint32).reshape(1, 16, 16) * 37 % 256).astype(np.uint8)
    for size in ((32, 32), (9, 8), (8, 8), (5, 11)):
        want = np.asarray(Image.fromarray(g[0]).resize(size, Image.LANCZOS))
        assert np.array_equal(ph.pillow_resize(g, *size)[0].astype(np.uint8), want), size


def test_empty_batch_gives_empty_hashes():
    assert ph.phash(np.zeros((0, 16, 16, 3), np.uint8)).shape == (0,)


def test_bad_dtype_is_rejected():
    with pytest.raises(TypeError, match="uint8"):
        ph.phash(np.zeros((1, 16, 16, 3), np.float32))


def test_hash_size_over_8_is_rejected():
    with pytest.raises(ValueError, match="hash_size"):
        ph.phash(np.zeros((1, 16, 16, 3), np.uint8), hash_size=9)


def test_hamming_counts_differing_bits():
    assert ph.hamming(np.uint64(0b1011), np.uint64(0b0001)) == 2


def test_unknown_method_is_rejected():
    with pytest.raises(ValueError, match="unknown hash"):
        ph.hash_tiles(np.zeros((1, 16, 16, 3), np.uint8), "whash")


def test_phash_matches_imagehash_on_real_example_tiles():
    from pathlib import Path

    screens = sorted((Path(__file__).resolve().parent.parent / "examples" / "screens").glob("*.png"))
    if not screens:
        pytest.skip("examples/screens is empty: no real tiles to check")
    parts = []
    for p in screens[::4]:
        a = np.asarray(Image.open(p).convert("RGB"))
        h, w = a.shape[0] // 16 * 16, a.shape[1] // 16 * 16
        parts.append(a[:h, :w].reshape(h // 16, 16, w // 16, 16, 3).transpose(0, 2, 1, 3, 4)
                     .reshape(-1, 16, 16, 3))
    tiles = np.concatenate(parts)
    flat = tiles.reshape(len(tiles), -1)
    _, first = np.unique(flat.view(np.dtype((np.void, flat.shape[1]))).ravel(), return_index=True)
    tiles = tiles[np.sort(first)][:1500]
    assert ph.to_hex(ph.phash(tiles)) == _oracle(imagehash.phash, tiles)


def test_greyscale_tiles_match_imagehash_on_L_images():
    rng = np.random.default_rng(11)
    grey = rng.integers(0, 256, (200, 16, 16), dtype=np.uint8)
    assert ph.to_hex(ph.phash(grey)) == _oracle(imagehash.phash, grey)


@pytest.mark.parametrize("side", [32, 64])
def test_larger_tiles_match_imagehash(side):
    rng = np.random.default_rng(side)
    tiles = np.concatenate([rng.integers(0, 256, (60, side, side, 3), dtype=np.uint8),
                            _pixel_art_tiles(rng, 40, size=side)])
    assert ph.to_hex(ph.phash(tiles)) == _oracle(imagehash.phash, tiles)
    assert ph.to_hex(ph.dhash(tiles)) == _oracle(imagehash.dhash, tiles)


def test_non_square_tiles_match_imagehash():
    rng = np.random.default_rng(2)
    tiles = rng.integers(0, 256, (50, 8, 16, 3), dtype=np.uint8)
    assert ph.to_hex(ph.phash(tiles)) == _oracle(imagehash.phash, tiles)
