"""Codecs that serve the other task heads: training, checkpoints, eval rd, decode."""

from __future__ import annotations

import json

import lightning.pytorch as pl
import pytest
import torch
from conftest import quiet_trainer

from featcodec.cli import main
from featcodec.codec.errors import CheckpointError, InputError
from featcodec.codec.facade import Codec
from featcodec.eval.data import synthetic_eval_set
from featcodec.eval.rd import check_fits, evaluate_codec
from featcodec.training import BaseCodecModule, TaskModule
from featcodec.training.datasets import SyntheticScenes, SyntheticScenesDataModule, collate_scenes

TASKS = ["segmentation", "depth", "keypoints", "pose3d", "detection"]
METRIC = {
    "segmentation": "miou",
    "depth": "depth_rmse",
    "keypoints": "pck",
    "pose3d": "mpjpe",
    "detection": "map",
}


def _options(task: str) -> dict | None:
    return {"image_size": 32} if task == "detection" else None


def _trainer(steps: int) -> pl.Trainer:
    return quiet_trainer(steps, limit_val_batches=0)


@pytest.fixture(scope="module")
def data() -> SyntheticScenesDataModule:
    return SyntheticScenesDataModule(image_size=32, train_size=32, val_size=8, batch_size=8)


@pytest.fixture(scope="module")
def batch() -> dict:
    ds = SyntheticScenes("train", size=32, image_size=32, seed=0)
    return collate_scenes([ds[i] for i in range(8)])


@pytest.fixture(scope="module")
def task_checkpoints(data, tmp_path_factory) -> dict[str, str]:
    """A briefly trained task network per task."""
    root = tmp_path_factory.mktemp("tasks")
    out = {}
    for task in TASKS:
        torch.manual_seed(0)
        module = TaskModule(task=task, task_options=_options(task), lr=3e-3)
        trainer = _trainer(4)
        trainer.fit(module, data)
        out[task] = str(root / f"{task}.ckpt")
        trainer.save_checkpoint(out[task])
    return out


def _module(task: str, ckpt: str, **kw: object) -> BaseCodecModule:
    args: dict = dict(
        task=task,
        task_options=_options(task),
        task_checkpoint=ckpt,
        N=16,
        M=16,
        attention=False,
        lmbda=4.0,
        lr=3e-3,
        distortion="task" if task == "detection" else "distill",
    )
    return BaseCodecModule(**{**args, **kw})


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_codec_training_for_the_task_lowers_its_loss(task, task_checkpoints, data, batch) -> None:
    torch.manual_seed(0)
    module = _module(task, task_checkpoints[task], lmbda=50.0, distortion="task")
    assert module.codec.arch["task"] == task
    module.eval()  # detection: the loss pass is forced into training mode, the rest stays eval
    with torch.no_grad():
        before = float(module.compute_loss(batch)[0].loss)
    _trainer(20).fit(module, data)
    module.eval()
    with torch.no_grad():
        after = float(module.compute_loss(batch)[0].loss)
    assert after < before
    # the frozen task network did not move, batch norms included
    reloaded = _module(task, task_checkpoints[task])
    reference = reloaded.codec.back.state_dict()
    for k, v in module.codec.back.state_dict().items():
        assert torch.equal(v, reference[k]), k


@pytest.mark.parametrize("task", ["segmentation", "depth", "keypoints", "pose3d"])
def test_distillation_is_zero_on_the_teacher_and_grows_away_from_it(task) -> None:
    from featcodec.models.tasks import get_task
    from featcodec.training.losses import task_distortion

    torch.manual_seed(0)
    teacher = {
        "segmentation": torch.randn(2, 6, 8, 8),
        "depth": torch.rand(2, 1, 8, 8) * 10,
        "keypoints": torch.rand(2, 5, 2) * 32,
        "pose3d": torch.randn(2, 27, 8, 8),
    }[task]
    t = get_task(task)
    same = task_distortion("distill", teacher.clone(), teacher, None, t)
    near = task_distortion("distill", teacher + 0.1 * torch.randn_like(teacher), teacher, None, t)
    far = task_distortion("distill", teacher + torch.randn_like(teacher), teacher, None, t)
    assert float(same) == pytest.approx(0.0, abs=1e-6) and 0 < float(near) < float(far)


