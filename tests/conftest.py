"""Fixtures shared by several test files; their builders live in dist_scripts/.

Each expensive one (a shard set, a trained run, a Slurm cluster) is built once per session
or module and reused; a test file that needs different data defines a fixture of the same
name, which takes precedence over these for that file.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from dist_scripts.report_fixtures import attention_run
from dist_scripts.slurm_fixtures import start_slurm_cluster
from dist_scripts.train_fixtures import train_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """The trainer tests' 600-movie synthetic shard set (built once per session)."""
    return train_shards(tmp_path_factory)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """One tiny trained attention-fusion run (trained once per session) for the report tests."""
    return attention_run(tmp_path_factory)


@pytest.fixture(scope="module")
def slurm_cluster():
    """SLURM_CONF of a usable single-node cluster, exported to this process and its children."""
    yield from start_slurm_cluster()


# The heaviest test files, longest first (`pytest --durations=60` under `make test`). `make test`
# runs two pytest-xdist workers with `--dist loadfile`: each file goes whole to whichever worker
# is free, in collection order, so the long files start first and the short ones even out the
# end (longest-processing-time-first); otherwise the alphabetically last files, several of them
# long, would leave one worker idle while the other finishes them.
HEAVY_FIRST = (
    "test_faults_train_signals.py",
    "test_table_training.py",
    "test_deepspeed.py",
    "test_tune.py",
    "test_real_plots_minilm.py",
    "test_slurm.py",
    "test_train.py",
    "test_demo.py",
    "test_cache_features.py",
    "test_faults_checkpoint.py",
    "test_train_options.py",
    "test_encoders_e2e.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: index for index, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: files keep their order
