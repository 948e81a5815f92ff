"""Faults on the data side, with real processes and real files.

A shard or synth run killed with SIGKILL, a disk that fills up while shards are written,
bad raw data taken end to end through `mmimdb-dist shard`, a shard set that lost a shard
or its manifest, and config mistakes at the command line. The promise checked each time:
a clear one-line error naming the file or key (exit 2), or a skip counted in a report,
and never a half-written file or an incomplete set that looks complete.
See docs/RELIABILITY.md for the whole catalogue.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dist_scripts.archive_server import ArchiveServer, mmimdb_tar_gz
from dist_scripts.raw_data import make_raw, write_movie, write_split

from mmimdb_dist.cli import main
from mmimdb_dist.data.loader import build_eval_loader, build_train_loader
from mmimdb_dist.data.manifest import MANIFEST_NAME, load_manifest
from mmimdb_dist.data.shard import shard_dataset
from mmimdb_dist.data.sources.mmimdb.download import fetch_mmimdb
from mmimdb_dist.data.sources.mmimdb.raw import read_split
from mmimdb_dist.data.sources.mmimdb.synth import generate_dataset
from mmimdb_dist.data.verify import verify_shards
from mmimdb_dist.errors import DataError, DownloadError
from mmimdb_dist.schema import LoaderConfig, load_config

NUM_MOVIES = 240
SEED = 11
DEFECT_RATE = 0.1
CLI = [sys.executable, "-m", "mmimdb_dist.cli"]
REPO_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="module")
def synth_raw(tmp_path_factory) -> Path:
    """A synthetic raw folder with planted defects (some movies are skipped when sharding)."""
    return generate_dataset(tmp_path_factory.mktemp("synth"), NUM_MOVIES, seed=SEED, defect_rate=DEFECT_RATE, workers=2)


def shard_config(raw: Path, out: Path, short_side: int = 32, per_shard: int = 6, workers: int = 2):
    return load_config(
        overrides=[
            f"data.raw_dir={raw}",
            f"shard.out_dir={out}",
            f"shard.poster_short_side={short_side}",
            f"shard.samples_per_shard={per_shard}",
            "shard.min_shards=1",
            f"shard.workers={workers}",
            "seed=3",
        ]
    )


def shard_args(raw: Path, out: Path, short_side: int, per_shard: int) -> list[str]:
    return [
        "shard",
        "--raw",
        str(raw),
        "--out",
        str(out),
        "--poster-short-side",
        str(short_side),
        "--samples-per-shard",
        str(per_shard),
        "--min-shards",
        "1",
        "--workers",
        "2",
        "--set",
        "seed=3",
    ]


def start_in_own_group(args: list[str], log: Path) -> subprocess.Popen:
    """A CLI run in its own process group, so SIGKILL reaches its worker processes too."""
    return subprocess.Popen(CLI + args, stdout=subprocess.DEVNULL, stderr=log.open("wb"), start_new_session=True)


def kill_group_when(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 120) -> None:
    """SIGKILL the whole process group as soon as `ready()` holds, while it still runs."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "the run ended before the moment to kill it came"
        assert time.monotonic() < deadline, "the moment to kill never came"
        time.sleep(0.005)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


def temp_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*") if p.name.endswith(".tmp"))


def error_lines(stderr: str) -> list[str]:
    """The CLI's error lines (tqdm progress may share stderr with them)."""
    return [line for line in stderr.splitlines() if "error:" in line]


def tar_is_whole(path: Path) -> bool:
    """Every member of the tar reads to its full declared size."""
    try:
        with tarfile.open(path, mode="r:") as tar:
            for member in tar:
                handle = tar.extractfile(member)
                if handle is None or len(handle.read()) != member.size:
                    return False
    except (tarfile.TarError, OSError, EOFError):
        return False
    return True


def shard_keys(shards_dir: Path) -> dict[str, list[str]]:
    """Sample keys per split, in the order the manifest's shards hold them."""
    manifest = load_manifest(shards_dir)
    keys: dict[str, list[str]] = {}
    for split in manifest.splits:
        keys[split] = []
        for path in manifest.shard_paths(split):
            with tarfile.open(path) as tar:
                keys[split] += [m.name.split(".")[0] for m in tar if m.name.endswith(".json")]
    return keys


