"""Object detection: torchvision's Faster R-CNN on a split-able ResNet body, COCO mAP.

Faster R-CNN is not fx-traceable as a whole (data-dependent control flow, lists of boxes). Its
backbone (:class:`DetectionBody`: the trunk to ``layer3`` plus a two-level top-down neck to one
stride-8 map) *is* traceable and is split with ``split_model``; :meth:`Detection.split` then
puts the rest of the body, the RPN, the ROI heads and the box post-processing behind the cut
(:class:`DetectionBack`). The detector's own ``GeneralizedRCNNTransform`` is made an identity
(mean 0, std 1: the input is already normalized, like every other task network here; no
resizing; padding to a multiple of the body's stride 8), so ``front`` is exactly the body up
to the split node and ``back`` rebuilds the image size as ``stride x`` the feature size —
equal to the whole model for image sides that are multiples of 8.

A detector gives its losses only in training mode, with targets: a frozen detector (behind a
codec, or validated) runs so with its batch norms kept in eval mode (:func:`losses_mode`), and
its prediction is a second, eval-mode pass. It has no distillation loss.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.detection import MeanAveragePrecision
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.models.resnet import ResNet
from torchvision.ops import MultiScaleRoIAlign

from featcodec.models.split import Split, split_model
from featcodec.models.tasks.base import Task, register_task
from featcodec.models.tasks.trunk import LOW_STRIDE, TRUNK, resnet, stage_channels


def detection_targets(batch: Mapping[str, Any], device: torch.device | None = None) -> list[dict]:
    """torchvision detection targets from a batch: per image ``{"boxes": (n, 4) xyxy,
    "labels": (n,) int64}`` with ``label = class + 1`` (0 is torchvision's background) and
    boxes of zero width or height dropped (the detector refuses them)."""
    targets = []
    for boxes, labels in zip(batch["boxes"], batch["box_labels"], strict=True):
        boxes = torch.as_tensor(boxes, dtype=torch.float32, device=device).reshape(-1, 4)
        labels = torch.as_tensor(labels, dtype=torch.int64, device=device).reshape(-1)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        targets.append({"boxes": boxes[keep], "labels": labels[keep] + 1})
    return targets


@contextmanager
def losses_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put a frozen (eval-mode) network into training mode for the length of the block, with
    its batch norms kept in eval mode (running statistics untouched): a detector only returns
    its losses in training mode. Restores the previous modes afterwards."""
    modes = {m: m.training for m in model.modules()}
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    try:
        yield model
    finally:
        for m, mode in modes.items():
            m.train(mode)


class DetectionBody(nn.Module):
    """Faster R-CNN backbone: the ResNet trunk to ``layer3`` and a top-down neck that merges
    ``layer3`` into ``layer2``, one map at stride 8 (small objects of 4–15 px need it)::

        layer2 (s 8) ─1×1─▶ (+) ─3×3─▶ features (B, out_channels, H/8, W/8)
        layer3 (s 16) ─1×1─▶ ↑ upsample to layer2's size

    Traceable by torch.fx with the backbone's node names, so ``split_model`` cuts it.

    Args:
        backbone: the ResNet whose trunk is used (``layer4``, ``avgpool``, ``fc`` dropped).
        out_channels: channels of the output map (torchvision's ``backbone.out_channels``).
    """

    def __init__(self, backbone: ResNet, out_channels: int = 128) -> None:
        super().__init__()
        for name in TRUNK[:-1]:
            self.add_module(name, getattr(backbone, name))
        self.lateral = nn.Conv2d(stage_channels(backbone.layer2), out_channels, 1)
        self.top = nn.Conv2d(stage_channels(backbone.layer3), out_channels, 1)
        self.smooth = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        """Normalized images ``(B, 3, H, W)`` -> features ``(B, out_channels, ⌈H/8⌉, ⌈W/8⌉)``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer2(self.layer1(x))
        c3 = self.layer3(c2)
        top = F.interpolate(self.top(c3), size=c2.shape[-2:], mode="nearest")
        return self.smooth(self.lateral(c2) + top)


class SceneTransform(GeneralizedRCNNTransform):
    """The detector's input transform without resizing: images keep their size (the task
    network sees what the front sees); normalization is the identity when mean 0, std 1."""

    def resize(
        self, image: Tensor, target: dict[str, Tensor] | None = None
    ) -> tuple[Tensor, dict[str, Tensor] | None]:
        return image, target


class DetectionBack(nn.Module):
    """The server-side part of a split Faster R-CNN: the rest of the body, RPN, ROI heads.

    Shares its layers with the detector, and its ``state_dict`` keys are the detector's
    (``"backbone.layer3.0.conv1.weight"``, ``"rpn.head.conv.0.0.weight"``). The image size is
    rebuilt from the features as ``stride ×`` their size (the detector pads images to a multiple
    of the body stride, so this is the padded size the whole detector uses too).

    Args:
        body_back: the back of the split :class:`DetectionBody`, features -> ``(B, C, h, w)``.
        detector: the Faster R-CNN the body belongs to.
        stride: input pixels per feature pixel at the split.
    """

    def __init__(self, body_back: nn.Module, detector: GeneralizedRCNN, stride: int) -> None:
        super().__init__()
        self.backbone = body_back  # named as in the detector, so the state_dict keys match
        self.rpn = detector.rpn
        self.roi_heads = detector.roi_heads
        self.transform = detector.transform
        self.stride = stride

    def forward(
        self, features: Tensor, targets: list[dict[str, Tensor]] | None = None
    ) -> list[dict[str, Tensor]] | dict[str, Tensor]:
        """Split features ``(B, C, H/s, W/s)`` -> detections (eval: a list of ``{"boxes" (n, 4)
        xyxy input pixels, "labels" (n,) class + 1, "scores" (n,)}``) or, in training mode with
        ``targets``, torchvision's loss dict."""
        if self.training and targets is None:
            raise ValueError("targets are needed in training mode (see detection_targets)")
        b, _, h, w = features.shape
        size = (h * self.stride, w * self.stride)
        sizes = [size] * b
        images = ImageList(features.new_empty((b, 0, *size)), sizes)
        maps = OrderedDict([("0", self.backbone(features))])
        proposals, rpn_losses = self.rpn(images, maps, targets)
        detections, head_losses = self.roi_heads(maps, proposals, sizes, targets)
        if self.training:
            return {**head_losses, **rpn_losses}
        return self.transform.postprocess(detections, sizes, sizes)


