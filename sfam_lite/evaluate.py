"""The paper's localisation experiments (§4.3, Tables 1 and 2) for every method on one model.

* Few-shot (FRN, Euclidean): 5-way 1-shot episodes on the test classes, 16 queries per class, seeded;
  each correctly classified query is explained against its class's support image.
* Retrieval (GPW, cosine): every test image against its most similar other test image, correct pairs only.

Each map goes through :mod:`sfam_lite.localization` (normalise, threshold, largest component, box, IoU).
The backbone runs once per image: every method explains the cached target-layer features, and a pair
that several episodes share is explained once. From the shell::

    python -m sfam_lite evaluate frn --episodes 1000 --thresholds 0.2 0.5 --output frn.json
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch

from . import memory
from .evaluation import decisions, forward_with_features
from .memory import release_freed_memory
from .localization import boxes_from_maps, iou
from .methods import METHODS, build_explainers, setup_for
from .metrics import mass_in_box, mean_and_half, summarise
from .references import reference_priors

#: The paper's Tables 1 (FRN) and 2 (GPW): average IoU (%) and localisation accuracy (%) on CUB-200-2011, threshold
#: 0.2, correctly predicted samples; None where the paper prints "-". A different dataset from the synthetic benchmark.
PAPER_CUB = {
    "frn": {"sfam": (52.33, 69.74), "ram": (49.85, 61.24), "cgram": (24.13, 16.43), "gradfam": (49.72, 62.31),
            "decomposition": None},
    "gpw": {"sfam": (55.65, 69.08), "ram": (52.97, 60.13), "cgram": (25.16, 20.23), "gradfam": (53.38, 60.34),
            "decomposition": (52.91, 58.77)},
}
CURVE_THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.05, 0.951, 0.05))


class PairScores(NamedTuple):
    """Localisation of ``n`` explained pairs: ``query`` and ``support`` IoU per threshold ``(T, n)`` (a support's
    averaged over its K images), and each query map's ``mass`` in its box ``(n,)`` (threshold-free)."""
    query: np.ndarray
    support: np.ndarray
    mass: np.ndarray


def localisation_ious(explainer, query_features, support_features, query_boxes, support_boxes, size,
                      thresholds=(0.2,), batch: int = 512, box_rule: dict | None = None) -> PairScores:
    """The :class:`PairScores` of ``explainer``'s maps: ``query_features`` ``(n, N, h, w)``, ``support_features``
    ``(n, K, N, h, w)``, boxes ``(n, 4)`` and ``(n, K, 4)`` in pixels of the ``size`` the maps are upsampled to;
    ``box_rule``: keyword arguments of :func:`sfam_lite.localization.boxes_from_maps` (``largest_component``,
    ``relative_to``), the book's protocol when None; ``batch`` pairs are explained at a time."""
    return _scores_per_rule(explainer, query_features, support_features, query_boxes, support_boxes, size,
                            thresholds, [box_rule or {}], batch)[0]


def _scores_per_rule(explainer, query_features, support_features, query_boxes, support_boxes, size, thresholds,
                     rules, batch: int = 512) -> list[PairScores]:
    """:func:`localisation_ious` for several box rules at once: each map is computed once and boxed by every rule."""
    n, k = support_features.shape[:2]
    batch = min(batch, getattr(explainer, "pairs_per_batch", None) or batch)     # the explainer's own limit
    q_iou = np.zeros((len(rules), len(thresholds), n))
    s_iou = np.zeros((len(rules), len(thresholds), n, k))
    q_mass = np.zeros(n)
    qb, sb = np.asarray(query_boxes, float), np.asarray(support_boxes, float).reshape(n, k, 4)
    for i in range(0, n, batch):
        out = explainer.explain_features(query_features[i:i + batch], support_features[i:i + batch], size=size)
        q_maps, s_maps = out.query_maps.detach().float().cpu(), out.support_maps.detach().float().cpu().flatten(0, 1)
        q_mass[i:i + batch] = mass_in_box(q_maps, torch.as_tensor(qb[i:i + batch])).numpy()
        for r, rule in enumerate(rules):
            for t, thr in enumerate(thresholds):
                q_iou[r, t, i:i + batch] = iou(boxes_from_maps(q_maps, thr, **rule), qb[i:i + batch])
                s_iou[r, t, i:i + batch] = iou(boxes_from_maps(s_maps, thr, **rule).reshape(-1, k, 4), sb[i:i + batch])
    return [PairScores(q_iou[r], s_iou[r].mean(-1), q_mass) for r in range(len(rules))]


