"""fetch (resumable HTTP, checksums, local sources) and safe_extract (malicious archives refused).

All network traffic goes to a throwaway HTTP server on 127.0.0.1; the other data tests import its
fixture from here.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import re
import socket
import stat
import tarfile
import threading
import urllib.parse
import zipfile
from pathlib import Path

import pytest

from idiff_core.data import DatasetError
from idiff_core.data.archive import UnsafeArchive, archive_members, safe_extract
from idiff_core.data.download import ChecksumMismatch, DownloadError, fetch, verify_checksum
from idiff_core.data.ldm import LDMSettings, fetch_ldm_first_stage
from idiff_core.io import atomic_path
from idiff_core.settings import settings_from_dict


class FileServer:
    """Serves `files` (URL path -> bytes) on 127.0.0.1, logging (path, Range) of every request.

    Switches: `honour_range` (False = a server that ignores Range), `cut_once[path] = n` (send n body
    bytes then drop the connection, once), `status[path] = code` (answer with an error).
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.honour_range = True
        self.cut_once: dict[str, int] = {}
        self.status: dict[str, int] = {}
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                path = urllib.parse.unquote(urllib.parse.urlparse(self.path).path.lstrip("/"))
                wanted = self.headers.get("Range")
                server.requests.append((path, wanted))
                if path in server.status or path not in server.files:
                    self.send_error(server.status.get(path, 404))
                    return
                data, start = server.files[path], 0
                if wanted and server.honour_range:
                    start = int(re.fullmatch(r"bytes=(\d+)-", wanted).group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if path in server.cut_once:
                    self.wfile.write(body[:server.cut_once.pop(path)])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def http_server():
    server = FileServer()
    yield server
    server.close()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


PAYLOAD = bytes(range(256)) * 4000  # 1 MB, several read chunks


def get(source, dest, **kw):
    return fetch(source, dest, retries=kw.pop("retries", 0), timeout=5, **kw)


# ----------------------------------------------------------------------------------------- fetch

def test_download_verifies_and_reports_digests(http_server, tmp_path):
    http_server.files["a.bin"] = PAYLOAD
    found = get(http_server.url("a.bin"), tmp_path / "a.bin", md5=md5(PAYLOAD),
                sha256=hashlib.sha256(PAYLOAD).hexdigest(), size=len(PAYLOAD))
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD
    assert found.md5 == md5(PAYLOAD) and found.size == len(PAYLOAD)
    assert not (tmp_path / "a.bin.part").exists()


def test_resume_continues_a_part_file_with_range(http_server, tmp_path):
    http_server.files["a.bin"] = PAYLOAD
    (tmp_path / "a.bin.part").write_bytes(PAYLOAD[:300_001])
    get(http_server.url("a.bin"), tmp_path / "a.bin", md5=md5(PAYLOAD))
    assert http_server.requests == [("a.bin", "bytes=300001-")]
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts_from_zero(http_server, tmp_path):
    http_server.files["a.bin"] = PAYLOAD
    http_server.honour_range = False
    (tmp_path / "a.bin.part").write_bytes(b"x" * 5000)  # must not survive as a prefix
    get(http_server.url("a.bin"), tmp_path / "a.bin", md5=md5(PAYLOAD))
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD


def test_dropped_connection_is_retried_and_resumed(http_server, tmp_path):
    http_server.files["a.bin"] = PAYLOAD
    http_server.cut_once["a.bin"] = 123_456
    get(http_server.url("a.bin"), tmp_path / "a.bin", md5=md5(PAYLOAD), retries=2)
    assert http_server.requests == [("a.bin", None), ("a.bin", "bytes=123456-")]
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD


def test_dropped_connection_without_retries_keeps_the_part_for_the_next_run(http_server, tmp_path):
    http_server.files["a.bin"] = PAYLOAD
    http_server.cut_once["a.bin"] = 1000
    with pytest.raises(DownloadError, match="resumes"):
        get(http_server.url("a.bin"), tmp_path / "a.bin", md5=md5(PAYLOAD))
    assert (tmp_path / "a.bin.part").stat().st_size == 1000
    get(http_server.url("a.bin"), tmp_path / "a.bin", md5=md5(PAYLOAD))
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD


def test_complete_part_file_answered_416_is_finished(http_server, tmp_path):
    http_server.files["a.bin"] = PAYLOAD
    (tmp_path / "a.bin.part").write_bytes(PAYLOAD)
    get(http_server.url("a.bin"), tmp_path / "a.bin", md5=md5(PAYLOAD))
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD


def test_stale_part_of_another_file_version_is_redownloaded(http_server, tmp_path):
    http_server.files["a.bin"] = PAYLOAD
    (tmp_path / "a.bin.part").write_bytes(b"old version " * 100)
    get(http_server.url("a.bin"), tmp_path / "a.bin", md5=md5(PAYLOAD))
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD


def test_checksum_mismatch_names_file_checksums_and_fix(http_server, tmp_path):
    http_server.files["a.bin"] = PAYLOAD
    wrong = "0" * 32
    with pytest.raises(ChecksumMismatch) as err:
        get(http_server.url("a.bin"), tmp_path / "a.bin", md5=wrong)
    message = str(err.value)
    assert str(tmp_path / "a.bin") in message and wrong in message and md5(PAYLOAD) in message
    assert "re-run" in message and "place it at" in message
    assert not (tmp_path / "a.bin").exists() and not (tmp_path / "a.bin.part").exists()


def test_existing_good_file_needs_no_request(http_server, tmp_path):
    (tmp_path / "a.bin").write_bytes(PAYLOAD)
    get(http_server.url("a.bin"), tmp_path / "a.bin", md5=md5(PAYLOAD))
    assert http_server.requests == []


def test_existing_bad_file_is_fetched_again(http_server, tmp_path):
    http_server.files["a.bin"] = PAYLOAD
    (tmp_path / "a.bin").write_bytes(b"corrupt")
    get(http_server.url("a.bin"), tmp_path / "a.bin", md5=md5(PAYLOAD))
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD


def test_unchecked_file_from_another_url_is_replaced(http_server, tmp_path):
    http_server.files["v1.txt"], http_server.files["v2.txt"] = b"one", b"two"
    get(http_server.url("v1.txt"), tmp_path / "f.txt")
    get(http_server.url("v1.txt"), tmp_path / "f.txt")
    assert len(http_server.requests) == 1  # the same URL again: kept
    get(http_server.url("v2.txt"), tmp_path / "f.txt")
    assert (tmp_path / "f.txt").read_bytes() == b"two"


def test_http_error_is_not_retried_and_says_what_to_check(http_server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404.*check the URL"):
        get(http_server.url("missing.bin"), tmp_path / "m.bin", retries=3)
    assert len(http_server.requests) == 1


def test_transient_http_error_is_retried(http_server, tmp_path):
    http_server.status["busy.bin"] = 503
    with pytest.raises(DownloadError, match="after 2 attempt"):
        get(http_server.url("busy.bin"), tmp_path / "b.bin", retries=1)
    assert len(http_server.requests) == 2


def test_web_page_instead_of_file_is_refused(http_server, tmp_path):
    http_server.files["ffhq.zip"] = b"<!DOCTYPE html><html><title>Google Drive - Quota exceeded</title></html>"
    with pytest.raises(DownloadError, match="web page"):
        get(http_server.url("ffhq.zip"), tmp_path / "ffhq.zip")
    assert not (tmp_path / "ffhq.zip").exists() and not (tmp_path / "ffhq.zip.part").exists()


@pytest.mark.parametrize("as_url", [False, True])
def test_local_source_is_linked_or_copied_and_checked(tmp_path, as_url):
    src = tmp_path / "src" / "a.bin"
    src.parent.mkdir()
    src.write_bytes(PAYLOAD)
    source = src.as_uri() if as_url else str(src)
    get(source, tmp_path / "out" / "a.bin", md5=md5(PAYLOAD))
    assert (tmp_path / "out" / "a.bin").read_bytes() == PAYLOAD
    with pytest.raises(ChecksumMismatch, match="expected md5 f+, got"):
        get(source, tmp_path / "out2" / "a.bin", md5="f" * 32)
    assert src.read_bytes() == PAYLOAD  # the source is never touched


def test_missing_local_source_is_reported(tmp_path):
    with pytest.raises(DownloadError, match="does not exist"):
        get(tmp_path / "nope.zip", tmp_path / "x.zip")


def test_verify_checksum_checks_size_too(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"12345")
    assert verify_checksum(path, md5=md5(b"12345"), size=5).size == 5
    with pytest.raises(ChecksumMismatch, match="expected size 6, got 5"):
        verify_checksum(path, size=6)


# ---------------------------------------------------------------------------------- safe_extract

def make_zip(path: Path, entries: list[tuple[str, bytes, int]]) -> Path:
    """(name, data, unix mode incl. file type; 0 = plain file) per entry."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            zf.writestr(info, data)
    return path


def make_tar(path: Path, entries: list[tuple[str, bytes, bytes, str]], mode: str = "w") -> Path:
    """(name, type, data, linkname) per entry; type is a tarfile type constant."""
    with tarfile.open(path, mode) as tf:
        for name, kind, data, link in entries:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.size = kind, link, len(data) if kind == tarfile.REGTYPE else 0
            tf.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return path


@pytest.mark.parametrize("suffix,mode", [(".tar", "w"), (".tar.gz", "w:gz"), (".tar.bz2", "w:bz2"),
                                         (".tar.xz", "w:xz")])
def test_tar_formats_extract(tmp_path, suffix, mode):
    archive = make_tar(tmp_path / f"a{suffix}", [("d", tarfile.DIRTYPE, b"", ""),
                                                 ("d/x.txt", tarfile.REGTYPE, b"x", ""),
                                                 ("d/same.txt", tarfile.LNKTYPE, b"", "d/x.txt"),
                                                 ("d/link", tarfile.SYMTYPE, b"", "x.txt")], mode)
    written = safe_extract(archive, tmp_path / "out")
    assert (tmp_path / "out/d/x.txt").read_bytes() == b"x"
    assert (tmp_path / "out/d/same.txt").read_bytes() == b"x"
    assert (tmp_path / "out/d/link").is_symlink() and (tmp_path / "out/d/link").read_bytes() == b"x"
    assert len(written) == 3


def test_zip_extracts_selected_members_only(tmp_path):
    archive = make_zip(tmp_path / "a.zip", [("a/1.txt", b"1", 0), ("a/2.txt", b"2", 0), ("b/3.txt", b"3", 0)])
    assert archive_members(archive) == ["a/1.txt", "a/2.txt", "b/3.txt"]
    assert safe_extract(archive, tmp_path / "out", ["a/2.txt"]) == [tmp_path / "out/a/2.txt"]
    assert sorted(p.name for p in (tmp_path / "out").rglob("*.txt")) == ["2.txt"]
    with pytest.raises(KeyError, match="no member"):
        safe_extract(archive, tmp_path / "out", ["c.txt"])


MALICIOUS_ZIPS = {
    "dotdot": ("good.txt", "../evil.txt"),
    "nested_dotdot": ("good.txt", "a/../../evil.txt"),
    "absolute": ("good.txt", "/tmp/evil.txt"),
    "drive": ("good.txt", "C:/evil.txt"),
}


@pytest.mark.parametrize("case", sorted(MALICIOUS_ZIPS))
def test_malicious_zip_paths_are_refused_before_writing(tmp_path, case):
    good, evil = MALICIOUS_ZIPS[case]
    archive = make_zip(tmp_path / "m.zip", [(good, b"ok", 0), (evil, b"pwned", 0)])
    with pytest.raises(UnsafeArchive):
        safe_extract(archive, tmp_path / "sub" / "out")
    assert list((tmp_path / "sub" / "out").iterdir()) == []
    assert not (tmp_path / "sub" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()


def test_zip_symlink_pointing_outside_is_refused(tmp_path):
    archive = make_zip(tmp_path / "m.zip", [("link", b"../../etc", stat.S_IFLNK | 0o777)])
    with pytest.raises(UnsafeArchive, match="outside"):
        safe_extract(archive, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_zip_member_with_sane_path_dotdot_inside_is_fine(tmp_path):
    archive = make_zip(tmp_path / "a.zip", [("a/../b.txt", b"b", 0)])
    safe_extract(archive, tmp_path / "out")
    assert (tmp_path / "out/b.txt").read_bytes() == b"b"


MALICIOUS_TARS = {
    "dotdot": [("../evil.txt", tarfile.REGTYPE, b"pwned", "")],
    "absolute": [("/tmp/idiff-evil.txt", tarfile.REGTYPE, b"pwned", "")],
    "symlink_out": [("link", tarfile.SYMTYPE, b"", "../outside")],
    "symlink_absolute": [("link", tarfile.SYMTYPE, b"", "/etc/passwd")],
    "hardlink_out": [("hard", tarfile.LNKTYPE, b"", "../outside.txt")],
    "char_device": [("dev", tarfile.CHRTYPE, b"", "")],
    "fifo": [("pipe", tarfile.FIFOTYPE, b"", "")],
    "file_under_symlink": [("d", tarfile.SYMTYPE, b"", "."), ("d/x.txt", tarfile.REGTYPE, b"x", "")],
    "symlink_chain": [("l2", tarfile.SYMTYPE, b"", "l1/.."), ("l1", tarfile.SYMTYPE, b"", ".")],
}


@pytest.mark.parametrize("case", sorted(MALICIOUS_TARS))
def test_malicious_tar_entries_are_refused_before_writing(tmp_path, case):
    entries = [("good.txt", tarfile.REGTYPE, b"ok", "")] + MALICIOUS_TARS[case]
    archive = make_tar(tmp_path / "m.tar.gz", entries, "w:gz")
    with pytest.raises(UnsafeArchive):
        safe_extract(archive, tmp_path / "sub" / "out")
    assert list((tmp_path / "sub" / "out").iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tar.gz", "sub"]


def test_links_already_on_disk_are_not_followed_outside(tmp_path):
    archive = make_tar(tmp_path / "m.tar", [("a", tarfile.DIRTYPE, b"", ""), ("l1", tarfile.SYMTYPE, b"", "a/..")])
    safe_extract(archive, tmp_path / "out")
    assert (tmp_path / "out/l1").resolve() == (tmp_path / "out").resolve()
    (tmp_path / "out2").mkdir()
    (tmp_path / "out2" / "a").symlink_to(tmp_path)  # a link already on disk pointing outside
    with pytest.raises(UnsafeArchive, match="outside"):
        safe_extract(archive, tmp_path / "out2")
    assert not (tmp_path / "out2" / "l1").exists()


def test_not_an_archive_is_reported(tmp_path):
    (tmp_path / "x.zip").write_bytes(b"<html>quota</html>")
    with pytest.raises(ValueError, match="neither a zip nor a tar"):
        safe_extract(tmp_path / "x.zip", tmp_path / "out")


# ------------------------------------------------------------------------------ LDM checkpoint

def ldm_settings(location: str, sha256: str | None = None) -> LDMSettings:
    return settings_from_dict(LDMSettings, {"location": location, "sha256": sha256, "member": "model.ckpt",
                                            "download_retries": 0, "download_timeout_s": 5.0})


def fake_ldm_zip(ckpt: bytes, names=("model.ckpt",)) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("config.yaml", "model: {}\n")
        for name in names:
            zf.writestr(name, ckpt)
    return buffer.getvalue()


def test_ldm_zip_is_downloaded_and_only_the_checkpoint_extracted(http_server, tmp_path):
    ckpt = b"PK-not-really-a-torch-file" + PAYLOAD[:5000]
    blob = fake_ldm_zip(ckpt)
    http_server.files["files/latent-diffusion/ffhq.zip"] = blob
    out = tmp_path / "weights" / "ldm_ffhq256.ckpt"
    record = fetch_ldm_first_stage(ldm_settings(http_server.url("files/latent-diffusion/ffhq.zip")), out,
                                   download_dir=tmp_path / "dl")
    assert out.read_bytes() == ckpt
    assert record["source_sha256"] == hashlib.sha256(blob).hexdigest()
    assert record["checkpoint_sha256"] == hashlib.sha256(ckpt).hexdigest()
    assert json.loads((tmp_path / "weights" / "ldm_ffhq256.ckpt.source.json").read_text()) == record
    assert sorted(p.name for p in (tmp_path / "weights").iterdir()) == ["ldm_ffhq256.ckpt",
                                                                         "ldm_ffhq256.ckpt.source.json"]
    assert not (tmp_path / "dl" / "extracted").exists()


def test_ldm_pinned_sha256_is_enforced(http_server, tmp_path):
    http_server.files["ffhq.zip"] = fake_ldm_zip(b"weights")
    with pytest.raises(ChecksumMismatch, match="expected sha256 a+, got"):
        fetch_ldm_first_stage(ldm_settings(http_server.url("ffhq.zip"), "a" * 64), tmp_path / "m.ckpt")
    assert not (tmp_path / "m.ckpt").exists()


def test_ldm_local_ckpt_is_used_directly(tmp_path):
    (tmp_path / "model.ckpt").write_bytes(b"weights")
    sha = hashlib.sha256(b"weights").hexdigest()
    record = fetch_ldm_first_stage(ldm_settings(str(tmp_path / "model.ckpt"), sha), tmp_path / "out" / "m.ckpt")
    assert (tmp_path / "out" / "m.ckpt").read_bytes() == b"weights" and record["checkpoint_sha256"] == sha


@pytest.mark.parametrize("names", [(), ("a/model.ckpt", "b/model.ckpt")])
def test_ldm_zip_without_exactly_one_checkpoint_is_refused(tmp_path, names):
    (tmp_path / "ffhq.zip").write_bytes(fake_ldm_zip(b"w", names))
    with pytest.raises(DatasetError, match=f"holds {len(names)} files named 'model.ckpt'"):
        fetch_ldm_first_stage(ldm_settings(str(tmp_path / "ffhq.zip")), tmp_path / "m.ckpt")


def test_atomic_files_get_the_usual_permissions_and_leave_nothing_on_failure(tmp_path):
    """Results land with 0666 less the umask (readable by the group on a shared file system), not 0600."""
    umask = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "table.csv") as tmp:
            tmp.write_text("a,b\n")
        with pytest.raises(RuntimeError), atomic_path(tmp_path / "broken.csv") as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "table.csv").stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]
