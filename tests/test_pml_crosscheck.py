"""Cross-check of ``multi_similarity_loss`` and ``recall_at_k`` against pytorch-metric-learning (pml).

What is compared, and how the parameters are matched:

* ``sfam_lite.models.gpw.multi_similarity_loss(x, labels, alpha, beta, lam, margin)`` against
  ``MultiSimilarityLoss(alpha, beta, base=lam)(x, labels, MultiSimilarityMiner(epsilon=margin)(x, labels))``,
  both with cosine similarity (pml's default ``CosineSimilarity``; ours takes L2-normalised embeddings).
  Our defaults are those of the MS loss's reference code (alpha 2, beta 40, lambda 0.5, margin 0.1); pml's
  loss defaults to beta=50, so the pml objects are built with beta=40 explicitly. Both mine with strict
  inequalities (negative kept if ``S + margin > min positive``, positive kept if ``S - margin < max
  negative``), both drop an anchor left without a kept pair, and both divide the sum over anchors by the
  batch size B (pml's ``MeanReducer`` averages the B per-anchor losses, zeros included). Values agree to
  1e-12 relative in float64 and 1e-5 in float32, gradients to 1e-10; exact boundary ties are tested.
* ``sfam_lite.metrics.recall_at_k`` at K=1 against ``AccuracyCalculator``'s ``precision_at_1`` (kNN by
  ``CustomKNN(CosineSimilarity())``, the query excluded by index). For K > 1 pml has no equivalent metric
  (its ``precision_at_k``/``r_precision``/MAP count the share of hits, not "any hit"), so Recall@K is
  compared with a plain-Python loop and with "any hit" over pml's own neighbour lists.

Differences found (each demonstrated exactly below, not absorbed by a tolerance):

1. Recall@1 with singleton classes: pml drops "lone" queries (whose label has no other item) from the
   average; ours keeps every item as a query, a lone one always a miss. Exactly
   ``ours = precision_at_1 * (non-lone queries) / B``; identical when no class has a single item.
2. pml's ``GenericPairLoss`` returns 0 when the mined tuple holds at most one positive *and* at most one
   negative pair; ours still returns that anchor's loss / B (equal to pml's loss function without the guard).
   A pml quirk, not a difference in the definition.
3. Ours takes the dot product of the embeddings as given (documented: inputs must be L2-normalised);
   pml's cosine normalises. ``ours(normalize(x)) == pml(x)`` for any ``x``, and ``ours(x)`` equals pml with
   ``DotProductSimilarity(normalize_embeddings=False)``.
"""
import math

import pytest
import torch
import torch.nn.functional as F

pml = pytest.importorskip("pytorch_metric_learning")
from pytorch_metric_learning.distances import CosineSimilarity, DotProductSimilarity  # noqa: E402
from pytorch_metric_learning.losses import MultiSimilarityLoss  # noqa: E402
from pytorch_metric_learning.miners import MultiSimilarityMiner  # noqa: E402
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator  # noqa: E402
from pytorch_metric_learning.utils.inference import CustomKNN  # noqa: E402

from sfam_lite.metrics import recall_at_k  # noqa: E402
from sfam_lite.models.gpw import multi_similarity_loss  # noqa: E402

F64 = torch.float64
# The MS loss reference code's values, which our defaults must equal (pml's own default beta is 50).
REFERENCE = dict(alpha=2.0, beta=40.0, lam=0.5, margin=0.1)


def pml_ms(x, labels, alpha, beta, lam, margin, distance=None):
    kw = {} if distance is None else {"distance": distance}
    miner = MultiSimilarityMiner(epsilon=margin, **kw)
    loss = MultiSimilarityLoss(alpha=alpha, beta=beta, base=lam, **kw)
    return loss(x, labels, miner(x, labels))


