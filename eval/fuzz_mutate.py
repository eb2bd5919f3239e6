"""Mutations of ``.fcb`` streams for the fuzzer (:mod:`eval.fuzz`).

Every mutator is deterministic: it gets a seed stream (:class:`Material`), a
:class:`random.Random` and the case's index within its class, and returns the mutated bytes and
a one-line description. Mutators that *forge* (``FORGERS``) recompute the CRC-32s they
invalidate, so their cases get past the container's integrity checks and reach the decoders;
a forged payload that then decodes to something else is undetectable by design (the CRC is the
integrity check, and the forger recomputed it). For every other mutator a successful decode
must reproduce the original output.

The layout walked here is the one documented in :mod:`codec.bitstream`; the streams are
re-serialised by :func:`build`, which (unlike :func:`codec.bitstream.pack`) writes any field
value, order or count, with CRCs that are correct unless told otherwise.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from featcodec.codec.bitstream import (
    FINGERPRINT_BYTES,
    MAGIC,
    MAX_FRAME,
    MAX_INPUT_PIXELS,
    VERSION,
    Reader,
    SectionKind,
    ShapeTag,
    Stream,
    join_prefixed,
    split_prefixed,
    unpack,
    varint,
)
from featcodec.codec.errors import BitstreamError

HUGE = (
    1 << 16, (1 << 16) + 1, (1 << 18) + 1, 1 << 28, (1 << 30) + 1, 1 << 31, (1 << 32) - 1,
    1 << 32, (1 << 35) - 1, 1 << 35, 1 << 63, (1 << 64) - 1,
)  # fmt: skip
"""Counts and lengths far beyond anything a stream may declare (some fit a 5-byte varint)."""

BOUNDARY = (0x00, 0xFF, 0x7F, 0x80)

FOREIGN_MAGIC = (
    b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"PK\x03\x04", b"\x1f\x8b\x08\x00", b"%PDF-1.7",
    b"\x7fELF", b"\x80\x04\x95", b"\x89FCA", b"\x89fcb", b"FCB\x89", b"\x89FC", b"RIFF",
    b"\x00\x00\x00\x00", b"\xff\xff\xff\xff",
)  # fmt: skip

SMALL = (b"", b"\x89", MAGIC[:2], MAGIC[:3], MAGIC, MAGIC + bytes([VERSION]), b"\x00", b"\xff")


def crc32(data: bytes) -> int:
    """The container's checksum: CRC-32 (zlib, the same as :mod:`codec.bitstream`)."""
    return zlib.crc32(data)


@dataclass(frozen=True)
class Field:
    """One header field of a stream: ``name`` (``version``, ``shape1.dim0``, ``section2.length``
    ...), its byte span ``[start, end)`` and ``kind`` (``u8``, ``varint``, ``bytes``, ``crc``)."""

    name: str
    start: int
    end: int
    kind: str


def field_layout(data: bytes) -> tuple[tuple[Field, ...], int]:
    """The header fields of a valid stream and the offset of its header CRC."""
    r = Reader(data)
    fields: list[Field] = []

    def add(name: str, kind: str, n: int = 0) -> int:
        start = r.pos
        value = r.varint(name) if kind == "varint" else int.from_bytes(r.take(n, name), "little")
        fields.append(Field(name, start, r.pos, kind))
        return value

    add("magic", "bytes", len(MAGIC))
    add("version", "u8", 1)
    add("flags", "u8", 1)
    add("fingerprint", "bytes", FINGERPRINT_BYTES)
    for i in range(add("n_shapes", "u8", 1)):
        add(f"shape{i}.tag", "u8", 1)
        for d in range(add(f"shape{i}.ndim", "u8", 1)):
            add(f"shape{i}.dim{d}", "varint")
    for i in range(add("n_sections", "varint")):
        add(f"section{i}.kind", "u8", 1)
        add(f"section{i}.frame", "varint")
        add(f"section{i}.length", "varint")
        add(f"section{i}.crc", "crc", 4)
    return tuple(fields), r.pos


