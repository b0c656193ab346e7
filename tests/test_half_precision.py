"""A half-precision model's features (float16, bfloat16) explained through the CIS (Eq. 2, 4, 5) and the map
(Eq. 3): the reductions run in float32, so features whose squared distance exceeds float16's range (65504) give
finite scores and maps, equal to half precision to the float32 computation on the same values."""
import pytest
import torch

from sfam_lite import cis
from sfam_lite.maps import sfam_map
from sfam_lite.metrics import mass_in_box, pointing_game

# relative precision of each dtype's results (its machine epsilon, with room for one rounding of the output)
TOL = {torch.float16: dict(rtol=2e-3, atol=2e-3), torch.bfloat16: dict(rtol=1.6e-2, atol=1.6e-2)}


def features(dtype):
    """Query and support feature maps (B=3, N=64, 5×5) of a ReLU network with large activations, in ``dtype``."""
    g = torch.Generator().manual_seed(0)
    a_q = (torch.rand(3, 64, 5, 5, generator=g) * 300).to(dtype)
    a_s = (torch.rand(3, 64, 5, 5, generator=g) * 100).to(dtype)
    return a_q, a_s


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_half_precision_features_are_explained_as_in_float32(dtype, metric):
    a_q, a_s = features(dtype)
    v_q = cis.support_prototype(a_q.flatten(2).transpose(1, 2))          # Eq. 1 over positions: pooled (B, N)
    v_s = cis.support_prototype(a_s.flatten(2).transpose(1, 2))
    assert v_q.dtype == dtype
    torch.testing.assert_close(v_q.float(), a_q.float().mean((-2, -1)), **TOL[dtype])
    if dtype == torch.float16:   # the naive float16 distance overflows: this is what the float32 reduction prevents
        assert torch.isinf((v_q - v_s).square().sum(-1)).all()
    omega = cis.contribution_scores(v_q, v_s, metric)
    assert omega.dtype == dtype and torch.isfinite(omega).all()
    omega32 = cis.contribution_scores(v_q.float(), v_s.float(), metric)
    torch.testing.assert_close(omega.float(), omega32, rtol=TOL[dtype]["rtol"], atol=0)
    weights = cis.normalize_scores(omega)
    assert weights.dtype == dtype and torch.isfinite(weights).all()
    torch.testing.assert_close(weights.float(), cis.normalize_scores(omega.float()), **TOL[dtype])
    maps = sfam_map(a_q, weights, size=(20, 20))
    assert maps.dtype == dtype and torch.isfinite(maps).all()
    maps32 = sfam_map(a_q.float(), weights.float(), size=(20, 20))
    torch.testing.assert_close(maps.float(), maps32, rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"] * maps32.abs().max().item())
    distance = cis.squared_distance(v_q, v_s)
    assert distance.dtype == torch.float32 and torch.isfinite(distance).all()
    assert torch.isfinite(cis.cosine_similarity(v_q, v_s)).all()
    boxes = torch.tensor([[2.0, 2.0, 10.0, 10.0]] * 3)
    torch.testing.assert_close(mass_in_box(maps, boxes), mass_in_box(maps.float(), boxes))
    assert torch.equal(pointing_game(maps, boxes), pointing_game(maps.float(), boxes))


def test_float16_scores_overflowed_before():
    """The case the float32 reduction fixes: D = Σ d_n of these float16 vectors exceeds 65504."""
    v_q = torch.full((64,), 200.0, dtype=torch.float16)
    v_s = torch.zeros(64, dtype=torch.float16)
    v_s[0] = 1.0
    assert torch.isinf((v_q - v_s).square().sum())              # what a float16 reduction gives
    omega = cis.contribution_scores(v_q, v_s)
    assert torch.isfinite(omega).all()
    torch.testing.assert_close(omega.float(), cis.contribution_scores(v_q.float(), v_s.float()), rtol=2e-3, atol=0)
    assert cis.squared_distance(v_q, v_s).item() == pytest.approx(63 * 200.0 ** 2 + 199.0 ** 2)


class SmallCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 48, 3, padding=1), torch.nn.ReLU(),
                                        torch.nn.Conv2d(48, 300, 3, padding=1), torch.nn.ReLU())

    def forward(self, x):
        return self.body(x).mean(dim=(-2, -1))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_a_half_precision_model_is_explained_as_in_float32(dtype, metric):
    """The whole explainer on a model converted to half precision, whose squared distance (about 1e5) is beyond
    float16's range: finite maps and distance, equal to half precision to the float32 model's on the same weights."""
    from sfam_lite import SFAM
    torch.manual_seed(0)
    net = SmallCNN().eval()
    with torch.no_grad():
        net.body[2].weight.mul_(800)                     # large activations: D well beyond 65504
    g = torch.Generator().manual_seed(3)
    q, s = torch.rand(2, 3, 8, 8, generator=g), 0.1 * torch.rand(2, 1, 3, 8, 8, generator=g)   # bright vs dark
    half = SmallCNN().eval()
    half.load_state_dict(net.state_dict())
    half = half.to(dtype)
    with SFAM(net, net.body[3], metric=metric) as explain:
        want = explain(q, s)
    with SFAM(half, half.body[3], metric=metric) as explain:
        got = explain(q.to(dtype), s.to(dtype))
    if metric == "euclidean":
        assert want.squared_distance.min() > 65504
    assert torch.isfinite(got.squared_distance).all() and torch.isfinite(got.query_maps.float()).all()
    # the half model's own features differ from the float32 model's by its rounding: compare relative to scale
    scale = want.query_maps.abs().amax(dim=(-2, -1), keepdim=True)
    torch.testing.assert_close(got.query_maps.float() / scale, want.query_maps / scale, rtol=0, atol=5e-2)
    torch.testing.assert_close(got.squared_distance.float(), want.squared_distance, rtol=5e-2, atol=0)
