"""The search YAML (`configs/tune/*.yaml`): what is searched, how, and on what resources.

A search is a base training config plus a `space` of dotted config keys, each with one
domain (`choice`, `grid`, `uniform`, `loguniform`, `randint`). The loss is special: it is a
categorical choice whose members carry their own parameters (focal's gamma and alpha,
weighted BCE's pos_weight cap, ASL's gammas and clip), and a parameter only exists in a
trial that picked its loss. Optuna sees that structure directly (define-by-run: the
parameter is only suggested when its loss is chosen, so TPE does not model noise); the
random and grid searchers sample every parameter and `trial_overrides` keeps the ones of
the chosen loss, which is the same distribution over effective configs.

Everything is checked before Ray starts, against the training schema itself: an unknown
key, a domain of the wrong shape, or a value the training config would refuse (a dropout
of 1.5, a `model.name` that does not exist) is one error naming the file and the key.
No Ray import here: validating a search stays cheap.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.plan import optimizer_steps_per_epoch, train_batches_per_rank
from ..errors import ConfigError
from ..schema import (
    LOSS_NAMES,
    ExperimentConfig,
    SearchConfig,
    TrainConfig,
    apply_overrides,
    from_dict,
    read_config_data,
    read_yaml,
)

DOMAINS: tuple[str, ...] = ("choice", "grid", "uniform", "loguniform", "randint")
# The parameters each loss reads (LossConfig fields); a loss not listed here reads none.
LOSS_PARAMS: dict[str, tuple[str, ...]] = {
    "bce": (),
    "weighted_bce": ("pos_weight_max",),
    "focal": ("gamma", "alpha"),
    "asl": ("gamma_pos", "gamma_neg", "clip"),
    "cross_entropy": ("label_smoothing",),
}
LOSS_KEY = "loss.name"


# --------------------------------------------------------------------------- domains


@dataclass(frozen=True)
class Domain:
    """One searched value: `kind` from DOMAINS and its arguments."""

    kind: str
    args: tuple[Any, ...]

    def candidates(self) -> list[Any]:
        """Values that a trial can get at the domain's edges, to check against the schema."""
        if self.kind in ("choice", "grid"):
            return list(self.args)
        if self.kind == "randint":
            return [self.args[0], self.args[1] - 1]
        return [self.args[0], self.args[1]]

    def to_ray(self) -> Any:
        from ray import tune

        if self.kind == "choice":
            return tune.choice(list(self.args))
        if self.kind == "grid":
            return tune.grid_search(list(self.args))
        if self.kind == "uniform":
            return tune.uniform(*self.args)
        if self.kind == "loguniform":
            return tune.loguniform(*self.args)
        return tune.randint(*self.args)

    def suggest(self, trial: Any, name: str) -> Any:
        """The Optuna define-by-run counterpart of `to_ray`."""
        if self.kind == "choice":
            return trial.suggest_categorical(name, list(self.args))
        if self.kind == "uniform":
            return trial.suggest_float(name, *self.args)
        if self.kind == "loguniform":
            return trial.suggest_float(name, *self.args, log=True)
        if self.kind == "randint":  # Ray's upper bound is exclusive, Optuna's inclusive
            return trial.suggest_int(name, self.args[0], self.args[1] - 1)
        raise ConfigError(f"{name}: a grid domain needs search.algorithm grid or random")


def parse_domain(value: Any, key: str) -> Domain:
    """`{uniform: [0.0, 0.5]}` -> Domain; every malformed shape is an error naming `key`."""
    expected = f"a mapping with one of {', '.join(DOMAINS)}, e.g. {{choice: [64, 128]}}"
    if not isinstance(value, dict) or len(value) != 1:
        raise ConfigError(f"{key}: expected {expected}, got {value!r}")
    ((kind, args),) = value.items()
    if kind not in DOMAINS:
        hint = difflib.get_close_matches(str(kind), DOMAINS, n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(f"{key}: unknown domain {kind!r}{extra}; expected one of {', '.join(DOMAINS)}")
    if not isinstance(args, list) or not args:
        raise ConfigError(f"{key}.{kind}: expected a non-empty list, got {args!r}")
    if kind in ("choice", "grid"):
        return Domain(kind, tuple(args))
    if len(args) != 2 or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
        raise ConfigError(f"{key}.{kind}: expected [low, high] numbers, got {args!r}")
    low, high = args
    if not low < high:
        raise ConfigError(f"{key}.{kind}: expected low < high, got {args!r}")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"{key}.loguniform: expected a positive low bound, got {low}")
    if kind == "randint":
        if not all(isinstance(a, int) for a in args):
            raise ConfigError(f"{key}.randint: expected integers [low, high) , got {args!r}")
        return Domain(kind, (low, high))
    return Domain(kind, (float(low), float(high)))


