"""The Colab setup cell, run as Colab runs it (slow for a unit test: about 30 s, most of it pip and git).

Every chapter carries the same cell tagged ``colab-setup`` (written by ``scripts/sync_colab.py`` from the
repository URL in ``_config.yml``); in Colab it pip-installs ``sfam-lite @ git+<url>@<branch>``. Here it runs
in a fresh virtual environment that sees only what Colab preinstalls (torch, torchvision, numpy, scipy,
matplotlib, tqdm, with pip, setuptools and wheel, and what those depend on: a folder of links to this
environment's copies, put on the path by a ``.pth`` file), with a stand-in ``google.colab`` module imported
and the repository URL swapped for a local clone of the committed tree. pip runs with ``PIP_NO_INDEX``: it may
resolve the package's dependencies only against the preinstalled ones, so a dependency Colab lacks fails here.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import sync_colab  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "notebooks").glob("*.ipynb"))
#: What a Colab runtime has before the cell runs (with everything these depend on).
PREINSTALLED = ("torch", "torchvision", "numpy", "scipy", "matplotlib", "tqdm", "pip", "setuptools", "wheel")
OURS = ("sfam_lite", "data_download")


def setup_cells() -> dict[str, str]:
    cells = {}
    for path in CHAPTERS:
        found = [c for c in json.loads(path.read_text())["cells"] if "colab-setup" in c["metadata"].get("tags", [])]
        assert len(found) == 1, f"{path.name}: {len(found)} cells tagged colab-setup, expected one"
        assert found[0]["cell_type"] == "code"
        cells[path.name] = "".join(found[0]["source"])
    return cells


def test_every_chapter_has_the_synced_setup_cell():
    url, branch = sync_colab.repository()
    cells = setup_cells()
    assert len(cells) == len(CHAPTERS) >= 7
    assert set(cells.values()) == {sync_colab.setup_source(url, branch)}, \
        "a setup cell differs from what scripts/sync_colab.py writes; run `python scripts/sync_colab.py`"
    assert f'"sfam-lite @ git+{url}@{branch}"' in next(iter(cells.values()))


def dependency_closure(names) -> list[importlib.metadata.Distribution]:
    """The installed distributions ``names`` and, recursively, what they require (markers evaluated, with the
    extras a requirement asks for, e.g. torch's ``cuda-toolkit[cublas, ...]``)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    seen, todo, dists = set(), [(canonicalize_name(n), "") for n in names], {}
    while todo:
        name, extra = todo.pop()
        if (name, extra) in seen:
            continue
        seen.add((name, extra))
        dist = dists.setdefault(name, importlib.metadata.distribution(name))   # PackageNotFoundError: not here
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": extra}):
                todo += [(canonicalize_name(req.name), e) for e in ("", *sorted(req.extras))]
    return list(dists.values())


def link_preinstalled(target: Path) -> list[str]:
    """Link the top-level files and folders of :data:`PREINSTALLED`'s closure into ``target``; return their names."""
    target.mkdir()
    names = []
    for dist in dependency_closure(PREINSTALLED):
        site = Path(dist.locate_file(""))
        tops = {Path(f).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in sorted(tops):
            source = site / top
            if top == "__pycache__" or not source.exists() or (target / top).exists():
                continue   # a namespace folder (nvidia/) is shared by several distributions: linked once
            (target / top).symlink_to(source)
            names.append(top)
    leaked = [n for n in names if n.split(".")[0].split("-")[0] in OURS]
    assert not leaked, f"the stand-in for Colab's packages would expose {leaked}"
    return names


DRIVER = textwrap.dedent('''
    import importlib.util, json, subprocess, sys
    cell, data_root = open(sys.argv[1]).read(), sys.argv[2]
    before = {m: importlib.util.find_spec(m) is not None for m in ("sfam_lite", "data_download")}
    import google.colab                                    # the stand-in: what makes the cell act
    exec(compile(cell, "colab-setup cell", "exec"), {"__name__": "__main__"})
    import sfam_lite, data_download, torch                 # as the chapter's next cell does, same process
    from google.colab import drive
    from sfam_lite import zoo
    cache = {"mounted": drive.MOUNTED, "cache": str(zoo.cache_dir()),
             "cub_data": str(zoo.default_data_root("frn-cub"))}
    from data_download import SyntheticCUB200
    subprocess.run([sys.executable, "-m", "data_download", "synthetic", "--root", data_root, "--classes", "4",
                    "--images-per-class", "2", "--size", "32", "--workers", "1", "--quiet"], check=True)
    data = SyntheticCUB200(data_root)
    print(json.dumps({"before": before, "sfam_lite": sfam_lite.__file__, "data_download": data_download.__file__,
                      "torch": torch.__file__, "has_sfam": hasattr(sfam_lite, "SFAM"),
                      "images": len(data), "classes": data.num_classes, "first": list(data[0][0].size), **cache}))
''')


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git (pip installs the package from a git URL)")
def test_setup_cell_installs_the_package_in_a_fresh_colab_like_environment(tmp_path):
    url, branch = sync_colab.repository()
    cell = setup_cells()[CHAPTERS[0].name]

    # the committed tree, on the branch the cell names
    clone = tmp_path / "clone"
    git = lambda *args, **kw: subprocess.run(["git", *args], check=True, capture_output=True, text=True, **kw)
    git("clone", "--quiet", str(ROOT), str(clone))
    git("-C", str(clone), "checkout", "--quiet", "-B", branch)
    assert (clone / "sfam_lite" / "__init__.py").is_file() and (clone / "data_download" / "__init__.py").is_file()
    local = cell.replace(f"git+{url}@{branch}", f"git+file://{clone}@{branch}")
    assert local.count(f"git+file://{clone}@{branch}") == 1, "the cell does not install from the configured URL"
    (tmp_path / "cell.py").write_text(local)

    # a fresh environment with Colab's preinstalled packages and a stand-in google.colab
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    linked = link_preinstalled(tmp_path / "colab_packages")
    stub = tmp_path / "colab_stub" / "google" / "colab"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text('"""Stand-in for the module Colab imports in every notebook."""\n')
    (stub / "drive.py").write_text('"""Stand-in for Colab\'s Google Drive: records the mount point, writes nothing."""\n'
                                   "MOUNTED = []\n\n\ndef mount(path, **kwargs):\n    MOUNTED.append(path)\n")
    (site / "colab.pth").write_text(f"{tmp_path / 'colab_packages'}\n{tmp_path / 'colab_stub'}\n")
    site_before = set(os.listdir(site))

    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "TMPDIR": str(tmp_path), "LANG": "C.UTF-8",
           "PYTHONNOUSERSITE": "1", "OMP_NUM_THREADS": "1", "GIT_CONFIG_NOSYSTEM": "1",
           "PIP_NO_INDEX": "1",                 # offline: only what is preinstalled may satisfy a requirement
           "PIP_NO_BUILD_ISOLATION": "0",       # (pip's spelling of --no-build-isolation) build with setuptools above
           "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_CACHE_DIR": "1"}
    (tmp_path / "driver.py").write_text(DRIVER)
    run = subprocess.run([python, "driver.py", "cell.py", str(tmp_path / "synthetic")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])

    assert report["before"] == {"sfam_lite": False, "data_download": False}, "the package was visible before the cell"
    for module in OURS:
        assert Path(report[module]).resolve().is_relative_to(site.resolve()), \
            f"{module} came from {report[module]}, not the fresh environment's site-packages {site}"
    assert Path(report["torch"]).parent.parent == tmp_path / "colab_packages"
    installed = set(os.listdir(site)) - site_before
    assert {"sfam_lite", "data_download"} <= installed
    extra = {n for n in installed if not re.fullmatch(r"(sfam_lite|data_download|sfam_lite-[\w.]+\.dist-info)", n)}
    assert not extra, f"pip installed more than the package: {sorted(extra)}"
    assert "torch" in linked and report["has_sfam"]
    assert (report["images"], report["classes"], report["first"]) == (8, 4, [32, 32])
    # the cache on Google Drive: mounted once, and the chapters' data, weights and models all below it
    assert report["mounted"] == ["/content/drive"]
    assert report["cache"] == sync_colab.DRIVE_CACHE
    assert report["cub_data"] == sync_colab.DRIVE_CACHE + "/data/cub200"
