# make run   — set up .venv from the lock and run the default study
# make test  — set up .venv from the lock; lint (ruff), type check (mypy), then the test suite
# make lint  — ruff + mypy only
# make bench — performance record (benchmarks/results/latest.json); RUNS=3 also writes a dated min/median/max record
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXTRAS_STAMP := $(VENV)/.installed-extras
CONFIG ?= configs/default.yaml

.PHONY: run test test-fast lint bench setup clean browser

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml constraints.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $(STAMP)

# The test suite also exercises the optional extras (MLflow tracking, Ray executor, OpenVINO, ExecuTorch, LiteRT).
$(EXTRAS_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test,mlflow,ray,openvino,executorch,litert,agent]'
	touch $(EXTRAS_STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/edge-opt run --config $(CONFIG)

# Headless Chromium for the HTML report's browser test (Debian package); best effort, the test skips without it.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { timeout 300 apt-get install -y -q chromium >/dev/null 2>&1 || \
	    { timeout 300 apt-get update -q >/dev/null 2>&1 && timeout 300 apt-get install -y -q chromium >/dev/null 2>&1; }; }; } || \
	  echo "note: chromium could not be installed; the browser test will be skipped"

lint: $(STAMP)
	$(VENV)/bin/ruff format --check src tests benchmarks examples docs
	$(VENV)/bin/ruff check src tests benchmarks examples docs
	$(VENV)/bin/mypy

# Two workers (one per core here), tests dealt out one by one (a module fixture may run once per worker).
test: $(EXTRAS_STAMP) browser lint
	$(PY) -m pytest -q -n 2 --dist load

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

RUNS ?= 1
bench: $(EXTRAS_STAMP)
	$(PY) benchmarks/run_benchmarks.py --runs $(RUNS)

clean:
	rm -rf outputs .pytest_cache
