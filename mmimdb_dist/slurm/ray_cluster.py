"""`mmimdb-dist submit tune`: a Ray cluster inside one Slurm allocation, running the Tune search.

The job has one task per node (submitit starts them with srun). The task on the first node
starts the Ray head there, the others start Ray workers that join it, each with explicit
`--num-cpus` / `--num-gpus` (what Slurm gave the task, not what the node has: Ray would
otherwise schedule trials onto CPUs and GPUs of other jobs). Once every node has joined, the
head task runs `mmimdb-dist tune --config X --address HOST:PORT`, then writes a flag file
that tells the workers to stop their Ray, and stops its own.

Two searches may share a node, so nothing is left at Ray's defaults that two clusters would
collide on: each job gets its own temp dir (`/tmp/ray-<job id>`: Ray's session files and
sockets, short enough for the 107-character socket path limit) and its own block of 100
ports, drawn from the job id (so every task of the job computes the same block): GCS, node
manager, object manager, client server, agents, metrics, and the workers' port range.
Ray is stopped through the `ray start --block` process of each task, never with `ray stop`,
which would end every Ray of the user on the node. The cluster uses Ray's token
authentication with a token made for the submission (a file readable by the user alone, in
the job folder), so that another user's or another job's driver cannot join it.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from submitit.core.utils import FailedJobError  # what submitit raises when sbatch refuses

from ..tune.space import load_search
from .options import SlurmOptions, build_executor
from .submission import must_wait, record_submission, submit_failed, wait_for, where_to_look

logger = logging.getLogger(__name__)

JOIN_TIMEOUT_S = 120
DONE_FLAG = "ray-done"


@dataclass(frozen=True)
class RayPorts:
    """One block of ports per job, the same on every node of it."""

    base: int

    @classmethod
    def for_job(cls, job_id: str) -> RayPorts:
        return cls(base=random.Random(f"ray-{job_id}").randrange(20000, 59900, 100))

    def head_args(self) -> list[str]:
        return [f"--port={self.base}", *self._node_args()]

    def _node_args(self) -> list[str]:
        b = self.base
        return [
            f"--node-manager-port={b + 1}",
            f"--object-manager-port={b + 2}",
            f"--dashboard-agent-grpc-port={b + 4}",
            f"--dashboard-agent-listen-port={b + 5}",
            f"--metrics-export-port={b + 6}",
            f"--runtime-env-agent-port={b + 7}",
            f"--min-worker-port={b + 10}",
            f"--max-worker-port={b + 99}",
        ]

    def worker_args(self) -> list[str]:
        return self._node_args()

    @property
    def client_server(self) -> int:
        return self.base + 3


def task_resources() -> tuple[int, int]:
    """(CPUs, GPUs) that Slurm gave this task."""
    cpus = int(os.environ.get("SLURM_CPUS_PER_TASK") or os.environ.get("SLURM_CPUS_ON_NODE") or os.cpu_count() or 1)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    gpus = len([d for d in visible.split(",") if d.strip()]) if visible else 0
    return cpus, gpus


def _ray_command() -> list[str]:
    return [sys.executable, "-m", "ray.scripts.scripts", "start"]


class RayTuneJob:
    """The callable every task of a `submit tune` job runs (one task per node)."""

    def __init__(self, config: str, overrides: list[str], folder: str, token_file: str, resume: bool = False) -> None:
        self.config = config
        self.overrides = list(overrides)
        self.folder = folder
        self.token_file = token_file
        self.resume = resume

    def __call__(self) -> int:
        import submitit

        env = submitit.JobEnvironment()
        logging.basicConfig(
            level=logging.INFO, force=True, format=f"%(asctime)s node {env.node} %(levelname)s %(name)s: %(message)s"
        )
        ports = RayPorts.for_job(env.job_id)
        head = env.hostnames[0]
        address = f"{head}:{ports.base}"
        temp_dir = Path(tempfile.gettempdir()) / f"ray-{env.job_id}"
        done = Path(self.folder) / f"{env.job_id}-{DONE_FLAG}"
        cpus, gpus = task_resources()
        common = [
            f"--num-cpus={cpus}",
            f"--num-gpus={gpus}",
            "--block",
            "--disable-usage-stats",
            f"--temp-dir={temp_dir}",
        ]
        auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": self.token_file, "RAY_USAGE_STATS_ENABLED": "0"}
        os.environ.update(auth)  # this process joins the cluster too, to count its nodes
        ray_env = {**os.environ, **auth}
        if env.global_rank == 0:
            command = [
                *_ray_command(),
                "--head",
                f"--node-ip-address={head}",
                *ports.head_args(),
                f"--ray-client-server-port={ports.client_server}",
                "--include-dashboard=false",
                *common,
            ]
        else:
            command = [*_ray_command(), f"--address={address}", *ports.worker_args(), *common]
        logger.info(
            "starting Ray %s with %d CPU(s) and %d GPU(s): %s",
            "head" if env.global_rank == 0 else "worker",
            cpus,
            gpus,
            " ".join(command),
        )
        ray = subprocess.Popen(command, env=ray_env)
        try:
            if env.global_rank == 0:
                return self._run_search(address, env.num_nodes, ray, done, ray_env)
            return self._serve(ray, command, ray_env, done)
        finally:
            _stop(ray)

    def _run_search(self, address: str, nodes: int, ray: subprocess.Popen, done: Path, ray_env: dict) -> int:
        _wait_for_nodes(address, nodes, ray)
        command = [sys.executable, "-m", "mmimdb_dist.cli", "tune", "--config", self.config, "--address", address]
        command += [arg for override in self.overrides for arg in ("--set", override)]
        if self.resume:
            command.append("--resume")
        logger.info("running %s", " ".join(command))
        try:
            status = subprocess.call(command, env=ray_env)
        finally:
            done.write_text("done\n", encoding="utf-8")
            Path(self.token_file).unlink(missing_ok=True)  # every node joined long ago
        if status != 0:
            raise RuntimeError(f"`mmimdb-dist tune` exited with status {status}; see this task's log")
        return status

    def _serve(self, ray: subprocess.Popen, command: list[str], ray_env: dict, done: Path) -> int:
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        while not done.exists():
            if ray.poll() is not None:  # the head was not up yet, or it went away
                if done.exists() or time.monotonic() > deadline:
                    break
                time.sleep(2)
                ray = subprocess.Popen(command, env=ray_env)
                continue
            time.sleep(2)
        _stop(ray)
        return 0


def _wait_for_nodes(address: str, nodes: int, head: subprocess.Popen) -> None:
    """Until `nodes` Ray nodes are alive (the head and a worker per other node of the job)."""
    import ray

    deadline = time.monotonic() + JOIN_TIMEOUT_S
    while True:
        if head.poll() is not None:
            raise RuntimeError(f"the Ray head exited with status {head.returncode}; see this task's log")
        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
            alive = sum(1 for node in ray.nodes() if node["Alive"])
            ray.shutdown()
        except (ConnectionError, RuntimeError):
            alive = 0
        if alive >= nodes:
            logger.info("Ray cluster at %s: %d node(s)", address, alive)
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {alive} of {nodes} Ray nodes joined {address} within {JOIN_TIMEOUT_S} s")
        time.sleep(2)


def _stop(process: subprocess.Popen) -> None:
    """`ray start --block` stops the Ray processes it started when it is terminated."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _write_token(folder: Path) -> Path:
    """A fresh Ray authentication token for one submission, readable by the user alone."""

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f".ray-token-{secrets.token_hex(4)}"
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(secrets.token_hex(32))
    return path


def submit_tune(args: argparse.Namespace, options: SlurmOptions) -> int:
    """Submit the Ray cluster job; print where to look (and wait when asked)."""
    config = Path(args.config)
    load_search(config, args.overrides)  # a mistake in the search fails here, not in the job
    out = Path(args.out)
    folder = out / "slurm" / "%j"
    # One task per node whatever the GPU count: Ray schedules the node's GPUs among trials.
    executor = build_executor(folder, options, tasks_per_node=1)
    token_file = _write_token(out.resolve() / "slurm")
    try:
        job = executor.submit(
            RayTuneJob(
                str(config.resolve()),
                args.overrides,
                str(out.resolve() / "slurm"),
                str(token_file),
                resume=getattr(args, "resume", False),
            )
        )
    except (subprocess.CalledProcessError, OSError, FailedJobError) as exc:
        raise submit_failed(exc) from None
    record_submission(out, job, options, "tune", config=str(config), overrides=args.overrides)
    print(
        where_to_look(job, out, options, tasks=1, results="results.md in the search's storage_path folder"), flush=True
    )
    if must_wait(executor.cluster, args.wait, [job]):
        wait_for(job)
        print(f"job {job.job_id}: the search finished")
    return 0
