"""Bad inputs and unlucky faults, second round (issue 21): a damaged disk, a target layer followed by an in-place op,
a NaN map, an output path that cannot be written, Ctrl-C, two first uses at once, the leftovers of a killed run.

Each test says what it gives, what it expects, and what would be silently wrong (or lost) without the check. The
expectation is always an exception naming the problem and the fix, a command that exits with one ``error:`` line and
a documented status, or (for the recoverable faults) the right result recovered with a warning that names the fault.
"""
import errno
import fcntl
import json
import math
import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from data_download import DataError, synthetic
from data_download.publish import FOLDER, MARKER, stale_build_folders
from sfam_lite import _io, zoo
from sfam_lite.baselines import CGRAM, RAM
from sfam_lite.cli import train_main
from sfam_lite.cli import evaluate_main, results_json
from sfam_lite.evaluate import Result
from sfam_lite.evaluation import forward_with_features
from sfam_lite.explainer import SFAM
from sfam_lite.explorer import capture_layers, render_panel, threshold_mask
from sfam_lite.slider import _as_rgb_array, static_slider
from test_bad_inputs import one_line

TINY_FRN = dict(width=0.0625, image_size=32, way=3, shot=1, query=2, episodes=2, milestones=(1,))


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    synthetic.generate(root, images_per_class=3, size=40, num_classes=16, progress=False, workers=1)
    return root


def zero_inside(path, tensor: torch.Tensor, n: int = 64) -> None:
    """Zero ``n`` bytes in the middle of ``tensor``'s stored bytes in the file ``path`` (as a bad disk block would):
    the zip around them stays readable, and torch.load does not check the zip's CRCs."""
    data = bytearray(path.read_bytes())
    raw = tensor.detach().contiguous().numpy().tobytes()
    at = data.find(raw)
    assert at >= 0, "the tensor's bytes are not stored verbatim"
    mid = at + len(raw) // 2
    data[mid:mid + n] = bytes(n)
    path.write_bytes(bytes(data))


def record(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"state_dict": {"w": torch.randn(4096, generator=g), "b": torch.randn(8, generator=g)},
            "config": {"width": 1.0}, "history": [{"loss": 1.5, "accuracy": 0.25}], "name": "frn-synthetic"}


def file_mode(path) -> int:
    return os.stat(path).st_mode & 0o777


# == 1a. checkpoints: a hash, checked on load; unreadable files named with the fix =================================

def test_checkpoint_with_zeroed_bytes_is_refused(tmp_path):
    """Input: a saved checkpoint with 64 bytes zeroed inside a weight tensor. Expect: CheckpointError naming the file
    and 'hash does not match'. Silently wrong without it: torch.load returns the changed weights without a word."""
    path = tmp_path / "m.pt"
    rec = record()
    zoo.save_checkpoint(rec, path)
    zero_inside(path, rec["state_dict"]["w"])
    assert not torch.equal(torch.load(path, weights_only=True)["state_dict"]["w"], rec["state_dict"]["w"])
    with pytest.raises(zoo.CheckpointError, match="content hash does not match") as info:
        zoo.read_checkpoint(path, verify=True)
    assert str(path) in str(info.value) and "Delete it" in str(info.value)


