"""The paper's four baselines (§2.2, Tables 1–2), each a short subclass of :class:`PairExplainer`.

Each map is ``Σ_n w_n A^n`` over the target layer's feature map, rectified (ReLU) at feature
resolution and upsampled bilinearly; the methods differ in the channel weights ``w``:

* :class:`RAM` — the image's own pooled feature ``w_n = v_n``;
* :class:`CGRAM` — Grad-CAM of the query–support cosine similarity;
* :class:`GradFAM` — Grad-CAM of the norm of the image's own raw embedding;
* :class:`Decomposition` — no channel weights: point-to-point similarities between the two maps.

No public code of RAM (Yang et al., CVPR 2019) or Grad-FAM (Wu et al., CVPR 2022) could be found and
their papers could not be checked: these two are reconstructions from how the SFAM paper describes them
("importance from the image's own feature representation"). For a model whose embedding is a plain
global average pool they coincide up to scale (chapter 5 shows it).
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch
from torch import nn

from .explainer import SFAM, FeatureCapture, PairContext, PairExplainer, output_similarity, output_vectors

#: the type of ``reshape_transform=``: the target layer's output -> ``(B, N, h, w)``
Reshape = Callable[[torch.Tensor], torch.Tensor]


def cosine_target(query_output: torch.Tensor, support_output: torch.Tensor) -> torch.Tensor:
    """``cos(e^Q, ē^S)``: the cosine similarity of the query's embedding ``(B, D)`` and the mean ē^S of its K
    L2-normalised support embeddings ``(B, K, D)`` (so the target is the same whether or not the model
    normalises its output); spatial outputs ``(B, C, H, W)`` / ``(B, K, C, H, W)`` are average-pooled first.
    It is :func:`~sfam_lite.explainer.output_similarity` with ``metric="cosine"``."""
    return output_similarity(query_output, support_output, "cosine")


def embedding_norm_target(query_output: torch.Tensor, support_output: torch.Tensor) -> torch.Tensor:
    """``‖e^Q‖ + Σ_k ‖e^S_k‖``: each image's own embedding norm. The gradient with respect to one image's feature
    map sees only its own norm, so one backward pass serves the query and every support image."""
    e_q, e_s = output_vectors(query_output, support_output)
    return e_q.norm(dim=-1) + e_s.norm(dim=-1).sum(1)


def frn_logit_target(frn) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """FRN's logit of the support class (minus the reconstruction distance of the query from its support
    positions, times FRN's scale), as a target on the ``(B, C, 5, 5)`` feature maps FRN outputs: the model's own
    :meth:`~sfam_lite.models.FRN.pair_score`."""
    return frn.pair_score


class GradientExplainer(PairExplainer):
    """Grad-CAM's weighting, shared by CG-RAM and Grad-FAM (they differ only in their :meth:`target`):
    ``α_n = mean_ij ∂target/∂A^n_ij`` for the query ``(B, N)`` and each support image ``(B, K, N)``, the map
    ``ReLU(Σ_n α_n A^n)`` at feature resolution."""
    needs_gradients = True
    rectify = True

    def channel_weights(self, ctx: PairContext):
        alpha_q, alpha_s = ctx.query_gradients.mean(dim=(-2, -1)), ctx.support_gradients.mean(dim=(-2, -1))
        return alpha_q, alpha_s, alpha_q


class RAM(PairExplainer):
    """Ranking activation map, reconstructed: each image weights its own channels by its pooled feature,
    ``w_n = v_n = p(A)_n``; the query map ignores the support image and vice versa. ``reshape_transform``: as for
    :class:`~sfam_lite.explainer.PairExplainer`."""
    rectify = True
    explains = None     # no similarity of the pair: each image weights its channels by its own pooled feature

    def __init__(self, model: nn.Module | None, target_layer: nn.Module | None = None, pool="avg", *,
                 reshape_transform: Reshape | None = None):
        super().__init__(model, target_layer, pool, reshape_transform=reshape_transform)

    def channel_weights(self, ctx):
        return ctx.query_vectors, ctx.support_vectors_each, ctx.query_vectors


class SupportWeightedRAM(RAM):
    """RAM read as CAM with the *other* image's pooled feature in place of a class's weights (the book's reading,
    not a verified definition): the query map weights the query's channels by the support prototype,
    ``w_n = v^S_n`` (Eq. 1), and each support map weights its channels by the query's ``v^Q_n``; then ReLU.

    CAMA's RAM is said to explain the query–gallery ranking, a pair-dependent quantity, while :class:`RAM` (the SFAM
    paper's description) weights each image by its own feature; CAMA's formula could not be read here, so both
    readings are offered and labelled. For a model whose embedding is the average-pooled target layer compared by
    a dot product, with non-negative features and one support image, the query map is proportional to
    Decomposition's: ``Σ_xy ⟨A^Q_ij, A^S_xy⟩ = hw · Σ_n v^S_n A^n_ij`` (with K > 1, Decomposition scales each
    support's products by their own maximum before it sums them).
    """

    def channel_weights(self, ctx):
        k = ctx.support_vectors_each.shape[1]
        return ctx.support_vectors, ctx.query_vectors[:, None].expand(-1, k, -1), ctx.support_vectors


class CGRAM(GradientExplainer):
    """CG-RAM (Shen et al., ES-Net): Grad-CAM with the query–support similarity as the target.

    ``α_n = mean_ij ∂s/∂A^n_ij`` where ``s = cos(e^Q, ē^S)`` is the cosine similarity of the model's output
    embeddings (a spatial output is average-pooled first; ē^S is the mean of the K normalised support
    embeddings, :func:`cosine_target`);
    the map is ``ReLU(Σ_n α_n A^n)`` at feature resolution, then upsampled. The query map differentiates
    with respect to the query's feature map, each support map with respect to that support image's.
    This is pytorch-grad-cam's ``GradCAM`` with a cosine-similarity target (tested).

    Args:
        target: another similarity ``(query_output (B, ...), support_output (B, K, ...)) -> (B,)``, e.g.
            :func:`frn_logit_target` for FRN's own score.
        head: for :meth:`explain_features`: the layers after the target layer (features → model output).
        output: for a model (or head) that returns a tuple, list or dict: the key or index of the embedding tensor
            in it, or a callable that returns it (:class:`~sfam_lite.explainer.PairExplainer`).
        output_transform: the callable form of ``output``, e.g. ``lambda out: out["embedding"]``.
        reshape_transform: the target layer's output to ``(B, N, h, w)`` (applied to the gradients too), e.g.
            :func:`sfam_lite.vit_tokens_to_grid`.

    Unlike SFAM's, the similarity it explains is the model's own: ``Explanation.explained_similarity`` is the
    target's value, and with the default target equals ``model_similarity``.
    """
    def __init__(self, model: nn.Module | None, target_layer: nn.Module | None = None, target: Callable = cosine_target,
                 head: Callable | None = None, output: str | int | Callable | None = None, *,
                 output_transform: Callable[..., torch.Tensor] | None = None, reshape_transform: Reshape | None = None):
        super().__init__(model, target_layer, "avg", head, output, reshape_transform=reshape_transform,
                         output_transform=output_transform)
        if not callable(target):
            raise TypeError("target must be a callable (query_output, support_output) -> (B,) similarities.")
        self._target = target
        if target is cosine_target:
            self.metric, self.explains = "cosine", "cosine of the model's output embeddings"
        else:
            self.explains = f"the model's output, through the target {getattr(target, '__name__', repr(target))}"

    def target(self, query_output, support_output):
        return self._target(query_output, support_output)

    def similarity(self, ctx):
        return ctx.target_values


class GradFAM(GradientExplainer):
    """Grad-FAM (Wu et al.), reconstructed: Grad-CAM of the norm of the image's own embedding,
    ``α_n = mean_ij ∂‖e(x)‖/∂A^n_ij``, map ``ReLU(Σ_n α_n A^n)``; each image is explained on its own.

    The norm must be taken *before* any L2 normalisation (after it ``‖e‖ = 1`` and the gradient vanishes):
    ``embedding_layer`` names the module whose output is the raw embedding (for
    :class:`sfam_lite.models.GPWEmbedding`, ``model.embed``); by default the model's output (a spatial
    output average-pooled). For :meth:`explain_features`, ``head`` maps features to that raw embedding. For a model
    (or head) that returns a tuple, list or dict, ``output`` is the key or index of the embedding tensor in it, or a
    callable that returns it (or ``output_transform``, a callable). ``reshape_transform``: as for
    :class:`~sfam_lite.explainer.PairExplainer`.
    """
    explains = None     # no similarity of the pair: each image's own embedding norm

    def __init__(self, model: nn.Module | None, target_layer: nn.Module | None = None,
                 embedding_layer: nn.Module | None = None, head: Callable | None = None,
                 output: str | int | Callable | None = None, *,
                 output_transform: Callable[..., torch.Tensor] | None = None, reshape_transform: Reshape | None = None):
        super().__init__(model, target_layer, "avg", head, output, reshape_transform=reshape_transform,
                         output_transform=output_transform)
        self._embedding = None
        if embedding_layer is not None:
            if model is None:
                raise ValueError("embedding_layer needs the model; for cached features pass head= instead.")
            self._embedding = FeatureCapture(embedding_layer, keep_graph=True)

    def target_input(self, model_output):
        if self._embedding is None:
            return super().target_input(model_output)
        if self._embedding.output is None:
            raise RuntimeError("embedding_layer did not run during the model's forward pass.")
        return self._embedding.output

    def target(self, query_output, support_output):
        norms = output_vectors(query_output, support_output)[0].detach().norm(dim=-1)
        if len(norms) and bool(((norms - 1).abs() < 1e-4).all()):
            warnings.warn("Grad-FAM differentiates the norm of the embedding, but every embedding it reads has norm "
                          "1 (the model L2-normalises its output), so the gradient vanishes and the maps are "
                          "rounding noise. Pass embedding_layer=, the module whose output is the embedding before "
                          "the normalisation (for sfam_lite.models.GPWEmbedding, model.embed), or, for "
                          "explain_features, a head= that stops before it.", UserWarning, stacklevel=4)
        return embedding_norm_target(query_output, support_output)

    def close(self):
        super().close()
        if self._embedding is not None:
            self._embedding.remove()


class Decomposition(PairExplainer):
    """Similarity decomposition (Zhu, Yang & Chen, IEEE TIP 2021), for dot-product / cosine similarity.

    With global average pooling, ``V^Q·V^S`` is the mean of the point-to-point similarities
    ``P[i, j, x, y] = Σ_c A^Q_c(i, j) A^S_c(x, y)``. Then ``P ← max(P / max P, 0)``; the query map is
    ``Σ_{x, y} P`` (summed over the K support images too), each support map ``Σ_{i, j} P``. A linear neck
    ``projection`` (an ``nn.Linear`` or a ``(D, N)`` matrix; its bias is ignored) is applied to every
    position first, so that ``P`` decomposes the embeddings' dot product rather than the pooled features'.

    It decomposes a dot product; for a Euclidean model it is not defined, as the paper's Table 1 says ("—"):
    ``metric="euclidean"`` is refused. ``reshape_transform`` / ``output_transform``: as for
    :class:`~sfam_lite.explainer.PairExplainer`.
    """
    rectify = True

    def __init__(self, model: nn.Module | None, target_layer: nn.Module | None = None, metric: str = "cosine",
                 projection: nn.Linear | torch.Tensor | None = None, *, reshape_transform: Reshape | None = None,
                 output_transform: Callable[..., torch.Tensor] | None = None):
        if metric != "cosine":
            raise ValueError(f"Decomposition is defined for dot-product or cosine similarity only, not {metric!r}: "
                             "the similarity of a Euclidean model does not decompose into point-to-point products. "
                             "Report it as not applicable ('—'), as the paper does.")
        super().__init__(model, target_layer, "avg", reshape_transform=reshape_transform,
                         output_transform=output_transform)
        if isinstance(projection, nn.Linear):
            projection = projection.weight
        if projection is not None and (not isinstance(projection, torch.Tensor) or projection.ndim != 2):
            raise TypeError("projection must be an nn.Linear or a (D, N) matrix.")
        self.projection = projection
        self.metric = metric
        self.explains = ("dot product of the " + ("projected " if projection is not None else "") +
                         "pooled target-layer features (the mean of the point-to-point similarities)")

    def similarity(self, ctx):
        v_q, v_s = ctx.query_vectors, ctx.support_vectors
        if self.projection is not None:
            w = self.projection.detach().to(v_q)
            v_q, v_s = v_q @ w.T, v_s @ w.T
        return (v_q * v_s).sum(-1)

    def _explain(self, a_q, a_s, size, grad_q=None, grad_s=None, **extra):
        # checked before any work: the projection reads the target layer's N channels at every position
        if self.projection is not None and self.projection.shape[1] != a_q.shape[1]:
            raise ValueError(f"projection has input width {self.projection.shape[1]} (a (D, N) = "
                             f"{tuple(self.projection.shape)} matrix) but the target layer's feature maps have "
                             f"N = {a_q.shape[1]} channels. Pass the neck that reads this layer's output, an "
                             f"nn.Linear({a_q.shape[1]}, D) or a (D, {a_q.shape[1]}) matrix, or choose the target "
                             "layer that feeds it.")
        return super()._explain(a_q, a_s, size, grad_q, grad_s, **extra)

    def channel_weights(self, ctx):
        return None, None, None

    def combine(self, ctx, query_weights, support_weights):
        a_q, a_s = ctx.query_features, ctx.support_features
        if self.projection is not None:
            w = self.projection.detach().to(a_q)
            a_q = torch.einsum("dn,bnhw->bdhw", w, a_q)
            a_s = torch.einsum("dn,bknhw->bkdhw", w, a_s)
        p = torch.einsum("bnij,bknxy->bkijxy", a_q, a_s)
        peak = p.flatten(2).amax(-1)[:, :, None, None, None, None]
        p = torch.where(peak > 0, p / torch.where(peak > 0, peak, torch.ones_like(peak)), torch.zeros_like(p)).clamp_min(0)
        return p.sum(dim=(1, 4, 5)), p.sum(dim=(2, 3))


# -- SFAM's own ablations (chapter 10): what Eq. 4's min-max stretch and the support add to the channel sum -----


class AllOnes(PairExplainer):
    """SFAM with every ``Norm(ω_n) = 1``: Eq. 3 with unit weights, the plain channel sum ``L_ij = Σ_n A^n_ij``.

    It ignores the support image entirely. Since Eq. 4 maps the closest channel to 1 and most others near it
    (``Norm(ω_n) = (max d − d_n) / (max d − min d)``, chapter 10), SFAM's map differs from this one only by how far
    its weights fall below 1. As SFAM, it returns Eq. 3 without rectification."""
    explains = None     # no similarity of the pair: the plain channel sum of each image's features

    def __init__(self, model: nn.Module | None, target_layer: nn.Module | None = None, pool="avg", *,
                 reshape_transform: Reshape | None = None):
        super().__init__(model, target_layer, pool, reshape_transform=reshape_transform)

    def channel_weights(self, ctx):
        return torch.ones_like(ctx.query_vectors), None, None


class RawCIS(SFAM):
    """SFAM without Eq. 4: Eq. 3 with the raw CIS ``ω_n`` of Eq. 2 (``metric="euclidean"``) or Eq. 5
    (``"cosine"``) as channel weights, ``L_ij = Σ_n ω_n A^n_ij`` (:func:`sfam_lite.cis.contribution_scores`).

    ``ω_n = 1/(N − 1) − d_n / ((N − 1) D)``: every weight is the same constant minus the channel's share of the
    distance, so the map is ``(Σ_n A^n − Σ_n (d_n / D) A^n) / (N − 1)``, the channel sum minus the distance's
    channel-weighted map. The weights are the ``scores`` SFAM reports; only Eq. 4's stretch is left out."""

    def channel_weights(self, ctx):
        _, _, scores = super().channel_weights(ctx)
        return scores, None, scores
