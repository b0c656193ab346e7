"""Safe extraction: hostile members are refused by name and nothing is left extracted."""
from __future__ import annotations

import tarfile

import pytest

from data_download import DataError
from data_download.extract import safe_extract
from data_server import make_tar, special

GOOD = [("top/a.txt", b"alpha"), ("top/sub/b.bin", bytes(range(256)) * 10)]


def write(tmp_path, data: bytes, name: str = "a.tgz"):
    path = tmp_path / name
    path.write_bytes(data)
    dest = tmp_path / "dest"
    dest.mkdir()
    return path, dest


@pytest.mark.parametrize("mode", ["w:gz", "w", "w:bz2", "w:xz"])
def test_good_archive_extracts_exactly(tmp_path, mode):
    path, dest = write(tmp_path, make_tar(GOOD, mode))
    assert safe_extract(path, dest, progress=False) == 2
    assert (dest / "top/a.txt").read_bytes() == b"alpha"
    assert (dest / "top/sub/b.bin").read_bytes() == bytes(range(256)) * 10
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*")) == ["top", "top/a.txt", "top/sub", "top/sub/b.bin"]


HOSTILE = {
    "absolute": ("/tmp/evil.txt", "absolute path"),
    "dotdot": ("top/../../evil.txt", "'..'"),
    "dotdot_plain": ("../evil.txt", "'..'"),
    "symlink_out": (special("top/link", tarfile.SYMTYPE, "/etc/passwd"), "link"),
    "symlink_in": (special("top/link", tarfile.SYMTYPE, "a.txt"), "link"),
    "hardlink": (special("top/hard", tarfile.LNKTYPE, "../../etc/passwd"), "link"),
    "chardev": (special("top/dev", tarfile.CHRTYPE), "device"),
    "blockdev": (special("top/blk", tarfile.BLKTYPE), "device"),
    "fifo": (special("top/fifo", tarfile.FIFOTYPE), "FIFO"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_member_is_refused_and_nothing_is_left(tmp_path, case):
    entry, reason = HOSTILE[case]
    bad = (entry, b"evil") if isinstance(entry, str) else entry
    name = entry if isinstance(entry, str) else entry.name
    # good members first, so that something *was* written before the bad member was met
    path, dest = write(tmp_path, make_tar(GOOD + [bad] + [("top/z.txt", b"after")]))
    with pytest.raises(DataError) as err:
        safe_extract(path, dest, progress=False)
    assert repr(name) in str(err.value) and reason in str(err.value)
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "evil.txt").exists()
    assert not (tmp_path.parent / "evil.txt").exists()


def test_truncated_archive_leaves_nothing(tmp_path):
    data = make_tar(GOOD + [("top/big.bin", bytes(range(256)) * 4000)], "w")
    path, dest = write(tmp_path, data[: len(data) // 2], "a.tar")
    with pytest.raises(DataError, match="corrupt"):
        safe_extract(path, dest, progress=False)
    assert list(dest.iterdir()) == []


def test_permission_bits_are_reduced(tmp_path):
    info = tarfile.TarInfo("top/setuid")
    info.mode = 0o4777
    import io
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    path, dest = write(tmp_path, data.getvalue(), "a.tar")
    safe_extract(path, dest, progress=False)
    assert (dest / "top/setuid").stat().st_mode & 0o7777 == 0o755
