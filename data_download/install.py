"""Download, verify, extract and publish one archive: the pipeline behind ``cub200`` and ``frn-weights``.

Steps, each of which can fail without leaving a folder that looks complete:

1. ``root/<folder>`` with its completion marker → nothing to do.
2. The archive: ``root/<filename>`` if it is already there (downloaded earlier or put there by hand),
   otherwise downloaded from the first URL that works into ``root/<filename>.part`` (resumed with an
   HTTP Range request if a partial file exists) and renamed when complete.
3. Size and checksums verified; a file that fails is deleted.
4. Extracted safely into a temporary folder under ``root``; the archive's top folder renamed to
   ``root/<folder>``; stray top-level entries discarded; the marker written last.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

from . import download
from .errors import DataError, disk_errors, os_error_message
from .extract import safe_extract
from .publish import build_folder, check_absent_or_complete, publish
from .resources import Resource, download_command


def _get_archive(res: Resource, root: Path, urls: Sequence[str], progress: bool, log: Callable) -> Path:
    """The verified archive in ``root``, downloaded if needed."""
    archive = root / res.filename
    if archive.exists():
        log(f"Verifying {archive} ...")
        try:
            download.verify(archive, res.size, res.md5, res.sha256, progress)
        except DataError as exc:
            raise DataError(f"{exc} Delete {archive} to download it again.") from None
        return archive
    part = root / (res.filename + ".part")
    failures = []
    size = f" ({res.size / 1e9:.2f} GB)" if res.size else (f" (about {res.approximate_size})" if res.approximate_size
                                                               else "")
    for k, url in enumerate(urls):
        log(f"Downloading {res.name}{size} from {url}")
        try:
            download.fetch(url, part, res.size, confirm_pages=res.confirm_pages, progress=progress)
            break
        except download.TruncatedDownload:
            if k == len(urls) - 1:
                raise                   # the partial file is kept; the next run resumes it
            log(f"The transfer from {url} broke or stalled; going on from the next source, resuming.")
        except DataError as exc:
            failures.append(str(exc))
    else:
        raise DataError(" ".join(failures))
    try:
        download.verify(part, res.size, res.md5, res.sha256, progress)
    except DataError as exc:
        part.unlink(missing_ok=True)
        raise DataError(f"{exc} The download was deleted.") from None
    os.replace(part, archive)
    return archive


def _locate_top(res: Resource, extracted: Path) -> Path:
    """The folder inside the extraction that becomes ``root/<folder>``."""
    if res.top is not None:
        top = extracted / res.top
        if not top.is_dir():
            found = sorted(p.name for p in extracted.iterdir())
            raise DataError(f"The archive {res.filename} has no top-level folder {res.top}/ (it holds {found}): "
                            "it is not the expected archive.")
        return top
    entries = list(extracted.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and entries[0].name == res.folder:
        return entries[0]
    return extracted


def install(res: Resource, root: str | os.PathLike, urls: Sequence[str] | None = None, *,
            keep_archive: bool = False, progress: bool = True, log: Callable[[str], None] = print) -> tuple[Path, bool]:
    """Make ``root/<res.folder>`` complete. Returns the folder and whether any work was done."""
    root = Path(os.path.abspath(os.path.expanduser(root)))
    target = root / res.folder
    if check_absent_or_complete(target, download_command(res.command, root)) is not None:
        return target, False
    with disk_errors(root, lambda exc, path: f"{os_error_message(exc, path)} {res.manual_fix(root)}"):
        root.mkdir(parents=True, exist_ok=True)
    try:
        archive = _get_archive(res, root, list(urls or res.urls), progress, log)
        with build_folder(root, res.folder) as workdir:
            log(f"Extracting {archive.name} ...")
            extracted = workdir / "x"
            extracted.mkdir()
            count = safe_extract(archive, extracted, progress)
            top = _locate_top(res, extracted)
            missing = [name for name in res.required if not (top / name).exists()]
            if missing:
                raise DataError(f"The archive {res.filename} lacks {missing}: it is not the expected archive.")
            stray = sorted(p.name for p in extracted.iterdir() if p != top) if top != extracted else []
            if stray:
                log(f"Discarding stray top-level entries: {', '.join(stray)}")
            publish(top, target, {"name": res.name, "archive": res.filename, "files": count,
                                  "md5": res.md5, "sha256": res.sha256})
    except DataError as exc:
        raise DataError(f"{exc} {res.manual_fix(root)}") from None
    if not keep_archive:
        archive.unlink(missing_ok=True)
    return target, True
