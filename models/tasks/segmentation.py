"""Semantic segmentation: an LR-ASPP head on a split ResNet, mean IoU."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric
from torchvision.models.resnet import ResNet
from torchvision.models.segmentation.lraspp import LRASPPHead

from featcodec.models.tasks.base import Task, register_task
from featcodec.models.tasks.distill import logit_kl
from featcodec.models.tasks.trunk import LOW_STRIDE, TrunkNet, crop_to, resnet


class SegmentationNet(TrunkNet):
    """Semantic segmentation: an LRASPP head (Howard et al., MobileNetV3) on ``layer2`` and
    ``layer4``, logits upsampled ×8 (bilinear) to the input grid.

    Args:
        backbone: the ResNet whose trunk is used.
        num_classes: number of object classes ``K``; the output has ``K + 1`` channels
            (channel 0 is the background, channel ``k + 1`` class ``k``, as in the batch's
            ``mask``).
        inter_channels: width of the head.
    """

    def __init__(self, backbone: ResNet, num_classes: int = 5, inter_channels: int = 128) -> None:
        super().__init__(backbone)
        self.head = LRASPPHead(
            self.low_channels, self.high_channels, num_classes + 1, inter_channels
        )

    def forward(self, x: Tensor) -> Tensor:
        """Normalized images ``(B, 3, H, W)`` -> logits ``(B, K+1, 8⌈H/8⌉, 8⌈W/8⌉)``."""
        low, high = self.taps(x)
        out = self.head({"low": low, "high": high})
        return F.interpolate(out, scale_factor=LOW_STRIDE, mode="bilinear", align_corners=False)


class SegmentationMIoU(Metric):
    """Mean intersection over union of segmentation logits ``(B, K+1, H', W')`` (cropped to
    ``H x W``, see :func:`~models.tasks.trunk.crop_to`) against ``batch["mask"]`` ``(B, H, W)``.

    Accumulates one confusion matrix over all batches (summed over processes); the mean runs
    over the classes present (background included), i.e. those with a non-empty union of
    prediction and ground truth.
    """

    name = "miou"
    higher_is_better = True
    full_state_update = False

    def __init__(self, num_classes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        n = num_classes + 1
        self.add_state(
            "confusion", default=torch.zeros(n, n, dtype=torch.long), dist_reduce_fx="sum"
        )

    def update(self, output: Tensor, batch: Mapping[str, Any]) -> None:
        mask = torch.as_tensor(batch["mask"]).to(output.device)
        n = output.shape[1]
        if n != self.confusion.shape[0]:
            raise ValueError(f"{n}-channel logits for a {self.confusion.shape[0]}-class metric")
        if mask.numel() and (int(mask.min()) < 0 or int(mask.max()) >= n):
            raise ValueError(f"mask labels outside 0..{n - 1} for {n}-channel logits")
        pred = crop_to(output, mask.shape[-2:]).argmax(1)
        pairs = (mask.reshape(-1).long() * n + pred.reshape(-1)).bincount(minlength=n * n)
        self.confusion += pairs[: n * n].reshape(n, n).to(self.confusion.device)

    def compute(self) -> Tensor:
        c = self.confusion.double()
        inter = c.diag()
        union = c.sum(0) + c.sum(1) - inter
        present = union > 0
        if not bool(present.any()):
            return torch.tensor(float("nan"))
        return (inter[present] / union[present]).mean()


@register_task
class Segmentation(Task):
    """:class:`SegmentationNet`: logits ``(B, K+1, H, W)``; loss pixel cross-entropy with
    ``mask``, distillation per-pixel KL, metric mIoU. Options: ``inter_channels``."""

    name = "segmentation"
    metric_name = "miou"
    targets = ("mask",)
    classes_in_data = True
    dense = True
    map_suffix = ".png"

    def build(
        self,
        backbone: str,
        weights: str | None,
        num_classes: int,
        inter_channels: int = 128,
    ) -> SegmentationNet:
        return SegmentationNet(resnet(backbone, weights), num_classes, inter_channels)

    def loss(self, output: Tensor, batch: Mapping[str, Any]) -> Tensor:
        mask = torch.as_tensor(batch["mask"], device=output.device)
        return F.cross_entropy(crop_to(output, mask.shape[-2:]), mask)

    def distill(self, output: Tensor, teacher: Tensor) -> Tensor:
        return logit_kl(output, teacher)

    def metric(self, num_classes: int) -> Metric:
        return SegmentationMIoU(num_classes)

    def summary(self, output: Tensor) -> dict[str, Any]:
        classes, counts = output[0].argmax(0).unique(return_counts=True)
        return {"pixels_per_class": {int(c): int(n) for c, n in zip(classes, counts, strict=True)}}

    def output_channels(self, num_classes: int) -> int:
        return num_classes + 1  # + background

    def output_map(self, output: Tensor) -> Tensor:
        """Class logits ``(K+1, H, W)`` → the class map ``(1, H, W)`` (saved as a PNG)."""
        return output.argmax(0, keepdim=True)
