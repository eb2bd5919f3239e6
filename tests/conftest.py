"""Shared fixtures: small models and checkpoints built once per session."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from PIL import Image

warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)

from featcodec.codec.facade import Codec, default_arch  # noqa: E402

torch.set_num_threads(2)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "cuda" in item.keywords:
                item.add_marker(skip)


TINY = {"name": "hyperprior", "N": 16, "M": 16, "downsample": 1, "attention": False}


class FixtureTinyNet(torch.nn.Module):
    """A classifier small enough for committed checkpoints (tests/fixtures/legacy): stride 8
    and 16 channels at ``layer2``."""

    def __init__(self, num_classes: int | None = None) -> None:
        super().__init__()
        nn = torch.nn
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.layer1 = nn.Conv2d(8, 12, 3, stride=2, padding=1)
        self.layer2 = nn.Conv2d(12, 16, 3, stride=2, padding=1)
        self.fc = nn.Linear(16, num_classes or 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer2(torch.relu(self.layer1(x)))
        return self.fc(x.mean(dim=(2, 3)))


def register_fixture_backbone() -> str:
    """Register :class:`FixtureTinyNet` as ``fixture_tinynet`` (once); returns the name."""
    from featcodec.models.backbones import available_backbones, register_backbone

    if "fixture_tinynet" not in available_backbones():
        register_backbone("fixture_tinynet", FixtureTinyNet)
    return "fixture_tinynet"


@pytest.fixture(scope="session")
def tiny_arch() -> dict:
    return default_arch(codec=dict(TINY))


@pytest.fixture(scope="session")
def tiny_codec(tiny_arch: dict) -> Codec:
    torch.manual_seed(0)
    return Codec.build(tiny_arch).eval()


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_codec: Codec, tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
    tiny_codec.save(path)
    return path


def quiet_trainer(steps: int = -1, epochs: int | None = None, **kw: object) -> pl.Trainer:
    """Train for ``steps`` optimizer steps (two per batch for the codec modules, which step a
    main and an aux optimizer) or ``epochs`` epochs."""
    return pl.Trainer(
        max_steps=steps,
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **kw,
    )


# --- on-disk dataset fixtures (shared by test_datasets and test_paper_configs) ---


def save_rgb(path: Path, h: int, w: int, value: int = 0, fmt: str | None = None) -> None:
    """An RGB image ``h`` × ``w``: a gradient plus ``value`` in the red channel."""
    path.parent.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([np.full((h, w), value), (x * 7) % 256, (y * 11) % 256], axis=-1)
    Image.fromarray(rgb.astype(np.uint8)).save(path, format=fmt)


def corrupt_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n this is not really an image")


COCO_JSON = {
    "images": [
        {"id": 7, "file_name": "a.jpg", "width": 40, "height": 30},
        {"id": 3, "file_name": "b.jpg", "width": 40, "height": 30},
        {"id": 12, "file_name": "c.jpg", "width": 20, "height": 16},
    ],
    "annotations": [
        # image 3 (first by id): a dog (id 18), exact in float32; a crowd and an empty box.
        {"id": 1, "image_id": 3, "category_id": 18, "bbox": [10.5, 5.25, 12.0, 8.5],
         "area": 102.0, "iscrowd": 0},
        {"id": 2, "image_id": 3, "category_id": 1, "bbox": [0, 0, 20, 20], "area": 400.0,
         "iscrowd": 1},
        {"id": 3, "image_id": 3, "category_id": 1, "bbox": [3, 4, 0, 6], "area": 0.0,
         "iscrowd": 0},
        # image 7: a person reaching past the right and bottom edges, and a dog.
        {"id": 4, "image_id": 7, "category_id": 1, "bbox": [30, 20, 20, 20], "area": 400.0,
         "iscrowd": 0},
        {"id": 5, "image_id": 7, "category_id": 18, "bbox": [2, 3, 4, 5], "area": 20.0,
         "iscrowd": 0},
    ],
    "categories": [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}],
}  # fmt: skip

BASELINE, FX = 0.209313, 2262.52
"""Cityscapes camera: stereo baseline (m) and focal length (px) of the fixtures."""


def city_frame(root: Path, split: str, name: str, h: int = 8, w: int = 16) -> None:
    """One frame of Cityscapes: image, gtFine label ids, uint16 disparity, camera JSON."""
    city = name.split("_")[0]
    save_rgb(root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png", h, w)
    labels = np.zeros((h, w), dtype=np.uint8)  # 0 unlabeled
    labels[h // 2 :, :] = 7  # road
    labels[: h // 2, w // 2 :] = 26  # car
    labels[0, 0] = 33  # bicycle
    gt = root / "gtFine" / split / city / f"{name}_gtFine_labelIds.png"
    gt.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(labels).save(gt)
    disparity = np.full((h, w), 1 + 256 * 20, dtype=np.uint16)  # d = 20 px
    disparity[1, 2] = 2689  # d = 10.5 px
    disparity[2, 3] = 0  # unknown
    disparity[2, 4] = 1  # zero disparity
    disparity[5, 7] = 65535  # the largest stored value
    path = root / "disparity" / split / city / f"{name}_disparity.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(disparity).save(path)
    camera = {
        "extrinsic": {"baseline": BASELINE, "pitch": 0.038, "roll": 0.0, "x": 1.7, "y": 0.1,
                      "yaw": -0.0195, "z": 1.22},
        "intrinsic": {"fx": FX, "fy": 2265.3017905988554, "u0": 1096.98, "v0": 513.137},
    }  # fmt: skip
    path = root / "camera" / split / city / f"{name}_camera.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(camera))
