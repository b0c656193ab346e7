"""The explorer (:mod:`sfam_lite.explorer`) on tiny random FRN and GPW models: the cached features against plain
forward passes, the heads against the models, every view against an explanation computed from the images
through the model (not from the cache) and the protocol's boxes, the pairs against a cosine search written
here; the model is counted by a forward hook and never runs after the gallery is built — whatever the widgets
do — and a threshold move computes no explanation. The widgets are driven headless by setting their values."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import sfam_lite
from sfam_lite.evaluate import CURVE_THRESHOLDS
from sfam_lite.methods import METHODS
from sfam_lite.explorer import (LAYERS, TRUE_BOX, Explorer, ExplorerWidget, Gallery, State, candidate_layers,
                                head_after, render_panel, threshold_frames, threshold_mask)
from sfam_lite.localization import boxes_from_maps
from sfam_lite.models import FRN, GPWEmbedding
from sfam_lite.references import CentreBoxMap
from sfam_lite.slider import static_slider

from helpers import fake_test

ROOT = Path(__file__).resolve().parents[1]
CLASSES, PER_CLASS, SIZE = 4, 6, 32


def plain_iou(a, b) -> float:
    """IoU of two (x, y, w, h) boxes, written out."""
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw, ih = max(0.0, min(ax1, bx1) - max(a[0], b[0])), max(0.0, min(ay1, by1) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


class Counter:
    """Counts the model's forward calls with a forward pre-hook (independently of the explorer)."""

    def __init__(self, model):
        self.calls = 0
        model.register_forward_pre_hook(lambda *_: setattr(self, "calls", self.calls + 1))


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    frn = FRN(width=0.125).eval()
    gpw = GPWEmbedding("resnet10", dim=16, last_stride=1, freeze_bn=False).eval()
    test = fake_test()
    counters = {"FRN": Counter(frn), "GPW": Counter(gpw)}
    frn_g = Gallery.from_test(frn, "frn", test, classes=CLASSES, per_class=PER_CLASS, episodes=10, seed=0)
    gpw_g = Gallery.from_test(gpw, "gpw", test, classes=CLASSES, per_class=PER_CLASS, seed=0,
                              priors=((12.0, 10.0), 0.25))
    return {"FRN": frn_g, "GPW": gpw_g}, counters, test


def test_gallery_takes_per_class_images_of_seeded_classes(setup):
    galleries, counters, test = setup
    for g in galleries.values():
        assert len(g.index) == CLASSES * PER_CLASS == len(set(g.index.tolist()))
        assert torch.equal(g.labels, test.labels[g.index]) and torch.equal(g.images, test.images[g.index])
        counts = torch.bincount(g.labels)
        assert (counts[counts > 0] == PER_CLASS).all() and (counts > 0).sum() == CLASSES
        assert counters[g.name].calls == 1, "the model ran once for all gallery images (one batch)"
    again = Gallery.from_test(galleries["FRN"].model, "frn", test, classes=CLASSES, per_class=PER_CLASS, episodes=10)
    assert torch.equal(again.index, galleries["FRN"].index) and torch.equal(again.queries, galleries["FRN"].queries)
    other = Gallery.from_test(galleries["FRN"].model, "frn", test, classes=CLASSES, per_class=PER_CLASS, episodes=10,
                              seed=5)
    assert not torch.equal(other.index, galleries["FRN"].index)
    counters["FRN"].calls -= 2                                  # the two extra galleries above


def test_cached_features_are_the_layers_outputs(setup):
    galleries, _, _ = setup
    frn, gpw = galleries["FRN"], galleries["GPW"]
    with torch.no_grad():
        x = frn.images
        for name in LAYERS:                                      # FRN: the blocks in sequence
            x = getattr(frn.model.feature_extractor, name)(x)
            assert torch.allclose(frn.features[name], x, atol=1e-5)
        b = gpw.model.backbone
        x = b.maxpool(b.relu(b.bn1(b.conv1(gpw.images))))          # GPW: torchvision's stem, then the stages
        for name in LAYERS:
            x = getattr(b, name)(x)
            assert torch.allclose(gpw.features[name], x, atol=1e-5)


