"""The explorer of chapter 9: every method, model, layer, K and threshold, one pair at a time.

Three layers, each usable without the next:

* :class:`Gallery` — one model and a small seeded subset of its test images. The model runs **once per
  image**, with a forward hook on every candidate target layer, and the feature maps of all layers are kept
  (:func:`capture_layers`); the pairs explained are the model's correct decisions among these images
  (:func:`sfam_lite.evaluation.decisions`: FRN in 5-way 1-shot episodes, GPW its top-1 cosine neighbour), with
  more images of the class for K > 1 support images.
* :class:`Explorer` — plain state → view: :meth:`Explorer.view` turns a :class:`State` (model, method, metric,
  layer, K, sample, threshold) into the query and support maps, the kept pixels, the predicted and true boxes
  and their IoU (the protocol of §4.3, :mod:`sfam_lite.localization`), and the IoU at every threshold. Maps
  are computed from the cached features (``explain_features``) and cached per state without the threshold,
  so moving the threshold only re-thresholds a cached map: it never runs the model, nor an explainer.
* :class:`ExplorerWidget` — thin ``ipywidgets`` controls over an :class:`Explorer` (needs a kernel: Jupyter or
  Colab); and :func:`threshold_frames` renders frames for :func:`sfam_lite.slider.static_slider`, the slider
  that works in the static book.

The methods are those registered in :mod:`sfam_lite.methods` (SFAM, Eq. 3 with Eq. 2 or Eq. 6 with Eq. 5, and the
baselines of :mod:`sfam_lite.baselines`; not SFAM's ablations), with the image-independent references when the gallery has their
priors. ``metric`` chooses SFAM's CIS (Euclidean, Eq. 2; cosine, Eq. 5); the other methods do not read it.
Decomposition is defined for a dot-product similarity only: GPW (at its last layer through GPW's linear
embedding, as in chapter 6; at earlier layers on that layer's pooled features), not FRN.

``ipywidgets`` and ``matplotlib.pyplot`` are imported only when a widget or a figure is made.
"""
from __future__ import annotations

import numbers
from collections import OrderedDict
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn

from ._checks import check_choice, check_finite, check_int, check_threshold
from .cis import METRICS
from .evaluate import CURVE_THRESHOLDS
from .methods import METHODS, REGISTRY, ModelSetup, build_explainers
from .models.staged import STAGES
from .evaluation import decisions
from .explainer import FeatureCapture, eval_mode
from .localization import boxes_from_maps, iou, kept_mask, mask_boxes
from .maps import minmax_normalize
from .slider import shared_palette

__all__ = ["LAYERS", "Gallery", "State", "View", "Explorer", "ExplorerWidget", "capture_layers", "candidate_layers",
           "head_after", "quantize", "render_panel", "threshold_frames", "threshold_mask", "draw_view"]

#: the candidate target layers: the four stages of either backbone (the paper explains the last one)
LAYERS = STAGES
#: how the explorer names the two models
MODEL_NAMES = {"frn": "FRN", "gpw": "GPW"}


def candidate_layers(model: nn.Module, kind: str | None = None) -> dict[str, nn.Module]:
    """``{"layer1": module, …, "layer4": module}``: the model's stages (``model.stages()``: FRN's ResNet-12 blocks
    or GPW's ResNet stages); ``kind``, if given, is checked against the model's."""
    if kind is not None and check_choice(kind, "model kind", MODEL_NAMES) != ModelSetup.of(model).kind:
        raise ValueError(f"model kind {kind!r} given, but {type(model).__name__} is not a {MODEL_NAMES[kind]}.")
    return model.stages()


def head_after(model: nn.Module, kind: str | None, layer: str) -> nn.Module:
    """The layers after ``layer`` (``model.head_after``): its feature map → FRN's output feature map, or GPW's *raw*
    embedding (before the L2 normalisation, as Grad-FAM needs)."""
    check_choice(layer, "layer", LAYERS)
    return model.head_after(layer)


