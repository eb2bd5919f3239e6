"""Video clips stored as folders of frame images.

On disk, either a folder of clips::

    root/
      <clip_a>/                one folder per clip (clips in natural order)
        0001.png               its frames, in natural order of the file names:
        0002.png               frame_2.png comes before frame_10.png
        ...
      <clip_b>/...

or a single folder of frames, taken as one clip named after the folder::

    root/
      0001.png
      0002.png ...

Frames are the image files with torchvision's suffixes (.jpg .jpeg .png .ppm .bmp .pgm .tif
.tiff .webp); names starting with ``.`` are ignored. All frames of a clip must have one size
(checked from the file headers when the dataset is made); different clips may differ.

With ``num_frames=T`` a clip yields the windows of ``T`` consecutive frames starting at
``0, stride, 2·stride, …`` (``stride`` defaults to ``T``: disjoint windows; leftover frames at
the end are not used) and clips shorter than ``T`` are skipped (listed in ``skipped``);
without it every clip is one item of all its frames.

Items: ``frames`` (T, 3, H, W) float32 in [0, 1], ``index`` int64 scalar, ``name`` (the
clip's folder name, a str), ``start`` int64 scalar (the window's first frame in the clip).
``collate_frames`` batches them to ``frames`` (B, T, 3, H, W) and a list of names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from featcodec.codec.errors import InputError
from featcodec.training.datasets.batch import collate
from featcodec.training.datasets.datamodule import SplitDataModule
from featcodec.training.datasets.files import (
    IMAGE_SUFFIXES,
    image_files,
    image_size,
    read_rgb,
    require_dir,
    visible_entries,
)
from featcodec.training.datasets.resize import Fit, SizeArg, as_size, resize_item

_SUFFIXES = " ".join(sorted(IMAGE_SUFFIXES))


@dataclass(frozen=True)
class FrameClip:
    """One clip: its ``name``, ``folder`` and ``frames`` (paths in natural order), and the
    frame size ``(H, W)``."""

    name: str
    folder: Path
    frames: tuple[Path, ...]
    size: tuple[int, int]


def collate_frames(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack ``frames`` to (B, T, 3, H, W) and ``index`` / ``start`` to (B,); ``name`` becomes
    a list of B strings."""
    return collate(batch, ("name",))


def _clip(name: str, folder: Path, frames: list[Path]) -> FrameClip:
    """A ``FrameClip``, refusing frames of different sizes."""
    size = image_size(frames[0])
    for f in frames[1:]:
        other = image_size(f)
        if other != size:
            raise InputError(
                f"{folder}: clip {name!r} mixes frame sizes {size[1]}×{size[0]} "
                f"({frames[0].name}) and {other[1]}×{other[0]} ({f.name}) (W×H)"
            )
    return FrameClip(name, folder, tuple(frames), size)


def find_clips(root: str | Path) -> list[FrameClip]:
    """The clips under ``root`` (see the module docstring), in natural order."""
    folder = require_dir(root, "frames folder")
    loose = image_files(folder)
    subfolders = [p for p in visible_entries(folder) if p.is_dir()]
    if loose:
        if any(image_files(d) for d in subfolders):
            raise InputError(
                f"{folder}: holds both frame files and clip folders (use one layout: "
                "<root>/<frame> or <root>/<clip>/<frame>)"
            )
        return [_clip(folder.name, folder, loose)]
    if not subfolders:
        raise InputError(f"{folder}: empty folder (no frame files or clip folders; {_SUFFIXES})")
    clips = []
    for d in subfolders:
        frames = image_files(d)
        if not frames:
            raise InputError(f"{d}: clip folder holds no frame files ({_SUFFIXES})")
        clips.append(_clip(d.name, d, frames))
    return clips


