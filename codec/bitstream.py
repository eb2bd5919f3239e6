"""The ``.fcb`` container: a self-describing bitstream for coded feature tensors.

Layout, version 2 (integers little-endian; ``varint`` is unsigned LEB128, at most 5 bytes,
minimal)::

    magic        4 bytes   89 46 43 42  ("\\x89FCB")
    version      u8        2 (1 is read too)
    flags        u8        bit 0: float entropy parameters (codec.coding_mode.FLOAT); others 0
    fingerprint  8 bytes   model that wrote the stream (architecture + weights)
    n_shapes     u8        1..8
      tag        u8        1 input, 2 features
      ndim       u8        1..4
      dims       varint×ndim, each 1..65536; at most 2**28 elements per shape
    n_sections   varint    1..262144 (one byte up to 127 sections)
      kind       u8        1 hyper, 2 base, 3 hyper-enh, 4 enh (an image or an I-frame);
                           5 inter (a P-frame, see codec.video)
      frame      varint    0..65535
      length     varint    payload bytes
      crc32      u32       CRC-32 of the payload
    header_crc   u32       CRC-32 of every header byte before it
    payloads               in section order: base sections before enhancement sections,
                           then by frame, then by kind (each record once)

Version 2 codes latents with device-exact entropy parameters (:mod:`codec.exact`) and ends
every rANS string in a check of what its decoder must reproduce
(:class:`codec.entropy.RansWriter`): ``EXACT``. Version 1 (float parameters, no check,
any varint, sections in any order within a layer) is read for old streams: ``LEGACY``

A video sequence is one stream: each frame's sections carry its index, an I-frame has hyper +
base sections, a P-frame one inter section (in the base layer) whose payload is its motion
side information, length-prefixed (:func:`join_prefixed`), then one rANS string.

:func:`unpack` validates every field, in order, before any tensor is allocated: anything
malformed, truncated, foreign or inconsistent raises :class:`~codec.errors.BitstreamError`
with a message that names the problem; ``unpack(..., corrupt="mark")`` instead leaves out the
sections whose payload fails its CRC and lists their frames in ``Stream.corrupt`` (a decoder
can then skip to the next I-frame). Whether a stream fits a *model* (fingerprint, channel
count) is checked by :class:`~codec.facade.Codec`.
"""

from __future__ import annotations

import math
import os
import zlib
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path

from featcodec.codec.coding_mode import (
    FLAG_FLOAT_ENTROPY,
    CodingMode,
    coding_mode,
)
from featcodec.codec.errors import BitstreamError, InputError
from featcodec.codec.files import atomic_write

MAGIC = b"\x89FCB"
VERSION = 2
READABLE_VERSIONS = (1, 2)
FINGERPRINT_BYTES = 8
MAX_SHAPES = 8
MAX_NDIM = 4
MAX_DIM = 1 << 16
MAX_ELEMENTS = 1 << 28
MAX_SECTIONS = 1 << 18
MAX_FRAME = (1 << 16) - 1
MAX_SECTION_BYTES = 1 << 30
MAX_INPUT_PIXELS = 1 << 23
"""Largest input a codec encodes or decodes, in pixels (8.4 MP: 3840×2160 fits). A stream
that declares more is refused before anything is allocated (:func:`codec.facade.check_shapes`);
a larger picture is coded in tiles. Encoding takes about 160 bytes of memory per pixel on a
CPU, 1.3 GB at the limit."""
_VARINT_BYTES = 5


class ShapeTag(IntEnum):
    """What a shape record describes."""

    INPUT = 1
    FEATURES = 2


class SectionKind(IntEnum):
    """What a section holds. Base sections come first, so a stream cut after them is a base."""

    HYPER = 1
    BASE = 2
    HYPER_ENH = 3
    ENH = 4
    INTER = 5


LAYER_OF = {
    SectionKind.HYPER: "base",
    SectionKind.BASE: "base",
    SectionKind.HYPER_ENH: "enhancement",
    SectionKind.ENH: "enhancement",
    SectionKind.INTER: "base",
}
"""The layer each kind of section belongs to."""


