"""Training under Hugging Face Accelerate: `mmimdb-dist train`.

The same command runs plainly on one CPU or GPU, or on every rank under `accelerate launch`:

    mmimdb-dist train --config configs/synth_demo_fusion.yaml
    mmimdb-dist train --config configs/early_fusion.yaml --set train.lr=3e-4 --set train.epochs=20
    accelerate launch --config_file launch/accelerate/multi_gpu_bf16.yaml -m mmimdb_dist.cli \\
        train --config configs/early_fusion.yaml
    # on CPU, 2 processes over gloo (--multi_gpu starts them; the trainer runs on CPU without CUDA)
    accelerate launch --multi_gpu --num_processes 2 -m mmimdb_dist.cli train --config ...
    # DeepSpeed ZeRO-2 / ZeRO-3 (bf16 on GPUs; *_cpu.yaml: 2 CPU processes in fp32), from the
    # repository root; see launch/accelerate/zero2.yaml for how its JSON maps onto `train:`
    accelerate launch --config_file launch/accelerate/zero2.yaml -m mmimdb_dist.cli train --config ...
    # continue a killed or preempted run where its newest complete checkpoint left it
    mmimdb-dist train --config configs/early_fusion.yaml --resume auto

The `train:` section of the config (`TrainConfig`) holds epochs, `lr` (heads and parts
trained from scratch), `encoder_lr` (pretrained encoders), `weight_decay` (none on biases,
norms and 1-d parameters), `warmup_steps` / `warmup_ratio`, `schedule` (cosine, linear,
constant), `grad_accum_steps`, `max_grad_norm`, `mixed_precision` (auto: bf16 / fp16 / fp32
from the hardware; no, bf16, fp16; or null for the launcher's choice), `compile`,
`channels_last`, `eval_every` ("epoch" or N optimizer steps), `early_stopping_patience`,
`checkpoint_every_steps`, `keep_checkpoints`, `log_every`, `seed`, `num_threads`,
`dist_timeout_s`, `find_unused_parameters` (DDP's search, off for every built-in model) and the
experiment trackers (`trackers`, `tracker_project`, `tracker_kwargs`). The late-fusion branch
loss weight is `model.fusion.branch_loss_weight`.
`loader.batch_size` is per process: the global batch is batch_size x processes x accumulation.

A run writes `<output_dir>/<name>/`: config, vocabulary, metrics.jsonl, TensorBoard and tracker
files, checkpoints with their `inference/` export, final_metrics.json and per_label.csv (the
layout, file by file, is in `mmimdb_dist/run/layout.py`; writing and reading each part is
the run layer's, `mmimdb_dist/run/`).

Model selection and early stopping use `train.select_metric`, dev mAP by default: it needs no
threshold, so it keeps rising while a model is still too under-confident to pass 0.5 (F1 at
0.5 stays flat then, and runs selected on it kept their first weights). F1 at 0.5 and F1 with
thresholds tuned on dev itself can be chosen instead. A checkpoint is written after
every evaluation (so the best one is always on disk) and every `checkpoint_every_steps`
optimizer steps (so a kill mid-epoch loses little); `--resume auto` restores weights,
optimizer, scheduler, RNG, epoch, step and the position in the epoch, and ends with the same
metrics as an uninterrupted run. `load_for_inference(checkpoint)` rebuilds a trained model
from a checkpoint's `inference/` folder alone (safetensors, no pickle).

Modules: `loop` (the trainer, which reads as the algorithm: forward, backward, accumulate,
agree, clip, step; `train(cfg)` is the Python entry point) and the components that decide their
own timing around each step: `agreement` (the ranks agree before every step: a stop signal, a
non-finite loss), `logger` (metrics.jsonl and the trackers, every `log_every` steps),
`evaluator` (dev evaluation when due, selection, early stop, the final test of the best
checkpoint), `checkpointer` (when to save, pruning, resuming), `epochs` (the next epoch's
loader started early). `setup` builds what a run needs on every rank; `accelerator` (threads,
precision, DDP options, the Accelerator), `optim` (parameter groups, schedules), `signals`
(SIGTERM / SIGUSR2 / Ctrl-C: exit status 75 after a checkpoint), `tracking` (experiment
trackers), `deepspeed_config`. The run's token encoder is `data/tokens.py`'s; the `train:`
section is `schema/train.py`; checkpoints, the metrics log and the evaluation protocol are the
run layer's (`mmimdb_dist/run/`).
"""
