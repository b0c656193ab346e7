"""GPW: MS loss against a per-anchor loop, Recall@K against brute force, the embedding's frozen BatchNorm."""
import math

import pytest
import torch

from sfam_lite.metrics import recall_at_k
from sfam_lite.models.gpw import GPWEmbedding, multi_similarity_loss

F64 = torch.float64


def ms_loss_loop(x, labels, alpha=2.0, beta=40.0, lam=0.5, margin=0.1):
    total = 0.0
    n = len(labels)
    for i in range(n):
        sims = [float(x[i] @ x[j]) for j in range(n)]
        pos = [sims[j] for j in range(n) if j != i and labels[j] == labels[i]]
        neg = [sims[j] for j in range(n) if labels[j] != labels[i]]
        if not pos or not neg:
            continue
        kept_neg = [s for s in neg if s + margin > min(pos)]
        kept_pos = [s for s in pos if s - margin < max(neg)]
        if not kept_neg or not kept_pos:
            continue
        total += math.log(1 + sum(math.exp(-alpha * (s - lam)) for s in kept_pos)) / alpha
        total += math.log(1 + sum(math.exp(beta * (s - lam)) for s in kept_neg)) / beta
    return total / n


@pytest.mark.parametrize("seed", range(6))
def test_ms_loss_matches_loop(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(20, 8, generator=g, dtype=F64), dim=1)
    labels = torch.randint(0, 4, (20,), generator=g)
    got = multi_similarity_loss(x, labels)
    assert math.isclose(got.item(), ms_loss_loop(x, labels.tolist()), rel_tol=1e-10, abs_tol=1e-12)


def test_ms_loss_is_zero_when_no_pair_is_hard():
    # two tight, opposite clusters: every positive is far more similar than any negative
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [-1.0, 0.0]], dtype=F64)
    assert multi_similarity_loss(x, torch.tensor([0, 0, 1, 1])).item() == 0.0
    assert ms_loss_loop(x, [0, 0, 1, 1]) == 0.0


def recall_loop(x, labels, k):
    hits = 0
    for i in range(len(labels)):
        sims = sorted(((float(x[i] @ x[j]) / float(x[i].norm() * x[j].norm()), j) for j in range(len(labels)) if j != i),
                      reverse=True)
        hits += any(labels[j] == labels[i] for _, j in sims[:k])
    return hits / len(labels)


def test_recall_at_k_matches_brute_force():
    g = torch.Generator().manual_seed(3)
    x, labels = torch.randn(40, 6, generator=g, dtype=F64), torch.randint(0, 8, (40,), generator=g)
    got = recall_at_k(x, labels, ks=(1, 2, 4))
    for k in (1, 2, 4):
        assert math.isclose(got[k], recall_loop(x, labels.tolist(), k), abs_tol=1e-9)


def test_recall_excludes_the_query_itself():
    x = torch.eye(4)  # every item is orthogonal to the others; only itself would match
    assert recall_at_k(x, torch.arange(4), ks=(1,))[1] == 0.0


def test_embedding_is_unit_norm_and_batchnorm_stays_frozen():
    torch.manual_seed(0)
    model = GPWEmbedding("resnet18", dim=32, last_stride=1, freeze_bn=True).train()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert len(norms) == 20   # ResNet-18: the stem's, two per basic block (8) and one per downsample (3)
    before = [(m.running_mean.clone(), m.running_var.clone()) for m in norms]
    out = model(torch.rand(4, 3, 80, 80))
    assert torch.allclose(out.norm(dim=1), torch.ones(4), atol=1e-6)
    for m, (mean, var) in zip(norms, before):   # every BatchNorm: statistics unchanged, affine parameters frozen
        assert torch.equal(m.running_mean, mean) and torch.equal(m.running_var, var)
        assert not m.weight.requires_grad and not m.bias.requires_grad
    from sfam_lite.evaluation import forward_with_features
    fmap = forward_with_features(model.eval(), model.target_layer, torch.rand(1, 3, 80, 80))[1]
    assert fmap.shape == (1, 512, 5, 5)   # last stride 1: total stride 16
    standard = GPWEmbedding("resnet18", dim=32).eval()
    assert forward_with_features(standard, standard.target_layer, torch.rand(1, 3, 80, 80))[1].shape[-2:] == (3, 3)


