"""Resizing a dataset item to a fixed size, consistently across all of its fields.

Real images come in many sizes; to stack a batch, every field of an item is brought to one
``(H, W)`` together, so that masks, depth and boxes still line up with the image:

=========  ============  =====================================================================
field      shape         how
=========  ============  =====================================================================
image      (3, h, w)     bilinear (antialiased when shrinking), clamped to [0, 1]
frames     (T, 3, h, w)  as ``image``, each frame
mask       (h, w)        nearest (the source pixel whose centre is nearest; any dtype)
depth      (h, w)        bilinear over the valid pixels only (depth ``0`` marks invalid): the
                         result is ``bilinear(depth·v) / bilinear(v)`` with ``v`` the validity,
                         invalid (``0``) where less than half the footprint was valid
boxes      (n, 4)        xyxy pixels, scaled (and shifted by a crop, clipped to the image);
                         boxes left with no area are dropped together with their
                         ``box_labels`` (n,)
=========  ============  =====================================================================

Pixel ``(i, j)`` covers ``[j, j + 1) × [i, i + 1)``, the convention of ``align_corners=False``,
so box coordinates scale by exactly ``W / w`` and ``H / h``.

``fit="stretch"`` maps the whole image onto ``(H, W)`` (the aspect ratio may change);
``fit="crop"`` scales it by one factor until it covers ``(H, W)`` and keeps the centre.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Fit = Literal["stretch", "crop"]
"""How ``resize_item`` reaches the target size: ``"stretch"`` or ``"crop"``."""

SizeArg = int | tuple[int, int] | Sequence[int] | None
"""An optional target size: ``N`` (square) or ``(H, W)``."""

_VALID_DEPTH = 0.5


def as_size(size: SizeArg) -> tuple[int, int] | None:
    """``size`` as ``(H, W)`` (``N`` means ``(N, N)``), or ``None``; both must be positive."""
    if size is None:
        return None
    if isinstance(size, int):
        hw = (size, size)
    else:
        values = tuple(int(s) for s in size)
        if len(values) != 2:
            raise ValueError(f"image_size must be N or (H, W), got {size!r}")
        hw = (values[0], values[1])
    if min(hw) < 1:
        raise ValueError(f"image_size must be positive, got {size!r}")
    return hw


def item_size(item: dict[str, Tensor]) -> tuple[int, int]:
    """``(H, W)`` of an item, from ``image``, ``frames``, ``mask`` or ``depth``."""
    for key in ("image", "frames", "mask", "depth"):
        if key in item:
            h, w = item[key].shape[-2:]
            return int(h), int(w)
    raise KeyError("the item has no image, frames, mask or depth to take its size from")


def _resize_images(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Images ``(..., C, h, w)`` in [0, 1] to ``(..., C, H, W)``, bilinear, antialiased."""
    lead = x.shape[:-3]
    flat = x.reshape(-1, *x.shape[-3:])
    out = F.interpolate(flat, size=size, mode="bilinear", align_corners=False, antialias=True)
    return out.clamp_(0.0, 1.0).reshape(*lead, *out.shape[-3:])


def _nearest_index(n_in: int, n_out: int) -> Tensor:
    """Source index of each of ``n_out`` pixel centres: ``floor((i + ½)·n_in / n_out)``."""
    centres = (torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out)
    return centres.floor().long().clamp_(0, n_in - 1)


def _resize_nearest(m: Tensor, size: tuple[int, int]) -> Tensor:
    """A label map ``(..., h, w)`` of any dtype to ``(..., H, W)``, nearest pixel centre."""
    rows = _nearest_index(m.shape[-2], size[0])
    cols = _nearest_index(m.shape[-1], size[1])
    return m.index_select(-2, rows).index_select(-1, cols)


def _resize_depth(d: Tensor, size: tuple[int, int]) -> Tensor:
    """Depth ``(h, w)`` (``0`` = invalid) to ``(H, W)``, averaging valid pixels only."""
    valid = (d > 0).to(d.dtype)
    stacked = torch.stack([d * valid, valid])[None]  # (1, 2, h, w)
    out = F.interpolate(stacked, size=size, mode="bilinear", align_corners=False, antialias=True)
    total, weight = out[0, 0], out[0, 1]
    keep = weight > _VALID_DEPTH
    return torch.where(keep, total / weight.clamp_min(1e-12), torch.zeros_like(total))


def _scaled_size(src: tuple[int, int], dst: tuple[int, int], fit: Fit) -> tuple[int, int]:
    """Size the source is resized to before the centre crop."""
    if fit == "stretch":
        return dst
    if fit != "crop":
        raise ValueError(f"fit must be 'stretch' or 'crop', got {fit!r}")
    scale = max(dst[0] / src[0], dst[1] / src[1])
    return max(dst[0], round(src[0] * scale)), max(dst[1], round(src[1] * scale))


def resize_item(item: dict[str, Tensor], size: SizeArg, fit: Fit = "stretch") -> dict[str, Tensor]:
    """A copy of ``item`` with every spatial field at ``size`` ``(H, W)`` (see the module
    docstring for each field); other fields are passed through. ``size=None`` or the item's
    own size (with either fit) returns the item unchanged."""
    dst = as_size(size)
    if dst is None:
        return item
    src = item_size(item)
    if src == dst:
        return item
    scaled = _scaled_size(src, dst, fit)
    top, left = (scaled[0] - dst[0]) // 2, (scaled[1] - dst[1]) // 2
    rows, cols = slice(top, top + dst[0]), slice(left, left + dst[1])

    out = dict(item)
    for key in ("image", "frames"):
        if key in item:
            out[key] = _resize_images(item[key], scaled)[..., rows, cols].contiguous()
    if "mask" in item:
        out["mask"] = _resize_nearest(item["mask"], scaled)[..., rows, cols].contiguous()
    if "depth" in item:
        out["depth"] = _resize_depth(item["depth"], scaled)[rows, cols].contiguous()
    if "boxes" in item:
        sx, sy = scaled[1] / src[1], scaled[0] / src[0]
        boxes = item["boxes"].to(torch.float64)
        boxes = boxes * boxes.new_tensor([sx, sy, sx, sy]) - boxes.new_tensor([left, top] * 2)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0.0, dst[1])
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0.0, dst[0])
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        out["boxes"] = boxes[keep].to(item["boxes"].dtype)
        if "box_labels" in item:
            out["box_labels"] = item["box_labels"][keep]
    return out
