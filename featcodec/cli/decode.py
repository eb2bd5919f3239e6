"""``featcodec decode STREAMS -c CKPT -o OUT``: ``.fcb`` streams into features and task
predictions.

An image stream gives ``<name>.pt`` (the decoded features), its task's prediction in
``predictions.json`` (dense outputs also as ``<name>.output.pt``), the enhancement layer's
output when the stream has one, and with ``--preview`` the base layer's preview image. A
video stream gives a folder ``<name>/`` with ``frame_00000.pt``, ... and ``predictions.json``
(each frame's kind, bytes and prediction); with ``--resume`` a corrupt frame does not stop
the run: it and the P-frames that depend on it are listed as lost and decoding resumes at the
next I-frame (exit code 3 then). Every stream is validated before anything is written.

With ``--stitch STITCH.ckpt`` (a stitching layer ``E`` trained from codec A's network into
network B's back end, :mod:`training.stitch_module`) the streams of A's codec are served to B:
``F̂_A ─E─▶ B.back``, and ``predictions.json`` holds B's predictions (the ``.pt`` files stay
A's decoded tensors). The stitch must have been trained on this very codec (or its task
network): another pairing is refused before anything is written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from featcodec.cli.common import load_codec, model_args, progress
from featcodec.codec.errors import BitstreamError, InputError

EXIT_FRAMES_LOST = 3


def add_parser(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("decode", help="decode .fcb streams into features and task predictions")
    d.add_argument("streams", nargs="+", help=".fcb files or folders")
    model_args(d)
    d.add_argument("-o", "--output", required=True, help="folder for .pt features + predictions")
    d.add_argument(
        "--layers",
        choices=["all", "base"],
        default="all",
        help="base: the base layer only (also from streams cut after it); all: with the "
        "enhancement layer when the stream has one (default)",
    )
    d.add_argument(
        "--preview", action="store_true", help="also write the base layer's preview image (PNG)"
    )
    d.add_argument(
        "--resume",
        action="store_true",
        help="video streams: skip a corrupt frame and the P-frames depending on it, resume at "
        "the next I-frame (exit code 3 when frames were lost)",
    )
    d.add_argument(
        "--stitch",
        metavar="STITCH.ckpt",
        help="serve the streams to another network B: its back end through the stitching layer "
        "of this checkpoint (trained on this codec's network: featcodec train --config "
        "configs/stitch.yaml); predictions.json holds B's predictions",
    )
    d.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from featcodec.codec import bitstream
    from featcodec.codec.files import STREAM_SUFFIXES, atomic_path, atomic_write
    from featcodec.inputs import collect, refuse_existing

    files = collect(args.streams, STREAM_SUFFIXES, "streams")  # before the model is loaded
    codec = load_codec(args)

    import torch

    from featcodec.codec.facade import Codec
    from featcodec.models.tasks import task_of

    stitched = _stitched(args, codec) if args.stitch else None
    if not isinstance(codec, Codec):
        return _decode_sequences(args, codec)
    out = Path(args.output)
    targets = [out / f"{f.stem}.pt" for f in files]
    predictions_path = out / "predictions.json"
    streams = []
    for f in files:  # validate every stream before writing anything
        stream = bitstream.read(f, args.layers)
        try:
            codec.check_stream(stream)
            if args.layers == "all" and (codec.enhancement is not None or stream.cut):
                codec.check_enhancement(stream)
        except BitstreamError as e:
            raise BitstreamError(f"{f}: {e}") from None
        streams.append(stream)
    if args.preview and codec.base.g_r is None:
        raise InputError(f"{args.checkpoint}: this codec has no preview synthesis (g_r)")
    second = enhancement_task(codec)  # the enhancement layer's task, if it targets one
    suffix = ".png" if second is None else second.map_suffix
    extra = [out / f"{f.stem}.enhanced{suffix}" for f in files] if args.layers == "all" else []
    extra = extra if codec.enhancement is not None else []
    task = task_of(codec.arch) if stitched is None else stitched.task
    outputs = [out / f"{f.stem}.output.pt" for f in files] if task.dense else []
    previews = [out / f"{f.stem}.preview.png" for f in files] if args.preview else []
    refuse_existing([*targets, *extra, *previews, *outputs, predictions_path], args.overwrite)
    predictions: dict[str, Any] = {}
    for i, (f, stream, target) in enumerate(
        progress(list(zip(files, streams, targets, strict=True)), "decode")
    ):
        try:
            decoded = codec.decode(stream, args.layers)
        except BitstreamError as e:
            raise BitstreamError(f"{f}: {e}") from None
        with atomic_path(target) as tmp:
            torch.save(decoded.features[0].cpu(), tmp)
        if decoded.enhanced is not None:
            enhanced = decoded.enhanced[0]
            _save_output(enhanced if second is None else second.output_map(enhanced), extra[i])
        if previews:
            _save_output(decoded.preview[0], previews[i])
        output = decoded.output if stitched is None else stitched(decoded.features)
        if outputs:
            with atomic_path(outputs[i]) as tmp:
                torch.save(output[0].cpu(), tmp)
        predictions[f.stem] = task.summary(output)
        if second is not None and decoded.enhanced is not None:  # the second task's, too
            predictions[f.stem]["enhanced"] = second.summary(decoded.enhanced)
    atomic_write(predictions_path, json.dumps(predictions, indent=2))
    print(f"wrote {len(files)} feature tensor(s) and {predictions_path}")
    return 0


def _stitched(args: argparse.Namespace, codec: Any) -> Any:
    """The stitching layer and B's back end of ``--stitch``, checked against the codec: image
    codecs only, base layer only, trained on this codec (one-line errors)."""
    from featcodec.codec.facade import Codec

    if not isinstance(codec, Codec):
        raise InputError("--stitch serves image streams; it does not apply to video codecs")
    if codec.enhancement is not None and args.layers != "base":
        raise InputError(
            "--stitch runs B on the base layer; this codec has an enhancement layer: "
            "add --layers base"
        )
    from featcodec.training.stitch_module import load_stitch

    stitched = load_stitch(args.stitch, args.device)
    stitched.check_codec(codec, args.checkpoint)
    return stitched


def enhancement_task(codec: Any) -> Any:
    """The task an image codec's enhancement layer targets (``None``: the image itself)."""
    from featcodec.models.tasks import get_task

    target = codec.enhancement.target if codec.enhancement is not None else "reconstruction"
    return None if target == "reconstruction" else get_task(target)


