"""Evaluation on any data: ``featcodec eval rd`` streams a data module's split batch by batch,
in one pass, here an ImageFolder of real photos; and run folders keep their own curve names."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from featcodec.cli import main
from featcodec.codec.errors import InputError
from featcodec.codec.facade import Codec
from featcodec.eval.data import EvalData, data_module_from_config, synthetic_eval_set
from featcodec.eval.rd import evaluate_codec, find_checkpoints

PHOTOS = Path(matplotlib.get_data_path()) / "sample_data"


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """root/{train,test}/<5 classes>/: 64×64 crops of two real photographs (matplotlib's
    sample data), 2 per class in test, 1 in train."""
    root = tmp_path_factory.mktemp("photos")
    photos = [
        np.asarray(Image.open(PHOTOS / name).convert("RGB"))
        for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png")
    ]
    k = 0
    for c in range(5):
        for split, n in (("train", 1), ("test", 2)):
            for i in range(n):
                photo = photos[k % 2]
                y = (37 * k) % (photo.shape[0] - 64)
                x = (53 * k) % (photo.shape[1] - 64)
                folder = root / split / f"class{c}"
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(photo[y : y + 64, x : x + 64]).save(folder / f"{i}.png")
                k += 1
    return root


def _config(tmp_path: Path, root: Path | str = "elsewhere") -> Path:
    path = tmp_path / "photos.yaml"
    config = {
        "data": {
            "class_path": "featcodec.training.datasets.ImageFolderDataModule",
            "init_args": {
                "root": str(root),
                "train_split": "train",
                "val_split": None,
                "test_split": "test",
                "image_size": [64, 64],
                "batch_size": 4,
            },
        }
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_eval_rd_on_an_image_folder_of_real_photos(
    photo_folder: Path, tiny_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "rd.json"
    config = _config(tmp_path)  # root given on the command line
    argv = ["eval", "rd", str(tiny_checkpoint), "--data", str(config), "--data-root"]
    assert main([*argv, str(photo_folder), "--batch-size", "3", "-o", str(out)]) == 0
    results = json.loads(out.read_text())
    (row,) = results["rows"]
    assert row["images"] == 10 and results["dataset"]["name"] == "ImageFolderDataModule"
    assert results["dataset"]["split"] == "test" and results["dataset"]["size"] == 10
    # the rate is that of real streams of these photos
    codec = Codec.from_checkpoint(tiny_checkpoint)
    images = sorted((photo_folder / "test").rglob("*.png"))
    sizes = [len(codec.encode(_image(p))) for p in images]
    assert row["bytes"] == pytest.approx(sum(sizes) / len(sizes))
    assert 0.0 <= row["metrics"]["accuracy"] <= 1.0
    assert "10 images" in capsys.readouterr().out


def _image(path: Path) -> torch.Tensor:
    array = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


class _Counting(torch.utils.data.Dataset):
    def __init__(self, inner: torch.utils.data.Dataset) -> None:
        self.inner, self.reads = inner, [0] * len(inner)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self.reads)

    def __getitem__(self, i: int) -> dict:
        self.reads[i] += 1
        return self.inner[i]


def test_a_point_reads_every_item_once(tiny_codec: Codec) -> None:
    data = synthetic_eval_set("test", 7, 32)
    counting = _Counting(data.dataset)
    data.dataset = counting
    row = evaluate_codec(tiny_codec, data, "c", "p", batch_size=3)
    assert row.images == 7
    assert counting.reads == [2] + [1] * 6  # one pass (item 0 once more: the fields check)


def test_data_configs_are_checked(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  class_path: os.system\n")
    with pytest.raises(InputError, match="not a Lightning data module"):
        data_module_from_config(bad)
    bad.write_text("model: {}\n")
    with pytest.raises(InputError, match="expected a 'data:' entry"):
        data_module_from_config(bad)
    with pytest.raises(InputError, match="cannot read"):
        data_module_from_config(tmp_path / "missing.yaml")
    module = data_module_from_config(_config(tmp_path), root=str(tmp_path / "nowhere"))
    with pytest.raises(InputError, match="not found"):
        EvalData.of_datamodule(module, "test")


def test_two_run_folders_are_two_curves(tiny_codec: Codec, tmp_path: Path) -> None:
    for run in ("runA", "runB"):
        (tmp_path / run).mkdir()
        tiny_codec.save(tmp_path / run / "last.ckpt")
    points, _ = find_checkpoints([tmp_path / "runA", tmp_path / "runB"])
    assert [p.curve for p in points] == ["runA", "runB"]
