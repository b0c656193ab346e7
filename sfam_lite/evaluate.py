"""The paper's localisation experiments (§4.3, Tables 1 and 2) for every method on one model.

* Few-shot (FRN, Euclidean): 5-way 1-shot episodes on the test classes, 16 queries per class, seeded;
  each correctly classified query is explained against its class's support image.
* Retrieval (GPW, cosine): every test image against its most similar other test image, correct pairs only.

Each map goes through :mod:`sfam_lite.localization` (normalise, threshold, largest component, box, IoU).
The backbone runs once per image: every method explains the cached target-layer features, and a pair
that several episodes share is explained once. From the shell::

    python -m sfam_lite.evaluate frn --episodes 1000 --thresholds 0.2 0.5 --output frn.json
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ._checks import check_device
from .baselines import CGRAM, RAM, AllOnes, Decomposition, GradFAM, RawCIS
from .explainer import SFAM
from .evaluation import release_freed_memory
from .localization import boxes_from_maps, iou
from .metrics import mass_in_box, mean_and_interval
from .references import GAUSSIAN_SIGMAS, CentreBoxMap, CentredGaussianMap, RandomMap, reference_priors  # noqa: F401

#: method key → name printed in the tables: SFAM, its two ablations (chapter 10: every weight 1, and Eq. 2 / 5
#: without Eq. 4's stretch), the paper's baselines in its order, then the image-independent references
METHODS = {"sfam": "SFAM", "ones": "all-ones", "raw-cis": "raw CIS", "ram": "RAM", "cgram": "CG-RAM",
           "gradfam": "Grad-FAM", "decomposition": "Decomposition",
           "centre-box": "centre box", "gaussian": "centred Gaussian", "random": "random map"}
ABLATIONS = ("ones", "raw-cis")
REFERENCES = ("centre-box", "gaussian", "random")
#: The paper's Tables 1 (FRN) and 2 (GPW): average IoU (%) and localisation accuracy (%) on CUB-200-2011, threshold
#: 0.2, correctly predicted samples; None where the paper prints "-". A different dataset from the synthetic benchmark.
PAPER_CUB = {
    "frn": {"sfam": (52.33, 69.74), "ram": (49.85, 61.24), "cgram": (24.13, 16.43), "gradfam": (49.72, 62.31),
            "decomposition": None},
    "gpw": {"sfam": (55.65, 69.08), "ram": (52.97, 60.13), "cgram": (25.16, 20.23), "gradfam": (53.38, 60.34),
            "decomposition": (52.91, 58.77)},
}
CURVE_THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.05, 0.951, 0.05))


@dataclass
class ModelSetup:
    """How to explain one model: its similarity, target layer, and the layers after it (for gradient methods)."""
    kind: str                       # "frn" or "gpw"
    metric: str                     # SFAM's metric: "euclidean" (FRN) or "cosine" (GPW)
    target_layer: nn.Module
    head: nn.Module                 # target-layer features -> model output / raw embedding
    projection: nn.Module | None    # a linear neck for Decomposition (GPW's embed)


def setup_for(model, kind: str) -> ModelSetup:
    """The explanation setup of an FRN (:class:`sfam_lite.models.FRN`) or GPW (:class:`~sfam_lite.models.GPWEmbedding`)."""
    if kind == "frn":
        return ModelSetup("frn", "euclidean", model.feature_extractor.layer4, nn.Identity(), None)
    if kind == "gpw":
        return ModelSetup("gpw", "cosine", model.target_layer, model.embedding_head(), model.embed)
    raise ValueError(f"unknown model kind {kind!r}; use 'frn' or 'gpw'.")


def build_explainers(setup: ModelSetup, methods, box_size, sigma: float, seed: int = 0) -> dict:
    """Feature-only explainers for ``methods`` (keys of :data:`METHODS`); ``None`` marks a method that is not
    defined for the model (Decomposition on a Euclidean model, reported as "—")."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {list(METHODS)}.")
    make = {
        "sfam": lambda: SFAM(None, metric=setup.metric),
        "ones": lambda: AllOnes(None),
        "raw-cis": lambda: RawCIS(None, metric=setup.metric),
        "ram": lambda: RAM(None),
        "cgram": lambda: CGRAM(None, head=setup.head),
        "gradfam": lambda: GradFAM(None, head=setup.head),
        "decomposition": lambda: None if setup.metric != "cosine" else Decomposition(None, projection=setup.projection),
        "centre-box": lambda: CentreBoxMap(box_size),
        "gaussian": lambda: CentredGaussianMap(sigma),
        "random": lambda: RandomMap(seed),
    }
    return {m: make[m]() for m in methods}


