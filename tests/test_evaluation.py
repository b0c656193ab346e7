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

    def __init__(self, folder, boxes, sizes=((96, 72),)):
        self.boxes = torch.tensor(boxes, dtype=torch.float64)
        self.labels = torch.arange(len(boxes))
        self.paths = []
        for k, (x, y, w, h) in enumerate(boxes):
            size = sizes[k % len(sizes)]
            pixels = np.zeros((size[1], size[0], 3), np.uint8)
            pixels[y:y + h, x:x + w] = 255
            self.paths.append(folder / f"{k}.png")
            Image.fromarray(pixels).save(self.paths[-1])

    def __len__(self):
        return len(self.paths)

    def image_path(self, k):
        return self.paths[k]


@pytest.mark.parametrize("image_size, sizes", [(48, ((96, 72),)), (80, ((96, 72),)),
                                               (64, ((96, 72), (120, 90), (100, 140), (97, 73)))])
def test_boxes_follow_the_images(tmp_path, image_size, sizes):
    """Also with images of different sizes, as CUB's are."""
    boxes = [(10, 8, 30, 20), (50, 30, 40, 40), (0, 0, 96, 72), (30, 5, 12, 60)]
    data = eval_set(DrawnBoxes(tmp_path, boxes, sizes), image_size)
    assert data.images.shape == (4, 3, image_size, image_size)
    red = data.images[:, 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]    # back to [0, 1]
    for k in range(4):
        rows, cols = torch.nonzero(red[k] > 0.5, as_tuple=True)
        drawn = [cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1]
        np.testing.assert_allclose([v.item() for v in drawn], data.boxes[k].tolist(), atol=1.0)


def test_forward_with_features_names_a_layer_that_did_not_run():
    from torch import nn

    from sfam_lite.evaluation import forward_with_features
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    unused = nn.Conv2d(3, 4, 3)
    with pytest.raises(RuntimeError, match="did not run"):
        forward_with_features(model, unused, torch.rand(2, 3, 8, 8))
    outputs, maps = forward_with_features(model, model[0], torch.rand(5, 3, 8, 8), batch=2)
    assert outputs.shape == maps.shape == (5, 4, 6, 6) and torch.equal(outputs, maps.clamp_min(0))
