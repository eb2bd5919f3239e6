"""Real-data datasets and data modules on tiny fixtures written in each dataset's on-disk format
(ImageFolder, COCO, Cityscapes, folders of video frames): fields, shapes, dtypes, labels,
resizing, batching, the config snippets, and one-line errors for bad input."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import yaml
from conftest import BASELINE, COCO_JSON, FX, city_frame, corrupt_file, save_rgb
from jsonargparse import ActionConfigFile, ArgumentParser

from featcodec.codec.errors import FeatcodecError, InputError
from featcodec.training.datasets import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_TRAIN_IDS,
    CityscapesDataModule,
    CityscapesSegmentationDepth,
    CocoDataModule,
    CocoDetectionDataset,
    ImageFolderClassification,
    ImageFolderDataModule,
    VideoFrames,
    VideoFramesDataModule,
    resize_item,
)
from featcodec.training.datasets.files import natural_key

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "datasets"


# ---------------------------------------------------------------------------------------------
# ImageFolder
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """root/train/{cat,dog}/ (3 + 2 images of mixed sizes), root/val/dog/ (1 image)."""
    root = tmp_path_factory.mktemp("imagefolder")
    for i, (h, w) in enumerate([(10, 12), (12, 10), (10, 12)]):
        save_rgb(root / "train" / "cat" / f"c{i}.png", h, w, value=10)
    for i in range(2):
        save_rgb(root / "train" / "dog" / f"d{i}.jpg", 10, 12, value=200)
    (root / "train" / ".hidden").mkdir()
    save_rgb(root / "val" / "dog" / "v0.png", 10, 12, value=200)
    return root


def test_imagefolder_labels_from_folder_names(image_root: Path) -> None:
    ds = ImageFolderClassification(image_root / "train")
    assert ds.classes == ["cat", "dog"] and len(ds) == 5
    labels = [int(ds[i]["label"]) for i in range(len(ds))]
    names = [Path(p).parent.name for p, _ in ds.samples]
    assert labels == [ds.class_to_idx[n] for n in names] == [0, 0, 0, 1, 1]
    item = ds[1]
    assert item["image"].shape == (3, 12, 10) and item["image"].dtype == torch.float32
    assert item["label"].dtype == torch.int64 and item["label"].shape == ()
    assert int(item["index"]) == 1
    assert 0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0
    # A split lacking a class keeps the training split's indices.
    val = ImageFolderClassification(image_root / "val", classes=ds.classes)
    assert int(val[0]["label"]) == 1 and val.num_classes == 2


def test_imagefolder_data_module_batches_stack(image_root: Path) -> None:
    dm = ImageFolderDataModule(str(image_root), image_size=8, batch_size=4)
    assert dm.num_classes == 2
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 8, 8) and batch["label"].shape == (4,)
    val = next(iter(dm.val_dataloader()))
    assert val["label"].tolist() == [1]
    # No val split: a held-out part of train, disjoint from the rest.
    held = ImageFolderDataModule(str(image_root), val_split=None, val_fraction=0.4, image_size=8)
    held.setup("fit")
    train_idx = {int(held.train_set[i]["index"]) for i in range(len(held.train_set))}
    val_idx = {int(held.val_set[i]["index"]) for i in range(len(held.val_set))}
    assert len(val_idx) == 2 and not train_idx & val_idx and len(train_idx | val_idx) == 5
    # Mixed sizes without image_size: a clear error instead of torch's stack error.
    mixed = ImageFolderDataModule(str(image_root), batch_size=5)
    with pytest.raises(InputError, match="set image_size"):
        next(iter(mixed.train_dataloader()))
    with pytest.raises(InputError, match="no test_split configured"):
        dm.test_dataloader()


def test_imagefolder_bad_input(image_root: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=re.escape(f"{tmp_path / 'nope'}: image folder not found")):
        ImageFolderClassification(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=re.escape(f"{tmp_path / 'empty'}: no class folders")):
        ImageFolderClassification(tmp_path / "empty")
    (tmp_path / "noimg" / "cat").mkdir(parents=True)
    (tmp_path / "noimg" / "cat" / "notes.txt").write_text("x")
    message = f"{tmp_path / 'noimg'}: class folders hold no images"
    with pytest.raises(InputError, match=re.escape(message)):
        ImageFolderClassification(tmp_path / "noimg")
    shutil.copytree(image_root / "val", tmp_path / "val")
    save_rgb(tmp_path / "val" / "bird" / "b.png", 4, 4)
    message = f"{tmp_path / 'val'}: class folder(s) bird not among the 2 classes"
    with pytest.raises(InputError, match=re.escape(message)):
        ImageFolderClassification(tmp_path / "val", classes=["cat", "dog"])
    corrupt_file(tmp_path / "bad" / "cat" / "x.png")
    ds = ImageFolderClassification(tmp_path / "bad")
    with pytest.raises(
        InputError, match=re.escape(f"{tmp_path / 'bad' / 'cat' / 'x.png'}: cannot read")
    ):
        ds[0]
    dm = ImageFolderDataModule(str(image_root), val_split="valid")
    with pytest.raises(
        InputError, match=re.escape(f"{image_root / 'valid'}: split 'valid' not found")
    ):
        dm.setup("validate")
    assert issubclass(InputError, FeatcodecError)


# ---------------------------------------------------------------------------------------------
# COCO
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """root/images/{a,b,c}.jpg and root/annotations/instances_{train,val}.json."""
    root = tmp_path_factory.mktemp("coco")
    for info in COCO_JSON["images"]:
        save_rgb(root / "images" / info["file_name"], info["height"], info["width"], fmt="JPEG")
    (root / "annotations").mkdir()
    for split in ("train", "val"):
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(COCO_JSON))
    return root


def test_coco_boxes_and_categories(coco_root: Path) -> None:
    ds = CocoDetectionDataset(coco_root / "images", coco_root / "annotations/instances_train.json")
    assert len(ds) == 3 and ds.num_classes == 2
    assert ds.category_ids == [1, 18] and ds.category_to_index == {1: 0, 18: 1}
    assert ds.class_names == ["person", "dog"]
    first = ds[0]  # image id 3: crowd and empty boxes dropped
    assert int(first["image_id"]) == 3 and int(first["index"]) == 0
    assert first["image"].shape == (3, 30, 40) and first["image"].dtype == torch.float32
    assert first["boxes"].dtype == torch.float32 and first["box_labels"].dtype == torch.int64
    assert first["boxes"].tolist() == [[10.5, 5.25, 22.5, 13.75]]
    assert first["box_labels"].tolist() == [1]  # COCO id 18 → index 1
    second = ds[1]  # image id 7: the person is clipped to the image
    assert int(second["image_id"]) == 7
    assert second["boxes"].tolist() == [[30.0, 20.0, 40.0, 30.0], [2.0, 3.0, 6.0, 8.0]]
    assert second["box_labels"].tolist() == [0, 1]
    third = ds[2]  # no annotations
    assert third["boxes"].shape == (0, 4) and third["box_labels"].shape == (0,)


def test_coco_resize_scales_boxes(coco_root: Path) -> None:
    ds = CocoDetectionDataset(
        coco_root / "images", coco_root / "annotations/instances_train.json", image_size=(15, 80)
    )
    item = ds[1]  # 30 × 40 → 15 × 80: x × 2, y × 0.5
    assert item["image"].shape == (3, 15, 80)
    assert item["boxes"].tolist() == [[60.0, 10.0, 80.0, 15.0], [4.0, 1.5, 12.0, 4.0]]


def test_coco_data_module_batches(coco_root: Path) -> None:
    dm = CocoDataModule(str(coco_root), "train", "val", image_size=(16, 16), batch_size=3)
    dm.setup("fit")
    assert dm.num_classes == 2
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape == (3, 3, 16, 16)
    assert isinstance(batch["boxes"], list) and len(batch["boxes"]) == 3
    assert [b.shape[0] for b in batch["boxes"]] == [1, 2, 0]
    assert batch["image_id"].tolist() == [3, 7, 12] and batch["index"].tolist() == [0, 1, 2]
    lists = CocoDataModule(str(coco_root), "train", "val", batch_size=3)
    batch = next(iter(lists.val_dataloader()))  # no image_size: images of any size, as lists
    assert [tuple(im.shape) for im in batch["image"]] == [(3, 30, 40), (3, 30, 40), (3, 16, 20)]


def test_coco_bad_input(coco_root: Path, tmp_path: Path) -> None:
    images, ann = coco_root / "images", coco_root / "annotations/instances_train.json"
    missing = tmp_path / "instances_x.json"
    with pytest.raises(InputError, match=re.escape(f"{missing}: COCO annotation file not found")):
        CocoDetectionDataset(images, missing)
    with pytest.raises(
        InputError, match=re.escape(f"{tmp_path / 'imgs'}: COCO image folder not found")
    ):
        CocoDetectionDataset(tmp_path / "imgs", ann)
    dm = CocoDataModule(str(coco_root), "train", "test")
    with pytest.raises(
        InputError, match=re.escape("instances_test.json: COCO annotation file not found")
    ):
        dm.setup("validate")
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [')
    with pytest.raises(InputError, match=re.escape(f"{broken}: not a COCO annotation file")):
        CocoDetectionDataset(images, broken)
    foreign = dict(COCO_JSON, categories=[{"id": 1, "name": "person"}])
    (tmp_path / "foreign.json").write_text(json.dumps(foreign))
    with pytest.raises(InputError, match=re.escape("category id 18")):
        CocoDetectionDataset(images, tmp_path / "foreign.json")
    # An image listed in the file but missing on disk, and a corrupt one.
    shutil.copytree(images, tmp_path / "images")
    (tmp_path / "images" / "b.jpg").unlink()
    corrupt_file(tmp_path / "images" / "a.jpg")
    ds = CocoDetectionDataset(tmp_path / "images", ann)
    with pytest.raises(
        InputError, match=re.escape(f"{tmp_path / 'images' / 'b.jpg'}: image file not found")
    ):
        ds[0]
    with pytest.raises(
        InputError, match=re.escape(f"{tmp_path / 'images' / 'a.jpg'}: cannot read")
    ):
        ds[1]


# ---------------------------------------------------------------------------------------------
# Cityscapes
# ---------------------------------------------------------------------------------------------


OFFICIAL_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                      24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}  # fmt: skip


@pytest.fixture(scope="module")
def city_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fake city ``fake`` with 2 train frames and 1 val frame, in the official layout."""
    root = tmp_path_factory.mktemp("cityscapes")
    city_frame(root, "train", "fake_000000_000019")
    city_frame(root, "train", "fake_000001_000019")
    city_frame(root, "val", "fake_000002_000019")
    return root


