"""The typed configuration: every config section as a dataclass, and its strict YAML loader.

Torch-free on purpose (no torch, numpy or scikit-learn import): validating a YAML file, a
`--set` override or a whole search space stays cheap, and every other module can import
the schema without an import cycle. Errors are `errors.ConfigError`, one line each.
"""

from .baseline import (  # noqa: F401
    BaselineConfig,
)
from .data import (  # noqa: F401
    MAX_TEXT_LENGTH,
    TABLE_SUFFIXES,
    DataConfig,
    LoaderConfig,
    ShardConfig,
    TableColumns,
)
from .experiment import (  # noqa: F401
    ExperimentConfig,
)
from .loading import (  # noqa: F401
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
from .loss import (  # noqa: F401
    LOSS_NAMES,
    MULTICLASS_LOSSES,
    MULTILABEL_LOSSES,
    LossConfig,
)
from .model import (  # noqa: F401
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
from .search import (  # noqa: F401
    RayConfig,
    ResourcesConfig,
    SchedulerConfig,
    SearchAlgorithmConfig,
    SearchConfig,
)
from .train import (  # noqa: F401
    PRECISIONS,
    SCHEDULES,
    SELECT_METRICS,
    SELECT_METRICS_BY_TASK,
    TRACKERS,
    TrainConfig,
    check_select_metric,
)
