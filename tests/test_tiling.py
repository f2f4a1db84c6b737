import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mining.tiling import needs_tiling, stitch_max, tile_grid


def test_small_image_is_one_tile():
    assert tile_grid(100, 80, 256, 32) == [(0, 0, 100, 80)]
    assert not needs_tiling(256, 256, 256)
    assert needs_tiling(257, 10, 256)


def test_known_grid():
    # 1000 px with tiles of 400 overlapping by 100: steps of 300 -> 0, 300, 600 (flush at 1000)
    tiles = tile_grid(1000, 400, 400, 100)
    assert [t[0] for t in tiles] == [0, 300, 600]
    assert all(t[1] == 0 and t[2] == 400 and t[3] == 400 for t in tiles)


@given(h=st.integers(1, 3000), w=st.integers(1, 3000), tile=st.integers(16, 1024), frac=st.floats(0, 0.9))
def test_tiles_cover_image_inside_bounds_with_overlap(h, w, tile, frac):
    overlap = int(tile * frac)
    tiles = tile_grid(h, w, tile, overlap)
    cover = np.zeros((h, w), bool)
    for y, x, th, tw in tiles:
        assert 0 <= y and 0 <= x and y + th <= h and x + tw <= w
        assert th == min(tile, h) and tw == min(tile, w)
        cover[y : y + th, x : x + tw] = True
    assert cover.all()
    ys = sorted({t[0] for t in tiles})
    # neighbours overlap by at least `overlap` (the last one may overlap more)
    assert all(b - a <= tile - overlap for a, b in itertools.pairwise(ys))


@pytest.mark.parametrize("tile,overlap", [(0, 0), (-5, 0), (64, 64), (64, -1)])
def test_bad_parameters(tile, overlap):
    with pytest.raises(ValueError, match=r"tile_size|overlap"):
        tile_grid(100, 100, tile, overlap)


def test_stitch_max_rebuilds_map():
    rng = np.random.default_rng(0)
    full = rng.random((300, 500)).astype(np.float32)
    tiles = tile_grid(300, 500, 128, 32)
    maps = [full[y : y + h, x : x + w] for y, x, h, w in tiles]
    np.testing.assert_array_equal(stitch_max(maps, tiles, full.shape), full)
