"""Cityscapes semantic segmentation and depth (torchvision's ``Cityscapes`` plus disparity).

On disk, the layout of the official downloads (leftImg8bit_trainvaltest, gtFine_trainvaltest,
disparity_trainvaltest, camera_trainvaltest), ``<name>`` = ``<city>_<seq>_<frame>``::

    root/
      leftImg8bit/<split>/<city>/<name>_leftImg8bit.png    RGB image (8-bit)
      gtFine/<split>/<city>/<name>_gtFine_labelIds.png     label ids (8-bit grey)
      disparity/<split>/<city>/<name>_disparity.png        disparity (16-bit grey)
      camera/<split>/<city>/<name>_camera.json             calibration

``split`` is ``train``, ``val`` or ``test`` (``mode="fine"``) or ``train``, ``train_extra``,
``val`` (``mode="coarse"``, gtCoarse). torchvision's ``Cityscapes`` lists the images and
their label files; disparity and camera files are read here, beside it.

``mask``: label ids mapped to the 19 *train ids* of the official cityscapesScripts label
definitions (``labels.py``; torchvision's ``Cityscapes.classes`` carries the same table, and
``CITYSCAPES_TRAIN_IDS`` is built from it), every other id to ``IGNORE_INDEX`` = 255:

======  ===============  ======  ===============  ======  ===============
id      train id, name   id      train id, name   id      train id, name
======  ===============  ======  ===============  ======  ===============
7       0 road           20      7 traffic sign   26      13 car
8       1 sidewalk       21      8 vegetation     27      14 truck
11      2 building       22      9 terrain        28      15 bus
12      3 wall           23      10 sky           31      16 train
13      4 fence          24      11 person        32      17 motorcycle
17      5 pole           25      12 rider         33      18 bicycle
19      6 traffic light
======  ===============  ======  ===============  ======  ===============

Ignored (255): 0 unlabeled, 1 ego vehicle, 2 rectification border, 3 out of roi, 4 static,
5 dynamic, 6 ground, 9 parking, 10 rail track, 14 guard rail, 15 bridge, 16 tunnel,
18 polegroup, 29 caravan, 30 trailer, −1 license plate (and any other value). These train
ids with 255 = ignore are the convention of Cityscapes benchmarks (``ignore_index=255`` in the
loss): ``mask_format="train_ids"``, the default. The project's own segmentation heads, loss
and mIoU (``models.tasks``) follow the synthetic scenes instead (0 =
background, class + 1, no ignore index; a target of 255 is out of range there):
``mask_format="scene"`` gives ``train id + 1`` (1–19) and ``0`` for every ignored pixel, so
those pixels are learned and scored as a 20th "void" class.

``depth`` (metres): the disparity PNG stores ``p = 256·d + 1`` for a disparity of ``d``
pixels, ``p = 0`` where unknown, so ``d = (p − 1) / 256`` and
``depth = baseline · fx / d`` with ``extrinsic.baseline`` (metres) and ``intrinsic.fx``
(pixels) from the camera JSON. Unknown pixels (``p = 0``) and zero disparity (``p = 1``,
infinitely far) get depth ``0``, which marks them invalid; mask them out of depth losses.

Items: ``image`` (3, H, W) float32 in [0, 1], ``mask`` (H, W) int64 train ids,
``depth`` (H, W) float32, ``index`` int64 scalar; ``collate_scenes`` batches them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.datasets import Cityscapes

from featcodec.codec.errors import InputError
from featcodec.training.datasets.batch import collate_scenes
from featcodec.training.datasets.datamodule import SplitDataModule
from featcodec.training.datasets.files import (
    one_line,
    read_array,
    read_rgb,
    require_dir,
    require_file,
)
from featcodec.training.datasets.resize import Fit, SizeArg, as_size, resize_item

IGNORE_INDEX = 255
"""Train id of every pixel that is not one of the 19 evaluated classes."""


def _train_id_table() -> tuple[np.ndarray, tuple[str, ...]]:
    lut = np.full(256, IGNORE_INDEX, dtype=np.int64)
    names: dict[int, str] = {}
    for c in Cityscapes.classes:
        if 0 <= c.id < 256 and 0 <= c.train_id < IGNORE_INDEX:
            lut[c.id] = c.train_id
            names[c.train_id] = c.name
    return lut, tuple(names[i] for i in range(len(names)))


CITYSCAPES_TRAIN_IDS, CITYSCAPES_CLASSES = _train_id_table()
"""``CITYSCAPES_TRAIN_IDS`` (256,) int64: label id → train id (255 ignore);
``CITYSCAPES_CLASSES``: the 19 class names in train-id order."""
CITYSCAPES_TRAIN_IDS.flags.writeable = False

MaskFormat = Literal["train_ids", "scene"]
"""``"train_ids"``: 0–18, 255 ignore; ``"scene"``: 0 void, train id + 1 (see the docstring)."""

_SPLITS = {"fine": ("train", "val", "test"), "coarse": ("train", "train_extra", "val")}
_IMAGE_SUFFIX = "_leftImg8bit.png"


def train_ids(label_ids: np.ndarray, mask_format: MaskFormat = "train_ids") -> Tensor:
    """Label ids ``(H, W)`` (any integer type) → train ids ``(H, W)`` int64, 255 = ignore
    (``mask_format="scene"``: train id + 1, 0 = ignore)."""
    ids = CITYSCAPES_TRAIN_IDS[np.clip(label_ids.astype(np.int64), 0, 255)]
    if mask_format == "scene":
        ids = np.where(ids == IGNORE_INDEX, 0, ids + 1)
    return torch.from_numpy(ids)


def disparity_to_depth(stored: np.ndarray, baseline: float, fx: float) -> Tensor:
    """Depth ``(H, W)`` float32 (metres, 0 = invalid) from a stored disparity PNG ``(H, W)``
    (uint16, ``p = 256·d + 1``, 0 unknown): ``baseline · fx / ((p − 1) / 256)``."""
    p = stored.astype(np.float64)
    disparity = (p - 1.0) / 256.0
    valid = disparity > 0.0
    depth = np.zeros_like(p)
    depth[valid] = baseline * fx / disparity[valid]
    return torch.from_numpy(depth.astype(np.float32))


def read_camera(path: Path) -> tuple[float, float]:
    """``(baseline, fx)`` from a Cityscapes camera JSON (``extrinsic.baseline`` in metres,
    ``intrinsic.fx`` in pixels)."""
    require_file(path, "camera file")
    try:
        with open(path, encoding="utf-8") as f:
            camera = json.load(f)
        baseline = float(camera["extrinsic"]["baseline"])
        fx = float(camera["intrinsic"]["fx"])
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(
            f"{path}: not a Cityscapes camera file with extrinsic.baseline and intrinsic.fx "
            f"({one_line(e)})"
        ) from None
    if not (baseline > 0.0 and fx > 0.0):
        raise InputError(f"{path}: baseline {baseline} and fx {fx} must be positive")
    return baseline, fx


class CityscapesSegmentationDepth(Dataset):
    """Cityscapes images with train-id masks and depth; see the module docstring.

    Args:
        root: the folder holding ``leftImg8bit/``, ``gtFine/`` (or ``gtCoarse/``),
            ``disparity/`` and ``camera/``.
        split: ``train``, ``val`` or ``test`` (``train_extra`` with ``mode="coarse"``).
        mode: ``"fine"`` (gtFine) or ``"coarse"`` (gtCoarse).
        image_size: resize every item to ``N`` or ``(H, W)`` (bilinear image, nearest mask,
            valid-only bilinear depth; see ``resize_item``); ``None`` keeps 1024 × 2048.
        fit: ``"stretch"`` or ``"crop"``.
        semantic: load ``mask``.
        depth: load ``depth`` (needs ``disparity/`` and ``camera/``).
        mask_format: ``"train_ids"`` (0–18, 255 ignore) or ``"scene"`` (0 void, train id + 1,
            for the project's segmentation heads); see the module docstring.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        mode: Literal["fine", "coarse"] = "fine",
        image_size: SizeArg = None,
        fit: Fit = "stretch",
        semantic: bool = True,
        depth: bool = True,
        mask_format: MaskFormat = "train_ids",
    ) -> None:
        self.root = require_dir(root, "Cityscapes root")
        if mask_format not in ("train_ids", "scene"):
            raise InputError(f"mask_format must be 'train_ids' or 'scene', got {mask_format!r}")
        self.mask_format = mask_format
        if mode not in _SPLITS:
            raise InputError(f"{self.root}: mode must be 'fine' or 'coarse', got {mode!r}")
        if split not in _SPLITS[mode]:
            raise InputError(
                f"{self.root}: no split {split!r} in Cityscapes {mode} "
                f"(splits: {', '.join(_SPLITS[mode])})"
            )
        self.split = split
        self.mode = mode
        self.image_size = as_size(image_size)
        self.fit = fit
        self.semantic = semantic
        self.depth = depth
        images_dir = require_dir(self.root / "leftImg8bit" / split, f"{split} image folder")
        gt = "gtFine" if mode == "fine" else "gtCoarse"
        require_dir(self.root / gt / split, f"{split} label folder")
        for city in images_dir.iterdir():
            if not city.is_dir():
                raise InputError(f"{city}: expected only city folders in {images_dir}")
        self.base = Cityscapes(str(self.root), split, mode, target_type="semantic")

        pairs = sorted(
            (image, target[0])
            for image, target in zip(self.base.images, self.base.targets, strict=True)
            if image.endswith(_IMAGE_SUFFIX)
        )
        if not pairs:
            raise InputError(f"{images_dir}: no *{_IMAGE_SUFFIX} images in its city folders")
        self.images: list[Path] = [Path(image) for image, _ in pairs]
        self.labels: list[Path] = [Path(label) for _, label in pairs]
        self.disparities: list[Path] = []
        self.cameras: list[Path] = []
        for image, label in zip(self.images, self.labels, strict=True):
            if semantic:
                require_file(label, "label file")
            if depth:
                city, name = image.parent.name, image.name[: -len(_IMAGE_SUFFIX)]
                disparity = self.root / "disparity" / split / city / f"{name}_disparity.png"
                camera = self.root / "camera" / split / city / f"{name}_camera.json"
                self.disparities.append(require_file(disparity, "disparity file"))
                self.cameras.append(require_file(camera, "camera file"))

    @property
    def num_classes(self) -> int:
        """The 19 evaluated classes (train ids 0–18)."""
        return len(CITYSCAPES_CLASSES)

    @property
    def ignore_index(self) -> int:
        """``mask`` value of ignored pixels: 255 (``"train_ids"``) or 0 (``"scene"``)."""
        return IGNORE_INDEX if self.mask_format == "train_ids" else 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        """``image`` (3, H, W) float32, ``mask`` (H, W) int64 (see ``mask_format``),
        ``depth`` (H, W) float32 metres (0 invalid), ``index`` int64 ()."""
        index = int(index)
        image = read_rgb(self.images[index])
        item: dict[str, Tensor] = {"image": image}
        size = tuple(image.shape[-2:])
        if self.semantic:
            ids = train_ids(read_array(self.labels[index]), self.mask_format)
            item["mask"] = self._checked(ids, index, size)
        if self.depth:
            baseline, fx = read_camera(self.cameras[index])
            stored = read_array(self.disparities[index])
            item["depth"] = self._checked(disparity_to_depth(stored, baseline, fx), index, size)
        item["index"] = torch.tensor(index, dtype=torch.int64)
        return resize_item(item, self.image_size, self.fit)

    def _checked(self, dense: Tensor, index: int, size: tuple[int, ...]) -> Tensor:
        if tuple(dense.shape) != size:
            raise InputError(
                f"{self.images[index]}: image is {size[1]}×{size[0]} but its label or "
                f"disparity map is {dense.shape[1]}×{dense.shape[0]} (W×H)"
            )
        return dense