# --------------------------------------------------------------------------- the parsed space


@dataclass
class SearchSpace:
    """Domains of plain config keys, and the loss choice with its per-loss domains."""

    params: dict[str, Domain]
    # loss name -> {LossConfig field -> Domain}; empty: the loss is not searched.
    losses: dict[str, dict[str, Domain]]
    # Fixed per-loss values given as plain scalars (applied when that loss is chosen).
    loss_fixed: dict[str, dict[str, Any]]

    def ray_param_space(self) -> dict[str, Any]:
        space = {key: domain.to_ray() for key, domain in self.params.items()}
        if self.losses:
            space[LOSS_KEY] = Domain("choice", tuple(self.losses)).to_ray()
            for loss, params in self.losses.items():
                for name, domain in params.items():
                    space[f"loss.{loss}.{name}"] = domain.to_ray()
        return space

    def optuna_define_by_run(self) -> OptunaSpace:
        return OptunaSpace(self.params, self.losses)


@dataclass
class OptunaSpace:
    """Optuna's define-by-run space: loss parameters are suggested only for the chosen loss.

    A class rather than a closure: Tune saves the Optuna searcher with plain pickle.
    """

    params: dict[str, Domain]
    losses: dict[str, dict[str, Domain]]

    def __call__(self, trial: Any) -> None:
        for key, domain in self.params.items():
            domain.suggest(trial, key)
        if self.losses:
            chosen = trial.suggest_categorical(LOSS_KEY, list(self.losses))
            for name, domain in self.losses[chosen].items():
                domain.suggest(trial, f"loss.{chosen}.{name}")


def trial_overrides(
    fixed: dict[str, Any], loss_fixed: dict[str, dict[str, Any]], config: dict[str, Any]
) -> dict[str, Any]:
    """The config changes a trial makes to the base config, as dotted keys, in a fixed order.

    `fixed` are the search's `overrides`, `loss_fixed` its plain per-loss values, `config` the
    trial's sampled parameters. Loss parameters of losses the trial did not pick are dropped
    (the random and grid searchers sample them anyway).
    """
    out = dict(fixed)
    chosen = config.get(LOSS_KEY)
    for key, value in config.items():
        if key.startswith("loss.") and key != LOSS_KEY and key.count(".") == 2:
            _, loss, name = key.split(".")
            if loss == chosen:
                out[f"loss.{name}"] = value
        else:
            out[key] = value
    if chosen is not None:
        for name, value in loss_fixed.get(chosen, {}).items():
            out.setdefault(f"loss.{name}", value)
    return out


def _schema_field(key: str, where: str) -> None:
    """Check that dotted `key` names a leaf of the training config, suggesting the closest one."""
    node: Any = ExperimentConfig
    parts = key.split(".")
    for depth, part in enumerate(parts):
        if not dataclasses.is_dataclass(node):
            raise ConfigError(f"{where}{key}: {'.'.join(parts[:depth])} is a value, not a section")
        fields = {f.name: f for f in dataclasses.fields(node)}
        if part not in fields:
            hint = difflib.get_close_matches(part, fields, n=1)
            extra = f"; did you mean {'.'.join([*parts[:depth], hint[0]])!r}?" if hint else ""
            raise ConfigError(f"{where}{key}: not a key of the training config{extra}")
        node = typing.get_type_hints(node)[part]
    if dataclasses.is_dataclass(node):
        raise ConfigError(f"{where}{key}: is a whole section; give its keys (e.g. {key}.<key>) instead")


