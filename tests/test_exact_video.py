"""Device-exact video streams (format version 2): the prediction path in fixed point
(codec.exact, codec.motion.exact_warp), bit-exact decoding across threads and perturbations,
and the check that refuses a diverging float path (tests/test_exact.py: images)."""

from __future__ import annotations

import pytest
import torch
from perturb import PERTURBATIONS, make_images, make_scalable, nudge_outputs, perturbed

from featcodec.codec.coding_mode import EXACT, FLOAT
from featcodec.codec.errors import BitstreamError
from featcodec.codec.facade import Codec, default_arch
from featcodec.codec.video import VideoCodec


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return make_images()


@pytest.fixture(scope="module")
def video() -> VideoCodec:
    scalable = make_scalable()
    torch.manual_seed(4)
    v = VideoCodec(scalable, {"N": 16, "M": 16}).eval()
    for p in v.inter.g_out[-1].parameters():  # not the identity: P-frames that code something
        torch.nn.init.normal_(p, std=0.05)
    return v


@pytest.fixture(scope="module")
def frames(images: torch.Tensor) -> torch.Tensor:
    shifted = [torch.roll(images[0], shifts=(2 * t, 3 * t), dims=(1, 2)) for t in range(5)]
    return torch.stack(shifted)


@pytest.mark.parametrize("name", [None, *PERTURBATIONS], ids=str)
def test_video_streams_decode_bit_exactly_across_threads_and_perturbation(
    video: VideoCodec, frames: torch.Tensor, monkeypatch: pytest.MonkeyPatch, name: str | None
) -> None:
    with perturbed(monkeypatch, None, threads=1):
        data = video.encode_sequence(frames, intra_period=4, motion="dis-flow")
        reference = video.decode_sequence(data)
    with perturbed(monkeypatch, name, threads=2):
        got = video.decode_sequence(data)
    assert not got.errors
    for a, b in zip(reference.frames, got.frames, strict=True):
        assert a is not None and b is not None and torch.equal(a.features, b.features)
    assert [f.kind for f in got.frames if f is not None] == ["I", "P", "P", "P", "I"]


def test_video_prediction_path_is_fixed_point(video: VideoCodec, frames: torch.Tensor) -> None:
    """With device-exact parameters the P-frames predict from fixed-point references: the
    float synthesis is not on the decoding path (nudging it changes nothing), and the decoded
    features are the fixed-point reconstruction, close to the float one."""
    assert video.exact_reference
    data = video.encode_sequence(frames, intra_period=4, motion="dis-flow")
    reference = video.decode_sequence(data)
    handle = nudge_outputs(video.inter.g_out)
    try:
        nudged = video.decode_sequence(data)
    finally:
        handle.remove()
    for a, b in zip(reference.frames, nudged.frames, strict=True):
        assert a is not None and b is not None and torch.equal(a.features, b.features)
    video.coding = FLOAT
    try:
        floats = video.decode_sequence(video.encode_sequence(frames, 4, motion="dis-flow"))
    finally:
        video.coding = EXACT
    for a, b in zip(reference.frames, floats.frames, strict=True):
        assert a is not None and b is not None
        scale = b.features.abs().mean()
        assert (a.features - b.features).abs().mean() < 0.05 * scale


def test_video_divergence_is_a_corrupt_frame_for_resume(
    video: VideoCodec, frames: torch.Tensor
) -> None:
    """A video coded with float parameters (FLOAT) whose decoder diverges (its float
    prediction path nudged) fails its check at the first P-frame: named, and with
    on_error='resume' handled like a corrupt frame (resume at the I-frame)."""
    video.coding = FLOAT
    try:
        data = video.encode_sequence(frames, intra_period=4, motion="dis-flow")
    finally:
        video.coding = EXACT
    handle = nudge_outputs(video.inter.g_out)
    try:
        with pytest.raises(BitstreamError, match=r"frame 2 \(P-frame\): .*fails its check"):
            video.decode_sequence(data)
        got = video.decode_sequence(data, on_error="resume")
    finally:
        handle.remove()
    assert got.frames[0] is not None and got.frames[4] is not None
    assert got.frames[2] is None and "fails its check" in got.errors[2]
    assert "resuming at the next I-frame (frame 4)" in got.errors[2]


def test_fixed_point_warp_matches_the_float_warp() -> None:
    """exact_warp: integer flows move integers exactly; fractional ones agree with
    grid_sample to within the 1/16-pixel rounding of the source points; same mask."""
    from featcodec.codec.motion import exact_warp, warp

    g = torch.Generator().manual_seed(2)
    ref = torch.randint(-(1 << 14), 1 << 14, (2, 3, 9, 11), generator=g).double()
    shift = torch.zeros(2, 2, 9, 11)
    shift[:, 0], shift[:, 1] = 2.0, -1.0
    moved, mask = exact_warp(ref, shift)
    inside = mask[..., 1:, :-2].expand(-1, 3, -1, -1)
    assert bool(inside.any())
    assert torch.equal(moved[..., 1:, :-2][inside], ref[..., :-1, 2:][inside])
    flow = (torch.rand(2, 2, 9, 11, generator=g) - 0.5) * 6
    flow = torch.round(flow * 16) / 16  # on the 1/16-pixel grid: the same source points
    ours, ours_mask = exact_warp(ref, flow)
    theirs, their_mask = warp(ref, flow.double())
    assert torch.equal(ours_mask, their_mask)
    assert (ours - theirs).abs().max() <= 0.5 + 1e-6  # the final rounding, nothing else
    assert bool((ours == ours.round()).all())


def test_video_with_attention_predicts_in_fixed_point(monkeypatch: pytest.MonkeyPatch) -> None:
    """An intra codec with ELIC's attention block (the default architecture) still gives a
    fixed-point prediction path: its videos decode bit-exactly under perturbation."""
    torch.manual_seed(6)
    intra = Codec.build(default_arch(codec={"name": "hyperprior", "N": 16, "M": 16})).eval()
    assert intra.arch["codec"].get("attention", True)
    v = VideoCodec(intra, {"N": 16, "M": 16}).eval()
    assert v.exact_reference
    g = torch.Generator().manual_seed(1)
    first = torch.rand(3, 64, 64, generator=g)
    frames = torch.stack([torch.roll(first, shifts=(t, 2 * t), dims=(1, 2)) for t in range(3)])
    data = v.encode_sequence(frames, intra_period=8, motion="dis-flow")
    reference = v.decode_sequence(data)
    with perturbed(monkeypatch, "few-ulps", threads=1):
        got = v.decode_sequence(data)
    for a, b in zip(reference.frames, got.frames, strict=True):
        assert a is not None and b is not None and torch.equal(a.features, b.features)
