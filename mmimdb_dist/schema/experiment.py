"""The whole configuration of one run: every section, the seed and where the run is written."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigError
from .baseline import BaselineConfig
from .data import DataConfig, LoaderConfig, ShardConfig
from .loss import LossConfig
from .model import ModelConfig
from .names import check_relative_name
from .train import TrainConfig


@dataclass
class ExperimentConfig:
    """The whole configuration of one run."""

    name: str = "default"
    seed: int = 0
    # Runs are written to <output_dir>/<name>/.
    output_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    shard: ShardConfig = field(default_factory=ShardConfig)
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if not 0 <= self.seed < 2**32:  # numpy's and torch's seeding accept exactly this range
            raise ConfigError(f"seed: expected an integer in [0, 2**32), got {self.seed}")
        # Runs are written to <output_dir>/<name>: a name must not lead out of output_dir.
        check_relative_name(self.name, "name", "output_dir")
