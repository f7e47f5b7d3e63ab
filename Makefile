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
	@# Nice to have (progress bar, pytest-benchmark, parallel tests; scikit-learn's bundled digits and
	@# matplotlib for train-digits and convkit.viz, whose tests skip without them): best effort on an
	@# offline box (the lent GPU machine), always installed where the registry is reachable (CI).
	@$(PYTHON) -c "import tqdm, pytest_benchmark, xdist, sklearn, matplotlib" 2>/dev/null || \
	  $(PIP) install tqdm pytest-benchmark pytest-xdist scikit-learn matplotlib || \
	  echo "note: some of tqdm/pytest-benchmark/pytest-xdist/scikit-learn/matplotlib not installed"
	touch $(STAMP)

venv: $(STAMP)

build: $(STAMP)
	$(PIP) install --no-build-isolation --no-deps -e .

# pytest-xdist spreads the suite over the cores when it is installed.
XDIST = $(shell $(PYTHON) -c "import xdist" 2>/dev/null && echo "-n 2")

test: build
	$(PYTHON) -m pytest tests $(XDIST) -q $(PYTEST_ARGS)

bench: build
	$(PYTHON) -m convkit bench --algos direct,im2col,1x1,winograd,blocked,auto $(BENCH_ARGS)

# pytest-benchmark suites (regression tracking between commits); not part of `make test`.
bench-pytest: build
	$(PYTHON) -m pytest benchmarks -q $(PYTEST_ARGS)

# On a GPU machine with no network (the lent H100/H200), two calls on one warm machine (README's
# GPU section): `make gpu-check` (call 1: build convkit._cuda for sm_90, compute-sanitizer probe,
# smoke run, racecheck, memcheck, the CUDA tests; about 5 minutes), then at once `make gpu-bench`
# (call 2: `convkit bench --device cuda`, float32 batch 32 first; about 4 minutes). Uses the
# system python3 (the one with torch), not the venv. OUT: where results go. Before the calls,
# here: `make gpu-commit` (HEAD into .convkit-commit, which travels with the tree).
OUT ?= gpu-out
GPU_CHECK_ARGS ?=
.PHONY: gpu-check gpu-bench gpu-commit gpu-dry-run cuda-report
gpu-check:
	bash benchmarks/gpu_check.sh --call check --out $(OUT) $(GPU_CHECK_ARGS)
gpu-bench:
	bash benchmarks/gpu_check.sh --call bench --skip-build --out $(OUT) $(GPU_CHECK_ARGS)
gpu-commit:
	bash benchmarks/gpu_check.sh --write-commit
gpu-dry-run:
	bash benchmarks/gpu_check.sh --dry-run $(GPU_CHECK_ARGS)

# ptxas's registers, shared memory, spills and stack per csrc/cuda kernel for sm_90 (needs
# nvcc, no GPU): make cuda-report CUDA_REPORT_ARGS=--json
CUDA_REPORT_ARGS ?=
cuda-report:
	$(SYS_PYTHON) tools/ptxas_report.py $(CUDA_REPORT_ARGS)

