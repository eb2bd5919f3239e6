"""3-D human pose from Human3.6M-style annotation arrays: one person per image, 2-D and 3-D
joints per frame, the camera's intrinsics.

On disk::

    root/
      images/                  the frames, any sub-folders (``imgname`` is relative to here)
        S9_Directions.54138969_000001.jpg
      annotations/
        <split>.npz            one archive per split (train.npz, test.npz; any names)

``<split>.npz`` (``numpy.savez``; object arrays are refused, so names are fixed-width strings)
holds, for ``N`` frames of ``J`` joints:

=========  ==========  ==================================================================
key        shape       what
=========  ==========  ==================================================================
imgname    (N,)        image file, relative to ``images/`` (``str``)
part       (N, J, 2)   2-D joints ``(x, y)`` in pixels of the image as stored; a third
           (N, J, 3)   column, when present, is the visibility (``0``: not annotated)
S          (N, J, 3)   3-D joints in camera coordinates ``(X, Y, Z)`` (millimetres)
camera     (N, 4)      ``(f_x, f_y, c_x, c_y)`` in pixels; ``(4,)`` for one camera
parents    (J,)        optional: each joint's parent, ``−1`` for the root (joint 0);
                       default :data:`H36M_PARENTS` (the 17-joint Human3.6M skeleton)
=========  ==========  ==================================================================

Items follow the project's common format (:class:`~models.tasks.batch.Batch`): ``image``,
``boxes`` (1, 4) (the box of the annotated joints, 10 % margin, clipped), ``box_labels`` (1,),
``keypoints`` (1, J, 3), ``joints3d`` (1, J, 3), ``parts`` (1, J − 1, 2) (``(parents[j], j)``
for every joint but the root), ``part_order`` (1, J − 1) (the relative depth order with
threshold ``depth_eps``) and ``intrinsics`` (4,). ``image_size`` stretches each image to one
size; the 2-D joints, the box and the intrinsics follow (``x·W/w``, ``f_x·W/w``, ...), the 3-D
joints do not change.

Every malformed archive gets a one-line :class:`~codec.errors.InputError` naming the file and
the problem; array headers are checked against the archive's size before anything is read,
so a forged shape cannot make the loader allocate more than the file holds.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from featcodec.codec.errors import InputError
from featcodec.training.datasets.batch import collate_scenes
from featcodec.training.datasets.datamodule import SplitDataModule
from featcodec.training.datasets.files import read_rgb, require_dir, require_file
from featcodec.training.datasets.resize import SizeArg, as_size, resize_item
from featcodec.training.datasets.synthetic.pose import depth_order

H36M_PARENTS = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15)
"""The 17-joint Human3.6M skeleton: pelvis (root), right hip, knee, foot, left hip, knee,
foot, spine, thorax, neck, head, left shoulder, elbow, wrist, right shoulder, elbow, wrist."""

DEPTH_EPS_MM = 50.0
"""ε of the relative depth order for millimetre data (a part counts as level within 5 cm)."""

MAX_ARRAY_BYTES = 1 << 32
"""The largest annotation array read (4 GiB; Human3.6M's training set is ~200 MB)."""

KEYS = ("imgname", "part", "S", "camera")


def _check_headers(path: Path) -> None:
    """Refuse an archive whose arrays claim more data than it holds, or object arrays."""
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with archive.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                    else:
                        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                name = info.filename[:-4]
                if dtype.hasobject:
                    raise InputError(f"{path}: array {name} holds Python objects (refused)")
                need = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
                if need > min(info.file_size, MAX_ARRAY_BYTES):
                    raise InputError(
                        f"{path}: array {name} claims shape {tuple(shape)}, more than the "
                        f"archive holds"
                    )
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable .npz archive ({e})") from None


def read_annotations(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of one split's archive, checked: ``imgname`` (N,) str, ``part`` (N, J, 3)
    float64 (visibility 1 where the file has none), ``S`` (N, J, 3), ``camera`` (N, 4) and
    ``parents`` (J,) int64; one-line :class:`InputError` for anything malformed."""
    path = require_file(path, "annotation archive")
    _check_headers(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in KEYS if k not in data.files]
            if missing:
                raise InputError(f"{path}: missing array(s) {', '.join(missing)}")
            arrays = {k: data[k] for k in (*KEYS, "parents") if k in data.files}
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable .npz archive ({e})") from None
    names, part, joints, camera = (arrays[k] for k in KEYS)
    if names.ndim != 1 or names.dtype.kind not in "US":
        raise InputError(f"{path}: imgname must be (N,) strings, got {names.dtype} {names.shape}")
    n = len(names)
    if n == 0:
        raise InputError(f"{path}: no frames")
    if joints.ndim != 3 or joints.shape[0] != n or joints.shape[2] != 3 or joints.shape[1] < 2:
        raise InputError(f"{path}: S must be (N={n}, J >= 2, 3), got {joints.shape}")
    j = joints.shape[1]
    if part.ndim != 3 or part.shape[:2] != (n, j) or part.shape[2] not in (2, 3):
        raise InputError(f"{path}: part must be (N={n}, J={j}, 2 or 3), got {part.shape}")
    if camera.shape == (4,):
        camera = np.broadcast_to(camera, (n, 4))
    if camera.shape != (n, 4):
        raise InputError(f"{path}: camera must be (N={n}, 4) or (4,), got {camera.shape}")
    for key, a in (("part", part), ("S", joints), ("camera", camera)):
        if a.dtype.kind not in "fiu":
            raise InputError(f"{path}: {key} must be numbers, got {a.dtype}")
    camera = camera.astype(np.float64)
    if not (np.isfinite(camera).all() and (camera[:, :2] > 0).all()):
        raise InputError(f"{path}: camera intrinsics must be finite with f_x, f_y > 0")
    parents = _parents(path, arrays.get("parents"), j)
    part = part.astype(np.float64)
    if part.shape[2] == 2:
        part = np.concatenate([part, np.ones((n, j, 1))], axis=2)
    return {
        "imgname": names.astype(str),
        "part": part,
        "S": joints.astype(np.float64),
        "camera": camera,
        "parents": parents,
    }


def _parents(path: Path, parents: np.ndarray | None, joints: int) -> np.ndarray:
    """The skeleton's parents (J,) checked to be a tree rooted at joint 0."""
    if parents is None:
        if joints != len(H36M_PARENTS):
            raise InputError(
                f"{path}: {joints} joints and no parents array (the default skeleton is "
                f"Human3.6M's {len(H36M_PARENTS)} joints)"
            )
        return np.array(H36M_PARENTS, dtype=np.int64)
    if parents.shape != (joints,) or parents.dtype.kind not in "iu":
        raise InputError(f"{path}: parents must be ({joints},) integers, got {parents.shape}")
    parents = parents.astype(np.int64)
    if parents[0] != -1 or (parents[1:] < 0).any() or (parents >= joints).any():
        raise InputError(f"{path}: parents must be -1 for joint 0 and a joint index for the rest")
    for start in range(1, joints):  # walking up from any joint reaches the root
        node, steps = start, 0
        while node != 0:
            node, steps = int(parents[node]), steps + 1
            if steps > joints:
                raise InputError(f"{path}: parents has a cycle through joint {start}")
    return parents


class Pose3DFrames(Dataset):
    """The frames of one annotation archive; see the module docstring.

    Args:
        root: the dataset folder (``images/``, ``annotations/``).
        split: the archive ``annotations/<split>.npz``.
        image_size: stretch every image to ``N`` or ``(H, W)``; ``None`` keeps its size.
        depth_eps: ε of the relative depth order, in the 3-D joints' units.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        image_size: SizeArg = None,
        depth_eps: float = DEPTH_EPS_MM,
    ) -> None:
        self.root = require_dir(root, "pose dataset")
        self.images = require_dir(self.root / "images", "image folder")
        self.data = read_annotations(self.root / "annotations" / f"{split}.npz")
        self.image_size = as_size(image_size)
        self.depth_eps = float(depth_eps)
        parents = self.data["parents"]
        self.parts = np.stack([parents[1:], np.arange(1, len(parents))], axis=1)

    def __len__(self) -> int:
        return len(self.data["imgname"])

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        index = int(index)
        name = str(self.data["imgname"][index])
        path = (self.images / name).resolve()
        if self.images.resolve() not in path.parents:
            raise InputError(f"{self.root}: imgname {name!r} points outside images/")
        image = read_rgb(require_file(path, "image"))
        h, w = image.shape[-2:]
        part = self.data["part"][index].copy()
        camera = self.data["camera"][index].copy()
        joints = self.data["S"][index]
        size = self.image_size or (h, w)
        sx, sy = size[1] / w, size[0] / h
        part[:, 0] *= sx
        part[:, 1] *= sy
        camera *= np.array([sx, sy, sx, sy])
        item = resize_item({"image": image}, self.image_size)
        item.update(
            boxes=torch.from_numpy(_joint_box(part, size)).float()[None],
            box_labels=torch.zeros(1, dtype=torch.int64),
            keypoints=torch.from_numpy(part).float()[None],
            joints3d=torch.from_numpy(joints).float()[None],
            parts=torch.from_numpy(self.parts)[None],
            part_order=torch.from_numpy(depth_order(joints[:, 2], self.parts, self.depth_eps))[
                None
            ],
            intrinsics=torch.from_numpy(camera).float(),
            index=torch.tensor(index, dtype=torch.int64),
        )
        return item


def _joint_box(part: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The box ``(4,)`` of the annotated joints, 10 % margin, clipped to the image."""
    h, w = size
    seen = part[part[:, 2] > 0, :2]
    seen = seen[np.isfinite(seen).all(1)]
    if len(seen) == 0:
        return np.array([0.0, 0.0, float(w), float(h)])
    lo, hi = seen.min(0), seen.max(0)
    pad = 0.1 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    return np.array([max(lo[0], 0.0), max(lo[1], 0.0), min(hi[0], w), min(hi[1], h)])


class Pose3DDataModule(SplitDataModule):
    """Train / val / test splits of :class:`Pose3DFrames`, batched with ``collate_scenes``
    (``image_size`` is needed unless every frame has one size)."""

    def __init__(
        self,
        root: str,
        train_split: str = "train",
        val_split: str | None = None,
        test_split: str | None = "test",
        image_size: int | tuple[int, int] | None = 256,
        depth_eps: float = DEPTH_EPS_MM,
        batch_size: int = 32,
        num_workers: int = 0,
        val_fraction: float = 0.05,
        seed: int = 0,
    ) -> None:
        super().__init__(
            train_split, val_split, test_split, val_fraction, batch_size, num_workers, seed
        )
        self.save_hyperparameters()
        self.root = Path(root)
        self.image_size = image_size
        self.depth_eps = depth_eps
        self.num_classes = 1

    def make_dataset(self, split: str | None) -> Pose3DFrames:
        return Pose3DFrames(self.root, str(split), self.image_size, self.depth_eps)

    def batch_function(self) -> Callable[[Sequence[dict[str, Any]]], dict[str, Any]]:
        """``collate_scenes``."""
        return collate_scenes
