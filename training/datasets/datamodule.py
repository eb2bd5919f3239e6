"""Lightning data modules: loaders over three datasets, and the named splits of an on-disk one.

``SetsDataModule`` makes the train / val / test loaders of ``train_set`` / ``val_set`` /
``test_set`` (created by ``setup(stage)`` on first use), batched by ``batch_function()``; the
synthetic data modules and ``SplitDataModule`` build on it.

Each real-data module (``ImageFolderDataModule``, ``CocoDataModule``,
``CityscapesDataModule``, ``VideoFramesDataModule``) subclasses ``SplitDataModule`` with the
arguments of its dataset, builds one dataset per split in ``make_dataset`` and names its batch
function in ``batch_function`` (a module-level function, so that loader workers can
pickle it). The splits are names the dataset understands (``"train"``,
``"val2017"``, a sub-folder, …):

* ``train_split`` and ``val_split`` name the training and validation data;
* ``val_split=None`` holds out a seeded ``val_fraction`` of the training items instead (for
  datasets that come without a validation split);
* ``test_split`` names the test data; without it ``test_dataloader`` refuses.

A batch whose items cannot be stacked (images of different sizes with no ``image_size``)
raises ``InputError`` saying so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from featcodec.codec.errors import InputError


class _Collate:
    """Picklable batch function that turns the stack error of mixed sizes into an
    ``InputError``."""

    def __init__(self, collate: Callable[[Sequence[dict[str, Any]]], dict[str, Any]]) -> None:
        self.collate = collate

    def __call__(self, batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
        try:
            return self.collate(batch)
        except RuntimeError as e:
            if "equal size" not in str(e):
                raise
            raise InputError(
                f"cannot stack a batch of items of different sizes; set image_size ({e})"
            ) from None


class SetsDataModule(pl.LightningDataModule):
    """Train / val / test loaders over ``train_set``, ``val_set`` and ``test_set``, which a
    subclass creates in ``setup(stage)`` (called here when a set is missing), batched by its
    ``batch_function()``; ``batch_size`` and ``num_workers`` are the subclass's attributes."""

    batch_size: int
    num_workers: int
    train_set: Dataset | None
    val_set: Dataset | None
    test_set: Dataset | None

    def batch_function(self) -> Callable[[Sequence[dict[str, Any]]], dict[str, Any]]:
        """The function that batches a list of items."""
        raise NotImplementedError

    def collate_fn(self) -> Callable[[Sequence[dict[str, Any]]], dict[str, Any]]:
        """What the loaders batch with: ``batch_function()`` itself."""
        return self.batch_function()

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=False,
            num_workers=self.num_workers,
            collate_fn=self.collate_fn(),
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches; the last one may be short."""
        if self.train_set is None:
            self.setup("fit")
        assert self.train_set is not None
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches in a fixed order."""
        if self.val_set is None:
            self.setup("validate")
        assert self.val_set is not None
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Test batches in a fixed order."""
        if self.test_set is None:
            self.setup("test")
        assert self.test_set is not None
        return self._loader(self.test_set, shuffle=False)


class SplitDataModule(SetsDataModule):
    """Train / val / test loaders over ``make_dataset(split)``; see the module docstring."""

    def __init__(
        self,
        train_split: str | None,
        val_split: str | None,
        test_split: str | None,
        val_fraction: float,
        batch_size: int,
        num_workers: int,
        seed: int,
    ) -> None:
        super().__init__()
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        self.train_split = train_split
        self.val_split = val_split
        self.test_split = test_split
        self.val_fraction = float(val_fraction)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.seed = int(seed)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    # -- what a subclass provides ---------------------------------------------------------

    def make_dataset(self, split: str | None) -> Dataset:
        """The dataset of ``split``."""
        raise NotImplementedError

    # -- splits -----------------------------------------------------------------------------

    def _held_out(self) -> tuple[Dataset, Dataset]:
        """Training and validation subsets of the training split (seeded permutation)."""
        full = self.make_dataset(self.train_split)
        n = len(full)  # type: ignore[arg-type]
        n_val = min(n - 1, max(1, round(n * self.val_fraction)))
        if n_val < 1:
            raise InputError(
                f"split {self.train_split!r}: {n} item(s) cannot be divided into train and val"
            )
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed)).tolist()
        return Subset(full, order[n_val:]), Subset(full, order[:n_val])

    def setup(self, stage: str | None = None) -> None:
        """Create the datasets needed for ``stage`` (all configured ones when ``None``)."""
        if stage in (None, "fit", "validate") and self.val_set is None:
            if self.val_split is None:
                self.train_set, self.val_set = self._held_out()
            else:
                self.val_set = self.make_dataset(self.val_split)
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = self.make_dataset(self.train_split)
        if stage in (None, "test") and self.test_set is None and self.test_split is not None:
            self.test_set = self.make_dataset(self.test_split)

    # -- loaders ----------------------------------------------------------------------------

    def collate_fn(self) -> Callable[[Sequence[dict[str, Any]]], dict[str, Any]]:
        """``batch_function()``, reporting items of mixed sizes as an ``InputError``."""
        return _Collate(self.batch_function())

    def test_dataloader(self) -> DataLoader:
        """Test batches in a fixed order (needs ``test_split``)."""
        if self.test_split is None:
            raise InputError(f"{type(self).__name__}: no test_split configured")
        return super().test_dataloader()