clean:
	rm -rf build convkit/*.so *.egg-info

# The CUDA emulator built with AddressSanitizer (its own build dir, target _cudasim only), then the
# emulator's tests with the ASan runtime preloaded into Python: an out-of-bounds access in a CUDA
# kernel aborts with ASan's report (our memcheck without a GPU). libstdc++ is preloaded after
# libasan because python doesn't link it, and ASan must find the real __cxa_throw when it starts.
ASAN_BUILD     ?= build/asan
SANITIZE_TESTS ?= tests/kernels/test_sim.py tests/ops/test_pool.py tests/ops/test_relu.py \
                  tests/kernels/test_cuda_kernels.py tests/ops/test_half.py tests/ops/test_conv2d.py \
                  tests/ops/test_conv_half.py tests/kernels/test_cuda_variants.py tests/ops/test_bias_grad.py \
                  tests/integration/test_hostile.py tests/integration/test_transforms.py tests/ops/test_implicit_gemm.py

.PHONY: test-sanitize
test-sanitize: build
	PATH="$(abspath $(VENV))/bin:$$PATH" cmake -S . -B $(ASAN_BUILD) -DCONVKIT_SIM_ASAN=ON -DCONVKIT_CUDA=OFF \
	  -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$(abspath $(ASAN_BUILD))/lib" -DPython_EXECUTABLE="$(abspath $(PYTHON))" \
	  -Dpybind11_DIR="$$($(PYTHON) -m pybind11 --cmakedir)"
	PATH="$(abspath $(VENV))/bin:$$PATH" cmake --build $(ASAN_BUILD) --target _cudasim --parallel
	CONVKIT_CUDASIM_SO="$$(ls $(abspath $(ASAN_BUILD))/lib/_cudasim*.so)" CONVKIT_TEST_BACKENDS=cudasim \
	  CONVKIT_TEST_SANITIZE=1 ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1 \
	  LD_PRELOAD="$$(g++ -print-file-name=libasan.so) $$(g++ -print-file-name=libstdc++.so)" \
	  $(PYTHON) -m pytest $(SANITIZE_TESTS) $(XDIST) -q -p no:cacheprovider $(PYTEST_ARGS)

# The conv parity suite on the emulator once per forced kernel variant (convkit.cuda_settings:
# each size-selected variant at small shapes). VARIANTS: the specs (default: every forced value);
# `make test-variants SANITIZE=1` runs it on the AddressSanitizer build of test-sanitize.
VARIANTS ?= $(shell $(PYTHON) -c "import convkit.cuda_settings as c; print(' '.join(c.VARIANT_SWEEP))" 2>/dev/null)
VARIANT_TESTS ?= tests/ops/test_conv2d.py tests/ops/test_conv_half.py
.PHONY: test-variants
test-variants: build
	@set -e; for v in $(VARIANTS); do echo "== CONVKIT_CUDA_VARIANT=$$v"; \
	  if [ -n "$(SANITIZE)" ]; then \
	    CONVKIT_CUDA_VARIANT=$$v CONVKIT_CUDASIM_SO="$$(ls $(abspath $(ASAN_BUILD))/lib/_cudasim*.so)" \
	      CONVKIT_TEST_BACKENDS=cudasim CONVKIT_TEST_SANITIZE=1 ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1 \
	      LD_PRELOAD="$$(g++ -print-file-name=libasan.so) $$(g++ -print-file-name=libstdc++.so)" \
	      $(PYTHON) -m pytest $(VARIANT_TESTS) $(XDIST) -q -p no:cacheprovider $(PYTEST_ARGS); \
	  else \
	    CONVKIT_CUDA_VARIANT=$$v CONVKIT_TEST_BACKENDS=cudasim $(PYTHON) -m pytest $(VARIANT_TESTS) $(XDIST) -q \
	      -p no:cacheprovider $(PYTEST_ARGS); \
	  fi; done

# The race detector (csrc/sim/racecheck.cpp): convkit._cudasim with its kernel files instrumented
# (-fsanitize=thread calling the emulator's own hooks, no libtsan), in its own build dir, then the
# CUDA kernel suite on the emulator with the detector on: a race, an unwritten shared read or a
# misaligned shared access fails the test that launched it. RACECHECK_TESTS: the whole suite;
# `make test-racecheck-ci` (what .ci/run runs): the seeded bugs, the emulator's self-tests, one
# case per kernel variant.
RACECHECK_BUILD    ?= build/racecheck
RACECHECK_TESTS    ?= tests/kernels/test_racecheck.py tests/kernels/test_sim.py tests/kernels/test_cuda_kernels.py \
                      tests/kernels/test_cuda_variants.py tests/ops/test_pool.py tests/ops/test_relu.py \
                      tests/ops/test_half.py tests/ops/test_conv2d.py tests/ops/test_conv_half.py \
                      tests/ops/test_bias_grad.py
RACECHECK_CI_TESTS ?= tests/kernels/test_racecheck.py tests/kernels/test_sim.py tests/kernels/test_cuda_variants.py \
                      tests/ops/test_bias_grad.py
RACECHECK_ENV = CONVKIT_CUDASIM_SO="$$(ls $(abspath $(RACECHECK_BUILD))/lib/_cudasim*.so)" CONVKIT_TEST_BACKENDS=cudasim \
                CONVKIT_SIM_RACECHECK=1

.PHONY: racecheck-build test-racecheck test-racecheck-ci
racecheck-build: build
	PATH="$(abspath $(VENV))/bin:$$PATH" cmake -S . -B $(RACECHECK_BUILD) -DCONVKIT_SIM_RACECHECK=ON -DCONVKIT_CUDA=OFF \
	  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$(abspath $(RACECHECK_BUILD))/lib" \
	  -DPython_EXECUTABLE="$(abspath $(PYTHON))" -Dpybind11_DIR="$$($(PYTHON) -m pybind11 --cmakedir)"
	PATH="$(abspath $(VENV))/bin:$$PATH" cmake --build $(RACECHECK_BUILD) --target _cudasim --parallel

test-racecheck: racecheck-build
	$(RACECHECK_ENV) $(PYTHON) -m pytest $(RACECHECK_TESTS) $(XDIST) -q -p no:cacheprovider $(PYTEST_ARGS)
	@set -e; for v in $(VARIANTS); do echo "== racecheck, CONVKIT_CUDA_VARIANT=$$v"; \
	  CONVKIT_CUDA_VARIANT=$$v $(RACECHECK_ENV) $(PYTHON) -m pytest $(VARIANT_TESTS) $(XDIST) -q -p no:cacheprovider \
	    $(PYTEST_ARGS); done

test-racecheck-ci: racecheck-build
	$(RACECHECK_ENV) $(PYTHON) -m pytest $(RACECHECK_CI_TESTS) $(XDIST) -q -p no:cacheprovider $(PYTEST_ARGS)

# The same for the CPU kernels: convkit._cpu built with AddressSanitizer in its own build dir, the
# CPU kernels' tests on the 'cpu' backend with the ASan runtime preloaded.
ASAN_CPU_BUILD     ?= build/asan-cpu
SANITIZE_CPU_TESTS ?= tests/ops/test_blocked.py tests/ops/test_winograd.py tests/ops/test_reference.py \
                      tests/ops/test_conv2d.py tests/kernels/test_cpu_peak.py tests/ops/test_pool.py \
                      tests/ops/test_relu.py tests/integration/test_eager.py tests/integration/test_hostile_cpu.py \
                      tests/integration/test_hostile.py tests/integration/test_transforms.py tests/ops/test_implicit_gemm.py

.PHONY: test-sanitize-cpu
test-sanitize-cpu: build
	PATH="$(abspath $(VENV))/bin:$$PATH" cmake -S . -B $(ASAN_CPU_BUILD) -DCONVKIT_CUDA=OFF -DCONVKIT_SIM=OFF \
	  -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS=-fsanitize=address -fno-omit-frame-pointer" \
	  "-DCMAKE_SHARED_LINKER_FLAGS=-fsanitize=address" \
	  -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$(abspath $(ASAN_CPU_BUILD))/lib" -DPython_EXECUTABLE="$(abspath $(PYTHON))" \
	  -Dpybind11_DIR="$$($(PYTHON) -m pybind11 --cmakedir)"
	PATH="$(abspath $(VENV))/bin:$$PATH" cmake --build $(ASAN_CPU_BUILD) --target _cpu --parallel
	CONVKIT_CPU_SO="$$(ls $(abspath $(ASAN_CPU_BUILD))/lib/_cpu*.so)" CONVKIT_TEST_BACKENDS=cpu ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1 \
	  LD_PRELOAD="$$(g++ -print-file-name=libasan.so) $$(g++ -print-file-name=libstdc++.so)" \
	  $(PYTHON) -m pytest $(SANITIZE_CPU_TESTS) $(XDIST) -q -p no:cacheprovider $(PYTEST_ARGS)
