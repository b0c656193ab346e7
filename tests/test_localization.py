"""The localisation protocol (the paper's §4.3, :mod:`sfam_lite.localization`) against brute force: a flood
fill written here, pixel counting, and plain loops."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sfam_lite.localization import boxes_from_maps, iou, localization_accuracy


def normalised_keep(m: np.ndarray, threshold: float) -> np.ndarray:
    """Min-max normalise in float64 (a constant map counts as maximal everywhere) and threshold."""
    m = np.asarray(m, dtype=np.float64)
    lo, hi = m.min(), m.max()
    return np.ones(m.shape, bool) if hi == lo else (m - lo) / (hi - lo) >= threshold


def keep_relative_to_max(m: np.ndarray, threshold: float) -> np.ndarray:
    """Pixel by pixel: value >= threshold x max; where the maximum is not positive, the pixels equal to it."""
    m = np.asarray(m, dtype=np.float64)
    hi = m.max()
    return np.array([[v >= (threshold * hi if hi > 0 else hi) for v in row] for row in m], dtype=bool)


def brute_force_box(m: np.ndarray, threshold: float, keep_rule=normalised_keep) -> list[float]:
    """Normalise, threshold, flood-fill 8-connected components in row-major order, keep the largest
    (the first found among equals), return its bounding box."""
    keep = keep_rule(m, threshold)
    seen = np.zeros(m.shape, bool)
    best: list[tuple[int, int]] = []
    for r0 in range(m.shape[0]):
        for c0 in range(m.shape[1]):
            if not keep[r0, c0] or seen[r0, c0]:
                continue
            stack, comp = [(r0, c0)], []
            seen[r0, c0] = True
            while stack:
                r, c = stack.pop()
                comp.append((r, c))
                for dr in (-1, 0, 1):
                    for dc in (-1, 0, 1):
                        rr, cc = r + dr, c + dc
                        if 0 <= rr < m.shape[0] and 0 <= cc < m.shape[1] and keep[rr, cc] and not seen[rr, cc]:
                            seen[rr, cc] = True
                            stack.append((rr, cc))
            if len(comp) > len(best):
                best = comp
    rows = [r for r, _ in best]
    cols = [c for _, c in best]
    return [min(cols), min(rows), max(cols) - min(cols) + 1, max(rows) - min(rows) + 1]


def plain_box(m: np.ndarray, threshold: float, keep_rule=normalised_keep) -> list[float]:
    """The box around every kept pixel, by looping over the pixels."""
    keep = keep_rule(m, threshold)
    pts = [(r, c) for r in range(m.shape[0]) for c in range(m.shape[1]) if keep[r, c]]
    rows, cols = [r for r, _ in pts], [c for _, c in pts]
    return [min(cols), min(rows), max(cols) - min(cols) + 1, max(rows) - min(rows) + 1]


def pixel_iou(a, b, size=64) -> float:
    """IoU of two integer boxes by painting them on a grid."""
    ga, gb = np.zeros((size, size), bool), np.zeros((size, size), bool)
    ga[a[1]:a[1] + a[3], a[0]:a[0] + a[2]] = True
    gb[b[1]:b[1] + b[3], b[0]:b[0] + b[2]] = True
    union = (ga | gb).sum()
    return (ga & gb).sum() / union if union else 0.0


def random_maps(rng: np.random.Generator, b: int, h: int, w: int) -> np.ndarray:
    """Maps with several components: sparse powers of noise, or few levels (plateaus, ties, exact thresholds)."""
    if rng.random() < 0.5:
        return rng.random((b, h, w)) ** rng.uniform(1, 6)
    return rng.integers(0, int(rng.integers(2, 6)), (b, h, w)).astype(np.float64)


# --- one map against the flood fill ---------------------------------------------------------------

@pytest.mark.parametrize("seed", range(30))
def test_one_map_matches_flood_fill(seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(4, 24, 2)
    m = rng.random((h, w)) ** rng.uniform(1, 6)           # sparse-ish maps with several components
    t = float(rng.choice([0.2, 0.3, 0.5]))
    got = boxes_from_maps(m, t)
    assert got.shape == (4,) and got.dtype == np.float64
    assert got.tolist() == brute_force_box(m, t)


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), b=st.integers(1, 6), h=st.integers(1, 20), w=st.integers(1, 20),
       t=st.sampled_from([0.0, 0.05, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95, 1.0]))
def test_batch_matches_flood_fill_map_by_map(seed, b, h, w, t):
    maps = random_maps(np.random.default_rng(seed), b, h, w)
    got = boxes_from_maps(maps, t)
    assert got.shape == (b, 4)
    assert got.tolist() == [brute_force_box(m, t) for m in maps]


@pytest.mark.parametrize("t", np.round(np.arange(0.05, 0.951, 0.05), 2).tolist())
def test_thresholds_from_005_to_095(t):
    rng = np.random.default_rng(int(t * 100))
    maps = np.concatenate([random_maps(rng, 4, 17, 23), random_maps(rng, 4, 17, 23)])
    assert boxes_from_maps(maps, t).tolist() == [brute_force_box(m, t) for m in maps]
    assert boxes_from_maps(maps, t, largest_component=False).tolist() == [plain_box(m, t) for m in maps]


def test_maps_in_a_batch_never_connect():
    """Map 0 is kept only in its last row, map 1 only in its first: stacked, they would touch."""
    maps = np.zeros((3, 4, 5))
    maps[0, 3, :] = 1.0
    maps[0, 0, 0] = maps[0, 0, 2] = 1.0                  # two single pixels, smaller than the row
    maps[1, 0, 1:4] = 1.0
    maps[1, 3, 0:2] = 1.0
    maps[2, 2, 4] = 1.0
    assert boxes_from_maps(maps).tolist() == [[0, 3, 5, 1], [1, 0, 3, 1], [4, 2, 1, 1]]


# --- the rules one by one --------------------------------------------------------------------------

def test_diagonal_neighbours_are_connected():
    m = np.zeros((5, 5))
    m[1, 1] = m[2, 2] = m[3, 3] = 1.0
    m[0, 4] = 1.0
    assert boxes_from_maps(m).tolist() == [1, 1, 3, 3]
    anti = np.zeros((4, 6))
    anti[0, 3] = anti[1, 2] = anti[2, 1] = 1.0           # an anti-diagonal chain beats two 2-pixel pieces
    anti[3, 4:6] = 1.0
    anti[0, 5] = anti[1, 5] = 0.9
    assert boxes_from_maps(anti).tolist() == [1, 0, 3, 3]


def test_ties_go_to_the_first_component_in_row_major_order():
    m = np.zeros((6, 8))
    m[3:5, 0:2] = 1.0                                    # 4 pixels, leftmost, but starts on row 3
    m[0, 5:7] = m[1, 5:7] = 1.0                          # 4 pixels, starts on row 0: the winner
    assert boxes_from_maps(m).tolist() == [5, 0, 2, 2]
    m2 = np.zeros((6, 8))
    m2[2, 1:4] = 1.0                                     # 3 pixels starting at (2, 1): the winner
    m2[2, 5], m2[3, 6], m2[4, 7] = 1.0, 1.0, 1.0         # 3 pixels starting at (2, 5)
    assert boxes_from_maps(m2).tolist() == [1, 2, 3, 1]
    assert boxes_from_maps(np.stack([m2, m])).tolist() == [[1, 2, 3, 1], [5, 0, 2, 2]]


def test_the_largest_component_wins_over_an_earlier_one():
    m = np.zeros((6, 6))
    m[0, 0] = 1.0
    m[3:6, 2:5] = 0.5
    assert boxes_from_maps(m).tolist() == [2, 3, 3, 3]
    assert boxes_from_maps(m, largest_component=False).tolist() == [0, 0, 5, 6]


def test_one_pixel_above_the_threshold():
    m = np.full((7, 9), -2.0)
    m[4, 6] = 5.0
    assert boxes_from_maps(m).tolist() == [6, 4, 1, 1]
    assert boxes_from_maps(m, 0.95, largest_component=False).tolist() == [6, 4, 1, 1]
    assert boxes_from_maps(m, 1.0).tolist() == [6, 4, 1, 1]    # the maximum normalises to exactly 1
    assert boxes_from_maps(m, 0.0).tolist() == [0, 0, 9, 7]    # threshold 0 keeps everything


@pytest.mark.parametrize("value", [0.0, 3.0, -1e9, 1e-300])
def test_constant_map_is_the_whole_image(value):
    for largest in (True, False):
        assert boxes_from_maps(np.full((6, 8), value), 0.95, largest_component=largest).tolist() == [0, 0, 8, 6]
    maps = np.stack([np.full((6, 8), value), np.eye(6, 8)])
    assert boxes_from_maps(maps).tolist() == [[0, 0, 8, 6], [0, 0, 6, 6]]


def test_normalisation_is_in_float64():
    """0.19999999999 is below 0.2 in float64 but rounds above it in float32."""
    m = np.array([[1.0, 0.0, 0.19999999999]])
    assert boxes_from_maps(m, 0.2, largest_component=False).tolist() == [0, 0, 1, 1]
    assert boxes_from_maps(torch.from_numpy(m), 0.2, largest_component=False).tolist() == [0, 0, 1, 1]


def test_one_pixel_and_one_row_maps():
    assert boxes_from_maps(np.array([[4.0]])).tolist() == [0, 0, 1, 1]
    assert boxes_from_maps(np.array([[0.0, 1.0, 0.0, 1.0, 1.0]])).tolist() == [3, 0, 2, 1]


def test_torch_input_equals_numpy_input():
    rng = np.random.default_rng(5)
    maps = random_maps(rng, 7, 13, 11)
    expected = boxes_from_maps(maps)
    t = torch.tensor(maps, requires_grad=True)
    np.testing.assert_array_equal(boxes_from_maps(t), expected)
    np.testing.assert_array_equal(boxes_from_maps(t[2]), expected[2])
    f32 = maps.astype(np.float32)
    np.testing.assert_array_equal(boxes_from_maps(torch.from_numpy(f32)), boxes_from_maps(f32))
    np.testing.assert_array_equal(boxes_from_maps(f32), [brute_force_box(m, 0.2) for m in f32])
    ints = (maps * 3).astype(np.int64)
    np.testing.assert_array_equal(boxes_from_maps(torch.from_numpy(ints)), boxes_from_maps(ints))
    if torch.cuda.is_available():
        np.testing.assert_array_equal(boxes_from_maps(t.cuda()), expected)


def test_empty_batch():
    for empty in (np.zeros((0, 5, 5)), torch.zeros(0, 5, 5)):
        out = boxes_from_maps(empty)
        assert out.shape == (0, 4) and out.dtype == np.float64


def test_bad_maps_are_refused():
    with pytest.raises(ValueError, match=r"maps holds NaN or infinite values in map\(s\) \[0\]"):
        boxes_from_maps(np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match=r"NaN or infinite values in map\(s\) \[0\]"):
        boxes_from_maps(torch.tensor([[[0.0, float("inf")]]]))
    maps = np.zeros((40, 50, 50))                        # several chunks; map 37 is in a later one
    maps[37, 4, 4] = -np.inf
    with pytest.raises(ValueError, match=r"in map\(s\) \[37\]"):
        boxes_from_maps(maps)
    for shape in [(5,), (2, 3, 4, 5), ()]:
        with pytest.raises(ValueError, match=r"maps must have shape \(B, H, W\) or \(H, W\)"):
            boxes_from_maps(np.zeros(shape))
    with pytest.raises(ValueError, match="at least one pixel"):
        boxes_from_maps(np.zeros((2, 0, 4)))
    with pytest.raises(ValueError, match=r"maps \[1\] span a range \(max - min\) too large"), \
            np.errstate(over="ignore", invalid="ignore"):
        boxes_from_maps(np.stack([np.eye(2), np.array([[-1e308, 1e308], [0.0, 0.0]])]))
    with pytest.raises(TypeError, match="real-valued"):
        boxes_from_maps(np.zeros((3, 3), complex))
    with pytest.raises(TypeError, match="numeric"):
        boxes_from_maps(np.array([["a", "b"]]))


@pytest.mark.parametrize("bad", [-0.01, 1.01, float("nan"), float("inf")])
def test_threshold_outside_0_1_is_refused(bad):
    with pytest.raises(ValueError, match=r"threshold must lie in \[0, 1\]"):
        boxes_from_maps(np.zeros((3, 3)), bad)


@pytest.mark.parametrize("bad", ["0.2", None, True, [0.2]])
def test_threshold_that_is_not_a_number_is_refused(bad):
    with pytest.raises(TypeError, match="threshold must be a real number"):
        boxes_from_maps(np.zeros((3, 3)), bad)


# --- IoU and accuracy --------------------------------------------------------------------------------

def test_iou_matches_pixel_counting():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 30, (200, 4))
    b = rng.integers(0, 30, (200, 4))
    a[:, 2:] += 1
    b[:, 2:] += 1
    expected = [pixel_iou(x, y) for x, y in zip(a, b)]
    np.testing.assert_allclose(iou(a, b), expected, atol=1e-12)
    np.testing.assert_allclose(iou(torch.from_numpy(a), b), expected, atol=1e-12)
    assert iou([0, 0, 0, 0], [0, 0, 0, 0]) == 0.0
    assert iou([1, 1, 2, 2], [1, 1, 2, 2]) == 1.0
    assert iou([0, 0, 2, 2], [2, 0, 2, 2]) == 0.0                 # sharing an edge only


def test_iou_broadcasts():
    a = np.array([[0, 0, 4, 4], [2, 2, 4, 4]], float)
    b = np.array([[0, 0, 4, 4], [0, 0, 2, 2], [4, 4, 2, 2]], float)
    got = iou(a[:, None], b[None])
    assert got.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            assert got[i, j] == pytest.approx(pixel_iou(a[i].astype(int), b[j].astype(int)))


def test_bad_boxes_are_refused():
    with pytest.raises(ValueError, match="negative width or height"):
        iou([0, 0, -1, 2], [0, 0, 1, 1])
    with pytest.raises(ValueError, match="b contains non-finite"):
        iou([0, 0, 1, 1], [0, np.nan, 1, 1])
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\)"):
        iou([0, 0, 1], [0, 0, 1, 1])


def test_accuracy_counts_iou_at_least_half():
    gt = np.array([[0, 0, 10, 10]] * 3, float)
    pred = np.array([[0, 0, 10, 10], [0, 0, 10, 5], [0, 0, 10, 4]], float)   # IoU 1, 0.5, 0.4
    assert localization_accuracy(pred, gt) == pytest.approx(2 / 3)
    assert localization_accuracy(pred, gt, 0.4) == 1.0
    assert localization_accuracy(pred, gt, 1.0) == pytest.approx(1 / 3)


def test_accuracy_refuses_bad_input():
    gt = np.array([[0, 0, 10, 10]] * 3, float)
    with pytest.raises(ValueError, match="pred has 2 boxes but gt has 3"):
        localization_accuracy(gt[:2], gt)
    with pytest.raises(ValueError, match="empty"):
        localization_accuracy(np.zeros((0, 4)), np.zeros((0, 4)))
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        localization_accuracy(gt[0], gt[0])
    with pytest.raises(ValueError, match="iou_threshold must lie in"):
        localization_accuracy(gt, gt, 1.5)
    with pytest.raises(TypeError, match="iou_threshold must be a real number"):
        localization_accuracy(gt, gt, "0.5")


def test_end_to_end_on_synthetic_blobs():
    """Maps with one blob each, ground truth the blob's box: accuracy 1; shifted boxes: accuracy 0."""
    maps = np.zeros((4, 20, 20))
    gt = np.array([[2, 3, 5, 4], [10, 10, 6, 6], [0, 0, 20, 20], [15, 1, 3, 12]], float)
    for m, (x, y, w, h) in zip(maps, gt.astype(int)):
        m[y:y + h, x:x + w] = 1.0
    pred = boxes_from_maps(torch.from_numpy(maps))
    np.testing.assert_array_equal(pred, gt)
    assert localization_accuracy(pred, gt) == 1.0
    assert localization_accuracy(pred + [[20, 0, 0, 0]], gt) == 0.0