@torch.no_grad()
def capture_layers(model: nn.Module, layers: dict[str, nn.Module], images: torch.Tensor, batch: int = 250):
    """Run ``model`` once per image (in batches, eval mode) with a forward hook on every layer of ``layers``:
    returns the outputs ``(n, …)`` and ``{name: (n, N, h, w)}`` feature maps, all on the CPU."""
    captures = {name: FeatureCapture(layer) for name, layer in layers.items()}
    device = next(model.parameters()).device
    outputs, maps = [], {name: [] for name in layers}
    try:
        with eval_mode(model):
            for i in range(0, len(images), batch):
                for c in captures.values():
                    c.reset()
                outputs.append(model(images[i:i + batch].to(device)).cpu())
                for name, c in captures.items():
                    maps[name].append(c.check(f"layer {name}").cpu())
    finally:
        for c in captures.values():
            c.remove()
    return torch.cat(outputs), {name: torch.cat(m) for name, m in maps.items()}


def _pick_images(labels: torch.Tensor, classes: int, per_class: int, seed: int) -> torch.Tensor:
    """Indices of ``per_class`` images of each of ``classes`` classes, drawn with ``seed``; class by class."""
    generator = torch.Generator().manual_seed(seed)
    names = labels.unique()
    if classes > len(names):
        raise ValueError(f"classes = {classes} asked for, but the test split has {len(names)} classes.")
    chosen = []
    for c in names[torch.randperm(len(names), generator=generator)[:classes]]:
        idx = torch.nonzero(labels == c)[:, 0]
        if len(idx) < per_class:
            raise ValueError(f"class {int(c)} has {len(idx)} test images, fewer than per_class = {per_class}.")
        chosen.append(idx[torch.randperm(len(idx), generator=generator)[:per_class]])
    return torch.cat(chosen)


@dataclass
class Gallery:
    """One model and the images the explorer explains, with their feature maps at every candidate layer.

    Attributes:
        name: ``"FRN"`` or ``"GPW"``; ``kind``: ``"frn"`` or ``"gpw"``.
        images: ``(n, 3, H, W)`` normalised images; ``labels`` ``(n,)``; ``boxes`` ``(n, 4)`` true boxes
            ``(x, y, w, h)`` in the same pixels; ``index`` ``(n,)`` their positions in the test split.
        features: ``{layer: (n, N, h, w)}``, computed once (:func:`capture_layers`).
        queries: ``(P,)`` and ``supports`` ``(P, K_max)`` gallery indices: sample ``p`` is query ``queries[p]``
            explained against ``supports[p, :K]``; ``supports[p, 0]`` is the image the model matched it with.
        priors: ``(centre box size (w, h), Gaussian σ)`` for the references, chosen on validation boxes
            (:func:`sfam_lite.references.reference_priors`); None: no references.
        info: what the pairs are (printed by the chapter).
    """
    name: str
    kind: str
    model: nn.Module
    images: torch.Tensor
    labels: torch.Tensor
    boxes: torch.Tensor
    index: torch.Tensor
    features: dict
    queries: torch.Tensor
    supports: torch.Tensor
    mean: tuple | None = None
    std: tuple | None = None
    priors: tuple | None = None
    info: dict = field(default_factory=dict)

    @property
    def k_max(self) -> int:
        return int(self.supports.shape[1])

    @property
    def samples(self) -> int:
        return int(len(self.queries))

    @property
    def size(self) -> tuple[int, int]:
        return tuple(int(s) for s in self.images.shape[-2:])

    @classmethod
    def from_test(cls, model: nn.Module, kind: str, test, classes: int = 10, per_class: int = 6, seed: int = 0,
                  episodes: int = 20, k_max: int = 5, priors: tuple | None = None, mean=None, std=None) -> "Gallery":
        """``per_class`` images of ``classes`` test classes (seeded), their features at every layer (the model runs
        once per image) and the model's correct decisions among them: FRN in ``episodes`` 5-way (or
        ``classes``-way, if fewer) 1-shot episodes with every other image of each class as a query; GPW each image
        against its most cosine-similar other image. ``k_max``: the most support images (the matched one and
        other images of its class; at most ``per_class - 1``)."""
        check_choice(kind, "model kind", MODEL_NAMES)
        classes, per_class = check_int(classes, "classes", 2), check_int(per_class, "per_class", 2)
        k_max = check_int(k_max, "k_max", 1)
        if k_max > per_class - 1:
            raise ValueError(f"k_max = {k_max} support images need per_class >= {k_max + 1} images per class "
                             f"(the query and K others), got per_class = {per_class}.")
        index = _pick_images(test.labels, classes, per_class, seed)
        images, labels, boxes = test.images[index], test.labels[index], test.boxes[index].float()
        outputs, features = capture_layers(model, candidate_layers(model, kind), images)
        episodes = check_int(episodes, "episodes", 1)
        way = min(5, classes)
        head_device = next(model.parameters()).device
        made = decisions(model, outputs.to(head_device), labels, episodes=episodes, way=way, shot=1,
                         query=per_class - 1, seed=seed)
        q, s, _ = made.explained()
        what = (f"{episodes} {way}-way 1-shot episodes" if model.task == "few-shot" else "top-1 cosine neighbour")
        info = {"decisions": len(made), "correct": int(made.correct.sum()),
                "what": f"{what} among the {classes * per_class} images"}
        pairs = list(OrderedDict.fromkeys(zip(q.tolist(), s.tolist())))   # distinct, in order
        if not pairs:
            raise ValueError(f"the model made no correct decision among these {len(index)} images; "
                             "use more classes, images per class or episodes.")
        generator = torch.Generator().manual_seed(seed + 1)
        supports = []
        for qi, si in pairs:
            same = torch.nonzero(labels == labels[si])[:, 0]
            others = same[(same != qi) & (same != si)]
            others = others[torch.randperm(len(others), generator=generator)]
            supports.append(torch.cat([torch.tensor([si]), others])[:k_max])
        info["pairs"] = len(pairs)
        return cls(MODEL_NAMES[kind], kind, model, images, labels, boxes, index, features,
                   torch.tensor([p[0] for p in pairs]), torch.stack(supports), mean, std, priors, info)


