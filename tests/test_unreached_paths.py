"""Code paths no other test reached: FRN's solver fallback and auxiliary loss, and the archive containment check
on its own (the interval behind every "± x" in the book is tested in test_mean_and_interval.py)."""
import numpy as np
import pytest
import torch

from data_download import DataError
from data_download.extract import _inside
from sfam_lite.models.frn import _solve_spd
from sfam_lite.train import _aux_loss

F64 = torch.float64


@pytest.fixture
def lu_calls(monkeypatch):
    """Counts the calls of torch.linalg.solve (the LU fallback of _solve_spd) while the test runs."""
    calls = []
    solve = torch.linalg.solve

    def counting(a, b, *args, **kwargs):
        calls.append(a.shape)
        return solve(a, b, *args, **kwargs)
    monkeypatch.setattr(torch.linalg, "solve", counting)
    return calls


def test_solve_spd_uses_cholesky_for_spd_and_lu_when_cholesky_fails(lu_calls):
    g = torch.Generator().manual_seed(0)
    b = torch.randn(2, 4, 3, generator=g, dtype=F64)
    spd = torch.randn(2, 4, 4, generator=g, dtype=F64)
    spd = spd @ spd.transpose(-1, -2) + 4 * torch.eye(4, dtype=F64)
    assert np.allclose(_solve_spd(spd, b).numpy(), np.linalg.solve(spd.numpy(), b.numpy()), rtol=1e-12, atol=1e-12)
    assert lu_calls == []                                   # SPD: Cholesky answered
    # symmetric, well conditioned (|eigenvalues| in [1, 3]) but indefinite: Cholesky fails, LU answers
    q = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=F64))[0]
    indefinite = (q @ torch.diag(torch.tensor([3.0, -1.0, 2.0, 1.0], dtype=F64)) @ q.T).expand(2, 4, 4)
    assert not bool((torch.linalg.cholesky_ex(indefinite)[1] == 0).all())
    got = _solve_spd(indefinite, b)
    assert len(lu_calls) == 1
    for a, rhs, x in zip(indefinite.numpy(), b.numpy(), got.numpy()):     # one system at a time, by least squares
        assert np.allclose(x, np.linalg.lstsq(a, rhs, rcond=None)[0], rtol=1e-12, atol=1e-12)


def test_solve_spd_falls_back_for_the_whole_batch_when_one_matrix_fails(lu_calls):
    """One non-PD matrix among SPD ones: every system of the batch is still solved (by LU)."""
    g = torch.Generator().manual_seed(1)
    a = torch.randn(3, 5, 5, generator=g, dtype=F64)
    a = a @ a.transpose(-1, -2) + 5 * torch.eye(5, dtype=F64)
    a[1] = torch.diag(torch.tensor([2.0, 1.0, -0.5, 3.0, 1.5], dtype=F64))
    b = torch.randn(3, 5, 2, generator=g, dtype=F64)
    got = _solve_spd(a, b)
    assert len(lu_calls) == 1
    assert np.allclose(got.numpy(), np.linalg.solve(a.numpy(), b.numpy()), rtol=1e-12, atol=1e-12)


def test_solve_spd_fallback_on_a_matrix_that_is_spd_only_in_exact_arithmetic(lu_calls):
    """FRN's own case: SᵀS + λI with fewer support rows than channels and λ below float32's resolution of SᵀS.
    Cholesky fails in float32 although the matrix is positive definite; the LU answer is then as good as float32
    allows: LU with partial pivoting is backward stable, so the residual ‖A X − B‖ is a small multiple of
    ε‖A‖‖X‖ (ε = 1.2e-7), which is what is checked (the forward error grows with the condition number, ~1e9 here)."""
    g = torch.Generator().manual_seed(0)
    support = torch.randn(2, 5, 32, generator=g)                   # (way, s, d) with s < d: SᵀS has rank 5
    gram = support.transpose(-1, -2) @ support
    a = gram + 1e-6 * torch.eye(32)
    assert not bool((torch.linalg.cholesky_ex(a)[1] == 0).all())   # fails in float32 ...
    s64 = support.double()                                          # ... the same matrix formed in float64 is SPD
    assert bool((torch.linalg.cholesky_ex(s64.transpose(-1, -2) @ s64 + 1e-6 * torch.eye(32, dtype=F64))[1] == 0).all())
    x = _solve_spd(a, gram)
    assert len(lu_calls) == 1 and x.dtype == torch.float32 and bool(torch.isfinite(x).all())
    for ai, bi, xi in zip(a.double().numpy(), gram.double().numpy(), x.double().numpy()):
        residual = np.linalg.norm(ai @ xi - bi)
        assert residual <= 32 * np.finfo(np.float32).eps * np.linalg.norm(ai) * np.linalg.norm(xi)
        # and the float64 least-squares solution of the same system meets the same bound
        exact = np.linalg.lstsq(ai, bi, rcond=None)[0]
        assert np.linalg.norm(ai @ exact - bi) <= residual + 1e-9


