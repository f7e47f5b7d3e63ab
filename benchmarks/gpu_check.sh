#!/usr/bin/env bash
# The GPU check: two calls on one warm GPU machine (no network), sized for a 15-minute lease of
# which machine start takes a few minutes. From the repository root:
#
#   here, before the first call:  bash benchmarks/gpu_check.sh --write-commit   (HEAD -> .convkit-commit)
#   call 1, about 5 minutes:      bash benchmarks/gpu_check.sh --call check --out "$OUT"
#   call 2, about 4 minutes:      bash benchmarks/gpu_check.sh --call bench --skip-build --out "$OUT"
#   anywhere, no GPU:             bash benchmarks/gpu_check.sh --dry-run     (both calls, steps, estimates, files)
#
# Call 1 (check): build convkit._cuda alone for sm_90 in place (cmake; no pip, no _cpu); probe
# whether compute-sanitizer can run on this machine (some refuse it: "Device not supported");
# a smoke run of every convolution algorithm x pass with a sync and error check after every
# launch (CONVKIT_CUDA_SYNC=1); compute-sanitizer racecheck over one small case per kernel
# variant (float32 and float16; the forced variants of convkit.cuda_settings reach the 128x128
# GEMM tile, split-K on and off, every direct tile plan), then memcheck over every case
# (benchmarks/gpu_sanitize.py, one line of output per case); then the CUDA test files (not the
# CPU-only suites). Call 2 (bench), issued at once (an idle machine is given back within about
# 30 s): `convkit bench --device cuda` in float32 at batch 32 (the goal metric), then batch 1,
# then float16 at batch 32, each only while its time is left. If the build of call 1 is gone (a
# fresh machine), call 2 rebuilds and runs only the float32 batch-32 rows.
#
# Every step runs under `timeout`, capped so that the call ends inside its budget; a step that
# fails or runs out of time is recorded and the call goes on (a failed build ends it). Each call
# leaves at most 8 files in --out (the device tool brings back 8): the logs go into logs.tar.gz,
# summary.txt is printed last. The bench JSON's commit comes from --commit, CONVKIT_COMMIT, or
# .convkit-commit (written here by --write-commit: the GPU machine's copy of the tree has no .git).
set -u -o pipefail

usage() {
  cat <<'EOF'
usage: bash benchmarks/gpu_check.sh --call check|bench --out DIR [options]
       bash benchmarks/gpu_check.sh --dry-run [--call check|bench]
       bash benchmarks/gpu_check.sh --write-commit
  --call C             check (build, sanitizer probe, smoke, racecheck, memcheck, CUDA tests) or
                       bench (float32 batch 32, then batch 1, then float16)
  --out DIR            where logs, results and summary.txt go (created) [gpu-out]
  --budget S           seconds the call may take [check 295, bench 235]
  --python PY          the Python that has torch [$PYTHON or python3]
  --commit SHA         the commit being checked [$CONVKIT_COMMIT, else .convkit-commit, else git]
  --archs LIST         CUDA architectures to build [90]
  --jobs N             parallel compile jobs and test workers' base [nproc]
  --skip-build         use the convkit._cuda already built in this tree (call bench: rebuilt if gone)
  --bench-args "ARGS"  more arguments for convkit bench (e.g. "--quick")
  --pytest-args "ARGS" more arguments for pytest (e.g. "-k pool")
  --no-bundle          leave the logs loose in DIR instead of DIR/logs.tar.gz
  --dry-run            print the calls' commands, time estimates and files; run nothing
  --write-commit       write HEAD (with -dirty when tracked files differ) to .convkit-commit, here
EOF
}

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COMMIT_FILE="$ROOT/.convkit-commit"
OUT_DIR=gpu-out
BUDGET=""
PY="${PYTHON:-python3}"
COMMIT="${CONVKIT_COMMIT:-}"
ARCHS=90
JOBS="$(nproc 2>/dev/null || echo 4)"
CALL="" SKIP_BUILD=0 BUNDLE=1 DRY=0
BENCH_ARGS="" PYTEST_ARGS=""
# Budgets of the two calls (seconds): 5 + 4 minutes less a margin for the device tool's transfers.
CHECK_BUDGET=295
BENCH_BUDGET=235

