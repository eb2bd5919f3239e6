"""The sequence format: a video is one ``.fcb`` stream whose sections carry frame indexes.

An I-frame has ``hyper`` and ``base`` sections (decodable by the intra codec alone), a P-frame
one ``inter`` section: its motion side information, length-prefixed
(:func:`codec.bitstream.join_prefixed`), then one rANS string of ``Ẑ`` and ``Ŷ``. This module
reads that structure without any model (``featcodec info`` uses it, and imports no torch).
"""

from __future__ import annotations

from featcodec.codec.bitstream import (
    FINGERPRINT_BYTES,
    MAX_INPUT_PIXELS,
    SectionKind,
    ShapeTag,
    Stream,
    split_prefixed,
)
from featcodec.codec.errors import BitstreamError

KIND_NAMES = {"I": "I-frame", "P": "P-frame"}

MOTION_SOURCES = ("dis-flow", "dis-affine", "flow", "affine", "none")
"""Where a P-frame's motion comes from: OpenCV DIS flow between the input frames (sent as a
coarse flow field, or reduced to a robust global affine), a dense flow or affine the caller
knows (metadata), or no motion (identity affine, the no-motion baseline). Plain strings, so
that the command line offers them without importing torch."""

KNOWN_MOTION_SOURCES = ("flow", "affine")
"""The sources of :data:`MOTION_SOURCES` whose motion the caller supplies (metadata, which
frames read from files do not carry)."""


def frame_kinds(stream: Stream) -> list[str]:
    """ "I" or "P" for each frame of a sequence stream (frames are numbered 0..T−1), from the
    kinds of its sections, corrupt ones included (their header records are intact)."""
    present: dict[int, set[SectionKind]] = {t: set(k) for t, k in stream.corrupt.items()}
    for s in stream.sections:
        present.setdefault(s.frame, set()).add(s.kind)
    kinds = []
    for t in range(max(present, default=-1) + 1):
        have = present.get(t, set())
        if have & {SectionKind.HYPER, SectionKind.BASE}:
            kinds.append("I")
        elif SectionKind.INTER in have:
            kinds.append("P")
        else:
            raise BitstreamError(f"frame {t} is missing from the sequence")
    return kinds


def motion_bytes(stream: Stream) -> list[int]:
    """Bytes of motion side information of each P-frame of ``stream``, in stream order."""
    inter = [s.payload for s in stream.sections if s.kind == SectionKind.INTER]
    return [len(split_prefixed(payload, "motion")[0]) for payload in inter]


def check_rans_payload(kind: SectionKind, payload: bytes) -> None:
    """:class:`BitstreamError` naming the section unless ``payload`` can be a rANS string
    (whole 32-bit words, at least the 8-byte final state)."""
    if len(payload) < 8 or len(payload) % 4:
        raise BitstreamError(
            f"{kind.name.lower()} section of {len(payload)} bytes is not rANS data"
        )


def check_layout(stream: Stream) -> None:
    """What can be checked of a stream without its model (``featcodec info`` checks it too;
    a decoder checks more): the shapes (ranks, an RGB input within
    :data:`~codec.bitstream.MAX_INPUT_PIXELS`), every payload that must be a rANS string,
    and, for a sequence, that no frame is missing. :class:`BitstreamError` names the problem."""
    for tag in (ShapeTag.INPUT, ShapeTag.FEATURES):
        dims = stream.shape(tag)
        if len(dims) != 3:
            raise BitstreamError(f"{tag.name.lower()} shape {dims} should have 3 dimensions")
    c, h, w = stream.shape(ShapeTag.INPUT)
    if c != 3:
        raise BitstreamError(f"input shape {(c, h, w)} is not an RGB image")
    if h * w > MAX_INPUT_PIXELS:
        raise BitstreamError(f"input size {h}×{w} is over the limit of {MAX_INPUT_PIXELS:,} pixels")
    for s in stream.sections:
        where = f" (frame {s.frame})" if s.kind == SectionKind.INTER or s.frame else ""
        try:
            if s.kind == SectionKind.HYPER_ENH:
                if len(s.payload) < FINGERPRINT_BYTES:
                    raise BitstreamError("hyper-enh section shorter than its fingerprint")
                check_rans_payload(s.kind, s.payload[FINGERPRINT_BYTES:])
            elif s.kind == SectionKind.INTER:
                check_rans_payload(s.kind, split_prefixed(s.payload, "motion")[1])
            else:
                check_rans_payload(s.kind, s.payload)
        except BitstreamError as e:
            raise BitstreamError(f"{e}{where}") from None
    if any(s.frame for s in stream.sections) or any(
        s.kind == SectionKind.INTER for s in stream.sections
    ):
        frame_kinds(stream)
