"""Cross-checks of sfam_lite's sanity and localisation numbers against Quantus (0.6), where Quantus computes the same
thing. Each test says what overlaps and what differs.

* Map similarity (:func:`sfam_lite.sanity.map_similarity`) against ``quantus.functions.similarity_func``:
  Spearman is the same (both call scipy, Quantus on the flattened maps); Quantus's SSIM takes the data range from
  the two maps together and does not normalise them, ours min-max normalises each map first (the package's one
  rule), so the two agree on maps that are already in [0, 1] with both ends reached, and not in general (tested).
* Model-parameter randomisation (:func:`sfam_lite.sanity.randomized_copies`) against the generator Quantus's MPRT
  uses (``PyTorchModel.get_random_layer_generator``): given the same layers in the same order (every module with
  ``reset_parameters``, from the output side down), each cascading and independent step re-initialises the same
  parameters. The values differ by design: Quantus re-seeds every layer with the same seed and modifies one copy in
  place; ours derives a seed per layer position and yields a fresh copy per step.
* Pointing game and mass in box (:mod:`sfam_lite.metrics`) against ``quantus.PointingGame`` and
  ``quantus.RelevanceMassAccuracy`` on the same box masks: equal without ties; with tied maxima Quantus counts a hit
  if any maximum is inside, ours takes the first maximum in row-major order (tested). Quantus's mass is of the raw
  map; ours of the min-max normalised map, so they agree on normalised maps.
* Deletion (:func:`sfam_lite.sanity.deletion_insertion`) against ``quantus.PixelFlipping`` (deletion of the most
  relevant features first, the model's output after each step), with the model's similarity to a fixed support as
  its one output (read with ``softmax=False``: Quantus's default softmax over one output is always 1): equal curves
  with one-channel images, maps without ties, a zero baseline (Quantus's "black" is the
  image minimum, 0 here) and ``features_in_step = H·W / steps``. Quantus starts after the first step and integrates
  with unit spacing; ours starts at the unmodified image and integrates over the removed fraction in [0, 1]. Quantus
  flips single features, so with C channels it would order the C copies of each pixel among themselves; ours removes
  a pixel in every channel at once.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

quantus = pytest.importorskip("quantus")
from quantus.functions import similarity_func  # noqa: E402
from quantus.helpers.model.pytorch_model import PyTorchModel  # noqa: E402

from sfam_lite.maps import minmax_normalize  # noqa: E402
from sfam_lite.metrics import box_masks, mass_in_box, pointing_game  # noqa: E402
from sfam_lite.sanity import PairSimilarity, deletion_insertion, map_similarity, randomized_copies  # noqa: E402


def maps_and_boxes(b=6, size=(14, 17), seed=0):
    g = torch.Generator().manual_seed(seed)
    maps = torch.randn(b, *size, generator=g, dtype=torch.float64)
    xy = torch.rand(b, 2, generator=g, dtype=torch.float64) * torch.tensor([size[1] / 2, size[0] / 2])
    wh = 2 + torch.rand(b, 2, generator=g, dtype=torch.float64) * torch.tensor([size[1] / 2, size[0] / 2])
    return maps, torch.cat([xy, wh], 1)


# -- similarity of maps ----------------------------------------------------------------------------------

def test_spearman_and_its_absolute_value_agree_with_quantus():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(5, 12, 12, generator=g, dtype=torch.float64)
    b = a + torch.randn(5, 12, 12, generator=g, dtype=torch.float64)
    ours = map_similarity(a, b, ssim=False)
    for i in range(5):
        x, y = a[i].numpy().ravel(), b[i].numpy().ravel()
        assert ours.spearman[i] == pytest.approx(similarity_func.correlation_spearman(x, y), abs=1e-12)
        assert ours.spearman_abs[i] == pytest.approx(
            similarity_func.correlation_spearman(np.abs(x), np.abs(y)), abs=1e-12)
    batched = similarity_func.correlation_spearman(a.flatten(1).numpy(), b.flatten(1).numpy(), batched=True)
    np.testing.assert_allclose(ours.spearman, batched, rtol=0, atol=1e-12)


def test_ssim_agrees_with_quantus_on_normalised_maps_and_differs_on_raw_ones():
    pytest.importorskip("skimage")
    g = torch.Generator().manual_seed(2)
    a = torch.rand(4, 16, 16, generator=g, dtype=torch.float64) * 3 - 1
    b = a + torch.rand(4, 16, 16, generator=g, dtype=torch.float64)
    ours = map_similarity(a, b).ssim
    na, nb = minmax_normalize(a).numpy(), minmax_normalize(b).numpy()
    theirs = np.array(similarity_func.ssim(na, nb, batched=True))
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)
    raw = np.array(similarity_func.ssim(a.numpy(), b.numpy(), batched=True))
    assert np.abs(raw - ours).max() > 1e-3                 # Quantus does not normalise: a different number


# -- randomisation ---------------------------------------------------------------------------------------

class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 6, 3)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        x = F.relu(self.bn(self.conv1(x)))
        return self.fc(self.conv2(x).mean((-2, -1)))


def changed_keys(state, original):
    return {k for k, v in state.items() if not torch.equal(v, original[k])}


@pytest.mark.parametrize("order", ["top_down", "independent"])
def test_randomisation_changes_the_same_parameters_as_quantus_mprt(order):
    torch.manual_seed(0)
    model = Small().eval()
    with torch.no_grad():                                    # trained-looking BatchNorm, so that a reset shows
        model.bn.running_mean.normal_()
        model.bn.running_var.uniform_(0.5, 1.5)
        model.bn.weight.uniform_(0.5, 1.5)
        model.bn.bias.normal_()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    wrapped = PyTorchModel(model, channel_first=True)
    theirs = [(name, changed_keys(m.state_dict(), original))
              for name, m in wrapped.get_random_layer_generator(order=order, seed=7)]
    layers = [name for name, m in model.named_modules() if hasattr(m, "reset_parameters")]
    if order == "top_down":                                  # Quantus goes from the output side down in a cascade
        layers = layers[::-1]                                # and in forward order for independent layers
    mode = "cascading" if order == "top_down" else "independent"
    ours = [(name, changed_keys(m.state_dict(), original)) for name, m in randomized_copies(model, layers, mode, 7)]
    assert [n for n, _ in ours] == [n for n, _ in theirs] == layers
    assert set(layers) == {"fc", "conv2", "bn", "conv1"}
    for (_, a), (_, b) in zip(ours, theirs):
        assert a - {"bn.num_batches_tracked"} == b - {"bn.num_batches_tracked"}
    assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items())


# -- localisation ----------------------------------------------------------------------------------------

def test_pointing_game_agrees_with_quantus_without_ties_and_differs_with_them():
    maps, boxes = maps_and_boxes()
    masks = box_masks(boxes, maps.shape[-2:])
    theirs = quantus.PointingGame(disable_warnings=True).evaluate_batch(
        a_batch=maps[:, None].numpy(), s_batch=masks[:, None].numpy())
    ours = pointing_game(maps, boxes)
    assert 0 < int(ours.sum()) < len(ours)                  # some hits and some misses: the test can tell
    np.testing.assert_array_equal(ours.numpy(), np.asarray(theirs, bool))
    tied = torch.zeros(1, 10, 10, dtype=torch.float64)
    tied[0, 0, 0] = tied[0, 6, 6] = 1.0                      # two maxima: the first outside the box, one inside
    box = torch.tensor([[5.0, 5.0, 3.0, 3.0]], dtype=torch.float64)
    quantus_hit = quantus.PointingGame(disable_warnings=True).evaluate_batch(
        a_batch=tied[:, None].numpy(), s_batch=box_masks(box, (10, 10))[:, None].numpy())
    assert bool(quantus_hit[0]) and not bool(pointing_game(tied, box)[0])


def test_mass_in_box_agrees_with_quantus_relevance_mass_on_normalised_maps():
    maps, boxes = maps_and_boxes(seed=3)
    masks = box_masks(boxes, maps.shape[-2:])
    normalised = minmax_normalize(maps)
    theirs = quantus.RelevanceMassAccuracy(disable_warnings=True).evaluate_batch(
        a_batch=normalised[:, None].numpy(), s_batch=masks[:, None].numpy())
    np.testing.assert_allclose(mass_in_box(maps, boxes).numpy(), theirs, rtol=1e-12, atol=0)
    raw = quantus.RelevanceMassAccuracy(disable_warnings=True).evaluate_batch(
        a_batch=np.abs(maps[:, None].numpy()), s_batch=masks[:, None].numpy())
    assert np.abs(raw - mass_in_box(maps, boxes).numpy()).max() > 1e-3   # Quantus does not normalise


# -- deletion --------------------------------------------------------------------------------------------

class SimilarityAsOutput(nn.Module):
    """A "classifier" with one output per query: its model's cosine similarity to that query's fixed support
    embedding (row i of the batch is pair i), as Quantus's PixelFlipping reads ``model(x)[i, y_i]``."""

    def __init__(self, body: nn.Module, support: torch.Tensor):
        super().__init__()
        self.body = body
        self.register_buffer("support_embedding", body(support).detach())

    def forward(self, x):
        return F.cosine_similarity(self.body(x), self.support_embedding, dim=-1)[:, None]