@pytest.mark.parametrize("task", TASKS)
def test_eval_rd_reports_the_task_metric(task, task_checkpoints, tmp_path) -> None:
    path = tmp_path / "codec.ckpt"
    module = _module(task, task_checkpoints[task])
    module.codec.save(path)
    codec = Codec.from_checkpoint(path)
    assert codec.arch["task"] == task and codec.fingerprint == module.codec.fingerprint
    data = synthetic_eval_set("test", 3, 32)
    row = evaluate_codec(codec, data, task, "p")
    name = METRIC[task]
    assert set(row.reference) == {name} and name in row.metrics
    out = tmp_path / "rd.json"
    assert main(["eval", "rd", str(path), "--size", "2", "--image-size", "32", "-o", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["task"] == task and results["metric"] == name


def test_mixed_tasks_and_missing_ground_truth_are_refused(task_checkpoints, tmp_path) -> None:
    paths = []
    for task in ("segmentation", "depth"):
        paths.append(tmp_path / f"{task}.ckpt")
        _module(task, task_checkpoints[task]).codec.save(paths[-1])
    out = tmp_path / "rd.json"
    assert main(["eval", "rd", *map(str, paths), "-o", str(out)]) == 1
    assert not out.exists()
    data = synthetic_eval_set("test", 1, 32)
    data.dataset = [{k: v for k, v in data.dataset[0].items() if k != "depth"}]
    with pytest.raises(InputError, match="no depth"):
        check_fits({"task": "depth", "num_classes": 5}, data, "x")


def test_task_checkpoint_of_another_task_is_refused(task_checkpoints) -> None:
    with pytest.raises(CheckpointError, match="holds a segmentation .* expected a depth"):
        _module("depth", task_checkpoints["segmentation"])
    with pytest.raises(ValueError, match="no distillation"):
        _module("detection", task_checkpoints["detection"], distortion="distill")


@pytest.mark.parametrize("task", ["segmentation", "pose3d", "detection"])
def test_decode_writes_the_task_output(task, task_checkpoints, tmp_path) -> None:
    from featcodec.inputs import to_png

    ckpt = tmp_path / "codec.ckpt"
    _module(task, task_checkpoints[task]).codec.save(ckpt)
    image = tmp_path / "in" / "a.png"
    image.parent.mkdir()
    image.write_bytes(to_png(torch.rand(3, 32, 32)))
    streams, out = tmp_path / "s", tmp_path / "o"
    assert main(["encode", str(image), "-c", str(ckpt), "-o", str(streams)]) == 0
    assert main(["decode", str(streams), "-c", str(ckpt), "-o", str(out)]) == 0
    prediction = json.loads((out / "predictions.json").read_text())["a"]
    if task == "segmentation":
        logits = torch.load(out / "a.output.pt")
        assert logits.shape == (6, 32, 32)
        assert sum(prediction["pixels_per_class"].values()) == 32 * 32
    elif task == "pose3d":  # the 3-D joints: x, y in pixels, depth relative to the root
        assert torch.load(out / "a.output.pt").shape == (27, 32, 32)
        joints = prediction["joints3d"]
        assert len(joints) == 5 and all(len(j) == 3 for j in joints)
        assert all(0 <= x < 32 and 0 <= y < 32 for x, y, _ in joints)
    else:
        assert set(prediction) == {"boxes", "classes", "scores"}
        assert len(prediction["boxes"]) == len(prediction["scores"]) == len(prediction["classes"])
        assert all(0 <= c < 5 for c in prediction["classes"])
