"""The book's own rules: every chapter is in the table of contents, has a parameters cell, kernel
metadata, no committed errors, and Colab cells generated from the one repository URL."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import sync_colab  # noqa: E402

CHAPTERS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def toc_files():
    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                yield node["file"]
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    return {toc["root"], *walk(toc)}


def test_there_are_chapters():
    assert len(CHAPTERS) >= 2


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_rules(path):
    nb = json.loads(path.read_text())
    assert f"notebooks/{path.stem}" in toc_files(), "chapter missing from _toc.yml"
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    assert nb["metadata"]["language_info"]["name"] == "python"
    tags = [c.get("metadata", {}).get("tags", []) for c in nb["cells"]]
    assert sum("parameters" in t for t in tags) == 1, "exactly one cell must be tagged 'parameters'"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(c.get("execution_count") for c in code), "chapters are committed executed"
    assert not any(o["output_type"] == "error" for c in code for o in c.get("outputs", []))
    assert any("import sfam_lite" in "".join(c["source"]) or "from sfam_lite" in "".join(c["source"]) for c in code)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_colab_cells_follow_config(path):
    url, branch = sync_colab.repository()
    assert sync_colab.stale_cells(path, url, branch) == [], "run `python scripts/sync_colab.py`"


def test_sync_detects_and_repairs_a_stale_badge(tmp_path):
    url, branch = sync_colab.repository()
    copy = tmp_path / CHAPTERS[0].name
    shutil.copy(CHAPTERS[0], copy)
    assert sync_colab.stale_cells(copy, "https://github.com/someone/else", branch) == ["colab-badge", "colab-setup"]
    assert sync_colab.sync(copy, "https://github.com/someone/else", branch)
    assert sync_colab.stale_cells(copy, "https://github.com/someone/else", branch) == []
    assert "someone/else" in copy.read_text()


def test_book_repository_url_is_only_in_config():
    url, _ = sync_colab.repository()
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    holders = {f for f in tracked if f.endswith((".py", ".md", ".yml", ".toml", ".txt", ".sh"))
               and url in (ROOT / f).read_text(errors="ignore")}
    assert holders <= {"_config.yml"}, f"the repository URL is repeated in {holders - {'_config.yml'}}"


def test_front_page_lists_every_page_of_the_toc():
    intro = (ROOT / "book" / "intro.md").read_text()
    section = intro.split("## How to read it", 1)[1].split("\n## ", 1)[0]
    listed = {str((ROOT / "book" / ref).resolve().relative_to(ROOT)) for ref in re.findall(r"\{doc\}`([^`]+)`", section)}
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    missing = toc_files() - {toc["root"]} - listed
    assert not missing, f"book/intro.md's 'How to read it' does not list {sorted(missing)}"
