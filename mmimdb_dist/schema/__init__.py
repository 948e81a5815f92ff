"""The typed configuration: every config section as a dataclass, and its strict YAML loader.

Torch-free on purpose (no torch, numpy or scikit-learn import): validating a YAML file, a
`--set` override or a whole search space stays cheap, and every other module can import
the schema without an import cycle. Errors are `errors.ConfigError`, one line each.
"""

from .baseline import (
    BaselineConfig,
)
from .data import (
    MAX_TEXT_LENGTH,
    TABLE_SUFFIXES,
    DataConfig,
    LoaderConfig,
    ShardConfig,
    TableColumns,
)
from .experiment import (
    ExperimentConfig,
)
from .loading import (
    BASE_KEY,
    apply_overrides,
    dump_config,
    from_dict,
    load_config,
    merge_config_data,
    parse_override,
    read_config_data,
    read_yaml,
    save_config,
    to_dict,
)
from .loss import (
    LOSS_NAMES,
    MULTICLASS_LOSSES,
    MULTILABEL_LOSSES,
    LossConfig,
)
from .model import (
    FREEZE_LEVELS,
    HF_KINDS,
    IMAGE_KINDS,
    IMAGE_POOLINGS,
    LSTM_POOLINGS,
    MODEL_NAMES,
    TEXT_KINDS,
    FusionConfig,
    ImageEncoderConfig,
    ModelConfig,
    TextEncoderConfig,
)
from .search import (
    RayConfig,
    ResourcesConfig,
    SchedulerConfig,
    SearchAlgorithmConfig,
    SearchConfig,
)
from .train import (
    PRECISIONS,
    SCHEDULES,
    SELECT_METRICS,
    SELECT_METRICS_BY_TASK,
    TRACKERS,
    TrainConfig,
    check_select_metric,
)

__all__ = [
    "BASE_KEY",
    "FREEZE_LEVELS",
    "HF_KINDS",
    "IMAGE_KINDS",
    "IMAGE_POOLINGS",
    "LOSS_NAMES",
    "LSTM_POOLINGS",
    "MAX_TEXT_LENGTH",
    "MODEL_NAMES",
    "MULTICLASS_LOSSES",
    "MULTILABEL_LOSSES",
    "PRECISIONS",
    "SCHEDULES",
    "SELECT_METRICS",
    "SELECT_METRICS_BY_TASK",
    "TABLE_SUFFIXES",
    "TEXT_KINDS",
    "TRACKERS",
    "BaselineConfig",
    "DataConfig",
    "ExperimentConfig",
    "FusionConfig",
    "ImageEncoderConfig",
    "LoaderConfig",
    "LossConfig",
    "ModelConfig",
    "RayConfig",
    "ResourcesConfig",
    "SchedulerConfig",
    "SearchAlgorithmConfig",
    "SearchConfig",
    "ShardConfig",
    "TableColumns",
    "TextEncoderConfig",
    "TrainConfig",
    "apply_overrides",
    "check_select_metric",
    "dump_config",
    "from_dict",
    "load_config",
    "merge_config_data",
    "parse_override",
    "read_config_data",
    "read_yaml",
    "save_config",
    "to_dict",
]
