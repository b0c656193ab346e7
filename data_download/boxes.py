"""Bounding boxes that follow an image through Resize, CenterCrop and a horizontal flip.

Boxes are CUB's ``(x, y, width, height)`` in continuous pixel coordinates: ``(x, y)`` is the top-left
corner, pixel ``j`` covers ``[j, j+1)``, so a box covering pixel columns ``a..b`` has ``x = a`` and
``width = b - a + 1``. Image sizes are ``(width, height)``, as PIL reports them.

The boxes are moved by torchvision's own box kernels (``tv_tensors.BoundingBoxes`` in XYXY through
``transforms.v2.functional`` pad, center_crop, horizontal_flip and clamp; ``torchvision.ops.box_convert``
from and to CUB's XYWH), and every output size is the canvas size those kernels report, so images and
boxes follow torchvision's size and offset rules (``Resize`` with an ``int`` scales the short side to
it; ``CenterCrop`` starts at ``round((W - w) / 2)`` and zero-pads when the crop is larger than the
image) by construction. Two steps are explicit:

* the resize scales coordinates by ``new / old`` in float64 (the new size from v2's resize): v2's box
  kernel multiplies by a float32 ratio, which moved the book's boxes by one float32 step;
* when the crop is larger than the image, the padding is applied to the boxes as ``Pad`` (``k // 2``
  pixels before, as the image is padded) before the crop, because v2's box kernel for
  ``center_crop`` shifts by ``round(k / 2)`` instead, one pixel off the image for odd ``k``.

Box coordinates come out clipped to the output image (a box that leaves it gets width or height 0).

Images are transformed with ``torchvision.transforms.functional`` (v1) rather than v2: for uint8
tensors the v2 resize kernel rounds differently (pixels differ by one grey level), and the book's
committed numbers were computed with v1. Both apply the same geometry.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence, Union

import numpy as np
import torch
import torchvision.transforms.functional as TF
import torchvision.transforms.v2.functional as F
from torchvision import tv_tensors
from torchvision.ops import box_convert

Size = Union[int, Sequence[int], None]


def _size_list(size: Size) -> list[int]:
    return [size] if isinstance(size, int) else list(size)


def _canvas(image_size: tuple[int, int], boxes=None) -> tv_tensors.BoundingBoxes:
    """``boxes`` (``(n, 4)`` x0 y0 x1 y1; none by default) on an image of ``image_size = (width, height)``."""
    data = torch.zeros(0, 4, dtype=torch.float64) if boxes is None else boxes
    return tv_tensors.BoundingBoxes(data, format="XYXY", canvas_size=(image_size[1], image_size[0]))


def resized_size(image_size: tuple[int, int], resize: Size) -> tuple[int, int]:
    """``(width, height)`` after ``torchvision`` ``Resize(resize)``; ``resize`` is an int (short side) or ``(h, w)``."""
    if resize is None:
        return tuple(image_size)
    h, w = F.resize(_canvas(image_size), _size_list(resize)).canvas_size
    return w, h


def _crop_size(crop: Size) -> tuple[int, int]:
    """``(height, width)`` of a crop given as torchvision does (an int, ``[s]`` or ``(h, w)``)."""
    c = _size_list(crop)
    return c[0], c[-1]


def _move(boxes: tv_tensors.BoundingBoxes, resize: Size, crop: Size, flip: bool) -> tv_tensors.BoundingBoxes:
    if resize is not None:
        (h, w), (new_w, new_h) = boxes.canvas_size, resized_size(boxes.canvas_size[::-1], resize)
        scaled = boxes.as_subclass(torch.Tensor) * torch.tensor([new_w, new_h] * 2, dtype=boxes.dtype) \
            / torch.tensor([w, h] * 2, dtype=boxes.dtype)
        boxes = tv_tensors.wrap(scaled, like=boxes, canvas_size=(new_h, new_w))
    if crop is not None:
        (h, w), (ch, cw) = boxes.canvas_size, _crop_size(crop)
        if ch > h or cw > w:   # pad as the image is padded (k // 2 before, the rest after), then crop inside
            left, top = max(cw - w, 0) // 2, max(ch - h, 0) // 2
            boxes = F.pad(boxes, [left, top, max(cw - w, 0) - left, max(ch - h, 0) - top])
        boxes = F.center_crop(boxes, [ch, cw])
    if flip:
        boxes = F.horizontal_flip(boxes)
    return F.clamp_bounding_boxes(boxes)   # also when there is no crop


def transform_boxes(boxes, image_size: tuple[int, int], resize: Size = None, crop: Size = None,
                    flip: bool = False):
    """Map ``(..., 4)`` boxes ``(x, y, w, h)`` on an image of ``image_size`` through resize → centre crop → flip.

    Boxes are clipped to the crop (a box that leaves the crop entirely gets width or height 0).
    Accepts and returns a numpy array or a torch tensor (float; computed in float64).
    """
    is_tensor = isinstance(boxes, torch.Tensor)
    b = boxes.detach().cpu().double() if is_tensor else torch.as_tensor(np.asarray(boxes, dtype=np.float64))
    moved = _move(_canvas(image_size, box_convert(b.reshape(-1, 4), "xywh", "xyxy")), resize, crop, flip)
    out = box_convert(moved.as_subclass(torch.Tensor), "xyxy", "xywh").reshape(b.shape)
    if is_tensor:
        return out.to(boxes.dtype if boxes.is_floating_point() else torch.float32)
    return out.numpy()


@dataclass(frozen=True)
class ResizeCropFlip:
    """An image transform that boxes can follow: ``Resize(resize)`` → ``CenterCrop(crop)`` → optional flip.

    Call it on a PIL image or a ``(..., H, W)`` tensor; :meth:`transform_box` maps that image's box the
    same way. ``to_tensor=True`` turns a PIL image into a uint8 tensor first (so that a dataset's PIL
    images and tensors give the same pixels). ``then`` is an image-only transform applied afterwards
    (``ToDtype``, ``Normalize``, ...). FRN's test transform is ``ResizeCropFlip(92, 84)``.
    :class:`~data_download.cub.CUB200` applies :meth:`transform_box` to the box whenever its ``transform``
    has one.
    """
    resize: Size = None
    crop: Size = None
    flip: bool = False
    then: Callable | None = None
    to_tensor: bool = False

    def __call__(self, image):
        if self.to_tensor and not isinstance(image, torch.Tensor):
            image = TF.pil_to_tensor(image)
        if self.resize is not None:
            image = TF.resize(image, _size_list(self.resize), antialias=True)
        if self.crop is not None:
            image = TF.center_crop(image, _size_list(self.crop))
        if self.flip:
            image = TF.hflip(image)
        return self.then(image) if self.then is not None else image

    def output_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """``(width, height)`` of the transformed image."""
        h, w = _move(_canvas(image_size), self.resize, self.crop, self.flip).canvas_size
        return w, h

    def transform_box(self, box, image_size: tuple[int, int]):
        """``box`` (``(..., 4)``, ``x y w h``) of an image of ``image_size`` in the transformed image's pixels."""
        return transform_boxes(box, image_size, self.resize, self.crop, self.flip)