def _check_order(kinds: list[SectionKind]) -> None:
    seen_enh = False
    for k in kinds:
        seen_enh |= LAYER_OF[k] == "enhancement"
        if seen_enh and LAYER_OF[k] == "base":
            raise BitstreamError("malformed header: a base section follows an enhancement one")


@dataclass(frozen=True)
class Section:
    """One length-prefixed, CRC-protected payload."""

    kind: SectionKind
    payload: bytes
    frame: int = 0

    @property
    def record_bytes(self) -> int:
        """Bytes of this section's record in the header: kind, frame, length and CRC-32."""
        return 1 + len(varint(self.frame)) + len(varint(len(self.payload))) + 4

    @property
    def name(self) -> str:
        return self.kind.name.lower().replace("_", "-")


@dataclass(frozen=True)
class Stream:
    """A parsed ``.fcb`` stream.

    Attributes:
        fingerprint: ``FINGERPRINT_BYTES`` bytes identifying the model that wrote it.
        shapes: tensor shapes by tag, e.g. ``{INPUT: (3, H, W), FEATURES: (C, h, w)}``.
        sections: payloads in stream order.
        version, flags: the header's (:func:`header_fields`; :attr:`mode`).
        header_bytes: size of the header (filled in by :func:`unpack`).
        cut: the stream ends right after its base sections although the header announces
            enhancement sections (read with ``layers="base"``); they are not in ``sections``.
        corrupt: frames with a section that failed its CRC (read with ``corrupt="mark"``),
            each with the kinds of its failed sections (their header records are intact);
            those sections are not in ``sections``.
    """

    fingerprint: bytes
    shapes: dict[ShapeTag, tuple[int, ...]]
    sections: tuple[Section, ...]
    version: int = VERSION
    flags: int = 0
    header_bytes: int = field(default=0, compare=False)
    cut: bool = field(default=False, compare=False)
    corrupt: dict[int, frozenset[SectionKind]] = field(default_factory=dict, compare=False)

    @property
    def mode(self) -> CodingMode:
        """How its latents were coded (from the version and flags)."""
        return coding_mode(self.version, self.flags)

    def has(self, kind: SectionKind, frame: int = 0) -> bool:
        return any(s.kind == kind and s.frame == frame for s in self.sections)

    def layer_bytes(self) -> dict[str, int]:
        """Bytes of the header and of each layer's sections."""
        out = {"header": self.header_bytes, "base": 0, "enhancement": 0}
        for s in self.sections:
            out[LAYER_OF[s.kind]] += len(s.payload)
        return out

    def frame_bytes(self) -> dict[int, int]:
        """Bytes of each frame (a sequence's per-frame rate): its sections' payloads and their
        records in the header (:attr:`Section.record_bytes`). The rest of the header is the
        stream's, shared by every frame."""
        out: dict[int, int] = {}
        for s in self.sections:
            out[s.frame] = out.get(s.frame, 0) + len(s.payload) + s.record_bytes
        return out

    def shape(self, tag: ShapeTag) -> tuple[int, ...]:
        if tag not in self.shapes:
            raise BitstreamError(f"stream has no {tag.name.lower()} shape")
        return self.shapes[tag]

    def section(self, kind: SectionKind, frame: int = 0) -> bytes:
        for s in self.sections:
            if s.kind == kind and s.frame == frame:
                return s.payload
        raise BitstreamError(f"stream has no {kind.name.lower()} section for frame {frame}")

    @property
    def total_bytes(self) -> int:
        return self.header_bytes + sum(len(s.payload) for s in self.sections)


