"""The Human3.6M-style 3-D pose loader: frames, resizing, the task on its batches, refusals of
malformed and forged archives, and `featcodec train` on its config."""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from featcodec.codec.errors import InputError
from featcodec.inputs import to_png
from featcodec.models.tasks import get_task, task_of
from featcodec.training.datasets.pose3d import H36M_PARENTS, Pose3DDataModule, Pose3DFrames
from featcodec.training.datasets.synthetic.pose import intrinsics


def _project(joints: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    fx, fy, cx, cy = k.tolist()
    z = joints[..., 2]
    return torch.stack([joints[..., 0] * fx / z + cx, joints[..., 1] * fy / z + cy], dim=-1)


# -- the Human3.6M-style loader -------------------------------------------------------------


def _h36m_fixture(root: Path, frames: int = 3, size: tuple[int, int] = (40, 60)) -> dict:
    """A tiny dataset in the loader's format: random 17-joint people in front of a camera."""
    rng = np.random.default_rng(0)
    (root / "images" / "S9").mkdir(parents=True)
    (root / "annotations").mkdir()
    h, w = size
    camera = np.array([50.0, 52.0, w / 2, h / 2])
    joints = rng.normal(0, 200, (frames, 17, 3)) + np.array([0, 0, 4000.0])
    fx, fy, cx, cy = camera
    part = np.stack(
        [joints[..., 0] * fx / joints[..., 2] + cx, joints[..., 1] * fy / joints[..., 2] + cy], -1
    )
    names = []
    for i in range(frames):
        name = f"S9/frame_{i:04d}.png"
        (root / "images" / name).write_bytes(to_png(torch.rand(3, h, w)))
        names.append(name)
    arrays = {
        "imgname": np.array(names),
        "part": part,
        "S": joints,
        "camera": np.tile(camera, (frames, 1)),
    }
    np.savez(root / "annotations" / "test.npz", **arrays)
    np.savez(root / "annotations" / "train.npz", **arrays)
    return arrays


def test_the_loader_reads_frames_and_resizing_keeps_the_projection(tmp_path: Path) -> None:
    arrays = _h36m_fixture(tmp_path)
    data = Pose3DFrames(tmp_path, "test", image_size=32)
    assert len(data) == 3
    item = data[1]
    assert item["image"].shape == (3, 32, 32)
    assert item["keypoints"].shape == (1, 17, 3) and item["joints3d"].shape == (1, 17, 3)
    assert item["parts"].shape == (1, 16, 2)
    assert item["parts"][0, :, 0].tolist() == list(H36M_PARENTS[1:])
    assert torch.allclose(item["joints3d"][0].double(), torch.from_numpy(arrays["S"][1]), atol=1e-3)
    # the 3-D joints still project onto the (resized) 2-D joints through the resized camera
    xy = _project(item["joints3d"][0].double(), item["intrinsics"].double())
    assert torch.allclose(xy, item["keypoints"][0, :, :2].double(), atol=1e-3)
    z = arrays["S"][1][:, 2]
    parts = item["parts"][0].numpy()
    expect = np.sign(z[parts[:, 0]] - z[parts[:, 1]]) * (
        np.abs(z[parts[:, 0]] - z[parts[:, 1]]) > 50
    )
    assert item["part_order"][0].tolist() == expect.astype(int).tolist()
    box = item["boxes"][0]
    assert 0 <= box[0] < box[2] <= 32 and 0 <= box[1] < box[3] <= 32


def test_the_loader_feeds_the_task(tmp_path: Path) -> None:
    _h36m_fixture(tmp_path, frames=4)
    module = Pose3DDataModule(str(tmp_path), image_size=32, batch_size=2, val_fraction=0.25)
    module.setup("fit")
    batch = next(iter(module.train_dataloader()))
    task = get_task("pose3d").configure({"num_joints": 17, "num_parts": 16, "unit": 1000.0})
    maps = torch.randn(2, task.layout.channels, 32, 32, requires_grad=True)
    loss = task.loss(maps, batch)
    loss.backward()
    assert math.isfinite(float(loss)) and maps.grad is not None
    metric = task.metric(1)
    metric.update(maps.detach(), batch)
    assert math.isfinite(float(metric.compute()))


def _write(path: Path, **arrays: object) -> None:
    np.savez(path, **arrays)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"drop": "S"}, "missing array"),
        ({"S": np.zeros((3, 17, 2))}, "S must be"),
        ({"part": np.zeros((3, 16, 2))}, "part must be"),
        ({"camera": np.zeros((3, 4))}, "f_x, f_y > 0"),
        ({"camera": np.ones((2, 4))}, "camera must be"),
        ({"imgname": np.arange(3)}, "imgname must be"),
        ({"parents": np.array([-1, 2, 1] + list(range(3, 17)))}, "cycle"),
        ({"parents": np.array([0] * 17)}, "parents must be -1"),
        ({"S": np.full((3, 17, 3), "x")}, "S must be numbers"),
    ],
)
def test_malformed_annotations_get_one_line(tmp_path: Path, change: dict, message: str) -> None:
    arrays = _h36m_fixture(tmp_path)
    bad = {k: v for k, v in arrays.items() if k != change.get("drop")}
    bad.update({k: v for k, v in change.items() if k != "drop"})
    _write(tmp_path / "annotations" / "test.npz", **bad)
    with pytest.raises(InputError, match=message) as e:
        Pose3DFrames(tmp_path, "test")
    assert "\n" not in str(e.value) and "test.npz" in str(e.value)


