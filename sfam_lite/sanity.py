"""Sanity checks and faithfulness for similarity explanations (the paper's §4.4, and what it leaves out).

* **Model-parameter randomisation** (Adebayo et al., *Sanity checks for saliency maps*, NeurIPS 2018; the SFAM
  paper's §4.4 and Figure 5, which randomises FRN's ResNet-12 "up to conv 12, 9, 7, 4, 1"):
  :func:`randomized_copies` yields copies of a model with layers re-initialised, cascading from the output side
  down or one at a time; :func:`frn_conv_layers` and :func:`torchvision_stages` name the layers as the paper
  (FRN) and torchvision (GPW) count them. :func:`map_similarity` compares the maps of the original and the
  randomised model: Spearman rank correlation of the maps and of their absolute values, and SSIM, as Adebayo et
  al. report them. An explanation that passes the check changes when the weights it explains change.
* **Deletion and insertion** (Petsiuk et al., *RISE*, BMVC 2018): :func:`deletion_insertion` removes (or
  reveals) the query's pixels in order of decreasing map value and records the model's own similarity to the
  support after each step; :func:`frn_similarity` and :func:`cosine_similarity_of` are those similarities for
  FRN and GPW, each a :class:`PairSimilarity` that encodes a support once however often its query is perturbed.
* **Randomisation by the paper's criterion** (chapter 8): :func:`localisation_scores` scores maps as chapter 7
  does (localised or not, mass in the box) and says which are blank; :func:`contrast_maps` is the floor that the
  image's own structure reaches with no model at all.
"""
from __future__ import annotations

import copy
import difflib
import math
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from ._checks import as_float_tensor, check_choice, check_finite, check_int, check_ndim
from .localization import boxes_from_maps, iou
from .maps import minmax_normalize
from .metrics import mass_in_box

MODES = ("cascading", "independent")
#: The steps of the paper's Figure 5 (§4.4): FRN randomised from conv 12 down to these convolutions.
FIGURE5_STEPS = ("conv12", "conv9", "conv7", "conv4", "conv1")
#: What ``pip install`` needs for SSIM (:func:`map_similarity`); not a dependency of the package.
SSIM_REQUIREMENT = "scikit-image>=0.19"


# -- layers ----------------------------------------------------------------------------------------------

def frn_conv_layers(frn: nn.Module) -> dict[str, nn.Conv2d]:
    """FRN's ResNet-12 convolutions as the paper counts them (§4.4, Figure 5): ``{"conv1": ..., "conv12": ...}`` in
    forward order, three 3×3 convolutions per block (``layer{i}[0].conv1..conv3``) for the four blocks.

    The 1×1 shortcut convolutions (``downsample``) and the BatchNorms are not in the count and are not included:
    randomising "conv 12" re-initialises that convolution's weights only. ``frn`` is an
    :class:`~sfam_lite.models.FRN` or its :class:`~sfam_lite.models.frn.ResNet12`. For a cascade from the output side
    pass ``list(reversed(frn_conv_layers(frn).items()))`` to :func:`randomized_copies`."""
    backbone = getattr(frn, "feature_extractor", frn)
    layers = {}
    for block_index in range(1, 5):
        stage = getattr(backbone, f"layer{block_index}", None)
        if not isinstance(stage, nn.Sequential) or len(stage) != 1:
            raise TypeError(f"expected an FRN or its ResNet-12 (layer1..layer4, one Block each); "
                            f"{type(frn).__name__} has no such layer{block_index}.")
        for j in range(1, 4):
            conv = getattr(stage[0], f"conv{j}", None)
            if not isinstance(conv, nn.Conv2d):
                raise TypeError(f"layer{block_index}[0].conv{j} of {type(frn).__name__} is not a Conv2d.")
            layers[f"conv{3 * (block_index - 1) + j}"] = conv
    return layers


def torchvision_stages(resnet: nn.Module) -> dict[str, nn.Module]:
    """The stages of a torchvision ResNet from the output side down: ``layer4, layer3, layer2, layer1, conv1``
    (``conv1`` is the stem convolution only; its BatchNorm ``bn1`` is not included). ``resnet`` is a
    :class:`torchvision.models.ResNet` or a :class:`~sfam_lite.models.GPWEmbedding`, whose backbone is
    ``.backbone`` (the embedding's ``embed`` layer is not a stage; add it in front for a full cascade)."""
    backbone = getattr(resnet, "backbone", resnet)
    names = ("layer4", "layer3", "layer2", "layer1", "conv1")
    missing = [n for n in names if not isinstance(getattr(backbone, n, None), nn.Module)]
    if missing:
        raise TypeError(f"expected a torchvision ResNet (or a model with one in .backbone); "
                        f"{type(resnet).__name__} lacks {', '.join(missing)}.")
    return {n: getattr(backbone, n) for n in names}


