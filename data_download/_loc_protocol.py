"""The localisation protocol of DESIGN.md §3: map → box → IoU → accuracy.

Kept minimal and separate so that it can move into ``sfam_lite.metrics`` unchanged.

1. Min-max normalise the map to ``[0, 1]`` (a constant map counts as maximal everywhere).
2. Keep the pixels ``>= threshold`` (0.2, the paper's threshold).
3. Take the largest 8-connected component (``scipy.ndimage.label`` with a 3×3 structure; ties go to
   the component found first in row-major order).
4. Its bounding box ``(x, y, w, h)`` in pixel-edge coordinates (a component spanning columns ``a..b``
   has ``x = a, w = b - a + 1``), compared with the ground truth by IoU.
5. Localisation accuracy: the share of samples with ``IoU >= 0.5``.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

EIGHT_CONNECTED = np.ones((3, 3), dtype=int)


def box_from_map(saliency, threshold: float = 0.2) -> np.ndarray:
    """The box ``(x, y, w, h)`` of the largest 8-connected component of the normalised map ``>= threshold``."""
    m = np.asarray(saliency, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"Expected one (H, W) map, got shape {m.shape}.")
    if not np.isfinite(m).all():
        raise ValueError("The map holds NaN or infinite values.")
    lo, hi = m.min(), m.max()
    norm = np.ones_like(m) if hi == lo else (m - lo) / (hi - lo)
    labels, count = ndimage.label(norm >= threshold, structure=EIGHT_CONNECTED)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    rows, cols = np.nonzero(labels == 1 + int(np.argmax(sizes)))
    return np.array([cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1], float)


def boxes_from_maps(maps, threshold: float = 0.2) -> np.ndarray:
    """:func:`box_from_map` for each of ``(B, H, W)`` maps (a torch tensor or an array): ``(B, 4)``."""
    arr = maps.detach().cpu().numpy() if hasattr(maps, "detach") else np.asarray(maps)
    return np.stack([box_from_map(m, threshold) for m in arr]) if len(arr) else np.zeros((0, 4))


def iou(a, b) -> np.ndarray:
    """Intersection over union of ``(..., 4)`` boxes ``(x, y, w, h)``, broadcast; 0 where the union is empty."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    iw = np.clip(np.minimum(a[..., 0] + a[..., 2], b[..., 0] + b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 1] + a[..., 3], b[..., 1] + b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    union = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def localization_accuracy(pred_boxes, gt_boxes, iou_threshold: float = 0.5) -> float:
    """Share of samples whose predicted box has ``IoU >= iou_threshold`` with the ground truth."""
    return float(np.mean(iou(pred_boxes, gt_boxes) >= iou_threshold))
