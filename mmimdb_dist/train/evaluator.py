"""Dev evaluation during training, the choice of the best checkpoint, the early stop, and the
final test of that best checkpoint.

The evaluator decides when it runs: at the end of each epoch or every `train.eval_every`
optimizer steps, and always after the last step. Each evaluation compares `train.select_metric`
with the best so far; a better one makes the checkpoint saved next the best one, and
`train.early_stopping_patience` evaluations without one stop the run. The final evaluation loads
the BEST checkpoint (never the last weights), tunes thresholds on dev and reports on test
(`run/protocol.py`), and adds what `predict` needs to that checkpoint's `inference/` folder.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from ..labels import LabelSet
from ..metrics import (
    compute_metrics,
    compute_multiclass_metrics,
    tune_thresholds,
    write_metrics_json,
    write_per_label_csv,
)
from ..report.evaluation import write_figures
from ..run.checkpoints import TrainerState, checkpoint_name
from ..run.export import add_inference_files
from ..run.layout import EVALUATION_DIR, FINAL_METRICS, METRICS_LOG, PER_LABEL_CSV
from ..run.predictions import Predictions, evaluate_split
from ..run.protocol import primary_report, protocol_report
from ..schema import ExperimentConfig
from .deepspeed_config import broadcast_buffers
from .logger import TrainLogger

logger = logging.getLogger(__name__)

# What every dev evaluation records (and TensorBoard shows), by task kind; `train.select_metric`
# is one of them (schema.train.SELECT_METRICS_BY_TASK).
EVAL_KEYS = {
    "multilabel": (
        "f1_macro",
        "f1_micro",
        "f1_macro_tuned",
        "f1_micro_tuned",
        "mean_average_precision",
        "roc_auc_macro",
    ),
    "multiclass": (
        "accuracy",
        "top5_accuracy",
        "f1_macro",
        "f1_weighted",
        "f1_micro",
        "mean_average_precision",
        "roc_auc_macro",
    ),
}


def dev_metrics(labels: np.ndarray, probs: np.ndarray, label_set: LabelSet) -> dict[str, Any]:
    """Dev metrics at 0.5, plus macro/micro-F1 under thresholds tuned on this same dev split
    (an optimistic figure, meant for choosing checkpoints, never for reporting); for a
    multiclass label set the arg-max metrics."""
    if label_set.multiclass:
        return compute_multiclass_metrics(labels, probs, label_set.names)
    metrics = compute_metrics(labels, probs, genres=label_set.names)
    tuned = compute_metrics(labels, probs, tune_thresholds(labels, probs), label_set.names)
    metrics["f1_macro_tuned"], metrics["f1_micro_tuned"] = tuned["f1_macro"], tuned["f1_micro"]
    return metrics


class Evaluator:
    """Evaluates a run's model on its dev and test splits (every rank takes part)."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        run: Any,
        log: TrainLogger,
        loss_fn: torch.nn.Module,
        input_dtype: torch.dtype,
        deepspeed: bool,
    ) -> None:
        # `run`: the trainer, for what it built (manifest, token encoder, labels, accelerator).
        self.cfg, self.run, self.log = cfg, run, log
        self.loss_fn, self.input_dtype, self.deepspeed = loss_fn, input_dtype, deepspeed
        self.eval_keys = EVAL_KEYS[run.labels.task]

    def due(self, state: TrainerState, epoch_end: bool, last: bool) -> bool:
        """Whether the optimizer step just taken is followed by a dev evaluation."""
        every = self.cfg.train.eval_every
        return last or (every == "epoch" and epoch_end) or (isinstance(every, int) and state.step % every == 0)

    def predict_split(self, model: Any, split: str) -> Predictions:
        run = self.run
        return evaluate_split(
            model,
            self.cfg,
            run.manifest,
            split,
            run.token_encoder,
            accelerator=run.accelerator,
            input_dtype=self.input_dtype,
        )

    def dev_loss(self, predictions: Predictions) -> float | None:
        """The training loss (weighted BCE or focal, with the train split's class weights) of the
        fused head over a split: comparable with the train loss when no branch loss is added."""
        if predictions.logits is None or not len(predictions.ids):
            return None
        device = self.run.accelerator.device
        with torch.no_grad():
            loss = self.loss_fn(
                torch.from_numpy(predictions.logits).to(device),
                torch.from_numpy(predictions.labels).to(device, torch.float32),
            )
        return float(loss)

    def evaluate(self, model: Any, state: TrainerState) -> dict[str, Any]:
        """Dev metrics; a better `train.select_metric` makes the checkpoint saved next the best one."""
        run, train = self.run, self.cfg.train
        if self.deepspeed and run.world_size > 1:
            broadcast_buffers(model)  # the statistics the checkpoint about to be saved holds
        dev = self.predict_split(model, "dev")
        metrics = dev_metrics(dev.labels, dev.probs, run.labels)
        metrics["loss"] = self.dev_loss(dev)
        value = metrics[train.select_metric]
        value = float("-inf") if value is None else value
        improved = state.best_metric is None or value > state.best_metric
        if improved:
            state.best_metric, state.best_epoch, state.best_step = value, state.epoch, state.step
            state.best_checkpoint = checkpoint_name(state)
            state.evals_since_best = 0
        else:
            state.evals_since_best += 1
            patience = train.early_stopping_patience
            state.stopped_early = bool(patience and state.evals_since_best >= patience)
        keys = (*self.eval_keys, "loss")
        record = {
            "type": "eval",
            "split": "dev",
            "epoch": state.epoch,
            "step": state.step,
            "batches_seen": state.batches_seen,
            "best": improved,
            "skipped": dev.skipped,
            **{k: metrics[k] for k in keys},
        }
        self.log.record(record, state)
        self.log.scalars({f"dev/{key}": metrics[key] for key in keys}, state)
        if run.main:
            second = (
                "accuracy {:.4f}".format(metrics["accuracy"])
                if run.labels.multiclass
                else "micro-F1 {:.4f} (at 0.5)".format(metrics["f1_micro"])
            )
            logger.info(
                "epoch %d step %d: dev mAP %.4f macro-F1 %.4f %s%s%s",
                state.epoch,
                state.step,
                metrics["mean_average_precision"] or 0.0,
                metrics["f1_macro"],
                second,
                f" (best {train.select_metric})" if improved else "",
                " -> early stop" if state.stopped_early else "",
            )
        return record

    # ------------------------------------------------------------------ the end of the run

    def final(self, model: Any, state: TrainerState) -> dict[str, Any]:
        """Test metrics of the BEST checkpoint (never the last weights), thresholds tuned on dev."""
        run = self.run
        if state.best_checkpoint is None:
            raise ConfigError(f"{run.run_dir}: no evaluation was made, so there is no best checkpoint")
        best = run.checkpoints_dir / state.best_checkpoint
        run.accelerator.load_state(str(best))
        dev, test = self.predict_split(model, "dev"), self.predict_split(model, "test")
        protocol = protocol_report(dev.labels, dev.probs, {"test": (test.labels, test.probs)}, run.labels)
        thresholds = protocol["thresholds"]
        reports = {"dev": protocol["dev"], "test": protocol["test"]}
        if run.main:  # the best checkpoint then carries all that `mmimdb-dist predict` needs
            documents: dict[str, Any] = {"preprocessing.json": dict(run.manifest.settings)}
            if thresholds is not None:  # a multiclass model answers with its arg-max
                documents["thresholds.json"] = {
                    "labels": list(run.labels.names),
                    "thresholds": [float(t) for t in thresholds],
                    "tuned_on": f"dev split of {run.manifest.path}",
                }
            add_inference_files(best, documents)
        result = {
            "select_metric": self.cfg.train.select_metric,
            "best_checkpoint": state.best_checkpoint,
            "best_epoch": state.best_epoch,
            "best_step": state.best_step,
            "best_dev_metric": state.best_metric,
            "stopped_early": state.stopped_early,
            "last_epoch": state.epoch,
            "last_step": state.step,
            "world_size": run.world_size,
            "mixed_precision": run.accelerator.mixed_precision,
            "num_parameters": run.num_parameters,
            "trainable_parameters": run.trainable_parameters,
            "train_seconds": state.train_seconds,
            "train_samples_per_s": state.samples_trained / state.train_seconds if state.train_seconds else None,
            **reports,
        }
        if run.main:
            write_metrics_json(run.run_dir / FINAL_METRICS, result)
            write_per_label_csv(run.run_dir / PER_LABEL_CSV, reports)
            self._track_final(reports, test, thresholds, state)
            test_report = reports["test"]
            self.log.record(
                {
                    "type": "final",
                    "batches_seen": state.batches_seen,
                    "step": state.step,
                    "best_checkpoint": state.best_checkpoint,
                    "test_f1_macro": primary_report(test_report)["f1_macro"],
                    **(
                        {"test_accuracy": test_report["argmax"]["accuracy"]}
                        if run.labels.multiclass
                        else {"test_f1_macro_tuned": test_report["tuned_on_dev"]["f1_macro"]}
                    ),
                },
                state,
            )
        run.accelerator.wait_for_everyone()
        return result

    def _track_final(
        self, reports: dict[str, Any], test: Predictions, thresholds: np.ndarray | None, state: TrainerState
    ) -> None:
        """Test metrics, hparams and the evaluation figures of the best checkpoint, to the
        trackers; the figures are also kept in <run>/evaluation/<best>-test/ (as `evaluate`
        writes them)."""
        run = self.run
        if not self.log.trackers.active:
            return
        suffixes = {"threshold_0.5": "", "tuned_on_dev": "_tuned", "argmax": ""}
        keys = ("accuracy", "f1_macro", "f1_weighted") if run.labels.multiclass else ("f1_macro", "f1_micro")
        final = {
            f"test/{key}{suffixes[protocol]}": reports["test"][protocol][key]
            for protocol in run.labels.protocols
            for key in keys
        }
        final["test/mean_average_precision"] = primary_report(reports["test"]).get("mean_average_precision")
        final = {key: value for key, value in final.items() if value is not None}
        out: Path = run.run_dir / EVALUATION_DIR / f"{state.best_checkpoint}-test"
        label = f"{self.cfg.name} / {state.best_checkpoint} / test"
        figures = (
            write_figures(
                out,
                test.labels,
                test.probs,
                thresholds,
                reports["test"],
                run.run_dir / METRICS_LOG,
                label,
                f"training of {self.cfg.name}",
                run.labels,
            )
            if self.cfg.train.tracker_figures
            else []
        )
        self.log.finish(final, figures, state)