def _resolve_layers(model: nn.Module, layers) -> list[tuple[str, str]]:
    """``[(label, dotted name in model)]`` for ``layers``: names, modules, ``(label, name or module)`` pairs or a
    dict ``{label: name or module}``."""
    if isinstance(layers, dict):
        items = list(layers.items())
    elif isinstance(layers, (str, nn.Module)):
        raise TypeError("layers must be a list of submodules or names (ordered from the output side down), "
                        f"not a single {type(layers).__name__}; wrap it in a list.")
    else:
        items = [(None, x) if not isinstance(x, tuple) else x for x in layers]
    if not items:
        raise ValueError("layers is empty; pass at least one submodule (or its name) to re-initialise.")
    named = dict(model.named_modules())
    by_id = {id(m): n for n, m in model.named_modules()}
    resolved = []
    for item in items:
        if len(item) != 2:
            raise TypeError(f"a layer given as a tuple must be (label, module or name), got {item!r}.")
        label, layer = item
        if isinstance(layer, str):
            if layer not in named:
                close = difflib.get_close_matches(layer, named, n=3)
                hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
                raise ValueError(f"no submodule named {layer!r} in {type(model).__name__} "
                                 f"(names as in model.named_modules()).{hint}")
            name = layer
        elif isinstance(layer, nn.Module):
            if id(layer) not in by_id:
                raise ValueError(f"the {type(layer).__name__} given as a layer is not a submodule of this "
                                 f"{type(model).__name__}; pass a module of the model itself (not of a copy).")
            name = by_id[id(layer)]
        else:
            raise TypeError(f"each layer must be an nn.Module or its dotted name, got {type(layer).__name__}.")
        module = named[name]
        if not _resettable(module):
            raise ValueError(f"layer {name or '(the model)'!r} ({type(module).__name__}) has no parameters to "
                             "re-initialise (no submodule with parameters and reset_parameters()).")
        resolved.append((name if label is None else str(label), name))
    labels = [label for label, _ in resolved]
    if len(set(labels)) != len(labels):
        raise ValueError(f"layers lists a layer twice: {labels}.")
    return resolved


def _resettable(module: nn.Module) -> list[nn.Module]:
    """The submodules of ``module`` (itself included) that hold parameters and have ``reset_parameters()``."""
    return [m for m in module.modules()
            if callable(getattr(m, "reset_parameters", None)) and next(m.parameters(recurse=False), None) is not None]


