#!/bin/bash
# Peak memory (max RSS) of `poster-fast predict --annotate` on 4 photos of 8000x8000, at
# --batch-size 32 and 1, for this tree and for the commit REV (default 4b5f03c, before predict
# stopped keeping the decoded photos of a batch). Random weights, --no-detect, CPU.
#   bash benchmarks/predict_memory.sh [REV]
set -euo pipefail
REV=${1:-4b5f03c}
PY=${PY:-$(pwd)/.venv/bin/python}
TREE=$(pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir "$WORK/rev"
git archive "$REV" poster_fast | tar -x -C "$WORK/rev"
cp poster_fast/_C*.so "$WORK/rev/poster_fast/"
cd "$WORK"
"$PY" -c "
import numpy as np
from PIL import Image
rng = np.random.default_rng(0)
for i in range(4):
    a = np.zeros((8000, 8000, 3), np.uint8)
    a[::7] = rng.integers(0, 255, (1, 8000, 3), dtype=np.uint8)
    Image.fromarray(a).save(f'p{i}.jpg', quality=80)"
for src in "$WORK/rev" "$TREE"; do
  for batch in 32 1; do
    rm -rf ann
    /usr/bin/time -f "%M" -o rss.txt env PYTHONPATH="$src" OMP_NUM_THREADS=1 "$PY" -m poster_fast predict \
      p0.jpg p1.jpg p2.jpg p3.jpg --allow-random --no-detect --quiet --device cpu --batch-size "$batch" \
      --annotate ann > /dev/null 2> err.txt
    name=$([ "$src" = "$TREE" ] && echo "this tree" || echo "$REV")
    echo "$name --batch-size $batch: max RSS $(( $(cat rss.txt) / 1024 )) MiB ($(ls ann | wc -l) annotated)"
  done
done
