"""The package's one rule for a constant map (equally salient everywhere) in the map-in-box metric: its mass in
a box is the box's share of the image, counted here pixel by pixel."""
import math

import pytest
import torch

from sfam_lite.metrics import box_share, mass_in_box

BOXES = [[0, 0, 5, 6], [2.3, 1.7, 4.1, 8.0], [9, 11, 1, 1], [0, 0, 10, 12], [4, 4, 0.2, 0.2], [20, 20, 3, 3]]


def count_inside(box, h, w) -> int:
    """Pixels whose centres lie inside the box ``(x, y, w, h)``, by looping over the pixels."""
    x, y, bw, bh = box
    return sum(x <= j + 0.5 < x + bw and y <= i + 0.5 < y + bh for i in range(h) for j in range(w))


@pytest.mark.parametrize("value", [0.0, 1.0, -3.5, 1e12])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_constant_map_scores_the_box_share(value, dtype):
    h, w = 12, 10
    boxes = torch.tensor(BOXES, dtype=torch.float64)
    maps = torch.full((len(BOXES), h, w), value, dtype=dtype)
    mass = mass_in_box(maps, boxes)
    for b, box in enumerate(BOXES):
        expected = count_inside(box, h, w) / (h * w)
        assert math.isclose(mass[b].item(), expected, rel_tol=1e-12, abs_tol=1e-15)
    assert torch.allclose(mass, box_share(boxes, (h, w)), rtol=1e-12, atol=0)


def test_constant_map_next_to_a_peaked_map():
    """The rule is per map: a constant map beside a one-pixel map in the same batch."""
    maps = torch.zeros(2, 4, 4, dtype=torch.float64)
    maps[1, 1, 2] = 7.0
    boxes = torch.tensor([[0, 0, 2, 4], [2, 1, 1, 1]], dtype=torch.float64)
    mass = mass_in_box(maps, boxes)
    assert mass[0].item() == pytest.approx(8 / 16)
    assert mass[1].item() == pytest.approx(1.0)