def layer_seed(seed: int, position: int) -> int:
    """The seed the layer at ``position`` in the list is re-initialised with: a 63-bit integer derived from
    ``(seed, position)`` by NumPy's ``SeedSequence`` (distinct pairs give unrelated seeds)."""
    state = np.random.SeedSequence([seed, position]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


def _reinitialise(module: nn.Module, seed: int) -> None:
    """``reset_parameters()`` on every resettable submodule, drawing from the RNGs seeded with ``seed`` inside
    :func:`torch.random.fork_rng` (the caller's global random state is left as it was)."""
    devices = sorted({p.device.index or 0 for p in module.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        for m in _resettable(module):
            m.reset_parameters()


def randomized_copies(model: nn.Module, layers, mode: str = "cascading",
                      seed: int = 0) -> Iterator[tuple[str, nn.Module]]:
    """Model-parameter randomisation (Adebayo et al. 2018; the SFAM paper's §4.4): copies of ``model`` with layers
    re-initialised, one copy per layer.

    ``layers`` is ordered from the output side down: submodules of ``model``, their dotted names (as in
    ``model.named_modules()``), ``(label, module or name)`` pairs, or a dict ``{label: module or name}`` (e.g.
    ``dict(reversed(frn_conv_layers(frn).items()))`` or :func:`torchvision_stages`). Yields ``(label, copy)`` per
    layer, the label being the dotted name where none is given; each copy is a fresh :func:`copy.deepcopy` of
    ``model`` in which the layer, and in ``"cascading"`` mode every layer before it in the list too, is
    re-initialised (``"independent"``: only that one). The original model is never modified.

    Re-initialising a layer calls ``reset_parameters()`` on each of its submodules that has parameters and that
    method (PyTorch's default initialisation; a BatchNorm's running statistics are reset with it). Parameters of
    modules without ``reset_parameters()`` stay as they are. The layer at position ``i`` is re-initialised from
    ``layer_seed(seed, i)``, so a layer gets the same random values in every step of a cascade and in independent
    mode, and two calls with the same ``seed`` give identical copies. Every other parameter and buffer is a copy of
    the original's. Errors (unknown mode, unknown name, foreign module, empty list, nothing to re-initialise) are
    raised by the call itself, before any copy is made.
    """
    check_choice(mode, "mode", MODES)
    seed = check_int(seed, "seed", minimum=0)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}.")
    resolved = _resolve_layers(model, layers)
    return _copies(model, resolved, mode, seed)


def _copies(model, resolved, mode, seed):
    for k, (label, _) in enumerate(resolved):
        replica = copy.deepcopy(model)
        for i in (range(k + 1) if mode == "cascading" else (k,)):
            _reinitialise(replica.get_submodule(resolved[i][1]), layer_seed(seed, i))
        yield label, replica


# -- similarity of maps ----------------------------------------------------------------------------------

@dataclass
class MapSimilarity:
    """Per-map similarity of original and randomised maps, ``(B,)`` float64 arrays.

    ``spearman``: Spearman rank correlation of the two maps' pixels; ``spearman_abs``: of their absolute values;
    ``ssim``: structural similarity of the min-max normalised maps (None when not asked for). Spearman is NaN where
    either map is constant (it has no ranking; ``constant`` marks those maps, either map constant)."""
    spearman: np.ndarray
    spearman_abs: np.ndarray
    ssim: np.ndarray | None
    constant: np.ndarray


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    return float(spearmanr(a, b).statistic)


def map_similarity(original, randomized, ssim: bool = True) -> MapSimilarity:
    """How much ``randomized`` maps ``(B, H, W)`` still resemble the ``original`` ones, map by map, as in Adebayo
    et al. 2018 (the SFAM paper's §4.4 shows the pictures only): Spearman rank correlation of the pixels
    (:func:`scipy.stats.spearmanr`, ties get average ranks), the same of the absolute values, and SSIM
    (:func:`skimage.metrics.structural_similarity` with its default 7×7 uniform window, on maps min-max normalised
    to [0, 1], ``data_range=1``).

    Constant maps: Spearman is undefined and reported as NaN (and flagged in ``constant``); for SSIM a constant map
    normalises to all ones (:func:`sfam_lite.maps.minmax_normalize`, the package's one rule), so two constant maps
    have SSIM 1. SSIM needs scikit-image (:data:`SSIM_REQUIREMENT`; in the book's and the tests' requirements, not
    the package's): with ``ssim=True`` and scikit-image missing this raises ImportError;
    ``ssim=False`` skips it (``ssim`` field None). Maps must be finite, the same shape, and (for SSIM) at least
    7 pixels on each side."""
    original = as_float_tensor(original, "original")
    randomized = as_float_tensor(randomized, "randomized")
    if original.ndim != 3 or original.shape != randomized.shape:
        raise ValueError(f"original and randomized must both have shape (B, H, W), got {tuple(original.shape)} "
                         f"and {tuple(randomized.shape)}.")
    check_finite(original, "original", "maps must be finite.")
    check_finite(randomized, "randomized", "maps must be finite.")
    structural_similarity = None
    if ssim:
        try:
            from skimage.metrics import structural_similarity
        except ImportError as error:
            raise ImportError(f"SSIM needs scikit-image: pip install '{SSIM_REQUIREMENT}' "
                              "(or call map_similarity(..., ssim=False)).") from error
        if min(original.shape[1:]) < 7:
            raise ValueError(f"SSIM uses a 7×7 window; maps of size {tuple(original.shape[1:])} are too small.")
    a = original.detach().cpu().double().numpy()
    b = randomized.detach().cpu().double().numpy()
    n = len(a)
    rho, rho_abs, s = np.empty(n), np.empty(n), np.empty(n)
    constant = np.array([np.ptp(x) == 0 or np.ptp(y) == 0 for x, y in zip(a, b)], dtype=bool)
    for i in range(n):
        x, y = a[i].ravel(), b[i].ravel()
        rho[i] = _spearman(x, y)
        rho_abs[i] = _spearman(np.abs(x), np.abs(y))
        if structural_similarity is not None:
            s[i] = structural_similarity(minmax_normalize(a[i]), minmax_normalize(b[i]), data_range=1.0)
    return MapSimilarity(rho, rho_abs, s if ssim else None, constant)


# -- localisation after randomisation (the paper's criterion) ---------------------------------------------

@dataclass
class LocalisationScores:
    """Per map: ``localised`` (1.0 where the box from the map has IoU ≥ 0.5 with the ground truth, else 0.0),
    ``mass`` (the share of the map's mass inside the box) and ``shown`` (True where the map is not constant: a
    blank map localises nothing). NumPy arrays of length B."""
    localised: np.ndarray
    mass: np.ndarray
    shown: np.ndarray


def localisation_scores(maps: torch.Tensor, boxes: torch.Tensor, threshold: float = 0.2,
                        iou_threshold: float = 0.5) -> LocalisationScores:
    """Chapter 7's protocol on each of ``maps`` ``(B, H, W)`` against ``boxes`` ``(B, 4)`` (``x, y, w, h``): the box
    of the largest component of the pixels ≥ ``threshold`` after min-max scaling
    (:func:`sfam_lite.localization.boxes_from_maps`), localised where its IoU is at least ``iou_threshold``; and
    the mass in the box (:func:`sfam_lite.metrics.mass_in_box`)."""
    maps = as_float_tensor(maps, "maps")
    check_ndim(maps, "maps", (3,), "(B, H, W)")
    check_finite(maps, "maps", "Explanation maps must be finite.")
    hit = iou(boxes_from_maps(maps, threshold), torch.as_tensor(boxes).numpy()) >= iou_threshold
    flat = maps.flatten(1)
    return LocalisationScores(hit.astype(float), mass_in_box(maps, boxes).numpy(),
                              (flat.amax(1) > flat.amin(1)).numpy())


def contrast_maps(images: torch.Tensor, window: float = 1 / 8) -> torch.Tensor:
    """A model-free map ``(B, H, W)`` of images ``(B, C, H, W)``: the local standard deviation of the grey values
    (the channels' mean) in a square window ``window`` of the image's shorter side wide (odd, at least 3 pixels),
    the window cut at the borders. What the image's own structure localises with no model: the floor a randomised
    network's maps are compared with."""
    images = as_float_tensor(images, "images")
    check_ndim(images, "images", (4,), "(B, C, H, W)")
    check_finite(images, "images", "Images must be finite.")
    if not 0 < window <= 1:
        raise ValueError(f"window must be a fraction of the image's shorter side in (0, 1], got {window}.")
    grey = images.mean(1, keepdim=True)
    k = max(3, int(min(images.shape[-2:]) * window) | 1)
    local = lambda x: torch.nn.functional.avg_pool2d(x, k, 1, k // 2, count_include_pad=False)  # noqa: E731
    return (local(grey ** 2) - local(grey) ** 2).clamp_min(0).sqrt()[:, 0]


# -- deletion and insertion ------------------------------------------------------------------------------

@dataclass
class DeletionCurves:
    """Deletion or insertion curves of B query–support pairs.

    ``scores`` ``(B, steps + 1)``: the similarity after each step; ``fractions`` ``(steps + 1,)``: the fraction of
    the query's pixels removed (deletion) or revealed (insertion) at each step, from 0 to 1; ``auc`` ``(B,)``:
    the trapezoid area under each curve over ``fractions`` (x-range [0, 1], so the AUC is the curve's mean
    height, in the units of the similarity)."""
    scores: torch.Tensor
    fractions: torch.Tensor
    auc: torch.Tensor
    mode: str


def blurred(images: torch.Tensor, kernel_size: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """The blurred baseline of :func:`deletion_insertion`: :func:`torchvision.transforms.functional.gaussian_blur`
    with a ``kernel_size``×``kernel_size`` Gaussian of standard deviation ``sigma`` pixels (reflect padding).
    The defaults are those of RISE's released evaluation code (11, 5, there on 224-pixel images)."""
    from torchvision.transforms.functional import gaussian_blur
    return gaussian_blur(images, [kernel_size, kernel_size], [sigma, sigma])


def removal_order(maps: torch.Tensor) -> torch.Tensor:
    """``(B, H·W)``: each map's pixel indices (row-major) in order of decreasing value; equal values keep
    row-major order (a stable sort), so ties are broken the same way on every run."""
    return torch.sort(maps.flatten(1), dim=1, descending=True, stable=True).indices


class PairSimilarity:
    """A query–support similarity split in two, so that a support is encoded once however often its query is
    perturbed: ``encode(support_images) -> encoded`` (one row per pair) and ``score(query_images, encoded) -> (n,)``.
    Calling it, ``sim(query_images, support_images)``, does both. :func:`frn_similarity` and
    :func:`cosine_similarity_of` return one; :func:`deletion_insertion` encodes the supports once with it."""

    def __init__(self, encode: Callable[[torch.Tensor], torch.Tensor],
                 score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
        self.encode, self.score = encode, score

    def __call__(self, query_images: torch.Tensor, support_images: torch.Tensor) -> torch.Tensor:
        return self.score(query_images, self.encode(support_images))


def _check_scores(out, n: int) -> torch.Tensor:
    if not isinstance(out, torch.Tensor) or out.shape != (n,):
        raise ValueError(f"score_fn must return one score per pair, shape ({n},), got "
                         f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}.")
    return out


def deletion_insertion(score_fn, query_images, support_images, maps, steps: int = 20, mode: str = "deletion",
                       baseline="blur", batch_size: int = 64, kernel_size: int = 11,
                       sigma: float = 5.0) -> DeletionCurves:
    """Deletion and insertion curves (Petsiuk et al. 2018, RISE) with the model's own similarity as the score.

    ``score_fn`` is the similarity of each query to its support: a :class:`PairSimilarity` (e.g.
    :func:`frn_similarity` or :func:`cosine_similarity_of`), whose supports are then encoded once, ``batch_size``
    at a time, and never again; or any callable ``score_fn(query_batch, support_batch) -> (n,)``, which sees the
    supports again with every chunk. ``query_images`` ``(B, C, H, W)``; ``support_images`` ``(B, ...)``, row ``i``
    being pair ``i``'s support as ``score_fn`` takes it (``(B, C, H, W)`` or ``(B, K, C, H, W)``); ``maps``
    ``(B, H, W)``, the query maps at image resolution.

    The pixels are taken in order of decreasing map value (:func:`removal_order`), in ``steps`` equal steps: after
    step ``t`` the first ``floor(t·H·W / steps)`` of them are replaced (all channels) by the baseline (deletion:
    the curve starts at the unmodified score and ends at the baseline's), or are the only ones not replaced
    (insertion: starts at the baseline, ends at the unmodified score). ``baseline``: ``"blur"`` (:func:`blurred`
    with ``kernel_size`` and ``sigma``), ``"zero"``, or a tensor shaped like ``query_images``.

    Batched over steps and pairs: the ``B·(steps + 1)`` perturbed queries are built and scored ``batch_size`` at a
    time, one model call per chunk (never per pair or per step), under ``torch.no_grad()``. A model with BatchNorm
    must be in eval mode for chunks not to change the scores (the helpers here see to it)."""
    check_choice(mode, "mode", ("deletion", "insertion"))
    steps = check_int(steps, "steps", minimum=1)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    query_images = as_float_tensor(query_images, "query_images")
    maps = as_float_tensor(maps, "maps")
    if query_images.ndim != 4:
        raise ValueError(f"query_images must have shape (B, C, H, W), got {tuple(query_images.shape)}.")
    b, _, h, w = query_images.shape
    if maps.shape != (b, h, w):
        raise ValueError(f"maps must have shape (B, H, W) = {(b, h, w)} (one map per query, at image resolution), "
                         f"got {tuple(maps.shape)}.")
    if not isinstance(support_images, torch.Tensor) or support_images.ndim < 1 or len(support_images) != b:
        raise ValueError(f"support_images must be a tensor with one row per query ({b}), got "
                         f"{tuple(support_images.shape) if isinstance(support_images, torch.Tensor) else support_images!r}.")
    check_finite(maps, "maps", "maps must be finite to be ordered.")
    if isinstance(baseline, torch.Tensor):
        if baseline.shape != query_images.shape:
            raise ValueError(f"a baseline tensor must have the queries' shape {tuple(query_images.shape)}, "
                             f"got {tuple(baseline.shape)}.")
        substrate = baseline.to(query_images)
    else:
        check_choice(baseline, "baseline", ("blur", "zero"))
        substrate = (blurred(query_images, kernel_size, sigma) if baseline == "blur"
                     else torch.zeros_like(query_images))

    device = query_images.device
    n_pixels = h * w
    order = removal_order(maps.to(device))
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(n_pixels, device=device).expand(b, -1).contiguous())
    counts = torch.tensor([t * n_pixels // steps for t in range(steps + 1)], device=device)
    first, second = (substrate, query_images) if mode == "deletion" else (query_images, substrate)
    # every (pair, step), scored batch_size at a time: pair index p, step index t
    pair = torch.arange(b, device=device).repeat_interleave(steps + 1)
    step = torch.arange(steps + 1, device=device).repeat(b)
    scores = torch.empty(b * (steps + 1), dtype=torch.float64)
    split = isinstance(score_fn, PairSimilarity)
    with torch.no_grad():
        if split:                                                        # each support once, batch_size at a time
            encoded = torch.cat([score_fn.encode(support_images[i:i + batch_size]) for i in range(0, b, batch_size)])
        for start in range(0, len(pair), batch_size):
            p, t = pair[start:start + batch_size], step[start:start + batch_size]
            chosen = (rank[p] < counts[t][:, None]).view(-1, 1, h, w)     # the pixels taken so far
            images = torch.where(chosen, first[p], second[p])
            out = (score_fn.score(images, encoded[p.to(encoded.device)]) if split
                   else score_fn(images, support_images[p.to(support_images.device)]))
            scores[start:start + len(p)] = _check_scores(out, len(p)).detach().double().cpu()
    scores = scores.view(b, steps + 1)
    fractions = counts.double().cpu() / n_pixels
    auc = torch.trapezoid(scores, fractions, dim=1)
    return DeletionCurves(scores, fractions, auc, mode)


def frn_similarity(frn) -> PairSimilarity:
    """FRN's similarity of a query to its support: minus the reconstruction distance of the query's positions from
    the support's (FRN's logit before its ``scale``; each pair is its own 1-way episode), averaged over the query's
    positions. ``encode`` takes supports ``(n, C, H, W)`` or ``(n, K, C, H, W)`` to their positions
    ``(n, K·r, d)``; ``score`` takes queries ``(n, C, H, W)``. Both run the model in eval mode.

    The reconstruction error is quadratic in the query's features (``‖Q − ρ Q W‖²`` with W fixed by the support),
    so a query with weaker features (blurred, or faded towards the mean) is closer to *every* support: deletion
    with this score rewards removing whatever carries the strongest features (chapter 8 shows the curves)."""
    from .explainer import eval_mode
    from .models.frn import reconstruction_distance

    def encode(support: torch.Tensor) -> torch.Tensor:
        if support.ndim == 4:
            support = support[:, None]
        n, k = support.shape[:2]
        with eval_mode(frn):
            s = frn.positions(support.flatten(0, 1))                          # (n·K, r, d)
        return s.reshape(n, k * s.shape[1], s.shape[2])                       # (n, K·r, d)

    def score(query: torch.Tensor, encoded: torch.Tensor) -> torch.Tensor:
        with eval_mode(frn):
            q = frn.positions(query)                                          # (n, r, d)
        return -reconstruction_distance(q, encoded[:, None], frn.r[0], frn.r[1])[..., 0].mean(-1)
    return PairSimilarity(encode, score)


def cosine_similarity_of(model: nn.Module) -> PairSimilarity:
    """A retrieval model's similarity (GPW): the cosine of the query's embedding with its support's (with K support
    images, with the mean of their L2-normalised embeddings, as :func:`sfam_lite.baselines.cosine_target`).
    ``encode`` takes supports ``(n, C, H, W)`` or ``(n, K, C, H, W)`` to their embeddings ``(n, K, D)``; ``score``
    takes queries ``(n, C, H, W)``. Both run the model in eval mode."""
    from .baselines import cosine_target
    from .explainer import eval_mode

    def encode(support: torch.Tensor) -> torch.Tensor:
        if support.ndim == 4:
            support = support[:, None]
        n, k = support.shape[:2]
        with eval_mode(model):
            e_s = model(support.flatten(0, 1))
        return e_s.reshape(n, k, *e_s.shape[1:])

    def score(query: torch.Tensor, encoded: torch.Tensor) -> torch.Tensor:
        with eval_mode(model):
            e_q = model(query)
        return cosine_target(e_q, encoded)
    return PairSimilarity(encode, score)
