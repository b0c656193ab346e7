"""What the chapters evaluate models on: a test split held in memory with its boxes, features cached once
per image, and the query/reference pairs whose decisions are explained (correct ones only, as in the paper)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .transforms import eval_transform


@dataclass
class EvalSet:
    """Test images after the evaluation transform, with labels and boxes in the same pixels."""
    images: torch.Tensor      # (n, 3, S, S) normalised float
    labels: torch.Tensor      # (n,) 0-based class index
    boxes: torch.Tensor       # (n, 4) x, y, w, h in the transformed image


def eval_set(dataset, image_size: int, progress: bool = False) -> EvalSet:
    """Load ``dataset`` (a :class:`data_download.CUB200`-like dataset; images of any size) through FRN's test
    transform (:func:`sfam_lite.transforms.eval_transform`), which moves each image's box with it."""
    from PIL import Image
    from torchvision.transforms.functional import pil_to_tensor
    from tqdm.auto import tqdm
    transform = eval_transform(image_size)
    images, boxes = [], []
    for k in tqdm(range(len(dataset)), desc="test images", disable=not progress, leave=False):
        with Image.open(dataset.image_path(k)) as im:
            image = pil_to_tensor(im.convert("RGB"))
        images.append(transform(image))
        boxes.append(transform.transform_box(dataset.boxes[k], (image.shape[-1], image.shape[-2])))
    return EvalSet(torch.stack(images), dataset.labels.clone(), torch.stack(boxes).float())


@torch.no_grad()
def forward_with_features(model, layer, images: torch.Tensor, batch: int = 250):
    """Run ``model`` on ``images`` in batches; return its outputs and ``layer``'s feature maps, both concatenated."""
    from .explainer import FeatureCapture
    capture = FeatureCapture(layer)
    outputs, maps = [], []
    try:
        for i in range(0, len(images), batch):
            output, fmap = capture.run(model, images[i:i + batch])
            outputs.append(output)
            maps.append(fmap)
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
    from .metrics import nearest_others
    top = nearest_others(embeddings, 1)[:, 0]
    return torch.arange(len(labels)), top, labels[top] == labels
