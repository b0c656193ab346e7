"""Episode and class-balanced samplers: layout, determinism, and clear errors."""
import pytest
import torch

from sfam_lite.sampling import BalancedBatchSampler, EpisodeSampler

LABELS = [c for c in range(10) for _ in range(20)]  # 10 classes × 20 images


def test_episode_layout_and_disjoint_support_query():
    sampler = EpisodeSampler(LABELS, way=5, shot=2, query=3, episodes=50, seed=1)
    for ep in sampler:
        assert len(ep) == 5 * 5 and len(set(ep)) == 25
        classes = [LABELS[i] for i in ep]
        blocks = [classes[j * 5:(j + 1) * 5] for j in range(5)]
        assert all(len(set(b)) == 1 for b in blocks) and len({b[0] for b in blocks}) == 5
    x = torch.tensor(ep)
    support, query, labels = sampler.split(x)
    assert support.shape == (5, 2) and query.shape == (15,)
    assert all(LABELS[int(q)] == LABELS[int(support[l, 0])] for q, l in zip(query, labels))


def test_episodes_are_deterministic_and_individually_reproducible():
    a = list(EpisodeSampler(LABELS, episodes=20, query=4, seed=7))
    b = list(EpisodeSampler(LABELS, episodes=20, query=4, seed=7))
    c = list(EpisodeSampler(LABELS, episodes=20, query=4, seed=8))
    assert a == b and a != c
    assert EpisodeSampler(LABELS, episodes=20, query=4, seed=7).episode(13) == a[13]


def test_balanced_batches():
    sampler = BalancedBatchSampler(LABELS, classes_per_batch=4, instances=5, batches=30, seed=0)
    for batch in sampler:
        classes = [LABELS[i] for i in batch]
        assert len(batch) == 20 and len(set(classes)) == 4
        assert all(classes.count(c) == 5 for c in set(classes))
    assert list(sampler) == list(BalancedBatchSampler(LABELS, 4, 5, 30, seed=0))


def test_sampler_errors():
    with pytest.raises(ValueError, match="need 12 classes"):
        EpisodeSampler(LABELS, way=12)
    with pytest.raises(ValueError, match="fewer than shot"):
        EpisodeSampler(LABELS, shot=5, query=16)
    with pytest.raises(ValueError, match="need that many classes"):
        BalancedBatchSampler(LABELS, classes_per_batch=16)