@pytest.mark.parametrize("damage, phrase", [
    (lambda b: b"", "is empty"),
    (lambda b: b[:len(b) // 2], "damaged or truncated"),
    (lambda b: b[:100], "damaged or truncated"),
    (lambda b: b"this is not a checkpoint\n" * 40, "damaged or truncated"),
    (lambda b: bytes(len(b)), "damaged or truncated"),
], ids=["empty", "truncated to half", "truncated to 100 bytes", "text", "all zeros"])
def test_unreadable_checkpoint_names_its_path(tmp_path, damage, phrase):
    """Input: an empty, truncated or garbage .pt. Expect: CheckpointError (a ValueError) with the path and the fix.
    Without it: a raw zip/EOF/pickle traceback that names neither."""
    path = tmp_path / "m.pt"
    zoo.save_checkpoint(record(), path)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(zoo.CheckpointError, match=phrase) as info:
        zoo.read_checkpoint(path, verify=True)
    assert str(path) in str(info.value)


def test_checkpoint_without_hash_is_not_trusted(tmp_path):
    """Input: a zoo-like record saved with plain torch.save (no hash). Expect: refused with 'no content hash'.
    Without it: a damaged hashless checkpoint would load as if it were fine."""
    path = tmp_path / "m.pt"
    torch.save(record(), path)
    with pytest.raises(zoo.CheckpointError, match="carries no content hash"):
        zoo.read_checkpoint(path, verify=True)


def test_checkpoint_without_history_is_named(tmp_path):
    """Input: a hashed record with no 'history'. Expect: 'no training history', not a bare KeyError: 'history'."""
    path = tmp_path / "m.pt"
    rec = record()
    del rec["history"]
    zoo.save_checkpoint(rec, path)
    with pytest.raises(zoo.CheckpointError, match="no training history"):
        zoo.read_checkpoint(path, verify=True)


def test_checkpoint_with_a_changed_history_is_refused(tmp_path):
    """Input: a hashed record whose history was edited after saving (the hash covers every field). Expect: refused.
    Silently wrong otherwise: a chapter would plot another training curve than the one that made the weights."""
    path = tmp_path / "m.pt"
    rec = record()
    zoo.save_checkpoint(rec, path)
    loaded = torch.load(path, weights_only=True)
    loaded["history"][0]["loss"] = 0.01
    torch.save(loaded, path)
    with pytest.raises(zoo.CheckpointError, match="hash does not match"):
        zoo.read_checkpoint(path, verify=True)


def test_a_good_checkpoint_round_trips(tmp_path):
    """Control: the same record saved and read verifies and holds the same tensors."""
    path = tmp_path / "m.pt"
    rec = record()
    zoo.save_checkpoint(rec, path)
    back = zoo.read_checkpoint(path, verify=True)
    assert torch.equal(back["state_dict"]["w"], rec["state_dict"]["w"]) and back["sha256"] == zoo.record_digest(rec)


def test_checkpoint_gets_the_umask_not_0600(tmp_path):
    """Input: umask 022, an existing 0644 checkpoint rewritten. Expect: 0644. Without it: mkstemp's 0600 (other users
    of a shared cache cannot read the model)."""
    path = tmp_path / "m.pt"
    path.write_bytes(b"old")
    os.chmod(path, 0o644)
    old = os.umask(0o022)
    try:
        zoo.save_checkpoint(record(), path)
    finally:
        os.umask(old)
    assert file_mode(path) == 0o644


def test_damaged_cached_checkpoint_is_retrained(tiny_root, tmp_path):
    """Input: the cached checkpoint of a zoo model with bytes zeroed in its largest tensor. Expect: a warning naming
    the file, then the model trained again to the original weights (training is deterministic). Silently wrong
    without it: the model loads with changed weights."""
    first = zoo.load("frn-synthetic", data_root=tiny_root, cache=tmp_path, progress=False, **TINY_FRN)
    path = zoo.Path(first.meta["checkpoint"])
    largest = max(first.state_dict().values(), key=lambda t: t.numel())
    zero_inside(path, largest.cpu())
    with pytest.warns(UserWarning, match="Training it again") as caught:
        again = zoo.load("frn-synthetic", data_root=tiny_root, cache=tmp_path, progress=False, **TINY_FRN)
    assert str(path) in str(caught[0].message)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    zoo.read_checkpoint(path, verify=True)     # the new checkpoint verifies


def test_empty_cached_checkpoint_is_retrained(tiny_root, tmp_path):
    """Input: the cached checkpoint emptied (a full disk while copying). Expect: retrained with a warning, not an
    EOFError traceback on every later load."""
    first = zoo.load("frn-synthetic", data_root=tiny_root, cache=tmp_path, progress=False, **TINY_FRN)
    zoo.Path(first.meta["checkpoint"]).write_bytes(b"")
    with pytest.warns(UserWarning, match="is empty"):
        again = zoo.load("frn-synthetic", data_root=tiny_root, cache=tmp_path, progress=False, **TINY_FRN)
    assert again.meta["history"] == first.meta["history"]


def test_trained_model_is_kept_when_the_cache_cannot_be_written(tiny_root, tmp_path, monkeypatch):
    """Input: the checkpoint write fails after training (a full disk). Expect: the model returned, a warning and
    meta['cache_error'] naming where it was kept, and that file verifies. Lost work without it: minutes of training."""
    def full_disk(record, path):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(zoo, "save_checkpoint", full_disk)
    with pytest.warns(UserWarning, match="the trained model was kept at"):
        model = zoo.load("frn-synthetic", data_root=tiny_root, cache=tmp_path, progress=False, **TINY_FRN)
    kept = zoo.Path(model.meta["checkpoint"])
    try:
        assert str(kept) in model.meta["cache_error"] and "No space left" in model.meta["cache_error"]
        assert zoo.read_checkpoint(kept, verify=True)["history"] == model.meta["history"]
    finally:
        kept.unlink(missing_ok=True)


def test_frn_cub_garbage_checkpoint_names_the_download(tmp_path):
    """Input: FRN's released checkpoint replaced by garbage. Expect: CheckpointError with the path and the command
    that fetches it, not a zip traceback."""
    path = tmp_path / zoo.FRN_CUB_CHECKPOINT
    path.parent.mkdir(parents=True)
    path.write_bytes(b"<html>quota exceeded</html>")
    with pytest.raises(zoo.CheckpointError, match="damaged or truncated") as info:
        zoo.load("frn-cub", weights_root=tmp_path)
    assert str(path) in str(info.value)


def test_frn_cub_checkpoint_of_another_model_is_named(tmp_path):
    """Input: a readable state_dict of another network at FRN's checkpoint path. Expect: CheckpointError saying it is
    not FRN's ResNet-12 and how to get it; not the multi-line load_state_dict RuntimeError."""
    path = tmp_path / zoo.FRN_CUB_CHECKPOINT
    path.parent.mkdir(parents=True)
    torch.save({"fc.weight": torch.ones(2, 2)}, path)
    with pytest.raises(zoo.CheckpointError, match="python -m data_download frn-weights"):
        zoo.load("frn-cub", weights_root=tmp_path)


# == 1b. explainers: the captured tensor must be the layer's output ================================================

def bn_relu_net(inplace: bool) -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=inplace),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten())
    net[1].running_mean.fill_(0.5)    # BN output with negative values, which the ReLU would clip
    return net.eval()


