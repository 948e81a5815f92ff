"""The trainer under DeepSpeed ZeRO: `accelerate launch --use_deepspeed`, 2 CPU processes over gloo.

The launch configs are the project's own (launch/accelerate/zero{2,3}_cpu.yaml pointing at
launch/deepspeed/zero{2,3}.json), run from the repository root as documented. A ZeRO-2 run
trains for two epochs and must learn; a second launch with `--resume auto` must load the
DeepSpeed checkpoint (weights, sharded optimizer state, scheduler) and continue to the end of
a longer run. ZeRO-3 trains one short run in fp32 and must export consolidated weights.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from dist_scripts.ports import free_port
from dist_scripts.train_fixtures import RUN_TIMEOUT_S, env, evaluate_checkpoint, tiny_config, write_config

from mmimdb_dist.run.layout import METRICS_LOG
from mmimdb_dist.run.metrics_log import read_records

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def launch(stage: int | str, config: Path, *extra: str, timeout_s: int = RUN_TIMEOUT_S) -> subprocess.CompletedProcess:
    """`stage`: 2 or 3 for the project's CPU launch configs, or the path of another one."""
    launch_config = f"launch/accelerate/zero{stage}_cpu.yaml" if isinstance(stage, int) else stage
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--use_deepspeed",
        "--config_file",
        launch_config,
        "--num_processes",
        "2",
        "--main_process_ip",
        "127.0.0.1",
        "--main_process_port",
        str(free_port()),
        "-m",
        "mmimdb_dist.cli",
        "--log-level",
        "WARNING",
        "train",
        "--config",
        str(config),
        *extra,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env(), cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def records(run_dir: Path, kind: str) -> list[dict]:
    return read_records(run_dir / METRICS_LOG, kind)


def test_zero2_trains_checkpoints_and_resumes(shards, tmp_path):
    run_dir = tmp_path / "runs" / "zero2"
    # warmup then cosine: the logged learning rates show the scheduler reaches the ZeRO optimizer
    base = tiny_config(shards, tmp_path / "runs", "zero2", epochs=2, log_every=1, grad_accum_steps=2, max_grad_norm=0.5)
    launch(2, write_config(tmp_path / "zero2.yaml", base))

    final = json.loads((run_dir / "final_metrics.json").read_text())
    assert final["world_size"] == 2
    assert final["mixed_precision"] == "no"
    train = records(run_dir, "train")
    losses = [r["loss"] for r in train]
    # (the classifier starts at the genre priors, so the first losses are already the priors' entropy)
    assert sum(losses[-3:]) / 3 < 0.95 * sum(losses[:3]) / 3, losses
    lrs = [r["lr"]["head"] for r in train]
    assert lrs[0] < lrs[2], lrs
    assert lrs[-1] < max(lrs), lrs  # warmup, then decay
    # DeepSpeed clips and reports the norm of the step it took
    assert all(r["grad_norm"] is not None and r["grad_norm"] > 0 for r in train)
    # accumulation groups of 2 batches: steps = ceil(batches / 2) per epoch
    evals = records(run_dir, "eval")
    assert len(evals) == 2
    assert evals[-1]["step"] == train[-1]["step"]
    assert train[-1]["batches_seen"] in (2 * train[-1]["step"], 2 * train[-1]["step"] - 2)

    checkpoint = run_dir / "checkpoints" / final["best_checkpoint"]
    assert sorted(p.name for p in (checkpoint / "pytorch_model").glob("*optim_states.pt")) == [
        "zero_pp_rank_0_mp_rank_00_optim_states.pt",
        "zero_pp_rank_1_mp_rank_00_optim_states.pt",
    ]
    # the inference export is the trained model: a plain 1-process evaluation reproduces dev
    dev = evaluate_checkpoint(checkpoint, "dev")
    from mmimdb_dist.metrics import compute_metrics

    # the dev figures of final_metrics.json (the loaded best checkpoint), the one logged when that
    # checkpoint was evaluated during training, and a plain evaluation agree: every rank evaluates
    # with rank 0's BatchNorm statistics, which the checkpoint holds
    reported = final["dev"]["threshold_0.5"]
    [logged] = [r for r in evals if r["step"] == final["best_step"]]
    assert logged["mean_average_precision"] == pytest.approx(reported["mean_average_precision"], abs=1e-6)
    assert logged["f1_macro"] == pytest.approx(reported["f1_macro"], abs=1e-6)
    assert compute_metrics(dev.labels, dev.probs)["mean_average_precision"] == pytest.approx(
        reported["mean_average_precision"], abs=1e-4
    )

    # a longer run resumes from the newest checkpoint instead of starting over
    newest_step = train[-1]["step"]
    longer = write_config(tmp_path / "zero2.yaml", {**base, "train": {**base["train"], "epochs": 3}})
    launch(2, longer, "--resume", "auto")
    train_after = records(run_dir, "train")
    assert train_after[: len(train)] == train  # history up to the checkpoint is kept as is
    resumed = train_after[len(train) :]
    assert resumed
    assert resumed[0]["step"] == newest_step + 1
    # the optimizer state came back: the first resumed loss continues the curve, no restart spike
    assert resumed[0]["loss"] < losses[0] * 0.9
    assert json.loads((run_dir / "final_metrics.json").read_text())["last_epoch"] == 2