def test_cityscapes_train_id_table_is_the_official_one() -> None:
    expected = np.full(256, 255)
    for label_id, train_id in OFFICIAL_TRAIN_IDS.items():
        expected[label_id] = train_id
    assert CITYSCAPES_TRAIN_IDS.tolist() == expected.tolist()
    assert len(CITYSCAPES_CLASSES) == 19
    assert (CITYSCAPES_CLASSES[0], CITYSCAPES_CLASSES[13]) == ("road", "car")


def test_cityscapes_mask_and_depth(city_root: Path) -> None:
    ds = CityscapesSegmentationDepth(city_root, "train")
    assert len(ds) == 2 and ds.num_classes == 19 and ds.ignore_index == 255
    assert ds.images[0].name == "fake_000000_000019_leftImg8bit.png"
    item = ds[0]
    assert set(item) == {"image", "mask", "depth", "index"}
    assert item["image"].shape == (3, 8, 16) and item["image"].dtype == torch.float32
    mask, depth = item["mask"], item["depth"]
    assert mask.shape == (8, 16) and mask.dtype == torch.int64
    assert depth.shape == (8, 16) and depth.dtype == torch.float32
    assert int(mask[7, 0]) == 0  # road
    assert int(mask[0, 15]) == 13  # car
    assert int(mask[1, 0]) == 255  # unlabeled
    assert int(mask[0, 0]) == 18  # bicycle
    assert set(mask.unique().tolist()) == {0, 13, 18, 255}
    exact = np.float32(BASELINE * FX / ((2689 - 1) / 256))
    assert depth[1, 2].item() == exact
    assert depth[0, 0].item() == np.float32(BASELINE * FX / 20.0)
    assert depth[5, 7].item() == np.float32(BASELINE * FX / ((65535 - 1) / 256))
    assert depth[2, 3].item() == 0.0 and depth[2, 4].item() == 0.0  # invalid → 0
    scene = CityscapesSegmentationDepth(city_root, "train", mask_format="scene", depth=False)
    assert scene.ignore_index == 0 and set(scene[0]) == {"image", "mask", "index"}
    assert torch.equal(scene[0]["mask"], torch.where(mask == 255, 0, mask + 1))
    only_depth = CityscapesSegmentationDepth(city_root, "val", semantic=False)
    assert set(only_depth[0]) == {"image", "depth", "index"}


