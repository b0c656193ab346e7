"""Evaluation metrics shared by the chapters."""
from __future__ import annotations

import torch


def recall_at_k(embeddings: torch.Tensor, labels: torch.Tensor, ks=(1, 2, 4, 8)) -> dict[int, float]:
    """Recall@K for retrieval with every item as query and the rest as gallery (the query itself excluded):
    the share of queries with at least one same-label item among their K most cosine-similar others."""
    x = torch.nn.functional.normalize(embeddings, dim=-1)
    sim = x @ x.T
    sim.fill_diagonal_(-float("inf"))
    top = sim.topk(max(ks), dim=1).indices
    hit = labels[top] == labels[:, None]
    return {k: hit[:, :k].any(1).sum().item() / len(labels) for k in ks}


def mean_and_interval(values: torch.Tensor) -> tuple[float, float]:
    """Mean and the half-width of its 95 % normal confidence interval (1.96 · std / √n)."""
    values = values.double()
    return values.mean().item(), (1.96 * values.std(unbiased=True) / len(values) ** 0.5).item()


@torch.no_grad()
def few_shot_accuracy(model, features: torch.Tensor, labels, way: int = 5, shot: int = 1, query: int = 16,
                      episodes: int = 1000, seed: int = 0, chunk: int = 50) -> tuple[torch.Tensor, "EpisodeSampler"]:
    """Per-episode accuracy of an FRN-style ``model.head`` on precomputed position features ``(n, r, d)``.

    Episodes come from :class:`sfam_lite.sampling.EpisodeSampler` (the same sampler training uses) and
    are scored ``chunk`` at a time as one batched solve. Returns ``(accuracies (episodes,), sampler)``.
    """
    from .sampling import EpisodeSampler
    sampler = EpisodeSampler(list(map(int, labels)), way, shot, query, episodes, seed)
    index = torch.tensor([sampler.episode(i) for i in range(episodes)])          # (E, way·(shot+query))
    target = torch.arange(way).repeat_interleave(query)
    accs = []
    for start in range(0, episodes, chunk):
        f = features[index[start:start + chunk]]                                  # (e, way·(shot+query), r, d)
        f = f.reshape(f.shape[0], way, shot + query, *f.shape[2:])
        logits = model.head(f[:, :, :shot], f[:, :, shot:].flatten(1, 2))
        accs.append((logits.argmax(-1) == target).double().mean(-1))
    return torch.cat(accs), sampler