def test_zero3_fp32_trains_and_exports_gathered_weights(shards, tmp_path):
    run_dir = tmp_path / "runs" / "zero3"
    launch(
        3, write_config(tmp_path / "zero3.yaml", tiny_config(shards, tmp_path / "runs", "zero3", epochs=1, log_every=2))
    )
    final = json.loads((run_dir / "final_metrics.json").read_text())
    checkpoint = run_dir / "checkpoints" / final["best_checkpoint"]
    # parameters are partitioned: each rank saved its own shard of them
    assert len(list((checkpoint / "pytorch_model").glob("zero_pp_rank_*_model_states.pt"))) == 2
    dev = evaluate_checkpoint(checkpoint, "dev")
    from mmimdb_dist.metrics import compute_metrics

    reported = final["dev"]["threshold_0.5"]["mean_average_precision"]
    [logged] = [r for r in records(run_dir, "eval") if r["step"] == final["best_step"]]
    assert logged["mean_average_precision"] == pytest.approx(reported, abs=1e-6)
    assert compute_metrics(dev.labels, dev.probs)["mean_average_precision"] == pytest.approx(reported, abs=1e-4)
    losses = [r["loss"] for r in records(run_dir, "train")]
    assert losses[-1] < losses[0], losses


def test_zero2_bf16_casts_inputs_and_buffers_and_learns(shards, tmp_path):
    """DeepSpeed's own bf16 mode (zero2.json, the GPU config) on CPU: the model runs in bf16
    without autocast, so the trainer feeds it bf16 pixels and bf16 BatchNorm statistics."""
    import yaml
    from safetensors import safe_open

    launch_config = yaml.safe_load((REPO / "launch/accelerate/zero2_cpu.yaml").read_text())
    launch_config["deepspeed_config"]["deepspeed_config_file"] = str(REPO / "launch/deepspeed/zero2.json")
    launch_yaml = tmp_path / "zero2_bf16_cpu.yaml"
    launch_yaml.write_text(yaml.safe_dump(launch_config))
    launch(
        str(launch_yaml),
        write_config(tmp_path / "bf16.yaml", tiny_config(shards, tmp_path / "runs", "bf16", epochs=1, log_every=2)),
    )
    run_dir = tmp_path / "runs" / "bf16"
    final = json.loads((run_dir / "final_metrics.json").read_text())
    assert final["mixed_precision"] == "bf16"
    losses = [r["loss"] for r in records(run_dir, "train")]
    # The classifier starts at the genre priors, so the first loss is already the priors' entropy.
    assert min(losses[-2:]) < losses[0], losses
    exported = run_dir / "checkpoints" / final["best_checkpoint"] / "inference" / "model.safetensors"
    with safe_open(str(exported), "pt") as weights:
        dtypes = {str(weights.get_slice(name).get_dtype()) for name in weights.keys()}  # noqa: SIM118 (a safetensors handle is not iterable)
    assert "BF16" in dtypes


