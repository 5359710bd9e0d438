# Two commands do everything on a fresh machine: `make train` and `make test` (see README).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA_ROOT ?= data
ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup system-data data train test test-slow test-gpu bench lint clean-venv

# venv + editable install; redone only when pyproject.toml changes
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	@touch $@

setup: $(STAMP)

# Debian's copy of the dataset (offline); only where apt exists and we are root, otherwise skipped
system-data:
	@if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
	  || echo "warning: could not install dataset-fashion-mnist; torchvision's download will be tried"; \
	else echo "note: no apt or not root: skipping dataset-fashion-mnist; torchvision's download will be tried"; fi

# decompress + md5-verify into $(DATA_ROOT)/FashionMNIST/raw (or download)
data: setup system-data
	$(PY) -m fmnist_lit.fashion_mnist --root $(DATA_ROOT)

train: data
	$(PY) train.py $(ARGS)

# pytest exit 5 = no tests collected: say so and do not fail
test: setup system-data
	@$(PY) -m pytest -m "not slow and not gpu" $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

test-slow: setup system-data
	@$(PY) -m pytest -m "slow and not gpu" $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no slow tests"; exit 0; fi; exit $$rc

# one CUDA GPU, bf16, real data: train, eval, predict, export, exact resume, the speed recipes (a few minutes);
# every test skips where torch sees no GPU
test-gpu: data
	@$(PY) -m pytest -m gpu -rs $(PYTEST_ARGS)

# training throughput per model and path, appended to benchmarks/results.jsonl; other tables via ARGS, e.g.
# ARGS="--tta" (docs/BENCHMARKS.md)
bench: data
	$(PY) benchmarks/throughput.py $(ARGS)

# every Python file, the root entry points included
lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