def varint(value: int) -> bytes:
    """Unsigned LEB128: 7 bits a byte, low bits first, the high bit set on all but the last."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def zigzag(n: int) -> int:
    """Signed to unsigned for :func:`varint`: ``0, −1, 1, −2, …`` ↦ ``0, 1, 2, 3, …``."""
    return 2 * n if n >= 0 else -2 * n - 1


def unzigzag(z: int) -> int:
    """Inverse of :func:`zigzag`."""
    return z >> 1 if z % 2 == 0 else -((z + 1) >> 1)


def join_prefixed(head: bytes, tail: bytes) -> bytes:
    """``varint(len(head)) + head + tail``: two parts of one payload (:func:`split_prefixed`)."""
    return varint(len(head)) + head + tail


def split_prefixed(payload: bytes, what: str) -> tuple[bytes, bytes]:
    """Inverse of :func:`join_prefixed`; ``what`` names the head in the error."""
    r = Reader(payload)
    try:
        n = r.varint(f"{what} length")
        head = r.take(n, what)
    except BitstreamError:
        raise BitstreamError(
            f"malformed payload: {len(payload)} bytes end inside the {what}"
        ) from None
    return head, payload[r.pos :]


def pack(stream: Stream) -> bytes:
    """Serialize ``stream``; refuses what :func:`unpack` would refuse."""
    if len(stream.fingerprint) != FINGERPRINT_BYTES:
        raise BitstreamError(f"fingerprint must be {FINGERPRINT_BYTES} bytes")
    if not 1 <= len(stream.shapes) <= MAX_SHAPES:
        raise BitstreamError(f"a stream holds 1..{MAX_SHAPES} shapes")
    if not 1 <= len(stream.sections) <= MAX_SECTIONS:
        raise BitstreamError(f"a stream holds 1..{MAX_SECTIONS} sections")
    _check_version(stream.version, stream.flags)
    head = bytearray(MAGIC)
    head += bytes([stream.version, stream.flags]) + stream.fingerprint + bytes([len(stream.shapes)])
    for tag, dims in stream.shapes.items():
        _check_shape(ShapeTag(tag).name.lower(), dims)
        head += bytes([tag, len(dims)]) + b"".join(varint(d) for d in dims)
    _check_order([s.kind for s in stream.sections])
    if stream.version >= 2:
        _check_canonical([(s.kind, s.frame) for s in stream.sections])
    head += varint(len(stream.sections))
    for s in stream.sections:
        if not 0 <= s.frame <= MAX_FRAME or len(s.payload) > MAX_SECTION_BYTES:
            raise BitstreamError(f"section {s.name}: frame or length out of range")
        head += bytes([s.kind]) + varint(s.frame) + varint(len(s.payload))
        head += zlib.crc32(s.payload).to_bytes(4, "little")
    head += zlib.crc32(head).to_bytes(4, "little")
    return bytes(head) + b"".join(s.payload for s in stream.sections)


def _check_version(version: int, flags: int) -> None:
    if version not in READABLE_VERSIONS:
        raise BitstreamError(
            f"unsupported format version {version} (this build reads "
            f"{', '.join(map(str, READABLE_VERSIONS))})"
        )
    allowed = FLAG_FLOAT_ENTROPY if version >= 2 else 0
    if flags & ~allowed:
        raise BitstreamError(f"unknown header flags 0x{flags:02x} for format version {version}")


def _check_canonical(records: list[tuple[SectionKind, int]]) -> None:
    """Version 2: sections by layer, then frame, then kind (so one stream has one layout)."""
    keys = [(LAYER_OF[k] == "enhancement", frame, int(k)) for k, frame in records]
    if any(a >= b for a, b in zip(keys, keys[1:], strict=False)):
        raise BitstreamError("malformed header: sections out of order")


def _check_shape(name: str, dims: tuple[int, ...]) -> None:
    if not 1 <= len(dims) <= MAX_NDIM:
        raise BitstreamError(f"{name} shape has {len(dims)} dimensions (allowed 1..{MAX_NDIM})")
    if any(not 1 <= d <= MAX_DIM for d in dims):
        raise BitstreamError(f"{name} shape {dims} has a dimension outside 1..{MAX_DIM}")
    if math.prod(dims) > MAX_ELEMENTS:
        raise BitstreamError(
            f"{name} shape {dims} claims {math.prod(dims):,} elements (limit {MAX_ELEMENTS:,})"
        )


class Reader:
    """Bounds-checked cursor over bytes; every failure is a one-line :class:`BitstreamError`.

    The class attributes set the varint limit and the messages (``{what}`` names the field,
    ``{size}`` is the length of the data); the defaults are the container header's: varints
    of at most 5 bytes, non-minimal ones accepted. A payload format with its own messages or
    limits subclasses this (``codec.motion_side_info`` does)."""

    max_varint_bytes = _VARINT_BYTES
    truncated = "truncated stream: {size} bytes end inside the header ({what})"
    too_long = "malformed header: {what} is not a valid varint"
    non_minimal: str | None = None
    """Message refusing a varint with a needless zero byte at the end; None accepts it."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _fail(self, message: str, what: str) -> BitstreamError:
        return BitstreamError(message.format(what=what, size=len(self.data)))

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise self._fail(self.truncated, what)
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def varint(self, what: str) -> int:
        """An unsigned LEB128 varint (:func:`varint`)."""
        value = 0
        for i in range(self.max_varint_bytes):
            byte = self.u8(what)
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                if byte == 0 and i > 0 and self.non_minimal is not None:
                    raise self._fail(self.non_minimal, what)
                return value
        raise self._fail(self.too_long, what)

    def signed(self, what: str) -> int:
        """A signed integer written as ``varint(zigzag(n))``."""
        return unzigzag(self.varint(what))

    def rest(self) -> bytes:
        """Every byte left; the cursor moves to the end."""
        data, self.pos = self.data[self.pos :], len(self.data)
        return data


