"""Chapter 10's code: the all-ones and raw-CIS rows, the per-position CIS extension and the support-swap test, each
against plain loops or hand-built cases whose answer is known without the code under test."""
import math

import numpy as np
import pytest
import torch

from reference import cis_cosine_loop, cis_loop, minmax_loop
from sfam_lite import SFAM, AllOnes, RawCIS
from sfam_lite.position_cis import PositionCIS
from sfam_lite.sanity import PairSimilarity
from sfam_lite.similarity import (SwapDesign, explain_swaps, half_blur_drops, half_boxes, side_by_side,
                                  swap_composites, swap_design, swap_statistics)

F64 = torch.float64


def features(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def weighted_sum_loop(a, weights):
    """Σ_n w_n A^n_ij, pixel by pixel, channel by channel, row-major; ``a`` (N, h, w) as nested lists."""
    n, h, w = len(a), len(a[0]), len(a[0][0])
    return [sum(weights[c] * a[c][i][j] for c in range(n)) for i in range(h) for j in range(w)]


# --- the two rows -----------------------------------------------------------------------------------

def test_all_ones_is_the_plain_channel_sum_whatever_the_support():
    a_q, a_s = features(2, 5, 3, 4), features(2, 1, 5, 3, 4, seed=1)
    out = AllOnes(None).explain_features(a_q, a_s)
    other = AllOnes(None).explain_features(a_q, features(2, 1, 5, 3, 4, seed=7))
    for b in range(2):
        expected = weighted_sum_loop(a_q[b].tolist(), [1.0] * 5)
        assert out.query_maps[b].flatten().tolist() == pytest.approx(expected, abs=1e-12)
    assert torch.equal(out.query_maps, other.query_maps)
    assert torch.equal(out.weights, torch.ones(2, 5, dtype=F64))


@pytest.mark.parametrize("metric, loop", [("euclidean", cis_loop), ("cosine", cis_cosine_loop)])
def test_raw_cis_weights_and_map_follow_eq2_eq5_without_eq4(metric, loop):
    a_q, a_s = features(3, 6, 2, 3, seed=2), features(3, 1, 6, 2, 3, seed=3)
    out = RawCIS(None, metric=metric).explain_features(a_q, a_s)
    sfam = SFAM(None, metric=metric).explain_features(a_q, a_s)
    for b in range(3):
        v_q = [sum(sum(row) for row in ch) / 6 for ch in a_q[b].tolist()]
        v_s = [sum(sum(row) for row in ch) / 6 for ch in a_s[b, 0].tolist()]
        omega = loop(v_q, v_s)
        assert out.weights[b].tolist() == pytest.approx(omega, abs=1e-12)
        assert out.query_maps[b].flatten().tolist() == pytest.approx(weighted_sum_loop(a_q[b].tolist(), omega), abs=1e-12)
        assert sfam.weights[b].tolist() == pytest.approx(minmax_loop(omega), abs=1e-12)
    assert not torch.allclose(out.query_maps, sfam.query_maps)      # Eq. 4 does change the map


# --- the extension --------------------------------------------------------------------------------

def test_position_cis_weights_each_position_against_the_support_vector():
    a_q, a_s = features(2, 4, 2, 3, seed=4), features(2, 1, 4, 2, 3, seed=5)
    out = PositionCIS(None).explain_features(a_q, a_s)
    for b in range(2):
        q = a_q[b].tolist()
        v_s = [sum(sum(row) for row in ch) / 6 for ch in a_s[b, 0].tolist()]
        for i in range(2):
            for j in range(3):
                vec = [q[c][i][j] for c in range(4)]
                w = minmax_loop(cis_cosine_loop(vec, v_s))
                assert out.query_maps[b, i, j].item() == pytest.approx(sum(w[c] * vec[c] for c in range(4)), abs=1e-12)
    assert out.weights is None


def test_position_cis_suppresses_positions_that_do_not_match_the_support():
    """Channel 0 is the shared object, channel 1 the other, channel 2 a background both images share. Pooled over
    the two positions the query holds half of each object, so both object channels are equally far from the
    support's (d_0 = d_1): SFAM weights them alike and its map cannot prefer either position. Per position, the
    position of the other object disagrees with the support on both object channels, which lose their weight."""
    a_q = torch.tensor([[[[1.2, 0.0]], [[0.0, 1.2]], [[0.5, 0.5]]]], dtype=F64)      # (1, 3, 1, 2)
    a_s = torch.tensor([1.2, 0.0, 0.5], dtype=F64).view(1, 1, 3, 1, 1)
    pos = PositionCIS(None).explain_features(a_q, a_s).query_maps[0, 0]
    sfam = SFAM(None).explain_features(a_q, a_s).query_maps[0, 0]
    assert pos.tolist() == pytest.approx([1.7, 0.5])
    assert sfam[0] == pytest.approx(sfam[1])


# --- composites -----------------------------------------------------------------------------------

def test_side_by_side_puts_each_image_in_its_half_and_moves_its_box():
    h, w = 8, 12
    left = torch.zeros(1, 3, h, w, dtype=F64)
    right = torch.zeros(1, 3, h, w, dtype=F64)
    left[..., 2:6, 4:8] = 1.0                     # a box x=4, y=2, w=4, h=4
    right[..., 0:4, 0:12] = 2.0                   # a box x=0, y=0, w=12, h=4
    boxes_l = torch.tensor([[4.0, 2.0, 4.0, 4.0]])
    boxes_r = torch.tensor([[0.0, 0.0, 12.0, 4.0]])
    comp, bl, br = side_by_side(left, right, boxes_l, boxes_r)
    assert comp.shape == (1, 3, h, w)
    assert bl.tolist() == [[2.0, 2.0, 2.0, 4.0]] and br.tolist() == [[6.0, 0.0, 6.0, 4.0]]
    for value, box, cols in [(1.0, bl[0], slice(0, 6)), (2.0, br[0], slice(6, 12))]:
        half = torch.zeros(h, w, dtype=F64)
        half[:, cols] = comp[0, 0, :, cols]
        ys, xs = torch.nonzero(half > value / 2, as_tuple=True)
        seen = [xs.min().item(), ys.min().item(), xs.max().item() - xs.min().item() + 1,
                ys.max().item() - ys.min().item() + 1]
        assert seen == box.tolist()
    assert (comp[0, :, :, :6] <= 1.0).all() and (comp[0, :, :, 6:] != 1.0).all()


def test_half_boxes_split_every_pixel_once():
    left, right = half_boxes(2, (5, 7))
    assert left.tolist()[0] == [0, 0, 3, 5] and right.tolist()[0] == [3, 0, 4, 5]


def test_swap_design_draws_pairs_of_different_classes_with_other_supports():
    labels = np.repeat(np.arange(6), 4)
    d = swap_design(labels, 30, seed=1)
    assert len(d) == 30
    assert (labels[d.first] != labels[d.second]).all()
    assert (labels[d.first_support] == labels[d.first]).all() and (d.first_support != d.first).all()
    assert (labels[d.second_support] == labels[d.second]).all() and (d.second_support != d.second).all()
    assert len({(min(a, b), max(a, b)) for a, b in zip(d.first.tolist(), d.second.tolist())}) == 30
    again = swap_design(labels, 30, seed=1)
    assert torch.equal(again.first, d.first) and torch.equal(again.second_support, d.second_support)
    with pytest.raises(ValueError, match="two classes"):
        swap_design(np.array([0, 1, 2]), 1)


def test_swap_composites_order_and_supports():
    images = torch.arange(4, dtype=F64).view(4, 1, 1, 1).expand(4, 1, 2, 4).clone()
    d = SwapDesign(torch.tensor([0]), torch.tensor([1]), torch.tensor([2]), torch.tensor([3]))
    comp, lb, rb, sup = swap_composites(images, torch.tensor([[0.0, 0, 4, 2]] * 4), d)
    assert comp[0, 0, 0].tolist() == [0, 0, 1, 1] and comp[1, 0, 0].tolist() == [1, 1, 0, 0]
    assert sup[:, 0, 0, 0].tolist() == [2, 3]
    assert lb.tolist() == [[0, 0, 2, 2]] * 2 and rb.tolist() == [[2, 0, 2, 2]] * 2


# --- the measures -----------------------------------------------------------------------------------

def half_map(left_value, right_value, h=4, w=6):
    m = torch.empty(h, w, dtype=F64)
    m[:, : w // 2], m[:, w // 2:] = left_value, right_value
    return m


def stats_loop(maps):
    """share, swap effect and moves by loops, from the definitions."""
    shares, swaps, moves = [], [], []
    for p in range(maps.shape[0]):
        s_pair, w_pair, m_pair = [], [], []
        for order in range(2):
            left_share, left_peak = [], []
            for k in range(2):
                m = maps[p, order, k]
                lo, hi = m.min().item(), m.max().item()
                norm = [[(x - lo) / (hi - lo) if hi > lo else 1.0 for x in row] for row in m.tolist()]
                half = m.shape[1] // 2
                total = sum(sum(r) for r in norm)
                ls = sum(sum(r[:half]) for r in norm) / total
                left_share.append(ls)
                flat = m.flatten().tolist()
                left_peak.append(flat.index(max(flat)) % m.shape[1] < half)
                shared_left = order == k
                s_pair.append(ls if shared_left else 1 - ls)
            a_left = order == 0
            w_pair.append((left_share[0] - left_share[1]) if a_left else (left_share[1] - left_share[0]))
            m_pair.append(float(left_peak[0] != left_peak[1]))
        shares.append(sum(s_pair) / 4)
        swaps.append(sum(w_pair) / 2)
        moves.append(sum(m_pair) / 2)
    return shares, swaps, moves


def test_a_map_that_follows_the_support_scores_one_and_one_that_ignores_it_zero():
    follow = torch.stack([torch.stack([half_map(1, 0), half_map(0, 1)]),          # A left: support A, B
                          torch.stack([half_map(0, 1), half_map(1, 0)])])         # A right
    ignore = torch.stack([torch.stack([half_map(1, 0), half_map(1, 0)])] * 2)     # always the left half
    s = swap_statistics(torch.stack([follow, follow, follow]))
    assert s["share"] == (1.0, 0.0) and s["swap_effect"] == (1.0, 0.0) and s["moves"] == (1.0, 0.0)
    assert s["follows"] == (1.0, 0.0)
    t = swap_statistics(torch.stack([ignore, ignore]))
    assert t["share"] == (0.5, 0.0) and t["swap_effect"] == (0.0, 0.0) and t["moves"] == (0.0, 0.0)
    assert t["map_correlation"][0] == pytest.approx(1.0)


def test_swap_statistics_match_loops_on_random_maps():
    maps = features(7, 2, 2, 4, 6, seed=9)
    s = swap_statistics(maps)
    shares, swaps, moves = stats_loop(maps)
    assert s["per_pair"]["share"].tolist() == pytest.approx(shares, abs=1e-12)
    assert s["per_pair"]["swap_effect"].tolist() == pytest.approx(swaps, abs=1e-12)
    assert s["per_pair"]["moves"].tolist() == pytest.approx(moves)
    mean = sum(swaps) / 7
    sd = math.sqrt(sum((x - mean) ** 2 for x in swaps) / 6)
    assert s["swap_effect"] == pytest.approx((mean, 1.96 * sd / math.sqrt(7)))
    assert s["per_pair"]["swap_effect"].tolist() == pytest.approx([2 * x - 1 for x in shares], abs=1e-12)


def test_explain_swaps_pairs_each_composite_with_both_supports():
    a_c, a_s = features(4, 3, 2, 2, seed=10), features(4, 3, 2, 2, seed=11)
    maps = explain_swaps(SFAM(None), a_c, a_s, size=(2, 2), batch=3)
    for p in range(2):
        for order in range(2):
            for k in range(2):
                one = SFAM(None).explain_features(a_c[2 * p + order][None], a_s[2 * p + k][None, None], size=(2, 2))
                assert torch.allclose(maps[p, order, k].double(), one.query_maps[0].float().double())


def test_half_blur_drops_match_a_loop_over_combinations():
    """A toy similarity whose support says which half it reads (0: the left, 1: the right): the variance of that
    half, which blurring lowers. The drops are recomputed composite by composite and support by support."""
    from sfam_lite.sanity import blurred
    comp = torch.rand(4, 1, 12, 16, dtype=F64, generator=torch.Generator().manual_seed(0))
    supports = torch.tensor([0.0, 1.0, 1.0, 0.0], dtype=F64).view(4, 1, 1, 1).expand(4, 1, 12, 16)

    def score(q, code):
        return torch.where(code > 0.5, q[..., 8:].var(dim=(1, 2, 3)), q[..., :8].var(dim=(1, 2, 3)))
    sim = PairSimilarity(lambda s: s.mean(dim=(1, 2, 3)), score)
    out = half_blur_drops(sim, comp, supports, batch=3)
    soft = blurred(comp)
    for p in range(2):
        shared, other = [], []
        for order in range(2):
            c = comp[2 * p + order][None]
            left_blur, right_blur = c.clone(), c.clone()
            left_blur[..., :8], right_blur[..., 8:] = soft[2 * p + order, ..., :8], soft[2 * p + order, ..., 8:]
            for k in range(2):
                code = supports[2 * p + k].mean()[None]
                base = score(c, code).item()
                drop_left, drop_right = base - score(left_blur, code).item(), base - score(right_blur, code).item()
                shared_left = order == k
                shared.append(drop_left if shared_left else drop_right)
                other.append(drop_right if shared_left else drop_left)
        assert out["per_pair"]["drop_shared"][p].item() == pytest.approx(sum(shared) / 4, abs=1e-12)
        assert out["per_pair"]["drop_other"][p].item() == pytest.approx(sum(other) / 4, abs=1e-12)
        larger = sum(a > b for a, b in zip(shared, other)) / 4
        assert out["per_pair"]["shared_larger"][p].item() == pytest.approx(larger)


def test_half_change_drops_score_large_images_in_batches_of_a_fixed_number_of_pixels(monkeypatch):
    """At 96 px the combinations run memory.SCORED_COMBINATIONS_AT_96_PX at a time (each in three variants); at
    227 px only as many as hold the same pixels. Every drop is the one scored one at a time."""
    from sfam_lite import memory
    from sfam_lite.similarity import half_change_drops
    seen = []
    score = lambda q, code: seen.append(len(q)) or q.mean(dim=(1, 2, 3)) * code            # noqa: E731
    sim = PairSimilarity(lambda s: s.mean(dim=(1, 2, 3)), score)
    g = torch.Generator().manual_seed(1)
    at_96 = memory.SCORED_COMBINATIONS_AT_96_PX
    for side in (96, 227):
        per_batch = max(1, at_96 * 96 * 96 // (side * side))       # plain arithmetic, not images_per_batch
        comp, supports = torch.rand(100, 1, side, side, generator=g), torch.rand(100, 1, side, side, generator=g)
        left, right = comp * 0.5, comp * 0.25
        seen.clear()
        by_default = half_change_drops(sim, comp, supports, left, right)
        assert max(seen) == 3 * per_batch and sum(seen) == 3 * 2 * len(comp)
        one_by_one = half_change_drops(sim, comp, supports, left, right, batch=1)
        for key in ("drop_shared", "drop_other", "difference"):
            assert torch.allclose(by_default["per_pair"][key], one_by_one["per_pair"][key], atol=1e-6)
    # 384 images of FRN's ResNet-12 at 84 px at once took 3.1 GiB: at most 96 images (32 combinations) a batch
    assert 3 * at_96 <= 96
