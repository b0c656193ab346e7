"""FRN: the official checkpoint layout, and the reconstruction head against a direct ridge solve."""
import io

import pytest
import torch

from sfam_lite.models import FRN
from sfam_lite.models.frn import reconstruction_distance

F64 = torch.float64


def official_layout():
    """Key names and shapes of the released FRN ResNet-12 checkpoint, written from FRN's released checkpoint layout."""
    shapes = {"scale": (1,), "r": (2,)}
    c_in = 3
    for layer, c in zip(range(1, 5), (64, 160, 320, 640)):
        p = f"feature_extractor.layer{layer}.0."
        shapes[p + "conv1.weight"] = (c, c_in, 3, 3)
        shapes[p + "conv2.weight"] = (c, c, 3, 3)
        shapes[p + "conv3.weight"] = (c, c, 3, 3)
        shapes[p + "downsample.0.weight"] = (c, c_in, 1, 1)
        for bn in ("bn1", "bn2", "bn3", "downsample.1"):
            for name in ("weight", "bias", "running_mean", "running_var"):
                shapes[p + f"{bn}.{name}"] = (c,)
            shapes[p + f"{bn}.num_batches_tracked"] = ()
        c_in = c
    return shapes


def test_state_dict_matches_official_layout_and_loads_strictly(tmp_path):
    layout = official_layout()
    assert len(layout) == 98
    model = FRN()
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == layout
    g = torch.Generator().manual_seed(0)
    fake = {k: (torch.randint(0, 100, s, generator=g) if k.endswith("num_batches_tracked")
                else torch.rand(s, generator=g)) for k, s in layout.items()}
    path = tmp_path / "model.pth"
    torch.save(fake, path)
    fresh = FRN()
    fresh.load_state_dict(torch.load(path, weights_only=True), strict=True)
    assert torch.equal(fresh.feature_extractor.layer3[0].bn2.running_var, fake["feature_extractor.layer3.0.bn2.running_var"])
    assert torch.equal(fresh.r, fake["r"])


def test_feature_map_shape_full_and_narrow():
    with torch.no_grad():
        assert FRN().eval()(torch.rand(1, 3, 84, 84)).shape == (1, 640, 5, 5)
        assert FRN(width=0.25).eval()(torch.rand(2, 3, 84, 84)).shape == (2, 160, 5, 5)


def direct_ridge_distance(query, support, alpha, beta):
    """Per query row and class: w = argmin ‖q − wS‖² + λ‖w‖² by least squares on the stacked system
    [Sᵀ; √λ I] w = [q; 0], reconstruction ρ w S, squared error. No Woodbury identity, no d×d inverse."""
    way, s, d = support.shape
    lam = (s / d) * alpha.exp() + 1e-6
    rho = beta.exp()
    out = torch.empty(query.shape[0], way, dtype=query.dtype)
    for c in range(way):
        a = torch.cat([support[c].T, lam.sqrt() * torch.eye(s, dtype=query.dtype)])      # (d + s, s)
        for m in range(query.shape[0]):
            b = torch.cat([query[m], torch.zeros(s, dtype=query.dtype)])
            w = torch.linalg.lstsq(a, b[:, None]).solution[:, 0]
            out[m, c] = ((rho * (w @ support[c]) - query[m]) ** 2).sum()
    return out


@pytest.mark.parametrize("s,d", [(5, 12), (20, 8)])
def test_reconstruction_matches_direct_ridge_solve(s, d):
    g = torch.Generator().manual_seed(s)
    query, support = torch.randn(7, d, generator=g, dtype=F64), torch.randn(3, s, d, generator=g, dtype=F64)
    alpha, beta = torch.tensor(0.3, dtype=F64), torch.tensor(-0.2, dtype=F64)
    got = reconstruction_distance(query, support, alpha, beta)
    assert torch.allclose(got, direct_ridge_distance(query, support, alpha, beta), rtol=1e-8, atol=1e-10)


def test_logits_prefer_the_class_whose_support_is_the_query():
    torch.manual_seed(0)
    model = FRN(width=0.125).double().eval()
    support = torch.rand(5, 1, 3, 84, 84, dtype=F64)
    with torch.no_grad():
        logits = model.logits(support, support[:, 0])
    assert logits.shape == (5, 5)
    assert torch.equal(logits.argmax(1), torch.arange(5))


