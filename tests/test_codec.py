from __future__ import annotations

import pytest
import torch

from featcodec.codec.base import HyperpriorCodec
from featcodec.codec.bitstream import SectionKind, ShapeTag, unpack
from featcodec.codec.coding_mode import EXACT, FLOAT
from featcodec.codec.errors import BitstreamError, CheckpointError, InputError
from featcodec.codec.facade import Codec


@pytest.mark.parametrize("size", [(8, 8), (7, 5), (1, 1), (13, 21)])
def test_base_layer_accepts_any_size_and_round_trips_exactly(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    base = HyperpriorCodec(12, N=8, M=10, downsample=1, attention=False).eval()
    f = torch.randn(1, 12, *size) * 2
    out = base(f)
    assert out.features_hat.shape == f.shape
    code = base.compress(f)
    f_hat, y_hat = base.decompress(code.y, code.z, size)
    assert torch.equal(y_hat, code.y_hat)  # decoder's Ŷ is the encoder's, bit for bit
    # the eval-mode forward pass has float means; coding, fixed-point ones (codec.exact): a
    # symbol whose y − μ lies within ~1e-4 of a half may round the other way
    moved = (y_hat - out.y_hat).abs()
    assert moved.max() < 1.01 and (moved > 1e-2).float().mean() < 0.02
    assert f_hat.shape == f.shape
    torch.testing.assert_close(f_hat, out.features_hat, rtol=0.05, atol=0.05)
    float_code = base.compress(f, FLOAT)  # with float parameters: the forward pass exactly
    f_float, y_float = base.decompress(float_code.y, float_code.z, size, FLOAT)
    assert torch.equal(y_float, out.y_hat) and torch.equal(y_float, float_code.y_hat)
    torch.testing.assert_close(f_float, out.features_hat)


def test_training_pass_uses_noisy_rate_and_ste_gradients() -> None:
    torch.manual_seed(0)
    base = HyperpriorCodec(4, N=8, M=8, downsample=0, hyper_downsample=1, attention=False)
    base.train()
    f = torch.randn(2, 4, 6, 6, requires_grad=True)
    out = base(f)
    loss = out.features_hat.pow(2).mean() + sum(
        -torch.log2(v).sum() for v in out.likelihoods.values()
    )
    loss.backward()
    assert f.grad is not None and f.grad.abs().sum() > 0
    assert base.g_a[0].weight.grad.abs().sum() > 0
    assert base.h_a[0].weight.grad.abs().sum() > 0
    # the quantiles are left to the aux loss: the main loss gives them no gradient
    q = base.entropy_z.quantiles.grad
    assert q is None or q.abs().sum() == 0


def test_image_to_bitstream_to_task_output(tiny_codec: Codec) -> None:
    x = torch.rand(3, 40, 56)
    data = tiny_codec.encode(x)
    stream = unpack(data)
    assert stream.fingerprint == tiny_codec.fingerprint
    assert stream.shape(ShapeTag.INPUT) == (3, 40, 56)
    assert stream.shape(ShapeTag.FEATURES) == (128, 5, 7)
    decoded = tiny_codec.decode(data)
    assert decoded.features.shape == (1, 128, 5, 7)
    assert decoded.output.shape == (1, 5)
    reference = tiny_codec(x.unsqueeze(0))
    # fixed-point entropy parameters: Ŷ within rounding of the float forward pass (a symbol
    # whose y − μ lies within ~1e-4 of a half rounds the other way)
    error = (decoded.features - reference.features_hat).abs().mean()
    assert error < 0.02 * reference.features_hat.abs().mean()
    tiny_codec.coding = FLOAT  # with float parameters: the forward pass itself
    try:
        again = tiny_codec.decode(tiny_codec.encode(x))
    finally:
        tiny_codec.coding = EXACT
    torch.testing.assert_close(again.features, reference.features_hat)
    torch.testing.assert_close(again.output, reference.output)


def test_feature_input_defaults_input_size_to_the_stride(tiny_codec: Codec) -> None:
    f = torch.rand(128, 3, 4)
    stream = unpack(tiny_codec.encode_features(f))
    assert stream.shape(ShapeTag.INPUT) == (3, 24, 32)


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        (torch.rand(64, 4, 4), "expected 128 channels"),
        (torch.full((128, 4, 4), float("nan")), "NaN or Inf"),
        (torch.full((128, 4, 4), float("inf")), "NaN or Inf"),
        (torch.ones(128, 4, 4, dtype=torch.int64), "floating-point"),
        (torch.rand(2, 128, 4, 4), r"expected a \(C, H, W\)"),
        (torch.rand(128, 4), r"expected a \(C, H, W\)"),
    ],
)
def test_bad_feature_tensors_are_refused(
    tiny_codec: Codec, tensor: torch.Tensor, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        tiny_codec.encode_features(tensor)


def test_bad_images_are_refused(tiny_codec: Codec) -> None:
    with pytest.raises(InputError, match="expected 3 channels"):
        tiny_codec.encode(torch.rand(4, 16, 16))
    img = torch.rand(3, 16, 16)
    img[0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        tiny_codec.encode(img)


def test_stream_of_another_model_is_refused(tiny_arch: dict, tiny_codec: Codec) -> None:
    torch.manual_seed(1)
    other = Codec.build(tiny_arch).eval()
    data = other.encode(torch.rand(3, 32, 32))
    with pytest.raises(BitstreamError, match="written by model"):
        tiny_codec.decode(data)


def test_inconsistent_shapes_are_refused(tiny_codec: Codec) -> None:
    from featcodec.codec.bitstream import Stream, pack

    good = unpack(tiny_codec.encode(torch.rand(3, 32, 32)))
    wrong_input = Stream(
        good.fingerprint,
        {ShapeTag.INPUT: (3, 320, 32), ShapeTag.FEATURES: good.shape(ShapeTag.FEATURES)},
        good.sections,
    )
    with pytest.raises(BitstreamError, match="does not match"):
        tiny_codec.decode(pack(wrong_input))
    short = Stream(good.fingerprint, good.shapes, (good.sections[0],))
    with pytest.raises(BitstreamError, match="no base section"):
        tiny_codec.decode(pack(short))
    odd = Stream(
        good.fingerprint,
        good.shapes,
        (good.sections[0], type(good.sections[1])(SectionKind.BASE, b"\x00" * 5)),
    )
    with pytest.raises(BitstreamError, match="not rANS data"):
        tiny_codec.decode(pack(odd))


def test_fingerprint_tracks_weights(tiny_arch: dict) -> None:
    torch.manual_seed(0)
    codec = Codec.build(tiny_arch)
    before = codec.fingerprint
    assert codec.fingerprint == before  # cached and stable
    with torch.no_grad():
        codec.base.g_s[0].bias.add_(1e-3)
    assert codec.fingerprint != before


def test_task_network_stays_frozen_in_eval_mode(tiny_arch: dict) -> None:
    codec = Codec.build(tiny_arch).train()
    assert codec.base.training
    assert not codec.front.training and not codec.back.training
    assert all(not p.requires_grad for p in codec.front.parameters())
    assert all(not p.requires_grad for p in codec.back.parameters())
    assert all(p.requires_grad for p in codec.base.parameters())


def test_checkpoint_round_trip(tiny_codec: Codec, tiny_checkpoint) -> None:
    data = tiny_codec.encode(torch.rand(3, 24, 24))
    loaded = Codec.from_checkpoint(tiny_checkpoint)
    assert loaded.fingerprint == tiny_codec.fingerprint
    torch.testing.assert_close(loaded.decode(data).features, tiny_codec.decode(data).features)


def test_bad_checkpoints_are_refused(tmp_path, tiny_checkpoint) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        Codec.from_checkpoint(tmp_path / "missing.ckpt")
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        Codec.from_checkpoint(junk)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, foreign)
    with pytest.raises(CheckpointError, match="not a featcodec checkpoint"):
        Codec.from_checkpoint(foreign)
    ckpt = torch.load(tiny_checkpoint, weights_only=True)
    ckpt["featcodec"]["kind"] = "task"
    task = tmp_path / "task.ckpt"
    torch.save(ckpt, task)
    with pytest.raises(CheckpointError, match="task checkpoint, not a codec"):
        Codec.from_checkpoint(task)
    ckpt = torch.load(tiny_checkpoint, weights_only=True)
    ckpt["state_dict"] = {k: v for k, v in ckpt["state_dict"].items() if "g_s" not in k}
    partial = tmp_path / "partial.ckpt"
    torch.save(ckpt, partial)
    with pytest.raises(CheckpointError, match="do not match the checkpoint's digest"):
        Codec.from_checkpoint(partial)
    del ckpt["featcodec"]["weights_digest"]  # as a checkpoint from before digests
    torch.save(ckpt, partial)
    with pytest.raises(CheckpointError, match="do not fit"):
        Codec.from_checkpoint(partial)


@pytest.mark.cuda
def test_cuda_round_trip_is_exact(tiny_arch: dict) -> None:
    torch.manual_seed(0)
    codec = Codec.build(tiny_arch).eval().cuda()
    x = torch.rand(3, 48, 40, device="cuda")
    data = codec.encode(x)
    decoded = codec.decode(data)
    reference = codec(x[None])
    assert decoded.features.device.type == "cuda"
    error = (decoded.features - reference.features_hat).abs().mean()
    assert error < 0.02 * reference.features_hat.abs().mean()  # fixed-point vs float means
    f = codec.features(x[None])
    code = codec.base.compress(f)
    _, y_hat = codec.base.decompress(code.y, code.z, tuple(f.shape[-2:]))
    assert torch.equal(y_hat, code.y_hat)