def query_maps(model, images: torch.Tensor, query: torch.Tensor, support: torch.Tensor, methods, priors=(None, None),
               seed: int = 0) -> dict:
    """``{key: (n, H, W) float32 CPU maps}``: each method's query map for the pairs ``images[query[i]]``,
    ``images[support[i]]`` (one support image per pair), explained from ``model``'s own features at its target layer
    (each image run once, on the model's device). ``priors``: the references' ``(box_size, sigma)``
    (:func:`sfam_lite.references.reference_priors`); methods not defined for the model are left out."""
    setup = setup_for(model)
    used = torch.unique(torch.cat([query, support]))
    device = next(model.parameters()).device
    fmaps = forward_with_features(model, setup.target_layer, images[used].to(device))[1]
    where = torch.full((len(images),), -1, dtype=torch.long)
    where[used] = torch.arange(len(used))
    size = tuple(images.shape[-2:])
    explainers = build_explainers(setup, methods, *priors, seed=seed)
    return {m: e.explain_features(fmaps[where[query]], fmaps[where[support]][:, None], size=size)
            .query_maps.detach().float().cpu() for m, e in explainers.items() if e is not None}


@dataclass
class Result:
    """Per-method IoUs of one evaluation: ``query`` / ``support`` map each method key to a ``(T, n)`` array (None:
    not applicable), for ``thresholds``; ``groups`` the episode of each sample (few-shot) or None; ``query_images``
    the test-set index of each sample's query image, so that intervals can be clustered by image or class
    (:func:`sfam_lite.metrics.clustered_interval`): in few-shot episodes one image is drawn many times; ``mass``
    maps each method key to its query maps' mass in the box ``(n,)`` (threshold-free; None: not applicable)."""
    kind: str
    thresholds: tuple
    query: dict
    support: dict
    groups: np.ndarray | None
    info: dict = field(default_factory=dict)
    query_images: np.ndarray | None = None
    mass: dict = field(default_factory=dict)
    #: method key → the name tables print, as registered when the result was made (a method unregistered since
    #: still prints)
    labels: dict = field(default_factory=dict)

    def table(self, threshold: float | None = None, which: str = "query") -> dict:
        """``{method: summary or None}`` at ``threshold`` (default: the first)."""
        t = 0 if threshold is None else self.thresholds.index(threshold)
        data = self.query if which == "query" else self.support
        return {m: None if v is None else summarise(v[t], self.groups) for m, v in data.items()}

    def mass_table(self) -> dict:
        """``{method: {"mean", "half", "units"} or None}``: the query maps' mean mass in the box with its 95 %
        interval (over episodes for few-shot, as :meth:`table`)."""
        out = {}
        for m, v in self.mass.items():
            if v is None:
                out[m] = None
                continue
            mean, half, units = mean_and_half(v, self.groups)
            out[m] = {"mean": mean, "half": half, "units": units}
        return out

    def to_json(self) -> dict:
        return {"kind": self.kind, "info": self.info, "thresholds": list(self.thresholds),
                "tables": {which: {str(t): self.table(t, which) for t in self.thresholds}
                           for which in ("query", "support")},
                "mass_in_box": self.mass_table()}


