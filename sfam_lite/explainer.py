"""Explainers for metric-learning models: a small shared base and SFAM (paper §3).

The shape follows pytorch-grad-cam: an explainer is built from a model and a target layer,
captures that layer's feature map with a forward hook, and is called on a query and its support
images. One shared pipeline does the rest (pool, weight, combine, rectify, upsample); a method
is a subclass that says how channel weights come from a :class:`PairContext` (SFAM: Norm(ω) of
the two pooled vectors; the baselines in :mod:`sfam_lite.baselines`: the image's own vector or
averaged gradients of a similarity *target*).

Every explainer also explains from feature maps computed once per image
(:meth:`PairExplainer.explain_features`), so many pairs cost no backbone passes; an explainer
built with ``model=None`` does only that and installs no hook. Gradient methods need the layers
after the target layer for this, as a ``head``.

Every explainer takes, as pytorch-grad-cam's do, ``reshape_transform=`` (the target layer's output, e.g. a
transformer's ``(B, T, D)`` tokens, to a ``(B, N, h, w)`` map; :func:`sfam_lite.vit_tokens_to_grid`) and
``output_transform=`` (what the model returns, e.g. a dict, to its embedding tensor). Each :class:`Explanation` names
the similarity its maps explain (``explains``: for SFAM the pooled target-layer features' ``V = p(f(x))``, Eq. 1,
not the model's output) beside the model's own similarity of the pair (``model_similarity``), so the two can be
compared; :func:`sfam_lite.explain_episode` explains an N-way K-shot episode.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, fields, replace
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import cis
from ._checks import as_float_tensor, check_finite, check_ndim, compute_dtype
from .maps import sfam_map, upsample

POOLS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "avg": lambda a: a.mean(dim=(-2, -1)),
    "max": lambda a: a.amax(dim=(-2, -1)),
}


@dataclass
class Explanation:
    """What an explainer returns for B queries, each compared with K support images.

    Attributes:
        query_maps: ``(B, H, W)`` maps at input resolution (for SFAM Eq. 3 / Eq. 6, not rescaled).
        support_maps: ``(B, K, H, W)``, one map per support image.
        weights: ``(B, N)`` channel weights of the query map (SFAM: ``Norm(ω)``, Eq. 4); None for
            methods without channel weights.
        support_weights: ``(B, K, N)`` channel weights of the support maps (SFAM: the query's, repeated).
        scores: ``(B, N)`` the method's raw channel scores (SFAM: CIS ``ω``, Eq. 2 or Eq. 5).
        query_vectors, support_vectors: ``(B, N)`` pooled query vector ``V^Q`` and support
            prototype ``V^S`` (Eq. 1).
        squared_distance: ``(B,)`` ``‖V^Q - V^S‖²``, the D of Eq. 2.
        cosine_similarity: ``(B,)`` ``cos(V^Q, V^S)``; the D of Eq. 5 is ``2 - 2 cos``.
        query_features, support_features: the feature maps ``(B, N, h, w)`` and ``(B, K, N, h, w)``.
        explains: which similarity the maps explain, in words. SFAM: the cosine (``metric="cosine"``, Eq. 5) or minus
            the squared Euclidean distance (Eq. 2) of the *pooled target-layer features* ``V = p(f(x))`` (Eq. 1), not of
            the model's output; CG-RAM: the cosine of the model's output embeddings; None for a method that
            explains no similarity of the pair (RAM, Grad-FAM, the reference maps).
        explained_similarity: ``(B,)`` the value of that similarity for each pair, larger meaning more alike (SFAM:
            ``cos(V^Q, V^S)``, or ``-‖V^Q - V^S‖²``; CG-RAM: its target); None where ``explains`` is None.
        model_similarity: ``(B,)`` the model's own similarity of each pair, from its output (picked by
            ``output_transform=`` / ``output=``), by the explainer's metric: ``cos(e^Q, ē^S)`` for cosine,
            ``-‖e^Q - ē^S‖²`` for Euclidean (:func:`output_similarity`). None when the model did not run in the call
            (:meth:`PairExplainer.explain_features`), when its output is a tuple or dict and nothing picks the
            embedding, or when the method has no metric.
    """

    query_maps: torch.Tensor
    support_maps: torch.Tensor
    weights: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    query_vectors: torch.Tensor | None = None
    support_vectors: torch.Tensor | None = None
    squared_distance: torch.Tensor | None = None
    cosine_similarity: torch.Tensor | None = None
    query_features: torch.Tensor | None = None
    support_features: torch.Tensor | None = None
    support_weights: torch.Tensor | None = None
    explains: str | None = None
    explained_similarity: torch.Tensor | None = None
    model_similarity: torch.Tensor | None = None

    def take(self, index) -> "Explanation":
        """The explanation of the queries ``index`` only (every tensor field indexed along its first dimension)."""
        return Explanation(**{f.name: _index(getattr(self, f.name), index) for f in fields(self)})


def _index(value, index):
    return value[index] if isinstance(value, torch.Tensor) else value


def _concatenate(values: list):
    """One field of several explanations, joined along the pairs: tensors concatenated, anything else the first's."""
    return torch.cat(values) if isinstance(values[0], torch.Tensor) else values[0]


