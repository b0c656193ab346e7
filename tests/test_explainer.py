"""The hook-based SFAM explainer on small CNNs, checked against computing everything by hand."""
import pytest
import torch
import torchvision
from torch import nn

from reference import bilinear_loop, cis_cosine_loop, cis_loop, map_loop, minmax_loop
from sfam_lite import SFAM

F64 = torch.float64


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Conv2d(8, 6, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4))

    def forward(self, x):
        return self.head(self.body(x))


@pytest.fixture
def model():
    torch.manual_seed(0)
    return TinyCNN().double().eval()


def by_hand(model, images):
    return model.body(images)  # the target layer's output, computed without any hook


@pytest.mark.parametrize("metric,ref", [("euclidean", cis_loop), ("cosine", cis_cosine_loop)])
def test_matches_manual_computation(model, metric, ref):
    g = torch.Generator().manual_seed(1)
    q, s = torch.rand(3, 3, 16, 16, generator=g, dtype=F64), torch.rand(3, 2, 3, 16, 16, generator=g, dtype=F64)
    with SFAM(model, model.body, metric=metric) as explainer:
        out = explainer(q, s)
    with torch.no_grad():
        a_q = by_hand(model, q)
        a_s = by_hand(model, s.flatten(0, 1)).reshape(3, 2, 6, 8, 8)
    for b in range(3):
        vq = a_q[b].mean(dim=(1, 2)).tolist()
        vs = [sum(a_s[b, k, n].mean().item() for k in range(2)) / 2 for n in range(6)]
        omega = ref(vq, vs)
        norm = torch.tensor(minmax_loop(omega), dtype=F64)
        assert torch.allclose(out.scores[b], torch.tensor(omega, dtype=F64), rtol=1e-9)
        assert torch.allclose(out.weights[b], norm, atol=1e-9)
        want_q = bilinear_loop(map_loop(a_q[b].tolist(), norm.tolist()), 16, 16)
        assert torch.allclose(out.query_maps[b], torch.tensor(want_q, dtype=F64), atol=1e-10)
        for k in range(2):
            want_s = bilinear_loop(map_loop(a_s[b, k].tolist(), norm.tolist()), 16, 16)
            assert torch.allclose(out.support_maps[b, k], torch.tensor(want_s, dtype=F64), atol=1e-10)
        assert torch.allclose(out.squared_distance[b], torch.tensor(sum((x - y) ** 2 for x, y in zip(vq, vs)),
                                                                    dtype=F64))


def test_shared_support_set_equals_repeated_support_set(model):
    g = torch.Generator().manual_seed(2)
    q, s = torch.rand(4, 3, 12, 12, generator=g, dtype=F64), torch.rand(3, 3, 12, 12, generator=g, dtype=F64)
    with SFAM(model, model.body) as explainer:
        shared = explainer(q, s)
        repeated = explainer(q, s.expand(4, -1, -1, -1, -1))
    assert shared.support_maps.shape == (4, 3, 12, 12)
    assert torch.allclose(shared.query_maps, repeated.query_maps)
    assert torch.allclose(shared.support_maps, repeated.support_maps)


def test_single_support_image_k1(model):
    q, s = torch.rand(2, 3, 8, 8, dtype=F64), torch.rand(1, 3, 8, 8, dtype=F64)
    with SFAM(model, model.body) as explainer:
        out = explainer(q, s)
    assert out.support_maps.shape == (2, 1, 8, 8)
    assert torch.isfinite(out.query_maps).all()


def test_query_equal_to_support_is_defined(model):
    x = torch.rand(1, 3, 8, 8, dtype=F64)
    with SFAM(model, model.body) as explainer:
        out = explainer(x, x.clone())
    assert torch.equal(out.weights, torch.ones_like(out.weights))
    # every channel counts fully, so each map is the plain channel sum of the features, upsampled (by loops)
    with torch.no_grad():
        a = by_hand(model, x)[0]
    want = torch.tensor(bilinear_loop(map_loop(a.tolist(), [1.0] * a.shape[0]), 8, 8), dtype=F64)
    assert torch.allclose(out.query_maps[0], want, atol=1e-10)
    assert torch.allclose(out.support_maps[0, 0], want, atol=1e-10)


def test_torchvision_resnet_layer4_and_hook_removal():
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10).eval()
    q, s = torch.rand(2, 3, 64, 64), torch.rand(1, 3, 64, 64)
    with SFAM(net, net.layer4, metric="cosine") as explainer:
        out = explainer(q, s)
        assert len(net.layer4._forward_hooks) == 1
    assert len(net.layer4._forward_hooks) == 0
    assert out.query_maps.shape == (2, 64, 64) and out.support_maps.shape == (2, 1, 64, 64)
    with torch.no_grad():
        stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3,
                             net.layer4)
        assert torch.allclose(out.query_features, stem(q))


