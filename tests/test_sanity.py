"""sfam_lite.sanity: model-parameter randomisation (Adebayo et al. 2018; the paper's §4.4), map similarity, and
deletion/insertion curves (Petsiuk et al. 2018), each checked against a plain independent computation."""
from __future__ import annotations

import copy
import math
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from sfam_lite.models import FRN, GPWEmbedding
from sfam_lite.sanity import (FIGURE5_STEPS, PairSimilarity, blurred, cosine_similarity_of, deletion_insertion,
                              frn_conv_layers, frn_similarity, layer_seed, map_similarity, randomized_copies,
                              torchvision_stages)


def tiny_frn() -> FRN:
    torch.manual_seed(0)
    return FRN(width=0.0625).double().eval()


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def under(key: str, prefixes) -> bool:
    return any(p == "" or key == p or key.startswith(p + ".") for p in prefixes)


# -- randomisation ---------------------------------------------------------------------------------------

def cascade(frn):
    return list(reversed(frn_conv_layers(frn).items()))        # conv12 first: the output side down


def test_frn_conv_layers_are_twelve_distinct_convs_in_forward_order():
    frn = tiny_frn()
    layers = frn_conv_layers(frn)
    assert list(layers) == [f"conv{i}" for i in range(1, 13)]
    assert len({id(m) for m in layers.values()}) == 12
    assert all(isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) for m in layers.values())
    seen = []
    handles = [m.register_forward_hook(lambda mod, i, o, name=name: seen.append(name)) for name, m in layers.items()]
    try:
        with torch.no_grad():
            frn(torch.rand(1, 3, 32, 32, dtype=torch.float64))
    finally:
        for h in handles:
            h.remove()
    assert seen == list(layers)
    assert frn_conv_layers(frn.feature_extractor) == layers
    assert set(FIGURE5_STEPS) <= set(layers)


@pytest.mark.parametrize("wrap", [True, False])
def test_torchvision_stages_are_the_backbones_stages(wrap):
    model = GPWEmbedding("resnet10", dim=8, freeze_bn=False) if wrap else torchvision.models.resnet18()
    backbone = model.backbone if wrap else model
    stages = torchvision_stages(model)
    assert list(stages) == ["layer4", "layer3", "layer2", "layer1", "conv1"]
    assert all(stages[n] is getattr(backbone, n) for n in stages)
    with pytest.raises(TypeError, match="torchvision ResNet"):
        torchvision_stages(nn.Linear(2, 2))


def test_randomisation_is_reproducible_for_a_seed_and_differs_between_seeds():
    frn = tiny_frn()
    for mode in ("cascading", "independent"):
        one = list(randomized_copies(frn, cascade(frn), mode=mode, seed=3))
        two = list(randomized_copies(frn, cascade(frn), mode=mode, seed=3))
        other = list(randomized_copies(frn, cascade(frn), mode=mode, seed=4))
        assert [n for n, _ in one] == [n for n, _ in two] == [f"conv{i}" for i in range(12, 0, -1)]
        for (name, a), (_, b), (_, c) in zip(one, two, other):
            assert_same_state(a.state_dict(), b.state_dict())
            conv = frn_conv_layers(a)[name].weight
            assert not torch.equal(conv, frn_conv_layers(c)[name].weight)
            assert not torch.equal(conv, frn_conv_layers(frn)[name].weight)


def test_randomisation_leaves_the_original_and_the_global_rng_untouched():
    frn = tiny_frn()
    before, rng = snapshot(frn), torch.random.get_rng_state()
    for mode in ("cascading", "independent"):
        for _, replica in randomized_copies(frn, cascade(frn), mode=mode, seed=0):
            assert replica is not frn
            assert all(p is not q for p, q in zip(replica.parameters(), frn.parameters()))
    assert_same_state(before, frn.state_dict())
    assert torch.equal(rng, torch.random.get_rng_state())


@pytest.mark.parametrize("mode", ["cascading", "independent"])
def test_exactly_the_listed_layers_are_reinitialised(mode):
    frn = tiny_frn()
    names = {m: n for n, m in frn.named_modules()}
    order = [names[m] for _, m in cascade(frn)]                     # dotted names, conv12 first
    original = snapshot(frn)
    for k, (label, replica) in enumerate(randomized_copies(frn, cascade(frn), mode=mode, seed=1)):
        assert label == f"conv{12 - k}"
        changed = order[:k + 1] if mode == "cascading" else [order[k]]
        state = replica.state_dict()
        for key, value in state.items():
            if under(key, changed):
                assert not torch.equal(value, original[key]), key
            else:
                assert torch.equal(value, original[key]), key