@dataclass
class PairContext:
    """Everything a method may use to weight channels, for B queries and their K support images.

    ``query_features`` ``(B, N, h, w)``, ``support_features`` ``(B, K, N, h, w)``; pooled vectors
    ``query_vectors`` ``(B, N)``, ``support_vectors_each`` ``(B, K, N)`` and their mean, the prototype
    ``support_vectors`` ``(B, N)`` (Eq. 1). ``query_gradients`` / ``support_gradients``: gradients of the
    method's target with respect to the feature maps (same shapes), only for methods that ask for them.
    """
    query_features: torch.Tensor
    support_features: torch.Tensor
    query_vectors: torch.Tensor
    support_vectors_each: torch.Tensor
    support_vectors: torch.Tensor
    query_gradients: torch.Tensor | None = None
    support_gradients: torch.Tensor | None = None
    #: for gradient methods: the target's value per pair ``(B,)``
    target_values: torch.Tensor | None = None
    #: the images explained, when the explainer was called on images (None for :meth:`PairExplainer.explain_features`):
    #: queries ``(B, C, H, W)`` and support images ``(B, K, C, H, W)``; a method that perturbs its input reads these
    #: and runs ``explainer.model`` (in eval mode during :meth:`PairExplainer.channel_weights`)
    query_images: torch.Tensor | None = None
    support_images: torch.Tensor | None = None


def _version(t: torch.Tensor):
    """The tensor's in-place version counter (None for inference-mode tensors, which have none)."""
    try:
        return t._version
    except (RuntimeError, AttributeError):
        return None


class FeatureCapture:
    """Keeps the output of ``layer`` from the latest forward pass, via a forward hook.

    ``keep_graph=False`` stores it detached; ``keep_graph=True`` keeps it in the autograd graph so that a
    gradient with respect to it can be taken (run the model with gradients enabled).

    Two ways a captured tensor would silently be the wrong one are refused by :meth:`run` with a ``RuntimeError``:

    * the layer's output is modified in place later in the forward pass (e.g. ``BatchNorm2d`` followed by
      ``ReLU(inplace=True)``): the hook's tensor then holds the later op's result. Detected with the tensor's version
      counter; choose a layer whose output is not modified in place (here: the ReLU itself), or build the
      model with ``inplace=False``.
    * the layer runs more than once in one forward pass (a module reused, e.g. one ReLU instance after two
      convolutions): only one of its outputs can be the feature map. Choose a module that runs once.
    """

    def __init__(self, layer: nn.Module, keep_graph: bool = False):
        if not isinstance(layer, nn.Module):
            raise TypeError(f"target_layer must be an nn.Module, got {type(layer).__name__}.")
        self.output: torch.Tensor | None = None
        self.keep_graph = keep_graph
        self.removed = False
        self.calls = 0
        self._seen_version = None
        self._layer_name = type(layer).__name__
        self._handle = layer.register_forward_hook(self._keep)

    def _keep(self, module, inputs, output):
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"the target layer returned {type(output).__name__}, not a tensor; "
                            "choose a layer whose output is the (B, N, H, W) feature map.")
        self.calls += 1
        self._seen_version = _version(output)
        self.output = output if self.keep_graph else output.detach()   # detach() shares the version counter

    def reset(self) -> None:
        """Forget the previous forward pass (call before running the model when not using :meth:`run`)."""
        self.output, self.calls, self._seen_version = None, 0, None

    def check(self, name: str | None = None) -> torch.Tensor:
        """The captured output after a forward pass; ``RuntimeError`` if the layer (called ``name`` in the messages;
        default: the target layer) did not run, ran more than once, or its output was modified in place after it
        returned."""
        if self.output is None:
            what = "the target layer did not run" if name is None else f"{name} did not run"
            raise RuntimeError(f"{what} during the model's forward pass; pass a module that the model actually calls.")
        name = name or "the target layer"
        if self.calls > 1:
            raise RuntimeError(f"{name} ({self._layer_name}) ran {self.calls} times in one forward pass (a "
                               "module used at several places); its feature map is ambiguous. Choose a module that "
                               "runs once per forward pass, e.g. give each use its own instance.")
        now = _version(self.output)
        if self._seen_version is not None and now is not None and now != self._seen_version:
            raise RuntimeError(f"the output of {name} ({self._layer_name}) was modified in place after the layer "
                               "returned (e.g. by a following ReLU(inplace=True)), so the captured feature map would "
                               "be that later op's result. Choose as target layer the module whose output is not "
                               "modified in place (e.g. that ReLU itself), or build the model with inplace=False.")
        return self.output

    def run(self, model: nn.Module, images: torch.Tensor):
        """``model(images)`` and the layer's output during that call; an error if the layer did not run, ran more
        than once, or its output was modified in place after it returned."""
        if self.removed:
            raise RuntimeError("this explainer was closed (its hook is removed from the model): call it inside its "
                               "`with` block, or build a new one.")
        self.reset()
        result = model(images)
        self.check()
        return result, self.output

    def remove(self) -> None:
        self._handle.remove()
        self.removed = True