# --- the threshold cut: the kept pixels without normalising each one -------------------------------

@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from([np.float32, np.float64]),
       threshold=st.one_of(st.sampled_from([0.0, 0.05, 0.2, 0.25, 0.5, 0.95, 1.0]), st.floats(0, 1)),
       offset=st.sampled_from([0.0, 1.0, -3.5, 1e6, -1e-6, 7e30]), scale=st.sampled_from([1.0, 1e-3, 1e-30, 3e5]))
def test_kept_pixels_equal_normalising_every_pixel(seed, dtype, threshold, offset, scale):
    """Levels that normalise exactly onto the threshold, offsets that leave few representable values in the range,
    and continuous maps: the cut keeps the same pixels as min-max normalising each pixel in float64."""
    from sfam_lite.localization import _kept_pixels
    rng = np.random.default_rng(seed)
    maps = random_maps(rng, 6, 7, 9) * scale + offset
    maps = maps.astype(dtype)
    maps[0] = maps[0, 0, 0]                                   # a constant map among them
    got = _kept_pixels(maps, threshold)
    want = np.stack([normalised_keep(m, threshold) for m in maps])
    np.testing.assert_array_equal(got, want)


def test_kept_pixels_of_integer_and_half_precision_maps():
    from sfam_lite.localization import _kept_pixels
    m = np.arange(60).reshape(2, 5, 6) % 7
    for maps in (m, m.astype(np.float16), m.astype(bool)):
        np.testing.assert_array_equal(_kept_pixels(maps, 0.5),
                                      np.stack([normalised_keep(x.astype(np.float64), 0.5) for x in maps]))


