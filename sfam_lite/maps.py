"""Building explanation maps from channel weights and a feature map (paper §3.2)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ._checks import as_float_tensor, cast_back, check_finite, check_ndim, compute_dtype
from .cis import minmax


def sfam_map(feature_map: torch.Tensor, weights: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Eq. 3 / Eq. 6: ``L_ij = Σ_n w_n A^n_ij``, bilinearly upsampled to ``size`` when given.

    ``feature_map`` is ``(B, N, H, W)`` and ``weights`` ``(B, N)`` (normally ``Norm(ω)`` from
    :func:`sfam_lite.cis.normalize_scores`); the result is ``(B, H, W)``, or ``(B, *size)``.
    Unbatched ``(N, H, W)`` and ``(N,)`` give ``(H, W)``. The map is returned as Eq. 3 defines it,
    without rectification or rescaling; see :func:`minmax_normalize` for display and evaluation.
    Half-precision inputs are summed in float32 and the map cast back (a float16 map beyond ±65504 is refused).
    """
    feature_map = as_float_tensor(feature_map, "feature_map")
    weights = as_float_tensor(weights, "weights")
    check_ndim(feature_map, "feature_map", (3, 4), "(B, N, H, W) or (N, H, W)")
    unbatched = feature_map.ndim == 3
    if unbatched:
        feature_map = feature_map.unsqueeze(0)
        weights = weights.unsqueeze(0) if weights.ndim == 1 else weights
    check_ndim(weights, "weights", (2,), "(B, N)" if not unbatched else "(N,)")
    if weights.shape != feature_map.shape[:2]:
        raise ValueError(f"weights of shape {tuple(weights.shape)} do not match the (batch, channels) "
                         f"{tuple(feature_map.shape[:2])} of feature_map.")
    check_finite(feature_map, "feature_map")
    check_finite(weights, "weights")
    dtype = torch.promote_types(feature_map.dtype, weights.dtype)
    wide = compute_dtype(dtype)
    heat = torch.einsum("bn,bnhw->bhw", weights.to(wide), feature_map.to(wide))
    if size is not None:
        heat = upsample(heat, size)
    heat = cast_back(heat, dtype, "the map")
    return heat[0] if unbatched else heat


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling (half-pixel centres, ``align_corners=False``) of ``(..., H, W)`` maps to ``size``."""
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be two positive integers (height, width), got {size}.")
    lead = maps.shape[:-2]
    flat = maps.reshape(-1, 1, *maps.shape[-2:])
    out = F.interpolate(flat, size=size, mode="bilinear", align_corners=False)
    return out.reshape(*lead, *size)


def minmax_normalize(maps):
    """Rescale each ``(H, W)`` map of a ``(..., H, W)`` tensor or array to [0, 1]: ``(m - min) / (max - min)``.

    A constant map becomes ones: it is equally salient everywhere, so the localisation protocol
    (:mod:`sfam_lite.localization`) gives it the whole image as its box and
    :func:`sfam_lite.metrics.mass_in_box` scores it the box's share of the image. This is the package's
    one rule for constant maps, :func:`sfam_lite.cis.minmax`, which Eq. 4 (:func:`sfam_lite.cis.normalize_scores`)
    applies to the channel scores. A map holding NaN stays NaN.

    A torch tensor gives a tensor of its floating dtype; a numpy array gives a float64 array (computed
    without torch, for the batched localisation of :mod:`sfam_lite.localization`; float64 tensors give the
    same values either way).
    """
    if isinstance(maps, np.ndarray):
        lo = maps.min(axis=(-2, -1), keepdims=True).astype(np.float64)
        span = maps.max(axis=(-2, -1), keepdims=True).astype(np.float64) - lo
        constant = span == 0
        out = np.subtract(maps, lo, dtype=np.float64)
        out /= np.where(constant, 1.0, span)
        if constant.any():
            out[np.broadcast_to(constant, out.shape)] = 1.0
        return out
    return minmax(maps, (-2, -1))
