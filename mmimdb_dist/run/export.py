"""A checkpoint's `inference/` export: written with every checkpoint, loaded with nothing else.

`inference/` holds `model.safetensors` (the unwrapped state dict), the resolved `config.yaml`,
`labels.json` (the label set it answers in: names and task), the token encoder
(`vocabulary.json` or `tokenizer/`), the Hugging Face configs of pretrained encoders
(`text_encoder/`, `image_encoder/`: rebuilt offline from them), and in the best checkpoint of a
finished run `thresholds.json` and `preprocessing.json`.

Nothing is unpickled: weights are safetensors, everything else JSON or YAML (safe loader).
Files listed in the checkpoint's `files.json` are checked (size, SHA-256) first, so a
truncated or swapped file is named instead of failing deep inside a loader; only the
`inference/` files are checked, since a prediction never reads the optimizer state.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open

from ..atomic import atomic_write_json, atomic_write_text
from ..data.features import feature_spec
from ..data.tokens import load_token_encoder, save_token_encoder, token_encoder_size
from ..errors import CheckpointError, ConfigError, DataError
from ..labels import LabelSet
from ..schema import DataConfig, ShardConfig, from_dict, load_config
from .files import add_listed_json, read_json, verify_files
from .layout import CONFIG_FILE, FILES_FILE, INFERENCE_DIR, WEIGHTS_FILE

# A torch.compile'd model names its tensors `_orig_mod.<name>`.
COMPILED_PREFIX = "_orig_mod."

logger = logging.getLogger(__name__)

THRESHOLDS_FILE = "thresholds.json"
PREPROCESSING_FILE = "preprocessing.json"
LABELS_FILE = "labels.json"
# Exports written before label sets were data: a JSON list of MM-IMDb's genre names.
LEGACY_LABELS_FILE = "genres.json"


@dataclass
class InferenceBundle:
    """A loaded model with everything needed to prepare its inputs and read its outputs."""

    checkpoint: Path
    model: Any
    cfg: Any
    token_encoder: Any
    # The label set the model answers in (names in output order, task kind).
    labels: LabelSet
    # Per-label thresholds (the label set's order); 0.5 everywhere when the checkpoint has none,
    # unused by a multiclass model (its answer is the arg-max).
    thresholds: np.ndarray
    thresholds_source: str
    # How `mmimdb-dist shard` turned raw movies into samples for this model's training.
    preprocessing: dict[str, Any] = field(default_factory=dict)

    @property
    def uses_text(self) -> bool:
        return bool(self.cfg.model.uses_text)

    @property
    def uses_image(self) -> bool:
        return bool(self.cfg.model.uses_image)


def encoder_architectures(model: Any) -> dict[str, Any]:
    """The Hugging Face configs of a model's encoders by export folder name (`text_encoder`,
    `image_encoder`): with them a checkpoint rebuilds offline, without the pretrained files."""
    found = {}
    for folder in ("text_encoder", "image_encoder"):
        encoder = getattr(model, folder, None)
        inner = getattr(encoder, "model", None) or getattr(encoder, "tower", None)
        config = getattr(encoder, "dual_config", None) or getattr(inner, "config", None)
        if config is not None and hasattr(config, "save_pretrained"):
            found[folder] = config
    return found


def export_for_inference(
    folder: Path,
    state_dict: dict[str, Any],
    config_text: str,
    token_encoder: Any,
    labels: LabelSet,
    architectures: dict[str, Any] | None = None,
    same_weights_as: Path | None = None,
) -> None:
    """Pure tensors (safetensors), the config and the token encoder: enough to rebuild and predict.

    `same_weights_as`: a weights file already written at this moment (Accelerate's
    `model.safetensors` of the same checkpoint). When it holds exactly these tensors (names
    and values: DDP and single-process runs; not DeepSpeed, which saves its own shards, nor a
    model whose names Accelerate changes), the export is a hard link to it, not a second copy:
    one copy on disk, two names, each loadable alone (copying `inference/` copies the bytes).
    """
    from safetensors.torch import save_file  # torch: imported when a model is saved or loaded, not with
    #                                          the run layer (`submit` looks up checkpoints without it)

    folder.mkdir(parents=True, exist_ok=True)
    # A torch.compile'd model names its tensors `_orig_mod.<name>`: the export uses the plain
    # module's names, so it loads into a model built from the config, compiled or not.
    tensors = {k.removeprefix(COMPILED_PREFIX): v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    weights = folder / WEIGHTS_FILE
    if not (
        same_weights_as is not None
        and _holds_exactly(same_weights_as, tensors)
        and _hard_link(same_weights_as, weights)
    ):
        # Cloned so tensors that share storage (tied weights) save as separate entries.
        save_file({k: v.clone() for k, v in tensors.items()}, str(weights))
    atomic_write_text(folder / CONFIG_FILE, config_text)
    atomic_write_json(folder / LABELS_FILE, labels.to_dict())
    save_token_encoder(token_encoder, folder)
    for name, architecture in (architectures or {}).items():  # rebuilt offline from these
        architecture.save_pretrained(str(folder / name))


def _holds_exactly(path: Path, tensors: dict[str, Any]) -> bool:
    if not path.is_file():
        return False
    with safe_open(str(path), framework="pt") as saved:
        return set(saved.keys()) == set(tensors) and all(saved.get_tensor(k).equal(v) for k, v in tensors.items())


def _hard_link(source: Path, target: Path) -> bool:
    try:
        os.link(source, target)
    except OSError:  # a filesystem without hard links: the caller writes a copy
        return False
    return True


def add_inference_files(checkpoint: Path, documents: dict[str, Any]) -> None:
    """JSON documents into a complete checkpoint's `inference/`, listed in its files.json.

    The final evaluation adds what only exists once training is over (the dev-tuned
    thresholds, the shard preprocessing), so the best checkpoint alone is enough to predict.
    """
    add_listed_json(checkpoint, {f"{INFERENCE_DIR}/{name}": document for name, document in documents.items()})


def read_label_set(folder: Path) -> LabelSet:
    """The label set of an `inference/` folder: `labels.json`, or an older export's `genres.json`."""
    path = folder / LABELS_FILE
    try:
        if path.is_file():
            return LabelSet.from_dict(read_json(path), str(path))
        legacy = folder / LEGACY_LABELS_FILE
        if legacy.is_file():
            return LabelSet.from_dict({"names": read_json(legacy)}, str(legacy))
    except DataError as exc:
        raise CheckpointError(str(exc)) from None
    raise CheckpointError(f"{folder}: no {LABELS_FILE} (expected a checkpoint folder or its {INFERENCE_DIR}/ folder)")


