"""Measured properties of the synthetic benchmark for chapter 3.

* (a) :func:`evidence_control` — a small CNN trained on the images with the box filled by the
  background is at chance; one trained on the normal images is far above it.
* (b) :func:`centre_priors` — localisation accuracy of the image-independent references of
  :mod:`sfam_lite.references`: the centre box and the centred Gaussians.
* (c) :func:`box_statistics` — box area as a share of the image.
* (d) :func:`colour_overlap` — which bird colours also occur in the backgrounds.
"""
from __future__ import annotations

import io
import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from data_download import synthetic
from data_download.cub import SyntheticCUB200, load_tensors

from .localization import boxes_from_maps, iou
from .references import GAUSSIAN_SIGMAS, CentreBoxMap, CentredGaussianMap


# --------------------------------------------------------------------------------------------- (c), (b)

def box_statistics(boxes, size: tuple[int, int]) -> dict[str, float]:
    """Box area as a share of the area of an image of ``size = (H, W)``: min, 5th percentile, median, 95th
    percentile, max, and the fraction of boxes with a share in ``[0.15, 0.50]``."""
    b = np.asarray(boxes, float)
    share = b[:, 2] * b[:, 3] / (size[0] * size[1])
    p5, median, p95 = np.percentile(share, [5, 50, 95])
    return {"min": float(share.min()), "p5": float(p5), "median": float(median), "p95": float(p95),
            "max": float(share.max()), "in_15_50": float(np.mean((share >= 0.15) & (share <= 0.50)))}


def centre_priors(boxes, size: tuple[int, int], sigmas=GAUSSIAN_SIGMAS, threshold: float = 0.2) -> dict:
    """Localisation accuracy (IoU >= 0.5) against ``boxes`` ``(x, y, w, h)`` of the references of
    :mod:`sfam_lite.references` on images of ``size = (H, W)``, each map put through the localisation
    protocol of :mod:`sfam_lite.localization` (normalise, threshold, largest component, its box).

    * ``centre_box``: :class:`~sfam_lite.references.CentreBoxMap` of the boxes' mean width and height, on the
      pixel grid; ``centre_box_xywh`` is its box and ``centre_box_mean_iou`` its mean IoU.
    * ``gaussian``: :class:`~sfam_lite.references.CentredGaussianMap` for each ``σ`` in ``sigmas`` (fractions
      of the image width; default :data:`~sfam_lite.references.GAUSSIAN_SIGMAS`).
    """
    b = np.asarray(boxes, float)
    size = tuple(int(s) for s in size)
    box_size = tuple(float(v) for v in b[:, 2:].mean(0))
    centre = boxes_from_maps(CentreBoxMap(box_size).maps(1, size, None).numpy(), threshold)[0]
    overlap = iou(centre, b)
    result = {"centre_box": float(np.mean(overlap >= 0.5)), "centre_box_xywh": [float(v) for v in centre],
              "centre_box_mean_iou": float(overlap.mean()), "gaussian": {}}
    for s in sigmas:
        g = boxes_from_maps(CentredGaussianMap(s).maps(1, size, None).numpy(), threshold)[0]
        result["gaussian"][float(s)] = float(np.mean(iou(g, b) >= 0.5))
    return result


# ------------------------------------------------------------------------------------------------- (d)