def test_independent_layers_get_the_same_values_as_in_the_cascade():
    frn = tiny_frn()
    cascading = list(randomized_copies(frn, cascade(frn), seed=2))
    independent = list(randomized_copies(frn, cascade(frn), mode="independent", seed=2))
    last = cascading[-1][1]                                           # every conv re-initialised
    for (name, one), (_, cas) in zip(independent, cascading):
        assert torch.equal(frn_conv_layers(one)[name].weight, frn_conv_layers(last)[name].weight)
        assert torch.equal(frn_conv_layers(cas)[name].weight, frn_conv_layers(last)[name].weight)
    assert layer_seed(2, 0) != layer_seed(2, 1) != layer_seed(3, 0)


def test_gpw_stages_reset_with_their_batchnorm_and_nothing_else():
    torch.manual_seed(0)
    model = GPWEmbedding("resnet10", dim=8, freeze_bn=False).eval()
    with torch.no_grad():                                   # trained-looking BatchNorm, so that a reset shows
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_()
    original = snapshot(model)
    stages = torchvision_stages(model)
    for k, (label, replica) in enumerate(randomized_copies(model, stages, seed=0)):
        changed = ["backbone." + n for n in list(stages)[:k + 1]]
        for key, value in replica.state_dict().items():
            if key.endswith("num_batches_tracked"):
                continue
            assert torch.equal(value, original[key]) != under(key, changed), key


def test_names_and_modules_and_pairs_are_the_same_layers():
    frn = tiny_frn()
    convs = frn_conv_layers(frn)
    by_name = dict(randomized_copies(frn, ["feature_extractor.layer4.0.conv3", "feature_extractor.layer4.0.conv2"]))
    by_module = dict(randomized_copies(frn, [convs["conv12"], convs["conv11"]]))
    assert list(by_name) == list(by_module) == ["feature_extractor.layer4.0.conv3", "feature_extractor.layer4.0.conv2"]
    for a, b in zip(by_name.values(), by_module.values()):
        assert_same_state(a.state_dict(), b.state_dict())


def test_randomisation_errors_are_raised_at_the_call():
    frn = tiny_frn()
    convs = frn_conv_layers(frn)
    with pytest.raises(ValueError, match="unknown mode 'sideways'"):
        randomized_copies(frn, [convs["conv12"]], mode="sideways")
    with pytest.raises(ValueError, match="no submodule named 'feature_extractor.layer9'"):
        randomized_copies(frn, ["feature_extractor.layer9"])
    with pytest.raises(ValueError, match="Did you mean"):
        randomized_copies(frn, ["feature_extractor.layer4.0.conv"])
    with pytest.raises(ValueError, match="not a submodule"):
        randomized_copies(frn, [frn_conv_layers(copy.deepcopy(frn))["conv12"]])
    with pytest.raises(ValueError, match="empty"):
        randomized_copies(frn, [])
    with pytest.raises(ValueError, match="no parameters to re-initialise"):
        randomized_copies(frn, ["feature_extractor.layer4.0.relu"])
    with pytest.raises(ValueError, match="twice"):
        randomized_copies(frn, [convs["conv12"], "feature_extractor.layer4.0.conv3"])
    with pytest.raises(TypeError, match="wrap it in a list"):
        randomized_copies(frn, convs["conv12"])
    with pytest.raises(TypeError, match="nn.Module or its dotted name"):
        randomized_copies(frn, [3])
    with pytest.raises(ValueError, match="seed must be >= 0"):
        randomized_copies(frn, [convs["conv12"]], seed=-1)


# -- map similarity --------------------------------------------------------------------------------------