def batch(seed, n, classes, dim, spread=None, dtype=F64):
    """Seeded unit embeddings; with ``spread`` the classes are clustered (fewer mined pairs)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(classes, (n,), generator=g)
    x = torch.randn(n, dim, generator=g, dtype=F64)
    if spread is not None:
        centres = torch.randn(classes, dim, generator=g, dtype=F64)
        x = centres[labels] + spread * x
    return F.normalize(x, dim=-1).to(dtype), labels


CASES = [  # seed, batch size, classes, dim, spread
    (0, 8, 2, 4, None), (1, 16, 4, 8, None), (2, 32, 8, 16, None), (3, 60, 10, 32, None),
    (4, 24, 6, 4, 0.6), (5, 40, 5, 16, 0.5), (6, 12, 12, 8, None), (7, 30, 3, 2, None), (8, 64, 20, 64, 0.8),
]


def mined_anchors(x, labels, margin):
    """Per anchor: has it a kept positive, has it a kept negative (plain loops; for checking the cases)."""
    n, out = len(labels), []
    for i in range(n):
        s = [float(x[i] @ x[j]) for j in range(n)]
        pos = [s[j] for j in range(n) if j != i and labels[j] == labels[i]]
        neg = [s[j] for j in range(n) if labels[j] != labels[i]]
        kp = bool(pos and neg and any(v - margin < max(neg) for v in pos))
        kn = bool(pos and neg and any(v + margin > min(pos) for v in neg))
        out.append((kp, kn))
    return out


# --------------------------------------------------------------------------------------------- MS loss

@pytest.mark.parametrize("case", CASES)
def test_ms_loss_defaults_equal_pml(case):
    x, labels = batch(*case)
    ours = multi_similarity_loss(x, labels)  # our defaults
    theirs = pml_ms(x, labels, **REFERENCE)
    assert ours.item() > 0  # every case mines some pairs
    assert torch.allclose(ours, theirs, rtol=1e-12, atol=0), (ours.item(), theirs.item())


@pytest.mark.parametrize("params", [dict(alpha=3.0, beta=30.0, lam=0.3, margin=0.2),
                                    dict(alpha=1.0, beta=60.0, lam=0.7, margin=0.05),
                                    dict(alpha=2.0, beta=50.0, lam=0.5, margin=0.0)])
@pytest.mark.parametrize("case", CASES[:6])
def test_ms_loss_parameters_equal_pml(case, params):
    x, labels = batch(*case)
    ours = multi_similarity_loss(x, labels, **params)
    theirs = pml_ms(x, labels, **params)
    assert torch.allclose(ours, theirs, rtol=1e-12, atol=0), (ours.item(), theirs.item())


def test_cases_exercise_mining():
    """The random cases include anchors that mining empties and anchors it keeps, and singleton classes."""
    dropped = kept = singletons = 0
    for case in CASES:
        x, labels = batch(*case)
        for kp, kn in mined_anchors(x, labels, REFERENCE["margin"]):
            assert kp == kn  # with positives and negatives present, one kept side implies the other
            dropped += not kp
            kept += kp
        singletons += int((torch.bincount(labels) == 1).sum())
    assert dropped > 0 and kept > 0 and singletons > 0


@pytest.mark.parametrize("case", CASES[:5])
def test_ms_loss_float32(case):
    x, labels = batch(*case, dtype=torch.float32)
    ours, theirs = multi_similarity_loss(x, labels), pml_ms(x, labels, **REFERENCE)
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=0), (ours.item(), theirs.item())


@pytest.mark.parametrize("case", CASES[:6])
def test_ms_loss_gradients_equal_pml(case):
    """Gradients with respect to unnormalised inputs: ours through an explicit normalisation, pml's cosine."""
    x, labels = batch(*case)
    raw = (x * torch.linspace(0.5, 2.0, len(x), dtype=F64)[:, None]).requires_grad_()
    g_ours, = torch.autograd.grad(multi_similarity_loss(F.normalize(raw, dim=-1), labels), raw)
    g_pml, = torch.autograd.grad(pml_ms(raw, labels, **REFERENCE), raw)
    assert torch.allclose(g_ours, g_pml, rtol=1e-10, atol=1e-14)


