"""Bad inputs a user can give the package, the data package and both commands: each is refused with the named
exception (or a non-zero exit and one ``error:`` line on stderr, no traceback) and a message that says what is wrong,
instead of a plausible wrong number."""
import json
import math
import subprocess
import sys

import pytest
import torch

from data_download import CUB200, DataError, DatasetNotFoundError, synthetic
from data_download.__main__ import main as data_main
from sfam_lite import cis, zoo
from sfam_lite.cli import train_main
from sfam_lite.maps import sfam_map, upsample
from sfam_lite.metrics import box_share, mass_in_box, mean_and_interval, nearest_others, pointing_game, recall_at_k
from sfam_lite.train import FRNConfig, GPWConfig
from test_data_cub import write_cub

MAPS = torch.rand(2, 6, 5)
BOXES = torch.tensor([[0.0, 0.0, 3.0, 3.0], [1.0, 1.0, 2.0, 4.0]])
EMB = torch.randn(6, 4)
LABELS = torch.tensor([0, 0, 1, 1, 2, 2])


def nan_at(x: torch.Tensor, index) -> torch.Tensor:
    x = x.clone()
    x[index] = float("nan")
    return x


def with_box(index: int, box) -> torch.Tensor:
    boxes = BOXES.clone()
    boxes[index] = torch.tensor(box)
    return boxes