def unpack(data: bytes, layers: str = "all", corrupt: str = "raise") -> Stream:
    """Parse and validate a stream (header, lengths and every section's CRC-32).

    With ``layers="base"`` a stream cut right after its base sections is accepted too: the
    result holds the base sections and ``cut=True``. Anything else short is truncated.
    ``corrupt="mark"`` keeps going past a section whose payload fails its CRC: the section is
    left out and its frame listed in ``Stream.corrupt`` (the header must still be intact).
    """
    if layers not in ("all", "base"):
        raise ValueError(f"layers must be 'all' or 'base', not {layers!r}")
    if corrupt not in ("raise", "mark"):
        raise ValueError(f"corrupt must be 'raise' or 'mark', not {corrupt!r}")
    r = Reader(data)
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        raise BitstreamError(
            f"not a featcodec stream: starts with {bytes(data[:4])!r}, expected {MAGIC!r}"
        )
    r.take(len(MAGIC), "magic")
    version = r.u8("version")
    flags = r.u8("flags")
    _check_version(version, flags)
    if version >= 2:
        r.non_minimal = "malformed header: {what} is not a minimal varint"
    fingerprint = r.take(FINGERPRINT_BYTES, "fingerprint")

    n_shapes = r.u8("shape count")
    if not 1 <= n_shapes <= MAX_SHAPES:
        raise BitstreamError(f"malformed header: {n_shapes} shapes (allowed 1..{MAX_SHAPES})")
    shapes: dict[ShapeTag, tuple[int, ...]] = {}
    for i in range(n_shapes):
        raw_tag = r.u8(f"shape {i} tag")
        if raw_tag not in ShapeTag._value2member_map_:
            raise BitstreamError(f"malformed header: unknown shape tag {raw_tag}")
        tag = ShapeTag(raw_tag)
        if tag in shapes:
            raise BitstreamError(f"malformed header: {tag.name.lower()} shape given twice")
        ndim = r.u8(f"{tag.name.lower()} rank")
        if not 1 <= ndim <= MAX_NDIM:
            raise BitstreamError(f"malformed header: {tag.name.lower()} rank {ndim}")
        dims = tuple(r.varint(f"{tag.name.lower()} dimension") for _ in range(ndim))
        _check_shape(tag.name.lower(), dims)
        shapes[tag] = dims

    n_sections = r.varint("section count")
    if not 1 <= n_sections <= MAX_SECTIONS:
        raise BitstreamError(f"malformed header: {n_sections} sections (1..{MAX_SECTIONS})")
    records: list[tuple[SectionKind, int, int, int]] = []
    for i in range(n_sections):
        raw_kind = r.u8(f"section {i} kind")
        if raw_kind not in SectionKind._value2member_map_:
            raise BitstreamError(f"malformed header: unknown section kind {raw_kind}")
        kind = SectionKind(raw_kind)
        frame = r.varint(f"section {i} frame")
        length = r.varint(f"section {i} length")
        crc = int.from_bytes(r.take(4, f"section {i} CRC-32"), "little")
        if frame > MAX_FRAME or length > MAX_SECTION_BYTES:
            raise BitstreamError(f"malformed header: section {i} frame or length out of range")
        if any(k == kind and f == frame for k, f, _, _ in records):
            raise BitstreamError(f"malformed header: {kind.name.lower()} section repeated")
        records.append((kind, frame, length, crc))

    _check_order([k for k, _, _, _ in records])
    if version >= 2:
        _check_canonical([(k, f) for k, f, _, _ in records])
    header_end = r.pos
    stored_crc = int.from_bytes(r.take(4, "header CRC-32"), "little")
    if zlib.crc32(data[:header_end]) != stored_crc:
        raise BitstreamError("corrupt header: CRC-32 mismatch")
    header_bytes = r.pos

    expected = header_bytes + sum(length for _, _, length, _ in records)
    base_end = header_bytes + sum(n for k, _, n, _ in records if LAYER_OF[k] == "base")
    cut = layers == "base" and len(data) == base_end < expected
    if cut:
        records = [rec for rec in records if LAYER_OF[rec[0]] == "base"]
        expected = base_end
    if len(data) == base_end < expected:
        raise BitstreamError(
            "the stream holds only its base layer (cut after the base sections); "
            "decode it with layers='base' (featcodec decode --layers base)"
        )
    if len(data) < expected:
        raise BitstreamError(
            f"truncated stream: {len(data)} bytes, the header announces {expected}"
        )
    if len(data) > expected:
        raise BitstreamError(f"{len(data) - expected} unexpected bytes after the last section")

    sections = []
    bad: dict[int, set[SectionKind]] = {}
    pos = header_bytes
    for kind, frame, length, crc in records:
        payload = bytes(data[pos : pos + length])
        pos += length
        if zlib.crc32(payload) != crc:
            if corrupt == "mark":
                bad.setdefault(frame, set()).add(SectionKind(kind))
                continue
            raise BitstreamError(
                f"corrupt {Section(kind, b'').name} section (frame {frame}): CRC-32 mismatch"
            )
        sections.append(Section(kind, payload, frame))
    lost = {frame: frozenset(kinds) for frame, kinds in bad.items()}
    return Stream(fingerprint, shapes, tuple(sections), version, flags, header_bytes, cut, lost)


def read(path: str | os.PathLike[str], layers: str = "all", corrupt: str = "raise") -> Stream:
    """Read and validate a ``.fcb`` file (``layers``, ``corrupt``: see :func:`unpack`)."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        return unpack(data, layers, corrupt)
    except BitstreamError as e:
        raise BitstreamError(f"{path}: {e}") from None


def write(path: str | os.PathLike[str], stream: Stream) -> int:
    """Write ``stream`` to ``path`` atomically; returns the number of bytes written."""
    data = pack(stream)
    atomic_write(path, data)
    return len(data)


def bits_per_pixel(num_bytes: int, input_shape: tuple[int, ...]) -> float:
    """Rate in bits per input pixel for ``num_bytes`` coding an input of ``(C, H, W)``."""
    return 8 * num_bytes / math.prod(input_shape[-2:])
