#!/usr/bin/env bash
# One command on a GPU machine (no internet; torch 2.11+cu130, triton 3.6, Python 3.12, no fvcore):
# build + install, GPU tests, `poster-fast bench` at batch 144 (fp32 run, then bf16 run) as JSON
# under $OUT (else ./bench-out), a compact summary table last. Deadline: 7.75 minutes in all;
# each bench run writes its JSON after every section, so a cut run still leaves its tables.
# Usage: bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
OUT_DIR=${OUT:-$PWD/bench-out}
mkdir -p "$OUT_DIR"
unset TRITON_INTERPRET  # real kernels on the GPU
DEADLINE=$((SECONDS + 465))
left() { echo $((DEADLINE - SECONDS)); }
upto() { local t=$(( $(left) - $1 )); echo $(( t > 10 ? t : 10 )); }  # seconds left minus a reserve
stamp() { echo "== [${SECONDS}s, $(left)s left] $*"; }

stamp "machine"
nvidia-smi --query-gpu=name --format=csv
$PY -c "import sys, torch, triton; print('python', sys.version.split()[0], '| torch', torch.__version__,
'| cuda', torch.version.cuda, '| triton', triton.__version__, '| gpu', torch.cuda.get_device_name())"

if [ -z "${CUDA_HOME:-}" ] && [ -d /usr/local/cuda ]; then export CUDA_HOME=/usr/local/cuda; fi
stamp "build + install (CUDA_HOME=${CUDA_HOME:-unset})"
timeout 270 $PY -m pip install -q --no-build-isolation --no-deps -e . 2>&1 | tail -n 5
$PY -c "import poster_fast._C as C; print('poster_fast._C with_cuda =', C.with_cuda)"

stamp "GPU tests (pytest -m cuda; whole-model and extension checks first, the Triton file last)"
t=$(( $(left) - 200 )); t=$(( t > 180 ? 180 : t ))
if [ "$t" -gt 20 ]; then
  timeout "$t" $PY -m pytest tests/test_model.py tests/test_extension.py tests/test_optimize.py \
    tests/test_triton_wmca.py -q -m cuda -p no:cacheprovider 2>&1 | tail -n 15 \
    || echo "!! GPU tests failed or were cut at ${t}s (rc=${PIPESTATUS[0]})"
else
  echo "!! GPU tests skipped: the build left too little time"
fi

stamp "bench fp32, batch 144 (all backends)"
timeout "$(upto 80)" $PY -m poster_fast bench --batch 144 --dtypes fp32 \
  --json "$OUT_DIR/bench-b144-fp32.json" || echo "!! bench fp32 rc=$?"
stamp "bench bf16, batch 144 (FlexAttention only in the fp32 run: its compiles are slow)"
timeout "$(upto 10)" $PY -m poster_fast bench --batch 144 --dtypes bf16 --sections ops,infer,train,latency \
  --backends reference,sdpa_mask,triton,cuda --json "$OUT_DIR/bench-b144-bf16.json" || echo "!! bench bf16 rc=$?"

stamp "summary (JSON in $OUT_DIR)"
$PY - "$OUT_DIR"/bench-b144-*.json <<'PYEOF'
import json, sys
for path in sys.argv[1:]:
    r = json.load(open(path))
    m = r["meta"]
    print(f"\n{path}: {m['device_name']}, torch {m['torch']}, batch {m['batch']}, complete={r['complete']}")
    for o in r["ops"]:
        f = lambda k, fmt: format(o[k], fmt) if k in o else "-"
        if o["status"] == "ok":
            print(f"  op L{o['level']} {o['dtype']:4} {o['backend']:9} fwd {f('fwd_ms', '8.3f')} ms x{f('fwd_speedup', '.2f')}"
                  f"  fwd+bwd {f('fwdbwd_ms', '8.3f')} ms x{f('fwdbwd_speedup', '.2f')}  err {f('max_rel_err', '.1e')}"
                  + (f"  ({o['reason'][:60]})" if o["reason"] else ""))
        else:
            print(f"  op L{o['level']} {o['dtype']:4} {o['backend']:9} {o['status']}: {o['reason'][:90]}")
    for row in (r["model"] or {}).get("rows", []):
        f = lambda k, fmt: format(row[k], fmt) if k in row else "-"
        print(f"  model {row['dtype']:4} {row['backend']:9} infer {f('infer_img_s', '.0f')} img/s x{f('infer_speedup', '.2f')}"
              f"  train {f('train_ms', '.1f')} ms x{f('train_speedup', '.2f')}  b1 {f('latency_b1_ms', '.2f')} ms")
PYEOF
stamp "done"
