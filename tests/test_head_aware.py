"""The book's head-aware SFAM: channel contributions that sum to the model's own distance of its embeddings
(checked against torch's cosine and distance of nn.Linear outputs), and SFAM itself when the head is the identity."""
import pytest
import torch
import torch.nn.functional as F

import sfam_lite
from sfam_lite.head_aware import HeadAwareSFAM, head_contributions


def vectors(b=6, n=12, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, n, generator=g, dtype=dtype), torch.rand(b, n, generator=g, dtype=dtype)


@pytest.mark.parametrize("with_bias", [True, False])
def test_contributions_sum_to_the_models_own_distance(with_bias):
    v_q, v_s = vectors()
    torch.manual_seed(1)
    head = torch.nn.Linear(12, 5, bias=with_bias).double()
    e_q, e_s = head(v_q), head(v_s)
    c, bias_term, distance = head_contributions(v_q, v_s, head.weight.detach(), head.bias, "cosine")
    cos = F.cosine_similarity(e_q, e_s, dim=-1).detach()
    torch.testing.assert_close(c.sum(-1) + bias_term, 2 - 2 * cos, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(distance, 2 - 2 * cos, rtol=1e-12, atol=1e-12)
    assert bool((bias_term.abs() > 1e-6).all()) == with_bias
    c, bias_term, distance = head_contributions(v_q, v_s, head.weight.detach(), head.bias, "euclidean")
    torch.testing.assert_close(c.sum(-1), (e_q - e_s).square().sum(-1).detach(), rtol=1e-12, atol=1e-12)
    assert torch.equal(bias_term, torch.zeros(6, dtype=torch.float64))
    assert (c < 0).any()        # channels can pull the embeddings together through the mixing


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_the_identity_head_is_sfam(metric):
    """W = I, no bias: the contributions are Eq. 2's / Eq. 5's d_n and the maps are SFAM's."""
    g = torch.Generator().manual_seed(3)
    a_q, a_s = torch.rand(4, 8, 5, 5, generator=g), torch.rand(4, 2, 8, 5, 5, generator=g)
    ours = HeadAwareSFAM(None, projection=torch.eye(8), metric=metric).explain_features(a_q, a_s, size=(20, 20))
    sfam = sfam_lite.SFAM(None, metric=metric).explain_features(a_q, a_s, size=(20, 20))
    torch.testing.assert_close(ours.weights, sfam.weights, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.query_maps, sfam.query_maps, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.explained_similarity, sfam.explained_similarity, rtol=1e-5, atol=1e-6)


def test_weights_follow_the_cis_rule_and_bad_projections_are_refused():
    g = torch.Generator().manual_seed(4)
    a_q, a_s = torch.rand(3, 6, 4, 4, generator=g), torch.rand(3, 1, 6, 4, 4, generator=g)
    head = torch.nn.Linear(6, 3)
    out = HeadAwareSFAM(None, projection=head).explain_features(a_q, a_s)
    c = out.scores
    for w, ci in zip(out.weights, c):             # the channel adding most to the distance weighs 0, the least 1
        assert w[ci.argmax()] == 0 and w[ci.argmin()] == 1
    with pytest.raises(ValueError, match="projection is needed"):
        HeadAwareSFAM(None)
    with pytest.raises(ValueError, match=r"\(D, N\) matrix with N = 6"):
        HeadAwareSFAM(None, projection=torch.nn.Linear(5, 3)).explain_features(a_q, a_s)
    with pytest.raises(TypeError, match="projection must be"):
        HeadAwareSFAM(None, projection="embed")