@dataclass(frozen=True)
class State:
    """Everything the explorer's controls set. ``metric`` is SFAM's CIS; ``k`` the number of support images;
    ``sample`` a pair of the gallery; ``threshold`` the protocol's threshold on the min-max normalised map."""
    model: str = "FRN"
    method: str = "sfam"
    metric: str = "euclidean"
    layer: str = "layer4"
    k: int = 1
    sample: int = 0
    threshold: float = 0.2


@dataclass
class View:
    """What the explorer shows for one :class:`State`.

    ``query_map`` ``(H, W)`` and ``support_maps`` ``(K, H, W)`` are the maps at image resolution (None, with a
    ``note``, where the method is not defined for the model); ``query_mask`` the kept pixels' largest
    8-connected component; boxes are ``(x, y, w, h)``; ``curve`` the query map's IoU at each of
    ``curve_thresholds``; ``cosine`` the cosine similarity of the pooled query and support vectors (Eq. 5's).
    """
    state: State
    query_image: torch.Tensor
    support_images: torch.Tensor
    true_box: np.ndarray
    support_true_boxes: np.ndarray
    query_map: torch.Tensor | None = None
    support_maps: torch.Tensor | None = None
    query_mask: np.ndarray | None = None
    query_box: np.ndarray | None = None
    support_boxes: np.ndarray | None = None
    iou: float | None = None
    support_ious: np.ndarray | None = None
    curve_thresholds: tuple = ()
    curve: np.ndarray | None = None
    cosine: float | None = None
    note: str = ""

    def readout(self) -> str:
        """One line: the threshold, the query's IoU, the support images' IoUs."""
        s = self.state
        head = f"{s.model} · {METHODS[s.method]} · threshold {s.threshold:.2f} — "
        if self.iou is None:
            return head + self.note
        supports = ", ".join(f"{v:.2f}" for v in self.support_ious)
        return head + f"IoU {self.iou:.2f} (query); support IoU {supports}"