@pytest.mark.parametrize("layer", LAYERS)
def test_heads_continue_the_model_from_each_layer(setup, layer):
    galleries, _, _ = setup
    with torch.no_grad():
        frn, gpw = galleries["FRN"], galleries["GPW"]
        out = head_after(frn.model, "frn", layer)(frn.features[layer])
        assert torch.allclose(out, frn.model(frn.images), atol=1e-5)
        raw = head_after(gpw.model, "gpw", layer)(gpw.features[layer])
        assert torch.allclose(raw, gpw.model.embed(gpw.model.backbone(gpw.images)), atol=1e-5)
        assert torch.allclose(F.normalize(raw, dim=-1), gpw.model(gpw.images), atol=1e-5)


def test_pairs_are_correct_decisions_with_supports_of_the_class(setup):
    galleries, _, _ = setup
    for g in galleries.values():
        assert g.samples >= 1 and g.k_max == 5
        for q, support in zip(g.queries.tolist(), g.supports.tolist()):
            assert q not in support and len(set(support)) == len(support)
            assert (g.labels[support] == g.labels[q]).all()
    gpw = galleries["GPW"]
    with torch.no_grad():
        e = gpw.model(gpw.images)
    for q, s in zip(gpw.queries.tolist(), gpw.supports[:, 0].tolist()):      # the top-1 cosine neighbour, by a loop
        best = max((j for j in range(len(e)) if j != q), key=lambda j: float(F.cosine_similarity(e[q], e[j], dim=0)))
        assert s == best
    hits = sum(int(gpw.labels[max((j for j in range(len(e)) if j != q),
                                  key=lambda j: float(F.cosine_similarity(e[q], e[j], dim=0)))] == gpw.labels[q])
               for q in range(len(e)))
    assert gpw.samples == hits == gpw.info["correct"]


@pytest.mark.parametrize("model, method, metric, layer, k", [
    ("FRN", "sfam", "euclidean", "layer4", 1), ("FRN", "sfam", "cosine", "layer2", 3),
    ("GPW", "sfam", "cosine", "layer4", 2), ("GPW", "ram", "cosine", "layer3", 1),
    ("FRN", "cgram", "euclidean", "layer3", 2), ("GPW", "gradfam", "euclidean", "layer4", 1),
    ("GPW", "decomposition", "cosine", "layer4", 2)])
def test_views_match_an_explanation_through_the_model(setup, model, method, metric, layer, k):
    galleries, counters, _ = setup
    g = galleries[model]
    explorer = Explorer(galleries)
    state = State(model, method, metric, layer, k, sample=g.samples - 1, threshold=0.3)
    view = explorer.view(state)
    q, s = int(g.queries[state.sample]), g.supports[state.sample, :k]
    target = candidate_layers(g.model, g.kind)[layer]
    raw = g.model.embed if model == "GPW" else None             # Grad-FAM reads GPW's embedding before normalising
    build = {"sfam": lambda: sfam_lite.SFAM(g.model, target, metric=metric),
             "ram": lambda: sfam_lite.RAM(g.model, target), "cgram": lambda: sfam_lite.CGRAM(g.model, target),
             "gradfam": lambda: sfam_lite.GradFAM(g.model, target, embedding_layer=raw),
             "decomposition": lambda: sfam_lite.Decomposition(g.model, target, projection=g.model.embed)}[method]
    before = counters[model].calls
    with build() as explainer:                                   # through the model, images in, no cache
        ref = explainer(g.images[q][None], g.images[s][None])
    counters[model].calls = before
    assert torch.allclose(view.query_map, ref.query_maps[0], atol=1e-4, rtol=1e-4)
    assert torch.allclose(view.support_maps, ref.support_maps[0], atol=1e-4, rtol=1e-4)
    assert np.array_equal(view.query_box, boxes_from_maps(view.query_map, 0.3))     # the protocol's box of that map
    assert np.array_equal(view.support_boxes, boxes_from_maps(view.support_maps, 0.3))
    assert view.iou == pytest.approx(plain_iou(view.query_box, g.boxes[q].tolist()))
    expected = [plain_iou(b, t) for b, t in zip(view.support_boxes, g.boxes[s].tolist())]
    assert view.support_ious == pytest.approx(expected)
    norm = (view.query_map - view.query_map.min()) / (view.query_map.max() - view.query_map.min())
    assert not (view.query_mask & ~(norm >= 0.3).numpy()).any()           # only kept pixels ...
    rows, cols = np.nonzero(view.query_mask)                                # ... whose box is the predicted box
    assert [cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1] == view.query_box.tolist()
    assert view.cosine == pytest.approx(float(ref.cosine_similarity[0]), abs=1e-5)
    assert str(view.iou)[:4] in view.readout() or f"{view.iou:.2f}" in view.readout()


