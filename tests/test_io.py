"""Shared file helpers: links or copies, digests."""

import hashlib

import pytest

from idiff_core.io import file_digests, link_or_copy


@pytest.mark.parametrize("atomic", [False, True])
def test_link_or_copy_replaces_the_destination_and_leaves_nothing_else(tmp_path, atomic):
    source, dest = tmp_path / "a.bin", tmp_path / "out" / "deep" / "b.bin"
    source.write_bytes(b"new bytes")
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"old")
    link_or_copy(source, dest, atomic=atomic)
    assert dest.read_bytes() == b"new bytes"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["b.bin"]


def test_file_digests_match_hashlib(tmp_path):
    path = tmp_path / "f"
    data = bytes(range(256)) * 9000  # several read chunks
    path.write_bytes(data)
    found = file_digests(path)
    assert (found.size, found.md5, found.sha256) == (len(data), hashlib.md5(data).hexdigest(),
                                                     hashlib.sha256(data).hexdigest())