class CityscapesDataModule(SplitDataModule):
    """Cityscapes splits (see the module docstring), batched with ``collate_scenes``:
    ``image`` (B, 3, H, W), ``mask`` (B, H, W), ``depth`` (B, H, W), ``index`` (B,).

    ``mask_format="scene"`` makes the masks fit the project's segmentation heads (see the
    module docstring). The test split's official labels are withheld (all ignore), so
    ``test_split`` defaults to none.
    """

    def __init__(
        self,
        root: str,
        train_split: str = "train",
        val_split: str | None = "val",
        test_split: str | None = None,
        mode: Literal["fine", "coarse"] = "fine",
        image_size: int | tuple[int, int] | None = (512, 1024),
        fit: Fit = "stretch",
        semantic: bool = True,
        depth: bool = True,
        mask_format: MaskFormat = "train_ids",
        batch_size: int = 8,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        seed: int = 0,
    ) -> None:
        super().__init__(
            train_split, val_split, test_split, val_fraction, batch_size, num_workers, seed
        )
        self.save_hyperparameters()
        self.root = root
        self.mode = mode
        self.image_size = image_size
        self.fit = fit
        self.semantic = semantic
        self.depth = depth
        self.mask_format = mask_format

    @property
    def num_classes(self) -> int:
        """The 19 evaluated classes."""
        return len(CITYSCAPES_CLASSES)

    def make_dataset(self, split: str | None) -> CityscapesSegmentationDepth:
        """The frames of ``split``."""
        return CityscapesSegmentationDepth(
            self.root,
            str(split),
            self.mode,
            self.image_size,
            self.fit,
            self.semantic,
            self.depth,
            self.mask_format,
        )

    def batch_function(self) -> Callable[[Sequence[dict[str, Any]]], dict[str, Any]]:
        """``collate_scenes``."""
        return collate_scenes
