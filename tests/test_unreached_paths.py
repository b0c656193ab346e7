"""Code paths no other test reached: the interval behind every "± x" in the book, FRN's solver fallback and
auxiliary loss, and the archive containment check on its own."""
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from data_download import DataError
from data_download.extract import _inside
from sfam_lite.metrics import mean_and_interval
from sfam_lite.models.frn import _solve_spd
from sfam_lite.train import _aux_loss


def test_mean_and_interval_against_scipy():
    x = torch.tensor([0.2, 0.9, 0.4, 0.7, 0.65, 0.1, 0.8])
    mean, half = mean_and_interval(x)
    assert mean == pytest.approx(float(np.mean(x.numpy().astype(float))), abs=1e-12)
    assert half == pytest.approx(1.96 * stats.sem(x.numpy().astype(float)), rel=1e-12)


def test_solve_spd_falls_back_when_cholesky_fails():
    g = torch.Generator().manual_seed(0)
    b = torch.randn(2, 4, 3, generator=g, dtype=torch.float64)
    spd = torch.randn(2, 4, 4, generator=g, dtype=torch.float64)
    spd = spd @ spd.transpose(-1, -2) + 4 * torch.eye(4, dtype=torch.float64)
    indefinite = torch.diag_embed(torch.tensor([[3.0, -1.0, 2.0, 1.0]] * 2, dtype=torch.float64))
    for a in (spd, indefinite):     # the second has a negative eigenvalue: Cholesky fails, LU answers
        assert np.allclose(_solve_spd(a, b).numpy(), np.linalg.solve(a.numpy(), b.numpy()), atol=1e-10)
    assert not bool((torch.linalg.cholesky_ex(indefinite)[1] == 0).all())


def test_aux_loss_against_a_loop_over_class_pairs():
    g = torch.Generator().manual_seed(1)
    support = torch.randn(4, 6, 5, generator=g, dtype=torch.float64)    # way, shot·r, d
    s = support / torch.sqrt((support ** 2).sum())
    want = 0.0
    for a in range(4):
        for b in range(a + 1, 4):
            want += float(((s[a] @ s[b].T) ** 2).sum())
    assert _aux_loss(support).item() == pytest.approx(want, rel=1e-12)


def test_inside_refuses_members_that_leave_the_folder(tmp_path):
    root = tmp_path.resolve()
    assert _inside(root, "CUB_200_2011/images/a.jpg") == root / "CUB_200_2011" / "images" / "a.jpg"
    assert _inside(root, ".") == root
    for name in ("../outside.txt", "a/../../outside.txt", "/etc/passwd"):
        with pytest.raises(DataError, match="outside"):
            _inside(root, name)
