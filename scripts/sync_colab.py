"""Write each chapter's Colab badge and Colab setup cell from the repository URL in ``_config.yml``.

The URL lives in one place, ``_config.yml`` (``repository.url`` and ``repository.branch``); the
badge (cell tagged ``colab-badge``) and setup cell (tagged ``colab-setup``) of every notebook in
``notebooks/`` are generated from it, right after the title cell.

    python scripts/sync_colab.py          # rewrite the cells where they differ
    python scripts/sync_colab.py --check  # exit 1 and name the notebooks that are out of date
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent


def repository() -> tuple[str, str]:
    repo = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]
    return repo["url"].rstrip("/"), repo.get("branch", "main")


def badge_source(url: str, branch: str, notebook: Path) -> str:
    path = f"notebooks/{notebook.name}"
    colab = url.replace("https://github.com/", "https://colab.research.google.com/github/")
    return ("[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"({colab}/blob/{branch}/{path})")


#: Where the setup cell keeps the book's cache on Colab when the reader keeps it on Google Drive.
DRIVE_CACHE = "/content/drive/MyDrive/sfam-book-cache"


def setup_source(url: str, branch: str) -> str:
    return ("# Colab setup: install the book's package when this notebook runs on Google Colab; elsewhere,\n"
            "# install it as the README says. This cell does nothing outside Colab.\n"
            "# keep_cache_on_drive: keep the data, FRN's weights and the trained models on your Google Drive, so\n"
            "# that they are downloaded and trained once for all chapters (each Colab notebook is a new machine).\n"
            "import os, subprocess, sys\n"
            "keep_cache_on_drive = True\n"
            "if \"google.colab\" in sys.modules:\n"
            f"    subprocess.run([sys.executable, \"-m\", \"pip\", \"install\", \"-q\", \"sfam-lite @ git+{url}@{branch}\"],\n"
            "                   check=True)\n"
            "    if keep_cache_on_drive:\n"
            "        from google.colab import drive\n"
            "        drive.mount(\"/content/drive\")\n"
            f"        os.environ[\"SFAM_BOOK_CACHE\"] = \"{DRIVE_CACHE}\"\n"
            "        print(\"The book's cache is\", os.environ[\"SFAM_BOOK_CACHE\"])")


def _find(nb, tag):
    return next((i for i, c in enumerate(nb.cells) if tag in c.metadata.get("tags", [])), None)


def stale_cells(notebook: Path, url: str, branch: str) -> list[str]:
    """Tags of the Colab cells of ``notebook`` that are missing or differ from what ``sync`` writes."""
    nb = nbformat.read(notebook, as_version=4)
    stale = []
    for tag, source in (("colab-badge", badge_source(url, branch, notebook)), ("colab-setup", setup_source(url, branch))):
        i = _find(nb, tag)
        if i is None or nb.cells[i].source != source:
            stale.append(tag)
    return stale


def sync(notebook: Path, url: str, branch: str) -> bool:
    """Update ``notebook`` in place; return True if it changed."""
    nb = nbformat.read(notebook, as_version=4)
    wanted = {
        "colab-badge": nbformat.v4.new_markdown_cell(badge_source(url, branch, notebook)),
        "colab-setup": nbformat.v4.new_code_cell(setup_source(url, branch)),
    }
    changed = False
    for position, (tag, cell) in enumerate(wanted.items(), start=1):
        cell.metadata["tags"] = [tag, "remove-cell"]
        i = _find(nb, tag)
        if i is None:
            cell.id = tag
            nb.cells.insert(position, cell)
            changed = True
        elif nb.cells[i].source != cell.source:
            nb.cells[i].source = cell.source
            changed = True
    if changed:
        nbformat.write(nb, notebook)
    return changed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report out-of-date notebooks")
    args = parser.parse_args(argv)
    url, branch = repository()
    stale = []
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        if args.check:
            stale += [f"{notebook.name} ({tag})" for tag in stale_cells(notebook, url, branch)]
        elif sync(notebook, url, branch):
            print(f"updated {notebook.relative_to(ROOT)}")
    if stale:
        print("out of date: " + ", ".join(stale) + "; run `python scripts/sync_colab.py`.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
