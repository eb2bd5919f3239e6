"""The data an evaluation runs on: a split of any data module, streamed batch by batch.

``featcodec eval rd`` measures codecs and anchors on the embedded synthetic scenes by default,
or on the split of any data module a YAML config names (the snippets in
``configs/datasets/``: ImageFolder, COCO, Cityscapes; ``data: {class_path, init_args}``)::

    featcodec eval rd runs/demo --data configs/datasets/imagefolder.yaml \\
        --data-root /data/imagenet --split val

Items are read, collated and dropped one batch at a time (a ``DataLoader`` in a fixed order),
so memory does not grow with the split; every figure of a point comes from one pass.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from torch.utils.data import DataLoader, Dataset

from featcodec.codec.errors import InputError

SPLITS = ("train", "val", "test")
_STAGES = {"train": "fit", "val": "validate", "test": "test"}


@dataclass
class EvalData:
    """A dataset split streamed for evaluation, with what describes it.

    Attributes:
        dataset: the items (dicts with ``image`` (3, H, W) in [0, 1] and the task's targets).
        collate: the function that batches them (a :class:`~models.tasks.Batch`).
        num_classes: classes of the dataset.
        info: name, split, size (and what else identifies it), for results files.
        num_workers: loader processes.
    """

    dataset: Dataset
    collate: Callable[[list[dict[str, Any]]], dict[str, Any]]
    num_classes: int
    info: dict[str, Any]
    num_workers: int = 0

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def keys(self) -> frozenset[str]:
        """The fields of an item (the first one's)."""
        if len(self) == 0:
            raise InputError(f"{self.info['name']} {self.info['split']}: the split is empty")
        return frozenset(self.dataset[0])

    def batches(self, size: int) -> Iterator[dict[str, Any]]:
        """The items in order, collated into batches of ``size``, one batch in memory at a
        time."""
        loader = DataLoader(
            self.dataset,
            batch_size=size,
            shuffle=False,
            collate_fn=self.collate,
            num_workers=self.num_workers,
        )
        yield from loader

    @classmethod
    def of_datamodule(cls, module: pl.LightningDataModule, split: str) -> EvalData:
        """The ``split`` of a data module with ``<split>_set`` datasets (every data module of
        ``training.datasets``)."""
        if split not in SPLITS:
            raise InputError(f"unknown split {split!r}; use {', '.join(SPLITS)}")
        module.setup(_STAGES[split])
        dataset = getattr(module, f"{split}_set", None)
        if dataset is None:
            raise InputError(f"{type(module).__name__} has no {split} split")
        hparams = {k: v for k, v in dict(getattr(module, "hparams", {})).items() if _plain(v)}
        info = {
            "name": type(module).__name__,
            **{k: v for k, v in hparams.items() if k not in ("batch_size", "num_workers")},
            "split": split,
            "size": len(dataset),
        }
        collate = module.collate_fn() if hasattr(module, "collate_fn") else module.batch_function()
        return cls(
            dataset, collate, int(module.num_classes), info, getattr(module, "num_workers", 0)
        )


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool | list | tuple)


def synthetic_eval_set(
    split: str = "test",
    size: int = 300,
    image_size: int = 48,
    seed: int = 0,
    tilt: float = 0.0,
    fog: float = 0.0,
) -> EvalData:
    """``size`` scenes of the embedded synthetic dataset's ``split`` (rendered when read, not
    kept); ``tilt``, ``fog``: the scenes' 3-D options (:mod:`training.datasets.synthetic.pose`,
    0 for the default scenes)."""
    from featcodec.training.datasets import SHAPE_CLASSES, SyntheticScenes, collate_scenes

    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; use {', '.join(SPLITS)}")
    if size < 1 or image_size < 8:
        raise InputError("the dataset needs at least 1 image of at least 8×8 pixels")
    try:
        data = SyntheticScenes(split, size, image_size, seed, cache=False, tilt=tilt, fog=fog)
    except ValueError as e:
        raise InputError(str(e)) from None
    info: dict[str, Any] = {
        "name": "synthetic-scenes",
        "split": split,
        "size": size,
        "image_size": image_size,
        "seed": seed,
    }
    if tilt or fog:  # the default scenes' results files are as before
        info.update(tilt=tilt, fog=fog)
    return EvalData(data, collate_scenes, len(SHAPE_CLASSES), info)


def data_module_from_config(
    path: str | Path, root: str | None = None, batch_size: int | None = None
) -> pl.LightningDataModule:
    """The data module a YAML config names (``data: {class_path, init_args}``, as in
    ``configs/datasets/``), with ``init_args.root`` replaced by ``root`` when given; only a
    :class:`lightning.pytorch.LightningDataModule` class is accepted."""
    import yaml

    try:
        config = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise InputError(f"{path}: not valid YAML ({' '.join(str(e).split())[:160]})") from None
    data = config.get("data") if isinstance(config, dict) else None
    if not isinstance(data, dict) or not isinstance(data.get("class_path"), str):
        raise InputError(f"{path}: expected a 'data:' entry with a class_path and init_args")
    module_name, _, class_name = data["class_path"].rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError):
        raise InputError(f"{path}: cannot import {data['class_path']}") from None
    if not (isinstance(cls, type) and issubclass(cls, pl.LightningDataModule)):
        raise InputError(f"{path}: {data['class_path']} is not a Lightning data module")
    args = dict(data.get("init_args") or {})
    if root is not None:
        args["root"] = root
    if batch_size is not None and "batch_size" in args:
        args["batch_size"] = batch_size
    try:
        return cls(**args)
    except TypeError as e:
        raise InputError(f"{path}: {e}") from None
