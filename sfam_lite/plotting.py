"""Figures the chapters share: heat maps over images, and query/support explanation panels.

:func:`overlay_image` returns an explanation drawn over its image as a ``uint8`` array (no figure), for saving or
for any viewer; :func:`overlay` draws the same on a matplotlib axis.
"""
from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch

from ._checks import check_number
from .maps import minmax_normalize, upsample


def _channels_last(image, name: str = "image") -> np.ndarray:
    """``image`` (a tensor or array; ``(C, H, W)``, ``(H, W, C)`` with C = 1 or 3, or ``(H, W)``) as an ``(H, W, C)``
    float64 array, an integer (uint8) image divided by 255. A 3-D tensor is read as ``(C, H, W)`` when its first
    dimension is 1 or 3 (torch's layout), a 3-D array as ``(H, W, C)`` when its last is (numpy's and PIL's)."""
    is_tensor = isinstance(image, torch.Tensor)
    if is_tensor:
        image = image.detach().cpu()
        image = image.float().numpy() if image.dtype in (torch.float16, torch.bfloat16) else image.numpy()
    elif not isinstance(image, np.ndarray):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(image).__name__}.")
    if image.dtype == bool or not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise TypeError(f"{name} must hold uint8 or floating values, got dtype {image.dtype}.")
    if image.ndim == 2:
        image = image[..., None]
    elif image.ndim == 3:
        first, last = image.shape[0] in (1, 3), image.shape[-1] in (1, 3)
        if not (first or last):
            raise ValueError(f"{name} must have shape (C, H, W) or (H, W, C) with C = 1 or 3 channels, or (H, W), "
                             f"got shape {tuple(image.shape)}.")
        if (first and is_tensor) or not last:
            image = image.transpose(1, 2, 0)
    else:
        raise ValueError(f"{name} must be one image, (C, H, W), (H, W, C) or (H, W), got shape {tuple(image.shape)}; "
                         f"for a batch pick one, e.g. {name}[0].")
    integer = np.issubdtype(image.dtype, np.integer)
    return image.astype(np.float64) / 255 if integer else image.astype(np.float64)


def _undo_normalisation(image: np.ndarray, mean, std) -> np.ndarray:
    """``image · std + mean`` per channel (``(H, W, C)``), undoing ``Normalize(mean, std)``."""
    if (mean is None) != (std is None):
        raise ValueError("pass both mean= and std= (the normalisation to undo, e.g. sfam_lite.transforms.IMAGENET_MEAN "
                         "and IMAGENET_STD), or neither.")
    if mean is None:
        return image
    mean, std = (np.asarray(v, dtype=np.float64).reshape(-1) for v in (mean, std))
    if mean.size not in (1, image.shape[-1]) or std.size not in (1, image.shape[-1]):
        raise ValueError(f"mean and std need 1 or {image.shape[-1]} values (one per channel), got {mean.size} and "
                         f"{std.size}.")
    return image * std + mean


def to_image(image: torch.Tensor, mean=None, std=None) -> np.ndarray:
    """A ``(C, H, W)`` tensor (optionally normalised with ``mean``/``std``) as an ``(H, W, C)`` array in [0, 1]
    (``(H, W)`` for one channel). Also takes an ``(H, W, C)`` array and uint8 images (:func:`overlay_image`)."""
    image = np.clip(_undo_normalisation(_channels_last(image), mean, std), 0, 1)
    return image[..., 0] if image.shape[-1] == 1 else image


def overlay_image(image, map, alpha: float = 0.5, colormap: str = "jet", mean=None, std=None) -> np.ndarray:
    """An explanation map drawn over its image: a ``uint8`` ``(H, W, 3)`` array, ready to save or show.

    Args:
        image: one image, a tensor or array, ``(C, H, W)`` or ``(H, W, C)`` (C = 1 or 3) or ``(H, W)``: uint8 in
            0-255, or float in [0, 1], or normalised: then pass the ``mean`` and ``std`` it was normalised with
            (ImageNet's: ``sfam_lite.transforms.IMAGENET_MEAN``, ``IMAGENET_STD``) to undo it.
        map: one ``(h, w)`` map of any range (e.g. ``result.query_maps[0]``, Eq. 3 as it is), bilinearly resized to
            the image when its size differs, then min-max normalised to [0, 1]. A constant map says nothing about
            where to look, so it gives no heat: the image is returned as it is.
        alpha: the heat's weight, ``pixel = (1 - alpha) · image + alpha · colormap(heat)``, in [0, 1].
        colormap: a matplotlib colormap name (``"jet"``, ``"viridis"``, …).
    """
    alpha = check_number(alpha, "alpha", minimum=0, maximum=1)
    try:
        cmap = matplotlib.colormaps[colormap]
    except (KeyError, TypeError):
        raise ValueError(f"unknown colormap {colormap!r}; choose a matplotlib colormap name, e.g. 'jet', 'viridis' "
                         "or 'inferno'.") from None
    rgb = _undo_normalisation(_channels_last(image), mean, std)
    lo, hi = float(rgb.min()), float(rgb.max())
    if mean is None and (lo < -0.01 or hi > 1.01):
        raise ValueError(f"image has values in [{lo:.3g}, {hi:.3g}], outside [0, 1]: for a normalised image pass the "
                         "mean= and std= it was normalised with (ImageNet's: sfam_lite.transforms.IMAGENET_MEAN and "
                         "IMAGENET_STD); for a 0-255 image pass it as uint8 (or divide it by 255).")
    rgb = np.clip(rgb, 0, 1)
    rgb = np.repeat(rgb, 3, axis=-1) if rgb.shape[-1] == 1 else rgb
    heat = _heat(map, rgb.shape[:2])
    if heat is not None:
        rgb = (1 - alpha) * rgb + alpha * cmap(heat)[..., :3]
    return np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def _heat(heat, size) -> np.ndarray | None:
    """The map as a float64 ``(H, W)`` array in [0, 1] at ``size`` (bilinear resize, then min-max); None if constant."""
    if isinstance(heat, np.ndarray):
        heat = torch.from_numpy(heat)
    if not isinstance(heat, torch.Tensor):
        raise TypeError(f"map must be a torch.Tensor or numpy array, got {type(heat).__name__}.")
    heat = heat.detach().cpu().double()
    if heat.ndim != 2:
        raise ValueError(f"map must be one (h, w) map, got shape {tuple(heat.shape)}; pick one, e.g. "
                         "result.query_maps[0] or result.support_maps[0, 0].")
    if not bool(torch.isfinite(heat).all()):
        raise ValueError(f"map contains {int((~torch.isfinite(heat)).sum())} non-finite value(s) (NaN or inf); check "
                         "the features and weights the map came from.")
    if tuple(heat.shape) != tuple(size):
        heat = upsample(heat, size)
    if float(heat.max() - heat.min()) == 0:
        return None
    return minmax_normalize(heat).numpy()


