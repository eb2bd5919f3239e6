"""Classification: the backbone's own classifier, logits ``(B, K)``, top-1 accuracy."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric

from featcodec.models.backbones import build_backbone
from featcodec.models.tasks.base import Task, register_task
from featcodec.models.tasks.distill import logit_kl


class Accuracy(Metric):
    """Top-1 accuracy of logits ``(B, K)`` against ``batch["label"]`` ``(B,)``."""

    name = "accuracy"
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("correct", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, output: Tensor, batch: Mapping[str, Any]) -> None:
        labels = torch.as_tensor(batch["label"], device=output.device).reshape(-1)
        self.correct += int((output.argmax(1) == labels).sum())
        self.total += labels.numel()

    def compute(self) -> Tensor:
        if not self.total:
            return torch.tensor(float("nan"))
        return self.correct.double() / self.total


@register_task
class Classification(Task):
    """The backbone itself: normalized images ``(B, 3, H, W)`` -> logits ``(B, K)``; loss
    cross-entropy with ``label``, distillation KL of the class distributions."""

    name = "classification"
    metric_name = "accuracy"
    targets = ("label",)
    classes_in_data = True

    def build(
        self, backbone: str, weights: str | None, num_classes: int, **options: Any
    ) -> nn.Module:
        if options:
            raise ValueError(f"classification takes no task options, got {sorted(options)}")
        return build_backbone(backbone, weights=weights, num_classes=num_classes)

    def loss(self, output: Tensor, batch: Mapping[str, Any]) -> Tensor:
        return F.cross_entropy(output, torch.as_tensor(batch["label"], device=output.device))

    def distill(self, output: Tensor, teacher: Tensor) -> Tensor:
        return logit_kl(output, teacher)

    def metric(self, num_classes: int) -> Metric:
        return Accuracy()

    def summary(self, output: Tensor) -> dict[str, Any]:
        probs = torch.softmax(output[0].float(), dim=0).cpu()
        return {
            "class": int(probs.argmax()),
            "probability": float(probs.max()),
            "probabilities": [round(float(p), 6) for p in probs],
        }
