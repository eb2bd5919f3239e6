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

from featcodec.models.heads import task_of  # noqa: F401  (re-exported: the metric of a codec's task)


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


# --------------------------------------------------------------------------------------------
# Metrics of the dense and detection task heads (models.heads)
# --------------------------------------------------------------------------------------------


class SegmentationMIoU:
    """Mean intersection over union of segmentation logits ``(B, K+1, H', W')`` (cropped to
    ``H x W``, see ``models.heads.crop_to``) against ``batch["mask"]`` ``(B, H, W)``.

    Accumulates one confusion matrix over all batches; the mean runs over the classes present
    (background included), i.e. those with a non-empty union of prediction and ground truth.
    """

    name = "miou"
    higher_is_better = True

    def __init__(self) -> None:
        self.confusion: Tensor | None = None  # (K+1, K+1) int64, rows: truth, columns: prediction

    def update(self, output: Tensor, batch: dict[str, Any]) -> None:
        from featcodec.models.heads import crop_to

        mask = torch.as_tensor(batch["mask"]).to(output.device)
        n = output.shape[1]
        if mask.numel() and (int(mask.min()) < 0 or int(mask.max()) >= n):
            raise ValueError(f"mask labels outside 0..{n - 1} for {n}-channel logits")
        pred = crop_to(output, mask.shape[-2:]).argmax(1)
        pairs = (mask.reshape(-1).long() * n + pred.reshape(-1)).bincount(minlength=n * n)
        counts = pairs[: n * n].reshape(n, n).cpu()
        self.confusion = counts if self.confusion is None else self.confusion + counts

    def compute(self) -> float:
        if self.confusion is None:
            return math.nan
        c = self.confusion.double()
        inter = c.diag()
        union = c.sum(0) + c.sum(1) - inter
        present = union > 0
        return float((inter[present] / union[present]).mean()) if present.any() else math.nan


class DepthRMSE:
    """Root-mean-square error of depth ``(B, 1, H', W')`` (cropped to ``H x W``) against
    ``batch["depth"]`` ``(B, H, W)`` over all pixels of all batches whose ground truth is finite
    and positive (one RMSE over the pooled pixels, not a mean of per-image RMSEs)."""

    name = "depth_rmse"
    higher_is_better = False

    def __init__(self) -> None:
        self.squared = 0.0
        self.count = 0

    def update(self, output: Tensor, batch: dict[str, Any]) -> None:
        from featcodec.models.heads import crop_to

        depth = torch.as_tensor(batch["depth"]).to(output.device)
        pred = crop_to(output, depth.shape[-2:]).reshape(depth.shape)
        valid = torch.isfinite(depth) & (depth > 0)
        self.squared += float((pred[valid].double() - depth[valid].double()).square().sum())
        self.count += int(valid.sum())

    def compute(self) -> float:
        return math.sqrt(self.squared / self.count) if self.count else math.nan


class PCK:
    """Percentage of correct keypoints: the fraction of keypoints ``(B, J, 2)`` within
    ``alpha · max(H, W)`` pixels (Euclidean) of the main object's ground truth, counting the
    keypoints inside the image (``models.heads.main_object_keypoints``).

    Args:
        alpha: threshold as a fraction of the longer image side (0.1: PCK@0.1).
    """

    name = "pck"
    higher_is_better = True

    def __init__(self, alpha: float = 0.1) -> None:
        self.alpha = alpha
        self.correct = 0
        self.total = 0

    def update(self, output: Tensor, batch: dict[str, Any]) -> None:
        from featcodec.models.heads import main_object_keypoints

        coords, valid = main_object_keypoints(batch)
        h, w = batch["image"].shape[-2:]
        dist = (output.detach().float().cpu() - coords).norm(dim=-1)
        self.correct += int(((dist <= self.alpha * max(h, w)) & valid).sum())
        self.total += int(valid.sum())

    def compute(self) -> float:
        return self.correct / self.total if self.total else math.nan


class MeanAveragePrecision:
    """COCO mAP@[.5:.95] (all areas, up to 100 detections per image) of a detector's output,
    computed by pycocotools' ``COCOeval`` over all images seen.

    ``output`` is torchvision's list of ``{"boxes" (n, 4) xyxy, "scores" (n,), "labels" (n,)}``
    with ``label = class + 1``; the ground truth is ``batch["boxes"]`` / ``batch["box_labels"]``
    (``class``). Boxes of zero width or height are not ground truth (as in training). No
    detections at all while there is ground truth scores 0.
    """

    name = "map"
    higher_is_better = True

    def __init__(self) -> None:
        self.images: list[dict[str, Any]] = []
        self.truth: list[dict[str, Any]] = []
        self.detections: list[dict[str, Any]] = []

    def update(self, output: list[dict[str, Tensor]], batch: dict[str, Any]) -> None:
        from featcodec.models.heads import detection_targets

        h, w = batch["image"].shape[-2:]
        targets = detection_targets(batch)
        if len(output) != len(targets):
            raise ValueError(f"{len(output)} detection results for {len(targets)} images")
        for pred, target in zip(output, targets, strict=True):
            image_id = len(self.images) + 1
            self.images.append({"id": image_id, "height": int(h), "width": int(w)})
            for box, label in zip(target["boxes"].tolist(), target["labels"].tolist(), strict=True):
                xywh = [box[0], box[1], box[2] - box[0], box[3] - box[1]]
                self.truth.append(
                    {
                        "id": len(self.truth) + 1,
                        "image_id": image_id,
                        "category_id": int(label),
                        "bbox": xywh,
                        "area": xywh[2] * xywh[3],
                        "iscrowd": 0,
                    }
                )
            boxes = pred["boxes"].detach().float().cpu().tolist()
            scores = pred["scores"].detach().float().cpu().tolist()
            labels = pred["labels"].detach().cpu().tolist()
            for box, score, label in zip(boxes, scores, labels, strict=True):
                self.detections.append(
                    {
                        "image_id": image_id,
                        "category_id": int(label),
                        "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                        "score": float(score),
                    }
                )

    def compute(self) -> float:
        if not self.truth:
            return math.nan
        if not self.detections:
            return 0.0
        import contextlib
        import io

        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        categories = sorted({a["category_id"] for a in self.truth + self.detections})
        with contextlib.redirect_stdout(io.StringIO()):
            truth = COCO()
            truth.dataset = {
                "images": self.images,
                "annotations": self.truth,
                "categories": [{"id": c} for c in categories],
            }
            truth.createIndex()
            found = truth.loadRes(self.detections)
            evaluation = COCOeval(truth, found, iouType="bbox")
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
        return float(max(evaluation.stats[0], 0.0))


METRICS.update(
    {
        "segmentation": SegmentationMIoU,
        "depth": DepthRMSE,
        "keypoints": PCK,
        "detection": MeanAveragePrecision,
    }
)