need() { [ $# -ge 2 ] || { echo "gpu_check: $1 needs a value" >&2; usage >&2; exit 2; }; }
while [ $# -gt 0 ]; do
  case "$1" in
    --call) need "$@"; CALL="$2"; shift 2 ;;
    --out) need "$@"; OUT_DIR="$2"; shift 2 ;;
    --budget) need "$@"; BUDGET="$2"; shift 2 ;;
    --python) need "$@"; PY="$2"; shift 2 ;;
    --commit) need "$@"; COMMIT="$2"; shift 2 ;;
    --archs) need "$@"; ARCHS="$2"; shift 2 ;;
    --jobs) need "$@"; JOBS="$2"; shift 2 ;;
    --skip-build) SKIP_BUILD=1; shift ;;
    --bench-args) need "$@"; BENCH_ARGS="$2"; shift 2 ;;
    --pytest-args) need "$@"; PYTEST_ARGS="$2"; shift 2 ;;
    --no-bundle) BUNDLE=0; shift ;;
    --dry-run) DRY=1; shift ;;
    --write-commit)
      cd "$ROOT" || exit 2
      sha="$(git rev-parse HEAD 2>/dev/null)" || { echo "gpu_check: --write-commit needs a git checkout" >&2; exit 2; }
      git diff --quiet HEAD -- 2>/dev/null || sha="$sha-dirty"
      echo "$sha" > "$COMMIT_FILE"
      echo "gpu_check: wrote $sha to .convkit-commit (untracked: it travels with the tree)"
      exit 0 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_check: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done
case "$CALL" in
  check|bench) ;;
  "") if [ "$DRY" != 1 ]; then echo "gpu_check: --call check or --call bench (see --dry-run)" >&2; usage >&2; exit 2; fi ;;
  *) echo "gpu_check: --call must be check or bench, got $CALL" >&2; exit 2 ;;
esac
case "$BUDGET" in ''|*[!0-9]*) [ -n "$BUDGET" ] && { echo "gpu_check: --budget must be whole seconds, got $BUDGET" >&2; exit 2; } ;; esac
case "$JOBS" in ''|*[!0-9]*|0) echo "gpu_check: --jobs must be a positive integer, got $JOBS" >&2; exit 2 ;; esac

cd "$ROOT" || exit 2
if [ -z "$COMMIT" ] && [ -s "$COMMIT_FILE" ]; then COMMIT="$(head -c 80 "$COMMIT_FILE" | tr -dc 'A-Za-z0-9-')"; fi
if [ -z "$COMMIT" ] && [ -e "$ROOT/.git" ] && command -v git >/dev/null 2>&1; then
  COMMIT="$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || true)"
fi
export PYTHONUNBUFFERED=1
# convkit is imported from this tree (the in-place build), not from an install
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi

say() { echo "gpu_check: $*"; }
left() { echo $((DEADLINE - $(date +%s))); }
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "${5:-}" >> "$STEPS"; }

MARGIN=15   # seconds kept for the summary and the bundle at the end of a call
# slot CAP RESERVE: the next step's timeout: CAP seconds, or less to leave RESERVE seconds (and
# the margin) before the deadline.
slot() {
  local s=$(( $(left) - $2 - MARGIN ))
  [ "$s" -gt "$1" ] && s=$1
  echo "$s"
}

# run_step NAME CAP RESERVE MIN EST LOG -- CMD...: CMD under timeout with its output in LOG, skipped
# when less than MIN seconds are left for it; EST is the expected time on an H100 (the dry run
# adds them up). Returns CMD's exit status (125: skipped). STEP_SIGNAL: what timeout sends
# first (TERM; INT for pytest, which then still writes its report), KILL 15 s later.
EST_TOTAL=0
run_step() {
  local name=$1 cap=$2 reserve=$3 min=$4 est=$5 log=$6
  shift 7
  if [ "$DRY" = 1 ]; then
    EST_TOTAL=$((EST_TOTAL + est))
    local shown="" a
    for a in "$@"; do case "$a" in *[[:space:]]*) shown+="\"$a\" " ;; *) shown+="$a " ;; esac; done
    printf '  + [%s: ~%ss, at most %ss] %s> %s\n' "$name" "$est" "$cap" "$shown" "${log##*/}"
    return 0
  fi
  local t; t=$(slot "$cap" "$reserve")
  if [ "$t" -lt "$min" ]; then
    say "$name: skipped, ${t}s left for it (needs $min)"
    record "$name" skipped "" 0 "no time left"
    return 125
  fi
  say "$name: running (at most ${t}s) > ${log##*/}"
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

