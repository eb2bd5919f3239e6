"""Datasets and Lightning data modules of the synthetic scenes and clips.

Item ``i`` of a split is rendered from its own seed, ``item_seed(seed, split, i)`` (a 64-bit
hash, :mod:`.seeds`), so splits never share scenes and every item is reproducible on its own:
``SyntheticScenes`` items are ``render_scene(...).as_dict()``, ``SyntheticClips`` items
``render_clip(...).as_dict()`` (:mod:`.render`). The data modules batch them with
``collate_scenes`` (:mod:`training.datasets.batch`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from featcodec.training.datasets.batch import collate_scenes
from featcodec.training.datasets.datamodule import SetsDataModule
from featcodec.training.datasets.synthetic.geometry import as_size
from featcodec.training.datasets.synthetic.pose import check_scene_options
from featcodec.training.datasets.synthetic.render import render_clip, render_scene
from featcodec.training.datasets.synthetic.seeds import TAG_CLIPS, item_seed
from featcodec.training.datasets.synthetic.shapes import SHAPE_CLASSES

# Label maps hold at most 5 distinct small values: memoised as uint8, handed out as int64.
_LABEL_MAPS = frozenset({"mask", "instances", "masks"})


class _Memoised(Dataset):
    """Index checks and the optional memo shared by the scene and clip datasets. Memoised
    label maps are stored as uint8 (about 40 % of an item's memory at int64); note that each
    DataLoader worker process keeps its own memo."""

    def __init__(
        self, split: str, size: int, image_size: int | tuple[int, int], seed: int, cache: bool
    ) -> None:
        self.split = split
        self.size = int(size)
        self.image_size = as_size(image_size)
        self.seed = int(seed)
        self.cache = cache
        self._items: dict[int, dict[str, Tensor]] = {}

    def __len__(self) -> int:
        return self.size

    def _render(self, index: int) -> dict[str, Tensor]:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        index = int(index)
        if index < 0:
            index += self.size
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} items")
        if not self.cache:
            return {**self._render(index), "index": torch.tensor(index)}
        stored = self._items.get(index)
        if stored is None:
            stored = {
                k: v.to(torch.uint8) if k in _LABEL_MAPS else v
                for k, v in self._render(index).items()
            }
            self._items[index] = stored
        item = {k: v.long() if k in _LABEL_MAPS else v for k, v in stored.items()}
        return {**item, "index": torch.tensor(index)}


class SyntheticScenes(_Memoised):
    """``size`` synthetic scenes of ``split``: item ``i`` is
    ``render_scene(item_seed(seed, split, i), image_size).as_dict()`` (see ``Scene.as_dict``),
    so splits never share scenes. Rendered items are memoised when ``cache`` is set (returned
    tensors may then be shared between calls: do not modify them in place). ``tilt`` and
    ``fog``: cards turned out of the image plane by up to ``tilt`` degrees, seen through fog
    of that density (:mod:`.pose`; the 3-D keypoint scenes); both 0 by default."""

    def __init__(
        self,
        split: str = "train",
        size: int = 1000,
        image_size: int | tuple[int, int] = 128,
        seed: int = 0,
        cache: bool = True,
        tilt: float = 0.0,
        fog: float = 0.0,
    ) -> None:
        super().__init__(split, size, image_size, seed, cache)
        check_scene_options(tilt, fog)
        self.tilt, self.fog = float(tilt), float(fog)

    def _render(self, index: int) -> dict[str, Tensor]:
        seed = item_seed(self.seed, self.split, index)
        return render_scene(seed, self.image_size, tilt=self.tilt, fog=self.fog).as_dict()


class SyntheticClips(_Memoised):
    """``size`` synthetic clips of ``num_frames`` frames of ``split`` (see ``Clip.as_dict``),
    memoised when ``cache`` is set. ``shape_motion=False`` keeps the shapes still in the
    scene, so the only motion is the camera's: a global affine per frame."""

    def __init__(
        self,
        split: str = "train",
        size: int = 1000,
        image_size: int | tuple[int, int] = 128,
        num_frames: int = 4,
        seed: int = 0,
        cache: bool = True,
        shape_motion: bool = True,
    ) -> None:
        super().__init__(split, size, image_size, seed, cache)
        self.num_frames = int(num_frames)
        self.shape_motion = bool(shape_motion)

    def _render(self, index: int) -> dict[str, Tensor]:
        clip_seed = item_seed(self.seed, self.split, index, TAG_CLIPS)
        clip = render_clip(
            clip_seed, self.num_frames, self.image_size, shape_motion=self.shape_motion
        )
        return clip.as_dict()


class SyntheticScenesDataModule(SetsDataModule):
    """Train / val / test splits of ``SyntheticScenes`` (disjoint by construction), batched
    with ``collate_scenes``. ``tilt`` / ``fog``: the 3-D keypoint scenes (tilted cards seen
    through fog, :mod:`.pose`); left at 0 they are not recorded in the hyper-parameters, so
    runs of the fronto-parallel scenes keep theirs."""

    def __init__(
        self,
        image_size: int = 128,
        train_size: int = 2000,
        val_size: int = 200,
        test_size: int = 500,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        tilt: float = 0.0,
        fog: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        for name, value in (("tilt", tilt), ("fog", fog)):
            if not value:  # (a subclass's hyper-parameters may not hold them at all)
                self.hparams.pop(name, None)
        check_scene_options(tilt, fog)
        self.tilt, self.fog = float(tilt), float(fog)
        self.image_size = image_size
        self.train_size = train_size
        self.val_size = val_size
        self.test_size = test_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.train_set: SyntheticScenes | None = None
        self.val_set: SyntheticScenes | None = None
        self.test_set: SyntheticScenes | None = None

    @property
    def num_classes(self) -> int:
        """Number of shape classes."""
        return len(SHAPE_CLASSES)

    def _make(self, split: str, size: int) -> SyntheticScenes:
        return SyntheticScenes(
            split, size, self.image_size, self.seed, tilt=self.tilt, fog=self.fog
        )

    def setup(self, stage: str | None = None) -> None:
        """Create the datasets needed for ``stage`` (all of them when ``None``)."""
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = self._make("train", self.train_size)
        if stage in (None, "fit", "validate") and self.val_set is None:
            self.val_set = self._make("val", self.val_size)
        if stage in (None, "test") and self.test_set is None:
            self.test_set = self._make("test", self.test_size)

    def batch_function(self) -> Callable[[Sequence[dict[str, Tensor]]], dict[str, Any]]:
        """``collate_scenes`` (for clips too: it lists the same fields)."""
        return collate_scenes


class SyntheticClipsDataModule(SyntheticScenesDataModule):
    """Train / val / test splits of ``SyntheticClips`` (``num_frames`` frames each, with the
    known backward flow and camera motion), batched with ``collate_clips`` to (B, T, ...).
    ``shape_motion=False``: the camera's global affine is the only motion."""

    def __init__(
        self,
        image_size: int = 128,
        num_frames: int = 4,
        train_size: int = 500,
        val_size: int = 50,
        test_size: int = 100,
        batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 0,
        shape_motion: bool = True,
    ) -> None:
        super().__init__(image_size, train_size, val_size, test_size, batch_size, num_workers, seed)
        self.save_hyperparameters()
        for name in ("tilt", "fog"):
            self.hparams.pop(name, None)
        self.shape_motion = shape_motion
        if num_frames < 2:
            raise ValueError(
                f"clips need at least 2 frames (an I-frame and a P-frame), not {num_frames}"
            )
        self.num_frames = num_frames

    def _make(self, split: str, size: int) -> SyntheticClips:  # type: ignore[override]
        return SyntheticClips(
            split, size, self.image_size, self.num_frames, self.seed, shape_motion=self.shape_motion
        )