def test_max_pool_and_callable_pool(model):
    q, s = torch.rand(2, 3, 8, 8, dtype=F64), torch.rand(1, 3, 8, 8, dtype=F64)
    with SFAM(model, model.body, pool="max") as e1, SFAM(model, model.body, pool=lambda a: a.amax(dim=(-2, -1))) as e2:
        a, b = e1(q, s), e2(q, s)
    assert torch.allclose(a.weights, b.weights)
    assert torch.allclose(a.query_vectors, by_hand(model, q).amax(dim=(-2, -1)))


# --- bad input ----------------------------------------------------------------------------------

def test_errors_name_the_problem(model):
    q = torch.rand(2, 3, 8, 8, dtype=F64)
    with SFAM(model, model.body) as explainer:
        with pytest.raises(ValueError, match="K = 0"):
            explainer(q, torch.rand(0, 3, 8, 8, dtype=F64))
        with pytest.raises(ValueError, match="non-finite"):
            explainer(q, torch.full((1, 3, 8, 8), float("nan"), dtype=F64))
        with pytest.raises(ValueError, match="same"):
            explainer(q, torch.rand(1, 3, 10, 10, dtype=F64))
        with pytest.raises(ValueError, match="support sets for 2 queries"):
            explainer(q, torch.rand(3, 1, 3, 8, 8, dtype=F64))
        with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
            explainer(q[0], q)
    with pytest.raises(ValueError, match="unknown metric"):
        SFAM(model, model.body, metric="l1")
    with pytest.raises(ValueError, match="unknown pool"):
        SFAM(model, model.body, pool="median")
    with pytest.raises(TypeError, match="nn.Module"):
        SFAM(model, "body")


def test_layer_not_in_forward_pass_is_reported(model):
    unused = nn.Conv2d(3, 3, 1)
    with SFAM(model, unused) as explainer:
        with pytest.raises(RuntimeError, match="did not run"):
            explainer(torch.rand(1, 3, 8, 8, dtype=F64), torch.rand(1, 3, 8, 8, dtype=F64))


def test_non_finite_features_are_reported():
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU()).double()
    with torch.no_grad():
        net[0].weight[0] = float("inf")
    with SFAM(net, net[1]) as explainer:
        with pytest.raises(ValueError, match="non-finite"):
            explainer(torch.rand(1, 3, 4, 4, dtype=F64), torch.rand(1, 3, 4, 4, dtype=F64))


def test_explain_features_equals_explaining_images(model):
    g = torch.Generator().manual_seed(4)
    q, s = torch.rand(3, 3, 16, 16, generator=g, dtype=F64), torch.rand(3, 2, 3, 16, 16, generator=g, dtype=F64)
    with SFAM(model, model.body, metric="cosine") as explainer:
        from_images = explainer(q, s)
        with torch.no_grad():
            a_q, a_s = by_hand(model, q), by_hand(model, s.flatten(0, 1)).reshape(3, 2, 6, 8, 8)
        from_features = explainer.explain_features(a_q, a_s, size=(16, 16))
        with pytest.raises(ValueError, match="do not match"):
            explainer.explain_features(a_q, a_s[:2])
    assert torch.allclose(from_images.query_maps, from_features.query_maps)
    assert torch.allclose(from_images.support_maps, from_features.support_maps)


