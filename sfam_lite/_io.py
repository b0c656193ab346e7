"""Writing files safely: atomically, with the user's umask, and checked for writability before long work."""
from __future__ import annotations

import errno
import math
import os
import tempfile
from pathlib import Path
from typing import Callable


def umask_mode(base: int = 0o666) -> int:
    """``base`` less the process's umask: the mode a plain ``open(path, "w")`` would give a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return base & ~mask


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def writable_problem(path, what: str = "the output") -> str | None:
    """Why the file ``path`` could not be written, as one sentence naming ``what`` and the fix, or None when a file
    can be created in its folder now (a probe file is created and removed there; missing folders are not made)."""
    path = Path(path).expanduser()
    if path.is_dir():
        return f"{what} {path} is a directory; give a file name inside it, e.g. {path / 'result.json'}."
    ancestor = _nearest_existing(path.parent)
    if not ancestor.is_dir():
        return (f"{what} {path} cannot be created: {ancestor} is a file, not a folder. Choose a path whose "
                "folders are folders.")
    try:
        with tempfile.TemporaryFile(dir=ancestor, prefix=".sfam-write-check-"):
            pass
    except OSError as exc:
        return (f"{what} {path} cannot be written: creating a file in {ancestor} failed ({exc.strerror or exc}). "
                "Choose a writable location (or free space on the disk).")
    if path.exists() and not os.access(path, os.W_OK):
        return f"{what} {path} exists and is read-only; choose another path or make it writable."
    return None


def check_writable(path, what: str = "the output") -> Path:
    """``Path(path)`` if :func:`writable_problem` finds none; else ``ValueError`` with its sentence."""
    problem = writable_problem(path, what)
    if problem:
        raise ValueError(problem)
    return Path(path).expanduser()


def atomic_write(path, write: Callable, binary: bool = True) -> Path:
    """Create ``path`` by ``write(file)`` on a temporary file in the same folder, renamed into place when complete,
    so that a reader never sees a half-written file. The file gets the user's umask (``0o666 & ~umask``, as
    ``open`` gives), not the ``0o600`` of a temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def keep_elsewhere(write: Callable, name: str, binary: bool = True) -> Path:
    """Write a result that could not go where it was asked to a new file in the temporary folder (or the current
    folder if that fails too) and return its path, so that finished work is not lost."""
    suffix = "".join(Path(name).suffixes) or ".out"
    stem = Path(name).name[:-len(suffix)] if suffix != ".out" else Path(name).name
    last = None
    for folder in (tempfile.gettempdir(), os.getcwd()):
        try:
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f"{stem}-kept-", suffix=suffix)
            with os.fdopen(fd, "wb" if binary else "w") as f:
                write(f)
            os.chmod(tmp, umask_mode())
            return Path(tmp)
        except OSError as exc:
            last = exc
    raise last


def json_safe(obj):
    """``obj`` with every non-finite float (NaN, ±inf) replaced by None, so that ``json.dumps(..., allow_nan=False)``
    writes strict JSON (``null``), which every JSON reader accepts; numpy scalars become Python numbers."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:    # numpy / torch scalars
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def is_disk_full(exc: OSError) -> bool:
    return getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
