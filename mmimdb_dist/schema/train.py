"""`train:` section of the experiment config. No torch import: validating a YAML stays cheap."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import ConfigError

SCHEDULES: tuple[str, ...] = ("cosine", "linear", "constant")
# Dev metrics that can pick the best checkpoint, by the data's task kind; "_tuned" ones use
# thresholds tuned on dev itself (multi-label only: a multiclass answer has no threshold).
SELECT_METRICS_BY_TASK: dict[str, tuple[str, ...]] = {
    "multilabel": (
        "mean_average_precision",
        "roc_auc_macro",
        "f1_macro",
        "f1_micro",
        "f1_macro_tuned",
        "f1_micro_tuned",
    ),
    "multiclass": (
        "mean_average_precision",
        "roc_auc_macro",
        "f1_macro",
        "f1_micro",
        "accuracy",
        "f1_weighted",
        "top5_accuracy",
    ),
}
SELECT_METRICS: tuple[str, ...] = tuple(dict.fromkeys(m for ms in SELECT_METRICS_BY_TASK.values() for m in ms))


def check_select_metric(metric: str, task: str, where: str, key: str = "train.select_metric") -> None:
    """One line when a selection metric does not exist for the data's task kind."""
    fitting = SELECT_METRICS_BY_TASK[task]
    if metric not in fitting:
        raise ConfigError(
            f"{key}: {metric!r} is not a metric of the {task} task of {where}; expected one of {', '.join(fitting)}"
        )


PRECISIONS: tuple[str, ...] = ("auto", "no", "bf16", "fp16")
# Experiment trackers Accelerate knows by name (`log_with`); each but tensorboard is an extra
# (pip install mlflow-skinny / wandb / aim / ...).
TRACKERS: tuple[str, ...] = (
    "tensorboard",
    "mlflow",
    "wandb",
    "aim",
    "comet_ml",
    "clearml",
    "dvclive",
    "swanlab",
    "trackio",
)


