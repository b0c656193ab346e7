"""The method registry, the models' explanation interface, and the one definition of "what is explained".

A toy method registered once appears in the evaluation's tables and in the explorer; the models' heads continue
their forward pass from each stage; the decisions agree with episodes and neighbours worked out by plain loops."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sfam_lite import methods
from sfam_lite.evaluate import evaluate_gpw, format_table
from sfam_lite.evaluation import decisions, few_shot_decisions, retrieval_decisions
from sfam_lite.explainer import Explanation
from sfam_lite.explorer import Explorer, Gallery, State
from sfam_lite.methods import ModelSetup, build_explainers, register, unregister
from sfam_lite.models import FRN, GPWEmbedding
from sfam_lite.sampling import EpisodeSampler

from helpers import fake_test

SIZE = 32


class LeftHalf:
    """A toy method: ones on the left half of the image, whatever the features."""

    def explain_features(self, query_features, support_features, size):
        n, k = support_features.shape[:2]
        m = torch.zeros(n, *size)
        m[:, :, : size[1] // 2] = 1
        return Explanation(m, m[:, None].expand(n, k, *size).clone())


@pytest.fixture
def toy_method():
    register("left-half", "left half", lambda setup, *_: LeftHalf())
    yield "left-half"
    unregister("left-half")


@pytest.fixture(scope="module")
def gpw():
    torch.manual_seed(0)
    return GPWEmbedding("resnet10", dim=16, last_stride=1, freeze_bn=False).eval()


def test_a_registered_method_is_in_the_tables_and_the_explorer(toy_method, gpw):
    test = fake_test(n_classes=4, per_class=6)
    result = evaluate_gpw(gpw, test, test.boxes, thresholds=(0.2,))
    assert toy_method in result.query and "left half" in format_table(result)
    # its IoU is the left half's box against each explained query's box, computed here by hand
    half = np.array([0, 0, SIZE // 2, SIZE])
    expected = []
    for q in result.query_images:
        x, y, w, h = test.boxes[q].tolist()
        ix = max(0.0, min(x + w, half[2]) - max(x, 0)) * max(0.0, min(y + h, SIZE) - max(y, 0))
        expected.append(ix / (w * h + half[2] * half[3] - ix))
    assert np.allclose(result.query[toy_method][0], expected)
    gallery = Gallery.from_test(gpw, "gpw", test, classes=4, per_class=6, seed=0)
    explorer = Explorer([gallery])
    assert toy_method in explorer.methods("GPW")
    view = explorer.view(State(model="GPW", method=toy_method, metric="cosine"))
    assert torch.equal(view.query_map[:, : SIZE // 2], torch.ones(SIZE, SIZE // 2))
    assert "left half" in view.readout()


def test_a_result_prints_a_method_unregistered_since(gpw):
    register("left-half", "left half", lambda setup, *_: LeftHalf())
    try:
        result = evaluate_gpw(gpw, fake_test(n_classes=4, per_class=6), fake_test(n_classes=4, per_class=6).boxes, methods=("sfam", "left-half"))
    finally:
        unregister("left-half")
    assert "left half" in format_table(result) and "left-half" not in methods.METHODS


def test_registry_refuses_what_it_cannot_use(toy_method):
    with pytest.raises(ValueError, match="already registered"):
        register(toy_method, "again", lambda *_: LeftHalf())
    with pytest.raises(ValueError, match="group"):
        register("x", "x", lambda *_: None, group="baseline")
    with pytest.raises(TypeError, match="callable"):
        register("x", "x", None)
    with pytest.raises(ValueError, match="unknown method"):
        build_explainers(ModelSetup("gpw", "cosine", None, None, None), ["gradcam"], (1.0, 1.0), 0.25)
    assert "x" not in methods.METHODS


@pytest.mark.parametrize("layer", ["layer1", "layer2", "layer3", "layer4"])
def test_heads_continue_the_forward_pass_from_each_stage(gpw, layer):
    torch.manual_seed(1)
    frn = FRN(width=0.125).eval()
    images = torch.randn(2, 3, SIZE, SIZE)
    for model, output in ((frn, frn(images)), (gpw, F.normalize(gpw.embed(gpw.backbone(images)), dim=-1))):
        captured = {}
        hook = model.stages()[layer].register_forward_hook(lambda m, i, o: captured.setdefault("a", o))
        with torch.no_grad():
            model(images)
            hook.remove()
            after = model.head_after(layer)(captured["a"])
        if model is gpw:
            after = F.normalize(after, dim=-1)
        assert torch.allclose(after, output, atol=1e-5)
    assert ModelSetup.of(gpw, layer).projection is (gpw.embed if layer == "layer4" else None)
    assert ModelSetup.of(frn, layer).projection is None


def test_models_say_how_to_explain_them():
    frn, gpw = FRN(width=0.125), GPWEmbedding("resnet10", dim=16, last_stride=1, freeze_bn=False)
    assert ModelSetup.of(frn).target_layer is frn.feature_extractor.layer4 and ModelSetup.of(frn).metric == "euclidean"
    assert ModelSetup.of(gpw).target_layer is gpw.backbone.layer4 and ModelSetup.of(gpw).metric == "cosine"
    with pytest.raises(TypeError, match="lacks task"):
        ModelSetup.of(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="unknown layer"):
        ModelSetup.of(frn, "layer5")
    with pytest.raises(ValueError, match="is a 'frn' model"):
        methods.setup_for(frn, "gpw")


def test_cgram_of_the_models_own_score_is_frns_logit_and_undefined_for_gpw(gpw):
    torch.manual_seed(1)
    frn = FRN(width=0.125).double().eval()
    q, s = torch.rand(3, 3, 84, 84, dtype=torch.float64), torch.rand(3, 3, 84, 84, dtype=torch.float64)
    fq, fs = frn(q).detach(), frn(s).detach()
    setup = ModelSetup.of(frn)
    got = build_explainers(setup, ["cgram-score"], None, None)["cgram-score"]
    out = got.explain_features(fq, fs[:, None], size=(84, 84))
    # the model's own score: FRN's logit of the support class in the pair's 1-way episode
    assert torch.allclose(out.explained_similarity, torch.stack([frn.logits(s[b][None, None], q[b][None])[0, 0]
                                                                 for b in range(3)]), atol=1e-9)
    # and Grad-CAM of it: the mean gradient of that logit over each channel, by autograd on one pair at a time
    for b in range(3):
        a = fq[b:b + 1].clone().requires_grad_(True)
        frn.pair_score(a, fs[b:b + 1, None]).sum().backward()
        small = torch.relu((a.grad.mean(dim=(-2, -1))[0, :, None, None] * fq[b]).sum(0))
        want = F.interpolate(small[None, None], size=(84, 84), mode="bilinear", align_corners=False)[0, 0]
        assert torch.allclose(out.query_maps[b], want, atol=1e-9)
    assert build_explainers(ModelSetup.of(gpw), ["cgram-score"], None, None)["cgram-score"] is None
    # variants are rows of the tables, not choices of the explorer
    assert methods.REGISTRY["cgram-score"].group == methods.REGISTRY["ram-support"].group == "variant"


def test_few_shot_decisions_match_a_plain_loop_over_the_episodes():
    torch.manual_seed(2)
    frn = FRN(width=0.125).eval()
    test = fake_test(n_classes=6, per_class=5)
    with torch.no_grad():
        fmaps = frn(test.images)
        made = decisions(frn, fmaps, test.labels, episodes=4, way=3, query=2, seed=7)
        positions = frn.read_positions(fmaps)
        sampler = EpisodeSampler(test.labels.tolist(), 3, 1, 2, 4, 7)
        rows = []
        for e in range(4):
            ep = torch.tensor(sampler.episode(e)).reshape(3, 3)      # way x (1 support + 2 queries)
            for c in range(3):
                for j in (1, 2):
                    q = int(ep[c, j])
                    scores = frn.head(positions[ep[:, 0]][:, None], positions[q][None])[0]
                    chosen = int(scores.argmax())
                    rows.append((q, int(ep[c, 0]), int(ep[chosen, 0]), chosen == c, e, ep[:, 0].tolist()))
    got = list(zip(made.query.tolist(), made.true_support.tolist(), made.chosen_support.tolist(),
                   made.correct.tolist(), made.episode.tolist(), made.candidates.tolist()))
    assert got == rows
    q, s, ep = made.explained()
    assert q.tolist() == [r[0] for r in rows if r[3]] and ep.tolist() == [r[4] for r in rows if r[3]]


def test_retrieval_decisions_match_a_plain_loop():
    g = torch.Generator().manual_seed(3)
    emb = torch.randn(15, 4, generator=g)
    labels = torch.tensor([0] * 5 + [1] * 5 + [2] * 4 + [3])          # class 3 has a single image
    made = retrieval_decisions(emb, labels)
    x = F.normalize(emb.double(), dim=-1)
    for i in range(15):
        sims = [(float(x[i] @ x[j]), j) for j in range(15) if j != i]
        top = max(sims)[1]
        own = [s for s in sims if labels[s[1]] == labels[i]]
        assert made.chosen_support[i] == top and bool(made.correct[i]) == bool(labels[top] == labels[i])
        assert made.true_support[i] == (max(own)[1] if own else -1)
    assert made.episode is None and made.candidates is None
    with pytest.raises(TypeError, match="model.task"):
        decisions(torch.nn.Linear(2, 2), emb, labels)


def test_few_shot_accuracy_is_the_decisions_share_correct():
    torch.manual_seed(4)
    frn = FRN(width=0.125).eval()
    test = fake_test(n_classes=6, per_class=5)
    with torch.no_grad():
        positions = frn.read_positions(frn(test.images))
        made = few_shot_decisions(frn, positions, test.labels, episodes=3, way=3, query=2, seed=1)
    from sfam_lite.evaluation import few_shot_accuracy
    acc = few_shot_accuracy(frn, positions, test.labels, episodes=3, way=3, query=2, seed=1)
    assert torch.allclose(acc, made.correct.reshape(3, 6).double().mean(1))


def test_an_explainer_defaults_to_the_models_target_layer():
    """SFAM(model) on a model that names its target layer equals SFAM(model, that layer); a model that does not
    is refused with a message naming the argument."""
    import sfam_lite
    torch.manual_seed(5)
    frn = FRN(width=0.125).eval()
    q, s = torch.randn(2, 3, SIZE, SIZE), torch.randn(2, 1, 3, SIZE, SIZE)
    with sfam_lite.SFAM(frn) as by_default, sfam_lite.SFAM(frn, frn.feature_extractor.layer4) as named:
        assert torch.equal(by_default(q, s).query_maps, named(q, s).query_maps)
    with pytest.raises(ValueError, match="target_layer is needed"):
        sfam_lite.SFAM(torch.nn.Conv2d(3, 4, 3))


def test_a_method_can_run_the_model_on_the_images_it_explains():
    """The base hosts a method that runs the model itself (as a perturbation method would): it sees the images, the
    model is in eval mode while it weights channels, and each module's mode is given back. The toy reads FRN's
    output again, whose channel means are RAM's weights (the target layer is FRN's last block), so its maps are
    RAM's."""
    import sfam_lite
    from sfam_lite.explainer import PairExplainer

    class RerunsTheModel(PairExplainer):
        rectify = True
        seen = []

        def channel_weights(self, ctx):
            type(self).seen.append((self.model.training, ctx.query_images is not None))
            with torch.no_grad():
                w = self.model(ctx.query_images).mean(dim=(-2, -1))
                w_s = self.model(ctx.support_images.flatten(0, 1)).mean(dim=(-2, -1))
            return w, w_s.reshape(*ctx.support_images.shape[:2], -1), w

    torch.manual_seed(6)
    frn = FRN(width=0.125).train()
    q, s = torch.randn(3, 3, SIZE, SIZE), torch.randn(2, 3, SIZE, SIZE)
    with RerunsTheModel(frn) as toy, sfam_lite.RAM(frn) as ram:
        got, expected = toy(q, s), ram(q, s)
    assert RerunsTheModel.seen == [(False, True)] and frn.training
    assert torch.allclose(got.query_maps, expected.query_maps, atol=1e-5)
    assert torch.allclose(got.support_maps, expected.support_maps, atol=1e-5)