def plain_spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman without ties: the Pearson correlation of the ranks (ranks by a double argsort)."""
    rx, ry = np.argsort(np.argsort(x)).astype(float), np.argsort(np.argsort(y)).astype(float)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return float((rx * ry).sum() / math.sqrt((rx * rx).sum() * (ry * ry).sum()))


def plain_ssim(x: np.ndarray, y: np.ndarray, win: int = 7) -> float:
    """SSIM (Wang et al. 2004) with a uniform win×win window, sample (co)variances, K1 = 0.01, K2 = 0.03, data
    range 1, averaged over the windows that fit inside the image, by looping over windows."""
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    values = []
    for i in range(x.shape[0] - win + 1):
        for j in range(x.shape[1] - win + 1):
            a, b = x[i:i + win, j:j + win].ravel(), y[i:i + win, j:j + win].ravel()
            ma, mb = a.mean(), b.mean()
            va, vb = a.var(ddof=1), b.var(ddof=1)
            cov = ((a - ma) * (b - mb)).sum() / (a.size - 1)
            values.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2)))
    return float(np.mean(values))


def test_spearman_matches_a_plain_rank_correlation():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 9, 11, generator=g, dtype=torch.float64)
    b = a + 0.8 * torch.randn(4, 9, 11, generator=g, dtype=torch.float64)
    result = map_similarity(a, b, ssim=False)
    assert result.ssim is None and not result.constant.any()
    for i in range(4):
        x, y = a[i].numpy().ravel(), b[i].numpy().ravel()
        assert result.spearman[i] == pytest.approx(plain_spearman(x, y), abs=1e-12)
        assert result.spearman_abs[i] == pytest.approx(plain_spearman(np.abs(x), np.abs(y)), abs=1e-12)
    assert not np.allclose(result.spearman, result.spearman_abs)      # signed maps: the two differ
    reverse = map_similarity(a, -a, ssim=False)
    assert np.allclose(reverse.spearman, -1) and np.allclose(reverse.spearman_abs, 1)


def test_identical_maps_score_one_and_constant_maps_are_nan():
    a = torch.rand(3, 12, 12, generator=torch.Generator().manual_seed(1))
    same = map_similarity(a, a.clone(), ssim=False)
    assert np.allclose(same.spearman, 1) and np.allclose(same.spearman_abs, 1)
    b = a.clone()
    b[1] = 0.0
    result = map_similarity(a, b, ssim=False)
    assert result.constant.tolist() == [False, True, False]
    assert math.isnan(result.spearman[1]) and math.isnan(result.spearman_abs[1])
    assert np.allclose(result.spearman[[0, 2]], 1)


def test_ssim_of_identical_and_of_constant_maps():
    pytest.importorskip("skimage")
    a = torch.rand(3, 12, 12, generator=torch.Generator().manual_seed(1))
    assert np.allclose(map_similarity(a, a.clone()).ssim, 1)
    assert np.allclose(map_similarity(a, 7 * a + 2).ssim, 1)           # min-max normalised first
    b = a.clone()
    b[1] = 0.0
    assert np.isfinite(map_similarity(a, b).ssim).all()
    both = map_similarity(torch.zeros(1, 8, 8), torch.full((1, 8, 8), 3.0))
    assert both.ssim[0] == pytest.approx(1.0) and math.isnan(both.spearman[0])


def test_ssim_matches_a_plain_windowed_computation():
    pytest.importorskip("skimage")
    g = torch.Generator().manual_seed(2)
    a = torch.rand(2, 10, 13, generator=g, dtype=torch.float64) * 5 - 1
    b = a + torch.rand(2, 10, 13, generator=g, dtype=torch.float64)
    result = map_similarity(a, b)
    for i in range(2):
        x, y = a[i].numpy(), b[i].numpy()
        x, y = (x - x.min()) / (x.max() - x.min()), (y - y.min()) / (y.max() - y.min())
        assert result.ssim[i] == pytest.approx(plain_ssim(x, y), abs=1e-9)


def test_ssim_without_scikit_image_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage.metrics", None)
    with pytest.raises(ImportError, match="scikit-image"):
        map_similarity(torch.rand(1, 8, 8), torch.rand(1, 8, 8))
    assert map_similarity(torch.rand(1, 8, 8), torch.rand(1, 8, 8), ssim=False).ssim is None


def test_map_similarity_rejects_bad_maps():
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        map_similarity(torch.rand(2, 8, 8), torch.rand(2, 8, 9), ssim=False)
    with pytest.raises(ValueError, match="non-finite"):
        map_similarity(torch.full((1, 8, 8), float("nan")), torch.rand(1, 8, 8), ssim=False)


# -- deletion and insertion ------------------------------------------------------------------------------

class TinyEmbedding(nn.Module):
    """A small conv net with a BatchNorm (so that train mode would make scores depend on the batch)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 8, 3))

    def forward(self, x):
        return F.normalize(self.body(x).mean((-2, -1)), dim=-1)


