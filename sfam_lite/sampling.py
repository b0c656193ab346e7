"""Seeded samplers shared by training and evaluation: few-shot episodes and class-balanced batches.

Both yield index lists into a dataset whose labels are given, so they work with
``torch.utils.data.DataLoader(dataset, batch_sampler=...)``. Batch ``i`` depends only on
``(seed, i)``, so any single episode can be reproduced without replaying the ones before it.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


def _by_class(labels: Sequence[int]) -> dict[int, np.ndarray]:
    labels = np.asarray(labels)
    return {int(c): np.flatnonzero(labels == c) for c in np.unique(labels)}


class EpisodeSampler(Sampler):
    """N-way K-shot episodes with Q queries per class.

    Each item is a flat list of ``way · (shot + query)`` indices ordered class by class: for class j,
    ``shot`` support indices then ``query`` query indices; the classes are in a random order and
    class j of the episode is label ``j`` for the model. Use :meth:`split` to reshape a batch.
    """

    def __init__(self, labels: Sequence[int], way: int = 5, shot: int = 1, query: int = 16,
                 episodes: int = 1000, seed: int = 0):
        self.classes = _by_class(labels)
        small = [c for c, idx in self.classes.items() if len(idx) < shot + query]
        if len(self.classes) < way:
            raise ValueError(f"{way}-way episodes need {way} classes; the labels have {len(self.classes)}.")
        if small:
            raise ValueError(f"classes {small[:5]} have fewer than shot + query = {shot + query} images.")
        self.way, self.shot, self.query, self.episodes, self.seed = way, shot, query, episodes, seed

    def __len__(self) -> int:
        return self.episodes

    def episode(self, i: int) -> list[int]:
        rng = np.random.default_rng([self.seed, i])
        keys = np.array(sorted(self.classes))
        chosen = rng.choice(keys, size=self.way, replace=False)
        return [int(j) for c in chosen
                for j in rng.choice(self.classes[int(c)], size=self.shot + self.query, replace=False)]

    def __iter__(self) -> Iterator[list[int]]:
        return (self.episode(i) for i in range(self.episodes))

    def split(self, batch):
        """Split a batch tensor laid out as this sampler yields it into ``(support (way, shot, ...),
        query (way·query, ...), query_labels (way·query,))``."""
        import torch
        per_class = batch.reshape(self.way, self.shot + self.query, *batch.shape[1:])
        labels = torch.arange(self.way).repeat_interleave(self.query)
        return per_class[:, :self.shot], per_class[:, self.shot:].flatten(0, 1), labels


class BalancedBatchSampler(Sampler):
    """Batches of ``classes_per_batch`` classes × ``instances`` images each (MS loss uses 16 × 5)."""

    def __init__(self, labels: Sequence[int], classes_per_batch: int = 16, instances: int = 5,
                 batches: int = 100, seed: int = 0):
        self.classes = _by_class(labels)
        if len(self.classes) < classes_per_batch:
            raise ValueError(f"batches of {classes_per_batch} classes need that many classes; "
                             f"the labels have {len(self.classes)}.")
        self.p, self.m, self.batches, self.seed = classes_per_batch, instances, batches, seed

    def __len__(self) -> int:
        return self.batches

    def batch(self, i: int) -> list[int]:
        rng = np.random.default_rng([self.seed, i])
        keys = np.array(sorted(self.classes))
        out = []
        for c in rng.choice(keys, size=self.p, replace=False):
            idx = self.classes[int(c)]
            out += [int(j) for j in rng.choice(idx, size=self.m, replace=len(idx) < self.m)]
        return out

    def __iter__(self) -> Iterator[list[int]]:
        return (self.batch(i) for i in range(self.batches))