def overlay(ax, image: torch.Tensor, heat: torch.Tensor | None = None, title: str | None = None,
            alpha: float = 0.5, cmap: str = "jet", mean=None, std=None):
    """Draw ``image`` on ``ax`` with the min-max normalised ``heat`` map on top; return the heat-map artist. The
    title is set at 10 pt, readable when the figure is at most :data:`COLUMN_INCHES` wide."""
    ax.imshow(to_image(image, mean, std), cmap="gray" if image.shape[0] == 1 else None)
    artist = None
    if heat is not None:
        heat = minmax_normalize(heat.detach().float().cpu())
        artist = ax.imshow(heat.numpy(), cmap=cmap, alpha=alpha, vmin=0, vmax=1)
    if title:
        ax.set_title(title, fontsize=10)
    ax.set_axis_off()
    return artist


def label_row(ax, text: str, **ylabel):
    """Write ``text`` beside ``ax``, the first panel of a row of pictures, at 10 pt (:func:`overlay` turns the axis
    off; this turns it back on without its ticks and frame). ``ylabel``: more arguments of ``set_ylabel``."""
    ax.set_axis_on()
    ax.set_xticks([])
    ax.set_yticks([])
    ax.spines[:].set_visible(False)
    ax.set_ylabel(text, **{"fontsize": 10, **ylabel})


def draw_box(ax, box, color: str = "white", lw: float = 1.5):
    """Draw a box ``(x, y, w, h)`` in pixel-edge coordinates on an ``imshow`` axis (pixel centres at integers)."""
    x, y, w, h = [float(v) for v in box]
    ax.add_patch(plt.Rectangle((x - 0.5, y - 0.5), w, h, fill=False, color=color, lw=lw))


#: The book's text column, in inches at matplotlib's 100 dpi (757 px): a figure drawn this wide shows its fonts at
#: their size in points; a wider one is shrunk, and its text with it.
COLUMN_INCHES = 7.5


def map_colour_bar(fig, axes, cmap: str = "jet"):
    """One colour bar beside ``axes`` for every heat map drawn by :func:`overlay` (each map min-max normalised
    to [0, 1] before colouring, so one scale reads them all)."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), cmap), ax=axes, shrink=0.8, aspect=30, pad=0.02)
    bar.set_label("map value, min-max normalised per map", fontsize=10)
    bar.ax.tick_params(labelsize=9)
    return bar


def compare_methods(images: torch.Tensor, boxes: torch.Tensor, query_index, support_index, explanations: dict,
                    mean=None, std=None, size: float = 1.6, row_titles=None):
    """Figure 3/4 of the paper: for each pair two rows (query, support), one column per method.

    ``explanations`` maps a method's name to an :class:`~sfam_lite.explainer.Explanation` of the pairs
    ``(query_index[i], support_index[i])`` (K = 1); ``None`` draws an empty panel ("not applicable"). Every panel
    shows the ground-truth box; the first column the plain image; one colour bar serves every map. Panels are
    ``size`` inches, smaller where the columns would not fit the book's text column (:data:`COLUMN_INCHES`)."""
    import textwrap
    names = list(explanations)
    rows, cols = 2 * len(query_index), len(names) + 1
    size = min(size, COLUMN_INCHES / (cols + 0.5))          # half a panel's width for the colour bar
    fig, axes = plt.subplots(rows, cols, figsize=(size * (cols + 0.5), size * rows + 0.4), squeeze=False,
                             layout="constrained")
    for i, (q, s) in enumerate(zip(query_index, support_index)):
        for r, (idx, role) in enumerate([(int(q), "query"), (int(s), "support")]):
            row = axes[2 * i + r]
            overlay(row[0], images[idx], mean=mean, std=std)
            label_row(row[0], role if row_titles is None else f"{row_titles[i]}\n{role}")
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
                    row[c].set_title(textwrap.fill(name, 12, break_long_words=False), fontsize=10)
    map_colour_bar(fig, axes)
    return fig


def method_colours() -> dict[str, str]:
    """``{key: colour}`` for every registered method (:data:`sfam_lite.methods.METHODS`, in table order), distinct
    for up to 30 methods: matplotlib's default cycle, then the ``tab20b`` colours. The same method keeps its
    colour in every figure of a chapter."""
    from matplotlib.colors import to_hex
    from .methods import METHODS
    cycle = list(plt.rcParams["axes.prop_cycle"].by_key()["color"]) + [to_hex(c) for c in matplotlib.colormaps["tab20b"].colors]
    return {key: cycle[i % len(cycle)] for i, key in enumerate(METHODS)}