def test_curve_is_the_iou_at_each_threshold(setup):
    galleries, _, _ = setup
    explorer = Explorer(galleries)
    state = State("FRN", "sfam", "euclidean", "layer4", 1, 0, 0.2)
    curve = explorer.view(state).curve
    assert len(curve) == len(CURVE_THRESHOLDS)
    assert curve.tolist() == pytest.approx([explorer.view(replace(state, threshold=t)).iou for t in CURVE_THRESHOLDS])


def test_threshold_moves_compute_nothing_and_the_model_never_runs(setup):
    galleries, counters, _ = setup
    explorer = Explorer(galleries)
    before = {name: c.calls for name, c in counters.items()}
    state = State("GPW", "cgram", "cosine", "layer4", 2, 0, 0.2)
    first = explorer.view(state)
    assert explorer.explain_calls == 1
    ious = {explorer.view(replace(state, threshold=t)).iou for t in np.linspace(0.05, 0.95, 19)}
    assert explorer.explain_calls == 1 and len(ious) > 1, "threshold moves re-threshold the cached maps"
    for change in ({"layer": "layer2"}, {"method": "ram"}, {"k": 3}, {"sample": galleries["GPW"].samples - 1},
                   {"model": "FRN", "metric": "euclidean"}, {"method": "sfam", "metric": "euclidean"}):
        explorer.view(replace(state, **change))
    assert explorer.explain_calls == 7
    explorer.view(state)                                          # back to the first state: from the cache
    assert explorer.explain_calls == 7 and explorer.view(state).iou == first.iou
    assert {name: c.calls for name, c in counters.items()} == before, "no forward pass after the galleries"


def test_metric_changes_only_sfam(setup):
    galleries, _, _ = setup
    explorer = Explorer(galleries)
    base = State("GPW", "sfam", "euclidean", "layer4", 1, 0, 0.2)
    assert not torch.equal(explorer.view(base).query_map, explorer.view(replace(base, metric="cosine")).query_map)
    explorer.view(replace(base, method="ram"))
    calls = explorer.explain_calls
    explorer.view(replace(base, method="ram", metric="cosine"))          # RAM does not read the metric
    assert explorer.explain_calls == calls


def test_decomposition_on_frn_and_references(setup):
    galleries, _, _ = setup
    explorer = Explorer(galleries)
    view = explorer.view(State("FRN", "decomposition", "euclidean"))
    assert view.query_map is None and view.iou is None and "not defined" in view.note and view.note in view.readout()
    assert "centre-box" not in explorer.methods("FRN") and "centre-box" in explorer.methods("GPW")
    with pytest.raises(ValueError, match="unknown method 'centre-box'"):
        explorer.view(State("FRN", "centre-box"))
    ref = explorer.view(State("GPW", "centre-box", "cosine"))
    assert torch.equal(ref.query_map, CentreBoxMap((12.0, 10.0)).maps(1, (SIZE, SIZE), None)[0].float())


@pytest.mark.parametrize("change, match", [
    ({"model": "ResNet"}, "unknown model"), ({"method": "gradcam"}, "unknown method"),
    ({"metric": "manhattan"}, "unknown metric"), ({"layer": "layer5"}, "unknown layer"),
    ({"k": 6}, "at most 5"), ({"k": 0}, ">= 1"), ({"sample": 10 ** 6}, "does not exist"),
    ({"threshold": 1.5}, r"\[0, 1\]")])
def test_bad_states_are_refused(setup, change, match):
    galleries, _, _ = setup
    with pytest.raises((ValueError, TypeError), match=match):
        Explorer(galleries).view(replace(State("FRN"), **change))


def test_bad_gallery_arguments(setup):
    galleries, _, test = setup
    model = galleries["FRN"].model
    with pytest.raises(ValueError, match="per_class >= 6"):
        Gallery.from_test(model, "frn", test, classes=3, per_class=4, k_max=5)
    with pytest.raises(ValueError, match="has 6 classes"):
        Gallery.from_test(model, "frn", test, classes=7, per_class=6)
    with pytest.raises(ValueError, match="unknown model kind"):
        Gallery.from_test(model, "vit", test)
    with pytest.raises(TypeError, match="non-empty list"):
        Explorer([])


