"""The localisation experiments: known answers on maps drawn by hand, intervals against plain loops, and the
command end to end on a tiny model and benchmark."""
import json

import numpy as np
import pytest
import torch

from data_download.synthetic import generate
from sfam_lite.cli import evaluate_main as main
from sfam_lite.evaluate import _evaluate_pairs, format_table
from sfam_lite.methods import METHODS, ModelSetup
from sfam_lite.metrics import summarise
from sfam_lite.localization import iou

TINY_FRN = dict(width=0.0625, image_size=32, way=3, shot=1, query=2, episodes=2, milestones=(1,))
TINY_GPW = dict(dim=16, image_size=32, classes_per_batch=3, instances=2, batches=2)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    generate(root, images_per_class=6, size=40, num_classes=16, progress=False, workers=1)
    return root


def test_maps_that_are_the_box_score_one_and_the_centre_box_scores_its_own_iou():
    """Feature maps whose channels light up exactly the box (at image resolution): SFAM's and RAM's boxes are
    the ground truth; the centre-box reference scores the IoU of the centre box, computed here by hand."""
    g = torch.Generator().manual_seed(0)
    n, size = 12, 24
    xy = torch.randint(0, 12, (n, 2), generator=g)
    wh = torch.randint(4, 12, (n, 2), generator=g)
    boxes = torch.cat([xy, wh], 1).float()
    maps = torch.zeros(n, 2, size, size)
    for k, (x, y, w, h) in enumerate(boxes.long().tolist()):
        maps[k, :, y:y + h, x:x + w] = torch.tensor([1.0, 2.0])[:, None, None]
    setup = ModelSetup("gpw", "cosine", None, None, None)
    q_idx, s_idx = torch.arange(n), torch.roll(torch.arange(n), 1)
    result = _evaluate_pairs(setup, maps, boxes, q_idx, s_idx, None, ("sfam", "ram", "centre-box"), (0.5,),
                             ((8.0, 6.0), 0.25), 0, (size, size), False, {})
    assert np.allclose(result.query["sfam"], 1) and np.allclose(result.query["ram"], 1)
    assert result.query_images.tolist() == q_idx.tolist()
    assert np.allclose(result.support["ram"], 1)
    centre = np.array([size / 2 - 4, size / 2 - 3, 8, 6])
    assert np.allclose(result.query["centre-box"][0], [iou(centre, b) for b in boxes.numpy()])


def test_each_sample_keeps_its_query_image_when_pairs_repeat():
    """Pairs explained once per distinct pair and spread back to the samples: a sample's IoU and its query image
    stay together (a query image drawn three times, against two supports)."""
    g = torch.Generator().manual_seed(1)
    size = 16
    maps = torch.rand(5, 3, size, size, generator=g)
    boxes = torch.tensor([[2.0, 2.0, 8.0, 8.0]]).repeat(5, 1)
    q_idx, s_idx = torch.tensor([3, 1, 3, 3, 0]), torch.tensor([4, 2, 4, 2, 1])
    setup = ModelSetup("gpw", "cosine", None, None, None)
    result = _evaluate_pairs(setup, maps, boxes, q_idx, s_idx, None, ("sfam",), (0.2,), ((8.0, 6.0), 0.25), 0,
                             (size, size), False, {})
    assert result.query_images.tolist() == [3, 1, 3, 3, 0]
    assert result.query["sfam"][0, 0] == result.query["sfam"][0, 2]        # the same pair (3, 4) twice
    assert result.info["distinct_pairs"] == 4


def test_summary_intervals_against_plain_loops():
    rng = np.random.default_rng(0)
    ious = rng.random(50)
    groups = np.repeat(np.arange(10), 5)
    got = summarise(ious, groups)
    episode_means = [np.mean(ious[groups == e]) for e in range(10)]
    sd = np.sqrt(sum((m - np.mean(episode_means)) ** 2 for m in episode_means) / 9)
    assert got["mean_iou"] == pytest.approx(np.mean(episode_means))
    assert got["mean_iou_half"] == pytest.approx(1.96 * sd / np.sqrt(10))
    hits = [np.mean(ious[groups == e] >= 0.5) for e in range(10)]
    assert got["accuracy"] == pytest.approx(np.mean(hits)) and got["interval_units"] == 10
    assert summarise(ious)["interval_units"] == 50


