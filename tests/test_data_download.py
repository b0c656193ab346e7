"""data_download's download pipeline against a real HTTP server on 127.0.0.1 (tests/data_server.py):
resume, mirrors, confirmation pages, every failure mode the README promises to explain, and the command line."""
from __future__ import annotations

import ctypes
import dataclasses
import random
import subprocess
import sys
from pathlib import Path

import pytest

from data_download import CUB200, DataError
from data_download.install import install
from data_download.publish import MARKER
from data_download.resources import CUB200_ARCHIVE as REAL_CUB
from data_download.resources import FRN_WEIGHTS
from data_server import digests, http_server, mini_cub_archive, refused_url
from helpers import file_size_limit

ROOT = Path(__file__).resolve().parent.parent
# Incompressible padding so that the archive is large enough to be cut in the middle.
ARCHIVE = mini_cub_archive(random.Random(0).randbytes(300_000))


def resource_for(data: bytes, urls=("unused",), **changes):
    """The real CUB resource with this test archive's size and checksums."""
    d = digests(data)
    return dataclasses.replace(REAL_CUB, urls=tuple(urls), size=len(data), md5=d["md5"], sha256=d["sha256"], **changes)


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def assert_nothing_complete(root: Path):
    target = root / "CUB_200_2011"
    assert not (target / MARKER).exists()
    assert not target.exists()
    assert not [n for n in leftovers(root) if ".tmp-" in n], leftovers(root)


def quiet(msg):
    pass


def test_download_verify_extract_and_second_call(tmp_path):
    with http_server({"CUB.tgz": ARCHIVE}) as srv:
        res = resource_for(ARCHIVE, [srv.url + "/file/CUB.tgz"])
        folder, did = install(res, tmp_path, progress=False, log=quiet)
        assert did and folder == tmp_path / "CUB_200_2011"
        assert (folder / MARKER).exists()
        assert (folder / "images/001.A/A_1.jpg").exists()
        assert not (tmp_path / "attributes.txt").exists() and not (folder / "attributes.txt").exists()
        assert leftovers(tmp_path) == ["CUB_200_2011"]           # archive, .part and temp folder gone
        requests = len(srv.log)
        assert install(res, tmp_path, progress=False, log=quiet) == (folder, False)
        assert len(srv.log) == requests                          # a complete root costs no request
    ds = CUB200(tmp_path)
    image, label, box = ds[0]
    assert (label, box.tolist(), image.size) == (0, [2.0, 3.0, 20.0, 10.0], (40, 30))


def test_resume_requests_only_the_missing_bytes(tmp_path):
    half = len(ARCHIVE) // 2
    (tmp_path / "CUB_200_2011.tgz.part").write_bytes(ARCHIVE[:half])
    with http_server({"CUB.tgz": ARCHIVE}) as srv:
        install(resource_for(ARCHIVE, [srv.url + "/file/CUB.tgz"]), tmp_path, progress=False, log=quiet)
        assert srv.log == [("/file/CUB.tgz", f"bytes={half}-")]
        assert srv.sent == len(ARCHIVE) - half
    assert (tmp_path / "CUB_200_2011" / MARKER).exists()


def test_server_ignoring_range_restarts_from_zero(tmp_path):
    (tmp_path / "CUB_200_2011.tgz.part").write_bytes(b"garbage that must not survive")
    with http_server({"CUB.tgz": ARCHIVE}) as srv:
        install(resource_for(ARCHIVE, [srv.url + "/norange/CUB.tgz"]), tmp_path, progress=False, log=quiet)
        assert srv.sent == len(ARCHIVE)
    assert (tmp_path / "CUB_200_2011" / MARKER).exists()