def test_threshold_mask_is_the_protocols_box():
    rng = np.random.default_rng(3)
    for _ in range(20):
        m = rng.random((12, 15))
        mask = threshold_mask(torch.as_tensor(m), 0.6)
        rows, cols = np.nonzero(mask)
        box = [cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1]
        assert box == boxes_from_maps(m, 0.6).tolist()


def test_render_panel_draws_boxes_on_pixel_edges():
    image = torch.zeros(3, 10, 12)
    panel = render_panel(image, boxes=[((2, 3, 4, 5), (255, 0, 255))], scale=2)
    assert panel.shape == (20, 24, 3)
    magenta = (panel == [255, 0, 255]).all(-1)
    rows, cols = np.nonzero(magenta)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (6, 15, 4, 11)   # edges 3..8 and 2..6, times 2
    assert magenta.sum() == 2 * 10 + 2 * 8 - 4                                  # a one-pixel outline
    heat = torch.arange(120.0).reshape(10, 12)
    a, b = render_panel(image, heat, heat > 60), render_panel(image, heat, heat > 60)
    assert np.array_equal(a, b) and not np.array_equal(a, render_panel(image, heat, heat > 90))


def test_frames_for_the_static_slider(setup):
    galleries, counters, _ = setup
    explorer = Explorer(galleries)
    before = counters["GPW"].calls
    state = State("GPW", metric="cosine", sample=0)
    methods = ["sfam", "ram", "decomposition"]
    frames, readouts = threshold_frames(explorer, state, methods, colors=30, labels=False)
    assert len(frames) == len(readouts) == len(CURVE_THRESHOLDS)
    for t, frame, text in zip(CURVE_THRESHOLDS, frames, readouts):
        assert frame.shape == (SIZE, 4 * SIZE + 3 * 2, 3)
        assert len(np.unique(frame.reshape(-1, 3), axis=0)) <= 32
        expected = " · ".join(f"{METHODS[m]} {explorer.view(replace(state, method=m, threshold=t)).iou:.2f}"
                              for m in methods)
        assert text == f"threshold {t:.2f} — IoU {expected}"
    again, _ = threshold_frames(explorer, state, methods, colors=30, labels=False)
    assert all(np.array_equal(a, b) for a, b in zip(frames, again))
    # the query panel (with its true box) is the same picture at every threshold: one palette keeps it so
    assert all(np.array_equal(f[:, :SIZE], frames[0][:, :SIZE]) for f in frames[1:])
    assert len(np.unique(np.concatenate([f[:, :SIZE].reshape(-1, 3) for f in frames]), axis=0)) <= 32
    assert any(not np.array_equal(frames[0], f) for f in frames[1:])
    out = static_slider(frames, CURVE_THRESHOLDS, label="threshold", readouts=readouts)
    assert out.n_frames == 19 and out.size_bytes < 200_000
    assert counters["GPW"].calls == before
    frn_frames, frn_text = threshold_frames(explorer, State("FRN"), ["sfam", "decomposition"])
    assert all(t.endswith("Decomposition —") for t in frn_text)


def test_widgets_driven_headless(setup):
    pytest.importorskip("ipywidgets")
    galleries, counters, _ = setup
    before = {name: c.calls for name, c in counters.items()}
    widget = ExplorerWidget(Explorer(galleries))
    explorer = widget.explorer
    assert widget.renders == 1 and bytes(widget.image.value).startswith(b"\x89PNG")
    image, text, calls = bytes(widget.image.value), widget.readout.value, explorer.explain_calls
    widget.threshold.value = 0.55
    assert widget.readout.value != text and "threshold 0.55" in widget.readout.value
    assert bytes(widget.image.value) != image
    assert explorer.explain_calls == calls and widget.renders == 2, "a threshold move computes no map"
    assert widget.metric.disabled is False
    widget.method.value = "ram"
    assert widget.metric.disabled is True and explorer.explain_calls == calls + 1
    widget.layer.value = "layer2"
    assert "layer2" in widget.readout.value and explorer.explain_calls == calls + 2
    widget.model.value = "GPW"
    g = galleries["GPW"]
    assert widget.sample.max == g.samples - 1 and "centre-box" in [v for _, v in widget.method.options]
    assert widget.method.value == "ram" and widget.readout.value.count("GPW") == 1
    widget.method.value = "centre-box"
    widget.model.value = "FRN"                                   # FRN has no references here: back to SFAM
    assert widget.method.value == "sfam" and widget.state == State("FRN", "sfam", "euclidean", "layer2", 1, 0, 0.55)
    widget.k.value = 3
    assert widget.readout.value.count(",") >= 2                 # three support IoUs
    widget.sample.value = 1
    assert widget.view.state.sample == 1
    assert {name: c.calls for name, c in counters.items()} == before, "the widgets never run the model"
    bundle = widget._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle


