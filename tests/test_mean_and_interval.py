"""``metrics.mean_and_interval``, which makes every "± x" in the book: the documented normal interval
(1.96 · s / √n, s with divisor n − 1) against a plain loop and against scipy, its coverage, and its edge cases."""
import math

import numpy as np
import pytest
import torch
from scipy import stats

from sfam_lite.metrics import mean_and_interval


def interval_loop(values):
    """The documented formula, one value at a time in Python floats."""
    n = len(values)
    mean = math.fsum(values) / n
    s = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, 1.96 * s / math.sqrt(n)


SAMPLES = {
    "two": [0.25, 0.75],
    "accuracies": [0.2, 0.9, 0.4, 0.7, 0.65, 0.1, 0.8],
    "hits": [1.0] * 13 + [0.0] * 4,
    "wide": [-3.5e6, 1.0, 2.0e6, 7.25, -12.0],
    "random": np.random.default_rng(0).normal(0.6, 0.1, 600).tolist(),
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_against_a_plain_loop_and_scipys_normal_interval(name):
    values = SAMPLES[name]
    mean, half = mean_and_interval(torch.tensor(values, dtype=torch.float64))
    want_mean, want_half = interval_loop(values)
    assert mean == pytest.approx(want_mean, rel=1e-13, abs=1e-15)
    assert half == pytest.approx(want_half, rel=1e-12)
    # scipy's normal interval uses z = 1.95996…; the documented 1.96 is z rounded, 1.8e-5 relative away
    lo, hi = stats.norm.interval(0.95, loc=np.mean(values), scale=stats.sem(values))
    assert half == pytest.approx((hi - lo) / 2, rel=3e-5)
    assert mean == pytest.approx((hi + lo) / 2, rel=1e-12, abs=1e-12)


def test_the_normal_interval_is_narrower_than_students_t_as_documented():
    """The docstring's t quantiles, and the size of the difference the normal quantile makes."""
    assert round(stats.t.ppf(0.975, 1), 1) == 12.7 and round(stats.t.ppf(0.975, 29), 2) == 2.05
    values = SAMPLES["accuracies"]
    _, half = mean_and_interval(values)
    t_lo, t_hi = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert half == pytest.approx((t_hi - t_lo) / 2 * 1.96 / stats.t.ppf(0.975, len(values) - 1), rel=1e-12)
    assert half < (t_hi - t_lo) / 2


def test_the_interval_covers_the_true_mean_95_percent_of_the_time():
    """2,000 samples of 200 values from a known distribution (seeded): the share of intervals that contain the
    true mean lies within three binomial standard errors (±1.5 points) of 95 %."""
    rng = np.random.default_rng(1)
    draws = rng.exponential(0.5, size=(2000, 200))           # skewed, true mean 0.5
    covered = 0
    for row in draws:
        mean, half = mean_and_interval(torch.from_numpy(row))
        covered += mean - half <= 0.5 <= mean + half
    assert abs(covered / 2000 - 0.95) < 3 * math.sqrt(0.95 * 0.05 / 2000)


@pytest.mark.parametrize("values", [[0.1] * 7, [0.7] * 3, [1e8 + 0.1] * 1000, [2 / 3] * 2, [-4.0] * 5])
def test_identical_values_give_their_value_and_zero_width(values):
    """Without the special case the mean of seven 0.1 is 0.09999999999999999 and the half-width 1e-17."""
    mean, half = mean_and_interval(torch.tensor(values, dtype=torch.float64))
    assert mean == values[0] and half == 0.0


def test_inputs_other_than_float64_tensors():
    """Lists, numpy arrays, booleans (hits), integers, half precision and 2-D tensors give the float64 answer of
    the same values."""
    values = [1.0, 0.0, 1.0, 1.0, 0.0, 1.0]
    want = interval_loop(values)
    # a list of Python floats is float64: not rounded to float32 on the way (0.1 is not a float32 number)
    assert mean_and_interval([0.1, 0.2, 0.4]) == pytest.approx(interval_loop([0.1, 0.2, 0.4]), rel=1e-15)
    for given in (values, np.array(values), torch.tensor(values, dtype=torch.bool), torch.tensor([1, 0, 1, 1, 0, 1]),
                  torch.tensor(values, dtype=torch.float16), torch.tensor(values).reshape(2, 3)):
        assert mean_and_interval(given) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("values,message", [
    ([0.7], "holds 1 value"),
    ([], "holds 0 value"),
    ([0.7, math.nan, 0.2], "non-finite"),
    ([0.7, math.inf], "non-finite"),
    ([-math.inf, 0.2, 0.3], "non-finite"),
    ([1e308, 1.5e308], "overflows float64"),           # finite values whose sum overflows: no silent inf
])
def test_bad_values_are_refused_with_the_reason(values, message):
    with pytest.raises(ValueError, match=message):
        mean_and_interval(torch.tensor(values, dtype=torch.float64))


# -- clustered_interval: the sandwich interval when samples share a cluster ------------------------------------

def clustered_loop(values, clusters):
    """The documented sandwich formula, one cluster at a time in Python floats."""
    n = len(values)
    mean = math.fsum(values) / n
    sums = {}
    for v, c in zip(values, clusters):
        sums[c] = sums.get(c, 0.0) + (v - mean)
    g = len(sums)
    return mean, 1.96 * math.sqrt(g / (g - 1) * math.fsum(t * t for t in sums.values()) / n ** 2), g


def test_clustered_interval_matches_a_loop():
    from sfam_lite.metrics import clustered_interval
    rng = np.random.default_rng(3)
    values = rng.random(200)
    clusters = rng.integers(0, 23, size=200)
    got, want = clustered_interval(values, clusters), clustered_loop(values.tolist(), clusters.tolist())
    assert got[2] == want[2] == len(set(clusters.tolist()))
    assert got[0] == pytest.approx(want[0], rel=1e-12) and got[1] == pytest.approx(want[1], rel=1e-12)


def test_clustered_interval_with_one_sample_per_cluster_is_the_plain_interval():
    from sfam_lite.metrics import clustered_interval
    values = np.random.default_rng(4).random(57)
    mean, half, g = clustered_interval(values, np.arange(57))
    assert g == 57 and (mean, half) == pytest.approx(interval_loop(values.tolist()), rel=1e-12)


def test_clustered_interval_is_wider_when_a_sample_is_repeated_in_its_cluster():
    """The same values drawn twice each: counted as independent the interval shrinks by about √2; clustered by
    the value they repeat it stays what the distinct values give."""
    from sfam_lite.metrics import clustered_interval
    values = np.random.default_rng(5).random(80)
    twice, which = np.repeat(values, 2), np.repeat(np.arange(80), 2)
    _, naive = mean_and_interval(torch.from_numpy(twice))
    _, clustered, _ = clustered_interval(twice, which)
    _, alone, _ = clustered_interval(values, np.arange(80))
    assert clustered == pytest.approx(alone, rel=1e-12) and clustered > 1.3 * naive


def test_clustered_interval_refuses_bad_input():
    from sfam_lite.metrics import clustered_interval
    with pytest.raises(ValueError, match="one label per value"):
        clustered_interval(np.zeros(4), np.zeros(3))
    with pytest.raises(ValueError, match="at least 2"):
        clustered_interval(np.arange(4.0), np.zeros(4))
    with pytest.raises(ValueError, match="NaN|finite"):
        clustered_interval(np.array([0.0, np.nan, 1.0]), np.arange(3))


def test_a_reversed_array_is_averaged_like_its_copy():
    import numpy as np
    from sfam_lite.metrics import mean_and_interval
    values = np.array([0.2, 0.6, 0.7, 0.9])
    assert mean_and_interval(values[::-1]) == mean_and_interval(values[::-1].copy())
