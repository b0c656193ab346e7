"""Evaluation metrics shared by the chapters.

Every metric checks its inputs and refuses what it cannot honestly score (mismatched batch sizes, NaN maps or
embeddings, boxes without area) with a ``ValueError`` or ``TypeError`` naming the problem; half-precision inputs
are reduced in float32 or wider.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ._checks import as_float_tensor, check_boxes, check_finite, check_int, check_ndim, check_size, compute_dtype


def _embeddings(embeddings, name: str = "embeddings") -> torch.Tensor:
    embeddings = as_float_tensor(embeddings, name)
    check_ndim(embeddings, name, (2,), "(n, D), one embedding per row")
    check_finite(embeddings, name, hint="A NaN embedding has no nearest neighbours; check the model and its input.")
    return embeddings


def nearest_others(embeddings: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``(n, k)`` of each item's ``k`` most cosine-similar *other* items, most similar first
    (``1 <= k <= n - 1``: an item is never its own neighbour)."""
    embeddings = _embeddings(embeddings)
    k = check_int(k, "k", 1)
    if k > len(embeddings) - 1:
        raise ValueError(f"k = {k} neighbours asked for among {len(embeddings)} items; each item has only "
                         f"{len(embeddings) - 1} others.")
    x = torch.nn.functional.normalize(embeddings.to(compute_dtype(embeddings.dtype)), dim=-1)
    sim = x @ x.T
    sim.fill_diagonal_(-float("inf"))
    return sim.topk(k, dim=1).indices


def recall_at_k(embeddings: torch.Tensor, labels: torch.Tensor, ks=(1, 2, 4, 8)) -> dict[int, float]:
    """Recall@K for retrieval with every item as query and the rest as gallery (the query itself excluded):
    the share of queries with at least one same-label item among their K most cosine-similar others.

    The share is over all B queries: a query whose class has no other item (a "lone" query) can never hit
    and counts as a miss, whereas pytorch-metric-learning's ``AccuracyCalculator`` leaves lone queries out of
    its average, so Recall@1 here = pml's ``precision_at_1`` × (non-lone queries / B); the two are equal when no
    class has a single item (``tests/test_pml_crosscheck.py``). ``embeddings`` ``(n, D)`` must be finite and
    ``labels`` ``(n,)`` integers; every K must be in ``1 .. n - 1``.
    """
    embeddings = _embeddings(embeddings)
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}.")
    if labels.ndim != 1 or len(labels) != len(embeddings):
        raise ValueError(f"labels must have shape ({len(embeddings)},), one per embedding, got {tuple(labels.shape)}.")
    if labels.is_floating_point() or labels.is_complex():
        raise TypeError(f"labels must be integer class ids, got dtype {labels.dtype}.")
    ks = tuple(ks) if not isinstance(ks, int) else (ks,)
    if not ks:
        raise ValueError("ks is empty; give at least one K, e.g. ks=(1,).")
    ks = tuple(check_int(k, "each K in ks", 1) for k in ks)
    top = nearest_others(embeddings, max(ks))
    labels = labels.to(top.device)
    hit = labels[top] == labels[:, None]
    return {k: hit[:, :k].any(1).sum().item() / len(labels) for k in ks}


