"""``featcodec encode INPUTS -c CKPT -o OUT``: images or feature tensors into ``.fcb`` streams
(an image codec), or folders of frames and video files into one stream each (a video codec).

Every input is read and coded before anything is written; outputs are written atomically and
existing ones only replaced with ``--overwrite``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from featcodec.cli.common import load_codec, model_args, progress
from featcodec.codec.errors import InputError
from featcodec.codec.sequence import KNOWN_MOTION_SOURCES, MOTION_SOURCES


def add_parser(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("encode", help="encode images or feature tensors into .fcb streams")
    e.add_argument("inputs", nargs="+", help="image files, .pt/.npy feature tensors, or folders")
    model_args(e)
    e.add_argument("-o", "--output", required=True, help="folder for the .fcb files")
    e.add_argument(
        "--layers",
        choices=["all", "base"],
        default="all",
        help="all: base and enhancement layers when the codec has both (images only)",
    )
    e.add_argument(
        "--intra-period",
        type=int,
        default=8,
        help="video codecs: an I-frame every this many frames (default 8)",
    )
    e.add_argument(
        "--motion",
        choices=[s for s in MOTION_SOURCES if s not in KNOWN_MOTION_SOURCES],
        default="dis-flow",
        help="video codecs: motion side information estimated at the edge with OpenCV DIS "
        "(a coarse flow field, or a robust global affine), or none",
    )
    e.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for p in args.inputs:  # cheap checks first: nothing is loaded for a missing input
        if not Path(p).exists():
            raise InputError(f"no such file or folder: {p}")
    codec = load_codec(args)

    from featcodec.codec.bitstream import bits_per_pixel
    from featcodec.codec.facade import Codec
    from featcodec.codec.files import IMAGE_SUFFIXES, TENSOR_SUFFIXES, atomic_write
    from featcodec.inputs import collect, load_input, refuse_existing

    if not isinstance(codec, Codec):
        return _encode_sequences(args, codec)
    files = collect(args.inputs, IMAGE_SUFFIXES | TENSOR_SUFFIXES, "images or tensors")
    out = Path(args.output)
    targets = [out / f"{f.stem}.fcb" for f in files]
    refuse_existing(targets, args.overwrite)
    streams: list[bytes] = []
    rates: list[float] = []
    for f in progress(files, "encode"):
        kind, tensor = load_input(f)
        try:
            if kind == "image":
                data = codec.encode(tensor, args.layers)
            else:
                data = codec.encode_features(tensor)
        except InputError as e:
            raise InputError(f"{f}: {e}") from None
        streams.append(data)
        size = (
            tensor.shape[-2:] if kind == "image" else [s * codec.stride for s in tensor.shape[-2:]]
        )
        rates.append(bits_per_pixel(len(data), tuple(size)))
    for target, data in zip(targets, streams, strict=True):
        atomic_write(target, data)
    total = sum(len(s) for s in streams)
    print(
        f"wrote {len(streams)} stream(s) to {out}: {total:,} bytes, "
        f"{sum(rates) / len(rates):.4f} bits per input pixel on average"
    )
    return 0


def _encode_sequences(args: argparse.Namespace, codec: Any) -> int:
    """With a video codec: one stream per folder of frames or video file."""
    from featcodec.codec.bitstream import bits_per_pixel, unpack
    from featcodec.codec.files import atomic_write
    from featcodec.codec.sequence import frame_kinds
    from featcodec.inputs import load_frames, refuse_existing

    if args.layers != "all":
        raise InputError("--layers applies to scalable image codecs, not to video codecs")
    sources = [Path(p) for p in args.inputs]
    out = Path(args.output)
    targets = [out / f"{p.stem if p.is_file() else p.name}.fcb" for p in sources]
    if len(set(targets)) != len(targets):
        raise InputError("two inputs would write the same stream name")
    refuse_existing(targets, args.overwrite)
    sequences = [load_frames(p) for p in sources]  # every input read before anything is coded
    streams = []
    for source, frames in zip(sources, sequences, strict=True):
        bar = progress(range(len(frames)), f"encode {source.name}")
        try:
            data = codec.encode_sequence(
                frames, args.intra_period, args.motion, progress=lambda _t, bar=bar: bar.update(1)
            )
        except InputError as e:
            raise InputError(f"{source}: {e}") from None
        finally:
            bar.close()
        streams.append(data)
    for target, data, frames in zip(targets, streams, sequences, strict=True):
        atomic_write(target, data)
        kinds = frame_kinds(unpack(data))
        bpp = bits_per_pixel(len(data), tuple(frames.shape[-2:])) / len(frames)
        print(
            f"{target}: {len(frames)} frames ({kinds.count('I')} I, {kinds.count('P')} P), "
            f"{len(data):,} bytes, {bpp:.4f} bits per input pixel per frame"
        )
    return 0