@contextmanager
def eval_mode(model: nn.Module):
    """Run ``model`` in eval mode inside the block and give every submodule its own mode back afterwards: an
    explanation must not update BatchNorm statistics, nor make one image's map depend on the others in its batch."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def _describe(x) -> str:
    """A short description of a model's return value for messages: its type, and a dict's keys."""
    if isinstance(x, dict):
        return f"a dict with keys {list(x)[:8]}"
    if isinstance(x, (tuple, list)):
        return f"a {type(x).__name__} of {len(x)}"
    return f"a {type(x).__name__}"


def _check_autograd_available(method: str) -> None:
    """``RuntimeError`` naming the cause when gradients cannot be taken: inside ``torch.inference_mode()`` no tensor
    enters an autograd graph, and ``torch.enable_grad()`` does not turn it back on."""
    if torch.is_inference_mode_enabled():
        raise RuntimeError(f"{method} takes gradients, which torch.inference_mode() disables; call it outside "
                           "torch.inference_mode() (torch.no_grad() around it is fine: the explainer turns gradients "
                           "on for its own pass).")


def output_vectors(query_output: torch.Tensor, support_output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What a model returned for B queries ``(B, ...)`` and their K support images ``(B, K, ...)`` as one vector per
    image, ``(B, D)`` and ``(B, K, D)``: a spatial output (queries ``(B, C, H, W)``) is average-pooled, any other
    flattened. Every output-level quantity (the model's similarity, the gradient methods' targets) reads these."""
    if query_output.ndim == 4:
        return query_output.mean(dim=(-2, -1)), support_output.mean(dim=(-2, -1))
    return query_output.flatten(1), support_output.flatten(2)


def output_similarity(query_output: torch.Tensor, support_output: torch.Tensor, metric: str = "cosine") -> torch.Tensor:
    """The model's own similarity ``(B,)`` of each query's output ``(B, ...)`` to its K support images' ``(B, K, ...)``.

    ``"cosine"``: ``cos(e^Q, ē^S)``, ``ē^S`` the mean of the K L2-normalised support embeddings (CG-RAM's target,
    :func:`sfam_lite.baselines.cosine_target`); ``"euclidean"``: ``-‖e^Q - ē^S‖²``, ``ē^S`` their plain mean (a
    prototypical network's prototype). For K = 1 both are the pair's cosine or minus squared distance. A spatial
    output ``(B, C, H, W)`` / ``(B, K, C, H, W)`` is average-pooled first, any other flattened to a vector.
    """
    e_q, e_s = output_vectors(query_output, support_output)
    if metric == "cosine":
        return F.cosine_similarity(e_q, F.normalize(e_s, dim=-1).mean(1), dim=-1)
    if metric == "euclidean":
        return -(e_q - e_s.mean(1)).square().sum(-1)
    raise ValueError(f"unknown metric {metric!r}; choose one of {cis.METRICS}.")


_TOKENS_HINT = ("tokens of a transformer layer (B, T, D) rather than a (B, N, H, W) feature map? Pass "
                "reshape_transform=sfam_lite.vit_tokens_to_grid (drops the class token and lays the patch tokens "
                "out as a (B, D, h, w) grid), or your own callable returning (B, N, h, w), as for pytorch-grad-cam.")


