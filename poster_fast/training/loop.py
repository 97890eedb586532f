"""The training run: the authors' recipe made explicit and fixed (weight decay applied, the best
checkpoint holds the model), in one process or under torchrun (DistributedDataParallel).

`train(options)` resolves the options (with `--resume`, against the run's own), checks the data
(every image file opens, before any process group is joined), and runs `Run`'s steps: build the
model and optimiser, resume, the epoch loop (train, evaluate, save), the final evaluation of the
best model and the outputs (metrics.csv, curves, confusion matrix, summary.json).
"""
from __future__ import annotations

import importlib.util
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection

import torch
from torch import nn

from ..checkpoint import load_training_state, save_model, save_training_state
from ..data.sampler import BalancedSampler
from ..errors import CheckpointError, NonFiniteError, OutputError, RunError, UsageError
from ..files import remove_stale_temps, write_json
from ..pretrained import load_backbones, load_checkpoint
from .data import TrainData, test_split
from .distributed import Dist, broadcast_buffers, in_sync, setup_dist, wrap_ddp
from .metrics import EvalResult, read_metrics, write_metrics
from .options import TrainOptions, describe_changes, resume_options
from .plots import plot_confusion, plot_curves
from .record import resume_entry, run_record
from .rundir import claim_run_folder, run_outputs
from .steps import Optimisation, amp_enabled, eval_loader, evaluate_model, train_epoch, train_loader

def train(opts: TrainOptions, given: Collection[str] | None = None) -> dict[str, Any]:
    """The whole run (one process, or one rank under torchrun).

    Args:
        opts: every setting of the run (`TrainOptions`; checked here).
        given: with `opts.resume`, the options given again: the others take the values the run
            recorded in last.pt (None: every option of `opts` applies; see
            training.options.resume_options).

    Returns:
        The summary that rank 0 writes to OUT/summary.json.

    Raises:
        UsageError, DataError, CheckpointError: options, data or a resumed file that cannot be
            used (found before training starts); RunError: a non-finite loss, or an output that
            could not be written.
    """
    opts = opts.check()
    lock = claim_run_folder(opts, main=int(os.environ.get("RANK", "0")) == 0)
    try:
        return _train(opts, given)
    finally:
        if lock is not None:
            lock.release()


