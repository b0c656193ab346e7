"""The book's extension, not the paper's method: SFAM on the model's own embedding (chapter 11).

SFAM (Eq. 1-4) weights each channel by its share of the distance between the *pooled* target-layer vectors ``V``.
Most retrieval models (GPW among them) compare an embedding ``e = W V + b`` instead. That distance also splits
exactly over the channels of ``V``. With ``δ = V^Q - V^S`` and ``r = W δ``:

    ``‖e^Q - e^S‖² = rᵀ W δ = Σ_n c_n``,  ``c_n = δ_n (Wᵀ r)_n``  (the bias cancels).

For the cosine, the distance of the unit embeddings is ``‖ê^Q - ê^S‖² = 2 - 2 cos(e^Q, e^S)``. With
``δ' = V^Q/‖e^Q‖ - V^S/‖e^S‖``, ``β = b (1/‖e^Q‖ - 1/‖e^S‖)`` and ``r = W δ' + β``:

    ``2 - 2 cos(e^Q, e^S) = Σ_n c_n + rᵀβ``,  ``c_n = δ'_n (Wᵀ r)_n``.

The term ``rᵀβ`` comes from the bias and belongs to no channel; :func:`head_contributions` returns it. With
``W = I`` and ``b = 0``, ``c_n`` is Eq. 2's ``d_n`` (Euclidean) or Eq. 5's (cosine), and this is SFAM.

A contribution ``c_n`` can be negative: the channel pulls the two embeddings together through the channels it
mixes with. The weights keep the CIS rule, "the less a channel adds to the distance, the more it weighs": Eq. 2's
``ω_n = (D - c_n) / ((N - 1) D)`` with ``D = Σ_n c_n``, normalised by Eq. 4, which for ``D > 0`` is
``Norm(-c)_n = (max c - c_n) / (max c - min c)``. The weights are computed as ``Norm(-c)``, so they do not flip
when ``D ≤ 0``. Eq. 3 then sums the channels with these weights.
"""
from __future__ import annotations

import torch
from torch import nn

from . import cis
from ._checks import as_float_tensor, check_finite
from .explainer import PairExplainer


def head_contributions(v_q: torch.Tensor, v_s: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                       metric: str = "cosine"):
    """``(c, bias_term, distance)``: each channel's contribution ``c`` ``(B, N)`` to the model's own squared distance
    of the embeddings ``e = weight @ v + bias``, the part ``(B,)`` that no channel carries (zero for
    ``metric="euclidean"``), and the distance itself ``(B,)``: ``‖e^Q - e^S‖²`` (Euclidean) or ``‖ê^Q - ê^S‖² = 2 -
    2 cos`` (cosine). ``c.sum(-1) + bias_term == distance``. ``v_q``, ``v_s`` ``(B, N)``; ``weight`` ``(D, N)``."""
    if metric not in cis.METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {cis.METRICS}.")
    v_q, v_s = as_float_tensor(v_q, "v_q"), as_float_tensor(v_s, "v_s")
    weight = as_float_tensor(weight, "weight")
    if weight.ndim != 2 or weight.shape[1] != v_q.shape[-1]:
        raise ValueError(f"weight must be a (D, N) matrix with N = {v_q.shape[-1]} (the pooled vectors' channels), "
                         f"got shape {tuple(weight.shape)}.")
    dtype = torch.promote_types(torch.promote_types(v_q.dtype, v_s.dtype), torch.float32)
    v_q, v_s, w = v_q.to(dtype), v_s.to(dtype), weight.to(dtype)
    b = None if bias is None else as_float_tensor(bias, "bias").to(dtype)
    if metric == "euclidean":
        delta = v_q - v_s
        r = delta @ w.T
        zero = torch.zeros(r.shape[:-1], dtype=dtype, device=r.device)
        return delta * (r @ w), zero, r.square().sum(-1)
    e_q, e_s = v_q @ w.T, v_s @ w.T
    if b is not None:
        e_q, e_s = e_q + b, e_s + b
    n_q, n_s = e_q.norm(dim=-1, keepdim=True), e_s.norm(dim=-1, keepdim=True)
    if bool(((n_q == 0) | (n_s == 0)).any()):
        raise ValueError("an embedding is the zero vector: its cosine is undefined.")
    delta = v_q / n_q - v_s / n_s
    beta = torch.zeros_like(e_q) if b is None else b * (1 / n_q - 1 / n_s)
    r = delta @ w.T + beta
    return delta * (r @ w), (r * beta).sum(-1), r.square().sum(-1)


def _weight_and_bias(projection):
    if isinstance(projection, nn.Linear):
        return projection.weight, projection.bias
    if isinstance(projection, torch.Tensor) and projection.ndim == 2:
        return projection, None
    if isinstance(projection, tuple) and len(projection) == 2:
        return projection
    raise TypeError("projection must be an nn.Linear, a (D, N) matrix, or a (weight, bias) pair: the linear map "
                    f"from the pooled target-layer vector to the model's embedding; got {type(projection).__name__}.")


class HeadAwareSFAM(PairExplainer):
    """The book's extension (not the paper's method): SFAM's rule on each channel's contribution to the model's own
    distance of its embeddings ``e = W p(A) + b``, for a model whose embedding is a linear map of the pooled
    target-layer vector (see the module's docstring).

    Args:
        model: any ``nn.Module``, or None to explain cached features only.
        target_layer: the module whose output is the feature map ``A`` (default: the model's ``target_layer``).
        projection: the linear map ``V -> e``: an ``nn.Linear`` (its bias counts), a ``(D, N)`` matrix, or a
            ``(weight, bias)`` pair; for :class:`sfam_lite.models.GPWEmbedding`, ``model.embed``.
        metric: the model's similarity: ``"cosine"`` (of the embeddings) or ``"euclidean"``.

    ``Explanation.scores`` holds the contributions ``c`` ``(B, N)``; ``explained_similarity`` the model's own cosine
    (or minus its squared distance).
    """

    def __init__(self, model: nn.Module | None, target_layer: nn.Module | None = None, projection=None,
                 metric: str = "cosine", *, reshape_transform=None):
        if metric not in cis.METRICS:
            raise ValueError(f"unknown metric {metric!r}; choose one of {cis.METRICS}.")
        if projection is None:
            raise ValueError("projection is needed: the linear map from the pooled target-layer vector to the "
                             "embedding (for sfam_lite.models.GPWEmbedding, projection=model.embed).")
        super().__init__(model, target_layer, "avg", reshape_transform=reshape_transform)
        self.weight, self.bias = _weight_and_bias(projection)
        check_finite(self.weight.detach(), "projection's weight")
        self.metric = metric
        self.explains = ("cosine of the model's embeddings W p(A) + b" if metric == "cosine" else
                         "minus the squared Euclidean distance of the model's embeddings W p(A) + b")

    def _contributions(self, ctx):
        bias = None if self.bias is None else self.bias.detach()
        return head_contributions(ctx.query_vectors, ctx.support_vectors, self.weight.detach(), bias, self.metric)

    def channel_weights(self, ctx):
        c, _, _ = self._contributions(ctx)
        weights = cis.normalize_scores(-c).to(ctx.query_vectors.dtype)
        return weights, None, c

    def similarity(self, ctx):
        _, _, distance = self._contributions(ctx)
        return 1 - distance / 2 if self.metric == "cosine" else -distance