def test_cityscapes_resize_and_data_module(city_root: Path) -> None:
    ds = CityscapesSegmentationDepth(city_root, "train", image_size=(4, 8))
    item = ds[0]  # halved: mask keeps its classes' regions, depth averages valid pixels only
    assert item["mask"].shape == (4, 8) and item["depth"].shape == (4, 8)
    assert item["mask"][2:, :].eq(0).all() and item["mask"][:2, 4:].eq(13).all()
    assert item["depth"].gt(0).all()  # one invalid pixel of four never makes an invalid one
    far = torch.tensor(BASELINE * FX / 20.0)
    assert torch.allclose(item["depth"][3, :2], far.expand(2), rtol=1e-6)  # far from holes
    dm = CityscapesDataModule(str(city_root), image_size=(4, 8), batch_size=2)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 4, 8)
    assert batch["mask"].shape == (2, 4, 8) and batch["mask"].dtype == torch.int64
    assert batch["depth"].shape == (2, 4, 8) and batch["index"].shape == (2,)
    assert next(iter(dm.val_dataloader()))["image"].shape == (1, 3, 4, 8)


def test_cityscapes_bad_input(city_root: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=re.escape(f"{tmp_path}: no split 'bogus'")):
        CityscapesSegmentationDepth(tmp_path, "bogus")
    missing_split = city_root / "leftImg8bit" / "test"
    with pytest.raises(
        InputError, match=re.escape(f"{missing_split}: test image folder not found")
    ):
        CityscapesSegmentationDepth(city_root, "test")
    with pytest.raises(InputError, match=re.escape(f"{tmp_path / 'x'}: Cityscapes root not found")):
        CityscapesSegmentationDepth(tmp_path / "x")
    root = tmp_path / "cs"
    shutil.copytree(city_root, root)
    disparity = root / "disparity/train/fake/fake_000001_000019_disparity.png"
    disparity.unlink()
    with pytest.raises(InputError, match=re.escape(f"{disparity}: disparity file not found")):
        CityscapesSegmentationDepth(root, "train")
    assert len(CityscapesSegmentationDepth(root, "train", depth=False)) == 2
    camera = root / "camera/val/fake/fake_000002_000019_camera.json"
    camera.write_text(json.dumps({"intrinsic": {"fx": FX}}))
    with pytest.raises(InputError, match=re.escape(f"{camera}: not a Cityscapes camera file")):
        CityscapesSegmentationDepth(root, "val")[0]
    corrupt_file(root / "gtFine/val/fake/fake_000002_000019_gtFine_labelIds.png")
    with pytest.raises(
        InputError, match=re.escape("fake_000002_000019_gtFine_labelIds.png: cannot read")
    ):
        CityscapesSegmentationDepth(root, "val", depth=False)[0]
    empty = tmp_path / "empty"
    (empty / "leftImg8bit" / "train").mkdir(parents=True)
    (empty / "gtFine" / "train").mkdir(parents=True)
    with pytest.raises(InputError, match=re.escape(f"{empty / 'leftImg8bit' / 'train'}: no")):
        CityscapesSegmentationDepth(empty, "train")


