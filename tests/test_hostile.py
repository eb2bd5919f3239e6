"""Untrusted input cannot crash the process, run code, hang it or make it allocate without
bound: forged rANS payloads with valid CRCs, absurd declared shapes, absurd magnitudes,
planted checkpoints, oversized images."""

from __future__ import annotations

import pickle
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from featcodec.codec.bitstream import (
    MAX_INPUT_PIXELS,
    Section,
    SectionKind,
    ShapeTag,
    Stream,
    pack,
    unpack,
)
from featcodec.codec.entropy import GaussianCoder, RansReader, rans_decode
from featcodec.codec.errors import BitstreamError, InputError
from featcodec.codec.facade import Codec


def _forge(data: bytes, rng: random.Random) -> bytes:
    """``data`` with its payloads mutated (flips, substitutions, truncation to whole words,
    words appended) and the CRCs recomputed, so only the entropy decoder can notice."""
    stream = unpack(data)
    sections = []
    for s in stream.sections:
        p = bytearray(s.payload)
        action = rng.randrange(4)
        if action == 0:
            for _ in range(rng.randint(1, 6)):
                p[rng.randrange(len(p))] ^= 1 << rng.randrange(8)
        elif action == 1:
            for _ in range(rng.randint(1, 4)):
                p[rng.randrange(len(p))] = rng.choice([0x00, 0xFF, rng.randrange(256)])
        elif action == 2:
            p = p[: max(8, rng.randrange(len(p) + 1) // 4 * 4)]
        else:
            p += bytes([0xFF] * 4 * rng.randint(1, 3))
        sections.append(Section(s.kind, bytes(p), s.frame))
    return pack(Stream(stream.fingerprint, stream.shapes, tuple(sections)))


def test_forged_payloads_with_valid_crcs_are_refused_or_decoded_never_crash(
    tiny_codec: Codec,
) -> None:
    torch.manual_seed(0)
    data = tiny_codec.encode(torch.rand(3, 40, 48))
    rng = random.Random(0)
    outcomes = {"refused": 0, "decoded": 0}
    for _ in range(300):
        forged = _forge(data, rng)
        try:
            first = tiny_codec.decode(forged).features
        except BitstreamError:
            outcomes["refused"] += 1
            continue
        # whatever decodes, decodes the same every time: nothing outside the payload is read
        assert torch.equal(first, tiny_codec.decode(forged).features)
        outcomes["decoded"] += 1
    assert outcomes["refused"] > 250  # the end-of-string check catches almost every forgery


def test_escape_counts_beyond_any_encoder_are_refused() -> None:
    coder = GaussianCoder().eval()
    tables = coder.coding_tables()
    scales = torch.full((1, 1, 2, 4), 0.11)
    # a string of all-ones words: every symbol decodes as an escape with 15-digit counts
    string = b"\xff" * 64
    with pytest.raises(BitstreamError, match="malformed rANS data"):
        rans_decode(string, coder.build_indexes(scales), tables)


def test_a_string_with_trailing_words_is_refused() -> None:
    coder = GaussianCoder().eval()
    y = torch.randn(1, 4, 3, 3) * 3
    scales = torch.rand(1, 4, 3, 3) + 0.5
    string = coder.encode(y, scales, torch.zeros_like(y))[0]
    decoded = coder.decode([string], scales, torch.zeros_like(y))
    assert torch.equal(decoded, torch.round(y))
    with pytest.raises(BitstreamError, match="does not end where its symbols do"):
        coder.decode([string + bytes(4)], scales, torch.zeros_like(y))


@pytest.mark.parametrize("n", [0, 3, 4, 7, 9, 13])
def test_reader_rejects_strings_that_are_not_whole_words(n: int) -> None:
    with pytest.raises(BitstreamError, match="not rANS data"):
        RansReader(bytes(n))


def test_decoder_matches_compressai_on_its_own_strings() -> None:
    from compressai import ans

    coder = GaussianCoder().eval()
    torch.manual_seed(1)
    y = torch.randn(1, 32, 8, 8) * 8
    y.view(-1)[:3] = torch.tensor([5000.0, -70000.0, 123456.0])  # escaped values
    scales = torch.rand(1, 32, 8, 8) * 4 + 0.05
    string = coder.encode(y, scales, torch.zeros_like(y))[0]
    tables = coder.coding_tables()
    index = coder.build_indexes(scales).reshape(-1).tolist()
    theirs = ans.RansDecoder().decode_with_indexes(string, index, *tables.lists)
    ours = rans_decode(string, coder.build_indexes(scales), tables)
    assert ours.reshape(-1).tolist() == theirs == torch.round(y).reshape(-1).int().tolist()


def test_absurd_declared_sizes_are_refused_before_decoding(tiny_codec: Codec) -> None:
    data = tiny_codec.encode(torch.rand(3, 16, 16))
    stream = unpack(data)
    side = 1 << 13  # 8192² pixels: over the limit, though every field is in range
    assert side * side > MAX_INPUT_PIXELS
    forged = Stream(
        stream.fingerprint,
        {ShapeTag.INPUT: (3, side, side), ShapeTag.FEATURES: (128, side // 8, side // 8)},
        stream.sections,
    )
    with pytest.raises(BitstreamError, match="over the limit"):
        tiny_codec.decode(pack(forged))
    bad_rank = Stream(
        stream.fingerprint, {**stream.shapes, ShapeTag.INPUT: (16, 16)}, stream.sections
    )
    with pytest.raises(BitstreamError, match="should have 3 dimensions"):
        tiny_codec.decode(pack(bad_rank))


@pytest.mark.parametrize("value", [1e9, 3e38, -1e12])
def test_absurd_magnitudes_are_refused_by_the_encoder(tiny_codec: Codec, value: float) -> None:
    f = torch.full((128, 2, 2), value)
    # refused where the value first overflows: the fixed-point parameters or the coder
    with pytest.raises(InputError, match="beyond the (entropy coder's range|range of the exact)"):
        tiny_codec.encode_features(f)


def test_an_image_over_the_pixel_limit_is_refused(tiny_codec: Codec, tmp_path: Path) -> None:
    from featcodec.inputs import load_image

    side = int(MAX_INPUT_PIXELS**0.5) + 8
    path = tmp_path / "big.png"
    Image.fromarray(np.zeros((side, side), dtype=np.uint8)).save(path)
    with pytest.raises(InputError, match="over the limit"):
        load_image(path)
    with pytest.raises(InputError, match="over the limit"):
        tiny_codec.encode(torch.zeros(3, side, side))


class _Payload:
    """Unpickling this runs code: it would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def test_a_planted_run_checkpoint_is_not_unpickled(tmp_path: Path) -> None:
    from featcodec.eval.sweep import reusable

    marker = tmp_path / "pwned"
    planted = tmp_path / "tasknet.ckpt"
    with open(planted, "wb") as f:
        pickle.dump({"epoch": 1, "payload": _Payload(marker)}, f)
    assert not reusable(planted, None, None, 1)  # type: ignore[arg-type]
    assert not marker.exists()


def test_cli_decode_of_a_forged_stream_exits_with_one_line(
    tiny_codec: Codec, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    data = tiny_codec.encode(torch.rand(3, 32, 32))
    stream = unpack(data)
    forged = [
        Section(s.kind, b"\xff" * len(s.payload) if s.kind == SectionKind.BASE else s.payload)
        for s in stream.sections
    ]
    path = tmp_path / "in" / "forged.fcb"
    path.parent.mkdir()
    path.write_bytes(pack(Stream(stream.fingerprint, stream.shapes, tuple(forged))))
    out = tmp_path / "out"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "featcodec",
            "decode",
            str(path),
            "-c",
            str(tiny_checkpoint),
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "malformed rANS data" in lines[0], run.stderr
    assert not out.exists() or not any(out.iterdir())
