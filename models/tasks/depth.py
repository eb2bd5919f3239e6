"""Monocular depth: an LR-ASPP head with a softplus on a split ResNet, RMSE over the pixels
whose depth is known."""

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
from featcodec.models.tasks.trunk import LOW_STRIDE, TrunkNet, crop_to, resnet


class DepthNet(TrunkNet):
    """Monocular depth: an LRASPP head with one output channel, upsampled ×8 (bilinear), then
    softplus (depth > 0). The head's bias starts at ``softplus⁻¹(init_depth)``.

    Args:
        backbone: the ResNet whose trunk is used.
        inter_channels: width of the head.
        init_depth: initial output depth (the synthetic scenes span about 2–10).
    """

    def __init__(
        self, backbone: ResNet, inter_channels: int = 128, init_depth: float = 6.0
    ) -> None:
        super().__init__(backbone)
        self.head = LRASPPHead(self.low_channels, self.high_channels, 1, inter_channels)
        with torch.no_grad():
            bias = self.head.low_classifier.bias
            assert bias is not None
            bias.fill_(math.log(math.expm1(init_depth)))

    def forward(self, x: Tensor) -> Tensor:
        """Normalized images ``(B, 3, H, W)`` -> depth ``(B, 1, 8⌈H/8⌉, 8⌈W/8⌉)``."""
        low, high = self.taps(x)
        out = self.head({"low": low, "high": high})
        out = F.interpolate(out, scale_factor=LOW_STRIDE, mode="bilinear", align_corners=False)
        return F.softplus(out)


def masked_rmse(pred: Tensor, target: Tensor) -> Tensor:
    """RMSE over pixels with finite, positive ground truth; 0 (with a gradient) if none."""
    valid = torch.isfinite(target) & (target > 0)
    if not bool(valid.any()):
        return pred.sum() * 0.0
    return (pred[valid] - target[valid]).square().mean().sqrt()


class DepthRMSE(Metric):
    """Root-mean-square error of depth ``(B, 1, H', W')`` (cropped to ``H x W``) against
    ``batch["depth"]`` ``(B, H, W)`` over all pixels of all batches whose ground truth is finite
    and positive (one RMSE over the pooled pixels, not a mean of per-image RMSEs)."""

    name = "depth_rmse"
    higher_is_better = False
    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state(
            "squared", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("count", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, output: Tensor, batch: Mapping[str, Any]) -> None:
        depth = torch.as_tensor(batch["depth"]).to(output.device)
        pred = crop_to(output, depth.shape[-2:]).reshape(depth.shape)
        valid = torch.isfinite(depth) & (depth > 0)
        self.squared += float((pred[valid].double() - depth[valid].double()).square().sum())
        self.count += int(valid.sum())

    def compute(self) -> Tensor:
        if not self.count:
            return torch.tensor(float("nan"))
        return (self.squared / self.count).sqrt()


@register_task
class Depth(Task):
    """:class:`DepthNet`: depth ``(B, 1, H, W)``; loss masked RMSE against ``depth``,
    distillation squared error, metric RMSE (lower is better). Options: ``inter_channels``,
    ``init_depth``."""

    name = "depth"
    metric_name = "depth_rmse"
    higher_is_better = False
    targets = ("depth",)
    dense = True

    def build(
        self,
        backbone: str,
        weights: str | None,
        num_classes: int,
        inter_channels: int = 128,
        init_depth: float = 6.0,
    ) -> DepthNet:
        del num_classes  # a depth network has no classes
        return DepthNet(resnet(backbone, weights), inter_channels, init_depth)

    def loss(self, output: Tensor, batch: Mapping[str, Any]) -> Tensor:
        depth = torch.as_tensor(batch["depth"], device=output.device)
        return masked_rmse(crop_to(output, depth.shape[-2:])[:, 0], depth)

    def distill(self, output: Tensor, teacher: Tensor) -> Tensor:
        return F.mse_loss(output, teacher)

    def metric(self, num_classes: int) -> Metric:
        return DepthRMSE()

    def summary(self, output: Tensor) -> dict[str, Any]:
        d = output[0].float()
        return {
            "depth_min": float(d.min()),
            "depth_mean": float(d.mean()),
            "depth_max": float(d.max()),
        }

    def output_channels(self, num_classes: int) -> int:
        return 1
