"""The book's extension, not the paper's method: CIS computed at every query position (chapter 10).

SFAM (Eq. 1-4) compares the query's *pooled* vector ``V^Q`` with the support's. When the query holds two objects,
pooling averages them, so a channel of the object the support shares ends up as far from the support as a channel
of the other object, and the weights cannot tell the two apart (chapter 10 derives it). :class:`PositionCIS` moves
the comparison before the pooling: each query position's feature vector ``a(i, j) = A^Q_{:, i, j}`` is compared with
the support vector ``V^S`` by the cosine CIS of Eq. 5, normalised by Eq. 4 at that position, and Eq. 3 sums that
position's channels with its own weights:

    ``L_ij = Σ_n Norm(ω_n(i, j)) · A^n_ij``,  ``ω(i, j) = Eq. 5 (a(i, j), V^S)``.

The cosine form is used for both metrics: a single position's vector is not on the scale of a pooled one (pooling
averages it with every other position, background included), so only directions are compared. A position whose
strongest channels are ones the support lacks gets small weights for exactly those channels. Each equation is the
package's one function for it (:func:`sfam_lite.cis.contribution_scores`, :func:`sfam_lite.cis.normalize_scores`,
:func:`sfam_lite.maps.sfam_map`), applied per position.
"""
from __future__ import annotations

import torch
from torch import nn

from . import cis
from .explainer import PairExplainer
from .maps import sfam_map


def position_weights(features: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    """``Norm(ω_n(i, j))`` ``(B, N, h, w)``: Eq. 5 between each position's vector of ``features`` ``(B, N, h, w)`` and
    ``vector`` ``(B, N)``, then Eq. 4 over the channels at each position."""
    b, n, h, w = features.shape
    positions = features.permute(0, 2, 3, 1).reshape(b * h * w, n)
    against = vector[:, None, :].expand(b, h * w, n).reshape(b * h * w, n)
    weights = cis.normalize_scores(cis.contribution_scores(positions, against, "cosine"))
    return weights.reshape(b, h, w, n).permute(0, 3, 1, 2)


def position_map(features: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    """Eq. 3 at every position with that position's weights (:func:`position_weights`): ``(B, h, w)``."""
    b, n, h, w = features.shape
    weights = position_weights(features, vector)
    cells = lambda x: x.permute(0, 2, 3, 1).reshape(b * h * w, n)                  # noqa: E731
    return sfam_map(cells(features)[:, :, None, None], cells(weights))[:, 0, 0].reshape(b, h, w)


class PositionCIS(PairExplainer):
    """The book's extension (not the paper's method): CIS per query position against the support prototype ``V^S``
    (Eq. 1), and per support position against ``V^Q``; see the module's docstring. No gradients, no ReLU (the
    features and weights are non-negative for a post-ReLU layer). ``explanation.weights`` is None: the weights
    differ at every position (:func:`position_weights` gives them)."""

    def __init__(self, model: nn.Module | None, target_layer: nn.Module | None = None, pool="avg", *,
                 reshape_transform=None):
        super().__init__(model, target_layer, pool, reshape_transform=reshape_transform)

    def channel_weights(self, ctx):
        return None, None, None

    def combine(self, ctx, query_weights, support_weights):
        a_s = ctx.support_features
        b, k = a_s.shape[:2]
        query_maps = position_map(ctx.query_features, ctx.support_vectors)
        vectors = ctx.query_vectors[:, None].expand(b, k, -1).flatten(0, 1)
        support_maps = position_map(a_s.flatten(0, 1), vectors).reshape(b, k, *a_s.shape[-2:])
        return query_maps, support_maps