def localisation_ious(explainer, query_features, support_features, query_boxes, support_boxes, size,
                      thresholds=(0.2,), batch: int = 512, progress: bool = False, desc: str = "",
                      box_rule: dict | None = None, with_mass: bool = False):
    """IoU of each query map and support map with its box, per threshold: two ``(T, n)`` arrays.

    ``query_features`` ``(n, N, h, w)``, ``support_features`` ``(n, K, N, h, w)``, boxes ``(n, 4)`` and
    ``(n, K, 4)`` in pixels of the ``size`` the maps are upsampled to; ``box_rule``: keyword arguments of
    :func:`sfam_lite.localization.boxes_from_maps` (``largest_component``, ``relative_to``), the book's protocol
    when None. ``with_mass=True`` returns a third array ``(n,)``: each query map's mass in its box
    (:func:`sfam_lite.metrics.mass_in_box`, threshold-free)."""
    from tqdm.auto import tqdm
    n, k = support_features.shape[:2]
    q_iou = np.zeros((len(thresholds), n))
    s_iou = np.zeros((len(thresholds), n, k))
    q_mass = np.zeros(n)
    qb, sb = np.asarray(query_boxes, float), np.asarray(support_boxes, float).reshape(n, k, 4)
    for i in tqdm(range(0, n, batch), desc=desc, disable=not progress, leave=False):
        out = explainer.explain_features(query_features[i:i + batch], support_features[i:i + batch], size=size)
        q_maps, s_maps = out.query_maps.detach().float().cpu(), out.support_maps.detach().float().cpu().flatten(0, 1)
        if with_mass:
            q_mass[i:i + batch] = mass_in_box(q_maps, torch.as_tensor(qb[i:i + batch])).numpy()
        for t, thr in enumerate(thresholds):
            q_iou[t, i:i + batch] = iou(boxes_from_maps(q_maps, thr, **(box_rule or {})), qb[i:i + batch])
            s_iou[t, i:i + batch] = iou(boxes_from_maps(s_maps, thr, **(box_rule or {})).reshape(-1, k, 4),
                                        sb[i:i + batch])
    return (q_iou, s_iou.mean(-1), q_mass) if with_mass else (q_iou, s_iou.mean(-1))


def mean_and_half(values: np.ndarray, groups: np.ndarray | None = None) -> tuple[float, float, int]:
    """Mean and half-width of its 95 % normal interval (:func:`sfam_lite.metrics.mean_and_interval`), and the number
    of units. With ``groups`` (an episode index per sample) the units are the groups' means, as few-shot accuracy
    is reported; otherwise the samples. A single unit has no interval: its half-width is NaN (a table still
    prints, e.g. for a one-episode smoke run)."""
    values = np.asarray(values, float)
    if groups is not None:
        _, inverse = np.unique(groups, return_inverse=True)
        values = np.bincount(inverse, values) / np.bincount(inverse)
    if len(values) < 2:
        return float(values.mean()), float("nan"), len(values)
    mean, half = mean_and_interval(values)
    return mean, half, len(values)


def summarise(ious: np.ndarray, groups: np.ndarray | None = None, iou_threshold: float = 0.5) -> dict:
    """Mean IoU and localisation accuracy (share with IoU ≥ ``iou_threshold``) with 95 % intervals
    (:func:`mean_and_half`)."""
    ious = np.asarray(ious, float)
    m_iou, h_iou, units = mean_and_half(ious, groups)
    m_acc, h_acc, _ = mean_and_half(ious >= iou_threshold, groups)
    return {"mean_iou": m_iou, "mean_iou_half": h_iou, "accuracy": m_acc, "accuracy_half": h_acc,
            "samples": int(len(ious)), "interval_units": units}


