"""Reference maps that ignore the image: what any explanation must beat to be said to localise.

They are called like an explainer (``ref(query_images, support_images)`` or
``ref.explain_features(query_features, support_features, size)``) and return an
:class:`~sfam_lite.explainer.Explanation`, so they go through exactly the evaluation path of the methods.

* :class:`CentreBoxMap` — ones inside a centred box of a given size (e.g. the mean ground-truth size, which
  on real data can be computed from the annotations alone), zeros outside: its box *is* that centre box;
* :class:`CentredGaussianMap` — a centred isotropic Gaussian;
* :class:`RandomMap` — uniform noise, seeded, at the feature map's resolution and upsampled like a method's;
* :func:`centre_point_map` — ones on the central pixels only: the centre point as a map.
"""
from __future__ import annotations

import numpy as np
import torch

from ._checks import check_ndim
from .explainer import Explanation
from .maps import upsample


def centre_box_map(size: tuple[int, int], box_size: tuple[float, float]) -> torch.Tensor:
    """``(H, W)`` map of ones on the pixels whose centres lie in a ``box_size = (w, h)`` box centred in the image."""
    h, w = size
    bw, bh = box_size
    ys, xs = torch.arange(h, dtype=torch.float64) + 0.5, torch.arange(w, dtype=torch.float64) + 0.5
    inside_y = (ys >= (h - bh) / 2) & (ys < (h + bh) / 2)
    inside_x = (xs >= (w - bw) / 2) & (xs < (w + bw) / 2)
    return (inside_y[:, None] & inside_x[None, :]).to(torch.get_default_dtype())


def centre_point_map(size: tuple[int, int]) -> torch.Tensor:
    """``(H, W)`` map of ones on the pixels nearest the image centre, zeros elsewhere: along each axis the
    central 2 pixels of an even side, the central pixel of an odd one. The most concentrated centred map; its
    first maximum in row-major order (the one :func:`sfam_lite.metrics.pointing_game` takes) is the top-left
    of these pixels."""
    h, w = size
    return centre_box_map(size, (2 - w % 2, 2 - h % 2))


def centred_gaussian(size: tuple[int, int], sigma: float, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``(H, W)`` centred isotropic Gaussian with standard deviation ``sigma`` pixels (pixel centres at +0.5),
    computed in float64 and returned as ``dtype`` (default: torch's default dtype)."""
    h, w = size
    ys, xs = torch.arange(h, dtype=torch.float64) + 0.5, torch.arange(w, dtype=torch.float64) + 0.5
    d2 = (ys[:, None] - h / 2) ** 2 + (xs[None, :] - w / 2) ** 2
    return torch.exp(-d2 / (2 * sigma ** 2)).to(dtype or torch.get_default_dtype())


class ReferenceMap:
    """Base: an image-independent map per image, called like an explainer (it needs no model)."""

    def maps(self, n: int, size: tuple[int, int], grid: tuple[int, int] | None) -> torch.Tensor:
        """``(n, H, W)`` maps for ``n`` images of ``size``; ``grid`` is the feature map's resolution, if known."""
        raise NotImplementedError

    def _explanation(self, b: int, k: int, size, grid) -> Explanation:
        maps = self.maps(b * (k + 1), tuple(int(s) for s in size), grid).reshape(b, k + 1, *size)
        return Explanation(query_maps=maps[:, 0], support_maps=maps[:, 1:])

    def __call__(self, query_images: torch.Tensor, support_images: torch.Tensor) -> Explanation:
        check_ndim(query_images, "query_images", (4,), "(B, C, H, W)")
        check_ndim(support_images, "support_images", (4, 5), "(K, C, H, W) or (B, K, C, H, W)")
        return self._explanation(query_images.shape[0], support_images.shape[-4], query_images.shape[-2:], None)

    def explain_features(self, query_features: torch.Tensor, support_features: torch.Tensor,
                         size: tuple[int, int] | None = None, head=None) -> Explanation:
        check_ndim(query_features, "query_features", (4,), "(B, N, h, w)")
        check_ndim(support_features, "support_features", (5,), "(B, K, N, h, w)")
        grid = tuple(query_features.shape[-2:])
        return self._explanation(query_features.shape[0], support_features.shape[1], size or grid, grid)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class CentreBoxMap(ReferenceMap):
    """Ones inside a centred box of ``box_size = (w, h)`` pixels (at the explained images' resolution)."""

    def __init__(self, box_size: tuple[float, float]):
        if len(box_size) != 2 or not all(float(s) > 0 for s in box_size):
            raise ValueError(f"box_size must be two positive numbers (width, height) in pixels, got {box_size}.")
        self.box_size = tuple(float(s) for s in box_size)

    def maps(self, n, size, grid):
        return centre_box_map(size, self.box_size).expand(n, *size)


class CentredGaussianMap(ReferenceMap):
    """A centred Gaussian with standard deviation ``sigma`` times the image width."""

    def __init__(self, sigma: float = 0.25):
        if not float(sigma) > 0:
            raise ValueError(f"sigma must be a positive fraction of the image width, got {sigma}.")
        self.sigma = float(sigma)

    def maps(self, n, size, grid):
        return centred_gaussian(size, self.sigma * size[1]).expand(n, *size)


class RandomMap(ReferenceMap):
    """Uniform noise in [0, 1), drawn on ``grid`` (default: the feature map's resolution when explaining
    features, else the image's) and upsampled bilinearly like a method's map. Seeded: the same sequence of
    calls gives the same maps."""

    def __init__(self, seed: int = 0, grid: tuple[int, int] | None = None):
        self.grid = grid
        self._generator = torch.Generator().manual_seed(int(seed))

    def maps(self, n, size, grid):
        grid = self.grid or grid or size
        noise = torch.rand(n, *grid, generator=self._generator, dtype=torch.float64).to(torch.get_default_dtype())
        return upsample(noise, size)


#: the σ (fraction of the width) the centred Gaussian may take; the best on the validation boxes is used
GAUSSIAN_SIGMAS = (1 / 8, 1 / 6, 1 / 4, 1 / 3, 1 / 2)


def reference_priors(val_boxes: torch.Tensor, size: tuple[int, int], threshold: float = 0.2):
    """The centre box's size (mean width and height of the validation boxes) and the Gaussian's σ (the one of
    :data:`GAUSSIAN_SIGMAS` with the best localisation accuracy on the validation boxes): both chosen on
    validation data, never on the test classes."""
    from .localization import boxes_from_maps, iou      # scipy: imported when used, not by ``import sfam_lite``
    box_size = tuple(val_boxes[:, 2:].double().mean(0).tolist())
    best = max(GAUSSIAN_SIGMAS, key=lambda s: float(np.mean(iou(
        boxes_from_maps(CentredGaussianMap(s).maps(1, size, None), threshold), val_boxes.numpy()) >= 0.5)))
    return box_size, best