find_sanitizer() {
  CS="$(command -v compute-sanitizer 2>/dev/null || true)"
  if [ -z "$CS" ]; then
    for c in /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda-*/bin/compute-sanitizer \
             /usr/local/cuda/compute-sanitizer/compute-sanitizer /opt/nvidia/*/compute-sanitizer; do
      [ -x "$c" ] && CS="$c"
    done
  fi
}

# ---- set-up of a call: output folder, meta.txt, env.txt, the GPU check ------------------------
begin_call() {   # begin_call NAME BUDGET
  CALL_NAME=$1
  local budget=$2
  START=$(date +%s)
  DEADLINE=$((START + budget))
  if [ "$DRY" = 1 ]; then
    OUT="$OUT_DIR" STEPS=/dev/null EST_TOTAL=0
    return
  fi
  mkdir -p "$OUT_DIR" || exit 2
  OUT="$(cd "$OUT_DIR" && pwd)"
  STEPS="$OUT/steps.tsv"
  : > "$STEPS"
  if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    say "$PY cannot import torch: pass --python with the interpreter that has it" >&2
    exit 2
  fi
  if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; then
    local smi="not installed"
    command -v nvidia-smi >/dev/null 2>&1 && smi="$(nvidia-smi -L 2>&1 | head -3)"
    say "no GPU visible here (nvidia-smi -L: ${smi:-nothing}; torch.cuda.is_available() is False)." >&2
    say "this script runs on the lent GPU machine; --dry-run shows its calls." >&2
    exit 2
  fi
  GPU_NAME="$("$PY" -c "import torch; print(torch.cuda.get_device_name(0))" 2>/dev/null || echo unknown-gpu)"
  GPU_SLUG="$("$PY" "$ROOT/benchmarks/gpu_check_summary.py" --slug "$GPU_NAME" 2>/dev/null || echo gpu)"
  DATE="$(date -u +%Y-%m-%d)"
  {
    echo "gpu=$GPU_NAME"; echo "date=$DATE"; echo "commit=$COMMIT"; echo "budget=$budget"
    echo "call=$CALL_NAME"; echo "python=$PY"; echo "archs=$ARCHS"
  } > "$OUT/meta.txt"
  find_sanitizer
  {
    echo "## date"; date -u; echo "## host"; uname -a; echo "## nproc"; nproc
    echo "## nvidia-smi"; nvidia-smi 2>&1
    echo "## nvcc"; nvcc --version 2>&1
    echo "## compute-sanitizer: ${CS:-not found}"; [ -n "$CS" ] && "$CS" --version 2>&1
    echo "## cmake / ninja"; cmake --version 2>&1 | head -1; ninja --version 2>&1
    echo "## python"
    "$PY" - <<'PYEOF' 2>&1
import importlib, sys, torch
print("python", sys.version.split()[0], sys.executable)
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())
for name in ("cupy", "pybind11", "numpy", "pytest", "xdist", "pytest_timeout"):
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
  say "call $CALL_NAME on $GPU_NAME, budget ${budget}s, commit ${COMMIT:-unknown}"
}

# The files a call keeps loose in --out; everything else goes into logs.tar.gz.
KEEP_CHECK="summary.txt logs.tar.gz"
keep_bench() { echo "summary.txt logs.tar.gz $1-b32.json $1-b32.md $1-b32-readme.md $1-b1.json $1-float16.json"; }

end_call() {   # end_call KEEP...: the summary, the bundle, the summary printed last
  if [ "$DRY" = 1 ]; then
    local budget=$((DEADLINE - START))
    say "  estimated ~${EST_TOTAL}s of this call's ${budget}s budget (each step is also capped by the time left)"
    say "  leaves in --out (at most 8 files): $*"
    return
  fi
  command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=clocks.sm,clocks.mem,temperature.gpu,power.draw \
    --format=csv >> "$OUT/env.txt" 2>&1
  "$PY" "$ROOT/benchmarks/gpu_check_summary.py" "$OUT" > /dev/null || true
  if [ "$BUNDLE" = 1 ]; then
    local logs=() f keep
    for f in "$OUT"/*; do
      f="${f##*/}"
      [ "$f" = "*" ] && continue
      keep=0
      for k in "$@"; do [ "$f" = "$k" ] && keep=1; done
      [ "$keep" = 0 ] && logs+=("$f")
    done
    if [ "${#logs[@]}" -gt 0 ] && tar -czf "$OUT/logs.tar.gz" -C "$OUT" "${logs[@]}"; then
      (cd "$OUT" && rm -rf "${logs[@]}")
    fi
  fi
  echo
  local files=("$OUT"/*)
  echo "gpu_check: ${#files[@]} files in $OUT: ${files[*]##*/}"
  echo
  cat "$OUT/summary.txt"
}

