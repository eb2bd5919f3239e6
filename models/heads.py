"""Task networks on split torchvision ResNets: one backbone trunk, one light head per task.

Every task network maps *normalized* images ``(B, 3, H, W)`` (see
:class:`models.backbones.Normalize`, which sits in front of the task network) to its task
output, and can be cut into an edge-side ``front`` and a server-side ``back`` at a node of
the trunk, like a classification backbone (:func:`models.backbones.split_model`)::

                       ┌──────────────────────── trunk (the backbone's own layers) ───────────────┐
    x (B,3,H,W) ─conv1─bn1─relu─maxpool─▶ layer1 ─▶ layer2 ──────▶ layer3 ──────▶ layer4 ─▶ ...
                                         (s 4)      (s 8)  │       (s 16)         (s 32)
                                                    split  │ "low"                  │ "high"
                                                    here ─▶│                        │
    segmentation  logits (B, K+1, H, W)  ◀─ ×8 ◀─ LRASPPHead(low, high) ◀──────────┘
    depth         depth  (B, 1, H, W)    ◀─ softplus ◀─ ×8 ◀─ LRASPPHead(low, high)
    keypoints     (x, y) (B, J, 2)       ◀─ soft-argmax ◀─ ×2 ◀─ LRASPPHead(low, high): heatmaps
    classification logits (B, K)         ◀─ avgpool ◀─ fc ◀─ layer4     (the backbone itself)
    detection     [{boxes, labels, scores}] ◀─ ROI heads ◀─ RPN ◀─ neck(layer2, layer3) (s 8)

Splitting. The segmentation, depth, keypoint and classification networks are plain modules
whose trunk layers keep the backbone's own names (``conv1`` … ``layer4``, no
prefix), so torch.fx traces them (:mod:`torchvision.models.feature_extraction`) and
:func:`models.backbones.split_model` cuts them as it cuts a classifier: node names
(``"layer2"``), ``state_dict`` keys of the front (``"layer1.0.conv1.weight"``) and the
features ``(B, 128, H/8, W/8)`` at ``layer2`` are those of the classification backbone, so a
codec trained on a classifier's features sees the same tensor layout. The heads read
``layer2`` (the "low" tap) and later stages only, so any split at or before ``layer2`` is a cut;
a split after ``layer2`` is refused by ``split_model`` (a connection would skip over it).

The back cannot see the input, so its output size comes from the features: dense outputs are
``8·ceil(H/8) x 8·ceil(W/8)``, i.e. exactly ``H x W`` when the sides are multiples of 8 (the
synthetic scenes are 48, 64 or 128 px); :func:`crop_to` (used by the losses and metrics) crops
the bottom/right padding otherwise. Keypoint coordinates are in input pixels (pixel ``(i, j)``
has its centre at ``(j + 0.5, i + 0.5)``).

Detection is torchvision's :class:`~torchvision.models.detection.FasterRCNN`, which is not
fx-traceable as a whole (data-dependent control flow, lists of boxes). Its backbone
(:class:`DetectionBody`: the trunk to ``layer3`` plus a two-level top-down neck to one stride-8
map) *is* traceable and is split with ``split_model``; :func:`split_task_model` then puts the
rest of the body, the RPN, the ROI heads and the box post-processing behind the cut
(:class:`DetectionBack`). The detector's own ``GeneralizedRCNNTransform`` is made an identity
(mean 0, std 1: the input is already normalized, like every other task network here; no
resizing; padding to a multiple of the body's stride 8), so ``front`` is exactly the body up to
the split node and ``back`` rebuilds the image size as ``stride x`` the feature size — equal to
the whole model for image sides that are multiples of 8.

The keypoint task predicts the 5 keypoints (centre + 4 outline points) of the scene's *main
object*, the shape with the largest box (area of the clipped amodal box; the first one on a
tie). In the synthetic scenes this is the large, nearest shape, and in practice the shape of the
classification label. Heatmaps become coordinates by integral regression (Sun et al.,
*Integral Human Pose Regression*): a softmax over all pixels of each heatmap and the expected
pixel-centre position under it; the loss is L1 on the coordinates of the keypoints that lie
inside the image.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.models.resnet import ResNet
from torchvision.models.segmentation.lraspp import LRASPPHead
from torchvision.ops import MultiScaleRoIAlign

from featcodec.models.backbones import Split, build_backbone, split_model

__all__ = [
    "HEADS",
    "DepthNet",
    "DetectionBack",
    "DetectionBody",
    "KeypointNet",
    "SegmentationNet",
    "build_task_model",
    "classification_model",
    "crop_to",
    "depth_model",
    "detection_model",
    "detection_targets",
    "keypoint_model",
    "main_object_keypoints",
    "register_head",
    "segmentation_model",
    "soft_argmax",
    "split_task_model",
    "task_forward",
    "task_loss",
]

LOW_STRIDE = 8
"""Stride of the "low" tap (``layer2``) of a ResNet, the resolution the dense heads work at."""

_TRUNK = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


# --------------------------------------------------------------------------------------------
# Helpers shared by the heads, losses and metrics
# --------------------------------------------------------------------------------------------


def crop_to(output: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
    """Crop a dense output ``(B, C, H', W')`` to ``(B, C, H, W)``, ``H <= H'``, ``W <= W'``.

    Dense heads produce ``8·ceil(H/8)`` rows (the back cannot see ``H``); the extra rows and
    columns are bottom/right padding, so the top-left crop is the aligned part.
    """
    h, w = int(size[0]), int(size[1])
    if output.shape[-2] < h or output.shape[-1] < w:
        raise ValueError(f"output {tuple(output.shape[-2:])} is smaller than the target {(h, w)}")
    return output[..., :h, :w]


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
        batch: a ``collate_scenes`` batch: ``image`` ``(B, 3, H, W)``, ``boxes`` (list of
            ``(n, 4)`` xyxy), ``keypoints`` (list of ``(n, 5, 2)`` or ``(n, 5, 3)``; a third
            column, the visibility flag, is ignored).

    Returns:
        ``(coords, valid)``: ``(B, 5, 2)`` float ``(x, y)`` in pixels, and ``(B, 5)`` bool, true
        for keypoints with finite coordinates inside the image (``0 <= x < W``, ``0 <= y < H``).
        Outline keypoints lie on the shape's boundary, so the visibility flag (does the
        keypoint's pixel show the shape) is close to a coin toss for them; inside-the-image is
        what a soft-argmax over the image can reach.
    """
    h, w = batch["image"].shape[-2:]
    coords, valid = [], []
    for boxes, points in zip(batch["boxes"], batch["keypoints"], strict=True):
        boxes = torch.as_tensor(boxes, dtype=torch.float32)
        points = torch.as_tensor(points, dtype=torch.float32)
        if len(boxes) == 0:
            xy = torch.full((points.shape[-2] if points.dim() == 3 else 5, 2), math.nan)
        else:
            sides = (boxes[:, 2:] - boxes[:, :2]).clamp_min(0)
            area = sides[:, 0] * sides[:, 1]
            xy = points[int(area.argmax())][:, :2]
        ok = torch.isfinite(xy).all(-1) & (xy[:, 0] >= 0) & (xy[:, 0] < w)
        ok &= (xy[:, 1] >= 0) & (xy[:, 1] < h)
        coords.append(torch.nan_to_num(xy))
        valid.append(ok)
    return torch.stack(coords), torch.stack(valid)


