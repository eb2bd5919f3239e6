"""Networks of featcodec: classification backbones and how they are split (front / back)."""

from __future__ import annotations

from models.backbones import (
    DEFAULT_SPLITS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    INPUT_SPLIT,
    Normalize,
    Split,
    available_backbones,
    build_backbone,
    register_backbone,
    resolve_weights,
    scene_resnet10,
    split_backbone,
    split_model,
    split_nodes,
)

__all__ = [
    "DEFAULT_SPLITS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INPUT_SPLIT",
    "Normalize",
    "Split",
    "available_backbones",
    "build_backbone",
    "register_backbone",
    "resolve_weights",
    "scene_resnet10",
    "split_backbone",
    "split_model",
    "split_nodes",
]