def _thresholds(folder: Path, labels: LabelSet) -> tuple[np.ndarray, str]:
    if labels.multiclass:
        return np.full(len(labels), 0.5), "none (multiclass: the most probable class)"
    path = folder / THRESHOLDS_FILE
    if not path.is_file():
        logger.warning(
            "%s: no %s (only the best checkpoint of a finished run has one); labels are marked at threshold 0.5",
            folder,
            THRESHOLDS_FILE,
        )
        return np.full(len(labels), 0.5), "0.5 (the checkpoint has no tuned thresholds)"
    data = read_json(path)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected an object with 'labels' and 'thresholds'")
    names = data.get("labels", data.get("genres"))  # "genres": written before label sets were data
    if names != list(labels.names):
        raise CheckpointError(
            f"{path}: key 'labels': expected the checkpoint's {len(labels)} labels in order, got {names!r:.120}"
        )
    values = data.get("thresholds")
    if (
        not isinstance(values, list)
        or len(values) != len(labels)
        or not all(isinstance(v, (int, float)) and 0 <= v <= 1 for v in values)
    ):
        raise CheckpointError(f"{path}: key 'thresholds': expected {len(labels)} numbers in [0, 1]")
    return np.asarray(values, dtype=np.float64), f"tuned per label on the {data.get('tuned_on', 'dev split')}"


def _preprocessing(folder: Path, cfg: Any) -> dict[str, Any]:
    path = folder / PREPROCESSING_FILE
    if path.is_file():
        data = read_json(path)
        keys = ("plot_policy", "poster_short_side", "jpeg_quality")
        if not isinstance(data, dict) or any(key not in data for key in keys):
            raise CheckpointError(f"{path}: expected the keys {', '.join(keys)}")
        try:  # the shard settings' own checks: a damaged file is one line, not a MemoryError
            from_dict(ShardConfig, {key: data[key] for key in ("poster_short_side", "jpeg_quality")}, "shard")
            from_dict(DataConfig, {"plot_policy": data["plot_policy"]}, "data")
        except ConfigError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
        return data
    logger.warning(
        "%s: no %s; posters and plots are prepared with the config's shard and data "
        "settings, which may differ from those of the shards it was trained on",
        folder,
        PREPROCESSING_FILE,
    )
    return {
        "plot_policy": cfg.data.plot_policy,
        "poster_short_side": cfg.shard.poster_short_side,
        "jpeg_quality": cfg.shard.jpeg_quality,
    }


