"""The training run: the authors' recipe made explicit and fixed (weight decay applied, the best
checkpoint holds the model), in one process or under torchrun (DistributedDataParallel).

`train(options)` checks the data, joins the process group and runs `Run`'s steps: build the
model and optimiser, resume, the epoch loop (train, evaluate, save), the final evaluation of
the best model and the outputs (metrics.csv, curves, confusion matrix, summary.json).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..checkpoint import load_backbones, load_checkpoint, load_training_state, save_model, save_training_state
from ..data.datasets import ImageFolder, check_same_classes, split_dir
from ..data.labels import DatasetRecipe, get_recipe, resolve_classes
from ..data.sampler import BalancedSampler
from ..data.transforms import ToNormalizedTensor, TrainTransform
from ..errors import DataError
from .distributed import Dist, broadcast_buffers, in_sync, setup_dist, wrap_ddp
from .metrics import EvalResult, read_metrics, write_json, write_metrics
from .options import TrainOptions
from .plots import plot_confusion, plot_curves
from .steps import Optimisation, amp_enabled, eval_loader, evaluate_model, train_epoch, train_loader


def train(opts: TrainOptions) -> dict[str, Any]:
    """The whole run; returns the summary that rank 0 writes to OUT/summary.json."""
    data = TrainData.load(opts)  # data problems are found before any process group is joined
    if opts.resume_path and not opts.resume_path.is_file():
        raise DataError(f"--resume: {opts.resume_path} does not exist")
    d = setup_dist(opts.device)
    try:
        return Run(opts, data, d).execute()
    finally:
        d.close()


@dataclass
class TrainData:
    recipe: DatasetRecipe
    train_set: ImageFolder
    val_set: ImageFolder
    classes: list[str]  # the name of each class folder, in sorted folder order

    @classmethod
    def load(cls, opts: TrainOptions) -> "TrainData":
        """DATA/train and the val split, with the same class folders, named by the dataset."""
        recipe = get_recipe(opts.dataset)
        train_set = ImageFolder(split_dir(opts.data, "train"),
                                TrainTransform(opts.image_size, recipe.erase_p, recipe.erase_scale))
        val_set = ImageFolder(split_dir(opts.data, opts.val_split), ToNormalizedTensor(opts.image_size))
        check_same_classes(train_set, val_set)
        return cls(recipe, train_set, val_set, resolve_classes(opts.dataset, train_set.folders, opts.classes))


@dataclass
class Progress:
    """Where the run stands: the last finished epoch and the best validation accuracy so far."""

    epoch: int = 0
    best_acc: float = -1.0
    best_epoch: int = 0
    best_val: EvalResult | None = None  # the best epoch's evaluation, if in this session
    rows: list[dict[str, Any]] = field(default_factory=list)  # metrics.csv


class Run:
    """One training run in this process (rank `d.rank` of `d.world`)."""

    def __init__(self, opts: TrainOptions, data: TrainData, d: Dist) -> None:
        if opts.batch_size % d.world:
            raise DataError(f"--batch-size {opts.batch_size} (global) is not divisible by {d.world} processes")
        self.opts, self.d, self.recipe, self.classes = opts, d, data.recipe, data.classes
        self.train_set, self.val_set = data.train_set, data.val_set
        self.out, self.resume_path = opts.out_dir, opts.resume_path
        self.per_rank = opts.batch_size // d.world
        self.log: Callable[..., None] = print if d.main else (lambda *a, **k: None)
        self.amp = amp_enabled(opts.amp, d.device)

    def execute(self) -> dict[str, Any]:
        opts, d = self.opts, self.d
        torch.manual_seed(opts.seed)
        if d.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        net = self.build_model()
        params = [p for p in net.parameters() if p.requires_grad]  # the landmark net is frozen
        opt = Optimisation.create(params, opts.optimizer, self.lr, opts.weight_decay, opts.rho, opts.gamma)
        progress = self.resume(net, opt) if self.resume_path else Progress()
        if d.main:
            progress.rows = read_metrics(self.out / "metrics.csv", progress.epoch)
        self.epochs(net, opt, progress)
        return self.finish(net, progress)

    @property
    def lr(self) -> float:
        return self.opts.lr if self.opts.lr is not None else self.recipe.lr

    @property
    def balanced(self) -> bool:
        return self.recipe.balanced if self.opts.sampler == "auto" else self.opts.sampler == "balanced"

    def build_model(self) -> nn.Module:
        """POSTERV2 with the pretrained backbones, on the device, with optimize's speed-ups."""
        from ..model import POSTERV2
        from ..rewrites import speed_up_in_place

        opts = self.opts
        net = POSTERV2(len(self.classes), attn_backend=opts.attn_backend)
        if opts.ir50 or opts.landmark:
            for name, rep in load_backbones(net, opts.ir50, opts.landmark, opts.trusted).items():
                self.log(f"pretrained {name}: {rep}")
        elif not self.resume_path:
            self.log("warning: no --ir50/--landmark: both backbones start from random weights "
                     "(the paper starts from the authors' pretrained files)", file=sys.stderr)
        net.to(self.d.device)
        return net if opts.plain else speed_up_in_place(net)

    def resume(self, net: nn.Module, opt: Optimisation) -> Progress:
        """Model, optimiser and schedule from last.pt, which must be a run on the same classes."""
        path = self.resume_path
        ck = load_training_state(path)
        if ck["dataset"] != self.opts.dataset or ck["classes"] != self.classes:
            raise DataError(f"--resume: {path} is a {ck['dataset']} run with classes "
                            f"{ck['classes']}, not {self.opts.dataset} with {self.classes}")
        net.load_state_dict(ck["state_dict"])
        opt.base.load_state_dict(ck["optimizer"])
        opt.scheduler.load_state_dict(ck["scheduler"])
        self.log(f"resumed {path} after epoch {ck['epoch']} "
                 f"(best val acc {ck['best_acc']:.4f} at epoch {ck['best_epoch']})")
        return Progress(ck["epoch"], ck["best_acc"], ck["best_epoch"])

    def epochs(self, net: nn.Module, opt: Optimisation, progress: Progress) -> None:
        """Train, evaluate and save every remaining epoch."""
        opts, d = self.opts, self.d
        model = wrap_ddp(net, d)
        sampler: Any = (BalancedSampler(self.train_set.targets, d.world, d.rank, opts.seed) if self.balanced
                        else torch.utils.data.DistributedSampler(self.train_set, d.world, d.rank, shuffle=True,
                                                                 seed=opts.seed))
        loader = train_loader(self.train_set, sampler, self.per_rank, opts.workers, d)
        val_loader = eval_loader(self.val_set, self.per_rank, opts.workers, d)
        steps = len(loader) if opts.max_steps is None else min(opts.max_steps, len(loader))
        self.log_setup()
        for epoch in range(progress.epoch + 1, opts.epochs + 1):
            t0 = time.time()
            sampler.set_epoch(epoch)
            torch.manual_seed(opts.seed + 1000 * epoch + d.rank)  # augmentation / drop path
            train_loss, train_acc = train_epoch(model, loader, steps, opt, d, self.amp,
                                                f"epoch {epoch}/{opts.epochs}")
            broadcast_buffers(net, d)
            lr = opt.lr
            opt.scheduler.step()
            val = evaluate_model(net, val_loader, len(self.classes), d, self.amp, progress=d.main)
            self.end_epoch(net, opt, progress, epoch, val)
            if d.main:
                progress.rows.append({
                    "epoch": epoch, "lr": lr, "train_loss": train_loss, "train_acc": train_acc,
                    "val_loss": val.loss, "val_acc": val.top1, "val_mean_acc": val.mean_acc,
                    "best_acc": progress.best_acc, "seconds": round(time.time() - t0, 2)})
                write_metrics(self.out / "metrics.csv", progress.rows)
                self.log(f"epoch {epoch}: train loss {train_loss:.4f} acc {train_acc:.4f} | "
                         f"{opts.val_split} loss {val.loss:.4f} acc {val.top1:.4f} mean {val.mean_acc:.4f} | "
                         f"best {progress.best_acc:.4f} (epoch {progress.best_epoch}) | "
                         f"{progress.rows[-1]['seconds']:.0f}s", flush=True)
            d.barrier()

    def log_setup(self) -> None:
        opts, d = self.opts, self.d
        if d.main:
            self.out.mkdir(parents=True, exist_ok=True)
        self.log(f"{opts.dataset}: {len(self.train_set)} train / {len(self.val_set)} {opts.val_split} images, "
                 f"classes {', '.join(f'{f}={c}' for f, c in zip(self.train_set.folders, self.classes))}")
        self.log(f"{opts.optimizer} lr {self.lr:g} wd {opts.weight_decay:g} gamma {opts.gamma} batch "
                 f"{opts.batch_size} ({d.world} x {self.per_rank}) {'balanced' if self.balanced else 'shuffled'} "
                 f"sampling, amp {'bf16' if self.amp else 'off'}, device {d.device}")

    def end_epoch(self, net: nn.Module, opt: Optimisation, progress: Progress, epoch: int,
                  val: EvalResult) -> None:
        """Record the epoch; rank 0 writes best.pt when it is the best so far, and last.pt."""
        progress.epoch = epoch
        meta = {"dataset": self.opts.dataset, "classes": self.classes, "epoch": epoch}
        if val.top1 > progress.best_acc:
            progress.best_acc, progress.best_epoch, progress.best_val = val.top1, epoch, val
            if self.d.main:
                save_model(self.out / "best.pt", net, best_acc=progress.best_acc, **meta)
        if self.d.main:
            save_training_state(self.out / "last.pt", net, opt.base, opt.scheduler,
                                best_acc=progress.best_acc, best_epoch=progress.best_epoch, **meta)

    def final_evaluation(self, net: nn.Module, progress: Progress) -> tuple[str, EvalResult]:
        """The best model on the held-out split (the val split picked it; a test split is unbiased)."""
        opts = self.opts
        split = opts.test_split or ("test" if (Path(opts.data) / "test").is_dir()
                                    and opts.val_split != "test" else opts.val_split)
        if split == opts.val_split and progress.best_val is not None:
            return split, progress.best_val
        test_set = ImageFolder(split_dir(opts.data, split), ToNormalizedTensor(opts.image_size))
        check_same_classes(self.train_set, test_set)
        load_checkpoint(net, self.out / "best.pt")
        loader = eval_loader(test_set, self.per_rank, opts.workers, self.d)
        return split, evaluate_model(net, loader, len(self.classes), self.d, self.amp, progress=self.d.main)

    def finish(self, net: nn.Module, progress: Progress) -> dict[str, Any]:
        """Final evaluation, then rank 0 writes the plots and summary.json."""
        d, classes = self.d, self.classes
        synced = in_sync(net, d)
        split, final = self.final_evaluation(net, progress)
        summary = {"dataset": self.opts.dataset, "classes": classes, "best_epoch": progress.best_epoch,
                   "best_val_acc": progress.best_acc, "eval_split": split, "eval": final.as_dict(classes),
                   "world_size": d.world, "ranks_in_sync": synced}
        if d.main:
            self.log(f"best model (epoch {progress.best_epoch}) on {split}:\n{final.report(classes)}")
            plot_confusion(final, classes, self.out / f"confusion_{split}.png",
                           f"{self.opts.dataset} {split}, epoch {progress.best_epoch}")
            if progress.rows:
                plot_curves(progress.rows, self.out / "curves.png")
            write_json(self.out / "summary.json", summary)
            self.log(f"wrote {self.out}/best.pt, last.pt, metrics.csv, curves.png, "
                     f"confusion_{split}.png, summary.json")
        if not synced:
            raise RuntimeError("DDP ranks ended with different weights")
        # Gloo frees a finished collective on its worker thread and needs the GIL for that; if the
        # process group is torn down before, both threads wait on each other. A barrier retires them.
        d.barrier()
        return summary
