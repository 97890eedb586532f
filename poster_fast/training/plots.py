"""Training curves and confusion matrices as PNG files (matplotlib, imported when drawing)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..files import write_file
from .metrics import EvalResult


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(result: EvalResult, classes: list[str], path: Path, title: str) -> None:
    plt = _pyplot()
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
    _save(plt, fig, path)


def plot_curves(rows: list[dict[str, Any]], path: Path) -> None:
    """Loss and accuracy per epoch from the metrics rows."""
    plt = _pyplot()
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
    _save(plt, fig, path)


def _save(plt: Any, fig: Any, path: Path) -> None:
    """`fig` as a PNG at `path` (files.write_file); the figure is closed either way."""
    fig.tight_layout()
    try:
        write_file(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    finally:
        plt.close(fig)