def detection_targets(batch: Mapping[str, Any], device: torch.device | None = None) -> list[dict]:
    """torchvision detection targets from a scene batch: per image ``{"boxes": (n, 4) xyxy,
    "labels": (n,) int64}`` with ``label = class + 1`` (0 is torchvision's background) and
    boxes of zero width or height dropped (the detector refuses them)."""
    targets = []
    for boxes, labels in zip(batch["boxes"], batch["box_labels"], strict=True):
        boxes = torch.as_tensor(boxes, dtype=torch.float32, device=device).reshape(-1, 4)
        labels = torch.as_tensor(labels, dtype=torch.int64, device=device).reshape(-1)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        targets.append({"boxes": boxes[keep], "labels": labels[keep] + 1})
    return targets


def _stage_channels(stage: nn.Module) -> int:
    """Output channels of a ResNet stage (the width of its last BatchNorm)."""
    norms = [m for m in stage.modules() if isinstance(m, nn.BatchNorm2d)]
    return norms[-1].num_features


def _resnet(backbone: str, weights: str | None) -> ResNet:
    """The classification backbone whose trunk the task network reuses; a ResNet."""
    model = build_backbone(backbone, weights=weights)
    if not isinstance(model, ResNet):
        raise ValueError(
            f"task heads need a ResNet-family backbone (conv1 … layer4), got {backbone!r} "
            f"({type(model).__name__})"
        )
    return model


