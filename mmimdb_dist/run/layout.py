"""The run folder: its file names, where a config's run lives, and what `--out` may replace.

A run writes `<output_dir>/<name>/`:

    config.yaml          the resolved config
    vocabulary.json      the BiLSTM's word vocabulary, built from the train split only
    metrics.jsonl        one line per logged step (loss, lr per parameter group, samples/s,
                         grad norm, peak memory), per dev evaluation, and a final line
    tensorboard/         the same curves for TensorBoard (`tensorboard --logdir <run>`), the
                         figures as images, and hparams/ (the config with the test metrics)
    evaluation/          <best>-test/: the figures of the best checkpoint on test (as `evaluate`
                         writes them), logged to every tracker
    trackers.json        the MLflow run id, so that a resumed run continues the same run
    checkpoints/         step-<step>-b<batches>/: Accelerate state (model, optimizer, scheduler,
                         every rank's RNG), inference/ (model.safetensors: the same file as
                         Accelerate's where the tensors are the same, a hard link; config.yaml,
                         genres.json, tokenizer or vocabulary), files.json (sizes and
                         SHA-256, checked on resume) and trainer_state.json (written last);
                         the `keep_checkpoints` newest plus the best are kept; at the end the
                         best one's inference/ gains thresholds.json (tuned on dev)
                         and preprocessing.json (the shard set's poster and plot settings)
    final_metrics.json   dev and test metrics of the BEST checkpoint, at threshold 0.5 and with
                         thresholds tuned on dev (test never tunes on itself)
    per_label.csv        per-genre precision, recall and F1 under both protocols
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from ..schema import TRACKERS

CONFIG_FILE = "config.yaml"
# A run's token encoder (data/tokens.py): a word vocabulary, or a tokenizer's own files.
VOCABULARY_FILE = "vocabulary.json"
TOKENIZER_DIR = "tokenizer"
METRICS_LOG = "metrics.jsonl"
FINAL_METRICS = "final_metrics.json"
PER_LABEL_CSV = "per_label.csv"
EVALUATION_DIR = "evaluation"
TRACKERS_FILE = "trackers.json"
CHECKPOINTS_DIR = "checkpoints"
# TensorBoard's event files (a tracker given a folder writes <run>/<its name>).
TENSORBOARD_DIR = "tensorboard"
# A Slurm submission's record of its jobs (slurm/submission.py).
SUBMISSIONS_FILE = "submissions.json"
# Inside one checkpoint folder.
STATE_FILE = "trainer_state.json"
FILES_FILE = "files.json"
INFERENCE_DIR = "inference"
# Accelerate's name for the model's weights (also the export's, which shares the file: checkpoints.py).
WEIGHTS_FILE = "model.safetensors"

# What a run folder holds: the trainer's files, `evaluate`'s reports, a Slurm job's records.
RUN_FILES = frozenset(
    {
        CHECKPOINTS_DIR,
        CONFIG_FILE,
        EVALUATION_DIR,
        FINAL_METRICS,
        METRICS_LOG,
        PER_LABEL_CSV,
        TENSORBOARD_DIR,
        VOCABULARY_FILE,
        "slurm",
        SUBMISSIONS_FILE,
        TRACKERS_FILE,
    }
) | frozenset(TRACKERS)  # a tracker given a folder writes <run>/<its name>


def run_dir_of(cfg: Any) -> Path:
    """`<output_dir>/<name>`: where the run of an ExperimentConfig lives."""
    return Path(cfg.output_dir) / str(cfg.name)


def checkpoints_dir_of(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINTS_DIR


def run_dir_of_checkpoint(checkpoint: str | Path) -> Path | None:
    """The run folder a checkpoint folder belongs to, or None for a checkpoint copied elsewhere."""
    parent = Path(checkpoint).resolve().parent
    return parent.parent if parent.name == CHECKPOINTS_DIR else None


def owns_run_file(name: str) -> bool:
    return name in RUN_FILES or (name.startswith(".") and name.endswith(".tmp"))


def is_run_folder(folder: Path) -> bool:
    """Whether `folder` holds a run by its content (a run records its command in its lock file;
    this recognises the rest): a saved config with the sections of one, a metrics log of its
    records, or the record of the Slurm jobs submitted for it (written before the job starts)."""
    try:
        data = yaml.safe_load((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        if isinstance(data, dict) and {"model", "train", "loader"} <= set(data):
            return True
    except (OSError, ValueError, yaml.YAMLError):
        pass
    try:
        with open(folder / METRICS_LOG, encoding="utf-8") as log:
            first = json.loads(log.readline())
        if isinstance(first, dict) and first.get("type") in ("train", "eval", "final"):
            return True  # the log of a start that died before it saved its config
    except (OSError, ValueError):
        pass
    try:
        jobs = json.loads((folder / SUBMISSIONS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(jobs, list) and all(isinstance(job, dict) and "job_id" in job for job in jobs)
