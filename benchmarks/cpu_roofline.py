"""The model's fraction of this CPU's convolution roofline, before and after the oneDNN layers of
CPU inference (issue 23), in one process: the roofline's convolutions and matmuls, predict's model
with `optimize(..., onednn=False)` (before) and with them (after) at --batch and at batch 1, all
interleaved, one call each per round, medians; then a per-op-class profile of both, interleaved.
Per dtype the CPU computes natively (fp32; bf16 where native).

    python benchmarks/cpu_roofline.py                          # torch's threads, wall clock
    python benchmarks/cpu_roofline.py --threads 1 --clock cpu  # steadier on a shared machine
    ONEDNN_MAX_CPU_ISA=AVX512_CORE python benchmarks/cpu_roofline.py --dtypes fp32,bf16
        # oneDNN as on an AVX-512 CPU without AVX512-BF16 (AVX2: as on an AVX2 CPU, no bf16 path)

Prints the tables (markdown) and the load average before and after; `--json PATH` keeps it all.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path

import torch

from poster_fast import POSTERV2, optimize
from poster_fast.benchmarking import profile, roofline
from poster_fast.device import hardware
from poster_fast.onednn import linear_path
from poster_fast.benchmarking.op import DTYPES

VARIANTS = {"before": False, "after": True}  # optimize(..., onednn=)


def measure(dtype_name: str, batch: int, rounds: int, clock: str, flops: int) -> dict:
    cpu, dtype = torch.device("cpu"), DTYPES[dtype_name]
    model = POSTERV2(num_classes=7).eval()
    images = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    models = {name: optimize(model, "inference", dtype=dtype, onednn=flag) for name, flag in VARIANTS.items()}
    kernels = {**roofline.conv_fns(dtype, cpu), **roofline.matmul_fns(dtype, cpu)}
    fns = {name: fn for name, (fn, _) in kernels.items()}
    for name, fast in models.items():
        fns[name] = lambda fast=fast: fast(images)
        fns[f"{name}_b1"] = lambda fast=fast: fast(images[:1])
    ms = roofline.interleaved_ms(fns, cpu, warmup=1, rounds=rounds, clock=clock)
    conv_paths = {}
    for path in ("torch", "onednn"):
        names = [n for n in kernels if n.startswith("conv") and n.endswith(path)]
        if names:
            conv_paths[path] = sum(kernels[n][1] for n in names) / sum(ms[n] for n in names) / 1e6
    conv = max(conv_paths.values())
    out = {"dtype": dtype_name, "batch": batch, "conv_gflop_s": conv_paths, "linear_path": linear_path(dtype),
           "layers": {name: fast.layers for name, fast in models.items()},
           "matmul_gflop_s": {n: kernels[n][1] / ms[n] / 1e6 for n in kernels if n.startswith("matmul")}}
    for name in VARIANTS:
        rate = flops * batch / ms[name] / 1e6
        out[name] = {"ms_per_image": ms[name] / batch, "b1_ms": ms[f"{name}_b1"], "gflop_s": rate,
                     "fraction": rate / conv}
    now = roofline.CLOCKS[clock]
    profiles: dict[str, list[profile.Profile]] = {name: [] for name in VARIANTS}
    for _ in range(rounds):
        for name, fast in models.items():
            profiles[name].append(profile.profile_forward(lambda: fast(images), now))
    out["profile"] = {}
    for name, runs in profiles.items():
        total = statistics.median(p.total_ms for p in runs)
        out["profile"][name] = {c: {"ms": statistics.median(p.ms.get(c, 0.0) for p in runs),
                                    "gflop": runs[0].flops.get(c, 0) / 1e9} for c in profile.OP_CLASSES
                                if runs[0].calls.get(c)}
        for row in out["profile"][name].values():
            row["share"] = row["ms"] / total
            row["gflop_s"] = row["gflop"] / row["ms"] * 1e3 if row["gflop"] and row["ms"] else None
    return out


def print_tables(r: dict) -> None:
    conv = max(r["conv_gflop_s"].values())
    print(f"\n### {r['dtype']}, batch {r['batch']}: conv roofline {conv:.0f} GFLOP/s "
          f"({', '.join(f'{k} {v:.0f}' for k, v in r['conv_gflop_s'].items())}); matmul "
          f"{', '.join(f'{k} {v:.0f}' for k, v in r['matmul_gflop_s'].items())} GFLOP/s; linear path: {r['linear_path']}\n")
    print("| model | layers | ms/img | GFLOP/s | fraction of conv roofline | batch-1 ms |\n"
          "| --- | --- | ---: | ---: | ---: | ---: |")
    for name in VARIANTS:
        v = r[name]
        print(f"| {name} | {r['layers'][name]} | {v['ms_per_image']:.1f} | {v['gflop_s']:.0f} | {v['fraction']:.2f} "
              f"| {v['b1_ms']:.1f} |")
    print(f"| after / before | | {r['before']['ms_per_image'] / r['after']['ms_per_image']:.2f}x faster | | | "
          f"{r['before']['b1_ms'] / r['after']['b1_ms']:.2f}x |\n")
    print("| op class | before ms | share | GFLOP/s | after ms | share | GFLOP/s |\n| --- |" + " ---: |" * 6)
    for c in profile.OP_CLASSES:
        cells = []
        for name in VARIANTS:
            row = r["profile"][name].get(c)
            cells += ["-"] * 3 if row is None else [f"{row['ms']:.1f}", f"{100 * row['share']:.1f}%",
                                                   "-" if row["gflop_s"] is None else f"{row['gflop_s']:.0f}"]
        if any(x != "-" for x in cells):
            print(f"| {c} | " + " | ".join(cells) + " |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timed rounds (medians)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--clock", choices=tuple(roofline.CLOCKS), default="wall")
    parser.add_argument("--dtypes", type=lambda text: text.split(","),
                        help="of fp32,bf16 (default: fp32, and bf16 where the CPU computes it natively)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()
    flops = roofline.model_flops()
    print(f"{hardware('cpu').name}, {torch.get_num_threads()} threads, torch {torch.__version__}, python "
          f"{platform.python_version()}; {args.clock} clock; {flops / 1e9:.2f} GFLOP per image (FlopCounterMode); "
          f"ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', '(unset)')}; load average before {load[0]:.1f}")
    results = []
    for dtype_name in args.dtypes or roofline.roofline_dtypes(torch.device("cpu"), None):
        results.append(measure(dtype_name, args.batch, args.rounds, args.clock, flops))
        print_tables(results[-1])
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps({"command": " ".join(sys.argv), "threads": torch.get_num_threads(),
                                         "load_before": load[0], "load_after": os.getloadavg()[0],
                                         "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
