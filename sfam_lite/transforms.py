"""The image transforms training and evaluation share, and the ImageNet normalisation they end with.

* :func:`train_transform`: FRN's training augmentation (random resized crop, colour jitter, flip).
* :func:`eval_transform`: a centre view whose boxes follow the image (a :class:`data_download.ResizeCropFlip`),
  usable as a :class:`data_download.CUB200` ``transform``; its size is part of each model's recipe
  (:func:`sfam_lite.zoo.eval_transform_for`).
"""
from __future__ import annotations

import torch
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: FRN's test view: resize the short side to 92, centre-crop 84 (scaled with the crop size).
FRN_RESIZE_RATIO = 92 / 84


def normalize() -> v2.Compose:
    """uint8 (or float) image tensor → float in [0, 1] → ImageNet normalisation."""
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def train_transform(size: int, crop_scale=(0.08, 1.0), jitter: float = 0.4) -> v2.Compose:
    """Random resized crop, colour jitter (FRN's 0.4; 0 switches it off), horizontal flip, ImageNet normalisation."""
    jittering = [v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter)] if jitter else []
    return v2.Compose([v2.RandomResizedCrop(size, scale=crop_scale, antialias=True), *jittering,
                       v2.RandomHorizontalFlip(), v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def eval_transform(size: int, resize: int | None = None):
    """Resize the short side to ``resize`` (default FRN's ``round(size · 92/84)``), centre-crop ``size``, then
    float and ImageNet normalisation. A :class:`data_download.ResizeCropFlip`, so boxes move exactly as the
    images move; a PIL image is turned into a tensor first (resizing tensors, not PIL images, whatever the
    input), so the dataset's image loader and a tensor give the same pixels."""
    from data_download import ResizeCropFlip
    return ResizeCropFlip(round(size * FRN_RESIZE_RATIO) if resize is None else resize, size, to_tensor=True,
                          then=normalize())