def parse_space(search: SearchConfig) -> SearchSpace:
    params: dict[str, Domain] = {}
    losses: dict[str, dict[str, Domain]] = {}
    loss_fixed: dict[str, dict[str, Any]] = {}
    for key, value in search.space.items():
        where = f"space.{key}"
        if key == "loss":
            if not isinstance(value, dict) or not value:
                raise ConfigError(
                    f"{where}: expected a mapping of loss names ({', '.join(LOSS_NAMES)}) "
                    "to their parameters, e.g. {focal: {gamma: {uniform: [1, 3]}}, bce: {}}"
                )
            for loss, loss_params in value.items():
                if loss not in LOSS_PARAMS:
                    raise ConfigError(f"{where}.{loss}: unknown loss; expected one of {', '.join(LOSS_PARAMS)}")
                loss_params = loss_params or {}
                if not isinstance(loss_params, dict):
                    raise ConfigError(
                        f"{where}.{loss}: expected a mapping of its parameters "
                        f"({', '.join(LOSS_PARAMS[loss]) or 'none'}), got {loss_params!r}"
                    )
                losses[loss], loss_fixed[loss] = {}, {}
                for name, spec in loss_params.items():
                    if name not in LOSS_PARAMS[loss]:
                        raise ConfigError(
                            f"{where}.{loss}.{name}: {loss} has no such parameter; expected "
                            f"{', '.join(LOSS_PARAMS[loss]) or 'none'}"
                        )
                    if isinstance(spec, dict):
                        domain = parse_domain(spec, f"{where}.{loss}.{name}")
                        if domain.kind == "grid":
                            raise ConfigError(
                                f"{where}.{loss}.{name}: loss parameters exist only in trials "
                                "of their loss; use choice, not grid"
                            )
                        losses[loss][name] = domain
                    else:
                        loss_fixed[loss][name] = spec
            continue
        if key.split(".")[0] == "loss":
            raise ConfigError(f"{where}: search the loss under `space.loss` (loss name -> its parameters)")
        _schema_field(key, "space.")
        params[key] = parse_domain(value, where)
    for key in search.overrides:
        _schema_field(key, "overrides.")
    return SearchSpace(params, losses, loss_fixed)


def resolve_paths(data: dict[str, Any]) -> dict[str, Any]:
    """Make the config's paths absolute: trials run in their own folders on any node."""
    out = copy.deepcopy(data)

    def absolute(section: str, key: str, must_exist: bool = False) -> None:
        node = out.get(section)
        if isinstance(node, dict) and isinstance(node.get(key), str) and node[key]:
            path = Path(node[key]).expanduser()
            if not must_exist or path.exists():
                node[key] = str(path.resolve())

    absolute("loader", "shards_dir")
    absolute("loader", "features_dir")
    absolute("data", "raw_dir")
    absolute("data", "table")
    if isinstance(out.get("output_dir"), str):
        out["output_dir"] = str(Path(out["output_dir"]).expanduser().resolve())
    model = out.get("model") or {}
    if isinstance(model.get("image"), dict):
        node = model["image"]
        if isinstance(node.get("weights_path"), str):
            node["weights_path"] = str(Path(node["weights_path"]).expanduser().resolve())
    if isinstance(model.get("text"), dict) and isinstance(model["text"].get("name"), str):
        local = Path(model["text"]["name"]).expanduser()
        if local.exists():  # a local model folder, not a hub name
            model["text"]["name"] = str(local.resolve())
    return out


def build_trial_config(base: dict[str, Any], overrides: dict[str, Any]) -> ExperimentConfig:
    """Base config dict + a trial's dotted overrides -> a validated ExperimentConfig."""
    data = copy.deepcopy(base)
    for key, value in overrides.items():
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[parts[-1]] = value
    return from_dict(ExperimentConfig, data)