def test_head_batched_over_episodes_equals_one_at_a_time():
    torch.manual_seed(1)
    model = FRN(width=0.125).double().eval()
    support, query = torch.randn(4, 5, 2, 25, 16, dtype=F64), torch.randn(4, 30, 25, 16, dtype=F64)
    with torch.no_grad():
        batched = model.head(support, query)
        single = torch.stack([model.head(support[e], query[e]) for e in range(4)])
    assert batched.shape == (4, 30, 5)
    assert torch.allclose(batched, single, rtol=1e-10)


def test_few_shot_accuracy_matches_a_plain_episode_loop():
    from sfam_lite.evaluation import few_shot_accuracy, few_shot_decisions
    from sfam_lite.sampling import EpisodeSampler
    torch.manual_seed(2)
    model = FRN(width=0.125).double().eval()
    labels = [c for c in range(8) for _ in range(6)]
    feats = torch.randn(8, 1, 16, dtype=F64)[torch.tensor(labels)] + 0.8 * torch.randn(48, 25, 16, dtype=F64)
    accs = few_shot_accuracy(model, feats, labels, way=3, shot=2, query=3, episodes=12, seed=5)
    made = few_shot_decisions(model, feats, labels, way=3, shot=2, query=3, episodes=12, seed=5, chunk=5)
    q_idx, s_idx, ok = made.query, made.true_support, made.correct
    assert torch.equal(accs, ok.reshape(12, 9).double().mean(1))
    sampler = EpisodeSampler(labels, 3, 2, 3, 12, seed=5)
    for e in range(12):
        idx = sampler.episode(e)
        correct = 0
        for j in range(3):                       # class j of the episode
            for qi in range(3):
                qf = feats[idx[j * 5 + 2 + qi]]
                dists = []
                for c in range(3):
                    s = torch.cat([feats[idx[c * 5 + k]] for k in range(2)])
                    lam = (s.shape[0] / 16) * model.r[0].exp() + 1e-6
                    w = qf @ s.T @ torch.linalg.inv(s @ s.T + lam * torch.eye(s.shape[0], dtype=F64))
                    dists.append(((model.r[1].exp() * w @ s - qf) ** 2).sum(1).mean())
                correct += int(torch.stack(dists).argmin() == j)
                k = e * 9 + j * 3 + qi
                assert q_idx[k] == idx[j * 5 + 2 + qi] and s_idx[k] == idx[j * 5]
                assert bool(ok[k]) == (torch.stack(dists).argmin() == j)
        assert abs(accs[e].item() - correct / 9) < 1e-12


def test_reconstruction_stays_finite_after_thread_count_changes():
    """Regression: batched LU in MKL returned non-finite values after set_num_threads(1) then (2)."""
    g = torch.Generator().manual_seed(0)
    query, support = torch.randn(50, 160, generator=g), torch.randn(5, 25, 160, generator=g)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        torch.set_num_threads(max(2, before))
        dist = reconstruction_distance(query, support, torch.tensor(0.0), torch.tensor(0.0))
    finally:
        torch.set_num_threads(before)
    assert torch.isfinite(dist).all()
    want = direct_ridge_distance(query.double(), support.double(), torch.tensor(0.0, dtype=F64), torch.tensor(0.0, dtype=F64))
    assert torch.allclose(dist.double(), want, rtol=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run by scripts/test_gpu.sh machines)")
def test_few_shot_decisions_take_features_on_the_gpu():
    # found on an H200: the episode targets lived on the CPU while the logits were on the GPU
    from sfam_lite.evaluation import few_shot_decisions
    torch.manual_seed(2)
    model = FRN(width=0.125).double().eval()
    labels = [c for c in range(8) for _ in range(6)]
    feats = torch.randn(48, 25, 16, dtype=F64)
    on_cpu = few_shot_decisions(model, feats, labels, way=3, shot=1, query=3, episodes=6, seed=1)
    on_gpu = few_shot_decisions(model.cuda(), feats.cuda(), labels, way=3, shot=1, query=3, episodes=6, seed=1)
    for field in ("query", "true_support", "chosen_support", "correct"):
        assert torch.equal(getattr(on_cpu, field), getattr(on_gpu, field).cpu())
