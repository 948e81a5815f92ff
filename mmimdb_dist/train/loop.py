"""The trainer: one code path for one CPU, one GPU, or many processes under `accelerate launch`.

Model, optimizer and scheduler go through `accelerator.prepare()`; the loaders do not (see
`mmimdb_dist.data.loader`): each rank builds its own from `process_index` and
`num_processes`, the train loader anew every epoch with the epoch number, so the data order
is a function of (seed, epoch) alone and a resumed run can skip straight to its position.

Points in training are counted in batches. After an optimizer step the trainer, in this
order, logs, evaluates on dev (at the end of each epoch, or every `eval_every` steps, and
always at the end of training), then checkpoints (after every evaluation, and every
`checkpoint_every_steps` steps). A checkpoint therefore never needs an evaluation replayed
when it is resumed, and the best checkpoint is always on disk.

Gradient accumulation is done here, not by Accelerate's `accumulate()`: groups of
`grad_accum_steps` batches never straddle an epoch end (the last group of an epoch is
shorter and its loss scaled by its own size), so every epoch ends on an optimizer step and
epoch-end checkpoints hold no pending gradients.
"""

from __future__ import annotations

import contextlib
import logging
import math
import resource
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import load, set_seed
from accelerate.utils.constants import RNG_STATE_NAME

from ..data.device import to_device
from ..data.features import feature_spec
from ..data.loader import build_train_loader
from ..data.plan import derive_seed, train_batches_per_rank
from ..data.tokens import run_token_encoder
from ..data.training_data import load_training_manifest
from ..errors import CheckpointError, ConfigError, DataError, LogWriteError, NonFiniteLossError, TrackerWriteError
from ..labels import LabelSet
from ..losses import build_loss, check_loss_fits
from ..metrics import (
    compute_metrics,
    compute_multiclass_metrics,
    tune_thresholds,
    write_metrics_json,
    write_per_label_csv,
)
from ..models.preprocess import resolve_image_size
from ..models.registry import build_model, count_parameters
from ..outputs import check_output_dir, exclusive
from ..progress import progress as progress_bar
from ..report.evaluation import write_figures
from ..run.checkpoints import (
    TrainerState,
    check_fits,
    checkpoint_name,
    clean_temp_folders,
    complete_checkpoints,
    prune,
    resolve_resume,
    save_checkpoint,
)
from ..run.export import add_inference_files, read_label_set
from ..run.layout import (
    CONFIG_FILE,
    EVALUATION_DIR,
    FINAL_METRICS,
    INFERENCE_DIR,
    METRICS_LOG,
    PER_LABEL_CSV,
    STATE_FILE,
    TENSORBOARD_DIR,
    checkpoints_dir_of,
    owns_run_file,
    run_dir_of,
)
from ..run.metrics_log import append_record, truncate_after
from ..run.predictions import Predictions, evaluate_split
from ..run.protocol import primary_report, protocol_report
from ..schema import ExperimentConfig, check_select_metric, dump_config, save_config, to_dict
from .accelerator import build_accelerator, choose_num_threads
from .deepspeed_config import broadcast_buffers, buffers_to, deepspeed_plugin, fill_deepspeed_config, mark_boundary
from .optim import build_optimizer, build_scheduler
from .signals import StopRequests, TrainingStopped
from .tracking import Trackers, flat_hparams

logger = logging.getLogger(__name__)

# What every dev evaluation records (and TensorBoard shows), by task kind; `train.select_metric`
# is one of them (schema.train.SELECT_METRICS_BY_TASK).
EVAL_KEYS = {
    "multilabel": (
        "f1_macro",
        "f1_micro",
        "f1_macro_tuned",
        "f1_micro_tuned",
        "mean_average_precision",
        "roc_auc_macro",
    ),
    "multiclass": (
        "accuracy",
        "top5_accuracy",
        "f1_macro",
        "f1_weighted",
        "f1_micro",
        "mean_average_precision",
        "roc_auc_macro",
    ),
}


