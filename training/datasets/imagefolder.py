"""Image classification from a folder per class (torchvision's ``ImageFolder`` layout).

On disk::

    root/
      <split>/                 e.g. train/, val/ (the data module's splits; any names)
        <class_a>/             one folder per class; its name is the class
          img001.jpg           images with torchvision's suffixes (.jpg .jpeg .png .ppm .bmp
          ...                  .pgm .tif .tiff .webp), in any sub-folder depth below the class
        <class_b>/...

Classes are the sorted names of the class folders of the *training* split (folders whose
names start with ``.`` are ignored); the data module hands that list to the other splits, so a
class has the same index in every split even when a validation split lacks a class. A class
folder that is not in that list is refused.

Items follow the project's common format (see ``training.datasets.synthetic``):
``image`` (3, H, W) float32 in [0, 1], ``label`` int64 scalar (the class index), ``index``
int64 scalar; ``collate_scenes`` batches them once ``image_size`` makes them one size.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder

from featcodec.codec.errors import InputError
from featcodec.training.datasets.batch import collate_scenes
from featcodec.training.datasets.datamodule import SplitDataModule
from featcodec.training.datasets.files import read_rgb, require_dir, visible_entries
from featcodec.training.datasets.resize import Fit, SizeArg, as_size, resize_item


def class_folders(root: str | Path) -> list[str]:
    """Sorted names of the class folders directly under ``root`` (hidden ones ignored)."""
    folder = require_dir(root, "image folder")
    return sorted(p.name for p in visible_entries(folder) if p.is_dir())


class _ClassFolders(ImageFolder):
    """``ImageFolder`` whose classes are given (or the visible sub-folders, sorted)."""

    def __init__(self, root: Path, classes: Sequence[str] | None) -> None:
        self._given = None if classes is None else list(classes)
        super().__init__(str(root), allow_empty=True)

    def find_classes(self, directory: str | os.PathLike) -> tuple[list[str], dict[str, int]]:
        found = class_folders(directory)
        if not found:
            raise InputError(f"{directory}: no class folders (expected <root>/<class>/<image>)")
        classes = found if self._given is None else self._given
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise InputError(
                f"{directory}: class folder(s) {', '.join(unknown)} not among the "
                f"{len(classes)} classes of the training split"
            )
        return classes, {name: i for i, name in enumerate(classes)}


class ImageFolderClassification(Dataset):
    """Images and class labels from ``root/<class>/<image>``; see the module docstring.

    Args:
        root: the folder holding one folder per class.
        image_size: resize every image to ``N`` or ``(H, W)`` (see ``resize_item``); ``None``
            keeps each image's own size.
        fit: ``"stretch"`` or ``"crop"`` (keep the aspect ratio, crop the centre).
        classes: class names in index order; ``None`` takes the sorted class folders.
    """

    def __init__(
        self,
        root: str | Path,
        image_size: SizeArg = None,
        fit: Fit = "stretch",
        classes: Sequence[str] | None = None,
    ) -> None:
        self.root = require_dir(root, "image folder")
        self.image_size = as_size(image_size)
        self.fit = fit
        self.folder = _ClassFolders(self.root, classes)
        if not self.folder.samples:
            raise InputError(f"{self.root}: class folders hold no images")

    @property
    def classes(self) -> list[str]:
        """Class names; a label is the position in this list."""
        return list(self.folder.classes)

    @property
    def class_to_idx(self) -> dict[str, int]:
        """Class name → label."""
        return dict(self.folder.class_to_idx)

    @property
    def num_classes(self) -> int:
        """Number of classes (including any without images in this folder)."""
        return len(self.folder.classes)

    @property
    def samples(self) -> list[tuple[str, int]]:
        """``(path, label)`` of every image, in ``ImageFolder``'s order."""
        return list(self.folder.samples)

    def __len__(self) -> int:
        return len(self.folder.samples)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        """``image`` (3, H, W) float32, ``label`` int64 (), ``index`` int64 ()."""
        index = int(index)
        path, label = self.folder.samples[index]
        item = {
            "image": read_rgb(path),
            "label": torch.tensor(label, dtype=torch.int64),
            "index": torch.tensor(index, dtype=torch.int64),
        }
        return resize_item(item, self.image_size, self.fit)


class ImageFolderDataModule(SplitDataModule):
    """Classification splits ``root/<split>/<class>/<image>`` (see the module docstring),
    batched with ``collate_scenes``: ``image`` (B, 3, H, W), ``label`` (B,), ``index`` (B,).

    ``val_split=None`` holds out ``val_fraction`` of the training images; ``image_size`` is
    needed unless every image already has the same size.
    """

    def __init__(
        self,
        root: str,
        train_split: str = "train",
        val_split: str | None = "val",
        test_split: str | None = None,
        image_size: int | tuple[int, int] | None = None,
        fit: Fit = "stretch",
        batch_size: int = 32,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        seed: int = 0,
    ) -> None:
        super().__init__(
            train_split, val_split, test_split, val_fraction, batch_size, num_workers, seed
        )
        self.save_hyperparameters()
        self.root = Path(root)
        self.image_size = image_size
        self.fit = fit
        self._classes: list[str] | None = None

    @property
    def classes(self) -> list[str]:
        """Class names, from the training split's class folders."""
        if self._classes is None:
            train = require_dir(self.root / str(self.train_split), "training split")
            self._classes = class_folders(train)
            if not self._classes:
                raise InputError(f"{train}: no class folders (expected <root>/<class>/<image>)")
        return self._classes

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    def make_dataset(self, split: str | None) -> ImageFolderClassification:
        """The images of ``root/<split>`` with the training split's classes."""
        folder = require_dir(self.root / str(split), f"split {split!r}")
        return ImageFolderClassification(folder, self.image_size, self.fit, self.classes)

    def batch_function(self) -> Callable[[Sequence[dict[str, Any]]], dict[str, Any]]:
        """``collate_scenes``."""
        return collate_scenes
