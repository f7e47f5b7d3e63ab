# convkit: `make test` and `make bench` do all the set-up on a fresh clone.
# .venv is created when missing; it sees the system's packages, so a machine that already has
# torch (a GPU box with no network) reuses it. Elsewhere the pinned CPU torch is installed.
SYS_PYTHON ?= python3
VENV       ?= .venv
PYTHON     := $(VENV)/bin/python
PIP        := $(PYTHON) -m pip
STAMP      := $(VENV)/.convkit-deps
PYTEST_ARGS ?=
BENCH_ARGS  ?=

.PHONY: all venv build test test-fast bench bench-pytest clean

all: build

$(PYTHON):
	$(SYS_PYTHON) -m venv --system-site-packages $(VENV)

# Install only what is missing: torch pinned (never a bare `torch`), the build and test tools.
$(STAMP): requirements-dev.txt | $(PYTHON)
	@if $(PYTHON) -c "import torch" 2>/dev/null; then \
	  echo "reusing installed torch $$($(PYTHON) -c 'import torch; print(torch.__version__)')"; \
	else \
	  $(PIP) install "$$(grep '^torch==' requirements-dev.txt)"; \
	fi
	@if $(PYTHON) -c "import numpy, pybind11, setuptools, pytest; from setuptools.command import editable_wheel" 2>/dev/null \
	    && { command -v cmake >/dev/null || test -x $(VENV)/bin/cmake; }; then \
	  echo "build and test tools present"; \
	else \
	  grep -v '^torch' requirements-dev.txt > $(VENV)/reqs-no-torch.txt; \
	  $(PIP) install -r $(VENV)/reqs-no-torch.txt; \
	fi
	@# Nice to have (progress bar, pytest-benchmark, parallel tests): best effort on an offline box.
	@$(PYTHON) -c "import tqdm, pytest_benchmark, xdist" 2>/dev/null || \
	  $(PIP) install tqdm pytest-benchmark pytest-xdist || echo "note: tqdm/pytest-benchmark/pytest-xdist not installed"
	touch $(STAMP)

venv: $(STAMP)

build: $(STAMP)
	$(PIP) install --no-build-isolation --no-deps -e .

# pytest-xdist spreads the suite over the cores when it is installed.
XDIST = $(shell $(PYTHON) -c "import xdist" 2>/dev/null && echo "-n 2")

test: build
	$(PYTHON) -m pytest tests $(XDIST) -q $(PYTEST_ARGS)

bench: build
	$(PYTHON) -m convkit bench $(BENCH_ARGS)

# pytest-benchmark suites (regression tracking between commits); not part of `make test`.
bench-pytest: build
	$(PYTHON) -m pytest benchmarks -q $(PYTEST_ARGS)

clean:
	rm -rf build convkit/*.so *.egg-info