# --- the threshold relative to the maximum (the CAM convention, chapter 7's protocol variants) -------------

@settings(max_examples=120, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), b=st.integers(1, 5), h=st.integers(1, 16), w=st.integers(1, 16),
       t=st.sampled_from([0.0, 0.2, 0.5, 0.9, 1.0]), offset=st.sampled_from([0.0, -0.3, 2.0]))
def test_relative_to_max_matches_a_loop(seed, b, h, w, t, offset):
    maps = random_maps(np.random.default_rng(seed), b, h, w) + offset
    assert boxes_from_maps(maps, t, relative_to="max").tolist() == [
        brute_force_box(m, t, keep_relative_to_max) for m in maps]
    assert boxes_from_maps(maps, t, largest_component=False, relative_to="max").tolist() == [
        plain_box(m, t, keep_relative_to_max) for m in maps]


def test_relative_to_max_differs_from_min_max_where_the_minimum_is_high():
    """A map on a raised floor: min-max keeps only the peak, 0.2 x max keeps everything."""
    m = np.full((6, 6), 5.0)
    m[2, 3] = 6.0
    assert boxes_from_maps(m, 0.2).tolist() == [3, 2, 1, 1]
    assert boxes_from_maps(m, 0.2, relative_to="max").tolist() == [0, 0, 6, 6]


