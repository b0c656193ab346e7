"""The localisation protocol (DESIGN.md §3) against brute force: flood fill and pixel counting."""
from __future__ import annotations

import numpy as np
import pytest

from data_download._loc_protocol import box_from_map, boxes_from_maps, iou, localization_accuracy


def brute_force_box(m: np.ndarray, threshold: float) -> list[float]:
    """Normalise, threshold, flood-fill 8-connected components in row-major order, keep the largest
    (the first found among equals), return its bounding box."""
    lo, hi = m.min(), m.max()
    keep = np.ones(m.shape, bool) if hi == lo else (m - lo) / (hi - lo) >= threshold
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


def pixel_iou(a, b, size=64) -> float:
    """IoU of two integer boxes by painting them on a grid."""
    ga, gb = np.zeros((size, size), bool), np.zeros((size, size), bool)
    ga[a[1]:a[1] + a[3], a[0]:a[0] + a[2]] = True
    gb[b[1]:b[1] + b[3], b[0]:b[0] + b[2]] = True
    union = (ga | gb).sum()
    return (ga & gb).sum() / union if union else 0.0


@pytest.mark.parametrize("seed", range(30))
def test_box_from_map_matches_flood_fill(seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(4, 24, 2)
    m = rng.random((h, w)) ** rng.uniform(1, 6)           # sparse-ish maps with several components
    t = float(rng.choice([0.2, 0.3, 0.5]))
    assert box_from_map(m, t).tolist() == brute_force_box(m, t)


def test_diagonal_neighbours_are_connected():
    m = np.zeros((5, 5))
    m[1, 1] = m[2, 2] = m[3, 3] = 1.0
    m[0, 4] = 1.0
    assert box_from_map(m).tolist() == [1, 1, 3, 3]


def test_constant_map_is_the_whole_image():
    assert box_from_map(np.full((6, 8), 3.0)).tolist() == [0, 0, 8, 6]


def test_bad_maps_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        box_from_map(np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match="one"):
        box_from_map(np.zeros((2, 3, 4)))


def test_iou_matches_pixel_counting():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 30, (200, 4))
    b = rng.integers(0, 30, (200, 4))
    a[:, 2:] += 1
    b[:, 2:] += 1
    expected = [pixel_iou(x, y) for x, y in zip(a, b)]
    np.testing.assert_allclose(iou(a, b), expected, atol=1e-12)
    assert iou([0, 0, 0, 0], [0, 0, 0, 0]) == 0.0


def test_accuracy_counts_iou_at_least_half():
    gt = np.array([[0, 0, 10, 10]] * 3, float)
    pred = np.array([[0, 0, 10, 10], [0, 0, 10, 5], [0, 0, 10, 4]], float)   # IoU 1, 0.5, 0.4
    assert localization_accuracy(pred, gt) == pytest.approx(2 / 3)
    assert boxes_from_maps(np.ones((2, 3, 3))).shape == (2, 4)
