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
    """Give memory that was freed back to the operating system (glibc's ``malloc_trim``; nothing elsewhere). Long
    evaluations allocate and free large tensors in a loop; without this the freed chunks stay in the allocator's
    arenas, and the peak resident memory of the same 10,000-episode run varied from 1.9 to 5.2 GiB between runs."""
    try:
        import ctypes
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError, TypeError):      # not glibc (macOS, Windows): nothing to do
        pass


@torch.no_grad()
def few_shot_pairs(model, features: torch.Tensor, labels, episodes: int = 1000, way: int = 5, shot: int = 1,
                   query: int = 16, seed: int = 0, chunk: int = 50):
    """Run FRN-style episodes on position features ``(n, r, d)`` with ``model.head``.

    Episodes come from :class:`sfam_lite.sampling.EpisodeSampler` (the sampler training uses) and are
    scored ``chunk`` at a time as one batched solve. Returns ``(query_index, support_index, correct)``,
    each ``(episodes · way · query,)`` in episode order, where ``support_index`` is the first support
    image of the query's true class.
    """
    from .sampling import EpisodeSampler
    sampler = EpisodeSampler(list(map(int, labels)), way, shot, query, episodes, seed)
    index = torch.tensor([sampler.episode(i) for i in range(episodes)]).reshape(episodes, way, shot + query)
    target = torch.arange(way).repeat_interleave(query)
    support, queries = index[:, :, :shot], index[:, :, shot:].flatten(1)          # (E, way, shot), (E, way·query)
    correct = []
    for start in range(0, episodes, chunk):
        logits = model.head(features[support[start:start + chunk]], features[queries[start:start + chunk]])
        correct.append(logits.argmax(-1).cpu() == target)          # the features may be on a GPU
        if (start // chunk) % 20 == 19:
            release_freed_memory()
    return queries.flatten(), support[:, :, 0][:, target].flatten(), torch.cat(correct).flatten()


def few_shot_accuracy(model, features: torch.Tensor, labels, episodes: int = 1000, way: int = 5, shot: int = 1,
                      query: int = 16, seed: int = 0) -> torch.Tensor:
    """Accuracy of each of ``episodes`` episodes (see :func:`few_shot_pairs`): ``(episodes,)``."""
    correct = few_shot_pairs(model, features, labels, episodes, way, shot, query, seed)[2]
    return correct.reshape(episodes, way * query).double().mean(1)


def retrieval_pairs(embeddings: torch.Tensor, labels: torch.Tensor):
    """Each item's most cosine-similar other item: ``(query_index, retrieved_index, correct)``."""
    from .metrics import nearest_others
    top = nearest_others(embeddings, 1)[:, 0]
    return torch.arange(len(labels)), top, labels[top] == labels