@dataclass(frozen=True)
class Material:
    """A seed stream, parsed once: its bytes, header fields, header CRC offset, parsed
    stream, and the other seeds' bytes (for splices and transplants)."""

    data: bytes
    fields: tuple[Field, ...]
    header_end: int
    stream: Stream
    others: tuple[bytes, ...]

    @classmethod
    def of(cls, data: bytes, others: tuple[bytes, ...] = ()) -> Material:
        fields, header_end = field_layout(data)
        return cls(data, fields, header_end, unpack(data), others)


def reseal(data: bytes, header_end: int) -> bytes:
    """``data`` with the header CRC at ``header_end`` recomputed over ``data[:header_end]``."""
    head = data[:header_end]
    return head + crc32(head).to_bytes(4, "little") + data[header_end + 4 :]


def build(
    fingerprint: bytes,
    shapes: list[tuple[int, tuple[int, ...]]],
    sections: list[tuple[int, int, bytes]],
    version: int = VERSION,
    flags: int = 0,
) -> bytes:
    """A stream of any field values, order or count, with correct CRCs: ``shapes`` as
    ``(tag, dims)``, ``sections`` as ``(kind, frame, payload)``."""
    head = bytearray(MAGIC) + bytes([version & 0xFF, flags & 0xFF]) + fingerprint
    head.append(len(shapes) & 0xFF)
    for tag, dims in shapes:
        head += bytes([tag & 0xFF, len(dims) & 0xFF]) + b"".join(varint(d) for d in dims)
    head += varint(len(sections))
    for kind, frame, payload in sections:
        head += bytes([kind & 0xFF]) + varint(frame) + varint(len(payload))
        head += crc32(payload).to_bytes(4, "little")
    head += crc32(bytes(head)).to_bytes(4, "little")
    return bytes(head) + b"".join(p for _, _, p in sections)


def parts(stream: Stream) -> tuple[list[tuple[int, tuple[int, ...]]], list[tuple[int, int, bytes]]]:
    """``stream``'s shapes and sections in the form :func:`build` takes."""
    shapes = [(int(tag), tuple(dims)) for tag, dims in stream.shapes.items()]
    return shapes, [(int(s.kind), s.frame, s.payload) for s in stream.sections]


def rebuild(
    m: Material,
    shapes: list[tuple[int, tuple[int, ...]]],
    sections: list[tuple[int, int, bytes]],
    fingerprint: bytes | None = None,
) -> bytes:
    """:func:`build` with the version and flags of ``m``'s header."""
    head = m.data[len(MAGIC) : len(MAGIC) + 2]
    fp = m.stream.fingerprint if fingerprint is None else fingerprint
    return build(fp, shapes, sections, version=head[0], flags=head[1])


# --- byte-level mutators (no CRC recomputed) ---------------------------------------------------


def _position(m: Material, rng: random.Random) -> int:
    """Half the time in the header (CRC included), else anywhere."""
    end = m.header_end + 4 if rng.random() < 0.5 else len(m.data)
    return rng.randrange(end)


def truncate(m: Material, rng: random.Random, j: int) -> tuple[bytes, str]:
    n = j % len(m.data)
    return m.data[:n], f"truncated to {n} of {len(m.data)} bytes"


def bitflip(m: Material, rng: random.Random, j: int) -> tuple[bytes, str]:
    out, at = bytearray(m.data), _position(m, rng)
    bit = rng.randrange(8)
    out[at] ^= 1 << bit
    return bytes(out), f"bit {bit} of byte {at} flipped"


def multiflip(m: Material, rng: random.Random, j: int) -> tuple[bytes, str]:
    out = bytearray(m.data)
    spots = [(_position(m, rng), rng.randrange(8)) for _ in range(rng.randint(2, 16))]
    for at, bit in spots:
        out[at] ^= 1 << bit
    return bytes(out), f"{len(spots)} bits flipped at {sorted(a for a, _ in spots)}"


def substitute(m: Material, rng: random.Random, j: int) -> tuple[bytes, str]:
    out = bytearray(m.data)
    spots = sorted(_position(m, rng) for _ in range(rng.randint(1, 4)))
    for at in spots:
        out[at] = rng.randrange(256)
    return bytes(out), f"random bytes at {spots}"


