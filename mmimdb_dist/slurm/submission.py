"""What a submission leaves in its run folder, and how to wait for it.

`<run_dir>/submissions.json` lists every job sent for the run (a run that ran out of requeues
and was submitted again has two), with the job id, the cluster, the submitit folder and the
resources; it is how a later command (`submit summary`, a person) finds the job and its logs
without asking the scheduler.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_json
from ..errors import SubmitError
from ..run.layout import FINAL_METRICS, SUBMISSIONS_FILE
from .options import SlurmOptions

RECORD = SUBMISSIONS_FILE


def record_submission(run_dir: Path, job: Any, options: SlurmOptions, kind: str, **extra: Any) -> dict[str, Any]:
    entry = {
        "job_id": str(job.job_id),
        "cluster": type(job).__name__.replace("Job", "").lower(),
        "kind": kind,
        "folder": str(Path(job.paths.folder)),
        "submitted_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "options": asdict(options),
        **extra,
    }
    path = Path(run_dir) / RECORD
    history = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
    history.append(entry)
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, history)
    return entry


def where_to_look(
    job: Any, run_dir: Path, options: SlurmOptions, tasks: int | None = None, results: str | None = None
) -> str:
    """The lines printed after a submission: the job id, its logs, how to follow it."""
    paths = job.paths
    lines = [
        f"submitted job {job.job_id} ({options.nodes} node(s) x {tasks or options.tasks} task(s)) for {run_dir}",
        f"  logs (rank 0):  {paths.stdout}  {paths.stderr}",
        f"  all tasks:      {Path(paths.folder)}/",
    ]
    if type(job).__name__ == "SlurmJob":
        lines.append(f"  follow:         squeue -j {job.job_id}; sacct -j {job.job_id}; tail -f {paths.stderr}")
    lines.append(f"  results:        {results or run_dir / FINAL_METRICS} once it finishes")
    return "\n".join(lines)


def must_wait(cluster: str, wait: bool, jobs: list[Any]) -> bool:
    """Whether the submitting command waits for `jobs`: when asked (`--wait`), and always under
    `debug` (its job runs in this process, when waited for). A `local` job not waited for runs on
    in the background, as a Slurm job would, and outlives this command."""
    if cluster == "local" and not wait:
        for job in jobs:
            job._cancel_at_deletion = False  # submitit cancels a local job it forgets otherwise
        print("the job runs on in the background on this machine (--cluster local); --wait waits for it", flush=True)
    return wait or cluster == "debug"


def wait_for(job: Any) -> list[Any]:
    """Block until the job is done; every task's result, or a SubmitError naming the log to read."""
    from submitit.core.utils import FailedJobError, UncompletedJobError

    try:
        return job.results()
    except (FailedJobError, UncompletedJobError) as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        errors = [line for line in lines if re.match(r"^[\w.]+(Error|Exception|Stopped)\b", line)]
        reason = (errors or lines or [type(exc).__name__])[-1]
        raise SubmitError(f"job {job.job_id} did not finish: {reason}; see {job.paths.stderr}") from None


def submit_failed(exc: Exception) -> SubmitError:
    """The one line for a job that sbatch (or submitit) refused."""
    output = getattr(exc, "output", None) or getattr(exc, "stderr", None) or str(exc)
    if isinstance(output, bytes):
        output = output.decode(errors="replace")
    return SubmitError(
        f"sbatch refused the job: {' '.join(str(output).split())[:500]} (is SLURM_CONF set, and is "
        "the controller up? `launch/slurm/status.sh` checks the single-node cluster)"
    )
