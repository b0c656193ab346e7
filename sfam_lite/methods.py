"""The explanation methods the book compares, by key: one registry that the evaluation, the explorer and the chapters
read, so that a new method is one :func:`register` call beside its class.

Each entry makes a *feature-only* explainer (``explainer.explain_features(query_features, support_features,
size)``) for one model, from its :class:`ModelSetup` (what the model says about itself: the metric, the layers
after the target layer, its linear neck) and the reference priors chosen on validation boxes
(:func:`sfam_lite.references.reference_priors`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from . import memory
from .baselines import CGRAM, RAM, AllOnes, Decomposition, GradFAM, RawCIS, SupportWeightedRAM
from .explainer import SFAM
from .references import CentreBoxMap, CentredGaussianMap, RandomMap

#: the attributes a model provides to be explained by every method (see :class:`sfam_lite.models.FRN`); one more is
#: optional: ``pair_score(query_output, support_output)``, the model's own score of a pair when it is not the cosine
#: of its outputs (FRN's logit), read by the "CG-RAM (score)" variant, which is "—" for a model without it
INTERFACE = ("task", "metric", "target_stage", "stages", "head_after", "projection_after")


@dataclass
class ModelSetup:
    """How to explain one model at one layer: SFAM's metric, the target layer, the layers after it up to the
    model's output or raw embedding (for gradient methods), and its linear neck (for Decomposition; None if none)."""
    kind: str                       # "frn" or "gpw": which of the paper's tables the model belongs to
    metric: str                     # "euclidean" (FRN) or "cosine" (GPW)
    target_layer: nn.Module
    head: nn.Module
    projection: nn.Module | None
    pair_score: Callable | None = None   # the model's own score of a pair, if not the cosine of its outputs

    @classmethod
    def of(cls, model: nn.Module, layer: str | None = None) -> "ModelSetup":
        """The setup of ``model`` at ``layer`` (one of ``model.stages()``; default its ``target_stage``), read from
        the model's explanation interface (:data:`INTERFACE`)."""
        missing = [name for name in INTERFACE if not hasattr(model, name)]
        if missing:
            raise TypeError(f"{type(model).__name__} does not say how to explain it: it lacks {', '.join(missing)} "
                            "(see sfam_lite.models.FRN). For your own model, build the explainer directly, e.g. "
                            "sfam_lite.SFAM(model, target_layer=..., metric=...).")
        layer = model.target_stage if layer is None else layer
        stages = model.stages()
        if layer not in stages:
            raise ValueError(f"unknown layer {layer!r}; choose from {', '.join(stages)}.")
        kind = {"few-shot": "frn", "retrieval": "gpw"}[model.task]
        return cls(kind, model.metric, stages[layer], model.head_after(layer), model.projection_after(layer),
                   getattr(model, "pair_score", None))


def setup_for(model: nn.Module, kind: str | None = None) -> ModelSetup:
    """:meth:`ModelSetup.of` ``model`` at its target layer; ``kind`` (``"frn"`` or ``"gpw"``), if given, is
    checked against the model's."""
    setup = ModelSetup.of(model)
    if kind is not None and kind != setup.kind:
        raise ValueError(f"model kind {kind!r} given, but {type(model).__name__} is a {setup.kind!r} model.")
    return setup


@dataclass(frozen=True)
class Method:
    """One registered method: its key, the name tables print, its group, and ``make(setup, box_size, sigma, seed)``
    → a feature-only explainer, or None where the method is not defined for the model (printed as "—")."""
    key: str
    label: str
    group: str          # "method" (SFAM and the paper's baselines), "variant" (another reading of a baseline),
                        # "ablation" (SFAM's), or "reference"
    make: Callable


#: key → :class:`Method`, in the order tables print them
REGISTRY: dict[str, Method] = {}
#: key → printed name, for every registered method (kept in step with :data:`REGISTRY`)
METHODS: dict[str, str] = {}
GROUPS = ("method", "variant", "ablation", "reference")