def test_batchnorm_statistics_frozen_affine_trained_as_the_ms_loss_reference():
    """freeze_bn="stats" (the default, and gpw-cub's): after a training step every BatchNorm's running statistics
    are unchanged (eval mode in train()), while its weight and bias received gradients and moved."""
    torch.manual_seed(0)
    model = GPWEmbedding("resnet18", dim=16, last_stride=1).train()
    assert model.freeze_bn == "stats"
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    stats = [(m.running_mean.clone(), m.running_var.clone(), m.weight.detach().clone()) for m in norms]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.rand(4, 3, 48, 48)).sum().backward()
    opt.step()
    for m, (mean, var, weight) in zip(norms, stats):
        assert torch.equal(m.running_mean, mean) and torch.equal(m.running_var, var)
        assert m.weight.requires_grad and not torch.equal(m.weight.detach(), weight)
    with pytest.raises(ValueError, match="'stats'"):
        GPWEmbedding("resnet10", freeze_bn="yes")


def test_trainable_batchnorm_for_training_from_scratch():
    model = GPWEmbedding("resnet18", dim=16, last_stride=1, freeze_bn=False).train()
    before = model.backbone.bn1.running_mean.clone()
    model(torch.rand(4, 3, 48, 48))
    assert model.backbone.bn1.weight.requires_grad and not torch.equal(model.backbone.bn1.running_mean, before)


# --- map-in-box metrics (used to check that the trained models look at the objects) -------------

def test_pointing_game_and_mass_against_loops():
    from sfam_lite.metrics import box_share, mass_in_box, pointing_game
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(5, 12, 10, generator=g, dtype=F64)
    boxes = torch.tensor([[0, 0, 5, 6], [2.3, 1.7, 4.1, 8.0], [9, 11, 1, 1], [0, 0, 10, 12], [4, 4, 0.2, 0.2]], dtype=F64)
    pg, mass, share = pointing_game(maps, boxes), mass_in_box(maps, boxes), box_share(boxes, (12, 10))
    for b in range(5):
        x, y, w, h = boxes[b].tolist()
        m = maps[b]
        lo, hi = m.min().item(), m.max().item()
        inside = lambda i, j: x <= j + 0.5 < x + w and y <= i + 0.5 < y + h
        i_max, j_max = divmod(int(m.argmax()), 10)
        assert bool(pg[b]) == inside(i_max, j_max)
        total = sum((m[i, j].item() - lo) / (hi - lo) for i in range(12) for j in range(10))
        inner = sum((m[i, j].item() - lo) / (hi - lo) for i in range(12) for j in range(10) if inside(i, j))
        assert math.isclose(mass[b].item(), inner / total, rel_tol=1e-12, abs_tol=1e-15)
        assert math.isclose(share[b].item(), sum(inside(i, j) for i in range(12) for j in range(10)) / 120)


def test_retrieval_decisions_agree_with_recall_at_1():
    from sfam_lite.evaluation import retrieval_decisions
    g = torch.Generator().manual_seed(5)
    x, labels = torch.randn(30, 4, generator=g, dtype=F64), torch.randint(0, 5, (30,), generator=g)
    made = retrieval_decisions(x, labels)
    q, top, ok = made.query, made.chosen_support, made.correct
    assert not torch.any(top == q)
    assert math.isclose(ok.double().mean().item(), recall_at_k(x, labels, ks=(1,))[1])
    assert all(top[i] == max((j for j in range(30) if j != i),
                             key=lambda j: float(x[i] @ x[j] / (x[i].norm() * x[j].norm()))) for i in range(30))


def test_resnet10_is_torchvisions_resnet_with_one_block_per_stage():
    import torchvision
    model = GPWEmbedding("resnet10", dim=16, last_stride=1, freeze_bn=False)
    assert isinstance(model.backbone, torchvision.models.ResNet)
    assert [len(getattr(model.backbone, f"layer{i}")) for i in range(1, 5)] == [1, 1, 1, 1]
    assert model.channels == 512
    from sfam_lite.evaluation import forward_with_features
    fmap = forward_with_features(model.eval(), model.target_layer, torch.rand(1, 3, 80, 80))[1]
    assert fmap.shape == (1, 512, 5, 5)


def test_unknown_arch_and_missing_weights_are_refused():
    import pytest
    with pytest.raises(ValueError, match="unknown arch 'vgg16'"):
        GPWEmbedding("vgg16")
    with pytest.raises(ValueError, match="resnet10 has no pretrained weights"):
        GPWEmbedding("resnet10", weights="IMAGENET1K_V1")
