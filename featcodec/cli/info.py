"""``featcodec info STREAMS [--json]``: the header, shapes, sections and rate of ``.fcb``
streams, and per-frame figures of video streams.

It reads streams without any model, so it imports neither torch nor compressai: it answers
in a fraction of a second.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:
    i = sub.add_parser("info", help="print the header and section sizes of .fcb streams")
    i.add_argument("streams", nargs="+")
    i.add_argument("--json", action="store_true", help="print JSON instead of text")
    i.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from featcodec.codec import bitstream
    from featcodec.codec.errors import BitstreamError
    from featcodec.codec.files import STREAM_SUFFIXES
    from featcodec.codec.sequence import check_layout
    from featcodec.inputs import collect

    reports = []
    for f in collect(args.streams, STREAM_SUFFIXES, "streams"):
        s = bitstream.read(f)
        try:
            check_layout(s)  # what a decoder would refuse without its model, refused here
        except BitstreamError as e:
            raise BitstreamError(f"{f}: {e}") from None
        shapes = {tag.name.lower(): list(dims) for tag, dims in s.shapes.items()}
        reports.append(
            {
                "file": str(f),
                "bytes": s.total_bytes,
                "version": s.version,
                "coding": _coding(s.mode),
                "fingerprint": s.fingerprint.hex(),
                "shapes": shapes,
                "header_bytes": s.header_bytes,
                "sections": [
                    {"kind": x.name, "frame": x.frame, "bytes": len(x.payload)} for x in s.sections
                ],
                "layers": s.layer_bytes(),
                "bpp": bitstream.bits_per_pixel(s.total_bytes, tuple(shapes.get("input", [1, 1]))),
                **_frames_summary(s),
            }
        )
    if args.json:
        print(json.dumps(reports, indent=2))
        return 0
    for r in reports:
        print(_text(r))
    return 0


def _coding(mode: Any) -> str:
    params = "device-exact" if mode.exact else "float"
    checked = "strings checked" if mode.checked else "no check (decode on the device that wrote it)"
    return f"{params} entropy parameters, {checked}"


def _text(r: dict[str, Any]) -> str:
    lines = [f"{r['file']}: {r['bytes']:,} bytes, featcodec stream v{r['version']}"]
    lines.append(f"  {'coding':<12} {r['coding']}")
    lines.append(f"  {'fingerprint':<12} {r['fingerprint']}")
    for name, dims in r["shapes"].items():
        lines.append(f"  {name:<12} {'×'.join(map(str, dims))}")
    lines.append(f"  {'header':<12} {r['header_bytes']} bytes")
    lines.append(f"  {'section':<12} {'frame':>5} {'bytes':>9}")
    for sec in r["sections"]:
        lines.append(f"  {sec['kind']:<12} {sec['frame']:>5} {sec['bytes']:>9,}")
    layers = r["layers"]
    cut = layers["header"] + layers["base"]
    lines.append(
        f"  {'base layer':<12} {layers['base']:>15,} bytes (a cut at byte {cut:,} keeps it)"
    )
    if layers["enhancement"]:
        lines.append(f"  {'enhancement':<12} {layers['enhancement']:>15,} bytes")
    lines.append(f"  {'rate':<12} {r['bpp']:.4f} bits per input pixel (whole file)")
    if "frames" in r:
        f = r["frames"]
        lines.append(
            f"  {'frames':<12} {f['count']} ({f['I']} I, {f['P']} P): I-frames "
            f"{f['I_bytes']:.1f} bytes, P-frames {f['P_bytes']:.1f} bytes on average "
            f"({f['motion_bytes']:.1f} of them motion side information)"
        )
    return "\n".join(lines)


def _frames_summary(stream: Any) -> dict[str, Any]:
    """Frame counts and mean bytes per frame type of a sequence stream (else nothing)."""
    from featcodec.codec.sequence import frame_kinds, motion_bytes

    motion = motion_bytes(stream)
    if not motion:
        return {}
    kinds = frame_kinds(stream)
    sizes = stream.frame_bytes()

    def mean(kind: str) -> float:
        found = [sizes.get(t, 0) for t, k in enumerate(kinds) if k == kind]
        return sum(found) / max(1, len(found))

    return {
        "frames": {
            "count": len(kinds),
            "I": kinds.count("I"),
            "P": kinds.count("P"),
            "I_bytes": mean("I"),
            "P_bytes": mean("P"),
            "motion_bytes": sum(motion) / len(motion),
        }
    }
