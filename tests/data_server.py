"""Test helpers for data_download: a real HTTP server on 127.0.0.1 and small archives built on the fly.

The server serves byte strings registered under paths, honours ``Range: bytes=N-`` with 206 answers,
and can misbehave on purpose, chosen by the path's first component:

* ``/file/<name>``      the bytes, with Range support
* ``/norange/<name>``   the bytes, ignoring Range (always 200 and the whole body)
* ``/truncate/<name>``  announces the full length, sends half, closes the connection
* ``/status/<code>``    an empty answer with that status (404, 500, ...)
* ``/confirm/<name>``   an HTML page with a Google-Drive-like form that leads to ``/file/<name>``
* ``/page/<name>``      an HTML page without any download link

Every request is logged (path and Range header) in ``server.log``; ``server.sent`` counts body bytes.
"""
from __future__ import annotations

import hashlib
import io
import socket
import tarfile
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):          # keep test output clean
        pass

    def _send(self, status: int, body: bytes, ctype: str = "application/octet-stream", headers=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
        self.server.sent += len(body)

    def do_GET(self):  # noqa: N802 (http.server's naming)
        srv = self.server
        rng = self.headers.get("Range")
        srv.log.append((self.path, rng))
        parts = self.path.split("?")[0].strip("/").split("/")
        mode, name = parts[0], "/".join(parts[1:])
        if mode == "status":
            return self._send(int(name), b"")
        if mode == "page":
            return self._send(200, b"<html><body>Sign in to continue</body></html>", "text/html")
        if mode == "confirm":
            if "confirm=t" in self.path and "uuid=abc" in self.path:
                mode = "file"
            else:
                page = ('<html><body><form id="download-form" action="/confirm/%s" method="get">'
                        '<input type="hidden" name="id" value="x1">'
                        '<input type="hidden" name="export" value="download">'
                        '<input type="hidden" name="confirm" value="t">'
                        '<input type="hidden" name="uuid" value="abc">'
                        '<input type="submit" value="Download anyway"></form></body></html>') % name
                return self._send(200, page.encode(), "text/html; charset=utf-8")
        body = srv.files.get(name)
        if body is None:
            return self._send(404, b"")
        if mode == "truncate":
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            srv.sent += len(body) // 2
            self.wfile.flush()
            self.close_connection = True
            return None
        if mode == "file" and rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
            if start >= len(body):
                return self._send(416, b"", headers=[("Content-Range", f"bytes */{len(body)}")])
            return self._send(206, body[start:], headers=[("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")])
        return self._send(200, body)


@contextmanager
def http_server(files: dict[str, bytes]):
    """Serve ``files`` on 127.0.0.1 in a thread; yields the server (``.url``, ``.log``, ``.sent``, ``.files``)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.files, server.log, server.sent = dict(files), [], 0
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def refused_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (a port just released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/file/x.tgz"


def make_tar(entries: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w:gz") -> bytes:
    """A tar archive in memory: ``(name, data)`` pairs become regular files, TarInfo objects are added as given."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tar.addfile(entry)
            else:
                name, data = entry
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    """A non-regular tar member (``tarfile.SYMTYPE``, ``LNKTYPE``, ``CHRTYPE``, ``BLKTYPE``, ``FIFOTYPE``)."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def mini_cub_archive(extra: bytes = b"") -> bytes:
    """A tiny archive shaped like CUB_200_2011.tgz: ``CUB_200_2011/`` with the five text files, two images,
    and the stray top-level ``attributes.txt``. ``extra`` is padded into a file to make the archive larger."""
    from PIL import Image

    def jpeg(colour) -> bytes:
        b = io.BytesIO()
        Image.new("RGB", (40, 30), colour).save(b, format="JPEG")
        return b.getvalue()

    top = "CUB_200_2011/"
    return make_tar([
        ("attributes.txt", b"1 has_bill_shape::curved\n"),
        (top + "images.txt", b"1 001.A/A_1.jpg\n2 002.B/B_2.jpg\n"),
        (top + "classes.txt", b"1 001.A\n2 002.B\n"),
        (top + "image_class_labels.txt", b"1 1\n2 2\n"),
        (top + "train_test_split.txt", b"1 1\n2 0\n"),
        (top + "bounding_boxes.txt", b"1 2.0 3.0 20.0 10.0\n2 0.0 0.0 40.0 30.0\n"),
        (top + "images/001.A/A_1.jpg", jpeg((200, 0, 0))),
        (top + "images/002.B/B_2.jpg", jpeg((0, 0, 200))),
        (top + "README", extra),
    ])


def digests(data: bytes) -> dict[str, str]:
    """md5 and sha256 of bytes, with hashlib directly (independent of the code under test)."""
    return {"md5": hashlib.md5(data).hexdigest(), "sha256": hashlib.sha256(data).hexdigest()}
