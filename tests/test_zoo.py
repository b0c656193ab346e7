"""The model zoo: train once and cache (keyed by config and data), atomic writes, safe loading."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from data_download.synthetic import generate
from sfam_lite import zoo
from sfam_lite.models import FRN
from test_frn import official_layout

TINY_FRN = dict(width=0.0625, image_size=32, way=3, shot=1, query=2, episodes=2, milestones=(1,))


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    generate(root, images_per_class=3, size=40, num_classes=16, progress=False, workers=1)
    return root


def test_trains_once_then_loads_from_cache(tiny_root, tmp_path, monkeypatch):
    first = zoo.load("frn-synthetic", data_root=tiny_root, cache=tmp_path, progress=False, **TINY_FRN)
    files = list((tmp_path / "models").glob("*.pt"))
    assert len(files) == 1 and first.meta["checkpoint"] == str(files[0])
    assert len(first.meta["history"]) == 2

    def no_training(*args, **kwargs):
        raise AssertionError("trained again although a cached checkpoint exists")
    monkeypatch.setattr(zoo, "train_frn", no_training)
    second = zoo.load("frn-synthetic", data_root=tiny_root, cache=tmp_path, progress=False, **TINY_FRN)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    assert second.meta["history"] == first.meta["history"]


def test_other_config_gets_another_checkpoint(tiny_root, tmp_path):
    zoo.load("frn-synthetic", data_root=tiny_root, cache=tmp_path, progress=False, **TINY_FRN)
    zoo.load("frn-synthetic", data_root=tiny_root, cache=tmp_path, progress=False, **{**TINY_FRN, "seed": 1})
    assert len(list((tmp_path / "models").glob("*.pt"))) == 2


def test_unknown_names_and_fields_are_refused():
    with pytest.raises(ValueError, match="unknown model 'frn-imagenet'"):
        zoo.load("frn-imagenet")
    with pytest.raises(ValueError, match=r"unknown config field\(s\) \['epochs'\]"):
        zoo.config_for("frn-synthetic", epochs=3)


def test_interrupted_write_leaves_nothing_that_loads(tmp_path):
    class Unpicklable:
        def __reduce__(self):
            raise KeyboardInterrupt  # as if training were interrupted while the checkpoint is written
    path = tmp_path / "models" / "m.pt"
    with pytest.raises(KeyboardInterrupt):
        zoo.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "bad": Unpicklable()}, path)
    assert list(path.parent.iterdir()) == []


def test_checkpoint_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"payload": zoo.Path("x")}, path)
    with pytest.raises(ValueError, match="refusing to load"):
        zoo.read_checkpoint(path)


def test_frn_cub_missing_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m data_download frn-weights --root"):
        zoo.load("frn-cub", weights_root=tmp_path)


def test_frn_cub_loads_an_official_layout_checkpoint(tmp_path):
    state = {k: torch.zeros(s, dtype=torch.long) if k.endswith("num_batches_tracked") else torch.rand(s)
             for k, s in official_layout().items()}
    path = tmp_path / zoo.FRN_CUB_CHECKPOINT
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    model = zoo.load("frn-cub", weights_root=tmp_path)
    assert isinstance(model, FRN) and model.channels == 640 and not model.training
    assert torch.equal(model.r, state["r"])


def test_other_data_gets_another_checkpoint(tiny_root, tmp_path_factory, tmp_path):
    """Same tables (classes, boxes, splits), other pixels (JPEG quality): the completion marker tells them apart."""
    other = tmp_path_factory.mktemp("synthetic_q")
    generate(other, images_per_class=3, size=40, num_classes=16, progress=False, workers=1, quality=60)
    folder = "CUB_200_2011"
    assert (other / folder / "bounding_boxes.txt").read_bytes() == (tiny_root / folder / "bounding_boxes.txt").read_bytes()
    a = zoo.load("frn-synthetic", data_root=tiny_root, cache=tmp_path, progress=False, **TINY_FRN)
    b = zoo.load("frn-synthetic", data_root=other, cache=tmp_path, progress=False, **TINY_FRN)
    assert a.meta["checkpoint"] != b.meta["checkpoint"]


def test_cache_argument_places_data_and_weights(tmp_path):
    assert zoo.default_data_root("gpw-synthetic", cache=tmp_path) == tmp_path / "data" / "synthetic"
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "data" / "frn")):   # where frn-weights puts them
        zoo.load("frn-cub", cache=tmp_path)
    with pytest.raises(ValueError, match=r"frn-cub .* got \['width'\]"):
        zoo.load("frn-cub", weights_root=tmp_path, width=0.5)


def test_train_command_caches_the_model_and_writes_a_log(tiny_root, tmp_path, capsys):
    import json

    from sfam_lite.cli import train_main as main
    config = tmp_path / "config.json"
    config.write_text(json.dumps(TINY_FRN))
    cache = tmp_path / "cache"
    assert main(["frn", "--config", str(config), "--data-root", str(tiny_root), "--cache", str(cache)]) == 0
    (checkpoint,) = (cache / "models").glob("*.pt")
    log = checkpoint.with_suffix(".log.csv")
    rows = [row.split(",") for row in log.read_text().splitlines()]
    assert rows[0] == ["step", "loss", "frn_loss", "accuracy", "lr"] and len(rows) == 1 + TINY_FRN["episodes"]
    assert [int(r[0]) for r in rows[1:]] == list(range(TINY_FRN["episodes"]))
    assert f"model: {checkpoint}" in capsys.readouterr().out
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["frn", "--data", "cub"])   # FRN on CUB is the released checkpoint, not trained here
    assert exit_info.value.code == 2
    assert "FRN on CUB is not trained here" in capsys.readouterr().err


def test_evaluation_view_is_part_of_the_recipe():
    """Synthetic models and FRN keep FRN's 92/84 view at their crop; the real GPW evaluates at 256 → 227."""
    views = {name: zoo.eval_transform_for(name) for name in zoo.NAMES}
    assert (views["frn-synthetic"].resize, views["frn-synthetic"].crop) == (92, 84)
    assert (views["gpw-synthetic"].resize, views["gpw-synthetic"].crop) == (88, 80)
    assert (views["frn-cub"].resize, views["frn-cub"].crop) == (92, 84)
    assert (views["gpw-cub"].resize, views["gpw-cub"].crop) == (256, 227)
    small = zoo.config_for("frn-synthetic", image_size=32)
    assert (zoo.eval_transform_for("frn-synthetic", small).resize, zoo.eval_transform_for("frn-synthetic", small).crop) \
        == (35, 32)
    with pytest.raises(ValueError, match="unknown model 'gpw'"):
        zoo.eval_transform_for("gpw")