# (id, call, exception type, phrase of the message)
CASES = [
    # sfam_lite.metrics: shapes, batch sizes, finite values, boxes with an area
    ("pointing_game: 2 maps, 3 boxes", lambda: pointing_game(MAPS, torch.cat([BOXES, BOXES[:1]])),
     ValueError, "3 boxes for 2 maps"),
    ("pointing_game: a NaN pixel", lambda: pointing_game(nan_at(MAPS, (0, 2, 2)), BOXES), ValueError, "non-finite"),
    ("pointing_game: an infinite pixel", lambda: pointing_game(MAPS.index_fill(1, torch.tensor([0]), math.inf), BOXES),
     ValueError, "non-finite"),
    ("mass_in_box: (B, 1, H, W) maps", lambda: mass_in_box(MAPS[:, None], BOXES), ValueError, "(B, H, W)"),
    ("mass_in_box: one unbatched (H, W) map", lambda: mass_in_box(MAPS[0], BOXES[:1]), ValueError, "(B, H, W)"),
    ("mass_in_box: negative box width", lambda: mass_in_box(MAPS, with_box(1, [1.0, 1.0, -2.0, 4.0])),
     ValueError, "positive width and height"),
    ("pointing_game: zero box height", lambda: pointing_game(MAPS, with_box(0, [0.0, 0.0, 3.0, 0.0])),
     ValueError, "positive width and height"),
    ("mass_in_box: boxes (B, 5)", lambda: mass_in_box(MAPS, torch.ones(2, 5)), ValueError, "shape (B, 4)"),
    ("mass_in_box: a NaN box", lambda: mass_in_box(MAPS, nan_at(BOXES, (0, 1))), ValueError, "non-finite"),
    ("pointing_game: boxes as a list", lambda: pointing_game(MAPS, BOXES.tolist()), TypeError, "torch.Tensor"),
    ("pointing_game: maps as numpy", lambda: pointing_game(MAPS.numpy(), BOXES), TypeError, "torch.Tensor"),
    ("box_share: size with a zero", lambda: box_share(BOXES, (0, 5)), ValueError, "two positive integers"),
    ("box_share: size of three numbers", lambda: box_share(BOXES, (6, 5, 3)), ValueError, "two positive integers"),
    ("recall_at_k: a NaN embedding", lambda: recall_at_k(nan_at(EMB, (3, 1)), LABELS, ks=(1,)),
     ValueError, "non-finite"),
    ("recall_at_k: labels of another length", lambda: recall_at_k(EMB, LABELS[:5], ks=(1,)),
     ValueError, "labels must have shape (6,)"),
    ("recall_at_k: K as large as n", lambda: recall_at_k(EMB, LABELS, ks=(1, 6)), ValueError, "only 5 others"),
    ("recall_at_k: K = 0", lambda: recall_at_k(EMB, LABELS, ks=(0,)), ValueError, "must be >= 1"),
    ("recall_at_k: no K", lambda: recall_at_k(EMB, LABELS, ks=()), ValueError, "ks is empty"),
    ("recall_at_k: float labels", lambda: recall_at_k(EMB, LABELS.float(), ks=(1,)), TypeError, "integer class ids"),
    ("recall_at_k: one embedding vector", lambda: recall_at_k(EMB[0], LABELS[:1], ks=(1,)), ValueError, "(n, D)"),
    ("nearest_others: k as a float", lambda: nearest_others(EMB, 1.5), TypeError, "k must be an integer"),
    ("mean_and_interval: one value", lambda: mean_and_interval(torch.tensor([0.7])), ValueError, "at least 2"),
    ("mean_and_interval: a NaN", lambda: mean_and_interval(torch.tensor([0.7, math.nan, 0.2])),
     ValueError, "non-finite"),
    # sfam_lite.cis and sfam_lite.maps
    ("contribution_scores: metric typo", lambda: cis.contribution_scores(EMB, EMB.flip(0), "cosin"),
     ValueError, "unknown metric 'cosin'"),
    ("contribution_scores: batch 6 vs 4", lambda: cis.contribution_scores(EMB, EMB[:4]), ValueError, "batch size"),
    ("sfam_map: weights for other channels", lambda: sfam_map(torch.rand(2, 4, 3, 3), torch.rand(2, 5)),
     ValueError, "do not match"),
    ("sfam_map: float16 map beyond float16's range",
     lambda: sfam_map(torch.full((1, 8, 2, 2), 60000.0, dtype=torch.float16), torch.ones(1, 8, dtype=torch.float16)),
     ValueError, "exceeds the range of torch.float16"),
    ("upsample: negative size", lambda: upsample(torch.rand(1, 3, 3), (-4, 4)), ValueError, "two positive integers"),
    # training configurations, checked when made
    ("config_for: episodes=0", lambda: zoo.config_for("frn-synthetic", episodes=0), ValueError, "episodes must be >= 1"),
    ("config_for: lr=nan", lambda: zoo.config_for("frn-synthetic", lr=math.nan), ValueError, "lr must be finite"),
    ("config_for: lr=-0.1", lambda: zoo.config_for("gpw-synthetic", lr=-0.1), ValueError, "lr must be > 0"),
    ("config_for: lr as a string", lambda: zoo.config_for("gpw-synthetic", lr="1e-3"), TypeError, "lr must be a number"),
    ("config_for: width='abc'", lambda: zoo.config_for("frn-synthetic", width="abc"), TypeError, "width must be a number"),
    ("config_for: width=0", lambda: zoo.config_for("frn-synthetic", width=0), ValueError, "width must be > 0"),
    ("config_for: image_size=-84", lambda: zoo.config_for("frn-synthetic", image_size=-84), ValueError,
     "image_size must be >= 8"),
    ("config_for: episodes=2.5", lambda: zoo.config_for("frn-synthetic", episodes=2.5), TypeError,
     "episodes must be an integer"),
    ("config_for: unknown field", lambda: zoo.config_for("frn-synthetic", epochs=3), ValueError, "unknown config field"),
    ("FRNConfig: 1-way episodes", lambda: FRNConfig(way=1), ValueError, "way must be >= 2"),
    ("FRNConfig: shot=0", lambda: FRNConfig(shot=0), ValueError, "shot must be >= 1"),
    ("FRNConfig: crop_scale reversed", lambda: FRNConfig(crop_scale=(0.9, 0.1)), ValueError, "lo <= hi"),
    ("FRNConfig: crop_scale from 0", lambda: FRNConfig(crop_scale=(0, 1)), ValueError, "crop_scale must be > 0"),
    ("FRNConfig: milestones as text", lambda: FRNConfig(milestones="220"), TypeError, "milestones must be a list"),
    ("FRNConfig: seed=-1", lambda: FRNConfig(seed=-1), ValueError, "seed must be >= 0"),
    ("FRNConfig: momentum=2", lambda: FRNConfig(momentum=2.0), ValueError, "momentum must be <= 1.0"),
    ("GPWConfig: dim=0", lambda: GPWConfig(dim=0), ValueError, "dim must be >= 1"),
    ("GPWConfig: arch typo", lambda: GPWConfig(arch="resnet5O"), ValueError, "unknown arch 'resnet5O'"),
    ("GPWConfig: last_stride=3", lambda: GPWConfig(last_stride=3), ValueError, "unknown last_stride 3"),
    ("GPWConfig: one instance per class", lambda: GPWConfig(instances=1), ValueError, "instances must be >= 2"),
    ("GPWConfig: batches=True", lambda: GPWConfig(batches=True), TypeError, "batches must be an integer"),
    ("GPWConfig: margin=-0.1", lambda: GPWConfig(margin=-0.1), ValueError, "margin must be >= 0.0"),
    # data_download.synthetic
    ("generate: seed=-1", lambda: synthetic.generate("/nonexistent/never", seed=-1, progress=False),
     DataError, "seed >= 0"),
    ("generate: workers=0", lambda: synthetic.generate("/nonexistent/never", workers=0, progress=False),
     DataError, "workers"),
    ("generate: size as a string", lambda: synthetic.generate("/nonexistent/never", size="96", progress=False),
     DataError, "must be integers"),
    ("generate: quality=0", lambda: synthetic.generate("/nonexistent/never", quality=0, progress=False),
     DataError, "quality <= 100"),
]