def _check_map(m, name: str, size=None) -> None:
    """``ValueError`` unless ``m`` is a real ``(H, W)`` map of finite values (of ``size`` when given): a NaN pixel
    would otherwise make the whole heat map vanish (drawn as a dimmed image with no colours) without a word."""
    try:
        arr = np.asarray(m, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an (H, W) array or tensor of numbers, got {type(m).__name__}.") from None
    if arr.ndim != 2:
        raise ValueError(f"{name} must be one (H, W) map, got shape {arr.shape}.")
    if size is not None and tuple(arr.shape) != tuple(size):
        raise ValueError(f"{name} has shape {arr.shape} but the image is {tuple(size)}; upsample the map to the "
                         "image's size first (sfam_lite.maps.upsample).")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValueError(f"{name} holds {int(bad.sum())} non-finite pixel(s) (NaN or inf) of {arr.size}; a map with "
                         "NaN cannot be normalised or drawn. Check the features and weights it came from "
                         "(or replace them, e.g. torch.nan_to_num, if that is what you mean).")


def threshold_mask(query_map, threshold: float) -> np.ndarray:
    """The pixels the protocol keeps for one ``(H, W)`` map: the largest 8-connected component of the pixels whose
    min-max normalised value is ``>= threshold``; the box of :func:`sfam_lite.localization.boxes_from_maps`
    is this mask's bounding box."""
    threshold = check_threshold(threshold)
    m = query_map.detach().cpu().numpy() if isinstance(query_map, torch.Tensor) else np.asarray(query_map)
    _check_map(m, "query_map")
    return kept_mask(m, threshold)


class Explorer:
    """State → view over one or more :class:`Gallery` (keyed by name), with a cache of maps.

    The maps of a state depend on everything but the threshold; they are computed from the galleries' cached
    features on first use and kept (``cache_size`` states, least recently used dropped). ``explain_calls``
    counts the explanations computed, so a test can check that moving the threshold computes none."""

    def __init__(self, galleries, thresholds=CURVE_THRESHOLDS, cache_size: int = 256, seed: int = 0):
        galleries = list(galleries.values()) if isinstance(galleries, dict) else list(galleries)
        if not galleries or not all(isinstance(g, Gallery) for g in galleries):
            raise TypeError("galleries must be a non-empty list (or dict) of sfam_lite.explorer.Gallery.")
        self.galleries = {g.name: g for g in galleries}
        self.thresholds = tuple(check_threshold(t) for t in thresholds)
        self.cache_size = check_int(cache_size, "cache_size", 1)
        self.seed = seed
        self.explain_calls = 0
        self._cache: OrderedDict = OrderedDict()

    def methods(self, model: str) -> tuple[str, ...]:
        """The method keys offered for ``model``: SFAM and the paper's baselines (not SFAM's ablations, which
        chapter 10 studies), and the references if it has priors."""
        g = self._gallery(model)
        return tuple(m for m, method in REGISTRY.items()
                     if method.group == "method" or (method.group == "reference" and g.priors is not None))

    def _gallery(self, model: str) -> Gallery:
        return self.galleries[check_choice(model, "model", self.galleries)]

    def check(self, state: State) -> State:
        """``state`` if every field is valid for its gallery; else a ``ValueError`` naming the field."""
        if not isinstance(state, State):
            raise TypeError(f"state must be a sfam_lite.explorer.State, got {type(state).__name__}.")
        g = self._gallery(state.model)
        check_choice(state.method, "method", self.methods(state.model))
        check_choice(state.metric, "metric", METRICS)
        check_choice(state.layer, "layer", LAYERS)
        k = check_int(state.k, "k (support images)", 1)
        if k > g.k_max:
            raise ValueError(f"k = {k} support images, but the {g.name} gallery has at most {g.k_max} per pair.")
        sample = check_int(state.sample, "sample", 0)
        if sample >= g.samples:
            raise ValueError(f"sample {sample} does not exist; the {g.name} gallery has {g.samples} pairs "
                             f"(0..{g.samples - 1}).")
        check_threshold(state.threshold)
        return state

    def _setup(self, g: Gallery, layer: str) -> ModelSetup:
        return ModelSetup.of(g.model, layer)

    def maps(self, state: State):
        """``(explanation or None, note)`` for ``state`` without its threshold: cached."""
        self.check(state)
        key = (state.model, state.method, state.metric if state.method == "sfam" else None, state.layer, state.k,
               state.sample)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        g = self._gallery(state.model)
        setup = self._setup(g, state.layer)
        if state.method == "sfam":
            from .explainer import SFAM
            explainer = SFAM(None, metric=state.metric)
        else:
            box_size, sigma = g.priors if g.priors is not None else (None, None)
            explainer = build_explainers(setup, [state.method], box_size, sigma, seed=self.seed)[state.method]
        if explainer is None:
            entry = (None, f"{METHODS[state.method]} is not defined for {g.name}'s {g.model.metric} "
                           "similarity (it decomposes a dot product): the paper's '—'.")
        else:
            q, s = int(g.queries[state.sample]), g.supports[state.sample, :state.k]
            feats = g.features[state.layer]
            device = next(g.model.parameters()).device
            out = explainer.explain_features(feats[q][None].to(device), feats[s][None].to(device), size=g.size)
            self.explain_calls += 1
            maps_q, maps_s = out.query_maps[0].detach().float().cpu(), out.support_maps[0].detach().float().cpu()
            check_finite(torch.cat([maps_q[None], maps_s]), f"the {METHODS[state.method]} maps of sample "
                         f"{state.sample}", hint="the explanation is undefined here; check the features and weights.")
            cosine = None if out.cosine_similarity is None else float(out.cosine_similarity[0])
            curve = np.array([iou(boxes_from_maps(maps_q, t), g.boxes[q].numpy()) for t in self.thresholds])
            entry = ((maps_q, maps_s, cosine, curve), "")
        self._cache[key] = entry
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return entry

    def view(self, state: State) -> View:
        """The :class:`View` of ``state``: cached maps, thresholded now."""
        explained, note = self.maps(state)
        g = self._gallery(state.model)
        q, s = int(g.queries[state.sample]), g.supports[state.sample, :state.k]
        view = View(state, g.images[q], g.images[s], g.boxes[q].numpy(), g.boxes[s].numpy(),
                    curve_thresholds=self.thresholds, note=note)
        if explained is None:
            return view
        maps_q, maps_s, cosine, curve = explained
        view.query_map, view.support_maps, view.cosine, view.curve = maps_q, maps_s, cosine, curve
        masks = kept_mask(torch.cat([maps_q[None], maps_s]), state.threshold)     # the query's, then each support's
        view.query_mask = masks[0]
        view.query_box, view.support_boxes = mask_boxes(masks[0]), mask_boxes(masks[1:])
        view.iou = float(iou(view.query_box, view.true_box))
        view.support_ious = iou(view.support_boxes, view.support_true_boxes)
        return view


# -- pictures -----------------------------------------------------------------------------------------

#: colours of the true (white, as :func:`sfam_lite.plotting.draw_box`) and predicted (magenta) boxes
TRUE_BOX, PRED_BOX = (255, 255, 255), (255, 0, 255)


def _draw_box_pixels(frame: np.ndarray, box, color, scale: float) -> None:
    """Draw the outline of ``box`` (pixel edges, in the unscaled image) one pixel wide on ``frame`` (scaled)."""
    h, w = frame.shape[:2]
    x, y, bw, bh = (float(v) for v in box)
    x0, y0 = int(round(x * scale)), int(round(y * scale))
    x1, y1 = int(round((x + bw) * scale)) - 1, int(round((y + bh) * scale)) - 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w - 1), min(y1, h - 1)
    if x1 < x0 or y1 < y0:
        return
    frame[y0, x0:x1 + 1] = frame[y1, x0:x1 + 1] = color
    frame[y0:y1 + 1, x0] = frame[y0:y1 + 1, x1] = color


