from __future__ import annotations

import os
import random
import tracemalloc
import zlib

import pytest

from featcodec.codec import bitstream
from featcodec.codec.bitstream import (
    MAGIC,
    Section,
    SectionKind,
    ShapeTag,
    Stream,
    pack,
    unpack,
    varint,
)
from featcodec.codec.errors import BitstreamError


def make_stream(hyper: bytes = b"\x01" * 12, base: bytes = bytes(range(40))) -> Stream:
    return Stream(
        fingerprint=bytes.fromhex("0123456789abcdef"),
        shapes={ShapeTag.INPUT: (3, 64, 48), ShapeTag.FEATURES: (128, 8, 6)},
        sections=(Section(SectionKind.HYPER, hyper), Section(SectionKind.BASE, base)),
    )


def header_size(data: bytes) -> int:
    return unpack(data).header_bytes


def test_round_trip_keeps_every_field() -> None:
    stream = make_stream()
    data = pack(stream)
    parsed = unpack(data)
    assert parsed == stream
    assert parsed.total_bytes == len(data)
    assert parsed.section(SectionKind.BASE) == bytes(range(40))
    assert parsed.shape(ShapeTag.FEATURES) == (128, 8, 6)


def test_every_header_byte_corrupted_is_refused() -> None:
    data = pack(make_stream())
    for pos in range(header_size(data)):
        for flip in (0x01, 0x80, 0xFF):
            bad = bytearray(data)
            bad[pos] ^= flip
            with pytest.raises(BitstreamError):
                unpack(bytes(bad))


def test_truncation_anywhere_is_refused() -> None:
    data = pack(make_stream())
    header = header_size(data)
    boundaries = {0, 1, 4, header - 4, header, header + 12, len(data) - 1}
    for n in sorted(boundaries | set(range(len(data)))):
        with pytest.raises(BitstreamError, match="truncated|not a featcodec"):
            unpack(data[:n])


def test_trailing_bytes_are_refused() -> None:
    with pytest.raises(BitstreamError, match="after the last section"):
        unpack(pack(make_stream()) + b"\x00")


def test_random_payload_flips_are_caught_by_the_section_crc() -> None:
    rng = random.Random(0)
    data = pack(make_stream())
    header = header_size(data)
    for _ in range(200):
        bad = bytearray(data)
        pos = rng.randrange(header, len(data))
        bad[pos] ^= 1 << rng.randrange(8)
        with pytest.raises(BitstreamError, match="corrupt (hyper|base) section"):
            unpack(bytes(bad))


def test_random_flips_anywhere_never_pass() -> None:
    rng = random.Random(1)
    data = pack(make_stream())
    for _ in range(300):
        bad = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            bad[rng.randrange(len(bad))] ^= rng.randrange(1, 256)
        if bytes(bad) == data:
            continue
        with pytest.raises(BitstreamError):
            unpack(bytes(bad))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x89",
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,
        b"\xff\xd8\xff\xe0" + b"\x00" * 40,
        b"hello",
    ],
)
def test_foreign_data_is_refused(data: bytes) -> None:
    with pytest.raises(BitstreamError, match="not a featcodec stream"):
        unpack(data)


def _forge(shapes: list[tuple[int, tuple[int, ...]]], version: int = 1) -> bytes:
    """A stream with a *valid* header CRC describing arbitrary shapes."""
    head = bytearray(MAGIC) + bytes([version, 0]) + b"\x00" * 8 + bytes([len(shapes)])
    for tag, dims in shapes:
        head += bytes([tag, len(dims)]) + b"".join(varint(d) for d in dims)
    payload = b"\x00" * 8
    head += bytes([1, SectionKind.BASE]) + varint(0) + varint(8)
    head += zlib.crc32(payload).to_bytes(4, "little")
    head += zlib.crc32(head).to_bytes(4, "little")
    return bytes(head) + payload