def mean_and_interval(values: torch.Tensor) -> tuple[float, float]:
    """Mean and the half-width of its 95 % normal confidence interval, ``1.96 · s / √n`` with ``s`` the sample
    standard deviation (divisor n − 1); needs n >= 2 finite values (a tensor, list or array, flattened).

    The normal quantile is the large-sample interval the book uses for hundreds of episodes or queries; for a
    handful of values Student's t quantile is wider (12.7 instead of 1.96 for n = 2, 2.05 for n = 30).
    Identical values give their value and a half-width of exactly 0 (not a rounding residue of the mean);
    values whose mean or spread exceeds float64's range are refused rather than reported as infinity."""
    if not isinstance(values, torch.Tensor):   # Python floats are float64: do not round them to float32 first;
        values = torch.as_tensor(np.array(values, dtype=np.float64))   # copied: torch refuses negative strides
    values = as_float_tensor(values, "values").double().flatten()
    if len(values) < 2:
        raise ValueError(f"values holds {len(values)} value(s); a confidence interval needs at least 2.")
    check_finite(values, "values", hint="Remove or explain them before averaging.")
    if bool((values == values[0]).all()):
        return values[0].item(), 0.0
    mean, half = values.mean().item(), (1.96 * values.std(unbiased=True) / len(values) ** 0.5).item()
    if not (math.isfinite(mean) and math.isfinite(half)):
        raise ValueError(f"the mean or interval of values overflows float64 (largest |value| "
                         f"{values.abs().max().item():.4g}); rescale the values (e.g. other units) first.")
    return mean, half


def clustered_interval(values, clusters) -> tuple[float, float, int]:
    """Mean of ``values`` and the half-width of its 95 % interval when the samples of one cluster are not
    independent (the same query image drawn in several episodes, or the images of one class), and the number of
    clusters G. The interval is the cluster-robust (sandwich) one, normal quantile:
    ``1.96 · sqrt(G / (G − 1) · Σ_g (Σ_{i in g} (x_i − x̄))² / n²)``; with one sample per cluster it is exactly
    :func:`mean_and_interval`'s ``1.96 · s / √n``. ``values`` and ``clusters`` (any hashable labels) are 1-d of
    one length; at least 2 clusters are needed."""
    import numpy as np
    if not isinstance(values, torch.Tensor):   # as mean_and_interval: lists and arrays are taken in float64
        values = torch.as_tensor(np.asarray(values, dtype=np.float64))
    x = as_float_tensor(values, "values").double().flatten().numpy()
    labels = np.asarray(clusters).reshape(-1)
    if labels.shape != x.shape:
        raise ValueError(f"clusters must give one label per value: {labels.shape[0]} labels for {x.shape[0]} values.")
    check_finite(torch.from_numpy(x), "values", hint="Remove or explain them before averaging.")
    _, inverse = np.unique(labels, return_inverse=True)
    g = int(inverse.max()) + 1 if len(x) else 0
    if g < 2:
        raise ValueError(f"values fall into {g} cluster(s); a clustered interval needs at least 2.")
    mean = float(x.mean())
    sums = np.bincount(inverse, x - mean, minlength=g)
    variance = g / (g - 1) * float((sums ** 2).sum()) / len(x) ** 2
    return mean, 1.96 * math.sqrt(variance), g


