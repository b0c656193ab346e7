"""Weakly-supervised localisation: explanation map → box → IoU → accuracy (the paper's §4.3).

The protocol, step by step:

1. Min-max normalise each map to ``[0, 1]`` with :func:`sfam_lite.maps.minmax_normalize`, the package's one
   rule. A constant map normalises to ones: it is equally salient everywhere, so its box is the whole image
   (and :func:`sfam_lite.metrics.mass_in_box` gives it the box's share of the image).
2. Keep the pixels ``>= threshold``; the paper fixes the threshold at 0.2.
3. Take the largest 8-connected component of the kept pixels (pixels touching only at a corner are
   connected). The paper says only "threshold 0.2"; the largest component is our choice, the usual
   convention of weakly-supervised localisation. Among components of equal size the one whose first pixel
   comes first in row-major order wins (the lowest ``scipy.ndimage.label`` number).
4. Its bounding box ``(x, y, w, h)`` in pixel-edge coordinates: a component spanning columns ``a..b`` and
   rows ``c..d`` has ``x = a, w = b - a + 1, y = c, h = d - c + 1``.
5. Compare the box with the ground truth by intersection over union (:func:`iou`).
6. Localisation accuracy (:func:`localization_accuracy`): the share of samples with ``IoU >= 0.5``.

:func:`boxes_from_maps` does steps 1-4 for a whole batch at once: steps 1-2 as one threshold per map (the least
value whose normalised value reaches the threshold, so no pixel is normalised), one ``scipy.ndimage.label`` call
on the stacked maps, with a structure that never connects two maps, and vectorised numpy for the rest.
"""
from __future__ import annotations

import numbers

import numpy as np
import torch
from scipy import ndimage

from ._checks import check_threshold
from .maps import minmax_normalize

__all__ = ["boxes_from_maps", "kept_mask", "mask_boxes", "iou", "localization_accuracy"]

# 8-connectivity inside each (H, W) map and none across the batch axis: the first and last slices are zero.
_STRUCTURE = np.zeros((3, 3, 3), dtype=bool)
_STRUCTURE[1] = True

# Pixels per chunk of maps (36 maps of 84 x 84): masks and labels of a chunk stay in the CPU caches (the size is
# chosen in benchmarks/README.md).
_PIXELS_PER_CHUNK = 1 << 18


def _as_maps(maps) -> tuple[np.ndarray, bool]:
    """``maps`` as a real ``(B, H, W)`` numpy array (not copied where possible) and whether one map was given."""
    if isinstance(maps, torch.Tensor):
        if maps.is_complex():
            raise TypeError(f"maps must be real-valued, got dtype {maps.dtype}.")
        t = maps.detach().cpu()
        arr = (t if t.dtype in (torch.float32, torch.float64) else t.to(torch.float64)).numpy()
    else:
        arr = np.asarray(maps)
        if np.iscomplexobj(arr):
            raise TypeError(f"maps must be real-valued, got dtype {arr.dtype}.")
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise TypeError(f"maps must be a torch.Tensor or a numeric numpy array, got {type(maps).__name__} "
                            f"of dtype {arr.dtype}.")
    if arr.ndim not in (2, 3):
        raise ValueError(f"maps must have shape (B, H, W) or (H, W), got shape {arr.shape}; "
                         f"stack several maps along a leading batch axis.")
    if arr.shape[-2] == 0 or arr.shape[-1] == 0:
        raise ValueError(f"maps must have at least one pixel per map, got shape {arr.shape}.")
    return (arr[None], True) if arr.ndim == 2 else (arr, False)


def _bounding_boxes(mask: np.ndarray) -> np.ndarray:
    """``(B, 4)`` boxes ``(x, y, w, h)`` around the True pixels of each ``(H, W)`` slice (each has at least one)."""
    rows, cols = mask.any(axis=2), mask.any(axis=1)                      # (B, H), (B, W)
    y0, x0 = rows.argmax(axis=1), cols.argmax(axis=1)
    y1 = mask.shape[1] - rows[:, ::-1].argmax(axis=1)                   # exclusive ends
    x1 = mask.shape[2] - cols[:, ::-1].argmax(axis=1)
    return np.stack([x0, y0, x1 - x0, y1 - y0], axis=1).astype(np.float64)