def aux_loop(support) -> float:
    """FRN's auxiliary loss, one product of feature entries at a time: all support features divided by the Frobenius
    norm of the whole support tensor, then Σ over class pairs a < b and rows i, j of (Σ_k Ŝ[a,i,k] Ŝ[b,j,k])²."""
    s = support.tolist()
    norm = sum(v * v for cls in s for row in cls for v in row) ** 0.5
    total = 0.0
    for a in range(len(s)):
        for b in range(a + 1, len(s)):
            for row_a in s[a]:
                for row_b in s[b]:
                    total += (sum(x * y for x, y in zip(row_a, row_b)) / norm ** 2) ** 2
    return total


def test_aux_loss_against_a_loop_over_class_pairs():
    g = torch.Generator().manual_seed(1)
    support = torch.randn(4, 6, 5, generator=g, dtype=F64)    # way, shot·r, d
    assert _aux_loss(support).item() == pytest.approx(aux_loop(support), rel=1e-12)


def test_aux_loss_is_zero_for_orthogonal_classes_and_penalises_shared_directions():
    """The loss is what it is meant to be: 0 when every class lives in channels of its own, positive and growing
    as two classes share directions, and unchanged by the overall scale of the features."""
    support = torch.zeros(3, 2, 6, dtype=F64)
    for c in range(3):
        support[c, :, 2 * c:2 * c + 2] = torch.tensor([[1.0, 2.0], [0.5, -1.0]], dtype=F64)
    assert _aux_loss(support).item() == 0.0
    shared = support.clone()
    shared[1, 0, 0] = 0.3                                      # class 1 leans a little into class 0's channels
    more = support.clone()
    more[1, 0, 0] = 3.0
    assert 0 < _aux_loss(shared).item() < _aux_loss(more).item()
    assert _aux_loss(7.5 * more).item() == pytest.approx(_aux_loss(more).item(), rel=1e-12)
    # all classes identical: each of the 3 pairs contributes ‖ŜŜᵀ‖² with Ŝ = S / (√3 ‖S‖)
    same = support[0].expand(3, 2, 6)
    s = support[0] / (3 ** 0.5 * support[0].norm())
    assert _aux_loss(same).item() == pytest.approx(3 * float((s @ s.T).square().sum()), rel=1e-12)


def test_inside_refuses_members_that_leave_the_folder(tmp_path):
    root = tmp_path.resolve()
    assert _inside(root, "CUB_200_2011/images/a.jpg") == root / "CUB_200_2011" / "images" / "a.jpg"
    assert _inside(root, ".") == root
    for name in ("../outside.txt", "a/../../outside.txt", "/etc/passwd", "a/b/../../../x"):
        with pytest.raises(DataError, match="outside"):
            _inside(root, name)


def test_inside_follows_symbolic_links_already_in_the_folder(tmp_path):
    """A name without '..' that passes the member check can still leave the folder through a link already there."""
    root, outside = (tmp_path / "root").resolve(), (tmp_path / "elsewhere").resolve()
    root.mkdir()
    outside.mkdir()
    (root / "images").mkdir()
    (root / "out").symlink_to(outside, target_is_directory=True)
    (root / "alias").symlink_to(root / "images", target_is_directory=True)
    with pytest.raises(DataError, match="'out/evil.txt' would be written outside"):
        _inside(root, "out/evil.txt")
    assert _inside(root, "alias/a.jpg") == root / "images" / "a.jpg"    # a link that stays inside is followed
