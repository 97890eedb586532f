"""Label tables and training recipes of the datasets, and the one place class names are resolved.

A model's output i is the i-th class folder in sorted order (ImageFolder), so class names come
from the dataset's official label numbering, which the folder names must follow, or from
names given explicitly. Standard library only (command help texts use these tables).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ..checks import NUM_CLASSES, check_names
from ..errors import DataError


@dataclass(frozen=True)
class DatasetRecipe:
    """One dataset's label convention and the authors' training recipe for it (their main.py)."""

    name: str
    folders: tuple[str, ...]  # expected class folder names = official labels, sorted order
    classes: tuple[str, ...]  # class name of each folder, same order (= ImageFolder index)
    lr: float
    erase_p: float
    erase_scale: tuple[float, float]
    balanced: bool  # class-balanced sampler (torchsampler.ImbalancedDatasetSampler upstream)


_AFFECTNET = ("Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger", "Contempt")
_CAERS = ("Anger", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise")

DATASETS: dict[str, DatasetRecipe] = {
    "rafdb": DatasetRecipe(
        "rafdb", tuple("1234567"),
        ("Surprise", "Fear", "Disgust", "Happiness", "Sadness", "Anger", "Neutral"),
        lr=3.5e-5, erase_p=0.5, erase_scale=(0.02, 0.1), balanced=False),
    "affectnet7": DatasetRecipe(
        "affectnet7", tuple("0123456"), _AFFECTNET[:7],
        lr=1e-6, erase_p=1.0, erase_scale=(0.05, 0.05), balanced=True),
    "affectnet8": DatasetRecipe(
        "affectnet8", tuple("01234567"), _AFFECTNET,
        lr=1e-6, erase_p=1.0, erase_scale=(0.05, 0.05), balanced=True),
    # CAER-S ships folders named by emotion; numeric folders 0..6 are taken in this order.
    "caers": DatasetRecipe(
        "caers", _CAERS, _CAERS,
        lr=4e-5, erase_p=1.0, erase_scale=(0.05, 0.05), balanced=False),
}


def get_recipe(name: str) -> DatasetRecipe:
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}") from None


def label_table(name: str) -> str:
    """'index: folder = class' for every class, for help texts and error messages."""
    r = get_recipe(name)
    return ", ".join(f"{i}: folder {f} = {c}" for i, (f, c) in enumerate(zip(r.folders, r.classes)))


def resolve_classes(dataset: str, folders: Sequence[str],
                    override: Sequence[str] | None = None) -> list[str]:
    """Class names for ImageFolder indices given the class folders found (sorted).

    The dataset's official numbering must match the folder names exactly, so that a
    0-based copy of RAF-DB (or any other relabelling) is refused instead of silently
    mislabelled; `override` names the classes explicitly instead.
    """
    if len(folders) < NUM_CLASSES.low:
        raise DataError(f"{len(folders)} class folder ({', '.join(folders)}): a classifier needs at least "
                        f"{NUM_CLASSES.low:g} classes, each a folder of images")
    if override:
        if len(override) != len(folders):
            raise DataError(f"--classes gives {len(override)} names but there are "
                            f"{len(folders)} class folders ({', '.join(folders)})")
        return list(override)
    r = get_recipe(dataset)
    if dataset == "caers":
        lower = [f.lower() for f in folders]
        if lower == [c.lower() for c in r.classes]:
            return list(r.classes)
        if list(folders) == [str(i) for i in range(len(r.classes))]:
            return list(r.classes)
    elif list(folders) == list(r.folders):
        return list(r.classes)
    raise DataError(
        f"class folders {', '.join(folders)} do not match the {dataset} label numbering "
        f"({label_table(dataset)}); rename the folders or name the classes with --classes")


def class_names(num_classes: int, recorded: Mapping[str, Any], dataset: str | None = None,
                override: Sequence[str] | None = None,
                folders: Sequence[str] | None = None) -> list[str]:
    """Names of a trained model's outputs: `override` (--classes), else `dataset`'s table, else
    the names the checkpoint `recorded`, else the table of the dataset it recorded.

    With `folders` (the sorted class folders of a split to evaluate on) the folders must follow
    the label numbering the names come from. Raises DataError when no source names the
    classes or the counts disagree.
    """
    numbering = None  # the dataset whose label numbering the folders must follow
    if override:
        names, source = list(override), "--classes"
    elif dataset:
        names, source, numbering = list(get_recipe(dataset).classes), f"--dataset {dataset}", dataset
    elif recorded.get("classes"):
        names, source = list(recorded["classes"]), "the checkpoint"
        official = DATASETS.get(recorded.get("dataset") or "")
        if official is not None and names == list(official.classes):
            numbering = official.name
    elif recorded.get("dataset") in DATASETS:
        numbering = recorded["dataset"]
        names, source = list(DATASETS[numbering].classes), f"dataset {numbering}"
    else:
        raise DataError("the checkpoint records no class names: pass --dataset or --classes")
    if folders is not None:
        if numbering:
            resolve_classes(numbering, folders)
        if len(names) != len(folders):
            raise DataError(f"{source} gives {len(names)} classes but there are {len(folders)} "
                            f"class folders ({', '.join(folders)})")
    if len(names) != num_classes:
        raise DataError(f"{source} gives {len(names)} classes but the model has {num_classes}")
    try:
        return check_names(source, names)
    except (TypeError, ValueError) as err:
        raise DataError(str(err)) from None
