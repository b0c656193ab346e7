"""N-way K-shot episodes: every query explained against every class's K shots, with features computed once per image.

An explainer's own call takes the K support images of ONE class (their pooled vectors are averaged into one
prototype ``V^S``, Eq. 1). :func:`explain_episode` takes a whole episode, ``(n_way, n_shot, C, H, W)`` support
images, runs the backbone once per image, and explains each query against each class from the cached feature maps
(:meth:`~sfam_lite.explainer.PairExplainer.explain_features`). Beside the maps it reports the similarity the maps
explain for every class, the class that similarity picks, and, when given, the model's own decision: SFAM explains
the pooled target-layer features, which need not pick the model's class (``Explanation.explains``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Union

import torch

from ._checks import as_float_tensor, check_finite, check_ndim
from .explainer import Explanation, PairExplainer

#: ``decision=``: the model's scores ``(B, n_way)``, or a callable ``(query_images, support_images) -> (B, n_way)``
Decision = Union[torch.Tensor, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]


@dataclass
class EpisodeExplanation:
    """What :func:`explain_episode` returns for B queries and an ``n_way``-way ``n_shot``-shot support set.

    Attributes:
        query_maps: ``(B, n_way, H, W)``: query ``b`` explained against class ``c``'s K shots.
        support_maps: ``(B, n_way, n_shot, H, W)``: each shot's map for that query (SFAM: weighted by the query's
            ``Norm(ω)``, so it depends on the query).
        scores: ``(B, n_way)`` the similarity the maps explain (``explains``; SFAM: of the pooled target-layer
            features), larger meaning more alike; None for a method that explains no similarity (RAM, Grad-FAM).
        predicted: ``(B,)`` the class those scores pick (their argmax), or None.
        model_scores: ``(B, n_way)`` the model's own similarity of each query to each class, from its output
            (``Explanation.model_similarity``), or None when not available.
        decision_scores, model_decision: ``(B, n_way)`` the scores ``decision=`` gave and ``(B,)`` the class they pick;
            None without ``decision=``.
        explains: which similarity ``scores`` and the maps explain, in words (``Explanation.explains``).
        explanations: the ``n_way`` explanations, one per class: all B queries against that class's K shots.
    """

    query_maps: torch.Tensor
    support_maps: torch.Tensor
    scores: torch.Tensor | None
    predicted: torch.Tensor | None
    model_scores: torch.Tensor | None
    decision_scores: torch.Tensor | None
    model_decision: torch.Tensor | None
    explains: str | None
    explanations: list[Explanation]


def _stack(values: list) -> torch.Tensor | None:
    return None if any(v is None for v in values) else torch.stack(values, dim=1)


def _decision_scores(decision: Decision, query: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    b, n_way = query.shape[0], support.shape[0]
    if callable(decision):
        with torch.no_grad():
            scores = decision(query, support)
    else:
        scores = decision
    if not isinstance(scores, torch.Tensor) or scores.shape != (b, n_way):
        got = f"shape {tuple(scores.shape)}" if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise ValueError(f"decision gave {got}; it must give the model's score of each query for each class, shape "
                         f"(B, n_way) = ({b}, {n_way}), larger meaning more likely (e.g. logits, or minus distances): "
                         "a (B, n_way) tensor or a callable (query_images, support_images) -> (B, n_way).")
    check_finite(scores, "decision's scores", hint="The model's scores must be finite.")
    return scores.detach()


def explain_episode(explainer: PairExplainer, query_images: torch.Tensor, support_images: torch.Tensor,
                    decision: Decision | None = None) -> EpisodeExplanation:
    """Explain B queries ``(B, C, H, W)`` against each class of an episode ``(n_way, n_shot, C, H, W)``.

    Each query is explained against each class's ``n_shot`` images, as ``explainer(query_images, support_images[c])``
    would, but the backbone runs once per image (B + n_way·n_shot images) and every pair is explained from the cached
    feature maps. Gradient methods do the same when built with ``head=``; without it they call the explainer once per
    class. ``decision``: the model's own scores ``(B, n_way)`` (a tensor, or a callable ``(query_images,
    support_images) -> (B, n_way)``, e.g. a few-shot model's logits), reported beside the class the explained
    similarity picks.
    """
    if not isinstance(explainer, PairExplainer):
        raise TypeError(f"explainer must be an explainer built with a model (e.g. sfam_lite.SFAM(model, "
                        f"model.layer4)), got {type(explainer).__name__}.")
    explainer._require_model()
    if decision is not None and not (callable(decision) or isinstance(decision, torch.Tensor)):
        raise TypeError(f"decision must be the model's (B, n_way) scores or a callable (query_images, support_images) "
                        f"-> (B, n_way), got {type(decision).__name__}.")
    query = as_float_tensor(query_images, "query_images")
    support = as_float_tensor(support_images, "support_images")
    check_ndim(query, "query_images", (4,), "(B, C, H, W)")
    if support.ndim == 4:
        raise ValueError(f"support_images must have shape (n_way, n_shot, C, H, W), got shape {tuple(support.shape)}: "
                         "for one shot per class pass support_images[:, None]; K images of ONE class are explained "
                         "by the explainer itself, explainer(query_images, support_images).")
    check_ndim(support, "support_images", (5,), "(n_way, n_shot, C, H, W)")
    b, (n_way, n_shot) = query.shape[0], support.shape[:2]
    if b == 0 or n_way == 0 or n_shot == 0:
        raise ValueError(f"an episode needs at least one query, class and shot; got B = {b} queries, n_way = {n_way}, "
                         f"n_shot = {n_shot}.")
    if support.shape[-3:] != query.shape[-3:]:
        raise ValueError(f"support images have shape {tuple(support.shape[-3:])} but queries "
                         f"{tuple(query.shape[-3:])}; resize them to the same (C, H, W).")
    check_finite(query, "query_images")
    check_finite(support, "support_images")
    size = tuple(query.shape[-2:])

    explanations = []
    if explainer.needs_gradients and explainer.head is None:
        explanations = [explainer(query, support[c]) for c in range(n_way)]
    else:
        e_q, a_q = explainer._forward(query)
        e_s, a_s = explainer._forward(support.flatten(0, 1))
        a_s = a_s.reshape(n_way, n_shot, *a_s.shape[1:])
        e_s = None if e_s is None or e_s.shape[0] != n_way * n_shot else e_s.reshape(n_way, n_shot, *e_s.shape[1:])
        for c in range(n_way):
            out = explainer.explain_features(a_q, a_s[c], size=size)
            if out.model_similarity is None and e_s is not None:
                out = dataclasses.replace(out, model_similarity=explainer._model_similarity(e_q, e_s[c], b, n_shot))
            explanations.append(out)

    scores = _stack([e.explained_similarity for e in explanations])
    decision_scores = None if decision is None else _decision_scores(decision, query, support)
    return EpisodeExplanation(
        query_maps=torch.stack([e.query_maps for e in explanations], dim=1),
        support_maps=torch.stack([e.support_maps for e in explanations], dim=1),
        scores=scores, predicted=None if scores is None else scores.argmax(dim=1),
        model_scores=_stack([e.model_similarity for e in explanations]),
        decision_scores=decision_scores,
        model_decision=None if decision_scores is None else decision_scores.argmax(dim=1),
        explains=explanations[0].explains, explanations=explanations)
