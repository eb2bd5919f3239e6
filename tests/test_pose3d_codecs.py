"""Codecs for the 3-D pose task: `featcodec experiment pose3d` on task networks and on a
scalable codec whose enhancement layer targets the 3-D pose maps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import TINY, quiet_trainer

from featcodec.cli import main
from featcodec.codec.facade import Codec, default_arch
from featcodec.eval.data import synthetic_eval_set
from featcodec.eval.pose3d import equal_metric_rate, evaluate_enhancement
from featcodec.training import EnhancementModule, TaskModule
from featcodec.training.datasets import SyntheticScenesDataModule

SCENES = {"image_size": 32, "tilt": 60.0, "fog": 0.3}


@pytest.fixture(scope="module")
def data() -> SyntheticScenesDataModule:
    return SyntheticScenesDataModule(train_size=16, val_size=4, batch_size=8, **SCENES)


@pytest.fixture(scope="module")
def pose_checkpoint(data, tmp_path_factory) -> Path:
    torch.manual_seed(0)
    module = TaskModule(task="pose3d", task_options={"triplet_loss": False}, lr=3e-3)
    trainer = quiet_trainer(3, limit_val_batches=0)
    trainer.fit(module, data)
    path = tmp_path_factory.mktemp("pose") / "pose.ckpt"
    trainer.save_checkpoint(path)
    return path


def test_the_experiment_scores_task_networks(pose_checkpoint, tmp_path, capsys) -> None:
    out = tmp_path / "ablation.json"
    args = ["experiment", "pose3d", str(pose_checkpoint), "--labels", "+2D", "--size", "4"]
    assert main([*args, "--image-size", "32", "-o", str(out)]) == 0
    assert "| +2D |" in capsys.readouterr().out
    row = json.loads(out.read_text())["networks"][0]
    assert row["options"] == {"triplet_loss": False}
    assert row["mpjpe"] > 0 and 0 <= row["pck3d"] <= 1 and 0 <= row["depth_order"] <= 1


def test_the_experiment_refuses_another_task(tmp_path, capsys) -> None:
    trainer = quiet_trainer(1, limit_val_batches=0)
    module = TaskModule(task="keypoints")
    trainer.fit(module, SyntheticScenesDataModule(image_size=32, train_size=8, val_size=4))
    path = tmp_path / "keypoints.ckpt"
    trainer.save_checkpoint(path)
    out = tmp_path / "x.json"
    args = ["experiment", "pose3d", str(path), "--size", "2", "--image-size", "32", "-o", str(out)]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert "keypoints network, not a 3-D pose" in err and "\n" not in err
    assert not out.exists()


@pytest.mark.slow
def test_an_enhancement_layer_for_the_3d_maps_trains_codes_and_scores(data, tmp_path) -> None:
    torch.manual_seed(0)
    base = Codec.build(default_arch(codec=dict(TINY))).eval()
    base_ckpt = tmp_path / "base.ckpt"
    base.save(base_ckpt)
    enh = {"N": 16, "M": 16, "downsample": 3, "hyper_downsample": 1}
    module = EnhancementModule(str(base_ckpt), target="pose3d", lmbda=1.0, lr=3e-3, **enh)
    batch = next(iter(_loader(data)))
    module.eval()
    with torch.no_grad():
        before = float(module.compute_loss(batch)[0]["loss"])
    trainer = quiet_trainer(epochs=4, limit_val_batches=0)
    trainer.fit(module, data)
    module.eval()
    with torch.no_grad():
        assert float(module.compute_loss(batch)[0]["loss"]) < before
    ckpt = tmp_path / "enh.ckpt"
    trainer.save_checkpoint(ckpt)
    codec = Codec.from_checkpoint(ckpt)
    test = synthetic_eval_set("test", 3, 32, tilt=60.0, fog=0.3)
    row = evaluate_enhancement(codec, test)
    assert row["bpp_base"] > 0 and row["bpp_enhancement"] > 0
    assert row["bpp_total"] == pytest.approx(row["bpp_base"] + row["bpp_enhancement"])
    assert row["mpjpe"] > 0 and row["images"] == 3 and not row["standalone"]
    out = tmp_path / "scalable.json"
    args = ["experiment", "pose3d", "--enhancement", str(ckpt), "--size", "2", "-o", str(out)]
    assert main([*args, "--image-size", "32"]) == 0
    assert json.loads(out.read_text())["enhancement"][0]["images"] == 2
    # decode: the enhancement's 3-D joints in predictions.json, its maps beside them
    from featcodec.inputs import to_png

    image = tmp_path / "in" / "a.png"
    image.parent.mkdir()
    image.write_bytes(to_png(torch.rand(3, 32, 32)))
    streams, decoded = tmp_path / "s", tmp_path / "o"
    assert main(["encode", str(image), "-c", str(ckpt), "-o", str(streams)]) == 0
    assert main(["decode", str(streams), "-c", str(ckpt), "-o", str(decoded)]) == 0
    joints = json.loads((decoded / "predictions.json").read_text())["a"]["enhanced"]["joints3d"]
    assert len(joints) == 5 and all(len(j) == 3 for j in joints)
    assert torch.load(decoded / "a.enhanced.pt").shape == (27, 32, 32)


def _loader(data: SyntheticScenesDataModule):
    data.setup("fit")
    return data.train_dataloader()


def test_equal_mpjpe_bd_rate_is_negative_for_a_cheaper_curve() -> None:
    anchor = [(0.2, 0.50), (0.4, 0.40), (0.8, 0.35)]
    cheaper = [(r * 0.5, m) for r, m in anchor]
    result = equal_metric_rate(cheaper, anchor)
    assert result["bd_rate"] == pytest.approx(-50.0, abs=0.5)
    assert equal_metric_rate(cheaper[:1], anchor)["bd_rate"] is None  # one point: no curve


def test_a_base_codec_for_the_task_is_measured_and_plotted(pose_checkpoint, tmp_path) -> None:
    """`eval rd` on tilted scenes (MPJPE from real streams, with an anchor) and `plot rd`."""
    from featcodec.training import BaseCodecModule

    module = BaseCodecModule(
        task="pose3d",
        task_options={"triplet_loss": False},
        task_checkpoint=str(pose_checkpoint),
        N=16,
        M=16,
        attention=False,
        lmbda=4.0,
    )
    ckpt = tmp_path / "codec.ckpt"
    module.codec.save(ckpt)
    rd = tmp_path / "rd.json"
    args = ["eval", "rd", str(ckpt), "--anchors", "zstd", "--size", "2", "--image-size", "32"]
    assert main([*args, "--tilt", "60", "--fog", "0.3", "-o", str(rd)]) == 0
    results = json.loads(rd.read_text())
    assert results["metric"] == "mpjpe" and results["dataset"]["tilt"] == 60.0
    kinds = {row["kind"] for row in results["rows"]}
    assert kinds == {"learned", "anchor"}
    figure = tmp_path / "rd.png"
    assert main(["plot", "rd", str(rd), "-o", str(figure)]) == 0
    assert figure.stat().st_size > 1000
