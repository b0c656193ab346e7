"""Completion markers, and moving a finished folder into place so that it never looks complete early.

A dataset folder counts as complete only when it holds :data:`MARKER`, a small JSON file written
last: the folder is built elsewhere (a temporary folder on the same disk), renamed into place in one
step, and only then marked. A folder without the marker is the remains of a failed run.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import DataError, disk_errors

MARKER = ".data_download_complete.json"
#: The dataset folder under ``--root``, for the real CUB and for the synthetic benchmark alike.
FOLDER = "CUB_200_2011"


def read_marker(folder: Path) -> dict | None:
    """The marker's contents, or ``None`` if ``folder`` is not complete."""
    path = Path(folder) / MARKER
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def check_absent_or_complete(target: Path, command: str) -> dict | None:
    """Return the marker if ``target`` is complete, ``None`` if it does not exist; raise if it is a leftover."""
    info = read_marker(target)
    if info is not None:
        return info
    if target.exists():
        raise DataError(f"{target} exists but is not complete (it has no {MARKER}): an earlier run was "
                        f"interrupted or the folder was made by hand. Delete it (`rm -rf {target}`) and run "
                        f"`python -m data_download {command}` again.")
    return None


def publish(built: Path, target: Path, info: dict) -> Path:
    """Rename the finished folder ``built`` to ``target`` and write the marker; undo the rename on failure."""
    with disk_errors(target):
        os.rename(built, target)
    tmp = target / (MARKER + ".tmp")
    try:
        with disk_errors(target / MARKER):
            tmp.write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
            os.replace(tmp, target / MARKER)
    except DataError:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return target


@contextmanager
def build_folder(root: Path, name: str):
    """A new temporary folder under ``root`` (on the same disk, so :func:`publish` can rename from it) in which
    ``name`` is built; it is removed when the block ends, whether the build was published or failed."""
    with disk_errors(root):
        Path(root).mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)
