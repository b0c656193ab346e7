"""Safe extraction: hostile members are refused by name and nothing is left extracted."""
from __future__ import annotations

import tarfile

import pytest

from data_download import DataError
from data_download import extract
from data_download.extract import member_problem, safe_extract
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


# --- the two layers, each on its own --------------------------------------------------------------
# Layer 1, member_problem, refuses names with '..' or an absolute path, links and special files; layer 2, _inside,
# checks that the resolved destination stays in the folder. With layer 1 in place a hostile *name* never reaches
# layer 2, so each is tested without the other.

def member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_member_check_alone_names_each_hostile_member(case):
    entry, reason = HOSTILE[case]
    info = member(entry) if isinstance(entry, str) else entry
    assert reason in member_problem(info)


@pytest.mark.parametrize("name,reason", [("", "empty or invalid name"), ("a\x00b", "empty or invalid name"),
                                         ("\\evil.txt", "absolute path"), ("C:/evil.txt", "absolute path"),
                                         ("top\\..\\..\\evil.txt", "'..'")])
def test_member_check_alone_refuses_odd_names(name, reason):
    assert reason in member_problem(member(name))


@pytest.mark.parametrize("name", ["top/a.txt", "top/..hidden", "a..b/c", "top/./b.txt", "top/"])
def test_member_check_alone_lets_plain_names_through(name):
    assert member_problem(member(name)) is None
    assert member_problem(member(name.rstrip("/") or ".", tarfile.DIRTYPE)) is None


@pytest.mark.parametrize("name", ["../evil.txt", "top/../../evil.txt", "/tmp/evil.txt"])
def test_containment_check_alone_refuses_what_the_member_check_would(tmp_path, monkeypatch, name):
    """With layer 1 switched off, layer 2 alone still refuses an escaping name, writes nothing outside and leaves
    the folder empty."""
    monkeypatch.setattr(extract, "member_problem", lambda info: None)
    path, dest = write(tmp_path, make_tar(GOOD + [(name, b"evil")]))
    with pytest.raises(DataError, match="would be written outside"):
        safe_extract(path, dest, progress=False)
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path.parent / "evil.txt").exists()


def test_containment_check_refuses_a_plain_name_that_leaves_through_a_link_in_the_folder(tmp_path):
    """Layer 2 in the real extraction: a folder that already holds a link to elsewhere, and a member whose plain
    name (layer 1 lets it through) goes through that link. Nothing is written elsewhere."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    path, dest = write(tmp_path, make_tar(GOOD + [("out/evil.txt", b"evil")]))
    (dest / "out").symlink_to(elsewhere, target_is_directory=True)
    assert member_problem(member("out/evil.txt")) is None
    with pytest.raises(DataError, match="'out/evil.txt' would be written outside"):
        safe_extract(path, dest, progress=False)
    assert list(elsewhere.iterdir()) == []
    assert list(dest.iterdir()) == []           # the extraction's files and the link are removed, not its target
    assert elsewhere.is_dir()