def render_panel(image: torch.Tensor, heat=None, mask=None, boxes=(), mean=None, std=None, scale: int = 2,
                 alpha: float = 0.5, dim: float = 0.35, cmap: str = "jet") -> np.ndarray:
    """One ``(H·scale, W·scale, 3)`` uint8 panel: the image, the min-max normalised ``heat`` map over it
    (``alpha``; the colours of :func:`sfam_lite.plotting.overlay`), the pixels outside ``mask`` dimmed to ``dim``
    of their brightness, and ``boxes`` — ``(box, (r, g, b))`` pairs — drawn one pixel wide. Pure numpy: the
    same input gives the same pixels."""
    import matplotlib
    from .plotting import to_image
    rgb = to_image(image, mean, std)
    rgb = np.repeat(rgb[..., None], 3, -1) if rgb.ndim == 2 else rgb
    if heat is not None:
        _check_map(heat.detach().cpu().numpy() if isinstance(heat, torch.Tensor) else heat, "heat", rgb.shape[:2])
        h = minmax_normalize(heat.detach().double().cpu()).numpy() if isinstance(heat, torch.Tensor) else \
            minmax_normalize(np.asarray(heat, dtype=np.float64))
        rgb = (1 - alpha) * rgb + alpha * matplotlib.colormaps[cmap](h)[..., :3]
    if mask is not None:
        rgb = np.where(np.asarray(mask, bool)[..., None], rgb, dim * rgb)
    check_int(scale, "scale", 1)
    frame = np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)
    frame = np.repeat(np.repeat(frame, scale, 0), scale, 1)
    for box, color in boxes:
        _draw_box_pixels(frame, box, color, scale)
    return frame


