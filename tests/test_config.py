"""Typed architecture configurations (codec/config.py), one conditional hyperprior under the
three codecs, and checkpoints of format 1 read by this build."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import register_fixture_backbone

from featcodec.codec.base import HyperpriorCodec
from featcodec.codec.checkpoint import CHECKPOINT_FORMAT, load_checkpoint
from featcodec.codec.config import (
    ArchConfig,
    EnhancementConfig,
    HyperpriorConfig,
    PFrameConfig,
    parse_section,
)
from featcodec.codec.enhancement import EnhancementCodec
from featcodec.codec.errors import CheckpointError
from featcodec.codec.facade import Codec, default_arch
from featcodec.codec.hyperprior import ConditionalHyperprior
from featcodec.codec.pframe import PFrameCodec

LEGACY = Path(__file__).parent / "fixtures" / "legacy"


def test_a_stored_architecture_gets_its_defaults_from_the_configs() -> None:
    cfg = ArchConfig.parse(default_arch())
    assert cfg.codec == HyperpriorConfig(N=128, M=128, downsample=1)
    assert cfg.codec.hyper_downsample == HyperpriorConfig.hyper_downsample == 2
    assert cfg.enhancement is None and cfg.task == "classification" and cfg.task_options == {}
    enh = ArchConfig.parse({**default_arch(), "enhancement": {"N": 8}}).enhancement
    assert enh == EnhancementConfig(N=8) and enh.downsample == 4


def test_the_classes_default_to_the_configs() -> None:
    base = HyperpriorCodec(8)
    assert (base.downsample, base.hyper_downsample) == (1, 2)
    assert PFrameCodec(8, N=8, M=8).hyper_downsample == PFrameConfig.hyper_downsample


@pytest.mark.parametrize(
    ("arch", "message"),
    [
        ({"codec": {"N": 10**9}}, "codec: N = 1000000000 is outside 1..4096"),
        ({"codec": {"N": True}}, "codec: N = True is not a valid int"),
        ({"codec": {"M": "128"}}, "codec: M = '128' is not a valid int"),
        ({"codec": {"downsample": -1}}, "codec: downsample = -1 is outside 0..6"),
        ({"codec": {"name": "jpeg"}}, "unknown base codec 'jpeg'"),
        ({"codec": {"bogus": 1}}, "codec: unknown key"),
        ({"codec": [1, 2]}, "codec must be a mapping"),
        ({"num_classes": 0}, "architecture: num_classes = 0 is outside"),
        ({"backbone": 7}, "architecture: backbone = 7 is not a valid str"),
        ({"enhancement": {"out_channels": 10**6}}, "enhancement: out_channels"),
        ({"task_options": "x"}, "task_options must be a mapping"),
        ({"extra": 1}, "architecture: unknown key"),
    ],
)
def test_absurd_or_ill_typed_architectures_are_one_line(arch: dict, message: str) -> None:
    base = default_arch()
    bad = {**base, **arch}
    if "codec" in arch and isinstance(arch["codec"], dict):
        bad["codec"] = {**base["codec"], **arch["codec"]}
    with pytest.raises(CheckpointError, match=message):
        ArchConfig.parse(bad)
    with pytest.raises(CheckpointError):
        Codec.build(bad)  # refused before anything is built


def test_an_absurd_checkpoint_is_refused_before_anything_is_built(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    ckpt = torch.load(tiny_checkpoint, weights_only=True)
    ckpt["featcodec"]["arch"]["codec"]["N"] = 1 << 20  # would allocate terabytes
    path = tmp_path / "absurd.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=r"absurd.ckpt: codec: N = 1048576 is outside"):
        Codec.from_checkpoint(path)


def test_parse_section_refuses_wrong_types_of_motion_settings() -> None:
    from featcodec.codec.config import MotionConfig

    assert parse_section(MotionConfig, {"block": 8}, "motion").step == 0.25
    with pytest.raises(CheckpointError, match="motion: step = 0.0 is outside"):
        parse_section(MotionConfig, {"step": 0.0}, "motion")


def test_one_conditional_hyperprior_under_every_codec() -> None:
    for cls in (HyperpriorCodec, EnhancementCodec, PFrameCodec):
        assert issubclass(cls, ConditionalHyperprior)
        for name in ("latent_forward", "latent_compress", "latent_decompress", "aux_loss"):
            assert getattr(cls, name) is getattr(ConditionalHyperprior, name)
    enh = EnhancementCodec(base_channels=8, base_stride=8, N=8, M=8, downsample=3)
    assert enh.params is not None  # conditioned: h_s and the context meet in params
    assert HyperpriorCodec(8, N=8, M=8).params is None  # no context: h_s gives (σ, μ)


def test_format_1_checkpoints_load_and_keep_their_fingerprint(tmp_path: Path) -> None:
    register_fixture_backbone()
    old = load_checkpoint(LEGACY / "scalable.ckpt", kind="codec")
    assert old["featcodec"]["format"] == 1
    assert any(".body.0." in k for k in old["state_dict"])  # the names before compressai's layers
    codec = Codec.from_checkpoint(LEGACY / "scalable.ckpt")
    fingerprint = codec.fingerprint
    codec.save(tmp_path / "again.ckpt")
    new = load_checkpoint(tmp_path / "again.ckpt", kind="codec")
    assert new["featcodec"]["format"] == CHECKPOINT_FORMAT == 2
    assert any(".conv1." in k for k in new["state_dict"]) and not any(
        ".body.0." in k for k in new["state_dict"]
    )
    again = Codec.from_checkpoint(tmp_path / "again.ckpt")
    assert again.fingerprint == fingerprint  # the same model, whichever format it was read from