def _save_output(t: Any, path: Path) -> None:
    """An image ``(3, H, W)`` in [0, 1] or a class mask ``(1, H, W)`` as PNG; any other tensor
    as ``.pt`` beside it."""
    import torch

    from featcodec.codec.files import atomic_path, atomic_write
    from featcodec.inputs import to_png

    if t.shape[0] == 3:
        atomic_write(path, to_png(t))
    elif not t.is_floating_point() and path.suffix == ".png":
        atomic_write(path, to_png(t.to(torch.uint8)))
    else:
        with atomic_path(path.with_suffix(".pt")) as tmp:
            torch.save(t.cpu(), tmp)


def _decode_sequences(args: argparse.Namespace, codec: Any) -> int:
    """With a video codec: every frame of each stream."""
    import torch

    from featcodec.codec import bitstream
    from featcodec.codec.files import STREAM_SUFFIXES, atomic_path, atomic_write
    from featcodec.inputs import collect, refuse_existing
    from featcodec.models.tasks import task_of

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
                    **task.summary(frame.output),
                }
            )
        lost += len(sequence.errors)
        atomic_write(folder / "predictions.json", json.dumps({"frames": frames}, indent=2))
        print(f"{folder}: {len(frames) - len(sequence.errors)} of {len(frames)} frames decoded")
    return EXIT_FRAMES_LOST if lost else 0
