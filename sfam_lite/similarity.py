"""The support-swap test: does an explanation show what the query *shares* with its support (chapter 10)?

The paper's claim (§1, §2.2) is that SFAM highlights "similar features between two images", while Grad-FAM
"focuses solely on the given image" and RAM highlights features that "do not necessarily correspond to
similarities". On images with one bird each, a map of the query's own salient content and a map of the content it
shares with the support coincide, so localisation cannot tell the two apart. The test here can:

1. :func:`side_by_side` puts two test images of different classes A and B into one query, each squeezed into one
   half, with both boxes moved accordingly;
2. the composite is explained against a support image of class A, then of class B (the support swapped);
   :func:`swap_design` lays out the four explanations of each pair (A left or right, support A or B);
3. :func:`swap_statistics` measures the share of the map's mass on the shared bird's half, the swap effect (how
   much that share changes when the support is swapped), how often the map's maximum moves to the other half, and
   how much the map changes at all; 95 % intervals over image pairs (:func:`sfam_lite.metrics.mean_and_interval`);
4. :func:`half_blur_drops` asks the same of the *model*: how much its own similarity to the support drops when the
   shared half is blurred, and when the other half is (FRN: :func:`sfam_lite.sanity.frn_similarity`, GPW:
   :func:`sfam_lite.sanity.cosine_similarity_of`); :func:`half_change_drops` does so for any change of one half
   (on the synthetic benchmark: the bird of that half removed, :mod:`sfam_lite.counterfactuals`);
5. one part apart: :func:`part_statistics` measures how much of a map's mass lies on the one part in which a
   query's class differs from a sibling class, with a support of its own class and of the sibling class, and
   :func:`part_swap_drops` how much the model's similarity drops when the query's part takes the sibling's value.

A method that explains the similarity puts its mass on the shared half and moves it when the support is swapped;
a method that explains the query alone gives the same map for both supports (swap effect 0).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ._checks import as_float_tensor, check_int, compute_dtype
from .maps import minmax_normalize
from .metrics import box_masks, mass_in_box, mean_and_interval, pointing_game
from .sanity import PairSimilarity, blurred


def side_by_side(left: torch.Tensor, right: torch.Tensor, left_boxes: torch.Tensor | None = None,
                 right_boxes: torch.Tensor | None = None):
    """Composites of two images side by side: ``left`` ``(n, C, H, W)`` squeezed into columns ``[0, W // 2)``,
    ``right`` into ``[W // 2, W)``, each at full height (bilinear, antialiased), so a composite has the size of its
    inputs and goes through the model like any test image.

    Returns ``(composites, left_boxes, right_boxes)``: the boxes ``(n, 4)`` ``(x, y, w, h)`` of each image moved with
    it (x and w scaled by the half's width over W, x shifted by the half's offset; y and h unchanged), None where
    none were given."""
    left, right = as_float_tensor(left, "left"), as_float_tensor(right, "right")
    if left.ndim != 4 or left.shape != right.shape:
        raise ValueError(f"left and right must both have shape (n, C, H, W), got {tuple(left.shape)} and "
                         f"{tuple(right.shape)}.")
    h, w = left.shape[-2:]
    if w < 2:
        raise ValueError(f"images {w} pixel(s) wide cannot be split into two halves.")
    widths = (w // 2, w - w // 2)
    halves = [F.interpolate(x, size=(h, wd), mode="bilinear", align_corners=False, antialias=True)
              for x, wd in zip((left, right), widths)]
    composites = torch.cat(halves, dim=-1)

    def move(boxes, offset, width):
        if boxes is None:
            return None
        boxes = torch.as_tensor(boxes, dtype=torch.float64).clone()
        boxes[:, 0] = boxes[:, 0] * width / w + offset
        boxes[:, 2] = boxes[:, 2] * width / w
        return boxes
    return composites, move(left_boxes, 0, widths[0]), move(right_boxes, widths[0], widths[1])


def half_boxes(n: int, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The boxes ``(n, 4)`` of the left half ``[0, W // 2)`` and the right half ``[W // 2, W)`` of an image of
    ``size`` ``(H, W)``, as :func:`side_by_side` splits it; together they cover every pixel once."""
    h, w = size
    left = torch.tensor([0.0, 0.0, w // 2, h], dtype=torch.float64).expand(n, 4)
    right = torch.tensor([w // 2, 0.0, w - w // 2, h], dtype=torch.float64).expand(n, 4)
    return left.clone(), right.clone()


@dataclass
class SwapDesign:
    """n image pairs of different classes for the support-swap test, each with a support image per class.

    ``first``, ``second``: ``(n,)`` indices of the two images (classes A and B); ``first_support``,
    ``second_support``: ``(n,)`` indices of another image of class A and of class B. Each pair gives two composites,
    A left (order 0) and A right (order 1), each explained against support A (k = 0) and support B (k = 1): the
    maps of a test are laid out ``(n, order, k, H, W)``. The shared half is the left one exactly when
    ``order == k`` (:attr:`shared_left`)."""
    first: torch.Tensor
    second: torch.Tensor
    first_support: torch.Tensor
    second_support: torch.Tensor

    #: ``(order, k)``: whether the bird shared with support k is in the left half of composite ``order``
    shared_left = torch.tensor([[True, False], [False, True]])

    def __len__(self) -> int:
        return len(self.first)


def swap_design(labels, n: int, seed: int = 0) -> SwapDesign:
    """``n`` distinct unordered pairs of images of different classes, drawn uniformly with ``seed``, each with a
    support image of each class other than the pair's own images. ``labels`` ``(m,)`` class ids; every class
    used needs at least two images."""
    labels = np.asarray(labels)
    n = check_int(n, "n", 1)
    rng = np.random.default_rng(seed)
    by_class = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
    usable = np.flatnonzero([len(by_class[c]) >= 2 for c in labels])
    if len(np.unique(labels[usable])) < 2:
        raise ValueError("the support-swap test needs two classes with at least two images each.")
    seen, rows = set(), []
    for _ in range(100 * n):
        if len(rows) == n:
            break
        a, b = rng.choice(usable, 2, replace=False)
        key = (min(a, b), max(a, b))
        if labels[a] == labels[b] or key in seen:
            continue
        seen.add(key)
        support = [rng.choice(by_class[labels[x]][by_class[labels[x]] != x]) for x in (a, b)]
        rows.append((a, b, *support))
    if len(rows) < n:
        raise ValueError(f"could draw only {len(rows)} distinct pairs of different classes, not {n}.")
    first, second, s_first, s_second = (torch.as_tensor(np.array(c), dtype=torch.long) for c in zip(*rows))
    return SwapDesign(first, second, s_first, s_second)


def swap_composites(images: torch.Tensor, boxes: torch.Tensor | None, design: SwapDesign):
    """The ``2n`` composites of ``design``, A left then A right for each pair (row ``2p + order``), with their left and
    right boxes, and the ``2n`` supports (row ``2p + k``: support A then B); a query row ``2p + order`` meets support
    rows ``2p`` and ``2p + 1``."""
    a, b = images[design.first], images[design.second]
    box_a = boxes[design.first] if boxes is not None else None
    box_b = boxes[design.second] if boxes is not None else None
    left = torch.stack([a, b], 1).flatten(0, 1)
    right = torch.stack([b, a], 1).flatten(0, 1)
    lb = torch.stack([box_a, box_b], 1).flatten(0, 1) if boxes is not None else None
    rb = torch.stack([box_b, box_a], 1).flatten(0, 1) if boxes is not None else None
    composites, lb, rb = side_by_side(left, right, lb, rb)
    supports = torch.stack([images[design.first_support], images[design.second_support]], 1).flatten(0, 1)
    return composites, lb, rb, supports


def explain_swaps(explainer, composite_features: torch.Tensor, support_features: torch.Tensor, size,
                  batch: int = 256) -> torch.Tensor:
    """Every composite explained against both supports of its pair, from cached target-layer features:
    ``composite_features`` and ``support_features`` ``(2n, N, h, w)`` in :func:`swap_composites`' order. Returns the
    query maps ``(n, 2, 2, H, W)`` (pair, order, k) at ``size``."""
    m = len(composite_features)
    q = torch.arange(m).repeat_interleave(2)                 # (2n·2): each composite twice
    s = (q // 2) * 2 + torch.arange(2).repeat(m)             # ... with support A, then B, of its pair
    maps = [explainer.explain_features(composite_features[q[i:i + batch]], support_features[s[i:i + batch]][:, None],
                                       size=size).query_maps.detach().float().cpu()
            for i in range(0, len(q), batch)]
    return torch.cat(maps).reshape(m // 2, 2, 2, *maps[0].shape[-2:])


def explain_against(explainer, query_features: torch.Tensor, support_features: torch.Tensor, size,
                    batch: int = 256) -> torch.Tensor:
    """Each query explained against each of its own supports, one at a time, from cached target-layer features:
    ``query_features`` ``(n, N, h, w)``, ``support_features`` ``(n, K, N, h, w)``. Returns the query maps
    ``(n, K, H, W)`` at ``size`` (:func:`part_statistics` takes K = 2: own class, sibling class)."""
    n, k = support_features.shape[:2]
    q = torch.arange(n).repeat_interleave(k)
    s = support_features.flatten(0, 1)
    maps = [explainer.explain_features(query_features[q[i:i + batch]], s[i:i + batch][:, None],
                                       size=size).query_maps.detach().float().cpu()
            for i in range(0, len(q), batch)]
    return torch.cat(maps).reshape(n, k, *maps[0].shape[-2:])


def _summary(per_pair: torch.Tensor) -> tuple[float, float]:
    return mean_and_interval(per_pair) if len(per_pair) >= 2 else (float(per_pair.mean()), float("nan"))


def _summaries(values: dict, unit: str) -> dict:
    """Each measure's ``(mean, 95 % half-width)`` over the units (NaN units left out), with the values themselves
    as ``per_<unit>`` and their number as ``pairs`` / ``queries``."""
    out = {k: _summary(v[~v.isnan()]) for k, v in values.items()}
    out[f"per_{unit}"] = values
    out["pairs" if unit == "pair" else "queries"] = len(next(iter(values.values())))
    return out


def swap_statistics(maps: torch.Tensor) -> dict:
    """The support-swap test's measures for maps ``(n, 2, 2, H, W)`` (pair, order, k; :func:`explain_swaps`), each
    ``(mean, half-width of the 95 % interval)`` over the n pairs (each pair's four maps averaged first, so the units
    are the pairs), and ``per_pair`` with the values per pair:

    * ``share``: the share of the min-max normalised map's mass (:func:`sfam_lite.metrics.mass_in_box`) on the half
      holding the bird of the support's class; 0.5 for a map that does not prefer either half;
    * ``swap_effect``: the share on A's half with support A minus the share on A's half with support B (per
      composite): 1 when the mass follows the support completely, 0 when the map ignores the support. Since the two
      halves cover the image, it equals twice the composite's mean ``share`` minus 1;
    * ``moves``: whether the map's maximum (:func:`sfam_lite.metrics.pointing_game`) lies in different halves for
      the two supports;
    * ``follows``: whether it lies in the shared half for both supports;
    * ``map_correlation``: the Pearson correlation of the composite's two maps (1: the swap changes nothing but
      the scale; NaN pairs, where a map is constant, are left out of the mean)."""
    maps = as_float_tensor(maps, "maps")
    if maps.ndim != 5 or maps.shape[1:3] != (2, 2):
        raise ValueError(f"maps must have shape (n, 2, 2, H, W) (pair, order, support), got {tuple(maps.shape)}.")
    n, size = len(maps), tuple(maps.shape[-2:])
    flat = maps.reshape(-1, *size)
    left_box, _ = half_boxes(len(flat), size)
    left_share = mass_in_box(flat, left_box).reshape(n, 2, 2)
    left_peak = pointing_game(flat, left_box).reshape(n, 2, 2)
    shared_left = SwapDesign.shared_left
    share = torch.where(shared_left, left_share, 1 - left_share)                       # (n, order, k)
    peak_shared = left_peak == shared_left
    sign = torch.tensor([1.0, -1.0], dtype=left_share.dtype)                          # A's half: left, then right
    swap = sign * (left_share[:, :, 0] - left_share[:, :, 1])                          # (n, order)
    moves = (left_peak[:, :, 0] != left_peak[:, :, 1]).double()
    follows = (peak_shared[:, :, 0] & peak_shared[:, :, 1]).double()
    x = maps.double().flatten(3)
    x = x - x.mean(-1, keepdim=True)
    norm = x.norm(dim=-1)
    corr = (x[:, :, 0] * x[:, :, 1]).sum(-1) / (norm[:, :, 0] * norm[:, :, 1])          # NaN where a map is constant
    per_pair = {"share": share.mean((1, 2)), "swap_effect": swap.mean(1), "moves": moves.mean(1),
                "follows": follows.mean(1), "map_correlation": corr.nanmean(1)}
    return _summaries(per_pair, "pair")


@torch.no_grad()
def half_blur_drops(similarity: PairSimilarity, composites: torch.Tensor, supports: torch.Tensor,
                    batch: int | None = None, kernel_size: int = 11, sigma: float = 5.0) -> dict:
    """Is the *model* object-specific? Its own similarity (a :class:`sfam_lite.sanity.PairSimilarity`, e.g. FRN's
    minus reconstruction distance or GPW's cosine) of each composite to each support of its pair, intact, with the
    shared half blurred, and with the other half blurred (:func:`sfam_lite.sanity.blurred`, RISE's blur).

    ``composites`` and ``supports`` ``(2n, C, H, W)`` in :func:`swap_composites`' order. Returns
    :func:`half_change_drops` with the left half blurred and with the right half blurred: per pair (four
    composite–support combinations averaged) ``drop_shared`` = similarity intact minus with the shared half blurred,
    ``drop_other`` the same for the other half, ``difference`` = ``drop_shared − drop_other`` (above 0: the model's
    similarity rests more on the shared bird; for FRN it is the reconstruction distance with the shared half blurred
    minus that with the other half blurred), and ``shared_larger``, the share of combinations where
    ``drop_shared > drop_other``: each ``(mean, 95 % half-width)`` over pairs, with ``per_pair`` values."""
    w = composites.shape[-1]
    left = torch.zeros(1, 1, 1, w, dtype=torch.bool, device=composites.device)
    left[..., : w // 2] = True
    soft = blurred(composites, kernel_size, sigma)
    return half_change_drops(similarity, composites, supports, torch.where(left, soft, composites),
                             torch.where(left, composites, soft), batch)


@torch.no_grad()
def half_change_drops(similarity: PairSimilarity, composites: torch.Tensor, supports: torch.Tensor,
                      left_changed: torch.Tensor, right_changed: torch.Tensor, batch: int | None = None) -> dict:
    """The model's similarity of each composite to each support of its pair, intact and with one half changed:
    ``left_changed`` / ``right_changed`` ``(2n, C, H, W)`` are the composites with their left / right half changed
    (blurred, :func:`half_blur_drops`; or with the bird of that half removed, a counterfactual the synthetic
    benchmark's generator can draw, :mod:`sfam_lite.counterfactuals`). For support k of composite ``order`` the
    shared half is the left one exactly when ``order == k`` (:attr:`SwapDesign.shared_left`).

    ``composites`` and ``supports`` ``(2n, C, H, W)`` in :func:`swap_composites`' order. Returns per pair (four
    combinations averaged) ``drop_shared`` = similarity intact minus with the shared half changed, ``drop_other``
    the same for the other half, ``difference`` = ``drop_shared − drop_other`` and ``shared_larger`` (the share of
    combinations with ``drop_shared > drop_other``): each ``(mean, 95 % half-width)`` over pairs, with
    ``per_pair``. ``batch`` composite–support combinations are scored at a time, each in its three variants: by
    default :data:`sfam_lite.memory.SCORED_COMBINATIONS_AT_96_PX` up to 96 px and fewer above, the same number of
    pixels (:func:`sfam_lite.memory.images_per_batch`)."""
    from .memory import SCORED_COMBINATIONS_AT_96_PX, images_per_batch
    batch = batch or images_per_batch(tuple(composites.shape[-2:]), at_96=SCORED_COMBINATIONS_AT_96_PX)
    m = len(composites)
    if left_changed.shape != composites.shape or right_changed.shape != composites.shape:
        raise ValueError(f"left_changed and right_changed must have the composites' shape {tuple(composites.shape)}, "
                         f"got {tuple(left_changed.shape)} and {tuple(right_changed.shape)}.")
    variants = torch.stack([composites, left_changed, right_changed], 1)
    q = torch.arange(m, device=composites.device).repeat_interleave(2)       # composite 2p + order ...
    s = (q // 2) * 2 + torch.arange(2, device=composites.device).repeat(m)   # ... with support A, then B
    encoded = torch.cat([similarity.encode(supports[i:i + batch]) for i in range(0, m, batch)])
    scores = []
    for i in range(0, len(q), batch):
        qi, si = q[i:i + batch], s[i:i + batch]
        images = variants[qi].flatten(0, 1)                                    # (b·3, C, H, W)
        enc = encoded[si.to(encoded.device)].repeat_interleave(3, 0)
        scores.append(similarity.score(images, enc).double().cpu().reshape(-1, 3))
    scores = torch.cat(scores).reshape(m // 2, 2, 2, 3)                       # pair, order, k, variant
    shared_left = SwapDesign.shared_left
    change_shared = torch.where(shared_left, scores[..., 1], scores[..., 2])
    change_other = torch.where(shared_left, scores[..., 2], scores[..., 1])
    drop_shared, drop_other = scores[..., 0] - change_shared, scores[..., 0] - change_other
    per_pair = {"drop_shared": drop_shared.mean((1, 2)), "drop_other": drop_other.mean((1, 2)),
                "difference": (drop_shared - drop_other).mean((1, 2)),
                "shared_larger": (drop_shared > drop_other).double().mean((1, 2))}
    return _summaries(per_pair, "pair")


# ---------------------------------------------------------------------------------------------- one part apart

def part_statistics(maps: torch.Tensor, part_masks: torch.Tensor, boxes: torch.Tensor) -> dict:
    r"""The part-level swap test: does a map put more of its mass on the part the query shares with the support?

    ``maps`` ``(n, 2, H, W)``: each query explained against a support of its own class (k = 0), which shares the
    part, and of its sibling class (k = 1), which differs from the query's class in that part only.
    ``part_masks`` ``(n, H, W)`` in [0, 1]: where the part lies (the pixels that change when the part takes the
    sibling's value); ``boxes`` ``(n, 4)``: the bird's box. Per query, of the min-max normalised map's mass inside
    the box (as :func:`sfam_lite.metrics.mass_in_box`), the share on the part:
    :math:`\sum_{ij} m_{ij} p_{ij} b_{ij} / \sum_{ij} m_{ij} b_{ij}` (``p`` the part mask, ``b`` the box mask).

    Returns ``share_own``, ``share_sibling``, ``difference`` = own − sibling (the part-level swap effect: above 0
    when the mass moves onto the part as the support comes to share it; 0 for a map that ignores the support) and
    ``part_area`` (the share a map flat over the box scores), each ``(mean, 95 % half-width)`` over queries with
    ``per_query`` values (a query with no mass in its box is left out of the means)."""
    maps = as_float_tensor(maps, "maps")
    if maps.ndim != 4 or maps.shape[1] != 2:
        raise ValueError(f"maps must have shape (n, 2, H, W) (query, support), got {tuple(maps.shape)}.")
    n, size = len(maps), tuple(maps.shape[-2:])
    parts = as_float_tensor(part_masks, "part_masks").double()
    if parts.shape != (n, *size):
        raise ValueError(f"part_masks must have shape {(n, *size)}, one mask per query, got {tuple(parts.shape)}.")
    m = minmax_normalize(maps.flatten(0, 1).to(compute_dtype(maps.dtype))).double().reshape(n, 2, *size)
    inside = box_masks(torch.as_tensor(boxes), size).double()
    on_part = parts * inside
    in_box = (m * inside[:, None]).sum((-2, -1))
    share = torch.where(in_box > 0, (m * on_part[:, None]).sum((-2, -1)) / in_box.clamp_min(1e-300),
                        torch.full_like(in_box, float("nan")))
    per_query = {"share_own": share[:, 0], "share_sibling": share[:, 1], "difference": share[:, 0] - share[:, 1],
                 "part_area": on_part.sum((-2, -1)) / inside.sum((-2, -1))}
    return _summaries(per_query, "query")


@torch.no_grad()
def part_swap_drops(similarity: PairSimilarity, queries: torch.Tensor, swapped: torch.Tensor,
                    supports: torch.Tensor, batch: int = 128) -> dict:
    """Does the *model* use the part? Its similarity of each query to its support minus that of the query with
    the part swapped (``swapped``: the same image with the sibling's value of the part) to the same support.

    ``queries``, ``swapped``, ``supports`` ``(n, C, H, W)``, row by row. Returns ``drop`` (above 0: the part makes
    the query more similar to a support that shares it) as ``(mean, 95 % half-width)`` over queries,
    ``positive`` (the share of queries with a drop above 0, the same), ``per_query`` and ``queries``."""
    if swapped.shape != queries.shape or len(supports) != len(queries):
        raise ValueError(f"queries {tuple(queries.shape)}, swapped {tuple(swapped.shape)} and supports "
                         f"{tuple(supports.shape)} must hold one row per query (and swapped the queries' shape).")
    drops = []
    for i in range(0, len(queries), batch):
        encoded = similarity.encode(supports[i:i + batch])
        both = torch.cat([queries[i:i + batch], swapped[i:i + batch]])
        scores = similarity.score(both, torch.cat([encoded, encoded])).double().cpu().reshape(2, -1)
        drops.append(scores[0] - scores[1])
    drop = torch.cat(drops)
    per_query = {"drop": drop, "positive": (drop > 0).double()}
    return _summaries(per_query, "query")
