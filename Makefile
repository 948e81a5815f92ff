# Two entry points for a fresh machine: `make demo` (the main job on the embedded synthetic
# dataset) and `make test` (the test suite). Both install what they need first.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
DEMO_OUT ?= runs/demo

.PHONY: install install-torch install-slurm demo lint test bench-data

# torch and torchvision come from the package index itself, together: a machine-level pip
# configuration may offer a CPU-only torch wheel that the index's torchvision cannot import beside.
install-torch:
	PIP_FIND_LINKS= PIP_CONFIG_FILE=/dev/null $(PIP) install -q -r requirements-torch.txt

# DeepSpeed ships no wheel: it builds from source against the torch installed above, without
# build isolation (which would fetch another torch, so setuptools must already be there) and
# without compiling its CUDA ops.
install: install-torch
	$(PIP) install -q 'setuptools>=68' wheel
	DS_BUILD_OPS=0 $(PIP) install -q --no-build-isolation 'deepspeed==0.19.8'
	$(PIP) install -q -e '.[dev]'

demo: install
	$(PYTHON) -m mmimdb_dist.cli demo --out $(DEMO_OUT)

# The Slurm tests (tests/test_slurm.py) run against a real single-node Slurm: its Debian
# packages are installed here (as root; nothing is asked for when they are there), and the
# tests start the cluster with launch/slurm/start.sh when it is not up, and stop it after.
install-slurm:
	bash launch/slurm/install.sh

# Lint, format and types (configured in pyproject.toml; the same hooks run in pre-commit).
LINTED := mmimdb_dist tests benchmarks
lint: install
	$(PYTHON) -m ruff check $(LINTED)
	$(PYTHON) -m ruff format --check $(LINTED)
	$(PYTHON) -m mypy

# Lint first, then the suite on two pytest-xdist workers, each test file whole on one worker
# (module fixtures are built once; the Slurm and Ray tests keep to their own files), the
# heaviest files first (tests/conftest.py: HEAVY_FIRST; xdist's own reorder by test count is off).
test: install install-slurm lint
	$(PYTHON) -m pytest -q -ra -n 2 --dist loadfile --no-loadscope-reorder

bench-data: install
	$(PYTHON) benchmarks/bench_data.py
