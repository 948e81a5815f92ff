"""Start (or join) Ray, run or restore a search with Ray Tune, and write its results.

A search lives in `<storage_path>/<name>/`: Ray Tune's experiment state (what `--resume`
restores with `Tuner.restore`), `runs/<trial id>/` (each trial's run folder: metrics.jsonl,
checkpoints, final_metrics.json), `search.yaml` (the search as it was started), and, once
it ends, `results.csv`, `results.md` and `best_config.yaml`.

Without `--address` a local Ray is started with an explicit CPU count and no dashboard;
with `--address HOST:PORT` the search joins a running cluster (a Slurm job that started a
Ray head and workers). `RAY_USAGE_STATS_ENABLED=0` is set before Ray is imported, so
nothing on a cluster node tries to reach the network.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
from typing import Any

from ..atomic import atomic_write_text
from ..data.training_data import load_training_manifest, train_samples
from ..errors import ConfigError
from ..schema import check_select_metric, dump_config
from .results import RUNS_DIR, SearchOutcome, collect_results, write_results
from .space import LoadedSearch, build_trial_config, evaluations_per_trial
from .trainable import run_trial

logger = logging.getLogger(__name__)

SEARCH_FILE = "search.yaml"
TRIAL_DRIVER_CPU = 0.01
# Searched keys that change how many evaluations a trial makes (ASHA's max_t).
_LENGTH_KEYS = (
    "train.epochs",
    "train.eval_every",
    "train.grad_accum_steps",
    "loader.batch_size",
    "loader.drop_last",
    "loader.shards_dir",
    "loader.features_dir",
)


def quiet_ray_environment() -> None:
    """Before `import ray`: no usage statistics upload, no dashboard metrics exporter, and the
    classic reporter (whose `verbose=0` is silent; the new one prints its banner and paths
    regardless): progress is TrialLines' one line per trial event."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def _check_metric_fits(loaded: LoadedSearch) -> None:
    """The ranking metric exists for the data's task kind (multi-label or multiclass): one
    line now, not a failed trial per sample of the space."""

    cfg = build_trial_config(loaded.base, loaded.config.overrides)
    manifest = load_training_manifest(cfg.loader)
    try:
        check_select_metric(loaded.metric, manifest.labels.task, str(manifest.path), "scheduler.metric")
    except ConfigError as exc:
        raise ConfigError(f"{loaded.path}: {exc}") from None


def _max_t(loaded: LoadedSearch) -> int:
    scheduler = loaded.config.scheduler
    if scheduler.max_t is not None:
        return scheduler.max_t
    searched = [k for k in loaded.space.params if k in _LENGTH_KEYS]
    if searched:
        raise ConfigError(
            f"{loaded.path}: scheduler.max_t: space.{searched[0]} changes the number of "
            "evaluations per trial; set scheduler.max_t (evaluations of the longest trial)"
        )

    cfg = build_trial_config(loaded.base, loaded.config.overrides)
    return evaluations_per_trial(cfg, train_samples(cfg), loaded.config.resources.workers)


def _search_algorithm(loaded: LoadedSearch):
    algorithm = loaded.config.search
    if algorithm.algorithm == "optuna":
        if importlib.util.find_spec("optuna") is None:
            raise ConfigError(
                f"{loaded.path}: search.algorithm: optuna is not installed "
                "(pip install 'mmimdb-dist[tune]', or choose random or grid)"
            )
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        scheduler = loaded.config.scheduler
        searcher = OptunaSearch(
            space=loaded.space.optuna_define_by_run(), metric=scheduler.metric, mode=scheduler.mode, seed=algorithm.seed
        )
        limit = loaded.config.resources.max_concurrent
        return ConcurrencyLimiter(searcher, max_concurrent=limit) if limit else searcher
    from ray.tune.search.basic_variant import BasicVariantGenerator

    # The limit belongs to the generator: Ray ignores TuneConfig's max_concurrent_trials for
    # a search algorithm that is not a Searcher, and this one is not (it only warns).
    return BasicVariantGenerator(
        random_state=algorithm.seed, max_concurrent=loaded.config.resources.max_concurrent or 0
    )


def _scheduler(loaded: LoadedSearch, max_t: int):
    cfg = loaded.config.scheduler
    if cfg.name == "fifo":
        from ray.tune.schedulers import FIFOScheduler

        return FIFOScheduler()
    from ray.tune.schedulers import ASHAScheduler

    # stop_last_trials=False: a trial that reaches max_t is left to finish, so its trainer
    # tests its best checkpoint and writes final_metrics.json.
    return ASHAScheduler(
        time_attr="training_iteration",
        max_t=max_t,
        grace_period=min(cfg.grace_period, max_t),
        reduction_factor=cfg.reduction_factor,
        stop_last_trials=False,
    )


def _trainable(loaded: LoadedSearch):
    from ray import tune

    res = loaded.config.resources
    setup: dict[str, Any] = {
        "base": loaded.base,
        "overrides": dict(loaded.config.overrides),
        "loss_fixed": loaded.space.loss_fixed,
        "runs_dir": str(loaded.experiment_dir / RUNS_DIR),
        "workers": res.workers,
        "cpu": res.cpu,
        "gpu": res.gpu,
    }
    trainable = tune.with_parameters(run_trial, setup=setup)
    if res.workers > 1:
        # The trial itself only waits on its TorchTrainer, whose workers hold the resources;
        # it holds a sliver of a CPU (Ray refuses an empty request).
        return tune.with_resources(trainable, {"cpu": TRIAL_DRIVER_CPU})
    return tune.with_resources(trainable, {"cpu": res.cpu, "gpu": res.gpu})