def colour_overlap(params: synthetic.Params = synthetic.Params(), n_images: int = 200, radius: float = 40.0,
                   min_share: float = 0.005) -> dict:
    """Which bird colours the backgrounds share, measured on ``n_images`` regenerated images.

    Bird pixels are those where the image differs from its own background (rendered without the bird).
    For each colour of :data:`data_download.synthetic.PALETTE` we count the share of background pixels within
    ``radius`` (RGB distance) of it; a colour is *shared* if that share is at least ``min_share``.
    ``bird_pixels_shared`` is the share of bird pixels whose colour is common in the backgrounds: with
    colours quantised to 16 levels per channel, the bird pixel's cell and its 26 neighbouring cells hold at
    least ``min_share`` of the background pixels (``radius`` does not enter this measure).
    """
    specs = synthetic.class_specs(params.num_classes, params.seed)
    total = params.num_classes * params.images_per_class
    ids = np.linspace(1, total, n_images).round().astype(int)
    bg_pixels, bird_pixels = [], []
    for i in ids:
        image, bg, _ = synthetic.render_image(int(i), params, specs)
        bird = np.abs(image.astype(int) - bg.astype(int)).sum(-1) > 24
        bg_pixels.append(bg.reshape(-1, 3)[:: 7])
        bird_pixels.append(image[bird][:: 3])
    bgp = np.concatenate(bg_pixels).astype(np.float32)
    birdp = np.concatenate(bird_pixels).astype(np.float32)
    palette = np.array(list(synthetic.PALETTE.values()), np.float32)
    near = np.linalg.norm(bgp[:, None, :] - palette[None], axis=-1) <= radius        # (n_bg, colours)
    share = near.mean(0)
    # bird pixels: quantise to 16 levels per channel, compare with the background's histogram
    q = lambda p: (p // 16).astype(int) @ np.array([256, 16, 1])
    hist = np.bincount(q(bgp), minlength=4096) / len(bgp)
    # a bird pixel counts as shared if the background mass within one quantisation step is >= min_share
    cube = hist.reshape(16, 16, 16)
    from scipy.ndimage import uniform_filter
    neighbourhood = uniform_filter(cube, size=3, mode="constant") * 27
    bird_shared = float(np.mean(neighbourhood.ravel()[q(birdp)] >= min_share))
    names = list(synthetic.PALETTE)
    return {"background_share": {n: float(s) for n, s in zip(names, share)},
            "shared": [n for n, s in zip(names, share) if s >= min_share],
            "not_shared": [n for n, s in zip(names, share) if s < min_share],
            "bird_pixels_shared": bird_shared}


# ------------------------------------------------------------------------------------------------- (a)

class TinyCNN(nn.Module):
    """Four 3×3 conv blocks (BatchNorm, ReLU, 2×2 max-pool after the first three), global average pooling, a linear classifier."""

    def __init__(self, num_classes: int, width: int = 16) -> None:
        super().__init__()
        chans = [3, width, 2 * width, 4 * width, 4 * width]
        layers: list[nn.Module] = []
        for k in range(4):
            layers += [nn.Conv2d(chans[k], chans[k + 1], 3, padding=1, bias=False), nn.BatchNorm2d(chans[k + 1]),
                       nn.ReLU(inplace=True)]
            if k < 3:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(chans[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((-2, -1)))


def _jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    synthetic.save_jpeg(image, buf, quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def fill_boxes_with_background(images: torch.Tensor, boxes: torch.Tensor, image_ids,
                               params: synthetic.Params) -> torch.Tensor:
    """Replace each image's box (rounded outwards to whole pixels) by the same image's background.

    The background is regenerated without the bird and JPEG-compressed like the stored image, so that
    the filled region has the same compression statistics as its surroundings and does not reveal the
    box's shape. Everything outside the box is the stored image, untouched. ``images``: uint8 ``(n, 3, H, W)``.
    """
    specs = synthetic.class_specs(params.num_classes, params.seed)
    out = images.permute(0, 2, 3, 1).numpy().copy()
    for k, image_id in enumerate(image_ids):
        _, bg, _ = synthetic.render_image(int(image_id), params, specs)
        bg = _jpeg_roundtrip(bg, params.quality)
        x, y, w, h = boxes[k].tolist()
        x0, y0, x1, y1 = math.floor(x), math.floor(y), math.ceil(x + w), math.ceil(y + h)
        out[k, y0:y1, x0:x1] = bg[y0:y1, x0:x1]
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def train_and_test(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                   num_classes: int, epochs: int = 30, input_size: int = 64, width: int = 16, batch: int = 32,
                   lr: float = 3e-3, seed: int = 0) -> float:
    """Train :class:`TinyCNN` (Adam, random flips and shifts) on uint8 images; return test accuracy."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)

    def prep(x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255
        return F.interpolate(x, size=(input_size, input_size), mode="bilinear", antialias=True, align_corners=False)

    xtr, xte = prep(train_x), prep(test_x)
    mean, std = xtr.mean((0, 2, 3), keepdim=True), xtr.std((0, 2, 3), keepdim=True)
    xtr, xte = (xtr - mean) / std, (xte - mean) / std
    model = TinyCNN(num_classes, width)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * math.ceil(len(xtr) / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    pad = input_size // 16
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(xtr), generator=gen).split(batch):
            x = xtr[idx]
            flip = torch.rand(len(x), generator=gen) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            dx, dy = torch.randint(-pad, pad + 1, (2,), generator=gen).tolist()
            x = torch.roll(x, (dy, dx), (-2, -1))
            loss = F.cross_entropy(model(x), train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x).argmax(1) for x in xte.split(256)])
    return float((pred == test_y).float().mean())


def evidence_control(root: str | os.PathLike, class_ids=None, epochs: int = 30, input_size: int = 64,
                     width: int = 16, seed: int = 0, threads: int | None = None) -> dict:
    """Control (a): is all class evidence inside the box?

    Reads the benchmark under ``root`` (its images as written to disk), keeps ``class_ids`` (1-based;
    default: every 10th class, 20 classes from 20 different genera), and trains the same small CNN twice
    on CUB's image-level train split, testing on the held-out images: once on the normal images, once on
    the images with the box filled by the background (:func:`fill_boxes_with_background`). Returns both
    accuracies, chance, the number of test images and the one-sided binomial p-value of the filled
    accuracy exceeding chance. ``threads`` sets torch's CPU threads for the call (then restores them);
    one thread is much faster than several when other processes keep the cores busy.
    """
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _evidence_control(root, class_ids, epochs, input_size, width, seed)
    finally:
        torch.set_num_threads(previous)


def _evidence_control(root, class_ids, epochs: int, input_size: int, width: int, seed: int) -> dict:
    from scipy.stats import binomtest

    params = synthetic.read_params(root)
    if class_ids is None:
        class_ids = list(range(1, params.num_classes + 1, 10))
    splits = {}
    for part in ("train", "test"):
        ds = SyntheticCUB200(root, split=part)
        keep = np.flatnonzero(np.isin(ds.class_ids, class_ids))
        images, labels, boxes = load_tensors(ds)
        remap = {c - 1: k for k, c in enumerate(sorted(class_ids))}
        y = torch.tensor([remap[int(v)] for v in labels[keep]])
        splits[part] = (images[keep], y, boxes[keep], ds.image_ids[keep])
    n_classes = len(class_ids)
    result = {"classes": len(class_ids), "train_images": len(splits["train"][1]), "test_images": len(splits["test"][1]),
              "chance": 1.0 / n_classes}
    for arm in ("normal", "box_filled"):
        data = {}
        for part, (x, y, b, ids) in splits.items():
            data[part] = (x if arm == "normal" else fill_boxes_with_background(x, b, ids, params), y)
        acc = train_and_test(*data["train"], *data["test"], n_classes, epochs, input_size, width, seed=seed)
        result[arm] = acc
    n = result["test_images"]
    result["box_filled_p_value"] = float(binomtest(round(result["box_filled"] * n), n, result["chance"],
                                                   alternative="greater").pvalue)
    return result


def evidence_examples(root: str | os.PathLike, image_ids) -> tuple[torch.Tensor, torch.Tensor]:
    """The normal and box-filled versions of some images (uint8 ``(n, 3, H, W)`` each), for figures."""
    params = synthetic.read_params(root)
    ds = SyntheticCUB200(root)
    pos = ds.index_of(image_ids)
    images = torch.stack([torch.from_numpy(np.array(ds.load_image(p))).permute(2, 0, 1) for p in pos])
    return images, fill_boxes_with_background(images, ds.boxes[pos], image_ids, params)
