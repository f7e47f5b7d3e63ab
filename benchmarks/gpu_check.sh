#!/usr/bin/env bash
# The GPU check, in one call on a GPU machine with no network, from the repository root:
# build convkit._cuda for sm_90, run the CUDA tests, run compute-sanitizer (memcheck, racecheck,
# initcheck, synccheck) over every CUDA kernel (benchmarks/gpu_sanitize.py), run
# `convkit bench --device cuda` (float32 at batch 1 and 32: every layer x fwd, bwd_input,
# bwd_weight x algorithm against cuDNN with TF32 off and on and CuPy's im2col + cuBLAS; then
# float16 at batch 32), and print a summary last (benchmarks/gpu_check_summary.py).
#
#   bash benchmarks/gpu_check.sh --out DIR [options]        (make gpu-check OUT=DIR)
#
# Each step runs under `timeout`, sized so that the whole check ends inside --budget seconds
# (one device call lasts at most 10 minutes); a step that fails or runs out of time is recorded
# and the check goes on, except a failed build, which ends it. Order and priority: build, tests,
# memcheck, racecheck, bench, bench float16, initcheck, synccheck; the later ones run only when
# time is left (the tests, memcheck and racecheck each leave the bench its minimum, BENCH_MIN).
# The bench gets its slot as `--budget` (less a margin to write its files): it sizes its sample
# counts to the time it has (15 per side at most, 5 at least) and stops cleanly if it runs out.
# Its plan: about 2,500 timed callables (70 convolutions x 3 passes x 2 batches x ~2.6
# algorithms + 3 references, and the pools and ReLUs) x 17 samples, ~100 s estimated on an
# H100/H200 (`python3 -m convkit bench --device cuda --plan` prints it; no GPU needed).
#
# The device tool brings back at most 8 files, so at the end the logs (env.txt, build.log,
# pytest-cuda.log/.xml, sanitizer-<tool>.txt, bench logs, steps.tsv, meta.txt) go into
# DIR/logs.tar.gz; DIR keeps summary.txt, the bench JSON and Markdown (and the README's short
# form, DATE-GPU-readme.md), logs.tar.gz (--no-bundle: everything loose).
set -u -o pipefail

usage() {
  cat <<'EOF'
usage: bash benchmarks/gpu_check.sh --out DIR [options]
  --out DIR            where logs, results and summary.txt go (created) [gpu-out]
  --budget S           seconds the whole check may take [540]
  --python PY          the Python that has torch [$PYTHON or python3]
  --commit SHA         the commit being checked, recorded in the bench JSON (the copy of the
                       tree on the GPU machine has no .git) [$CONVKIT_COMMIT]
  --archs LIST         CUDA architectures to build [90]
  --jobs N             parallel compile jobs and test workers' base [nproc]
  --skip-build         use the modules already built in this tree
  --with-sim           also build convkit._cudasim (the emulator; off to save build time: the
                       CUDA tests need only convkit._cuda)
  --skip-tests         no pytest run
  --skip-sanitizer     no compute-sanitizer runs
  --sanitizer-tools T  comma-separated subset of memcheck,racecheck,initcheck,synccheck [all]
  --skip-bench         no convkit bench
  --no-fp16            no second bench run in float16 (batch 32)
  --bench-args "ARGS"  more arguments for convkit bench (e.g. "--quick")
  --pytest-args "ARGS" more arguments for pytest (e.g. "-k pool")
  --no-bundle          leave the logs loose in DIR instead of DIR/logs.tar.gz
  --dry-run            print the commands, run nothing
EOF
}

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT_DIR=gpu-out
BUDGET=540
PY="${PYTHON:-python3}"
COMMIT="${CONVKIT_COMMIT:-}"
ARCHS=90
JOBS="$(nproc 2>/dev/null || echo 4)"
SIM=OFF SKIP_BUILD=0 SKIP_TESTS=0 SKIP_SAN=0 SKIP_BENCH=0 FP16=1 BUNDLE=1 DRY=0
SAN_TOOLS="memcheck,racecheck,initcheck,synccheck"
BENCH_ARGS="" PYTEST_ARGS=""

