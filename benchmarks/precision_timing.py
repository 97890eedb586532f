"""CPU or GPU timing of the model predict runs at each precision against the plain fp32 model.

python benchmarks/precision_timing.py [--batch 8] [--rounds 5] [--precisions auto,fp32,bf16,fp16]
                                      [--compile] [--threads N] [--device cpu]

Baseline: the plain POSTERV2 in float32 with reference attention, eager, not optimized (the
authors' computation). Candidates: `prepare_for_inference(model, device, precision)`, the model
`poster-fast predict --precision P` runs, from the same random weights. Each round times every
variant once at --batch and once at batch 1, in turn (baseline first), so a change in the load
of a shared machine hits them alike; prints per variant the median and range over the rounds,
the median and range of the per-round ratio baseline time / variant time, and the achieved
GFLOP/s (torch's FLOP counter: convolutions, matrix products and attention) as a share of what
one large float32 matrix product reaches in the same rounds.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch

from torch.utils.flop_counter import FlopCounterMode

from poster_fast import POSTERV2
from poster_fast.device import choose_precision, hardware
from poster_fast.inference.classifier import prepare_for_inference


def seconds(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def spread(values: list[float], fmt: str) -> str:
    return f"{format(statistics.median(values), fmt)} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--precisions", default="auto,fp32,bf16,fp16")
    parser.add_argument("--compile", action="store_true", help="also time predict's --compile at each precision")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    plain = POSTERV2(7, attn_backend="reference").to(device).eval()
    variants: dict[str, torch.nn.Module] = {"plain fp32": plain}
    auto = choose_precision("auto", hardware(device))
    build_s = {}
    for precision in args.precisions.split(","):
        for compiled in (False, True) if args.compile else (False,):
            start = time.perf_counter()
            fast, chosen = prepare_for_inference(plain, device, precision, compiled, attn_backend="auto")
            name = f"predict {precision}" + (f" (= {chosen.name})" if precision == "auto" else "") + \
                (" compiled" if compiled else "")
            variants[name] = fast
            build_s[name] = time.perf_counter() - start
    gen = torch.Generator(device=device).manual_seed(1)
    batch = torch.randn(args.batch, 3, 224, 224, generator=gen, device=device)
    single = torch.randn(1, 3, 224, 224, generator=gen, device=device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        plain(single)
    flops = counter.get_total_flops()  # per image
    a, b = (torch.randn(1184, 768, device=device), torch.randn(768, 3072, device=device))  # the ViT's fc1
    gemm_gflop = 2 * 1184 * 768 * 3072 / 1e9
    gemm = []
    first = {}
    with torch.inference_mode():
        for name, model in variants.items():  # warm-up (and, compiled, the compiles)
            first[name] = seconds(lambda: (model(batch), model(single)), device)
        times = {name: ([], []) for name in variants}
        for _ in range(args.rounds):
            gemm.append(gemm_gflop / seconds(lambda: a @ b, device))
            for name, model in variants.items():
                times[name][0].append(seconds(lambda: model(batch), device))
                times[name][1].append(seconds(lambda: model(single), device))
    print(f"{hardware(device).name}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"auto here: {auto}; {args.rounds} rounds, batch {args.batch} and 1; median (min-max); "
          f"{flops / 1e9:.2f} GFLOP per image; fp32 matrix product {spread(gemm, '.0f')} GFLOP/s")
    print(f"| variant | batch {args.batch} s | x plain fp32 | GFLOP/s | % of fp32 GEMM | batch 1 ms | "
          "x plain fp32 | first calls s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    base_b, base_1 = times["plain fp32"]
    for name, (tb, t1) in times.items():
        ratio_b = [b / t for b, t in zip(base_b, tb)]
        ratio_1 = [b / t for b, t in zip(base_1, t1)]
        rate = flops * args.batch / 1e9 / statistics.median(tb)
        print(f"| {name} | {spread(tb, '.3f')} | {spread(ratio_b, '.2f')} | {rate:.1f} | "
              f"{100 * rate / statistics.median(gemm):.0f} | {spread([t * 1e3 for t in t1], '.0f')} | "
              f"{spread(ratio_1, '.2f')} | "
              f"{first[name] + build_s.get(name, 0.0):.1f} |")


if __name__ == "__main__":
    main()