def _train(opts: TrainOptions, given: Collection[str] | None) -> dict[str, Any]:
    """train() in its claimed run folder."""
    state, changes = None, {}
    if opts.resume_path:
        if not opts.resume_path.exists():
            raise CheckpointError(f"--resume: {opts.resume_path} does not exist")
        state = load_training_state(opts.resume_path)
        opts, changes = resume_options(opts, state.get("options") or {}, state["epoch"], given,
                                       opts.resume_path)
    data = TrainData.load(opts)  # data problems are found before any process group is joined
    if state is not None and (state["dataset"] != opts.dataset or list(state["classes"]) != data.classes):
        raise CheckpointError(f"--resume: {opts.resume_path} is a {state['dataset']} run with classes "
                              f"{list(state['classes'])}, not {opts.dataset} with {data.classes}")
    d = setup_dist(opts.device)
    try:
        resume = None if state is None else resume_entry(opts.resume_path, int(state["epoch"]), changes)
        record = run_record(opts, data, d, resume, state.get("run") if state is not None else None)
        return Run(opts, data, d, state, changes, record).execute()
    finally:
        d.close()


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

    def __init__(self, opts: TrainOptions, data: TrainData, d: Dist, state: dict[str, Any] | None = None,
                 changes: dict[str, tuple[Any, Any]] | None = None, record: dict[str, Any] | None = None) -> None:
        if opts.batch_size % d.world:
            raise UsageError(f"--batch-size {opts.batch_size} (global) is not divisible by {d.world} processes")
        self.opts, self.d, self.recipe, self.classes = opts, d, data.recipe, data.classes
        self.data = data
        self.train_set, self.val_set = data.train_set, data.val_set
        self.out, self.state, self.changes = opts.out_dir, state, changes or {}
        self.record = record  # training.record.run_record: in best.pt, last.pt and summary.json
        self.per_rank = opts.batch_size // d.world
        self.log: Callable[..., None] = print if d.main else (lambda *a, **k: None)
        self.amp = amp_enabled(opts.amp, d.device)

    def execute(self) -> dict[str, Any]:
        opts, d = self.opts, self.d
        if d.main:
            self.out.mkdir(parents=True, exist_ok=True)
            stale = remove_stale_temps(self.out, run_outputs(self.opts))
            if stale:
                self.log(f"removed {len(stale)} temporary files a killed run left: "
                         f"{', '.join(p.name for p in stale)}")
            if importlib.util.find_spec("matplotlib") is None:
                self.log("warning: matplotlib is not installed: the plots (curves.png, confusion_*.png) "
                         "will be missing (pip install matplotlib)", file=sys.stderr)
        torch.manual_seed(opts.seed)
        if d.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        net = self.build_model()
        params = [p for p in net.parameters() if p.requires_grad]  # the landmark net is frozen
        opt = Optimisation.create(params, opts.optimizer, self.lr, opts.weight_decay, opts.rho, opts.gamma)
        progress = self.resume(net, opt) if self.state is not None else Progress()
        if d.main:
            progress.rows = read_metrics(self.out / "metrics.csv", progress.epoch)
        self.epochs(net, opt, progress)
        return self.finish(net, progress)

    @property
    def splits(self) -> tuple[str, ...]:
        return (self.opts.val_split, *((test_split(self.opts),) if self.data.test_set is not None else ()))

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
        if self.state is not None:
            if opts.ir50 or opts.landmark:
                self.log("--ir50/--landmark ignored: the weights come from the resumed file")
        elif opts.ir50 or opts.landmark:
            for name, rep in load_backbones(net, opts.ir50, opts.landmark, opts.trusted).items():
                self.log(f"pretrained {name}: {rep}")
        else:
            self.log("warning: no --ir50/--landmark: both backbones start from random weights "
                     "(the paper starts from the authors' pretrained files)", file=sys.stderr)
        net.to(self.d.device)
        return net if opts.plain else speed_up_in_place(net)

    def resume(self, net: nn.Module, opt: Optimisation) -> Progress:
        """Model, optimiser and schedule from last.pt (a run on the same classes: train() checked);
        the options given again with other values (self.changes) apply from the next epoch."""
        ck, path, opts = self.state, self.opts.resume_path, self.opts
        try:
            load_checkpoint(net, ck["state_dict"])
        except CheckpointError as err:
            raise CheckpointError(f"--resume: {path}: {err}") from None
        try:
            opt.base.load_state_dict(ck["optimizer"])
            opt.scheduler.load_state_dict(ck["scheduler"])
        except (ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"--resume: {path}: the optimizer state does not fit "
                                  f"--optimizer {opts.optimizer}: {err}") from None
        done = int(ck["epoch"])
        if "lr" in self.changes or "gamma" in self.changes:
            opt.scheduler.base_lrs = [self.lr] * len(opt.base.param_groups)
            opt.scheduler.gamma = opts.gamma
            for group in opt.base.param_groups:
                group["initial_lr"], group["lr"] = self.lr, self.lr * opts.gamma ** done
        for group in opt.base.param_groups:
            group["weight_decay"] = opts.weight_decay
        self.log(f"resumed {path} after epoch {done} "
                 f"(best val acc {ck['best_acc']:.4f} at epoch {ck['best_epoch']})")
        if self.changes:
            self.log(f"resume: applying {describe_changes(self.changes)} from epoch {done + 1} "
                     f"(lr for epoch {done + 1}: {opt.lr:g})")
        return Progress(done, float(ck["best_acc"]), int(ck["best_epoch"]))

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
            try:
                train_loss, train_acc = train_epoch(model, loader, steps, opt, d, self.amp,
                                                    f"epoch {epoch}/{opts.epochs}")
            except NonFiniteError as err:
                raise NonFiniteError(f"training stopped: {err} (lr {opt.lr:g}): lower --lr, or --amp off; "
                                     f"{self.saved(epoch, progress)}") from None
            broadcast_buffers(net, d)
            lr = opt.lr
            opt.scheduler.step()
            val = evaluate_model(net, val_loader, len(self.classes), d, self.amp, progress=d.main)
            if not math.isfinite(val.loss):
                raise NonFiniteError(
                    f"training stopped: the {opts.val_split} loss is {val.loss} after epoch {epoch}: the "
                    f"model diverged (lower --lr, or --amp off); {self.saved(epoch, progress)}")
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

    def saved(self, epoch: int, progress: Progress) -> str:
        """What a run stopped during `epoch` leaves, for its error message."""
        if not progress.epoch:
            return f"epoch {epoch} was not saved (no checkpoint was written)"
        return f"epoch {epoch} was not saved: {self.out / 'last.pt'} holds epoch {progress.epoch}"

    def log_setup(self) -> None:
        opts, d = self.opts, self.d
        self.log(f"{opts.dataset}: {len(self.train_set)} train / {len(self.val_set)} {opts.val_split} images, "
                 f"classes {', '.join(f'{f}={c}' for f, c in zip(self.train_set.folders, self.classes))}")
        self.log(f"{opts.optimizer} lr {self.lr:g} wd {opts.weight_decay:g} gamma {opts.gamma} batch "
                 f"{opts.batch_size} ({d.world} x {self.per_rank}) {'balanced' if self.balanced else 'shuffled'} "
                 f"sampling, amp {'bf16' if self.amp else 'off'}, device {d.device}")

    def end_epoch(self, net: nn.Module, opt: Optimisation, progress: Progress, epoch: int,
                  val: EvalResult) -> None:
        """Record the epoch; rank 0 writes best.pt when it is the best so far, and last.pt."""
        progress.epoch = epoch
        meta = {"dataset": self.opts.dataset, "classes": self.classes, "epoch": epoch, "run": self.record}
        try:
            if val.top1 > progress.best_acc:
                progress.best_acc, progress.best_epoch, progress.best_val = val.top1, epoch, val
                if self.d.main:
                    save_model(self.out / "best.pt", net, best_acc=progress.best_acc, **meta)
            if self.d.main:
                save_training_state(self.out / "last.pt", net, opt.base, opt.scheduler,
                                    best_acc=progress.best_acc, best_epoch=progress.best_epoch,
                                    options=self.opts.record(), **meta)
        except OutputError as err:
            raise OutputError(err.path, f"{err.reason}: training stopped after epoch {epoch} (the previous "
                              "checkpoint of that name is intact)") from None

    def final_evaluation(self, net: nn.Module, progress: Progress) -> tuple[str, EvalResult]:
        """The best model on the held-out split (the val split picked it; a test split is unbiased)."""
        split, test_set = test_split(self.opts), self.data.test_set
        if test_set is None and progress.best_val is not None:
            return split, progress.best_val
        load_checkpoint(net, self.out / "best.pt")
        folder = test_set if test_set is not None else self.val_set
        loader = eval_loader(folder, self.per_rank, self.opts.workers, self.d)
        return split, evaluate_model(net, loader, len(self.classes), self.d, self.amp, progress=self.d.main)

    def finish(self, net: nn.Module, progress: Progress) -> dict[str, Any]:
        """Final evaluation, then rank 0 writes summary.json and the plots; an output that cannot
        be written does not stop the others (RunError at the end names it)."""
        d, classes = self.d, self.classes
        synced = in_sync(net, d)
        split, final = self.final_evaluation(net, progress)
        summary = {"dataset": self.opts.dataset, "classes": classes, "best_epoch": progress.best_epoch,
                   "best_val_acc": progress.best_acc, "eval_split": split, "eval": final.as_dict(classes),
                   "world_size": d.world, "ranks_in_sync": synced, "run": self.record}
        failed: list[str] = []
        if d.main:
            self.log(f"best model (epoch {progress.best_epoch}) on {split}:\n{final.report(classes)}")
            outputs: list[tuple[str, Callable[[Path], None]]] = [
                ("summary.json", lambda p: write_json(p, summary)),
                (f"confusion_{split}.png", lambda p: plot_confusion(
                    final, classes, p, f"{self.opts.dataset} {split}, epoch {progress.best_epoch}"))]
            if progress.rows:
                outputs.append(("curves.png", lambda p: plot_curves(progress.rows, p)))
            for name, write in outputs:
                try:
                    write(self.out / name)
                except OutputError as err:
                    failed.append(f"{name} ({err.reason})")
                except ImportError as err:
                    failed.append(f"{name} ({err})")
            written = ["best.pt", "last.pt", "metrics.csv"] + [n for n, _ in outputs
                                                               if not any(f.startswith(n + " ") for f in failed)]
            self.log(f"wrote {self.out}/{', '.join(written)}")
        if not synced:
            raise RuntimeError("DDP ranks ended with different weights")
        # Gloo frees a finished collective on its worker thread and needs the GIL for that; if the
        # process group is torn down before, both threads wait on each other. A barrier retires them.
        d.barrier()
        if failed:
            raise RunError(f"training finished, but {len(failed)} outputs could not be written: "
                           + "; ".join(failed))
        return summary
