"""Channel-wise contribution importance scores (CIS), paper §3.1 and §3.3.

Every function is batched over leading dimensions: vectors have shape ``(..., N)``.
Equation numbers refer to Liao et al., *Visual Explanation via Similar Feature Activation
for Metric Learning*.

Half-precision inputs (float16, bfloat16: a half-precision model's features) are computed in float32 and the
results cast back to the input dtype: a squared distance over hundreds of channels easily exceeds float16's
largest value (65504) and would turn every score into NaN.
"""
from __future__ import annotations

import torch

from ._checks import as_float_tensor, cast_back, check_choice, check_finite, check_ndim, compute_dtype

METRICS = ("euclidean", "cosine")


def support_prototype(features: torch.Tensor) -> torch.Tensor:
    """Eq. 1: the support representation, the mean of K pooled support vectors.

    ``features`` has shape ``(K, N)`` or ``(B, K, N)``; the result is ``(N,)`` or ``(B, N)``.
    """
    features = as_float_tensor(features, "features")
    check_ndim(features, "features", (2, 3), "(K, N) or (B, K, N)")
    if features.shape[-2] == 0:
        raise ValueError("features holds K = 0 support vectors; Eq. 1 needs at least one support image.")
    check_finite(features, "features")
    return features.mean(dim=-2, dtype=compute_dtype(features.dtype)).to(features.dtype)


def _paired_vectors(v_q, v_s) -> tuple[torch.Tensor, torch.Tensor]:
    v_q, v_s = as_float_tensor(v_q, "v_q"), as_float_tensor(v_s, "v_s")
    check_ndim(v_q, "v_q", (1, 2), "(N,) or (B, N)")
    check_ndim(v_s, "v_s", (1, 2), "(N,) or (B, N)")
    if v_q.shape[-1] != v_s.shape[-1]:
        raise ValueError(f"v_q has {v_q.shape[-1]} channels but v_s has {v_s.shape[-1]}; "
                         "both vectors must come from the same layer.")
    if v_q.ndim == v_s.ndim == 2 and v_q.shape[0] != v_s.shape[0] and 1 not in (v_q.shape[0], v_s.shape[0]):
        raise ValueError(f"v_q has batch size {v_q.shape[0]} but v_s has {v_s.shape[0]}; "
                         "give one support vector per query, or a single one for all.")
    if v_q.shape[-1] < 2:
        raise ValueError(f"the vectors have N = {v_q.shape[-1]} channel(s); Eq. 2 divides by N - 1 "
                         "and needs at least 2.")
    check_finite(v_q, "v_q")
    check_finite(v_s, "v_s")
    dtype = torch.promote_types(v_q.dtype, v_s.dtype)
    return torch.broadcast_tensors(v_q.to(dtype), v_s.to(dtype))


def l2_normalize(v: torch.Tensor) -> torch.Tensor:
    """``v / ‖v‖`` along the last dimension (§3.3); a zero vector stays zero instead of becoming NaN."""
    norm = torch.linalg.vector_norm(v, dim=-1, keepdim=True)
    return torch.where(norm > 0, v / torch.where(norm > 0, norm, torch.ones_like(norm)), torch.zeros_like(v))


def squared_channel_differences(v_q: torch.Tensor, v_s: torch.Tensor) -> torch.Tensor:
    """``d_n = (v^Q_n - v^S_n)^2``, the per-channel terms of the squared Euclidean distance D = Σ_n d_n
    (computed in float32 for half-precision inputs, and cast back; sum them with :func:`squared_distance`)."""
    dtype = torch.promote_types(v_q.dtype, v_s.dtype)
    wide = compute_dtype(dtype)
    return cast_back((v_q.to(wide) - v_s.to(wide)).square(), dtype, "a squared channel difference")


def squared_distance(v_q: torch.Tensor, v_s: torch.Tensor) -> torch.Tensor:
    """``D = Σ_n (v^Q_n - v^S_n)^2`` over the last dimension, in float32 or wider: half-precision inputs give a
    float32 distance, since a sum over hundreds of channels overflows float16."""
    dtype = compute_dtype(torch.promote_types(v_q.dtype, v_s.dtype))
    return (v_q.to(dtype) - v_s.to(dtype)).square().sum(dim=-1)


