"""Image quality for rate–distortion evaluation: PSNR of decoded images.

Task metrics live beside their tasks (``models/tasks/``: accuracy, mIoU, depth RMSE, PCK, mAP,
``torchmetrics`` metrics that are right on several GPUs); ``Task.metric_name`` and
``Task.higher_is_better`` name them in results files and BD-rates.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class PSNR:
    """Mean PSNR (dB) of images in [0, 1], averaged per image."""

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0

    def update(self, x_hat: Tensor, x: Tensor) -> None:
        mse = (x_hat.clamp(0, 1) - x).square().flatten(1).mean(1).double()
        self.total += float((10 * torch.log10(1 / mse.clamp_min(1e-10))).sum())
        self.count += x.shape[0]

    def compute(self) -> float:
        return self.total / self.count if self.count else math.nan
