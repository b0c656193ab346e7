"""What the chapters evaluate models on: a test split held in memory with its boxes, features cached once
per image, and the query/reference pairs whose decisions are explained (correct ones only, as in the paper)."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from . import memory
from .memory import images_per_batch, release_freed_memory
from .transforms import eval_transform


class NormalisedImages:
    """A test set's images held as the uint8 pixels its view produces, normalised when read: a quarter of the
    float32 bytes (CUB's 5,924 retrieval test images at 227 px: 0.9 GB instead of 3.7 GB) and the same numbers,
    because the evaluation view resizes and crops uint8 pixels and only its last step makes floats.

    Reads like the float tensor it stands for: ``images[k]``, ``images[index]``, ``images[a:b, 0]`` return
    normalised float tensors; ``len``, ``shape``, ``dtype``, ``device``; ``images.to(device)`` moves the pixels
    (a GPU then normalises each batch it reads); :meth:`tensor` makes the whole float tensor."""

    def __init__(self, pixels: torch.Tensor, normalise):
        if pixels.dtype != torch.uint8 or pixels.dim() != 4:
            raise TypeError(f"pixels must be a (n, 3, S, S) uint8 tensor, got {pixels.dtype} {tuple(pixels.shape)}.")
        self.pixels, self.normalise = pixels, normalise

    def __getitem__(self, index):
        first, rest = (index[0], index[1:]) if isinstance(index, tuple) else (index, ())
        x = self.normalise(self.pixels[first])
        if not rest:
            return x
        return x[rest] if x.dim() < self.pixels.dim() else x[(slice(None), *rest)]

    def __len__(self) -> int:
        return len(self.pixels)

    @property
    def shape(self) -> torch.Size:
        return self.pixels.shape

    @property
    def device(self) -> torch.device:
        return self.pixels.device

    dtype = torch.float32

    def to(self, device) -> "NormalisedImages":
        return NormalisedImages(self.pixels.to(device), self.normalise)

    def tensor(self) -> torch.Tensor:
        """All images as one normalised float tensor (4 bytes per value: for small sets)."""
        return self[:]

    def __repr__(self) -> str:
        return f"NormalisedImages({len(self)} images of {tuple(self.shape[1:])}, uint8 pixels on {self.device})"


@dataclass
class EvalSet:
    """Test images after the evaluation transform, with labels and boxes in the same pixels."""
    images: torch.Tensor | NormalisedImages      # (n, 3, S, S) normalised float when read
    labels: torch.Tensor      # (n,) 0-based class index
    boxes: torch.Tensor       # (n, 4) x, y, w, h in the transformed image


def _pixels_then_normalise(transform):
    """``(view to uint8 pixels, normalisation)`` when ``transform`` is a box-aware view whose last step is the
    normalisation (:func:`sfam_lite.transforms.eval_transform`), else ``(transform, None)``."""
    from dataclasses import replace

    from data_download import ResizeCropFlip
    if isinstance(transform, ResizeCropFlip) and transform.to_tensor and transform.then is not None:
        return replace(transform, then=None), transform.then
    return transform, None


def eval_set(dataset, transform, progress: bool = False) -> EvalSet:
    """Every item of ``dataset`` (a :class:`data_download.CUB200`; images of any size) read through its image
    loader with ``transform`` as the dataset's transform, which moves each image's box with it.

    ``transform`` is the model's evaluation transform (:func:`sfam_lite.zoo.eval_transform_for`), or an int
    ``S``: FRN's test view at crop ``S`` (:func:`sfam_lite.transforms.eval_transform`). ``dataset`` itself is
    not changed (a shallow copy gets the transform). The images are written into one tensor allocated once
    (no list of images stacked at the end); for the book's views they are kept as uint8 pixels
    (:class:`NormalisedImages`), for any other transform as it returns them."""
    from tqdm.auto import tqdm
    view = copy.copy(dataset)
    full = eval_transform(transform) if isinstance(transform, int) else transform
    view.transform, normalise = _pixels_then_normalise(full)
    n = len(view)
    if n == 0:
        raise ValueError(f"the dataset {dataset!r} has no images: nothing to evaluate on.")
    if normalise is not None and view[0][0].dtype != torch.uint8:     # not uint8 pixels: keep what it gives
        view.transform, normalise = full, None
    images = labels = boxes = None
    for k in tqdm(range(n), desc="test images", disable=not progress, leave=False):
        image, label, box = view[k]
        if images is None:
            images = torch.empty((n, *image.shape), dtype=image.dtype)
            labels, boxes = torch.empty(n, dtype=torch.long), torch.empty((n, 4))
        images[k], labels[k], boxes[k] = image, int(label), torch.as_tensor(box, dtype=torch.float32)
    return EvalSet(images if normalise is None else NormalisedImages(images, normalise), labels, boxes)


@torch.no_grad()
def forward_with_features(model, layer, images: torch.Tensor, batch: int | None = None):
    """Run ``model`` on ``images`` in batches, in eval mode (:func:`sfam_lite.explainer.eval_mode`: a model in train
    mode would update its BatchNorm statistics and make each image's features depend on its batch; every module's
    mode is given back afterwards); return its outputs and ``layer``'s feature maps, one row per image.

    ``images`` is a tensor or :class:`NormalisedImages` (read one batch at a time, on its own device). ``batch``
    images run at a time: by default 250 up to 96 px and fewer above (:func:`sfam_lite.memory.images_per_batch`:
    a ResNet-50's activations for 250 images at 227 px take several GB)."""
    from .explainer import FeatureCapture, eval_mode
    batch = batch or images_per_batch(tuple(images.shape[-2:]))
    capture = FeatureCapture(layer)
    n = len(images)
    outputs = maps = None
    try:
        with eval_mode(model):
            for i in range(0, n, batch):
                output, fmap = capture.run(model, images[i:i + batch])
                if outputs is None:     # written into tensors allocated once: no list concatenated at the end
                    outputs = output.new_empty((n, *output.shape[1:]))
                    maps = fmap.new_empty((n, *fmap.shape[1:]))
                outputs[i:i + batch], maps[i:i + batch] = output, fmap
                del output, fmap
    finally:
        capture.remove()
    if outputs is None:
        raise ValueError("images is empty: there is nothing to run the model on.")
    release_freed_memory()          # the batches' activations, freed: give their memory back
    return outputs, maps


@dataclass
class Decisions:
    """The decisions a model made on a test set, one row each, and what explaining them means.

    ``query`` ``(n,)`` the query image's index; ``chosen_support`` the image the model matched it with (FRN: the
    episode's support image of the class it chose; GPW: the image it retrieved); ``true_support`` the image of the
    query's own class it is explained against when correct (FRN: the episode's support image of that class; GPW:
    its most similar other image of that class, -1 if there is none); ``correct`` whether the two agree;
    ``episode`` each row's episode and ``candidates`` ``(n, way)`` the support image of each class it chose among
    (few-shot; None for retrieval). The paper explains the correct decisions (:meth:`explained`)."""
    query: torch.Tensor
    true_support: torch.Tensor
    chosen_support: torch.Tensor
    correct: torch.Tensor
    episode: torch.Tensor | None = None
    candidates: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.query)

    def explained(self):
        """``(query, support, episode or None)`` of the correct decisions: the pairs the paper explains."""
        ok = self.correct
        return self.query[ok], self.true_support[ok], None if self.episode is None else self.episode[ok]

    def wrong(self):
        """``(query, true_support, chosen_support)`` of the wrong decisions."""
        bad = ~self.correct
        return self.query[bad], self.true_support[bad], self.chosen_support[bad]


def decisions(model, outputs: torch.Tensor, labels, episodes: int = 1000, way: int = 5, shot: int = 1,
              query: int = 16, seed: int = 0) -> Decisions:
    """What ``model`` decides on a test set whose forward outputs are ``outputs`` (one row per image, e.g. from
    :func:`forward_with_features`) and whose classes are ``labels``: the one definition of "what is explained".

    By ``model.task``: ``"few-shot"`` (FRN) runs ``episodes`` seeded ``way``-way ``shot``-shot episodes with
    ``query`` queries per class (:func:`few_shot_decisions`); ``"retrieval"`` (GPW) matches each image with its
    most cosine-similar other image (:func:`retrieval_decisions`; the episode arguments are unused)."""
    task = getattr(model, "task", None)
    if task == "few-shot":
        return few_shot_decisions(model, model.read_positions(outputs), labels, episodes, way, shot, query, seed)
    if task == "retrieval":
        return retrieval_decisions(outputs, torch.as_tensor(labels))
    raise TypeError(f"{type(model).__name__} does not say which decision it makes: model.task is {task!r}, "
                    "expected 'few-shot' or 'retrieval'.")


def episodes_per_solve(d: int, r: int, way: int = 5, shot: int = 1, query: int = 16, element_size: int = 4,
                       budget: int | None = None) -> int:
    """How many episodes :func:`few_shot_decisions` solves at once: each holds about three ``(way, way·query·r, d)``
    reconstructions and four ``(way, d, d)`` Gram-sized matrices
    (:func:`sfam_lite.models.frn.reconstruction_distance`), within ``budget`` bytes (default
    :data:`sfam_lite.memory.EPISODE_SOLVE_BYTES`)."""
    budget = memory.EPISODE_SOLVE_BYTES if budget is None else budget
    per_episode = element_size * way * (3 * way * query * r * d + 4 * d * d + shot * r * d)
    return max(1, min(50, budget // per_episode))


@torch.no_grad()
def few_shot_decisions(model, features: torch.Tensor, labels, episodes: int = 1000, way: int = 5, shot: int = 1,
                       query: int = 16, seed: int = 0, chunk: int | None = None) -> Decisions:
    """FRN-style episodes on position features ``(n, r, d)``, scored with ``model.head``.

    Episodes come from :class:`sfam_lite.sampling.EpisodeSampler` (the sampler training uses) and are scored
    ``chunk`` at a time as one batched solve; by default as many as fit in
    :data:`sfam_lite.memory.EPISODE_SOLVE_BYTES` (each
    episode's logits are the same whatever the chunk). Rows are in episode order (``episodes · way · query``);
    the supports are each class's first support image."""
    from .sampling import EpisodeSampler
    if chunk is None:
        chunk = episodes_per_solve(features.shape[-1], features.shape[-2], way, shot, query, features.element_size())
    sampler = EpisodeSampler(list(map(int, labels)), way, shot, query, episodes, seed)
    index = torch.tensor([sampler.episode(i) for i in range(episodes)]).reshape(episodes, way, shot + query)
    target = torch.arange(way).repeat_interleave(query)
    support, queries = index[:, :, :shot], index[:, :, shot:].flatten(1)          # (E, way, shot), (E, way·query)
    choice = []
    for start in range(0, episodes, chunk):
        logits = model.head(features[support[start:start + chunk]], features[queries[start:start + chunk]])
        choice.append(logits.argmax(-1).cpu())          # the features may be on a GPU
        if (start // chunk) % 20 == 19:
            release_freed_memory()
    choice = torch.cat(choice)                                                     # (E, way·query)
    first = support[:, :, 0]
    episode = torch.arange(episodes).repeat_interleave(way * query)
    return Decisions(queries.flatten(), first[:, target].flatten(), first.gather(1, choice).flatten(),
                     (choice == target).flatten(), episode, first[episode])


def retrieval_decisions(embeddings: torch.Tensor, labels: torch.Tensor) -> Decisions:
    """Each image against its most cosine-similar other image (``chosen_support``); ``true_support`` is its most
    similar other image of its own class (-1 where its class has no other image)."""
    from .metrics import nearest_others
    embeddings, labels = embeddings.cpu(), labels.cpu()
    top = nearest_others(embeddings, 1)[:, 0]
    correct = labels[top] == labels
    true = top.clone()
    wrong = torch.nonzero(~correct)[:, 0]
    if len(wrong):                            # the nearest image of the own class, for the wrong decisions only
        x = torch.nn.functional.normalize(embeddings.double(), dim=-1)
        sim = x[wrong] @ x.T
        other_class = labels[None, :] != labels[wrong, None]
        sim[other_class] = -float("inf")
        sim[torch.arange(len(wrong)), wrong] = -float("inf")
        true[wrong] = torch.where(torch.isfinite(sim).any(1), sim.argmax(1), torch.full_like(wrong, -1))
    return Decisions(torch.arange(len(labels)), true, top, correct)


def few_shot_accuracy(model, features: torch.Tensor, labels, episodes: int = 1000, way: int = 5, shot: int = 1,
                      query: int = 16, seed: int = 0) -> torch.Tensor:
    """Accuracy of each of ``episodes`` episodes (see :func:`few_shot_decisions`): ``(episodes,)``."""
    correct = few_shot_decisions(model, features, labels, episodes, way, shot, query, seed).correct
    return correct.reshape(episodes, way * query).double().mean(1)

