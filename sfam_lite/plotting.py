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
