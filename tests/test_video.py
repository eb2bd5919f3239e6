"""Inter-frame coding (codec/video.py): sequences, P-frames, side information, corruption."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import quiet_trainer

from featcodec.cli import main
from featcodec.codec.bitstream import Section, SectionKind, Stream, pack, split_prefixed, unpack
from featcodec.codec.errors import BitstreamError, InputError
from featcodec.codec.facade import Codec, default_arch
from featcodec.codec.pframe import PFrameCodec
from featcodec.codec.sequence import frame_kinds
from featcodec.codec.video import VideoCodec
from featcodec.eval.video import bytes_at_metric
from featcodec.training.datasets import SyntheticClipsDataModule, SyntheticScenes, render_clip
from featcodec.training.pframe_module import PFrameModule

SIZE = 64
LMBDA = 300.0  # weight of the features' squared error, for the intra and the P-frame codec


@pytest.fixture(scope="module")
def clip() -> dict:
    return render_clip(3, num_frames=6, size=SIZE).as_dict()


@pytest.fixture(scope="module")
def intra_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny intra codec (latent at the features' resolution) trained briefly on
    λ·MSE(F̂, F) + rate, so that I-frames carry what a trained base carries (an untrained one
    codes nearly nothing)."""
    torch.manual_seed(0)
    tiny = {"name": "hyperprior", "N": 16, "M": 16, "downsample": 0, "attention": False}
    codec = Codec.build(default_arch(codec=tiny))
    scenes = SyntheticScenes("train", 64, SIZE, seed=1)
    images = torch.stack([scenes[i]["image"] for i in range(64)])
    quantiles = codec.base.entropy_z.quantiles
    main = [p for p in codec.base.parameters() if p is not quantiles]
    opt, aux = torch.optim.Adam(main, lr=3e-3), torch.optim.Adam([quantiles], lr=1e-3)
    features = codec.features(images)
    for step in range(100):
        f = features[(step % 8) * 8 : (step % 8 + 1) * 8]
        out = codec.forward_features(f)
        loss = LMBDA * (out.features_hat - f).pow(2).mean() + out.bits() / (8 * SIZE * SIZE)
        opt.zero_grad()
        loss.backward()
        opt.step()
        aux.zero_grad()
        codec.aux_loss().backward()
        aux.step()
    path = tmp_path_factory.mktemp("video") / "intra.ckpt"
    codec.eval().save(path)
    return path


