"""The trainer: one code path for one CPU, one GPU, or many processes under `accelerate launch`.

Model, optimizer and scheduler go through `accelerator.prepare()`; the loaders do not (see
`mmimdb_dist.data.loader`): each rank builds its own from `process_index` and
`num_processes`, the train loader anew every epoch with the epoch number, so the data order
is a function of (seed, epoch) alone and a resumed run can skip straight to its position.

This file is the algorithm: forward, backward, accumulate, agree, clip, step. What happens
around a step decides its own timing, in its own module: the ranks' agreement before it
(`agreement.py`: a stop signal, a non-finite loss), the train log (`logger.py`), dev
evaluation, selection and early stop (`evaluator.py`), checkpoints and resuming
(`checkpointer.py`), and the next epoch's loader (`epochs.py`). After an optimizer step they
run in that order: log, evaluate, checkpoint. A checkpoint therefore never needs an
evaluation replayed when it is resumed, and the best checkpoint is always on disk.

Gradient accumulation is done here, not by Accelerate's `accumulate()`: groups of
`grad_accum_steps` batches never straddle an epoch end (the last group of an epoch is
shorter and its loss scaled by its own size), so every epoch ends on an optimizer step and
epoch-end checkpoints hold no pending gradients.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import torch

from ..data.device import to_device
from ..data.plan import derive_seed
from ..models.preprocess import resolve_image_size
from ..progress import progress as progress_bar
from ..progress import shown_when_unconfigured
from ..run.checkpoints import TrainerState, checkpoint_name
from ..run.layout import CONFIG_FILE
from ..schema import ExperimentConfig, save_config, to_dict
from .accelerator import build_accelerator, choose_num_threads
from .agreement import StepAgreement
from .checkpointer import Checkpointer
from .deepspeed_config import mark_boundary
from .epochs import EpochLoaders
from .evaluator import Evaluator
from .logger import TrainLogger
from .setup import RunSetup
from .tracking import flat_hparams

logger = logging.getLogger(__name__)


class Trainer(RunSetup):
    """Everything a run needs on every rank (`setup.RunSetup`), then `fit()` trains, selects and tests."""

    def __init__(
        self, cfg: ExperimentConfig, accelerator: Any, on_evaluation: Callable[[dict[str, Any]], None] | None = None
    ) -> None:
        super().__init__(cfg, accelerator)
        # Called on every rank after each dev evaluation's checkpoint is complete (Ray Tune
        # reports through it); it receives the eval record plus `checkpoint` (its folder) and
        # `last` (true for the final evaluation of the run).
        self.on_evaluation = on_evaluation
        self.train_cfg = cfg.train
        self.state = TrainerState(world_size=self.world_size)
        self.log = TrainLogger(cfg, self.run_dir, accelerator)
        self.agreement = StepAgreement(accelerator, self.checkpoints_dir)
        self.evaluator = Evaluator(cfg, self, self.log, self.loss_fn, self.input_dtype, self.deepspeed)
        self.checkpointer = Checkpointer(cfg, self, self.log, self.config_text)
        self.epochs = EpochLoaders(cfg, self)

    def _train_batch(self, batch: dict[str, Any], group_size: int, sync: bool) -> bool | None:
        """Forward and backward of one micro-batch. Returns whether the ranks stop when their
        agreement had to be reached here: under DeepSpeed the backward of a group's last
        micro-batch takes the optimizer step itself (`engine.step` inside `accelerator.backward`),
        so the ranks agree before that backward, and a non-finite loss stops the run with no step
        taken (otherwise they agree after it, before `_optimizer_step`, in `_train_epoch`)."""
        loader_cfg = self.cfg.loader
        batch = to_device(
            batch,
            self.accelerator.device,
            self.input_dtype,
            color_jitter=loader_cfg.color_jitter if loader_cfg.augment else 0.0,
            jitter_seed=derive_seed(self.seed, "color_jitter", self.state.epoch),
        )
        if self.train_cfg.channels_last and "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].contiguous(memory_format=torch.channels_last)
        if self.deepspeed:
            mark_boundary(self.accelerator, sync)
        no_sync = contextlib.nullcontext() if sync else self.accelerator.no_sync(self.model)
        stop = None
        with no_sync:
            outputs = self.model(batch)
            labels = batch["labels"].float()
            loss = self.loss_fn(outputs["logits"].float(), labels)
            branch_logits = outputs.get("branch_logits")
            if branch_logits:
                weight = self.cfg.model.fusion.branch_loss_weight
                loss = loss + weight * sum(self.loss_fn(b.float(), labels) for b in branch_logits.values())
            if sync and self.deepspeed:
                self.agreement.losses.append(loss.detach())
                stop = self.agreement.agree(self.state, pending=1)
            self.accelerator.backward(loss / group_size)
        loss = loss.detach()
        if stop is None:
            self.agreement.losses.append(loss)
        self.log.add_batch(loss, len(batch["ids"]))
        self.state.samples_trained += len(batch["ids"]) * self.world_size
        return stop

    def _optimizer_step(self) -> torch.Tensor | None:
        """One step; the clipped gradient norm stays a device tensor until it is logged."""
        grad_norm = None
        if self.train_cfg.max_grad_norm is not None:
            grad_norm = self.accelerator.clip_grad_norm_(self.model.parameters(), self.train_cfg.max_grad_norm)
        self.optimizer.step()
        # fp16 loss scaling (GPU only: Accelerate has no GradScaler on CPU) skips a step whose
        # gradients overflowed; the schedule waits for the step that is really taken.
        if not self.accelerator.optimizer_step_was_skipped:
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm

    def _learning_rates(self) -> dict[str, float]:
        groups = self.optimizer.param_groups
        return {name: group["lr"] for name, group in zip(self.group_names, groups, strict=True)}

    def _train_epoch(self, epoch: int, start: int, progress: bool) -> None:
        cfg, state, accum = self.train_cfg, self.state, self.train_cfg.grad_accum_steps
        num_batches = self.batches_per_epoch
        batches = self.epochs.batches(epoch, start)
        self.model.train()
        clock = time.perf_counter()  # train_seconds counts training, not evaluation or saving
        bar = progress_bar(total=num_batches, initial=start, desc=f"epoch {epoch}", unit="batch", disable=not progress)
        position = start
        for batch in batches:
            if position + 1 == num_batches and epoch + 1 < cfg.epochs:
                self.epochs.start(epoch + 1)  # its workers prefetch during this epoch's evaluation
            group_start = position - position % accum
            group_size = min(accum, num_batches - group_start)
            sync = position + 1 == group_start + group_size
            agreed = self._train_batch(batch, group_size, sync)
            position += 1
            state.batch_in_epoch, state.batches_seen = position, state.batches_seen + 1
            bar.update(1)
            if not sync:
                continue
            stop = agreed if agreed is not None else self.agreement.agree(state)
            grad_norm = self._optimizer_step()
            state.step += 1
            epoch_end = position == num_batches
            if self.log.after_step(state, grad_norm, self._learning_rates(), epoch_end):
                bar.set_postfix(loss=f"{self.log.last_loss:.4f}")
            evaluate = self.evaluator.due(state, epoch_end, last=epoch_end and epoch == cfg.epochs - 1)
            state.train_seconds += time.perf_counter() - clock
            eval_record = self.evaluator.evaluate(self.model, state) if evaluate else None
            saved = self.checkpointer.due(state, evaluate)
            if saved:
                self.checkpointer.save(state)
            if eval_record is not None and self.on_evaluation is not None:
                # `last`: the final evaluation, after which only the test of the best checkpoint runs.
                checkpoint = str(self.checkpoints_dir / checkpoint_name(state))
                self.on_evaluation({**eval_record, "checkpoint": checkpoint, "last": state.step >= self.total_steps})
            clock = time.perf_counter()
            if stop:
                if not saved:
                    self.checkpointer.save(state)
                self.agreement.stop(state, self.main)
            if state.stopped_early:
                break
        bar.close()
        if position != num_batches and not state.stopped_early:
            raise RuntimeError(f"epoch {epoch}: the train loader gave {position} of {num_batches} batches")

    def fit(self, resume: str | None = None) -> dict[str, Any]:
        """Train (or resume), then evaluate the best checkpoint on dev and test."""
        self.state = self.checkpointer.resume(resume, self.param_shapes) or self.state
        if self.main:
            save_config(self.cfg, self.run_dir / CONFIG_FILE)
        self.log.start(self.state, flat_hparams(to_dict(self.cfg)))
        if self.main:
            logger.info(
                "training %s on %d process(es): %d batches of %d per process per epoch, "
                "%d optimizer steps in all; run folder %s",
                self.cfg.model.name,
                self.world_size,
                self.batches_per_epoch,
                self.cfg.loader.batch_size,
                self.total_steps,
                self.run_dir,
            )
        try:
            state = self.state
            with self.agreement.signals:  # SIGTERM / SIGUSR2: checkpoint at the next step, then exit
                for epoch in range(state.epoch, self.train_cfg.epochs):
                    if state.stopped_early:
                        break
                    start = state.batch_in_epoch if epoch == state.epoch else 0
                    if start >= self.batches_per_epoch:
                        continue  # finished and evaluated before the checkpoint was written
                    state.epoch, state.batch_in_epoch = epoch, start
                    self._train_epoch(epoch, start, progress=self.accelerator.is_local_main_process)
            return self.final_evaluation()
        finally:
            self.log.close()

    def final_evaluation(self) -> dict[str, Any]:
        """Test metrics of the best checkpoint (see `Evaluator.final`)."""
        return self.evaluator.final(self.model, self.state)


def train(
    cfg: ExperimentConfig, resume: str | None = None, on_evaluation: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Run `cfg` to the end on this process (one of many under a launcher); always tears down.
    Called from Python without a logging setup, it reports on stderr as the command does."""
    with shown_when_unconfigured():
        # Accelerate reports every file of every save at INFO; the trainer logs its own summary.
        logging.getLogger("accelerate").setLevel(max(logging.WARNING, logging.getLogger().level))
        torch.set_num_threads(choose_num_threads(cfg))
        if not cfg.loader.features_dir:  # a null image size becomes the backbone's, before it is saved
            cfg = resolve_image_size(cfg)
        accelerator = build_accelerator(cfg)
        if not accelerator.is_main_process:
            logging.getLogger("mmimdb_dist").setLevel(logging.WARNING)
        trainer = None
        try:
            trainer = Trainer(cfg, accelerator, on_evaluation)
            return trainer.fit(resume)
        finally:
            if trainer is not None:
                trainer._folder_lock.close()
            accelerator.end_training()
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