def boundary(m: Material, rng: random.Random, j: int) -> tuple[bytes, str]:
    out, value = bytearray(m.data), BOUNDARY[j % len(BOUNDARY)]
    at = _position(m, rng)
    n = rng.choice((1, 1, 2, 4, 8))
    out[at : at + n] = bytes([value]) * len(out[at : at + n])
    return bytes(out), f"{n} bytes at {at} set to 0x{value:02x}"


def magic(m: Material, rng: random.Random, j: int) -> tuple[bytes, str]:
    foreign = FOREIGN_MAGIC[j % len(FOREIGN_MAGIC)]
    if rng.random() < 0.5:
        return foreign + m.data[len(MAGIC) :], f"magic replaced by {foreign!r}"
    return foreign + m.data, f"{foreign!r} prepended"


def empty(m: Material, rng: random.Random, j: int) -> tuple[bytes, str]:
    data = SMALL[j % len(SMALL)]
    return data, f"{len(data)}-byte stream {data!r}"


def random_bytes(m: Material, rng: random.Random, j: int) -> tuple[bytes, str]:
    n = rng.choice((rng.randrange(16), rng.randrange(256), rng.randrange(4 * len(m.data))))
    data = rng.randbytes(n)
    if rng.random() < 0.5:
        return MAGIC + bytes([VERSION, 0]) + data, f"magic, version and {n} random bytes"
    return data, f"{n} random bytes"


def splice(m: Material, rng: random.Random, j: int) -> tuple[bytes, str]:
    other = rng.choice((m.data, *m.others))
    a, b = rng.randrange(len(m.data) + 1), rng.randrange(len(other) + 1)
    op = rng.randrange(4)
    if op == 0:
        return m.data[:a] + other[b:], f"first {a} bytes + another stream from byte {b}"
    if op == 1:
        return m.data + other, "two streams concatenated"
    if op == 2:
        n = rng.randint(1, 64)
        return m.data[:a] + m.data[a : a + n] + m.data[a:], f"{n} bytes at {a} duplicated"
    n = rng.randint(1, 64)
    return m.data[:a] + m.data[a + n :], f"{n} bytes at {a} deleted"


# --- forging mutators (CRCs recomputed) --------------------------------------------------------


def _raw_varint(value: int, rng: random.Random) -> bytes:
    """``value`` as LEB128, sometimes with redundant zero groups (non-minimal)."""
    raw = bytearray(varint(value))
    if rng.random() < 0.2:
        raw[-1] |= 0x80
        raw += b"\x80" * rng.randrange(3) + b"\x00"
    return bytes(raw)


def _field_value(f: Field, old: bytes, rng: random.Random) -> bytes:
    if f.kind == "u8":
        choices = (0, 1, 2, 3, 4, 5, 6, 8, 9, 0x7F, 0x80, 0xFF, (old[0] + 1) & 0xFF, old[0] - 1)
        return bytes([rng.choice(choices) & 0xFF])
    if f.kind == "varint":
        value = Reader(old).varint(f.name)
        pick = rng.choice(
            (0, 1, value + 1, max(value - 1, 0), 2 * value, value // 2, 127, 128, 65535, 65536,
             rng.randrange(1 << 20), value)
        )  # fmt: skip
        if rng.random() < 0.1:
            return b"\x80" * rng.randint(5, 9) + b"\x01"  # too long a varint
        return _raw_varint(pick, rng)
    out = bytearray(old)
    if f.kind == "crc" or rng.random() < 0.5:
        out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        return bytes(out)
    return bytes([rng.choice(BOUNDARY)]) * len(out)


def _replace(m: Material, f: Field, new: bytes) -> bytes:
    """``m`` with field ``f`` replaced by ``new`` and the header CRC recomputed where the
    parser will look for it (a forged count moves it)."""
    data = m.data[: f.start] + new + m.data[f.end :]
    try:
        _, end = field_layout(data)
    except BitstreamError:  # the forged header ends early: the parser never reaches its CRC
        end = m.header_end + len(new) - (f.end - f.start)
    return reseal(data, end)


def forge_field(m: Material, rng: random.Random, j: int) -> tuple[bytes, str]:
    f = rng.choice([f for f in m.fields if f.name != "magic"])
    new = _field_value(f, m.data[f.start : f.end], rng)
    return _replace(m, f, new), f"{f.name} forged to {new.hex()} (header CRC recomputed)"


