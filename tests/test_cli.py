from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from featcodec.cli import main
from featcodec.codec.bitstream import unpack
from featcodec.codec.facade import Codec


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(32, 32), (40, 24), (17, 33)]):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    return folder


def run(*args: object) -> int:
    return main([str(a) for a in args])


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_encode_decode_info_round_trip(images, tiny_checkpoint, tmp_path, capsys) -> None:
    streams = tmp_path / "streams"
    assert run("encode", images, "-c", tiny_checkpoint, "-o", streams) == 0
    assert listing(streams) == ["im0.fcb", "im1.fcb", "im2.fcb"]
    out = tmp_path / "decoded"
    assert run("decode", streams, "-c", tiny_checkpoint, "-o", out) == 0
    assert listing(out) == ["im0.pt", "im1.pt", "im2.pt", "predictions.json"]

    codec = Codec.from_checkpoint(tiny_checkpoint)
    stream = (streams / "im1.fcb").read_bytes()
    expected = codec.decode(stream)
    features = torch.load(out / "im1.pt", weights_only=True)
    assert features.shape == (128, 5, 3)
    torch.testing.assert_close(features, expected.features[0])
    predictions = json.loads((out / "predictions.json").read_text())
    assert set(predictions) == {"im0", "im1", "im2"}
    assert predictions["im1"]["class"] == int(expected.output.argmax())
    assert abs(sum(predictions["im1"]["probabilities"]) - 1) < 1e-4

    capsys.readouterr()
    assert run("info", streams / "im1.fcb") == 0
    text = capsys.readouterr().out
    assert f"{len(stream):,} bytes" in text and "3×40×24" in text and "base" in text
    assert run("info", "--json", streams / "im1.fcb") == 0
    report = json.loads(capsys.readouterr().out)[0]
    assert report["bytes"] == len(stream)
    assert report["fingerprint"] == codec.fingerprint.hex()
    assert sum(s["bytes"] for s in report["sections"]) + report["header_bytes"] == len(stream)


def test_encode_feature_tensors(tiny_checkpoint, tmp_path) -> None:
    torch.save(torch.rand(128, 4, 4), tmp_path / "a.pt")
    np.save(tmp_path / "b.npy", np.random.rand(1, 128, 3, 5).astype(np.float32))
    out = tmp_path / "out"
    assert (
        run("encode", tmp_path / "a.pt", tmp_path / "b.npy", "-c", tiny_checkpoint, "-o", out) == 0
    )
    assert unpack((out / "b.fcb").read_bytes()).shapes[2] == (128, 3, 5)


def _fails(capsys, *args: object, message: str) -> None:
    capsys.readouterr()
    assert run(*args) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err  # one line, no traceback
    assert err.startswith("featcodec: error: ")
    assert message in err, err


def test_bad_inputs_give_one_line_and_no_output(images, tiny_checkpoint, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    text = images / "notes.png"
    text.write_text("this is not an image")
    _fails(
        capsys,
        "encode",
        images,
        "-c",
        tiny_checkpoint,
        "-o",
        out,
        message="notes.png: cannot read as an image",
    )
    assert listing(out) == []  # the valid images before it were not written either
    text.unlink()

    torch.save(torch.rand(64, 4, 4), tmp_path / "narrow.pt")
    _fails(
        capsys,
        "encode",
        tmp_path / "narrow.pt",
        "-c",
        tiny_checkpoint,
        "-o",
        out,
        message="expected 128 channels",
    )
    torch.save(torch.full((128, 4, 4), float("nan")), tmp_path / "nan.pt")
    _fails(
        capsys,
        "encode",
        tmp_path / "nan.pt",
        "-c",
        tiny_checkpoint,
        "-o",
        out,
        message="NaN or Inf",
    )
    torch.save({"not": "a tensor"}, tmp_path / "dict.pt")
    _fails(
        capsys,
        "encode",
        tmp_path / "dict.pt",
        "-c",
        tiny_checkpoint,
        "-o",
        out,
        message="expected a tensor",
    )
    _fails(
        capsys,
        "encode",
        tmp_path / "missing.png",
        "-c",
        tiny_checkpoint,
        "-o",
        out,
        message="no such file",
    )
    _fails(
        capsys,
        "encode",
        images,
        "-c",
        tmp_path / "none.ckpt",
        "-o",
        out,
        message="checkpoint not found",
    )
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    _fails(capsys, "encode", images, "-c", foreign, "-o", out, message="not a featcodec checkpoint")
    assert listing(out) == []


def test_corrupt_and_foreign_streams(images, tiny_checkpoint, tiny_arch, tmp_path, capsys) -> None:
    streams = tmp_path / "streams"
    assert run("encode", images, "-c", tiny_checkpoint, "-o", streams) == 0
    data = bytearray((streams / "im0.fcb").read_bytes())
    data[-3] ^= 0x10
    (streams / "im0.fcb").write_bytes(bytes(data))
    out = tmp_path / "decoded"
    _fails(
        capsys,
        "decode",
        streams,
        "-c",
        tiny_checkpoint,
        "-o",
        out,
        message="im0.fcb: corrupt base section",
    )
    assert listing(out) == []
    _fails(capsys, "info", streams / "im0.fcb", message="CRC-32 mismatch")

    torch.manual_seed(5)
    other = tmp_path / "other.ckpt"
    Codec.build(tiny_arch).save(other)
    _fails(
        capsys, "decode", streams / "im1.fcb", "-c", other, "-o", out, message="written by model"
    )
    assert listing(out) == []


def test_existing_outputs_are_kept_unless_overwrite(
    images, tiny_checkpoint, tmp_path, capsys
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "im1.fcb").write_bytes(b"precious")
    _fails(
        capsys,
        "encode",
        images,
        "-c",
        tiny_checkpoint,
        "-o",
        out,
        message="exists (use --overwrite",
    )
    assert (out / "im1.fcb").read_bytes() == b"precious"
    assert listing(out) == ["im1.fcb"]
    assert run("encode", images, "-c", tiny_checkpoint, "-o", out, "--overwrite") == 0
    assert unpack((out / "im1.fcb").read_bytes())


def test_console_command_exit_code_and_stderr(tmp_path) -> None:
    bad = tmp_path / "bad.fcb"
    bad.write_bytes(b"GIF89a....")
    proc = subprocess.run(
        [sys.executable, "-m", "featcodec", "info", str(bad)], capture_output=True, text=True
    )
    assert proc.returncode == 1
    expected = f"featcodec: error: {bad}: not a featcodec stream: starts with b'GIF8'"
    assert proc.stderr.strip().splitlines() == [expected + ", expected b'\\x89FCB'"]
    assert proc.stdout == ""
