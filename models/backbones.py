"""Classification backbones: any torchvision classification model (built by name with
:func:`torchvision.models.get_model`) or a small project network registered with
:func:`register_backbone`, their weights, the input normalization, and a default split point
for each; :mod:`models.split` cuts them into an edge-side ``front`` and a server-side
``back`` at a named graph node:

* ``front(x)`` maps images ``(B, 3, H, W)`` to the feature tensor ``(B, C, H', W')`` that the
  codec compresses, with ``H' = ceil(H / stride)`` for the usual stride-2 convolutions;
* ``back(features)`` maps that feature tensor to the model's output (logits ``(B, K)``).

``back(front(x))`` equals ``model(x)``. Node names are the eval-mode names of
:func:`torchvision.models.feature_extraction.get_graph_node_names` (``"layer2.0.add"``), or a
module prefix (``"layer2"``: the last node inside that module). A split point must be a *cut*:
nothing after it may read a tensor computed before it (a residual connection that skips over
the split point, for example), otherwise ``back`` could not run from the features alone.

``front`` and ``back`` share their layers (parameters and buffers) with the model they were
split from, and their ``state_dict`` keys are the model's own keys (``"layer3.0.conv1.weight"``),
so the same model and split point always give the same keys.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

import torch
import torchvision
from torch import nn
from torchvision.models import WeightsEnum
from torchvision.models.resnet import BasicBlock, ResNet

__all__ = [
    "DEFAULT_SPLITS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INPUT_SPLIT",
    "Normalize",
    "available_backbones",
    "build_backbone",
    "check_backbone_name",
    "register_backbone",
    "resolve_weights",
    "scene_resnet10",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
"""Per-channel RGB mean of ImageNet, for images scaled to [0, 1]."""
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
"""Per-channel RGB standard deviation of ImageNet, for images scaled to [0, 1]."""

INPUT_SPLIT = "input"
"""Split point that puts the whole network on the server: ``front`` is the identity."""

DEFAULT_SPLITS: dict[str, str] = {
    "resnet18": "layer2",  # stride 8, 128 channels
    "resnet34": "layer2",  # stride 8, 128 channels
    "resnet50": "layer2",  # stride 8, 512 channels
    "mobilenet_v3_large": "features.6",  # stride 8, 40 channels
    "scene_resnet10": "layer2",  # stride 8, 128 channels
}
"""A sensible split point (a cut at stride 8) for each backbone the project uses."""


# --------------------------------------------------------------------------------------------
# Normalization
# --------------------------------------------------------------------------------------------


class Normalize(nn.Module):
    """Fixed per-channel normalization ``(x - mean) / std`` of images in [0, 1].

    The statistics are non-persistent buffers: they follow ``.to(device)`` but are not part of
    the ``state_dict``.

    Args:
        mean: per-channel mean, ImageNet's by default.
        std: per-channel standard deviation, ImageNet's by default.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean and std differ in length: {len(mean)} != {len(std)}")
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize images ``(B, 3, H, W)`` in [0, 1]; returns ``(B, 3, H, W)``."""
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        mean = ", ".join(f"{v:.3f}" for v in self.mean.flatten().tolist())
        std = ", ".join(f"{v:.3f}" for v in self.std.flatten().tolist())
        return f"mean=({mean}), std=({std})"


# --------------------------------------------------------------------------------------------
# Building backbones
# --------------------------------------------------------------------------------------------

_LOCAL_BACKBONES: dict[str, Callable[[int | None], nn.Module]] = {}


def _torchvision_names() -> list[str]:
    """All model names known to :func:`torchvision.models.get_model`."""
    return torchvision.models.list_models()


def register_backbone(name: str, factory: Callable[[int | None], nn.Module]) -> None:
    """Register a project network so that :func:`build_backbone` can build it by name.

    Args:
        name: backbone name (lower case); must not clash with a torchvision model.
        factory: ``factory(num_classes)`` returns a new, randomly initialised model;
            ``num_classes=None`` means the network's own default. Project networks have no
            pretrained weights.
    """
    key = name.lower()
    if key in _LOCAL_BACKBONES or key in _torchvision_names():
        raise ValueError(f"backbone {name!r} is already defined")
    _LOCAL_BACKBONES[key] = factory


def scene_resnet10(num_classes: int | None = None) -> ResNet:
    """The small task network for the embedded synthetic scenes: a ResNet-10.

    torchvision's ``ResNet(BasicBlock, [1, 1, 1, 1])``: one basic block per stage, 64-128-256-512
    channels, input ``(B, 3, H, W)``, logits ``(B, num_classes)``.

    Args:
        num_classes: number of classes; ``None`` = 5, the synthetic scene classes.
    """
    return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=5 if num_classes is None else num_classes)


register_backbone("scene_resnet10", scene_resnet10)


def available_backbones() -> list[str]:
    """Names :func:`build_backbone` accepts that can be split: project networks first, then
    torchvision's classification models (sorted)."""
    return sorted(_LOCAL_BACKBONES) + torchvision.models.list_models(module=torchvision.models)


