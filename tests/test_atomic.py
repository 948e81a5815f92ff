import errno
import os
import subprocess
import sys
import textwrap

import pytest

from mmimdb_dist.atomic import atomic_open, atomic_write_json, atomic_write_text


def test_replaces_whole_file(tmp_path):
    target = tmp_path / "sub" / "a.json"
    atomic_write_json(target, {"b": 1, "a": [1, 2]})
    assert target.read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert sorted(os.listdir(target.parent)) == ["a.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # readable like a plain open() file


def test_error_mid_write_keeps_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "ckpt.bin"
    target.write_bytes(b"old")

    def write_then_fail() -> None:
        with atomic_open(target, "wb") as handle:
            handle.write(b"partial")
            raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        write_then_fail()
    assert target.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["ckpt.bin"]


def test_file_size_limit_mid_write_leaves_nothing_under_the_final_name(tmp_path):
    """A write that hits a size limit (as on a full disk) fails loudly and leaves no file behind."""
    script = textwrap.dedent(f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        from mmimdb_dist.atomic import atomic_write_bytes
        try:
            atomic_write_bytes({str(tmp_path / "out" / "shard.tar")!r}, b"x" * 100_000)
        except OSError as exc:
            print("errno", exc.errno)
            sys.exit(3)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.strip() == f"errno {errno.EFBIG}"
    assert os.listdir(tmp_path / "out") == []


def test_read_modes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="writes only"), atomic_open(tmp_path / "x", "rb"):
        pass