IMAGES = torch.rand(2, 3, 12, 12)


@pytest.mark.parametrize("method", [lambda m, layer: SFAM(m, layer), lambda m, layer: RAM(m, layer),
                                    lambda m, layer: CGRAM(m, layer)], ids=["SFAM", "RAM", "CG-RAM (gradients)"])
def test_target_layer_modified_in_place_is_refused(method):
    """Input: BatchNorm as the target layer, followed by ReLU(inplace=True). Expect: RuntimeError naming the in-place
    op and the fix. Silently wrong without it: the maps are those of ReLU(BN), the hook's tensor having changed."""
    net = bn_relu_net(inplace=True)
    with method(net, net[1]) as explainer, pytest.raises(RuntimeError, match="modified in place") as info:
        explainer(IMAGES[:1], IMAGES[1:])
    assert "inplace=False" in str(info.value)


def test_the_relu_itself_or_inplace_false_is_explained():
    """Control: the ReLU as target, or the BN with inplace=False, explain without error; the ReLU's maps differ from
    the BN's (which is what the in-place op would have hidden)."""
    net = bn_relu_net(inplace=True)
    with SFAM(net, net[2]) as e:
        after = e(IMAGES[:1], IMAGES[1:]).query_features
    net = bn_relu_net(inplace=False)
    with SFAM(net, net[1]) as e:
        before = e(IMAGES[:1], IMAGES[1:]).query_features
    assert torch.equal(after, before.clamp_min(0)) and bool((before < 0).any())


def test_layer_that_runs_twice_is_refused():
    """Input: one ReLU instance used after two convolutions, as the target layer. Expect: RuntimeError 'ran 2 times'.
    Silently wrong without it: the map of the last call only, undocumented."""
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.act = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3), nn.ReLU()

        def forward(self, x):
            return self.act(self.b(self.act(self.a(x)))).mean((-2, -1))
    net = Twice().eval()
    with SFAM(net, net.act) as e, pytest.raises(RuntimeError, match="ran 2 times"):
        e(IMAGES[:1], IMAGES[1:])


def test_forward_with_features_refuses_an_in_place_target():
    """Input: the evaluation's feature pass on a BN target followed by an in-place ReLU. Expect: RuntimeError, not
    cached features that are the ReLU's."""
    net = bn_relu_net(inplace=True)
    with pytest.raises(RuntimeError, match="modified in place"):
        forward_with_features(net, net[1], IMAGES)


def test_explorer_capture_refuses_an_in_place_target():
    """Input: the explorer's per-layer capture with one layer modified in place later. Expect: RuntimeError naming it."""
    net = bn_relu_net(inplace=True)
    with pytest.raises(RuntimeError, match="layer bn.*modified in place"):
        capture_layers(net, {"bn": net[1], "conv": net[0]}, IMAGES)


def test_inference_mode_still_explains():
    """Control: under torch.inference_mode tensors have no version counter; the check must not break SFAM there."""
    net = bn_relu_net(inplace=False)
    with torch.inference_mode(), SFAM(net, net[2]) as e:
        out = e(IMAGES[:1], IMAGES[1:])
    assert out.query_maps.shape == (1, 12, 12)


# == 1c. explorer and slider ========================================================================================