def test_ms_loss_mining_boundary_is_strict_in_both():
    """Similarities exactly on both mining boundaries (all values exact in binary): neither keeps those pairs.

    Unit vectors with entries 0 or ±1/2 have dot products in {-1, -1/2, 0, 1/2, 1}, exactly; margin 1/2.
    Anchor a: positives b, f at 1/2, negatives c, d at 0 (``0 + 1/2 > 1/2`` false: dropped), g at 1/2 (kept).
    Anchor b: positives a at 1/2 (``1/2 - 1/2 < max negative 0`` false: dropped), f at 0; negative c at -1/2
    (``-1/2 + 1/2 > 0`` false: dropped), d and g at 0 (kept). A non-strict rule would keep the dropped pairs."""
    h = 0.5
    a, b, f = [h, h, h, h, 0], [h, h, h, -h, 0], [h, h, -h, h, 0]
    c, d, g = [h, -h, -h, h, 0], [0, 0, 0, 0, 1], [h, -h, h, h, 0]
    x = torch.tensor([a, b, f, c, d, g], dtype=F64)
    labels = torch.tensor([0, 0, 0, 1, 2, 3])
    A, B, Fi, C, D, G = range(6)
    kept_pos = {A: [B, Fi], B: [Fi], Fi: [A, B]}
    kept_neg = {A: [G], B: [D, G], Fi: [C, D, G]}
    a1, p, a2, n = MultiSimilarityMiner(epsilon=0.5)(x, labels)
    assert sorted(zip(a1.tolist(), p.tolist())) == sorted((i, j) for i in kept_pos for j in kept_pos[i])
    assert sorted(zip(a2.tolist(), n.tolist())) == sorted((i, j) for i in kept_neg for j in kept_neg[i])

    params = dict(alpha=2.0, beta=2.0, lam=0.5, margin=0.5)  # a small beta, so that every negative pair counts
    sim = x @ x.T
    expected = sum(math.log1p(sum(math.exp(-2.0 * (sim[i, j].item() - 0.5)) for j in kept_pos[i])) / 2.0
                   + math.log1p(sum(math.exp(2.0 * (sim[i, j].item() - 0.5)) for j in kept_neg[i])) / 2.0
                   for i in kept_pos) / 6
    ours, theirs = multi_similarity_loss(x, labels, **params), pml_ms(x, labels, **params)
    assert math.isclose(ours.item(), expected, rel_tol=1e-12)
    assert torch.allclose(ours, theirs, rtol=1e-12, atol=0)


@pytest.mark.parametrize("labels", [[0, 0, 0, 0, 0], [0, 1, 2, 3, 4], [0, 0, 1, 2, 3]])
def test_ms_loss_degenerate_batches(labels):
    """One class (no negatives), all singletons (no positives), a single pair among singletons."""
    x, _ = batch(11, 5, 5, 4)
    labels = torch.tensor(labels)
    ours, theirs = multi_similarity_loss(x, labels), pml_ms(x, labels, **REFERENCE)
    assert torch.allclose(ours, theirs, rtol=1e-12, atol=0)


def test_ms_loss_pml_zero_guard_difference():
    """Difference 2: a batch whose miner keeps exactly one positive and one negative pair.

    pml's GenericPairLoss returns 0 for it; ours returns anchor 0's loss / B, which is what pml's own loss
    function gives without that guard."""
    x = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.99, -0.14]], dtype=F64), dim=-1)
    labels = torch.tensor([0, 0, 1])
    a1, p, a2, n = MultiSimilarityMiner(epsilon=0.1)(x, labels)
    assert (a1.tolist(), p.tolist(), a2.tolist(), n.tolist()) == ([0], [1], [0], [2])
    assert pml_ms(x, labels, **REFERENCE).item() == 0.0

    s01, s02 = float(x[0] @ x[1]), float(x[0] @ x[2])
    anchor0 = math.log1p(math.exp(-2.0 * (s01 - 0.5))) / 2.0 + math.log1p(math.exp(40.0 * (s02 - 0.5))) / 40.0
    ours = multi_similarity_loss(x, labels).item()
    assert math.isclose(ours, anchor0 / 3, rel_tol=1e-12)

    loss = MultiSimilarityLoss(alpha=2.0, beta=40.0, base=0.5)
    unguarded = loss.mat_based_loss(loss.distance(x, x), (a1, p, a2, n))["loss"]["losses"]
    assert math.isclose(ours, unguarded.mean().item(), rel_tol=1e-12)


def test_ms_loss_pml_zero_guard_in_a_random_batch():
    """Difference 2 arises from ordinary clustered batches too (seed 4, spread 0.3, margin 0.2)."""
    x, labels = batch(4, 24, 6, 4, 0.3)
    params = dict(REFERENCE, margin=0.2)
    assert [len(t) for t in MultiSimilarityMiner(epsilon=0.2)(x, labels)] == [1, 1, 1, 1]
    assert pml_ms(x, labels, **params).item() == 0.0
    assert multi_similarity_loss(x, labels, **params).item() > 0