def dev_metrics(labels, probs, label_set: LabelSet) -> dict[str, Any]:
    """Dev metrics at 0.5, plus macro/micro-F1 under thresholds tuned on this same dev split
    (an optimistic figure, meant for choosing checkpoints, never for reporting); for a
    multiclass label set the arg-max metrics."""
    if label_set.multiclass:
        return compute_multiclass_metrics(labels, probs, label_set.names)
    metrics = compute_metrics(labels, probs, genres=label_set.names)
    tuned = compute_metrics(labels, probs, tune_thresholds(labels, probs), label_set.names)
    metrics["f1_macro_tuned"], metrics["f1_micro_tuned"] = tuned["f1_macro"], tuned["f1_micro"]
    return metrics


def _memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak RSS, KiB on Linux


class Trainer:
    """Builds everything a run needs on every rank, then `fit()` trains, selects and tests."""

    def __init__(
        self, cfg: ExperimentConfig, accelerator: Any, on_evaluation: Callable[[dict[str, Any]], None] | None = None
    ) -> None:
        # Called on every rank after each dev evaluation's checkpoint is complete (Ray Tune
        # reports through it); it receives the eval record plus `checkpoint` (its folder) and
        # `last` (true for the final evaluation of the run).
        self.on_evaluation = on_evaluation

        self.cfg = cfg
        self.accelerator = accelerator
        self.train_cfg = cfg.train
        self.seed = cfg.train.seed if cfg.train.seed is not None else cfg.seed
        self.run_dir = run_dir_of(cfg)
        self.checkpoints_dir = checkpoints_dir_of(self.run_dir)
        self.config_text = dump_config(cfg)
        self.main = accelerator.is_main_process
        self.rank, self.world_size = accelerator.process_index, accelerator.num_processes

        # The shards, or a set of cached encoder features (`loader.features_dir`).
        self.manifest = load_training_manifest(cfg.loader)
        for split in ("train", "dev", "test"):  # before a whole epoch is spent, not after
            if self.manifest.split(split).num_samples == 0:
                raise DataError(
                    f"{self.manifest.path}: the {split} split holds no sample; a run trains on "
                    "train, selects its checkpoint on dev and reports on test, so each needs samples"
                )
        self.features = feature_spec(cfg.loader)
        # The label set and task kind travel with the data: they fix the output width, the
        # loss and the metrics (a loss or selection metric of the other kind is one line).
        self.labels = self.manifest.labels
        check_loss_fits(cfg.loss, self.labels.task, str(self.manifest.path))
        check_select_metric(cfg.train.select_metric, self.labels.task, str(self.manifest.path))
        self.eval_keys = EVAL_KEYS[self.labels.task]
        # The run folder is new, or a run's (resumed, restarted); anything else is refused on
        # every rank alike, and the main rank holds its lock until the run ends (outputs.py).
        self._folder_lock = contextlib.ExitStack()
        check_output_dir(self.run_dir, "run folder", "a run folder", owns_run_file)
        if self.main:
            self._folder_lock.enter_context(exclusive(self.run_dir, "run folder", "train"))
        accelerator.wait_for_everyone()
        self.token_encoder, vocab_size = run_token_encoder(cfg, self.manifest, self.run_dir, accelerator)

        set_seed(self.seed)  # initialisation, dropout and modality dropout
        model = build_model(
            cfg.model,
            num_labels=len(self.labels),
            vocab_size=vocab_size,
            pad_id=self.token_encoder.pad_id,
            features=self.features,
        )
        train = self.manifest.split("train")
        # Every classifier starts at the train label frequencies, not at p = 0.5 for every
        # label (whose first epoch would be spent learning the priors).
        model.init_output_bias(
            torch.tensor(train.label_counts, dtype=torch.float32) / train.num_samples, multiclass=self.labels.multiclass
        )
        self.trainable_parameters, self.num_parameters = count_parameters(model)
        if cfg.train.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.loss_fn = build_loss(cfg.loss, train.label_counts, train.num_samples).to(accelerator.device)
        self.batches_per_epoch = train_batches_per_rank(
            train.num_samples, self.world_size, cfg.loader.batch_size, cfg.loader.drop_last
        )
        if self.batches_per_epoch == 0:
            raise ConfigError(
                f"loader.batch_size: {cfg.loader.batch_size} x {self.world_size} processes "
                f"is more than the {train.num_samples} train samples"
            )
        accum = cfg.train.grad_accum_steps
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / accum)
        self.total_steps = self.steps_per_epoch * cfg.train.epochs
        optimizer = build_optimizer(model, cfg.model, cfg.train)
        scheduler = build_scheduler(optimizer, cfg.train, self.total_steps)
        # What a checkpoint must hold to be resumed into this model (checked before loading).
        self.param_shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
        if cfg.train.compile:
            model = torch.compile(model, backend=cfg.train.compile_backend)
        fill_deepspeed_config(accelerator, cfg)
        self.model, self.optimizer, self.scheduler = accelerator.prepare(model, optimizer, scheduler)
        self.group_names = [group.get("name", f"group{i}") for i, group in enumerate(optimizer.param_groups)]

        # DeepSpeed's bf16 and fp16 modes run the model in that type without autocast: inputs
        # and floating-point buffers must match.
        self.deepspeed = deepspeed_plugin(accelerator) is not None
        half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(accelerator.mixed_precision)
        self.input_dtype = half if self.deepspeed and half is not None else torch.float32
        if self.input_dtype != torch.float32:
            buffers_to(self.model, self.input_dtype)
        self.state = TrainerState(world_size=self.world_size)
        self.stop_requests = StopRequests()
        self._non_finite: tuple[int, float] | None = None  # (batches seen, loss) of the first NaN/Inf
        self._next_epoch: tuple[int, Any] | None = None  # (epoch, its started batches): see _start_epoch
        self.trackers = Trackers(
            cfg.train.trackers, cfg.train.tracker_project, cfg.name, self.run_dir, cfg.train.tracker_kwargs, self.main
        )
        self._last_loss = float("nan")
        # Losses stay on the device until a log line needs them: reading one back is a host
        # sync, which on a GPU stops the CPU from queueing the next batch's kernels.
        self._step_losses: list[torch.Tensor] = []  # this optimizer step's batch losses
        self._new_window()

    # ------------------------------------------------------------------ logging

    def _new_window(self) -> None:
        device = self.accelerator.device
        self._window = {
            "loss": torch.zeros((), device=device),
            "batches": 0,
            "samples": 0,
            "start": time.perf_counter(),
        }

    def _log_write_failed(self, path: Path | str, reason: str) -> LogWriteError:
        """A log that cannot be written stops the run: curves with silent holes mislead."""
        checkpoints = complete_checkpoints(self.checkpoints_dir)
        last = checkpoints[-1] if checkpoints else "none yet"
        return LogWriteError(
            f"{path}: writing the training log failed ({reason}); training "
            f"stopped at epoch {self.state.epoch} step {self.state.step}. Last complete "
            f"checkpoint: {last}; free space, then continue with --resume auto"
        )

    def _log_record(self, record: dict[str, Any]) -> None:
        """One JSON line in metrics.jsonl (an append-only log, flushed per line)."""
        if not self.main:
            return
        path = self.run_dir / METRICS_LOG
        try:
            append_record(path, record)
        except OSError as exc:  # a torn last line is dropped on resume (_truncate_log)
            raise self._log_write_failed(path, exc.strerror or str(exc)) from None

    def _scalars(self, values: dict[str, float | None], step: int) -> None:
        """Scalars to every tracker of `train.trackers`."""
        try:
            self.trackers.log(values, step)
        except TrackerWriteError as exc:
            raise self._log_write_failed(exc.where, exc.reason) from None

    def _check_rng_state(self, checkpoint: Path) -> None:
        """Accelerate resumes without the RNG state when its file does not load, saying so only at
        INFO; the data order, augmentation and dropout of the rest of the run then differ from an
        uninterrupted one. Say it where it is seen."""

        path = checkpoint / f"{RNG_STATE_NAME}_{self.rank}.pkl"
        try:
            states = load(str(path), weights_only=False)
            if "torch_manual_seed" not in states:
                raise KeyError("torch_manual_seed")
        except Exception as exc:  # a missing, truncated or foreign file
            logger.warning(
                "%s: rank %d's RNG state cannot be loaded (%s: %s); resuming without it, so this "
                "run will NOT repeat an uninterrupted one exactly",
                path,
                self.rank,
                type(exc).__name__,
                " ".join(str(exc).split())[:200],
            )

    def _truncate_log(self, batches_seen: int) -> None:
        """On resume, drop log lines written after the checkpoint (they are about to be redone)."""
        if self.main:
            truncate_after(self.run_dir / METRICS_LOG, batches_seen)

    def _log_train(self, grad_norm: torch.Tensor | float | None) -> None:
        window = self._window
        batches = torch.tensor(float(window["batches"]), device=window["loss"].device)
        loss = self.accelerator.reduce(torch.stack([window["loss"].float(), batches]), reduction="sum")
        # An overflowed fp16 step has an infinite norm, which JSON cannot hold: logged as null.
        grad_norm = None if grad_norm is None or not math.isfinite(float(grad_norm)) else float(grad_norm)
        elapsed = time.perf_counter() - window["start"]
        record = {
            "type": "train",
            "epoch": self.state.epoch,
            "step": self.state.step,
            "batches_seen": self.state.batches_seen,
            "loss": float(loss[0] / loss[1].clamp(min=1)),
            "lr": {
                name: group["lr"] for name, group in zip(self.group_names, self.optimizer.param_groups, strict=True)
            },
            "samples_per_s": window["samples"] * self.world_size / max(elapsed, 1e-9),
            "grad_norm": grad_norm,
            "memory_mb": _memory_mb(self.accelerator.device),
        }
        self._log_record(record)
        self._last_loss = record["loss"]
        self._scalars(
            {
                "train/loss": record["loss"],
                "train/samples_per_s": record["samples_per_s"],
                "train/memory_mb": record["memory_mb"],
                "train/grad_norm": grad_norm,
                **{f"lr/{name}": lr for name, lr in record["lr"].items()},
            },
            self.state.step,
        )
        self._new_window()

    # ------------------------------------------------------------------ evaluation

    def predict_split(self, split: str) -> Predictions:
        return evaluate_split(
            self.model,
            self.cfg,
            self.manifest,
            split,
            self.token_encoder,
            accelerator=self.accelerator,
            input_dtype=self.input_dtype,
        )

    def dev_loss(self, predictions: Predictions) -> float | None:
        """The training loss (weighted BCE or focal, with the train split's class weights) of the
        fused head over a split: comparable with the train loss when no branch loss is added."""
        if predictions.logits is None or not len(predictions.ids):
            return None
        device = self.accelerator.device
        with torch.no_grad():
            loss = self.loss_fn(
                torch.from_numpy(predictions.logits).to(device),
                torch.from_numpy(predictions.labels).to(device, torch.float32),
            )
        return float(loss)

    def evaluate_and_select(self) -> dict[str, Any]:
        """Dev metrics; a better `train.select_metric` makes the checkpoint saved next the best one."""
        if self.deepspeed and self.world_size > 1:
            broadcast_buffers(self.model)  # the statistics the checkpoint about to be saved holds
        dev = self.predict_split("dev")
        metrics = dev_metrics(dev.labels, dev.probs, self.labels)
        metrics["loss"] = self.dev_loss(dev)
        value = metrics[self.train_cfg.select_metric]
        value = float("-inf") if value is None else value
        state = self.state
        improved = state.best_metric is None or value > state.best_metric
        if improved:
            state.best_metric, state.best_epoch, state.best_step = value, state.epoch, state.step
            state.best_checkpoint = checkpoint_name(state)
            state.evals_since_best = 0
        else:
            state.evals_since_best += 1
            patience = self.train_cfg.early_stopping_patience
            state.stopped_early = bool(patience and state.evals_since_best >= patience)
        record = {
            "type": "eval",
            "split": "dev",
            "epoch": state.epoch,
            "step": state.step,
            "batches_seen": state.batches_seen,
            "best": improved,
            "skipped": dev.skipped,
            **{k: metrics[k] for k in (*self.eval_keys, "loss")},
        }
        self._log_record(record)
        self._scalars({f"dev/{key}": metrics[key] for key in (*self.eval_keys, "loss")}, state.step)
        if self.main:
            second = (
                "accuracy {:.4f}".format(metrics["accuracy"])
                if self.labels.multiclass
                else "micro-F1 {:.4f} (at 0.5)".format(metrics["f1_micro"])
            )
            logger.info(
                "epoch %d step %d: dev mAP %.4f macro-F1 %.4f %s%s%s",
                state.epoch,
                state.step,
                metrics["mean_average_precision"] or 0.0,
                metrics["f1_macro"],
                second,
                f" (best {self.train_cfg.select_metric})" if improved else "",
                " -> early stop" if state.stopped_early else "",
            )
        return record

    # ------------------------------------------------------------------ training

    def _checkpoint(self) -> None:
        save_checkpoint(
            self.accelerator,
            self.model,
            self.checkpoints_dir,
            self.state,
            self.config_text,
            self.token_encoder,
            self.labels,
        )
        if self.main:
            protect = {self.state.best_checkpoint} if self.state.best_checkpoint else set()
            prune(self.checkpoints_dir, self.train_cfg.keep_checkpoints, protect)
        self.accelerator.wait_for_everyone()

    def _train_batch(self, batch: dict, group_size: int, sync: bool) -> tuple[bool, bool] | None:
        """Forward and backward of one micro-batch. Returns the ranks' agreement (stop, non-finite)
        when it had to be reached here: under DeepSpeed the backward of a group's last micro-batch
        takes the optimizer step itself (`engine.step` inside `accelerator.backward`), so the
        ranks agree before that backward, and a non-finite loss stops the run with no step taken
        (otherwise they agree after it, before `_optimizer_step`, in `_train_epoch`)."""
        loader_cfg = self.cfg.loader
        jitter = loader_cfg.color_jitter if loader_cfg.augment else 0.0
        batch = to_device(
            batch,
            self.accelerator.device,
            self.input_dtype,
            color_jitter=jitter,
            jitter_seed=derive_seed(self.seed, "color_jitter", self.state.epoch),
        )
        if self.train_cfg.channels_last and "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].contiguous(memory_format=torch.channels_last)
        if self.deepspeed:
            mark_boundary(self.accelerator, sync)
        no_sync = contextlib.nullcontext() if sync else self.accelerator.no_sync(self.model)
        with no_sync:
            outputs = self.model(batch)
            labels = batch["labels"].float()
            loss = self.loss_fn(outputs["logits"].float(), labels)
            branch_logits = outputs.get("branch_logits")
            if branch_logits:
                weight = self.cfg.model.fusion.branch_loss_weight
                loss = loss + weight * sum(self.loss_fn(b.float(), labels) for b in branch_logits.values())
            agreement = None
            if sync and self.deepspeed:
                self._step_losses.append(loss.detach())
                agreement = self.stop_requests.agreed(self.accelerator, self._step_non_finite())
                if agreement[1]:
                    self._find_non_finite(pending=1)
                    self._fail_non_finite()
            self.accelerator.backward(loss / group_size)
        loss = loss.detach()
        if agreement is None:
            self._step_losses.append(loss)
        self._window["loss"] = self._window["loss"] + loss
        self._window["batches"] += 1
        self._window["samples"] += len(batch["ids"])
        self.state.samples_trained += len(batch["ids"]) * self.world_size
        return agreement

    def _step_non_finite(self) -> torch.Tensor:
        """Whether any loss of this optimizer step is NaN or infinite, as a device tensor (read
        on the host only in the stop agreement that precedes every step)."""
        return ~torch.isfinite(torch.stack(self._step_losses)).all()

    def _find_non_finite(self, pending: int = 0) -> None:
        """Which batch of the step gave the first non-finite loss (read once, on failure);
        `pending`: batches of the step not yet counted in `batches_seen`."""
        first_batch = self.state.batches_seen + pending - len(self._step_losses) + 1
        for offset, loss in enumerate(self._step_losses):
            value = float(loss)
            if not math.isfinite(value):
                self._non_finite = (first_batch + offset, value)
                return

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

    def _train_loader(self, epoch: int, start: int) -> Any:
        return build_train_loader(
            self.cfg.loader,
            self.manifest,
            self.token_encoder,
            rank=self.rank,
            world_size=self.world_size,
            epoch=epoch,
            seed=self.seed,
            skip_batches=start,
            images=self.cfg.model.uses_image,
        )

    def _start_epoch(self, epoch: int) -> None:
        """Start `epoch`'s loader now: with workers, the gap between the last batch of one epoch
        and the first of the next (worker start-up, shard opening, the shuffle buffer filling)
        then overlaps the end-of-epoch evaluation and checkpoint instead of idling the device.
        Exactness is untouched: an epoch's stream depends on (seed, epoch, rank, worker) only."""
        self._next_epoch = (epoch, self._train_loader(epoch, 0).start())

    def _epoch_batches(self, epoch: int, start: int) -> Any:
        prefetched, self._next_epoch = self._next_epoch, None
        if prefetched is not None and prefetched[0] == epoch and start == 0:
            return prefetched[1]
        return self._train_loader(epoch, start).start()

    def _train_epoch(self, epoch: int, start: int, progress: bool) -> None:
        cfg, state, accum = self.train_cfg, self.state, self.train_cfg.grad_accum_steps
        num_batches = self.batches_per_epoch
        batches = self._epoch_batches(epoch, start)
        self.model.train()
        self._clock = time.perf_counter()  # train_seconds counts training, not evaluation or saving
        bar = progress_bar(total=num_batches, initial=start, desc=f"epoch {epoch}", unit="batch", disable=not progress)
        position = start
        for batch in batches:
            if position + 1 == num_batches and epoch + 1 < cfg.epochs:
                self._start_epoch(epoch + 1)  # its workers prefetch during this epoch's evaluation
            group_start = position - position % accum
            group_size = min(accum, num_batches - group_start)
            sync = position + 1 == group_start + group_size
            agreement = self._train_batch(batch, group_size, sync)
            position += 1
            state.batch_in_epoch, state.batches_seen = position, state.batches_seen + 1
            bar.update(1)
            if not sync:
                continue
            stop, non_finite = agreement or self.stop_requests.agreed(self.accelerator, self._step_non_finite())
            if non_finite:
                self._find_non_finite()
                self._fail_non_finite()
            self._step_losses = []
            grad_norm = self._optimizer_step()
            state.step += 1
            epoch_end = position == num_batches
            last = epoch_end and epoch == cfg.epochs - 1
            if state.step % cfg.log_every == 0 or epoch_end:
                self._log_train(grad_norm)
                bar.set_postfix(loss=f"{self._last_loss:.4f}")
            evaluate = (
                last
                or (cfg.eval_every == "epoch" and epoch_end)
                or (isinstance(cfg.eval_every, int) and state.step % cfg.eval_every == 0)
            )
            now = time.perf_counter()
            state.train_seconds += now - self._clock
            eval_record = self.evaluate_and_select() if evaluate else None
            step_checkpoint = cfg.checkpoint_every_steps and state.step % cfg.checkpoint_every_steps == 0
            if evaluate or step_checkpoint:
                self._checkpoint()
            if eval_record is not None and self.on_evaluation is not None:
                # `last`: the final evaluation, after which only the test of the best checkpoint runs.
                self.on_evaluation(
                    {
                        **eval_record,
                        "checkpoint": str(self.checkpoints_dir / checkpoint_name(state)),
                        "last": state.step >= self.total_steps,
                    }
                )
            self._clock = time.perf_counter()
            if stop:
                if not (evaluate or step_checkpoint):
                    self._checkpoint()
                self._stop_on_signal()
            if state.stopped_early:
                break
        bar.close()
        if position != num_batches and not state.stopped_early:
            raise RuntimeError(f"epoch {epoch}: the train loader gave {position} of {num_batches} batches")

    def _fail_non_finite(self) -> None:
        state = self.state
        where = (
            f"loss {self._non_finite[1]} at batch {self._non_finite[0]}"
            if self._non_finite
            else "a non-finite loss on another rank"
        )
        checkpoints = complete_checkpoints(self.checkpoints_dir)
        last = checkpoints[-1] if checkpoints else "none yet"
        raise NonFiniteLossError(
            f"{where} (epoch {state.epoch}, before optimizer step {state.step + 1}); no step was taken "
            f"with it. Last complete checkpoint: {last}. Lower train.lr or set train.max_grad_norm, "
            "then start again, or continue from that checkpoint with --resume PATH"
        )

    def _stop_on_signal(self) -> None:
        checkpoint = self.checkpoints_dir / checkpoint_name(self.state)
        received = self.stop_requests.received
        message = (
            f"stopped by {received.name if received else 'a signal to another rank'} at epoch "
            f"{self.state.epoch} step {self.state.step}; checkpoint {checkpoint}; "
            f"continue with --resume auto"
        )
        if self.main:
            logger.warning("%s", message)
        raise TrainingStopped(message, received)

    def _forget_unfinished_start(self) -> None:
        """Logs of an earlier start that died before its first checkpoint describe steps this
        start is about to redo: appending to them would show every step twice."""
        if self.main:
            (self.run_dir / METRICS_LOG).unlink(missing_ok=True)
            shutil.rmtree(self.run_dir / TENSORBOARD_DIR, ignore_errors=True)
        self.accelerator.wait_for_everyone()

    def _resume(self, resume: str | None) -> None:
        if self.main:
            clean_temp_folders(self.checkpoints_dir)
        self.accelerator.wait_for_everyone()
        checkpoint = resolve_resume(resume, self.checkpoints_dir)
        if checkpoint is None:
            if complete_checkpoints(self.checkpoints_dir):
                raise ConfigError(
                    f"{self.checkpoints_dir} already holds checkpoints; pass --resume auto "
                    "to continue that run, or set another `name` / `output_dir`"
                )
            self._forget_unfinished_start()
            return
        state = TrainerState.read(checkpoint / STATE_FILE)
        check_fits(checkpoint, state, self.world_size, self.param_shapes)
        read_label_set(checkpoint / INFERENCE_DIR).check_same(
            self.labels, f"checkpoint {checkpoint}", f"the data {self.manifest.path}"
        )
        self._check_rng_state(checkpoint)
        try:
            self.accelerator.load_state(str(checkpoint))
        except (RuntimeError, ValueError, KeyError) as exc:  # e.g. optimizer groups of another config
            reason = " ".join(str(exc).split())
            raise CheckpointError(f"{checkpoint}: does not fit the configured run ({reason})") from None
        self.state = state
        saved_config = checkpoint / INFERENCE_DIR / CONFIG_FILE
        if saved_config.is_file() and saved_config.read_text(encoding="utf-8") != self.config_text and self.main:
            logger.warning("resuming %s with a config that differs from the one it was saved with", checkpoint)
        self._truncate_log(self.state.batches_seen)
        if self.main:
            logger.info(
                "resumed from %s: epoch %d, batch %d, step %d",
                checkpoint,
                self.state.epoch,
                self.state.batch_in_epoch,
                self.state.step,
            )

    def fit(self, resume: str | None = None) -> dict[str, Any]:
        """Train (or resume), then evaluate the best checkpoint on dev and test."""
        self._resume(resume)
        if self.main:
            save_config(self.cfg, self.run_dir / CONFIG_FILE)
        try:
            self.trackers.start(self.state.step, flat_hparams(to_dict(self.cfg)))
        except TrackerWriteError as exc:
            raise self._log_write_failed(exc.where, exc.reason) from None
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
            with self.stop_requests:  # SIGTERM / SIGUSR2: checkpoint at the next step, then exit
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
            self.trackers.close()

    def _track_final(self, reports: dict[str, Any], test: Predictions, thresholds) -> None:
        """Test metrics, hparams and the evaluation figures of the best checkpoint, to the
        trackers; the figures are also kept in <run>/evaluation/<best>-test/ (as `evaluate`
        writes them)."""
        if not self.trackers.active:
            return
        suffixes = {"threshold_0.5": "", "tuned_on_dev": "_tuned", "argmax": ""}
        keys = ("accuracy", "f1_macro", "f1_weighted") if self.labels.multiclass else ("f1_macro", "f1_micro")
        final = {
            f"test/{key}{suffixes[protocol]}": reports["test"][protocol][key]
            for protocol in self.labels.protocols
            for key in keys
        }
        final["test/mean_average_precision"] = primary_report(reports["test"]).get("mean_average_precision")
        final = {key: value for key, value in final.items() if value is not None}
        out = self.run_dir / EVALUATION_DIR / f"{self.state.best_checkpoint}-test"
        label = f"{self.cfg.name} / {self.state.best_checkpoint} / test"
        figures = (
            write_figures(
                out,
                test.labels,
                test.probs,
                thresholds,
                reports["test"],
                self.run_dir / METRICS_LOG,
                label,
                f"training of {self.cfg.name}",
                self.labels,
            )
            if self.train_cfg.tracker_figures
            else []
        )
        try:
            self.trackers.finish(final, self.state.step, figures)
        except TrackerWriteError as exc:
            raise self._log_write_failed(exc.where, exc.reason) from None

    def final_evaluation(self) -> dict[str, Any]:
        """Test metrics of the BEST checkpoint (never the last weights), thresholds tuned on dev."""
        state = self.state
        if state.best_checkpoint is None:
            raise ConfigError(f"{self.run_dir}: no evaluation was made, so there is no best checkpoint")
        best = self.checkpoints_dir / state.best_checkpoint
        self.accelerator.load_state(str(best))
        dev, test = self.predict_split("dev"), self.predict_split("test")
        protocol = protocol_report(dev.labels, dev.probs, {"test": (test.labels, test.probs)}, self.labels)
        thresholds = protocol["thresholds"]
        reports = {"dev": protocol["dev"], "test": protocol["test"]}
        if self.main:  # the best checkpoint then carries all that `mmimdb-dist predict` needs
            documents: dict[str, Any] = {"preprocessing.json": dict(self.manifest.settings)}
            if thresholds is not None:  # a multiclass model answers with its arg-max
                documents["thresholds.json"] = {
                    "labels": list(self.labels.names),
                    "thresholds": [float(t) for t in thresholds],
                    "tuned_on": f"dev split of {self.manifest.path}",
                }
            add_inference_files(best, documents)
        result = {
            "select_metric": self.train_cfg.select_metric,
            "best_checkpoint": state.best_checkpoint,
            "best_epoch": state.best_epoch,
            "best_step": state.best_step,
            "best_dev_metric": state.best_metric,
            "stopped_early": state.stopped_early,
            "last_epoch": state.epoch,
            "last_step": state.step,
            "world_size": self.world_size,
            "mixed_precision": self.accelerator.mixed_precision,
            "num_parameters": self.num_parameters,
            "trainable_parameters": self.trainable_parameters,
            "train_seconds": state.train_seconds,
            "train_samples_per_s": state.samples_trained / state.train_seconds if state.train_seconds else None,
            **reports,
        }
        if self.main:
            write_metrics_json(self.run_dir / FINAL_METRICS, result)
            write_per_label_csv(self.run_dir / PER_LABEL_CSV, reports)
            self._track_final(reports, test, thresholds)
            self._log_record(
                {
                    "type": "final",
                    "batches_seen": state.batches_seen,
                    "step": state.step,
                    "best_checkpoint": state.best_checkpoint,
                    "test_f1_macro": primary_report(reports["test"])["f1_macro"],
                    **(
                        {"test_accuracy": reports["test"]["argmax"]["accuracy"]}
                        if self.labels.multiclass
                        else {"test_f1_macro_tuned": reports["test"]["tuned_on_dev"]["f1_macro"]}
                    ),
                }
            )
        self.accelerator.wait_for_everyone()
        return result


def train(
    cfg: ExperimentConfig, resume: str | None = None, on_evaluation: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Run `cfg` to the end on this process (one of many under a launcher); always tears down."""
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
