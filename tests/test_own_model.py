"""Explaining one's own model: which similarity is explained, transformers (reshape_transform), N-way K-shot
episodes, dict outputs (output_transform), and cached features in the image call's shapes. Every reference is
computed here without the package: loops over channels, the model's layers called by hand, pytorch-grad-cam."""
import math

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from reference import bilinear_loop, cis_cosine_loop, map_loop, minmax_loop
from sfam_lite import CGRAM, RAM, SFAM, Decomposition, GradFAM, explain_episode, vit_tokens_to_grid

F64 = torch.float64


class Embedder(nn.Module):
    """conv body → average pool → Linear: a model whose embedding is not its pooled features."""

    def __init__(self, dim=5):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Conv2d(8, 6, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(6, dim)

    def head(self, a):
        return self.fc(a.mean(dim=(-2, -1)))

    def forward(self, x):
        return self.head(self.body(x))


class AsDict(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        e = self.net(x)
        return {"embedding": e, "norm": e.norm(dim=-1)}


@pytest.fixture
def model():
    torch.manual_seed(0)
    return Embedder().double().eval()


def images(*shape, seed=1):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def cos_loop(a, b):
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def model_similarity_loop(e_q, e_s, metric):
    """The model's own similarity from lists: cosine to the mean of the normalised support embeddings, or minus the
    squared distance to their plain mean."""
    k = len(e_s)
    if metric == "cosine":
        units = [[x / math.sqrt(sum(y * y for y in e)) for x in e] for e in e_s]
        return cos_loop(e_q, [sum(u[i] for u in units) / k for i in range(len(e_q))])
    mean = [sum(e[i] for e in e_s) / k for i in range(len(e_q))]
    return -sum((a - b) ** 2 for a, b in zip(e_q, mean))


# == 1. which similarity is explained, and the model's own ========================================================

@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_sfam_names_the_pooled_similarity_and_carries_the_models_own(model, metric):
    """Input: SFAM on a model whose embedding is a Linear of the pooled features. Expect: `explains` names the pooled
    target-layer features; `explained_similarity` is their cosine / minus squared distance (by loops), which is not
    the model's; `model_similarity` is the model's own, computed from its outputs by hand."""
    q, s = images(3, 3, 8, 8), images(3, 2, 3, 8, 8, seed=2)
    with SFAM(model, model.body, metric=metric) as explainer:
        out = explainer(q, s)
    pooled_name = "the pooled target-layer features"
    assert out.explains == {"cosine": f"cosine of {pooled_name}",
                            "euclidean": f"minus the squared Euclidean distance of {pooled_name}"}[metric]
    with torch.no_grad():
        e_q, e_s = model(q), model(s.flatten(0, 1)).reshape(3, 2, -1)
        a_q, a_s = model.body(q), model.body(s.flatten(0, 1)).reshape(3, 2, 6, 4, 4)
    for b in range(3):
        v_q = [a_q[b, n].mean().item() for n in range(6)]
        v_s = [sum(a_s[b, k, n].mean().item() for k in range(2)) / 2 for n in range(6)]
        pooled = cos_loop(v_q, v_s) if metric == "cosine" else -sum((x - y) ** 2 for x, y in zip(v_q, v_s))
        own = model_similarity_loop(e_q[b].tolist(), e_s[b].tolist(), metric)
        assert out.explained_similarity[b].item() == pytest.approx(pooled, rel=1e-9)
        assert out.model_similarity[b].item() == pytest.approx(own, rel=1e-9)
        assert abs(pooled - own) > 1e-5            # the two similarities are not the same
    if metric == "cosine":                         # the existing field is unchanged
        assert torch.equal(out.cosine_similarity, out.explained_similarity)
    assert out.take(1).explains == out.explains and out.take(1).model_similarity.shape == ()


def test_shared_support_gives_the_same_model_similarity(model):
    q, s = images(3, 3, 8, 8), images(2, 3, 8, 8, seed=2)
    with SFAM(model, model.body, metric="euclidean") as explainer:
        shared, repeated = explainer(q, s), explainer(q, s.expand(3, -1, -1, -1, -1))
    assert torch.allclose(shared.model_similarity, repeated.model_similarity, rtol=1e-12)


def test_cgram_explains_the_models_own_cosine(model):
    """CG-RAM's explained similarity is its target, the model's own cosine: equal to model_similarity and to the
    cosine computed by hand; RAM and Grad-FAM explain no similarity of the pair (None)."""
    q, s = images(2, 3, 8, 8), images(2, 3, 3, 8, 8, seed=2)
    with CGRAM(model, model.body) as explainer:
        out = explainer(q, s)
    with torch.no_grad():
        e_q, e_s = model(q), model(s.flatten(0, 1)).reshape(2, 3, -1)
    want = [model_similarity_loop(e_q[b].tolist(), e_s[b].tolist(), "cosine") for b in range(2)]
    assert out.explains == "cosine of the model's output embeddings"
    assert out.explained_similarity.tolist() == pytest.approx(want, rel=1e-9)
    assert out.model_similarity.tolist() == pytest.approx(want, rel=1e-9)
    for method in (RAM, GradFAM):
        with method(model, model.body) as explainer:
            other = explainer(q, s)
        assert other.explains is None and other.explained_similarity is None and other.model_similarity is None


def test_decomposition_explains_the_dot_product_of_pooled_features(model):
    q, s = images(2, 3, 8, 8), images(2, 1, 3, 8, 8, seed=2)
    with Decomposition(model, model.body) as explainer:
        out = explainer(q, s)
    with torch.no_grad():
        a_q, a_s = model.body(q), model.body(s[:, 0])
    for b in range(2):
        want = sum(a_q[b, n].mean().item() * a_s[b, n].mean().item() for n in range(6))
        assert out.explained_similarity[b].item() == pytest.approx(want, rel=1e-9)


def test_model_similarity_needs_the_models_output(model):
    """Cached features: no model output, so None. A dict output: None unless output_transform= picks the embedding,
    then the same values as the model returning the tensor."""
    q, s = images(2, 3, 8, 8), images(1, 3, 8, 8, seed=2)
    with SFAM(model, model.body, metric="cosine") as explainer:
        plain = explainer(q, s)
        cached = explainer.explain_features(explainer.features(q), explainer.features(s))
    assert cached.model_similarity is None and cached.explains == plain.explains
    wrapped = AsDict(model)
    with SFAM(wrapped, model.body, metric="cosine") as explainer:
        assert explainer(q, s).model_similarity is None
    with SFAM(wrapped, model.body, metric="cosine", output_transform=lambda out: out["embedding"]) as explainer:
        assert torch.equal(explainer(q, s).model_similarity, plain.model_similarity)


# == 2. transformers: reshape_transform and vit_tokens_to_grid ====================================================

def grid_loop(tokens, prefix):
    """(B, T, D) tokens → nested lists [b][d][i][j] = tokens[b, prefix + i·w + j, d]."""
    b, t, d = tokens.shape
    side = int(round(math.sqrt(t - prefix)))
    return [[[[tokens[i, prefix + r * side + c, ch].item() for c in range(side)] for r in range(side)]
             for ch in range(d)] for i in range(b)]


@pytest.mark.parametrize("prefix", [0, 1, 5])
def test_vit_tokens_to_grid_against_a_loop(prefix):
    tokens = torch.randn(2, prefix + 9, 4, generator=torch.Generator().manual_seed(prefix), dtype=F64)
    grid = vit_tokens_to_grid(tokens, num_prefix_tokens=prefix)
    assert grid.shape == (2, 4, 3, 3)
    assert grid.tolist() == grid_loop(tokens, prefix)


@pytest.mark.parametrize("tokens, kwargs, error, phrase", [
    (torch.rand(2, 11, 4), {}, ValueError, r"10 patch tokens are not a square grid.*num_prefix_tokens"),
    (torch.rand(2, 4, 4, 4), {}, ValueError, r"must have shape \(B, T, D\).*needs no reshape_transform"),
    (torch.rand(2, 10, 4), {"num_prefix_tokens": 1.0}, TypeError, "num_prefix_tokens must be an integer"),
    (torch.rand(2, 10, 4), {"num_prefix_tokens": -1}, ValueError, "num_prefix_tokens must be >= 0"),
    (torch.rand(2, 1, 4), {}, ValueError, "0 patch tokens"),
    ([[1.0]], {}, TypeError, "tokens must be a torch.Tensor"),
], ids=["not square", "4-D", "float prefix", "negative prefix", "no patches", "a list"])
def test_vit_tokens_to_grid_bad_input(tokens, kwargs, error, phrase):
    with pytest.raises(error, match=phrase):
        vit_tokens_to_grid(tokens, **kwargs)


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    net = torchvision.models.vit_b_16(weights=None, image_size=48)   # 3 × 3 patches of 16 px
    net.heads = nn.Linear(768, 16)        # an embedding (torchvision initialises its classifier to zeros)
    return net.eval()


def vit_tokens_by_hand(vit, x, upto):
    """The tokens after encoder block `upto`, computed by calling the ViT's parts in order (no hook)."""
    with torch.no_grad():
        n = x.shape[0]
        patches = vit.conv_proj(x).flatten(2).transpose(1, 2)          # (B, 9, 768), row-major patches
        t = torch.cat([vit.class_token.expand(n, -1, -1), patches], dim=1) + vit.encoder.pos_embedding
        for layer in vit.encoder.layers[:upto + 1]:
            t = layer(t)
    return t


def test_sfam_on_a_torchvision_vit_against_a_hand_made_grid(vit):
    """Input: SFAM on vit_b_16's last encoder block with reshape_transform=vit_tokens_to_grid. Expect: the feature
    maps are the block's patch tokens laid out by hand, and the maps are Eq. 5/4/3 by loops, upsampled."""
    g = torch.Generator().manual_seed(5)
    q, s = torch.rand(2, 3, 48, 48, generator=g), torch.rand(1, 3, 48, 48, generator=g)
    with SFAM(vit, vit.encoder.layers[-1], metric="cosine", reshape_transform=vit_tokens_to_grid) as explainer:
        out = explainer(q, s)
    grid_q = grid_loop(vit_tokens_by_hand(vit, q, 11), 1)
    grid_s = grid_loop(vit_tokens_by_hand(vit, s, 11), 1)[0]
    assert torch.allclose(out.query_features, torch.tensor(grid_q), atol=1e-4)
    assert torch.allclose(out.support_features[:, 0], torch.tensor([grid_s, grid_s]), atol=1e-4)
    v_s = [sum(sum(row) for row in ch) / 9 for ch in grid_s]
    for b in range(2):
        v_q = [sum(sum(row) for row in ch) / 9 for ch in grid_q[b]]
        weights = minmax_loop(cis_cosine_loop(v_q, v_s))
        want = bilinear_loop(map_loop(grid_q[b], weights), 48, 48)
        got = out.query_maps[b].double()
        assert torch.allclose(got, torch.tensor(want, dtype=F64), atol=1e-3 * got.abs().max().item())
    with torch.no_grad():
        e_q, e_s = vit(q), vit(s)
    assert out.model_similarity.tolist() == pytest.approx(
        [cos_loop(e_q[b].tolist(), e_s[0].tolist()) for b in range(2)], abs=1e-5)


def test_vit_without_reshape_transform_points_to_it(vit):
    x = torch.rand(1, 3, 48, 48)
    with SFAM(vit, vit.encoder.layers[-1]) as explainer, \
            pytest.raises(ValueError, match=r"\(1, 10, 768\).*reshape_transform=sfam_lite\.vit_tokens_to_grid"):
        explainer(x, x)
    bad = lambda t: t[:, 1:]  # noqa: E731  forgot the reshape
    with SFAM(vit, vit.encoder.layers[-1], reshape_transform=bad) as explainer, \
            pytest.raises(ValueError, match=r"reshape_transform returned shape \(1, 9, 768\).*\(B, N, h, w\)"):
        explainer(x, x)
    with pytest.raises(TypeError, match="reshape_transform must be a callable"):
        SFAM(vit, vit.encoder.layers[-1], reshape_transform="vit")


def test_cgram_on_a_vit_equals_pytorch_grad_cam_with_its_reshape_transform(vit):
    """CG-RAM with reshape_transform (applied to activations and gradients) is grad-cam's GradCAM with its own
    vit_reshape_transform and a cosine target. The layer is the last block's ln_1: the class token, the only one the
    output reads, attends to the patches there (the last block's patch outputs reach no output)."""
    grad_cam = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.reshape_transforms import vit_reshape_transform
    g = torch.Generator().manual_seed(6)
    q, s = torch.rand(2, 3, 48, 48, generator=g), torch.rand(2, 1, 3, 48, 48, generator=g)
    layer = vit.encoder.layers[-1].ln_1
    with CGRAM(vit, layer, reshape_transform=vit_tokens_to_grid) as explainer:
        ours = explainer(q, s)
    with torch.no_grad():
        e_s = vit(s[:, 0])

    def cosine_to(e):
        return lambda out: nn.functional.cosine_similarity(out, e, dim=0)

    with grad_cam.GradCAM(model=vit, target_layers=[layer],
                          reshape_transform=lambda t: vit_reshape_transform(t, 3, 3)) as cam:
        theirs = cam(input_tensor=q, targets=[cosine_to(e) for e in e_s])

    def mm(x):
        x = x - x.min(axis=(-2, -1), keepdims=True)
        return x / x.max(axis=(-2, -1), keepdims=True)
    assert ours.query_maps.abs().max() > 0
    assert np.allclose(mm(ours.query_maps.numpy()), mm(theirs), atol=1e-4)


# == 3. episodes ==================================================================================================

class Counting(nn.Module):
    """The model, counting the images it is run on."""

    def __init__(self, net):
        super().__init__()
        self.net, self.images = net, 0

    def forward(self, x):
        self.images += x.shape[0]
        return self.net(x)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_episode_equals_a_loop_over_classes_with_features_once_per_image(model, metric):
    """Input: 4 queries, a 3-way 2-shot episode. Expect: every map, score and model similarity equal to calling the
    explainer on each class's shots; the picked class is the argmax of the pooled similarity computed by loops; the
    backbone runs on each of the 4 + 6 images once."""
    q, s = images(4, 3, 8, 8), images(3, 2, 3, 8, 8, seed=2)
    counted = Counting(model)
    with SFAM(counted, model.body, metric=metric) as explainer:
        episode = explain_episode(explainer, q, s)
        assert counted.images == 4 + 3 * 2
        loop = [explainer(q, s[c]) for c in range(3)]
    assert episode.query_maps.shape == (4, 3, 8, 8) and episode.support_maps.shape == (4, 3, 2, 8, 8)
    for c, want in enumerate(loop):
        assert torch.allclose(episode.query_maps[:, c], want.query_maps, atol=1e-12)
        assert torch.allclose(episode.support_maps[:, c], want.support_maps, atol=1e-12)
        assert torch.allclose(episode.scores[:, c], want.explained_similarity, atol=1e-12)
        assert torch.allclose(episode.model_scores[:, c], want.model_similarity, atol=1e-12)
    with torch.no_grad():
        a_q, a_s = model.body(q), model.body(s.flatten(0, 1)).reshape(3, 2, 6, 4, 4)
    for b in range(4):
        v_q = [a_q[b, n].mean().item() for n in range(6)]
        sims = []
        for c in range(3):
            v_s = [sum(a_s[c, k, n].mean().item() for k in range(2)) / 2 for n in range(6)]
            sims.append(cos_loop(v_q, v_s) if metric == "cosine" else -sum((x - y) ** 2 for x, y in zip(v_q, v_s)))
        assert episode.predicted[b].item() == max(range(3), key=sims.__getitem__)
    assert episode.explains == loop[0].explains and episode.decision_scores is None and episode.model_decision is None


def test_episode_reports_the_models_decision(model):
    q, s = images(4, 3, 8, 8), images(3, 2, 3, 8, 8, seed=2)

    def decision(query, support):          # the model's own nearest class: minus distance to the mean embedding
        e_q, e_s = model(query), model(support.flatten(0, 1)).reshape(3, 2, -1).mean(1)
        return -torch.cdist(e_q, e_s) ** 2

    with SFAM(model, model.body, metric="euclidean") as explainer:
        episode = explain_episode(explainer, q, s, decision=decision)
        given = explain_episode(explainer, q, s, decision=torch.eye(3, dtype=F64)[[0, 1, 2, 2]])
    with torch.no_grad():
        want = decision(q, s)
    assert torch.allclose(episode.decision_scores, want) and torch.equal(episode.model_decision, want.argmax(1))
    assert torch.allclose(episode.model_scores, want, atol=1e-10)   # the same definition, computed by the package
    assert given.model_decision.tolist() == [0, 1, 2, 2]


@pytest.mark.parametrize("with_head", [False, True], ids=["hook per class", "head"])
def test_episode_with_a_gradient_method_equals_the_loop(model, with_head):
    q, s = images(2, 3, 8, 8), images(3, 2, 3, 8, 8, seed=2)
    with CGRAM(model, model.body, head=model.head if with_head else None) as explainer:
        episode = explain_episode(explainer, q, s)
        loop = [explainer(q, s[c]) for c in range(3)]
    for c, want in enumerate(loop):
        assert torch.allclose(episode.query_maps[:, c], want.query_maps, atol=1e-12)
        assert torch.allclose(episode.support_maps[:, c], want.support_maps, atol=1e-12)
        assert torch.allclose(episode.scores[:, c], want.explained_similarity, atol=1e-12)
        assert torch.allclose(episode.model_scores[:, c], want.model_similarity, atol=1e-12)


def test_episode_with_a_method_that_explains_no_similarity(model):
    q, s = images(2, 3, 8, 8), images(2, 1, 3, 8, 8, seed=2)
    with RAM(model, model.body) as explainer:
        episode = explain_episode(explainer, q, s)
    assert episode.scores is None and episode.predicted is None and episode.query_maps.shape == (2, 2, 8, 8)


def test_episode_bad_input_names_the_fix(model):
    q = images(2, 3, 8, 8)
    with SFAM(model, model.body) as explainer:
        with pytest.raises(ValueError, match=r"\(n_way, n_shot, C, H, W\).*support_images\[:, None\].*ONE class"):
            explain_episode(explainer, q, images(3, 3, 8, 8))
        with pytest.raises(ValueError, match="resize them to the same"):
            explain_episode(explainer, q, images(3, 1, 3, 6, 6))
        with pytest.raises(ValueError, match="n_shot = 0"):
            explain_episode(explainer, q, images(3, 0, 3, 8, 8))
        with pytest.raises(ValueError, match=r"decision gave shape \(2, 2\).*\(B, n_way\) = \(2, 3\)"):
            explain_episode(explainer, q, images(3, 1, 3, 8, 8), decision=torch.zeros(2, 2))
        with pytest.raises(TypeError, match="decision must be"):
            explain_episode(explainer, q, images(3, 1, 3, 8, 8), decision="logits")
    with pytest.raises(TypeError, match=r"explainer must be an explainer built with a model"):
        explain_episode(model, q, images(3, 1, 3, 8, 8))
    with pytest.raises(RuntimeError, match="without a model"):
        explain_episode(SFAM(None), q, images(3, 1, 3, 8, 8))


# == 4. models returning a dict: output_transform ================================================================

@pytest.mark.parametrize("method", [CGRAM, GradFAM], ids=["CG-RAM", "Grad-FAM"])
def test_output_transform_explains_a_dict_output_model(model, method):
    """Input: a model returning {'embedding', 'norm'}, explained with output_transform=. Expect: exactly the maps and
    weights of the model returning the embedding (before: "'dict' object has no attribute 'reshape'")."""
    q, s = images(2, 3, 8, 8), images(2, 3, 8, 8, seed=2)
    with method(AsDict(model), model.body, output_transform=lambda out: out["embedding"]) as explainer:
        picked = explainer(q, s)
    with method(model, model.body) as explainer:
        plain = explainer(q, s)
    assert torch.equal(picked.query_maps, plain.query_maps) and torch.equal(picked.weights, plain.weights)
    assert torch.equal(picked.support_maps, plain.support_maps)


def test_output_transform_on_a_head_returning_a_dict(model):
    a_q, a_s = model.body(images(2, 3, 8, 8)).detach(), model.body(images(2, 3, 8, 8, seed=2)).detach()
    head = lambda a: {"embedding": model.head(a)}  # noqa: E731
    picked = CGRAM(None, head=head, output_transform=lambda out: out["embedding"]).explain_features(a_q, a_s)
    plain = CGRAM(None, head=model.head).explain_features(a_q, a_s)
    assert torch.equal(picked.weights, plain.weights) and torch.equal(picked.model_similarity, plain.model_similarity)


def test_output_transform_bad_input(model):
    q, s = images(1, 3, 8, 8), images(1, 3, 8, 8, seed=2)
    with pytest.raises(ValueError, match="output= and output_transform= both given"):
        CGRAM(model, model.body, output="embedding", output_transform=lambda out: out["embedding"])
    with pytest.raises(TypeError, match=r"output_transform must be a callable.*out\['embedding'\]"):
        CGRAM(model, model.body, output_transform="embedding")
    with CGRAM(AsDict(model), model.body, output_transform=lambda out: out["emb"]) as explainer, \
            pytest.raises(TypeError, match=r"output_transform cannot pick the embedding .*\['embedding', 'norm'\]"):
        explainer(q, s)
    with CGRAM(AsDict(model), model.body, output_transform=lambda out: out.values()) as explainer, \
            pytest.raises(TypeError, match="output_transform returned a dict_values, not a tensor"):
        explainer(q, s)
    with CGRAM(AsDict(model), model.body) as explainer, \
            pytest.raises(TypeError, match=r"returned a dict with keys \['embedding', 'norm'\].*output_transform="):
        explainer(q, s)


# == 6. cached features in the shapes of the image call ===========================================================

@pytest.mark.parametrize("method", [SFAM, CGRAM], ids=["SFAM", "CG-RAM"])
def test_explain_features_takes_a_shared_support_set_as_the_call_does(model, method):
    """(K, N, h, w) support features mean one support set for every query, as (K, C, H, W) images do."""
    q, s = images(3, 3, 8, 8), images(2, 3, 8, 8, seed=2)
    with method(model, model.body, head=model.head) if method is CGRAM else method(model, model.body) as explainer:
        call = explainer(q, s)
        a_q, a_s = explainer.features(q), explainer.features(s)
        shared = explainer.explain_features(a_q, a_s, size=(8, 8))
        per_query = explainer.explain_features(a_q, a_s.expand(3, -1, -1, -1, -1), size=(8, 8))
    for got in (shared, per_query):
        assert torch.allclose(got.query_maps, call.query_maps, atol=1e-12)
        assert torch.allclose(got.support_maps, call.support_maps, atol=1e-12)


def test_explain_features_says_which_shapes_it_takes(model):
    explainer = SFAM(None)
    a = torch.rand(2, 6, 4, 4)
    with pytest.raises(ValueError, match=r"support_features must have shape \(B, K, N, h, w\).*\(K, N, h, w\).*"
                                         r"support_features\[:, None\]"):
        explainer.explain_features(a, a[0])
    with pytest.raises(ValueError, match=r"do not match.*\(B, K, N, h, w\) or \(K, N, h, w\)"):
        explainer.explain_features(a, torch.rand(2, 5, 4, 4))
