"""Safe extraction of tar archives (plain, gzip, bzip2, xz).

Every member is checked before anything is written for it: absolute paths, ``..`` components, links
(symbolic or hard) and special files (devices, FIFOs) are refused with an error that names the
member. Only regular files and directories are written, with their permission bits reduced to
``rwxr-xr-x``. Extraction goes into a folder the caller owns; on any failure :func:`safe_extract`
removes everything it wrote, so nothing is left half-extracted.
"""
from __future__ import annotations

import lzma
import os
import shutil
import tarfile
import zlib
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from .errors import DataError, disk_errors


def member_problem(member: tarfile.TarInfo) -> str | None:
    """Why ``member`` must not be extracted, or ``None`` if it is a plain file or folder with a safe name."""
    name = member.name
    if not name or "\x00" in name:
        return "has an empty or invalid name"
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "has an absolute path"
    if ".." in path.parts:
        return "contains '..' and would land outside the target folder"
    if member.issym() or member.islnk():
        return f"is a link (to {member.linkname!r}); links are not extracted"
    if member.ischr() or member.isblk() or member.isfifo():
        return "is a device or FIFO; special files are not extracted"
    if not (member.isfile() or member.isdir()):
        return "is not a regular file or folder"
    return None


def _inside(root: Path, name: str) -> Path:
    """The destination of member ``name`` under ``root``, checked to resolve inside ``root``."""
    target = (root / name).resolve()
    if target != root and root not in target.parents:
        raise DataError(f"The archive member {name!r} would be written outside {root}; refusing.")
    return target


def safe_extract(archive: Path, dest: Path, progress: bool = True) -> int:
    """Extract ``archive`` into the existing, empty folder ``dest``; return the number of files written.

    Raises a DataError, after emptying ``dest``, if the archive is corrupt or holds a member that
    :func:`member_problem` refuses, or if writing fails (full or read-only disk).
    """
    archive, dest = Path(archive), Path(dest).resolve()
    written = 0
    try:
        with tarfile.open(archive, "r:*") as tar, tqdm(unit=" files", desc=f"extracting {archive.name}",
                                                       disable=not progress, leave=False) as bar:
            for member in tar:
                problem = member_problem(member)
                if problem:
                    raise DataError(f"The archive {archive} is refused: its member {member.name!r} {problem}. "
                                    "Nothing was extracted.")
                target = _inside(dest, member.name)
                if member.isdir():
                    _write(lambda: target.mkdir(parents=True, exist_ok=True), target)
                    continue
                _write(lambda: target.parent.mkdir(parents=True, exist_ok=True), target)
                _copy(tar.extractfile(member), target, member.mode)
                written += 1
                bar.update()
            _check_end(tar, archive)
    except DataError:
        _empty(dest)
        raise
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError, ValueError) as exc:
        # Anything raised while *reading* the archive (write errors became DataErrors in _write).
        _empty(dest)
        raise DataError(f"The archive {archive} is corrupt or truncated ({type(exc).__name__}: {exc}). "
                        "Nothing was extracted.") from None
    return written


def _check_end(tar: tarfile.TarFile, archive: Path) -> None:
    """tarfile ends the member list silently at the first unreadable header; only zeros may follow the end."""
    tar.fileobj.seek(tar.offset)
    while True:
        chunk = tar.fileobj.read(1 << 16)
        if not chunk:
            return
        if chunk.count(0) != len(chunk):
            raise DataError(f"The archive {archive} is corrupt: the member header at byte {tar.offset} of the "
                            "unpacked archive is unreadable. Nothing was extracted.")


def _write(action, path: Path):
    """Run a file-system write, turning an OSError into a DataError about the disk."""
    with disk_errors(path):
        return action()


def _copy(source, target: Path, mode: int) -> None:
    """Copy a member's stream to ``target``: read errors propagate as they are, write errors become DataErrors."""
    out = _write(lambda: open(target, "wb"), target)
    with source, out:
        while True:
            chunk = source.read(1 << 20)       # corrupt data raises here
            if not chunk:
                break
            _write(lambda: out.write(chunk), target)
        _write(out.flush, target)
    _write(lambda: os.chmod(target, (mode & 0o755) | 0o600), target)


def _empty(folder: Path) -> None:
    """Remove everything inside ``folder`` (the folder itself stays)."""
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