def _row(panels, gap: int = 2) -> tuple[np.ndarray, list[int]]:
    """Panels side by side with white gaps, and the x offset of each panel."""
    h = panels[0].shape[0]
    sep = np.full((h, gap, 3), 255, np.uint8)
    out, offsets, x = [], [], 0
    for i, p in enumerate(panels):
        if i:
            out.append(sep)
            x += gap
        out.append(p)
        offsets.append(x)
        x += p.shape[1]
    return np.concatenate(out, axis=1), offsets


def quantize(frame: np.ndarray, colors: int, palette=None) -> np.ndarray:
    """``frame`` with at most ``colors`` colours (PIL's median cut, no dithering: the same frame gives the same
    pixels), back as an RGB uint8 array; with ``palette`` (:func:`sfam_lite.slider.shared_palette`), the nearest
    colours of that palette instead of the frame's own."""
    from PIL import Image
    colors = check_int(colors, "colors", 2)
    if colors > 256:
        raise ValueError(f"colors must be at most 256 (one palette), got {colors}.")
    image = Image.fromarray(frame, "RGB")
    image = (image.quantize(palette=palette, dither=Image.Dither.NONE) if palette is not None else
             image.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE))
    return np.asarray(image.convert("RGB"))


#: the widest frame :func:`threshold_frames` makes: the book's text column (757 px), so a slider's frames are not
#: stored larger than they are shown (CUB's 227 px panels, six to a row, would be 1,372 px)
MAX_FRAME_WIDTH = 756


def _shrink(panel: np.ndarray, factor: float) -> np.ndarray:
    """``panel`` resized by ``factor`` < 1 (PIL's box filter: each output pixel the mean of the pixels it covers)."""
    from PIL import Image
    h, w = panel.shape[:2]
    return np.asarray(Image.fromarray(panel).resize((max(1, round(w * factor)), max(1, round(h * factor))),
                                                    Image.Resampling.BOX))


#: height in pixels of the band above a frame's panels that names them (:func:`threshold_frames`)
LABEL_BAND = 16


def _fitted(draw, text: str, width: float, largest: int = 12, smallest: int = 7):
    """``(text, font)``: ``text`` in the largest default font size from ``largest`` down to ``smallest`` that fits
    ``width`` pixels, shortened with "…" if even the smallest does not."""
    from PIL import ImageFont
    for size in range(largest, smallest - 1, -1):
        font = ImageFont.load_default(size=size)
        if draw.textlength(text, font=font) <= width:
            return text, font
    while len(text) > 1 and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…", font


def _label_panels(frame: np.ndarray, columns, undefined) -> np.ndarray:
    """``frame`` with a white band on top naming each panel (``columns``: ``(x, width, label)``), and "not
    defined" written across the panels at the ``undefined`` positions; drawn without anti-aliasing (black and
    white only), each text within its panel, so the frame gains at most those two colours."""
    from PIL import Image, ImageDraw
    image = Image.new("RGB", (frame.shape[1], frame.shape[0] + LABEL_BAND), (255, 255, 255))
    image.paste(Image.fromarray(frame), (0, LABEL_BAND))
    draw = ImageDraw.Draw(image)
    draw.fontmode = "1"
    for i, (x, width, label) in enumerate(columns):
        text, font = _fitted(draw, label, width - 4)
        draw.text((x + width / 2, LABEL_BAND / 2), text, fill=(0, 0, 0), font=font, anchor="mm")
        if i in undefined:
            text, font = _fitted(draw, "not defined", width - 4)
            draw.text((x + width / 2, LABEL_BAND + frame.shape[0] / 2), text, fill=(255, 255, 255), font=font,
                      anchor="mm")
    return np.asarray(image)


