"""Figures the chapters share: heat maps over images, and query/support explanation panels."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from .maps import minmax_normalize


def to_image(image: torch.Tensor, mean=None, std=None) -> np.ndarray:
    """A ``(C, H, W)`` tensor (optionally normalised with ``mean``/``std``) as an ``(H, W, C)`` array in [0, 1]."""
    image = image.detach().float().cpu()
    if mean is not None:
        image = image * torch.as_tensor(std).view(-1, 1, 1) + torch.as_tensor(mean).view(-1, 1, 1)
    image = image.clamp(0, 1).permute(1, 2, 0).numpy()
    return image[..., 0] if image.shape[-1] == 1 else image


def overlay(ax, image: torch.Tensor, heat: torch.Tensor | None = None, title: str | None = None,
            alpha: float = 0.5, cmap: str = "jet", mean=None, std=None):
    """Draw ``image`` on ``ax`` with the min-max normalised ``heat`` map on top; return the heat-map artist."""
    ax.imshow(to_image(image, mean, std), cmap="gray" if image.shape[0] == 1 else None)
    artist = None
    if heat is not None:
        heat = minmax_normalize(heat.detach().float().cpu())
        artist = ax.imshow(heat.numpy(), cmap=cmap, alpha=alpha, vmin=0, vmax=1)
    if title:
        ax.set_title(title, fontsize=9)
    ax.set_axis_off()
    return artist


def show_explanation(query_images: torch.Tensor, support_images: torch.Tensor, explanation, index: int = 0,
                     mean=None, std=None, size: float = 2.4):
    """One row: query ``index`` and its K support images, each with its SFAM map over it. Returns the figure."""
    supports = support_images if support_images.ndim == 4 else support_images[index]
    k = supports.shape[0]
    fig, axes = plt.subplots(1, k + 1, figsize=(size * (k + 1), size), squeeze=False)
    overlay(axes[0, 0], query_images[index], explanation.query_maps[index], "query", mean=mean, std=std)
    for j in range(k):
        overlay(axes[0, j + 1], supports[j], explanation.support_maps[index, j],
                f"support {j + 1}" if k > 1 else "support", mean=mean, std=std)
    fig.tight_layout()
    return fig


def draw_box(ax, box, color: str = "white", lw: float = 1.5):
    """Draw a box ``(x, y, w, h)`` in pixel-edge coordinates on an ``imshow`` axis (pixel centres at integers)."""
    x, y, w, h = [float(v) for v in box]
    ax.add_patch(plt.Rectangle((x - 0.5, y - 0.5), w, h, fill=False, color=color, lw=lw))


def compare_methods(images: torch.Tensor, boxes: torch.Tensor, query_index, support_index, explanations: dict,
                    mean=None, std=None, size: float = 1.6, row_titles=None):
    """Figure 3/4 of the paper: for each pair two rows (query, support), one column per method.

    ``explanations`` maps a method's name to an :class:`~sfam_lite.explainer.Explanation` of the pairs
    ``(query_index[i], support_index[i])`` (K = 1); ``None`` draws an empty panel ("not applicable"). Every panel
    shows the ground-truth box; the first column the plain image."""
    names = list(explanations)
    rows = 2 * len(query_index)
    fig, axes = plt.subplots(rows, len(names) + 1, figsize=(size * (len(names) + 1), size * rows), squeeze=False)
    for i, (q, s) in enumerate(zip(query_index, support_index)):
        for r, (idx, role) in enumerate([(int(q), "query"), (int(s), "support")]):
            row = axes[2 * i + r]
            label = role if row_titles is None else f"{row_titles[i]}\n{role}"
            overlay(row[0], images[idx], mean=mean, std=std)
            row[0].set_title(label, fontsize=8)
            draw_box(row[0], boxes[idx])
            for c, name in enumerate(names, start=1):
                out = explanations[name]
                if out is None:
                    row[c].set_axis_off()
                    row[c].text(0.5, 0.5, "—", ha="center", va="center", fontsize=14)
                else:
                    heat = out.query_maps[i] if r == 0 else out.support_maps[i, 0]
                    overlay(row[c], images[idx], heat, mean=mean, std=std)
                    draw_box(row[c], boxes[idx])
                if 2 * i + r == 0:
                    row[c].set_title(name, fontsize=9)
    fig.tight_layout()
    return fig