def test_deletion_agrees_with_quantus_pixel_flipping():
    torch.manual_seed(0)
    body = nn.Sequential(nn.Conv2d(1, 5, 3, padding=1), nn.ReLU(), nn.Conv2d(5, 6, 3), nn.Flatten(2),
                         nn.Unflatten(2, (10, 10)), nn.AdaptiveAvgPool2d(2), nn.Flatten(1)).eval()
    g = torch.Generator().manual_seed(5)
    b, h, w, steps = 4, 12, 12, 8
    query = torch.rand(b, 1, h, w, generator=g) + 0.1           # float32: Quantus runs the model on float32
    query[:, :, 0, 0] = 0.0                                   # each image's minimum is 0: Quantus's "black"
    support = torch.rand(b, 1, h, w, generator=g)
    maps = torch.stack([torch.randperm(h * w, generator=g).view(h, w) for _ in range(b)]).float()  # no ties

    def similarity(q, encoded):
        return F.cosine_similarity(body(q), encoded, dim=-1)
    ours = deletion_insertion(PairSimilarity(body, similarity), query, support, maps, steps=steps, baseline="zero")

    model = SimilarityAsOutput(body, support).eval()
    theirs = quantus.PixelFlipping(features_in_step=h * w // steps, perturb_baseline="black", normalise=False,
                                   disable_warnings=True, display_progressbar=False)(
        model=model, x_batch=query.numpy(), y_batch=np.zeros(b, dtype=int), a_batch=maps[:, None].numpy(),
        channel_first=True, batch_size=b, device="cpu", softmax=False)
    theirs = np.asarray(theirs)
    assert theirs.shape == (b, steps)
    np.testing.assert_allclose(ours.scores[:, 1:].numpy(), theirs, rtol=0, atol=1e-6)
    assert not np.allclose(theirs[:, 0], theirs[:, -1])       # the curves move: the comparison can fail
