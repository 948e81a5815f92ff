"""Experiment trackers of a run (`train.trackers`), through Accelerate's tracker classes.

One object owns them for the trainer: it starts them once the run's position is known (a
resumed TensorBoard log is purged past the checkpoint's step, so curves show no step twice),
files the config as hyperparameters, logs train and dev scalars, and at the end the test
metrics and the evaluation figures. Every call is a no-op off the main process.

Why not `Accelerator(log_with=...)` + `init_trackers`: that builds the trackers before the
trainer knows where a resumed run stands, and files TensorBoard's log under a project name;
the trainer needs `<run>/tensorboard` and `purge_step`. The tracker classes are the same.

A write that fails (a full disk, a lost mount, an unreachable tracking server) raises
`TrackerWriteError` naming the tracker: curves with silent holes mislead.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..atomic import atomic_write_json
from ..errors import ConfigError, TrackerWriteError
from ..run.layout import TRACKERS_FILE

logger = logging.getLogger(__name__)

FIGURE_DIR = "figures"


def flat_hparams(config: Mapping[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """The config as `section.key: value`, values a tracker stores as hyperparameters (None
    becomes "null", lists and mappings their JSON)."""
    flat: dict[str, bool | int | float | str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flat_hparams(value, f"{name}."))
        elif value is None:
            flat[name] = "null"
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = json.dumps(value, sort_keys=True, default=str)
    return flat


def _build(name: str, project: str, run_name: str, run_dir: Path, resume_step: int, kwargs: dict[str, Any]) -> Any:
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, MLflowTracker, TensorBoardTracker

    if name == "tensorboard":
        # `run_name` is the folder under logging_dir: <run>/tensorboard, as before trackers.
        return TensorBoardTracker("tensorboard", run_dir, **{"purge_step": resume_step or None, **kwargs})
    if name == "mlflow":
        run_id = _remembered(run_dir).get("mlflow_run_id") if resume_step else None
        return MLflowTracker(**{"experiment_name": project, "run_name": run_name, "run_id": run_id, **kwargs})
    tracker_class = LOGGER_TYPE_TO_CLASS[name]
    if tracker_class.requires_logging_directory:
        return tracker_class(project, str(run_dir / name), **kwargs)
    return tracker_class(project, **kwargs)


def _remembered(run_dir: Path) -> dict[str, str]:
    try:
        data = json.loads((run_dir / TRACKERS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def check_trackers_installed(names: Sequence[str]) -> None:
    """Every tracker of `train.trackers` has its package (each is named after it, and TensorBoard
    is a dependency): checked before the run folder is made, so a missing one is one line
    naming the package, not a failed log write after a stub run folder."""
    for name in names:
        if name != "tensorboard" and importlib.util.find_spec(name) is None:
            extra = " (pip install 'mmimdb-dist[mlflow]')" if name == "mlflow" else f" (pip install {name})"
            raise ConfigError(
                f"train.trackers: {name!r} needs the {name} package, which is not installed{extra}; "
                f"or remove {name!r} from train.trackers"
            )


class Trackers:
    """The run's trackers (`train.trackers`); built on the main process only."""

    def __init__(
        self,
        names: Sequence[str],
        project: str,
        run_name: str,
        run_dir: Path,
        kwargs: Mapping[str, dict[str, Any]],
        main: bool,
    ) -> None:
        self.names, self.project, self.run_name, self.run_dir = list(names), project, run_name, run_dir
        self.kwargs, self.main = dict(kwargs), main
        self.active: list[Any] = []
        self.hparams: dict[str, Any] = {}

    def _failed(self, name: str, exc: OSError) -> TrackerWriteError:
        where = self.run_dir / "tensorboard" if name == "tensorboard" else f"the {name} tracker"
        return TrackerWriteError(str(where), exc.strerror or " ".join(str(exc).split())[:200])

    def start(self, resume_step: int, hparams: dict[str, Any]) -> None:
        """Start every tracker; all but TensorBoard get the config now (TensorBoard's HParams
        view needs the metrics with it, so it gets both at the end, see `finish`). A resumed
        run (`resume_step` > 0) continues its MLflow run, whose parameters were filed when it
        started and cannot change: the trainer warns when the config differs, and the run
        folder's config.yaml is the one in force."""
        if not self.main:
            return
        self.hparams = hparams
        for name in self.names:
            try:
                tracker = _build(
                    name, self.project, self.run_name, self.run_dir, resume_step, dict(self.kwargs.get(name, {}))
                )
                tracker.start()
                self.active.append(tracker)
                if name != "tensorboard" and not resume_step:
                    tracker.store_init_configuration(hparams)
            except ImportError as exc:
                raise TrackerWriteError(
                    "train.trackers",
                    f"{name!r} needs its package ({exc.name or exc}); "
                    f"pip install it, or remove {name!r} from train.trackers",
                ) from None
            except OSError as exc:
                raise self._failed(name, exc) from None
            except Exception as exc:  # the tracker's own error: a bad tracking URI, an unreachable server
                reason = " ".join(str(exc).split())[:300]
                raise ConfigError(
                    f"train.trackers: {name!r} could not start ({type(exc).__name__}: {reason}); check its "
                    f"settings (train.tracker_kwargs.{name}, its environment variables) or remove it"
                ) from None
            if name == "mlflow":  # a resumed run continues the same MLflow run
                self._remember("mlflow_run_id", tracker.active_run.info.run_id)

    def _remember(self, key: str, value: str) -> None:

        atomic_write_json(self.run_dir / TRACKERS_FILE, {**_remembered(self.run_dir), key: value})

    def log(self, values: Mapping[str, float | None], step: int) -> None:
        values = {key: float(value) for key, value in values.items() if value is not None}
        for tracker in self.active:
            try:
                tracker.log(values, step=step)
            except OSError as exc:  # TensorBoard's writer thread reports a failure on the next call
                raise self._failed(tracker.name, exc) from None

    def finish(self, final: Mapping[str, float], step: int, figures: Sequence[Path]) -> None:
        """The test metrics (scalars at the last step), TensorBoard's hparams with them, and the
        evaluation figures: PNG artifacts where the tracker keeps files (MLflow), images where
        it logs images (TensorBoard, W&B, Aim)."""
        self.log(final, step)
        for tracker in self.active:
            try:
                if tracker.name == "tensorboard":
                    tracker.writer.add_hparams(self.hparams, dict(final), run_name="hparams")
                self._log_figures(tracker, figures, step)
            except OSError as exc:
                raise self._failed(tracker.name, exc) from None

    @staticmethod
    def _log_figures(tracker: Any, figures: Sequence[Path], step: int) -> None:
        if not figures:
            return
        if hasattr(tracker, "log_artifact"):
            for path in figures:
                tracker.log_artifact(str(path), artifact_path=FIGURE_DIR)
        elif hasattr(tracker, "log_images"):
            tensorboard = tracker.name == "tensorboard"  # takes one N x H x W x C array, the others lists
            images = {}
            for path in figures:
                with Image.open(path) as image:
                    pixels = np.asarray(image.convert("RGB"))
                images[f"{FIGURE_DIR}/{path.stem}"] = pixels[None] if tensorboard else [pixels]
            tracker.log_images(images, step=step, **({"dataformats": "NHWC"} if tensorboard else {}))
        else:
            logger.info("the %s tracker takes no images: the figures are in %s", tracker.name, figures[0].parent)

    def close(self) -> None:
        """Finish every tracker; a failure here is reported and not raised (the run's own
        files are complete by then, or another error is already on its way)."""
        for tracker in self.active:
            try:
                tracker.finish()
            except Exception as exc:
                logger.error("closing the %s tracker failed: %s", tracker.name, exc)
        self.active = []
