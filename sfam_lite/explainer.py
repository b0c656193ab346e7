"""Explainers for metric-learning models: a small shared base and SFAM (paper §3).

The shape follows pytorch-grad-cam: an explainer is built from a model and a target layer,
captures that layer's feature map with a forward hook, and is called on inputs. Subclasses
differ only in how they turn the pooled query and support vectors into channel weights.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from . import cis
from ._checks import as_float_tensor, check_finite, check_ndim
from .maps import sfam_map

POOLS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "avg": lambda a: a.mean(dim=(-2, -1)),
    "max": lambda a: a.amax(dim=(-2, -1)),
}


@dataclass
class Explanation:
    """What an explainer returns for B queries, each compared with K support images.

    Attributes:
        query_maps: ``(B, H, W)`` maps at input resolution (Eq. 3 / Eq. 6, not rescaled).
        support_maps: ``(B, K, H, W)``, one map per support image, all with the query's weights.
        weights: ``(B, N)`` normalised channel weights ``Norm(ω)`` (Eq. 4).
        scores: ``(B, N)`` raw CIS ``ω`` (Eq. 2 or Eq. 5), summing to 1 over channels.
        query_vectors, support_vectors: ``(B, N)`` pooled query vector ``V^Q`` and support
            prototype ``V^S`` (Eq. 1).
        squared_distance: ``(B,)`` ``‖V^Q - V^S‖²``, the D of Eq. 2.
        cosine_similarity: ``(B,)`` ``cos(V^Q, V^S)``; the D of Eq. 5 is ``2 - 2 cos``.
        query_features, support_features: the captured feature maps ``(B, N, h, w)`` and
            ``(B, K, N, h, w)``.
    """

    query_maps: torch.Tensor
    support_maps: torch.Tensor
    weights: torch.Tensor
    scores: torch.Tensor
    query_vectors: torch.Tensor
    support_vectors: torch.Tensor
    squared_distance: torch.Tensor
    cosine_similarity: torch.Tensor
    query_features: torch.Tensor
    support_features: torch.Tensor


class FeatureCapture:
    """Keeps the output of ``layer`` from the latest forward pass, via a forward hook."""

    def __init__(self, layer: nn.Module):
        if not isinstance(layer, nn.Module):
            raise TypeError(f"target_layer must be an nn.Module, got {type(layer).__name__}.")
        self.output: torch.Tensor | None = None
        self._handle = layer.register_forward_hook(self._keep)

    def _keep(self, module, inputs, output):
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"the target layer returned {type(output).__name__}, not a tensor; "
                            "choose a layer whose output is the (B, N, H, W) feature map.")
        self.output = output.detach()

    def run(self, model: nn.Module, images: torch.Tensor):
        """``model(images)`` and the layer's output during that call; an error if the layer did not run."""
        self.output = None
        result = model(images)
        if self.output is None:
            raise RuntimeError("the target layer did not run during the model's forward pass; "
                               "pass a module that the model actually calls.")
        return result, self.output

    def remove(self) -> None:
        self._handle.remove()


