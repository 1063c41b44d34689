# Everything installs into the active Python environment (a virtualenv if one is active, else the user's Python).
# `make demo` and `make test` install what is missing first, so a fresh clone needs only Python 3.11 and pip.
PYTHON ?= python3
PIP := $(PYTHON) -m pip install --quiet --disable-pip-version-check
EXTRAS ?= dev,onnx,plots,video,yaml

.PHONY: install demo test lint format bench

install:
	$(PIP) -e ".[$(EXTRAS)]"

demo: install
	$(PYTHON) -m alexnet info

test: install
	$(PYTHON) -m pytest -q

lint: install
	$(PYTHON) -m ruff format --check src tests benchmarks
	$(PYTHON) -m ruff check src tests benchmarks

format:
	$(PYTHON) -m ruff format src tests benchmarks
	$(PYTHON) -m ruff check --fix src tests benchmarks
