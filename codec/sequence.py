"""The sequence format: a video is one ``.fcb`` stream whose sections carry frame indexes.

An I-frame has ``hyper`` and ``base`` sections (decodable by the intra codec alone), a P-frame
one ``inter`` section: its motion side information, length-prefixed
(:func:`codec.bitstream.join_prefixed`), then one rANS string of ``Ẑ`` and ``Ŷ``. This module
reads that structure without any model (``featcodec info`` uses it, and imports no torch).
"""

from __future__ import annotations

from featcodec.codec.bitstream import SectionKind, Stream, split_prefixed
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