def tiny_setup(b=3, size=12, seed=0):
    torch.manual_seed(seed)
    model = TinyEmbedding().double().train()              # the helper must switch to eval mode itself
    g = torch.Generator().manual_seed(seed)
    query = torch.rand(b, 3, size, size, generator=g, dtype=torch.float64)
    support = torch.rand(b, 3, size, size, generator=g, dtype=torch.float64)
    maps = torch.randint(0, 4, (b, size, size), generator=g).double()   # many ties
    return model, query, support, maps


def plain_cosine(model):
    """The cosine of one query's and one support's embedding, the model put in eval mode by hand."""
    def similarity(query, support):
        model.eval()
        with torch.no_grad():
            return float(F.cosine_similarity(model(query[None]), model(support[None]), dim=-1)[0])
    return similarity


def plain_frn(frn):
    """FRN's logit of a 1-way 1-shot episode over its scale: minus the reconstruction distance."""
    def similarity(query, support):
        with torch.no_grad():
            return float(frn.logits(support[None, None], query[None])[0, 0] / frn.scale)
    return similarity


def plain_curve(similarity, query, support, saliency, steps, mode, substrate):
    """One pair at a time, one step at a time: the pixels sorted by decreasing value (ties in row-major order)."""
    c, h, w = query.shape
    order = np.argsort(-saliency.numpy().ravel(), kind="stable")
    scores = []
    for t in range(steps + 1):
        k = (t * h * w) // steps
        mask = np.zeros(h * w, dtype=bool)
        mask[order[:k]] = True
        mask = torch.from_numpy(mask).view(1, h, w)
        image = torch.where(mask, substrate, query) if mode == "deletion" else torch.where(mask, query, substrate)
        scores.append(similarity(image, support))
    return np.array(scores)


