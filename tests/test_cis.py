"""The CIS equations (Eq. 1, 2, 4, 5, 7) against loop references and their mathematical properties."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from reference import cis_cosine_loop, cis_loop, minmax_loop
from sfam_lite import cis, maps

F64 = torch.float64


def vectors(n_min=2, n_max=40, lo=-5.0, hi=5.0):
    """Pairs of equal-length float64 vectors whose difference is not all zero."""
    elems = st.floats(lo, hi, allow_nan=False, allow_infinity=False, width=64)
    return st.integers(n_min, n_max).flatmap(
        lambda n: st.tuples(arrays(np.float64, n, elements=elems), arrays(np.float64, n, elements=elems))
    ).filter(lambda p: np.sum((p[0] - p[1]) ** 2) > 1e-6)


def t(x):
    return torch.as_tensor(np.asarray(x), dtype=F64)


@pytest.mark.parametrize("seed", range(5))
def test_euclidean_matches_loop(seed):
    g = torch.Generator().manual_seed(seed)
    vq, vs = torch.randn(2, 37, generator=g, dtype=F64)
    got = cis.contribution_scores(vq, vs, "euclidean")
    assert torch.allclose(got, t(cis_loop(vq.tolist(), vs.tolist())), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("seed", range(5))
def test_cosine_matches_loop(seed):
    g = torch.Generator().manual_seed(seed)
    vq, vs = torch.rand(2, 64, generator=g, dtype=F64)
    got = cis.contribution_scores(vq, vs, "cosine")
    assert torch.allclose(got, t(cis_cosine_loop(vq.tolist(), vs.tolist())), rtol=1e-10, atol=1e-14)


def test_batched_equals_row_by_row():
    g = torch.Generator().manual_seed(0)
    vq, vs = torch.randn(6, 20, generator=g, dtype=F64), torch.randn(6, 20, generator=g, dtype=F64)
    for metric, ref in (("euclidean", cis_loop), ("cosine", cis_cosine_loop)):
        got = cis.contribution_scores(vq, vs, metric)
        want = torch.stack([t(ref(a.tolist(), b.tolist())) for a, b in zip(vq, vs)])
        assert got.shape == (6, 20)
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-14)


def test_single_support_vector_broadcasts_over_batch():
    g = torch.Generator().manual_seed(1)
    vq, vs = torch.randn(4, 10, generator=g, dtype=F64), torch.randn(10, generator=g, dtype=F64)
    got = cis.contribution_scores(vq, vs)
    want = torch.stack([t(cis_loop(a.tolist(), vs.tolist())) for a in vq])
    assert torch.allclose(got, want, rtol=1e-12)


def test_normalize_matches_loop():
    w = torch.tensor([[0.3, -1.0, 2.5, 0.0], [5.0, 4.0, 3.0, 7.0]], dtype=F64)
    got = cis.normalize_scores(w)
    for row, g in zip(w, got):
        assert torch.allclose(g, t(minmax_loop(row.tolist())), rtol=0, atol=1e-15)


def test_support_prototype_is_mean_of_k_vectors():
    feats = torch.arange(24, dtype=F64).reshape(2, 3, 4)  # B=2, K=3, N=4
    want = torch.stack([t([sum(feats[b, k, n].item() for k in range(3)) / 3 for n in range(4)]) for b in range(2)])
    assert torch.equal(cis.support_prototype(feats), want)
    assert torch.equal(cis.support_prototype(feats[0, :1]), feats[0, 0])  # K = 1 is the vector itself


# --- properties (hypothesis) -------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(vectors(), st.sampled_from(["euclidean", "cosine"]))
def test_scores_sum_to_one_and_are_bounded(pair, metric):
    vq, vs = map(t, pair)
    if metric == "cosine" and (vq.norm() == 0 or vs.norm() == 0):
        return
    w = cis.contribution_scores(vq, vs, metric)
    n = w.shape[-1]
    assert math.isclose(w.sum().item(), 1.0, rel_tol=0, abs_tol=1e-12)
    assert (w >= -1e-15).all() and (w <= 1 / (n - 1) + 1e-15).all()


@settings(max_examples=200, deadline=None)
@given(vectors())
def test_normalized_scores_depend_only_on_channel_differences(pair):
    """Norm(ω_n) = (max d − d_n) / (max d − min d): N and D drop out."""
    vq, vs = map(t, pair)
    d = (vq - vs) ** 2
    if (d.max() - d.min()) < 1e-6 * d.max():
        return  # all channels (nearly) equally close: covered by the degenerate-case tests
    got = cis.normalize_scores(cis.contribution_scores(vq, vs))
    want = (d.max() - d) / (d.max() - d.min())
    assert torch.allclose(got, want, rtol=0, atol=1e-9)


@settings(max_examples=100, deadline=None)
@given(vectors(), st.randoms(use_true_random=False), st.sampled_from(["euclidean", "cosine"]))
def test_permutation_equivariance(pair, rnd, metric):
    vq, vs = map(t, pair)
    perm = list(range(vq.numel()))
    rnd.shuffle(perm)
    perm = torch.tensor(perm)
    w = cis.contribution_scores(vq, vs, metric)
    w_perm = cis.contribution_scores(vq[perm], vs[perm], metric)
    assert torch.allclose(w_perm, w[perm], rtol=1e-12, atol=1e-15)


def not_parallel(p) -> bool:
    """The cosine D = 2 - 2cos (Eq. 5) is more than rounding noise: the normalised vectors differ."""
    q, s = p[0] / np.linalg.norm(p[0]), p[1] / np.linalg.norm(p[1])
    return np.sum((q - s) ** 2) > 1e-6


@settings(max_examples=100, deadline=None)
@given(vectors(lo=0.01, hi=5.0).filter(not_parallel), st.floats(1e-3, 1e3), st.floats(1e-3, 1e3))
def test_cosine_invariant_to_positive_rescaling(pair, a, b):
    vq, vs = map(t, pair)
    w = cis.contribution_scores(vq, vs, "cosine")
    assert torch.allclose(cis.contribution_scores(a * vq, vs, "cosine"), w, rtol=1e-9, atol=1e-13)
    assert torch.allclose(cis.contribution_scores(vq, b * vs, "cosine"), w, rtol=1e-9, atol=1e-13)


def test_euclidean_is_not_scale_invariant_in_general():
    """The contrast to the cosine property: rescaling one vector changes Eq. 2's weights."""
    vq, vs = torch.tensor([1.0, 2.0, 3.0], dtype=F64), torch.tensor([1.5, 1.0, 3.5], dtype=F64)
    assert not torch.allclose(cis.contribution_scores(2 * vq, vs), cis.contribution_scores(vq, vs))