def contribution_scores(v_q: torch.Tensor, v_s: torch.Tensor, metric: str = "euclidean") -> torch.Tensor:
    """CIS ω: Eq. 2 (``metric="euclidean"``) or Eq. 5 (``metric="cosine"``).

    ``ω_n = (D - d_n) / ((N - 1) D)`` with ``d_n = (v^Q_n - v^S_n)^2`` and ``D = Σ_n d_n``; the cosine
    variant uses the L2-normalised vectors. Inputs are ``(N,)`` or ``(B, N)`` (a single vector
    broadcasts against a batch); the result has the broadcast shape and sums to 1 over channels.

    Degenerate cases are defined instead of NaN: when ``D = 0`` (identical vectors, every channel
    equally close) every ``ω_n = 1/N``; in the cosine variant a zero vector is normalised to zero.
    In the cosine variant a vector and a positive multiple of it normalise to the same unit vector up to
    rounding, so ``D`` is then rounding noise, and dividing the noise by itself would give arbitrary
    scores: a cosine ``D`` below the rounding level of unit vectors, ``4((N + 2)ε)²`` with ``ε`` the
    machine epsilon of the computation, counts as ``D = 0``.
    """
    check_choice(metric, "metric", METRICS)
    v_q, v_s = _paired_vectors(v_q, v_s)
    dtype = v_q.dtype
    v_q, v_s = v_q.to(compute_dtype(dtype)), v_s.to(compute_dtype(dtype))
    if metric == "cosine":
        v_q, v_s = l2_normalize(v_q), l2_normalize(v_s)
    d = squared_channel_differences(v_q, v_s)
    n = d.shape[-1]
    total = d.sum(dim=-1, keepdim=True)
    floor = 4 * ((n + 2) * torch.finfo(d.dtype).eps) ** 2 if metric == "cosine" else 0.0
    distinct = total > floor
    safe_total = torch.where(distinct, total, torch.ones_like(total))
    omega = (total - d) / ((n - 1) * safe_total)
    return torch.where(distinct, omega, torch.full_like(omega, 1.0 / n)).to(dtype)


def minmax(x: torch.Tensor, dim=-1) -> torch.Tensor:
    """``(x - min) / (max - min)`` over ``dim`` (an int or a tuple), into [0, 1]: the package's one min-max rule.

    A constant slice (max = min) becomes all ones; NaN propagates. :func:`normalize_scores` (Eq. 4) applies it to
    CIS over channels, :func:`sfam_lite.maps.minmax_normalize` to maps over their two spatial dimensions.
    """
    lo = x.amin(dim=dim, keepdim=True)
    span = x.amax(dim=dim, keepdim=True) - lo
    flat = span == 0
    return torch.where(flat, 1.0, (x - lo) / torch.where(flat, 1.0, span))


def normalize_scores(w: torch.Tensor) -> torch.Tensor:
    """Eq. 4: min-max normalisation of the scores along the last dimension, into [0, 1] (:func:`minmax`).

    When every score is equal (max = min) the normalised weights are all ones: every channel
    counts fully, which is the limit of Eq. 3 as the channels become equally important (the same rule as
    a constant map in :func:`sfam_lite.maps.minmax_normalize`). Scores must be finite.
    """
    w = as_float_tensor(w, "w")
    if w.ndim == 0 or w.shape[-1] == 0:
        raise ValueError(f"w must have at least one score along its last dimension, got shape {tuple(w.shape)}.")
    check_finite(w, "w")
    return minmax(w.to(compute_dtype(w.dtype)), -1).to(w.dtype)


def cosine_scores_eq7(v_q: torch.Tensor, v_s: torch.Tensor, printed: bool = False) -> torch.Tensor:
    """Eq. 7: the proof's decomposition of the cosine CIS into a 'rest' term and a product term.

    ``printed=False`` gives the exact identity, whose second numerator is ``2 v̂^Q_n v̂^S_n``
    (chapter 2): it equals Eq. 5 to rounding error. ``printed=True`` reproduces Eq. 7 as printed
    in the paper, with numerator ``v̂^Q_n v̂^S_n``, which does not. Both need ``cos(V^Q, V^S) ≠ 1``.
    """
    v_q, v_s = _paired_vectors(v_q, v_s)
    dtype = v_q.dtype
    q, s = l2_normalize(v_q.to(compute_dtype(dtype))), l2_normalize(v_s.to(compute_dtype(dtype)))
    n = q.shape[-1]
    cos = (q * s).sum(dim=-1, keepdim=True)
    denom = (n - 1) * (2 - 2 * cos)
    if bool((denom <= 0).any()):
        raise ValueError("cos(V^Q, V^S) = 1 (parallel vectors): Eq. 7 divides by 2 - 2cos = 0.")
    rest_q = q.square().sum(dim=-1, keepdim=True) - q.square()
    rest_s = s.square().sum(dim=-1, keepdim=True) - s.square()
    factor = 1.0 if printed else 2.0
    return ((rest_q + rest_s - 2 * cos) / denom + factor * q * s / denom).to(dtype)


def cosine_similarity(v_q: torch.Tensor, v_s: torch.Tensor) -> torch.Tensor:
    """``cos(V^Q, V^S) = Σ_n v̂^Q_n v̂^S_n`` (zero when either vector is zero)."""
    v_q, v_s = _paired_vectors(v_q, v_s)
    dtype, wide = v_q.dtype, compute_dtype(v_q.dtype)
    return (l2_normalize(v_q.to(wide)) * l2_normalize(v_s.to(wide))).sum(dim=-1).to(dtype)
