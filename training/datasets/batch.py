"""Batch collation shared by the datasets: stack what has one shape per item, list the rest.

Every dataset hands out dicts of tensors (the project's common item format, see
:mod:`training.datasets.synthetic`); a batch stacks each field to ``(B, ...)``, except the
fields whose size varies from item to item (the number of annotated shapes or objects, image
sizes, names), which become lists of length ``B``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import torch
from torch import Tensor

VARIABLE_FIELDS = frozenset(
    {"boxes", "box_labels", "keypoints", "shape_transforms", "joints3d", "parts", "part_order"}
)
"""Fields of scene and clip items that hold one entry per shape (or object), so vary in
length: ``collate_scenes`` and ``collate_clips`` list them."""


def collate(batch: Sequence[dict[str, Any]], list_fields: Collection[str]) -> dict[str, Any]:
    """Stack every field of the items of ``batch`` to ``(B, ...)``, except ``list_fields``,
    which become lists of length B; the fields are those of the first item, in its order."""
    if not batch:
        raise ValueError("cannot collate an empty batch")
    return {
        key: [item[key] for item in batch]
        if key in list_fields
        else torch.stack([item[key] for item in batch])
        for key in batch[0]
    }


def collate_scenes(batch: Sequence[dict[str, Tensor]]) -> dict[str, Tensor | list[Tensor]]:
    """Stack ``image`` (B, 3, H, W), ``label`` (B,), ``mask`` / ``instances`` (B, H, W) and
    ``depth`` (B, H, W), ``intrinsics`` (B, 4); ``boxes``, ``box_labels``, ``keypoints``,
    ``joints3d``, ``parts`` and ``part_order`` become lists of length B."""
    return collate(batch, VARIABLE_FIELDS)


def collate_clips(batch: Sequence[dict[str, Tensor]]) -> dict[str, Tensor | list[Tensor]]:
    """Stack the per-clip fields to (B, T, ...); ``boxes``, ``box_labels``, ``keypoints`` and
    ``shape_transforms`` (variable number of shapes) become lists of length B."""
    return collate(batch, VARIABLE_FIELDS)
