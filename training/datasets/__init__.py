"""Datasets for training and evaluating feature codecs."""

from __future__ import annotations

from featcodec.training.datasets.batch import collate_clips, collate_scenes
from featcodec.training.datasets.cityscapes import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_TRAIN_IDS,
    CityscapesDataModule,
    CityscapesSegmentationDepth,
)
from featcodec.training.datasets.coco import CocoDataModule, CocoDetectionDataset, collate_detection
from featcodec.training.datasets.datamodule import SplitDataModule
from featcodec.training.datasets.imagefolder import ImageFolderClassification, ImageFolderDataModule
from featcodec.training.datasets.pose3d import Pose3DDataModule, Pose3DFrames
from featcodec.training.datasets.resize import resize_item
from featcodec.training.datasets.synthetic import (
    NUM_KEYPOINTS,
    SHAPE_CLASSES,
    Clip,
    Scene,
    SyntheticClips,
    SyntheticClipsDataModule,
    SyntheticScenes,
    SyntheticScenesDataModule,
    amodal_mask,
    item_seed,
    outline_inside,
    outline_radius,
    outline_vertices,
    render_clip,
    render_scene,
    sample_layout,
)
from featcodec.training.datasets.video_frames import (
    VideoFrames,
    VideoFramesDataModule,
    collate_frames,
)

__all__ = [
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_TRAIN_IDS",
    "NUM_KEYPOINTS",
    "SHAPE_CLASSES",
    "CityscapesDataModule",
    "CityscapesSegmentationDepth",
    "Clip",
    "CocoDataModule",
    "CocoDetectionDataset",
    "ImageFolderClassification",
    "ImageFolderDataModule",
    "Pose3DDataModule",
    "Pose3DFrames",
    "Scene",
    "SplitDataModule",
    "SyntheticClips",
    "SyntheticClipsDataModule",
    "SyntheticScenes",
    "SyntheticScenesDataModule",
    "VideoFrames",
    "VideoFramesDataModule",
    "amodal_mask",
    "collate_clips",
    "collate_detection",
    "collate_frames",
    "collate_scenes",
    "item_seed",
    "outline_inside",
    "outline_radius",
    "outline_vertices",
    "render_clip",
    "render_scene",
    "resize_item",
    "sample_layout",
]
