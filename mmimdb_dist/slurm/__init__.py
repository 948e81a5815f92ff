"""Slurm through submitit: training jobs, sweeps as job arrays, Ray Tune in one allocation.

    mmimdb-dist submit train --config X.yaml --nodes 2 --gpus-per-node 4 --partition gpu --time 240
    mmimdb-dist submit sweep --config X.yaml --grid sweep.yaml --partition gpu --time 120
    mmimdb-dist submit summary runs/<sweep>          # the finished runs of a sweep, ranked
    mmimdb-dist submit tune --config configs/tune/X.yaml --nodes 2 --gpus-per-node 4 ...

One job runs the ordinary trainer (`mmimdb_dist.train.loop.train`) on every task of the
allocation, with torch.distributed set up from Slurm's variables
(`submitit.helpers.TorchDistributedEnvironment`): one task per GPU, or `--tasks-per-node`
CPU processes over gloo. `--cluster local` runs the same job as local processes and
`--cluster debug` in the calling process, without Slurm.

Preemption and time limits (`job`): submitit asks Slurm to send SIGUSR2 `signal_delay_s`
before the limit, to every task. While training, the trainer's own handler takes it on every
rank, all ranks agree to stop at the next optimizer step and checkpoint there, and then global
rank 0 alone requeues the job; the requeued job resumes from that checkpoint (`--resume
auto`). Outside the training loop (start-up, final evaluation) submitit's handler is the one
in place: rank 0 requeues and the job resumes from the newest checkpoint on disk.

Modules: `options` (the resources asked for, and the submitit executor built from them),
`distributed` (torch.distributed from the job's environment), `job` (the checkpointable
training job and its requeue), `submission` (what a submission records in its run folder),
`sweep` (grids of overrides as job arrays, and their summary), `ray_cluster` (a Ray cluster
inside one allocation for `mmimdb-dist tune`).
"""
