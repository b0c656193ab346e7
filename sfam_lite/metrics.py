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