def test_render_panel_refuses_a_nan_heat_map():
    """Input: a heat map with one NaN pixel. Expect: ValueError 'non-finite'. Silently wrong without it: the whole
    panel is drawn as the dimmed image with no heat map at all."""
    heat = torch.rand(8, 8)
    heat[3, 4] = math.nan
    with pytest.raises(ValueError, match="1 non-finite pixel"):
        render_panel(torch.rand(3, 8, 8), heat)


def test_render_panel_refuses_a_heat_map_of_another_size():
    """Input: a 4x4 feature-resolution map over an 8x8 image. Expect: ValueError saying to upsample, not a numpy
    broadcast error."""
    with pytest.raises(ValueError, match="upsample"):
        render_panel(torch.rand(3, 8, 8), torch.rand(4, 4))


def test_threshold_mask_refuses_nan():
    """Input: a map with an infinite pixel. Expect: ValueError. Without it: an empty or arbitrary mask."""
    m = np.random.default_rng(0).random((6, 6))
    m[0, 0] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        threshold_mask(m, 0.5)


def test_threshold_mask_refuses_a_batch():
    """Input: a (B, H, W) stack. Expect: ValueError asking for one (H, W) map."""
    with pytest.raises(ValueError, match=r"one \(H, W\) map"):
        threshold_mask(np.zeros((2, 6, 6)), 0.5)


def test_static_slider_bool_mask_is_white_where_true():
    """Input: a bool mask as a frame. Expect: 255 where True, 0 elsewhere. Silently wrong before: values 0/1 of 255,
    a black frame."""
    mask = np.zeros((4, 5), bool)
    mask[1:3, 2:4] = True
    px = _as_rgb_array(mask, 0)
    assert px.dtype == np.uint8 and px[1, 2] == 255 and px[0, 0] == 0
    assert "data:image/png" in static_slider([mask, ~mask], [0.1, 0.2]).html


@pytest.mark.parametrize("fmt, error", [("{:d}", ValueError), ("{x}", ValueError), ("{0}{1}", ValueError),
                                        (3, TypeError)], ids=["int format of a float", "named field",
                                                              "two fields", "not a string"])
def test_static_slider_bad_value_format(fmt, error):
    """Input: a value_format that cannot format the values. Expect: an error naming value_format, not a raw
    KeyError/IndexError from str.format."""
    with pytest.raises(error, match="value_format"):
        static_slider([np.zeros((2, 2))], [0.5], value_format=fmt)


# == 2. commands: outputs checked before the work; late failures keep the result; Ctrl-C exits 130 =================

def fake_result(samples: int = 1) -> Result:
    ious = np.full((1, samples), 0.7)
    info = {"model": "frn-synthetic", "explained_samples": samples, "distinct_pairs": samples, "episodes": 1,
            "way": 5, "few_shot_accuracy": 0.2 if samples else 0.0}
    return Result("frn", (0.2,), {"sfam": ious}, {"sfam": ious}, np.zeros(samples, int), info)


@pytest.fixture
def no_work(monkeypatch):
    """evaluate's run() replaced: records whether the work started, returns a one-sample result."""
    calls = []

    def run(*args, **kwargs):
        calls.append(args)
        return fake_result()
    monkeypatch.setattr("sfam_lite.evaluate.run", run)
    return calls


def test_evaluate_output_under_a_file_is_refused_before_the_work(tmp_path, capsys, no_work):
    """Input: --output a/b.json where a is a file. Expect: exit 2, one error line, before any evaluation. Lost work
    without it: the whole evaluation, then a traceback."""
    (tmp_path / "a").write_text("x")
    assert evaluate_main(["frn", "--output", str(tmp_path / "a" / "b.json"), "--no-progress"]) == 2
    assert "is a file, not a folder" in one_line(capsys.readouterr().err) and not no_work


def test_evaluate_output_that_is_a_directory_is_refused_before_the_work(tmp_path, capsys, no_work):
    """Input: --output an existing directory. Expect: exit 2 'is a directory' before the work."""
    assert evaluate_main(["frn", "--output", str(tmp_path), "--no-progress"]) == 2
    assert "is a directory" in one_line(capsys.readouterr().err) and not no_work


def test_evaluate_output_in_a_read_only_folder_is_refused_before_the_work(tmp_path, capsys, no_work, monkeypatch):
    """Input: --output in a folder where no file can be created (read-only file system, simulated: tests run as
    root, which ignores permissions). Expect: exit 2 naming the folder, before the work."""
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")
    monkeypatch.setattr(_io.tempfile, "TemporaryFile", read_only)
    assert evaluate_main(["frn", "--output", str(tmp_path / "r.json"), "--no-progress"]) == 2
    assert "Read-only file system" in one_line(capsys.readouterr().err) and not no_work


