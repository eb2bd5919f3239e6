"""The paper's three settings (configs/paper/): each stage's config trains on a tiny dataset
written in the real on-disk format, and the last stage's checkpoint codes both layers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import COCO_JSON, city_frame, save_rgb

from featcodec.cli import main
from featcodec.codec.facade import Codec

PAPER = Path(__file__).resolve().parents[1] / "configs" / "paper"


@pytest.fixture(scope="module")
def coco(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("coco")
    for info in COCO_JSON["images"]:
        save_rgb(root / "train2017" / info["file_name"], info["height"], info["width"], 90)
        save_rgb(root / "val2017" / info["file_name"], info["height"], info["width"], 90)
    (root / "annotations").mkdir()
    for split in ("train2017", "val2017"):
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(COCO_JSON))
    return root


@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cityscapes")
    for i, split in enumerate(("train", "train", "val")):
        city_frame(root, split, f"fake_{i:06d}_000019")
    return root


def _stage(config: Path, tmp: Path, root: Path, size: list[int]) -> Path:
    """The config, made tiny: runs under ``tmp``, the fixture's data, one batch, a small
    backbone (the architecture's other values are the config's own)."""
    text = config.read_text().replace("runs/paper", str(tmp / "runs" / "paper"))
    cfg = yaml.safe_load(text)
    cfg["trainer"].update(
        max_epochs=1, limit_train_batches=1, limit_val_batches=1, accelerator="cpu"
    )
    cfg["data"]["init_args"].update(root=str(root), image_size=size, batch_size=2, num_workers=0)
    args = cfg["model"]["init_args"]
    if "backbone" in args:
        args["backbone"] = "resnet18"
    if "weights" in args:
        args["weights"] = None  # no downloads in tests
    if "task_options" in args:
        args["task_options"]["image_size"] = size[0]
    for key in ("N", "M"):
        if key in args:
            args[key] = 16
    path = tmp / config.parent.name / config.name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", "--config", str(path)]) == 0
    return tmp / "runs" / "paper" / config.parent.name / config.stem / "checkpoints" / "last.ckpt"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("setting", "enhancement", "channels"),
    [
        ("coco-detection", "enhancement.yaml", 3),
        ("cityscapes-depth", "enhancement.yaml", 3),
        ("cityscapes-depth", "enhancement-segmentation.yaml", 20),
    ],
)
def test_paper_setting_trains_stage_by_stage(
    setting: str, enhancement: str, channels: int, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    folder = PAPER / setting
    for name in ("task.yaml", "base.yaml", enhancement):
        text = (folder / name).read_text()
        assert text.startswith("# Paper setting"), name
    root = request.getfixturevalue("coco" if setting.startswith("coco") else "cityscapes")
    size = [32, 32] if setting.startswith("coco") else [16, 32]
    for name in ("task.yaml", "base.yaml", enhancement):
        ckpt = _stage(folder / name, tmp_path, root, size)
        assert ckpt.is_file(), name
    codec = Codec.from_checkpoint(ckpt)
    task = "detection" if setting.startswith("coco") else "depth"
    assert codec.arch["task"] == task and codec.base.g_r is not None
    assert codec.enhancement is not None
    decoded = codec.decode(codec.encode(torch.rand(3, *size)))
    assert decoded.enhanced.shape == (1, channels, *size)
    assert decoded.preview.shape == (1, 3, *size)