def test_a_billion_element_claim_is_refused_before_allocation() -> None:
    data = _forge([(ShapeTag.FEATURES, (1000, 1000, 1000))])
    tracemalloc.start()
    try:
        with pytest.raises(BitstreamError, match="limit"):
            unpack(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # refused before anything the size of the claim was allocated
    with pytest.raises(BitstreamError, match="outside"):
        unpack(_forge([(ShapeTag.FEATURES, (3, 10**6, 10))]))
    with pytest.raises(BitstreamError, match="outside"):
        unpack(_forge([(ShapeTag.FEATURES, (3, 0, 10))]))
    assert unpack(_forge([(ShapeTag.FEATURES, (3, 10, 10))])).shape(ShapeTag.FEATURES) == (
        3,
        10,
        10,
    )


def test_other_versions_and_duplicates_are_refused() -> None:
    with pytest.raises(BitstreamError, match="version 3 "):
        unpack(_forge([(ShapeTag.FEATURES, (3, 4, 4))], version=3))
    assert unpack(_forge([(ShapeTag.FEATURES, (3, 4, 4))], version=1)).version == 1
    with pytest.raises(BitstreamError, match="twice"):
        unpack(_forge([(ShapeTag.FEATURES, (3, 4, 4)), (ShapeTag.FEATURES, (3, 4, 4))]))
    with pytest.raises(BitstreamError, match="unknown shape tag"):
        unpack(_forge([(9, (3, 4, 4))]))


def test_pack_refuses_what_unpack_would() -> None:
    bad = Stream(
        b"\x00" * 8, {ShapeTag.FEATURES: (2**20, 2**20)}, (Section(SectionKind.BASE, b""),)
    )
    with pytest.raises(BitstreamError):
        pack(bad)
    with pytest.raises(BitstreamError):
        pack(Stream(b"\x00" * 3, {ShapeTag.FEATURES: (1,)}, (Section(SectionKind.BASE, b""),)))


def test_missing_section_or_shape_is_reported_by_name() -> None:
    stream = unpack(pack(make_stream()))
    with pytest.raises(BitstreamError, match="no enh section"):
        stream.section(SectionKind.ENH)


def test_write_is_atomic(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "x.fcb"
    target.write_bytes(b"previous content")

    def fail(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        bitstream.write(target, make_stream())
    assert target.read_bytes() == b"previous content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.fcb"]  # no temporary left
    monkeypatch.undo()
    n = bitstream.write(target, make_stream())
    assert n == target.stat().st_size
    assert bitstream.read(target) == make_stream()


def test_read_names_the_file(tmp_path) -> None:
    p = tmp_path / "bad.fcb"
    p.write_bytes(b"junk")
    with pytest.raises(BitstreamError, match="bad.fcb: not a featcodec stream"):
        bitstream.read(p)


def test_written_files_get_the_usual_permissions(tmp_path) -> None:
    old = os.umask(0o022)
    try:
        bitstream.write(tmp_path / "x.fcb", make_stream())
        (tmp_path / "plain").write_bytes(b"")
    finally:
        os.umask(old)
    mode = (tmp_path / "x.fcb").stat().st_mode & 0o777
    assert mode == (tmp_path / "plain").stat().st_mode & 0o777 == 0o644


def test_prefixed_payloads_split_back_and_truncation_is_named() -> None:
    for head, tail in ((b"", b"x"), (b"m" * 5, b""), (b"m" * 300, b"r" * 40)):
        payload = bitstream.join_prefixed(head, tail)
        assert bitstream.split_prefixed(payload, "motion") == (head, tail)
    payload = bitstream.join_prefixed(b"m" * 300, b"")
    for cut in (0, 1, 2, 150, len(payload) - 1):
        with pytest.raises(BitstreamError, match="ends? inside the motion"):
            bitstream.split_prefixed(payload[:cut], "motion")


def test_frame_bytes_count_each_section_record_once() -> None:
    sections = (
        Section(SectionKind.HYPER, b"\x01" * 12, 0),
        Section(SectionKind.BASE, b"\x02" * 200, 0),
        Section(SectionKind.INTER, b"\x03" * 30, 1),
    )
    stream = Stream(bytes(8), {ShapeTag.FEATURES: (4, 2, 2)}, sections)
    data = pack(stream)
    frames = unpack(data).frame_bytes()
    # kind + frame + length (2 bytes for 200) + CRC-32
    assert frames == {0: 12 + 7 + 200 + 8, 1: 30 + 7}
    records = sum(s.record_bytes for s in sections)
    assert unpack(data).header_bytes - records + sum(frames.values()) == len(data)