def assert_every_kept_movie_once(raw: Path, shards_dir: Path) -> None:
    """Each id of split.json is in exactly one place: one sample of its split, or skipped."""
    split_ids = read_split(raw)
    manifest = load_manifest(shards_dir)
    skipped = Counter((m.split, m.id) for m in manifest.skipped)
    assert max(skipped.values(), default=1) == 1
    for split, keys in shard_keys(shards_dir).items():
        assert len(keys) == len(set(keys)), f"{split}: a movie is in the shards twice"
        skipped_here = {movie_id for s, movie_id in skipped if s == split}
        assert not set(keys) & skipped_here
        assert set(keys) | skipped_here == set(split_ids[split])
        assert len(keys) == manifest.split(split).num_samples


# --------------------------------------------------------------------------- SIGKILL


def test_sigkill_while_sharding_leaves_no_set_that_looks_complete(synth_raw, tmp_path):
    out = tmp_path / "set"
    shard_dataset(shard_config(synth_raw, out, per_shard=20, workers=1))  # an earlier, complete set

    # Killed before it touched the folder: the earlier set must still be whole (or unlisted).
    early = start_in_own_group(shard_args(synth_raw, out, 64, 4), tmp_path / "early.log")
    kill_group_when(early, lambda: True)
    assert not (out / MANIFEST_NAME).exists() or verify_shards(out) == []
    old_inodes = {p.name: p.stat().st_ino for p in out.glob("*.tar")}

    def inode(path: Path) -> int | None:
        try:
            return path.stat().st_ino
        except FileNotFoundError:
            return None

    def new_shard_written() -> bool:
        # The run first removes the manifest, then renames finished shards into place.
        return not (out / MANIFEST_NAME).exists() and any(
            inode(p) not in (None, old_inodes.get(p.name)) for p in out.glob("*.tar")
        )

    proc = start_in_own_group(shard_args(synth_raw, out, 64, 4), tmp_path / "killed.log")
    kill_group_when(proc, new_shard_written)

    # Old shards and new ones are mixed now: nothing may call that a shard set.
    assert not (out / MANIFEST_NAME).exists()
    assert any("manifest missing" in p for p in verify_shards(out))
    with pytest.raises(DataError, match="manifest missing"):
        load_manifest(out)
    verify = subprocess.run([*CLI, "shard", "--verify", str(out)], capture_output=True, text=True, timeout=120)
    assert verify.returncode == 1
    assert "manifest missing" in verify.stdout

    rerun = subprocess.run(CLI + shard_args(synth_raw, out, 64, 4), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert verify_shards(out) == []
    assert temp_files(out) == []
    assert_every_kept_movie_once(synth_raw, out)
    manifest = load_manifest(out)
    assert sorted(p.name for p in out.glob("*.tar")) == sorted(
        s.name for info in manifest.splits.values() for s in info.shards
    )
    planted = json.loads((synth_raw / "defects.json").read_text())["counts"]
    assert sum(manifest.skipped_counts.values()) > 0
    assert manifest.repaired.get("plot_was_string", 0) == planted.get("plot_as_string", 0)


def test_sigkill_while_synthesising_leaves_no_split_json_and_a_rerun_completes(synth_raw, tmp_path, capsys):
    out = tmp_path / "synth"
    dataset = out / "mmimdb" / "dataset"
    proc = start_in_own_group(
        [
            "synth",
            "--out",
            str(out),
            "--movies",
            str(NUM_MOVIES),
            "--seed",
            str(SEED),
            "--defect-rate",
            str(DEFECT_RATE),
            "--workers",
            "2",
        ],
        tmp_path / "killed.log",
    )
    kill_group_when(proc, lambda: dataset.is_dir() and len(list(dataset.glob("*.jpeg"))) >= 20)

    assert not (out / "mmimdb" / "split.json").exists()
    # What a kill in the middle of one atomic write leaves (rare to hit by timing alone).
    (dataset / ".0000042.jpeg.k1ll3d.tmp").write_bytes(b"\xff\xd8 half a poster")
    assert main(["shard", "--raw", str(out), "--out", str(tmp_path / "set")]) == 2
    err = capsys.readouterr().err
    assert f"{out / 'split.json'}: missing" in err
    assert len(error_lines(err)) == 1

    root = generate_dataset(out, NUM_MOVIES, seed=SEED, defect_rate=DEFECT_RATE, workers=2)
    assert temp_files(root) == []

    def tree(directory: Path) -> dict[str, bytes]:
        return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}

    assert tree(root) == tree(synth_raw)  # the same dataset as one uninterrupted run


# --------------------------------------------------------------------------- full disk


LIMITED_CLI = textwrap.dedent("""
    import resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death, as on a full disk
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    from mmimdb_dist.cli import main
    sys.exit(main(sys.argv[2:]))
""")