def _kept_pixels(chunk: np.ndarray, threshold: float, start: int = 0) -> np.ndarray:
    """``minmax_normalize(chunk) >= threshold`` for finite maps ``(B, H, W)``, exactly, without normalising pixels.

    The normalised value ``(m - lo) / span`` (float64, as :func:`sfam_lite.maps.minmax_normalize` computes it) never
    decreases as ``m`` grows, so a map keeps exactly its pixels ``m >= cut``, where ``cut`` is the least value of
    the map's dtype whose normalised value reaches the threshold. ``cut`` starts at ``lo + threshold · span`` and
    is moved one representable value at a time until it is that least value; maps where this does not settle (a
    range too large for float64) are normalised pixel by pixel instead. ``start`` numbers the maps in errors."""
    if chunk.dtype not in (np.float32, np.float64):
        chunk = chunk.astype(np.float64)
    lo, hi = chunk.min(axis=(1, 2)), chunk.max(axis=(1, 2))
    finite = np.isfinite(lo) & np.isfinite(hi)                     # NaN propagates to min and max; inf reaches one
    if not finite.all():
        bad = (start + np.flatnonzero(~finite)).tolist()
        raise ValueError(f"maps holds NaN or infinite values in map(s) {bad[:10]}{' ...' if len(bad) > 10 else ''}; "
                         f"the protocol needs finite maps. Check the model's input and weights.")
    lo64 = lo.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        span = hi.astype(np.float64) - lo64
    constant, exact = span == 0, ~np.isfinite(span)
    usable = ~(constant | exact)
    safe = np.where(usable, span, 1.0)

    def reaches(value):              # the normalised value of ``value`` in each map reaches the threshold
        return (value.astype(np.float64) - lo64) / safe >= threshold

    with np.errstate(over="ignore"):
        cut = np.where(usable, lo64 + threshold * safe, lo64).astype(chunk.dtype)
    for _ in range(64):              # up to the first value that reaches the threshold ...
        low = usable & ~reaches(cut)
        if not low.any():
            break
        cut[low] = np.nextafter(cut[low], np.inf)
    for _ in range(64):              # ... and down to the least one
        below = np.nextafter(cut, -np.inf)
        high = usable & reaches(below)
        if not high.any():
            break
        cut[high] = below[high]
    exact |= usable & (~reaches(cut) | reaches(np.nextafter(cut, -np.inf)))     # not settled: pixel by pixel
    cut[constant] = -np.inf                                           # a constant map normalises to ones
    keep = chunk >= cut[:, None, None]
    if exact.any():
        keep[exact] = minmax_normalize(chunk[exact]) >= threshold
        # Every map keeps its maximum (normalised to exactly 1 >= threshold) unless max - min overflows.
        empty = exact & ~keep.any(axis=(1, 2))
        if empty.any():
            bad = (start + np.flatnonzero(empty)).tolist()
            raise ValueError(f"maps {bad[:10]}{' ...' if len(bad) > 10 else ''} span a range (max - min) too large "
                             f"for float64; rescale them, e.g. divide by their largest absolute value.")
    return keep


