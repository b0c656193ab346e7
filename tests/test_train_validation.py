"""Selecting GPW's configuration without the test classes (``benchmarks/gpw_sweep.py --holdout``): the held-out
classes are the last training classes and never reach the training loop, they are what is scored, the classes
101–200 play no part, and the configuration re-checked as "chosen" is the book's (``GPWConfig()``)."""
from __future__ import annotations

import importlib.util
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from data_download import synthetic
from sfam_lite import train
from sfam_lite.train import GPWConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sweep():
    spec = importlib.util.spec_from_file_location("gpw_sweep", ROOT / "benchmarks" / "gpw_sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_holdout_split_holds_out_the_last_classes(sweep):
    labels = torch.tensor([3, 0, 1, 2, 4, 4, 0, 3, 2, 1])      # classes 0..4, any order
    train_mask, held = sweep.holdout_split(labels, 2)
    assert labels[held].unique().tolist() == [3, 4]
    assert labels[train_mask].unique().tolist() == [0, 1, 2]
    assert torch.equal(train_mask, ~held)                       # disjoint, and every image in one of them
    everything, none = sweep.holdout_split(labels, 0)
    assert everything.all() and not none.any()


@pytest.mark.parametrize("holdout", [-1, 4, 5])
def test_holdout_split_refuses_what_leaves_fewer_than_two_training_classes(sweep, holdout):
    with pytest.raises(ValueError, match="holdout must be between 0 and 3"):
        sweep.holdout_split(torch.arange(5), holdout)


def test_the_chosen_variant_is_the_books_configuration(sweep):
    # what the validation round re-checks as "chosen" must be what zoo.load("gpw-synthetic") trains
    chosen = GPWConfig(**{**sweep.BASE, **sweep.ROUNDS["validation"]["chosen"]})
    assert asdict(chosen) == asdict(GPWConfig())
    rivals = [GPWConfig(**{**sweep.BASE, **o}) for n, o in sweep.ROUNDS["validation"].items() if n != "chosen"]
    assert rivals and all(asdict(r) != asdict(chosen) for r in rivals)


@pytest.fixture(scope="module")
def tiny_benchmark(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    synthetic.generate(root, images_per_class=10, size=48, num_classes=8, seed=3, workers=1, progress=False)
    return root     # retrieval_train: classes 1-4 (labels 0-3), retrieval_test: classes 5-8


def test_holdout_run_never_trains_on_the_held_out_classes_and_scores_only_them(sweep, tiny_benchmark, monkeypatch):
    seen = []
    real = train.train_gpw

    def recording(images, labels, config, **kw):
        seen.append(labels.clone())
        return real(images, labels, config, **kw)

    monkeypatch.setattr(train, "train_gpw", recording)
    tiny = {"arch": "resnet10", "dim": 8, "image_size": 32, "batches": 2, "warmup": 0, "classes_per_batch": 2,
            "instances": 2}
    result = sweep.run(("tiny", tiny, str(tiny_benchmark), "cpu", 1, 1))
    assert len(seen) == 1 and seen[0].unique().tolist() == [0, 1, 2]     # class 4 (label 3) never trained on
    assert result["trained_classes"] == "1-3" and result["scored_classes"] == "4-4"
    assert result["queries"] == 10 and result["benchmark_seed"] == 3
    assert 0 <= result["recall"][1] <= 1 and result["recall1_interval"] >= 0

    seen.clear()
    whole = sweep.run(("tiny", tiny, str(tiny_benchmark), "cpu", 1, 0))  # no holdout: the sweep's test protocol
    assert seen[0].unique().tolist() == [0, 1, 2, 3]
    assert whole["trained_classes"] == "1-4" and whole["scored_classes"] == "5-8" and whole["queries"] == 40


def test_collect_ranks_the_validation_runs_and_keeps_the_confirmation(sweep, tmp_path):
    def run(variant, r1, seed, scored):
        return {"variant": variant, "recall": {"1": r1}, "recall1_interval": 0.02, "trained_classes": "1-80",
                "scored_classes": scored, "benchmark_seed": seed, "queries": 800, "train_seconds": 600.0,
                "threads": 1, "device": "cpu"}
    import json
    (tmp_path / "v.jsonl").write_text("\n".join(json.dumps(run(v, r, 0, "81-100"))
                                                for v, r in [("chosen", 0.71), ("rival", 0.74)]) + "\n")
    (tmp_path / "c.jsonl").write_text(json.dumps(run("chosen", 0.63, 1, "101-200")) + "\n")
    sweep.collect(str(tmp_path / "v.jsonl"), str(tmp_path / "c.jsonl"), str(tmp_path / "out.json"))
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["selected_on_validation"] == "rival" and out["book_variant"] == "chosen"
    assert [r["variant"] for r in out["validation"]] == ["rival", "chosen"]
    assert out["confirmation"]["benchmark_seed"] == 1
    text = (tmp_path / "out.txt").read_text()
    assert "rival" in text.splitlines()[1] and "R@1 74.0 ± 2.0 %" in text and "63.0 ± 2.0 %" in text
    (tmp_path / "c.jsonl").write_text("")
    with pytest.raises(SystemExit, match="exactly one confirmation run"):
        sweep.collect(str(tmp_path / "v.jsonl"), str(tmp_path / "c.jsonl"), str(tmp_path / "out.json"))
