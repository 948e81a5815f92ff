"""The trainer's components, each on its own: when the evaluator and the checkpointer act, what
the logger writes and when, the step agreement on a non-finite loss, the next epoch's loader.

The whole trainer runs in tests/test_train.py (exact resume included); here each component
decides its own timing with nothing else of a run around it but a real single-process
Accelerator on the CPU.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator
from dist_scripts.train_fixtures import tiny_config

from mmimdb_dist.data.training_data import load_training_manifest
from mmimdb_dist.data.vocab import Vocabulary
from mmimdb_dist.errors import NonFiniteLossError
from mmimdb_dist.run.checkpoints import TrainerState
from mmimdb_dist.schema import ExperimentConfig, from_dict
from mmimdb_dist.train.agreement import StepAgreement
from mmimdb_dist.train.checkpointer import Checkpointer
from mmimdb_dist.train.epochs import EpochLoaders
from mmimdb_dist.train.evaluator import Evaluator
from mmimdb_dist.train.logger import TrainLogger


def _cfg(tmp_path: Path, shards: Path | None = None, **train) -> ExperimentConfig:
    data = tiny_config(shards or tmp_path / "no-shards", tmp_path / "runs", "components", **train)
    data["train"]["trackers"] = []
    return from_dict(ExperimentConfig, data)


@pytest.fixture(scope="module")
def accelerator() -> Accelerator:
    return Accelerator(cpu=True)


def test_the_evaluator_runs_at_epoch_ends_every_n_steps_and_after_the_last_step(tmp_path):
    labels = SimpleNamespace(task="multilabel")
    by_epoch = Evaluator(_cfg(tmp_path), SimpleNamespace(labels=labels), None, None, torch.float32, False)
    every_3 = Evaluator(_cfg(tmp_path, eval_every=3), SimpleNamespace(labels=labels), None, None, torch.float32, False)
    due = {
        name: [
            evaluator.due(TrainerState(step=step), epoch_end=step % 4 == 0, last=step == 10) for step in range(1, 11)
        ]
        for name, evaluator in (("epoch", by_epoch), ("3", every_3))
    }
    assert due["epoch"] == [False, False, False, True, False, False, False, True, False, True]
    assert due["3"] == [False, False, True, False, False, True, False, False, True, True]


def test_the_checkpointer_saves_after_evaluations_and_every_n_steps(tmp_path):
    run = SimpleNamespace(checkpoints_dir=tmp_path / "checkpoints")
    never = Checkpointer(_cfg(tmp_path), run, None, "")
    every_4 = Checkpointer(_cfg(tmp_path, checkpoint_every_steps=4), run, None, "")
    steps = range(1, 9)
    assert [never.due(TrainerState(step=s), evaluated=s == 3) for s in steps] == [s == 3 for s in steps]
    assert [every_4.due(TrainerState(step=s), evaluated=s == 3) for s in steps] == [s in (3, 4, 8) for s in steps]


def test_the_logger_writes_a_train_record_every_log_every_steps_and_at_epoch_ends(tmp_path, accelerator):
    run_dir = tmp_path / "runs" / "components"
    run_dir.mkdir(parents=True)
    log = TrainLogger(_cfg(tmp_path, log_every=3), run_dir, accelerator)
    state = TrainerState()
    written = []
    for step in range(1, 8):
        for loss in (1.0, 3.0):  # two micro-batches of 4 samples per step
            log.add_batch(torch.tensor(loss), 4)
        state.step, state.batches_seen = step, 2 * step
        written.append(log.after_step(state, torch.tensor(0.5), {"heads": 0.01}, epoch_end=step == 7))
    assert written == [False, False, True, False, False, True, True]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [3, 6, 7]
    assert [r["batches_seen"] for r in records] == [6, 12, 14]
    assert all(r["loss"] == pytest.approx(2.0) for r in records)  # the window's mean, then a new window
    assert records[0]["lr"] == {"heads": 0.01}
    assert records[0]["grad_norm"] == pytest.approx(0.5)
    assert log.last_loss == pytest.approx(2.0)
    log.after_step(state, torch.tensor(float("inf")), {}, epoch_end=True)  # an overflowed fp16 step
    assert json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])["grad_norm"] is None


def test_a_non_finite_loss_fails_the_agreement_naming_its_batch(tmp_path, accelerator):
    agreement = StepAgreement(accelerator, tmp_path / "checkpoints")
    state = TrainerState(epoch=1, step=4, batches_seen=12)
    agreement.losses += [torch.tensor(0.7), torch.tensor(0.6)]
    assert agreement.agree(state) is False  # finite, no signal: go on
    assert agreement.losses == []
    agreement.losses += [torch.tensor(0.7), torch.tensor(float("nan")), torch.tensor(0.5)]
    with pytest.raises(NonFiniteLossError, match=r"loss nan at batch 11 \(epoch 1, before optimizer step 5\)"):
        agreement.agree(state)


def test_the_next_epoch_started_early_is_the_one_read(shards, tmp_path):
    cfg = _cfg(tmp_path, shards)
    manifest = load_training_manifest(cfg.loader)
    run = SimpleNamespace(manifest=manifest, token_encoder=Vocabulary(["war", "love"]), rank=0, world_size=1, seed=3)
    epochs = EpochLoaders(cfg, run)
    fresh = [batch["ids"] for batch in epochs.batches(1, 0)]
    epochs.start(1)
    early = epochs._next
    assert early is not None
    assert epochs.batches(1, 0) is early[1]  # the prefetched stream itself
    assert [batch["ids"] for batch in early[1]] == fresh  # and the same batches
    epochs.start(2)
    resumed = list(epochs.batches(2, 3))  # a resumed epoch starts at its own batch, not the prefetched one
    assert [batch["ids"] for batch in resumed] == [batch["ids"] for batch in epochs.batches(2, 0)][3:]


def test_a_changed_config_on_resume_is_named_key_by_key():
    """Resuming with another config says which keys changed and both values, not only that it differs."""
    from mmimdb_dist.train.checkpointer import config_changes

    saved = "name: run\ntrain:\n  lr: 0.01\n  epochs: 4\nloader:\n  batch_size: 16\n"
    current = "name: run\ntrain:\n  lr: 0.003\n  epochs: 4\nloader:\n  batch_size: 32\nseed: 2\n"
    assert config_changes(saved, current) == "loader.batch_size 16 -> 32, seed (absent) -> 2, train.lr 0.01 -> 0.003"
    assert config_changes(saved, saved) == ""
    many = "\n".join(f"k{i}: {i}" for i in range(8))
    assert config_changes("{}", many).endswith(", k4 (absent) -> 4 and 3 more")


def test_a_stop_signal_to_a_forked_loader_worker_is_left_to_the_training_process(caplog):
    """Ctrl-C reaches the whole process group: a loader worker (forked with the handler) neither
    acts on it nor repeats the warning; the training process alone does, once."""
    import os
    import signal

    from mmimdb_dist.train.signals import StopRequests

    with caplog.at_level(logging.WARNING, logger="mmimdb_dist.train.signals"), StopRequests() as requests:
        child = os.fork()
        if child == 0:  # the worker: the signal is not its to act on
            os.kill(os.getpid(), signal.SIGTERM)
            os._exit(0 if requests.received is None and not caplog.records else 1)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        os.kill(os.getpid(), signal.SIGTERM)
        assert requests.received is signal.SIGTERM
    assert [r.getMessage() for r in caplog.records] == [
        "received SIGTERM: stopping after this optimizer step, with a checkpoint"
    ]
