#!/usr/bin/env bash
# The check for a lent GPU machine (H100/H200; Python 3.12, torch 2.11+cu130, triton 3.6, no
# internet, no fvcore, nvcc maybe absent or mismatched), and its rehearsal on the CPU:
#   bash benchmarks/gpu_check.sh            # on the GPU machine: ~7.5 minutes at most
#   bash benchmarks/gpu_check.sh --dry-run  # the same steps on the CPU (CI: make gpu-check-dry-run)
# Steps: machine, build (setup.py build_ext --inplace: CUDA when torch and nvcc allow; the dry
# run builds the CPU kernels only), import of poster_fast._C, GPU tests (-m cuda, one autotune
# config per kernel), the every-config Triton test, the bench (op rows with FLOPs, bytes and % of
# peak, then model rows, FlexAttention last; its JSON rewritten after every row), the summary.
# Each step runs under its own limit, the smaller of its cap and the time left minus what the
# later steps keep (GPU_CHECK_BUDGET seconds in all: 450, dry run 600); a failed or cut step
# never stops the script. Logs and JSON go under $OUT/gpu_check and $OUT (default ./bench-out).
# The summary always prints; the exit status is 0 only when every step passed and every row ran.
set -uo pipefail
cd "$(dirname "$0")/.."

MODE=gpu
case "${1:-}" in
  "") ;;
  --dry-run) MODE=dry-run ;;
  *) echo "usage: bash benchmarks/gpu_check.sh [--dry-run]" >&2; exit 2 ;;