def test_relative_to_max_of_maps_without_a_positive_value():
    zero, negative = np.zeros((4, 5)), -np.ones((4, 5))
    negative[1, 2] = -0.5
    assert boxes_from_maps(zero, 0.2, relative_to="max").tolist() == [0, 0, 5, 4]
    assert boxes_from_maps(negative, 0.2, relative_to="max").tolist() == [2, 1, 1, 1]


def test_relative_to_is_checked():
    with pytest.raises(ValueError, match="relative_to must be one of"):
        boxes_from_maps(np.ones((3, 3)), 0.2, relative_to="min")
    with pytest.raises(ValueError, match="NaN or infinite"):
        boxes_from_maps(np.array([[0.0, np.nan], [1.0, 2.0]]), 0.2, relative_to="max")


@pytest.mark.parametrize("largest_component", [True, False])
def test_kept_mask_is_the_pixels_a_plain_loop_keeps(largest_component):
    """kept_mask against a per-map loop: normalise, threshold, label the 8-connected components one map at a time
    (scipy, a 3x3 structure) and keep the largest (ties: the first in row-major order); its bounding box is
    boxes_from_maps' box."""
    from scipy import ndimage
    from sfam_lite.localization import kept_mask, mask_boxes
    g = torch.Generator().manual_seed(5)
    maps = torch.rand(7, 12, 15, generator=g) ** 3
    got = kept_mask(maps, 0.3, largest_component=largest_component)
    for k, m in enumerate(maps.double().numpy()):
        keep = (m - m.min()) / (m.max() - m.min()) >= 0.3
        if largest_component:
            labels, count = ndimage.label(keep, structure=np.ones((3, 3)))
            sizes = [(labels == c).sum() for c in range(1, count + 1)]
            keep = labels == 1 + int(np.argmax(sizes))
        np.testing.assert_array_equal(got[k], keep)
        ys, xs = np.nonzero(keep)
        np.testing.assert_array_equal(mask_boxes(got[k]), [xs.min(), ys.min(), xs.max() - xs.min() + 1,
                                                           ys.max() - ys.min() + 1])
    np.testing.assert_array_equal(mask_boxes(got), boxes_from_maps(maps, 0.3, largest_component=largest_component))
    assert kept_mask(maps[0], 0.3).shape == (12, 15) and kept_mask(maps[:0], 0.3).shape == (0, 12, 15)
    with pytest.raises(ValueError, match="at least one True"):
        mask_boxes(np.zeros((2, 3, 3), bool))
