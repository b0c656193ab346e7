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
    """The training code loads without the zoo or the command line (they import it, not the reverse)."""
    out = _run("import sys, sfam_lite.train as t; assert 'sfam_lite.zoo' not in sys.modules; "
               "assert 'sfam_lite.cli' not in sys.modules and not hasattr(t, 'main'); "
               "from sfam_lite.train import IMAGENET_MEAN, eval_transform, train_transform; "
               "import sfam_lite.transforms as tr; assert eval_transform is tr.eval_transform")
    assert out.returncode == 0, out.stderr


def test_python_m_sfam_lite_train_still_runs():
    out = subprocess.run([sys.executable, "-m", "sfam_lite.train", "--help"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and out.stdout.startswith("usage: python -m sfam_lite train"), out.stderr
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
    with pytest.raises(ValueError, match=r"unknown schedule 'linear'; choose one of 'constant', 'cosine', 'step'"):
        lr_factor("linear", 0, 10)
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


def test_submodules_are_reachable_after_import_without_being_imported_by_it():
    out = _run("import sys, sfam_lite; lazy = ('localization', 'sanity', 'metrics', 'plotting'); "
               "assert not [m for m in lazy if 'sfam_lite.' + m in sys.modules], 'imported eagerly'; "
               "assert callable(sfam_lite.localization.boxes_from_maps) and callable(sfam_lite.sanity.map_similarity); "
               "assert sfam_lite.metrics.__name__ == 'sfam_lite.metrics' and set(lazy) <= set(dir(sfam_lite)); "
               "assert callable(sfam_lite.explain_episode) and callable(sfam_lite.vit_tokens_to_grid)")
    assert out.returncode == 0, out.stderr


def test_python_m_sfam_lite_lists_the_commands():
    for argv in (["--help"], []):
        out = subprocess.run([sys.executable, "-m", "sfam_lite", *argv], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0 and out.stdout.startswith("usage: python -m sfam_lite"), out.stderr
        for command in ("python -m sfam_lite evaluate", "python -m sfam_lite train",
                        "python -m data_download synthetic", "python -m data_download cub200",
                        "python -m data_download frn-weights"):
            line = next(line for line in out.stdout.splitlines() if line.strip().startswith(command + " "))
            assert len(line.split(command, 1)[1].strip()) > 10, line      # one line saying what it does
    bad = subprocess.run([sys.executable, "-m", "sfam_lite", "explain"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "unrecognized arguments" in bad.stderr


def test_both_spellings_of_a_command_are_the_same_command():
    """``python -m sfam_lite evaluate`` and the module name ``python -m sfam_lite.evaluate`` run one command."""
    outs = [subprocess.run([sys.executable, "-m", *spelling, "gpw", "--episodes", "0"], capture_output=True,
                           text=True, timeout=300) for spelling in (["sfam_lite", "evaluate"], ["sfam_lite.evaluate"])]
    assert [o.returncode for o in outs] == [2, 2] and outs[0].stderr == outs[1].stderr
    assert outs[0].stderr.startswith("error: --episodes must be at least 1")
    for spelling in (["sfam_lite", "train"], ["sfam_lite.train"]):
        out = subprocess.run([sys.executable, "-m", *spelling, "--help"], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0 and "python -m sfam_lite train" in out.stdout, out.stderr


def _wheel(tmp_path):
    """The package built as a wheel from a copy of the sources (the checkout is left untouched)."""
    import shutil
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(root / name, src / name)
    for name in ("sfam_lite", "data_download"):
        shutil.copytree(root / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                          "-q", "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return next((tmp_path / "dist").glob("sfam_lite-*.whl"))


def test_the_wheel_ships_py_typed_and_the_licence_and_mypy_sees_the_types(tmp_path):
    """The built wheel holds sfam_lite/py.typed, the MIT licence, the URLs and requires-python >= 3.11; installed from
    it, mypy reads the package's annotations in a user's script (without py.typed it reports the import as untyped
    and every name as Any)."""
    import zipfile
    with zipfile.ZipFile(_wheel(tmp_path)) as wheel:
        names = wheel.namelist()
        metadata = wheel.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        assert "sfam_lite/py.typed" in names and any(n.endswith("licenses/LICENSE") for n in names)
        assert "License-Expression: MIT" in metadata and "Requires-Python: >=3.11" in metadata
        import yaml
        url = yaml.safe_load((Path(__file__).resolve().parents[1] / "_config.yml").read_text())["repository"]["url"]
        assert f"Project-URL: Source, {url.rstrip('/')}" in metadata
        assert "Classifier: Typing :: Typed" in metadata
        wheel.extractall(tmp_path / "site")
    import pytest
    pytest.importorskip("mypy")
    (tmp_path / "user.py").write_text(
        "import torch\nimport sfam_lite\n\n"
        "explainer = sfam_lite.SFAM(torch.nn.Identity(), torch.nn.Identity(), metric='cosine')\n"
        "result = explainer(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))\n"
        "reveal_type(result)\n"
        "wrong: int = result\n"
        "sfam_lite.SFAM(None, metric=3)\n")
    # the heavy dependencies are not analysed (their names become Any): only sfam_lite's own types are checked
    (tmp_path / "mypy.ini").write_text("[mypy]\n"
                                       "[mypy-torch.*,torchvision.*,numpy.*,matplotlib.*,scipy.*,tqdm.*,PIL.*]\n"
                                       "follow_imports = skip\n")
    import os
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}      # mypy finds the wheel's files as installed
    out = subprocess.run([sys.executable, "-m", "mypy", "--config-file", "mypy.ini", "--cache-dir", "cache",
                          "--python-executable", sys.executable, "user.py"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert 'Revealed type is "sfam_lite.explainer.Explanation"' in out.stdout, out.stdout + out.stderr
    assert 'incompatible type "int"; expected "str"' in out.stdout and "variable has type \"int\"" in out.stdout
    assert "py.typed" not in out.stdout and "import-untyped" not in out.stdout