def _plugin_for(path: str, **entries):
    from accelerate.utils import DeepSpeedPlugin

    config = json.loads((REPO / path).read_text(encoding="utf-8"))
    config.update(entries)
    return DeepSpeedPlugin(hf_ds_config=config)


def _fill(plugin, accelerator_precision: str = "no", **train):
    """fill_deepspeed_config against a real DeepSpeedPlugin, outside a launch."""
    from types import SimpleNamespace

    from mmimdb_dist.schema import load_config
    from mmimdb_dist.train.deepspeed_config import fill_deepspeed_config

    cfg = load_config(
        REPO / "configs/synth_early_fusion.yaml", [f"train.{key}={value}" for key, value in train.items()]
    )
    accelerator = SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=plugin), mixed_precision=accelerator_precision)
    fill_deepspeed_config(accelerator, cfg)
    return plugin.deepspeed_config


@pytest.mark.parametrize(
    "path",
    [
        "launch/deepspeed/zero2.json",
        "launch/deepspeed/zero3.json",
        "launch/deepspeed/zero2_fp32.json",
        "launch/deepspeed/zero3_fp32.json",
    ],
)
def test_launch_configs_resolve_from_the_experiment_config(path):
    filled = _fill(_plugin_for(path), max_grad_norm=0.25, grad_accum_steps=4)
    assert filled["train_micro_batch_size_per_gpu"] == 32  # loader.batch_size of the config
    assert filled["gradient_clipping"] == 0.25
    assert filled["gradient_accumulation_steps"] == 1  # the trainer accumulates the 4 itself
    zero = filled["zero_optimization"]
    # no bucket size left to "auto": the fusion models have no config.hidden_size to derive it from
    assert not [key for key, value in zero.items() if value == "auto"]
    assert filled["bf16"]["enabled"] is ("fp32" not in path)
    assert _fill(_plugin_for(path), max_grad_norm="null")["gradient_clipping"] == 0.0


def test_accelerate_yamls_point_at_existing_deepspeed_configs():
    import yaml

    for stage in (2, 3):
        for name, json_name in ((f"zero{stage}", f"zero{stage}.json"), (f"zero{stage}_cpu", f"zero{stage}_fp32.json")):
            launch_config = yaml.safe_load((REPO / "launch/accelerate" / f"{name}.yaml").read_text())
            assert launch_config["distributed_type"] == "DEEPSPEED"
            assert launch_config["deepspeed_config"]["deepspeed_config_file"] == f"launch/deepspeed/{json_name}"
            assert "mixed_precision" not in launch_config  # Accelerate refuses it beside a JSON
            stage_in_json = json.loads((REPO / "launch/deepspeed" / json_name).read_text())["zero_optimization"]
            assert stage_in_json["stage"] == stage


def test_config_disagreements_are_refused_with_the_key_named():
    from mmimdb_dist.errors import ConfigError

    with pytest.raises(ConfigError, match="gradient_accumulation_steps is 4"):
        _fill(_plugin_for("launch/deepspeed/zero2_fp32.json", gradient_accumulation_steps=4))
    with pytest.raises(ConfigError, match="gradient_clipping is 2.0 but train.max_grad_norm is 1.0"):
        _fill(_plugin_for("launch/deepspeed/zero2_fp32.json", gradient_clipping=2.0), max_grad_norm=1.0)
    with pytest.raises(ConfigError, match="runs in 'no' precision but train.mixed_precision is 'bf16'"):
        _fill(_plugin_for("launch/deepspeed/zero2_fp32.json"), accelerator_precision="no", mixed_precision="bf16")
    # null leaves precision to the JSON
    assert _fill(_plugin_for("launch/deepspeed/zero2.json"), accelerator_precision="bf16", mixed_precision="null")