@pytest.fixture(scope="module")
def trained(intra_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """A P-frame codec trained for a few dozen steps behind the intra codec; returns the
    module, its loss on a fixed batch before training, the batch and its checkpoint."""
    torch.manual_seed(0)
    module = PFrameModule(
        str(intra_checkpoint), N=16, M=16, lmbda=LMBDA, lr=3e-3, motion="flow", distortion="mse"
    )
    data = SyntheticClipsDataModule(image_size=SIZE, num_frames=3, train_size=48, batch_size=8)
    batch = next(iter(data.train_dataloader()))
    with torch.no_grad():
        before = float(module.eval().compute_loss(batch)[0]["loss"])
    quiet_trainer(steps=2 * 30).fit(module, datamodule=data)
    path = tmp_path_factory.mktemp("video") / "pframe.ckpt"
    module.codec.save(path)
    return module.eval(), before, batch, path


@pytest.fixture(scope="module")
def codec(trained: tuple) -> VideoCodec:
    return VideoCodec.from_checkpoint(trained[3])


@pytest.mark.slow
def test_training_lowers_the_loss(trained: tuple) -> None:
    module, before, batch, _ = trained
    with torch.no_grad():
        after = float(module.compute_loss(batch)[0]["loss"])
    assert after < 0.95 * before


@pytest.mark.parametrize("conditional", [True, False])
def test_pframe_decoder_reproduces_the_encoder(conditional: bool) -> None:
    """The decoder's F̂ is the encoder's bit for bit (same device, one frame at a time, as a
    sequence is coded), so the next P-frame's reference is the same on both sides."""
    torch.manual_seed(1)
    p = PFrameCodec(8, N=8, M=8, conditional=conditional).eval()
    f, prediction = torch.randn(1, 8, 6, 5), torch.randn(1, 8, 6, 5)
    mask = torch.rand(1, 1, 6, 5) > 0.3
    code = p.compress(f, prediction, mask)
    decoded = p.decompress(code.strings, prediction, mask)
    assert torch.equal(decoded, code.features_hat)
    assert decoded.shape == f.shape
    assert (decoded - f).abs().mean() < (prediction - f).abs().mean() * 2  # a sane range


def test_clip_codes_with_pframes_smaller_than_iframes(codec: VideoCodec, clip: dict) -> None:
    data = codec.encode_sequence(clip["images"], intra_period=3, motion="flow", flows=clip["flow"])
    stream = unpack(data)
    assert frame_kinds(stream) == ["I", "P", "P", "I", "P", "P"]
    frames = codec.decode_sequence(data).frames
    assert all(f is not None for f in frames)
    # every byte of the stream is the stream's header or some frame's (its sections' payloads
    # and records), side information included
    records = sum(s.record_bytes for s in stream.sections)
    assert stream.header_bytes - records + sum(f.bytes for f in frames) == len(data)
    for f in frames:
        if f.kind == "P":
            motion, rans = split_prefixed(stream.section(SectionKind.INTER, f.index), "motion")
            assert 0 < f.motion_bytes == len(motion) < f.bytes
            # one section (its record and payload): the motion, then one rANS string
            (section,) = [s for s in stream.sections if s.frame == f.index]
            assert f.bytes == section.record_bytes + len(section.payload)
            assert len(rans) % 4 == 0 and section.payload.endswith(rans)
    # I-frames decode as the intra codec decodes them alone: the same latent, synthesised in
    # fixed point (the reference the P-frames predict from, the same on every device)
    alone, _ = codec.intra.base.decompress(
        [stream.section(SectionKind.BASE, 3)], [stream.section(SectionKind.HYPER, 3)], (8, 8)
    )
    assert codec.exact_reference
    torch.testing.assert_close(frames[3].features, alone, atol=2e-3, rtol=1e-2)
    # the moving clip's P-frames, side information included, cost less than its I-frames
    assert max(f.bytes for f in frames if f.kind == "P") < min(
        f.bytes for f in frames if f.kind == "I"
    )
    # with a perfect prediction (a still camera) a P-frame is little more than its overheads
    still = render_clip(5, 4, SIZE, camera_motion=False, shape_motion=False).as_dict()
    frames = codec.decode_sequence(
        codec.encode_sequence(still["images"], 4, "flow", flows=still["flow"])
    ).frames
    assert max(f.bytes for f in frames[1:]) < frames[0].bytes / 2


def test_motion_improves_the_prediction(codec: VideoCodec) -> None:
    """Warping the previous frame's tensor with the coded motion predicts the next tensor
    better than the previous tensor itself (the no-motion prediction)."""
    moving = render_clip(7, 4, 128, shape_motion=False).as_dict()
    features = codec.intra.features(moving["images"])
    err = {"flow": 0.0, "none": 0.0}
    images, flows = moving["images"], moving["flow"]
    for t in range(1, 4):
        m = codec.edge_motion("flow", images[t - 1], images[t], flows[t])
        prediction, mask = codec.predict(features[t - 1 : t], m, (128, 128))
        inside = mask.expand_as(prediction)  # both compared where the warp had data
        target = features[t : t + 1][inside]
        err["flow"] += float((prediction[inside] - target).pow(2).mean())
        err["none"] += float((features[t - 1 : t][inside] - target).pow(2).mean())
    assert err["flow"] < 0.8 * err["none"]


def test_encoder_and_decoder_agree_on_every_motion_source(codec: VideoCodec, clip: dict) -> None:
    affines = torch.stack([torch.eye(2, 3)] * 6)
    for motion in ("dis-flow", "dis-affine", "affine", "none"):
        data = codec.encode_sequence(clip["images"][:3], 3, motion, affines=affines[:3])
        frames = codec.decode_sequence(data).frames
        assert [f.kind for f in frames] == ["I", "P", "P"]
        assert frames[1].motion_bytes > 0


def _corrupt(data: bytes, kind: SectionKind, frame: int) -> bytes:
    stream = unpack(data)
    offset = stream.header_bytes
    for s in stream.sections:
        if s.kind == kind and s.frame == frame:
            out = bytearray(data)
            out[offset + len(s.payload) // 2] ^= 0x5A
            return bytes(out)
        offset += len(s.payload)
    raise AssertionError("no such section")


def test_corrupt_pframe_is_named_and_decoding_resumes(codec: VideoCodec, clip: dict) -> None:
    data = codec.encode_sequence(clip["images"], 3, "flow", flows=clip["flow"])
    clean = codec.decode_sequence(data).frames
    bad = _corrupt(data, SectionKind.INTER, 1)
    with pytest.raises(BitstreamError, match=r"frame 1 \(P-frame\)"):
        codec.decode_sequence(bad)
    result = codec.decode_sequence(bad, on_error="resume")
    assert [f is None for f in result.frames] == [False, True, True, False, False, False]
    assert set(result.errors) == {1, 2}
    assert "next I-frame (frame 3)" in result.errors[1]
    for t in (0, 3, 4, 5):
        assert torch.equal(result.frames[t].features, clean[t].features)


def test_pframe_without_reference_is_refused(codec: VideoCodec, clip: dict) -> None:
    data = codec.encode_sequence(clip["images"][:2], 2, "flow", flows=clip["flow"][:2])
    stream = unpack(data)
    orphan = tuple(Section(s.kind, s.payload, 0) for s in stream.sections if s.frame == 1)
    bad = pack(Stream(stream.fingerprint, stream.shapes, orphan))
    with pytest.raises(BitstreamError, match="frame 0 \\(P-frame\\).*no.*decoded frame|before it"):
        codec.decode_sequence(bad)


def test_bad_sequences_are_refused(codec: VideoCodec, clip: dict) -> None:
    images = clip["images"]
    with pytest.raises(InputError, match="frame 1 has shape"):
        codec.encode_sequence([images[0], images[1, :, :16]], 2, "none")
    with pytest.raises(InputError, match="needs flows"):
        codec.encode_sequence(images[:2], 2, "flow")
    with pytest.raises(InputError, match="NaN|infinite"):
        flows = clip["flow"][:2].clone()
        flows[1, 0, 3, 3] = float("nan")
        codec.encode_sequence(images[:2], 2, "flow", flows=flows)
    with pytest.raises(InputError):
        codec.encode_sequence(images[:2], 2, "flow", flows=clip["flow"][:2, :1])
    with pytest.raises(InputError, match="intra period"):
        codec.encode_sequence(images[:2], 0, "none")
    other = codec.encode_sequence(images[:2], 2, "none")
    with pytest.raises(BitstreamError, match="written by model"):
        VideoCodec(codec.intra, {"N": 8, "M": 8}).decode_sequence(other)


def _frames_folder(folder: Path, images: torch.Tensor) -> None:
    from featcodec.inputs import to_png

    folder.mkdir()
    for t, image in enumerate(images):
        (folder / f"{t + 1}.png").write_bytes(to_png(image))  # 10.png after 9.png


@pytest.mark.slow
def test_cli_codes_a_folder_and_a_video_file(
    codec: VideoCodec, trained: tuple, clip: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import cv2

    ckpt = str(trained[3])
    _frames_folder(tmp_path / "frames", clip["images"])
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (SIZE, SIZE))
    for image in clip["images"]:
        bgr = (image.permute(1, 2, 0).numpy()[..., ::-1] * 255).round().astype(np.uint8)
        writer.write(np.ascontiguousarray(bgr))
    writer.release()
    args = [str(tmp_path / "frames"), str(video), "-c", ckpt, "-o", str(tmp_path / "s")]
    assert main(["encode", *args, "--intra-period", "3"]) == 0
    streams = sorted((tmp_path / "s").glob("*.fcb"))
    assert [s.name for s in streams] == ["clip.fcb", "frames.fcb"]
    capsys.readouterr()
    assert main(["info", str(streams[1])]) == 0
    assert "6 (2 I, 4 P)" in capsys.readouterr().out
    assert main(["decode", *map(str, streams), "-c", ckpt, "-o", str(tmp_path / "d")]) == 0
    import json

    report = json.loads((tmp_path / "d" / "frames" / "predictions.json").read_text())
    assert [f["kind"] for f in report["frames"]] == ["I", "P", "P", "I", "P", "P"]
    assert len(list((tmp_path / "d" / "clip").glob("frame_*.pt"))) == 6
    # a corrupt P-frame: one-line error naming it, nothing written; --resume salvages the rest
    data = (tmp_path / "s" / "frames.fcb").read_bytes()
    bad = tmp_path / "bad.fcb"
    bad.write_bytes(_corrupt(data, SectionKind.INTER, 4))
    capsys.readouterr()
    assert main(["decode", str(bad), "-c", ckpt, "-o", str(tmp_path / "e")]) == 1
    err = capsys.readouterr().err
    assert "frame 4" in err and err.count("\n") == 1
    assert not (tmp_path / "e").exists()
    assert main(["decode", str(bad), "-c", ckpt, "-o", str(tmp_path / "e"), "--resume"]) == 3
    report = json.loads((tmp_path / "e" / "bad" / "predictions.json").read_text())
    assert ["lost" in f for f in report["frames"]] == [False] * 4 + [True] * 2


def test_cli_refuses_frames_of_different_sizes(
    trained: tuple, clip: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from featcodec.inputs import to_png

    _frames_folder(tmp_path / "frames", clip["images"][:2])
    (tmp_path / "frames" / "3.png").write_bytes(to_png(clip["images"][2, :, :16]))
    args = ["encode", str(tmp_path / "frames"), "-c", str(trained[3]), "-o", str(tmp_path / "s")]
    assert main(args) == 1
    assert "3.png is 64×16" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_bytes_at_equal_metric_reads_the_rd_curve() -> None:
    points = [(100.0, 0.40), (50.0, 0.30), (200.0, 0.45)]
    assert bytes_at_metric(points, 0.35) == pytest.approx((75.0, "interpolated"))
    assert bytes_at_metric(points, 0.44) == pytest.approx((180.0, "interpolated"))
    assert bytes_at_metric(points, 0.25) == (50.0, "at most")  # never extrapolated
    assert bytes_at_metric(points, 0.50) is None
    # a noisy curve: the cheapest crossing counts
    assert bytes_at_metric([(10.0, 0.2), (20.0, 0.5), (30.0, 0.3), (40.0, 0.6)], 0.4) == (
        pytest.approx(16.666, abs=1e-3),
        "interpolated",
    )


@pytest.mark.slow
def test_eval_video_compares_pframe_codecs_at_equal_accuracy(
    codec: VideoCodec, trained: tuple, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    untrained = tmp_path / "untrained.ckpt"  # a second RD point behind the same intra codec
    VideoCodec(codec.intra, codec.inter_arch, codec.motion_arch).save(untrained)
    out = tmp_path / "video.json"
    options = ["--clips", "2", "--frames", "3", "--image-size", str(SIZE), "--intra-period", "3"]
    options += ["--global-motion", "--motion", "affine", "-o", str(out)]
    assert main(["eval", "video", str(trained[3]), str(untrained), *options]) == 0
    report = json.loads(out.read_text())
    assert [c["name"] for c in report["codecs"]] == [str(trained[3]), str(untrained)]
    intra = report["intra"]
    assert intra["frames"] == {"I": 6}
    for entry in report["codecs"]:
        assert entry["video"]["frames"] == {"I": 2, "P": 4}
        assert entry["no_motion"]["frames"] == {"I": 2, "P": 4}
        assert entry["video"]["motion_bytes"] > 0
        assert entry["p_over_i_bytes"] == entry["video"]["bytes"]["P"] / intra["bytes"]["I"]
    points = [(c["video"]["bytes"]["P"], c["p_metric"]) for c in report["codecs"]]
    found = bytes_at_metric(points, intra["metric"]["I"])
    assert (report["equal_metric"] is None) == (found is None)
    assert "all-intra" in capsys.readouterr().out
    # codecs behind different intra codecs cannot share one curve
    other = tmp_path / "other.ckpt"
    VideoCodec.build(codec.arch).save(other)
    assert main(["eval", "video", str(trained[3]), str(other), *options, "--overwrite"]) == 1
