"""Chapter 10's redrawn images and the measures that read them: the two-bird scenes in the support-swap layout,
the part swaps of sibling classes (sfam_lite.counterfactuals), the half-change drops, the part-level statistics
and the part-swap drops (sfam_lite.similarity), each against the dataset's own images, loops or hand-built cases."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from data_download import ResizeCropFlip, SyntheticCUB200, synthetic
from reference import minmax_loop
from sfam_lite import SFAM
from sfam_lite.counterfactuals import Redrawer
from sfam_lite.evaluation import eval_set
from sfam_lite.sanity import PairSimilarity, blurred
from sfam_lite.similarity import (SwapDesign, explain_against, half_blur_drops, half_change_drops, part_statistics,
                                  part_swap_drops, swap_design)
from sfam_lite.transforms import eval_transform, normalize

F64 = torch.float64
SIZE = 48


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    synthetic.generate(root, images_per_class=4, size=SIZE, num_classes=16, workers=1, progress=False)
    return root


def identity():
    """No resize, no crop: model pixels are the render's pixels (only the normalisation, which is undone below)."""
    return ResizeCropFlip(None, None, to_tensor=True, then=normalize())


def changed_columns(a, b):
    """Columns ``(W,)`` where two normalised images ``(C, H, W)`` differ by more than rounding."""
    return ((a - b).abs() > 1e-6).any(0).any(0)


# --- the redrawn images are the dataset's ---------------------------------------------------------------

@pytest.mark.parametrize("transform", [identity(), eval_transform(40, 44)], ids=["identity", "resize-crop"])
def test_redrawn_queries_are_the_test_sets_images(bench, transform):
    r = Redrawer(bench, "frn_test", transform)
    test = eval_set(SyntheticCUB200(bench, split="frn_test"), transform)
    design = r.sibling_design(10, seed=3)
    swaps = r.part_swaps(design)
    assert torch.equal(swaps.queries, test.images[design.query])
    assert torch.equal(r.labels, test.labels)


def test_sibling_design_pairs_each_query_with_its_class_and_the_class_one_part_apart(bench):
    r = Redrawer(bench, "frn_test", identity())
    d = r.sibling_design(12, seed=1)
    labels = r.labels
    assert len(set(d.query.tolist())) == 12
    assert (labels[d.own_support] == labels[d.query]).all() and (d.own_support != d.query).all()
    for q, s, part in zip(d.query.tolist(), d.sibling_support.tolist(), d.part):
        a, b = r.specs[int(labels[q])], r.specs[int(labels[s])]
        assert {k for k in synthetic.ATTRIBUTES if a[k] != b[k]} == {part}      # one part apart, that one
    again = r.sibling_design(12, seed=1)
    assert torch.equal(again.query, d.query) and torch.equal(again.sibling_support, d.sibling_support)
    with pytest.raises(ValueError, match="sibling"):
        r.sibling_design(17)                       # frn_test holds 16 images here


def test_part_masks_mark_where_the_swapped_query_differs(bench):
    r = Redrawer(bench, "frn_test", identity())
    d = r.sibling_design(16, seed=0)
    s = r.part_swaps(d)
    for k in range(16):
        mask = s.part_masks[k] > 0
        diff = ((s.queries[k] - s.swapped[k]).abs() > 1e-6).any(0)
        assert mask.any() and mask.float().mean() < 0.2
        # JPEG spreads a change over its 8x8 block: every changed pixel is in a block the mask touches
        blocks = torch.nn.functional.max_pool2d(mask[None].float(), 8)[0].repeat_interleave(8, 0).repeat_interleave(8, 1)
        assert not (diff & (blocks == 0)).any()
        x, y, w, h = s.boxes[k].tolist()
        inside = torch.zeros(SIZE, SIZE, dtype=torch.bool)
        inside[int(np.floor(y)):int(np.ceil(y + h)), int(np.floor(x)):int(np.ceil(x + w))] = True
        assert not mask[~inside].any()