class PairExplainer:
    """Shared pipeline: capture the target layer for query and support images, pool, weight, combine.

    Subclasses implement :meth:`channel_weights`. Use as a context manager (or call
    :meth:`close`) to remove the hook from the model. The model is used as it is: put it in
    ``eval()`` mode first, as for any explanation.
    """

    def __init__(self, model: nn.Module, target_layer: nn.Module, pool: str | Callable = "avg"):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}.")
        if isinstance(pool, str):
            if pool not in POOLS:
                raise ValueError(f"unknown pool {pool!r}; choose one of {tuple(POOLS)} or pass a callable "
                                 "mapping (B, N, H, W) to (B, N).")
            pool = POOLS[pool]
        elif not callable(pool):
            raise TypeError("pool must be 'avg', 'max' or a callable mapping (B, N, H, W) to (B, N).")
        self.model, self.pool = model, pool
        self._capture = FeatureCapture(target_layer)

    # -- the part a subclass defines ---------------------------------------------------------
    def channel_weights(self, v_q: torch.Tensor, v_s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(weights, scores)`` of shape ``(B, N)`` from pooled vectors ``(B, N)``."""
        raise NotImplementedError

    # -- the shared pipeline -----------------------------------------------------------------
    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Run the model on ``(B, C, H, W)`` images and return the target layer's ``(B, N, h, w)`` output."""
        out = self._capture.run(self.model, images)[1]
        check_ndim(out, "the target layer's output", (4,), "(B, N, H, W)")
        check_finite(out, "the target layer's output")
        return out

    def __call__(self, query_images: torch.Tensor, support_images: torch.Tensor) -> Explanation:
        """Explain B queries against support images.

        ``support_images`` is ``(K, C, H, W)`` (one support set for every query) or
        ``(B, K, C, H, W)`` (a support set per query); K ≥ 1.
        """
        query_images = as_float_tensor(query_images, "query_images")
        support_images = as_float_tensor(support_images, "support_images")
        check_ndim(query_images, "query_images", (4,), "(B, C, H, W)")
        check_ndim(support_images, "support_images", (4, 5), "(K, C, H, W) or (B, K, C, H, W)")
        shared = support_images.ndim == 4
        k = support_images.shape[-4]
        b = query_images.shape[0]
        if k == 0:
            raise ValueError("support_images holds K = 0 images; SFAM needs at least one support image.")
        if b == 0:
            raise ValueError("query_images holds no images.")
        if support_images.shape[-3:] != query_images.shape[-3:]:
            raise ValueError(f"support images have shape {tuple(support_images.shape[-3:])} but queries "
                             f"{tuple(query_images.shape[-3:])}; resize them to the same (C, H, W).")
        if not shared and support_images.shape[0] != b:
            raise ValueError(f"support_images has {support_images.shape[0]} support sets for {b} queries.")
        check_finite(query_images, "query_images")
        check_finite(support_images, "support_images")

        a_q = self.features(query_images)
        a_s = self.features(support_images.reshape(-1, *support_images.shape[-3:]))
        a_s = a_s.reshape(1 if shared else b, k, *a_s.shape[1:]).expand(b, -1, -1, -1, -1)
        return self.explain_features(a_q, a_s, size=query_images.shape[-2:])

    def explain_features(self, query_features: torch.Tensor, support_features: torch.Tensor,
                         size: tuple[int, int] | None = None) -> Explanation:
        """The explanation from feature maps already computed: ``(B, N, h, w)`` for the queries and
        ``(B, K, N, h, w)`` for their support sets; maps are upsampled to ``size`` when given. Use it to
        explain many pairs from features cached once per image."""
        a_q = as_float_tensor(query_features, "query_features")
        a_s = as_float_tensor(support_features, "support_features")
        check_ndim(a_q, "query_features", (4,), "(B, N, h, w)")
        check_ndim(a_s, "support_features", (5,), "(B, K, N, h, w)")
        b, k = a_s.shape[:2]
        if b != a_q.shape[0] or a_s.shape[2] != a_q.shape[1]:
            raise ValueError(f"support_features {tuple(a_s.shape)} do not match query_features {tuple(a_q.shape)} "
                             "in batch size or channel count.")
        if k == 0:
            raise ValueError("support_features holds K = 0 support maps; SFAM needs at least one.")
        v_q = self.pool(a_q)
        v_s = cis.support_prototype(self.pool(a_s.flatten(0, 1)).reshape(b, k, -1))
        weights, scores = self.channel_weights(v_q, v_s)
        size = tuple(size) if size is not None else tuple(a_q.shape[-2:])
        query_maps = sfam_map(a_q, weights, size)
        support_maps = sfam_map(a_s.flatten(0, 1), weights.repeat_interleave(k, dim=0), size).reshape(b, k, *size)
        return Explanation(
            query_maps=query_maps, support_maps=support_maps, weights=weights, scores=scores,
            query_vectors=v_q, support_vectors=v_s,
            squared_distance=cis.squared_channel_differences(v_q, v_s).sum(-1),
            cosine_similarity=cis.cosine_similarity(v_q, v_s),
            query_features=a_q, support_features=a_s)

    def close(self) -> None:
        """Remove the forward hook from the model."""
        self._capture.remove()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SFAM(PairExplainer):
    """Similar Feature Activation Map (Eq. 3 with Eq. 2, or Eq. 6 with Eq. 5).

    Args:
        model: any ``nn.Module``; called on a batch of images.
        target_layer: the module whose output is the feature map ``A`` (e.g. ``resnet.layer4``).
        metric: ``"euclidean"`` (Eq. 2) or ``"cosine"`` (Eq. 5), matching the model's similarity.
        pool: the pooling ``p(·)`` that turns ``A`` into ``V``: ``"avg"`` (default), ``"max"``, or a callable.
    """

    def __init__(self, model: nn.Module, target_layer: nn.Module, metric: str = "euclidean",
                 pool: str | Callable = "avg"):
        if metric not in cis.METRICS:
            raise ValueError(f"unknown metric {metric!r}; choose one of {cis.METRICS}.")
        super().__init__(model, target_layer, pool)
        self.metric = metric

    def channel_weights(self, v_q, v_s):
        scores = cis.contribution_scores(v_q, v_s, self.metric)
        return cis.normalize_scores(scores), scores
