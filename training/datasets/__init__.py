"""Datasets for training and evaluating feature codecs."""

from __future__ import annotations

from training.datasets.synthetic import (
    NUM_KEYPOINTS,
    SHAPE_CLASSES,
    Clip,
    Scene,
    SyntheticClips,
    SyntheticScenes,
    SyntheticScenesDataModule,
    amodal_mask,
    collate_clips,
    collate_scenes,
    item_seed,
    outline_inside,
    outline_radius,
    outline_vertices,
    render_clip,
    render_scene,
    sample_layout,
)

__all__ = [
    "NUM_KEYPOINTS",
    "SHAPE_CLASSES",
    "Clip",
    "Scene",
    "SyntheticClips",
    "SyntheticScenes",
    "SyntheticScenesDataModule",
    "amodal_mask",
    "collate_clips",
    "collate_scenes",
    "item_seed",
    "outline_inside",
    "outline_radius",
    "outline_vertices",
    "render_clip",
    "render_scene",
    "sample_layout",
]
