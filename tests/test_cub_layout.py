"""The chapters' CUB branch, exercised without CUB: the stand-in downloads of ``scripts/make_cub_fixture.py`` and
the wiring that makes CI's papermill pass run chapters 4-7 on them (``.ci/smoke/0[4-7]*.yml``: ``frn-cub`` from a
checkpoint in FRN's release format, ``gpw-cub`` made tiny, ``data_root`` a folder installed like CUB's archive).
The chapters themselves run in that pass of ``scripts/test.sh``; this checks what it relies on (about 10 s)."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from data_download import CUB200
from data_download.publish import MARKER
from sfam_lite import zoo
from sfam_lite.loading import MODEL_SPLITS
from test_frn import official_layout

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import make_cub_fixture  # noqa: E402

FIXTURE = ROOT / "_build" / "cub_fixture"      # where scripts/test.sh writes it
SMOKE = {name: ROOT / ".ci" / "smoke" / f"{name}.yml" for name in ("04_metric_learners", "05_explaining_frn",
                                                                   "06_explaining_gpw", "07_localisation")}


@pytest.fixture(scope="module")
def fixture_roots(tmp_path_factory):
    return make_cub_fixture.make(tmp_path_factory.mktemp("cub_fixture"))


def test_data_is_installed_as_the_cub200_command_installs_the_real_archive(fixture_roots):
    data_root, _ = fixture_roots
    folder = data_root / "CUB_200_2011"
    marker = json.loads((folder / MARKER).read_text())
    assert marker["name"] == "CUB-200-2011" and marker["archive"] == "CUB_200_2011.tgz"
    assert "params" not in marker, "the synthetic benchmark's marker: the folder must look like CUB's"
    assert not (data_root / "CUB_200_2011.tgz").exists() and not (data_root / "attributes.txt").exists(), \
        "the archive and its stray top-level file are removed, as for the real archive"
    assert (folder / "parts" / "parts.txt").is_file() and (folder / "README").is_file()
    data = CUB200(data_root)
    small = make_cub_fixture.SCALES["small"]
    assert (len(data), data.num_classes) == (small.classes * small.images_per_class, small.classes)
    # real CUB's irregularities: several sizes and aspect ratios, greyscale files, boxes in each image's pixels
    sizes, modes = set(), set()
    for k in range(len(data)):
        with Image.open(data.image_path(k)) as im:
            sizes.add(im.size)
            modes.add(im.mode)
            x, y, w, h = data.boxes[k].tolist()
            assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= im.width + 0.1 and y + h <= im.height + 0.1
    assert len({round(w / h, 2) for w, h in sizes}) >= 3 and modes == {"RGB", "L"}
    image, _, box = data[0]
    assert image.mode == "RGB" and image.size == Image.open(data.image_path(0)).size


def test_every_split_the_chapters_read_is_large_enough(fixture_roots):
    """5-way 1-shot episodes with 16 queries (chapters 5, 7) need 5 test classes of 17 images; retrieval and the
    references' tuning need two classes or more; K-shot (chapter 6) 6 images of a class."""
    data_root, _ = fixture_roots
    for kind, (test_split, val_split) in MODEL_SPLITS.items():
        test, val = CUB200(data_root, split=test_split), CUB200(data_root, split=val_split)
        counts = np.bincount(test.labels.numpy())[test.labels.unique().numpy()]
        assert len(counts) >= 5 and counts.min() >= 17, (kind, counts)
        assert len(val.labels.unique()) >= 2 and len(val) > 0
    assert set(CUB200(data_root, split="frn_test").class_ids.tolist()) == {3, 7, 11, 15, 19}