@dataclass
class TrainConfig:
    """Optimisation, precision, evaluation cadence and checkpointing of one run."""

    epochs: int = 10
    # Heads and every part trained from scratch (BiLSTM, the small CNN, fusion layers): these
    # start from nothing and need large steps (1e-3 left a BiLSTM at the genre priors).
    lr: float = 3e-3
    # Pretrained encoders (Hugging Face text, ImageNet ResNet): a lower rate keeps what they know.
    encoder_lr: float = 3e-5
    # AdamW decoupled decay on weight matrices only; biases, norms and 1-d embeddings get none.
    weight_decay: float = 0.01
    # Linear warmup in optimizer steps; `warmup_ratio` (of all steps) is used when this is 0.
    warmup_steps: int = 0
    warmup_ratio: float = 0.05
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    # Micro-batches per optimizer step; the effective batch is batch_size x world size x this.
    grad_accum_steps: int = 1
    # Gradient norm clipping; null turns it off.
    max_grad_norm: float | None = 1.0
    # auto: bf16 autocast on a GPU that has it (Ampere and later), fp16 with loss scaling on
    # older GPUs (V100, T4), fp32 on CPU; under DeepSpeed its JSON decides. no / bf16 / fp16 force
    # one (bf16 also runs on CPU: slower than fp32 there, but the same code path). null: whatever
    # the launcher says (`accelerate launch --mixed_precision` or its config file).
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] | None = "auto"
    # torch.compile the model (first steps are slow while it compiles). The backend is
    # torch's: "inductor" generates kernels; "aot_eager" traces without code generation
    # (a quick check that a model compiles, and the way to tell a compiler bug from a model bug).
    compile: bool = False
    compile_backend: str = "inductor"
    # channels_last memory format for the image encoder (faster convolutions on GPUs).
    channels_last: bool = False
    # "epoch", or evaluate on dev every N optimizer steps (and at the end of training).
    eval_every: int | Literal["epoch"] = "epoch"
    # The dev metric that picks the best checkpoint, drives early stopping and is Tune's
    # default metric. mAP (threshold-free) by default: F1 at 0.5 stays flat while a model is
    # still under-confident (it predicts Drama alone), so runs stopped and kept early weights
    # although the ranking of genres was still improving. See SELECT_METRICS.
    select_metric: Literal[
        "mean_average_precision",
        "roc_auc_macro",
        "f1_macro",
        "f1_micro",
        "f1_macro_tuned",
        "f1_micro_tuned",
        "accuracy",
        "f1_weighted",
        "top5_accuracy",
    ] = "mean_average_precision"
    # Stop after this many evaluations without a better `select_metric` (0: never stop early).
    early_stopping_patience: int = 0
    # Also checkpoint every N optimizer steps (0: only at evaluations), so a killed run
    # resumes mid-epoch.
    checkpoint_every_steps: int = 0
    # Most recent checkpoints kept on disk; the best one is always kept in addition.
    keep_checkpoints: int = 2
    # Log loss, learning rates and throughput every N optimizer steps.
    log_every: int = 10
    # Seed of data order, augmentation and initialisation; null uses the top-level `seed`.
    seed: int | None = None
    # torch threads per process; null: OMP_NUM_THREADS when set (a Slurm job sets it from its
    # CPUs per task), else the CPUs this process may run on (its affinity mask) divided among
    # the ranks of this node. Set so that a run's speed and its float results do not depend
    # on what torch guesses on a shared machine.
    num_threads: int | None = None
    # Seconds a rank waits for the others in a collective before the run fails (the
    # 30-minute default turns a crashed rank into a long silent hang).
    dist_timeout_s: int = 600
    # DDP's search for parameters without a gradient after every backward (an extra pass over
    # the autograd graph each step). null: only for a model that says it can leave some unused;
    # every built-in model feeds all its trainable parameters every step (the missing-modality
    # embeddings through torch.where), so none needs it. true for a custom model that does.
    find_unused_parameters: bool | None = None
    # Experiment trackers, through Accelerate's tracker API: the config as hyperparameters at
    # the start, train and dev scalars, the final test metrics, and the evaluation figures.
    # tensorboard writes to <run>/tensorboard; mlflow to MLFLOW_TRACKING_URI (./mlruns when
    # unset); wandb, aim and the others to their own defaults. [] logs to metrics.jsonl only.
    trackers: list[str] = field(default_factory=lambda: ["tensorboard"])
    # The experiment (MLflow), project (W&B) or repository name the run is filed under; the run
    # itself is named after the config's `name`.
    tracker_project: str = "mmimdb-dist"
    # Extra keyword arguments per tracker, e.g. {wandb: {entity: my-team, tags: [fusion]}}.
    tracker_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Draw the best checkpoint's evaluation figures at the end of the run (into
    # <run>/evaluation/<best>-test/) and log them to the trackers: a few seconds of matplotlib
    # per run, which a sweep of many short runs may rather skip (`mmimdb-dist evaluate` draws
    # them for any checkpoint later).
    tracker_figures: bool = True

    def __post_init__(self) -> None:
        if self.seed is not None and not 0 <= self.seed < 2**32:
            raise ConfigError(f"train.seed: expected an integer in [0, 2**32) or null, got {self.seed}")
        for name in ("epochs", "grad_accum_steps", "keep_checkpoints", "log_every", "dist_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"train.{name}: expected a positive integer, got {getattr(self, name)}")
        for name in ("lr", "encoder_lr"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"train.{name}: expected a positive learning rate, got {getattr(self, name)}")
        for name in ("weight_decay", "warmup_steps", "early_stopping_patience", "checkpoint_every_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name}: expected >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"train.warmup_ratio: expected a value in [0, 1), got {self.warmup_ratio}")
        if self.num_threads is not None and self.num_threads <= 0:
            raise ConfigError(f"train.num_threads: expected a positive integer or null, got {self.num_threads}")
        if self.select_metric not in SELECT_METRICS:
            raise ConfigError(
                f"train.select_metric: unknown {self.select_metric!r}; expected one of {', '.join(SELECT_METRICS)}"
            )
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ConfigError(f"train.max_grad_norm: expected a positive number or null, got {self.max_grad_norm}")
        for name in self.trackers:
            if name not in TRACKERS:
                raise ConfigError(f"train.trackers: unknown tracker {name!r}; expected any of {', '.join(TRACKERS)}")
        if len(set(self.trackers)) != len(self.trackers):
            raise ConfigError(f"train.trackers: {self.trackers} names a tracker twice")
        for name in self.tracker_kwargs:
            if name not in self.trackers:
                raise ConfigError(f"train.tracker_kwargs: {name!r} is not one of train.trackers {self.trackers}")
        if self.eval_every != "epoch" and (not isinstance(self.eval_every, int) or self.eval_every <= 0):
            raise ConfigError(
                f"train.eval_every: expected 'epoch' or a positive number of steps, got {self.eval_every!r}"
            )
