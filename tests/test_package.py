"""The package's shape: what ``import sfam_lite`` loads, where the command lines and transforms live."""
from __future__ import annotations

import subprocess
import sys


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