def test_zero3_evaluates_uneven_shares_with_every_parameter_sharded(shards, tmp_path):
    """Under ZeRO-3 every forward gathers the sharded weights from all ranks, so ranks must run
    the same number of forwards. Here no parameter stays whole (persistence threshold 0) and the
    two ranks' shares of dev and test differ in batches: the rank with fewer pads with repeat
    forwards whose outputs are dropped, and the metrics are those of a 1-process evaluation."""
    import yaml
    from dist_scripts.loader_fixtures import manifest_ids

    from mmimdb_dist.data.loader import build_eval_loader
    from mmimdb_dist.data.manifest import load_manifest
    from mmimdb_dist.data.vocab import Vocabulary
    from mmimdb_dist.schema import load_config

    ds = json.loads((REPO / "launch/deepspeed/zero3_fp32.json").read_text())
    # nothing kept whole or kept gathered between forwards: every forward gathers every weight
    ds["zero_optimization"].update(
        stage3_param_persistence_threshold=0,
        stage3_max_live_parameters=0,
        stage3_max_reuse_distance=0,
        stage3_prefetch_bucket_size=0,
    )
    (tmp_path / "zero3_sharded.json").write_text(json.dumps(ds))
    launch_config = yaml.safe_load((REPO / "launch/accelerate/zero3_cpu.yaml").read_text())
    launch_config["deepspeed_config"]["deepspeed_config_file"] = str(tmp_path / "zero3_sharded.json")
    (tmp_path / "zero3_sharded.yaml").write_text(yaml.safe_dump(launch_config))
    config = write_config(
        tmp_path / "sharded.yaml", tiny_config(shards, tmp_path / "runs", "sharded", epochs=1, log_every=2)
    )
    cfg = load_config(config)
    manifest = load_manifest(shards)
    vocabulary = Vocabulary.build(["a b c"])
    lengths = [len(build_eval_loader(cfg.loader, manifest, "dev", vocabulary, rank=r, world_size=2)) for r in range(2)]
    assert lengths[0] != lengths[1], lengths  # dev's shares really are uneven in batches

    launch(str(tmp_path / "zero3_sharded.yaml"), config, timeout_s=150)
    run_dir = tmp_path / "runs" / "sharded"
    final = json.loads((run_dir / "final_metrics.json").read_text())
    assert final["world_size"] == 2
    assert final["test"]["threshold_0.5"]["num_samples"] == len(set(manifest_ids(shards, "test")))
    checkpoint = run_dir / "checkpoints" / final["best_checkpoint"]
    dev = evaluate_checkpoint(checkpoint, "dev")
    from mmimdb_dist.metrics import compute_metrics

    assert compute_metrics(dev.labels, dev.probs)["mean_average_precision"] == pytest.approx(
        final["dev"]["threshold_0.5"]["mean_average_precision"], abs=1e-4
    )


def test_a_non_finite_loss_under_zero2_stops_before_deepspeed_steps(shards, tmp_path):
    """DeepSpeed takes its optimizer step inside the backward of a group's last micro-batch, so
    the ranks' finiteness agreement must come before that backward: the engine then never steps
    on the non-finite loss, its weights stay finite, and the error line's "no step was taken"
    is true."""
    config = write_config(
        tmp_path / "nan.yaml",
        tiny_config(shards, tmp_path / "runs", "nan", epochs=1, lr=1e30, warmup_steps=0, max_grad_norm=None),
    )
    script = Path(__file__).parent / "dist_scripts" / "nonfinite_ranks.py"
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--use_deepspeed",
        "--config_file",
        "launch/accelerate/zero2_cpu.yaml",
        "--num_processes",
        "2",
        "--main_process_ip",
        "127.0.0.1",
        "--main_process_port",
        str(free_port()),
        str(script),
        str(config),
        str(tmp_path),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=env(), cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    reports = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    for report in reports:
        assert report["error"], report
        assert "no step was taken with it" in report["error"], report
        assert report["engine_steps"] == report["trainer_steps"], report  # DeepSpeed took no extra step
        assert report["weights_finite"], report