def test_query_maps_match_each_pair_explained_on_its_own(gpw):
    from sfam_lite import RAM, SFAM
    from sfam_lite.evaluate import query_maps
    images = torch.rand(5, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(4))
    q, s = torch.tensor([0, 1, 0]), torch.tensor([2, 3, 4])
    got = query_maps(gpw, images, q, s, ["sfam", "ram", "decomposition", "centre-box", "random"], ((8.0, 6.0), 3.0))
    assert set(got) == {"sfam", "ram", "decomposition", "centre-box", "random"}     # references too (chapter 8)
    assert got["sfam"].shape == got["centre-box"].shape == got["random"].shape == (3, SIZE, SIZE)
    for key, make in [("sfam", lambda: SFAM(gpw, metric="cosine")), ("ram", lambda: RAM(gpw))]:
        with make() as explainer:
            for i in range(3):
                want = explainer(images[q[i]][None], images[s[i]][None, None]).query_maps[0]
                assert torch.allclose(got[key][i], want, atol=1e-5), key
    # a method not defined for the model is left out
    assert "decomposition" not in query_maps(FRN(width=0.125).eval(), images, q, s, ["sfam", "decomposition"])


def test_evaluations_reuse_given_features_and_refuse_wrong_ones(gpw):
    from sfam_lite.evaluate import evaluate_frn
    from sfam_lite.evaluation import forward_with_features
    test = fake_test(n_classes=4, per_class=6)
    features = forward_with_features(gpw, gpw.target_layer, test.images)
    fresh = evaluate_gpw(gpw, test, test.boxes, methods=("sfam", "ram"))
    reused = evaluate_gpw(gpw, test, test.boxes, methods=("sfam", "ram"), features=features)
    for m in ("sfam", "ram"):
        assert np.array_equal(fresh.query[m], reused.query[m]) and np.array_equal(fresh.mass[m], reused.mass[m])
    # the features are what is explained: other features give other maps
    other = evaluate_gpw(gpw, test, test.boxes, methods=("sfam",), features=(features[0], features[1].flip(-1)))
    assert not np.array_equal(fresh.mass["sfam"], other.mass["sfam"])
    with pytest.raises(ValueError, match="one row per test image"):
        evaluate_gpw(gpw, test, test.boxes, features=(features[0][:3], features[1][:3]))
    with pytest.raises(ValueError, match="outputs, feature maps"):
        evaluate_frn(FRN(width=0.125).eval(), test, test.boxes, episodes=2, features=features[1])
