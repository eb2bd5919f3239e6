"""``featcodec encode/decode`` with a video codec checkpoint: sequences of frames.

featcodec encode -c pframe.ckpt clip_frames/ movie.mp4 -o streams/ [--intra-period 8]
                 [--motion dis-flow|dis-affine|none]
featcodec decode -c pframe.ckpt streams/clip_frames.fcb -o decoded/ [--resume]

A folder of frames (natural order) or a video file becomes one ``.fcb`` stream; decoding
writes, per stream, a folder ``<stem>/`` with ``frame_00000.pt``, ... (the decoded features)
and ``predictions.json`` (each frame's kind, bytes and task prediction). With ``--resume`` a
corrupt frame does not stop the run: it and the P-frames that depend on it are listed under
``lost`` and decoding resumes at the next I-frame (exit code 3 then).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

EXIT_FRAMES_LOST = 3


def add_arguments(encode: argparse.ArgumentParser, decode: argparse.ArgumentParser) -> None:
    """Options that only apply to video checkpoints."""
    encode.add_argument(
        "--intra-period",
        type=int,
        default=8,
        help="video codecs: an I-frame every this many frames (default 8)",
    )
    encode.add_argument(
        "--motion",
        choices=["dis-flow", "dis-affine", "none"],
        default="dis-flow",
        help="video codecs: motion side information estimated at the edge with OpenCV DIS "
        "(a coarse flow field, or a robust global affine), or none",
    )
    decode.add_argument(
        "--resume",
        action="store_true",
        help="video streams: skip a corrupt frame and the P-frames depending on it, resume at "
        "the next I-frame (exit code 3 when frames were lost)",
    )


def encode(args: argparse.Namespace, codec: Any, progress: Any) -> int:
    """``featcodec encode`` with a video codec: one stream per folder of frames or video."""
    from featcodec.codec.bitstream import unpack
    from featcodec.codec.errors import InputError
    from featcodec.codec.facade import bits_per_pixel
    from featcodec.codec.files import atomic_write
    from featcodec.codec.video import frame_kinds
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


def decode(args: argparse.Namespace, codec: Any, prediction: Any) -> int:
    """``featcodec decode`` with a video codec: every frame of each stream."""
    import sys

    import torch

    from featcodec.codec import bitstream
    from featcodec.codec.errors import BitstreamError, InputError
    from featcodec.codec.files import atomic_path, atomic_write
    from featcodec.inputs import STREAM_SUFFIXES, collect, refuse_existing
    from featcodec.models.heads import task_of

    if args.layers != "all" or args.preview:
        raise InputError("--layers and --preview apply to image codecs, not to video codecs")
    files = collect(args.streams, STREAM_SUFFIXES, "streams")
    out = Path(args.output)
    folders = [out / f.stem for f in files]
    refuse_existing(folders, args.overwrite)
    streams = []
    for f in files:  # validate every stream before decoding or writing anything
        stream = bitstream.read(f, corrupt="mark")  # a corrupt frame is named when decoded
        try:
            codec.check_stream(stream)
        except BitstreamError as e:
            raise BitstreamError(f"{f}: {e}") from None
        streams.append(stream)
    decoded = []
    for f, stream in zip(files, streams, strict=True):
        try:
            decoded.append(codec.decode_sequence(stream, "resume" if args.resume else "raise"))
        except BitstreamError as e:
            raise BitstreamError(f"{f}: {e}") from None
    task = task_of(codec.arch["intra"])
    lost = 0
    for folder, sequence in zip(folders, decoded, strict=True):
        folder.mkdir(parents=True, exist_ok=True)
        frames = []
        for t, frame in enumerate(sequence.frames):
            if frame is None:
                frames.append({"frame": t, "lost": sequence.errors[t]})
                print(f"featcodec: warning: {sequence.errors[t]}", file=sys.stderr)
                continue
            with atomic_path(folder / f"frame_{t:05d}.pt") as tmp:
                torch.save(frame.features[0].cpu(), tmp)
            frames.append(
                {
                    "frame": t,
                    "kind": frame.kind,
                    "bytes": frame.bytes,
                    "motion_bytes": frame.motion_bytes,
                    **prediction(task, frame.output),
                }
            )
        lost += len(sequence.errors)
        atomic_write(folder / "predictions.json", json.dumps({"frames": frames}, indent=2))
        print(f"{folder}: {len(frames) - len(sequence.errors)} of {len(frames)} frames decoded")
    return EXIT_FRAMES_LOST if lost else 0