def _start_ray(loaded: LoadedSearch, address: str | None) -> None:
    """Join the cluster at `address`, or start a local Ray sized by the `ray:` section."""
    import ray

    runtime_env = {"env_vars": {"RAY_USAGE_STATS_ENABLED": "0", "TOKENIZERS_PARALLELISM": "false"}}
    if address:
        ray.init(address=address, runtime_env=runtime_env)
        return
    num_cpus = loaded.config.ray.num_cpus or os.cpu_count() or 1
    ray.init(num_cpus=num_cpus, num_gpus=loaded.config.ray.num_gpus, include_dashboard=False, runtime_env=runtime_env)


def run_search(loaded: LoadedSearch, resume: bool = False, address: str | None = None) -> SearchOutcome:
    quiet_ray_environment()
    experiment_dir = loaded.experiment_dir
    # The search as run, `--set` included; the base config it was checked against with it.
    search_text = f"# from {loaded.path.resolve()}\n" + dump_config(loaded.config)
    from ray import tune

    exists = tune.Tuner.can_restore(str(experiment_dir)) if experiment_dir.exists() else False
    if resume and not exists:
        raise ConfigError(f"--resume: {experiment_dir} holds no search to continue; run without --resume")
    if not resume and exists:
        raise ConfigError(
            f"{experiment_dir} already holds a search; pass --resume to continue it, "
            "or set another `name` or `storage_path`"
        )
    _check_metric_fits(loaded)
    max_t = _max_t(loaded)
    _start_ray(loaded, address)
    try:
        trainable = _trainable(loaded)
        if resume:
            saved = experiment_dir / SEARCH_FILE
            if saved.is_file() and saved.read_text(encoding="utf-8") != search_text:
                logger.warning(
                    "%s (with --set) differs from the search it resumes (%s): trials already "
                    "proposed keep their values, new ones come from the saved search space, "
                    "and every trial trains with the base config and overrides given now",
                    loaded.path,
                    saved,
                )
            tuner = tune.Tuner.restore(
                str(experiment_dir), trainable=trainable, resume_unfinished=True, resume_errored=True
            )
        else:
            experiment_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(experiment_dir / SEARCH_FILE, search_text)
            tuner = _new_tuner(loaded, trainable, max_t)
        results = tuner.fit()
    finally:
        import ray

        ray.shutdown()  # stops a local Ray; only disconnects from a cluster
    table = collect_results(results, loaded, max_t)
    return write_results(table, loaded)


def trial_name(trial: Any) -> str:
    """Trials are named by their id alone (Ray's default folder names carry every parameter)."""
    return trial.trial_id


def trial_lines(metric: str, num_trials: int, max_t: int | None = None):
    """A Tune callback logging one line per trial event: started (with its own values), each
    report (its dev `metric`), finished, stopped early by ASHA (`max_t`: the evaluations of a
    complete trial), failed; what a person follows in a terminal or a Slurm log."""
    from ray.tune import Callback

    class TrialLines(Callback):
        done = 0

        def on_trial_start(self, iteration, trials, trial, **info):
            logger.info("trial %s started: %s", trial.trial_id, _short(trial.config))

        def on_trial_result(self, iteration, trials, trial, result, **info):
            value = result.get(metric)
            logger.info(
                "trial %s: evaluation %s, dev %s %s",
                trial.trial_id,
                result.get("training_iteration"),
                metric,
                f"{value:.4f}" if isinstance(value, (int, float)) else value,
            )

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.done += 1
            made = (trial.last_result or {}).get("training_iteration")
            if max_t is not None and isinstance(made, int) and made < max_t:
                logger.info(
                    "trial %s stopped early (ASHA) after %d of %d evaluations (%d of %d trials done)",
                    trial.trial_id,
                    made,
                    max_t,
                    self.done,
                    num_trials,
                )
                return
            logger.info("trial %s finished (%d of %d trials done)", trial.trial_id, self.done, num_trials)

        def on_trial_error(self, iteration, trials, trial, **info):
            self.done += 1
            logger.warning(
                "trial %s failed (%d of %d trials done): %s",
                trial.trial_id,
                self.done,
                num_trials,
                trial.error_file or "see its folder",
            )

    return TrialLines()


def _short(config: dict[str, Any]) -> str:
    """A trial's values, the parameters of losses it does not use left out."""
    loss = config.get("loss.name")
    shown = {
        key: value
        for key, value in config.items()
        if not (key.startswith("loss.") and key != "loss.name" and key.split(".")[1] != loss)
    }
    return ", ".join(
        f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}" for key, value in sorted(shown.items())
    )


def _new_tuner(loaded: LoadedSearch, trainable: Any, max_t: int):
    from ray import tune

    cfg = loaded.config
    metric, mode = loaded.metric, cfg.scheduler.mode
    tune_config = tune.TuneConfig(
        metric=metric,
        mode=mode,
        num_samples=cfg.search.num_samples,
        search_alg=_search_algorithm(loaded),
        scheduler=_scheduler(loaded, max_t),
        trial_name_creator=trial_name,
        trial_dirname_creator=trial_name,
    )
    run_config = tune.RunConfig(
        name=cfg.name,
        storage_path=str(loaded.storage_path),
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=2, checkpoint_score_attribute=metric, checkpoint_score_order=mode
        ),
        # verbose=0: Ray's status tables (300 columns, dozens per minute) are replaced by one
        # plain line per trial event (TrialLines).
        failure_config=tune.FailureConfig(max_failures=1),
        verbose=0,
        callbacks=[
            trial_lines(
                metric,
                cfg.search.num_samples
                * math.prod(len(domain.args) for domain in loaded.space.params.values() if domain.kind == "grid"),
                max_t if cfg.scheduler.name == "asha" else None,
            )
        ],
    )
    param_space = {} if cfg.search.algorithm == "optuna" else loaded.space.ray_param_space()
    return tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config)
