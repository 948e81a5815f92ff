"""Trainer options off the default path: torch.compile, channels_last, and a pretrained
Hugging Face text encoder loaded from a local folder with its own tokenizer.

Each is a real `mmimdb-dist train` process on the 600-movie synthetic shard set; the
reference for "the option changes nothing it should not" is a plain run of the same config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from dist_scripts.train_fixtures import evaluate_checkpoint, run_train, tiny_config, write_config

from mmimdb_dist.run.layout import METRICS_LOG
from mmimdb_dist.run.metrics_log import read_records

pytestmark = pytest.mark.slow


def _final(run_dir: Path) -> dict:
    return json.loads((run_dir / "final_metrics.json").read_text())


def _train_losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in read_records(run_dir / METRICS_LOG, "train")]


def _one_epoch(shards: Path, root: Path, name: str, color_jitter: float = 0.0, **train) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    data = tiny_config(shards, root / "runs", name, epochs=1, **train)
    data["loader"]["color_jitter"] = color_jitter
    run_train(write_config(root / f"{name}.yaml", data))
    return root / "runs" / name


@pytest.fixture(scope="module")
def plain_run(shards, tmp_path_factory) -> Path:
    return _one_epoch(shards, tmp_path_factory.mktemp("plain"), "plain")


def _assert_reloads_with_reported_dev_metrics(run_dir: Path) -> None:
    from mmimdb_dist.metrics import compute_metrics

    final = _final(run_dir)
    dev = evaluate_checkpoint(run_dir / "checkpoints" / final["best_checkpoint"], "dev")
    metrics = compute_metrics(dev.labels, dev.probs)
    assert metrics["f1_macro"] == pytest.approx(final["dev"]["threshold_0.5"]["f1_macro"], abs=1e-6)
    assert metrics["f1_micro"] == pytest.approx(final["dev"]["threshold_0.5"]["f1_micro"], abs=1e-6)


def test_compiled_model_trains_like_the_eager_one_and_its_export_reloads(plain_run, shards, tmp_path):
    # aot_eager traces the model through torch.compile's full front end (Dynamo + AOTAutograd)
    # without generating kernels, so the numbers must match eager exactly and the test stays fast.
    run_dir = _one_epoch(shards, tmp_path, "compiled", compile=True, compile_backend="aot_eager")
    np.testing.assert_allclose(_train_losses(run_dir), _train_losses(plain_run), rtol=0, atol=1e-5)
    from safetensors import safe_open

    export = run_dir / "checkpoints" / _final(run_dir)["best_checkpoint"] / "inference" / "model.safetensors"
    with safe_open(str(export), framework="pt") as handle:
        assert not [key for key in handle.keys() if key.startswith("_orig_mod.")]  # noqa: SIM118 (not iterable)
    _assert_reloads_with_reported_dev_metrics(run_dir)


def test_channels_last_changes_the_layout_not_the_result(plain_run, shards, tmp_path):
    run_dir = _one_epoch(shards, tmp_path, "channels-last", channels_last=True)
    # Convolutions over the other layout sum in another order: the first logged losses agree to
    # ~1e-5 and the difference grows through the epoch's updates, staying below 1e-3.
    losses, plain = _train_losses(run_dir), _train_losses(plain_run)
    assert abs(losses[0] - plain[0]) < 1e-4
    np.testing.assert_allclose(losses, plain, rtol=0, atol=1e-3)
    assert _final(run_dir)["dev"]["threshold_0.5"]["f1_macro"] == pytest.approx(
        _final(plain_run)["dev"]["threshold_0.5"]["f1_macro"], abs=0.02
    )
    _assert_reloads_with_reported_dev_metrics(run_dir)


# --------------------------------------------------------------------------- Hugging Face encoder


@pytest.fixture(scope="module")
def local_pretrained_encoder(shards, tmp_path_factory) -> Path:
    """A folder as `save_pretrained` writes it: a tiny DistilBERT and a WordPiece tokenizer
    trained on the synthetic train plots (what a user copies onto an offline cluster)."""
    import torch
    from dist_scripts.wordpiece import train_wordpiece
    from transformers import AutoModel, DistilBertConfig

    from mmimdb_dist.data.manifest import load_manifest
    from mmimdb_dist.data.plots import read_shard_split_texts

    texts = read_shard_split_texts(load_manifest(shards), "train").texts
    folder = tmp_path_factory.mktemp("pretrained-distilbert")
    fast = train_wordpiece(texts, folder, vocab_size=600)
    torch.manual_seed(0)
    config = DistilBertConfig(
        vocab_size=len(fast),
        dim=32,
        n_layers=2,
        n_heads=2,
        hidden_dim=64,
        max_position_embeddings=128,
        pad_token_id=fast.pad_token_id,
    )
    AutoModel.from_config(config).save_pretrained(folder)
    return folder


def test_pretrained_hf_encoder_from_a_local_folder_trains_at_its_own_lr(local_pretrained_encoder, shards, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    from mmimdb_dist.run.export import load_for_inference

    config = tiny_config(shards, tmp_path / "runs", "hf", epochs=2, encoder_lr=5e-4, lr=0.01, log_every=5)
    config["model"]["text"] = {
        "kind": "hf",
        "name": str(local_pretrained_encoder),
        "pretrained": True,
        "pooling": "cls",
    }
    config["loader"]["max_text_length"] = 128
    run_train(write_config(tmp_path / "hf.yaml", config))
    run_dir = tmp_path / "runs" / "hf"

    # The encoder is "pretrained", so it gets encoder_lr; the heads get lr (cosine after warmup).
    train = read_records(run_dir / METRICS_LOG, "train")
    assert {"encoder", "encoder_no_decay", "head", "head_no_decay"} == set(train[0]["lr"])
    for record in train:  # cosine reaches 0 at the very last step
        assert record["lr"]["head"] == record["lr"]["encoder"] == 0 or record["lr"]["encoder"] / record["lr"][
            "head"
        ] == pytest.approx(5e-4 / 0.01)
    assert not (run_dir / "vocabulary.json").exists()  # the encoder's own tokenizer is used

    # The checkpoint carries the tokenizer and the architecture: it reloads with no access to
    # the original folder, tokenises identically, and holds the trained (not the initial) weights.
    final = _final(run_dir)
    best = run_dir / "checkpoints" / final["best_checkpoint"]
    _model, _cfg, encoder = load_for_inference(best)
    original = AutoTokenizer.from_pretrained(str(local_pretrained_encoder))
    plot = "A detective hunts a killer through the city at night."
    assert encoder.encode(plot, 64) == original(plot, truncation=True, max_length=64)["input_ids"]
    assert sum(i != original.unk_token_id for i in encoder.encode(plot, 64)) > 5
    initial = AutoModel.from_pretrained(str(local_pretrained_encoder)).state_dict()
    trained = load_file(str(best / "inference" / "model.safetensors"))
    key = "embeddings.word_embeddings.weight"
    assert not np.allclose(trained[f"text_encoder.model.{key}"].numpy(), initial[key].numpy())
    _assert_reloads_with_reported_dev_metrics(run_dir)


def test_on_evaluation_flags_only_the_final_evaluation(shards, tmp_path):
    """The hook a Tune trial reports through: one call per dev evaluation, each after its
    checkpoint is complete, and `last` on the final one only (the trial holds that report until
    the test is written, so ASHA's stop at max_t cannot interrupt the test)."""
    from mmimdb_dist.run.checkpoints import complete_checkpoints
    from mmimdb_dist.schema import ExperimentConfig, from_dict
    from mmimdb_dist.train.loop import train

    data = tiny_config(shards, tmp_path / "runs", "hooked", epochs=2, eval_every=10)
    data["train"]["num_threads"] = 1
    calls = []

    def hook(record: dict) -> None:
        assert Path(record["checkpoint"]) in complete_checkpoints(tmp_path / "runs" / "hooked" / "checkpoints")
        assert not (tmp_path / "runs" / "hooked" / "final_metrics.json").exists()
        calls.append((record["step"], record["last"]))

    final = train(from_dict(ExperimentConfig, data), on_evaluation=hook)
    steps = [step for step, _ in calls]
    assert steps == sorted(steps)
    assert len(steps) >= 3
    assert [last for _, last in calls] == [False] * (len(calls) - 1) + [True]
    assert final["test"]["threshold_0.5"]["f1_macro"] >= 0


def test_color_jitter_reaches_training_and_not_evaluation(plain_run, shards, tmp_path):
    """Train losses change with loader.color_jitter (it reaches the model in training) and are the
    same for the same seed; an independent, unjittered evaluation of the jittered run's checkpoint
    reproduces its reported dev metrics exactly (evaluation is not jittered)."""
    jittered = [_one_epoch(shards, tmp_path / name, name, color_jitter=0.4) for name in ("jitter", "again")]
    losses = [_train_losses(run_dir) for run_dir in jittered]
    assert losses[0] == losses[1]
    assert losses[0] != _train_losses(plain_run)
    _assert_reloads_with_reported_dev_metrics(jittered[0])


def test_a_training_batch_reads_nothing_back_to_the_host(shards, tmp_path):
    """The loss stays on the device until a log line needs it: on a GPU every read-back (item,
    float, tolist, bool, numpy) stops the CPU from queueing the next batch's kernels. Counted
    for real around each micro-batch of a run; the one read per optimizer step (the stop and
    non-finite agreement) and the log lines happen outside it."""
    import contextlib

    import torch

    from mmimdb_dist.schema import ExperimentConfig, from_dict
    from mmimdb_dist.train.accelerator import build_accelerator
    from mmimdb_dist.train.loop import Trainer

    methods = ("item", "tolist", "numpy", "__float__", "__int__", "__bool__")

    @contextlib.contextmanager
    def counting_reads(counter: list[str]):
        originals = {name: getattr(torch.Tensor, name) for name in methods}

        def wrap(name):
            def read(self, *args, **kwargs):
                counter.append(name)
                return originals[name](self, *args, **kwargs)

            return read

        try:
            for name in methods:
                setattr(torch.Tensor, name, wrap(name))
            yield
        finally:
            for name, original in originals.items():
                setattr(torch.Tensor, name, original)

    class Counting(Trainer):
        reads: ClassVar[list[list[str]]] = []

        def _train_batch(self, *args, **kwargs):
            counter: list[str] = []
            with counting_reads(counter):
                super()._train_batch(*args, **kwargs)
            self.reads.append(counter)

    data = tiny_config(shards, tmp_path / "runs", "no_sync", epochs=1, grad_accum_steps=2)
    data["model"]["modality_dropout"] = 0.2
    cfg = from_dict(ExperimentConfig, data)
    accelerator = build_accelerator(cfg)
    try:
        trainer = Counting(cfg, accelerator)
        trainer.fit()
    finally:
        accelerator.end_training()
    assert len(Counting.reads) == trainer.batches_per_epoch
    assert all(reads == [] for reads in Counting.reads), Counting.reads[:3]


def test_a_step_skipped_by_loss_scaling_does_not_advance_the_schedule():
    """fp16 loss scaling skips a step whose gradients overflowed. Accelerate reports it through
    `optimizer_step_was_skipped` (its optimizer wrapper around a real GradScaler, here torch's
    CPU one); the trainer steps the scheduler only when that is false."""
    import torch
    from accelerate import Accelerator
    from accelerate.optimizer import AcceleratedOptimizer

    from mmimdb_dist.train.loop import Trainer

    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(3, 1)
    scaler = torch.amp.GradScaler("cpu")
    optimizer = AcceleratedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), scaler=scaler)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer.optimizer, lambda step: 1.0 / (1 + step))
    accelerator._optimizers.append(optimizer)
    trainer = Trainer.__new__(Trainer)  # the step alone: its collaborators, not a run
    trainer.accelerator, trainer.optimizer, trainer.scheduler = accelerator, optimizer, scheduler
    trainer.train_cfg = type("TrainCfg", (), {"max_grad_norm": None})()
    trainer.model = model

    scaler.scale(model(torch.ones(1, 3)).sum() * float("inf")).backward()  # overflow: skipped
    trainer._optimizer_step()
    assert accelerator.optimizer_step_was_skipped
    assert scheduler.last_epoch == 0
    scaler.scale(model(torch.ones(1, 3)).sum()).backward()  # a finite step: taken
    trainer._optimizer_step()
    assert not accelerator.optimizer_step_was_skipped
    assert scheduler.last_epoch == 1
