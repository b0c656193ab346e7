"""Images the synthetic benchmark's generator can redraw (chapter 10).

A photograph cannot be redrawn with one bird left out or one part changed; the synthetic benchmark can, because
every test image is drawn from its own random streams (:mod:`data_download.synthetic`). :class:`Redrawer` draws,
for a model's test split:

* **two-bird scenes** (:meth:`Redrawer.scenes`): one background with a bird of class A in one half and of class B
  in the other (:func:`data_download.synthetic.render_two`), in :func:`sfam_lite.similarity.swap_composites`'
  layout, with the same scene less its left bird and less its right bird;
* **part swaps** (:meth:`Redrawer.part_swaps`): a test image redrawn with the value its sibling class has in the
  one part the two species differ in, same pose, background and noise, and the mask of the pixels that change.

Every image takes the dataset's way: JPEG at the benchmark's quality (``save_jpeg``), decoded as the dataset
decodes it, then the model's evaluation transform, so it is a normalised tensor like the test set's images (a
redrawn test image *is* the test set's image, bit for bit).
"""
from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ._checks import check_int


@dataclass
class Scenes:
    """Two-bird scenes in :func:`sfam_lite.similarity.swap_composites`' layout, model inputs ``(2n, C, H, W)``:
    row ``2p + order`` holds pair p's classes with A on the left (order 0) or on the right (order 1).
    ``left_removed`` / ``right_removed``: the same scenes without the bird of the left / right half (the
    counterfactuals :func:`sfam_lite.similarity.half_change_drops` takes); ``left_boxes``, ``right_boxes``
    ``(2n, 4)`` the birds' boxes in the model's pixels; ``supports`` ``(2n, C, H, W)`` the design's real support
    images (row ``2p + k``: support A, then B)."""
    composites: torch.Tensor
    left_removed: torch.Tensor
    right_removed: torch.Tensor
    left_boxes: torch.Tensor
    right_boxes: torch.Tensor
    supports: torch.Tensor


@dataclass
class SiblingDesign:
    """n test images whose class has a sibling class in the split (same genus, the same part varied, another
    value), each with ``own_support`` (another image of its class) and ``sibling_support`` (an image of the
    sibling class): ``(n,)`` indices into the test split. ``part``: the part the two classes differ in."""
    query: torch.Tensor
    own_support: torch.Tensor
    sibling_support: torch.Tensor
    part: list

    def __len__(self) -> int:
        return len(self.query)


@dataclass
class PartSwaps:
    """The queries of a :class:`SiblingDesign` redrawn (``queries``) and redrawn with the sibling's value of the
    part (``swapped``), model inputs ``(n, C, H, W)``; ``part_masks`` ``(n, H, W)`` in [0, 1], the pixels that
    differ between the two drawings taken through the transform's geometry; ``boxes`` ``(n, 4)`` the box of
    either drawing's bird (their union), in the model's pixels."""
    queries: torch.Tensor
    swapped: torch.Tensor
    part_masks: torch.Tensor
    boxes: torch.Tensor