def test_forged_archives_are_refused_before_reading(tmp_path: Path) -> None:
    arrays = _h36m_fixture(tmp_path)
    path = tmp_path / "annotations" / "test.npz"
    # an object array (a pickle inside)
    _write(path, **{**arrays, "imgname": np.array(["a", None, "c"], dtype=object)})
    with pytest.raises(InputError, match="Python objects"):
        Pose3DFrames(tmp_path, "test")
    # a header that claims a huge array: refused from the header, nothing allocated
    _write(path, **arrays)
    blob = path.read_bytes()
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    forged = members["S.npy"].replace(b"(3, 17, 3)", b"(9999999,)", 1)  # same length
    assert forged != members["S.npy"]
    with zipfile.ZipFile(path, "w") as archive:  # a consistent archive (CRCs match)
        for name, data in {**members, "S.npy": forged}.items():
            archive.writestr(name, data)
    with pytest.raises(InputError, match="claims shape"):
        Pose3DFrames(tmp_path, "test")
    # not an archive at all, and a truncated one
    path.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a readable .npz"):
        Pose3DFrames(tmp_path, "test")
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(InputError, match="test.npz"):
        Pose3DFrames(tmp_path, "test")


def test_image_names_cannot_leave_the_image_folder(tmp_path: Path) -> None:
    arrays = _h36m_fixture(tmp_path)
    _write(
        tmp_path / "annotations" / "test.npz",
        **{**arrays, "imgname": np.array(["../../x.png"] * 3)},
    )
    with pytest.raises(InputError, match="outside images"):
        Pose3DFrames(tmp_path, "test")[0]


def test_synthetic_intrinsics_are_the_image_centre() -> None:
    assert intrinsics((48, 64)).tolist() == [24.0, 24.0, 32.0, 24.0]


def test_train_on_the_h36m_config_with_the_fixture(tmp_path: Path) -> None:
    """`featcodec train` with the 3-D task config and the Human3.6M data config stacked, on the
    tiny fixture (a small backbone, one batch), then `experiment`-free evaluation of the
    checkpoint's task: 17 joints, millimetre options."""
    from featcodec.cli import main
    from featcodec.training.task import read_task_network

    _h36m_fixture(tmp_path / "h36m", frames=6)
    runs = tmp_path / "runs"
    args = [
        "train",
        "--config",
        "configs/tasknet-pose3d.yaml",
        "--config",
        "configs/datasets/h36m-pose3d.yaml",
        "--data.init_args.root",
        str(tmp_path / "h36m"),
        "--data.init_args.image_size",
        "32",
        "--data.init_args.batch_size",
        "2",
        "--data.init_args.num_workers",
        "0",
        "--model.init_args.backbone",
        "scene_resnet10",
        "--trainer.max_steps",
        "2",
        "--trainer.limit_val_batches",
        "1",
        "--trainer.accelerator",
        "cpu",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.logger.init_args.save_dir",
        str(runs),
        "--trainer.callbacks.init_args.dirpath",
        str(runs / "ck"),
    ]
    assert main(args) == 0
    arch, net = read_task_network(runs / "ck" / "last.ckpt")
    task = task_of(arch)
    assert task.layout.num_joints == 17 and task.config.unit == 1000.0
    with torch.no_grad():
        maps = net(torch.zeros(1, 3, 32, 32))
    assert maps.shape == (1, task.layout.channels, 32, 32)