def box_masks(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(B, H, W)`` masks of the pixels whose centres lie inside the ``(B, 4)`` boxes ``(x, y, w, h)``.
    Boxes need finite coordinates and positive width and height; they may reach outside the image."""
    boxes = check_boxes(boxes)
    h, w = check_size(size)
    ys = torch.arange(h, dtype=torch.float64, device=boxes.device) + 0.5
    xs = torch.arange(w, dtype=torch.float64, device=boxes.device) + 0.5
    b = boxes.double()
    inside_y = (ys >= b[:, 1:2]) & (ys < b[:, 1:2] + b[:, 3:4])
    inside_x = (xs >= b[:, 0:1]) & (xs < b[:, 0:1] + b[:, 2:3])
    return inside_y[:, :, None] & inside_x[:, None, :]


def _maps_and_boxes(maps, boxes) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, H, W)`` finite maps and one valid box per map."""
    maps = as_float_tensor(maps, "maps")
    check_ndim(maps, "maps", (3,), "(B, H, W), one map per box (squeeze a channel dimension first)")
    boxes = check_boxes(boxes, batch=maps.shape[0])
    check_finite(maps, "maps", hint="A map with NaN has no maximum and no mass to score.")
    return maps, boxes.to(maps.device)


def pointing_game(maps: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Whether each ``(H, W)`` map's maximum (the first in row-major order) lies inside its box: ``(B,)`` bool.
    ``maps`` ``(B, H, W)`` must be finite, with one ``(x, y, w, h)`` box per map in ``boxes`` ``(B, 4)``."""
    maps, boxes = _maps_and_boxes(maps, boxes)
    masks = box_masks(boxes, maps.shape[-2:])
    peak = maps.flatten(1).argmax(1)
    return masks.flatten(1).gather(1, peak[:, None])[:, 0]


def mass_in_box(maps: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Share of each min-max normalised map's total mass that lies inside its box: ``(B,)``.
    Compare it with the box's share of the image (:func:`box_share`), which a map of independent, identically
    distributed values scores on average. A constant map normalises to ones (:func:`sfam_lite.maps.minmax_normalize`)
    and scores exactly the box's share: equally salient everywhere, it puts no more mass in the box than outside.
    ``maps`` ``(B, H, W)`` must be finite (half precision is normalised in float32), with one box per map."""
    from .maps import minmax_normalize
    maps, boxes = _maps_and_boxes(maps, boxes)
    m = minmax_normalize(maps.to(compute_dtype(maps.dtype))).double()
    masks = box_masks(boxes, maps.shape[-2:])
    total = m.flatten(1).sum(1)
    return torch.where(total > 0, (m * masks).flatten(1).sum(1) / total.clamp_min(1e-300), torch.zeros_like(total))


def box_share(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Share of the image's pixels (by centre) inside each box: ``(B,)``."""
    return box_masks(boxes, size).flatten(1).double().mean(1)


# -- the localisation tables' statistics (sfam_lite.evaluate) --

def mean_and_half(values: np.ndarray, groups: np.ndarray | None = None) -> tuple[float, float, int]:
    """Mean and half-width of its 95 % normal interval (:func:`sfam_lite.metrics.mean_and_interval`), and the number
    of units. With ``groups`` (an episode index per sample) the units are the groups' means, as few-shot accuracy
    is reported; otherwise the samples. A single unit has no interval: its half-width is NaN (a table still
    prints, e.g. for a one-episode smoke run)."""
    values = np.asarray(values, float)
    if groups is not None:
        _, inverse = np.unique(groups, return_inverse=True)
        values = np.bincount(inverse, values) / np.bincount(inverse)
    if len(values) < 2:
        return float(values.mean()), float("nan"), len(values)
    mean, half = mean_and_interval(values)
    return mean, half, len(values)


def summarise(ious: np.ndarray, groups: np.ndarray | None = None, iou_threshold: float = 0.5) -> dict:
    """Mean IoU and localisation accuracy (share with IoU ≥ ``iou_threshold``) with 95 % intervals
    (:func:`mean_and_half`)."""
    ious = np.asarray(ious, float)
    m_iou, h_iou, units = mean_and_half(ious, groups)
    m_acc, h_acc, _ = mean_and_half(ious >= iou_threshold, groups)
    return {"mean_iou": m_iou, "mean_iou_half": h_iou, "accuracy": m_acc, "accuracy_half": h_acc,
            "samples": int(len(ious)), "interval_units": units}


def paired_difference(a: np.ndarray, b: np.ndarray, groups: np.ndarray | None = None,
                      iou_threshold: float = 0.5) -> dict:
    """Method a minus method b on the same samples: the differences of mean IoU and of localisation accuracy,
    each with the 95 % interval of the paired difference. An interval that excludes 0 is a detected difference."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    d_iou, h_iou, units = mean_and_half(a - b, groups)
    d_acc, h_acc, _ = mean_and_half((a >= iou_threshold).astype(float) - (b >= iou_threshold), groups)
    return {"iou_difference": d_iou, "iou_half": h_iou, "accuracy_difference": d_acc, "accuracy_half": h_acc,
            "interval_units": units}