# ---------------------------------------------------------------------------------------------
# Video frames
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clips_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """root/train/{walk (frames 1, 2, 10), run (frame_1 … frame_5)}; the red channel of each
    frame is its number."""
    root = tmp_path_factory.mktemp("clips")
    for n in (10, 2, 1):
        save_rgb(root / "train" / "walk" / f"{n}.png", 6, 8, value=n)
    for n in range(1, 6):
        save_rgb(root / "train" / "run" / f"frame_{n}.png", 4, 4, value=n)
    (root / "train" / "run" / ".DS_Store").write_bytes(b"x")
    return root


def _numbers(frames: torch.Tensor) -> list[int]:
    return [round(float(f[0, 0, 0]) * 255) for f in frames]


def test_natural_order() -> None:
    names = ["10.png", "2.png", "1.png", "frame_10.png", "frame_9.png", "Frame_11.png"]
    assert sorted(names, key=natural_key) == [
        "1.png", "2.png", "10.png", "frame_9.png", "frame_10.png", "Frame_11.png",
    ]  # fmt: skip


def test_video_frames_clips_and_windows(clips_root: Path) -> None:
    whole = VideoFrames(clips_root / "train")
    assert [c.name for c in whole.clips] == ["run", "walk"] and len(whole) == 2
    walk = whole[1]
    assert walk["name"] == "walk" and int(walk["index"]) == 1 and int(walk["start"]) == 0
    assert walk["frames"].shape == (3, 3, 6, 8) and walk["frames"].dtype == torch.float32
    assert _numbers(walk["frames"]) == [1, 2, 10]  # natural order, not 1, 10, 2
    windows = VideoFrames(clips_root / "train", num_frames=2)
    got = [(windows[i]["name"], int(windows[i]["start"])) for i in range(len(windows))]
    assert got == [("run", 0), ("run", 2), ("walk", 0)]
    assert _numbers(windows[1]["frames"]) == [3, 4]
    assert len(VideoFrames(clips_root / "train", num_frames=2, stride=1)) == 4 + 2
    long = VideoFrames(clips_root / "train", num_frames=4)
    assert len(long) == 1 and [c.name for c in long.skipped] == ["walk"]
    single = VideoFrames(clips_root / "train" / "walk", image_size=(3, 4))  # one folder of frames
    assert len(single) == 1 and single[0]["name"] == "walk"
    assert single[0]["frames"].shape == (3, 3, 3, 4)