def huge(m: Material, rng: random.Random, j: int) -> tuple[bytes, str]:
    fields = [f for f in m.fields if f.kind == "varint" or f.name == "n_shapes"]
    f = fields[j % len(fields)]
    if f.kind == "u8":
        new = b"\xff"
    else:
        new = varint(HUGE[(j // len(fields)) % len(HUGE)])
    data = _replace(m, f, new)
    if rng.random() < 0.25:  # the header CRC left stale: the range checks must come first
        data = m.data[: f.start] + new + m.data[f.end :]
        return data, f"{f.name} set to {new.hex()} (header CRC not recomputed)"
    return data, f"{f.name} set to {new.hex()} (header CRC recomputed)"


def forge_shape(m: Material, rng: random.Random, j: int) -> tuple[bytes, str]:
    shapes, sections = parts(m.stream)
    dims = dict(shapes)
    c, H, W = dims[ShapeTag.INPUT]
    fc, h, w = dims[ShapeTag.FEATURES]
    op = j % 6
    if op == 0:  # consistent scaling, up to the pixel limit
        limit = max(1, int((MAX_INPUT_PIXELS / (H * W)) ** 0.5))
        k = rng.choice((2, 3, 4, 8, limit, limit))
        dims[ShapeTag.INPUT], dims[ShapeTag.FEATURES] = (c, H * k, W * k), (fc, h * k, w * k)
    elif op == 1:  # consistent shrinking
        dims[ShapeTag.INPUT] = (c, max(1, H // 2), max(1, W // 2))
        dims[ShapeTag.FEATURES] = (fc, max(1, h // 2), max(1, w // 2))
    elif op == 2:  # transposed
        dims[ShapeTag.INPUT], dims[ShapeTag.FEATURES] = (c, W, H), (fc, w, h)
    elif op == 3:  # one dimension off by a little
        tag = rng.choice((ShapeTag.INPUT, ShapeTag.FEATURES))
        d = list(dims[tag])
        d[rng.randrange(3)] += rng.choice((-1, 1, 7))
        dims[tag] = tuple(max(1, v) for v in d)
    elif op == 4:  # ranks and channels
        tag = rng.choice((ShapeTag.INPUT, ShapeTag.FEATURES))
        dims[tag] = rng.choice((dims[tag][1:], (*dims[tag], 1), (1, *dims[tag][1:])))
    else:  # any dimensions within the container's range
        tag = rng.choice((ShapeTag.INPUT, ShapeTag.FEATURES))
        dims[tag] = (dims[tag][0], rng.randint(1, 1 << 16), rng.randint(1, 1 << 16))
    new = [(t, dims[t]) for t, _ in shapes]
    return rebuild(m, new, sections), f"shapes forged to {new}"


def _mutate_bytes(p: bytes, rng: random.Random, other: bytes) -> tuple[bytes, str]:
    out = bytearray(p)
    op = rng.randrange(7) if out else 4
    if op == 0:
        for _ in range(rng.randint(1, 6)):
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        return bytes(out), "bits flipped"
    if op == 1:
        for _ in range(rng.randint(1, 4)):
            out[rng.randrange(len(out))] = rng.choice((*BOUNDARY, rng.randrange(256)))
        return bytes(out), "bytes substituted"
    if op == 2:
        n = rng.choice((rng.randrange(len(out) + 1), rng.randrange(len(out) + 1) // 4 * 4))
        return bytes(out[:n]), f"cut to {n} bytes"
    if op == 3:
        return bytes(out[len(out) // 2 :] + out[: len(out) // 2]), "halves swapped"
    if op == 4:
        tail = rng.choice((b"\xff" * 4 * rng.randint(1, 3), rng.randbytes(4 * rng.randint(1, 8))))
        return bytes(out) + tail, f"{len(tail)} bytes appended"
    if op == 5:
        return bytes(len(out)), "zeroed"
    return other, "replaced by another payload"


def forge_payload(m: Material, rng: random.Random, j: int) -> tuple[bytes, str]:
    shapes, sections = parts(m.stream)
    i = rng.randrange(len(sections))
    kind, frame, p = sections[i]
    donors = [s.payload for s in m.stream.sections] + [
        s.payload for d in m.others for s in unpack(d).sections
    ]
    other = rng.choice(donors)
    where = ""
    if kind == SectionKind.INTER and rng.random() < 0.7:
        side, string = split_prefixed(p, "motion")
        if rng.random() < 0.5:
            side, what = _mutate_bytes(side, rng, other)
            where = "motion side information "
        else:
            string, what = _mutate_bytes(string, rng, other)
            where = "P-frame rANS string "
        if rng.random() < 0.15:
            new = varint(rng.choice((0, len(side) + 1, len(side) + len(string), *HUGE[:5])))
            p, what = new + side + string, f"motion length prefix forged to {new.hex()}"
        else:
            p = join_prefixed(side, string)
    elif kind == SectionKind.HYPER_ENH and rng.random() < 0.3:
        tag, what = _mutate_bytes(p[:FINGERPRINT_BYTES], rng, other)
        p, where = tag + p[FINGERPRINT_BYTES:], "enhancement fingerprint "
    else:
        p, what = _mutate_bytes(p, rng, other)
    sections[i] = (kind, frame, p)
    name = SectionKind(kind).name.lower()
    desc = f"{name} section (frame {frame}): {where}{what}, CRCs recomputed"
    return rebuild(m, shapes, sections), desc


def reorder(m: Material, rng: random.Random, j: int) -> tuple[bytes, str]:
    shapes, sections = parts(m.stream)
    i, k = rng.randrange(len(sections)), rng.randrange(len(sections))
    op = j % 8
    if op == 0:
        sections.insert(k, sections[i])
        what = f"section {i} duplicated at {k}"
    elif op == 1:
        kind, frame, p = sections[i]
        sections.insert(k, (kind, frame + rng.choice((1, len(sections), 255)), p))
        what = f"section {i} copied under another frame at {k}"
    elif op == 2 and len(sections) > 1:
        del sections[i]
        what = f"section {i} dropped"
    elif op == 3:
        sections[i], sections[k] = sections[k], sections[i]
        what = f"sections {i} and {k} swapped"
    elif op == 4:
        sections.reverse()
        what = "sections reversed"
    elif op == 5:
        rng.shuffle(sections)
        what = "sections shuffled"
    elif op == 6:
        kind, frame, p = sections[i]
        new = rng.choice((0, frame + 1, max(frame - 1, 0), MAX_FRAME))
        sections[i] = (kind, new, p)
        what = f"section {i} moved to frame {new}"
    else:
        donor = unpack(rng.choice((m.data, *m.others))).sections
        s = rng.choice(donor)
        sections.insert(k, (int(s.kind), s.frame, s.payload))
        what = f"a {s.name} section (frame {s.frame}) of another stream inserted at {k}"
    if rng.random() < 0.3:
        fingerprint = unpack(rng.choice((m.data, *m.others))).fingerprint
        return rebuild(m, shapes, sections, fingerprint), f"{what}; fingerprint of another stream"
    return rebuild(m, shapes, sections), what


Mutator = Callable[[Material, random.Random, int], tuple[bytes, str]]

MUTATORS: dict[str, Mutator] = {
    "truncate": truncate,
    "bitflip": bitflip,
    "multiflip": multiflip,
    "substitute": substitute,
    "boundary": boundary,
    "forge-field": forge_field,
    "forge-shape": forge_shape,
    "forge-payload": forge_payload,
    "huge": huge,
    "sections": reorder,
    "magic": magic,
    "empty": empty,
    "random": random_bytes,
    "splice": splice,
}
"""Every mutator class by name; ``truncate`` is enumerated over every offset."""

FORGERS = frozenset({"forge-field", "forge-shape", "forge-payload", "huge", "sections"})
"""Mutators that recompute the CRCs they invalidate (a changed decode is undetectable)."""


def mutate(name: str, m: Material, rng: random.Random, j: int) -> tuple[bytes, str]:
    """Case ``j`` of mutator ``name`` on ``m``: the bytes and a description."""
    return MUTATORS[name](m, rng, j)