def test_evaluate_late_write_failure_keeps_the_results(tmp_path, capsys, no_work, monkeypatch):
    """Input: --output passes the early check, then the write fails (the disk filled during the run). Expect: exit 1,
    one error line naming a kept file that holds the results. Lost work without it: every result."""
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(_io, "atomic_write", full)
    assert evaluate_main(["frn", "--output", str(tmp_path / "r.json"), "--no-progress"]) == 1
    line = one_line(capsys.readouterr().err)
    kept = zoo.Path(line.split("kept at ")[1].split(". Move")[0])
    try:
        assert json.loads(kept.read_text())["kind"] == "frn" and not (tmp_path / "r.json").exists()
    finally:
        kept.unlink()


def test_evaluate_results_are_strict_json_with_the_umask(tmp_path, capsys, no_work):
    """Input: one explained sample (its interval is NaN). Expect: 'null' in the file, which a strict parser reads,
    and mode 0644 under umask 022. Silently wrong before: bare NaN (JSON.parse rejects the file), mode 0600."""
    out = tmp_path / "r.json"
    old = os.umask(0o022)
    try:
        assert evaluate_main(["frn", "--output", str(out), "--no-progress"]) == 0
    finally:
        os.umask(old)
    def refuse(name):
        raise ValueError(f"bare {name} in a results file")
    data = json.loads(out.read_text(), parse_constant=refuse)
    assert data["tables"]["query"]["0.2"]["sfam"]["mean_iou_half"] is None and file_mode(out) == 0o644


def test_results_json_writes_null_for_nan_and_infinity():
    """Input: NaN, +inf and a numpy NaN. Expect: null each; finite values unchanged."""
    text = results_json({"a": math.nan, "b": [math.inf, 0.5], "c": np.float64("nan"), "d": np.int64(3)})
    assert json.loads(text) == {"a": None, "b": [None, 0.5], "c": None, "d": 3}


def test_evaluate_with_no_explained_sample_fails(tmp_path, capsys, monkeypatch):
    """Input: a run in which no sample is explained (no correct query). Expect: exit 1 'no sample was explained', no
    output file. Silently wrong before: exit 0 with tables of 'nan ± nan'."""
    monkeypatch.setattr("sfam_lite.evaluate.run", lambda *a, **k: fake_result(0))
    assert evaluate_main(["frn", "--output", str(tmp_path / "r.json"), "--no-progress"]) == 1
    assert "no sample was explained" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "r.json").exists()


def test_evaluate_config_of_the_wrong_type_is_one_line(tmp_path, capsys, no_work):
    """Input: --config {"lr": "fast"}. Expect: exit 2 'lr must be a number' before any work (the train command
    already did this). Before: a TypeError traceback after loading the data."""
    cfg = tmp_path / "c.json"
    cfg.write_text('{"lr": "fast"}')
    assert evaluate_main(["frn", "--config", str(cfg), "--no-progress"]) == 2
    assert "lr must be a number" in one_line(capsys.readouterr().err) and not no_work


def test_evaluate_ctrl_c_exits_130_with_one_line(capsys, monkeypatch):
    """Input: Ctrl-C during the evaluation. Expect: exit 130 and one 'error: interrupted' line (before: a traceback
    and exit 1)."""
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr("sfam_lite.evaluate.run", interrupted)
    assert evaluate_main(["frn", "--no-progress"]) == 130
    assert "interrupted" in one_line(capsys.readouterr().err)


def test_evaluate_unexpected_error_is_one_line(capsys, monkeypatch):
    """Input: an exception nobody expected inside the work. Expect: exit 1, one line naming its type and how to see
    the traceback."""
    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero")
    monkeypatch.setattr("sfam_lite.evaluate.run", broken)
    assert evaluate_main(["frn", "--no-progress"]) == 1
    assert "ZeroDivisionError" in one_line(capsys.readouterr().err)


def test_evaluate_command_ctrl_c_in_a_real_process(tmp_path):
    """Input: SIGINT to a running `python -m sfam_lite.evaluate` (generating its data). Expect: exit 130 and a last
    stderr line starting 'error: interrupted', no traceback."""
    # As in a terminal: Ctrl-C is not ignored in the child even when this test runs in a background job (a shell
    # starts `cmd &` with SIGINT ignored, its children inherit that, and Python then never raises KeyboardInterrupt)
    restore = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    proc = subprocess.Popen([sys.executable, "-m", "sfam_lite.evaluate", "frn", "--cache", str(tmp_path),
                             "--no-progress"], stderr=subprocess.PIPE, text=True, preexec_fn=restore)
    time.sleep(6)
    proc.send_signal(2)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("error: interrupted")


