"""Boxes follow images through Resize, CenterCrop and flips: checked against rectangles drawn into images
and transformed by torchvision, and against torchvision.transforms.v2's own box handling."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from torchvision import tv_tensors
from torchvision.transforms import v2

from data_download import ResizeCropFlip, transform_boxes
from data_download.boxes import resized_size


def random_cases(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(n):
        w, h = (int(v) for v in rng.integers(40, 200, 2))
        bw, bh = int(rng.integers(w // 4, w - 2)), int(rng.integers(h // 4, h - 2))
        x, y = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
        resize = int(rng.integers(30, 160)) if rng.random() < 0.8 else None
        size_after = resized_size((w, h), resize)
        crop = int(rng.integers(20, min(size_after) + 30)) if rng.random() < 0.8 else None   # sometimes pads
        cases.append(((w, h), (x, y, bw, bh), resize, crop, bool(rng.random() < 0.5)))
    return cases


def drawn_extent(image: torch.Tensor) -> list[float]:
    """The box (x, y, w, h) of the pixels above 0.5 in a (1, H, W) image."""
    rows, cols = torch.nonzero(image[0] > 0.5, as_tuple=True)
    return [cols.min().item(), rows.min().item(), cols.max().item() - cols.min().item() + 1,
            rows.max().item() - rows.min().item() + 1]


@pytest.mark.parametrize("case", random_cases(40), ids=lambda c: f"{c[0]}-{c[2]}-{c[3]}-{int(c[4])}")
def test_box_matches_a_drawn_rectangle(case):
    (w, h), (x, y, bw, bh), resize, crop, flip = case
    image = torch.zeros(1, h, w)
    image[:, y:y + bh, x:x + bw] = 1.0
    out = image
    if resize is not None:
        out = TF.resize(out, [resize], antialias=True)
    if crop is not None:
        out = TF.center_crop(out, [crop])
    if flip:
        out = TF.hflip(out)
    box = transform_boxes(np.array([x, y, bw, bh], float), (w, h), resize, crop, flip)
    assert ResizeCropFlip(resize, crop, flip).output_size((w, h)) == (out.shape[-1], out.shape[-2])
    if box[2] < 2 or box[3] < 2:          # the rectangle left the crop (almost) entirely
        assert (out > 0.5).sum() <= max(out.shape[-2:]) * 2
        return
    np.testing.assert_allclose(drawn_extent(out), box, atol=1.0)


def no_padding(case) -> bool:
    (w, h), _, resize, crop, _ = case
    return crop is None or crop <= min(resized_size((w, h), resize))


@pytest.mark.parametrize("case", [c for c in random_cases(60, seed=1) if no_padding(c)],
                         ids=lambda c: f"{c[0]}-{c[2]}-{c[3]}-{int(c[4])}")
def test_box_matches_torchvision_v2(case):
    """v2 moves boxes with its own code. Only crops inside the image are compared: when CenterCrop pads by
    an odd number of pixels, v2's box kernel shifts by round(-k/2) while its image kernel pads k // 2, so
    v2 boxes can be one pixel off the image there (the drawn-rectangle test covers that case)."""
    (w, h), box, resize, crop, flip = case
    ops = ([v2.Resize(resize, antialias=True)] if resize else []) + ([v2.CenterCrop(crop)] if crop else []) \
        + ([v2.RandomHorizontalFlip(p=1.0)] if flip else [])
    tv_box = tv_tensors.BoundingBoxes([list(box)], format="XYWH", canvas_size=(h, w), dtype=torch.float64)
    _, out = v2.Compose(ops)(torch.zeros(1, h, w), tv_box) if ops else (None, tv_box)
    ours = transform_boxes(torch.tensor([box], dtype=torch.float64), (w, h), resize, crop, flip)
    torch.testing.assert_close(ours, out.as_subclass(torch.Tensor), atol=1e-4, rtol=0)   # v2 works in float32


def test_transform_applies_to_images_and_batches_of_boxes():
    t = ResizeCropFlip(92, 84, flip=True)
    image = torch.rand(3, 96, 120)
    assert torch.equal(t(image), TF.hflip(TF.center_crop(TF.resize(image, [92], antialias=True), [84])))
    boxes = np.array([[0, 0, 120, 96], [10, 20, 30, 40]], float)
    out = t.transform_box(boxes, (120, 96))
    assert out.shape == (2, 4)
    np.testing.assert_allclose(out[0], [0, 0, 84, 84])            # the whole image covers the whole crop
    np.testing.assert_allclose(out[1], transform_boxes(boxes[1], (120, 96), 92, 84, True))


def test_frn_test_transform_on_a_96px_image():
    """Resize(92) then CenterCrop(84) of a 96 px square: scale 92/96, then 4 px off each side."""
    box = transform_boxes(np.array([48.0, 24.0, 24.0, 48.0]), (96, 96), 92, 84)
    np.testing.assert_allclose(box, [48 * 92 / 96 - 4, 24 * 92 / 96 - 4, 24 * 92 / 96, 48 * 92 / 96])


@pytest.mark.parametrize("image_size, crop", [((40, 30), 45), ((40, 30), (33, 47)), ((41, 31), 44), ((20, 50), 30)])
def test_padding_crop_keeps_boxes_on_the_drawn_pixels_exactly(image_size, crop):
    """CenterCrop larger than the image pads k // 2 pixels before it. No resize, so the drawn rectangle is exact:
    the box must match to the pixel (v2's own center_crop box kernel is one pixel off when k is odd)."""
    w, h = image_size
    x, y, bw, bh = 3, 5, 11, 7
    image = torch.zeros(1, h, w)
    image[:, y:y + bh, x:x + bw] = 1.0
    for flip in (False, True):
        out = TF.center_crop(image, [crop] if isinstance(crop, int) else list(crop))
        out = TF.hflip(out) if flip else out
        box = transform_boxes(np.array([x, y, bw, bh], float), (w, h), None, crop, flip)
        np.testing.assert_array_equal(box, drawn_extent(out))
        assert ResizeCropFlip(None, crop, flip).output_size((w, h)) == (out.shape[-1], out.shape[-2])


def test_boxes_are_clipped_to_the_image_also_without_a_crop():
    box = transform_boxes(np.array([[-4.0, 2.0, 20.0, 50.0]]), (30, 40), None, None, flip=True)
    np.testing.assert_allclose(box, [[14, 2, 16, 38]])


def test_to_tensor_gives_the_pixels_of_the_tensor_path():
    """A PIL image with to_tensor=True is resized as a uint8 tensor, exactly as pil_to_tensor(image) would be."""
    from PIL import Image
    pixels = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    t = ResizeCropFlip(46, 42, to_tensor=True)
    out = t(Image.fromarray(pixels))
    assert out.dtype == torch.uint8 and out.shape == (3, 42, 42)
    assert torch.equal(out, t(torch.from_numpy(pixels).permute(2, 0, 1)))
