"""Bounding boxes that follow an image through Resize, CenterCrop and a horizontal flip.

Boxes are CUB's ``(x, y, width, height)`` in continuous pixel coordinates: ``(x, y)`` is the top-left
corner, pixel ``j`` covers ``[j, j+1)``, so a box covering pixel columns ``a..b`` has ``x = a`` and
``width = b - a + 1``. Image sizes are ``(width, height)``, as PIL reports them.

The size and offset rules are torchvision's (``transforms.functional.resize`` with an ``int`` size
scales the short side to it and the long side to ``int(size * long / short)``; ``center_crop`` starts
at ``round((W - w) / 2)`` and zero-pads when the crop is larger than the image), so the same numbers
given to torchvision and to :func:`transform_boxes` keep images and boxes aligned.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence, Union

import numpy as np
import torch
import torchvision.transforms.functional as TF

Size = Union[int, Sequence[int], None]


def resized_size(image_size: tuple[int, int], resize: Size) -> tuple[int, int]:
    """``(width, height)`` after ``torchvision`` ``Resize(resize)``; ``resize`` is an int (short side) or ``(h, w)``."""
    w, h = image_size
    if resize is None:
        return w, h
    if isinstance(resize, int) or len(resize) == 1:
        short = resize if isinstance(resize, int) else resize[0]
        if w <= h:
            return short, int(short * h / w)
        return int(short * w / h), short
    return int(resize[1]), int(resize[0])


def crop_offset(image_size: tuple[int, int], crop: Size) -> tuple[int, int, int, int]:
    """``(left, top, crop_width, crop_height)`` of torchvision's ``CenterCrop(crop)``; negative when it pads."""
    w, h = image_size
    if crop is None:
        return 0, 0, w, h
    ch, cw = (crop, crop) if isinstance(crop, int) else (crop[0], crop[-1])

    def start(full: int, part: int) -> int:
        return -((part - full) // 2) if part > full else int(round((full - part) / 2.0))

    return start(w, cw), start(h, ch), cw, ch


def transform_boxes(boxes, image_size: tuple[int, int], resize: Size = None, crop: Size = None,
                    flip: bool = False):
    """Map ``(..., 4)`` boxes ``(x, y, w, h)`` on an image of ``image_size`` through resize → centre crop → flip.

    Boxes are clipped to the crop (a box that leaves the crop entirely gets width or height 0).
    Accepts and returns a numpy array or a torch tensor (float).
    """
    is_tensor = isinstance(boxes, torch.Tensor)
    b = boxes.detach().cpu().double().numpy() if is_tensor else np.asarray(boxes, dtype=np.float64)
    w, h = image_size
    new_w, new_h = resized_size(image_size, resize)
    left, top, cw, ch = crop_offset((new_w, new_h), crop)
    x0 = np.clip(b[..., 0] * new_w / w - left, 0, cw)
    y0 = np.clip(b[..., 1] * new_h / h - top, 0, ch)
    x1 = np.clip((b[..., 0] + b[..., 2]) * new_w / w - left, 0, cw)
    y1 = np.clip((b[..., 1] + b[..., 3]) * new_h / h - top, 0, ch)
    if flip:
        x0, x1 = cw - x1, cw - x0
    out = np.stack([x0, y0, x1 - x0, y1 - y0], axis=-1)
    if is_tensor:
        return torch.as_tensor(out, dtype=boxes.dtype if boxes.is_floating_point() else torch.float32)
    return out


@dataclass(frozen=True)
class ResizeCropFlip:
    """An image transform that boxes can follow: ``Resize(resize)`` → ``CenterCrop(crop)`` → optional flip.

    Call it on a PIL image or a ``(..., H, W)`` tensor; :meth:`transform_box` maps that image's box the
    same way. ``then`` is an image-only transform applied afterwards (``ToTensor``, ``Normalize``, ...).
    FRN's test transform is ``ResizeCropFlip(92, 84)``. :class:`~data_download.cub.CUB200` applies
    :meth:`transform_box` to the box whenever its ``transform`` has one.
    """
    resize: Size = None
    crop: Size = None
    flip: bool = False
    then: Callable | None = None

    def __call__(self, image):
        if self.resize is not None:
            size = [self.resize] if isinstance(self.resize, int) else list(self.resize)
            image = TF.resize(image, size, antialias=True)
        if self.crop is not None:
            image = TF.center_crop(image, [self.crop] if isinstance(self.crop, int) else list(self.crop))
        if self.flip:
            image = TF.hflip(image)
        return self.then(image) if self.then is not None else image

    def output_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """``(width, height)`` of the transformed image."""
        return crop_offset(resized_size(image_size, self.resize), self.crop)[2:]

    def transform_box(self, box, image_size: tuple[int, int]):
        """``box`` (``(..., 4)``, ``x y w h``) of an image of ``image_size`` in the transformed image's pixels."""
        return transform_boxes(box, image_size, self.resize, self.crop, self.flip)