def paired_difference(a: np.ndarray, b: np.ndarray, groups: np.ndarray | None = None,
                      iou_threshold: float = 0.5) -> dict:
    """Method a minus method b on the same samples: the differences of mean IoU and of localisation accuracy,
    each with the 95 % interval of the paired difference. An interval that excludes 0 is a detected difference."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    d_iou, h_iou, units = mean_and_half(a - b, groups)
    d_acc, h_acc, _ = mean_and_half((a >= iou_threshold).astype(float) - (b >= iou_threshold), groups)
    return {"iou_difference": d_iou, "iou_half": h_iou, "accuracy_difference": d_acc, "accuracy_half": h_acc,
            "interval_units": units}


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


def format_table(result: Result, threshold: float | None = None, which: str = "query", paper: bool = False) -> str:
    """The table as text: method, mean IoU (%) and localisation accuracy (%), each ± the half-width of its 95 %
    interval; ``paper=True`` adds the paper's CUB numbers (:data:`PAPER_CUB`) as two more columns."""
    thr = result.thresholds[0] if threshold is None else threshold
    unit = "episodes" if result.groups is not None else "samples"
    lines = [f"{which} maps, threshold {thr:g}; 95 % intervals over {unit}",
             f"{'method':<18}{'IoU (%)':>14}{'LocAcc (%)':>14}" + (f"{'| paper, CUB: IoU':>20}{'LocAcc':>8}" if paper else "")]
    for m, s in result.table(thr, which).items():
        row = f"{METHODS[m]:<18}" + (f"{'—':>14}{'—':>14}" if s is None else
                                      f"{100 * s['mean_iou']:>8.1f} ± {100 * s['mean_iou_half']:.1f}"
                                      f"{100 * s['accuracy']:>8.1f} ± {100 * s['accuracy_half']:.1f}")
        if paper:
            ref = PAPER_CUB[result.kind].get(m, "n/a")
            row += f"{'| ':>12}" + (f"{'—':>8}{'—':>8}" if ref is None else f"{'':>8}{'':>8}" if ref == "n/a"
                                   else f"{ref[0]:>8.2f}{ref[1]:>8.2f}")
        lines.append(row)
    return "\n".join(lines)


def _evaluate_pairs(setup, maps, boxes, q_idx, s_idx, groups, methods, thresholds, priors, seed, size, progress,
                    info, chunk: int = 4096, box_rule: dict | None = None) -> Result:
    """Explain the pairs ``(q_idx[i], s_idx[i])`` with every method, each distinct pair once, ``chunk`` at a time."""
    from tqdm.auto import tqdm
    n_images = len(maps)
    pair_ids, inverse = torch.unique(q_idx.long() * n_images + s_idx.long(), return_inverse=True)
    uq, us = pair_ids // n_images, pair_ids % n_images
    explainers = build_explainers(setup, methods, *priors, seed=seed)
    active = {m: e for m, e in explainers.items() if e is not None}
    q_iou = {m: np.zeros((len(thresholds), len(uq))) for m in active}
    s_iou = {m: np.zeros((len(thresholds), len(uq))) for m in active}
    q_mass = {m: np.zeros(len(uq)) for m in active}
    steps = tqdm(total=len(uq) * len(active), desc="explaining pairs, every method", disable=not progress, leave=False,
                 unit="map pair")
    for i in range(0, len(uq), chunk):
        q, s = uq[i:i + chunk], us[i:i + chunk]      # gather features per chunk, once for every method
        q_maps, s_maps, q_box, s_box = maps[q], maps[s][:, None], boxes[q], boxes[s][:, None]
        for m, e in active.items():
            q_iou[m][:, i:i + chunk], s_iou[m][:, i:i + chunk], q_mass[m][i:i + chunk] = localisation_ious(
                e, q_maps, s_maps, q_box, s_box, size, thresholds, box_rule=box_rule, with_mass=True)
            steps.update(len(q))
        del q_maps, s_maps
        release_freed_memory()
    steps.close()
    query = {m: q_iou[m][:, inverse.numpy()] if m in active else None for m in explainers}
    support = {m: s_iou[m][:, inverse.numpy()] if m in active else None for m in explainers}
    mass = {m: q_mass[m][inverse.numpy()] if m in active else None for m in explainers}
    info.update({"explained_samples": int(len(q_idx)), "distinct_pairs": int(len(pair_ids)),
                 "centre_box_size": [round(v, 2) for v in priors[0]], "gaussian_sigma": priors[1],
                 "box_rule": dict(box_rule or {})})
    return Result(setup.kind, tuple(thresholds), query, support, groups, info, q_idx.cpu().numpy(), mass)


