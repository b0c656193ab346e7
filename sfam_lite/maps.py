"""Building explanation maps from channel weights and a feature map (paper §3.2)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import as_float_tensor, check_finite, check_ndim


def sfam_map(feature_map: torch.Tensor, weights: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Eq. 3 / Eq. 6: ``L_ij = Σ_n w_n A^n_ij``, bilinearly upsampled to ``size`` when given.

    ``feature_map`` is ``(B, N, H, W)`` and ``weights`` ``(B, N)`` (normally ``Norm(ω)`` from
    :func:`sfam_lite.cis.normalize_scores`); the result is ``(B, H, W)``, or ``(B, *size)``.
    Unbatched ``(N, H, W)`` and ``(N,)`` give ``(H, W)``. The map is returned as Eq. 3 defines it,
    without rectification or rescaling; see :func:`minmax_normalize` for display and evaluation.
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
    heat = torch.einsum("bn,bnhw->bhw", weights.to(dtype), feature_map.to(dtype))
    if size is not None:
        heat = upsample(heat, size)
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


def minmax_normalize(maps: torch.Tensor) -> torch.Tensor:
    """Rescale each ``(H, W)`` map of a ``(..., H, W)`` tensor to [0, 1]; a constant map becomes zeros."""
    lo = maps.amin(dim=(-2, -1), keepdim=True)
    span = maps.amax(dim=(-2, -1), keepdim=True) - lo
    return torch.where(span > 0, (maps - lo) / torch.where(span > 0, span, torch.ones_like(span)),
                       torch.zeros_like(maps))