def test_two_first_uses_at_once_train_once(tiny_root, tmp_path):
    """Two processes load the same untrained model into one cache at the same moment. Expected: the second waits
    for the first's lock and reuses its checkpoint, so both report the same recorded training time and one
    checkpoint exists. Silently wrong before: both trained, and the cache held whichever wrote last."""
    code = ("import json, sys; from sfam_lite import zoo; m = zoo.load('frn-synthetic', data_root=sys.argv[1], "
            "cache=sys.argv[2], progress=False, **json.loads(sys.argv[3])); print(repr(m.meta['train_seconds']))")
    args = [str(tiny_root), str(tmp_path), json.dumps(TINY_FRN)]
    procs = [subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd=Path(__file__).resolve().parents[1]) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert outs[0][0].strip() and outs[0][0] == outs[1][0], outs
    assert len(list((tmp_path / "models").glob("*.pt"))) == 1


def test_the_training_lock_holds_one_model_only(tmp_path):
    """While one model trains (its lock held), a second process training the same model waits, but another model
    does not wait: the lock is per checkpoint, not per cache folder. Silently slow before: every chapter that
    loaded any model waited for whichever model was being trained."""
    import threading
    first, same, other = (tmp_path / "models" / f"{n}.pt" for n in ("a-1", "a-1", "b-2"))
    entered = {"same": threading.Event(), "other": threading.Event()}

    def take(path, key):
        with zoo.training_lock(path):
            entered[key].set()
    with zoo.training_lock(first):
        threads = [threading.Thread(target=take, args=(same, "same")), threading.Thread(target=take, args=(other, "other"))]
        for t in threads:
            t.start()
        assert entered["other"].wait(10), "another model's training waited for this one"
        assert not entered["same"].wait(0.5), "the same model's training did not wait"
    assert entered["same"].wait(10)
    for t in threads:
        t.join(10)
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [".a-1.pt.lock", ".b-2.pt.lock"]


def test_data_name_says_which_data_each_zoo_model_ran_on():
    """Captions name the data from the model: never CUB for a synthetic model, nor the reverse, and a model of the
    reader's own is not passed off as either."""
    from sfam_lite.zoo import NAMES, data_name
    expected = {"frn-synthetic": "the synthetic benchmark", "gpw-synthetic": "the synthetic benchmark",
                "frn-cub": "CUB-200-2011", "gpw-cub": "CUB-200-2011"}
    assert {name: data_name(name) for name in NAMES} == expected
    assert data_name("my-vit") == data_name(None) == data_name("synthetic-cub-like") == "the data given"
