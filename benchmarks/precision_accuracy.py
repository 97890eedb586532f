"""The accuracy cost of each inference precision (poster_fast/benchmarking/precision.py).

python benchmarks/precision_accuracy.py [--device cpu] [--random-images 4] [--autocast]

Logits of the model `poster-fast predict --precision P` runs against the plain float32 model
with reference attention, on scikit-image's sample photos and LFW faces through predict's
preprocessing plus seeded Gaussian images, with random weights whose BatchNorm statistics are
measured on those inputs. `--autocast` adds the plain model under bf16 and fp16 autocast (the
authors' model as it would run under autocast; slow on CPUs without native bf16).
Prints a markdown table.
"""
from __future__ import annotations

import argparse
import math

import torch

from poster_fast.benchmarking.precision import (UNIT_ROUNDOFF, calibrated_model, compare, precision_errors,
                                               sample_inputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--random-images", type=int, default=4)
    parser.add_argument("--autocast", action="store_true")
    args = parser.parse_args()
    inputs, names = sample_inputs(args.random_images)
    model = calibrated_model(inputs).to(args.device)
    rows = [(f"predict --precision {e.precision}", e) for e in precision_errors(model, inputs, device=args.device)]
    if args.autocast:
        with torch.no_grad():
            x = inputs.to(args.device)
            fp32 = model(x).float().cpu()
            for name, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
                with torch.autocast(torch.device(args.device).type, dtype=dtype):
                    rows.append((f"plain model, {name} autocast", compare(model(x).float(), fp32, name)))
    print(f"{len(names)} inputs ({', '.join(names)}); device {args.device}, torch {torch.__version__}")
    print("| model | max error / max abs fp32 logit | in unit roundoffs | rms error / max abs fp32 logit | "
          "argmax = fp32's | smallest fp32 top-2 gap / max abs logit |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, e in rows:
        print(f"| {name} | {e.max_rel_err:.2e} | {e.in_unit_roundoffs:.1f} (u = 2^{math.log2(UNIT_ROUNDOFF[e.precision]):.0f}) | "
              f"{e.rms_rel_err:.2e} | {e.argmax_agree}/{e.inputs} | {e.min_margin:.3f} |")


if __name__ == "__main__":
    main()