def test_scenes_follow_the_swap_layout(bench):
    r = Redrawer(bench, "frn_test", identity())
    test = eval_set(SyntheticCUB200(bench, split="frn_test"), identity())
    design = swap_design(r.labels.numpy(), 3, seed=0)
    sc = r.scenes(design, test.images)
    assert sc.composites.shape == (6, 3, SIZE, SIZE) and sc.supports.shape == (6, 3, SIZE, SIZE)
    assert torch.equal(sc.supports[0::2], test.images[design.first_support])
    assert torch.equal(sc.supports[1::2], test.images[design.second_support])
    half = SIZE // 2
    for p in range(3):
        a, b = (r.specs[int(r.labels[i])] for i in (design.first[p], design.second[p]))
        for order, (left, right) in enumerate(((a, b), (b, a))):
            row = 2 * p + order
            t = synthetic.render_two(left, right, SIZE, *synthetic.scene_rngs(0, p))
            assert torch.equal(sc.composites[row], r.to_input([t.scene])[0])
            # the left bird's removal changes the left half only (JPEG blocks end at the midline), and back
            assert not changed_columns(sc.left_removed[row], sc.composites[row])[half:].any()
            assert changed_columns(sc.left_removed[row], sc.composites[row])[:half].any()
            assert not changed_columns(sc.right_removed[row], sc.composites[row])[:half].any()
            assert sc.left_boxes[row, 0] + sc.left_boxes[row, 2] <= half <= sc.right_boxes[row, 0]
            assert torch.allclose(sc.left_boxes[row], torch.as_tensor(t.box_a))


def test_redrawer_refuses_a_model_not_trained_on_the_generator():
    class Model:
        meta = {"name": "frn-cub"}
    with pytest.raises(ValueError, match="synthetic"):
        Redrawer.for_model(Model(), "frn")


# --- the model's drops ------------------------------------------------------------------------------------

def toy_similarity():
    """Its support says which half it reads (0: left, 1: right): the variance of that half."""
    def score(q, code):
        w = q.shape[-1] // 2
        return torch.where(code > 0.5, q[..., w:].var(dim=(1, 2, 3)), q[..., :w].var(dim=(1, 2, 3)))
    return PairSimilarity(lambda s: s.mean(dim=(1, 2, 3)), score), score


def test_half_change_drops_match_a_loop_and_blurring_is_one_such_change():
    g = torch.Generator().manual_seed(0)
    comp = torch.rand(6, 1, 8, 12, dtype=F64, generator=g)
    left_changed, right_changed = torch.rand(6, 1, 8, 12, dtype=F64, generator=g), comp.clone()
    right_changed[..., 6:] = 0.5 * right_changed[..., 6:]
    supports = torch.tensor([0.0, 1.0, 1.0, 0.0, 0.0, 1.0], dtype=F64).view(6, 1, 1, 1).expand(6, 1, 8, 12)
    sim, score = toy_similarity()
    out = half_change_drops(sim, comp, supports, left_changed, right_changed, batch=5)
    for p in range(3):
        shared, other = [], []
        for order in range(2):
            c = comp[2 * p + order][None]
            for k in range(2):
                code = supports[2 * p + k].mean()[None]
                base = score(c, code).item()
                drop_left = base - score(left_changed[2 * p + order][None], code).item()
                drop_right = base - score(right_changed[2 * p + order][None], code).item()
                shared.append(drop_left if order == k else drop_right)
                other.append(drop_right if order == k else drop_left)
        assert out["per_pair"]["drop_shared"][p].item() == pytest.approx(sum(shared) / 4, abs=1e-12)
        assert out["per_pair"]["drop_other"][p].item() == pytest.approx(sum(other) / 4, abs=1e-12)
    soft = blurred(comp)
    lb, rb = comp.clone(), comp.clone()
    lb[..., :6], rb[..., 6:] = soft[..., :6], soft[..., 6:]
    by_blur, by_change = half_blur_drops(sim, comp, supports), half_change_drops(sim, comp, supports, lb, rb)
    assert torch.equal(by_blur["per_pair"]["difference"], by_change["per_pair"]["difference"])
    with pytest.raises(ValueError, match="shape"):
        half_change_drops(sim, comp, supports, lb[:2], rb)