def threshold_frames(explorer: Explorer, state: State, methods, thresholds=CURVE_THRESHOLDS, scale: int = 1,
                     colors: int | None = 62, max_width: int | None = MAX_FRAME_WIDTH, labels: bool = True):
    """Frames and read-outs for :func:`sfam_lite.slider.static_slider`: for each threshold one row of panels, the
    query image with its true box, then each method's query map for ``state``'s pair with its kept pixels
    (the rest dimmed), the true box (white) and the predicted box (magenta); the read-out lists each method's IoU.
    Methods not defined for the model show the dimmed image and "—". The model does not run: the maps are the
    explorer's, computed once per method. ``colors``: the pictures are reduced to one palette of that many colours
    shared by every frame (:func:`quantize`, :func:`sfam_lite.slider.shared_palette`: the query panel looks the same
    at every threshold) before the boxes are drawn in their exact colours, so a frame has at most ``colors + 2``
    colours and is stored losslessly with a palette; None keeps every colour. ``max_width``: a row wider than this
    is made of panels shrunk to fit (the boxes drawn at the shrunk size); None keeps the panels' size. ``labels``:
    a band of :data:`LABEL_BAND` px above the panels names them ("query", then each method), and a method not
    defined for the model says so on its panel."""
    methods = [check_choice(m, "method", explorer.methods(state.model)) for m in methods]
    if not methods:
        raise ValueError("methods is empty; give at least one method, e.g. ['sfam'].")
    g = explorer._gallery(state.model)
    frames, readouts, undefined = [], [], set()            # undefined: panels of methods the model lacks
    for t in thresholds:
        views = [explorer.view(replace(state, method=m, threshold=float(t))) for m in methods]
        v0 = views[0]
        panels = [render_panel(v0.query_image, mean=g.mean, std=g.std, scale=scale)]
        boxes, parts = [[(v0.true_box, TRUE_BOX)]], []
        for j, (m, v) in enumerate(zip(methods, views), start=1):
            if v.query_map is None:
                undefined.add(j)
                panels.append(render_panel(v.query_image, mean=g.mean, std=g.std, scale=scale, dim=0.2,
                                           mask=np.zeros(g.size, bool)))
                boxes.append([])
                parts.append(f"{METHODS[m]} —")
                continue
            panels.append(render_panel(v.query_image, v.query_map, v.query_mask, mean=g.mean, std=g.std, scale=scale))
            boxes.append([(v.true_box, TRUE_BOX), (v.query_box, PRED_BOX)])
            parts.append(f"{METHODS[m]} {v.iou:.2f}")
        box_scale = scale
        width = sum(p.shape[1] for p in panels) + 2 * (len(panels) - 1)
        if max_width is not None and width > max_width:
            factor = (max_width - 2 * (len(panels) - 1)) / (width - 2 * (len(panels) - 1))
            panels, box_scale = [_shrink(p, factor) for p in panels], scale * factor
        frame, offsets = _row(panels)
        frames.append((frame, [(x, panel.shape[1], panel_boxes) for x, panel, panel_boxes in zip(offsets, panels, boxes)],
                       box_scale))
        readouts.append(f"threshold {float(t):.2f} — IoU " + " · ".join(parts))
    # one palette for every threshold, so that what does not change (the query panel) keeps its colours
    palette = shared_palette([frame for frame, *_ in frames], colors) if colors is not None else None
    names = ["query", *(METHODS[m] for m in methods)]
    out = []
    for frame, boxes_at, box_scale in frames:
        frame = (quantize(frame, colors, palette) if palette is not None else frame).copy()
        for x, width, panel_boxes in boxes_at:
            for box, color in panel_boxes:
                _draw_box_pixels(frame[:, x:x + width], box, color, box_scale)
        if labels:
            frame = _label_panels(frame, [(x, width, name) for (x, width, _), name in zip(boxes_at, names)],
                                  undefined)
        out.append(frame)
    return out, readouts


def draw_view(view: View, mean=None, std=None, figure=None):
    """A matplotlib ``Figure`` (not pyplot's: nothing is shown by itself) of one view: the query with its map,
    the kept pixels, each support image with its map, and the query's IoU against the threshold with the current
    threshold marked."""
    from matplotlib.figure import Figure
    from .plotting import draw_box, overlay
    k = len(view.support_images)
    fig = figure or Figure(figsize=(2.1 * (k + 3) + 1.2, 2.5), dpi=80)
    fig.clear()
    axes = fig.subplots(1, k + 3, gridspec_kw={"width_ratios": [1] * (k + 2) + [1.6]})
    overlay(axes[0], view.query_image, view.query_map, "query", mean=mean, std=std)
    draw_box(axes[0], view.true_box)
    if view.query_mask is not None:
        axes[1].imshow(view.query_mask, cmap="gray", vmin=0, vmax=1)
        draw_box(axes[1], view.true_box)
        draw_box(axes[1], view.query_box, color="magenta")
        draw_box(axes[0], view.query_box, color="magenta")
        axes[1].set_title(f"kept ≥ {view.state.threshold:.2f}: IoU {view.iou:.2f}", fontsize=9)
    else:
        axes[1].text(0.5, 0.5, "—", ha="center", va="center", fontsize=14)
    axes[1].set_axis_off()
    for j in range(k):
        heat = None if view.support_maps is None else view.support_maps[j]
        overlay(axes[2 + j], view.support_images[j], heat, f"support {j + 1}", mean=mean, std=std)
        draw_box(axes[2 + j], view.support_true_boxes[j])
        if view.support_boxes is not None:
            draw_box(axes[2 + j], view.support_boxes[j], color="magenta")
    ax = axes[-1]
    if view.curve is not None:
        ax.plot(view.curve_thresholds, view.curve, marker=".", lw=1.2)
        ax.axvline(view.state.threshold, color="magenta", lw=1)
        ax.axhline(0.5, color="grey", lw=0.6, ls="--")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="threshold", ylabel="query IoU")
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig


