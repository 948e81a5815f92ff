"""The run layer: what a run leaves on disk, and the one way each part of it is written and read.

`layout` (the run folder's names and paths), `metrics_log` (metrics.jsonl: append, truncate
on resume, read), `files` (the size-and-digest listing of a checkpoint), `checkpoints` (save,
lookup, resume, pruning), `export` (the `inference/` export: written with each checkpoint,
loaded by evaluate / predict / the Python API) and `protocol` (the evaluation protocol: a
split's predictions over every sample exactly once, and the dev-tuned threshold report that
the trainer, `evaluate`, the baseline and Tune all give).
"""
