"""Defaults a cluster user relies on: precision and DDP settings chosen from the hardware and the
model, a deterministic thread count, and progress that reads well outside a terminal."""

from __future__ import annotations

import logging
import os
import re
import subprocess
from pathlib import Path

import pytest
import torch
from dist_scripts.train_fixtures import RUN_TIMEOUT_S, env, tiny_config, train_shards, write_config

from mmimdb_dist.progress import PlainProgress, progress
from mmimdb_dist.schema import ExperimentConfig, load_config
from mmimdb_dist.train.accelerator import (
    available_cpus,
    choose_num_threads,
    launcher_conflict,
    local_device_capability,
    needs_unused_parameter_search,
    precision_for_capability,
    resolve_mixed_precision,
)

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- precision


def test_auto_precision_follows_the_compute_capability_of_the_ranks_device(monkeypatch):
    if not torch.cuda.is_available():
        assert local_device_capability() is None
        assert resolve_mixed_precision("auto", False, local_device_capability()) == "no"  # slower on CPUs
    # bf16 tensor cores from Ampere (8.0) on; V100 (7.0) and T4 (7.5) emulate bf16, which
    # torch.cuda.is_bf16_supported() counts as support: fp16 with loss scaling there.
    for capability, expected in (
        ((7, 0), "fp16"),
        ((7, 5), "fp16"),
        ((8, 0), "bf16"),
        ((8, 6), "bf16"),
        ((9, 0), "bf16"),
        ((10, 0), "bf16"),
        (None, "no"),
    ):
        assert precision_for_capability(capability) == expected, capability
        assert resolve_mixed_precision("auto", False, capability) == expected
    assert resolve_mixed_precision("auto", True, (9, 0)) is None  # the DeepSpeed JSON decides
    for explicit in ("no", "bf16", "fp16", None):
        assert resolve_mixed_precision(explicit, False, (7, 0)) == explicit


def test_a_launcher_precision_the_config_overrides_is_one_line(monkeypatch):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    assert launcher_conflict("auto", "bf16") is None
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")  # the launcher's default: no request
    assert launcher_conflict("auto", "bf16") is None
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    assert launcher_conflict("auto", "fp16") is None
    assert launcher_conflict(None, None) is None  # null follows the launcher
    assert launcher_conflict("auto", "bf16") == (
        "train.mixed_precision: 'auto' gives 'bf16'; the launcher's 'fp16' "
        "is not used (set train.mixed_precision: null to follow the launcher)"
    )


def test_precision_choices_are_checked():
    from mmimdb_dist.errors import ConfigError

    assert load_config(None).train.mixed_precision == "auto"
    assert load_config(None, ["train.mixed_precision=fp16"]).train.mixed_precision == "fp16"
    with pytest.raises(ConfigError, match="train.mixed_precision: expected one of 'auto', 'no', 'bf16', 'fp16'"):
        load_config(None, ["train.mixed_precision=fp8"])


# --------------------------------------------------------------------------- DDP


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.stem)
def test_no_shipped_model_asks_for_the_unused_parameter_search(path):
    cfg = load_config(path)
    assert needs_unused_parameter_search(cfg) is False


def test_the_unused_parameter_search_follows_the_config_or_the_model_class(monkeypatch):
    from mmimdb_dist.models import registry
    from mmimdb_dist.models.fusion import EarlyFusion

    assert needs_unused_parameter_search(load_config(None, ["train.find_unused_parameters=true"])) is True

    class Routed(EarlyFusion):
        leaves_parameters_unused = True

    monkeypatch.setitem(registry.MODELS, "early_fusion", Routed)
    assert needs_unused_parameter_search(load_config(None, ["model.name=early_fusion"])) is True
    assert (
        needs_unused_parameter_search(
            load_config(None, ["model.name=early_fusion", "train.find_unused_parameters=false"])
        )
        is False
    )


# --------------------------------------------------------------------------- threads


def test_thread_count_is_the_config_then_the_environment_then_the_cpus_per_rank(monkeypatch):
    cfg = ExperimentConfig()
    cfg.train.num_threads = 3
    assert choose_num_threads(cfg) == 3
    cfg.train.num_threads = None
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert choose_num_threads(cfg) == 5
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert choose_num_threads(cfg) == available_cpus() <= len(os.sched_getaffinity(0))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(available_cpus() * 4))
    assert choose_num_threads(cfg) == 1  # never 0, however many ranks share the node


# --------------------------------------------------------------------------- progress