def test_ms_loss_unnormalised_inputs_difference():
    """Difference 3: ours uses the embeddings as given; pml's cosine normalises them."""
    x, labels = batch(1, 16, 4, 8)
    raw = x * torch.linspace(0.5, 2.0, len(x), dtype=F64)[:, None]
    assert torch.allclose(multi_similarity_loss(F.normalize(raw, dim=-1), labels),
                          pml_ms(raw, labels, **REFERENCE), rtol=1e-12, atol=0)
    dot = pml_ms(raw, labels, **REFERENCE, distance=DotProductSimilarity(normalize_embeddings=False))
    assert torch.allclose(multi_similarity_loss(raw, labels), dot, rtol=1e-12, atol=0)
    assert not torch.allclose(multi_similarity_loss(raw, labels), pml_ms(raw, labels, **REFERENCE), rtol=1e-3)


# ------------------------------------------------------------------------------------------- Recall@K

def pml_precision_at_1(x, labels):
    calc = AccuracyCalculator(include=("precision_at_1",), k=1, device=torch.device("cpu"),
                              knn_func=CustomKNN(CosineSimilarity()))
    return calc.get_accuracy(x, labels)["precision_at_1"]


def recall_loop(x, labels, k):
    """Plain Python: a query hits at K if one of its K most cosine-similar other items has its label."""
    xs = F.normalize(x.double(), dim=-1).tolist()
    ys = labels.tolist()
    hits = 0
    for i, q in enumerate(xs):
        sims = sorted(((sum(a * b for a, b in zip(q, r)), j) for j, r in enumerate(xs) if j != i), reverse=True)
        hits += any(ys[j] == ys[i] for _, j in sims[:k])
    return hits / len(ys)


def non_lone_share(labels):
    counts = torch.bincount(labels)
    return (counts[labels] > 1).double().mean().item()


KS = (1, 2, 4, 8)


@pytest.mark.parametrize("case", CASES)
def test_recall_at_1_equals_pml_precision_at_1(case):
    x, labels = batch(*case)
    ours = recall_at_k(x, labels, ks=(1,))[1]
    theirs = pml_precision_at_1(x, labels)
    if non_lone_share(labels) == 1.0:
        assert math.isclose(ours, theirs, rel_tol=1e-12)
    # Difference 1, exactly: pml averages over the non-lone queries, ours over all B
    assert math.isclose(ours, theirs * non_lone_share(labels), rel_tol=1e-12, abs_tol=1e-15)


def test_recall_at_1_lone_queries_difference():
    """Difference 1 on a batch built to show it: 3 of 10 items are singletons (always misses for us)."""
    x, _ = batch(21, 10, 3, 8)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 1, 2, 3, 4])
    ours, theirs = recall_at_k(x, labels, ks=(1,))[1], pml_precision_at_1(x, labels)
    assert math.isclose(ours, theirs * 7 / 10, rel_tol=1e-12)
    assert theirs > 0 and ours < theirs
    # all singletons: ours is 0, pml has no query to average over
    assert recall_at_k(x, torch.arange(10), ks=(1,))[1] == 0.0
    assert math.isnan(pml_precision_at_1(x, torch.arange(10)))


@pytest.mark.parametrize("case", CASES)
def test_recall_at_k_equals_loop_and_pml_neighbours(case):
    x, labels = batch(*case)
    ks = tuple(k for k in KS if k < len(labels))
    ours = recall_at_k(x, labels, ks=ks)
    _, idx = CustomKNN(CosineSimilarity())(x, max(ks), x, True)  # pml's kNN, the query removed by index
    for k in ks:
        assert math.isclose(ours[k], recall_loop(x, labels, k), rel_tol=1e-12), k
        pml_any = (labels[idx[:, :k]] == labels[:, None]).any(1).double().mean().item()
        assert math.isclose(ours[k], pml_any, rel_tol=1e-12), k


def test_recall_exact_ties_self_excluded_by_index():
    """Exact duplicates: a duplicate ties with the query itself at similarity 1 and must count as a
    neighbour (the query is excluded by index, not by value). Same-label duplicates are hits, a
    different-label duplicate is the nearest other item, hence a miss at K=1."""
    x, _ = batch(31, 6, 2, 8)
    x = torch.cat([x, x[:3]])  # items 6, 7, 8 duplicate 0, 1, 2
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 0, 1, 9])  # 0/6 and 1/7 share labels; 2/8 do not
    ours = recall_at_k(x, labels, ks=(1, 2))
    assert ours[1] == 4 / 9
    assert math.isclose(ours[1], pml_precision_at_1(x, labels) * non_lone_share(labels), rel_tol=1e-12)
    for k in (1, 2):
        assert math.isclose(ours[k], recall_loop(x, labels, k), rel_tol=1e-12)