esac
PY=${PY:-python3}
OUT_DIR=${OUT:-$PWD/bench-out}
LOG_DIR=$OUT_DIR/gpu_check
JSON=$OUT_DIR/bench.json
mkdir -p "$LOG_DIR"
rm -f "$LOG_DIR"/*.log "$LOG_DIR/steps.tsv" "$LOG_DIR/summary.txt" "$JSON"
STEPS=$LOG_DIR/steps.tsv
CONSOLE=$LOG_DIR/console.log

if [ "$MODE" = gpu ]; then
  BUDGET=${GPU_CHECK_BUDGET:-450}
  unset TRITON_INTERPRET  # real kernels
  BUILD_ENV=()            # CUDA kernels when torch is a CUDA build and nvcc is found
  PYTEST_RUN=(-q -rfE)
  BENCH_ARGS=(--device cuda --batch 144 --dtypes fp32,bf16)
  #      cap reserve: a step runs at most `cap` s and leaves `reserve` s to the steps after it
  CAPS=(machine 30 400 build 150 280 import 30 260 tests 100 260 all-configs 75 220 bench 600 15)
else
  BUDGET=${GPU_CHECK_BUDGET:-600}
  export TRITON_INTERPRET=1  # Triton kernels through the interpreter
  BUILD_ENV=(POSTER_FAST_CUDA=0)
  PYTEST_RUN=(-q --collect-only)  # which GPU tests would run (they skip or crawl on the CPU)
  BENCH_ARGS=(--device cpu --batch 1 --model-batch 1 --levels 3 --dtypes fp32 --warmup 0 --iters 1
              --backends triton,cpu,reference,sdpa_mask)
  CAPS=(machine 60 500 build 240 330 import 60 300 tests 120 250 all-configs 60 240 bench 400 15)
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

# run_step NAME LIMIT CMD...: CMD with stdout+stderr in $LOG_DIR/NN-NAME.log, SIGINT after LIMIT
# seconds (Python steps then stop cleanly and write what they have), SIGKILL 15 s later.
# Appends "name status rc seconds limit log" to steps.tsv; status ok, failed or cut.
run_step() {
  local name=$1 limit=$2; shift 2
  N=$((N + 1))
  local log
  log=$(printf '%s/%02d-%s.log' "$LOG_DIR" "$N" "$name")
  if [ "$limit" -lt 5 ]; then
    echo "not run: $((DEADLINE - SECONDS)) s left of the ${BUDGET} s budget, too little for this step" > "$log"
    printf '%s\tcut\t-\t0\t%s\t%s\n' "$name" "$limit" "$log" >> "$STEPS"
    say "== [${SECONDS}s] $name: cut (no time left)"
    return
  fi
  say "== [${SECONDS}s] $name (limit ${limit}s)"
  local t0=$SECONDS rc status
  printf '$ %s\n' "$*" > "$log"
  timeout -s INT -k 15 "$limit" "$@" >> "$log" 2>&1 < /dev/null
  rc=$?
  case $rc in
    0) status=ok ;;
    124 | 137) status=cut ;;
    *) status=failed ;;
  esac
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$rc" "$((SECONDS - t0))" "$limit" "$log" >> "$STEPS"
  say "   $status (exit $rc, $((SECONDS - t0)) s); log: $log"
  if [ "$status" != ok ]; then
    tail -n 6 "$log" | sed 's/^/   | /' | tee -a "$CONSOLE"
  fi
}

say "== gpu_check ($MODE), budget ${BUDGET}s, $(date -u +%FT%TZ), output in $OUT_DIR"

run_step machine "$(limit_for machine)" bash -c '
  if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  else
    echo "nvidia-smi: not found"
  fi
  if command -v nvcc > /dev/null; then nvcc --version | tail -n 1; else echo "nvcc: not found"; fi
  "$0" -c "import sys, torch
try:
    import triton; tv = triton.__version__
except Exception as exc:
    tv = f\"unavailable ({exc})\"
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else \"none\"
print(\"machine:\", \"python\", sys.version.split()[0], \"| torch\", torch.__version__, \"| cuda\",
      torch.version.cuda, \"| triton\", tv, \"| gpu\", gpu)"' "$PY"

if [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then export CUDA_HOME=/usr/local/cuda; fi
run_step build "$(limit_for build)" env ${BUILD_ENV[@]+"${BUILD_ENV[@]}"} "$PY" setup.py build_ext --inplace
run_step import "$(limit_for import)" "$PY" -c \
  "import torch, poster_fast._C as C; print('poster_fast._C: with_cuda =', C.with_cuda)"

# pytest with SIGINT restored (a background job inherits it ignored), so a cut run still prints
# its tally. Every cuda-marked test but the every-config file (one autotune config per kernel),
# then that file alone when it exists (with the default configs: it runs every one itself).
PYTEST=("$PY" -c 'import signal, sys, pytest
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.exit(pytest.main(sys.argv[1:]))')
ALL_CONFIGS=tests/test_triton_kernels.py
run_step tests "$(limit_for tests)" env POSTER_FAST_TRITON_CONFIGS=first "${PYTEST[@]}" tests -m cuda \
  --ignore="$ALL_CONFIGS" "${PYTEST_RUN[@]}" -p no:cacheprovider
if [ -f "$ALL_CONFIGS" ]; then
  run_step all-configs "$(limit_for all-configs)" env -u POSTER_FAST_TRITON_CONFIGS "${PYTEST[@]}" \
    "$ALL_CONFIGS" -m cuda "${PYTEST_RUN[@]}" -p no:cacheprovider
else
  printf 'all-configs\tabsent\t-\t0\t-\t-\n' >> "$STEPS"
  say "== [${SECONDS}s] all-configs: absent ($ALL_CONFIGS is not in this tree)"
fi

# The bench stops starting rows 30 s before its hard limit, so it prints its tables itself.
limit=$(limit_for bench)
soft=$((limit - 30 > limit / 2 ? limit - 30 : limit / 2))
run_step bench "$limit" env -u POSTER_FAST_TRITON_CONFIGS "$PY" -m poster_fast.commands.bench \
  "${BENCH_ARGS[@]}" --sections ops,infer,train,latency --time-limit "$((soft > 1 ? soft : 1))" --json "$JSON"

say "== [${SECONDS}s] summary"
timeout 60 "$PY" benchmarks/gpu_check_summary.py --mode "$MODE" --budget "$BUDGET" --elapsed "$SECONDS" \
  "$STEPS" "$JSON" 2>&1 | tee "$LOG_DIR/summary.txt" | tee -a "$CONSOLE"
rc=${PIPESTATUS[0]}  # 0: all passed, 3: something failed or was cut, else the script failed
if [ "$rc" -ne 0 ] && [ "$rc" -ne 3 ]; then  # print the step table as recorded
  say "(the summary script failed, exit $rc; the steps as recorded:)"
  column -t -s $'\t' "$STEPS" 2> /dev/null | tee -a "$CONSOLE" || tee -a "$CONSOLE" < "$STEPS"
  rc=3
fi
exit "$rc"