# ---- the build: convkit._cuda alone, for sm_$ARCHS, in place --------------------------------------
BUILD_DIR="build/gpu-sm$ARCHS"
build_cuda() {   # build_cuda CAP EST: configure + build; the verdict is an import that finds a GPU
  local cap=$1 est=$2
  local gen=()
  { [ "$DRY" = 1 ] || command -v ninja >/dev/null 2>&1; } && gen=(-G Ninja)
  local pbdir="\$($PY -m pybind11 --cmakedir)" pyexe="$PY"
  if [ "$DRY" != 1 ]; then
    pbdir="$("$PY" -m pybind11 --cmakedir 2>/dev/null)"
    pyexe="$(command -v "$PY" 2>/dev/null || echo "$PY")"   # CMake wants a path
  fi
  STEP_NOTE="convkit._cuda for sm_$ARCHS" \
  run_step build "$cap" 0 60 "$est" "$OUT/build.log" -- bash -c "cmake -S . -B $BUILD_DIR ${gen[*]} -DCONVKIT_CUDA=ON \
-DCONVKIT_CUDA_ARCHS=$ARCHS -DCONVKIT_SIM=OFF -DCMAKE_BUILD_TYPE=Release -DCMAKE_LIBRARY_OUTPUT_DIRECTORY=$ROOT/convkit \
-DPython_EXECUTABLE=$pyexe -Dpybind11_DIR=$pbdir && cmake --build $BUILD_DIR --target _cuda --parallel $JOBS"
  local rc=$?
  [ "$DRY" = 1 ] && return 0
  if cuda_ok; then return 0; fi
  sed -i '$ d' "$STEPS"   # the import check is the verdict
  record build FAILED "$rc" "$(( $(date +%s) - START ))" "convkit._cuda does not import or run (build.log)"
  echo "---- the end of build.log ----"; tail -n 40 "$OUT/build.log"; echo "------------------------------"
  return 1
}
cuda_ok() {
  "$PY" -c "import convkit, convkit._cuda as m; b = convkit.available_backends(); print('backends:', b, m.__file__); \
assert 'cuda' in b, b; assert hasattr(m, 'set_variant'), 'a _cuda built before forced variants'" >> "$OUT/build.log" 2>&1
}

# ---- call 1: check ---------------------------------------------------------------------------------
# The CUDA test files, most telling first (not the CPU-only suites: with CONVKIT_TEST_BACKENDS=cuda
# the backend-parametrized files run on the cuda backend alone).
CUDA_TESTS="tests/ops/test_cuda_conv.py tests/integration/test_cuda_switches.py tests/integration/test_cuda.py tests/integration/test_cuda_graphs.py tests/kernels/test_cuda_kernels.py \
tests/ops/test_conv2d.py tests/ops/test_conv_half.py tests/ops/test_pool.py tests/ops/test_relu.py tests/ops/test_half.py \
tests/ops/test_bias_grad.py"

