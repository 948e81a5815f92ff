"""One Tune trial: the project's own trainer, in-process, reporting after every dev evaluation.

A trial is `mmimdb_dist.train.loop.train` on the base config plus the trial's overrides,
with its run folder at `<search>/runs/<trial id>/`. The trainer calls back after each dev
evaluation, once that evaluation's checkpoint is complete; the callback hands the dev
record to `tune.report` with the checkpoint, which is what ASHA decides on and what Tune
restores a trial from. (Inside a Tune function `ray.train.report` is the Ray Train API and
fails in Ray 2.60; `tune.report` / `tune.Checkpoint` are the Tune ones.)

Restoring: a trial whose run folder still holds checkpoints (the same machine, or a shared
filesystem) resumes from the newest one with the trainer's own `--resume auto`, which is
exact to the batch. A trial moved to a machine without its run folder gets Tune's copy of
its last reported checkpoint placed in the run folder first, then resumes the same way.

With `resources.workers > 1` the trial starts a Ray Train `TorchTrainer` with that many
workers; each worker runs the same Accelerate trainer (Ray Train sets up the process group
and the RANK / WORLD_SIZE variables Accelerate reads, so no `accelerate launch` is involved)
and Tune hears of its evaluations through Ray Train's `TuneReportCallback`.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from ..run.layout import METRICS_LOG, STATE_FILE, checkpoints_dir_of, run_dir_of
from ..run.metrics_log import read_records
from ..schema import ExperimentConfig, from_dict, to_dict
from .results import RUN_NAME
from .space import build_trial_config, trial_overrides

# Keys of the trainer's eval record that are not metrics.
_NOT_METRICS = {"type", "split", "checkpoint", "last"}


def metrics_of(record: dict[str, Any]) -> dict[str, Any]:
    """The reported metrics: the dev record's numbers, None dropped (Tune wants numbers)."""
    metrics = {k: v for k, v in record.items() if k not in _NOT_METRICS and v is not None}
    metrics["best"] = bool(metrics.get("best", False))
    return metrics


def trial_config(setup: dict[str, Any], config: dict[str, Any], run_root: Path):
    """The trial's ExperimentConfig: base + search overrides + sampled values + its run folder."""
    overrides = trial_overrides(setup["overrides"], setup["loss_fixed"], config)
    overrides.update({"name": RUN_NAME, "output_dir": str(run_root)})
    return build_trial_config(setup["base"], overrides)


def _place_tune_checkpoint(checkpoint: Any, checkpoints_dir: Path) -> None:
    """Copy Tune's last checkpoint of this trial under the trainer's name for it."""
    from ..run.checkpoints import TrainerState, checkpoint_name

    with checkpoint.as_directory() as folder:
        state = TrainerState.read(Path(folder) / STATE_FILE)
        target = checkpoints_dir / checkpoint_name(state)
        if not target.exists():
            checkpoints_dir.mkdir(parents=True, exist_ok=True)
            tmp = checkpoints_dir / f".{target.name}.restore"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(folder, tmp)
            tmp.rename(target)


def run_trial(config: dict[str, Any], setup: dict[str, Any]) -> None:
    """The Tune function trainable (bound to `setup` with `tune.with_parameters`)."""

    from ray import tune

    # Ray says "Checkpoint successfully created at ..." at INFO for every report; the driver's
    # one line per report (runner.TrialLines) already says it, and the trainer's own lines too.
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    logging.getLogger("mmimdb_dist").setLevel(logging.WARNING)

    run_root = Path(setup["runs_dir"]) / tune.get_context().get_trial_id()
    cfg = trial_config(setup, config, run_root)
    if setup["workers"] > 1:
        _run_distributed(cfg, setup, run_root)
        return

    from ..run.checkpoints import complete_checkpoints
    from ..train.loop import train

    run_dir = run_dir_of(cfg)
    checkpoints_dir = checkpoints_dir_of(run_dir)
    restored = tune.get_checkpoint()
    if not complete_checkpoints(checkpoints_dir):
        if restored is not None:
            _place_tune_checkpoint(restored, checkpoints_dir)
        elif run_dir.exists():
            # Started before and killed ahead of its first checkpoint: start again, cleanly.
            shutil.rmtree(run_dir)

    reported, final = [], []

    def report(record: dict[str, Any]) -> None:
        reported.append(record)
        if record.get("last"):
            # Held until the test of the best checkpoint is written: the trial's max_t-th result
            # makes ASHA stop it, and a stop that arrives mid-test would leave it without one.
            final.append(record)
            return
        tune.report(metrics_of(record), checkpoint=tune.Checkpoint.from_directory(record["checkpoint"]))

    train(cfg, resume="auto", on_evaluation=report)
    for record in final:
        tune.report(metrics_of(record), checkpoint=tune.Checkpoint.from_directory(record["checkpoint"]))
    if not reported:
        # Resumed after its last evaluation (killed while testing): no new evaluation ran, but
        # Tune needs the metric in the trial's final result, so the last one is said again.
        evals = read_records(run_dir / METRICS_LOG, kind="eval")
        if evals:
            tune.report(metrics_of(evals[-1]))


# --------------------------------------------------------------------------- multi-worker trials


def _worker_loop(loop_config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker: the Accelerate trainer, one rank each."""
    import ray.train

    from ..train.loop import train

    logging.getLogger("mmimdb_dist").setLevel(logging.WARNING)  # the driver reports the trial
    cfg = from_dict(ExperimentConfig, loop_config["config"])
    rank = ray.train.get_context().get_world_rank()

    final = []

    def report(record: dict[str, Any], hold_last: bool = True) -> None:
        if record.get("last") and hold_last:  # after the test, as in the one-process trial
            final.append(record)
            return
        # Every rank reports (it is a barrier); rank 0 brings the checkpoint, on shared storage.
        checkpoint = ray.train.Checkpoint.from_directory(record["checkpoint"]) if rank == 0 else None
        ray.train.report(metrics_of(record), checkpoint=checkpoint)

    train(cfg, resume="auto", on_evaluation=report)
    for record in final:
        report(record, hold_last=False)


def _run_distributed(cfg: Any, setup: dict[str, Any], run_root: Path) -> None:
    from ray import tune
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    gpu = setup["gpu"]
    scaling = ScalingConfig(
        num_workers=setup["workers"],
        use_gpu=gpu > 0,
        resources_per_worker={"CPU": setup["cpu"], **({"GPU": gpu} if gpu else {})},
    )
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"config": to_dict(cfg)},
        scaling_config=scaling,
        torch_config=TorchConfig(backend="nccl" if gpu > 0 else "gloo"),
        run_config=RunConfig(
            name=tune.get_context().get_trial_id(),
            storage_path=str(run_root / "ray_train"),
            callbacks=[TuneReportCallback()],  # type: ignore[list-item]  # Ray's stubs type it as Tune's callback, Ray Train's own
        ),
    )
    trainer.fit()
