"""The baselines (RAM, CG-RAM, Grad-FAM, Decomposition) and the reference maps, against plain loops,
hand-written autograd and pytorch-grad-cam."""
import warnings

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from reference import bilinear_loop
from sfam_lite import CGRAM, RAM, SFAM, CentreBoxMap, CentredGaussianMap, Decomposition, GradFAM, RandomMap
from sfam_lite.baselines import SupportWeightedRAM, frn_logit_target
from sfam_lite.models import FRN, GPWEmbedding

F64 = torch.float64


def minmax(x):
    x = x - x.amin(dim=(-2, -1), keepdim=True)
    return x / x.amax(dim=(-2, -1), keepdim=True)


class TinyEmbedding(nn.Module):
    """conv body → pooled → Linear → L2 normalised, like GPW."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Conv2d(8, 6, 3, padding=1), nn.ReLU())
        self.embed = nn.Linear(6, 5)

    def raw(self, a):
        return self.embed(a.mean(dim=(-2, -1)))

    def forward(self, x):
        return nn.functional.normalize(self.raw(self.body(x)), dim=-1)


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return TinyEmbedding().double().eval()


def images(*shape, seed=1):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


# --- RAM -------------------------------------------------------------------------------------------

def test_ram_is_each_image_weighted_by_its_own_pooled_feature(tiny):
    q, s = images(2, 3, 8, 8), images(2, 3, 3, 8, 8, seed=2)
    with RAM(tiny, tiny.body) as ram:
        out = ram(q, s)
    for b in range(2):
        for img, got in [(q[b], out.query_maps[b])] + [(s[b, k], out.support_maps[b, k]) for k in range(3)]:
            a = tiny.body(img[None])[0].detach()
            v = [a[n].mean().item() for n in range(a.shape[0])]
            small = torch.zeros(a.shape[1:], dtype=F64)
            for i in range(a.shape[1]):
                for j in range(a.shape[2]):
                    small[i, j] = max(0.0, sum(v[n] * a[n, i, j].item() for n in range(a.shape[0])))
            assert torch.allclose(got, torch.tensor(bilinear_loop(small, 8, 8), dtype=F64), atol=1e-10)
    # the query map ignores the support images
    with RAM(tiny, tiny.body) as ram:
        other = ram(q, images(2, 3, 3, 8, 8, seed=9))
    assert torch.allclose(out.query_maps, other.query_maps)


def test_support_weighted_ram_weights_each_image_by_the_other_ones_pooled_feature(tiny):
    q, s = images(2, 3, 8, 8), images(2, 3, 3, 8, 8, seed=2)
    with SupportWeightedRAM(tiny, tiny.body) as ram:
        out = ram(q, s)

    def weighted(a, v):
        small = torch.zeros(a.shape[1:], dtype=F64)
        for i in range(a.shape[1]):
            for j in range(a.shape[2]):
                small[i, j] = max(0.0, sum(v[n] * a[n, i, j].item() for n in range(a.shape[0])))
        return torch.tensor(bilinear_loop(small, 8, 8), dtype=F64)

    for b in range(2):
        a_q = tiny.body(q[b][None])[0].detach()
        a_s = [tiny.body(s[b, k][None])[0].detach() for k in range(3)]
        v_q = [a_q[n].mean().item() for n in range(a_q.shape[0])]
        v_s = [sum(a[n].mean().item() for a in a_s) / 3 for n in range(a_q.shape[0])]    # the prototype, Eq. 1
        assert torch.allclose(out.query_maps[b], weighted(a_q, v_s), atol=1e-10)
        for k in range(3):
            assert torch.allclose(out.support_maps[b, k], weighted(a_s[k], v_q), atol=1e-10)
    # unlike RAM's, the query map changes with the support
    with SupportWeightedRAM(tiny, tiny.body) as ram:
        other = ram(q, images(2, 3, 3, 8, 8, seed=9))
    assert not torch.allclose(out.query_maps, other.query_maps)


def test_support_weighted_ram_is_decomposition_on_non_negative_pooled_features():
    """For average pooling and a dot product without a neck, Σ_xy <A^Q_ij, A^S_xy> = hw Σ_n v^S_n A^n_ij, so with one
    support image the two query maps agree up to a positive factor (non-negative features, as after a ReLU)."""
    g = torch.Generator().manual_seed(3)
    a_q, a_s = torch.rand(2, 5, 4, 4, generator=g, dtype=F64), torch.rand(2, 1, 5, 4, 4, generator=g, dtype=F64)
    ours = SupportWeightedRAM(None).explain_features(a_q, a_s, size=(4, 4)).query_maps
    theirs = Decomposition(None).explain_features(a_q, a_s, size=(4, 4)).query_maps
    scale = lambda m: m / m.amax(dim=(-2, -1), keepdim=True)                              # noqa: E731
    assert torch.allclose(scale(ours), scale(theirs), atol=1e-12)
    assert not torch.allclose(scale(ours), scale(RAM(None).explain_features(a_q, a_s, size=(4, 4)).query_maps),
                              atol=1e-3)


# --- CG-RAM: equal to pytorch-grad-cam's GradCAM with a cosine target ------------------------------

class CosineTo:
    """A grad-cam target: the cosine similarity of the model output with a fixed embedding (as in grad-cam's
    embedding-similarity tutorial)."""

    def __init__(self, embedding):
        self.embedding = embedding

    def __call__(self, model_output):
        return nn.functional.cosine_similarity(model_output, self.embedding, dim=0)


def test_cgram_equals_pytorch_grad_cam_on_a_torchvision_resnet():
    grad_cam = pytest.importorskip("pytorch_grad_cam")
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=16).eval()
    q, s = torch.rand(3, 3, 96, 96, generator=torch.Generator().manual_seed(3)), \
        torch.rand(3, 1, 3, 96, 96, generator=torch.Generator().manual_seed(4))
    with CGRAM(net, net.layer4) as cgram:
        ours = cgram(q, s)
    with torch.no_grad():
        e_q, e_s = net(q), net(s[:, 0])
    with grad_cam.GradCAM(model=net, target_layers=[net.layer4]) as cam:
        theirs_q = cam(input_tensor=q, targets=[CosineTo(e) for e in e_s])
        theirs_s = cam(input_tensor=s[:, 0], targets=[CosineTo(e) for e in e_q])
    for got, want in [(ours.query_maps, theirs_q), (ours.support_maps[:, 0], theirs_s)]:
        assert np.allclose(minmax(got).numpy(), minmax(torch.from_numpy(want)).numpy(), atol=1e-4)


def test_cgram_weights_are_mean_gradients_of_the_cosine(tiny):
    q, s = images(2, 3, 8, 8), images(2, 2, 3, 8, 8, seed=2)
    with CGRAM(tiny, tiny.body) as cgram:
        out = cgram(q, s)
    for b in range(2):   # by hand: the cosine of the query's embedding with the mean support embedding
        a_q = tiny.body(q[b:b + 1]).detach().requires_grad_(True)
        a_s = tiny.body(s[b]).detach().requires_grad_(True)
        e_q, e_s = nn.functional.normalize(tiny.raw(a_q), dim=-1), nn.functional.normalize(tiny.raw(a_s), dim=-1)
        sim = nn.functional.cosine_similarity(e_q, e_s.mean(0, keepdim=True))
        g_q, g_s = torch.autograd.grad(sim.sum(), (a_q, a_s))
        assert torch.allclose(out.weights[b], g_q[0].mean(dim=(-2, -1)), atol=1e-12)
        assert torch.allclose(out.support_weights[b], g_s.mean(dim=(-2, -1)), atol=1e-12)


def test_gradient_methods_shared_support_equals_support_per_query(tiny):
    q, s = images(3, 3, 8, 8), images(2, 3, 8, 8, seed=2)
    for cls in (CGRAM, lambda m, layer: GradFAM(m, layer, embedding_layer=m.embed)):
        with cls(tiny, tiny.body) as e:
            shared, per_query = e(q, s), e(q, s.expand(3, -1, -1, -1, -1))
        assert torch.allclose(shared.query_maps, per_query.query_maps)
        assert torch.allclose(shared.support_maps, per_query.support_maps)


# --- Grad-FAM ----------------------------------------------------------------------------------------

def test_gradfam_differentiates_the_raw_embedding_norm(tiny):
    q, s = images(2, 3, 8, 8), images(2, 1, 3, 8, 8, seed=2)
    with GradFAM(tiny, tiny.body, embedding_layer=tiny.embed) as fam:
        out = fam(q, s)
    a = tiny.body(q).detach().requires_grad_(True)
    grad = torch.autograd.grad(tiny.raw(a).norm(dim=-1).sum(), a)[0]
    assert torch.allclose(out.weights, grad.mean(dim=(-2, -1)), atol=1e-12)
    # after the L2 normalisation the norm is 1: the gradient, hence the map, vanishes, and the user is told so
    with GradFAM(tiny, tiny.body) as normalised:
        with pytest.warns(UserWarning, match="every embedding it reads has norm 1.*embedding_layer="):
            weights = normalised(q, s).weights
        assert weights.abs().max() < 1e-10
    with GradFAM(tiny, tiny.body, embedding_layer=tiny.embed) as raw, warnings.catch_warnings():
        warnings.simplefilter("error")          # the raw embedding: no warning
        raw(q, s)


# --- cached features: the same explanations without running the backbone ----------------------------

def test_cached_path_equals_hook_path_on_gpw():
    torch.manual_seed(0)
    gpw = GPWEmbedding("resnet10", dim=16, last_stride=1, freeze_bn=False).double().eval()
    head = gpw.embedding_head()
    q, s = images(2, 3, 48, 48), images(2, 2, 3, 48, 48, seed=2)
    explainers = [CGRAM(gpw, gpw.target_layer), GradFAM(gpw, gpw.target_layer, embedding_layer=gpw.embed),
                  RAM(gpw, gpw.target_layer), SFAM(gpw, gpw.target_layer, metric="cosine"),
                  Decomposition(gpw, gpw.target_layer, projection=gpw.embed)]
    feats_q = explainers[0].features(q)
    feats_s = explainers[0].features(s.flatten(0, 1)).reshape(2, 2, *feats_q.shape[1:])
    for e in explainers:
        hook = e(q, s)
        cached = e.explain_features(feats_q, feats_s, size=(48, 48), head=head)
        assert torch.allclose(hook.query_maps, cached.query_maps, atol=1e-10), type(e).__name__
        assert torch.allclose(hook.support_maps, cached.support_maps, atol=1e-10), type(e).__name__
        e.close()
    with pytest.raises(ValueError, match="head="):
        CGRAM(None).explain_features(feats_q, feats_s)
    with pytest.raises(RuntimeError, match="without a model"):
        CGRAM(None)(q, s)


def test_frn_logit_target_is_frns_score():
    torch.manual_seed(0)
    frn = FRN(width=0.1).double().eval()
    q, s = images(2, 3, 84, 84), images(2, 1, 3, 84, 84, seed=2)
    target = frn_logit_target(frn)
    with torch.no_grad():
        got = target(frn(q), frn(s.flatten(0, 1)).reshape(2, 1, -1, 5, 5))
        for b in range(2):
            assert torch.allclose(got[b], frn.logits(s[b:b + 1], q[b:b + 1])[0, 0])
    with CGRAM(frn, frn.feature_extractor.layer4, target=target) as e:
        out = e(q, s)
    assert out.query_maps.shape == (2, 84, 84) and torch.isfinite(out.query_maps).all()


# --- Decomposition ---------------------------------------------------------------------------------

def test_decomposition_against_a_loop_over_positions():
    g = torch.Generator().manual_seed(0)
    a_q, a_s = torch.randn(1, 4, 3, 3, generator=g, dtype=F64), torch.randn(1, 2, 4, 2, 2, generator=g, dtype=F64)
    out = Decomposition(None).explain_features(a_q, a_s)
    p = torch.zeros(2, 3, 3, 2, 2, dtype=F64)
    for k in range(2):
        for i in range(3):
            for j in range(3):
                for x in range(2):
                    for y in range(2):
                        p[k, i, j, x, y] = sum(a_q[0, c, i, j] * a_s[0, k, c, x, y] for c in range(4))
        p[k] = (p[k] / p[k].max()).clamp_min(0)
    assert torch.allclose(out.query_maps[0], p.sum(dim=(0, 3, 4)))
    for k in range(2):
        assert torch.allclose(out.support_maps[0, k], torch.tensor(bilinear_loop(p[k].sum(dim=(0, 1)), 3, 3), dtype=F64))


def test_decomposition_sums_to_the_pooled_dot_product():
    g = torch.Generator().manual_seed(1)
    a_q, a_s = torch.rand(1, 6, 3, 3, generator=g, dtype=F64), torch.rand(1, 1, 6, 3, 3, generator=g, dtype=F64)
    e = Decomposition(None)
    raw = torch.einsum("bnij,bknxy->bkijxy", a_q, a_s)
    assert torch.isclose(raw.sum() / 81, a_q.mean((-2, -1))[0] @ a_s.mean((-2, -1))[0, 0])
    # with positive features P / max P is the map's only scaling: the query map is proportional to Σ_xy P
    assert torch.allclose(minmax(e.explain_features(a_q, a_s).query_maps[0]), minmax(raw.sum(dim=(0, 1, 4, 5))))


def test_decomposition_refuses_a_euclidean_model():
    with pytest.raises(ValueError, match="not applicable"):
        Decomposition(None, metric="euclidean")


# --- reference maps --------------------------------------------------------------------------------

def test_reference_maps():
    q, s = torch.rand(3, 3, 40, 60), torch.rand(2, 3, 40, 60)
    box = CentreBoxMap((20, 10))(q, s)
    m = box.query_maps[0]
    rows, cols = torch.nonzero(m, as_tuple=True)
    assert (cols.min(), cols.max() + 1, rows.min(), rows.max() + 1) == (20, 40, 15, 25)
    assert box.support_maps.shape == (3, 2, 40, 60)
    gauss = CentredGaussianMap(0.25)(q, s).query_maps[0]
    assert gauss[19:21, 29:31].min() == gauss.max()
    a, b = RandomMap(seed=5), RandomMap(seed=5)
    feats = torch.rand(3, 4, 5, 5), torch.rand(3, 2, 4, 5, 5)
    ra, rb = a.explain_features(*feats, size=(40, 60)), b.explain_features(*feats, size=(40, 60))
    assert torch.equal(ra.query_maps, rb.query_maps) and ra.query_maps.shape == (3, 40, 60)
    assert not torch.equal(ra.query_maps, a.explain_features(*feats, size=(40, 60)).query_maps)
    with pytest.raises(ValueError, match="box_size"):
        CentreBoxMap((0, 10))


def test_centred_gaussian_against_the_formula():
    from sfam_lite.references import centred_gaussian
    h, w, sigma = 5, 8, 1.7
    want = torch.tensor([[np.exp(-((j + 0.5 - w / 2) ** 2 + (i + 0.5 - h / 2) ** 2) / (2 * sigma ** 2))
                          for j in range(w)] for i in range(h)], dtype=F64)
    assert torch.allclose(centred_gaussian((h, w), sigma, F64), want, rtol=1e-12)