class VideoFrames(Dataset):
    """Clips (or windows of clips) of frame images; see the module docstring.

    Args:
        root: a folder of clip folders, or one folder of frames.
        num_frames: frames per item ``T``; ``None`` gives whole clips.
        stride: first-frame step between windows of a clip (default ``num_frames``).
        image_size: resize every frame to ``N`` or ``(H, W)`` (see ``resize_item``); ``None``
            keeps the clip's size.
        fit: ``"stretch"`` or ``"crop"``.
    """

    def __init__(
        self,
        root: str | Path,
        num_frames: int | None = None,
        stride: int | None = None,
        image_size: SizeArg = None,
        fit: Fit = "stretch",
    ) -> None:
        if num_frames is not None and num_frames < 1:
            raise ValueError(f"num_frames must be at least 1, got {num_frames}")
        if stride is not None and stride < 1:
            raise ValueError(f"stride must be at least 1, got {stride}")
        self.root = require_dir(root, "frames folder")
        self.num_frames = num_frames
        self.stride = stride if stride is not None else num_frames
        self.image_size = as_size(image_size)
        self.fit = fit
        self.clips = find_clips(self.root)
        self.skipped: list[FrameClip] = []
        self.windows: list[tuple[int, int, int]] = []  # (clip, start, length)
        for c, clip in enumerate(self.clips):
            n = len(clip.frames)
            if num_frames is None:
                self.windows.append((c, 0, n))
            elif n < num_frames:
                self.skipped.append(clip)
            else:
                assert self.stride is not None
                starts = range(0, n - num_frames + 1, self.stride)
                self.windows += [(c, s, num_frames) for s in starts]
        if not self.windows:
            longest = max(len(c.frames) for c in self.clips)
            raise InputError(
                f"{self.root}: no clip has {num_frames} frames (the longest has {longest})"
            )

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """``frames`` (T, 3, H, W) float32, ``index`` and ``start`` int64 (), ``name`` str."""
        index = int(index)
        c, start, length = self.windows[index]
        clip = self.clips[c]
        frames = []
        for path in clip.frames[start : start + length]:
            frame = read_rgb(path)
            if tuple(frame.shape[-2:]) != clip.size:
                raise InputError(f"{path}: decoded size differs from its header's")
            frames.append(frame)
        item = {
            "frames": torch.stack(frames),
            "index": torch.tensor(index, dtype=torch.int64),
            "name": clip.name,
            "start": torch.tensor(start, dtype=torch.int64),
        }
        return resize_item(item, self.image_size, self.fit)


class VideoFramesDataModule(SplitDataModule):
    """Frame-folder clips in ``root/<split>/`` (``train_split=None``: ``root`` itself), batched
    with ``collate_frames``: ``frames`` (B, T, 3, H, W), ``index`` / ``start`` (B,), ``name``
    list.

    ``val_split=None`` holds out ``val_fraction`` of the training windows (windows of one clip
    may then land in both; use separate folders for a clean split). Batches stack when every
    item has the same ``T`` and size: set ``num_frames`` and ``image_size``, or use
    ``batch_size=1``.
    """

    def __init__(
        self,
        root: str,
        train_split: str | None = "train",
        val_split: str | None = "val",
        test_split: str | None = None,
        num_frames: int | None = 4,
        stride: int | None = None,
        image_size: int | tuple[int, int] | None = None,
        fit: Fit = "stretch",
        batch_size: int = 4,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        seed: int = 0,
    ) -> None:
        super().__init__(
            train_split, val_split, test_split, val_fraction, batch_size, num_workers, seed
        )
        self.save_hyperparameters()
        self.root = Path(root)
        self.num_frames = num_frames
        self.stride = stride
        self.image_size = image_size
        self.fit = fit

    def make_dataset(self, split: str | None) -> VideoFrames:
        """The clips of ``root/<split>`` (``root`` for ``None``)."""
        folder = self.root if split is None else self.root / split
        require_dir(folder, "frames folder" if split is None else f"split {split!r}")
        return VideoFrames(folder, self.num_frames, self.stride, self.image_size, self.fit)

    def batch_function(self) -> Callable[[Sequence[dict[str, Any]]], dict[str, Any]]:
        """``collate_frames``."""
        return collate_frames