class NormedCNN(nn.Module):
    """A small CNN with BatchNorm, whose train-mode output depends on the rest of the batch."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                                  nn.Conv2d(6, 5, 3, padding=1), nn.BatchNorm2d(5))
        self.head = nn.Linear(5, 4)

    def forward(self, x):
        return self.head(self.body(x).mean(dim=(-2, -1)))


@pytest.mark.parametrize("method", ["sfam", "cgram"])
def test_a_model_in_train_mode_is_explained_in_eval_mode_and_left_as_it_was(method):
    from sfam_lite import CGRAM
    torch.manual_seed(0)
    net = NormedCNN().train()
    net.body[1].eval()                                    # a mixed model: one BatchNorm already in eval mode
    before = {k: v.clone() for k, v in net.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    q, s = torch.rand(4, 3, 12, 12, generator=g), torch.rand(4, 2, 3, 12, 12, generator=g)
    make = (lambda: SFAM(net, net.body[3])) if method == "sfam" else (lambda: CGRAM(net, net.body[3]))
    with make() as explainer:
        batch = explainer(q, s)
        alone = explainer(q[1:2], s[1:2])
    for k, v in net.state_dict().items():                 # running statistics untouched
        assert torch.equal(v, before[k]), k
    assert net.training and not net.body[1].training and net.body[4].training     # every mode given back
    assert torch.allclose(batch.query_maps[1], alone.query_maps[0], atol=1e-6)    # no dependence on the batch


def test_an_explainer_called_after_close_says_it_was_closed(model):
    explainer = SFAM(model, model.body)
    explainer.close()
    with pytest.raises(RuntimeError, match="this explainer was closed"):
        explainer(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))


def test_half_precision_features_give_a_finite_float32_distance():
    a_q = torch.full((1, 300, 2, 2), 40.0, dtype=torch.float16)
    a_s = torch.full((1, 1, 300, 2, 2), -40.0, dtype=torch.float16)   # D = 300 · 80² = 1.92e6 > float16's 65504
    out = SFAM(None).explain_features(a_q, a_s)
    assert torch.isfinite(out.squared_distance).all() and out.squared_distance.dtype == torch.float32
    assert out.squared_distance.item() == pytest.approx(300 * 80.0 ** 2)


@pytest.mark.parametrize("method", ["SFAM", "RAM", "CGRAM", "GradFAM"])
def test_explain_pairs_equals_each_pair_explained_from_its_gathered_features(method):
    """Batched over pairs of one feature table, in batches that do not divide the pairs, with one and with K
    supports: every field equals what explain_features gives the gathered features of all pairs at once, and the
    per-pair feature copies are not kept."""
    import sfam_lite
    torch.manual_seed(0)
    features = torch.rand(12, 6, 4, 4)
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5))
    kwargs = {"head": head} if method in ("CGRAM", "GradFAM") else {}
    explainer = getattr(sfam_lite, method)(None, **kwargs)
    queries = torch.tensor([0, 3, 5, 7, 11, 2, 9])
    for supports in (torch.tensor([1, 2, 4, 6, 10, 3, 8]), torch.tensor([[1, 4], [2, 6], [4, 1], [6, 8], [10, 0],
                                                                         [3, 5], [8, 2]])):
        shots = supports if supports.dim() == 2 else supports[:, None]
        whole = explainer.explain_features(features[queries], features[shots], size=(8, 8))
        pairs = explainer.explain_pairs(features, queries, supports, size=(8, 8), batch=3)
        assert pairs.query_features is None and pairs.support_features is None
        for name in ("query_maps", "support_maps", "weights", "support_weights", "scores", "query_vectors",
                     "support_vectors", "explained_similarity"):
            a, b = getattr(whole, name), getattr(pairs, name)
            assert (a is None and b is None) or torch.allclose(a, b, atol=1e-6, rtol=1e-5), name
        assert pairs.explains == whole.explains and pairs.query_maps.shape == (7, 8, 8)
    with pytest.raises(ValueError, match="same B"):
        explainer.explain_pairs(features, queries, queries[:3])
    with pytest.raises(ValueError, match="empty"):
        explainer.explain_pairs(features, queries[:0], queries[:0])


def test_pair_batches_cover_every_pair_once_in_order_and_match_each_pair_alone():
    """explain_pair_batches yields slices that tile the pairs in order, each no longer than the batch (nor than the
    explainer's pairs_per_batch), with the maps explain_features gives those pairs; bad indices are refused at the
    call, before anything is iterated."""
    import sfam_lite
    torch.manual_seed(1)
    features = torch.rand(10, 4, 3, 3)
    queries, supports = torch.tensor([9, 1, 4, 4, 0, 7, 2, 3]), torch.tensor([0, 2, 5, 6, 8, 1, 9, 4])
    explainer = sfam_lite.SFAM(None)
    for batch, limit, sizes in ((3, None, [3, 3, 2]), (5, 2, [2, 2, 2, 2]), (100, None, [8])):
        explainer.pairs_per_batch = limit
        seen = list(explainer.explain_pair_batches(features, queries, supports, size=(6, 6), batch=batch))
        assert [p.stop - p.start for p, _ in seen] == sizes
        assert [p.start for p, _ in seen] == [sum(sizes[:j]) for j in range(len(sizes))]
        for pairs, out in seen:
            for j, (q, s) in enumerate(zip(queries[pairs], supports[pairs])):
                alone = explainer.explain_features(features[q][None], features[s][None, None], size=(6, 6))
                assert torch.allclose(out.query_maps[j], alone.query_maps[0], atol=1e-6)
                assert torch.allclose(out.support_maps[j], alone.support_maps[0], atol=1e-6)
            assert out.query_features is None and out.support_features is None
    with pytest.raises(ValueError, match="same B"):
        explainer.explain_pair_batches(features, queries, supports[:3])
