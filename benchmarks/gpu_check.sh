#!/usr/bin/env bash
# The check for a lent GPU machine (H100/H200; Python 3.12, torch 2.11+cu130, triton 3.6, no
# internet, no fvcore), and its rehearsal on the CPU (docs/gpu-check.md):
#   bash benchmarks/gpu_check.sh [--flex]                             # GPU: ~8.5 minutes at most
#   bash benchmarks/gpu_check.sh --dry-run [--fault BACKEND] [--flex] # CPU (CI: make gpu-check-dry-run)
# Steps, most valuable first: machine, build, import, the bench's op rows in one process per
# backend group (triton with the reference and sdpa_mask baselines; the compiled extension's
# backend, cuda (cpu in the dry run), with its own reference; flex with its own reference only
# with --flex), the model rows (their backend: the fastest fused backend whose op rows all ran),
# the GPU tests, the every-config Triton test, the summary. Each bench process writes its own
# JSON after every row, so a crash loses only the rest of its own group. --fault BACKEND (dry
# run only) makes that backend abort its process the first time it runs, as a crashing kernel
# would; the run then passes only if exactly its group crashed and everything else ran.
# Each step runs under its own limit, the smaller of its cap and the time left minus what the
# later steps keep (GPU_CHECK_BUDGET seconds in all: 510, dry run 600); a failed, crashed or cut
# step never stops the script. Logs and JSON go under $OUT/gpu_check and $OUT (default ./bench-out).
# The summary always prints; the exit status is 0 only when every step passed and every row ran.
set -uo pipefail
cd "$(dirname "$0")/.."

MODE=gpu FLEX=0 FAULT=
usage() {
  echo "usage: bash benchmarks/gpu_check.sh [--flex] | --dry-run [--fault BACKEND] [--flex]${1:+: $1}" >&2
  exit 2
}
while [ $# -gt 0 ]; do
  case $1 in
    --dry-run) MODE=dry-run ;;
    --flex) FLEX=1 ;;
    --fault) [ $# -ge 2 ] || usage "--fault needs a backend"; FAULT=$2; shift ;;
    *) usage "unknown argument '$1'" ;;
  esac
  shift
done

