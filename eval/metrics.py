"""Task metrics for rate–distortion evaluation, one per task, and image PSNR.

A metric consumes the task network's output batch by batch and reports one number. The task
of a codec is ``arch["task"]`` (``"classification"`` when absent); later tasks (segmentation,
depth, keypoints, detection) register their metric here under their task name, and
``featcodec eval rd`` reports it without further changes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import Tensor


class TaskMetric(Protocol):
    """Accumulates a task metric over batches."""

    name: str
    higher_is_better: bool

    def update(self, output: Tensor, batch: dict[str, Any]) -> None: ...

    def compute(self) -> float: ...


class Accuracy:
    """Top-1 accuracy of logits ``(B, K)`` against ``batch["label"]`` ``(B,)``."""

    name = "accuracy"
    higher_is_better = True

    def __init__(self) -> None:
        self.correct = 0
        self.total = 0

    def update(self, output: Tensor, batch: dict[str, Any]) -> None:
        labels = torch.as_tensor(batch["label"], device=output.device).reshape(-1)
        self.correct += int((output.argmax(1) == labels).sum())
        self.total += labels.numel()

    def compute(self) -> float:
        return self.correct / self.total if self.total else math.nan


METRICS: dict[str, Callable[[], TaskMetric]] = {"classification": Accuracy}
"""Task name → metric factory."""


LOWER_IS_BETTER = frozenset({"rmse", "depth_rmse", "mse"})
"""Metrics where a smaller number is better (for BD-rate and plots)."""


def higher_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER


def task_of(arch: dict[str, Any]) -> str:
    """The task an architecture serves (``"classification"`` for checkpoints without one)."""
    return str(arch.get("task", "classification"))


def task_metric(task: str) -> TaskMetric:
    """A fresh metric for ``task``."""
    if task not in METRICS:
        raise KeyError(f"no metric for task {task!r}; known: {', '.join(METRICS)}")
    return METRICS[task]()


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