def _largest_components(keep: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
    """Mask ``(B, H, W)`` of the largest 8-connected component of each slice of ``keep`` (each non-empty);
    ``labels``, an int32 array of ``keep``'s shape, is overwritten (giving it saves an allocation per call)."""
    if labels is None:
        labels = np.empty(keep.shape, dtype=np.int32)
    count = ndimage.label(keep, structure=_STRUCTURE, output=labels)
    # scipy numbers the components in row-major order of their first pixel, so the labels of map b are the
    # consecutive run first[b]..last[b], and among equal sizes the lowest label is the first component.
    last = labels.reshape(len(keep), -1).max(axis=1)
    first = np.concatenate([[1], last[:-1] + 1])
    if last[-1] != count or (last < first).any():
        raise RuntimeError("scipy.ndimage.label numbered the components out of row-major order.")
    several = last > first
    if not several.any():                                               # one component per map
        return keep
    # Sizes, counted only in the maps with several components (the others' labels count 0, and win alone).
    sizes = np.bincount(labels[several].ravel(), minlength=count + 1)
    largest = np.maximum.reduceat(sizes, first)                         # per map
    candidates = np.flatnonzero(sizes[1:] == np.repeat(largest, last - first + 1)) + 1
    best = candidates[np.searchsorted(candidates, first)]              # the lowest largest label of each map
    return labels == best.astype(labels.dtype)[:, None, None]


def _kept_relative_to_max(chunk: np.ndarray, threshold: float, start: int = 0) -> np.ndarray:
    """``chunk >= threshold · max`` per map (float64), the CAM convention without the min subtraction; a map whose
    maximum is not positive keeps its maximal pixels (an all-zero map keeps every pixel, as a constant map does
    under min-max). ``start`` numbers the maps in errors."""
    values = chunk.astype(np.float64, copy=False)
    hi = values.max(axis=(1, 2))
    finite = np.isfinite(values).all(axis=(1, 2))
    if not finite.all():
        bad = (start + np.flatnonzero(~finite)).tolist()
        raise ValueError(f"maps holds NaN or infinite values in map(s) {bad[:10]}{' ...' if len(bad) > 10 else ''}; "
                         f"the protocol needs finite maps. Check the model's input and weights.")
    cut = np.where(hi > 0, threshold * hi, hi)
    return values >= cut[:, None, None]


#: how :func:`boxes_from_maps` sets each map's threshold: relative to its range (min-max, the book's protocol)
#: or to its maximum (keep pixels >= threshold x max, the usual CAM convention)
RELATIVE_TO = ("range", "max")


def _masks(maps, threshold, largest_component: bool, relative_to: str):
    """``(single, chunks)``: whether one map was given, and an iterator over the kept-pixel masks ``(b, H, W)`` of
    consecutive chunks of the maps (steps 1-3 of the protocol)."""
    threshold = check_threshold(threshold)
    if relative_to not in RELATIVE_TO:
        raise ValueError(f"relative_to must be one of {RELATIVE_TO} (the threshold relative to the map's range, "
                         f"as the book's protocol, or to its maximum), got {relative_to!r}.")
    kept = _kept_pixels if relative_to == "range" else _kept_relative_to_max
    t, single = _as_maps(maps)

    def chunks():
        per_chunk = max(1, _PIXELS_PER_CHUNK // (t.shape[1] * t.shape[2]))
        labels = np.empty((min(per_chunk, len(t)), *t.shape[1:]), dtype=np.int32)   # reused across chunks
        for start in range(0, len(t), per_chunk):           # chunks of maps: cache locality, bounded memory
            keep = kept(t[start:start + per_chunk], threshold, start)
            yield _largest_components(keep, labels[:len(keep)]) if largest_component else keep
    return single, (t.shape[1:], chunks())


def kept_mask(maps, threshold: float = 0.2, largest_component: bool = True, relative_to: str = "range") -> np.ndarray:
    """The pixels the protocol keeps, as a boolean mask of ``maps``' shape (``(B, H, W)`` or one ``(H, W)``): those
    whose min-max normalised value is ``>= threshold`` (or ``>= threshold · max`` with ``relative_to="max"``), and
    of them only the largest 8-connected component unless ``largest_component=False``. The box of
    :func:`boxes_from_maps` is this mask's bounding box (:func:`mask_boxes`)."""
    single, (shape, chunks) = _masks(maps, threshold, largest_component, relative_to)
    out = list(chunks)
    mask = np.concatenate(out) if out else np.zeros((0, *shape), dtype=bool)
    return mask[0] if single else mask


def mask_boxes(masks) -> np.ndarray:
    """Bounding boxes ``(x, y, w, h)`` (pixel edges, float64) of non-empty boolean masks ``(B, H, W)``: ``(B, 4)``;
    one ``(H, W)`` mask gives ``(4,)``."""
    m = np.asarray(masks, dtype=bool)
    single = m.ndim == 2
    m = m[None] if single else m
    if m.ndim != 3 or (len(m) and not m.any(axis=(1, 2)).all()):
        raise ValueError(f"masks must be (B, H, W) or (H, W) with at least one True pixel each, got shape {m.shape}.")
    boxes = _bounding_boxes(m) if len(m) else np.zeros((0, 4))
    return boxes[0] if single else boxes


def boxes_from_maps(maps, threshold: float = 0.2, largest_component: bool = True,
                    relative_to: str = "range") -> np.ndarray:
    """Localisation boxes ``(x, y, w, h)`` (pixel edges, float64) of explanation maps: ``(B, 4)``.

    ``maps`` is a ``(B, H, W)`` torch tensor (any device or dtype; it is detached) or array; one ``(H, W)``
    map gives ``(4,)``. Each map is min-max normalised (:func:`sfam_lite.maps.minmax_normalize`, in float64;
    a constant map becomes ones), the pixels ``>= threshold`` are kept, and the box is that of the largest
    8-connected component (ties: the component whose first pixel comes first in row-major order), or, with
    ``largest_component=False``, of all kept pixels (:func:`kept_mask`). An empty batch gives ``(0, 4)``.
    ``relative_to="max"`` keeps the pixels ``>= threshold · max`` instead (no min subtraction; chapter 7 shows
    what the choice does to the tables).
    """
    single, (_, chunks) = _masks(maps, threshold, largest_component, relative_to)
    boxes = [_bounding_boxes(keep) for keep in chunks]
    out = np.concatenate(boxes) if boxes else np.zeros((0, 4))
    return out[0] if single else out


def _as_boxes(boxes, name: str) -> np.ndarray:
    b = boxes.detach().cpu().numpy() if isinstance(boxes, torch.Tensor) else np.asarray(boxes)
    if b.dtype == object or not (np.issubdtype(b.dtype, np.number)) or np.iscomplexobj(b):
        raise TypeError(f"{name} must be real-valued boxes (..., 4), got dtype {b.dtype}.")
    b = b.astype(np.float64)
    if b.ndim == 0 or b.shape[-1] != 4:
        raise ValueError(f"{name} must have shape (..., 4) holding boxes (x, y, w, h), got shape {b.shape}.")
    if not np.isfinite(b).all():
        raise ValueError(f"{name} contains non-finite values (NaN or inf); boxes must be finite.")
    if (b[..., 2:] < 0).any():
        raise ValueError(f"{name} has a negative width or height; boxes are (x, y, w, h) with w, h >= 0, "
                         f"not corner pairs (x0, y0, x1, y1).")
    return b


def iou(a, b) -> np.ndarray:
    """Intersection over union of boxes ``(x, y, w, h)`` of shapes ``(..., 4)``, broadcast; 0 where the union
    is empty (two boxes of zero area)."""
    a, b = _as_boxes(a, "a"), _as_boxes(b, "b")
    try:
        np.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    except ValueError:
        raise ValueError(f"a has {a.shape[:-1]} box(es) and b {b.shape[:-1]}: the box counts do not broadcast. Give "
                         "as many boxes in b as in a (one pair per row), a single box in one of them, or a[:, None] "
                         "and b[None] for the IoU of every pair.") from None
    iw = np.clip(np.minimum(a[..., 0] + a[..., 2], b[..., 0] + b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 1] + a[..., 3], b[..., 1] + b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    union = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def localization_accuracy(pred, gt, iou_threshold: float = 0.5) -> float:
    """Share of samples whose predicted box has ``IoU >= iou_threshold`` with its ground-truth box.

    ``pred`` and ``gt`` are ``(N, 4)`` boxes ``(x, y, w, h)`` of the same length ``N >= 1``.
    """
    if isinstance(iou_threshold, bool) or not isinstance(iou_threshold, numbers.Real):
        raise TypeError(f"iou_threshold must be a real number in [0, 1], got {type(iou_threshold).__name__}.")
    if not 0.0 <= float(iou_threshold) <= 1.0:
        raise ValueError(f"iou_threshold must lie in [0, 1] (the usual value is 0.5), got {iou_threshold!r}.")
    p, g = _as_boxes(pred, "pred"), _as_boxes(gt, "gt")
    if p.ndim != 2 or g.ndim != 2:
        raise ValueError(f"pred and gt must both have shape (N, 4), got {p.shape} and {g.shape}.")
    if len(p) != len(g):
        raise ValueError(f"pred has {len(p)} boxes but gt has {len(g)}; give one predicted box per sample.")
    if len(p) == 0:
        raise ValueError("pred and gt are empty; the accuracy of no samples is undefined.")
    return float(np.mean(iou(p, g) >= iou_threshold))