# --------------------------------------------------------------------------------------------
# Dense task networks (traceable, split with models.backbones.split_model)
# --------------------------------------------------------------------------------------------


class _TrunkNet(nn.Module):
    """A ResNet trunk whose layers keep the backbone's names (``conv1`` … ``layer4``), so the
    task network's node names and front ``state_dict`` keys are the classifier's.

    Args:
        backbone: the ResNet to take the trunk from (its layers are shared, not copied);
            ``avgpool`` and ``fc`` are dropped.
    """

    def __init__(self, backbone: ResNet) -> None:
        super().__init__()
        for name in _TRUNK:
            self.add_module(name, getattr(backbone, name))
        self.low_channels = _stage_channels(backbone.layer2)
        self.high_channels = _stage_channels(backbone.layer4)

    def taps(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Normalized images ``(B, 3, H, W)`` -> ``low`` (``layer2``, ``(B, C2, H/8, W/8)``) and
        ``high`` (``layer4``, ``(B, C4, H/32, W/32)``) features (sizes rounded up)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        low = self.layer2(self.layer1(x))
        high = self.layer4(self.layer3(low))
        return low, high


class SegmentationNet(_TrunkNet):
    """Semantic segmentation: an LRASPP head (Howard et al., MobileNetV3) on ``layer2`` and
    ``layer4``, logits upsampled ×8 (bilinear) to the input grid.

    Args:
        backbone: the ResNet whose trunk is used.
        num_classes: number of object classes ``K``; the output has ``K + 1`` channels
            (channel 0 is the background, channel ``k + 1`` class ``k``, as in the scene
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


class DepthNet(_TrunkNet):
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


class KeypointNet(_TrunkNet):
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


# --------------------------------------------------------------------------------------------
# Detection: Faster R-CNN on a split-able body
# --------------------------------------------------------------------------------------------


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
        for name in _TRUNK[:-1]:
            self.add_module(name, getattr(backbone, name))
        self.lateral = nn.Conv2d(_stage_channels(backbone.layer2), out_channels, 1)
        self.top = nn.Conv2d(_stage_channels(backbone.layer3), out_channels, 1)
        self.smooth = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        """Normalized images ``(B, 3, H, W)`` -> features ``(B, out_channels, ⌈H/8⌉, ⌈W/8⌉)``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer2(self.layer1(x))
        c3 = self.layer3(c2)
        top = F.interpolate(self.top(c3), size=c2.shape[-2:], mode="nearest")
        return self.smooth(self.lateral(c2) + top)


class _SceneTransform(GeneralizedRCNNTransform):
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


# --------------------------------------------------------------------------------------------
# Registry and builders
# --------------------------------------------------------------------------------------------

HeadBuilder = Callable[..., nn.Module]

HEADS: dict[str, HeadBuilder] = {}
"""Task name -> builder ``(backbone, weights, num_classes, **kw) -> nn.Module``."""


def register_head(task: str) -> Callable[[HeadBuilder], HeadBuilder]:
    """Decorator registering a task-network builder under ``task`` in :data:`HEADS`."""

    def add(builder: HeadBuilder) -> HeadBuilder:
        if task in HEADS:
            raise ValueError(f"task {task!r} is already registered")
        HEADS[task] = builder
        return builder

    return add


@register_head("classification")
def classification_model(
    backbone: str = "scene_resnet10", weights: str | None = None, num_classes: int = 5
) -> nn.Module:
    """The backbone's own classifier: normalized images ``(B, 3, H, W)`` -> logits ``(B, K)``.
    See :func:`models.backbones.build_backbone`."""
    return build_backbone(backbone, weights=weights, num_classes=num_classes)


@register_head("segmentation")
def segmentation_model(
    backbone: str = "scene_resnet10",
    weights: str | None = None,
    num_classes: int = 5,
    inter_channels: int = 128,
) -> SegmentationNet:
    """:class:`SegmentationNet` on the trunk of ``backbone`` (``weights``: the backbone's
    pretrained classifier weights, the head is always random)."""
    return SegmentationNet(_resnet(backbone, weights), num_classes, inter_channels)


@register_head("depth")
def depth_model(
    backbone: str = "scene_resnet10",
    weights: str | None = None,
    num_classes: int = 5,
    inter_channels: int = 128,
    init_depth: float = 6.0,
) -> DepthNet:
    """:class:`DepthNet` on the trunk of ``backbone`` (``num_classes`` is unused)."""
    del num_classes
    return DepthNet(_resnet(backbone, weights), inter_channels, init_depth)


@register_head("keypoints")
def keypoint_model(
    backbone: str = "scene_resnet10",
    weights: str | None = None,
    num_classes: int = 5,
    num_keypoints: int = 5,
    inter_channels: int = 128,
) -> KeypointNet:
    """:class:`KeypointNet` on the trunk of ``backbone`` (``num_classes`` is unused)."""
    del num_classes
    return KeypointNet(_resnet(backbone, weights), num_keypoints, inter_channels)


@register_head("detection")
def detection_model(
    backbone: str = "scene_resnet10",
    weights: str | None = None,
    num_classes: int = 5,
    image_size: int = 64,
    anchor_sizes: tuple[int, ...] = (8, 16, 32, 64),
    out_channels: int = 128,
    representation_size: int = 256,
) -> FasterRCNN:
    """torchvision's Faster R-CNN on a :class:`DetectionBody` of ``backbone``, sized for small
    images.

    Input: normalized images, a ``(B, 3, H, W)`` tensor or a list of ``(3, H, W)``; output in
    eval mode a list of ``{"boxes", "labels", "scores"}`` per image (``label = class + 1``), in
    training mode (called with :func:`detection_targets`) torchvision's dict of losses.

    Args:
        backbone: a ResNet-family backbone name.
        weights: pretrained weights of the backbone's classifier (the trunk's).
        num_classes: object classes ``K`` (the predictor has ``K + 1`` outputs).
        image_size: recorded as the transform's ``min_size``/``max_size``; the transform never
            resizes (images keep their size, whatever it is).
        anchor_sizes: anchor sides in pixels (aspect ratios 0.5, 1, 2) on the stride-8 map.
        out_channels: width of the body's output map.
        representation_size: width of the two-layer box head (torchvision's default is 1024).
    """
    body = DetectionBody(_resnet(backbone, weights), out_channels)
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
    model.transform = _SceneTransform(
        image_size, image_size, [0.0, 0.0, 0.0], [1.0, 1.0, 1.0], size_divisible=LOW_STRIDE
    )
    return model


def build_task_model(
    task: str,
    backbone: str = "scene_resnet10",
    weights: str | None = None,
    num_classes: int = 5,
    **kw: Any,
) -> nn.Module:
    """Build the task network for ``task`` (a key of :data:`HEADS`) on ``backbone``.

    Args:
        task: ``"classification"``, ``"segmentation"``, ``"depth"``, ``"keypoints"`` or
            ``"detection"``.
        backbone: backbone name (a ResNet for every task but classification).
        weights: pretrained backbone weights (``None``: random).
        num_classes: object classes ``K``.
        **kw: builder-specific options (see the builder functions).

    Returns:
        The task network in train mode, mapping normalized images ``(B, 3, H, W)`` to the
        task output.
    """
    if task not in HEADS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(HEADS)}")
    return HEADS[task](backbone=backbone, weights=weights, num_classes=num_classes, **kw)


