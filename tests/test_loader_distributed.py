"""The loaders under real 2-process launches (gloo on CPU): torch.distributed.run and accelerate.

Each rank runs tests/dist_scripts/loader_ranks.py with 2 loader workers and writes the ids
of every batch it saw; the assertions are made here on those files. Under torchrun every
train batch is followed by an all-reduce, so a rank with fewer batches would hang the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dist_scripts.loader_fixtures import build_shards, build_vocabulary, data_root, manifest_ids
from dist_scripts.ports import free_port

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).parent / "dist_scripts" / "loader_ranks.py"
BATCH_SIZE = 6  # 150 train samples / (2 ranks x 6) = 12 batches per rank, 6 per worker
LAUNCH_TIMEOUT_S = 300


def _launch(kind: str, shards: Path, vocabulary: Path, out: Path) -> list[dict]:
    port = str(free_port())
    if kind == "torchrun":
        launcher = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            port,
        ]
    else:
        launcher = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_ip",
            "127.0.0.1",
            "--main_process_port",
            port,
        ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [*launcher, str(SCRIPT), kind, str(shards), str(vocabulary), str(out), str(BATCH_SIZE)],
        capture_output=True,
        text=True,
        timeout=LAUNCH_TIMEOUT_S,
        env=env,
        cwd=out,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(2)]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    root = data_root(tmp_path_factory)
    shards = build_shards(root)
    return shards, build_vocabulary(root, shards)


@pytest.fixture(scope="module", params=["torchrun", "accelerate"])
def ranks(request, data, tmp_path_factory) -> tuple[str, list[dict]]:
    shards, vocabulary = data
    return request.param, _launch(request.param, shards, vocabulary, tmp_path_factory.mktemp(f"loader-{request.param}"))


def _flat(batches: list[list[str]]) -> list[str]:
    return [i for batch in batches for i in batch]


def test_every_rank_gets_the_same_number_of_batches(ranks, data):
    _, reports = ranks
    expected = 150 // (2 * BATCH_SIZE)
    assert [r["world_size"] for r in reports] == [2, 2]
    assert [r["rank"] for r in reports] == [0, 1]
    for name in ("epoch0", "epoch0_again", "epoch1"):
        assert [len(r[name]) for r in reports] == [expected, expected]
        assert [r[f"{name}_len"] for r in reports] == [expected, expected]
        assert all(len(batch) == BATCH_SIZE for r in reports for batch in r[name])


def test_train_epoch_sees_no_sample_twice_across_ranks(ranks, data):
    _, reports = ranks
    sightings = _flat(reports[0]["epoch0"]) + _flat(reports[1]["epoch0"])
    assert len(sightings) == 2 * 12 * BATCH_SIZE
    assert len(set(sightings)) == len(sightings)  # each slot's shards hold enough: no padding
    assert set(sightings) <= set(manifest_ids(data[0], "train"))


def test_same_seed_repeats_the_order_and_epochs_differ(ranks):
    _, reports = ranks
    for report in reports:
        assert report["epoch0_again"] == report["epoch0"]
        assert report["epoch1"] != report["epoch0"]
        assert set(_flat(report["epoch1"])) != set(_flat(report["epoch0"]))  # shards reshuffled


@pytest.mark.parametrize("split", ["dev", "test"])
def test_eval_sees_every_sample_exactly_once(ranks, data, split):
    _, reports = ranks
    seen = _flat(reports[0][split]) + _flat(reports[1][split])
    assert len(seen) == len(set(seen))
    assert sorted(seen) == sorted(manifest_ids(data[0], split))
