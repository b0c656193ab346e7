"""HTTP download into a ``.part`` file that resumes with a Range request, and checksum verification.

Only the standard library speaks HTTP here (``urllib``), so the command works on a fresh install.
Every failure becomes a :class:`~data_download.errors.DataError` whose message names the cause; the
caller (:mod:`data_download.install`) adds the manual fix.
"""
from __future__ import annotations

import hashlib
import html
import http.client
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from .errors import DataError, disk_errors

CHUNK = 1 << 20
USER_AGENT = "data_download (sfam-book)"


class TruncatedDownload(DataError):
    """The body ended before the announced length; the bytes received stay in the ``.part`` file."""


def _open(url: str, start: int, timeout: float):
    """Open ``url``, asking for the bytes from ``start`` on when ``start > 0``."""
    headers = {"User-Agent": USER_AGENT}
    if start > 0:
        headers["Range"] = f"bytes={start}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _network_error(url: str, exc: BaseException) -> DataError:
    """Turn a urllib/socket exception into a DataError naming the cause."""
    if isinstance(exc, urllib.error.HTTPError):
        kind = "not found" if exc.code == 404 else ("a server error" if exc.code >= 500 else "refused")
        return DataError(f"The server answered HTTP {exc.code} ({exc.reason}) for {url}: the file is {kind} there.")
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, ConnectionRefusedError):
        return DataError(f"The connection to {url} was refused: the host is not accepting connections.")
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return DataError(f"The connection to {url} timed out.")
    if isinstance(reason, socket.gaierror):
        return DataError(f"The host of {url} could not be resolved: this machine seems to be offline.")
    return DataError(f"Downloading {url} failed: {reason}.")


def confirmation_url(page: str, base_url: str) -> str | None:
    """The download URL behind a Google-Drive-style "can't scan this file for viruses" page.

    Such a page holds a form whose hidden inputs (``id``, ``confirm``, ``uuid``, ...) must be sent to its
    ``action``; older pages hold a link with a ``confirm=`` parameter instead. Returns ``None`` if the
    page has neither.
    """
    form = re.search(r"<form[^>]*action=\"([^\"]+)\"[^>]*>(.*?)</form>", page, re.S | re.I)
    if form:
        fields = re.findall(r"<input[^>]*type=\"hidden\"[^>]*name=\"([^\"]+)\"[^>]*value=\"([^\"]*)\"",
                            form.group(2), re.I)
        if fields:
            action = urllib.parse.urljoin(base_url, html.unescape(form.group(1)))
            return action + "?" + urllib.parse.urlencode([(k, html.unescape(v)) for k, v in fields])
    link = re.search(r"href=\"([^\"]*confirm=[^\"]+)\"", page)
    if link:
        return urllib.parse.urljoin(base_url, html.unescape(link.group(1)))
    return None


def fetch(url: str, part: Path, size: int | None = None, *, confirm_pages: bool = False,
          progress: bool = True, timeout: float = 60.0) -> Path:
    """Download ``url`` into ``part``, continuing an earlier partial download of the same file.

    If ``part`` already holds ``k`` bytes, only bytes ``k..`` are requested (HTTP Range); a server that
    ignores the Range header answers 200 and the file is rewritten from the start. ``size`` (if known)
    is the expected total: a longer ``part`` is discarded, a complete one is returned untouched, and a
    body that ends early raises a DataError (the bytes received stay in ``part`` for the next try).
    With ``confirm_pages``, an HTML answer is read as a confirmation page and its download link followed
    once (Google Drive's large-file warning). Returns ``part``.
    """
    part = Path(part)
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have > size:
        part.unlink()
        have = 0
    if size is not None and have == size:
        return part
    try:
        response = _open(url, have, timeout)
        if confirm_pages and response.headers.get_content_type() == "text/html":
            page = response.read(1 << 20).decode("utf-8", "replace")
            response.close()
            target = confirmation_url(page, response.geturl())
            if target is None:
                raise DataError(f"{url} answered with a web page, not the file, and the page holds no download "
                                "link this command understands (the host may ask for a sign-in or a captcha).")
            response = _open(target, have, timeout)
            if response.headers.get_content_type() == "text/html":
                response.close()
                raise DataError(f"{url} still answered with a web page after its confirmation step.")
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have > 0:       # nothing left to send: the part is complete (or wrong)
            return part
        raise _network_error(url, exc) from None
    except (urllib.error.URLError, OSError) as exc:
        raise _network_error(url, exc) from None

    with response:
        resumed = response.status == 206
        if resumed:
            match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != have:
                raise DataError(f"{url} answered a resume request with the wrong byte range "
                                f"({response.headers.get('Content-Range')!r} for bytes={have}-).")
        else:
            have = 0
        length = response.headers.get("Content-Length")
        expected = have + int(length) if length is not None else size
        if size is not None and expected is not None and expected != size:
            raise DataError(f"{url} announces {expected:,} bytes but the file should have {size:,} bytes: "
                            "this is not the expected file.")
        with disk_errors(part):
            out = open(part, "ab" if resumed else "wb")
        bar = tqdm(total=expected, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                   desc=part.name.removesuffix(".part"), disable=not progress, leave=False)
        received = have
        with disk_errors(part), out, bar:   # also an OSError when flushing on close
            while True:
                try:
                    chunk = response.read(CHUNK)
                except (OSError, ValueError, http.client.HTTPException) as exc:   # reset, IncompleteRead
                    raise TruncatedDownload(f"The connection to {url} broke after {received:,} bytes ({exc}). "
                                            f"The bytes received are kept in {part}; run the same command "
                                            "again to resume.") from None
                if not chunk:
                    break
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if expected is not None and received < expected:
        raise TruncatedDownload(f"The download from {url} ended after {received:,} of {expected:,} bytes (a truncated "
                        f"body). The bytes received are kept in {part}; run the same command again to resume.")
    return part


def digests(path: Path, progress: bool = False) -> dict[str, str]:
    """md5 and sha256 of a file, computed in one pass."""
    md5, sha256 = hashlib.md5(), hashlib.sha256()
    path = Path(path)
    with open(path, "rb") as f, tqdm(total=path.stat().st_size, unit="B", unit_scale=True, unit_divisor=1024,
                                      desc="checksum", disable=not progress, leave=False) as bar:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            md5.update(chunk)
            sha256.update(chunk)
            bar.update(len(chunk))
    return {"md5": md5.hexdigest(), "sha256": sha256.hexdigest()}


def verify(path: Path, size: int | None = None, md5: str | None = None, sha256: str | None = None,
           progress: bool = False) -> dict[str, str]:
    """Check a file's size and checksums; raise a DataError naming the first mismatch. Returns the digests."""
    path = Path(path)
    actual = path.stat().st_size
    if size is not None and actual != size:
        raise DataError(f"{path} has {actual:,} bytes, expected {size:,}.")
    found = digests(path, progress)
    for name, want in (("md5", md5), ("sha256", sha256)):
        if want is not None and found[name] != want.lower():
            raise DataError(f"The {name} of {path} is {found[name]}, expected {want}: the file is damaged "
                            "or not the expected one.")
    return found
