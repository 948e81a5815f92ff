"""Checkpoint faults of `mmimdb-dist train`: SIGKILL mid-save, truncated or corrupt files, a
checkpoint of another model or world size, a full disk mid-save or mid-log, and train-section user
errors.

Every run is a real CLI process (see dist_scripts/train_fixtures.py). One base run with step
checkpoints is trained once; each test damages its own copy of that run folder.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from dist_scripts.ports import free_port
from dist_scripts.train_fixtures import RUN_TIMEOUT_S, env, run_train, tiny_config, train_command, write_config

from mmimdb_dist.run.layout import METRICS_LOG
from mmimdb_dist.run.metrics_log import read_records

pytestmark = pytest.mark.slow

EPOCHS = 2


def error_line(result: subprocess.CompletedProcess) -> str:
    """The one error line of a failed CLI run (exit 2, no traceback)."""
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    marker = "mmimdb-dist train: error: "
    # A tqdm bar may precede it on the same line (progress goes to stderr without a newline).
    lines = [line[line.index(marker) :] for line in result.stderr.splitlines() if marker in line]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


def cli_in_process(capsys, *argv: str) -> subprocess.CompletedProcess:
    """The CLI entry point run here, for errors raised before any training starts."""
    from mmimdb_dist.cli import main

    returncode = main(list(argv))
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(list(argv), returncode, captured.out, captured.err)


@pytest.fixture(scope="module")
def base(shards, tmp_path_factory) -> tuple[dict, Path]:
    """(config data, run folder) of a finished 2-epoch run with a checkpoint every 5 steps, 3 kept."""
    root = tmp_path_factory.mktemp("checkpoint-base")
    data = tiny_config(shards, root / "runs", "base", epochs=EPOCHS, checkpoint_every_steps=5, keep_checkpoints=3)
    run_train(write_config(root / "base.yaml", data))
    return data, root / "runs" / "base"


def copy_run(base: tuple[dict, Path], tmp_path: Path, **train) -> tuple[Path, Path]:
    """The base run folder copied under tmp_path, and a config for it: (config file, run folder)."""
    data, run_dir = base
    data = yaml.safe_load(yaml.safe_dump(data))
    data["output_dir"] = str(tmp_path / "runs")
    data["train"].update(train)
    copy = tmp_path / "runs" / data["name"]
    shutil.copytree(run_dir, copy)
    (copy / "final_metrics.json").unlink()
    return write_config(tmp_path / "copy.yaml", data), copy


def checkpoints(run_dir: Path) -> list[Path]:
    from mmimdb_dist.run.checkpoints import complete_checkpoints

    return complete_checkpoints(run_dir / "checkpoints")


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- SIGKILL mid-save


def test_sigkill_while_a_checkpoint_is_written_leaves_the_previous_one_to_resume(shards, tmp_path):
    from mmimdb_dist.run.checkpoints import TrainerState
    from mmimdb_dist.run.files import verify_files
    from mmimdb_dist.run.layout import STATE_FILE

    data = tiny_config(shards, tmp_path / "runs", "killed", epochs=1, checkpoint_every_steps=1)
    # A wide fusion layer (some MB of weights and optimizer state) makes each save last long
    # enough to be caught in progress; the extra compute per batch is small.
    data["model"]["fusion"]["hidden"] = 1024
    config = write_config(tmp_path / "killed.yaml", data)
    run_dir = tmp_path / "runs" / "killed"
    checkpoints_dir = run_dir / "checkpoints"
    process = subprocess.Popen(
        train_command(config), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env(), cwd=tmp_path
    )
    caught: list[str] = []
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        # Poll without sleeping for a temp folder next to a complete checkpoint.
        while time.monotonic() < deadline and process.poll() is None and not caught:
            try:
                names = os.listdir(checkpoints_dir)
            except FileNotFoundError:
                continue
            if any(name.startswith("step-") for name in names):
                caught = [name for name in names if name.startswith(".tmp-")]
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    assert caught, "the run ended before a save was caught in progress"
    assert process.returncode == -signal.SIGKILL

    # The half-written save is only a temp folder; every complete checkpoint verifies.
    assert (checkpoints_dir / caught[0]).is_dir()
    complete = checkpoints(run_dir)
    assert complete
    assert all(not path.name.startswith(".") for path in complete)
    for path in complete:
        verify_files(path)
    previous = TrainerState.read(complete[-1] / STATE_FILE)

    # Resumed without step checkpoints (a config change it warns about): only the end-of-run save.
    run_train(config, "--resume", "auto", "--set", "train.checkpoint_every_steps=0")
    assert (run_dir / "final_metrics.json").is_file()
    assert not [p for p in checkpoints_dir.iterdir() if p.name.startswith(".")]
    newest = TrainerState.read(checkpoints(run_dir)[-1] / STATE_FILE)
    assert newest.step > previous.step
    assert newest.epoch == 0
    steps = [(r["step"], r["batches_seen"]) for r in read_records(run_dir / METRICS_LOG, "train")]
    assert steps
    assert len(steps) == len(set(steps))


# --------------------------------------------------------------------------- damaged checkpoints


@pytest.mark.parametrize(("file", "damage"), [("model.safetensors", "truncate"), ("optimizer.bin", "flip")])
def test_damaged_checkpoint_file_is_named_on_resume(base, tmp_path, damage, file):
    config, run_dir = copy_run(base, tmp_path)
    newest = checkpoints(run_dir)[-1]
    path = newest / file
    content = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(content[: len(content) // 2])
    else:
        middle = len(content) // 2
        path.write_bytes(content[:middle] + bytes([content[middle] ^ 0xFF]) + content[middle + 1 :])
    before = tree(run_dir / "checkpoints")

    line = error_line(run_train(config, "--resume", "auto", check=False))
    assert str(path) in line
    assert ("truncated" if damage == "truncate" else "corrupted") in line
    assert "earlier checkpoint" in line
    assert tree(run_dir / "checkpoints") == before  # nothing removed or rewritten


def test_missing_trainer_state_makes_a_checkpoint_incomplete(base, tmp_path):
    from mmimdb_dist.run.checkpoints import resolve_resume
    from mmimdb_dist.run.layout import STATE_FILE

    config, run_dir = copy_run(base, tmp_path)
    *_, previous, newest = checkpoints(run_dir)
    (newest / STATE_FILE).unlink()

    # Named explicitly: refused, naming the missing file.
    line = error_line(run_train(config, "--resume", str(newest), check=False))
    assert str(newest) in line
    assert STATE_FILE in line
    # `auto` passes over it to the previous complete checkpoint (a resume from there runs to
    # the end: see the SIGKILL mid-save test above).
    assert checkpoints(run_dir)[-1] == previous
    assert resolve_resume("auto", run_dir / "checkpoints") == previous


def test_unreadable_or_foreign_trainer_state_is_named(base, tmp_path):
    from mmimdb_dist.errors import CheckpointError
    from mmimdb_dist.run.checkpoints import TrainerState
    from mmimdb_dist.run.layout import STATE_FILE

    state = tmp_path / STATE_FILE
    text = (checkpoints(base[1])[-1] / STATE_FILE).read_text()
    state.write_text(text[:20])
    with pytest.raises(CheckpointError, match="unreadable trainer state") as raised:
        TrainerState.read(state)
    assert str(state) in str(raised.value)
    state.write_text(text.replace('"world_size"', '"processes"'))
    with pytest.raises(CheckpointError, match="expected the keys") as raised:
        TrainerState.read(state)
    assert "world_size" in str(raised.value)
    assert "processes" in str(raised.value)


# --------------------------------------------------------------------------- checkpoints that do not fit


def test_checkpoint_of_another_model_is_refused_naming_the_tensor(base, tmp_path):
    config, run_dir = copy_run(base, tmp_path)
    data = yaml.safe_load(config.read_text())
    data["model"]["fusion"]["hidden"] = 48
    write_config(config, data)
    line = error_line(run_train(config, "--resume", "auto", check=False))
    weights = checkpoints(run_dir)[-1] / "inference" / "model.safetensors"
    assert str(weights) in line
    assert "another model" in line
    assert "[32" in line
    assert "[48" in line


def test_checkpoint_of_one_process_is_refused_under_two(base, tmp_path):
    config, run_dir = copy_run(base, tmp_path)
    launcher = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_ip",
        "127.0.0.1",
        "--main_process_port",
        str(free_port()),
        "-m",
        "mmimdb_dist.cli",
        "--log-level",
        "WARNING",
        "train",
        "--config",
        str(config),
        "--resume",
        "auto",
    ]
    before = tree(run_dir / "checkpoints")
    result = subprocess.run(launcher, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=env(), cwd=tmp_path)
    assert result.returncode != 0
    # Each rank says it once. The two processes share stderr, so a line of one may start
    # mid-line of the other (a progress bar, a warning): split on the marker, not on lines.
    messages = result.stderr.split("mmimdb-dist train: error: ")[1:]
    assert len(messages) == 2, result.stderr[-3000:]
    state = checkpoints(run_dir)[-1] / "trainer_state.json"
    assert all(str(state) in message and "world_size is 1, expected 2" in message for message in messages)
    assert tree(run_dir / "checkpoints") == before


# --------------------------------------------------------------------------- full disk


LIMITED_CLI = textwrap.dedent("""
    import resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death, as on a full disk
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    from mmimdb_dist.cli import main
    sys.exit(main(sys.argv[2:]))