@torch.no_grad()
def evaluate_frn(model, test, val_boxes, episodes: int = 1000, methods=tuple(METHODS), thresholds=(0.2,),
                 seed: int = 0, progress: bool = False, way: int = 5, query: int = 16,
                 box_rule: dict | None = None) -> Result:
    """Few-shot localisation of FRN on ``test`` (an :class:`sfam_lite.evaluation.EvalSet` of the test classes) in
    ``way``-way 1-shot episodes with ``query`` queries per class; the reference priors come from ``val_boxes``
    (boxes of the validation classes); ``box_rule``: as in :func:`localisation_ious`."""
    from .evaluation import few_shot_pairs, forward_with_features
    setup = setup_for(model, "frn")
    device = next(model.parameters()).device
    maps = forward_with_features(model, setup.target_layer, test.images.to(device))[1]
    q_idx, s_idx, correct = few_shot_pairs(model, model.read_positions(maps), test.labels, episodes=episodes,
                                           way=way, query=query, seed=seed)
    correct = correct.cpu()
    groups = torch.arange(episodes).repeat_interleave(len(q_idx) // episodes)[correct].numpy()
    size = tuple(test.images.shape[-2:])
    info = {"model": getattr(model, "meta", {}).get("name"), "episodes": episodes, "way": way, "shot": 1,
            "query": query, "seed": seed,
            "few_shot_accuracy": float(correct.double().mean())}
    return _evaluate_pairs(setup, maps, test.boxes, q_idx[correct], s_idx[correct], groups, methods, thresholds,
                           reference_priors(val_boxes, size), seed, size, progress, info, box_rule=box_rule)


@torch.no_grad()
def evaluate_gpw(model, test, val_boxes, methods=tuple(METHODS), thresholds=(0.2,), seed: int = 0,
                 progress: bool = False, every: int = 1, box_rule: dict | None = None) -> Result:
    """Retrieval localisation of GPW on ``test``: every image against its top-1 neighbour, correct pairs only
    (``every``: only every n-th of them, for quick curves; ``box_rule``: as in :func:`localisation_ious`)."""
    from .evaluation import forward_with_features, retrieval_pairs
    setup = setup_for(model, "gpw")
    device = next(model.parameters()).device
    embeddings, maps = forward_with_features(model, setup.target_layer, test.images.to(device))
    q_idx, top, hit = retrieval_pairs(embeddings.cpu(), test.labels)
    size = tuple(test.images.shape[-2:])
    info = {"model": getattr(model, "meta", {}).get("name"), "seed": seed, "recall_at_1": float(hit.double().mean())}
    return _evaluate_pairs(setup, maps, test.boxes, q_idx[hit][::every], top[hit][::every], None, methods, thresholds,
                           reference_priors(val_boxes, size), seed, size, progress, info, box_rule=box_rule)


# -- the command ---------------------------------------------------------------------------------------

SPLITS = {"frn": ("frn_test", "frn_val"), "gpw": ("retrieval_test", "retrieval_train")}


def results_json(data: dict) -> str:
    """``data`` as strict JSON text: NaN (e.g. the interval of a single unit) and infinities become ``null``, which
    every JSON reader accepts (bare ``NaN``, Python's default, is rejected by ``JSON.parse`` and strict parsers)."""
    from ._io import json_safe
    return json.dumps(json_safe(data), indent=1, allow_nan=False)


def _write_json(data: dict, path: Path) -> None:
    """Write strict JSON (:func:`results_json`) atomically: a temporary file in the same folder, renamed into place;
    the file gets the user's umask."""
    from ._io import atomic_write
    text = results_json(data)
    atomic_write(path, lambda f: f.write(text), binary=False)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: the GPU when torch sees one, else the CPU; any other name is checked
    (:func:`sfam_lite._checks.check_device`), so that asking for CUDA where there is none fails at once with a
    message, not later in the first tensor moved there."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return check_device(device)


def load_for(kind: str, model_name: str | None = None, data_root=None, weights_root=None, device: str = "auto",
             cache=None, overrides: dict | None = None, progress: bool = False, validation: bool = True):
    """The model and its test data for the experiments: ``(model, test, val_boxes)``.

    ``model_name`` is a zoo name (default ``"<kind>-synthetic"``; ``"frn-cub"`` / ``"gpw-cub"`` read CUB from
    ``data_root``, FRN's released weights from ``weights_root``). ``test`` is the
    :class:`~sfam_lite.evaluation.EvalSet` of the test classes (FRN's few-shot test split, or retrieval classes
    101–200); ``val_boxes`` the boxes of FRN's validation classes (GPW: its training classes), on which the
    reference maps are tuned (None with ``validation=False``)."""
    from data_download import CUB200, SyntheticCUB200
    from . import zoo
    from .evaluation import eval_set
    if kind not in SPLITS:
        raise ValueError(f"unknown model kind {kind!r}; use 'frn' or 'gpw'.")
    model_name = model_name or f"{kind}-synthetic"
    if not model_name.startswith(kind):
        raise ValueError(f"model {model_name!r} is not a {kind.upper()} model; use {kind}-synthetic or {kind}-cub.")
    device = str(resolve_device(device))
    model = zoo.load(model_name, data_root=data_root, weights_root=weights_root, progress=progress, device=device,
                     cache=cache, **(overrides or {}))
    root = Path(data_root) if data_root is not None else zoo.default_data_root(model_name, cache)
    dataset = SyntheticCUB200 if model_name.endswith("synthetic") else CUB200
    view = zoo.eval_transform_for(model)      # the recipe's evaluation view (FRN: 92/84; the real GPW: 256/227)
    test_split, val_split = SPLITS[kind]
    test = eval_set(dataset(root, split=test_split), view, progress=progress)
    val_boxes = eval_set(dataset(root, split=val_split), view).boxes if validation else None
    return model, test, val_boxes


def run(kind: str, model_name: str | None = None, data_root=None, episodes: int = 1000, methods=tuple(METHODS),
        thresholds=(0.2,), seed: int = 0, device: str = "auto", progress: bool = True, cache=None,
        overrides: dict | None = None, way: int = 5, query: int = 16, weights_root=None) -> Result:
    """Load the model (``overrides``: its configuration fields, as for :func:`sfam_lite.zoo.load`) and the data
    (:func:`load_for`), evaluate, return the :class:`Result` (what the command runs)."""
    model, test, val_boxes = load_for(kind, model_name, data_root, weights_root, device, cache, overrides, progress)
    if kind == "frn":
        return evaluate_frn(model, test, val_boxes, episodes, methods, thresholds, seed, progress, way, query)
    return evaluate_gpw(model, test, val_boxes, methods, thresholds, seed, progress)


def _read_config(path: str) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"--config {path}: no such file.") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"--config {path} is not valid JSON ({exc.msg}, line {exc.lineno}).") from None
    if not isinstance(data, dict):
        raise ValueError(f"--config {path} must hold a JSON object of config fields, e.g. {{\"episodes\": 600}}.")
    return data