def test_train_cache_under_a_file_is_refused_before_training(tmp_path, capsys, monkeypatch):
    """Input: --cache a path under a file. Expect: exit 2, one line, zoo.load never called. Lost work before: the
    training ran, then failed on the write."""
    monkeypatch.setattr(zoo, "load", lambda *a, **k: pytest.fail("trained although the cache cannot be written"))
    (tmp_path / "f").write_text("x")
    assert train_main(["frn", "--cache", str(tmp_path / "f" / "cache")]) == 2
    assert "is a file, not a folder" in one_line(capsys.readouterr().err)


def test_train_cache_on_a_read_only_disk_is_refused_before_training(tmp_path, capsys, monkeypatch):
    """Input: --cache on a read-only file system (simulated). Expect: exit 2 before training."""
    monkeypatch.setattr(zoo, "load", lambda *a, **k: pytest.fail("trained although the cache cannot be written"))
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")
    monkeypatch.setattr(_io.tempfile, "TemporaryFile", read_only)
    assert train_main(["gpw", "--cache", str(tmp_path)]) == 2
    assert "Read-only file system" in one_line(capsys.readouterr().err)


def test_train_ctrl_c_exits_130(tmp_path, capsys, monkeypatch):
    """Input: Ctrl-C while training. Expect: exit 130 and one line."""
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(zoo, "load", interrupted)
    assert train_main(["frn", "--cache", str(tmp_path)]) == 130
    assert "interrupted" in one_line(capsys.readouterr().err)


def test_train_keeps_the_model_when_the_checkpoint_write_fails(tiny_root, tmp_path, capsys, monkeypatch):
    """Input: the cache passes the early check, the checkpoint write then fails (disk full). Expect: exit 1, one
    error line naming the kept checkpoint, which loads and verifies. Lost work before: the training."""
    def full_disk(record, path):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(zoo, "save_checkpoint", full_disk)
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(TINY_FRN))
    assert train_main(["frn", "--config", str(cfg), "--data-root", str(tiny_root), "--cache", str(tmp_path)]) == 1
    err = capsys.readouterr().err            # the progress bars, then the one error line
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: ") and err.count("error:") == 1 and "Traceback" not in err
    kept = zoo.Path(line.split("kept at ")[1].split(": free space")[0])
    try:
        assert zoo.read_checkpoint(kept, verify=True)["name"] == "frn-synthetic"
    finally:
        kept.unlink()
        kept.with_suffix(".log.csv").unlink(missing_ok=True)


# == 4. leftovers of killed runs, and two first uses at once =======================================================

def leftover(root, age: float = 3600.0):
    path = root / f".{FOLDER}.tmp-killed"
    (path / FOLDER / "images").mkdir(parents=True)
    past = time.time() - age
    os.utime(path, (past, past))
    return path


def test_leftover_of_a_killed_generator_is_removed_and_named(tmp_path):
    """Input: an hour-old .CUB_200_2011.tmp-* folder nobody holds. Expect: removed by the next generate, with a
    warning naming it. Before: it stayed for good, unmentioned (a 100 MB leftover per killed run)."""
    path = leftover(tmp_path)
    with pytest.warns(UserWarning, match="leftover build folder") as caught:
        synthetic.generate(tmp_path, images_per_class=2, size=32, num_classes=4, progress=False, workers=1)
    assert not path.exists() and str(path) in str(caught[0].message)
    assert not list(tmp_path.glob(f".{FOLDER}.tmp-*"))


def test_a_locked_build_folder_is_not_removed(tmp_path):
    """Input: an old build folder locked by a running build (flock held here). Expect: not stale, left alone.
    Silently wrong otherwise: a second run would delete another process's work in progress."""
    path = leftover(tmp_path)
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert stale_build_folders(tmp_path, FOLDER) == []
    finally:
        os.close(fd)
    assert stale_build_folders(tmp_path, FOLDER) == [path]


def test_a_build_folder_newer_than_this_process_is_not_removed(tmp_path):
    """Input: a build folder made after this process started (another run's, just begun). Expect: left alone."""
    leftover(tmp_path, age=-60)
    assert stale_build_folders(tmp_path, FOLDER) == []