call_check() {
  begin_call check "${BUDGET:-$CHECK_BUDGET}"
  [ "$DRY" = 1 ] && say "call 1 (check), budget $((DEADLINE - START))s: bash benchmarks/gpu_check.sh --call check --out \"\$OUT\""
  if [ "$SKIP_BUILD" = 1 ]; then
    record build skipped "" 0 "--skip-build"
    [ "$DRY" = 1 ] || cuda_ok || { say "--skip-build, but convkit._cuda does not import or run here (build.log)"; }
  else
    if ! build_cuda 150 75; then
      record probe skipped "" 0 "build failed"
      say "BUILD FAILED: nothing else runs"
      end_call $KEEP_CHECK
      exit 1
    fi
  fi

  # compute-sanitizer: can it run on this machine at all (gVisor machines refuse the device)?
  local san_ok=0 san_why=""
  if [ "$DRY" != 1 ] && [ -z "$CS" ]; then
    san_why="compute-sanitizer not found"
    record sanitizer-probe skipped "" 0 "$san_why"
  else
    STEP_NOTE="memcheck on one torch allocation and kernel" \
    run_step sanitizer-probe 45 0 10 15 "$OUT/sanitizer-probe.txt" -- \
      "${CS:-compute-sanitizer}" --tool memcheck --error-exitcode 99 "$PY" -c \
      "import torch; x = torch.arange(64, device='cuda', dtype=torch.float32); torch.cuda.synchronize(); print('probe: ok', int(x.sum()))"
    local rc=$?
    if [ "$DRY" = 1 ] || { [ "$rc" = 0 ] && grep -q "probe: ok" "$OUT/sanitizer-probe.txt"; }; then
      san_ok=1
    else
      san_why="compute-sanitizer cannot run here (exit $rc): $(grep -v '^$' "$OUT/sanitizer-probe.txt" | tail -n 2 | tr '\n' ' ' | cut -c1-200)"
      sed -i '$ d' "$STEPS"
      record sanitizer-probe REFUSED "$rc" 0 "$san_why"
    fi
  fi

  # smoke: every algorithm x pass, a sync and error check after every launch
  STEP_NOTE="every algorithm x pass, sync after each launch" \
  run_step smoke 60 0 15 20 "$OUT/smoke.txt" -- \
    env CONVKIT_CUDA_SYNC=1 "$PY" benchmarks/gpu_sanitize.py --cases smoke --dtypes float32,float16

  # compute-sanitizer: racecheck over one case per kernel variant, then memcheck over every case.
  # Every tensor gets its own cudaMalloc (PYTORCH_NO_CUDA_MEMORY_CACHING), so memcheck sees an
  # access past a tensor's end; exit 99: the tool found errors.
  local tool
  for tool in racecheck memcheck; do
    if [ "$san_ok" != 1 ]; then
      record "sanitizer-$tool" skipped "" 0 "$san_why"
      continue
    fi
    local opts=(--tool "$tool" --error-exitcode 99) help="" cases=variants dts=float32,float16 cap=75 est=55
    [ "$DRY" != 1 ] && help="$("$CS" --help 2>&1)"
    case "$help" in *--print-limit*) opts+=(--print-limit 100) ;; esac
    if [ "$tool" = memcheck ]; then
      case "$help" in *--padding*) opts+=(--padding 64) ;; esac
      cases=all dts=float32,float16,float64,bfloat16 cap=80 est=65
    fi
    STEP_NOTE="gpu_sanitize.py --cases $cases" \
    run_step "sanitizer-$tool" "$cap" 0 30 "$est" "$OUT/sanitizer-$tool.txt" -- \
      env PYTORCH_NO_CUDA_MEMORY_CACHING=1 CONVKIT_POISON=1 \
      "${CS:-compute-sanitizer}" "${opts[@]}" "$PY" benchmarks/gpu_sanitize.py --cases "$cases" --dtypes "$dts"
  done

  # the CUDA test files, with what is left
  local xdist=() tmo=()
  if [ "$DRY" = 1 ] || "$PY" -c "import xdist" >/dev/null 2>&1; then
    local nw=$(( JOBS / 2 )); [ "$nw" -gt 8 ] && nw=8; [ "$nw" -lt 1 ] && nw=1
    xdist=(-n "$nw")
  fi
  if [ "$DRY" = 1 ] || "$PY" -c "import pytest_timeout" >/dev/null 2>&1; then tmo=(--timeout 60); fi
  # --maxfail rather than -x: a GPU session is rare, so one run should show every failure, while
  # a sticky CUDA error (after which every test fails) still ends it early.
  # shellcheck disable=SC2086  # CUDA_TESTS and PYTEST_ARGS are lists of words by design
  STEP_SIGNAL=INT STEP_NOTE="the CUDA test files" run_step tests 200 0 30 60 "$OUT/pytest-cuda.log" -- \
    env CONVKIT_TEST_BACKENDS=cuda "$PY" -m pytest $CUDA_TESTS -q "${xdist[@]}" "${tmo[@]}" --maxfail 25 \
    -p no:cacheprovider --junitxml "$OUT/pytest-cuda.xml" $PYTEST_ARGS
  end_call $KEEP_CHECK
}

