"""The library behind `poster-fast bench` and the pytest-benchmark suite in benchmarks/.

- `config`: the levels (model.LEVELS by number), names and the run configuration (no torch);
- `cards`: peak rates of known GPUs, for "% of peak" (standard library only);
- `timing`: median timing with CUDA events, progress lines, the soft time limit;
- `op`: W-MCSA op cases, the fused backends and the baselines, their floors (FLOPs, bytes) and rows;
- `model`: whole-model inference, training-step and latency rows;
- `report`: the printed tables (standard library only);
- `runner`: one run of the selected sections, writing its JSON after every row (files.write_json).

This package imports nothing itself: import the module you need.
"""