def figure_png(fig) -> bytes:
    """PNG bytes of a matplotlib figure, without the metadata that names the software version."""
    import io
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


# -- the widgets ----------------------------------------------------------------------------------------

class ExplorerWidget:
    """``ipywidgets`` controls over an :class:`Explorer`: model, method, metric, layer, K, sample and threshold;
    every change redraws the figure (:func:`draw_view`) and the read-out from :meth:`Explorer.view`. Needs a
    running kernel (Jupyter, Colab): in a static page nothing calls back. Display it, or its ``box``."""

    def __init__(self, explorer: Explorer, state: State | None = None):
        import ipywidgets as w
        if not isinstance(explorer, Explorer):
            raise TypeError(f"explorer must be a sfam_lite.explorer.Explorer, got {type(explorer).__name__}.")
        self.explorer = explorer
        state = explorer.check(state or State(model=next(iter(explorer.galleries))))
        g = explorer.galleries[state.model]
        self.renders = 0
        self._busy = False
        self.model = w.Dropdown(options=list(explorer.galleries), value=state.model, description="model")
        self.method = w.Dropdown(options=self._method_options(state.model), value=state.method, description="method")
        self.metric = w.ToggleButtons(options=[("Euclidean", "euclidean"), ("cosine", "cosine")], value=state.metric,
                                      description="SFAM CIS", style={"button_width": "90px"})
        self.layer = w.Dropdown(options=list(LAYERS), value=state.layer, description="layer")
        self.k = w.IntSlider(value=state.k, min=1, max=g.k_max, description="K shots")
        self.sample = w.IntSlider(value=state.sample, min=0, max=g.samples - 1, description="sample")
        self.threshold = w.FloatSlider(value=state.threshold, min=0.0, max=1.0, step=0.01, description="threshold",
                                       readout_format=".2f", continuous_update=True)
        self.image = w.Image(format="png")
        self.readout = w.HTML()
        controls = w.VBox([w.HBox([self.model, self.method, self.layer]), w.HBox([self.metric]),
                           w.HBox([self.k, self.sample, self.threshold])])
        self.box = w.VBox([controls, self.readout, self.image])
        for control in (self.model, self.method, self.metric, self.layer, self.k, self.sample, self.threshold):
            control.observe(self._changed, names="value")
        self.update()

    def _method_options(self, model):
        return [(METHODS[m], m) for m in self.explorer.methods(model)]

    @property
    def state(self) -> State:
        return State(self.model.value, self.method.value, self.metric.value, self.layer.value, int(self.k.value),
                     int(self.sample.value), float(self.threshold.value))

    def _changed(self, change):
        if self._busy:
            return
        if change["owner"] is self.model:        # another gallery: its own methods, K and samples
            self._busy = True
            try:
                g = self.explorer.galleries[self.model.value]
                method = self.method.value
                self.method.options = self._method_options(g.name)
                self.method.value = method if method in self.explorer.methods(g.name) else "sfam"
                self.k.max, self.sample.max = g.k_max, g.samples - 1
            finally:
                self._busy = False
        self.update()

    def update(self) -> View:
        """Redraw from the controls' state; returns the view."""
        g = self.explorer.galleries[self.model.value]
        view = self.explorer.view(self.state)
        self.metric.disabled = self.method.value != "sfam"
        fig = draw_view(view, g.mean, g.std)
        self.image.value = figure_png(fig)
        cos = "" if view.cosine is None else f"; cosine of the pooled vectors at {view.state.layer}: {view.cosine:.3f}"
        self.readout.value = f"<span class='sfam-explorer-readout'>{view.readout()}{cos}</span>"
        self.renders += 1
        self.view = view
        return view

    def _repr_mimebundle_(self, **kwargs):
        return self.box._repr_mimebundle_(**kwargs)