# ---- call 2: bench ---------------------------------------------------------------------------------
# bench_run NAME CAP MIN EST BATCH DTYPE STEM [--readme]: one `convkit bench --device cuda` run; its
# own --budget is its slot less a margin to write its files.
bench_run() {
  local name=$1 cap=$2 min=$3 est=$4 batch=$5 dtype=$6 stem=$7 readme=${8:-}
  local b; b=$(( $(slot "$cap" 0) - 15 ))
  [ "$DRY" = 1 ] && b=$((cap - 15))
  [ "$b" -lt 20 ] && b=20
  local extra=()
  [ -n "$readme" ] && extra=(--readme "$OUT/$stem-readme.md")
  # shellcheck disable=SC2086  # BENCH_ARGS is a list of words by design
  STEP_NOTE="$dtype batch $batch" run_step "$name" "$cap" 0 "$min" "$est" "$OUT/$name.log" -- \
    env CONVKIT_COMMIT="$COMMIT" "$PY" -m convkit bench --device cuda --no-progress --dtype "$dtype" --batch "$batch" \
    --budget "$b" --json "$OUT/$stem.json" --markdown "$OUT/$stem.md" "${extra[@]}" $BENCH_ARGS
}

call_bench() {
  begin_call bench "${BUDGET:-$BENCH_BUDGET}"
  [ "$DRY" = 1 ] && say "call 2 (bench), budget $((DEADLINE - START))s, issued at once after call 1: bash benchmarks/gpu_check.sh --call bench --skip-build --out \"\$OUT\""
  local rebuilt=0 stem="${DATE:-DATE}-${GPU_SLUG:-GPU}"
  if [ "$DRY" = 1 ]; then
    say "  (if convkit._cuda does not import: the build step of call 1, then the float32 batch-32 rows only)"
  elif [ "$SKIP_BUILD" = 1 ] && cuda_ok; then
    record build skipped "" 0 "--skip-build: convkit._cuda imports"
  else
    [ "$SKIP_BUILD" = 1 ] && say "convkit._cuda is gone (a fresh machine?): rebuilding, then float32 batch 32 only"
    if ! build_cuda 150 75; then
      say "BUILD FAILED: no bench"
      end_call $(keep_bench "$stem")
      exit 1
    fi
    rebuilt=1
  fi
  bench_run bench-b32 110 50 70 32 float32 "$stem-b32" --readme
  if [ "$rebuilt" = 1 ]; then
    record bench-b1 skipped "" 0 "rebuilt: float32 batch 32 only"
    record bench-float16 skipped "" 0 "rebuilt: float32 batch 32 only"
  else
    bench_run bench-b1 70 45 60 1 float32 "$stem-b1"
    bench_run bench-float16 60 40 50 32 float16 "$stem-float16"
  fi
  end_call $(keep_bench "$stem")
}

if [ "$DRY" = 1 ]; then
  say "dry run: nothing is executed. Before the first call, here: bash benchmarks/gpu_check.sh --write-commit"
  [ -s "$COMMIT_FILE" ] && say "  .convkit-commit holds $(head -c 80 "$COMMIT_FILE")" || say "  .convkit-commit is not written yet"
  total=0
  if [ "$CALL" != bench ]; then call_check; total=$((total + DEADLINE - START)); fi
  if [ "$CALL" != check ]; then
    call_bench; total=$((total + DEADLINE - START))
    # the float32 bench's plans (counts and estimates; computed here, no GPU needed)
    for b in 32 1; do
      # shellcheck disable=SC2086
      "$PY" -m convkit bench --device cuda --plan --batch "$b" $BENCH_ARGS 2>/dev/null | grep -E "estimate" \
        | sed "s/^/gpu_check: plan float32 batch $b: /" || true
    done
    # shellcheck disable=SC2086
    "$PY" -m convkit bench --device cuda --plan --batch 32 --dtype float16 $BENCH_ARGS 2>/dev/null | grep -E "estimate" \
      | sed "s/^/gpu_check: plan float16 batch 32: /" || true
  fi
  say "budgets together: ${total}s (5 + 4 minutes is 540 s), plus the machine's start and the transfers"
  exit 0
fi
case "$CALL" in
  check) call_check ;;
  bench) call_bench ;;
esac