def main(argv=None) -> int:
    """``python -m sfam_lite.evaluate``. Exit status: 0 on success; 2 for bad arguments (including an ``--output``
    that cannot be written, checked before any work) or data and models that cannot be loaded; 1 when no sample
    could be explained, or when ``--output`` failed late (the results are then kept in the temporary folder and the
    message says where); 130 on Ctrl-C. Each failure ends with one ``error:`` line on stderr."""
    from .cli import run_command
    return run_command(_main, argv)


def _main(argv=None) -> int:
    from .cli import _fail, check_output, one_line_warnings, write_output
    parser = argparse.ArgumentParser(prog="python -m sfam_lite.evaluate",
                                     description="Localisation of every explanation method (the paper's Tables 1-2).")
    parser.add_argument("kind", choices=("frn", "gpw"), help="few-shot FRN (Table 1) or retrieval GPW (Table 2)")
    parser.add_argument("--model", help="zoo name (default: frn-synthetic / gpw-synthetic; frn-cub, gpw-cub)")
    parser.add_argument("--config", help="JSON file of model config fields, as for python -m sfam_lite.train")
    parser.add_argument("--data-root", help="dataset folder (default: inside the cache folder)")
    parser.add_argument("--weights-root", help="folder of FRN's released weights (for --model frn-cub)")
    parser.add_argument("--cache", help="cache folder (default: $SFAM_BOOK_CACHE or ~/.cache/sfam-book)")
    parser.add_argument("--episodes", type=int, default=1000, help="few-shot test episodes (the paper: 10000)")
    parser.add_argument("--way", type=int, default=5, help="classes per few-shot episode (1 shot each)")
    parser.add_argument("--query", type=int, default=16, help="queries per class and episode")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, from {','.join(METHODS)}")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.2], help="map thresholds (the paper: 0.2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu or cuda")
    parser.add_argument("--output", help="write the tables as JSON here")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    try:
        if args.episodes < 1:
            raise ValueError(f"--episodes must be at least 1, got {args.episodes}.")
        if args.way < 2 or args.query < 1:
            raise ValueError(f"--way must be at least 2 and --query at least 1, got {args.way} and {args.query}.")
        if args.seed < 0:
            raise ValueError(f"--seed must be non-negative, got {args.seed}.")
        bad = [t for t in args.thresholds if not 0 <= t <= 1]
        if bad:
            raise ValueError(f"--thresholds must lie in [0, 1], got {bad}.")
        unknown = [m for m in methods if m not in METHODS]
        if unknown or not methods:
            raise ValueError(f"unknown method(s) {unknown}; choose from {','.join(METHODS)}.")
        args.device = str(resolve_device(args.device))
        overrides = _read_config(args.config) if args.config else {}
        from . import zoo
        model_name = args.model or f"{args.kind}-synthetic"
        if model_name in zoo.RECIPES:   # every config field's type and range, before any data is read
            zoo.config_for(model_name, **overrides)
        if args.output:
            check_output(args.output, "--output")
        with one_line_warnings():
            result = run(args.kind, args.model, args.data_root, args.episodes, methods, tuple(args.thresholds),
                         args.seed, args.device, not args.no_progress, args.cache, overrides, args.way, args.query,
                         args.weights_root)
    except (ValueError, TypeError, FileNotFoundError, RuntimeError, OSError) as exc:
        return _fail(exc, 2)
    info = result.info
    if not info.get("explained_samples"):
        what = (f"the model classified none of the queries of {info.get('episodes')} episode(s) correctly"
                if result.kind == "frn" else "no test image's nearest neighbour is of its class")
        return _fail(f"no sample was explained: {what}, and only correct samples are explained, so there is nothing "
                     "to score (no --output written). Check the model (is it trained?) and the data, or run more "
                     "--episodes.", 1)
    head = f"{info['model']}: {info['explained_samples']} explained samples ({info['distinct_pairs']} distinct pairs)"
    if result.kind == "frn":
        head += f" from {info['episodes']} episodes, {info['way']}-way 1-shot accuracy {100 * info['few_shot_accuracy']:.1f} %"
    else:
        head += f", Recall@1 {100 * info['recall_at_1']:.1f} %"
    print(head)
    for t in result.thresholds:
        for which in ("query", "support"):
            print()
            print(format_table(result, t, which))
    if args.output:
        text = results_json(result.to_json())
        problem = write_output(Path(args.output), lambda f: f.write(text), "--output")
        if problem:
            return _fail(problem, 1)
        print(f"\nwritten: {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
