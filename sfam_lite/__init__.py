"""sfam_lite: the code the SFAM book's chapters share.

* :mod:`sfam_lite.cis` — the channel-wise contribution importance scores (Eq. 1, 2, 4, 5, 7).
* :func:`sfam_map` — the explanation map (Eq. 3 / Eq. 6).
* :class:`SFAM` — the explainer for any ``nn.Module``, via a forward hook on a target layer.
* :class:`RAM`, :class:`CGRAM`, :class:`GradFAM`, :class:`Decomposition` — the paper's baselines
  (:mod:`sfam_lite.baselines`), with :class:`SupportWeightedRAM` (RAM's pair-dependent reading), beside SFAM's own ablations :class:`AllOnes` (every weight 1) and :class:`RawCIS`
  (no Eq. 4); :class:`CentreBoxMap`, :class:`CentredGaussianMap`, :class:`RandomMap` —
  image-independent reference maps (:mod:`sfam_lite.references`).
* :func:`explain_episode` — an N-way K-shot episode, features computed once per image (:mod:`sfam_lite.episodes`);
  :func:`vit_tokens_to_grid` — a ViT layer's tokens as a feature map, for ``reshape_transform=``.
* :mod:`sfam_lite.localization` and :mod:`sfam_lite.evaluate` — the localisation protocol and the paper's
  Tables 1-2 (§4.3); :mod:`sfam_lite.sanity` — randomisation checks (§4.4) and deletion/insertion curves.
* :mod:`sfam_lite.slider` — a self-contained HTML slider over pre-rendered frames (works without a kernel);
  :mod:`sfam_lite.explorer` — the interactive explorer of chapter 9 (ipywidgets, imported only when used).
* :mod:`sfam_lite.similarity` — the support-swap test of chapter 10 (does a map show what the query shares with the
  support?); :mod:`sfam_lite.position_cis` — the book's extension tested there, CIS per query position;
  :mod:`sfam_lite.head_aware` — the book's other extension, SFAM on the model's own embedding ``W p(A) + b``.
* :mod:`sfam_lite.methods` — the registry of methods by key (one :func:`~sfam_lite.methods.register` call adds one).
"""
from . import cis
from .explainer import SFAM, Explanation, PairContext, PairExplainer, output_similarity
from .baselines import CGRAM, RAM, AllOnes, Decomposition, GradFAM, RawCIS, SupportWeightedRAM
from .episodes import EpisodeExplanation, explain_episode
from .references import CentreBoxMap, CentredGaussianMap, RandomMap
from .reshape_transforms import vit_tokens_to_grid
from .maps import minmax_normalize, sfam_map, upsample

__all__ = ["cis", "plotting", "localization", "metrics", "sanity", "SFAM", "RAM", "SupportWeightedRAM", "CGRAM",
           "GradFAM", "Decomposition", "AllOnes", "RawCIS", "CentreBoxMap", "CentredGaussianMap", "RandomMap",
           "Explanation", "PairContext", "PairExplainer", "EpisodeExplanation", "explain_episode",
           "output_similarity", "vit_tokens_to_grid", "sfam_map", "upsample", "minmax_normalize"]
__version__ = "0.1.0"

#: submodules imported on first use (``sfam_lite.sanity.…`` works after ``import sfam_lite``) rather than by
#: ``import sfam_lite``: ``plotting`` imports ``matplotlib.pyplot`` (slow, and it picks a plotting backend), and
#: the others scipy and the evaluation code, which explaining a model does not need.
_LAZY = ("plotting", "localization", "metrics", "sanity")


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