need() { [ $# -ge 2 ] || { echo "gpu_check: $1 needs a value" >&2; usage >&2; exit 2; }; }
while [ $# -gt 0 ]; do
  case "$1" in
    --out) need "$@"; OUT_DIR="$2"; shift 2 ;;
    --budget) need "$@"; BUDGET="$2"; shift 2 ;;
    --python) need "$@"; PY="$2"; shift 2 ;;
    --commit) need "$@"; COMMIT="$2"; shift 2 ;;
    --archs) need "$@"; ARCHS="$2"; shift 2 ;;
    --jobs) need "$@"; JOBS="$2"; shift 2 ;;
    --skip-build) SKIP_BUILD=1; shift ;;
    --with-sim) SIM=ON; shift ;;
    --skip-tests) SKIP_TESTS=1; shift ;;
    --skip-sanitizer) SKIP_SAN=1; shift ;;
    --sanitizer-tools) need "$@"; SAN_TOOLS="$2"; shift 2 ;;
    --skip-bench) SKIP_BENCH=1; shift ;;
    --no-fp16) FP16=0; shift ;;
    --bench-args) need "$@"; BENCH_ARGS="$2"; shift 2 ;;
    --pytest-args) need "$@"; PYTEST_ARGS="$2"; shift 2 ;;
    --no-bundle) BUNDLE=0; shift ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_check: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done
case "$BUDGET" in ''|*[!0-9]*) echo "gpu_check: --budget must be whole seconds, got $BUDGET" >&2; exit 2 ;; esac
case "$JOBS" in ''|*[!0-9]*|0) echo "gpu_check: --jobs must be a positive integer, got $JOBS" >&2; exit 2 ;; esac

cd "$ROOT" || exit 2
mkdir -p "$OUT_DIR" || exit 2
OUT="$(cd "$OUT_DIR" && pwd)"
START=$(date +%s)
DEADLINE=$((START + BUDGET))
STEPS="$OUT/steps.tsv"
: > "$STEPS"
export PYTHONUNBUFFERED=1
# nvcc may sit outside PATH on a fresh machine
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi

say() { echo "gpu_check: $*"; }
left() { echo $((DEADLINE - $(date +%s))); }

# record NAME STATUS RC SECONDS NOTE -> one line of steps.tsv
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "${5:-}" >> "$STEPS"; }

# slot CAP RESERVE: the timeout for the next step: CAP seconds, or less to leave RESERVE seconds
# (and a 20 s margin for the summary) before the deadline.
slot() {
  local s=$(( $(left) - $2 - 20 ))
  [ "$s" -gt "$1" ] && s=$1
  echo "$s"
}

# run_step NAME CAP RESERVE MIN LOG -- CMD...: CMD under timeout with its output in LOG; the
# step is skipped when less than MIN seconds are left for it. Returns CMD's exit status.
# STEP_SIGNAL: what timeout sends first (TERM; INT for pytest, which then still writes its
# report), then KILL 15 s later.
run_step() {
  local name=$1 cap=$2 reserve=$3 min=$4 log=$5
  shift 6
  if [ "$DRY" = 1 ]; then
    printf '+ [%s, <= %ss] %s > %s\n' "$name" "$cap" "$*" "${log#"$OUT"/}"
    record "$name" dry-run 0 0
    return 0
  fi
  local t; t=$(slot "$cap" "$reserve")
  if [ "$t" -lt "$min" ]; then
    say "$name: skipped, ${t}s left for it (needs $min)"
    record "$name" skipped "" 0 "no time left"
    return 125
  fi
  say "$name: running (at most ${t}s) > ${log#"$OUT"/}"
  local t0 rc; t0=$(date +%s)
  timeout -s "${STEP_SIGNAL:-TERM}" -k 15 "$t" "$@" > "$log" 2>&1
  rc=$?
  local dt=$(( $(date +%s) - t0 ))
  local status=ok
  if [ "$rc" = 124 ] || [ "$rc" = 137 ] || { [ "$rc" != 0 ] && [ "$dt" -ge "$t" ]; }; then
    status=TIMEOUT
  elif [ "$rc" != 0 ]; then
    status=FAILED
  fi
  record "$name" "$status" "$rc" "$dt" "${STEP_NOTE:-}"
  say "$name: $status (exit $rc) in ${dt}s"
  return "$rc"
}

