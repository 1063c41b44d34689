# Everything installs into the active Python environment (a virtualenv if one is active, else the user's Python).
# `make demo` and `make test` install what is missing first, so a fresh clone needs only Python 3.11 and pip.
PYTHON ?= python3
PIP := $(PYTHON) -m pip install --quiet --disable-pip-version-check
EXTRAS ?= dev,onnx,plots,video,yaml,imagenet,serve,explain,medical

.PHONY: install demo test lint format bench

install:
	@echo "installing alexnet with its extras [$(EXTRAS)] into $$($(PYTHON) -c 'import sys; print(sys.prefix)') (pip, quiet):" \
	  "the first time it downloads PyTorch and the extras (a few GB, several minutes); afterwards it only checks"
	$(PIP) -e ".[$(EXTRAS)]"

# The demo: torchvision's AlexNet, `fast` recipe, on the built-in synthetic data set (64 px, 10 classes), on the CPU,
# for two minutes from start to final report: crop, batch, lr, warm-up, dropout and precision chosen from the data and
# the machine, and printed (README, "Your own data").
DEMO_FLAGS ?= --out runs/demo --time-budget 2m --plots

demo: install
	rm -rf runs/demo
	$(PYTHON) -m alexnet train $(DEMO_FLAGS)
	$(PYTHON) -m alexnet evaluate runs/demo/checkpoints/best.pt --out runs/demo/eval-best.json

# Two pytest-xdist workers of one torch thread each (whole files per worker, so a module's trained fixture is made
# once): on CI's two cores 12 minutes instead of 18 serially; most tests are too small to use two threads.
TEST_WORKERS ?= 2

test: install
	OMP_NUM_THREADS=1 $(PYTHON) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

lint: install
	$(PYTHON) -m ruff format --check src tests benchmarks
	$(PYTHON) -m ruff check src tests benchmarks

format:
	$(PYTHON) -m ruff format src tests benchmarks
	$(PYTHON) -m ruff check --fix src tests benchmarks

# Throughput on this machine: model only vs input pipelines vs end to end (table + JSON in runs/bench.json).
BENCH_FLAGS ?= --image-size 64 --batch-size 64 --json runs/bench.json

bench: install
	mkdir -p runs
	$(PYTHON) -m alexnet bench $(BENCH_FLAGS)
