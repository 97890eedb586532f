"""The library behind `poster-fast bench` and the pytest-benchmark suite in benchmarks/.

- `config`: the problem sizes, names and the run configuration (standard library only);
- `cards`: peak rates of known GPUs, for "% of peak" (standard library only);
- `timing`: median timing with CUDA events, progress lines, the soft time limit;
- `op`: W-MCSA op cases, the fused backends and the baselines, their floors (FLOPs, bytes) and rows;
- `model`: whole-model inference, training-step and latency rows;
- `report`: the printed tables and the JSON file (standard library only);
- `runner`: one run of the selected sections, writing its JSON after every row.

This package imports nothing itself: import the module you need.
"""
