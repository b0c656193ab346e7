"""Completion markers, and moving a finished folder into place so that it never looks complete early.

A dataset folder counts as complete only when it holds :data:`MARKER`, a small JSON file written
last: the folder is built elsewhere (a temporary folder on the same disk), renamed into place in one
step, and only then marked. A folder without the marker is the remains of a failed run.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import time
import warnings
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
                        f"`{command}` again.")
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


#: When this process started (close enough: when this module was imported); a leftover build folder older than
#: this that no process holds locked is the remains of a killed run.
_STARTED = time.time()


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def stale_build_folders(root: Path, name: str) -> list[Path]:
    """The ``.<name>.tmp-*`` build folders under ``root`` left by killed runs: older than this process and not locked
    by a running build (each build holds a lock on its folder while it works)."""
    stale = []
    for path in sorted(Path(root).glob(f".{name}.tmp-*")):
        try:
            if not path.is_dir() or path.stat().st_mtime >= _STARTED:
                continue
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            if _try_lock(fd):
                stale.append(path)
        finally:
            os.close(fd)   # closing drops the probe's lock
    return stale


def remove_stale_build_folders(root: Path, name: str) -> list[Path]:
    """Delete :func:`stale_build_folders`, warn naming each, and return those that could not be deleted (they are
    named in the warning, to be removed by hand)."""
    stale = stale_build_folders(root, name)
    left = []
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
        if path.exists():
            left.append(path)
    if stale:
        removed = [str(p) for p in stale if p not in left]
        message = f"removed {len(removed)} leftover build folder(s) of a killed run: {', '.join(removed)}." \
            if removed else ""
        if left:
            message += f" Could not remove {', '.join(map(str, left))}: delete by hand (`rm -rf`)."
        warnings.warn(message.strip(), stacklevel=3)
    return left


@contextmanager
def first_use_lock(root: Path, name: str = FOLDER):
    """Hold an exclusive lock on ``root`` for building ``name`` there: a second process that builds the same folder
    at the same time waits here, then finds the first one's complete folder instead of failing on its rename. The
    lock is ``flock`` on the folder itself (no lock file is left behind); where the file system has no locks the
    block runs unlocked."""
    with disk_errors(root):
        Path(root).mkdir(parents=True, exist_ok=True)
    with exclusive_lock(root):
        yield


@contextmanager
def exclusive_lock(path: Path, create: bool = False):
    """Hold ``flock(LOCK_EX)`` on ``path`` (a folder, or a file, made empty first when ``create`` and missing) inside
    the block: another process taking the same lock waits. Where the file system has no locks the block runs
    unlocked."""
    with disk_errors(path):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666) if create else os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass
        yield
    finally:
        os.close(fd)


@contextmanager
def build_folder(root: Path, name: str):
    """A new temporary folder under ``root`` (on the same disk, so :func:`publish` can rename from it) in which
    ``name`` is built; it is removed when the block ends, whether the build was published or failed. The folder is
    locked while the block runs, and leftovers of killed runs (:func:`stale_build_folders`) are removed first."""
    with disk_errors(root):
        Path(root).mkdir(parents=True, exist_ok=True)
        remove_stale_build_folders(root, name)
        work = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
        fd = os.open(work, os.O_RDONLY)
    _try_lock(fd)
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)
        os.close(fd)