def test_frn_weights_are_in_the_release_format_and_load_as_frn_cub(fixture_roots):
    _, weights_root = fixture_roots
    path = weights_root / zoo.FRN_CUB_CHECKPOINT
    state = torch.load(path, weights_only=True)
    assert {k: tuple(v.shape) for k, v in state.items()} == official_layout()
    assert (weights_root / "trained_model_weights" / MARKER).is_file()
    model = zoo.load("frn-cub", weights_root=weights_root)
    assert model.meta["name"] == "frn-cub" and model.channels == 640
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_first_run_note_names_what_is_missing_and_is_silent_when_all_is_there(fixture_roots, tmp_path, capsys):
    """What a CUB chapter says before it starts: the download commands for missing data (with --root only where the
    reader gave a folder), the training a gpw-cub not yet cached costs, and nothing once everything is in place."""
    from sfam_lite.loading import first_run_note, load_for
    data_root, weights_root = fixture_roots
    empty = tmp_path / "cache"
    missing = first_run_note("frn-cub", cache=empty)
    assert len(missing) == 2 and str(empty / "data" / "cub200") in missing[0]
    assert missing[0].endswith("`python -m data_download cub200`.") and "1.15 GB" in missing[0]
    assert missing[1].endswith("`python -m data_download frn-weights`.") and str(empty / "data" / "frn") in missing[1]
    given = first_run_note("frn-cub", tmp_path / "cub", tmp_path / "frn", cache=empty)
    assert f"cub200 --root {tmp_path / 'cub'}`" in given[0] and f"frn-weights --root {tmp_path / 'frn'}`" in given[1]
    assert first_run_note("frn-cub", data_root, weights_root, cache=empty) == []
    assert first_run_note("gpw-synthetic", cache=empty) == [] == first_run_note("frn-synthetic", cache=empty)
    tiny = smoke("06_explaining_gpw")["gpw_overrides"]
    [training] = first_run_note("gpw-cub", data_root, cache=empty, overrides=tiny)
    assert "trained on first use, 2 batches of 8 images through resnet10 at 96 px;" in training
    assert str(empty / "models") in training and "T4" not in training      # the T4 estimate is the recipe's only
    [_, recipe] = first_run_note("gpw-cub", cache=empty)
    assert "3,000 batches of 80 images through resnet50 at 227 px: roughly 35-50 min on a Colab T4" in recipe
    assert zoo.cached_checkpoint("gpw-cub", data_root, empty, **tiny) is None
    model = zoo.load("gpw-cub", data_root=data_root, cache=empty, progress=False, **tiny)
    assert zoo.cached_checkpoint("gpw-cub", data_root, empty, **tiny) == Path(model.meta["checkpoint"])
    assert first_run_note("gpw-cub", data_root, cache=empty, overrides=tiny) == []
    with pytest.raises(FileNotFoundError):           # the chapter says what to get, then fails on the missing file
        load_for("frn", "frn-cub", data_root, tmp_path / "no_weights", device="cpu", cache=empty)
    assert f"frn-weights --root {tmp_path / 'no_weights'}`" in capsys.readouterr().out


def smoke(name: str) -> dict:
    return yaml.safe_load(SMOKE[name].read_text())


def test_ci_papermill_pass_runs_chapters_4_to_7_on_the_cub_branch():
    models, frn, gpw, loc = (smoke(n) for n in SMOKE)
    notebooks = ROOT / "notebooks"           # papermill runs the chapters there (--cwd notebooks)
    data_root, weights_root = FIXTURE / "cub200", FIXTURE / "frn"
    for params in (models, frn, gpw, loc):
        assert (notebooks / params["data_root"]).resolve() == data_root
    for params in (models, frn, loc):
        assert params["frn_model"] == "frn-cub" and (notebooks / params["weights_root"]).resolve() == weights_root
    for params in (models, gpw, loc):
        assert params["gpw_model"] == "gpw-cub"
        config = zoo.config_for("gpw-cub", **params["gpw_overrides"])    # every override is a real field
        assert config.weights is None, "ImageNet weights would be downloaded"
        assert (config.freeze_bn, config.last_stride) == ("stats", 2), "the paper's GPW configuration, only smaller"
    assert gpw["gpw_overrides"] == loc["gpw_overrides"] == models["gpw_overrides"], \
        "chapters 4-7 share one tiny gpw-cub, trained once and cached"


def test_ci_makes_the_fixture_before_the_papermill_pass():
    script = (ROOT / "scripts" / "test.sh").read_text()
    make = re.search(r"^\s*python scripts/make_cub_fixture\.py _build/cub_fixture\s*$", script, re.M)
    papermill = re.search(r"^\s*papermill .*\.ci/smoke|^\s*smoke=.*\.ci/smoke", script, re.M)
    assert make, "scripts/test.sh must run `python scripts/make_cub_fixture.py _build/cub_fixture`"
    assert papermill and make.start() < papermill.start(), "... before the papermill pass that reads .ci/smoke"