class Redrawer:
    """The generator behind the ``split`` of the synthetic benchmark in ``root``, with a model's evaluation
    ``transform`` (a :class:`data_download.ResizeCropFlip`, :func:`sfam_lite.zoo.eval_transform_for`)."""

    def __init__(self, root, split: str, transform):
        from data_download import SyntheticCUB200
        from data_download.synthetic import class_specs, read_params
        dataset = SyntheticCUB200(root, split=split)
        self.params = read_params(root)
        self.specs = class_specs(self.params.num_classes, self.params.seed)
        self.image_ids = dataset.image_ids
        self.labels = dataset.labels
        self.transform = transform

    @classmethod
    def for_model(cls, model, kind: str, data_root=None) -> "Redrawer":
        """The generator behind ``model``'s test split (:data:`sfam_lite.loading.MODEL_SPLITS`), read from ``data_root``
        (None: the book's default folder); a model not trained on the synthetic benchmark is a ``ValueError``."""
        from . import zoo
        from .loading import MODEL_SPLITS as SPLITS
        name = model.meta["name"]
        if not name.endswith("synthetic"):
            raise ValueError(f"model {name!r} was not trained on the synthetic benchmark, whose generator redraws "
                             "the images; use frn-synthetic or gpw-synthetic.")
        root = data_root if data_root is not None else zoo.default_data_root(name)
        return cls(root, SPLITS[kind][0], zoo.eval_transform_for(model))

    def to_input(self, images) -> torch.Tensor:
        """uint8 ``(size, size, 3)`` renders → JPEG (the benchmark's quality) → decoded → the evaluation
        transform: ``(n, C, H, W)``, as the test set's images are made."""
        from data_download.synthetic import save_jpeg
        out = []
        for image in images:
            buf = io.BytesIO()
            save_jpeg(image, buf, self.params.quality)
            with Image.open(io.BytesIO(buf.getvalue())) as im:
                out.append(self.transform(im.convert("RGB")))
        return torch.stack(out)

    def to_input_boxes(self, boxes) -> torch.Tensor:
        """Boxes ``(n, 4)`` of the renders in the model's pixels (moved as the images are)."""
        size = self.params.size
        return self.transform.transform_box(torch.as_tensor(np.asarray(boxes), dtype=torch.float64), (size, size))

    def to_input_masks(self, masks) -> torch.Tensor:
        """Masks ``(n, size, size)`` of the renders through the transform's geometry (resize, crop; no
        normalisation): float ``(n, H, W)`` in [0, 1]."""
        geometry = dataclasses.replace(self.transform, then=None, to_tensor=False)
        masks = torch.as_tensor(np.asarray(masks), dtype=torch.float32)[:, None]
        return geometry(masks)[:, 0].clamp(0, 1)

    def scenes(self, design, images: torch.Tensor) -> Scenes:
        """The two-bird scenes of a :class:`sfam_lite.similarity.SwapDesign` (its pairs' classes, not its
        images): pair p is drawn from :func:`data_download.synthetic.scene_rngs` ``(seed, p)``, A left then A
        right from the same streams (same background; each half's pose and place kept, the species exchanged).
        ``images``: the test set's images, whose ``design.first_support`` / ``second_support`` are the supports."""
        from data_download.synthetic import render_two, scene_rngs
        drawn = []
        for p in range(len(design)):
            a, b = (self.specs[int(self.labels[i])] for i in (design.first[p], design.second[p]))
            drawn += [render_two(left, right, self.params.size, *scene_rngs(self.params.seed, p))
                      for left, right in ((a, b), (b, a))]
        supports = torch.stack([images[design.first_support], images[design.second_support]], 1).flatten(0, 1)
        return Scenes(self.to_input([t.scene for t in drawn]), self.to_input([t.only_b for t in drawn]),
                      self.to_input([t.only_a for t in drawn]), self.to_input_boxes([t.box_a for t in drawn]),
                      self.to_input_boxes([t.box_b for t in drawn]), supports)

    def sibling(self, label: int) -> int | None:
        """The 0-based label of the class one part apart from ``label`` (same genus and varied part), or None."""
        spec = self.specs[label]
        for other in self.specs:
            if (other["genus"], other["varies"]) == (spec["genus"], spec["varies"]) and other is not spec:
                return other["class_id"] - 1
        return None

    def sibling_design(self, n: int, seed: int = 0) -> SiblingDesign:
        """``n`` distinct test images drawn uniformly with ``seed`` among those whose class has a sibling class
        in the split and at least one other image, each with a support of its class and one of the sibling's."""
        n = check_int(n, "n", 1)
        labels = self.labels.numpy()
        present = set(labels.tolist())
        by_class = {c: np.flatnonzero(labels == c) for c in present}
        sibling = {c: self.sibling(c) for c in present}
        usable = [i for i, c in enumerate(labels) if sibling[c] in present and len(by_class[c]) >= 2]
        if len(usable) < n:
            raise ValueError(f"only {len(usable)} test images have a sibling class in the split; asked for {n}.")
        rng = np.random.default_rng(seed)
        query = rng.choice(usable, n, replace=False)
        own = [rng.choice(by_class[labels[i]][by_class[labels[i]] != i]) for i in query]
        other = [rng.choice(by_class[sibling[labels[i]]]) for i in query]
        parts = [self.specs[labels[i]]["varies"] for i in query]
        return SiblingDesign(*(torch.as_tensor(np.array(x), dtype=torch.long) for x in (query, own, other)), parts)

    def part_swaps(self, design: SiblingDesign) -> PartSwaps:
        """Each query of ``design`` redrawn from its image's streams (:func:`data_download.synthetic.image_rngs`),
        and redrawn with the sibling's value of the part in the query's own outline (``render(..., frame=)``), so
        the two differ exactly where the part does."""
        from data_download.synthetic import image_rngs, render
        own, swapped, masks, boxes = [], [], [], []
        size, seed = self.params.size, self.params.seed
        for i, s, part in zip(design.query.tolist(), design.sibling_support.tolist(), design.part):
            spec, sib = self.specs[int(self.labels[i])], self.specs[int(self.labels[s])]
            image_id = int(self.image_ids[i])
            image, _, box = render(spec, size, *image_rngs(seed, image_id))
            other, _, other_box = render(dict(spec, **{part: sib[part]}), size, *image_rngs(seed, image_id),
                                         frame=spec)
            own.append(image)
            swapped.append(other)
            masks.append((image != other).any(-1))
            lo = np.minimum(box[:2], other_box[:2])
            boxes.append(np.concatenate([lo, np.maximum(box[:2] + box[2:], other_box[:2] + other_box[2:]) - lo]))
        return PartSwaps(self.to_input(own), self.to_input(swapped), self.to_input_masks(np.stack(masks)),
                         self.to_input_boxes(boxes))
