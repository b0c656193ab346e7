"""``synthetic.boxes(params, placement=...)``: the benchmark's boxes with another placement rule (chapter 3
measures the centre priors under uniform placement with it). The default benchmark must not change: the
trained models are cached under a fingerprint of its tables, so the pinned digests below are those of the
code before the option existed (commit 9b299dd), i.e. of the benchmark the cached models were trained on."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
from scipy import stats

from data_download import DataError, synthetic

#: sha256 of bounding_boxes.txt of the default benchmark (200 classes × 40 images, 96 px, seed 0), as written
#: by ``python -m data_download synthetic`` before the placement option existed.
DEFAULT_BOUNDING_BOXES_SHA256 = "a94ea653f870d66fdb5049f26a22a8bcb76692a5de381153cfa7bb800c5c970c"
#: sha256 of the pixels (image, then background) of image 5 of ``SMALL``, rendered before the option existed.
SMALL = synthetic.Params(images_per_class=4, size=64, seed=3, num_classes=16)
SMALL_IMAGE_5_SHA256 = "ca4f9fa99c5375e151cec0f18f27c9ffb65fc0b5895dcb96fc2fc6089337ffb8"


def bounding_boxes_txt(boxes: np.ndarray) -> str:
    """The text of bounding_boxes.txt for boxes in image-id order, as the generator writes it."""
    return "".join(f"{i} " + " ".join(f"{v:.1f}" for v in row) + "\n" for i, row in enumerate(boxes, 1))


def test_default_boxes_are_those_of_the_cached_benchmark():
    """Without ``placement`` (and with the benchmark's own value) the boxes are byte for byte the benchmark's."""
    default = synthetic.boxes(synthetic.Params())
    text = bounding_boxes_txt(default)
    assert hashlib.sha256(text.encode()).hexdigest() == DEFAULT_BOUNDING_BOXES_SHA256
    assert np.array_equal(synthetic.boxes(synthetic.Params(), placement=synthetic.PLACE_P), default)


def test_default_images_are_unchanged():
    image, background, box = synthetic.render_image(5, SMALL)
    assert hashlib.sha256(image.tobytes() + background.tobytes()).hexdigest() == SMALL_IMAGE_5_SHA256
    assert np.array_equal(box, synthetic.boxes(SMALL)[4])


def test_generated_tables_are_the_default_boxes(tmp_path):
    """What ``generate`` writes is ``boxes(params)`` at the default placement, not another placement's."""
    folder, _ = synthetic.generate(tmp_path, images_per_class=SMALL.images_per_class, size=SMALL.size,
                                   seed=SMALL.seed, num_classes=SMALL.num_classes, workers=1, progress=False)
    written = (folder / "bounding_boxes.txt").read_text()
    assert written == bounding_boxes_txt(synthetic.boxes(SMALL))
    assert written != bounding_boxes_txt(synthetic.boxes(SMALL, placement=1.0))


def test_placement_moves_the_same_birds():
    """Another placement keeps every bird's width and height (same random streams) and moves the boxes."""
    params = synthetic.Params(images_per_class=10, size=96, seed=0, num_classes=40)
    beta, uniform = synthetic.boxes(params), synthetic.boxes(params, placement=1.0)
    # widths and heights are rounded outwards from the position, so they may differ by the 0.1 px rounding
    assert np.abs(beta[:, 2:] - uniform[:, 2:]).max() <= 0.1 + 1e-9
    moved = np.abs(beta[:, :2] - uniform[:, :2]).max(1) > 1.0
    assert moved.mean() > 0.9
    for b in (beta, uniform):
        assert (b[:, :2] >= 0).all() and (b[:, :2] + b[:, 2:] <= params.size + 0.1 + 1e-9).all()


def relative_positions(boxes: np.ndarray, size: int) -> np.ndarray:
    """Each box's position along x and y as a share of its free range, ``x / (size - w)``; boxes with less than
    10 px of free range are left out (there the 0.1 px rounding of the stored box is a large share)."""
    free = size - boxes[:, 2:]
    keep = free >= 10
    return np.clip(boxes[:, :2][keep] / free[keep], 0, 1)


@pytest.mark.parametrize("placement", [1.0, synthetic.PLACE_P, 2.0])
def test_positions_follow_the_beta_distribution(placement):
    """Kolmogorov–Smirnov against scipy's Beta(p, p): accepted for the placement asked for, rejected for uniform
    when ``p`` is not 1."""
    params = synthetic.Params(images_per_class=40, size=96, seed=1, num_classes=40)
    u = relative_positions(synthetic.boxes(params, placement=placement), params.size)
    assert len(u) > 2500
    assert stats.kstest(u, stats.beta(placement, placement).cdf).pvalue > 0.01
    if placement != 1.0:
        assert stats.kstest(u, "uniform").pvalue < 1e-4


@pytest.mark.parametrize("placement", [0, -1.0, float("nan"), float("inf"), True, "1.0", [1.0]])
def test_bad_placement_is_refused(placement):
    with pytest.raises(DataError, match="placement.*positive finite number"):
        synthetic.boxes(SMALL, placement=placement)