def test_truncated_body_keeps_part_and_next_run_resumes(tmp_path):
    with http_server({"CUB.tgz": ARCHIVE}) as srv:
        with pytest.raises(DataError, match="truncated") as err:
            install(resource_for(ARCHIVE, [srv.url + "/truncate/CUB.tgz"]), tmp_path, progress=False, log=quiet)
        assert "Manual fix" in str(err.value) and "CUB_200_2011.tgz" in str(err.value)
        assert_nothing_complete(tmp_path)
        part = tmp_path / "CUB_200_2011.tgz.part"
        assert part.read_bytes() == ARCHIVE[: len(ARCHIVE) // 2]
        install(resource_for(ARCHIVE, [srv.url + "/file/CUB.tgz"]), tmp_path, progress=False, log=quiet)
        assert srv.log[-1] == ("/file/CUB.tgz", f"bytes={len(ARCHIVE) // 2}-")
    assert (tmp_path / "CUB_200_2011" / MARKER).exists()


@pytest.mark.parametrize("path, message", [("/status/404", "HTTP 404"), ("/status/500", "HTTP 500")])
def test_http_errors(tmp_path, path, message):
    with http_server({}) as srv:
        with pytest.raises(DataError, match=message) as err:
            install(resource_for(ARCHIVE, [srv.url + path]), tmp_path, progress=False, log=quiet)
    text = str(err.value)
    assert "Manual fix" in text and f"{tmp_path}/CUB_200_2011.tgz" in text
    assert_nothing_complete(tmp_path)
    assert leftovers(tmp_path) == []


def test_connection_refused(tmp_path):
    with pytest.raises(DataError, match="refused") as err:
        install(resource_for(ARCHIVE, [refused_url()]), tmp_path, progress=False, log=quiet)
    assert "Manual fix" in str(err.value)
    assert_nothing_complete(tmp_path)


def test_wrong_checksum_deletes_download(tmp_path):
    bad = dataclasses.replace(resource_for(ARCHIVE), md5="0" * 32)
    with http_server({"CUB.tgz": ARCHIVE}) as srv:
        with pytest.raises(DataError, match="md5") as err:
            install(dataclasses.replace(bad, urls=(srv.url + "/file/CUB.tgz",)), tmp_path, progress=False, log=quiet)
    assert "expected 00000000" in str(err.value)
    assert_nothing_complete(tmp_path)
    assert leftovers(tmp_path) == []


def test_wrong_size_is_refused_before_downloading(tmp_path):
    res = dataclasses.replace(resource_for(ARCHIVE), size=len(ARCHIVE) + 1)
    with http_server({"CUB.tgz": ARCHIVE}) as srv:
        with pytest.raises(DataError, match="announces"):
            install(dataclasses.replace(res, urls=(srv.url + "/file/CUB.tgz",)), tmp_path, progress=False, log=quiet)
    assert_nothing_complete(tmp_path)


@pytest.mark.parametrize("kind", ["truncated", "not_an_archive", "bad_header"])
def test_corrupt_archive_with_matching_checksum(tmp_path, kind):
    """Checksums that match a damaged file (a wrong published checksum, a hand-made archive) still
    cannot produce a complete folder: extraction fails and leaves nothing."""
    import gzip
    raw = gzip.decompress(ARCHIVE)
    corrupt = {"truncated": ARCHIVE[: len(ARCHIVE) // 2],
               "not_an_archive": b"<html>this is not a tar file</html>" * 100,
               "bad_header": gzip.compress(raw[:1024] + b"\xff" * 512 + raw[1536:])}[kind]   # 2nd member's header
    with http_server({"CUB.tgz": corrupt}) as srv:
        with pytest.raises(DataError, match="corrupt"):
            install(resource_for(corrupt, [srv.url + "/file/CUB.tgz"]), tmp_path, progress=False, log=quiet)
    assert_nothing_complete(tmp_path)


def test_archive_without_the_expected_folder(tmp_path):
    from data_server import make_tar
    other = make_tar([("something/else.txt", b"x")])
    with http_server({"o.tgz": other}) as srv:
        with pytest.raises(DataError, match="no top-level folder CUB_200_2011"):
            install(resource_for(other, [srv.url + "/file/o.tgz"]), tmp_path, progress=False, log=quiet)
    assert_nothing_complete(tmp_path)


def test_mirror_fallback(tmp_path):
    with http_server({"CUB.tgz": ARCHIVE}) as srv:
        res = resource_for(ARCHIVE, [srv.url + "/status/404", srv.url + "/file/CUB.tgz"])
        install(res, tmp_path, progress=False, log=quiet)
    assert (tmp_path / "CUB_200_2011" / MARKER).exists()


def test_archive_put_there_by_hand_needs_no_network(tmp_path):
    (tmp_path / "CUB_200_2011.tgz").write_bytes(ARCHIVE)
    install(resource_for(ARCHIVE, [refused_url()]), tmp_path, progress=False, log=quiet, keep_archive=True)
    assert (tmp_path / "CUB_200_2011" / MARKER).exists()
    assert (tmp_path / "CUB_200_2011.tgz").exists()


def test_bad_archive_put_there_by_hand(tmp_path):
    (tmp_path / "CUB_200_2011.tgz").write_bytes(ARCHIVE[:-1] + b"!")
    with pytest.raises(DataError, match=r"Delete .*CUB_200_2011.tgz"):
        install(resource_for(ARCHIVE, [refused_url()]), tmp_path, progress=False, log=quiet)
    assert_nothing_complete(tmp_path)


def test_incomplete_leftover_folder_is_reported(tmp_path):
    (tmp_path / "CUB_200_2011").mkdir()
    with pytest.raises(DataError, match="rm -rf"):
        install(resource_for(ARCHIVE, [refused_url()]), tmp_path, progress=False, log=quiet)


def frn_archive() -> bytes:
    from data_server import make_tar
    return make_tar([("CUB_fewshot_raw/FRN/ResNet-12/model.pth", b"weights"), ("README", b"r")], mode="w")


def test_frn_weights_through_a_confirmation_page(tmp_path):
    data = frn_archive()
    res = dataclasses.replace(FRN_WEIGHTS, md5=digests(data)["md5"])
    with http_server({"w.tar": data}) as srv:
        folder, _ = install(dataclasses.replace(res, urls=(srv.url + "/confirm/w.tar",)), tmp_path,
                            progress=False, log=quiet)
        assert [p for p, _ in srv.log][0] == "/confirm/w.tar"
        assert "uuid=abc" in srv.log[1][0]
    assert (folder / "CUB_fewshot_raw/FRN/ResNet-12/model.pth").read_bytes() == b"weights"
    assert (folder / MARKER).exists()


def test_frn_weights_page_without_link_prints_manual_step(tmp_path):
    res = dataclasses.replace(FRN_WEIGHTS, md5=digests(frn_archive())["md5"])
    with http_server({}) as srv:
        with pytest.raises(DataError, match="web page") as err:
            install(dataclasses.replace(res, urls=(srv.url + "/page/w.tar",)), tmp_path, progress=False, log=quiet)
    assert "Download anyway" in str(err.value) and "trained_model_weights.tar" in str(err.value)
    assert not (tmp_path / "trained_model_weights").exists()


# ------------------------------------------------------------------------------------ the real command

def run_cli(args, tmp_path, preexec=None):
    """Run ``python -m data_download`` in a subprocess (so that resource limits apply to it alone)."""
    return subprocess.run([sys.executable, "-m", "data_download", *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, preexec_fn=preexec)


def test_cli_help_lists_the_commands(tmp_path):
    out = run_cli(["--help"], tmp_path)
    assert out.returncode == 0
    for command in ("cub200", "frn-weights", "synthetic"):
        assert command in out.stdout
    sub = run_cli(["cub200", "--help"], tmp_path)
    assert "--url" in sub.stdout and "--root" in sub.stdout


def test_cli_offline_error_is_one_paragraph_with_exit_1(tmp_path):
    out = run_cli(["cub200", "--root", str(tmp_path / "cub"), "--url", refused_url(), "--quiet"], tmp_path)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert out.stderr.startswith("error: ") and out.stderr.strip().count("\n") == 0
    assert "refused" in out.stderr and "CUB_200_2011.tgz" in out.stderr and "data.caltech.edu" in out.stderr
    assert not (tmp_path / "cub" / "CUB_200_2011").exists()


def test_cli_download_checks_the_real_checksums(tmp_path):
    """Served through --url, our small archive fails the real CUB size check: the command must say so."""
    with http_server({"CUB.tgz": ARCHIVE}) as srv:
        out = run_cli(["cub200", "--root", str(tmp_path), "--url", srv.url + "/file/CUB.tgz", "--quiet"], tmp_path)
    assert out.returncode == 1 and "1,150,585,339" in out.stderr
    assert_nothing_complete(tmp_path)



@pytest.mark.parametrize("stage", ["download", "extract"])
def test_full_disk(tmp_path, stage):
    """A file-size limit makes every write past 50 kB fail as a full disk would (EFBIG instead of ENOSPC):
    while writing the 300 kB download, or while extracting a 200 kB file from a small archive."""
    data = ARCHIVE if stage == "download" else mini_cub_archive(bytes(200_000))
    with http_server({"CUB.tgz": data}) as srv:
        code = ("import sys, dataclasses; from data_download.install import install; "
                "from data_download.resources import CUB200_ARCHIVE as CUB200; from data_download.errors import DataError\n"
                f"res = dataclasses.replace(CUB200, size={len(data)}, md5={digests(data)['md5']!r}, sha256=None)\n"
                f"try: install(res, {str(tmp_path)!r}, [{srv.url + '/file/CUB.tgz'!r}], progress=False)\n"
                "except DataError as e: print(e, file=sys.stderr); sys.exit(1)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                             preexec_fn=file_size_limit(50_000))
    assert out.returncode == 1, out.stderr
    assert "disk is full" in out.stderr and "Manual fix" in out.stderr
    assert_nothing_complete(tmp_path)


def _drop_dac_override():
    """Make a root process subject to file permissions (drop CAP_DAC_OVERRIDE from the bounding set)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(24, 1, 0, 0, 0)           # PR_CAPBSET_DROP, CAP_DAC_OVERRIDE; fails harmlessly for non-root


def test_cli_read_only_root(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        probe = subprocess.run([sys.executable, "-c", f"open({str(ro / 'x')!r}, 'w')"], capture_output=True,
                               preexec_fn=_drop_dac_override)
        if probe.returncode == 0:
            pytest.skip("cannot make a folder read-only for this user")
        out = run_cli(["cub200", "--root", str(ro / "cub"), "--url", refused_url(), "--quiet"], tmp_path,
                      preexec=_drop_dac_override)
    finally:
        ro.chmod(0o755)
    assert out.returncode == 1
    assert "read-only or you lack permission" in out.stderr and "--root" in out.stderr
    assert "Traceback" not in out.stderr


def test_disk_errors_wraps_os_errors_and_passes_data_errors():
    import errno

    from data_download import DatasetNotFoundError
    from data_download.errors import disk_errors
    with pytest.raises(DataError, match="disk is full") as info:
        with disk_errors("/x/y"):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert "/x/y" in str(info.value) and not isinstance(info.value, OSError)
    with pytest.raises(DatasetNotFoundError, match="as it was"):   # an OSError subclass, but already explained
        with disk_errors("/x/y"):
            raise DatasetNotFoundError("as it was")


def test_build_folder_is_removed_after_success_and_failure(tmp_path):
    from data_download.publish import build_folder
    with build_folder(tmp_path / "new", "THING") as work:
        assert work.parent == tmp_path / "new" and work.name.startswith(".THING.tmp-")
        (work / "file").write_text("x")
    assert not work.exists()
    with pytest.raises(RuntimeError):
        with build_folder(tmp_path, "THING") as work:
            raise RuntimeError
    assert not work.exists() and list(tmp_path.iterdir()) == [tmp_path / "new"]


def test_a_transfer_that_breaks_goes_on_from_the_next_source(tmp_path):
    """The first source sends half the archive and closes (as a stalled transfer ends, with a read timeout): the
    download resumes from the second source at the byte where the first stopped, and the result is verified."""
    messages = []
    with http_server({"CUB.tgz": ARCHIVE}) as srv:
        res = resource_for(ARCHIVE, [srv.url + "/truncate/CUB.tgz", srv.url + "/file/CUB.tgz"])
        install(res, tmp_path, progress=False, log=messages.append)
        assert srv.log[-1] == ("/file/CUB.tgz", f"bytes={len(ARCHIVE) // 2}-")
    assert (tmp_path / "CUB_200_2011" / MARKER).exists()
    assert any("going on from the next source" in m for m in messages)
    assert any(f"({len(ARCHIVE) / 1e9:.2f} GB)" in m for m in messages)


def test_the_real_cub_archive_has_a_second_source_and_frn_says_its_size():
    assert len(REAL_CUB.urls) == 2 and all(u.startswith("https://") for u in REAL_CUB.urls)
    assert FRN_WEIGHTS.size is None and "GB" in FRN_WEIGHTS.approximate_size


@pytest.mark.parametrize("name", ["cub200", "frn-weights", "synthetic"])
@pytest.mark.parametrize("root", [None, "/tmp/some where/data"])
def test_the_command_every_message_names_is_one_the_cli_accepts(name, root):
    """``download_command`` writes every "get it with ..." hint; what it writes must parse as the CLI's command,
    with ``--root`` pointing where the message says, spaces and all (and the default folder without it)."""
    import shlex
    from data_download.__main__ import _parser
    from data_download.resources import default_root, download_command
    words = shlex.split(download_command(name, root))
    assert words[:3] == ["python", "-m", "data_download"]
    args = _parser().parse_args(words[3:])
    assert args.command == name
    assert args.root == (str(default_root(name)) if root is None else root)
