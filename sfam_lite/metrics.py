"""Evaluation metrics shared by the chapters."""
from __future__ import annotations

import torch


def nearest_others(embeddings: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``(n, k)`` of each item's ``k`` most cosine-similar *other* items, most similar first."""
    x = torch.nn.functional.normalize(embeddings, dim=-1)
    sim = x @ x.T
    sim.fill_diagonal_(-float("inf"))
    return sim.topk(k, dim=1).indices


def recall_at_k(embeddings: torch.Tensor, labels: torch.Tensor, ks=(1, 2, 4, 8)) -> dict[int, float]:
    """Recall@K for retrieval with every item as query and the rest as gallery (the query itself excluded):
    the share of queries with at least one same-label item among their K most cosine-similar others."""
    top = nearest_others(embeddings, max(ks))
    hit = labels[top] == labels[:, None]
    return {k: hit[:, :k].any(1).sum().item() / len(labels) for k in ks}


def mean_and_interval(values: torch.Tensor) -> tuple[float, float]:
    """Mean and the half-width of its 95 % normal confidence interval (1.96 · std / √n)."""
    values = values.double()
    return values.mean().item(), (1.96 * values.std(unbiased=True) / len(values) ** 0.5).item()


def box_masks(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(B, H, W)`` masks of the pixels whose centres lie inside the ``(B, 4)`` boxes ``(x, y, w, h)``."""
    h, w = size
    ys = torch.arange(h, dtype=torch.float64) + 0.5
    xs = torch.arange(w, dtype=torch.float64) + 0.5
    b = boxes.double()
    inside_y = (ys >= b[:, 1:2]) & (ys < b[:, 1:2] + b[:, 3:4])
    inside_x = (xs >= b[:, 0:1]) & (xs < b[:, 0:1] + b[:, 2:3])
    return inside_y[:, :, None] & inside_x[:, None, :]


def pointing_game(maps: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Whether each ``(H, W)`` map's maximum (the first in row-major order) lies inside its box: ``(B,)`` bool."""
    masks = box_masks(boxes, maps.shape[-2:])
    peak = maps.flatten(1).argmax(1)
    return masks.flatten(1).gather(1, peak[:, None])[:, 0]


def mass_in_box(maps: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Share of each min-max normalised map's total mass that lies inside its box: ``(B,)``.
    Compare it with the box's share of the image (:func:`box_share`), which a map of independent, identically
    distributed values scores on average. A constant map normalises to ones (:func:`sfam_lite.maps.minmax_normalize`)
    and scores exactly the box's share: equally salient everywhere, it puts no more mass in the box than outside."""
    from .maps import minmax_normalize
    m = minmax_normalize(maps).double()
    masks = box_masks(boxes, maps.shape[-2:])
    total = m.flatten(1).sum(1)
    return torch.where(total > 0, (m * masks).flatten(1).sum(1) / total.clamp_min(1e-300), torch.zeros_like(total))


def box_share(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Share of the image's pixels (by centre) inside each box: ``(B,)``."""
    return box_masks(boxes, size).flatten(1).double().mean(1)