def test_part_swap_drops_match_a_loop():
    g = torch.Generator().manual_seed(1)
    q, swapped = torch.rand(5, 1, 4, 6, dtype=F64, generator=g), torch.rand(5, 1, 4, 6, dtype=F64, generator=g)
    supports = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0], dtype=F64).view(5, 1, 1, 1).expand(5, 1, 4, 6)
    sim, score = toy_similarity()
    out = part_swap_drops(sim, q, swapped, supports, batch=2)
    expected = [score(q[i][None], supports[i].mean()[None]).item()
                - score(swapped[i][None], supports[i].mean()[None]).item() for i in range(5)]
    assert out["per_query"]["drop"].tolist() == pytest.approx(expected, abs=1e-12)
    assert out["positive"][0] == pytest.approx(sum(e > 0 for e in expected) / 5)
    assert out["queries"] == 5


# --- the part-level measure -------------------------------------------------------------------------------

def part_share_loop(m, part, box):
    """Share of the min-max normalised map's mass in the box that lies on the part, pixel by pixel."""
    norm = minmax_loop(m.flatten().tolist())
    h, w = m.shape
    x, y, bw, bh = box
    num = den = 0.0
    for i in range(h):
        for j in range(w):
            if x <= j + 0.5 < x + bw and y <= i + 0.5 < y + bh:
                den += norm[i * w + j]
                num += norm[i * w + j] * part[i][j]
    return num / den


def test_part_statistics_match_a_loop():
    g = torch.Generator().manual_seed(2)
    maps = torch.rand(4, 2, 5, 7, dtype=F64, generator=g)
    parts = torch.rand(4, 5, 7, dtype=F64, generator=g)
    boxes = torch.tensor([[1.0, 1.0, 4.0, 3.0], [0.0, 0.0, 7.0, 5.0], [2.5, 0.5, 3.0, 4.0], [3.0, 2.0, 2.0, 2.0]])
    out = part_statistics(maps, parts, boxes)
    for i in range(4):
        own = part_share_loop(maps[i, 0], parts[i].tolist(), boxes[i].tolist())
        sib = part_share_loop(maps[i, 1], parts[i].tolist(), boxes[i].tolist())
        assert out["per_query"]["share_own"][i].item() == pytest.approx(own, abs=1e-12)
        assert out["per_query"]["difference"][i].item() == pytest.approx(own - sib, abs=1e-12)


def test_a_map_that_moves_onto_the_shared_part_scores_positive_and_a_blind_one_zero():
    parts = torch.zeros(3, 4, 6, dtype=F64)
    parts[:, :, :2] = 1.0                                            # the part: columns 0-1
    boxes = torch.tensor([[0.0, 0.0, 6.0, 4.0]] * 3)
    on_part, off_part = torch.zeros(4, 6, dtype=F64), torch.zeros(4, 6, dtype=F64)
    on_part[:, :2], off_part[:, 2:] = 1.0, 1.0
    follows = torch.stack([on_part, off_part])[None].expand(3, 2, 4, 6)
    blind = torch.stack([on_part, on_part])[None].expand(3, 2, 4, 6)
    f, b = part_statistics(follows, parts, boxes), part_statistics(blind, parts, boxes)
    assert f["share_own"] == (1.0, 0.0) and f["share_sibling"] == (0.0, 0.0) and f["difference"] == (1.0, 0.0)
    assert b["difference"] == (0.0, 0.0) and b["part_area"] == (pytest.approx(1 / 3), 0.0)
    flat = part_statistics(torch.ones(3, 2, 4, 6, dtype=F64), parts, boxes)
    assert flat["share_own"][0] == pytest.approx(1 / 3)             # a flat map scores the part's area
    with pytest.raises(ValueError, match="part_masks"):
        part_statistics(follows, parts[:, :2], boxes)


def test_explain_against_explains_each_query_with_each_of_its_supports():
    g = torch.Generator().manual_seed(3)
    q, s = torch.rand(3, 4, 2, 2, dtype=F64, generator=g), torch.rand(3, 2, 4, 2, 2, dtype=F64, generator=g)
    maps = explain_against(SFAM(None), q, s, size=(4, 4), batch=4)
    assert maps.shape == (3, 2, 4, 4)
    for i in range(3):
        for k in range(2):
            one = SFAM(None).explain_features(q[i][None], s[i, k][None, None], size=(4, 4)).query_maps[0]
            assert torch.allclose(maps[i, k].double(), one.float().double())
    assert SwapDesign.shared_left.tolist() == [[True, False], [False, True]]