STAMPED = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d "  # off a terminal every log line starts with its time


def test_plain_progress_says_elapsed_time_an_eta_and_seconds_per_item_when_slow(monkeypatch, caplog):
    """`epoch 0: 2/8 batch (25%), 4.0 s/batch, 8s elapsed, about 24s left`: a batch slower than a
    second is given in s/batch (it printed "0.0 batch/s"), with the elapsed time and what is left."""
    import mmimdb_dist.progress as progress_module

    clock = iter([100.0, 100.0, 108.0, 108.0, 140.0, 140.0])
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: next(clock))
    with caplog.at_level(logging.INFO, logger="mmimdb_dist.progress"):
        bar = PlainProgress(total=8, desc="epoch 0", unit="batch", interval_s=0)
        bar.update(2)  # 8 s for 2 batches
        bar.update(6)  # 40 s for all 8
    lines = [record.getMessage() for record in caplog.records]
    assert lines[0] == "epoch 0: 2/8 batch (25%), 4.0 s/batch, 8s elapsed, about 24s left"
    assert lines[1] == "epoch 0: 8/8 batch (100%), 5.0 s/batch, 40s elapsed"
    assert progress_module._duration(185) == "3m05s"
    assert progress_module._duration(7620) == "2h07m"


def test_plain_progress_is_log_lines_not_a_redrawn_bar(caplog):
    with caplog.at_level(logging.INFO, logger="mmimdb_dist.progress"):
        bar = PlainProgress(total=4, desc="epoch 0", unit="batch", interval_s=0)
        for _ in range(4):
            bar.update(1)
        bar.set_postfix(loss="0.4123")
        bar.close()
        bar.close()  # once
    lines = [record.getMessage() for record in caplog.records]
    assert lines[0].startswith("epoch 0: 1/4 batch (25%), ")
    assert lines[-1].startswith("epoch 0: 4/4 batch (100%), ")
    assert lines[-1].endswith("loss=0.4123")
    assert len(lines) == 5
    # off a terminal (pytest captures stderr), progress() gives plain lines; disabled, nothing
    assert isinstance(progress(range(3), desc="x"), PlainProgress)
    quiet = progress(range(3), desc="x", disable=True)
    assert list(quiet) == [0, 1, 2]
    assert quiet.silent


def test_no_progress_in_process_turns_progress_off_for_the_command_only(tmp_path, caplog, monkeypatch):
    """`--no-progress` before or after the command; a command run in-process (a notebook, a
    test) leaves the environment as it found it."""
    from mmimdb_dist.cli import main
    from mmimdb_dist.progress import ENV_VAR

    monkeypatch.delenv(ENV_VAR, raising=False)
    with caplog.at_level(logging.INFO, logger="mmimdb_dist.progress"):
        assert main(["--no-progress", "synth", "--out", str(tmp_path / "quiet"), "--movies", "12"]) == 0
        assert not [r for r in caplog.records if r.name == "mmimdb_dist.progress"]
        assert ENV_VAR not in os.environ
        assert main(["synth", "--out", str(tmp_path / "plain"), "--movies", "12"]) == 0
    assert [r.getMessage() for r in caplog.records if r.name == "mmimdb_dist.progress"][-1].startswith(
        "synthetic movies: 12/12 movie (100%)"
    )


@pytest.mark.slow
def test_a_run_outside_a_terminal_logs_plain_progress_lines_and_no_progress_silences_them(tmp_path_factory):
    shards = train_shards(tmp_path_factory)
    root = tmp_path_factory.mktemp("progress")
    outputs = {}
    for name, flags in (("plain", []), ("quiet", ["--no-progress"])):
        config = write_config(root / f"{name}.yaml", tiny_config(shards, root / "runs", name, epochs=1))
        result = subprocess.run(
            ["python", "-m", "mmimdb_dist.cli", *flags, "train", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            env=env(),
            cwd=root,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        outputs[name] = result.stderr
    plain, quiet = outputs["plain"], outputs["quiet"]
    for text in (plain, quiet):
        assert "\r" not in text
        assert "\x1b[" not in text
    assert any(
        re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d INFO mmimdb_dist.progress: epoch 0: ", line)
        and "batch (100%)" in line
        for line in plain.splitlines()
    ), plain[-2000:]
    assert any("mmimdb_dist.progress: dev: " in line for line in plain.splitlines())
    assert "mmimdb_dist.progress" not in quiet
    # the run itself still reports at INFO
    assert "training early_fusion" in quiet