def test_frames_name_their_panels_and_say_where_a_method_is_not_defined(setup):
    """A band above the panels names each one (ink over every panel's column, nowhere else); the panel of a method
    the model lacks (Decomposition on a Euclidean model) says so in white; below the band the picture is the
    unlabelled frame, and the band adds only black to its colours."""
    galleries, _, _ = setup
    explorer = Explorer(galleries)
    methods = ["sfam", "decomposition"]
    plain, _ = threshold_frames(explorer, State("FRN"), methods, colors=30, labels=False)
    named, _ = threshold_frames(explorer, State("FRN"), methods, colors=30)
    from sfam_lite.explorer import LABEL_BAND
    for p, n in zip(plain, named):
        assert n.shape == (p.shape[0] + LABEL_BAND, p.shape[1], 3)
        band, below = n[:LABEL_BAND], n[LABEL_BAND:]
        ink = (band < 128).all(-1)
        for x in (0, SIZE + 2, 2 * (SIZE + 2)):                        # the three panels' columns
            assert ink[:, x:x + SIZE].sum() > 5
        assert not ink[:, SIZE:SIZE + 2].any() and not ink[:, 2 * SIZE + 2:2 * SIZE + 4].any()   # the gaps
        assert set(map(tuple, band.reshape(-1, 3))) <= {(0, 0, 0), (255, 255, 255)}
        assert np.array_equal(below[:, :2 * SIZE + 2], p[:, :2 * SIZE + 2])      # query and SFAM untouched
        written = (below[:, 2 * (SIZE + 2):] != p[:, 2 * (SIZE + 2):]).any(-1)
        assert written.any() and (below[:, 2 * (SIZE + 2):][written] == 255).all()   # "not defined", in white


def test_importing_the_package_imports_no_widgets_and_no_pyplot():
    code = ("import sys, sfam_lite, sfam_lite.explorer, sfam_lite.slider\n"
            "print(sorted(m for m in sys.modules if m.startswith(('ipywidgets', 'matplotlib.pyplot'))))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_frames_wider_than_the_column_are_made_of_shrunk_panels(setup):
    """CUB's 227 px panels, six to a row, made 1,372 px frames and a 2.2 MB page; frames now fit ``max_width``:
    the panels shrink together, the boxes are drawn at the shrunk size, the pictures are the same pictures."""
    galleries, _, _ = setup
    explorer = Explorer(galleries)
    state = State("GPW", metric="cosine", sample=0)
    methods = ["sfam", "ram", "decomposition"]
    full, text = threshold_frames(explorer, state, methods, colors=None, max_width=None, labels=False)
    small, small_text = threshold_frames(explorer, state, methods, colors=None, max_width=70, labels=False)
    assert full[0].shape == (SIZE, 4 * SIZE + 3 * 2, 3) and small_text == text
    width = (70 - 3 * 2) // 4                            # four panels and three gaps of 2 px in 70 px
    for f, s in zip(full, small):
        assert s.shape[1] <= 70 and s.shape[0] == width
        big = f[:, :SIZE].astype(float)                  # the query panel, averaged over 2 x 2 blocks by hand
        by_hand = big.reshape(width, 2, width, 2, 3).mean((1, 3))
        # the same picture, except on the box lines drawn over it
        assert np.median(np.abs(s[:, :width].astype(float) - by_hand)) < 1
        assert (s == TRUE_BOX).all(-1).any()             # the true box is still drawn
    assert static_slider(small, CURVE_THRESHOLDS, label="threshold").size_bytes < \
        static_slider(full, CURVE_THRESHOLDS, label="threshold").size_bytes
