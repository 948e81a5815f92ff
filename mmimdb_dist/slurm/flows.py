"""What `mmimdb-dist submit train` and `submit sweep` do once their arguments are read.

A training run becomes one job, a sweep one job array; each is refused before anything is
sent when its run folder already holds checkpoints (`--resume auto` continues a run), recorded
in the run or sweep folder, and waited for when asked (always for the local and debug
clusters). Nothing here imports torch: a submission takes a second, not the trainer's start-up.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from submitit.core.utils import FailedJobError  # what submitit raises when sbatch refuses

from ..errors import ConfigError, SubmitError
from ..report.compare import markdown_table
from ..run.checkpoints import complete_checkpoints
from ..run.layout import FINAL_METRICS, checkpoints_dir_of, run_dir_of
from ..schema import dump_config, load_config
from .job import TrainJob, job_folder
from .options import SlurmOptions, build_executor
from .submission import must_wait, record_submission, submit_failed, wait_for, where_to_look
from .sweep import plan_sweep, summarize, write_sweep_record


def submit_train(
    config: str | Path, overrides: list[str], options_for: Callable[[str], SlurmOptions], resume: str | None, wait: bool
) -> int:
    """One training run as one job; `options_for(run name)` gives its resources."""
    cfg = load_config(config, overrides)
    run_dir = run_dir_of(cfg)
    options = options_for(cfg.name)
    if complete_checkpoints(checkpoints_dir_of(run_dir)) and resume != "auto":
        raise ConfigError(
            f"{checkpoints_dir_of(run_dir)} already holds checkpoints; pass --resume auto to "
            "continue that run, or set another `name` / `output_dir`"
        )
    executor = build_executor(job_folder(run_dir), options)
    try:
        job = executor.submit(TrainJob(dump_config(cfg), max_requeues=options.max_requeues))
    except (subprocess.CalledProcessError, OSError, FailedJobError) as exc:
        raise submit_failed(exc) from None
    record_submission(run_dir, job, options, "train", config=str(config), overrides=overrides)
    print(where_to_look(job, run_dir, options), flush=True)
    if must_wait(executor.cluster, wait, [job]):
        from ..metrics import format_summary  # scikit-learn takes seconds: only a waited job prints metrics

        result = wait_for(job)[0]
        final = json.loads((run_dir / FINAL_METRICS).read_text(encoding="utf-8"))
        print(format_summary({"dev": final["dev"], "test": final["test"]}))
        print(
            f"job {job.job_id} finished after {result['restarts']} requeue(s); best checkpoint "
            f"{final['best_checkpoint']}; results in {run_dir / FINAL_METRICS}"
        )
    return 0


def submit_sweep(
    config: str | Path,
    overrides: list[str],
    grid: Path,
    name: str | None,
    options_for: Callable[[str], SlurmOptions],
    wait: bool,
) -> int:
    """A grid of overrides as one job array; `options_for(sweep name)` gives each element's resources."""
    plan = plan_sweep(config, overrides, grid, name)
    options = options_for(plan.name)
    started = [run.name for run in plan.runs if complete_checkpoints(checkpoints_dir_of(run.run_dir))]
    if started:
        raise ConfigError(
            f"{plan.sweep_dir}: run(s) {', '.join(started)} already hold checkpoints; give the sweep "
            "another --name, or remove them"
        )
    folder = plan.sweep_dir / "slurm" / "%j"
    executor = build_executor(folder, options)
    try:
        with executor.batch():
            pending = [
                executor.submit(TrainJob(run.config_text, max_requeues=options.max_requeues)) for run in plan.runs
            ]
    except (subprocess.CalledProcessError, OSError, FailedJobError) as exc:
        raise submit_failed(exc) from None
    for run, job in zip(plan.runs, pending, strict=True):
        run.job_id = str(job.job_id)
    record = write_sweep_record(plan, config, executor.cluster, plan.sweep_dir / "slurm")
    array_id = str(pending[0].job_id).split("_")[0]
    print(
        f"submitted {len(pending)} runs as job array {array_id} (at most {options.array_parallelism} at once) "
        f"for sweep {plan.sweep_dir}"
    )
    for run, job in zip(plan.runs, pending, strict=True):
        print(f"  {job.job_id}  {run.run_dir}")
    print(
        f"  logs:     {plan.sweep_dir / 'slurm'}/<job id>/\n  record:   {record}\n"
        f"  summary:  mmimdb-dist submit summary {plan.sweep_dir}",
        flush=True,
    )
    if must_wait(executor.cluster, wait, pending):
        failures = []
        for job in pending:
            try:
                wait_for(job)
            except Exception as exc:  # one failed element does not hide the others' results
                failures.append(str(exc))
        rows, _unfinished, markdown = summarize(plan.sweep_dir)
        print(markdown_table(rows))
        print(f"wrote {markdown}")
        if failures:
            raise SubmitError(f"{len(failures)} of {len(pending)} runs failed: " + "; ".join(failures))
    return 0
