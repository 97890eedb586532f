"""`poster-fast budget`: parameters and MACs of POSTER V2 in the fvcore and thop conventions."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--num-classes", type=int, default=7, choices=(7, 8))


def run(args: argparse.Namespace) -> int:
    from ..budget import budget, format_budget
    from ..model import POSTERV2

    print(format_budget(budget(POSTERV2(num_classes=args.num_classes))))
    return 0
