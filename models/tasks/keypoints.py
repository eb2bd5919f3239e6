"""2-D keypoints of the main object by integral regression (Sun et al., *Integral Human Pose
Regression*): heatmaps from an LR-ASPP head, soft-argmax to coordinates, PCK.

The task predicts the 5 keypoints (centre + 4 outline points) of the scene's *main object*,
the shape with the largest box (area of the clipped amodal box; the first one on a tie). In
the synthetic scenes this is the large, nearest shape, and in practice the shape of the
classification label. Heatmaps become coordinates by a softmax over all pixels of each
heatmap and the expected pixel-centre position under it; the loss is L1 on the coordinates of
the keypoints that lie inside the image.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric
from torchvision.models.resnet import ResNet
from torchvision.models.segmentation.lraspp import LRASPPHead

from featcodec.models.tasks.base import Task, register_task
from featcodec.models.tasks.trunk import LOW_STRIDE, TrunkNet, resnet


def soft_argmax(heatmaps: Tensor, stride: float = 1.0) -> Tensor:
    """Integral regression: expected pixel-centre position under ``softmax(heatmap)``.

    Args:
        heatmaps: logits ``(B, J, h, w)``, one map per keypoint.
        stride: input pixels per heatmap pixel; heatmap pixel ``(i, j)`` covers the input
            square whose centre is ``((j + 0.5)·stride, (i + 0.5)·stride)``.

    Returns:
        ``(B, J, 2)`` coordinates ``(x, y)`` in input pixels.
    """
    h, w = heatmaps.shape[-2], heatmaps.shape[-1]
    prob = heatmaps.flatten(2).softmax(-1).unflatten(2, (h, w))  # (B, J, h, w)
    xs = (torch.arange(w, device=heatmaps.device, dtype=heatmaps.dtype) + 0.5) * stride
    ys = (torch.arange(h, device=heatmaps.device, dtype=heatmaps.dtype) + 0.5) * stride
    x = (prob.sum(-2) * xs).sum(-1)  # marginal over rows, then E[x]
    y = (prob.sum(-1) * ys).sum(-1)
    return torch.stack([x, y], dim=-1)


def main_object_keypoints(batch: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
    """Keypoints of each scene's main object (the shape with the largest box) and which count.

    Args:
        batch: a :class:`~models.tasks.batch.Batch` with ``image``, ``boxes`` and
            ``keypoints`` (a third keypoint column, the visibility flag, is ignored).

    Returns:
        ``(coords, valid)``: ``(B, J, 2)`` float ``(x, y)`` in pixels, and ``(B, J)`` bool, true
        for keypoints with finite coordinates inside the image (``0 <= x < W``, ``0 <= y < H``).
        Outline keypoints lie on the shape's boundary, so the visibility flag (does the
        keypoint's pixel show the shape) is close to a coin toss for them; inside-the-image is
        what a soft-argmax over the image can reach.
    """
    h, w = batch["image"].shape[-2:]
    coords, valid = [], []
    for boxes, points in zip(batch["boxes"], batch["keypoints"], strict=True):
        points = torch.as_tensor(points, dtype=torch.float32)
        index = main_object(boxes)
        if index is None:
            xy = torch.full((points.shape[-2] if points.dim() == 3 else 5, 2), math.nan)
        else:
            xy = points[index][:, :2]
        coords.append(torch.nan_to_num(xy))
        valid.append(inside_image(xy, (h, w)))
    return torch.stack(coords), torch.stack(valid)


def main_object(boxes: Tensor) -> int | None:
    """Index of the main object among ``boxes`` ``(n, 4)``: the largest (area of the box, the
    first one on a tie); ``None`` without boxes."""
    boxes = torch.as_tensor(boxes, dtype=torch.float32)
    if len(boxes) == 0:
        return None
    sides = (boxes[:, 2:] - boxes[:, :2]).clamp_min(0)
    return int((sides[:, 0] * sides[:, 1]).argmax())


def inside_image(xy: Tensor, size: tuple[int, int]) -> Tensor:
    """``(..., J)`` bool: the points ``(..., J, 2)`` are finite and inside an image of ``size``
    ``(H, W)`` (``0 <= x < W``, ``0 <= y < H``)."""
    h, w = size
    ok = torch.isfinite(xy).all(-1) & (xy[..., 0] >= 0) & (xy[..., 0] < w)
    return ok & (xy[..., 1] >= 0) & (xy[..., 1] < h)


class KeypointNet(TrunkNet):
    """Keypoints by integral regression: an LRASPP head gives ``J`` heatmaps at stride 8,
    upsampled ×2 (bilinear) to stride 4; :func:`soft_argmax` turns each into ``(x, y)``.

    Args:
        backbone: the ResNet whose trunk is used.
        num_keypoints: ``J``.
        inter_channels: width of the head.
    """

    heatmap_stride = LOW_STRIDE // 2

    def __init__(self, backbone: ResNet, num_keypoints: int = 5, inter_channels: int = 128) -> None:
        super().__init__(backbone)
        self.head = LRASPPHead(self.low_channels, self.high_channels, num_keypoints, inter_channels)

    def heatmaps(self, x: Tensor) -> Tensor:
        """Normalized images ``(B, 3, H, W)`` -> heatmap logits ``(B, J, 2⌈H/8⌉, 2⌈W/8⌉)``."""
        low, high = self.taps(x)
        out = self.head({"low": low, "high": high})
        return F.interpolate(out, scale_factor=2, mode="bilinear", align_corners=False)

    def forward(self, x: Tensor) -> Tensor:
        """Normalized images ``(B, 3, H, W)`` -> keypoints ``(B, J, 2)``, ``(x, y)`` in input
        pixels."""
        return soft_argmax(self.heatmaps(x), self.heatmap_stride)


class PCK(Metric):
    """Percentage of correct keypoints: the fraction of keypoints ``(B, J, 2)`` within
    ``alpha · max(H, W)`` pixels (Euclidean) of the main object's ground truth, counting the
    keypoints inside the image (:func:`main_object_keypoints`).

    Args:
        alpha: threshold as a fraction of the longer image side (0.1: PCK@0.1).
    """

    name = "pck"
    higher_is_better = True
    full_state_update = False

    def __init__(self, alpha: float = 0.1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.alpha = alpha
        self.add_state("correct", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, output: Tensor, batch: Mapping[str, Any]) -> None:
        coords, valid = main_object_keypoints(batch)
        h, w = batch["image"].shape[-2:]
        dist = (output.detach().float().cpu() - coords).norm(dim=-1)
        self.correct += int(((dist <= self.alpha * max(h, w)) & valid).sum())
        self.total += int(valid.sum())

    def compute(self) -> Tensor:
        if not self.total:
            return torch.tensor(float("nan"))
        return self.correct.double() / self.total


@register_task
class Keypoints(Task):
    """:class:`KeypointNet`: ``(B, J, 2)`` pixel coordinates of the main object's keypoints;
    loss L1 on those inside the image, distillation L1 to the teacher's, metric PCK@0.1.
    Options: ``num_keypoints``, ``inter_channels``."""

    name = "keypoints"
    metric_name = "pck"
    targets = ("boxes", "keypoints")

    def build(
        self,
        backbone: str,
        weights: str | None,
        num_classes: int,
        num_keypoints: int = 5,
        inter_channels: int = 128,
    ) -> KeypointNet:
        del num_classes  # keypoints of the main object, whatever its class
        return KeypointNet(resnet(backbone, weights), num_keypoints, inter_channels)

    def loss(self, output: Tensor, batch: Mapping[str, Any]) -> Tensor:
        coords, valid = main_object_keypoints(batch)
        coords, valid = coords.to(output.device), valid.to(output.device)
        if not bool(valid.any()):
            return output.sum() * 0.0
        return (output - coords).abs().sum(-1)[valid].mean() / 2

    def distill(self, output: Tensor, teacher: Tensor) -> Tensor:
        return (output - teacher).abs().sum(-1).mean() / 2

    def metric(self, num_classes: int) -> Metric:
        return PCK()

    def summary(self, output: Tensor) -> dict[str, Any]:
        return {"keypoints": [[round(float(v), 3) for v in p] for p in output[0]]}
