"""What the dense task heads share: a ResNet trunk with two taps, and output helpers.

Every task network maps *normalized* images ``(B, 3, H, W)`` (see
:class:`models.backbones.Normalize`, which sits in front of it) to its output, and is cut into
an edge-side ``front`` and a server-side ``back`` at a node of the trunk, like a
classification backbone (:func:`models.backbones.split_model`)::

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

The trunk's layers keep the backbone's names (``conv1`` … ``layer4``, no prefix), so torch.fx
traces the task networks and :func:`models.backbones.split_model` cuts them as it cuts a
classifier: node names (``"layer2"``), ``state_dict`` keys of the front
(``"layer1.0.conv1.weight"``) and the features ``(B, 128, H/8, W/8)`` at ``layer2`` are those of
the classification backbone, so a codec trained on a classifier's features sees the same
tensor layout. The heads read ``layer2`` (the "low" tap) and later stages only, so any split at
or before ``layer2`` is a cut.

The back cannot see the input, so its output size comes from the features: dense outputs are
``8·ceil(H/8) x 8·ceil(W/8)``, i.e. exactly ``H x W`` when the sides are multiples of 8;
:func:`crop_to` (used by the losses and metrics) crops the bottom/right padding otherwise.
Keypoint coordinates are in input pixels (pixel ``(i, j)`` has its centre at
``(j + 0.5, i + 0.5)``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.models.resnet import ResNet

from featcodec.models.backbones import build_backbone

LOW_STRIDE = 8
"""Stride of the "low" tap (``layer2``) of a ResNet, the resolution the dense heads work at."""

TRUNK = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
"""The layers of a ResNet a task network takes over, by their names."""


def crop_to(output: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
    """Crop a dense output ``(B, C, H', W')`` to ``(B, C, H, W)``, ``H <= H'``, ``W <= W'``.

    Dense heads produce ``8·ceil(H/8)`` rows (the back cannot see ``H``); the extra rows and
    columns are bottom/right padding, so the top-left crop is the aligned part.
    """
    h, w = int(size[0]), int(size[1])
    if output.shape[-2] < h or output.shape[-1] < w:
        raise ValueError(f"output {tuple(output.shape[-2:])} is smaller than the target {(h, w)}")
    return output[..., :h, :w]


def stage_channels(stage: nn.Module) -> int:
    """Output channels of a ResNet stage (the width of its last BatchNorm)."""
    norms = [m for m in stage.modules() if isinstance(m, nn.BatchNorm2d)]
    return norms[-1].num_features


def resnet(backbone: str, weights: str | None) -> ResNet:
    """The classification backbone whose trunk a task network reuses; a ResNet."""
    model = build_backbone(backbone, weights=weights)
    if not isinstance(model, ResNet):
        raise ValueError(
            f"task heads need a ResNet-family backbone (conv1 … layer4), got {backbone!r} "
            f"({type(model).__name__})"
        )
    return model


class TrunkNet(nn.Module):
    """A ResNet trunk whose layers keep the backbone's names (``conv1`` … ``layer4``), so the
    task network's node names and front ``state_dict`` keys are the classifier's.

    Args:
        backbone: the ResNet to take the trunk from (its layers are shared, not copied);
            ``avgpool`` and ``fc`` are dropped.
    """

    def __init__(self, backbone: ResNet) -> None:
        super().__init__()
        for name in TRUNK:
            self.add_module(name, getattr(backbone, name))
        self.low_channels = stage_channels(backbone.layer2)
        self.high_channels = stage_channels(backbone.layer4)

    def taps(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Normalized images ``(B, 3, H, W)`` -> ``low`` (``layer2``, ``(B, C2, H/8, W/8)``) and
        ``high`` (``layer4``, ``(B, C4, H/32, W/32)``) features (sizes rounded up)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        low = self.layer2(self.layer1(x))
        high = self.layer4(self.layer3(low))
        return low, high