def assert_failed_write_left_no_trace(out: Path, stderr: str, reason: str) -> None:
    assert "Traceback" not in stderr
    (line,) = error_lines(stderr)
    assert line.startswith("mmimdb-dist shard: error: ")
    assert f"{out}{os.sep}" in line
    assert reason in line
    assert "re-run" in line
    assert not (out / MANIFEST_NAME).exists()
    assert temp_files(out) == []
    assert all(tar_is_whole(p) for p in out.glob("*.tar"))


def test_file_size_limit_while_sharding_is_one_error_line_and_no_torn_file(synth_raw, tmp_path):
    out = tmp_path / "set"
    shard_dataset(shard_config(synth_raw, out, short_side=24, workers=1))  # an earlier, complete set
    proc = subprocess.run(
        [sys.executable, "-c", LIMITED_CLI, "16384", *shard_args(synth_raw, out, 96, 6)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert_failed_write_left_no_trace(out, proc.stderr, "File too large")
    assert any(str(out / name) in proc.stderr for name in ("train-", "dev-", "test-"))
    assert any(".tar: cannot write" in line for line in error_lines(proc.stderr))

    shard_dataset(shard_config(synth_raw, out, short_side=96))  # room again: the re-run completes
    assert verify_shards(out) == []
    assert temp_files(out) == []
    assert_every_kept_movie_once(synth_raw, out)


@contextlib.contextmanager
def small_tmpfs(mount_point: Path, size: str) -> Iterator[Path]:
    """A real filesystem of `size`, where mounting one is allowed (root); skips otherwise."""
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({mounted.stderr.strip()}); the file size limit tests cover the same code path"
        )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def test_full_tmpfs_while_sharding_is_one_error_line_and_no_torn_file(synth_raw, tmp_path):
    """The same through a real ENOSPC."""
    with small_tmpfs(tmp_path / "small_disk", "256k") as disk:
        out = disk / "set"
        proc = subprocess.run(CLI + shard_args(synth_raw, out, 64, 6), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2, proc.stderr
        assert_failed_write_left_no_trace(out, proc.stderr, "No space left on device")


@pytest.fixture(scope="module")
def archive() -> bytes:
    return mmimdb_tar_gz()  # about 120 kB that gzip cannot shrink


def download_args(server: ArchiveServer, to: Path, payload: bytes) -> list[str]:
    return [
        "download",
        "--to",
        str(to),
        "--url",
        server.url,
        "--sha256",
        hashlib.sha256(payload).hexdigest(),
        "--retries",
        "3",
    ]


def test_size_limit_while_downloading_stops_at_once_and_the_rerun_resumes(archive, tmp_path):
    with ArchiveServer(archive) as server:
        proc = subprocess.run(
            [sys.executable, "-c", LIMITED_CLI, "50000", *download_args(server, tmp_path, archive)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        (line,) = error_lines(proc.stderr)
        part = tmp_path / "mmimdb.tar.gz.part"
        assert f"{part}: cannot write (File too large)" in line
        assert "run again to resume" in line
        assert len(server.requests) == 1  # a full disk is not retried like a network error
        kept = part.stat().st_size
        assert 0 < kept <= 50000
        assert f"{kept} bytes kept" in line
        assert not (tmp_path / "mmimdb").exists()

        raw = fetch_mmimdb(
            tmp_path, url=server.url, sha256=hashlib.sha256(archive).hexdigest(), retries=0, progress=False
        )
        assert server.requests[-1]["Range"] == f"bytes={kept}-"
    assert (tmp_path / "mmimdb.tar.gz").read_bytes() == archive
    assert read_split(raw) == {"train": ["0000001"], "dev": ["0000002"], "test": []}


def test_download_to_a_disk_too_small_is_refused_before_writing(archive, tmp_path, capsys):
    with small_tmpfs(tmp_path / "small_disk", "64k") as disk:
        with ArchiveServer(archive) as server:
            assert main(download_args(server, disk, archive)) == 2
        (line,) = error_lines(capsys.readouterr().err)
        assert f"{disk}: needs 0.1" in line
        assert "MB more, only 0.0" in line
        assert "MB free" in line
        assert [p.name for p in disk.iterdir() if p.stat().st_size] == []  # nothing filled it
        assert not (disk / "mmimdb.tar.gz").exists()


def test_truncated_archive_is_refused_and_extracts_nothing(archive, tmp_path):
    with ArchiveServer(archive[: len(archive) // 2]) as server, pytest.raises(DownloadError) as error:
        fetch_mmimdb(
            tmp_path,
            url=server.url,
            sha256=hashlib.sha256(archive[: len(archive) // 2]).hexdigest(),
            retries=0,
            progress=False,
        )
    assert f"{tmp_path / 'mmimdb.tar.gz'}: cannot extract" in str(error.value)
    assert not (tmp_path / "mmimdb").exists()


# --------------------------------------------------------------------------- raw data, end to end


def test_bad_raw_movies_are_skipped_and_counted_by_the_shard_command(tmp_path, capsys):
    movies = {
        "0000001": {},
        "0000002": {"poster": "png"},
        "0000003": {"poster": "CMYK"},
        "0000004": {"poster": "L"},
        "0000005": {"plot": "A plot given as a string."},
        "0000006": {"raw_json": b'{"plot": ["x"], "genres": '},
        "0000007": {"raw_json": '{"plot": ["caf\u00e9"], "genres": ["Drama"]}'.encode("latin-1")},
        "0000008": {"plot": []},
        "0000009": {"genres": ["Adult", "Talk-Show"]},
        "0000010": {"poster": "empty"},
        "0000011": {"poster": "truncated", "size": (200, 300)},
        "0000012": {"raw_json": b'{"title": "No plot key", "genres": ["Drama"]}'},
    }
    splits = {"train": [*list(movies)[:8], "0000099"], "dev": list(movies)[8:], "test": []}
    raw = make_raw(tmp_path, movies, splits)  # 0000099 is listed but has no files at all
    out = tmp_path / "set"
    assert main(shard_args(raw, out, 32, 4)) == 0
    printed = capsys.readouterr().out
    assert "skipped 8:" in printed
    assert "repaired (kept): plot_was_string 1" in printed

    manifest = load_manifest(out)
    assert manifest.skipped_counts == {
        "bad_json": 1,
        "bad_poster": 2,
        "missing_json": 1,
        "no_kept_genre": 1,
        "no_plot": 2,
        "not_utf8": 1,
    }
    by_id = {m.id: m for m in manifest.skipped}
    assert by_id["0000099"].file == "dataset/0000099.json"
    assert by_id["0000012"].detail == "key 'plot' missing"
    assert "not valid JSON" in by_id["0000006"].detail
    assert "not UTF-8" in by_id["0000007"].detail
    assert "0 bytes" in by_id["0000010"].detail
    assert by_id["0000011"].reason == "bad_poster"
    assert "does not decode" in by_id["0000011"].detail
    keys = shard_keys(out)
    assert sorted(keys["train"]) == ["0000001", "0000002", "0000003", "0000004", "0000005"]
    assert keys["dev"] == []
    assert keys["test"] == []
    assert verify_shards(out) == []

    assert main([*shard_args(raw, tmp_path / "strict", 32, 4), "--strict"]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert str(raw / "dataset" / "0000006.json") in line
    assert "strict mode" in line


def test_links_out_of_the_raw_folder_and_non_files_are_skipped_and_counted(tmp_path, capsys):
    """A metadata file or poster that is a symbolic link out of the raw folder never reaches the
    shards; a FIFO under a movie's name is refused before it is opened (reading it would block
    forever); links inside the raw folder are followed; a JSON nested 100,000 deep is a bad JSON."""

    movies = {f"00000{i:02d}": {} for i in range(1, 7)}
    raw = make_raw(tmp_path, movies, {"train": list(movies), "dev": [], "test": []})
    dataset = raw / "dataset"
    outside = tmp_path / "outside"
    write_movie(outside, "0000099", plot=("SECRET PLOT OUTSIDE",))
    (dataset / "0000001.json").unlink()
    (dataset / "0000001.json").symlink_to(outside / "dataset" / "0000099.json")
    (dataset / "0000002.jpeg").unlink()
    (dataset / "0000002.jpeg").symlink_to(outside / "dataset" / "0000099.jpeg")
    (dataset / "0000003.json").unlink()
    os.mkfifo(dataset / "0000003.json")
    (dataset / "0000004.json").write_text('{"plot": ' + "[" * 100_000 + "]" * 100_000 + "}")
    shared = raw / "shared.json"  # a link that stays inside the raw folder is fine
    (dataset / "0000005.json").rename(shared)
    (dataset / "0000005.json").symlink_to(shared)

    out = tmp_path / "set"
    assert main(shard_args(raw, out, 32, 4)) == 0
    manifest = load_manifest(out)
    assert manifest.skipped_counts == {
        "link_outside_raw_dir": 1,
        "bad_poster": 1,
        "not_a_regular_file": 1,
        "bad_json": 1,
    }
    by_id = {m.id: m for m in manifest.skipped}
    assert "outside the raw folder" in by_id["0000001"].detail
    assert "outside the raw folder" in by_id["0000002"].detail
    assert by_id["0000002"].reason == "bad_poster"
    assert "nested too deeply" in by_id["0000004"].detail
    assert sorted(shard_keys(out)["train"]) == ["0000005", "0000006"]
    for shard in out.glob("*.tar"):
        assert b"SECRET PLOT OUTSIDE" not in shard.read_bytes()

    # Kept as plot-only (require_poster false), the linked poster is still never read.
    plot_only = tmp_path / "plot-only"
    assert main([*shard_args(raw, plot_only, 32, 4), "--set", "shard.require_poster=false"]) == 0
    assert "0000002" in shard_keys(plot_only)["train"]
    poster_bytes = (outside / "dataset" / "0000099.jpeg").read_bytes()[-64:]
    for shard in plot_only.glob("*.tar"):
        assert poster_bytes not in shard.read_bytes()


def test_names_from_a_url_or_a_config_stay_in_their_folder(archive, tmp_path, capsys):
    """A URL whose path escapes with encoded ../ saves under its last name inside --to; one that
    names '..' is refused; a run name that leaves output_dir is one error line."""
    target = tmp_path / "a" / "b" / "to"
    with ArchiveServer(archive) as server:
        base = server.url.rsplit("/", 1)[0]
        hostile = f"{base}/..%2F..%2F..%2Fescaped.tar.gz"
        raw = fetch_mmimdb(target, url=hostile, sha256=hashlib.sha256(archive).hexdigest(), retries=0, progress=False)
        assert (target / "escaped.tar.gz").read_bytes() == archive
        assert raw.is_relative_to(target)
        assert sorted(p.name for p in tmp_path.rglob("escaped*")) == ["escaped.tar.gz"]
        assert (
            main(
                [
                    "download",
                    "--to",
                    str(target),
                    "--url",
                    f"{base}/%2E%2E",
                    "--sha256",
                    hashlib.sha256(archive).hexdigest(),
                ]
            )
            == 2
        )
    (line,) = error_lines(capsys.readouterr().err)
    assert "its path ends in '..', not a file name" in line
    for name in ("/etc/cron.d", "../../x", "a/../../b"):
        assert (
            main(
                [
                    "train",
                    "--config",
                    str(REPO_CONFIGS / "synth_early_fusion.yaml"),
                    "--set",
                    f"name={name}",
                    "--set",
                    f"output_dir={tmp_path / 'runs'}",
                ]
            )
            == 2
        )
        (line,) = error_lines(capsys.readouterr().err)
        assert line.endswith(
            f"name: {name!r}: expected a relative path inside output_dir "
            "(no leading / or ~, no empty, '.' or '..' parts)"
        )
    assert not (tmp_path / "runs").exists()


def _held_lock(folder: Path, name: str = ".mmimdb-dist.lock"):
    """Hold the lock a running command would hold on `folder` (this process stands in for it)."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / name, "a")  # noqa: SIM115 (returned: the caller holds the lock open)
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return handle


def test_shard_refuses_a_foreign_folder_a_file_and_a_folder_in_use(tmp_path, capsys):
    """The user's files are never swept by `shard --out`; a second shard run into a folder that
    one is writing fails at once; after a run the folder is a shard set, which a re-run replaces."""
    raw = make_raw(tmp_path, {f"00000{i:02d}": {} for i in range(1, 7)})
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    (mine / "train-000000.tar").write_bytes(b"my own tar, not a shard")
    assert main(shard_args(raw, mine, 32, 4)) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert line.endswith(
        f"--out {mine}: holds files that are not a shard set (notes.txt); choose an empty or "
        "new folder (nothing there was changed)"
    )
    assert (mine / "notes.txt").read_text() == "keep me"
    assert (mine / "train-000000.tar").read_bytes() == b"my own tar, not a shard"

    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    assert main(shard_args(raw, a_file, 32, 4)) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert line.endswith(f"--out {a_file}: is a file; expected a folder for a shard set")

    busy = tmp_path / "busy"
    holder = _held_lock(busy)
    try:
        assert main(shard_args(raw, busy, 32, 4)) == 2
        (line,) = error_lines(capsys.readouterr().err)
        assert f"--out {busy}: another mmimdb-dist shard is writing there" in line
        assert sorted(p.name for p in busy.iterdir()) == [".mmimdb-dist.lock"]
    finally:
        holder.close()
    assert main(shard_args(raw, busy, 32, 4)) == 0  # released: it runs
    assert main(shard_args(raw, busy, 32, 4)) == 0  # and a shard set may be resharded in place
    assert verify_shards(busy) == []


def test_shard_onto_a_read_only_filesystem_is_one_line(tmp_path, capsys):
    raw = make_raw(tmp_path, {"0000001": {}, "0000002": {}, "0000003": {}})
    with small_tmpfs(tmp_path / "ro", "64k") as disk:
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        assert main(shard_args(raw, disk / "set", 32, 4)) == 2
        (line,) = error_lines(capsys.readouterr().err)
        assert f"--out {disk / 'set'}: cannot create the folder (Read-only file system)" in line
        assert main(shard_args(raw, disk, 32, 4)) == 2
        (line,) = error_lines(capsys.readouterr().err)
        assert f"--out {disk}: not writable (read-only filesystem or permissions)" in line
        subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)


def test_empty_dev_split_warns_when_sharding_and_stops_training_before_its_first_step(tmp_path, capsys, caplog):
    movies = {f"00000{i:02d}": {} for i in range(1, 9)}
    raw = make_raw(tmp_path, movies, {"train": list(movies)[:6], "dev": [], "test": list(movies)[6:]})
    out = tmp_path / "set"
    with caplog.at_level("WARNING"):
        assert main(shard_args(raw, out, 32, 4)) == 0
    assert any("split 'dev' has no usable sample" in r.getMessage() for r in caplog.records)
    runs = tmp_path / "runs"
    assert (
        main(
            [
                "train",
                "--config",
                str(REPO_CONFIGS / "synth_cnn_image.yaml"),
                "--set",
                f"loader.shards_dir={out}",
                "--set",
                f"output_dir={runs}",
                "--set",
                "loader.num_workers=0",
            ]
        )
        == 2
    )
    (line,) = error_lines(capsys.readouterr().err)
    assert line.endswith(
        f"{out / MANIFEST_NAME}: the dev split holds no sample; a run trains on train, selects "
        "its checkpoint on dev and reports on test, so each needs samples"
    )
    assert not any(runs.rglob("checkpoints"))


def test_train_and_cache_features_refuse_foreign_or_busy_folders(tmp_path, capsys):
    movies = {f"00000{i:02d}": {} for i in range(1, 10)}
    raw = make_raw(tmp_path, movies)
    shards = tmp_path / "set"
    assert main(shard_args(raw, shards, 32, 4)) == 0
    config = [
        "--config",
        str(REPO_CONFIGS / "synth_cnn_image.yaml"),
        "--set",
        f"loader.shards_dir={shards}",
        "--set",
        "loader.num_workers=0",
        "--set",
        f"output_dir={tmp_path / 'runs'}",
        "--set",
        "name=run",
    ]
    run_dir = tmp_path / "runs" / "run"
    run_dir.mkdir(parents=True)
    (run_dir / "thesis.tex").write_text("keep me")
    assert main(["train", *config]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert line.endswith(
        f"run folder {run_dir}: holds files that are not a run folder (thesis.tex); choose an "
        "empty or new folder (nothing there was changed)"
    )
    (run_dir / "thesis.tex").unlink()
    holder = _held_lock(run_dir)
    try:
        assert main(["train", *config]) == 2
        (line,) = error_lines(capsys.readouterr().err)
        assert f"run folder {run_dir}: another mmimdb-dist train is writing there" in line
    finally:
        holder.close()

    features = tmp_path / "features"
    features.mkdir()
    (features / "results.csv").write_text("keep me")
    assert main(["cache-features", *config, "--out", str(features), "--device", "cpu"]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert line.endswith(
        f"--out {features}: holds files that are not a features set (results.csv); choose an "
        "empty or new folder (nothing there was changed)"
    )


def test_output_folders_are_judged_by_their_content_not_their_file_names(tmp_path, capsys):
    """A folder holding a shard set's file names is not therefore a shard set: the user's own
    manifest.json, config.yaml and train-000007.tar are refused by `shard --out`, a shard set by
    `cache-features --out`, and each is left byte for byte. The same command finishes a folder
    it was interrupted in, and a shard set made before commands recorded themselves is still
    recognised by its manifest."""
    raw = make_raw(tmp_path, {f"00000{i:02d}": {} for i in range(1, 10)})
    mine = tmp_path / "mine"
    mine.mkdir()
    files = {
        "manifest.json": b'{"my": "precious manifest"}',
        "config.yaml": b"mine: true\n",
        "train-000007.tar": b"my own tar, not a shard",
    }
    for name, data in files.items():
        (mine / name).write_bytes(data)
    assert main(shard_args(raw, mine, 32, 4)) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert line.endswith(
        f"--out {mine}: holds config.yaml, manifest.json, train-000007.tar, but not a shard set that "
        "mmimdb-dist shard wrote (no record of the command, and no manifest of its own); choose an "
        "empty or new folder (nothing there was changed)"
    )
    assert {name: (mine / name).read_bytes() for name in files} == files

    shards, other = tmp_path / "set", tmp_path / "other-set"
    assert main(shard_args(raw, shards, 32, 4)) == 0
    assert main(shard_args(raw, other, 32, 4)) == 0
    before = {p.name: p.read_bytes() for p in other.iterdir()}
    config = ["--config", str(REPO_CONFIGS / "synth_cnn_image.yaml"), "--set", f"loader.shards_dir={shards}"]
    assert main(["cache-features", *config, "--out", str(other), "--device", "cpu"]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert line.endswith(
        f"--out {other}: holds the output of `mmimdb-dist shard`, not a features set; choose an empty "
        "or new folder (nothing there was changed)"
    )
    assert {p.name: p.read_bytes() for p in other.iterdir()} == before

    (other / MANIFEST_NAME).unlink()  # a shard run killed before its manifest: the next one finishes it
    assert main(shard_args(raw, other, 32, 4)) == 0
    (other / ".mmimdb-dist.lock").write_text("")  # a shard set from before the record: its manifest says
    assert main(shard_args(raw, other, 32, 4)) == 0
    assert verify_shards(other) == []


# --------------------------------------------------------------------------- damaged shard sets


class CharEncoder:
    """A tokenizer-free TokenEncoder: one id per character."""

    pad_id = 0

    def encode(self, text: str, max_length: int) -> list[int]:
        return [1 + ord(c) % 200 for c in text[:max_length]]


def test_loader_counts_the_samples_of_a_missing_shard(synth_raw, tmp_path, caplog):
    out = tmp_path / "set"
    manifest = shard_dataset(shard_config(synth_raw, out, workers=1))
    lost = manifest.split("test").shards[1]
    (out / lost.name).unlink()
    assert any("missing (listed in manifest.json" in p and lost.name in p for p in verify_shards(out))

    cfg = LoaderConfig(batch_size=4, eval_batch_size=8, num_workers=0, image_size=32)
    loader = build_eval_loader(cfg, load_manifest(out), "test", CharEncoder(), rank=0, world_size=1)
    seen = [movie_id for batch in loader for movie_id in batch["ids"]]
    expected = manifest.split("test").num_samples - lost.num_samples
    assert len(seen) == len(set(seen)) == expected
    assert loader.skipped == lost.num_samples
    assert lost.name in caplog.text


def test_train_loader_with_every_shard_lost_is_an_error_not_a_hang(synth_raw, tmp_path):
    """An endless train stream over shards that give nothing would spin forever (and leave
    the other ranks waiting in an all-reduce): it stops with an error after one full pass."""
    out = tmp_path / "set"
    shard_dataset(shard_config(synth_raw, out, workers=1))
    manifest = load_manifest(out)
    for path in manifest.shard_paths("train"):
        path.unlink()
    cfg = LoaderConfig(batch_size=4, num_workers=0, image_size=32, shuffle_buffer=8)
    loader = build_train_loader(cfg, manifest, CharEncoder(), rank=0, world_size=1, epoch=0, seed=0)
    with pytest.raises(DataError, match=r"train worker 0 of rank 0 read no usable sample") as error:
        list(loader)
    assert str(out) in str(error.value)


def test_train_batch_whose_every_poster_fails_is_an_error_not_a_short_rank(synth_raw, tmp_path):
    """A train batch with no decodable poster cannot be skipped: that rank would run one
    batch short and the others would wait for it in an all-reduce."""
    out = tmp_path / "set"
    shard_dataset(shard_config(synth_raw, out, workers=1))
    manifest = load_manifest(out)
    for path in manifest.shard_paths("train"):
        with tarfile.open(path) as tar:
            members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
        with tarfile.open(path, "w") as tar:
            for member, data in members:
                if member.name.endswith(".jpg"):
                    data = b"\xff\xd8\xff\xe0 not a poster" * 8
                    member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
    cfg = LoaderConfig(batch_size=4, num_workers=0, image_size=32, shuffle_buffer=8)
    loader = build_train_loader(cfg, manifest, CharEncoder(), rank=0, world_size=1, epoch=0, seed=0)
    with pytest.raises(DataError, match=r"no poster of a train batch decodes.*shard --verify"):
        next(iter(loader))


def test_manifest_that_is_not_json_is_named_by_load_and_verify(synth_raw, tmp_path):
    out = tmp_path / "set"
    shard_dataset(shard_config(synth_raw, out, workers=1))
    text = (out / MANIFEST_NAME).read_text()
    (out / MANIFEST_NAME).write_text(text[: len(text) // 2])
    with pytest.raises(DataError, match=r"manifest\.json: not valid JSON"):
        load_manifest(out)
    verify = subprocess.run([*CLI, "shard", "--verify", str(out)], capture_output=True, text=True, timeout=120)
    assert verify.returncode == 1
    assert f"{out / MANIFEST_NAME}: not valid JSON" in verify.stdout


# --------------------------------------------------------------------------- config at the CLI


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("shard.poster_size=64", "shard.poster_size"),
        ("shard.workers=two", "shard.workers: expected int"),
        ("model.name=transformer_fusion", "model.name"),
        ("loss.name=hinge", "loss.name"),
        ("seed=-1", "seed: expected an integer in [0, 2**32), got -1"),
        ("train.seed=4294967296", "train.seed: expected an integer in [0, 2**32)"),
        ("train.lr=.nan", "train.lr: expected a finite number, got nan"),
        ("train.weight_decay=inf", "train.weight_decay: expected a finite number"),
        ("train.max_grad_norm=.inf", "train.max_grad_norm: expected a finite number"),
        ("loader.max_text_length=512000", "loader.max_text_length: 512000 is more than 16384 tokens"),
    ],
)
def test_config_mistakes_are_one_line_naming_the_key(tmp_path, capsys, setting, named):
    assert main(["shard", "--raw", str(tmp_path), "--out", str(tmp_path / "s"), "--set", setting]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert named in line
    assert not (tmp_path / "s").exists()


def test_unreadable_configs_and_a_bad_log_level_are_one_line(tmp_path, capsys):
    """A folder, a non-UTF-8 file and a key written twice: one line each, exit 2."""
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    twice = tmp_path / "twice.yaml"
    twice.write_text("train:\n  lr: 0.1\n  epochs: 3\n  lr: 0.001\n")
    cases = [
        (tmp_path, f"config file {tmp_path}: is a folder; expected a YAML file"),
        (latin, f"config file {latin}: not UTF-8 text"),
        (
            twice,
            f"{twice}: line 4: not valid YAML (safe loader; Python tags are refused): key 'lr' "
            "written twice (lines 2 and 4); keep one",
        ),
    ]
    for config, expected in cases:
        assert main(["train", "--config", str(config)]) == 2
        (line,) = error_lines(capsys.readouterr().err)
        assert expected in line, line
    result = subprocess.run([*CLI, "--log-level", "LOUD", "train"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "argument --log-level: invalid choice: 'LOUD'" in result.stderr


def test_split_json_with_a_key_besides_train_dev_test_is_refused(tmp_path):

    root = tmp_path / "mmimdb"
    write_split(root, {"train": ["0000001"], "dev": [], "test": [], "val": ["0000002"]})
    with pytest.raises(
        DataError,
        match="split.json: unexpected key 'val' \\(expected exactly the keys train, "
        "dev, test; move its ids into one of them\\)",
    ):
        read_split(root)


def test_yaml_with_a_python_tag_is_refused_at_the_cli(tmp_path, capsys):
    marker = tmp_path / "ran"
    config = tmp_path / "exp.yaml"
    config.write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\n")
    assert main(["shard", "--config", str(config), "--raw", str(tmp_path), "--out", str(tmp_path / "s")]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert str(config) in line
    assert "not valid YAML" in line
    assert not marker.exists()


# --------------------------------------------------------------------------- the catalogue


def test_every_test_named_in_the_reliability_catalogue_exists():
    """docs/RELIABILITY.md claims a test for each fault it lists: each must be a real test."""
    import ast
    import re

    repo = Path(__file__).resolve().parents[1]
    text = (repo / "docs" / "RELIABILITY.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", text))
    assert len(named) >= 25
    missing = []
    for file, test in sorted(named):
        tree = ast.parse((repo / file).read_text(encoding="utf-8"))
        if test not in {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}:
            missing.append(f"{file}::{test}")
    assert missing == []