class DetectionMAP(MeanAveragePrecision):
    """COCO mAP@[.5:.95] (all areas, up to 100 detections per image), torchmetrics' metric on
    pycocotools, fed from a batch: ``output`` is torchvision's list of ``{"boxes" (n, 4) xyxy,
    "scores" (n,), "labels" (n,)}`` (``label = class + 1``), the ground truth the batch's
    ``boxes``/``box_labels`` (:func:`detection_targets`). No ground truth at all gives NaN; no
    detection while there is ground truth scores 0."""

    name = "map"
    higher_is_better = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(box_format="xyxy", iou_type="bbox", backend="pycocotools", **kwargs)
        self.add_state("truths", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("found", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, output: list[dict[str, Tensor]], batch: Mapping[str, Any]) -> None:  # type: ignore[override]
        targets = detection_targets(batch)
        if len(output) != len(targets):
            raise ValueError(f"{len(output)} detection results for {len(targets)} images")
        preds = [
            {k: pred[k].detach().cpu() for k in ("boxes", "scores", "labels")} for pred in output
        ]
        super().update(preds, targets)
        self.truths += sum(len(t["labels"]) for t in targets)
        self.found += sum(len(p["labels"]) for p in preds)

    def compute(self) -> Tensor:  # type: ignore[override]
        if not self.truths:
            return torch.tensor(float("nan"))
        if not self.found:
            return torch.tensor(0.0)
        return super().compute()["map"].clamp_min(0.0)


@register_task
class Detection(Task):
    """torchvision's Faster R-CNN on a :class:`DetectionBody`; loss the sum of its losses,
    metric COCO mAP, no distillation. Options: ``image_size``, ``anchor_sizes``,
    ``out_channels``, ``representation_size`` (see :meth:`build`)."""

    name = "detection"
    metric_name = "map"
    targets = ("boxes", "box_labels")
    classes_in_data = True
    distillable = False

    def build(
        self,
        backbone: str,
        weights: str | None,
        num_classes: int,
        image_size: int = 64,
        anchor_sizes: tuple[int, ...] = (8, 16, 32, 64),
        out_channels: int = 128,
        representation_size: int = 256,
    ) -> FasterRCNN:
        """Faster R-CNN sized for small images.

        Input: normalized images, a ``(B, 3, H, W)`` tensor or a list of ``(3, H, W)``; output
        in eval mode a list of ``{"boxes", "labels", "scores"}`` per image (``label = class +
        1``), in training mode (called with :func:`detection_targets`) its dict of losses.

        Args:
            image_size: recorded as the transform's ``min_size``/``max_size``; the transform
                never resizes (images keep their size, whatever it is).
            anchor_sizes: anchor sides in pixels (aspect ratios 0.5, 1, 2) on the stride-8 map.
            out_channels: width of the body's output map.
            representation_size: width of the two-layer box head (torchvision's: 1024).
        """
        body = DetectionBody(resnet(backbone, weights), out_channels)
        anchors = AnchorGenerator(sizes=(tuple(anchor_sizes),), aspect_ratios=((0.5, 1.0, 2.0),))
        roi_size = 7
        model = FasterRCNN(
            body,
            num_classes=None,
            min_size=image_size,
            max_size=image_size,
            image_mean=[0.0, 0.0, 0.0],
            image_std=[1.0, 1.0, 1.0],
            rpn_anchor_generator=anchors,
            rpn_head=RPNHead(out_channels, anchors.num_anchors_per_location()[0]),
            rpn_pre_nms_top_n_train=600,
            rpn_post_nms_top_n_train=300,
            rpn_pre_nms_top_n_test=300,
            rpn_post_nms_top_n_test=100,
            rpn_batch_size_per_image=128,
            box_roi_pool=MultiScaleRoIAlign(["0"], output_size=roi_size, sampling_ratio=2),
            box_head=TwoMLPHead(out_channels * roi_size**2, representation_size),
            box_predictor=FastRCNNPredictor(representation_size, num_classes + 1),
            box_batch_size_per_image=128,
        )
        model.transform = SceneTransform(
            image_size, image_size, [0.0, 0.0, 0.0], [1.0, 1.0, 1.0], size_divisible=LOW_STRIDE
        )
        return model

    def split(self, model: nn.Module, split_at: str, name: str = "") -> Split:
        """The body split at ``split_at``; the back is a :class:`DetectionBack`."""
        if not isinstance(model, GeneralizedRCNN):
            raise TypeError(f"a detection network is a Faster R-CNN, not {type(model).__name__}")
        body = split_model(model.backbone, split_at, name=name)
        back = DetectionBack(body.back, model, body.stride)
        back.train(model.training)
        return Split(body.front, back, body.stride, body.channels, body.node, body.backbone)

    def forward(self, model: nn.Module, inputs: Tensor, batch: Mapping[str, Any]) -> Any:
        if model.training:
            return model(inputs, detection_targets(batch, inputs.device))
        return model(inputs)

    def loss_pass(self, model: nn.Module, inputs: Tensor, batch: Mapping[str, Any]) -> Any:
        with losses_mode(model):
            return self.forward(model, inputs, batch)

    def prediction(self, model: nn.Module, inputs: Tensor, loss_output: Any) -> Any:
        return model(inputs)

    def loss(self, output: Any, batch: Mapping[str, Any]) -> Tensor:
        if not isinstance(output, Mapping):
            raise TypeError(
                "the detection loss needs the detector's loss dict: run it in training mode "
                "with targets (Task.forward / loss_pass)"
            )
        device = next(iter(output.values())).device if output else torch.device("cpu")
        return sum(output.values(), torch.zeros((), device=device))

    def metric(self, num_classes: int) -> Metric:
        return DetectionMAP()

    def summary(self, output: Any) -> dict[str, Any]:
        det = output[0]
        return {
            "boxes": [[round(float(v), 2) for v in b] for b in det["boxes"]],
            "classes": [int(c) - 1 for c in det["labels"]],  # torchvision's label = class + 1
            "scores": [round(float(v), 4) for v in det["scores"]],
        }
