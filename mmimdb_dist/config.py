"""Typed experiment configuration: dataclasses, loaded from YAML, overridden from the CLI.

Why dataclasses and a strict loader instead of a free-form dict: a sweep that silently
trains with a misspelt key (`train.lr_rate`) at its default is the most expensive kind of
bug on a cluster. Every key is checked against the schema; an unknown key names the valid
ones, a wrong type names the expected one, and the resolved config is written next to
every output so a run can always be reproduced from its own folder.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from .atomic import atomic_write_text
from .baseline import BaselineConfig
from .errors import ConfigError  # its home is errors.py; `from mmimdb_dist.config import ConfigError` works
from .losses import LossConfig
from .models.config import ModelConfig
from .train.config import TrainConfig


# --------------------------------------------------------------------------- schema


@dataclass
class DataConfig:
    """Where the raw MM-IMDb lives and how a raw movie becomes one sample."""

    # Folder holding split.json and dataset/ (the `mmimdb/` folder of the archive).
    raw_dir: str = "data/synth/mmimdb"
    # MM-IMDb gives several plot summaries per movie; which text becomes the sample.
    plot_policy: Literal["longest", "first", "all"] = "longest"
    # Turn a skipped movie (no plot, no poster, no kept genre, ...) into an error.
    strict: bool = False


@dataclass
class ShardConfig:
    """How raw movies are packed into WebDataset tar shards."""

    out_dir: str = "shards/synth"
    # Posters are resized once at sharding time so training never decodes full-size JPEGs.
    poster_short_side: int = 256
    jpeg_quality: int = 90
    # Shard count per split is max(min_shards, ceil(samples / samples_per_shard)).
    # Train shards are split over ranks x loader workers; 8 keeps small sets streamable by
    # 2 ranks x 4 workers, and real MM-IMDb gets 61 train shards at 256 samples each.
    samples_per_shard: int = 256
    min_shards: int = 8
    # Processes used to encode posters; 0 means one per CPU core.
    workers: int = 0
    # false: a movie whose poster is missing or does not decode is kept as a plot-only sample
    # (for text models; fusion models read it as a missing poster) and counted in the
    # manifest's `repaired` as kept_without_poster, instead of being skipped.
    require_poster: bool = True

    def __post_init__(self) -> None:
        _positive(self, "poster_short_side", "samples_per_shard", "min_shards")
        _in_range(self, "jpeg_quality", 1, 100)
        if self.workers < 0:
            raise ConfigError(f"shard.workers: expected >= 0, got {self.workers}")


# Longer than any MM-IMDb plot (the longest are a few thousand word pieces); the bound stops
# a typo (512000) from padding every batch to a size that exhausts memory.
MAX_TEXT_LENGTH = 16_384


@dataclass
class LoaderConfig:
    """Streaming loaders over the shards: shuffling, augmentation, tokenisation, batching."""

    shards_dir: str = "shards/synth"
    # Train on cached encoder outputs (`mmimdb-dist cache-features --out DIR`) instead of the
    # shards: only the fusion head is built and trained, many times faster.
    features_dir: Optional[str] = None
    batch_size: int = 32
    eval_batch_size: int = 64
    num_workers: int = 2
    # Samples held in the shuffle buffer of each worker.
    shuffle_buffer: int = 1000
    # Poster side in pixels; null: the image encoder's native size (224 for the ResNets, the
    # image processor's or the weights' size for hf, clip and torchvision backbones).
    image_size: Optional[int] = None
    # Train-time augmentation (off for evaluation and prediction): random resized crops and
    # flips in the workers, and brightness/contrast/saturation jitter of this strength on the
    # device (0: none), drawn per sample from (seed, epoch, id) so a resumed epoch is identical.
    augment: bool = True
    color_jitter: float = 0.0
    # Word pieces kept per plot (BERT-style encoders stop at 512).
    max_text_length: int = 512
    # Group plots of similar length into a batch to cut padding (text cost ~ tokens).
    bucket_by_length: bool = True
    # Batches' worth of samples pooled and sorted by length before batching.
    bucket_pool_batches: int = 8
    # Resample train shards so every rank gets the same number of batches per epoch.
    # Batches per rank per epoch = floor(train samples / (world size * batch_size)).
    drop_last: bool = True

    def __post_init__(self) -> None:
        _positive(self, "batch_size", "eval_batch_size", "shuffle_buffer",
                  "max_text_length", "bucket_pool_batches")
        if self.max_text_length > MAX_TEXT_LENGTH:
            raise ConfigError(f"loader.max_text_length: {self.max_text_length} is more than {MAX_TEXT_LENGTH} "
                              "tokens; plots are ~150 word pieces (7 % over 512), and every batch is padded "
                              "to its longest plot")
        if not 0.0 <= self.color_jitter < 1.0:
            raise ConfigError(f"loader.color_jitter: expected a strength in [0, 1), got {self.color_jitter}")
        if self.image_size is not None and self.image_size <= 0:
            raise ConfigError(f"loader.image_size: expected a positive number or null, got {self.image_size}")
        if self.num_workers < 0:
            raise ConfigError(f"loader.num_workers: expected >= 0, got {self.num_workers}")


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
        parts = self.name.replace("\\", "/").split("/")
        if (not self.name or self.name.startswith(("/", "~")) or "\x00" in self.name
                or any(part in ("", ".", "..") for part in parts)):
            raise ConfigError(f"name: {self.name!r}: expected a relative path inside output_dir "
                              "(no leading / or ~, no empty, '.' or '..' parts)")


def _positive(obj: Any, *names: str) -> None:
    section = _SECTION_NAMES.get(type(obj).__name__, type(obj).__name__)
    for name in names:
        value = getattr(obj, name)
        if value <= 0:
            raise ConfigError(f"{section}.{name}: expected a positive number, got {value}")


def _in_range(obj: Any, name: str, low: float, high: float) -> None:
    section = _SECTION_NAMES.get(type(obj).__name__, type(obj).__name__)
    value = getattr(obj, name)
    if not low <= value <= high:
        raise ConfigError(f"{section}.{name}: expected a value in [{low}, {high}], got {value}")


_SECTION_NAMES = {"DataConfig": "data", "ShardConfig": "shard", "LoaderConfig": "loader"}


# --------------------------------------------------------------------------- loading

T = typing.TypeVar("T")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(tp))
        return f"{origin.__name__}[{args}]"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            hint = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {_describe(value)}{extra}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except ConfigError as exc:
                if "finite number" in str(exc):  # the right type, a value no branch accepts
                    raise
                continue
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {_describe(value)}")
    if origin in (list, tuple, Sequence):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {_describe(value)}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        items = [_coerce(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {_describe(value)}")
        key_tp, val_tp = typing.get_args(tp) or (Any, Any)
        return {_coerce(key_tp, k, key): _coerce(val_tp, v, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        # YAML 1.1 reads `3e-4` (no dot) as a string; accept what float() accepts.
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None:
            if not math.isfinite(number):  # NaN passes every comparison in the range checks
                raise ConfigError(f"{key}: expected a finite number, got {_describe(value)}")
            return number
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        if isinstance(value, tp):
            return value
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {_describe(value)}")


def from_dict(cls: type[T], data: Any, prefix: str = "") -> T:
    """Build dataclass `cls` from a mapping, checking every key and type."""
    where = prefix or "config"
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of keys to values, got {_describe(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        full = f"{prefix}.{name}" if prefix else str(name)
        if name not in fields:
            valid = sorted(fields)
            hint = difflib.get_close_matches(str(name), valid, n=1)
            extra = f"; did you mean {hint[0]!r}?" if hint else ""
            raise ConfigError(f"unknown config key {full!r}{extra} Valid keys"
                              f"{' in ' + repr(prefix) if prefix else ''}: {', '.join(valid)}")
        kwargs[name] = _coerce(hints[name], value, full)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.lr=3e-4` -> (['train', 'lr'], 3e-4); the value is read as a YAML scalar."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. loader.batch_size=16")
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text!r}: expected a dotted key such as loader.batch_size")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text!r}: value is not valid YAML: {' '.join(str(exc).split())}") from None
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"--set {text!r}: {part!r} is a value, not a section")
            node = child
        node[path[-1]] = value
    return data


class _UniqueKeyLoader(yaml.SafeLoader):
    """The safe loader, refusing a key written twice in one mapping (YAML keeps the last one
    silently, so `lr: 0.1` ... `lr: 0.001` would train at whichever came second)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:  # an unhashable key; the base class reports it
                continue
            if first != key_node.start_mark.line + 1:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} written twice (lines {first} and "
                    f"{key_node.start_mark.line + 1}); keep one", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Safe YAML only: a `!!python/object` tag in a config is an error, never code execution."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path}: is a folder; expected a YAML file (e.g. configs/early_fusion.yaml)") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read ({exc.strerror or exc})") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
        raise ConfigError(f"{path}: {where}not valid YAML (safe loader; Python tags are refused): "
                          f"{' '.join(str(problem).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


# A config may start from others and state only what differs: `base: early_fusion.yaml` (or
# a list, merged in order), relative to the config's own folder.
BASE_KEY = "base"


def merge_config_data(base: dict[str, Any], child: Mapping[str, Any]) -> dict[str, Any]:
    """`child` over `base`: sections merge key by key, any other value (lists included) replaces."""
    merged = dict(base)
    for key, value in child.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_config_data(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def read_config_data(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The mapping of a config file with its `base:` configs merged under it."""
    path = Path(path)
    data = read_yaml(path)
    if BASE_KEY not in data:
        return data
    bases = data.pop(BASE_KEY)
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not bases or not all(isinstance(b, str) and b for b in bases):
        raise ConfigError(f"{path}: {BASE_KEY}: expected a config file name or a list of them, "
                          f"relative to {path.parent}, got {_describe(bases)}")
    merged: dict[str, Any] = {}
    for base in bases:
        base_path = path.parent / base
        chain = (*_chain, path.resolve())
        if base_path.resolve() in chain:
            cycle = " -> ".join(str(p) for p in (*chain, base_path.resolve()))
            raise ConfigError(f"{path}: {BASE_KEY}: {base!r} leads back to itself ({cycle})")
        if not base_path.is_file():
            raise ConfigError(f"{path}: {BASE_KEY}: {base_path} does not exist "
                              f"(a base is named relative to {path.parent})")
        merged = merge_config_data(merged, read_config_data(base_path, chain))
    return merge_config_data(merged, data)


def load_config(path: str | Path | None = None, overrides: Sequence[str] = (),
                cls: type[T] = ExperimentConfig) -> T:  # type: ignore[assignment]
    """Load `path` (or the defaults) over its `base:` configs, apply `--set` overrides, and
    validate everything."""
    data = read_config_data(path) if path else {}
    data = apply_overrides(data, overrides)
    try:
        return from_dict(cls, data)
    except ConfigError as exc:
        if path:
            raise ConfigError(f"{path}: {exc}") from None
        raise


def dump_config(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def save_config(cfg: Any, directory: str | Path, filename: str = "config.yaml") -> Path:
    """Write the resolved config next to an output, atomically."""
    target = Path(directory) / filename
    atomic_write_text(target, dump_config(cfg))
    return target