@pytest.mark.parametrize("kind, config", [("frn", TINY_FRN), ("gpw", TINY_GPW)])
def test_command_end_to_end_is_deterministic(tiny_root, tmp_path, capsys, kind, config):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(config))
    args = [kind, "--config", str(cfg), "--data-root", str(tiny_root), "--cache", str(tmp_path / "cache"),
            "--episodes", "3", "--way", "3", "--query", "2", "--thresholds", "0.2", "0.5", "--no-progress"]
    assert main(args + ["--output", str(tmp_path / "a.json")]) == 0
    printed = capsys.readouterr().out
    assert main(args + ["--output", str(tmp_path / "b.json")]) == 0
    a, b = json.loads((tmp_path / "a.json").read_text()), json.loads((tmp_path / "b.json").read_text())
    assert a == b and a["thresholds"] == [0.2, 0.5]
    table = a["tables"]["query"]["0.2"]
    assert set(table) == set(METHODS)
    if kind == "frn":   # Decomposition is not defined for FRN's Euclidean similarity: "—", never computed
        assert table["decomposition"] is None and "Decomposition" in printed and "—" in printed
    else:
        assert table["decomposition"] is not None
    assert all(0 <= s["mean_iou"] <= 1 for s in table.values() if s is not None)


def test_command_errors_are_one_line(tmp_path, capsys):
    assert main(["frn", "--episodes", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --episodes") and err.count("\n") == 1
    assert main(["frn", "--methods", "sfam,gradcam"]) == 2
    assert "gradcam" in capsys.readouterr().err
    assert main(["frn", "--config", str(tmp_path / "missing.json")]) == 2
    assert "cannot read the config file" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{oops")
    assert main(["frn", "--config", str(tmp_path / "bad.json")]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_a_model_of_the_other_kind_is_refused(capsys):
    assert main(["frn", "--model", "gpw-synthetic"]) == 2
    assert "not a FRN model" in capsys.readouterr().err


def test_resolve_device_picks_the_gpu_only_when_there_is_one(monkeypatch):
    from sfam_lite.loading import resolve_device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="no CUDA device is available"):
        resolve_device("cuda:0")
    with pytest.raises(ValueError, match="not a device name"):
        resolve_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_command_without_cuda_says_so_in_one_line(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["frn", "--device", "cuda", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: device 'cuda': no CUDA device") and err.count("\n") == 1


def test_box_rule_reaches_the_boxes():
    """Feature maps on a raised floor with a peak inside the box: the book's min-max rule keeps only the peak,
    0.2 x max keeps the whole image; the IoUs are those of these boxes, computed here by hand."""
    size, n = 12, 3
    maps = torch.full((n, 2, size, size), 5.0)
    maps[:, :, 4:8, 4:8] = 6.0
    boxes = torch.tensor([[4.0, 4.0, 4.0, 4.0]]).repeat(n, 1)
    setup = ModelSetup("gpw", "cosine", None, None, None)
    q_idx, s_idx = torch.arange(n), torch.roll(torch.arange(n), 1)
    run = lambda rule: _evaluate_pairs(setup, maps, boxes, q_idx, s_idx, None, ("ram",), (0.2,), ((8.0, 6.0), 0.25),
                                       0, (size, size), False, {}, box_rule=rule)
    assert np.allclose(run(None).query["ram"], 1.0)
    whole = run({"relative_to": "max"})
    assert np.allclose(whole.query["ram"], 16 / 144) and whole.info["box_rule"] == {"relative_to": "max"}


def test_mass_in_box_of_each_sample_against_a_plain_loop():
    """The threshold-free mass in the box that the evaluation keeps per sample and method: recomputed here pixel by
    pixel from the maps the explainer gives (min-max normalised by hand, pixel centres inside the box), and it
    follows each sample through repeated pairs."""
    from sfam_lite.methods import build_explainers
    g = torch.Generator().manual_seed(1)
    n, size = 6, 10
    maps = torch.rand(n, 3, 5, 5, generator=g)
    boxes = torch.tensor([[1.0, 2.0, 4.5, 3.0], [0.0, 0.0, 10.0, 10.0], [5.2, 5.2, 3.0, 4.0],
                          [2.0, 1.0, 2.0, 2.0], [3.0, 3.0, 6.0, 6.5], [0.5, 4.0, 7.0, 2.0]])
    setup = ModelSetup("gpw", "cosine", None, None, None)
    q_idx = torch.tensor([0, 1, 2, 3, 4, 5, 0, 2])              # two pairs repeat
    s_idx = torch.tensor([1, 2, 3, 4, 5, 0, 1, 3])
    result = _evaluate_pairs(setup, maps, boxes, q_idx, s_idx, None, ("sfam", "ram"), (0.2,), ((4.0, 4.0), 0.25),
                             0, (size, size), False, {})
    explainers = build_explainers(setup, ("sfam", "ram"), (4.0, 4.0), 0.25)
    for method in ("sfam", "ram"):
        for i, (q, s) in enumerate(zip(q_idx.tolist(), s_idx.tolist())):
            m = explainers[method].explain_features(maps[q:q + 1], maps[s:s + 1][:, None],
                                                    size=(size, size)).query_maps[0].double()
            m = (m - m.min()) / (m.max() - m.min())
            x, y, w, h = boxes[q].tolist()
            inside = total = 0.0
            for r in range(size):
                for c in range(size):
                    total += float(m[r, c])
                    if x <= c + 0.5 < x + w and y <= r + 0.5 < y + h:
                        inside += float(m[r, c])
            assert result.mass[method][i] == pytest.approx(inside / total, rel=1e-6)   # float32 maps
    table = result.mass_table()
    assert table["sfam"]["mean"] == pytest.approx(result.mass["sfam"].mean())
    assert json.loads(json.dumps(result.to_json()))["mass_in_box"]["ram"]["units"] == len(q_idx)


def test_several_box_rules_at_once_equal_one_evaluation_per_rule():
    """box_rules computes each map once and boxes it by every rule: the same tables as one call per rule."""
    g = torch.Generator().manual_seed(2)
    size = 20
    maps = torch.rand(8, 3, size, size, generator=g) ** 4
    boxes = torch.tensor([[3.0, 4.0, 9.0, 7.0]]).repeat(8, 1)
    q_idx, s_idx = torch.tensor([0, 1, 2, 3, 3, 5]), torch.tensor([1, 0, 4, 6, 7, 2])
    setup = ModelSetup("gpw", "cosine", None, None, None)
    rules = {"book": {}, "max/all": {"relative_to": "max", "largest_component": False}}
    args = (setup, maps, boxes, q_idx, s_idx, None, ("sfam", "ram", "random"), (0.2, 0.5), ((8.0, 6.0), 0.25), 0,
            (size, size), False)
    together = _evaluate_pairs(*args, {}, box_rules=rules)
    for label, rule in rules.items():
        alone = _evaluate_pairs(*args, {}, box_rule=rule)
        for m in ("sfam", "ram", "random"):
            np.testing.assert_array_equal(together[label].query[m], alone.query[m])
            np.testing.assert_array_equal(together[label].support[m], alone.support[m])
            np.testing.assert_array_equal(together[label].mass[m], alone.mass[m])
        assert together[label].info["box_rule"] == rule
    assert not np.array_equal(together["book"].query["sfam"], together["max/all"].query["sfam"])
    with pytest.raises(ValueError, match="not both"):
        _evaluate_pairs(*args, {}, box_rule={}, box_rules=rules)


def test_format_html_rows_match_plain_statistics():
    from sfam_lite.evaluate import Result, format_html
    ious = np.array([[0.2, 0.6, 0.7, 0.9]])                    # one threshold, four samples
    mass = np.array([0.5, 0.6, 0.7, 0.8])
    result = Result("gpw", (0.2,), {"sfam": ious, "decomposition": None, "left": ious[:, ::-1]},
                    {"sfam": ious, "decomposition": None, "left": ious}, None,
                    {"model": "gpw-synthetic", "explained_samples": 4}, np.arange(4),
                    {"sfam": mass, "decomposition": None, "left": mass}, {"left": "left <half>"})
    page = format_html(result, "Table 2")
    rows = page.split("<tbody>")[1].split("</tr>")[:-1]
    assert len(rows) == 3
    cells = lambda row: [c.split("</td>")[0] for c in row.split("<td>")[1:]]          # noqa: E731
    half = lambda x: 1.96 * np.std(x, ddof=1) / np.sqrt(len(x))                        # noqa: E731
    sfam = cells(rows[0])
    assert sfam[0] == "SFAM"
    assert sfam[1] == f"{100 * ious.mean():.1f} ± {100 * half(ious[0]):.1f}"
    hits = (ious[0] >= 0.5).astype(float)
    assert sfam[2] == f"{100 * hits.mean():.1f} ± {100 * half(hits):.1f}"
    assert sfam[3] == f"{100 * mass.mean():.1f} ± {100 * half(mass):.1f}"
    assert sfam[4:] == ["55.65", "69.08"]                      # the paper's GPW row for SFAM
    assert cells(rows[1]) == ["Decomposition", "—", "—", "—", "52.91", "58.77"]
    assert cells(rows[2])[0] == "left &lt;half&gt;" and cells(rows[2])[4:] == ["", ""]
    assert "the synthetic benchmark" in page and "intervals over samples" in page and "Table 2" in page


def test_pairs_gathered_in_chunks_of_a_memory_budget_score_as_all_at_once(monkeypatch):
    """The default chunk follows GATHER_BYTES (gpw-cub's 0.5 MB feature maps: about 500 pairs a chunk, not all
    ~3,800 of CUB's correct retrievals gathered at once); every score is the same as with one chunk for all."""
    import sfam_lite.evaluate as evaluate
    from sfam_lite import memory
    g = torch.Generator().manual_seed(3)
    size = 16
    maps = torch.rand(9, 3, size, size, generator=g) ** 3
    boxes = torch.tensor([[2.0, 3.0, 9.0, 8.0]]).repeat(9, 1)
    q_idx, s_idx = torch.tensor([0, 1, 2, 3, 4, 5, 6, 8]), torch.tensor([1, 2, 3, 4, 5, 6, 7, 0])
    setup = ModelSetup("gpw", "cosine", None, None, None)
    args = (setup, maps, boxes, q_idx, s_idx, None, ("sfam", "ram", "random"), (0.2,), ((8.0, 6.0), 0.25), 0,
            (size, size), False, {})
    whole = _evaluate_pairs(*args, chunk=100)
    per_map = maps[0].numel() * maps.element_size()
    monkeypatch.setattr(memory, "GATHER_BYTES", 3 * 2 * per_map)          # three pairs a chunk
    gathered, score = [], evaluate._scores_per_rule
    monkeypatch.setattr(evaluate, "_scores_per_rule", lambda e, q, *rest: gathered.append(len(q)) or score(e, q, *rest))
    chunked = evaluate._evaluate_pairs(*args)
    assert max(gathered) == 3 and sum(gathered) == 3 * len(q_idx)           # 3 methods, 8 pairs in chunks of 3
    for m in ("sfam", "ram", "random"):
        np.testing.assert_array_equal(chunked.query[m], whole.query[m])
        np.testing.assert_array_equal(chunked.mass[m], whole.mass[m])


def test_an_explainer_that_asks_for_small_batches_gets_them_and_the_same_scores():
    """CG-RAM of FRN's own score holds about 13 MB a pair at full width (512 pairs at once: 6.6 GB, chapter 7 on
    CUB peaked at 12.5 GiB): it asks for 32 pairs a call, and its scores are those of one call for all pairs."""
    import sfam_lite.evaluate as evaluate
    from sfam_lite.methods import build_explainers, setup_for
    from sfam_lite.models import FRN
    torch.manual_seed(0)
    frn = FRN(width=0.0625).eval()
    explainer = build_explainers(setup_for(frn), ["cgram-score"], (8.0, 6.0), 2.0, seed=0)["cgram-score"]
    assert explainer.pairs_per_batch == 32
    q, s = torch.rand(70, frn.channels, 5, 5), torch.rand(70, 1, frn.channels, 5, 5)
    boxes, support_boxes = torch.tensor([[4.0, 5.0, 30.0, 20.0]]).repeat(70, 1), torch.tensor([[[4.0, 5.0, 30.0, 20.0]]]).repeat(70, 1, 1)
    seen = []
    explain = explainer.explain_features
    explainer.explain_features = lambda a, b, **kw: seen.append(len(a)) or explain(a, b, **kw)
    small = evaluate.localisation_ious(explainer, q, s, boxes, support_boxes, (40, 40), thresholds=(0.2, 0.5))
    assert seen == [32, 32, 6]
    explainer.pairs_per_batch = None
    whole = evaluate.localisation_ious(explainer, q, s, boxes, support_boxes, (40, 40), thresholds=(0.2, 0.5))
    assert seen[3:] == [70]
    np.testing.assert_array_equal(small.query, whole.query)
    np.testing.assert_array_equal(small.mass, whole.mass)


def test_format_html_of_support_maps_shows_their_statistics_and_no_query_only_columns():
    """The support table: each row the support IoUs' mean and accuracy (not the query's), and neither the mass in
    the box nor the paper's columns, which are measured on query maps."""
    from sfam_lite.evaluate import Result, format_html
    query, support = np.array([[0.1, 0.2, 0.3, 0.4]]), np.array([[0.3, 0.55, 0.8, 0.9]])
    result = Result("frn", (0.2,), {"sfam": query, "cgram": None}, {"sfam": support, "cgram": None},
                    None, {"model": "frn-synthetic", "explained_samples": 4}, np.arange(4),
                    {"sfam": np.full(4, 0.5), "cgram": None})
    page = format_html(result, "FRN's support maps", which="support")
    rows = page.split("<tbody>")[1].split("</tr>")[:-1]
    cells = lambda row: [c.split("</td>")[0] for c in row.split("<td>")[1:]]          # noqa: E731
    half = lambda x: 1.96 * np.std(x, ddof=1) / np.sqrt(len(x))                        # noqa: E731
    hits = (support[0] >= 0.5).astype(float)
    assert cells(rows[0]) == ["SFAM", f"{100 * support.mean():.1f} ± {100 * half(support[0]):.1f}",
                              f"{100 * hits.mean():.1f} ± {100 * half(hits):.1f}"]
    assert cells(rows[1]) == ["CG-RAM", "—", "—"]
    assert "support maps" in page and "mass in box" not in page and "the paper" not in page
