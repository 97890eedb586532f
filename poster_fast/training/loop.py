"""`poster-fast train` and `poster-fast evaluate`: the authors' recipe (SPEC §8), made explicit
and fixed (weight decay applied, the best checkpoint holds the model), single process or
`torchrun` DistributedDataParallel.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .data import DATASETS, DataError, get_recipe, label_table

METRICS_FIELDS = ("epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "val_mean_acc",
                  "best_acc", "seconds")


# ----------------------------------------------------------------------------- pieces


class SAM:
    """Sharpness-aware minimisation (Foret et al. 2021) around a base optimiser, as the
    authors' `sam.py` (adaptive=False): w += rho * g / ||g|| (global L2 norm), gradient at the
    perturbed point, restore w, base step. Schedulers and state dicts use `base`."""

    def __init__(self, base: torch.optim.Optimizer, rho: float = 0.05) -> None:
        self.base, self.rho = base, rho
        self._saved: list[tuple[torch.Tensor, torch.Tensor]] = []

    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.base.param_groups for p in g["params"] if p.grad is not None]

    @torch.no_grad()
    def first_step(self) -> None:
        params = self._params()
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
        scale = self.rho / (norm + 1e-12)
        self._saved = [(p, p.detach().clone()) for p in params]
        for p in params:
            p.add_(p.grad * scale.to(p.dtype))

    @torch.no_grad()
    def second_step(self) -> None:
        for p, old in self._saved:
            p.copy_(old)
        self._saved = []
        self.base.step()


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            dist.all_reduce(t)
        return t

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def setup_dist(device: str | None) -> Dist:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK: join the process group (NCCL on GPUs, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist(device=torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu")))
    local = int(os.environ["LOCAL_RANK"])
    cuda = torch.cuda.is_available() and device != "cpu"
    if cuda:
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if cuda else "gloo")
    return Dist(dist.get_rank(), world, torch.device("cuda", local) if cuda else torch.device("cpu"))


@dataclass
class EvalResult:
    loss: float
    confusion: torch.Tensor  # (true, predicted) counts

    @property
    def top1(self) -> float:
        return float(self.confusion.diag().sum() / self.confusion.sum())

    @property
    def per_class(self) -> list[float]:
        n = self.confusion.sum(1)
        return [float(c / t) if t else math.nan for c, t in zip(self.confusion.diag(), n)]

    @property
    def mean_acc(self) -> float:
        accs = [a for a in self.per_class if not math.isnan(a)]
        return sum(accs) / len(accs)

    def as_dict(self, classes: list[str]) -> dict[str, Any]:
        return {"top1": self.top1, "mean_class_acc": self.mean_acc, "loss": self.loss,
                "samples": int(self.confusion.sum()),
                "per_class": {c: {"acc": a, "samples": int(n)} for c, a, n in
                              zip(classes, self.per_class, self.confusion.sum(1))},
                "classes": classes, "confusion": self.confusion.tolist()}

    def report(self, classes: list[str]) -> str:
        w = max(len(c) for c in classes)
        lines = [f"top-1 {self.top1:.4f}  mean class accuracy {self.mean_acc:.4f}  "
                 f"({int(self.confusion.sum())} images)", f"{'class':<{w}}  images  accuracy"]
        lines += [f"{c:<{w}}  {int(n):>6}  {a:.4f}" for c, n, a in
                  zip(classes, self.confusion.sum(1), self.per_class)]
        lines.append("confusion (rows: true, columns: predicted)")
        lines += [f"{c:<{w}}  " + " ".join(f"{int(v):>6}" for v in row)
                  for c, row in zip(classes, self.confusion)]
        return "\n".join(lines)


def autocast(device: torch.device, amp: bool) -> Any:
    return torch.autocast(device.type, dtype=torch.bfloat16) if amp else nullcontext()


@torch.no_grad()
def evaluate_model(model: nn.Module, loader: Iterable, num_classes: int, d: Dist, amp: bool,
                   progress: bool = False) -> EvalResult:
    """Top-1 and confusion over the loader; under DDP each rank holds a disjoint shard of
    possibly unequal length, so `model` must be the bare module, not the DDP wrapper."""
    from tqdm import tqdm

    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    loss = torch.zeros((), dtype=torch.float64)
    for x, y in tqdm(loader, desc="eval", leave=False, disable=not progress or None, file=sys.stderr):
        x, y = x.to(d.device, non_blocking=True), y.to(d.device)
        with autocast(d.device, amp):
            logits = model(x).float()
        loss += F.cross_entropy(logits, y, reduction="sum").double().cpu()
        confusion += torch.bincount((y * num_classes + logits.argmax(1)).cpu(),
                                    minlength=num_classes ** 2).view(num_classes, num_classes)
    both = d.all_sum(torch.cat([confusion.flatten(), loss.view(1)]).to(d.device)).cpu()
    confusion = both[:-1].view(num_classes, num_classes)
    return EvalResult(float(both[-1] / max(1.0, float(confusion.sum()))), confusion)


def eval_loader(folder: Any, batch: int, workers: int, d: Dist) -> torch.utils.data.DataLoader:
    """Each rank gets every world-th image: no padding, so summed counts are exact."""
    shard = torch.utils.data.Subset(folder, range(d.rank, len(folder), d.world))
    return torch.utils.data.DataLoader(shard, batch_size=batch, num_workers=workers,
                                       pin_memory=d.device.type == "cuda")


def save_atomic(obj: dict[str, Any], path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def plot_confusion(result: EvalResult, classes: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = result.confusion.numpy()
    norm = cm / cm.sum(1, keepdims=True).clip(min=1)
    fig, ax = plt.subplots(figsize=(1.1 * len(classes) + 2, 1.1 * len(classes) + 1.5))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{norm[i, j]:.2f}\n({int(cm[i, j])})", ha="center", va="center",
                    fontsize=8, color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title}\ntop-1 {result.top1:.4f}, mean class acc {result.mean_acc:.4f}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_curves(rows: list[dict[str, str]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    ep = [int(r["epoch"]) for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for key in ("train_loss", "val_loss"):
        a.plot(ep, [float(r[key]) for r in rows], marker=".", label=key)
    for key in ("train_acc", "val_acc", "val_mean_acc"):
        b.plot(ep, [float(r[key]) for r in rows], marker=".", label=key)
    for ax, name in ((a, "loss"), (b, "accuracy")):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def read_metrics(path: Path, upto: int) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return [r for r in csv.DictReader(fh) if int(r["epoch"]) <= upto]


def write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=METRICS_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def folder_classes(train_folder: Any, val_folder: Any, dataset: str,
                   classes: str | None) -> list[str]:
    from .data import resolve_classes

    if train_folder.folders != val_folder.folders:
        raise DataError(f"class folders differ: {train_folder.root} has {', '.join(train_folder.folders)}, "
                        f"{val_folder.root} has {', '.join(val_folder.folders)}")
    return resolve_classes(dataset, train_folder.folders, classes.split(",") if classes else None)


def amp_enabled(mode: str, device: torch.device) -> bool:
    if mode == "auto":
        return device.type == "cuda" and torch.cuda.is_bf16_supported()
    return mode == "bf16"


def in_sync(model: nn.Module, d: Dist) -> bool:
    """Whether every rank holds the same parameters and buffers (per-tensor float64 sums)."""
    if d.world == 1:
        return True
    sums = torch.stack([t.detach().double().sum() for t in model.state_dict().values()]).to(d.device)
    gathered = [torch.empty_like(sums) for _ in range(d.world)]
    dist.all_gather(gathered, sums)
    return all(torch.equal(gathered[0], g) for g in gathered[1:])


# ----------------------------------------------------------------------------- train


def train(args: argparse.Namespace) -> dict[str, Any]:
    """The whole run; returns the summary that rank 0 writes to OUT/summary.json."""
    from tqdm import tqdm

    from . import POSTERV2, load_backbones
    from .optimize import speed_up_in_place
    from .data import BalancedSampler, ImageFolder, ToNormalizedTensor, TrainTransform, split_dir

    recipe = get_recipe(args.dataset)
    out = Path(args.out or f"runs/{args.dataset}")
    train_set = ImageFolder(split_dir(args.data, "train"),
                            TrainTransform(args.image_size, recipe.erase_p, recipe.erase_scale))
    val_set = ImageFolder(split_dir(args.data, args.val_split), ToNormalizedTensor(args.image_size))
    classes = folder_classes(train_set, val_set, args.dataset, args.classes)
    resume_path = (out / "last.pt" if args.resume == "auto" else Path(args.resume)) if args.resume else None
    if resume_path and not resume_path.is_file():
        raise DataError(f"--resume: {resume_path} does not exist")

    d = setup_dist(args.device)
    try:
        if args.batch_size % d.world:
            raise DataError(f"--batch-size {args.batch_size} (global) is not divisible by {d.world} processes")
        torch.manual_seed(args.seed)
        log = print if d.main else (lambda *a, **k: None)
        amp = amp_enabled(args.amp, d.device)
        if d.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True

        net = POSTERV2(len(classes), attn_backend=args.attn_backend)
        if args.ir50 or args.landmark:
            for name, rep in load_backbones(net, args.ir50, args.landmark, args.trusted).items():
                log(f"pretrained {name}: {rep}")
        elif not resume_path:
            log("warning: no --ir50/--landmark: both backbones start from random weights "
                "(the paper starts from the authors' pretrained files)", file=sys.stderr)
        net.to(d.device)
        if not args.plain:
            speed_up_in_place(net)
        params = [p for p in net.parameters() if p.requires_grad]  # the landmark net is frozen
        lr = args.lr if args.lr is not None else recipe.lr
        base_cls = torch.optim.AdamW if args.optimizer.endswith("adamw") else torch.optim.Adam
        base = base_cls(params, lr=lr, weight_decay=args.weight_decay)
        sam = SAM(base, args.rho) if args.optimizer.startswith("sam-") else None
        sched = torch.optim.lr_scheduler.ExponentialLR(base, gamma=args.gamma)

        start, best_acc, best_epoch = 0, -1.0, 0
        best_val: EvalResult | None = None  # the best epoch's evaluation, if in this session
        if resume_path:
            ck = torch.load(resume_path, map_location="cpu", weights_only=True)
            if ck.get("dataset") != args.dataset or ck.get("classes") != classes:
                raise DataError(f"--resume: {resume_path} is a {ck.get('dataset')} run with classes "
                                f"{ck.get('classes')}, not {args.dataset} with {classes}")
            net.load_state_dict(ck["state_dict"])
            base.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
            start, best_acc, best_epoch = ck["epoch"], ck["best_acc"], ck["best_epoch"]
            log(f"resumed {resume_path} after epoch {start} (best val acc {best_acc:.4f} at epoch {best_epoch})")

        model: nn.Module = net
        if d.world > 1:
            # Only parameters with requires_grad are synchronised: the frozen landmark net is not.
            model = nn.parallel.DistributedDataParallel(
                net, device_ids=[d.device.index] if d.device.type == "cuda" else None)

        per_rank = args.batch_size // d.world
        balanced = recipe.balanced if args.sampler == "auto" else args.sampler == "balanced"
        sampler: Any = (BalancedSampler(train_set.targets, d.world, d.rank, args.seed) if balanced else
                        torch.utils.data.DistributedSampler(train_set, d.world, d.rank, shuffle=True,
                                                            seed=args.seed))
        loader = torch.utils.data.DataLoader(
            train_set, batch_size=per_rank, sampler=sampler, num_workers=args.workers,
            pin_memory=d.device.type == "cuda", persistent_workers=args.workers > 0)
        val_loader = eval_loader(val_set, per_rank, args.workers, d)

        if d.main:
            out.mkdir(parents=True, exist_ok=True)
            log(f"{args.dataset}: {len(train_set)} train / {len(val_set)} {args.val_split} images, "
                f"classes {', '.join(f'{f}={c}' for f, c in zip(train_set.folders, classes))}")
            log(f"{args.optimizer} lr {lr:g} wd {args.weight_decay:g} gamma {args.gamma} batch "
                f"{args.batch_size} ({d.world} x {per_rank}) {'balanced' if balanced else 'shuffled'} "
                f"sampling, amp {'bf16' if amp else 'off'}, device {d.device}")
        meta = {"num_classes": len(classes), "dataset": args.dataset, "classes": classes}
        rows: list[dict[str, Any]] = read_metrics(out / "metrics.csv", start) if d.main else []

        for epoch in range(start + 1, args.epochs + 1):
            t0 = time.time()
            sampler.set_epoch(epoch)
            torch.manual_seed(args.seed + 1000 * epoch + d.rank)  # augmentation / drop path
            model.train()
            stats = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, seen
            steps = len(loader) if args.max_steps is None else min(args.max_steps, len(loader))
            bar = tqdm(loader, total=steps, desc=f"epoch {epoch}/{args.epochs}", leave=False,
                       disable=not d.main or None, file=sys.stderr)
            for step, (x, y) in enumerate(bar):
                if step == steps:
                    break
                x, y = x.to(d.device, non_blocking=True), y.to(d.device, non_blocking=True)
                with autocast(d.device, amp):
                    logits = model(x)
                loss = F.cross_entropy(logits.float(), y)
                base.zero_grad(set_to_none=True)
                loss.backward()
                if sam:
                    sam.first_step()
                    base.zero_grad(set_to_none=True)
                    with autocast(d.device, amp):
                        F.cross_entropy(model(x).float(), y).backward()
                    sam.second_step()
                else:
                    base.step()
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch} step {step}: "
                                             "lower --lr or turn off --amp")
                stats += torch.tensor([loss.item() * len(y), (logits.argmax(1) == y).sum().item(), len(y)],
                                      dtype=torch.float64)
                bar.set_postfix(loss=f"{loss.item():.4f}")
            stats = d.all_sum(stats.to(d.device)).cpu()
            if d.world > 1:  # DDP syncs BN statistics before each forward, not after the last one
                for buf in net.buffers():
                    dist.broadcast(buf, 0)
            cur_lr = base.param_groups[0]["lr"]
            sched.step()
            val = evaluate_model(net, val_loader, len(classes), d, amp, progress=d.main)
            if val.top1 > best_acc:
                best_acc, best_epoch, best_val = val.top1, epoch, val
                if d.main:
                    save_atomic({"state_dict": net.state_dict(), **meta, "epoch": epoch,
                                 "best_acc": best_acc}, out / "best.pt")
            if d.main:
                save_atomic({"state_dict": net.state_dict(), **meta, "epoch": epoch, "best_acc": best_acc,
                             "best_epoch": best_epoch, "optimizer": base.state_dict(),
                             "scheduler": sched.state_dict()}, out / "last.pt")
                rows.append({"epoch": epoch, "lr": cur_lr, "train_loss": float(stats[0] / stats[2]),
                             "train_acc": float(stats[1] / stats[2]), "val_loss": val.loss,
                             "val_acc": val.top1, "val_mean_acc": val.mean_acc, "best_acc": best_acc,
                             "seconds": round(time.time() - t0, 2)})
                write_metrics(out / "metrics.csv", rows)
                r = rows[-1]
                log(f"epoch {epoch}: train loss {r['train_loss']:.4f} acc {r['train_acc']:.4f} | "
                    f"{args.val_split} loss {val.loss:.4f} acc {val.top1:.4f} mean {val.mean_acc:.4f} | "
                    f"best {best_acc:.4f} (epoch {best_epoch}) | {r['seconds']:.0f}s", flush=True)
            d.barrier()

        synced = in_sync(net, d)
        # Held-out evaluation of the best model (the val split picked it; a test split is unbiased).
        test_split = args.test_split or ("test" if (Path(args.data) / "test").is_dir()
                                         and args.val_split != "test" else args.val_split)
        if test_split == args.val_split and best_val is not None:
            final = best_val
        else:
            test_set = ImageFolder(split_dir(args.data, test_split), ToNormalizedTensor(args.image_size))
            if test_set.folders != train_set.folders:
                raise DataError(f"class folders of {test_set.root} differ from {train_set.root}")
            net.load_state_dict(torch.load(out / "best.pt", map_location="cpu", weights_only=True)["state_dict"])
            final = evaluate_model(net, eval_loader(test_set, per_rank, args.workers, d), len(classes), d,
                                   amp, progress=d.main)
        summary = {"dataset": args.dataset, "classes": classes, "best_epoch": best_epoch,
                   "best_val_acc": best_acc, "eval_split": test_split, "eval": final.as_dict(classes),
                   "world_size": d.world, "ranks_in_sync": synced}
        if d.main:
            log(f"best model (epoch {best_epoch}) on {test_split}:\n{final.report(classes)}")
            plot_confusion(final, classes, out / f"confusion_{test_split}.png",
                           f"{args.dataset} {test_split}, epoch {best_epoch}")
            if rows:
                plot_curves([{k: str(v) for k, v in r.items()} for r in rows], out / "curves.png")
            (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
            log(f"wrote {out}/best.pt, last.pt, metrics.csv, curves.png, confusion_{test_split}.png, summary.json")
        if not summary["ranks_in_sync"]:
            raise RuntimeError("DDP ranks ended with different weights")
        # Gloo frees a finished collective on its worker thread and needs the GIL for that; if the
        # process group is torn down before, both threads wait on each other. A barrier retires them.
        d.barrier()
        return summary
    finally:
        if d.world > 1:
            dist.destroy_process_group()


# ----------------------------------------------------------------------------- evaluate


def evaluate(args: argparse.Namespace) -> EvalResult:
    from .data import ImageFolder, ToNormalizedTensor, resolve_classes, split_dir
    from .predict import load_trained

    folder = ImageFolder(split_dir(args.data, args.split), ToNormalizedTensor(args.image_size))
    model, meta = load_trained(args.checkpoint, args.trusted, args.attn_backend)
    folders = folder.folders
    if args.classes:
        classes = resolve_classes("", folders, args.classes.split(","))
    elif args.dataset:
        classes = resolve_classes(args.dataset, folders)
    elif meta.get("classes"):  # the names it was trained with, for the sorted class folders
        classes = list(meta["classes"])
        if meta.get("dataset") in DATASETS and classes == list(DATASETS[meta["dataset"]].classes):
            resolve_classes(meta["dataset"], folders)  # the folders must follow the official numbering
    elif meta.get("dataset") in DATASETS:
        classes = resolve_classes(meta["dataset"], folders)
    else:
        raise DataError(f"{args.checkpoint} records no class names: pass --dataset or --classes")
    if not len(classes) == len(folders) == model.num_classes:
        raise DataError(f"{len(folders)} class folders in {folder.root}, {len(classes)} class names, "
                        f"{model.num_classes} model outputs: they must agree")
    d = Dist(device=torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu")))
    model.to(d.device)
    loader = eval_loader(folder, args.batch_size, args.workers, d)
    result = evaluate_model(model, loader, len(classes), d, amp_enabled(args.amp, d.device), progress=True)
    print(f"{args.checkpoint} on {folder.root}:\n{result.report(classes)}")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"eval_{args.split}.json").write_text(json.dumps(result.as_dict(classes), indent=2) + "\n")
        plot_confusion(result, classes, out / f"confusion_{args.split}.png", f"{args.dataset or meta.get('dataset', '')} {args.split}")
        print(f"wrote {out}/eval_{args.split}.json, confusion_{args.split}.png")
    return result


def _command(name: str, fn: Callable[[argparse.Namespace], object]) -> Callable[[argparse.Namespace], int]:
    """CLI wrapper: data and checkpoint problems print one clear line and exit with status 2."""
    def run(args: argparse.Namespace) -> int:
        from .checkpoint import CheckpointError

        try:
            fn(args)
        except (DataError, CheckpointError) as err:
            print(f"poster-fast {name}: error: {err}", file=sys.stderr)
            return 2
        return 0
    return run


# ----------------------------------------------------------------------------- CLI


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="dataset root holding train/ and valid/ class folders")
    p.add_argument("--classes", help="comma-separated class names for the sorted class folders "
                                     "(instead of the dataset's official numbering)")
    p.add_argument("--image-size", type=int, default=224, help="images are resized to this (square)")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="data loader processes")
    p.add_argument("--device", help="cpu, cuda (default: cuda if available; torchrun: one GPU per process)")
    p.add_argument("--amp", choices=("auto", "bf16", "off"), default="auto",
                   help="bf16 autocast (auto: on CUDA GPUs that support it)")
    p.add_argument("--attn-backend", default="auto", help="W-MCSA backend (see poster_fast.ops)")
    p.add_argument("--trusted", action="store_true", help="unpickle files that hold Python objects")


def register(subparsers: Any) -> None:
    tables = "\n".join(f"  {d}: {label_table(d)}" for d in DATASETS)
    p = subparsers.add_parser(
        "train", help="train POSTER V2 on RAF-DB, AffectNet or CAER-S (torchrun for several GPUs)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train with the paper's recipe: SAM(rho 0.05) around Adam, ExponentialLR(0.98) per "
                    "epoch, 200 epochs, batch 144, flip + RandomErasing.\nLayout: DATA/train/<class>/*.jpg, "
                    "DATA/valid/<class>/*.jpg, class folders named by the official labels:\n" + tables +
                    "\nSeveral GPUs: torchrun --nproc_per_node N -m poster_fast train ...")
    p.add_argument("--dataset", required=True, choices=list(DATASETS), help="picks the recipe and class names")
    _common(p)
    p.add_argument("--out", help="output folder (default runs/<dataset>)")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=144, help="global batch, split across processes")
    p.add_argument("--lr", type=float, help="default per dataset: " +
                   ", ".join(f"{k} {v.lr:g}" for k, v in DATASETS.items()))
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--optimizer", choices=("sam-adam", "adam", "sam-adamw", "adamw"), default="sam-adam")
    p.add_argument("--rho", type=float, default=0.05, help="SAM neighbourhood size")
    p.add_argument("--gamma", type=float, default=0.98, help="ExponentialLR factor per epoch")
    p.add_argument("--plain", action="store_true",
                   help="train the unmodified model (default: poster_fast.optimize's checkpoint-neutral "
                        "speed-ups: SDPA in the ViT, channels-last, strided-slice shortcuts)")
    p.add_argument("--sampler", choices=("auto", "shuffle", "balanced"), default="auto",
                   help="auto: class-balanced for affectnet7/8 (as the authors), shuffled otherwise")
    p.add_argument("--val-split", default="valid", help="folder under DATA evaluated every epoch")
    p.add_argument("--test-split", help="held-out folder for the final evaluation "
                                        "(default: test if DATA/test exists, else the val split)")
    p.add_argument("--ir50", help="the authors' pretrained ir50.pth")
    p.add_argument("--landmark", help="the authors' mobilefacenet_model_best.pth.tar")
    p.add_argument("--resume", nargs="?", const="auto", metavar="LAST_PT",
                   help="continue from OUT/last.pt (or the file given)")
    p.add_argument("--max-steps", type=int, help="at most this many steps per epoch (smoke tests)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_command("train", train))

    e = subparsers.add_parser("evaluate", help="top-1, mean class accuracy and confusion matrix",
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              description="Evaluate a checkpoint on DATA/<split>/<class>/*.\n" + tables)
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--dataset", choices=list(DATASETS), help="default: the checkpoint's")
    e.add_argument("--split", default="valid")
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--out", help="write eval_<split>.json and confusion_<split>.png here")
    _common(e)
    e.set_defaults(func=_command("evaluate", evaluate))
