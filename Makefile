# Two commands on a fresh machine: `make run` and `make test` (README.md).
# A second call finds .venv and the data in place and starts in seconds.
# The data step runs every time: it only checks the files when they are in place (a second or two),
# and it gets them when they are not (quickstart_parity_common/data.py: data folder, Debian's folder, torchvision's
# download, apt-get as root), so a fixed or removed file is noticed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test test-fast data setup browser quickstart-torch quickstart-jax bench study clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

data: $(STAMP)
	$(PY) -m quickstart_parity_common.data --data-dir data

run: $(STAMP) data
	$(PY) -m parity --epochs 5

# quickstart_parity_guide/test_render.py opens the study guide's HTML page in Debian's chromium: install it where we can
# (root with apt-get); elsewhere say so, and that test skips with the reason.
browser:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's chromium for the study guide's browser test: apt-get update && apt-get install -y chromium"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	    || echo "could not install chromium: quickstart_parity_guide/test_render.py's browser test will skip"; \
	else echo "chromium is missing and this is not root with apt-get: quickstart_parity_guide/test_render.py's browser test will skip"; fi

# ruff first (pyproject.toml [tool.ruff]; it is in the dev extra): a lint error fails in seconds, before the suite.
test: $(STAMP) data browser
	$(PY) -m ruff check .
	$(PY) -m pytest

# The edit-run loop: ruff, then the tests conftest.py's FAST list marks `fast` (a few from every package).
test-fast: $(STAMP) data
	$(PY) -m ruff check .
	$(PY) -m pytest -m fast -q

quickstart-torch: $(STAMP) data
	$(PY) -m reference_torch

quickstart-jax: $(STAMP) data
	$(PY) -m jax_impl

bench: $(STAMP) data
	$(PY) -m benchmarks.run --device all

study: $(STAMP) data
	$(PY) -m quickstart_parity_guide.guide

clean:
	rm -rf $(VENV) .pytest_cache

# The generated blocks of README.md (headline ratios), docs/results.md (benchmarks, quickstart table, GPU parity
# table) and docs/porting.md (the CNN's benchmark), rewritten from the JSON in benchmarks/results/ (the pages are
# benchmarks/report.py's default). `make quickstart-results` first re-runs both quickstart CLIs (minutes) for the table.
.PHONY: results quickstart-results
results: $(STAMP)
	$(PY) -m benchmarks.report

quickstart-results: $(STAMP) data
	flock /tmp/bench.lock $(PY) -m benchmarks.quickstart
	$(PY) -m benchmarks.report

# Mutation testing of parity/ and the two train.py (tools/mutate.py; not run in CI, minutes of CPU).
.PHONY: mutate
mutate: $(STAMP) data
	flock /tmp/bench.lock $(PY) tools/mutate.py

# Generated first-order mutants of the referee (tools/mutants.py: comparisons, arithmetic, constants x10 and /10,
# max/min, and/or, not, return None), each under a per-test timeout; not run in CI, minutes of CPU.
# Other targets (the port checker, the converter): python tools/mutants.py FILE ... (TESTS maps each to its tests).
.PHONY: mutate-generated
mutate-generated: $(STAMP) data
	flock /tmp/bench.lock $(PY) tools/mutants.py parity/compare.py parity/tolerances.py
