"""Strict YAML loading of the typed config: `base:` composition, `--set` overrides, writing.

Why dataclasses and a strict loader instead of a free-form dict: a sweep that silently
trains with a misspelt key (`train.lr_rate`) at its default is the most expensive kind of
bug on a cluster. Every key is checked against the schema; an unknown key names the valid
ones, a wrong type names the expected one, and the resolved config is written next to
every output so a run can always be reproduced from its own folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from ..atomic import atomic_write_text
from ..errors import ConfigError
from ..userfiles import NotRegularFile, read_regular_text
from .experiment import ExperimentConfig

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = typing.TypeVar("T", bound="DataclassInstance")


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
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
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
            with contextlib.suppress(ValueError):
                number = float(value)
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
            raise ConfigError(
                f"unknown config key {full!r}{extra} Valid keys"
                f"{' in ' + repr(prefix) if prefix else ''}: {', '.join(valid)}"
            )
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


def _is_section(path: Sequence[str]) -> bool:
    """Whether the dotted `path` names a section (a dataclass) of the experiment config."""
    cls: Any = ExperimentConfig
    for part in path:
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            return False
        hints = typing.get_type_hints(cls)
        if part not in hints:
            return False
        cls = hints[part]
    return isinstance(cls, type) and dataclasses.is_dataclass(cls)


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """`--set KEY=VALUE` overrides applied in order; a mistake names the `--set` that made it."""
    setters: dict[tuple[str, ...], str] = {}  # which --set gave a path its value
    for text in overrides:
        path, value = parse_override(text)
        if _is_section(path) and not isinstance(value, dict):
            dotted = ".".join(path)
            raise ConfigError(f"--set {text!r}: {dotted!r} is a section, not a value; set its keys: {dotted}.KEY=VALUE")
        node = data
        for depth, part in enumerate(path[:-1], start=1):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                earlier = setters.get(tuple(path[:depth]))
                source = f" (set by --set {earlier!r})" if earlier else ""
                raise ConfigError(f"--set {text!r}: {part!r} is a value, not a section{source}")
            node = child
        node[path[-1]] = value
        setters[tuple(path)] = text
    return data


class _UniqueKeyLoader(yaml.SafeLoader):
    """The safe loader, refusing a key written twice in one mapping (YAML keeps the last one
    silently, so `lr: 0.1` ... `lr: 0.001` would train at whichever came second)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:  # an unhashable key; the base class reports it
                continue
            if first != key_node.start_mark.line + 1:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} written twice (lines {first} and {key_node.start_mark.line + 1}); keep one",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Safe YAML only: a `!!python/object` tag in a config is an error, never code execution."""
    path = Path(path)
    try:
        text = read_regular_text(path)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except NotRegularFile as exc:
        raise ConfigError(
            f"config file {path}: {exc.strerror}; expected a YAML file (e.g. configs/early_fusion.yaml)"
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read ({exc.strerror or exc})") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
        raise ConfigError(
            f"{path}: {where}not valid YAML (safe loader; Python tags are refused): {' '.join(str(problem).split())}"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


# A config may start from others and state only what differs: `base: early_fusion.yaml` (or
# a list, merged in order), relative to the config's own folder.
BASE_KEY = "base"
# How deep `base:` configs may chain (a config, its base, the base's base, ...).
MAX_BASE_DEPTH = 32


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
        raise ConfigError(
            f"{path}: {BASE_KEY}: expected a config file name or a list of them, "
            f"relative to {path.parent}, got {_describe(bases)}"
        )
    if len(_chain) >= MAX_BASE_DEPTH:
        raise ConfigError(
            f"{path}: {BASE_KEY}: more than {MAX_BASE_DEPTH} configs deep (from {_chain[0]}); a chain "
            "that long is a generated loop, not a config"
        )
    merged: dict[str, Any] = {}
    for base in bases:
        base_path = path.parent / base
        chain = (*_chain, path.resolve())
        if base_path.resolve() in chain:
            cycle = " -> ".join(str(p) for p in (*chain, base_path.resolve()))
            raise ConfigError(f"{path}: {BASE_KEY}: {base!r} leads back to itself ({cycle})")
        if not base_path.exists():
            raise ConfigError(
                f"{path}: {BASE_KEY}: {base_path} does not exist (a base is named relative to {path.parent})"
            )
        merged = merge_config_data(merged, read_config_data(base_path, chain))
    return merge_config_data(merged, data)


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Load `path` (or the defaults) over its `base:` configs, apply `--set` overrides, and
    validate everything."""
    data = read_config_data(path) if path else {}
    data = apply_overrides(data, overrides)
    try:
        return from_dict(ExperimentConfig, data)
    except ConfigError as exc:
        if path:
            raise ConfigError(f"{path}: {exc}") from None
        raise


# Keys of `model.text` that only one family of text encoder reads (schema/model.py).
_BILSTM_ONLY = ("embed_dim", "hidden", "num_layers", "attention_dim", "lstm_pooling", "embed_init_std",
                "vocab_min_freq", "vocab_max_size")  # fmt: skip
_PRETRAINED_ONLY = ("name", "pretrained", "pooling", "freeze_layers", "projected", "hf_config")


def used_config(cfg: Any) -> dict[str, Any]:
    """The resolved config of experiment `cfg` as a mapping, without what its model never reads:
    the text encoder of an image-only model, the image encoder of a text-only one, and the keys
    of the other text-encoder family (the BiLSTM's for a Hugging Face or CLIP-family encoder, and
    the other way round). Read back, the dropped keys take their defaults, which nothing reads."""
    data = to_dict(cfg)
    model = data.get("model")
    if not isinstance(model, dict) or not hasattr(cfg, "model"):
        return data
    if not cfg.model.uses_text:
        model.pop("text", None)
    elif isinstance(model.get("text"), dict):
        unused = _BILSTM_ONLY if cfg.model.text.kind != "bilstm" else _PRETRAINED_ONLY
        for key in unused:
            model["text"].pop(key, None)
    if not cfg.model.uses_image:
        model.pop("image", None)
    return data


def dump_config(cfg: Any) -> str:
    """The YAML a run saves (its `config.yaml`, the checkpoints' copies): `used_config`."""
    return yaml.safe_dump(used_config(cfg), sort_keys=False)


def save_config(cfg: Any, target: str | Path) -> Path:
    """Write the resolved config to `target` (a run's or an output's `run.layout.CONFIG_FILE`), atomically."""
    target = Path(target)
    atomic_write_text(target, dump_config(cfg))
    return target
