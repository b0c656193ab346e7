"""Eq. 3 / Eq. 6 and the bilinear upsampling against loop references."""
import numpy as np
import pytest
import torch

from reference import bilinear_loop, map_loop
from sfam_lite import minmax_normalize, sfam_map

F64 = torch.float64


def test_map_matches_loop_batched():
    g = torch.Generator().manual_seed(0)
    fmap, w = torch.randn(3, 7, 4, 5, generator=g, dtype=F64), torch.rand(3, 7, generator=g, dtype=F64)
    got = sfam_map(fmap, w)
    assert got.shape == (3, 4, 5)
    for b in range(3):
        assert torch.allclose(got[b], torch.tensor(map_loop(fmap[b].tolist(), w[b].tolist()), dtype=F64))


def test_unbatched_input_gives_one_map():
    fmap, w = torch.rand(6, 3, 3, dtype=F64), torch.rand(6, dtype=F64)
    assert torch.allclose(sfam_map(fmap, w), torch.tensor(map_loop(fmap.tolist(), w.tolist()), dtype=F64))


@pytest.mark.parametrize("size", [(20, 20), (13, 29), (5, 5)])
def test_upsampling_matches_independent_bilinear(size):
    g = torch.Generator().manual_seed(1)
    fmap, w = torch.randn(2, 4, 5, 5, generator=g, dtype=F64), torch.rand(2, 4, generator=g, dtype=F64)
    got = sfam_map(fmap, w, size=size)
    assert got.shape == (2, *size)
    for b in range(2):
        small = map_loop(fmap[b].tolist(), w[b].tolist())
        assert torch.allclose(got[b], torch.tensor(bilinear_loop(small, *size), dtype=F64), atol=1e-12)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match=r"do not match"):
        sfam_map(torch.rand(2, 4, 3, 3), torch.rand(2, 5))
    with pytest.raises(ValueError, match=r"\(B, N, H, W\)"):
        sfam_map(torch.rand(4, 3), torch.rand(4))
    with pytest.raises(ValueError, match="non-finite"):
        sfam_map(torch.full((1, 2, 2, 2), float("nan")), torch.rand(1, 2))
    with pytest.raises(ValueError, match="positive integers"):
        sfam_map(torch.rand(1, 2, 2, 2), torch.rand(1, 2), size=(0, 4))


def test_minmax_normalize_per_map_and_constant_map():
    maps = torch.stack([torch.tensor([[1.0, 3.0], [2.0, 5.0]]), torch.full((2, 2), 7.0)])
    got = minmax_normalize(maps)
    assert torch.allclose(got[0], torch.tensor([[0.0, 0.5], [0.25, 1.0]]))
    assert torch.equal(got[1], torch.ones(2, 2))          # a constant map is equally salient everywhere
    np.testing.assert_array_equal(minmax_normalize(maps.numpy()), got.numpy())


def test_minmax_normalize_numpy_equals_torch_float64():
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(6, 3, 7, 5))
    maps[2, 1] = -4.0                                      # one constant map among others
    maps[4, 0, :, :2] = maps[4, 0].max()                  # ties at the maximum
    expected = minmax_normalize(torch.from_numpy(maps))
    got = minmax_normalize(maps)
    assert got.dtype == np.float64 and got.shape == maps.shape
    np.testing.assert_array_equal(got, expected.numpy())
    assert (got[2, 1] == 1).all() and got.min() == 0 and got.max() == 1
    for m in (maps.astype(np.float32), (maps * 3).astype(np.int64), maps > 0):   # any real dtype, in float64
        np.testing.assert_array_equal(minmax_normalize(m), minmax_normalize(torch.from_numpy(m.astype(np.float64))))


def test_minmax_normalize_keeps_nan():
    maps = torch.tensor([[[1.0, float("nan")], [2.0, 3.0]], [[5.0, 5.0], [5.0, 5.0]]])
    assert torch.isnan(minmax_normalize(maps)[0]).all()
    assert torch.equal(minmax_normalize(maps)[1], torch.ones(2, 2))
    assert np.isnan(minmax_normalize(maps.numpy())[0]).all()


def test_maps_and_eq4_share_one_minmax_rule():
    """A map flattened to a score vector normalises as Eq. 4 (cis.normalize_scores) normalises it; constant → ones."""
    from sfam_lite import cis
    maps = torch.randn(3, 4, 5, dtype=torch.float64)
    maps[1] = 2.5
    assert torch.equal(minmax_normalize(maps).flatten(-2), cis.normalize_scores(maps.flatten(-2)))
    assert torch.equal(minmax_normalize(maps)[1], torch.ones(4, 5, dtype=torch.float64))