def _rows(result: Result, threshold: float, which: str):
    """Per method, what both table formats show: ``(name, ours, mass, paper)``, ``ours`` the ``((mean IoU,
    half), (accuracy, half))`` in % or None (not applicable), ``mass`` the query maps' mass in the box ``(mean,
    half)`` in % or None, ``paper`` the paper's ``(IoU, LocAcc)`` on CUB (:data:`PAPER_CUB`), None where its
    table has "—", "n/a" where it has no row."""
    mass = result.mass_table() if which == "query" else {}
    for m, s in result.table(threshold, which).items():
        ours = None if s is None else ((100 * s["mean_iou"], 100 * s["mean_iou_half"]),
                                       (100 * s["accuracy"], 100 * s["accuracy_half"]))
        in_box = None if mass.get(m) is None else (100 * mass[m]["mean"], 100 * mass[m]["half"])
        yield result.labels.get(m) or METHODS.get(m, m), ours, in_box, PAPER_CUB[result.kind].get(m, "n/a")


def format_table(result: Result, threshold: float | None = None, which: str = "query", paper: bool = False) -> str:
    """The table as text: method, mean IoU (%) and localisation accuracy (%), each ± the half-width of its 95 %
    interval; ``paper=True`` adds the paper's CUB numbers (:data:`PAPER_CUB`) as two more columns."""
    thr = result.thresholds[0] if threshold is None else threshold
    unit = "episodes" if result.groups is not None else "samples"
    lines = [f"{which} maps, threshold {thr:g}; 95 % intervals over {unit}",
             f"{'method':<18}{'IoU (%)':>14}{'LocAcc (%)':>14}" + (f"{'| paper, CUB: IoU':>20}{'LocAcc':>8}" if paper else "")]
    for label, ours, _, ref in _rows(result, thr, which):
        row = f"{label:<18}" + (f"{'—':>14}{'—':>14}" if ours is None else
                                "".join(f"{mean:>8.1f} ± {half:.1f}" for mean, half in ours))
        if paper:
            row += f"{'| ':>12}" + (f"{'—':>8}{'—':>8}" if ref is None else f"{'':>8}{'':>8}" if ref == "n/a"
                                   else f"{ref[0]:>8.2f}{ref[1]:>8.2f}")
        lines.append(row)
    return "\n".join(lines)


def format_html(result: Result, title: str, threshold: float = 0.2, which: str = "query") -> str:
    """One of the paper's tables as an HTML ``<table class="sfam-headline">`` (the chapters and the front page show
    it): per method the ``which`` maps' mean IoU and localisation accuracy at ``threshold``, each ± the half-width
    of its 95 % interval; for the query maps also their mass in the box (threshold-free) and the paper's CUB
    numbers (:data:`PAPER_CUB`, reported for query maps); "—" where a method does not apply. The caption names
    ``title``, the data (:func:`sfam_lite.zoo.data_name` of the model) and the intervals'
    units."""
    from .tables import Table
    from .zoo import data_name
    info = result.info
    unit = "episodes" if result.groups is not None else "samples"
    data = data_name(info.get("model"))
    query = which == "query"
    cell = lambda value: "—" if value is None else f"{value[0]:.1f} ± {value[1]:.1f}"      # noqa: E731
    rows = []
    for label, ours, in_box, ref in _rows(result, threshold, which):
        values = [label, *(["—", "—"] if ours is None else map(cell, ours))]
        if query:
            paper = ["", ""] if ref == "n/a" else ["—", "—"] if ref is None else [f"{ref[0]:.2f}", f"{ref[1]:.2f}"]
            values += [cell(in_box), *paper]
        rows.append(values)
    caption = (f"{title}, on {data} (model {info.get('model')}, {info.get('explained_samples')} explained samples): "
               f"{which} maps, threshold {threshold:g}" + (" (the mass in the box needs none)" if query else "")
               + f", 95 % intervals over {unit}."
               + (" The last two columns are the paper's numbers on CUB-200-2011, for comparison only." if query
                  else ""))
    header = ["method", "IoU (%)", "LocAcc (%)"]
    if not query:
        return Table(header, rows, caption)._repr_html_()
    return Table([*header, "mass in box (%)", "IoU (%)", "LocAcc (%)"], rows, caption,
                 groups=[("", 1), (f"this book, {data}", 3), ("the paper, CUB-200-2011", 2)])._repr_html_()


