"""The batch contract: the keys a batch of scenes or images carries, whoever made it.

The synthetic scenes (``training.datasets.synthetic``) and the real-data loaders (ImageFolder,
COCO, Cityscapes, video frames) all collate their items into a :class:`Batch`; a task reads
only the keys it names in :attr:`~models.tasks.base.Task.targets`. A dataset provides the keys
of the tasks it has ground truth for, and no others.
"""

from __future__ import annotations

from typing import TypedDict

from torch import Tensor


class Batch(TypedDict, total=False):
    """A collated batch of ``B`` items (every key but ``image`` optional).

    Keys:
        image: ``(B, 3, H, W)`` float in [0, 1].
        index: ``(B,)`` int64, the items' indexes in their dataset (caches key on it).
        label: ``(B,)`` int64, the class of the image (its main object's).
        mask: ``(B, H, W)`` int64 class map: 0 background, ``k + 1`` class ``k``.
        depth: ``(B, H, W)`` float depth; NaN or ``≤ 0`` where unknown.
        boxes: per image ``(n, 4)`` float boxes, ``x0, y0, x1, y1`` in pixels.
        box_labels: per image ``(n,)`` int64 classes of the boxes.
        keypoints: per image ``(n, J, 2)`` (or ``(n, J, 3)`` with a visibility flag) pixel
            coordinates of each box's object's keypoints.
        joints3d: per image ``(n, J, 3)`` camera coordinates ``(X, Y, Z)`` of those keypoints
            (3-D joints; they project onto ``keypoints`` through ``intrinsics``).
        parts: per image ``(n, K, 2)`` int64 ``(parent, child)`` joint indexes of each
            object's skeleton.
        part_order: per image ``(n, K)`` int64 relative depth order of each part,
            ``r(z_p, z_c)`` ∈ {−1, 0, 1}.
        intrinsics: ``(B, 4)`` float ``(fx, fy, cx, cy)`` of the camera, pixels.
    """

    image: Tensor
    index: Tensor
    label: Tensor
    mask: Tensor
    depth: Tensor
    boxes: list[Tensor]
    box_labels: list[Tensor]
    keypoints: list[Tensor]
    joints3d: list[Tensor]
    parts: list[Tensor]
    part_order: list[Tensor]
    intrinsics: Tensor


BATCH_KEYS: frozenset[str] = frozenset(Batch.__annotations__)
"""Every key of the contract."""
