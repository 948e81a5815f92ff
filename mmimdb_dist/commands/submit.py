"""`mmimdb-dist submit train|sweep|summary|tune`: send training to Slurm through submitit.

    mmimdb-dist submit train --config configs/early_fusion.yaml --nodes 2 --gpus-per-node 4 \\
        --partition gpu --time 240 [--account A --qos Q --constraint C --mem 64 --cpus-per-task 8]
    mmimdb-dist submit sweep --config configs/early_fusion.yaml --grid sweep.yaml --partition gpu --time 120
    mmimdb-dist submit summary runs/lr-loss
    mmimdb-dist submit tune --config configs/tune/X.yaml --nodes 2 --gpus-per-node 4 --time 600

Every process that submits needs Slurm's configuration (SLURM_CONF, when it is not in
/etc/slurm); where Slurm is not reachable, a submission is one error line saying what was tried,
never a run on the machine it was made from (a login node). `--cluster local` runs the same job
as local processes on this machine on purpose (left running in the background, or waited for
with --wait, as a Slurm job), `--cluster debug` in this process (always waited for). See
`mmimdb_dist.slurm` for how preemption is handled.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import add_config_arguments
from ..report.compare import markdown_table
from ..schema import parse_override
from ..slurm.flows import submit_sweep, submit_train
from ..slurm.options import SlurmOptions
from ..slurm.ray_cluster import submit_tune
from ..slurm.sweep import summarize


def _add_resources(parser: argparse.ArgumentParser, time_default: int = 60) -> None:
    group = parser.add_argument_group("resources (per job, or per array element)")
    group.add_argument(
        "--cluster",
        choices=("slurm", "local", "debug"),
        default=None,
        help="where the job runs (default: slurm; without a reachable Slurm that is one error "
        "line: local or debug run the job on this machine on purpose)",
    )
    group.add_argument("--nodes", type=int, default=1, help="nodes (default: 1)")
    group.add_argument("--gpus-per-node", type=int, default=0, help="GPUs per node, one task each (default: 0)")
    group.add_argument(
        "--tasks-per-node",
        type=int,
        default=None,
        help="CPU processes per node when there are no GPUs (default: 1; gloo between them)",
    )
    group.add_argument("--cpus-per-task", type=int, default=None, help="CPUs per task (Slurm's default otherwise)")
    group.add_argument("--mem", dest="mem_gb", type=float, default=None, metavar="GB", help="memory per node in GB")
    group.add_argument(
        "--time",
        dest="time_min",
        type=int,
        default=time_default,
        metavar="MIN",
        help=f"time limit in minutes (default: {time_default})",
    )
    group.add_argument("--partition", default=None)
    group.add_argument("--account", default=None)
    group.add_argument("--qos", default=None)
    group.add_argument("--constraint", default=None)
    group.add_argument(
        "--signal-delay-s",
        type=int,
        default=120,
        help="SIGUSR2 this long before the time limit: checkpoint and requeue (default: 120)",
    )
    group.add_argument(
        "--max-requeues",
        type=int,
        default=10,
        help="requeue a preempted or timed-out job at most this often (default: 10)",
    )
    group.add_argument("--job-name", default=None, help="Slurm job name (default: the run's name)")
    group.add_argument(
        "--sbatch",
        dest="additional",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other sbatch option, e.g. --sbatch exclusive=true (repeatable)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="submit_command", required=True, metavar="WHAT")
    train = sub.add_parser("train", help="one training run as a Slurm job (all nodes and GPUs of it)")
    add_config_arguments(train)
    train.add_argument(
        "--resume",
        choices=("auto",),
        default=None,
        help="continue the run folder's newest checkpoint (needed when it already holds some)",
    )
    train.add_argument("--wait", action="store_true", help="wait for the job and print its test metrics")
    _add_resources(train)

    sweep = sub.add_parser("sweep", help="a grid of overrides as one Slurm job array")
    add_config_arguments(sweep)
    sweep.add_argument("--grid", required=True, type=Path, help="grid file (see mmimdb_dist/slurm/sweep.py)")
    sweep.add_argument("--name", default=None, help="sweep folder name (default: the grid's name)")
    sweep.add_argument(
        "--parallel", dest="array_parallelism", type=int, default=4, help="array elements running at once (default: 4)"
    )
    sweep.add_argument("--wait", action="store_true", help="wait for every run, then print the summary")
    _add_resources(sweep)

    summary = sub.add_parser("summary", help="rank the finished runs of a sweep (model_comparison.csv/.md)")
    summary.add_argument("sweep_dir", type=Path, help="the sweep folder (holds sweep.json)")
    summary.add_argument("--sort-by", default="f1_macro", metavar="METRIC", help="ranking metric (default: f1_macro)")
    summary.add_argument("--protocol", choices=("threshold_0.5", "tuned_on_dev"), default="threshold_0.5")
    summary.add_argument("--split", choices=("test", "dev"), default="test")
    summary.add_argument("--out", type=Path, default=None, help="folder for the table (default: the sweep folder)")

    tune = sub.add_parser("tune", help="a Ray cluster in one allocation running `mmimdb-dist tune`")
    tune.add_argument("--config", "-c", required=True, help="Tune config (configs/tune/...)")
    tune.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="passed on to `mmimdb-dist tune`",
    )
    tune.add_argument(
        "--out",
        type=Path,
        default=Path("runs/tune-slurm"),
        help="folder for the job's logs and the Ray session (default: runs/tune-slurm)",
    )
    tune.add_argument("--resume", action="store_true", help="continue the interrupted search (`tune --resume`)")
    tune.add_argument("--wait", action="store_true", help="wait for the search to end")
    _add_resources(tune, time_default=240)


def _options(args: argparse.Namespace, job_name: str) -> SlurmOptions:
    additional = {}
    for text in args.additional:
        path, value = parse_override(text)
        additional[".".join(path)] = value
    return SlurmOptions(
        cluster=args.cluster,
        nodes=args.nodes,
        gpus_per_node=args.gpus_per_node,
        tasks_per_node=args.tasks_per_node,
        cpus_per_task=args.cpus_per_task,
        mem_gb=args.mem_gb,
        time_min=args.time_min,
        partition=args.partition,
        account=args.account,
        qos=args.qos,
        constraint=args.constraint,
        signal_delay_s=args.signal_delay_s,
        max_requeues=args.max_requeues,
        array_parallelism=getattr(args, "array_parallelism", 4),
        job_name=args.job_name or job_name,
        additional=additional or None,
    )


def _train(args: argparse.Namespace) -> int:
    return submit_train(args.config, args.overrides, lambda name: _options(args, name), args.resume, args.wait)


def _sweep(args: argparse.Namespace) -> int:
    return submit_sweep(args.config, args.overrides, args.grid, args.name, lambda name: _options(args, name), args.wait)


def _summary(args: argparse.Namespace) -> int:
    rows, unfinished, markdown = summarize(args.sweep_dir, args.sort_by, args.protocol, args.split, args.out)
    print(f"{args.split} split, ranked by {rows[0]['sort_metric']}:\n")
    print(markdown_table(rows))
    for line in unfinished:
        print(line)
    print(f"\nwrote {markdown} and its CSV")
    return 0


def _tune(args: argparse.Namespace) -> int:
    return submit_tune(args, _options(args, "tune"))


def run(args: argparse.Namespace) -> int:
    return {"train": _train, "sweep": _sweep, "summary": _summary, "tune": _tune}[args.submit_command](args)