# ---- 0. is there a GPU? -----------------------------------------------------------------------
if [ "$DRY" != 1 ]; then
  if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    say "$PY cannot import torch: pass --python with the interpreter that has it" >&2
    exit 2
  fi
  if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; then
    smi="not installed"
    command -v nvidia-smi >/dev/null 2>&1 && smi="$(nvidia-smi -L 2>&1 | head -3)"
    say "no GPU visible here (nvidia-smi -L: ${smi:-nothing}; torch.cuda.is_available() is False)." >&2
    say "this script runs on the lent GPU machine; --dry-run shows its commands." >&2
    exit 2
  fi
fi

GPU_NAME="$("$PY" -c "import torch; print(torch.cuda.get_device_name(0))" 2>/dev/null || echo unknown-gpu)"
[ "$DRY" = 1 ] && GPU_NAME="dry-run GPU"
GPU_SLUG="$("$PY" "$ROOT/benchmarks/gpu_check_summary.py" --slug "$GPU_NAME" 2>/dev/null || echo gpu)"
DATE="$(date -u +%Y-%m-%d)"
{
  echo "gpu=$GPU_NAME"; echo "date=$DATE"; echo "commit=$COMMIT"; echo "budget=$BUDGET"
  echo "python=$PY"; echo "archs=$ARCHS"
} > "$OUT/meta.txt"