def test_video_frames_data_module(clips_root: Path) -> None:
    dm = VideoFramesDataModule(
        str(clips_root), val_split=None, num_frames=2, stride=1, image_size=4, batch_size=8,
        val_fraction=0.2,
    )  # fmt: skip
    batch = next(iter(dm.train_dataloader()))
    assert batch["frames"].shape == (5, 2, 3, 4, 4)
    assert batch["index"].shape == (5,) and batch["start"].shape == (5,)
    assert isinstance(batch["name"], list) and set(batch["name"]) <= {"run", "walk"}
    assert next(iter(dm.val_dataloader()))["frames"].shape == (1, 2, 3, 4, 4)


def test_video_frames_bad_input(clips_root: Path, tmp_path: Path) -> None:
    clip = tmp_path / "mixed" / "shaky"
    save_rgb(clip / "0001.png", 6, 8)
    save_rgb(clip / "0002.png", 6, 8)
    save_rgb(clip / "0003.png", 7, 8)
    message = f"{clip}: clip 'shaky' mixes frame sizes 8×6 (0001.png) and 8×7 (0003.png) (W×H)"
    with pytest.raises(InputError, match=re.escape(message)):
        VideoFrames(tmp_path / "mixed")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=re.escape(f"{tmp_path / 'empty'}: empty folder")):
        VideoFrames(tmp_path / "empty")
    (tmp_path / "hollow" / "clip").mkdir(parents=True)
    with pytest.raises(
        InputError, match=re.escape(f"{tmp_path / 'hollow' / 'clip'}: clip folder holds no")
    ):
        VideoFrames(tmp_path / "hollow")
    with pytest.raises(
        InputError, match=re.escape(f"{tmp_path / 'absent'}: frames folder not found")
    ):
        VideoFrames(tmp_path / "absent")
    with pytest.raises(InputError, match=re.escape("no clip has 9 frames (the longest has 5)")):
        VideoFrames(clips_root / "train", num_frames=9)
    corrupt_file(tmp_path / "corrupt" / "c" / "1.png")
    with pytest.raises(
        InputError, match=re.escape(f"{tmp_path / 'corrupt' / 'c' / '1.png'}: cannot read")
    ):
        VideoFrames(tmp_path / "corrupt")