def load_bundle(checkpoint: str | Path, device: str = "cpu") -> InferenceBundle:
    """Verify, then load a checkpoint folder (or its `inference/` folder) for prediction."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir():
        raise CheckpointError(f"{checkpoint}: not a checkpoint folder")
    folder = checkpoint / INFERENCE_DIR if (checkpoint / INFERENCE_DIR).is_dir() else checkpoint
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        if not (folder / name).is_file():
            raise CheckpointError(f"{folder}: no {name} (expected a checkpoint folder or its {INFERENCE_DIR}/ folder)")
    if folder != checkpoint and (checkpoint / FILES_FILE).is_file():
        verify_files(
            checkpoint,
            within=INFERENCE_DIR,
            advice="the checkpoint was damaged or its files replaced by another model's file; "
            "use the checkpoint as training saved it",
        )
    labels = read_label_set(folder)
    weights = folder / WEIGHTS_FILE
    try:
        model, cfg, token_encoder = load_for_inference(folder, device)
    except SafetensorError as exc:
        raise CheckpointError(
            f"{weights}: not a readable safetensors file ({exc}); the file is truncated or corrupt"
        ) from None
    thresholds, source = _thresholds(folder, labels)
    return InferenceBundle(
        checkpoint=checkpoint,
        model=model,
        cfg=cfg,
        token_encoder=token_encoder,
        labels=labels,
        thresholds=thresholds,
        thresholds_source=source,
        preprocessing=_preprocessing(folder, cfg),
    )


def load_for_inference(checkpoint: str | Path, device: str = "cpu") -> tuple[Any, Any, Any]:
    """(model in eval mode, ExperimentConfig, token encoder) from a checkpoint folder.

    Accepts the checkpoint folder or its `inference/` folder. The weights are read with
    safetensors (no pickle), so a checkpoint from elsewhere cannot run code when loaded.
    """
    # torch and transformers are imported when a model is built, not with the run layer.
    from safetensors.torch import load_file

    from ..models.registry import build_model

    folder = Path(checkpoint)
    if (folder / INFERENCE_DIR).is_dir():
        folder = folder / INFERENCE_DIR
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(
            f"{folder}: no model.safetensors (expected a checkpoint folder or its {INFERENCE_DIR}/ folder)"
        )
    cfg = load_config(folder / CONFIG_FILE)
    windowed = cfg.model.text.kind == "clip" and cfg.model.uses_text  # plots cut into the tower's windows
    token_encoder = load_token_encoder(folder, clip_config=folder / "text_encoder" if windowed else None)
    # A pretrained text encoder's vocabulary size comes from its saved config.
    vocab_size = None if cfg.model.text.brings_tokenizer and cfg.model.uses_text else token_encoder_size(token_encoder)
    # Architectures from the saved configs; the weights come from the safetensors file.
    shared = cfg.model.shares_dual_encoder
    for part, section in (("text_encoder", cfg.model.text), ("image_encoder", cfg.model.image)):
        if (folder / part).is_dir():
            section.name = str(folder / ("image_encoder" if shared else part))
            section.hf_config = {}
    cfg.model.text.pretrained = cfg.model.text.kind == "bilstm" and cfg.model.text.pretrained
    if cfg.model.image.kind != "cnn":
        cfg.model.image.pretrained = False
        cfg.model.image.weights_path = None
    # A head trained on cached features (loader.features_dir) reads that set's feature rows.
    labels = read_label_set(folder)
    model = build_model(
        cfg.model,
        num_labels=len(labels),
        vocab_size=vocab_size,
        pad_id=token_encoder.pad_id,
        features=feature_spec(cfg.loader),
    )
    fits = f"does not fit the model of its config.yaml and {LABELS_FILE} ({len(labels)} labels)"
    try:
        missing, unexpected = model.load_state_dict(load_file(str(weights)), strict=False)
    except RuntimeError as exc:  # shapes of another model under the same tensor names
        reason = " ".join(str(exc).split())[:300]
        raise CheckpointError(f"{weights}: {fits} ({reason})") from None
    if missing or unexpected:
        raise CheckpointError(f"{weights}: {fits} (missing {missing[:5]}, unexpected {unexpected[:5]})")
    return model.to(device).eval(), cfg, token_encoder