def test_two_first_uses_at_once_both_succeed(tmp_path):
    """Input: two processes generating the same benchmark in one root at the same time. Expect: both exit 0, one
    complete folder, no leftovers. Before: the loser failed with 'Directory not empty ... check the folder'."""
    cmd = [sys.executable, "-m", "data_download", "synthetic", "--root", str(tmp_path), "--images-per-class", "4",
           "--classes", "24", "--size", "48", "--workers", "1", "--quiet"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sum("already complete" in out for out, _ in outs) == 1
    assert (tmp_path / FOLDER / MARKER).is_file() and not list(tmp_path.glob(f".{FOLDER}.tmp-*"))


@pytest.mark.parametrize("kwargs, phrase", [({"size": 100000}, "size <= 2048"),
                                            ({"images_per_class": 10 ** 6}, "images_per_class <=")],
                         ids=["size 100000", "a million images a class"])
def test_generate_refuses_sizes_that_cannot_fit_in_memory(kwargs, phrase):
    """Input: synthetic --size 100000. Expect: DataError before anything is made. Before: an attempt to allocate
    112 GiB."""
    with pytest.raises(DataError, match=phrase):
        synthetic.generate("/nonexistent/never", progress=False, **kwargs)


# == 5. explainers and boxes: errors that name the mistake ========================================================

from sfam_lite.baselines import Decomposition, GradFAM  # noqa: E402
from sfam_lite.localization import iou  # noqa: E402


def small_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()


class Returns(nn.Module):
    """The small net whose forward returns a dict {'embedding': e, 'logits': ...} or a tuple (e, logits)."""

    def __init__(self, net, kind):
        super().__init__()
        self.net, self.kind = net, kind

    def forward(self, x):
        e = self.net(x)
        return {"embedding": e, "logits": e[:, :2]} if self.kind == "dict" else (e, e[:, :2])


GRADIENT_METHODS = [CGRAM, GradFAM]


@pytest.mark.parametrize("method", GRADIENT_METHODS, ids=["CG-RAM", "Grad-FAM"])
def test_gradient_methods_under_inference_mode_name_the_cause(method):
    """Input: CG-RAM / Grad-FAM called inside torch.inference_mode(). Expect: RuntimeError saying to call it outside
    torch.inference_mode(), before any forward pass. Before: 'element 0 of tensors does not require grad', which
    does not say that inference mode (which enable_grad cannot undo) is the cause."""
    net = small_net()
    with method(net, net[1]) as explainer, torch.inference_mode():
        with pytest.raises(RuntimeError, match=r"call it outside torch\.inference_mode\(\)"):
            explainer(IMAGES[:1], IMAGES[1:])
        assert explainer._capture.calls == 0          # refused before the model ran
    with torch.inference_mode():
        q, s = IMAGES[:1].clone(), IMAGES[1:].clone()
    with method(net, net[1]) as explainer:          # inference tensors made there, explained outside: fine
        from_inference = explainer(q, s).query_maps
        plain = explainer(IMAGES[:1], IMAGES[1:]).query_maps
    assert torch.equal(from_inference, plain)


@pytest.mark.parametrize("method", GRADIENT_METHODS, ids=["CG-RAM", "Grad-FAM"])
def test_gradient_methods_on_a_frozen_model_name_the_fix(method):
    """Input: a model after requires_grad_(False) (a frozen backbone). Expect: RuntimeError naming the frozen model
    and model.requires_grad_(True); afterwards the same call works. Before: the bare autograd 'element 0 of tensors
    does not require grad'."""
    net = small_net().requires_grad_(False)
    with method(net, net[1]) as explainer:
        with pytest.raises(RuntimeError, match=r"frozen model.*model\.requires_grad_\(True\)"):
            explainer(IMAGES[:1], IMAGES[1:])
        net.requires_grad_(True)
        assert explainer(IMAGES[:1], IMAGES[1:]).weights.abs().sum() > 0


@pytest.mark.parametrize("kind, output", [("dict", "embedding"), ("tuple", 0),
                                          ("dict", lambda out: out["embedding"])], ids=["dict", "tuple", "callable"])
@pytest.mark.parametrize("method", GRADIENT_METHODS, ids=["CG-RAM", "Grad-FAM"])
def test_models_returning_a_tuple_or_dict(method, kind, output):
    """Input: a model whose forward returns a dict or tuple holding the embedding. Expect: without output=, a
    TypeError naming output= and the wrapping fix (before: "'dict' object has no attribute 'reshape'"); with
    output= picking the embedding, exactly the maps of the model that returns the embedding itself."""
    net = small_net()
    wrapped = Returns(net, kind)
    with method(wrapped, net[1]) as explainer, pytest.raises(TypeError, match=f"returned a {kind}.*Pass output="):
        explainer(IMAGES[:1], IMAGES[1:])
    with method(wrapped, net[1], output=output) as explainer:
        picked = explainer(IMAGES[:1], IMAGES[1:])
    with method(net, net[1]) as explainer:
        plain = explainer(IMAGES[:1], IMAGES[1:])
    assert torch.equal(picked.query_maps, plain.query_maps) and torch.equal(picked.weights, plain.weights)


def test_output_that_picks_nothing_is_named():
    """Input: output='emb' for a model returning {'embedding', 'logits'}. Expect: TypeError quoting output= and the
    keys there are; not a bare KeyError."""
    net = small_net()
    with CGRAM(Returns(net, "dict"), net[1], output="emb") as explainer, \
            pytest.raises(TypeError, match=r"output='emb' cannot pick.*\['embedding', 'logits'\]"):
        explainer(IMAGES[:1], IMAGES[1:])


def test_head_returning_a_dict_uses_output_too():
    """Input: explain_features with a head that returns a dict. Expect: TypeError naming the head and output=; with
    output='embedding' the same weights as with a head returning the tensor."""
    net = small_net()
    with torch.no_grad():
        a = net[1](net[0](IMAGES))
    head = nn.Sequential(net[2], net[3])
    dict_head = lambda f: {"embedding": head(f)}  # noqa: E731
    with pytest.raises(TypeError, match="head returned a dict.*Pass output="):
        CGRAM(None, head=dict_head).explain_features(a[:1], a[None, 1:])
    picked = CGRAM(None, head=dict_head, output="embedding").explain_features(a[:1], a[None, 1:])
    plain = CGRAM(None, head=head).explain_features(a[:1], a[None, 1:])
    assert torch.equal(picked.weights, plain.weights)


@pytest.mark.parametrize("projection", [torch.ones(4, 5), nn.Linear(5, 4)], ids=["matrix", "nn.Linear"])
def test_decomposition_projection_of_the_wrong_width(projection):
    """Input: a Decomposition projection reading 5 channels for a target layer with 8. Expect: ValueError naming
    both widths and nn.Linear(8, D), from the model call and from explain_features. Before: an einsum subscript
    error that names neither the projection nor the layer."""
    net = small_net()
    with Decomposition(net, net[1], projection=projection) as explainer, \
            pytest.raises(ValueError, match=r"input width 5 .* N = 8 channels.*nn\.Linear\(8, D\)"):
        explainer(IMAGES[:1], IMAGES[1:])
    with pytest.raises(ValueError, match="input width 5"):
        Decomposition(None, projection=projection).explain_features(torch.rand(1, 8, 3, 3), torch.rand(1, 2, 8, 3, 3))
    ok = Decomposition(None, projection=torch.ones(4, 8)).explain_features(torch.rand(1, 8, 3, 3),
                                                                           torch.rand(1, 2, 8, 3, 3))
    assert ok.query_maps.shape == (1, 3, 3)


@pytest.mark.parametrize("pool, got", [(lambda a: a.mean(-1), r"shape \(1, 8, 12\)"),
                                       (lambda a: a.mean(dim=(1, 2, 3)), r"shape \(1,\)"),
                                       (lambda a: a.mean(dim=(-2, -1)).tolist(), "list")],
                         ids=["one spatial dim left", "channels reduced", "not a tensor"])
def test_pool_returning_the_wrong_shape(pool, got):
    """Input: a pool callable that keeps a spatial dimension, reduces the channels, or returns a list. Expect:
    ValueError naming what it returned and the expected (B, N) = (1, 8). Before: 'v_q must have shape (N,) or
    (B, N)' (a name the user never gave), or, for (1,), a map computed from one channel broadcast to all: silently
    wrong."""
    net = small_net()
    with SFAM(net, net[1], pool=pool) as explainer, \
            pytest.raises(ValueError, match=rf"pool returned {got}.*\(B, N\) = \(1, 8\)"):
        explainer(IMAGES[:1], IMAGES[1:])


def test_iou_of_box_counts_that_do_not_broadcast():
    """Input: iou of 3 boxes against 2. Expect: ValueError naming both counts and the fixes (same count, one box, or
    a[:, None] and b[None] for every pair); one box against 3 still broadcasts. Before: numpy's 'operands could not
    be broadcast together with shapes (3,) (2,)'."""
    three = np.array([[0, 0, 4, 4], [1, 1, 4, 4], [2, 2, 4, 4]], dtype=float)
    with pytest.raises(ValueError, match=r"a has \(3,\) box\(es\) and b \(2,\).*a\[:, None\] and b\[None\]"):
        iou(three, three[:2])
    assert iou(three[0], three).shape == (3,) and iou(three[:, None], three[None, :2]).shape == (3, 2)