def _check_candidates(search: SearchConfig, space: SearchSpace, base: dict[str, Any]) -> None:
    """Every edge value of every domain must make a valid training config on its own."""
    fixed = dict(search.overrides)
    try:
        build_trial_config(base, fixed)
    except ConfigError as exc:
        raise ConfigError(f"overrides: {exc}") from None
    for key, domain in space.params.items():
        for value in domain.candidates():
            try:
                build_trial_config(base, {**fixed, key: value})
            except ConfigError as exc:
                raise ConfigError(f"space.{key}: value {value!r} is refused by the training config: {exc}") from None
    for loss, params in space.losses.items():
        combo = {**fixed, LOSS_KEY: loss, **{f"loss.{k}": v for k, v in space.loss_fixed[loss].items()}}
        try:
            build_trial_config(base, combo)
        except ConfigError as exc:
            raise ConfigError(f"space.loss.{loss}: {exc}") from None
        for name, domain in params.items():
            for value in domain.candidates():
                try:
                    build_trial_config(base, {**combo, f"loss.{name}": value})
                except ConfigError as exc:
                    raise ConfigError(f"space.loss.{loss}.{name}: value {value!r} is refused: {exc}") from None


@dataclass
class LoadedSearch:
    """A validated search: its config, parsed space and the absolute base training config."""

    path: Path
    config: SearchConfig
    space: SearchSpace
    base: dict[str, Any]
    # The base config's mapping as written (paths relative to where the search was started):
    # what best_config.yaml is built from, so it moves with the project like any config.
    base_as_written: dict[str, Any]

    @property
    def metric(self) -> str:
        """The dev metric trials are ranked on: `scheduler.metric`, or the trials' `train.select_metric`."""
        metric = self.config.scheduler.metric
        if metric is None:  # load_search fills it in; a LoadedSearch built by hand may not have
            raise ConfigError(f"{self.path}: scheduler.metric is not resolved")
        return metric

    @property
    def storage_path(self) -> Path:
        return Path(self.config.storage_path).expanduser().resolve()

    @property
    def experiment_dir(self) -> Path:
        return self.storage_path / self.config.name


def _flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{full}."))
        else:
            out[full] = value
    return out


def load_search(path: str | Path, overrides: typing.Sequence[str] = ()) -> LoadedSearch:
    """Read and check a search YAML (`--set` applies to it, e.g. search.num_samples=4)."""
    path = Path(path)
    data = apply_overrides(read_yaml(path), overrides)
    if isinstance(data.get("overrides"), dict):  # `--set overrides.train.epochs=1` nests; flatten it
        data["overrides"] = _flatten(data["overrides"])
    try:
        search = from_dict(SearchConfig, data)
        space = parse_space(search)
        if not space.params and not space.losses:
            raise ConfigError("space: expected at least one searched key")
        grids = [k for k, d in space.params.items() if d.kind == "grid"]
        if grids and search.search.algorithm == "optuna":
            raise ConfigError(f"space.{grids[0]}: grid domains need search.algorithm grid or random, not optuna")
        if search.search.algorithm == "grid" and not grids:
            raise ConfigError("search.algorithm: grid needs at least one `grid` domain in space")
        base_path = Path(search.base_config)
        base_as_written = read_config_data(base_path)
        base = resolve_paths(base_as_written)
        _check_candidates(search, space, base)
        if search.scheduler.metric is None:
            search.scheduler.metric = search.overrides.get(
                "train.select_metric", (base.get("train") or {}).get("select_metric", TrainConfig.select_metric)
            )
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return LoadedSearch(path=path, config=search, space=space, base=base, base_as_written=base_as_written)


def evaluations_per_trial(cfg: ExperimentConfig, train_samples: int, world_size: int = 1) -> int:
    """Dev evaluations of a complete trial: the ASHA `max_t` in units of reports."""
    batches = train_batches_per_rank(train_samples, world_size, cfg.loader.batch_size, cfg.loader.drop_last)
    steps_per_epoch = optimizer_steps_per_epoch(batches, cfg.train.grad_accum_steps)
    if cfg.train.eval_every == "epoch":
        return cfg.train.epochs
    total = steps_per_epoch * cfg.train.epochs
    every = int(cfg.train.eval_every)
    return total // every + (1 if total % every else 0)