class PairExplainer:
    """Shared pipeline: capture the target layer for query and support images, pool, weight, combine.

    A method implements :meth:`channel_weights` (and, if it needs them, sets ``needs_gradients`` and a
    :meth:`target`). Use as a context manager (or call :meth:`close`) to remove the hooks from the model.
    The model runs in eval mode during each call (so BatchNorm statistics stay as they are and one image's map does
    not depend on the rest of its batch), and every submodule's mode is restored afterwards.

    Args:
        model: any ``nn.Module`` called on a batch of images, or None for an explainer that only
            explains cached features (:meth:`explain_features`).
        target_layer: the module whose output is the feature map ``A``; by default the model's own
            ``target_layer`` attribute (:class:`sfam_lite.models.FRN`, :class:`~sfam_lite.models.GPWEmbedding` have one).
        pool: ``p(·)``: ``"avg"``, ``"max"`` or a callable mapping ``(B, N, H, W)`` to ``(B, N)``.
        head: for gradient methods' :meth:`explain_features`: the layers after the target layer, mapping
            ``(B, N, h, w)`` features to what :meth:`target` reads (the model output or raw embedding).
        output: for gradient methods, the part of what the model (or ``head``) returns that :meth:`target` reads,
            when it returns a tuple, list or dict rather than the embedding tensor: a key or index (``"embedding"``,
            ``0``) or a callable ``returned -> tensor``. None (default): the returned tensor itself.
        reshape_transform: pytorch-grad-cam's ``reshape_transform``: a callable from the target layer's output to
            the ``(B, N, h, w)`` feature map ``A``, e.g. :func:`sfam_lite.vit_tokens_to_grid` for a ViT layer's
            ``(B, T, D)`` tokens. Gradient methods apply it to the gradients too (as grad-cam does). Features given
            to :meth:`explain_features` are taken as already transformed.
        output_transform: a callable from what the model (or ``head``) returns to its embedding tensor, e.g.
            ``lambda out: out["embedding"]`` for a model returning a dict; applied before any target and for
            ``Explanation.model_similarity``. The documented name for the callable form of ``output=`` (give one).
    """

    #: whether :meth:`channel_weights` reads ``query_gradients`` / ``support_gradients``
    needs_gradients = False
    #: ReLU at feature resolution before upsampling (Grad-CAM's convention); SFAM returns Eq. 3 as it is
    rectify = False
    #: which similarity of the pair the maps explain (``Explanation.explains``); None: no similarity of the pair
    explains: str | None = None
    #: the metric of ``Explanation.model_similarity`` (:func:`output_similarity`); None: not computed
    metric: str | None = None

    def __init__(self, model: nn.Module | None, target_layer: nn.Module | None = None, pool: str | Callable = "avg",
                 head: Callable | None = None, output: str | int | Callable | None = None, *,
                 reshape_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 output_transform: Callable[..., torch.Tensor] | None = None):
        if model is not None and not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module (or None to explain cached features), got {type(model).__name__}.")
        if model is None and target_layer is not None:
            raise ValueError("target_layer given without a model; pass the model too, or neither to explain "
                             "cached features only.")
        if isinstance(pool, str):
            if pool not in POOLS:
                raise ValueError(f"unknown pool {pool!r}; choose one of {tuple(POOLS)} or pass a callable "
                                 "mapping (B, N, H, W) to (B, N).")
            pool = POOLS[pool]
        elif not callable(pool):
            raise TypeError("pool must be 'avg', 'max' or a callable mapping (B, N, H, W) to (B, N).")
        if head is not None and not callable(head):
            raise TypeError(f"head must be a callable (e.g. an nn.Module), got {type(head).__name__}.")
        if output is not None and not (callable(output) or isinstance(output, (str, int))) or isinstance(output, bool):
            raise TypeError(f"output must be a key or index of what the model returns (e.g. 'embedding' or 0) or a "
                            f"callable returning the embedding tensor, got {type(output).__name__}.")
        if reshape_transform is not None and not callable(reshape_transform):
            raise TypeError("reshape_transform must be a callable mapping the target layer's output to the "
                            "(B, N, h, w) feature map (e.g. sfam_lite.vit_tokens_to_grid for a ViT's tokens), got "
                            f"{type(reshape_transform).__name__}.")
        if output_transform is not None and not callable(output_transform):
            raise TypeError("output_transform must be a callable mapping what the model returns to its embedding "
                            f"tensor (e.g. lambda out: out['embedding']), got {type(output_transform).__name__}.")
        if output is not None and output_transform is not None:
            raise ValueError("output= and output_transform= both given; pass one: output_transform= is the callable "
                             "form (e.g. output_transform=lambda out: out['embedding']), output= also takes a key or "
                             "index ('embedding', 0).")
        if model is not None and target_layer is None:      # a model that says which layer it explains
            target_layer = getattr(model, "target_layer", None)
            if not isinstance(target_layer, nn.Module):
                raise ValueError(f"target_layer is needed: {type(model).__name__} has no target_layer attribute; pass "
                                 "the module whose output is the feature map, e.g. target_layer=model.layer4.")
        self.model, self.pool, self.head, self.output = model, pool, head, output
        self.reshape_transform, self.output_transform = reshape_transform, output_transform
        self._capture = FeatureCapture(target_layer, keep_graph=self.needs_gradients) if model is not None else None

    # -- the part a method defines -----------------------------------------------------------
    #: the most pairs one call should explain, for methods whose memory per pair is large (None: no limit); read
    #: by :meth:`explain_pairs` and :func:`sfam_lite.evaluate.localisation_ious`
    pairs_per_batch: int | None = None

    def channel_weights(self, ctx: PairContext):
        """Return ``(query_weights, support_weights, scores)``: ``(B, N)``, ``(B, K, N)`` or None (the query's
        weights for every support image), and ``(B, N)`` raw scores (or None)."""
        raise NotImplementedError

    def target(self, query_output: torch.Tensor, support_output: torch.Tensor) -> torch.Tensor:
        """For gradient methods: the scalar per pair ``(B,)`` whose gradients weight the channels, from the
        query's output ``(B, ...)`` and its support images' outputs ``(B, K, ...)``."""
        raise NotImplementedError

    def similarity(self, ctx: PairContext) -> torch.Tensor | None:
        """The value ``(B,)`` of the similarity named by :attr:`explains` (``Explanation.explained_similarity``),
        larger meaning more alike; None for a method that explains no similarity of the pair."""
        return None

    def read_output(self, returned, source: str = "the model") -> torch.Tensor:
        """The embedding tensor in what ``source`` (the model or ``head``) returned, picked by ``output_transform=`` or
        ``output=``; ``TypeError`` naming them when it is a tuple, list or dict and nothing picks the tensor."""
        picked, picker = returned, self.output_transform if self.output_transform is not None else self.output
        if picker is not None:
            name = "output_transform" if self.output_transform is not None else f"output={self.output!r}"
            try:
                picked = picker(returned) if callable(picker) else returned[picker]
            except (KeyError, IndexError, TypeError) as error:
                raise TypeError(f"{name} cannot pick the embedding from what {source} returned "
                                f"({_describe(returned)}): {error!r}.") from None
            if not isinstance(picked, torch.Tensor):
                raise TypeError(f"{name} returned {_describe(picked)}, not a tensor, from what {source} returned "
                                f"({_describe(returned)}); it must return the embedding tensor.")
        if not isinstance(picked, torch.Tensor):
            raise TypeError(f"{source} returned {_describe(picked)}, not a tensor, so {type(self).__name__} cannot "
                            "take the gradient of its target. Pass output=, the key or index of the embedding "
                            "tensor in it (e.g. output='embedding'), or output_transform=, a callable that returns it "
                            "(e.g. output_transform=lambda out: out['embedding']), or wrap the model so that it "
                            "returns the embedding tensor.")
        return picked

    def target_input(self, model_output: torch.Tensor) -> torch.Tensor:
        """What :meth:`target` reads, taken right after a forward pass: the model's output by default (the part that
        ``output_transform=`` / ``output=`` picks, :meth:`read_output`)."""
        return self.read_output(model_output)

    def combine(self, ctx: PairContext, query_weights: torch.Tensor, support_weights: torch.Tensor):
        """Maps at feature resolution: ``Σ_n w_n A^n`` (Eq. 3) for the query ``(B, h, w)`` and each support
        image ``(B, K, h, w)``."""
        a_s = ctx.support_features
        query_maps = sfam_map(ctx.query_features, query_weights)
        support_maps = sfam_map(a_s.flatten(0, 1), support_weights.flatten(0, 1)).reshape(*a_s.shape[:2], *a_s.shape[-2:])
        return query_maps, support_maps

    # -- the shared pipeline -----------------------------------------------------------------
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Run the model on ``(B, C, H, W)`` images and return the target layer's ``(B, N, h, w)`` output (after
        ``reshape_transform``)."""
        return self._forward(images)[1]

    def _forward(self, images: torch.Tensor):
        """One pass without gradients: (the model's embedding for ``model_similarity``, or None; the ``(B, N, h, w)``
        feature map)."""
        self._require_model()
        with torch.no_grad(), eval_mode(self.model):
            returned, raw = self._capture.run(self.model, images)
            a = self._grid(raw)
            embedding = self._model_embedding(returned)
        return embedding, a.detach()

    def _model_embedding(self, returned) -> torch.Tensor | None:
        """The embedding in the model's (or head's) output for ``model_similarity``, detached; None when the method
        has no metric, or the output is not a tensor and neither ``output_transform=`` nor ``output=`` is given."""
        if self.metric is None or (self.output is None and self.output_transform is None
                                   and not isinstance(returned, torch.Tensor)):
            return None
        return self.read_output(returned).detach()

    def _model_similarity(self, e_q: torch.Tensor | None, e_s: torch.Tensor | None, b: int, k: int):
        """:func:`output_similarity` of B query embeddings and K support embeddings per query (``e_s``: ``(K, ...)``
        shared by every query, or ``(B·K, ...)``), computed in float32 for half-precision models."""
        if e_q is None or e_s is None or e_q.ndim == 0 or e_s.ndim == 0 or e_q.shape[0] != b \
                or e_s.shape[0] not in (k, b * k) or e_q.shape[1:] != e_s.shape[1:]:
            return None         # not one embedding per image: the model's output is not comparable pair by pair
        e_s = e_s.reshape(-1, k, *e_s.shape[1:])
        e_s = e_s.expand(b, *e_s.shape[1:])
        wide = compute_dtype(e_q.dtype)
        return output_similarity(e_q.to(wide), e_s.to(wide), self.metric)

    def _require_model(self):
        if self.model is None:
            raise RuntimeError(f"this {type(self).__name__} was built without a model; call explain_features on "
                               "cached feature maps, or build it with a model and target layer.")

    def _grid(self, raw: torch.Tensor) -> torch.Tensor:
        """The feature map ``A`` ``(B, N, h, w)`` from the target layer's output (or a gradient with respect to it):
        ``reshape_transform(raw)`` when given; checked."""
        if self.reshape_transform is None:
            self._check_features(raw.detach())
            return raw
        grid = self.reshape_transform(raw)
        if not isinstance(grid, torch.Tensor) or grid.ndim != 4 or grid.shape[0] != raw.shape[0]:
            got = f"shape {tuple(grid.shape)}" if isinstance(grid, torch.Tensor) else _describe(grid)
            raise ValueError(f"reshape_transform returned {got} for the target layer's output of shape "
                             f"{tuple(raw.shape)}; it must return the (B, N, h, w) feature map with the same batch "
                             f"size B = {raw.shape[0]} (for a ViT's (B, T, D) tokens: sfam_lite.vit_tokens_to_grid).")
        check_finite(grid.detach(), "reshape_transform's output")
        return grid

    @staticmethod
    def _check_features(out):
        if out.ndim == 3:
            raise ValueError(f"the target layer's output must have shape (B, N, H, W), got shape {tuple(out.shape)}: "
                             + _TOKENS_HINT)
        check_ndim(out, "the target layer's output", (4,), "(B, N, H, W)")
        check_finite(out, "the target layer's output")

    def __call__(self, query_images: torch.Tensor, support_images: torch.Tensor) -> Explanation:
        """Explain B queries against support images of ONE class.

        ``support_images`` is ``(K, C, H, W)`` (one support set for every query) or ``(B, K, C, H, W)`` (a support
        set per query); K ≥ 1. The K images are shots of one class: their pooled vectors are averaged into one
        prototype ``V^S`` (Eq. 1). Five images of five classes given as ``(5, C, H, W)`` are therefore explained as
        ONE class's prototype; to explain queries against N classes, use :func:`sfam_lite.explain_episode`.
        """
        self._require_model()
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
        size = query_images.shape[-2:]
        flat_support = support_images.reshape(-1, *support_images.shape[-3:])

        if not self.needs_gradients:
            e_q, a_q = self._forward(query_images)
            e_s, a_s = self._forward(flat_support)
            a_s = a_s.reshape(1 if shared else b, k, *a_s.shape[1:]).expand(b, -1, -1, -1, -1)
            return self._explain(a_q, a_s, size, model_similarity=self._model_similarity(e_q, e_s, b, k),
                                 images=(query_images, support_images.expand(b, *support_images.shape[-4:])))

        # gradient methods: a support image shared by all queries gets a gradient per query, so repeat it
        flat_support = support_images.expand(b, *support_images.shape[-4:]).reshape(-1, *support_images.shape[-3:]) \
            if shared else flat_support
        _check_autograd_available(type(self).__name__)
        # a tensor made under inference mode cannot enter an autograd graph; a clone made outside it can
        query_images, flat_support = (x.clone() if x.is_inference() else x for x in (query_images, flat_support))
        with torch.enable_grad(), eval_mode(self.model):
            returned_q, raw_q = self._capture.run(self.model, query_images)
            if not raw_q.requires_grad:
                raise RuntimeError(f"{type(self).__name__} differentiates with respect to the target layer's output, "
                                   "but it does not require grad: no parameter of the model up to the target layer "
                                   "requires grad (a frozen model, e.g. after model.requires_grad_(False)). Call "
                                   "model.requires_grad_(True) before explaining (the explainer changes no weight), "
                                   "or use explain_features with head=.")
            a_q, e_q = self._grid(raw_q), self._model_embedding(returned_q)
            out_q = self.target_input(returned_q)
            returned_s, raw_s = self._capture.run(self.model, flat_support)
            a_s, e_s = self._grid(raw_s), self._model_embedding(returned_s)
            out_s = self.target_input(returned_s)
            grad_q, grad_s, values = self._gradients(out_q, out_s.reshape(b, k, *out_s.shape[1:]), raw_q, raw_s)
            if self.reshape_transform is not None:       # gradients with respect to the layer's output, as a grid
                grad_q, grad_s = self._grid(grad_q), self._grid(grad_s)
        a_s = a_s.detach().reshape(b, k, *a_s.shape[1:])
        return self._explain(a_q.detach(), a_s, size, grad_q, grad_s.reshape(a_s.shape), target_values=values,
                             model_similarity=self._model_similarity(e_q, e_s, b, k),
                             images=(query_images, flat_support.reshape(b, k, *flat_support.shape[1:])))

    def _gradients(self, out_q, out_s, a_q, a_s):
        """Gradients of the target with respect to ``a_q`` and ``a_s``, and the target's value ``(B,)``."""
        score = self.target(out_q, out_s)
        if score.shape != (out_q.shape[0],):
            raise ValueError(f"the target returned shape {tuple(score.shape)}; it must return one value per query, "
                             f"shape ({out_q.shape[0]},).")
        grad_q, grad_s = torch.autograd.grad(score.sum(), (a_q, a_s), allow_unused=True)
        if grad_q is None or grad_s is None:
            raise RuntimeError("the target does not depend on the target layer's output; check that the target "
                               "layer comes before the module the target reads.")
        return grad_q, grad_s, score.detach()

    def explain_features(self, query_features: torch.Tensor, support_features: torch.Tensor,
                         size: tuple[int, int] | None = None, head: Callable | None = None) -> Explanation:
        """The explanation from feature maps already computed (e.g. by :meth:`features`, once per image).

        ``query_features`` is ``(B, N, h, w)``; ``support_features`` is ``(B, K, N, h, w)`` (a support set per query)
        or ``(K, N, h, w)`` (one support set for every query), exactly as the image call takes ``(B, K, C, H, W)`` or
        ``(K, C, H, W)``; for one support image per query pass ``(B, 1, N, h, w)`` (``support_features[:, None]``).
        The K maps are shots of one class (averaged into ``V^S``, Eq. 1). Maps are upsampled to ``size`` when given.
        Gradient methods run ``head`` (or the ``head`` given when the explainer was built) on the features to reach
        their target; ``model_similarity`` is then that head's output similarity, otherwise None."""
        a_q = as_float_tensor(query_features, "query_features").detach()
        a_s = as_float_tensor(support_features, "support_features").detach()
        check_ndim(a_q, "query_features", (4,), "(B, N, h, w)")
        check_ndim(a_s, "support_features", (4, 5), "(B, K, N, h, w) (a support set per query) or (K, N, h, w) (one "
                   "support set for every query); for one support map per query use support_features[:, None]")
        if a_s.ndim == 4:
            a_s = a_s[None].expand(a_q.shape[0], -1, -1, -1, -1)
        b, k = a_s.shape[:2]
        if b != a_q.shape[0] or a_s.shape[2] != a_q.shape[1]:
            raise ValueError(f"support_features {tuple(a_s.shape)} do not match query_features {tuple(a_q.shape)} "
                             "in batch size or channel count; support_features must be (B, K, N, h, w) or "
                             "(K, N, h, w) with the queries' N.")
        if k == 0:
            raise ValueError("support_features holds K = 0 support maps; SFAM needs at least one.")
        check_finite(a_q, "query_features")
        check_finite(a_s, "support_features")
        grad_q = grad_s = values = model_similarity = None
        if self.needs_gradients:
            head = head if head is not None else self.head
            if head is None:
                raise ValueError(f"{type(self).__name__} differentiates the model's output: pass head=, the layers "
                                 "after the target layer (features -> what the target reads).")
            _check_autograd_available(type(self).__name__)
            with torch.enable_grad():
                leaf_q, leaf_s = a_q.clone().requires_grad_(True), a_s.clone().requires_grad_(True)
                returned_q, returned_s = head(leaf_q), head(leaf_s.flatten(0, 1))
                out_q, out_s = self.read_output(returned_q, "head"), self.read_output(returned_s, "head")
                grad_q, grad_s, values = self._gradients(out_q, out_s.reshape(b, k, *out_s.shape[1:]), leaf_q, leaf_s)
            e_q, e_s = self._model_embedding(returned_q), self._model_embedding(returned_s)
            model_similarity = self._model_similarity(e_q, e_s, b, k)
        return self._explain(a_q, a_s, size, grad_q, grad_s, target_values=values, model_similarity=model_similarity)

    def explain_pairs(self, features: torch.Tensor, queries, supports, size: tuple[int, int] | None = None,
                      head: Callable | None = None, batch: int = 500) -> Explanation:
        """:meth:`explain_features` for the pairs ``(features[queries[i]], features[supports[i]])`` of one table of
        cached feature maps ``features`` ``(n, N, h, w)`` (one row per image, e.g. from
        :func:`sfam_lite.evaluation.forward_with_features`), ``batch`` pairs at a time.

        ``supports`` is ``(B,)`` (one support image per query) or ``(B, K)`` (K shots of its class). Memory stays
        that of ``batch`` pairs (at most :attr:`pairs_per_batch`) however many are explained: the returned
        explanation concatenates every field over the batches except ``query_features`` and ``support_features``,
        which are None (gathered per pair they would copy the features again: index ``features`` with ``queries``
        and ``supports`` instead). Each pair's maps and weights are the ones :meth:`explain_features` gives it
        alone. To score many pairs without keeping their maps, use :meth:`explain_pair_batches`."""
        parts = [out for _, out in self.explain_pair_batches(features, queries, supports, size, head, batch)]
        return Explanation(**{f.name: _concatenate([getattr(p, f.name) for p in parts]) for f in fields(Explanation)})

    def explain_pair_batches(self, features: torch.Tensor, queries, supports, size: tuple[int, int] | None = None,
                             head: Callable | None = None, batch: int = 500):
        """:meth:`explain_pairs` one batch at a time: yields ``(pairs, explanation)``, ``pairs`` the slice of
        ``queries`` / ``supports`` the batch explains, so that a caller can score each batch and drop its maps
        (CUB's ~3,800 retrieval pairs at 227 px hold 1.6 GB of maps)."""
        queries, supports = torch.as_tensor(queries), torch.as_tensor(supports)
        if queries.dim() != 1 or supports.dim() not in (1, 2) or len(supports) != len(queries):
            raise ValueError(f"queries must be (B,) and supports (B,) or (B, K) image indices of the same B; got "
                             f"{tuple(queries.shape)} and {tuple(supports.shape)}.")
        if len(queries) == 0:
            raise ValueError("no pairs to explain: queries is empty.")
        shots = supports if supports.dim() == 2 else supports[:, None]
        batch = min(batch, self.pairs_per_batch or batch)

        def batches():          # the checks above run at the call, the explaining as the caller iterates
            for i in range(0, len(queries), batch):
                out = self.explain_features(features[queries[i:i + batch]], features[shots[i:i + batch]],
                                            size=size, head=head)
                yield slice(i, min(i + batch, len(queries))), replace(out, query_features=None,
                                                                      support_features=None)
        return batches()

    def _explain(self, a_q, a_s, size, grad_q=None, grad_s=None, target_values=None,
                 model_similarity=None, images=(None, None)) -> Explanation:
        b, k = a_s.shape[:2]
        v_q = self._pooled(a_q)
        v_each = self._pooled(a_s.flatten(0, 1)).reshape(b, k, -1)
        v_s = cis.support_prototype(v_each)
        ctx = PairContext(a_q, a_s, v_q, v_each, v_s, grad_q, grad_s, target_values, *images)
        with eval_mode(self.model) if self.model is not None else nullcontext():
            query_weights, support_weights, scores = self.channel_weights(ctx)
        if support_weights is None:
            support_weights = query_weights[:, None].expand(b, k, -1) if query_weights is not None else None
        query_maps, support_maps = self.combine(ctx, query_weights, support_weights)
        if self.rectify:
            query_maps, support_maps = query_maps.clamp_min(0), support_maps.clamp_min(0)
        size = tuple(size) if size is not None else tuple(a_q.shape[-2:])
        return Explanation(
            query_maps=upsample(query_maps, size), support_maps=upsample(support_maps, size),
            weights=query_weights, support_weights=support_weights, scores=scores,
            query_vectors=v_q, support_vectors=v_s,
            squared_distance=cis.squared_distance(v_q, v_s),
            cosine_similarity=cis.cosine_similarity(v_q, v_s),
            query_features=a_q, support_features=a_s,
            explains=self.explains, explained_similarity=self.similarity(ctx), model_similarity=model_similarity)

    def _pooled(self, a: torch.Tensor) -> torch.Tensor:
        """``pool(a)``, checked to be one ``(B, N)`` vector per feature map ``a`` ``(B, N, h, w)``."""
        v = self.pool(a)
        if not isinstance(v, torch.Tensor) or v.shape != a.shape[:2]:
            got = f"shape {tuple(v.shape)}" if isinstance(v, torch.Tensor) else type(v).__name__
            raise ValueError(f"pool returned {got} for feature maps of shape {tuple(a.shape)}; it must return the "
                             f"(B, N) = {tuple(a.shape[:2])} pooled vectors, reducing both spatial dimensions (e.g. "
                             "lambda a: a.amax(dim=(-2, -1))).")
        return v

    def close(self) -> None:
        """Remove the forward hook from the model."""
        if self._capture is not None:
            self._capture.remove()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SFAM(PairExplainer):
    """Similar Feature Activation Map (Eq. 3 with Eq. 2, or Eq. 6 with Eq. 5). No gradients: one forward pass.

    The similarity explained is the paper's: that of the *pooled target-layer features* ``V = p(f(x))`` (Eq. 1),
    not of the model's own output (for ``resnet.layer4``, the pooled 512-d vector, not the embedding after ``fc``).
    ``Explanation.explains`` says so, ``explained_similarity`` holds its value and ``model_similarity`` the model's
    own similarity of the same pair (from its output, by ``metric``), so that the two can be compared.

    Args:
        model: any ``nn.Module``; called on a batch of images (None: explain cached features only).
        target_layer: the module whose output is the feature map ``A`` (e.g. ``resnet.layer4``).
        metric: ``"euclidean"`` (Eq. 2) or ``"cosine"`` (Eq. 5), matching the model's similarity.
        pool: the pooling ``p(·)`` that turns ``A`` into ``V``: ``"avg"`` (default), ``"max"``, or a callable.
        reshape_transform: the target layer's output to ``(B, N, h, w)``, e.g. :func:`sfam_lite.vit_tokens_to_grid`.
        output_transform: what the model returns to its embedding (for ``model_similarity``), e.g.
            ``lambda out: out["embedding"]``.
    """

    def __init__(self, model: nn.Module | None, target_layer: nn.Module | None = None, metric: str = "euclidean",
                 pool: str | Callable = "avg", *,
                 reshape_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 output_transform: Callable[..., torch.Tensor] | None = None):
        if metric not in cis.METRICS:
            raise ValueError(f"unknown metric {metric!r}; choose one of {cis.METRICS}.")
        super().__init__(model, target_layer, pool, reshape_transform=reshape_transform,
                         output_transform=output_transform)
        self.metric = metric
        self.explains = ("cosine of the pooled target-layer features" if metric == "cosine" else
                         "minus the squared Euclidean distance of the pooled target-layer features")

    def channel_weights(self, ctx):
        scores = cis.contribution_scores(ctx.query_vectors, ctx.support_vectors, self.metric)
        return cis.normalize_scores(scores), None, scores

    def similarity(self, ctx):
        if self.metric == "cosine":
            return cis.cosine_similarity(ctx.query_vectors, ctx.support_vectors)
        return -cis.squared_distance(ctx.query_vectors, ctx.support_vectors)
