"""The package's shape: what ``import sfam_lite`` loads, where the command lines and transforms live."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_import_does_not_load_pyplot():
    out = _run("import sfam_lite, sys; assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'")
    assert out.returncode == 0, out.stderr


def test_plotting_is_loaded_on_first_use():
    out = _run("import sfam_lite, sys; p = sfam_lite.plotting; assert 'matplotlib.pyplot' in sys.modules; "
               "from sfam_lite import plotting; assert plotting is p and callable(p.overlay); "
               "assert 'plotting' in dir(sfam_lite)")
    assert out.returncode == 0, out.stderr
    import sfam_lite
    try:
        sfam_lite.not_a_name
    except AttributeError as exc:
        assert "not_a_name" in str(exc)
    else:
        raise AssertionError("no AttributeError")


def test_training_code_does_not_import_the_zoo():
    """train → zoo → train was a cycle; the command line moved to sfam_lite.cli."""
    out = _run("import sys, sfam_lite.train as t; assert 'sfam_lite.zoo' not in sys.modules; "
               "assert t.main is __import__('sfam_lite.cli').cli.train_main; "
               "from sfam_lite.train import IMAGENET_MEAN, eval_transform, train_transform; "
               "import sfam_lite.transforms as tr; assert eval_transform is tr.eval_transform")
    assert out.returncode == 0, out.stderr


def test_python_m_sfam_lite_train_still_runs():
    out = subprocess.run([sys.executable, "-m", "sfam_lite.train", "--help"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and out.stdout.startswith("usage: python -m sfam_lite.train"), out.stderr
    assert "RuntimeWarning" not in out.stderr, out.stderr
    bad = subprocess.run([sys.executable, "-m", "sfam_lite.train", "frn", "--data", "cub"], capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2 and "released checkpoint" in bad.stderr


def test_check_choice_names_argument_value_and_choices():
    import pytest

    from sfam_lite._checks import check_choice
    assert check_choice("b", "mode", ("a", "b")) == "b"
    with pytest.raises(ValueError, match=r"unknown mode 'c'; choose one of 'a', 'b'\."):
        check_choice("c", "mode", ("a", "b"))
    from sfam_lite.train import GPWConfig, lr_factor
    with pytest.raises(ValueError, match=r"unknown schedule 'step'; choose one of 'constant', 'cosine'"):
        lr_factor("step", 0, 10)
    with pytest.raises(ValueError, match=r"unknown precision 'float16'; choose one of 'float32', 'bfloat16'"):
        GPWConfig(precision="float16")


def test_the_commands_and_the_chapters_use_one_default_folder(tmp_path, monkeypatch):
    """`python -m data_download cub200` / `frn-weights` / `synthetic` without --root, the dataset classes without
    root, and the model zoo without data_root / weights_root all use the same folders below $SFAM_BOOK_CACHE, so
    the README's commands followed by zoo.load("frn-cub") just work."""
    from data_download import CUB200, DatasetNotFoundError, SyntheticCUB200
    from data_download.__main__ import _parser
    from sfam_lite import zoo
    monkeypatch.setenv("SFAM_BOOK_CACHE", str(tmp_path))
    expected = {"cub200": tmp_path / "data" / "cub200", "frn-weights": tmp_path / "data" / "frn",
                "synthetic": tmp_path / "data" / "synthetic"}
    for command, folder in expected.items():
        assert Path(_parser().parse_args([command]).root) == folder
    for cls, command in ((CUB200, "cub200"), (SyntheticCUB200, "synthetic")):
        with pytest.raises(DatasetNotFoundError, match=str(expected[command] / "CUB_200_2011")):
            cls(split="frn_test")
    assert zoo.default_data_root("frn-cub") == expected["cub200"]
    assert zoo.default_data_root("gpw-synthetic") == expected["synthetic"]
    with pytest.raises(FileNotFoundError, match=f"frn-weights --root {expected['frn-weights']}"):
        zoo.load("frn-cub", progress=False)
