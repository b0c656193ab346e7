"""sfam_lite._checks.check_finite: its shortcut (a finite sum proves every value finite) must not change what it
accepts and refuses."""
import pytest
import torch

from sfam_lite._checks import check_finite


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_one_non_finite_value_is_refused(bad, dtype):
    for position in (0, 517, 999):
        x = torch.rand(1000, dtype=torch.float64).to(dtype)
        x[position] = bad
        with pytest.raises(ValueError, match="1 non-finite value"):
            check_finite(x, "x")


def test_inf_and_minus_inf_together_are_refused():
    x = torch.zeros(10)
    x[2], x[7] = float("inf"), -float("inf")      # their sum is NaN; both must be counted
    with pytest.raises(ValueError, match="2 non-finite"):
        check_finite(x, "x")


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_finite_values_whose_sum_overflows_are_accepted(dtype):
    big = torch.finfo(dtype).max
    x = torch.full((64,), big, dtype=dtype)       # every value finite, the sum is not
    assert not torch.isfinite(x.sum())
    check_finite(x, "x")                          # no error
    check_finite(torch.empty(0), "empty")         # nothing to refuse
