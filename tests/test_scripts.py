"""The shell scripts around the book: the GPU script's refusal without CUDA, the per-stage timing summary, and
every chapter's parameters as papermill reads them (a line it cannot parse is silently not a parameter)."""
from __future__ import annotations

import ast
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def assigned_names(source: str) -> list[str]:
    """The names a parameters cell assigns, read by Python's own parser."""
    return [t.id for node in ast.parse(source).body if isinstance(node, ast.Assign)
            for t in node.targets if isinstance(t, ast.Name)]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_papermill_reads_every_parameter(path, caplog):
    papermill = pytest.importorskip("papermill")
    cells = [c for c in json.loads(path.read_text())["cells"] if "parameters" in c["metadata"].get("tags", [])]
    assert len(cells) == 1, "one cell tagged 'parameters' per chapter"
    with caplog.at_level(logging.WARNING):
        found = list(papermill.inspect_notebook(str(path)))
    assert not [r for r in caplog.records if "Unable to parse" in r.getMessage()], caplog.text
    assert found == assigned_names("".join(cells[0]["source"]))


@pytest.mark.parametrize("path", sorted((ROOT / ".ci").glob("*/*.yml")), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_ci_parameter_files_name_existing_parameters(path):
    yaml = pytest.importorskip("yaml")
    chapter = ROOT / "notebooks" / f"{path.stem}.ipynb"
    assert chapter.exists(), f"{path} names no chapter"
    cell = next(c for c in json.loads(chapter.read_text())["cells"] if "parameters" in c["metadata"].get("tags", []))
    unknown = set(yaml.safe_load(path.read_text())) - set(assigned_names("".join(cell["source"])))
    assert not unknown, f"{path} sets {unknown}, which {chapter.name} does not have"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this checks the refusal on a machine without CUDA")
def test_gpu_script_without_cuda_stops_with_one_line():
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    run = subprocess.run(["bash", "scripts/test_gpu.sh", "--no-setup"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr.startswith("error: no CUDA device is available") and run.stderr.count("\n") == 1
    assert "Traceback" not in run.stdout + run.stderr
    assert "checking for a CUDA device   <- failed here (exit 2)" in run.stdout
    bad = subprocess.run(["bash", "scripts/test_gpu.sh", "--no-setup", "--frobnicate"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown option --frobnicate" in bad.stderr


def test_stage_summary_times_each_stage_and_marks_the_failure(tmp_path):
    script = tmp_path / "s.sh"
    script.write_text(f"set -euo pipefail\nsource {ROOT / 'scripts' / 'stages.sh'}\n"
                      "stage first\nsleep 1\nstage second\nexit 3\n")
    run = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=30)
    assert run.returncode == 3
    lines = run.stdout.splitlines()
    table = lines[lines.index("==> time per stage") + 1:]
    assert [line.split(None, 2)[2] for line in table] == ["first", "second   <- failed here (exit 3)", "total"]
    assert int(table[0].split()[0]) >= 1 and int(table[2].split()[0]) >= 1


def test_workflow_runs_the_two_scripts():
    yaml = pytest.importorskip("yaml")
    jobs = yaml.safe_load((ROOT / ".github" / "workflows" / "book.yml").read_text())["jobs"]
    runs = {name: [s.get("run") for s in job["steps"] if "run" in s] for name, job in jobs.items()}
    assert runs == {"cpu": ["bash scripts/test.sh"], "gpu": ["bash scripts/test_gpu.sh"]}
    assert "gpu" in jobs["gpu"]["runs-on"] and jobs["cpu"]["timeout-minutes"] <= 90
