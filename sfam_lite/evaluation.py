"""What the chapters evaluate models on: a test split held in memory with its boxes, features cached once
per image, and the query/reference pairs whose decisions are explained (correct ones only, as in the paper)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .train import eval_resize, eval_transform


@dataclass
class EvalSet:
    """Test images after the evaluation transform, with labels and boxes in the same pixels."""
    images: torch.Tensor      # (n, 3, S, S) normalised float
    labels: torch.Tensor      # (n,) 0-based class index
    boxes: torch.Tensor       # (n, 4) x, y, w, h in the transformed image
    raw: torch.Tensor         # (n, 3, H, W) uint8, before the transform


def eval_set(dataset, image_size: int) -> EvalSet:
    """Load ``dataset`` (a :class:`data_download.CUB200`-like dataset of same-size images) and apply FRN's test
    transform (:func:`sfam_lite.train.eval_transform`) to the images and the same resize and crop to the boxes."""
    from data_download import load_tensors, transform_boxes
    raw, labels, boxes = load_tensors(dataset)
    h, w = raw.shape[-2:]
    return EvalSet(eval_transform(image_size)(raw), labels,
                   transform_boxes(boxes, (w, h), eval_resize(image_size), image_size).float(), raw)


@torch.no_grad()
def forward_with_features(model, layer, images: torch.Tensor, batch: int = 250):
    """Run ``model`` on ``images`` in batches; return its outputs and ``layer``'s feature maps, both concatenated."""
    from .explainer import FeatureCapture
    capture = FeatureCapture(layer)
    outputs, maps = [], []
    try:
        for i in range(0, len(images), batch):
            outputs.append(model(images[i:i + batch]))
            maps.append(capture.output)
    finally:
        capture.remove()
    return torch.cat(outputs), torch.cat(maps)


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
        correct.append(logits.argmax(-1) == target)
    return queries.flatten(), support[:, :, 0][:, target].flatten(), torch.cat(correct).flatten()


def few_shot_accuracy(model, features: torch.Tensor, labels, episodes: int = 1000, way: int = 5, shot: int = 1,
                      query: int = 16, seed: int = 0) -> torch.Tensor:
    """Accuracy of each of ``episodes`` episodes (see :func:`few_shot_pairs`): ``(episodes,)``."""
    correct = few_shot_pairs(model, features, labels, episodes, way, shot, query, seed)[2]
    return correct.reshape(episodes, way * query).double().mean(1)


def retrieval_pairs(embeddings: torch.Tensor, labels: torch.Tensor):
    """Each item's most cosine-similar other item: ``(query_index, retrieved_index, correct)``."""
    x = torch.nn.functional.normalize(embeddings, dim=-1)
    sim = x @ x.T
    sim.fill_diagonal_(-float("inf"))
    top = sim.argmax(1)
    return torch.arange(len(labels)), top, labels[top] == labels
