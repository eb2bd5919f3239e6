"""Inputs are read faithfully: 16-bit and float images scaled as they are meant, alpha by a
stated rule, images outside [0, 1] refused; ``featcodec info`` refuses what a decoder would
refuse without its model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from featcodec.cli import main
from featcodec.codec.bitstream import Section, SectionKind, Stream, pack, unpack
from featcodec.codec.errors import BitstreamError, InputError
from featcodec.codec.facade import Codec
from featcodec.codec.sequence import check_layout
from featcodec.inputs import load_image


def test_a_16_bit_grey_png_is_scaled_not_saturated(tmp_path: Path) -> None:
    grey = (np.arange(32 * 32).reshape(32, 32) * 64).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "g16.png")
    image = load_image(tmp_path / "g16.png")
    assert image.shape == (3, 32, 32)
    expected = torch.from_numpy(grey.astype(np.float32) / 65535)
    for c in range(3):
        torch.testing.assert_close(image[c], expected)
    assert 0.0 < float(image.mean()) < 0.6  # was read as all white before


def test_alpha_is_composited_over_black(tmp_path: Path) -> None:
    Image.new("RGBA", (4, 4), (255, 100, 0, 128)).save(tmp_path / "rgba.png")
    image = load_image(tmp_path / "rgba.png")
    alpha = 128 / 255
    torch.testing.assert_close(image[:, 0, 0], torch.tensor([alpha, 100 / 255 * alpha, 0.0]))
    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    palette.putpixel((0, 0), 1)
    palette.putpixel((1, 0), 1)
    palette.info["transparency"] = 1  # white is transparent
    palette.save(tmp_path / "p.png", transparency=1)
    assert float(load_image(tmp_path / "p.png").max()) == 0.0


def test_float_images_are_taken_as_they_are_within_0_and_1(tmp_path: Path) -> None:
    values = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)
    Image.fromarray(values).save(tmp_path / "f.tif")
    torch.testing.assert_close(load_image(tmp_path / "f.tif")[1], torch.from_numpy(values))
    Image.fromarray(values * 3).save(tmp_path / "hot.tif")
    with pytest.raises(InputError, match=r"float image values outside \[0, 1\]"):
        load_image(tmp_path / "hot.tif")


@pytest.mark.parametrize("low, high", [(-0.1, 0.5), (0.0, 1.5), (0.0, 255.0)])
def test_images_outside_0_and_1_are_refused(tiny_codec: Codec, low: float, high: float) -> None:
    x = torch.linspace(low, high, 3 * 16 * 16).reshape(3, 16, 16)
    with pytest.raises(InputError, match=r"values must lie in \[0, 1\]"):
        tiny_codec.encode(x)


def _with_base_payload(data: bytes, payload: bytes) -> bytes:
    stream = unpack(data)
    sections = tuple(
        Section(s.kind, payload if s.kind == SectionKind.BASE else s.payload)
        for s in stream.sections
    )
    return pack(Stream(stream.fingerprint, stream.shapes, sections))


def test_info_refuses_what_a_decoder_would(tiny_codec: Codec, tmp_path: Path, capsys) -> None:
    data = tiny_codec.encode(torch.rand(3, 32, 32))
    check_layout(unpack(data))  # a whole stream passes
    bad = tmp_path / "bad.fcb"
    bad.write_bytes(_with_base_payload(data, b"\x01\x02\x03\x04\x05\x06"))
    with pytest.raises(BitstreamError, match="base section of 6 bytes is not rANS data"):
        check_layout(unpack(bad.read_bytes()))
    assert main(["info", str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"featcodec: error: {bad}: base section of 6 bytes is not rANS data"]
