"""Download, resume, checksum and safe extraction against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import shutil
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from dist_scripts.archive_server import SPLIT, ArchiveServer, add_file, mmimdb_tar_gz

from mmimdb_dist.data.sources.mmimdb.download import LOCK_NAME, download, fetch_mmimdb
from mmimdb_dist.data.sources.mmimdb.extract import EXTRACTED_MARKER, extract
from mmimdb_dist.errors import DownloadError, OutputError


@pytest.fixture(scope="module")
def payload() -> bytes:
    return mmimdb_tar_gz()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fetch(server: ArchiveServer, to: Path, payload: bytes, **kwargs: object) -> Path:
    options = {"retries": 2, "timeout": 5.0, "backoff": 0.0, "progress": False} | kwargs
    return fetch_mmimdb(to, url=server.url, sha256=_sha(payload), **options)


def test_full_download_extracts_the_layout_and_a_rerun_does_nothing(tmp_path: Path, payload: bytes) -> None:
    with ArchiveServer(payload) as server:
        raw = _fetch(server, tmp_path, payload)
        assert raw == tmp_path / "mmimdb"
        assert (tmp_path / "mmimdb.tar.gz").read_bytes() == payload
        assert not (tmp_path / "mmimdb.tar.gz.part").exists()
        assert json.loads((raw / "split.json").read_text()) == SPLIT
        assert sorted(p.name for p in (raw / "dataset").iterdir()) == [
            "0000001.jpeg",
            "0000001.json",
            "0000002.jpeg",
            "0000002.json",
        ]
        assert (tmp_path / EXTRACTED_MARKER).read_text().strip() == _sha(payload)
        assert server.bytes_served == [len(payload)]
        assert "Range" not in server.requests[0]

        # A re-run finds the verified archive and the marker: no request, no re-extraction.
        (raw / "dataset" / "0000002.jpeg").unlink()
        assert _fetch(server, tmp_path, payload) == raw
        assert len(server.requests) == 1
        assert not (raw / "dataset" / "0000002.jpeg").exists()


def test_marker_without_the_raw_folder_extracts_again(tmp_path: Path, payload: bytes) -> None:
    with ArchiveServer(payload) as server:
        raw = _fetch(server, tmp_path, payload)
        shutil.rmtree(raw)
        assert _fetch(server, tmp_path, payload) == raw
    assert json.loads((raw / "split.json").read_text()) == SPLIT
    assert len(server.requests) == 1


def test_a_second_run_into_the_same_folder_is_refused_while_one_holds_it(tmp_path: Path, payload: bytes) -> None:
    with ArchiveServer(payload) as server, open(tmp_path / LOCK_NAME, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(OutputError, match="another mmimdb-dist download is writing there"):
            _fetch(server, tmp_path, payload)
        assert server.requests == []
        fcntl.flock(held, fcntl.LOCK_UN)
        assert _fetch(server, tmp_path, payload) == tmp_path / "mmimdb"


def test_cut_connection_resumes_with_a_range_request(tmp_path: Path, payload: bytes) -> None:
    cut = 50_000
    with ArchiveServer(payload, cut_after=cut) as server:
        archive = download(server.url, tmp_path, _sha(payload), retries=2, timeout=5.0, backoff=0.0, progress=False)
    assert archive.read_bytes() == payload
    assert len(server.requests) == 2
    assert server.requests[1]["Range"] == f"bytes={cut}-"
    assert server.bytes_served == [cut, len(payload) - cut]


def test_stalled_server_times_out_and_the_retry_resumes(tmp_path: Path, payload: bytes) -> None:
    stall = 25_000
    with ArchiveServer(payload, stall_after=stall) as server:
        archive = download(server.url, tmp_path, _sha(payload), retries=1, timeout=1.0, backoff=0.0, progress=False)
    assert archive.read_bytes() == payload
    assert server.requests[1]["Range"] == f"bytes={stall}-"
    assert server.bytes_served == [stall, len(payload) - stall]


def test_rerun_after_giving_up_resumes_the_part_file(tmp_path: Path, payload: bytes) -> None:
    cut = 30_000
    with ArchiveServer(payload, cut_after=cut) as server:
        with pytest.raises(DownloadError) as error:
            download(server.url, tmp_path, _sha(payload), retries=0, timeout=5.0, backoff=0.0, progress=False)
        assert server.url in str(error.value)
        assert "run again to resume" in str(error.value)
        assert (tmp_path / "mmimdb.tar.gz.part").read_bytes() == payload[:cut]
        assert not (tmp_path / "mmimdb.tar.gz").exists()

        archive = download(server.url, tmp_path, _sha(payload), retries=0, timeout=5.0, progress=False)
    assert archive.read_bytes() == payload
    assert server.requests[1]["Range"] == f"bytes={cut}-"
    assert server.bytes_served == [cut, len(payload) - cut]


@pytest.mark.parametrize("part_prefix", ["true-prefix", "garbage"])
def test_server_ignoring_range_restarts_from_zero(tmp_path: Path, payload: bytes, part_prefix: str) -> None:
    stale = payload[:20_000] if part_prefix == "true-prefix" else b"x" * 20_000
    (tmp_path / "mmimdb.tar.gz.part").write_bytes(stale)
    with ArchiveServer(payload, honor_range=False) as server:
        archive = download(server.url, tmp_path, _sha(payload), retries=0, timeout=5.0, progress=False)
    assert archive.read_bytes() == payload
    assert server.requests[0]["Range"] == "bytes=20000-"
    assert server.bytes_served == [len(payload)]


def test_complete_part_file_is_finished_on_416(tmp_path: Path, payload: bytes) -> None:
    (tmp_path / "mmimdb.tar.gz.part").write_bytes(payload)
    with ArchiveServer(payload) as server:
        archive = download(server.url, tmp_path, _sha(payload), retries=0, timeout=5.0, progress=False)
    assert archive.read_bytes() == payload
    assert server.bytes_served == [0]


def test_part_file_longer_than_the_archive_starts_again(tmp_path: Path, payload: bytes) -> None:
    (tmp_path / "mmimdb.tar.gz.part").write_bytes(payload + b"trailing junk")
    with ArchiveServer(payload) as server:
        archive = download(server.url, tmp_path, _sha(payload), retries=0, timeout=5.0, progress=False)
    assert archive.read_bytes() == payload
    assert "Range" not in server.requests[1]
    assert server.bytes_served == [0, len(payload)]


def test_checksum_mismatch_names_file_and_digests_and_leaves_no_final_file(tmp_path: Path, payload: bytes) -> None:
    wrong = "0" * 64
    with ArchiveServer(payload) as server, pytest.raises(DownloadError) as error:
        download(server.url, tmp_path, wrong, retries=0, timeout=5.0, progress=False)
    message = str(error.value)
    assert str(tmp_path / "mmimdb.tar.gz") in message
    assert wrong in message
    assert _sha(payload) in message
    assert not (tmp_path / "mmimdb.tar.gz").exists()
    assert not (tmp_path / "mmimdb.tar.gz.part").exists()
    assert (tmp_path / "mmimdb.tar.gz.bad").read_bytes() == payload


def test_existing_final_file_with_wrong_digest_is_an_error_not_a_download(tmp_path: Path, payload: bytes) -> None:
    (tmp_path / "mmimdb.tar.gz").write_bytes(b"not the archive")
    with ArchiveServer(payload) as server:
        with pytest.raises(DownloadError) as error:
            download(server.url, tmp_path, _sha(payload), retries=0, timeout=5.0, progress=False)
        assert server.requests == []
    message = str(error.value)
    assert str(tmp_path / "mmimdb.tar.gz") in message
    assert _sha(b"not the archive") in message
    assert _sha(payload) in message
    assert (tmp_path / "mmimdb.tar.gz").read_bytes() == b"not the archive"


def test_http_404_fails_at_once_naming_the_url(tmp_path: Path, payload: bytes) -> None:
    with ArchiveServer(payload, status=404) as server:
        with pytest.raises(DownloadError, match="HTTP 404") as error:
            download(server.url, tmp_path, _sha(payload), retries=3, timeout=5.0, backoff=0.0, progress=False)
        assert server.url in str(error.value)
        assert len(server.requests) == 1


def test_http_503_is_retried_then_reported(tmp_path: Path, payload: bytes) -> None:
    with ArchiveServer(payload, status=503) as server:
        with pytest.raises(DownloadError, match="giving up after 2 retries") as error:
            download(server.url, tmp_path, _sha(payload), retries=2, timeout=5.0, backoff=0.0, progress=False)
        assert server.url in str(error.value)
        assert len(server.requests) == 3


def test_refused_connection_is_retried_then_reported(tmp_path: Path, payload: bytes) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/mmimdb.tar.gz"
    with pytest.raises(DownloadError, match="giving up after 1 retries") as error:
        download(url, tmp_path, _sha(payload), retries=1, timeout=2.0, backoff=0.0, progress=False)
    assert url in str(error.value)


def test_malformed_sha256_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="64 hexadecimal"):
        download("http://127.0.0.1:1/x.tar.gz", tmp_path, "abc", progress=False)


# --------------------------------------------------------------------------- extraction


HOSTILE = {
    "dotdot": ("file", "mmimdb/../../escaped.txt", ""),
    "absolute": ("file", "{outside}/escaped.txt", ""),
    "symlink-out": ("symlink", "mmimdb/dataset/poster.jpeg", "../../../escaped.txt"),
    "symlink-absolute": ("symlink", "mmimdb/link", "{outside}"),
    "hardlink-out": ("hardlink", "mmimdb/hard", "../escaped.txt"),
    "symlink-chain": ("chain", "", ""),
    "symlink-loop": ("loop", "", ""),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archive_extracts_nothing_and_names_the_member(tmp_path: Path, case: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    destination = tmp_path / "dest"
    destination.mkdir()
    kind, name, target = HOSTILE[case]
    if kind == "chain":
        # Each link alone stays inside; together `b` is the parent of the destination.
        extra = [("symlink", "a", "."), ("symlink", "b", "a/.."), ("file", "b/escaped.txt", "")]
        bad_member = "b"
    elif kind == "loop":
        extra = [("symlink", "mmimdb/a", "b"), ("symlink", "mmimdb/b", "a")]
        bad_member = "mmimdb/a"
    else:
        extra = [(kind, name.format(outside=outside), target.format(outside=outside))]
        bad_member = extra[0][1]
    archive = tmp_path / "hostile.tar.gz"
    archive.write_bytes(mmimdb_tar_gz(extra))

    with pytest.raises(DownloadError) as error:
        extract(archive, destination, digest="d" * 64, progress=False)
    message = str(error.value)
    assert str(archive) in message
    assert repr(bad_member) in message
    assert list(destination.iterdir()) == []
    assert list(outside.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest", "hostile.tar.gz", "outside"]


def test_device_file_member_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "device.tar"
    with tarfile.open(archive, "w") as tar:
        add_file(tar, "mmimdb/split.json", b"{}")
        info = tarfile.TarInfo("mmimdb/null")
        info.type = tarfile.CHRTYPE
        info.devmajor, info.devminor = 1, 3
        tar.addfile(info)
    with pytest.raises(DownloadError, match="'mmimdb/null': device"):
        extract(archive, tmp_path / "dest", progress=False)
    assert not (tmp_path / "dest" / "mmimdb").exists()


def test_archive_without_split_json_is_refused_before_extracting(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        add_file(tar, "other/readme.txt", b"hello")
    with ArchiveServer(buffer.getvalue()) as server, pytest.raises(DownloadError, match="mmimdb/split.json"):
        _fetch(server, tmp_path, buffer.getvalue())
    assert not (tmp_path / "other").exists()
    assert not (tmp_path / EXTRACTED_MARKER).exists()


def test_links_inside_the_destination_are_extracted(tmp_path: Path) -> None:
    archive = tmp_path / "links.tar.gz"
    archive.write_bytes(
        mmimdb_tar_gz(
            [
                ("symlink", "mmimdb/latest.json", "dataset/0000001.json"),
                ("hardlink", "mmimdb/copy.json", "mmimdb/dataset/0000002.json"),
                ("symlink", "mmimdb/posters", "./dataset"),
                ("symlink", "mmimdb/first.jpeg", "posters/../posters/0000001.jpeg"),
            ]
        )
    )
    destination = extract(archive, tmp_path / "dest", progress=False)
    raw = destination / "mmimdb"
    assert (raw / "latest.json").is_symlink()
    assert (raw / "latest.json").read_bytes() == (raw / "dataset" / "0000001.json").read_bytes()
    assert (raw / "copy.json").read_bytes() == (raw / "dataset" / "0000002.json").read_bytes()
    assert (raw / "first.jpeg").read_bytes() == (raw / "dataset" / "0000001.jpeg").read_bytes()


# --------------------------------------------------------------------------- CLI


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mmimdb_dist.cli", "download", *args], capture_output=True, text=True, timeout=60
    )


def test_cli_downloads_and_prints_the_raw_folder(tmp_path: Path, payload: bytes) -> None:
    with ArchiveServer(payload) as server:
        result = _cli("--to", str(tmp_path), "--url", server.url, "--sha256", _sha(payload), "--retries", "0")
    assert result.returncode == 0, result.stderr
    assert f"mmimdb-dist shard --raw {tmp_path / 'mmimdb'}" in result.stdout
    assert (tmp_path / "mmimdb" / "split.json").is_file()


def test_cli_checksum_mismatch_exits_2_with_one_error_line(tmp_path: Path, payload: bytes) -> None:
    with ArchiveServer(payload) as server:
        result = _cli("--to", str(tmp_path), "--url", server.url, "--sha256", "f" * 64, "--retries", "0")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1
    assert errors[0].startswith("mmimdb-dist download: error: ")
    assert "SHA-256 mismatch" in errors[0]
    assert not (tmp_path / "mmimdb.tar.gz").exists()
    assert not (tmp_path / "mmimdb").exists()


def test_a_url_that_serves_a_web_page_is_one_line_naming_it(tmp_path, capsys):
    """A mirror URL that answers with an HTML page (a login or an error page) is named as such,
    with its first bytes, not as four decompressors' errors."""
    import hashlib

    from mmimdb_dist.cli import main

    page = b"<!DOCTYPE html><html><body>Sign in to download</body></html>\n"
    with ArchiveServer(page) as server:
        argv = ["download", "--url", f"{server.url}/mmimdb.tar.gz", "--to", str(tmp_path)]
        assert main([*argv, "--sha256", hashlib.sha256(page).hexdigest()]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(lines) == 1
    assert lines[0].endswith(
        f"{tmp_path / 'mmimdb.tar.gz'}: not a tar archive (gzip, bzip2, xz or plain); the server sent an HTML page "
        f"(first bytes {page[:24]!r}): check --url"
    )
    assert not (tmp_path / "mmimdb").exists()