# --- Eq. 7 --------------------------------------------------------------------------------------

def eq5_denominator_identity(vq, vs):
    q, s = vq / vq.norm(), vs / vs.norm()
    return ((q - s) ** 2).sum(), 2 - 2 * (q * s).sum()


@pytest.mark.parametrize("seed", range(10))
def test_corrected_eq7_is_exact_and_printed_eq7_is_not(seed):
    g = torch.Generator().manual_seed(seed)
    vq, vs = torch.randn(2, 64, generator=g, dtype=F64)
    eq5 = cis.contribution_scores(vq, vs, "cosine")
    corrected = cis.cosine_scores_eq7(vq, vs)
    printed = cis.cosine_scores_eq7(vq, vs, printed=True)
    assert (corrected - eq5).abs().max() < 1e-10
    assert (printed - eq5).abs().max() > 1e-6
    # the printed form misses exactly half of the product term: the gap is v̂q v̂s / ((N-1)(2-2cos))
    q, s = vq / vq.norm(), vs / vs.norm()
    gap = q * s / (63 * (2 - 2 * (q * s).sum()))
    assert torch.allclose(eq5 - printed, gap, rtol=1e-9, atol=1e-15)
    d, two_minus_two_cos = eq5_denominator_identity(vq, vs)
    assert math.isclose(d.item(), two_minus_two_cos.item(), rel_tol=1e-12)


def test_eq7_refuses_parallel_vectors():
    v = torch.tensor([1.0, 2.0, 3.0], dtype=F64)
    with pytest.raises(ValueError, match="parallel"):
        cis.cosine_scores_eq7(v, 3 * v)


# --- degenerate inputs: defined values, never NaN -----------------------------------------------

@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_identical_vectors_give_uniform_scores(metric):
    v = torch.tensor([[0.5, 1.0, 2.0, 0.0]])
    w = cis.contribution_scores(v, v.clone(), metric)
    assert torch.equal(w, torch.full_like(w, 0.25))
    assert torch.equal(cis.normalize_scores(w), torch.ones_like(w))


VECTORS = [[0.5, 1.0, 2.0], [0.3, 0.0, 1.7, 2.2, 0.9],
           torch.rand(64, generator=torch.Generator().manual_seed(0), dtype=F64).tolist()]


def check_scale_copy_is_the_vector_itself(vector, factor):
    """A support vector that is a positive multiple of the query's is the query after L2 normalisation, so Eq. 5
    must give what identical vectors give: ω = 1/N for every channel, all-ones weights after Eq. 4, and the same
    SFAM map as the query explained against itself. Tolerance: 1/N to a few ulps (4e-16)."""
    v = torch.tensor(vector, dtype=F64)
    n = v.numel()
    w = cis.contribution_scores(v, factor * v, "cosine")
    assert torch.allclose(w, torch.full((n,), 1 / n, dtype=F64), rtol=0, atol=4e-16), (factor, w)
    assert torch.equal(cis.normalize_scores(w), torch.ones(n, dtype=F64))
    fmap = torch.rand(n, 4, 5, generator=torch.Generator().manual_seed(n), dtype=F64)
    itself = maps.sfam_map(fmap, cis.normalize_scores(cis.contribution_scores(v, v, "cosine")))
    copy = maps.sfam_map(fmap, cis.normalize_scores(w))
    assert torch.allclose(maps.minmax_normalize(copy), maps.minmax_normalize(itself), rtol=0, atol=1e-15)


