"""What a run builds on every rank before its first step, in the order it must be built.

The data first (the shard set or a features set, checked for three non-empty splits), which
fixes the label set, the loss and the metrics; then the run folder (new, or this run's: locked
by the main rank for the run's life, `outputs.py`), the token encoder (`data/tokens.py`), the
model with its output bias at the train label frequencies, the loss with the train split's
class weights, the optimizer and schedule, and `accelerator.prepare()`.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from accelerate.utils import set_seed

from ..data.features import feature_spec
from ..data.plan import checked_batches_per_rank, optimizer_steps_per_epoch
from ..data.tokens import run_token_encoder
from ..data.training_data import load_training_manifest
from ..errors import DataError
from ..losses import build_loss, check_loss_fits
from ..models.registry import build_model, count_parameters
from ..outputs import check_output_dir, exclusive
from ..run.layout import checkpoints_dir_of, is_run_folder, owns_run_file, run_dir_of
from ..schema import ExperimentConfig, check_select_metric, dump_config
from .deepspeed_config import buffers_to, deepspeed_plugin, fill_deepspeed_config
from .optim import build_optimizer, build_scheduler
from .tracking import check_trackers_installed


class RunSetup:
    """The data, run folder, token encoder, model, loss, optimizer and schedule of one run."""

    def __init__(self, cfg: ExperimentConfig, accelerator: Any) -> None:
        self.cfg = cfg
        self.accelerator = accelerator
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
        # The label set and task kind travel with the data: they fix the output width, the
        # loss and the metrics (a loss or selection metric of the other kind is one line).
        self.labels = self.manifest.labels
        check_loss_fits(cfg.loss, self.labels.task, str(self.manifest.path))
        check_select_metric(cfg.train.select_metric, self.labels.task, str(self.manifest.path))
        check_trackers_installed(cfg.train.trackers)  # before a run folder exists
        # The run folder is new, or a run's (resumed, restarted); anything else is refused on
        # every rank alike, and the main rank holds its lock until the run ends (outputs.py).
        self._folder_lock = contextlib.ExitStack()
        check_output_dir(self.run_dir, "run folder", "a run folder", owns_run_file, "train", is_run_folder)
        if self.main:
            self._folder_lock.enter_context(exclusive(self.run_dir, "run folder", "train", record=True))
        accelerator.wait_for_everyone()
        self.token_encoder, vocab_size = run_token_encoder(cfg, self.manifest, self.run_dir, accelerator)
        self._build_model(vocab_size)

    def _build_model(self, vocab_size: int) -> None:
        cfg, accelerator = self.cfg, self.accelerator
        set_seed(self.seed)  # initialisation, dropout and modality dropout
        model = build_model(
            cfg.model,
            num_labels=len(self.labels),
            vocab_size=vocab_size,
            pad_id=self.token_encoder.pad_id,
            features=feature_spec(cfg.loader),
        )
        train = self.manifest.split("train")
        # Every classifier starts at the train label frequencies, not at p = 0.5 for every
        # label (whose first epoch would be spent learning the priors).
        model.init_output_bias(
            torch.tensor(train.label_counts, dtype=torch.float32) / train.num_samples, multiclass=self.labels.multiclass
        )
        self.trainable_parameters, self.num_parameters = count_parameters(model)
        if cfg.train.channels_last:
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stub lacks it
        self.loss_fn = build_loss(cfg.loss, train.label_counts, train.num_samples).to(accelerator.device)
        self.batches_per_epoch = checked_batches_per_rank(
            train.num_samples, self.world_size, cfg.loader.batch_size, cfg.loader.drop_last, str(self.manifest.path)
        )
        self.steps_per_epoch = optimizer_steps_per_epoch(self.batches_per_epoch, cfg.train.grad_accum_steps)
        self.total_steps = self.steps_per_epoch * cfg.train.epochs
        optimizer = build_optimizer(model, cfg.model, cfg.train)
        scheduler = build_scheduler(optimizer, cfg.train, self.total_steps)
        # What a checkpoint must hold to be resumed into this model (checked before loading).
        self.param_shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
        compiled: Any = torch.compile(model, backend=cfg.train.compile_backend) if cfg.train.compile else model
        fill_deepspeed_config(accelerator, cfg)
        self.model, self.optimizer, self.scheduler = accelerator.prepare(compiled, optimizer, scheduler)
        self.group_names = [group.get("name", f"group{i}") for i, group in enumerate(optimizer.param_groups)]
        # DeepSpeed's bf16 and fp16 modes run the model in that type without autocast: inputs
        # and floating-point buffers must match.
        self.deepspeed = deepspeed_plugin(accelerator) is not None
        half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(accelerator.mixed_precision)
        self.input_dtype = half if self.deepspeed and half is not None else torch.float32
        if self.input_dtype != torch.float32:
            buffers_to(self.model, self.input_dtype)
