"""The data of a training run: DATA/train, the validation split and the final evaluation's split,
with the same class folders, named by the dataset, every image file checked before training."""
from __future__ import annotations

from dataclasses import dataclass

from ..data.datasets import ImageFolder, check_same_classes, split_dir
from ..data.labels import DatasetRecipe, get_recipe, resolve_classes
from ..data.transforms import ToNormalizedTensor, TrainTransform
from .options import TrainOptions, test_split


@dataclass
class TrainData:
    recipe: DatasetRecipe
    train_set: ImageFolder
    val_set: ImageFolder
    test_set: ImageFolder | None  # the final evaluation's split when it is not the val split
    classes: list[str]  # the name of each class folder, in sorted folder order

    @classmethod
    def load(cls, opts: TrainOptions) -> "TrainData":
        """DATA/train, the val split and the test split, with the same class folders, named by the
        dataset; every image file is opened (the evaluated splits decoded) before training."""
        recipe = get_recipe(opts.dataset)
        train_set = ImageFolder(split_dir(opts.data, "train"),
                                TrainTransform(opts.image_size, recipe.erase_p, recipe.erase_scale))
        val_set = ImageFolder(split_dir(opts.data, opts.val_split), ToNormalizedTensor(opts.image_size))
        check_same_classes(train_set, val_set)
        split = test_split(opts)
        test_set = None
        if split != opts.val_split:
            test_set = ImageFolder(split_dir(opts.data, split), ToNormalizedTensor(opts.image_size))
            check_same_classes(train_set, test_set)
        classes = resolve_classes(opts.dataset, train_set.folders, opts.classes)
        train_set.check_images(decode=False)
        for folder in (val_set, test_set):
            if folder is not None:
                folder.check_images(decode=True)
        return cls(recipe, train_set, val_set, test_set, classes)
