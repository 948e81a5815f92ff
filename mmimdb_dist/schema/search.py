"""The search YAML's own sections (`configs/tune/*.yaml`): algorithm, scheduler, resources, Ray."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import ConfigError
from .names import check_relative_name


@dataclass
class SearchAlgorithmConfig:
    """How configurations are proposed."""

    # random: Ray's BasicVariantGenerator drawing from the domains; grid: every combination
    # of the `grid` domains (num_samples times); optuna: TPE with conditional loss parameters.
    algorithm: Literal["random", "grid", "optuna"] = "random"
    # Trials to run (for grid: repetitions of the whole grid).
    num_samples: int = 8
    # Seed of the searcher, so a search proposes the same trials when run again.
    seed: int | None = 0


@dataclass
class SchedulerConfig:
    """ASHA early stopping on a dev metric reported after every evaluation."""

    # asha: AsyncHyperBandScheduler; fifo: every trial runs to the end.
    name: Literal["asha", "fifo"] = "asha"
    # A key of the trainer's dev evaluation record; null: the trials' own `train.select_metric`
    # (from the overrides or the base config), so Tune ranks trials as the trainer picks checkpoints.
    metric: (
        Literal[
            "mean_average_precision",
            "roc_auc_macro",
            "f1_macro",
            "f1_micro",
            "f1_macro_tuned",
            "f1_micro_tuned",
            "accuracy",
            "f1_weighted",
            "top5_accuracy",
        ]
        | None
    ) = None
    mode: Literal["max", "min"] = "max"
    # Rungs are in dev evaluations (`train.eval_every` sets how often they happen).
    grace_period: int = 1
    reduction_factor: float = 2.0
    # Evaluations of a complete trial; null: computed from the base config and the data.
    max_t: int | None = None


@dataclass
class ResourcesConfig:
    """What one trial gets, and how many run at once."""

    cpu: float = 1.0
    gpu: float = 0.0
    # Trials running at the same time (null: as many as the resources allow).
    max_concurrent: int | None = None
    # > 1: each trial is a Ray Train TorchTrainer with this many workers (one process per
    # worker, `cpu`/`gpu` each), running the Accelerate trainer distributed.
    workers: int = 1


@dataclass
class RayConfig:
    """The local Ray started when no `--address` is given."""

    # CPUs / GPUs Ray may hand out (null CPUs: every core of the machine; null GPUs: Ray counts them).
    num_cpus: int | None = None
    num_gpus: int | None = None


@dataclass
class SearchConfig:
    """One search: `mmimdb-dist tune --config configs/tune/<name>.yaml`."""

    name: str = "search"
    # The training config every trial starts from (relative to the working directory).
    base_config: str = ""
    # Fixed changes to the base config for every trial (dotted keys), e.g. train.epochs: 2.
    overrides: dict[str, Any] = field(default_factory=dict)
    # Dotted key -> {domain: args}; `loss` -> {loss name: {parameter: domain or value}}.
    space: dict[str, Any] = field(default_factory=dict)
    search: SearchAlgorithmConfig = field(default_factory=SearchAlgorithmConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    # Searches are written to <storage_path>/<name>/ (made absolute: Ray requires it).
    storage_path: str = "runs/tune"

    def __post_init__(self) -> None:
        # Searches are written to <storage_path>/<name>: a name must not lead out of storage_path.
        check_relative_name(self.name, "name", "storage_path")
        if self.search.num_samples <= 0:
            raise ConfigError(f"search.num_samples: expected a positive integer, got {self.search.num_samples}")
        if self.scheduler.grace_period <= 0:
            raise ConfigError(f"scheduler.grace_period: expected a positive integer, got {self.scheduler.grace_period}")
        if self.scheduler.reduction_factor <= 1:
            raise ConfigError(
                f"scheduler.reduction_factor: expected a number > 1, got {self.scheduler.reduction_factor}"
            )
        if self.scheduler.max_t is not None and self.scheduler.max_t <= 0:
            raise ConfigError(f"scheduler.max_t: expected a positive integer or null, got {self.scheduler.max_t}")
        res = self.resources
        if res.cpu < 0 or res.gpu < 0 or res.cpu + res.gpu == 0:
            raise ConfigError(
                f"resources: expected cpu >= 0 and gpu >= 0, not both 0; got cpu {res.cpu}, gpu {res.gpu}"
            )
        if res.workers <= 0:
            raise ConfigError(f"resources.workers: expected a positive integer, got {res.workers}")
        if res.max_concurrent is not None and res.max_concurrent <= 0:
            raise ConfigError(
                f"resources.max_concurrent: expected a positive integer or null, got {res.max_concurrent}"
            )
        if not self.base_config:
            raise ConfigError("base_config: expected the path of a training config (configs/*.yaml)")