# ---------------------------------------------------------------------------------------------
# Resizing and the config snippets
# ---------------------------------------------------------------------------------------------


def _boxed_item() -> dict[str, torch.Tensor]:
    """A 12 × 16 item whose mask region (class 3) is exactly its one box [4, 4, 12, 8]."""
    mask = torch.zeros(12, 16, dtype=torch.int64)
    mask[4:8, 4:12] = 3
    depth = torch.full((12, 16), 5.0)
    depth[0, 0] = 0.0
    return {
        "image": torch.rand(3, 12, 16),
        "mask": mask,
        "depth": depth,
        "boxes": torch.tensor([[4.0, 4.0, 12.0, 8.0], [0.0, 10.0, 1.0, 12.0]]),
        "box_labels": torch.tensor([2, 0]),
        "index": torch.tensor(0),
    }


def _mask_box(mask: torch.Tensor) -> list[float]:
    rows, cols = torch.nonzero(mask, as_tuple=True)
    return [float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)]


@pytest.mark.parametrize("size", [(6, 8), (24, 32), (12, 32)])
def test_resize_keeps_boxes_and_masks_consistent(size: tuple[int, int]) -> None:
    out = resize_item(_boxed_item(), size)
    assert out["image"].shape == (3, *size) and out["mask"].shape == size
    assert _mask_box(out["mask"]) == out["boxes"][0].tolist()
    assert out["mask"].unique().tolist() == [0, 3] and out["mask"].dtype == torch.int64
    valid = out["depth"] > 0
    assert torch.allclose(out["depth"][valid], torch.tensor(5.0)) and valid.float().mean() > 0.9


def test_resize_crop_shifts_and_drops_boxes() -> None:
    item = _boxed_item()
    out = resize_item(item, (12, 12), fit="crop")  # scale 1, 2 columns cut on each side
    assert out["boxes"].tolist() == [[2.0, 4.0, 10.0, 8.0]]  # the box at x 0–1 is cut away
    assert out["box_labels"].tolist() == [2]
    assert _mask_box(out["mask"]) == out["boxes"][0].tolist()
    assert torch.allclose(out["image"], item["image"][:, :, 2:14])
    assert resize_item(_boxed_item(), (12, 16))["boxes"].shape == (2, 4)  # same size: unchanged


def _config_parser() -> ArgumentParser:
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_subclass_arguments(pl.LightningDataModule, "data")
    return parser


@pytest.mark.parametrize(
    ("name", "fixture", "overrides"),
    [
        ("imagefolder", "image_root", {"image_size": [8, 8]}),
        ("coco", "coco_root", {"train_split": "train", "val_split": "val", "image_dir": "images"}),
        ("cityscapes", "city_root", {"image_size": [4, 8]}),
        ("video_frames", "clips_root", {"image_size": [4, 4], "num_frames": 2}),
    ],
)
def test_config_snippets_select_the_data_modules(
    name: str, fixture: str, overrides: dict, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    text = (CONFIGS / f"{name}.yaml").read_text()
    assert text.startswith("#") and "Paper setting" in text
    config = yaml.safe_load(text)
    args = config["data"]["init_args"]
    args.update(overrides, root=str(request.getfixturevalue(fixture)), num_workers=0)
    args["batch_size"] = 1
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    parser = _config_parser()
    data = parser.instantiate_classes(parser.parse_args(["--config", str(path)])).data
    assert type(data).__name__ == config["data"]["class_path"].rsplit(".", 1)[1]
    batch = next(iter(data.val_dataloader()))
    assert batch["index"].shape == (1,)