def check_backbone_name(name: str) -> str:
    """Lower-case ``name`` and check that it is a known backbone, else raise ValueError."""
    key = name.lower()
    if key in _LOCAL_BACKBONES or key in _torchvision_names():
        return key
    known = available_backbones()
    close = difflib.get_close_matches(key, known, n=4, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    few = ", ".join([*sorted(_LOCAL_BACKBONES), *DEFAULT_SPLITS.keys() - _LOCAL_BACKBONES.keys()])
    raise ValueError(
        f"unknown backbone {name!r}; {hint}known ones include {few} "
        f"({len(known)} in all, see available_backbones())"
    )


def resolve_weights(name: str, weights: str | None) -> WeightsEnum | None:
    """Resolve a weights name for backbone ``name`` to torchvision's enum member, downloading
    nothing.

    Args:
        name: backbone name.
        weights: ``None`` (random init), ``"DEFAULT"`` (the best available weights), or a member
            name of the model's weights enum such as ``"IMAGENET1K_V1"`` (the qualified form
            ``"ResNet18_Weights.IMAGENET1K_V1"`` is accepted too).

    Returns:
        The enum member (``DEFAULT`` resolves to the member it aliases) or ``None``.

    Raises:
        ValueError: unknown backbone, unknown weights name, or weights asked for a project
            network (which has none).
    """
    key = check_backbone_name(name)
    if weights is None:
        return None
    if key in _LOCAL_BACKBONES:
        raise ValueError(
            f"backbone {name!r} is a project network without pretrained weights; "
            f"use weights=None (got {weights!r})"
        )
    enum = torchvision.models.get_model_weights(key)
    member = str(weights)
    prefix = enum.__name__ + "."
    if member.startswith(prefix):
        member = member[len(prefix) :]
    if member not in enum.__members__:
        valid = ", ".join(enum.__members__)
        raise ValueError(f"unknown weights {weights!r} for {name!r}; valid: {valid}")
    return enum[member]


def build_backbone(
    name: str, weights: str | None = None, num_classes: int | None = None
) -> nn.Module:
    """Build a classification backbone by name.

    Args:
        name: a torchvision model name (``"resnet18"``, ``"mobilenet_v3_large"``, ...) or a
            project network registered with :func:`register_backbone` (``"scene_resnet10"``).
        weights: ``None`` (random init), ``"DEFAULT"`` or a weights enum member name such as
            ``"IMAGENET1K_V1"``; see :func:`resolve_weights`. Pretrained weights are downloaded
            by torchvision if not cached.
        num_classes: size of the classifier output; ``None`` = the model's default.

    Returns:
        The model, mapping images ``(B, 3, H, W)`` to logits ``(B, num_classes)``, in train mode.
    """
    key = check_backbone_name(name)
    resolved = resolve_weights(key, weights)
    if key in _LOCAL_BACKBONES:
        return _LOCAL_BACKBONES[key](num_classes)
    kwargs: dict[str, object] = {} if num_classes is None else {"num_classes": num_classes}
    return torchvision.models.get_model(key, weights=resolved, **kwargs)
