"""`poster-fast train`: train POSTER V2 with the paper's recipe, in one process or under torchrun."""
from __future__ import annotations

import argparse
import os
from dataclasses import fields

from ..data.labels import DATASETS
from ..extras import require
from ..model.memory import TRAIN_BYTES_PER_IMAGE, input_bytes
from ..training.options import LIMITS, OPTIMIZERS, SAMPLERS, TrainOptions
from ..training.rundir import check_run_folder
from .options import (add_data_options, add_model_options, check_batch_memory, check_input_options,
                      check_model_options, dataset_tables, number)

RESUME_NOTE = ("--resume (or --resume auto) continues OUT/last.pt, or starts a new run when there is none (one "
               "command for the first start and every restart); --resume FILE continues that file: "
               "options not given again keep the run's values; given again with another value, --dataset, "
               "--optimizer and the class names are refused, --epochs must exceed the epochs done (with auto, "
               "may equal them), --batch-size may change at an epoch's end only, and the "
               "others (--lr, --gamma, --weight-decay, --rho, --batch-size, --image-size, --sampler, --seed, "
               "--val-split, --test-split, --sync-bn) apply from where the run continues and are logged (a new "
               "--lr or --gamma continues the schedule lr * gamma^epoch at the epoch reached); --ir50/--landmark "
               "are ignored. On SIGTERM, last.pt is saved at the next step boundary and the exit status is 75.\n")


def recipe(name: str) -> str:
    """The help suffix of an option whose default is TrainOptions' (or the run's, on --resume)."""
    return f" (default: {getattr(TrainOptions, name)}; --resume: the run's)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Train with the paper's recipe: SAM(rho 0.05) around Adam, ExponentialLR(0.98) per epoch, "
        "200 epochs, batch 144, flip + RandomErasing.\nLayout: DATA/train/<class>/*.jpg, "
        "DATA/valid/<class>/*.jpg, class folders named by the official labels:\n" + dataset_tables() +
        "\nSeveral GPUs: torchrun --nproc-per-node N -m poster_fast train ... (several nodes and restarts: "
        "docs/training.md)\n" + RESUME_NOTE)
    p.add_argument("--dataset", required=True, choices=list(DATASETS), help="picks the recipe and class names")
    add_data_options(p, resumable=True)
    add_model_options(p)
    p.add_argument("--out", help="output folder (default: runs/<dataset>)")
    p.add_argument("--epochs", type=number(LIMITS["epochs"]), help="total epochs" + recipe("epochs"))
    p.add_argument("--batch-size", type=number(LIMITS["batch_size"]),
                   help="global batch of each optimiser step, split across processes and --accum-steps" +
                        recipe("batch_size"))
    p.add_argument("--lr", type=number(LIMITS["lr"]), help="learning rate at epoch 1 (default per dataset: " +
                   ", ".join(f"{k} {v.lr:g}" for k, v in DATASETS.items()) + "; --resume: the run's)")
    p.add_argument("--weight-decay", type=number(LIMITS["weight_decay"]),
                   help="decoupled (adamw) or L2 (adam) weight decay" + recipe("weight_decay"))
    p.add_argument("--optimizer", choices=OPTIMIZERS, help="sam-*: SAM around the base optimiser" +
                   recipe("optimizer"))
    p.add_argument("--rho", type=number(LIMITS["rho"]), help="SAM neighbourhood size" + recipe("rho"))
    p.add_argument("--gamma", type=number(LIMITS["gamma"]), help="ExponentialLR factor per epoch" + recipe("gamma"))
    p.add_argument("--plain", action="store_true",
                   help="train the unmodified model (default: poster_fast.optimize's checkpoint-neutral "
                        "speed-ups: SDPA in the ViT, channels-last, strided-slice shortcuts)")
    p.add_argument("--sampler", choices=SAMPLERS,
                   help="auto: class-balanced for affectnet7/8 (as the authors), shuffled otherwise" +
                        recipe("sampler"))
    p.add_argument("--val-split", help="folder under DATA evaluated every epoch" + recipe("val_split"))
    p.add_argument("--test-split", help="held-out folder for the final evaluation "
                                        "(default: test if DATA/test exists, else the val split)")
    p.add_argument("--ir50", help="the authors' pretrained ir50.pth")
    p.add_argument("--landmark", help="the authors' mobilefacenet_model_best.pth.tar")
    p.add_argument("--resume", nargs="?", const="auto", metavar="auto|LAST_PT",
                   help="auto (also when no value is given): continue OUT/last.pt if it exists, else start a new "
                        "run; or continue the file given; see above for the options")
    p.add_argument("--save-every", type=number(LIMITS["save_every"]), metavar="STEPS",
                   help="also save last.pt every STEPS optimiser steps within an epoch (default: at each epoch's "
                        "end only; a restart redoes at most STEPS steps)")
    p.add_argument("--accum-steps", type=number(LIMITS["accum_steps"]), metavar="K",
                   help="gradient accumulation: each optimiser step runs K forward/backward passes of "
                        "batch-size / (processes x K) images per process (default: 1)")
    p.add_argument("--sync-bn", action="store_true", default=None,
                   help="under torchrun, BatchNorm statistics of the global batch (the trainable layers; "
                        "the frozen landmark net keeps its own)" + recipe("sync_bn"))
    p.add_argument("--max-steps", type=number(LIMITS["max_steps"]),
                   help="at most this many steps per epoch (smoke tests)")
    p.add_argument("--seed", type=number(LIMITS["seed"]), help="random seed" + recipe("seed"))
    p.add_argument("--force", action="store_true",
                   help="replace the run already in --out (without --resume, a folder holding one is refused); "
                        "never a file the run reads")


def options(args: argparse.Namespace) -> tuple[TrainOptions, set[str]]:
    """The TrainOptions of the command line, and the names of the options it gave (the others,
    None here, are TrainOptions' defaults, or on --resume the run's)."""
    given = {f.name: getattr(args, f.name) for f in fields(TrainOptions) if getattr(args, f.name) is not None}
    return TrainOptions(**given), set(given)


def run(args: argparse.Namespace) -> int:
    require("train")
    opts, given = options(args)
    opts = opts.check()
    check_input_options(args, files=("ir50", "landmark"), folders=("data",))
    if opts.resume and opts.resume != "auto":
        check_input_options(args, files=("resume",))
    check_run_folder(opts)
    check_model_options(args)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    check_batch_memory("--batch-size", -(-opts.batch_size // world), TRAIN_BYTES_PER_IMAGE + input_bytes(opts.image_size),
                       opts.device, "an image in training" + (f" (on each of {world} processes)" if world > 1 else ""))
    from ..training.loop import train

    train(opts, given)
    return 0