@pytest.mark.parametrize("call, error, phrase", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_refused(call, error, phrase):
    with pytest.raises(error) as info:
        call()
    assert phrase in str(info.value)


def test_a_good_input_next_to_each_bad_one_is_scored():
    """The checks refuse only what is bad: the same calls with good inputs return numbers (boxes may reach outside
    the image; float64 and integer maps are fine)."""
    assert pointing_game(MAPS, BOXES).shape == (2,)
    assert mass_in_box(MAPS.double(), torch.tensor([[-3.0, -3.0, 50.0, 50.0], [4.0, 5.0, 0.5, 0.5]])).shape == (2,)
    assert set(recall_at_k(EMB, LABELS, ks=(1, 5))) == {1, 5}
    assert FRNConfig(milestones=[5], crop_scale=[0.5, 1.0]).crop_scale == (0.5, 1.0)


# zoo.load: everything is checked before any data is read or generated

def test_load_checks_the_device_before_the_data(tmp_path):
    with pytest.raises(ValueError, match="not a device name"):
        zoo.load("frn-synthetic", data_root=tmp_path / "absent", cache=tmp_path, device="cdua")
    assert not (tmp_path / "absent").exists()


def test_load_refuses_a_data_root_typo_instead_of_generating_there(tmp_path):
    typo = tmp_path / "dta" / "synthetic"
    with pytest.raises(FileNotFoundError, match="does not exist") as info:
        zoo.load("gpw-synthetic", data_root=typo, cache=tmp_path, progress=False)
    assert "python -m data_download synthetic --root" in str(info.value)
    assert not typo.exists() and not (tmp_path / "dta").exists()


def test_load_refuses_episodes_zero_before_training(tmp_path):
    with pytest.raises(ValueError, match="episodes must be >= 1"):
        zoo.load("frn-synthetic", data_root=tmp_path / "absent", cache=tmp_path, episodes=0)
    assert not (tmp_path / "models").exists()


# data_download's readers: a folder without the completion marker

def test_hand_prepared_cub_folder_is_not_called_interrupted(tmp_path):
    write_cub(tmp_path, marker=False)
    with pytest.raises(DatasetNotFoundError, match="by hand") as info:
        CUB200(tmp_path)
    message = str(info.value)
    assert "incomplete" in message and "CUB_200_2011.tgz" in message and "Move it away" in message


def test_half_written_folder_names_both_causes(tmp_path):
    (tmp_path / "CUB_200_2011" / "images").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match="interrupted, or the folder was made by hand"):
        CUB200(tmp_path)


# the two commands: one 'error:' line on stderr, a non-zero exit, no traceback

def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def run_module(*args):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=300)


def test_data_download_command_refuses_a_negative_seed(tmp_path):
    out = run_module("data_download", "synthetic", "--root", str(tmp_path / "syn"), "--seed", "-1", "--quiet")
    assert out.returncode == 1 and "seed >= 0" in one_line(out.stderr)
    assert not (tmp_path / "syn").exists()


def test_data_download_main_refuses_zero_workers(tmp_path, capsys):
    assert data_main(["synthetic", "--root", str(tmp_path), "--workers", "0", "--quiet"]) == 1
    assert "workers" in one_line(capsys.readouterr().err)


def test_train_command_with_a_missing_config_file(tmp_path):
    out = run_module("sfam_lite.train", "frn", "--config", str(tmp_path / "missing.json"), "--cache", str(tmp_path))
    assert out.returncode == 2 and "cannot read the config file" in one_line(out.stderr)


@pytest.mark.parametrize("text, phrase", [
    ('{"episodes": 2000', "is not valid JSON"),
    ("[2000]", "holds a JSON list, not an object"),
    ('{"episodes": 0}', "episodes must be >= 1"),
    ('{"lr": "fast"}', "lr must be a number"),
    ('{"epochs": 3}', "unknown config field"),
], ids=["malformed", "a list", "episodes 0", "lr text", "unknown field"])
def test_train_command_with_a_bad_config_file(tmp_path, capsys, text, phrase):
    config = tmp_path / "config.json"
    config.write_text(text)
    assert train_main(["frn", "--config", str(config), "--cache", str(tmp_path)]) == 2
    assert phrase in one_line(capsys.readouterr().err)
    assert not (tmp_path / "models").exists()


def test_train_command_with_a_bad_device(tmp_path, capsys):
    assert train_main(["gpw", "--device", "gpu0", "--cache", str(tmp_path)]) == 2
    assert "not a device name" in one_line(capsys.readouterr().err)


def test_train_command_with_a_data_root_typo(tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"episodes": 1}))
    assert train_main(["frn", "--config", str(config), "--data-root", str(tmp_path / "typo"),
                       "--cache", str(tmp_path)]) == 1
    assert "does not exist" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "typo").exists()
