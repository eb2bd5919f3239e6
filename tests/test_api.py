"""The public API at ``featcodec``: load any checkpoint, codecs by name, the errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import register_fixture_backbone

import featcodec

LEGACY = Path(__file__).parent / "fixtures" / "legacy"


def test_load_gives_the_image_codec_of_a_checkpoint(tiny_checkpoint: Path) -> None:
    codec = featcodec.load(tiny_checkpoint)
    assert isinstance(codec, featcodec.Codec) and not codec.training
    decoded = codec.decode(codec.encode(torch.rand(3, 32, 40)))
    assert isinstance(decoded, featcodec.Decoded)
    assert decoded.features.shape == (1, 128, 4, 5) and decoded.output.shape == (1, 5)


def test_load_gives_the_video_codec_of_a_video_checkpoint() -> None:
    register_fixture_backbone()
    codec = featcodec.load(LEGACY / "video.ckpt")
    assert isinstance(codec, featcodec.VideoCodec)
    frames = codec.decode_sequence((LEGACY / "video.fcb").read_bytes()).frames
    assert [f.kind for f in frames] == ["I", "P", "P", "I"]


def test_codecs_by_name() -> None:
    assert featcodec.list_codecs() == ["enhancement", "hyperprior", "pframe"]
    base = featcodec.get_codec("hyperprior", in_channels=8, N=8, M=8, attention=False).eval()
    f = torch.randn(1, 8, 6, 10)
    code = base.compress(f)
    f_hat, y_hat = base.decompress(code.y, code.z, (6, 10))
    assert torch.equal(y_hat, code.y_hat) and f_hat.shape == f.shape
    pframe = featcodec.get_codec("pframe", channels=8, N=8, M=8)
    assert sum(p.numel() for p in pframe.parameters()) > 0


@pytest.mark.parametrize(
    ("name", "config", "message"),
    [
        ("nope", {}, "unknown codec 'nope' \\(known: enhancement, hyperprior, pframe\\)"),
        ("hyperprior", {"in_channels": 8, "bogus": 1}, "unexpected keyword argument 'bogus'"),
        ("hyperprior", {"in_channels": 0}, "channels must be ≥ 1"),
    ],
)
def test_get_codec_errors_are_one_line(name: str, config: dict, message: str) -> None:
    with pytest.raises(featcodec.InputError, match=message):
        featcodec.get_codec(name, **config)


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("tpu", "unknown device 'tpu'"),
        ("meta", "featcodec runs on cpu or cuda"),
        ("cuda:7", "CUDA is not available|this machine has"),
    ],
)
def test_bad_devices_are_one_line(tiny_checkpoint: Path, device: str, message: str) -> None:
    with pytest.raises(featcodec.InputError, match=message):
        featcodec.load(tiny_checkpoint, device)


def test_a_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(featcodec.CheckpointError, match="checkpoint not found"):
        featcodec.load(tmp_path / "none.ckpt")
    assert issubclass(featcodec.CheckpointError, featcodec.FeatcodecError)


def test_tasks_by_name() -> None:
    assert featcodec.list_tasks() == [
        "classification",
        "depth",
        "detection",
        "keypoints",
        "pose3d",
        "segmentation",
    ]
    task = featcodec.get_task("depth")
    assert task.name == "depth" and task.metric_name == "depth_rmse" and not task.higher_is_better
    with pytest.raises(featcodec.InputError, match="unknown task 'telepathy'"):
        featcodec.get_task("telepathy")
