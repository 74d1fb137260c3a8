# Two commands on a fresh machine: `make run` and `make test` (README.md).
# A second call finds .venv and the data in place and starts in seconds.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DATA   := data/FashionMNIST/raw/t10k-labels-idx1-ubyte

.PHONY: run test data setup quickstart-torch quickstart-jax bench study clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

data: $(DATA)

$(DATA): | $(STAMP)
	$(PY) -m common.data --data-dir data

run: $(STAMP) $(DATA)
	$(PY) -m parity --epochs 5

test: $(STAMP) $(DATA)
	$(PY) -m pytest

quickstart-torch: $(STAMP) $(DATA)
	$(PY) -m reference_torch

quickstart-jax: $(STAMP) $(DATA)
	$(PY) -m jax_impl

bench: $(STAMP) $(DATA)
	$(PY) -m benchmarks.run --device all

study: $(STAMP) $(DATA)
	$(PY) -m parity.study

clean:
	rm -rf $(VENV) .pytest_cache
