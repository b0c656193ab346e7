"""What the chapters evaluate models on: a test split held in memory with its boxes, features cached once
per image, and the query/reference pairs whose decisions are explained (correct ones only, as in the paper)."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from .transforms import eval_transform


@dataclass
class EvalSet:
    """Test images after the evaluation transform, with labels and boxes in the same pixels."""
    images: torch.Tensor      # (n, 3, S, S) normalised float
    labels: torch.Tensor      # (n,) 0-based class index
    boxes: torch.Tensor       # (n, 4) x, y, w, h in the transformed image


def eval_set(dataset, transform, progress: bool = False) -> EvalSet:
    """Every item of ``dataset`` (a :class:`data_download.CUB200`; images of any size) read through its image
    loader with ``transform`` as the dataset's transform, which moves each image's box with it.

    ``transform`` is the model's evaluation transform (:func:`sfam_lite.zoo.eval_transform_for`), or an int
    ``S``: FRN's test view at crop ``S`` (:func:`sfam_lite.transforms.eval_transform`). ``dataset`` itself is
    not changed (a shallow copy gets the transform)."""
    from tqdm.auto import tqdm
    view = copy.copy(dataset)
    view.transform = eval_transform(transform) if isinstance(transform, int) else transform
    items = [view[k] for k in tqdm(range(len(view)), desc="test images", disable=not progress, leave=False)]
    images, labels, boxes = zip(*items)
    return EvalSet(torch.stack(images), torch.as_tensor(labels), torch.stack(boxes).float())


@torch.no_grad()
def forward_with_features(model, layer, images: torch.Tensor, batch: int = 250):
    """Run ``model`` on ``images`` in batches, in eval mode (:func:`sfam_lite.explainer.eval_mode`: a model in train
    mode would update its BatchNorm statistics and make each image's features depend on its batch; every module's
    mode is given back afterwards); return its outputs and ``layer``'s feature maps, both concatenated."""
    from .explainer import FeatureCapture, eval_mode
    capture = FeatureCapture(layer)
    outputs, maps = [], []
    try:
        with eval_mode(model):
            for i in range(0, len(images), batch):
                output, fmap = capture.run(model, images[i:i + batch])
                outputs.append(output)
                maps.append(fmap)
    finally:
        capture.remove()
    return torch.cat(outputs), torch.cat(maps)


def release_freed_memory() -> None:
    """Give memory that was freed back to the operating system (glibc's ``malloc_trim``; nothing elsewhere), so that
    large tensors allocated and freed in a loop do not stay in the allocator's arenas (benchmarks/README.md)."""
    try:
        import ctypes
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError, TypeError):      # not glibc (macOS, Windows): nothing to do
        pass


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


@torch.no_grad()
def few_shot_decisions(model, features: torch.Tensor, labels, episodes: int = 1000, way: int = 5, shot: int = 1,
                       query: int = 16, seed: int = 0, chunk: int = 50) -> Decisions:
    """FRN-style episodes on position features ``(n, r, d)``, scored with ``model.head``.

    Episodes come from :class:`sfam_lite.sampling.EpisodeSampler` (the sampler training uses) and are scored
    ``chunk`` at a time as one batched solve. Rows are in episode order (``episodes · way · query``); the supports
    are each class's first support image."""
    from .sampling import EpisodeSampler
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

