"""The P-frame codec's refined prediction (issue 14, item 5): the warp followed by a filter bank
conditioned on the coded motion (Lenc & Vedaldi's equivariance map, models/equivariance.py),
trained with the codec, in float and in fixed point."""

from __future__ import annotations

import pytest
import torch
from conftest import quiet_trainer
from perturb import make_images, make_scalable, perturbed

from featcodec.codec.errors import CheckpointError
from featcodec.codec.exact import from_fixed, to_fixed
from featcodec.codec.motion import affine_flow, warp
from featcodec.codec.pframe import PFrameCodec
from featcodec.codec.video import VideoCodec


def _video(refine: int) -> VideoCodec:
    torch.manual_seed(4)
    v = VideoCodec(make_scalable(), {"N": 16, "M": 16, "refine": refine}).eval()
    for p in v.inter.g_out[-1].parameters():  # P-frames that code something
        torch.nn.init.normal_(p, std=0.05)
    if v.inter.refine is not None:  # a bank that is not the identity
        with torch.no_grad():
            v.inter.refine.conv.weight.add_(0.02 * torch.randn_like(v.inter.refine.conv.weight))
            v.inter.refine.conv.bias.normal_(std=0.05)
    return v


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    image = make_images()[0]
    return torch.stack([torch.roll(image, shifts=(2 * t, 3 * t), dims=(1, 2)) for t in range(4)])


def test_an_untrained_bank_is_the_warp_alone() -> None:
    torch.manual_seed(0)
    p = PFrameCodec(6, N=8, M=8, refine=3)
    reference = torch.randn(2, 6, 5, 7)
    theta = torch.tensor([[1.0, 0.1, 0.7], [0.0, 0.95, -0.4]]).expand(2, 2, 3)
    flow = affine_flow(theta, (5, 7))
    warped, _ = warp(reference, flow)
    torch.testing.assert_close(p.refined(warped, flow), warped)
    assert torch.equal(p.refined_fixed(to_fixed(warped), flow), to_fixed(warped))


def test_the_architecture_names_refine_only_when_used() -> None:
    plain, refined = VideoCodec(make_scalable()), VideoCodec(make_scalable(), {"refine": 1})
    assert "refine" not in plain.arch["inter"]  # the fingerprints of older codecs stay
    assert refined.arch["inter"]["refine"] == 1 and refined.inter.refine is not None
    with pytest.raises(CheckpointError, match="refine = 2 is not 0 or an odd size"):
        VideoCodec(make_scalable(), {"refine": 2})
    with pytest.raises(CheckpointError, match="refine = 9 is outside 0..7"):
        VideoCodec(make_scalable(), {"refine": 9})


def test_refined_videos_decode_bit_exactly_and_near_the_float_path(
    frames: torch.Tensor, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    video = _video(3)  # a 3×3 bank: the padded convolution in fixed point
    assert video.exact_reference
    with perturbed(monkeypatch, None, threads=1):
        data = video.encode_sequence(frames, intra_period=4, motion="dis-affine")
        first = video.decode_sequence(data)
    with perturbed(monkeypatch, "few-ulps", threads=2):
        again = video.decode_sequence(data)
    assert [f.kind for f in again.frames if f is not None] == ["I", "P", "P", "P"]
    for a, b in zip(first.frames, again.frames, strict=True):
        assert a is not None and b is not None and torch.equal(a.features, b.features)
    # the bank is on the path: a video without it decodes these streams otherwise
    video.save(tmp_path / "v.ckpt")
    reloaded = VideoCodec.from_checkpoint(tmp_path / "v.ckpt")
    assert reloaded.fingerprint == video.fingerprint
    with torch.no_grad():
        reloaded.inter.refine.conv.bias.add_(0.5)  # type: ignore[union-attr]
    assert reloaded.fingerprint != video.fingerprint  # a changed bank is another model
    # the fixed-point prediction is the float one up to rounding
    reference = first.frames[0].features  # type: ignore[union-attr]
    motion = video.edge_motion("dis-affine", frames[0], frames[1])
    size = tuple(frames.shape[-2:])
    floats, _ = video.predict(reference, motion, size)
    fixed, _ = video.predict_fixed(to_fixed(reference), motion, size)
    scale = floats.abs().mean()
    assert (from_fixed(fixed) - floats).abs().mean() < 0.02 * scale


@pytest.mark.slow
def test_the_bank_trains_with_the_codec(tmp_path) -> None:
    from featcodec.training.datasets import SyntheticClipsDataModule
    from featcodec.training.pframe_module import PFrameModule

    codec = make_scalable()
    codec.save(tmp_path / "intra.ckpt")
    torch.manual_seed(0)
    module = PFrameModule(
        str(tmp_path / "intra.ckpt"), N=16, M=16, refine=1, lr=3e-3, motion="affine",
        distortion="mse",
    )  # fmt: skip
    start = module.codec.inter.refine.conv.weight.detach().clone()  # type: ignore[union-attr]
    data = SyntheticClipsDataModule(
        image_size=32, num_frames=3, train_size=16, batch_size=8, shape_motion=False
    )
    quiet_trainer(steps=2 * 4).fit(module, datamodule=data)
    moved = module.codec.inter.refine.conv.weight.detach() - start  # type: ignore[union-attr]
    assert float(moved.abs().max()) > 0  # the prediction's bank gets gradients
