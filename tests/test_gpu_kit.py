"""benchmarks/gpu_check.py on a machine without a GPU: it says so, runs every single-device
variant of the step once on CPU (fp32, bf16, compiled, channels_last), prints the table in
RESULTS.md's format and exits 0. On a GPU node the same command gives the figures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the kit measures for minutes")
def test_gpu_kit_without_a_gpu_says_so_and_smoke_runs_every_variant() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_check.py")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert out.startswith("no CUDA GPU on this machine")
    rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| variant")]
    assert [row.split("|")[1].strip() for row in rows] == ["fp32", "bf16", "bf16 + compile", "bf16 + channels_last"]
    for row in rows:
        samples_per_s = float(row.split("|")[3].replace(",", ""))
        assert samples_per_s > 0
    assert "GFLOP forward per sample" in out
    assert "smoke run complete" in out
