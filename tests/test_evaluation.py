"""eval_set keeps images and boxes in step: rectangles drawn into images land where the transformed boxes say."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sfam_lite.evaluation import eval_set
from sfam_lite.train import IMAGENET_MEAN, IMAGENET_STD


class DrawnBoxes:
    """The part of the CUB200 interface that eval_set reads: image paths, labels, boxes (x, y, w, h)."""

    def __init__(self, folder, boxes, size=(96, 72)):
        self.boxes = torch.tensor(boxes, dtype=torch.float64)
        self.labels = torch.arange(len(boxes))
        self.paths = []
        for k, (x, y, w, h) in enumerate(boxes):
            pixels = np.zeros((size[1], size[0], 3), np.uint8)
            pixels[y:y + h, x:x + w] = 255
            self.paths.append(folder / f"{k}.png")
            Image.fromarray(pixels).save(self.paths[-1])

    def __len__(self):
        return len(self.paths)

    def image_path(self, k):
        return self.paths[k]


@pytest.mark.parametrize("image_size", [48, 80])
def test_boxes_follow_the_images(tmp_path, image_size):
    boxes = [(10, 8, 30, 20), (50, 30, 40, 40), (0, 0, 96, 72), (30, 5, 12, 60)]
    data = eval_set(DrawnBoxes(tmp_path, boxes), image_size)
    assert data.images.shape == (4, 3, image_size, image_size)
    red = data.images[:, 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]    # back to [0, 1]
    for k in range(4):
        rows, cols = torch.nonzero(red[k] > 0.5, as_tuple=True)
        drawn = [cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1]
        np.testing.assert_allclose([v.item() for v in drawn], data.boxes[k].tolist(), atol=1.0)