# ---- 1. environment -----------------------------------------------------------------------------
CS="$(command -v compute-sanitizer 2>/dev/null || true)"
if [ -z "$CS" ]; then
  for c in /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda-*/bin/compute-sanitizer \
           /usr/local/cuda/compute-sanitizer/compute-sanitizer /opt/nvidia/*/compute-sanitizer; do
    [ -x "$c" ] && CS="$c"
  done
fi
if [ "$DRY" = 1 ]; then
  say "dry run: nothing is executed; commands as they would run:"
else
  {
    echo "## date"; date -u; echo "## host"; uname -a
    echo "## nvidia-smi"; nvidia-smi 2>&1
    echo "## nvcc"; nvcc --version 2>&1
    echo "## compute-sanitizer: ${CS:-not found}"; [ -n "$CS" ] && "$CS" --version 2>&1
    echo "## cmake / ninja"; cmake --version 2>&1 | head -1; ninja --version 2>&1
    echo "## python"
    "$PY" - <<'PYEOF' 2>&1
import importlib, sys, torch
print("python", sys.version.split()[0], sys.executable)
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())
for name in ("cupy", "pybind11", "numpy", "pytest", "xdist", "pytest_benchmark", "pytest_timeout", "tqdm"):
    try:
        m = importlib.import_module(name)
        print(name, getattr(m, "__version__", "?"))
    except Exception as e:
        print(name, "missing:", type(e).__name__)
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device", p.name, f"sm_{p.major}{p.minor}", p.multi_processor_count, "SMs",
          round(p.total_memory / 2**30, 1), "GiB", getattr(p, "L2_cache_size", 0) // 2**20, "MiB L2")
PYEOF
  } > "$OUT/env.txt" 2>&1
  say "environment in env.txt ($GPU_NAME)"
fi

# ---- 2. build -----------------------------------------------------------------------------------
if [ "$SKIP_BUILD" = 1 ]; then
  record build skipped "" 0 "--skip-build"
else
  STEP_NOTE="convkit._cuda for sm_$ARCHS" \
  run_step build 360 90 60 "$OUT/build.log" -- \
    env CONVKIT_CUDA=ON CONVKIT_CUDA_ARCHS="$ARCHS" CONVKIT_SIM="$SIM" CMAKE_BUILD_PARALLEL_LEVEL="$JOBS" \
    "$PY" -m pip install --no-index --no-build-isolation --no-deps -v -e .
  build_rc=$?
  if [ "$DRY" != 1 ]; then
    # The verdict: convkit._cuda imports and the cuda backend can run.
    cuda_ok() {
      "$PY" -c "import convkit, convkit._cuda; b = convkit.available_backends(); print('backends:', b); assert 'cuda' in b, b" \
        >> "$OUT/build.log" 2>&1
    }
    if ! cuda_ok && [ "$build_rc" != 0 ] && [ "$(left)" -gt 200 ]; then
      # pip itself failed (not the compiler, most likely): build in place without it
      say "pip exited $build_rc; trying setup.py build_ext --inplace (appended to build.log)"
      echo "## fallback: setup.py build_ext --inplace" >> "$OUT/build.log"
      env CONVKIT_CUDA=ON CONVKIT_CUDA_ARCHS="$ARCHS" CONVKIT_SIM="$SIM" CMAKE_BUILD_PARALLEL_LEVEL="$JOBS" \
        timeout -k 10 $(( $(left) - 140 )) "$PY" setup.py build_ext --inplace >> "$OUT/build.log" 2>&1
    fi
    if cuda_ok; then
      [ "$build_rc" != 0 ] && say "pip exited $build_rc but convkit._cuda imports and runs: going on"
    else
      sed -i '$ d' "$STEPS"   # replace the build line: the import check is the verdict
      record build FAILED "$build_rc" "$(( $(date +%s) - START ))" "convkit._cuda does not import or run (build.log)"
      echo "---- the end of build.log ----"
      tail -n 40 "$OUT/build.log"
      echo "------------------------------"
      say "BUILD FAILED: nothing else runs"
      "$PY" "$ROOT/benchmarks/gpu_check_summary.py" "$OUT"
      exit 1
    fi
  fi
fi

# What the float32 bench needs at least (its start, checks and 5 samples per side; about 100 s
# with its full 15 on an H100/H200, see --plan), kept free by the tests and the sanitizers.
BENCH_MIN=150; [ "$SKIP_BENCH" = 1 ] && BENCH_MIN=0

# ---- 3. tests -----------------------------------------------------------------------------------
if [ "$SKIP_TESTS" = 1 ]; then
  record tests skipped "" 0 "--skip-tests"
else
  XDIST=() TMO=()
  if [ "$DRY" = 1 ] || "$PY" -c "import xdist" >/dev/null 2>&1; then
    nw=$(( JOBS / 2 )); [ "$nw" -gt 8 ] && nw=8; [ "$nw" -lt 1 ] && nw=1
    XDIST=(-n "$nw")
  fi
  if [ "$DRY" = 1 ] || "$PY" -c "import pytest_timeout" >/dev/null 2>&1; then TMO=(--timeout 120); fi
  # --maxfail rather than -x: a GPU session is rare, so one run should show every failure, while
  # a sticky CUDA error (after which every test fails) still ends it early.
  # shellcheck disable=SC2086  # PYTEST_ARGS is a list of words by design
  STEP_SIGNAL=INT run_step tests 200 $((BENCH_MIN + 100)) 60 "$OUT/pytest-cuda.log" -- \
    env CONVKIT_TEST_BACKENDS=cuda "$PY" -m pytest tests -q "${XDIST[@]}" "${TMO[@]}" --maxfail 25 \
    -p no:cacheprovider --junitxml "$OUT/pytest-cuda.xml" $PYTEST_ARGS
fi

# ---- 4. compute-sanitizer -------------------------------------------------------------------------
# sanitize TOOL CAP RESERVE: gpu_sanitize.py under one tool. Every tensor gets its own cudaMalloc
# (PYTORCH_NO_CUDA_MEMORY_CACHING), so memcheck sees accesses past a tensor's end; exit 99 means
# the tool found errors. Options are used only where this compute-sanitizer has them.
sanitize() {
  local tool=$1 cap=$2 reserve=$3 poison=1 opts=(--tool "$1" --error-exitcode 99)
  if [ "$DRY" != 1 ] && [ -z "$CS" ]; then
    record "sanitizer-$tool" skipped "" 0 "compute-sanitizer not found"
    return
  fi
  local help=""; [ "$DRY" != 1 ] && help="$("$CS" --help 2>&1)"
  case "$help" in *--print-limit*) opts+=(--print-limit 100) ;; esac
  if [ "$tool" = memcheck ]; then
    case "$help" in *--padding*) opts+=(--padding 64) ;; esac
  fi
  # initcheck: no NaN poisoning of outputs, so a kernel that reads an output it never wrote shows up
  [ "$tool" = initcheck ] && poison=0
  run_step "sanitizer-$tool" "$cap" "$reserve" 30 "$OUT/sanitizer-$tool.txt" -- \
    env PYTORCH_NO_CUDA_MEMORY_CACHING=1 CONVKIT_POISON=$poison \
    "${CS:-compute-sanitizer}" "${opts[@]}" "$PY" benchmarks/gpu_sanitize.py
}
want_tool() { case ",$SAN_TOOLS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
if [ "$SKIP_SAN" = 1 ]; then
  for tool in memcheck racecheck initcheck synccheck; do record "sanitizer-$tool" skipped "" 0 "--skip-sanitizer"; done
else
  want_tool memcheck && sanitize memcheck 120 $((BENCH_MIN + 40))
  want_tool racecheck && sanitize racecheck 120 "$BENCH_MIN"
fi

# ---- 5. bench -----------------------------------------------------------------------------------
if [ "$SKIP_BENCH" = 1 ]; then
  record bench skipped "" 0 "--skip-bench"
else
  # The bench's own --budget: its slot less 30 s to write the JSON and Markdown and exit (the
  # slot is what run_step will give it; at least 30 s).
  BUDGET_ARG=$(( $(slot 300 0) - 30 )); [ "$BUDGET_ARG" -lt 30 ] && BUDGET_ARG=30
  # shellcheck disable=SC2086  # BENCH_ARGS is a list of words by design
  run_step bench 300 0 60 "$OUT/bench.log" -- \
    env CONVKIT_COMMIT="$COMMIT" "$PY" -m convkit bench --device cuda --no-progress \
    --budget "$BUDGET_ARG" --json "$OUT/$DATE-$GPU_SLUG.json" --markdown "$OUT/$DATE-$GPU_SLUG.md" \
    --readme "$OUT/$DATE-$GPU_SLUG-readme.md" $BENCH_ARGS
  if [ "$FP16" = 1 ]; then
    BUDGET_ARG=$(( $(slot 120 0) - 20 )); [ "$BUDGET_ARG" -lt 20 ] && BUDGET_ARG=20
    # shellcheck disable=SC2086
    run_step bench-float16 120 0 45 "$OUT/bench-float16.log" -- \
      env CONVKIT_COMMIT="$COMMIT" "$PY" -m convkit bench --device cuda --no-progress --dtype float16 \
      --batch 32 --budget "$BUDGET_ARG" \
      --json "$OUT/$DATE-$GPU_SLUG-float16.json" --markdown "$OUT/$DATE-$GPU_SLUG-float16.md" $BENCH_ARGS
  fi
fi

# ---- 4b. the optional sanitizer tools, with what time is left -----------------------------------
if [ "$SKIP_SAN" != 1 ]; then
  want_tool initcheck && sanitize initcheck 90 0
  want_tool synccheck && sanitize synccheck 90 0
fi

# ---- 6. summary, last ---------------------------------------------------------------------------
if [ "$DRY" = 1 ]; then
  say "dry run done: the steps above would write to $OUT"
  # the float32 bench's plan (counts and an estimate; computed here, no GPU needed)
  "$PY" -m convkit bench --device cuda --plan $BENCH_ARGS 2>/dev/null | sed 's/^/gpu_check: plan: /' || true
  exit 0
fi
[ -n "$(command -v nvidia-smi)" ] && nvidia-smi --query-gpu=clocks.sm,clocks.mem,temperature.gpu,power.draw \
  --format=csv >> "$OUT/env.txt" 2>&1
"$PY" "$ROOT/benchmarks/gpu_check_summary.py" "$OUT" > /dev/null || true
if [ "$BUNDLE" = 1 ]; then
  logs=()
  for f in env.txt meta.txt steps.tsv build.log pytest-cuda.log pytest-cuda.xml bench.log bench-float16.log \
           sanitizer-memcheck.txt sanitizer-racecheck.txt sanitizer-initcheck.txt sanitizer-synccheck.txt; do
    [ -f "$OUT/$f" ] && logs+=("$f")
  done
  if [ "${#logs[@]}" -gt 0 ] && tar -czf "$OUT/logs.tar.gz" -C "$OUT" "${logs[@]}"; then
    (cd "$OUT" && rm -f "${logs[@]}")
  fi
fi
echo
files=("$OUT"/*)
echo "gpu_check: files in $OUT: ${files[*]##*/}"
echo
cat "$OUT/summary.txt"