@pytest.mark.parametrize("factor", [4.0, 0.25, 1.0, 2.0 ** 20])
@pytest.mark.parametrize("vector", VECTORS)
def test_cosine_scale_copies_are_identical_after_normalisation(factor, vector):
    """Scale factors that are powers of two, for which L2 normalisation is exact in floating point."""
    check_scale_copy_is_the_vector_itself(vector, factor)


def test_cosine_scale_copies_by_any_factor_are_identical_after_normalisation():
    """The same promise for factors that are not powers of two. The two normalised vectors then differ in their
    last bits, so D is rounding noise (1.6e-32 for [0.5, 1, 2] and 3×); without the rounding floor of
    cis.contribution_scores, Eq. 2 divided the noise by itself: ω = [0.476, 0.405, 0.119], weights [1, 0.8, 0],
    a map made of nothing."""
    for vector in VECTORS:
        for factor in (3.0, 0.7, 1e-3, 10.0, 1.1, 123.456, 1 / 3, 5.0):
            check_scale_copy_is_the_vector_itself(vector, factor)


def test_equal_scores_normalise_to_ones():
    vq, vs = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 3.0, 4.0])  # every d_n = 1
    w = cis.contribution_scores(vq, vs)
    assert torch.equal(cis.normalize_scores(w), torch.ones(3))


def test_zero_vector_in_cosine_variant_is_defined():
    """The defined value: the zero vector stays zero, so d_n = ŝ_n², D = 1 and ω_n = (1 − ŝ_n²) / (N − 1)."""
    vq, vs = torch.zeros(5), torch.tensor([1.0, 0.0, 2.0, 0.5, 0.0])
    w = cis.contribution_scores(vq, vs, "cosine")
    norm = math.sqrt(sum(x * x for x in vs.tolist()))
    s = [x / norm for x in vs.tolist()]
    want = torch.tensor([(1 - x * x) / 4 for x in s])
    assert torch.allclose(w, want, rtol=0, atol=1e-7)      # float32: a few ulps of values ≤ 0.25
    assert torch.equal(cis.contribution_scores(vs, vq, "cosine"), w)   # symmetric in its arguments
    both_zero = cis.contribution_scores(torch.zeros(5), torch.zeros(5), "cosine")
    assert torch.equal(both_zero, torch.full((5,), 0.2))


def test_mixed_batch_of_degenerate_and_regular_rows():
    vq = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]], dtype=F64)
    vs = torch.tensor([[1.0, 2.0, 3.0], [0.0, 2.0, 5.0]], dtype=F64)
    w = cis.contribution_scores(vq, vs)
    assert torch.equal(w[0], torch.full((3,), 1 / 3, dtype=F64))
    assert torch.allclose(w[1], t(cis_loop([1.0, 2.0, 3.0], [0.0, 2.0, 5.0])))


# --- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_input_is_refused(bad):
    v = torch.tensor([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="non-finite"):
        cis.contribution_scores(v, torch.tensor([1.0, bad, 0.0]))
    with pytest.raises(ValueError, match="non-finite"):
        cis.normalize_scores(torch.tensor([1.0, bad]))
    with pytest.raises(ValueError, match="non-finite"):
        cis.support_prototype(torch.tensor([[1.0, bad]]))


def test_mismatched_channels_are_refused():
    with pytest.raises(ValueError, match="channels"):
        cis.contribution_scores(torch.ones(4), torch.ones(5))


def test_mismatched_batches_are_refused():
    with pytest.raises(ValueError, match="batch size"):
        cis.contribution_scores(torch.rand(3, 4), torch.rand(2, 4))


@pytest.mark.parametrize("shape", [(), (2, 3, 4)])
def test_wrong_rank_is_refused(shape):
    with pytest.raises(ValueError, match="shape"):
        cis.contribution_scores(torch.ones(shape), torch.ones(shape))


def test_single_channel_is_refused():
    with pytest.raises(ValueError, match="at least 2"):
        cis.contribution_scores(torch.ones(1), torch.zeros(1))


def test_unknown_metric_is_refused():
    with pytest.raises(ValueError, match="unknown metric 'manhattan'"):
        cis.contribution_scores(torch.ones(3), torch.zeros(3), metric="manhattan")


def test_empty_support_set_is_refused():
    with pytest.raises(ValueError, match="K = 0"):
        cis.support_prototype(torch.empty(0, 8))


def test_non_tensor_is_refused():
    with pytest.raises(TypeError, match="torch.Tensor"):
        cis.contribution_scores([1.0, 2.0], torch.ones(2))