def _evaluate_pairs(setup, maps, boxes, q_idx, s_idx, groups, methods, thresholds, priors, seed, size, progress,
                    info, chunk: int | None = None, box_rule: dict | None = None, box_rules: dict | None = None):
    """Explain the pairs ``(q_idx[i], s_idx[i])`` with every method, each distinct pair once, ``chunk`` at a time
    (default: at most 4,096, and no more than :data:`sfam_lite.memory.GATHER_BYTES` of gathered features): a
    :class:`Result`, or with ``box_rules`` (``{label: box_rule}``) one per rule, each map computed once."""
    from tqdm.auto import tqdm
    chunk = chunk or max(1, min(4096, memory.GATHER_BYTES // (2 * maps[0].numel() * maps.element_size())))
    if box_rule is not None and box_rules is not None:
        raise ValueError("give box_rule (one rule) or box_rules ({label: rule}), not both.")
    rules = {None: box_rule or {}} if box_rules is None else {label: dict(r or {}) for label, r in box_rules.items()}
    n_images = len(maps)
    pair_ids, inverse = torch.unique(q_idx.long() * n_images + s_idx.long(), return_inverse=True)
    uq, us = pair_ids // n_images, pair_ids % n_images
    explainers = build_explainers(setup, METHODS if methods is None else methods, *priors, seed=seed)
    active = {m: e for m, e in explainers.items() if e is not None}
    q_iou = {(r, m): np.zeros((len(thresholds), len(uq))) for r in rules for m in active}
    s_iou = {(r, m): np.zeros((len(thresholds), len(uq))) for r in rules for m in active}
    q_mass = {m: np.zeros(len(uq)) for m in active}
    steps = tqdm(total=len(uq) * len(active), desc="explaining pairs, every method", disable=not progress, leave=False,
                 unit="map pair")
    for i in range(0, len(uq), chunk):
        q, s = uq[i:i + chunk], us[i:i + chunk]      # gather features per chunk, once for every method
        q_maps, s_maps, q_box, s_box = maps[q], maps[s][:, None], boxes[q], boxes[s][:, None]
        for m, e in active.items():
            scores = _scores_per_rule(e, q_maps, s_maps, q_box, s_box, size, thresholds, list(rules.values()))
            for r, score in zip(rules, scores):
                q_iou[r, m][:, i:i + chunk], s_iou[r, m][:, i:i + chunk] = score.query, score.support
            q_mass[m][i:i + chunk] = scores[0].mass
            steps.update(len(q))
        del q_maps, s_maps
        release_freed_memory()
    steps.close()
    order = inverse.numpy()
    info.update({"explained_samples": int(len(q_idx)), "distinct_pairs": int(len(pair_ids)),
                 "centre_box_size": [round(v, 2) for v in priors[0]], "gaussian_sigma": priors[1]})
    mass = {m: q_mass[m][order] if m in active else None for m in explainers}
    results = {}
    for r, rule in rules.items():
        query = {m: q_iou[r, m][:, order] if m in active else None for m in explainers}
        support = {m: s_iou[r, m][:, order] if m in active else None for m in explainers}
        results[r] = Result(setup.kind, tuple(thresholds), query, support, groups, {**info, "box_rule": rule},
                            q_idx.cpu().numpy(), mass, {m: METHODS[m] for m in explainers})
    return results[None] if box_rules is None else results


def _test_features(model, setup, test, features):
    """``(outputs, feature maps)`` of every test image: ``features`` if given (checked), else computed."""
    if features is None:
        device = next(model.parameters()).device
        return forward_with_features(model, setup.target_layer, test.images.to(device))
    if not (isinstance(features, (tuple, list)) and len(features) == 2
            and all(isinstance(f, torch.Tensor) and len(f) == len(test.images) for f in features)):
        raise ValueError(f"features must be (outputs, feature maps), one row per test image ({len(test.images)}), as "
                         "sfam_lite.evaluation.forward_with_features(model, model.target_layer, test.images) "
                         "returns them.")
    return features


@torch.no_grad()
def evaluate_frn(model, test, val_boxes, episodes: int = 1000, methods=None, thresholds=(0.2,),
                 seed: int = 0, progress: bool = False, way: int = 5, query: int = 16,
                 box_rule: dict | None = None, box_rules: dict | None = None, features=None):
    """Few-shot localisation of FRN on ``test`` (an :class:`sfam_lite.evaluation.EvalSet` of the test classes) in
    ``way``-way 1-shot episodes with ``query`` queries per class; the reference priors come from ``val_boxes``
    (boxes of the validation classes); ``methods``: registered keys (:mod:`sfam_lite.methods`; default all);
    ``box_rule``: as in :func:`localisation_ious`. Returns a :class:`Result`; with ``box_rules``
    (``{label: box_rule}``) instead, ``{label: Result}``, every map computed once for all the rules.
    ``features``: the test images' ``(outputs, feature maps)`` from
    :func:`~sfam_lite.evaluation.forward_with_features` at the model's target layer, to skip the forward pass
    when they are already at hand (several evaluations of one model)."""
    setup = setup_for(model, "frn")
    maps = _test_features(model, setup, test, features)[1]
    made = decisions(model, maps, test.labels, episodes=episodes, way=way, query=query, seed=seed)
    q_idx, s_idx, groups = made.explained()
    size = tuple(test.images.shape[-2:])
    info = {"model": getattr(model, "meta", {}).get("name"), "episodes": episodes, "way": way, "shot": 1,
            "query": query, "seed": seed,
            "few_shot_accuracy": float(made.correct.double().mean())}
    return _evaluate_pairs(setup, maps, test.boxes, q_idx, s_idx, groups.numpy(), methods, thresholds,
                           reference_priors(val_boxes, size), seed, size, progress, info, box_rule=box_rule,
                           box_rules=box_rules)


@torch.no_grad()
def evaluate_gpw(model, test, val_boxes, methods=None, thresholds=(0.2,), seed: int = 0,
                 progress: bool = False, every: int = 1, box_rule: dict | None = None, box_rules: dict | None = None,
                 features=None):
    """Retrieval localisation of GPW on ``test``: every image against its top-1 neighbour, correct pairs only
    (``every``: only every n-th of them, for quick curves; ``methods``, ``box_rule``, ``box_rules`` and
    ``features``: as in :func:`evaluate_frn`)."""
    setup = setup_for(model, "gpw")
    embeddings, maps = _test_features(model, setup, test, features)
    made = decisions(model, embeddings, test.labels)
    q_idx, s_idx, _ = made.explained()
    size = tuple(test.images.shape[-2:])
    info = {"model": getattr(model, "meta", {}).get("name"), "seed": seed,
            "recall_at_1": float(made.correct.double().mean())}
    return _evaluate_pairs(setup, maps, test.boxes, q_idx[::every], s_idx[::every], None, methods, thresholds,
                           reference_priors(val_boxes, size), seed, size, progress, info, box_rule=box_rule,
                           box_rules=box_rules)


def run(kind: str, model_name: str | None = None, data_root=None, episodes: int = 1000, methods=None,
        thresholds=(0.2,), seed: int = 0, device: str = "auto", progress: bool = True, cache=None,
        overrides: dict | None = None, way: int = 5, query: int = 16, weights_root=None) -> Result:
    """Load the model (``overrides``: its configuration fields, as for :func:`sfam_lite.zoo.load`) and the data
    (:func:`load_for`), evaluate, return the :class:`Result` (what the command runs)."""
    from .loading import load_for
    model, test, val_boxes = load_for(kind, model_name, data_root, weights_root, device, cache, overrides, progress)
    if kind == "frn":
        return evaluate_frn(model, test, val_boxes, episodes, methods, thresholds, seed, progress, way, query)
    return evaluate_gpw(model, test, val_boxes, methods, thresholds, seed, progress)


if __name__ == "__main__":   # python -m sfam_lite.evaluate, the same as python -m sfam_lite evaluate
    from sfam_lite.cli import evaluate_main
    raise SystemExit(evaluate_main())