def task_of(arch: Mapping[str, Any]) -> str:
    """The task an architecture dict serves (``"classification"`` when it names none: every
    checkpoint written before the other tasks existed)."""
    return str(arch.get("task", "classification"))


@contextmanager
def losses_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put a frozen (eval-mode) task network into training mode for the length of the block,
    with its batch norms kept in eval mode (running statistics untouched): a detector only
    returns its losses in training mode. Restores the previous modes afterwards."""
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


def split_task_model(model: nn.Module, split_at: str, name: str = "") -> Split:
    """Split a task network into ``front`` and ``back`` at node ``split_at``.

    Traceable networks (every task but detection) are split by
    :func:`models.backbones.split_model`. A Faster R-CNN has its body split there, and the
    back is a :class:`DetectionBack` (rest of the body, RPN, ROI heads). ``back(front(x))``
    equals ``model(x)`` (for detection: for image sides that are multiples of 8).

    Args:
        model: a network from :func:`build_task_model`.
        split_at: node name or module prefix (``"layer2"``).
        name: backbone name for messages and :attr:`Split.backbone`.
    """
    if not isinstance(model, GeneralizedRCNN):
        return split_model(model, split_at, name=name)
    body = split_model(model.backbone, split_at, name=name)
    back = DetectionBack(body.back, model, body.stride)
    back.train(model.training)
    return Split(body.front, back, body.stride, body.channels, body.node, body.backbone)


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------


def task_forward(model: nn.Module, task: str, images: Tensor, batch: Mapping[str, Any]) -> Any:
    """Run ``model`` (or a split ``back``) on ``images`` the way :func:`task_loss` expects:
    a detector in training mode also gets the batch's :func:`detection_targets`.

    Args:
        model: the task network, or a split ``back`` (then ``images`` are its features).
        task: the task name.
        images: normalized images ``(B, 3, H, W)`` (or features for a ``back``).
        batch: the ``collate_scenes`` batch the images come from.
    """
    if task == "detection" and model.training:
        return model(images, detection_targets(batch, images.device))
    return model(images)


def _masked_rmse(pred: Tensor, target: Tensor) -> Tensor:
    """RMSE over pixels with finite, positive ground truth; 0 (with a gradient) if none."""
    valid = torch.isfinite(target) & (target > 0)
    if not bool(valid.any()):
        return pred.sum() * 0.0
    return (pred[valid] - target[valid]).square().mean().sqrt()


def task_loss(task: str, output: Any, batch: Mapping[str, Any]) -> Tensor:
    """Training loss of a task network's ``output`` against a ``collate_scenes`` ``batch``.

    * classification: cross-entropy of logits ``(B, K)`` with ``label`` ``(B,)``;
    * segmentation: pixel cross-entropy of logits ``(B, K+1, H', W')`` with ``mask``
      ``(B, H, W)`` (output cropped to ``H x W``);
    * depth: RMSE of ``(B, 1, H', W')`` against ``depth`` ``(B, H, W)`` over pixels with finite,
      positive ground truth;
    * keypoints: mean L1 distance of ``(B, 5, 2)`` to the main object's keypoints
      (:func:`main_object_keypoints`) that lie inside the image;
    * detection: the sum of torchvision's loss dict (see :func:`task_forward`).
    """
    if task == "classification":
        return F.cross_entropy(output, torch.as_tensor(batch["label"], device=output.device))
    if task == "segmentation":
        mask = torch.as_tensor(batch["mask"], device=output.device)
        return F.cross_entropy(crop_to(output, mask.shape[-2:]), mask)
    if task == "depth":
        depth = torch.as_tensor(batch["depth"], device=output.device)
        return _masked_rmse(crop_to(output, depth.shape[-2:])[:, 0], depth)
    if task == "keypoints":
        coords, valid = main_object_keypoints(batch)
        coords, valid = coords.to(output.device), valid.to(output.device)
        if not bool(valid.any()):
            return output.sum() * 0.0
        return (output - coords).abs().sum(-1)[valid].mean() / 2
    if task == "detection":
        if not isinstance(output, Mapping):
            raise TypeError(
                "the detection loss needs the detector's loss dict: call it in training mode "
                "with targets (task_forward)"
            )
        return sum(output.values(), torch.zeros((), device=_device_of(output)))
    raise ValueError(f"unknown task {task!r}; known: {', '.join(HEADS)}")


def _device_of(losses: Mapping[str, Tensor]) -> torch.device:
    return next(iter(losses.values())).device if losses else torch.device("cpu")
