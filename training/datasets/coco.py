"""COCO object detection (torchvision's ``CocoDetection`` over pycocotools).

On disk (the folder names are templates of the data module; ``{split}`` is replaced by the
split)::

    root/
      images/                          image_dir (default "images"); for the official
        000000000139.jpg               COCO 2017 download use image_dir="{split}" with
        ...                            root/train2017/, root/val2017/
      annotations/
        instances_<split>.json         annotation_file (default
                                       "annotations/instances_{split}.json")

The annotation file is the standard COCO JSON: ``images`` (``id``, ``file_name`` relative to
the image folder, ``width``, ``height``), ``annotations`` (``image_id``, ``category_id``,
``bbox`` = ``[x, y, width, height]`` in pixels, ``iscrowd``) and ``categories`` (``id``,
``name``). pycocotools parses it; this module only turns each image's annotations into
tensors:

* boxes become ``xyxy`` = ``[x, y, x + width, y + height]``, clipped to the image; crowd
  annotations (``iscrowd = 1``) and boxes with no area after clipping are dropped;
* COCO category ids (1–90 with gaps in COCO itself) become contiguous indices ``0..K−1`` in
  increasing id order: ``category_ids[k]`` is the COCO id of index ``k``,
  ``category_to_index`` the inverse, ``class_names[k]`` its name.

Items: ``image`` (3, H, W) float32 in [0, 1], ``boxes`` (n, 4) float32 xyxy pixels,
``box_labels`` (n,) int64, ``index`` int64 scalar, ``image_id`` int64 scalar (COCO's id).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.datasets import CocoDetection

from featcodec.codec.errors import InputError
from featcodec.training.datasets.batch import collate, collate_scenes
from featcodec.training.datasets.datamodule import SplitDataModule
from featcodec.training.datasets.files import one_line, require_dir, require_file, to_float_rgb
from featcodec.training.datasets.resize import Fit, SizeArg, as_size, resize_item

_LIST_FIELDS = frozenset({"image", "boxes", "box_labels"})


def collate_detection(batch: Sequence[dict[str, Tensor]]) -> dict[str, Tensor | list[Tensor]]:
    """Batch detection items of any sizes: ``image``, ``boxes`` and ``box_labels`` become
    lists of length B (images ``(3, H_b, W_b)``, as torchvision's detection models take
    them); ``index`` and ``image_id`` are stacked to ``(B,)``."""
    return collate(batch, _LIST_FIELDS)


def coco_boxes(
    annotations: Sequence[dict[str, Any]],
    category_to_index: dict[int, int],
    width: int,
    height: int,
) -> tuple[Tensor, Tensor]:
    """Boxes ``(n, 4)`` float32 xyxy and labels ``(n,)`` int64 of COCO ``annotations`` on a
    ``width`` × ``height`` image (see the module docstring for what is dropped)."""
    boxes: list[list[float]] = []
    labels: list[int] = []
    for ann in annotations:
        if ann.get("iscrowd", 0):
            continue
        x, y, w, h = (float(v) for v in ann["bbox"])
        x1, y1 = min(max(x, 0.0), width), min(max(y, 0.0), height)
        x2, y2 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
        if x2 <= x1 or y2 <= y1:
            continue
        boxes.append([x1, y1, x2, y2])
        labels.append(category_to_index[int(ann["category_id"])])
    return (
        torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        torch.tensor(labels, dtype=torch.int64),
    )


class CocoDetectionDataset(Dataset):
    """COCO detection images and boxes; see the module docstring.

    Args:
        image_root: folder the ``file_name`` of each image is relative to.
        annotation_file: the COCO instances JSON.
        image_size: resize every item to ``N`` or ``(H, W)`` (boxes follow; see
            ``resize_item``); ``None`` keeps each image's own size.
        fit: ``"stretch"`` or ``"crop"``.
        category_ids: COCO category ids in index order; ``None`` takes the file's categories
            sorted by id. Pass the training split's to give every split the same indices.
    """

    def __init__(
        self,
        image_root: str | Path,
        annotation_file: str | Path,
        image_size: SizeArg = None,
        fit: Fit = "stretch",
        category_ids: Sequence[int] | None = None,
    ) -> None:
        self.image_root = require_dir(image_root, "COCO image folder")
        self.annotation_file = require_file(annotation_file, "COCO annotation file")
        self.image_size = as_size(image_size)
        self.fit = fit
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
                self.base = CocoDetection(str(self.image_root), str(self.annotation_file))
        except (ValueError, AssertionError, KeyError, TypeError) as e:
            raise InputError(
                f"{self.annotation_file}: not a COCO annotation file ({one_line(e)})"
            ) from None
        coco = self.base.coco
        if not self.base.ids:
            raise InputError(f"{self.annotation_file}: lists no images")
        names = {int(c["id"]): str(c.get("name", c["id"])) for c in coco.cats.values()}
        ids = sorted(names) if category_ids is None else [int(c) for c in category_ids]
        if not ids:
            raise InputError(f"{self.annotation_file}: lists no categories")
        self.category_ids: list[int] = ids
        self.category_to_index: dict[int, int] = {c: i for i, c in enumerate(ids)}
        self.class_names: list[str] = [names.get(c, str(c)) for c in ids]
        for ann in coco.anns.values():
            if int(ann["category_id"]) not in self.category_to_index:
                raise InputError(
                    f"{self.annotation_file}: annotation {ann.get('id')} has category id "
                    f"{ann['category_id']}, not among the categories {ids}"
                )

    @property
    def coco(self) -> Any:
        """The ``pycocotools.coco.COCO`` index of the annotation file."""
        return self.base.coco

    @property
    def num_classes(self) -> int:
        """Number of categories ``K``."""
        return len(self.category_ids)

    def __len__(self) -> int:
        return len(self.base.ids)

    def image_path(self, index: int) -> Path:
        """Path of the image of item ``index``."""
        info = self.base.coco.loadImgs(self.base.ids[index])[0]
        return self.image_root / info["file_name"]

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        """``image`` (3, H, W), ``boxes`` (n, 4) float32 xyxy, ``box_labels`` (n,) int64,
        ``index`` and ``image_id`` int64 scalars."""
        index = int(index)
        try:
            image, annotations = self.base[index]
        except FileNotFoundError:
            raise InputError(f"{self.image_path(index)}: image file not found") from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
            reason = "not an image" if isinstance(e, UnidentifiedImageError) else one_line(e)
            raise InputError(
                f"{self.image_path(index)}: cannot read as an image ({reason})"
            ) from None
        boxes, labels = coco_boxes(annotations, self.category_to_index, *image.size)
        item = {
            "image": to_float_rgb(image),
            "boxes": boxes,
            "box_labels": labels,
            "index": torch.tensor(index, dtype=torch.int64),
            "image_id": torch.tensor(int(self.base.ids[index]), dtype=torch.int64),
        }
        return resize_item(item, self.image_size, self.fit)


class CocoDataModule(SplitDataModule):
    """COCO detection splits (see the module docstring). With ``image_size`` the batches
    stack like the synthetic scenes' (``collate_scenes``: ``image`` (B, 3, H, W), ``boxes`` and
    ``box_labels`` lists); without it images keep their sizes and ``collate_detection`` makes
    them a list too.

    Every split uses ``category_ids`` when given; otherwise each split takes its own file's
    categories and ``setup`` refuses a validation file whose categories differ from the
    training file's.
    """

    def __init__(
        self,
        root: str,
        train_split: str = "train2017",
        val_split: str | None = "val2017",
        test_split: str | None = None,
        image_dir: str = "images",
        annotation_file: str = "annotations/instances_{split}.json",
        image_size: int | tuple[int, int] | None = None,
        fit: Fit = "stretch",
        category_ids: list[int] | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        seed: int = 0,
    ) -> None:
        super().__init__(
            train_split, val_split, test_split, val_fraction, batch_size, num_workers, seed
        )
        self.save_hyperparameters()
        self.root = Path(root)
        self.image_dir = image_dir
        self.annotation_file = annotation_file
        self.image_size = image_size
        self.fit = fit
        self.category_ids = category_ids

    def make_dataset(self, split: str | None) -> CocoDetectionDataset:
        """The images and annotations of ``split``."""
        name = str(split)
        return CocoDetectionDataset(
            self.root / self.image_dir.format(split=name),
            self.root / self.annotation_file.format(split=name),
            self.image_size,
            self.fit,
            self.category_ids,
        )

    def setup(self, stage: str | None = None) -> None:
        """Create the split datasets and check that their categories agree."""
        super().setup(stage)
        found = [
            d
            for d in (self.train_set, self.val_set, self.test_set)
            if isinstance(d, CocoDetectionDataset)
        ]
        for other in found[1:]:
            if other.category_ids != found[0].category_ids:
                raise InputError(
                    f"{other.annotation_file}: categories {other.category_ids} differ from "
                    f"those of {found[0].annotation_file} ({found[0].category_ids}); "
                    "set category_ids"
                )

    @property
    def num_classes(self) -> int:
        """Number of categories (of the training split, or ``category_ids``)."""
        if self.category_ids is not None:
            return len(self.category_ids)
        if self.train_set is None:
            self.setup("fit")
        dataset = self.train_set
        while not isinstance(dataset, CocoDetectionDataset):
            dataset = dataset.dataset  # type: ignore[union-attr]  # a held-out Subset
        return dataset.num_classes

    def batch_function(self) -> Callable[[Sequence[dict[str, Any]]], dict[str, Any]]:
        """``collate_scenes`` with ``image_size``, else ``collate_detection``."""
        return collate_detection if self.image_size is None else collate_scenes
