"""`poster-fast budget`: parameters and MACs of POSTER V2 in the fvcore and thop conventions."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Parameters and multiply-accumulates of POSTER V2 for one 224x224 image, counted the "
                     "way thop (the paper's 43.7M / 8.4G) and fvcore count them.")
    p.add_argument("--num-classes", type=int, default=7, choices=(7, 8),
                   help="7 (RAF-DB, AffectNet-7, CAER-S) or 8 (AffectNet-8) outputs")


def run(args: argparse.Namespace) -> int:
    from ..budget import budget, format_budget
    from ..model import POSTERV2

    print(format_budget(budget(POSTERV2(num_classes=args.num_classes))))
    return 0