# Backend groups, one bench process each: step name and its --backends (EXT: the compiled
# extension's backend, cuda; cpu in the dry run). Checked before anything is written.
EXT=$([ "$MODE" = gpu ] && echo cuda || echo cpu)
BENCH_GROUPS=(ops triton,reference,sdpa_mask "ops-$EXT" "$EXT,reference")
[ "$FLEX" = 1 ] && BENCH_GROUPS+=(ops-flex flex,reference)
FAULT_STEP=
if [ -n "$FAULT" ]; then
  [ "$MODE" = dry-run ] || usage "--fault is for the dry run only"
  for ((i = 0; i < ${#BENCH_GROUPS[@]}; i += 2)); do
    [ "${BENCH_GROUPS[i + 1]%%,*}" = "$FAULT" ] && FAULT_STEP=${BENCH_GROUPS[i]}
  done
  if [ -z "$FAULT_STEP" ]; then
    leaders=()
    for ((i = 0; i < ${#BENCH_GROUPS[@]}; i += 2)); do leaders+=("${BENCH_GROUPS[i + 1]%%,*}"); done
    usage "--fault $FAULT: expected the backend of a bench group (${leaders[*]})"
  fi
fi

PY=${PY:-python3}
OUT_DIR=${OUT:-$PWD/bench-out}
LOG_DIR=$OUT_DIR/gpu_check
mkdir -p "$LOG_DIR"
rm -f "$LOG_DIR"/*.log "$LOG_DIR/steps.tsv" "$LOG_DIR/summary.txt" "$OUT_DIR"/bench-*.json
STEPS=$LOG_DIR/steps.tsv
CONSOLE=$LOG_DIR/console.log

if [ "$MODE" = gpu ]; then
  BUDGET=${GPU_CHECK_BUDGET:-510}
  unset TRITON_INTERPRET             # real kernels
  export TRITON_PRINT_AUTOTUNING=1   # the autotuner prints each winning config (summary lists them)
  BUILD_ENV=()                       # CUDA kernels when torch is a CUDA build and nvcc is found
  PYTEST_RUN=(-q -rfE)
  BENCH_ARGS=(--device cuda --batch 144 --dtypes fp32,bf16)
  #      cap reserve: a step runs at most `cap` s and leaves `reserve` s to the steps after it
  CAPS=(machine 30 470 build 180 320 import 30 290 ops 240 100 "ops-$EXT" 60 70 model 150 15
        ops-flex 150 15 tests 150 10 all-configs 150 5)
else
  BUDGET=${GPU_CHECK_BUDGET:-600}
  export TRITON_INTERPRET=1          # Triton kernels through the interpreter
  BUILD_ENV=(POSTER_FAST_CUDA=0)
  PYTEST_RUN=(-q --collect-only)     # which GPU tests would run (they skip or crawl on the CPU)
  BENCH_ARGS=(--device cpu --batch 1 --model-batch 1 --levels 3 --dtypes fp32 --warmup 0 --iters 1)
  CAPS=(machine 60 540 build 240 320 import 60 300 ops 120 260 "ops-$EXT" 60 230 model 300 60
        ops-flex 300 60 tests 120 30 all-configs 120 5)
fi
DEADLINE=$((SECONDS + BUDGET))
N=0

say() { echo "$*" | tee -a "$CONSOLE"; }

# limit_for STEP: the smaller of the step's cap and the time left minus its reserve (seconds).
limit_for() {
  local i
  for ((i = 0; i < ${#CAPS[@]}; i += 3)); do
    if [ "${CAPS[i]}" = "$1" ]; then
      local left=$((DEADLINE - SECONDS - CAPS[i + 2]))
      echo $((left < CAPS[i + 1] ? left : CAPS[i + 1]))
      return
    fi
  done
  echo 0
}

# run_step NAME LIMIT JSON CMD...: CMD with stdout+stderr in $LOG_DIR/NN-NAME.log, SIGINT after
# LIMIT seconds (Python steps then stop cleanly and write what they have), SIGKILL 15 s later.
# Appends "name status rc seconds limit log json" to steps.tsv (json: the step's bench JSON or
# -); status ok, failed (an exit status), crashed (killed by a signal) or cut (the limit).
run_step() {
  local name=$1 limit=$2 json=$3; shift 3
  N=$((N + 1))
  local log
  log=$(printf '%s/%02d-%s.log' "$LOG_DIR" "$N" "$name")
  if [ "$limit" -lt 5 ]; then
    echo "not run: $((DEADLINE - SECONDS)) s left of the ${BUDGET} s budget, too little for this step" > "$log"
    printf '%s\tcut\t-\t0\t%s\t%s\t%s\n' "$name" "$limit" "$log" "$json" >> "$STEPS"
    say "== [${SECONDS}s] $name: cut (no time left)"
    return
  fi
  say "== [${SECONDS}s] $name (limit ${limit}s)"
  local t0=$SECONDS rc status
  printf '$ %s\n' "${*//$'\n'/ }" > "$log"  # the command on one line
  timeout -s INT -k 15 "$limit" "$@" >> "$log" 2>&1 < /dev/null
  rc=$?
  if [ $rc -eq 0 ]; then
    status=ok
  elif [ $rc -eq 124 ] || { [ $rc -eq 137 ] && [ $((SECONDS - t0)) -ge "$limit" ]; }; then
    status=cut
  elif [ $rc -gt 128 ]; then
    status=crashed
  else
    status=failed
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$rc" "$((SECONDS - t0))" "$limit" "$log" "$json" >> "$STEPS"
  say "   $status (exit $rc, $((SECONDS - t0)) s); log: $log"
  if [ "$status" != ok ]; then
    tail -n 6 "$log" | sed 's/^/   | /' | tee -a "$CONSOLE"
  fi
}

say "== gpu_check ($MODE${FAULT:+, fault $FAULT}), budget ${BUDGET}s, $(date -u +%FT%TZ), output in $OUT_DIR"
if [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then export CUDA_HOME=/usr/local/cuda; fi

run_step machine "$(limit_for machine)" - bash -c '
  if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  else
    echo "nvidia-smi: not found"
  fi
  for tool in nvcc "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" gcc ninja; do
    if command -v "$tool" > /dev/null; then
      echo "$tool: $("$tool" --version 2>&1 | grep -m 1 -iE "release|gcc|^[0-9]")"
    else
      echo "$tool: not found"
    fi
  done
  "$0" -c "import importlib, os, sys, sysconfig
def version(name):
    try:
        return importlib.import_module(name).__version__
    except Exception as exc:
        return f\"unavailable ({type(exc).__name__})\"
import torch
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else \"none\"
header = os.path.join(sysconfig.get_paths()[\"include\"], \"Python.h\")
print(\"packages:\", \" | \".join(f\"{n} {version(n)}\" for n in (\"pytest\", \"numpy\", \"PIL\", \"ninja\")),
      \"| Python.h\", \"found\" if os.path.isfile(header) else f\"missing ({header})\")
print(\"machine:\", \"python\", sys.version.split()[0], \"| torch\", torch.__version__, \"| cuda\",
      torch.version.cuda, \"| triton\", version(\"triton\"), \"| gpu\", gpu)"' "$PY"

run_step build "$(limit_for build)" - env ${BUILD_ENV[@]+"${BUILD_ENV[@]}"} "$PY" setup.py build_ext --inplace
run_step import "$(limit_for import)" - "$PY" -c \
  "import torch, poster_fast._C as C; print('poster_fast._C: with_cuda =', C.with_cuda)"

# The bench, one process per step; with --fault, through the wrapper that plants the crash.
if [ -n "$FAULT" ]; then
  BENCH=("$PY" benchmarks/gpu_check_fault.py "$FAULT")
else
  BENCH=("$PY" -m poster_fast.commands.bench)
fi
# bench_step NAME SECTIONS ARGS...: stops starting rows 30 s before its hard limit, so it
# prints its tables itself.
bench_step() {
  local name=$1 sections=$2; shift 2
  local limit soft json=$OUT_DIR/bench-$name.json
  limit=$(limit_for "$name")
  soft=$((limit - 30 > limit / 2 ? limit - 30 : limit / 2))
  run_step "$name" "$limit" "$json" env -u POSTER_FAST_TRITON_CONFIGS "${BENCH[@]}" "${BENCH_ARGS[@]}" \
    --sections "$sections" "$@" --time-limit "$((soft > 1 ? soft : 1))" --json "$json"
}
OP_JSONS=()
for ((i = 0; i < ${#BENCH_GROUPS[@]}; i += 2)); do
  [ "${BENCH_GROUPS[i]}" = ops-flex ] && continue  # flex after the model rows
  bench_step "${BENCH_GROUPS[i]}" ops --backends "${BENCH_GROUPS[i + 1]}"
  OP_JSONS+=("$OUT_DIR/bench-${BENCH_GROUPS[i]}.json")
done
# The model rows' backend: the fastest fused backend of the op groups with every level timed
# (the Triton interpreter is too slow for the model: the dry run picks the cpu backend or none).
AMONG=$([ "$MODE" = gpu ] && echo "triton,$EXT" || echo "$EXT")
IFS=$'\t' read -r MODEL_BACKEND WHY < <(timeout 30 "$PY" benchmarks/gpu_check_summary.py model-backend \
  --among "$AMONG" "${OP_JSONS[@]}" 2>> "$CONSOLE")
say "== [${SECONDS}s] model backend: ${MODEL_BACKEND:=reference} (${WHY:-the choice failed})"
bench_step model infer,train,latency --model-backend "$MODEL_BACKEND"
[ "$FLEX" = 1 ] && bench_step ops-flex ops --backends flex,reference

# pytest with SIGINT restored (a background job inherits it ignored), so a cut run still prints
# its tally. The files that hold cuda-marked tests but the every-config one (one autotune config
# per kernel), then that one alone (with the full config lists: it runs every config itself).
# A file that fails to import (a package missing on the machine) costs only its own tests.
PYTEST=("$PY" -c 'import signal, sys, pytest
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.exit(pytest.main(sys.argv[1:]))')
ALL_CONFIGS=tests/test_triton_kernels.py
mapfile -t GPU_FILES < <(grep -rlE --include='*.py' 'mark\.cuda\b' tests | grep -vxF "$ALL_CONFIGS" | sort)
if [ ${#GPU_FILES[@]} -gt 0 ]; then
  run_step tests "$(limit_for tests)" - env POSTER_FAST_TRITON_CONFIGS=first "${PYTEST[@]}" "${GPU_FILES[@]}" \
    -m cuda --continue-on-collection-errors "${PYTEST_RUN[@]}" -p no:cacheprovider
else
  printf 'tests\tabsent\t-\t0\t-\t-\t-\n' >> "$STEPS"
  say "== [${SECONDS}s] tests: absent (no file under tests/ marks a test cuda)"
fi
if [ -f "$ALL_CONFIGS" ]; then
  run_step all-configs "$(limit_for all-configs)" - env -u POSTER_FAST_TRITON_CONFIGS "${PYTEST[@]}" \
    "$ALL_CONFIGS" -m cuda "${PYTEST_RUN[@]}" -p no:cacheprovider
else
  printf 'all-configs\tabsent\t-\t0\t-\t-\t-\n' >> "$STEPS"
  say "== [${SECONDS}s] all-configs: absent ($ALL_CONFIGS is not in this tree)"
fi

say "== [${SECONDS}s] summary"
timeout 60 "$PY" benchmarks/gpu_check_summary.py summary --mode "$MODE" --budget "$BUDGET" --elapsed "$SECONDS" \
  ${FAULT:+--fault "$FAULT_STEP=$FAULT"} "$STEPS" 2>&1 | tee "$LOG_DIR/summary.txt" | tee -a "$CONSOLE"
rc=${PIPESTATUS[0]}  # 0: all passed, 3: something failed, crashed or was cut, else the script failed
if [ "$rc" -ne 0 ] && [ "$rc" -ne 3 ]; then  # print the step table as recorded
  say "(the summary script failed, exit $rc; the steps as recorded:)"
  column -t -s $'\t' "$STEPS" 2> /dev/null | tee -a "$CONSOLE" || tee -a "$CONSOLE" < "$STEPS"
  rc=3
fi
exit "$rc"
