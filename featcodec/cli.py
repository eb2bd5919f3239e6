"""The ``featcodec`` console command: the one place that wires every package together.

    featcodec train  --config configs/quickstart.yaml [--model.lmbda 0.5 ...]
    featcodec encode IMAGES|TENSORS|FOLDERS -c CKPT -o OUT
    featcodec decode STREAMS|FOLDERS -c CKPT -o OUT
    featcodec info   STREAMS
    featcodec eval   rd RUN_DIR|CKPT ... [--anchors x265-12bit jpeg zstd] -o rd.json
    featcodec eval   bd rd.json --anchor x265-12bit
    featcodec plot   rd rd.json [more.json ...] -o rd.png [--anchor x265-12bit]
    featcodec demo   [--out DIR] [--quick]
    featcodec bench  entropy|motion [--threads N]

Errors in what the user supplied are reported as one line on stderr with exit code 1; no
output file is left half-written, and existing outputs are only replaced with --overwrite.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from featcodec import video
from featcodec.codec.errors import FeatcodecError, InputError
from featcodec.evaluate import add_parsers as add_eval_parsers


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="featcodec", description="Learned codec for the feature tensors of split networks."
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser(
        "train",
        help="train a task network or a codec from a YAML config (LightningCLI)",
        add_help=False,
    )
    t.add_argument("args", nargs=argparse.REMAINDER)
    t.set_defaults(func=_train)

    e = sub.add_parser("encode", help="encode images or feature tensors into .fcb streams")
    e.add_argument("inputs", nargs="+", help="image files, .pt/.npy feature tensors, or folders")
    _model_args(e)
    e.add_argument("-o", "--output", required=True, help="folder for the .fcb files")
    e.add_argument(
        "--layers",
        choices=["all", "base"],
        default="all",
        help="all: base and enhancement layers when the codec has both (images only)",
    )
    e.set_defaults(func=_encode)

    d = sub.add_parser("decode", help="decode .fcb streams into features and task predictions")
    d.add_argument("streams", nargs="+", help=".fcb files or folders")
    _model_args(d)
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
    d.set_defaults(func=_decode)
    video.add_arguments(e, d)

    i = sub.add_parser("info", help="print the header and section sizes of .fcb streams")
    i.add_argument("streams", nargs="+")
    i.add_argument("--json", action="store_true", help="print JSON instead of text")
    i.set_defaults(func=_info)

    add_eval_parsers(sub)

    m = sub.add_parser("demo", help="train and measure the whole pipeline on synthetic scenes")
    m.add_argument("--out", help="run folder (default: runs/demo-<date>-<time>)")
    m.add_argument("--quick", action="store_true", help="a tiny run that takes seconds")
    m.add_argument("--threads", type=int, help="torch CPU threads")
    m.add_argument("--lambdas", type=float, nargs="+", help="λ values of the codecs")
    m.set_defaults(func=_demo)

    b = sub.add_parser("bench", help="benchmarks against a peer, measured in the same run")
    b_sub = b.add_subparsers(dest="which", required=True, metavar="WHICH")
    be = b_sub.add_parser("entropy", help="entropy coding: featcodec vs compressai")
    be.add_argument("--shape", type=int, nargs=3, default=[256, 56, 56], metavar=("C", "H", "W"))
    be.add_argument("--repeat", type=int, default=5)
    be.add_argument("--threads", type=int, default=1)
    be.add_argument("--out", default="runs/bench/entropy.json", help="JSON results file")
    be.set_defaults(func=_bench)
    bm = b_sub.add_parser("motion", help="warp throughput vs grid_sample and a tensor copy")
    bm.add_argument("--batch", type=int, default=8, help="tensors per warp call")
    bm.add_argument("--channels", type=int, default=256)
    bm.add_argument("--size", type=int, default=56, help="tensors are size × size")
    bm.add_argument("--repeat", type=int, default=5)
    bm.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    bm.add_argument(
        "--devices", nargs="+", default=["cpu", "cuda"], help="CUDA is skipped when absent"
    )
    bm.add_argument("--frame-size", type=int, default=224, help="P-frame rows: frame px")
    bm.add_argument("--out", default="runs/bench/motion.json", help="JSON results file")
    bm.set_defaults(func=_bench)
    return p


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--checkpoint", required=True, help="codec checkpoint (.ckpt)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")


def _load_codec(args: argparse.Namespace) -> Any:
    """The image codec (``Codec``) or video codec (``VideoCodec``) of ``--checkpoint``, read
    once, on ``--device``."""
    import torch

    from featcodec.codec.facade import Codec, load_checkpoint, rebuild

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {args.device} requested but CUDA is not available")
    ckpt = load_checkpoint(args.checkpoint, kind=("codec", "video"))
    build = Codec.build
    if ckpt["featcodec"]["kind"] == "video":  # imported only here: it brings OpenCV
        from featcodec.codec.video import VideoCodec

        build = VideoCodec.build
    return rebuild(args.checkpoint, ckpt, build).to(args.device)


def _progress(items: list[Any], desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="file", disable=None, leave=False)


def _train(args: argparse.Namespace) -> int:
    from featcodec.training.cli import train

    train(args.args)
    return 0


def _encode(args: argparse.Namespace) -> int:
    from featcodec.codec.facade import Codec, bits_per_pixel
    from featcodec.codec.files import atomic_write
    from featcodec.inputs import (
        IMAGE_SUFFIXES,
        TENSOR_SUFFIXES,
        collect,
        load_input,
        refuse_existing,
    )

    codec = _load_codec(args)
    if not isinstance(codec, Codec):
        return video.encode(args, codec, _progress)
    files = collect(args.inputs, IMAGE_SUFFIXES | TENSOR_SUFFIXES, "images or tensors")
    out = Path(args.output)
    targets = [out / f"{f.stem}.fcb" for f in files]
    refuse_existing(targets, args.overwrite)
    streams: list[bytes] = []
    rates: list[float] = []
    for f in _progress(files, "encode"):
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


def _decode(args: argparse.Namespace) -> int:
    import torch

    from featcodec.codec import bitstream
    from featcodec.codec.errors import BitstreamError
    from featcodec.codec.facade import Codec
    from featcodec.codec.files import atomic_path, atomic_write
    from featcodec.inputs import STREAM_SUFFIXES, collect, refuse_existing
    from featcodec.models.heads import task_of

    codec = _load_codec(args)
    if not isinstance(codec, Codec):
        return video.decode(args, codec, _prediction)
    files = collect(args.streams, STREAM_SUFFIXES, "streams")
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
    target_kind = codec.enhancement.target if codec.enhancement is not None else None
    suffix = ".pt" if target_kind == "depth" else ".png"
    extra = [out / f"{f.stem}.enhanced{suffix}" for f in files] if args.layers == "all" else []
    extra = extra if codec.enhancement is not None else []
    task = task_of(codec.arch)
    dense = task in ("segmentation", "depth")
    outputs = [out / f"{f.stem}.output.pt" for f in files] if dense else []
    previews = [out / f"{f.stem}.preview.png" for f in files] if args.preview else []
    refuse_existing([*targets, *extra, *previews, *outputs, predictions_path], args.overwrite)
    predictions: dict[str, Any] = {}
    for i, (f, stream, target) in enumerate(
        _progress(list(zip(files, streams, targets, strict=True)), "decode")
    ):
        decoded = codec.decode(stream, args.layers)
        with atomic_path(target) as tmp:
            torch.save(decoded.features[0].cpu(), tmp)
        if decoded.enhanced is not None:
            enhanced = decoded.enhanced[0]
            if target_kind == "segmentation":  # class logits → a mask of class indices
                enhanced = enhanced.argmax(0, keepdim=True)
            _save_output(enhanced, extra[i])
        if previews:
            _save_output(decoded.preview[0], previews[i])
        if outputs:
            with atomic_path(outputs[i]) as tmp:
                torch.save(decoded.output[0].cpu(), tmp)
        predictions[f.stem] = _prediction(task, decoded.output)
    atomic_write(predictions_path, json.dumps(predictions, indent=2))
    print(f"wrote {len(files)} feature tensor(s) and {predictions_path}")
    return 0


def _prediction(task: str, output: Any) -> dict[str, Any]:
    """What ``predictions.json`` records of one decoded task output (batch of 1)."""
    import torch

    if task == "classification":
        probs = torch.softmax(output[0].float(), dim=0).cpu()
        return {
            "class": int(probs.argmax()),
            "probability": float(probs.max()),
            "probabilities": [round(float(p), 6) for p in probs],
        }
    if task == "segmentation":
        classes, counts = output[0].argmax(0).unique(return_counts=True)
        return {"pixels_per_class": {int(c): int(n) for c, n in zip(classes, counts, strict=True)}}
    if task == "depth":
        d = output[0].float()
        return {
            "depth_min": float(d.min()),
            "depth_mean": float(d.mean()),
            "depth_max": float(d.max()),
        }
    if task == "keypoints":
        return {"keypoints": [[round(float(v), 3) for v in p] for p in output[0]]}
    if task == "detection":
        det = output[0]
        return {
            "boxes": [[round(float(v), 2) for v in b] for b in det["boxes"]],
            "classes": [int(c) - 1 for c in det["labels"]],  # torchvision's label = class + 1
            "scores": [round(float(v), 4) for v in det["scores"]],
        }
    raise ValueError(f"unknown task {task!r}")


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


def _info(args: argparse.Namespace) -> int:
    from featcodec.codec import bitstream
    from featcodec.codec.facade import bits_per_pixel
    from featcodec.inputs import STREAM_SUFFIXES, collect

    reports = []
    for f in collect(args.streams, STREAM_SUFFIXES, "streams"):
        s = bitstream.read(f)
        shapes = {tag.name.lower(): list(dims) for tag, dims in s.shapes.items()}
        reports.append(
            {
                "file": str(f),
                "bytes": s.total_bytes,
                "version": s.version,
                "fingerprint": s.fingerprint.hex(),
                "shapes": shapes,
                "header_bytes": s.header_bytes,
                "sections": [
                    {"kind": x.name, "frame": x.frame, "bytes": len(x.payload)} for x in s.sections
                ],
                "layers": s.layer_bytes(),
                "bpp": bits_per_pixel(s.total_bytes, tuple(shapes.get("input", [1, 1]))),
                **_frames_summary(s),
            }
        )
    if args.json:
        print(json.dumps(reports, indent=2))
        return 0
    for r in reports:
        print(f"{r['file']}: {r['bytes']:,} bytes, featcodec stream v{r['version']}")
        print(f"  {'fingerprint':<12} {r['fingerprint']}")
        for name, dims in r["shapes"].items():
            print(f"  {name:<12} {'×'.join(map(str, dims))}")
        print(f"  {'header':<12} {r['header_bytes']} bytes")
        print(f"  {'section':<12} {'frame':>5} {'bytes':>9}")
        for sec in r["sections"]:
            print(f"  {sec['kind']:<12} {sec['frame']:>5} {sec['bytes']:>9,}")
        layers = r["layers"]
        cut = layers["header"] + layers["base"]
        print(f"  {'base layer':<12} {layers['base']:>15,} bytes (a cut at byte {cut:,} keeps it)")
        if layers["enhancement"]:
            print(f"  {'enhancement':<12} {layers['enhancement']:>15,} bytes")
        print(f"  {'rate':<12} {r['bpp']:.4f} bits per input pixel (whole file)")
        if "frames" in r:
            f = r["frames"]
            print(
                f"  {'frames':<12} {f['count']} ({f['I']} I, {f['P']} P): I-frames "
                f"{f['I_bytes']:.1f} bytes, P-frames {f['P_bytes']:.1f} bytes on average "
                f"({f['motion_bytes']:.1f} of them motion side information)"
            )
    return 0


def _frames_summary(stream: Any) -> dict[str, Any]:
    """Frame counts and mean bytes per frame type of a sequence stream (else nothing)."""
    from featcodec.codec.bitstream import SectionKind, split_prefixed
    from featcodec.codec.video import frame_kinds

    inter = [x.payload for x in stream.sections if x.kind == SectionKind.INTER]
    if not inter:
        return {}
    kinds = frame_kinds(stream)
    sizes = stream.frame_bytes()
    motion = [len(split_prefixed(payload, "motion")[0]) for payload in inter]

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


def _demo(args: argparse.Namespace) -> int:
    import logging

    from featcodec.eval.demo import DemoConfig, format_bd_rates, format_table, run_demo

    # the demo's own progress lines say what runs; Lightning's device and tip lines are noise
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)

    out = args.out or time.strftime("runs/demo-%Y%m%d-%H%M%S")
    cfg = DemoConfig.quick(out) if args.quick else DemoConfig(out=out)
    if args.threads:
        cfg.threads = args.threads
    if args.lambdas:
        cfg.lambdas = tuple(args.lambdas)
    results = run_demo(cfg)
    print()
    print(format_table(results["points"]))
    print()
    print(format_bd_rates(results))
    for name, reason in results["anchors_skipped"].items():
        print(f"({name} skipped: {reason})")
    print()
    minutes = results["timings"]["total_s"] / 60
    print(
        f"run folder: {out} (rd.png, rd.json/rd.csv, results.json, streams/, logs/ for "
        f"TensorBoard); {minutes:.1f} min"
    )
    return 0


def _bench(args: argparse.Namespace) -> int:
    from featcodec.codec.files import atomic_write
    from featcodec.eval.bench import (
        bench_entropy,
        bench_motion,
        bench_pframe,
        format_entropy,
        format_motion_bench,
    )

    if args.which == "motion":
        sizes = (args.batch, args.channels, args.size, args.repeat, args.threads)
        if min(*sizes, args.frame_size) < 1:
            raise InputError("--batch, --channels, --size, --repeat and --threads must be positive")
        for name in args.devices:
            if name.split(":")[0] not in ("cpu", "cuda"):
                raise InputError(f"--devices: {name!r} is neither cpu nor cuda[:N]")
        extra = bench_pframe(args.devices, size=args.frame_size, repeat=args.repeat)
        report = bench_motion(*sizes, devices=args.devices, extra_rows=extra)
        print(format_motion_bench(report))
        atomic_write(args.out, json.dumps(report, indent=2))
        print(f"\nresults: {args.out}")
        return 0
    if min(args.shape) < 1 or args.repeat < 1 or args.threads < 1:
        raise InputError("--shape, --repeat and --threads must be positive")
    report = bench_entropy(tuple(args.shape), repeat=args.repeat, threads=args.threads)
    print(format_entropy(report))
    atomic_write(args.out, json.dumps(report, indent=2))
    print(f"\nresults: {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    # compressai scripts a helper at import time, which torch now flags as deprecated
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
    # lightning's own use of a deprecated torch.utils._pytree API (not actionable by users)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    # the frozen task network is in eval mode on purpose while a codec trains
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start.*")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:  # everything after it belongs to LightningCLI
        args = argparse.Namespace(func=_train, args=argv[1:])
    else:
        args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except FeatcodecError as e:
        print(f"featcodec: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"featcodec: error: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("featcodec: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
