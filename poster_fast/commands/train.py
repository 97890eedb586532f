"""`poster-fast train`: train POSTER V2 with the paper's recipe, in one process or under torchrun."""
from __future__ import annotations

import argparse
from dataclasses import fields

from ..data.labels import DATASETS
from ..extras import require
from ..training.options import OPTIMIZERS, SAMPLERS, TrainOptions
from .options import add_data_options, add_model_options, dataset_tables


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.description = (
        "Train with the paper's recipe: SAM(rho 0.05) around Adam, ExponentialLR(0.98) per epoch, "
        "200 epochs, batch 144, flip + RandomErasing.\nLayout: DATA/train/<class>/*.jpg, "
        "DATA/valid/<class>/*.jpg, class folders named by the official labels:\n" + dataset_tables() +
        "\nSeveral GPUs: torchrun --nproc_per_node N -m poster_fast train ...")
    p.add_argument("--dataset", required=True, choices=list(DATASETS), help="picks the recipe and class names")
    add_data_options(p)
    add_model_options(p)
    p.add_argument("--out", help="output folder (default runs/<dataset>)")
    p.add_argument("--epochs", type=int, default=TrainOptions.epochs)
    p.add_argument("--batch-size", type=int, default=TrainOptions.batch_size, help="global batch, split across processes")
    p.add_argument("--lr", type=float, help="default per dataset: " +
                   ", ".join(f"{k} {v.lr:g}" for k, v in DATASETS.items()))
    p.add_argument("--weight-decay", type=float, default=TrainOptions.weight_decay)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=TrainOptions.optimizer)
    p.add_argument("--rho", type=float, default=TrainOptions.rho, help="SAM neighbourhood size")
    p.add_argument("--gamma", type=float, default=TrainOptions.gamma, help="ExponentialLR factor per epoch")
    p.add_argument("--plain", action="store_true",
                   help="train the unmodified model (default: poster_fast.optimize's checkpoint-neutral "
                        "speed-ups: SDPA in the ViT, channels-last, strided-slice shortcuts)")
    p.add_argument("--sampler", choices=SAMPLERS, default=TrainOptions.sampler,
                   help="auto: class-balanced for affectnet7/8 (as the authors), shuffled otherwise")
    p.add_argument("--val-split", default=TrainOptions.val_split, help="folder under DATA evaluated every epoch")
    p.add_argument("--test-split", help="held-out folder for the final evaluation "
                                        "(default: test if DATA/test exists, else the val split)")
    p.add_argument("--ir50", help="the authors' pretrained ir50.pth")
    p.add_argument("--landmark", help="the authors' mobilefacenet_model_best.pth.tar")
    p.add_argument("--resume", nargs="?", const="auto", metavar="LAST_PT",
                   help="continue from OUT/last.pt (or the file given)")
    p.add_argument("--max-steps", type=int, help="at most this many steps per epoch (smoke tests)")
    p.add_argument("--seed", type=int, default=TrainOptions.seed)


def options(args: argparse.Namespace) -> TrainOptions:
    return TrainOptions(**{f.name: getattr(args, f.name) for f in fields(TrainOptions)})


def run(args: argparse.Namespace) -> int:
    require("train")
    from ..training.loop import train

    train(options(args))
    return 0