def register(key: str, label: str, make: Callable, group: str = "method") -> Method:
    """Add a method: ``make(setup, box_size, sigma, seed)`` returns its explainer for a :class:`ModelSetup` (or
    None if it does not apply). The evaluation's tables, the explorer and :func:`build_explainers` then offer it."""
    if not isinstance(key, str) or not key:
        raise TypeError(f"a method's key must be a non-empty string, got {key!r}.")
    if key in REGISTRY:
        raise ValueError(f"a method {key!r} is already registered; unregister it first or choose another key.")
    if group not in GROUPS:
        raise ValueError(f"group must be one of {', '.join(GROUPS)}, got {group!r}.")
    if not callable(make):
        raise TypeError(f"make must be callable (setup, box_size, sigma, seed) -> explainer, got {type(make).__name__}.")
    REGISTRY[key] = Method(key, label, group, make)
    METHODS[key] = label
    return REGISTRY[key]


def unregister(key: str) -> None:
    """Remove a method added with :func:`register`."""
    if key not in REGISTRY:
        raise KeyError(f"no method {key!r} is registered.")
    del REGISTRY[key], METHODS[key]


def keys(group: str | None = None) -> tuple[str, ...]:
    """The registered keys (of one ``group``), in table order."""
    return tuple(k for k, m in REGISTRY.items() if group is None or m.group == group)


def build_explainers(setup: ModelSetup, methods, box_size, sigma: float, seed: int = 0) -> dict:
    """``{key: explainer or None}`` for ``methods`` (registered keys); None marks a method that is not defined for
    the model (Decomposition on a Euclidean model)."""
    methods = list(methods)
    unknown = [m for m in methods if m not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {list(REGISTRY)}.")
    return {m: REGISTRY[m].make(setup, box_size, sigma, seed) for m in methods}


# SFAM, its two ablations (chapter 10: every weight 1, and Eq. 2 / 5 without Eq. 4's stretch), the paper's
# baselines in its order, each followed by its variant (RAM weighted by the other image's feature; CG-RAM of the
# model's own score where that is not the cosine: FRN's logit), then the image-independent references.
register("sfam", "SFAM", lambda setup, *_: SFAM(None, metric=setup.metric))
register("ones", "all-ones", lambda *_: AllOnes(None), group="ablation")
register("raw-cis", "raw CIS", lambda setup, *_: RawCIS(None, metric=setup.metric), group="ablation")
register("ram", "RAM", lambda *_: RAM(None))
register("ram-support", "RAM (support)", lambda *_: SupportWeightedRAM(None), group="variant")
register("cgram", "CG-RAM", lambda setup, *_: CGRAM(None, head=setup.head))
def _score_cgram(setup, *_):
    """CG-RAM of the model's own score. FRN's score solves its ridge regression per pair with gradients: about
    13 MB a pair at FRN's full width (d = 640), so the explainer asks for at most
    :data:`sfam_lite.memory.SCORE_CGRAM_PAIRS` pairs a call (``pairs_per_batch``, read by
    :func:`sfam_lite.evaluate.localisation_ious` and :meth:`~sfam_lite.explainer.PairExplainer.explain_pairs`)."""
    if setup.pair_score is None:
        return None
    explainer = CGRAM(None, head=setup.head, target=setup.pair_score)
    explainer.pairs_per_batch = memory.SCORE_CGRAM_PAIRS
    return explainer


register("cgram-score", "CG-RAM (score)", _score_cgram, group="variant")
register("gradfam", "Grad-FAM", lambda setup, *_: GradFAM(None, head=setup.head))
register("decomposition", "Decomposition",
         lambda setup, *_: Decomposition(None, projection=setup.projection) if setup.metric == "cosine" else None)
register("centre-box", "centre box", lambda setup, box_size, sigma, seed: CentreBoxMap(box_size), group="reference")
register("gaussian", "centred Gaussian", lambda setup, box_size, sigma, seed: CentredGaussianMap(sigma),
         group="reference")
register("random", "random map", lambda setup, box_size, sigma, seed: RandomMap(seed), group="reference")

#: the keys of SFAM's ablations and of the image-independent references (the built-in ones)
ABLATIONS, REFERENCES = keys("ablation"), keys("reference")