@pytest.mark.parametrize("mode", ["deletion", "insertion"])
def test_curves_match_a_plain_per_pair_per_step_loop(mode):
    model, query, support, maps = tiny_setup()
    result = deletion_insertion(cosine_similarity_of(model), query, support, maps, steps=7, mode=mode, batch_size=5)
    assert result.scores.shape == (3, 8) and result.fractions.shape == (8,)
    assert result.fractions[0] == 0 and result.fractions[-1] == 1
    assert model.training                                     # the helper gave the model its mode back
    base = blurred(query)
    for i in range(3):
        expected = plain_curve(plain_cosine(model), query[i], support[i], maps[i], 7, mode, base[i])
        np.testing.assert_allclose(result.scores[i].numpy(), expected, rtol=0, atol=1e-12)
        fractions = np.array([(t * 144) // 7 for t in range(8)]) / 144
        assert float(result.auc[i]) == pytest.approx(float(np.trapezoid(expected, fractions)), abs=1e-12)


@pytest.mark.parametrize("mode", ["deletion", "insertion"])
def test_frn_curves_match_a_plain_loop_over_its_episodes(mode):
    frn = tiny_frn()
    with torch.no_grad():
        frn.r.copy_(torch.tensor([0.3, -0.2]))
    g = torch.Generator().manual_seed(4)
    query = torch.rand(3, 3, 20, 20, generator=g, dtype=torch.float64)
    support = torch.rand(3, 3, 20, 20, generator=g, dtype=torch.float64)
    maps = torch.rand(3, 20, 20, generator=g, dtype=torch.float64)
    result = deletion_insertion(frn_similarity(frn), query, support, maps, steps=5, mode=mode, batch_size=4)
    base = blurred(query)
    for i in range(3):
        expected = plain_curve(plain_frn(frn), query[i], support[i], maps[i], 5, mode, base[i])
        np.testing.assert_allclose(result.scores[i].numpy(), expected, rtol=1e-10, atol=1e-12)


def test_supports_are_encoded_once_and_queries_once_per_pair_and_step():
    model, query, support, maps = tiny_setup(b=5)
    seen = []
    handle = model.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    try:
        result = deletion_insertion(cosine_similarity_of(model), query, support, maps, steps=9, batch_size=16)
    finally:
        handle.remove()
    # one call for the 5 supports, then the 5 × 10 perturbed queries 16 at a time: never a support again
    assert [len(x) for x in seen] == [5, 16, 16, 16, 2]
    torch.testing.assert_close(seen[0], support, rtol=0, atol=0)
    assert not any(torch.equal(q, s) for x in seen[1:] for q in x for s in support)
    # a plain callable (no encode) sees the supports with every chunk, and gives the same curves
    plain = deletion_insertion(lambda q, s: cosine_similarity_of(model)(q, s), query, support, maps, steps=9,
                               batch_size=16)
    torch.testing.assert_close(plain.scores, result.scores, rtol=0, atol=1e-12)


def test_a_pair_similarity_is_encode_then_score():
    model, query, support, _ = tiny_setup()
    sim = cosine_similarity_of(model)
    assert isinstance(sim, PairSimilarity)
    encoded = sim.encode(support)
    assert encoded.shape == (3, 1, 8)
    torch.testing.assert_close(sim.score(query, encoded), sim(query, support), rtol=0, atol=0)
    custom = PairSimilarity(lambda s: s.flatten(1).mean(1), lambda q, e: q.flatten(1).mean(1) - e)
    torch.testing.assert_close(custom(query, support), query.flatten(1).mean(1) - support.flatten(1).mean(1))


def test_endpoints_are_the_unmodified_and_the_fully_blurred_scores_and_insertion_mirrors_deletion():
    model, query, support, maps = tiny_setup()
    score = cosine_similarity_of(model)
    deletion = deletion_insertion(score, query, support, maps, steps=4)
    insertion = deletion_insertion(score, query, support, maps, steps=4, mode="insertion")
    intact, blur = score(query, support), score(blurred(query, 11, 5.0), support)
    assert not torch.allclose(intact, blur)
    torch.testing.assert_close(deletion.scores[:, 0], intact, rtol=0, atol=1e-12)
    torch.testing.assert_close(deletion.scores[:, -1], blur, rtol=0, atol=1e-12)
    torch.testing.assert_close(insertion.scores[:, 0], blur, rtol=0, atol=1e-12)
    torch.testing.assert_close(insertion.scores[:, -1], intact, rtol=0, atol=1e-12)
    # without ties, deleting the k most highlighted pixels leaves the image that inserting the H·W - k least
    # highlighted ones (the most highlighted of the negated map) shows: the curves are each other reversed
    distinct = torch.stack([torch.randperm(144, generator=torch.Generator().manual_seed(i)).view(12, 12)
                            for i in range(3)]).double()
    forward = deletion_insertion(score, query, support, distinct, steps=4)
    backward = deletion_insertion(score, query, support, -distinct, steps=4, mode="insertion")
    torch.testing.assert_close(forward.scores, backward.scores.flip(1), rtol=0, atol=1e-12)


def test_zero_and_tensor_baselines_and_sigma():
    model, query, support, maps = tiny_setup()
    score = cosine_similarity_of(model)
    zero = deletion_insertion(score, query, support, maps, steps=2, baseline="zero")
    torch.testing.assert_close(zero.scores[:, -1], score(torch.zeros_like(query), support), rtol=0, atol=1e-12)
    given = deletion_insertion(score, query, support, maps, steps=2, baseline=blurred(query, 5, 1.0))
    other = deletion_insertion(score, query, support, maps, steps=2, kernel_size=5, sigma=1.0)
    torch.testing.assert_close(given.scores, other.scores, rtol=0, atol=0)


def test_scores_are_batched_over_steps_and_pairs():
    model, query, support, maps = tiny_setup(b=5)
    score = cosine_similarity_of(model)
    calls = []

    def counting(q, s):
        calls.append(len(q))
        return score(q, s)
    small = deletion_insertion(counting, query, support, maps, steps=9, batch_size=16)
    assert calls == [16, 16, 16, 2]                           # 5 pairs × 10 points, 16 at a time
    calls.clear()
    large = deletion_insertion(counting, query, support, maps, steps=9, batch_size=1000)
    assert calls == [50]
    torch.testing.assert_close(small.scores, large.scores, rtol=0, atol=1e-12)


def test_frn_similarity_is_minus_the_logit_over_scale():
    frn = tiny_frn()
    with torch.no_grad():
        frn.scale.fill_(2.5)
        frn.r.copy_(torch.tensor([0.3, -0.2]))
    g = torch.Generator().manual_seed(3)
    query = torch.rand(4, 3, 32, 32, generator=g, dtype=torch.float64)
    support = torch.rand(4, 2, 3, 32, 32, generator=g, dtype=torch.float64)   # 2-shot supports
    with torch.no_grad():
        got = frn_similarity(frn)(query, support)
        for i in range(4):
            logit = frn.logits(support[i][None], query[i][None])[0, 0]          # a 1-way, 2-shot episode
            assert float(got[i]) == pytest.approx(float(logit / frn.scale), rel=1e-10)
        one_shot = frn_similarity(frn)(query, support[:, 0])
        assert float(one_shot[0]) == pytest.approx(float(frn.logits(support[0, :1][None], query[:1])[0, 0] / 2.5),
                                                   rel=1e-10)


def test_cosine_similarity_of_is_the_cosine_of_the_embeddings():
    model, query, support, _ = tiny_setup()
    with torch.no_grad():
        got = cosine_similarity_of(model)(query, support)
        model.eval()
        expected = F.cosine_similarity(model(query), model(support), dim=-1)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def test_deletion_rejects_bad_inputs():
    model, query, support, maps = tiny_setup()
    score = cosine_similarity_of(model)
    with pytest.raises(ValueError, match="unknown mode"):
        deletion_insertion(score, query, support, maps, mode="both")
    with pytest.raises(ValueError, match="maps must have shape"):
        deletion_insertion(score, query, support, maps[:, :-1])
    with pytest.raises(ValueError, match="unknown baseline"):
        deletion_insertion(score, query, support, maps, baseline="noise")
    with pytest.raises(ValueError, match="steps must be >= 1"):
        deletion_insertion(score, query, support, maps, steps=0)
    with pytest.raises(ValueError, match="one row per query"):
        deletion_insertion(score, query, support[:2], maps)
    with pytest.raises(ValueError, match="one score per pair"):
        deletion_insertion(lambda q, s: score(q, s)[:, None], query, support, maps, steps=1)


# --- the paper's criterion: localisation after randomisation, and the model-free floor ---------------------

def test_contrast_maps_are_the_local_standard_deviation_of_the_grey_values():
    from sfam_lite.sanity import contrast_maps
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 9, 11, generator=g, dtype=torch.float64)
    got = contrast_maps(images, window=1 / 3)                 # the shorter side 9 → a 3-pixel window
    grey = images.mean(1).numpy()
    for b in range(2):
        for i in range(9):
            for j in range(11):
                patch = grey[b, max(0, i - 1):i + 2, max(0, j - 1):j + 2]      # cut at the borders
                assert abs(got[b, i, j].item() - patch.std()) < 1e-9
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        contrast_maps(images[0])
    with pytest.raises(ValueError, match="window"):
        contrast_maps(images, window=0)
    with pytest.raises(ValueError, match="finite"):
        contrast_maps(images.clone().fill_(float("nan")))


def test_localisation_scores_against_a_pixel_loop():
    from sfam_lite.sanity import localisation_scores
    maps = torch.zeros(3, 10, 10, dtype=torch.float64)
    maps[0, 2:6, 3:8] = 1.0                                   # exactly the box: localised, all mass inside
    maps[1, 0:2, 0:2] = 1.0                                   # a far corner: not localised, no mass inside
    boxes = torch.tensor([[3.0, 2.0, 5.0, 4.0]] * 3, dtype=torch.float64)    # x, y, w, h; map 2 blank
    got = localisation_scores(maps, boxes)
    assert got.localised.tolist() == [1.0, 0.0, 0.0] and got.shown.tolist() == [True, True, False]
    for b in range(3):
        total = maps[b].sum().item()
        inside = sum(maps[b, i, j].item() for i in range(10) for j in range(10) if 2 <= i < 6 and 3 <= j < 8)
        want = inside / total if total > 0 else 20 / 100        # a blank map scores the box's share of the image
        assert abs(got.mass[b] - want) < 1e-12
    with pytest.raises(ValueError, match="finite"):
        localisation_scores(maps.clone().fill_(float("nan")), boxes)
