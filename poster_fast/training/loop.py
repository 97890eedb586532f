"""The training run: the authors' recipe made explicit and fixed (weight decay applied, the best
checkpoint holds the model), in one process or under torchrun (DistributedDataParallel), on one
node or several.

`train(options)` resolves the options (with `--resume`, against the run's own), checks the data
(every image file opens, before any process group is joined), and runs `Run`'s steps: build the
model and optimiser, resume (at an epoch's end or within one), the epoch loop (train, evaluate,
save; last.pt also every --save-every steps and at the step a SIGTERM arrives), the final
evaluation of the best model and the outputs (metrics.csv, curves, confusion matrix, summary.json).

A run killed at any point and continued from its last.pt ends with the weights an uninterrupted
run would have (bitwise on the CPU, for the same number of processes): last.pt holds everything
the next step draws from (training/rng.py, data/sampler.py).
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
from ..data.sampler import BalancedSampler, EpochSampler, ShuffledSampler, derived_seed
from ..errors import CheckpointError, NonFiniteError, OutputError, RunError, Stopped, UsageError
from ..files import remove_stale_temps, write_json
from ..pretrained import load_backbones, load_checkpoint
from .data import TrainData, test_split
from .distributed import Dist, broadcast_buffers, in_sync, setup_dist, wrap_ddp
from .metrics import EvalResult, read_metrics, write_metrics
from .options import TrainOptions, describe_changes, resume_options
from .plots import plot_confusion, plot_curves
from .record import resume_entry, run_record
from .rng import rng_state, seed_all, set_rng_state
from .rundir import claim_run_folder, run_outputs
from .steps import (Optimisation, amp_enabled, epoch_result, eval_loader, evaluate_model, train_loader,
                    train_steps)
from .stopping import StopRequest
from .syncbn import sync_batchnorm


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
            could not be written; Stopped (a RunError): a SIGTERM, after last.pt was saved.
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
    state, changes, source = None, {}, opts.resume_source()
    if source is not None:
        state = load_training_state(source)
        opts, changes = resume_options(opts, state.get("options") or {}, state["epoch"], given, source,
                                       finished_ok=opts.resume == "auto" and not state.get("step"))
        if state.get("step") and "batch_size" in changes:
            raise UsageError(f"--resume: {source} stopped within epoch {state['epoch'] + 1}, at step {state['step']} "
                             f"of batches of {changes['batch_size'][0]}: --batch-size can change at an epoch's end only")
    data = TrainData.load(opts)  # data problems are found before any process group is joined
    if state is not None and (state["dataset"] != opts.dataset or list(state["classes"]) != data.classes):
        raise CheckpointError(f"--resume: {source} is a {state['dataset']} run with classes "
                              f"{list(state['classes'])}, not {opts.dataset} with {data.classes}")
    d = setup_dist(opts.device)
    try:
        at = [-1.0, -1.0] if state is None else [float(state["epoch"]), float(state.get("step", 0))]
        if not d.same_everywhere(at):
            raise UsageError(f"--out {opts.out_dir}: the processes found different training states there "
                             f"(this one: {'none' if state is None else f'epoch {at[0]:.0f}, step {at[1]:.0f}'}): "
                             "--out must be a folder that every node shares")
        resume = None if state is None else resume_entry(source, int(state["epoch"]), int(state.get("step", 0)),
                                                         changes, d)
        record = run_record(opts, data, d, resume, state.get("run") if state is not None else None)
        run = Run(opts, data, d, state, changes, record, source)
        if opts.resume == "auto" and state is None:
            run.log(f"--resume auto: no {opts.resume_path}: starting a new run")
        return run.execute()
    finally:
        d.close()


@dataclass
class Progress:
    """Where the run stands: the last finished epoch (and within the next, the steps done, the
    images dealt and each rank's random state and running sums: checkpoint.MID_EPOCH_STATE),
    and the best validation accuracy so far."""

    epoch: int = 0
    step: int = 0
    samples: int = 0
    ranks: list[dict[str, Any]] | None = None
    best_acc: float = -1.0
    best_epoch: int = 0
    best_val: EvalResult | None = None  # the best epoch's evaluation, if in this session
    rows: list[dict[str, Any]] = field(default_factory=list)  # metrics.csv


class Run:
    """One training run in this process (rank `d.rank` of `d.world`)."""

    def __init__(self, opts: TrainOptions, data: TrainData, d: Dist, state: dict[str, Any] | None = None,
                 changes: dict[str, tuple[Any, Any]] | None = None, record: dict[str, Any] | None = None,
                 source: Path | None = None) -> None:
        if opts.batch_size % (d.world * opts.accum_steps):
            raise UsageError(f"--batch-size {opts.batch_size} (global) is not divisible by {d.world} processes x "
                             f"{opts.accum_steps} accumulation steps")
        self.opts, self.d, self.recipe, self.classes = opts, d, data.recipe, data.classes
        self.data = data
        self.train_set, self.val_set = data.train_set, data.val_set
        self.out, self.state, self.changes, self.source = opts.out_dir, state, changes or {}, source
        self.record = record  # training.record.run_record: in best.pt, last.pt and summary.json
        self.per_rank = opts.batch_size // d.world  # images per process per optimiser step
        self.micro = self.per_rank // opts.accum_steps  # images per process per forward pass
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
        if not opts.plain:
            speed_up_in_place(net)
        if opts.sync_bn and self.d.world > 1:
            self.log(f"--sync-bn: {sync_batchnorm(net)} BatchNorm layers take the statistics of the global batch")
        elif opts.sync_bn:
            self.log("--sync-bn: one process: BatchNorm is unchanged")
        return net

    def resume(self, net: nn.Module, opt: Optimisation) -> Progress:
        """Model, optimiser and schedule from last.pt (a run on the same classes: train() checked),
        and within an epoch the step reached; the options given again with other values
        (self.changes) apply from there."""
        ck, path, opts = self.state, self.source, self.opts
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
        done, step = int(ck["epoch"]), int(ck.get("step", 0))
        if "lr" in self.changes or "gamma" in self.changes:
            opt.scheduler.base_lrs = [self.lr] * len(opt.base.param_groups)
            opt.scheduler.gamma = opts.gamma
            for group in opt.base.param_groups:
                group["initial_lr"], group["lr"] = self.lr, self.lr * opts.gamma ** done
        for group in opt.base.param_groups:
            group["weight_decay"] = opts.weight_decay
        where = f"epoch {done + 1} at step {step}" if step else f"after epoch {done}"
        self.log(f"resumed {path} {where} (best val acc {ck['best_acc']:.4f} at epoch {ck['best_epoch']})")
        if done == opts.epochs:
            self.log(f"all {done} epochs are done: the best model is evaluated again and the outputs rewritten")
        elif self.changes:
            self.log(f"resume: applying {describe_changes(self.changes)} from epoch {done + 1}"
                     f"{f', step {step + 1}' if step else ''} (lr for epoch {done + 1}: {opt.lr:g})")
        return Progress(done, step, int(ck.get("samples", 0)), ck.get("ranks"), float(ck["best_acc"]),
                        int(ck["best_epoch"]))

    def sampler(self) -> EpochSampler:
        opts, d = self.opts, self.d
        if self.balanced:
            return BalancedSampler(self.train_set.targets, d.world, d.rank, opts.seed)
        return ShuffledSampler(len(self.train_set), d.world, d.rank, opts.seed)

    def start_epoch(self, epoch: int, progress: Progress, sampler: EpochSampler) -> tuple[int, torch.Tensor]:
        """Position the sampler and the random states for `epoch`: at its start, or where a resumed
        state stopped within it. Returns the first step and this rank's running sums."""
        d, seed = self.d, self.opts.seed
        stats = torch.zeros(3, dtype=torch.float64)
        if epoch != progress.epoch + 1 or not progress.step:
            sampler.set_epoch(epoch)
            seed_all(derived_seed(seed, epoch, d.rank))
            return 0, stats
        sampler.set_epoch(epoch, progress.samples // d.world)
        ranks = progress.ranks or []
        if len(ranks) == d.world:
            set_rng_state(ranks[d.rank]["rng"], d.device)
            stats += ranks[d.rank]["stats"]
        else:
            seed_all(derived_seed(seed, epoch, progress.step, d.rank))
            if d.main:
                stats += sum((r["stats"] for r in ranks), torch.zeros(3, dtype=torch.float64))
            self.log(f"warning: {self.source} holds the random states of {len(ranks)} processes, not {d.world}: "
                     "each process draws from a new seed (the run goes on, but not as it would have)",
                     file=sys.stderr)
        if progress.samples % d.world:
            self.log(f"warning: {progress.samples} images of epoch {epoch} were dealt, not a multiple of "
                     f"{d.world} processes: up to {d.world - 1} are drawn again", file=sys.stderr)
        return progress.step, stats

    def epochs(self, net: nn.Module, opt: Optimisation, progress: Progress) -> None:
        """Train, evaluate and save every remaining epoch; last.pt also every --save-every steps,
        and at the step boundary after a SIGTERM (then Stopped is raised)."""
        opts, d = self.opts, self.d
        model = wrap_ddp(net, d)
        sampler = self.sampler()
        loader = train_loader(self.train_set, sampler, self.micro, opts.workers, d)
        val_loader = eval_loader(self.val_set, self.per_rank, opts.workers, d)
        per_epoch = math.ceil(sampler.num_samples / self.per_rank)
        steps = per_epoch if opts.max_steps is None else min(opts.max_steps, per_epoch)
        self.log_setup()
        with StopRequest() as stop:
            for epoch in range(progress.epoch + 1, opts.epochs + 1):
                t0 = time.time()
                start, stats = self.start_epoch(epoch, progress, sampler)
                desc = f"epoch {epoch}/{opts.epochs}"
                try:
                    for done in train_steps(model, loader, range(start, steps), opts.accum_steps, opt, d,
                                            self.amp, stats, desc):
                        stopping = d.any(stop.requested)
                        if stopping or (opts.save_every and done % opts.save_every == 0 and done < steps):
                            self.save_within_epoch(net, opt, progress, done, stats)
                        if stopping:
                            d.barrier()
                            raise Stopped(f"stopped on SIGTERM at epoch {epoch}, step {done} of {steps}: "
                                          f"{self.out / 'last.pt'} continues it (the same command with "
                                          "--resume auto)")
                    train_loss, train_acc = epoch_result(stats, d, desc)
                except NonFiniteError as err:
                    raise NonFiniteError(f"training stopped: {err} (lr {opt.lr:g}): lower --lr, or --amp off; "
                                         f"{self.saved(epoch, progress)}") from None
                self.end_of_training_epoch(net, opt, progress, epoch, val_loader, train_loss, train_acc, t0)

    def end_of_training_epoch(self, net: nn.Module, opt: Optimisation, progress: Progress, epoch: int,
                              val_loader: Any, train_loss: float, train_acc: float, t0: float) -> None:
        """BatchNorm statistics from rank 0, the schedule's step, validation, checkpoints, metrics."""
        opts, d = self.opts, self.d
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

    def save_within_epoch(self, net: nn.Module, opt: Optimisation, progress: Progress, step: int,
                          stats: torch.Tensor) -> None:
        """last.pt at `step` of the epoch after progress.epoch, with every rank's random state and
        running sums (gathered on rank 0, which writes)."""
        d = self.d
        ranks = d.gather({"rng": rng_state(d.device), "stats": stats.clone()})
        progress.step = step
        if not d.main:
            return
        meta = {"dataset": self.opts.dataset, "classes": self.classes, "epoch": progress.epoch, "run": self.record}
        try:
            save_training_state(self.out / "last.pt", net, opt.base, opt.scheduler, best_acc=progress.best_acc,
                                best_epoch=progress.best_epoch, options=self.opts.record(), step=step,
                                samples=step * self.opts.batch_size, ranks=ranks, **meta)
        except OutputError as err:
            raise OutputError(err.path, f"{err.reason}: training stopped at epoch {progress.epoch + 1}, step {step} "
                              "(the previous checkpoint of that name is intact)") from None

    def saved(self, epoch: int, progress: Progress) -> str:
        """What a run stopped during `epoch` leaves, for its error message."""
        if progress.step:
            return f"{self.out / 'last.pt'} holds epoch {progress.epoch} and {progress.step} steps of epoch {epoch}"
        if not progress.epoch:
            return f"epoch {epoch} was not saved (no checkpoint was written)"
        return f"epoch {epoch} was not saved: {self.out / 'last.pt'} holds epoch {progress.epoch}"

    def log_setup(self) -> None:
        opts, d = self.opts, self.d
        self.log(f"{opts.dataset}: {len(self.train_set)} train / {len(self.val_set)} {opts.val_split} images, "
                 f"classes {', '.join(f'{f}={c}' for f, c in zip(self.train_set.folders, self.classes))}")
        accum = f" x {opts.accum_steps} accumulation steps" if opts.accum_steps > 1 else ""
        self.log(f"{opts.optimizer} lr {self.lr:g} wd {opts.weight_decay:g} gamma {opts.gamma}, "
                 f"{'balanced' if self.balanced else 'shuffled'} sampling, amp {'bf16' if self.amp else 'off'}, "
                 f"device {d.device}; global batch {opts.batch_size} = {d.world} processes{accum} x "
                 f"{self.micro} images ({d.nodes} node{'s' if d.nodes > 1 else ''})"
                 + (f", torchrun restart {d.restart}" if d.restart else ""))

    def end_epoch(self, net: nn.Module, opt: Optimisation, progress: Progress, epoch: int,
                  val: EvalResult) -> None:
        """Record the epoch; rank 0 writes best.pt when it is the best so far, and last.pt."""
        progress.epoch, progress.step, progress.samples, progress.ranks = epoch, 0, 0, None
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