""")


def test_full_disk_while_saving_reports_once_and_keeps_the_previous_checkpoints(base, tmp_path):
    config, run_dir = copy_run(base, tmp_path, epochs=EPOCHS + 1)
    newest = checkpoints(run_dir)[-1]
    largest = max((p for p in newest.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    before = tree(run_dir / "checkpoints")
    # Files of a checkpoint have the same sizes at every step: the largest no longer fits.
    limit = largest.stat().st_size - 1
    assert all(p.stat().st_size <= limit for p in newest.rglob("*") if p.is_file() and p != largest)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            LIMITED_CLI,
            str(limit),
            "--log-level",
            "WARNING",
            "train",
            "--config",
            str(config),
            "--resume",
            "auto",
        ],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env=env(),
        cwd=tmp_path,
    )
    line = error_line(result)
    assert "writing the checkpoint failed" in line
    assert "intact" in line
    assert str(run_dir / "checkpoints" / ".tmp-step-") in line
    assert not [p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".")]
    assert tree(run_dir / "checkpoints") == before  # no new checkpoint, the old ones untouched
    assert not (run_dir / "final_metrics.json").exists()


def test_full_disk_while_logging_stops_with_one_line_and_the_run_resumes_cleanly(base, tmp_path):
    import json

    config, run_dir = copy_run(base, tmp_path, epochs=EPOCHS + 1)
    log = run_dir / "metrics.jsonl"
    before = tree(run_dir / "checkpoints")
    # Room for the log as it is plus part of one line: the first new train record is torn.
    limit = log.stat().st_size + 40
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            LIMITED_CLI,
            str(limit),
            "--log-level",
            "WARNING",
            "train",
            "--config",
            str(config),
            "--resume",
            "auto",
        ],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env=env(),
        cwd=tmp_path,
    )
    line = error_line(result)
    assert str(log) in line, line
    assert "writing the training log failed" in line, line
    assert "File too large" in line, line
    assert str(checkpoints(run_dir)[-1]) in line
    assert "--resume auto" in line
    assert tree(run_dir / "checkpoints") == before  # it stopped before its next checkpoint
    assert not (run_dir / "final_metrics.json").exists()
    assert log.stat().st_size == limit  # the partial line that did fit

    run_train(config, "--resume", "auto")  # space is back
    records = [json.loads(line) for line in log.read_text().splitlines()]  # no torn line left
    steps = [r["step"] for r in records if r["type"] == "train"]
    assert steps == sorted(set(steps))
    assert records[-1]["type"] == "final"


# --------------------------------------------------------------------------- user errors


@pytest.mark.parametrize(
    ("train", "expected"),
    [
        ({"lrr": 0.1}, ["unknown config key 'train.lrr'", "did you mean 'lr'"]),
        ({"epochs": "two"}, ["train.epochs: expected int, got 'two'"]),
        ({"schedule": "step"}, ["train.schedule: expected one of 'cosine', 'linear', 'constant', got 'step'"]),
    ],
)
def test_train_section_mistakes_are_one_line(shards, tmp_path, capsys, train, expected):
    config = write_config(tmp_path / "bad.yaml", tiny_config(shards, tmp_path / "runs", "bad", **train))
    line = error_line(cli_in_process(capsys, "train", "--config", str(config)))
    assert str(config) in line, line
    assert all(fragment in line for fragment in expected), line
    assert not (tmp_path / "runs").exists()


def test_missing_shards_folder_is_one_line(shards, tmp_path):
    config = write_config(
        tmp_path / "noshards.yaml", tiny_config(tmp_path / "no-shards", tmp_path / "runs", "noshards")
    )
    line = error_line(run_train(config, check=False))
    assert str(tmp_path / "no-shards") in line


def test_resume_path_that_is_not_a_checkpoint_is_one_line(base, tmp_path, capsys):
    # A run folder is not a checkpoint folder (a missing path: tests/test_train.py).
    config, run_dir = copy_run(base, tmp_path)
    line = error_line(cli_in_process(capsys, "train", "--config", str(config), "--resume", str(run_dir)))
    assert str(run_dir) in line
    assert "trainer_state.json" in line


def test_an_rng_state_that_does_not_load_is_a_warning_not_a_silent_inexact_resume(base, tmp_path):
    """Accelerate resumes without the RNG state when its file does not load (and says so only at
    INFO): the resumed run then differs from an uninterrupted one, so the trainer warns."""
    import json as json_module

    config, run_dir = copy_run(base, tmp_path)
    newest = checkpoints(run_dir)[-1]
    rng_file = newest / "random_states_0.pkl"
    rng_file.write_bytes(b"not a pickle of RNG states")
    listing = json_module.loads((newest / "files.json").read_text())
    del listing["random_states_0.pkl"]  # a file the listing does not vouch for (an older release's)
    (newest / "files.json").write_text(json_module.dumps(listing))
    result = run_train(config, "--resume", "auto")
    warnings = [line for line in result.stderr.splitlines() if "RNG state cannot be loaded" in line]
    assert len(warnings) == 1, result.stderr[-2000:]
    assert " WARNING " in warnings[0]
    assert str(rng_file) in warnings[0]
    assert "will NOT repeat an uninterrupted one exactly" in warnings[0]
    assert (run_dir / "final_metrics.json").is_file()
