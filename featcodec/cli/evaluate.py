"""``featcodec eval rd | bd | motion | video | equivariance``: evaluation from the command line.

featcodec eval rd RUN_DIR|CKPT ... [--anchors x265-12bit jpeg zstd] -o runs/eval/rd.json
featcodec eval bd rd.json --anchor x265-12bit
featcodec eval motion [--image IMG] [--weights DEFAULT] --out runs/motion
featcodec eval video pframe.ckpt [--motion flow|dis-flow|...] -o runs/video/video.json
featcodec eval equivariance [--task-checkpoint CKPT | --image IMG] --out runs/equivariance
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from featcodec.cli import equivariance
from featcodec.cli.common import set_threads, threads_arg
from featcodec.codec.errors import InputError
from featcodec.codec.sequence import MOTION_SOURCES


def add_parser(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("eval", help="RD points from real bitstreams, BD-rates, latent motion")
    ev_sub = ev.add_subparsers(dest="what", required=True, metavar="WHAT")

    rd = ev_sub.add_parser("rd", help="RD points of codec checkpoints and classical anchors")
    rd.add_argument("checkpoints", nargs="*", help="codec checkpoints or λ-sweep run folders")
    rd.add_argument("--name", help="curve name for checkpoints given as files")
    rd.add_argument(
        "--anchors",
        nargs="+",
        default=[],
        metavar="ANCHOR",
        help="classical anchors on the same feature tensors ('all' for every one)",
    )
    rd.add_argument(
        "--settings",
        action="append",
        default=[],
        metavar="ANCHOR=V1,V2,...",
        help="an anchor's settings instead of its defaults, e.g. x265-12bit=30,36,42",
    )
    rd.add_argument("--task-checkpoint", help="task network for anchors when no codec is given")
    rd.add_argument("--split-at", default="layer2", help="split node with --task-checkpoint")
    rd.add_argument(
        "--data",
        metavar="CONFIG",
        help="YAML config of the data module to evaluate on (configs/datasets/*.yaml: "
        "ImageFolder, COCO, Cityscapes); default: the embedded synthetic scenes",
    )
    rd.add_argument("--data-root", help="with --data: the dataset's root folder")
    rd.add_argument("--split", default="test", choices=["train", "val", "test"])
    rd.add_argument("--size", type=int, default=300, help="synthetic scenes of the split")
    rd.add_argument("--image-size", type=int, default=48, help="synthetic scenes' size")
    rd.add_argument("--seed", type=int, default=0, help="synthetic scenes' seed")
    rd.add_argument("--tilt", type=float, default=0.0, help="synthetic scenes' largest tilt, °")
    rd.add_argument("--fog", type=float, default=0.0, help="synthetic scenes' fog density")
    rd.add_argument("--batch-size", type=int, default=64)
    rd.add_argument("--streams", help="also keep every stream under this folder")
    rd.add_argument("-o", "--out", default="runs/eval/rd.json", help="results JSON (+ .csv)")
    rd.add_argument("--tensorboard", help="also log the RD figure to this TensorBoard folder")
    rd.add_argument("--device", default="cpu")
    threads_arg(rd)
    rd.add_argument("--overwrite", action="store_true", help="replace existing results")
    rd.set_defaults(func=eval_rd)

    bd = ev_sub.add_parser("bd", help="BD-rate of every codec against a named anchor")
    curve_args(bd)
    bd.add_argument("--anchor", required=True, help="the reference curve's codec name")
    bd.add_argument("--method", default="akima", choices=["akima", "pchip"])
    bd.set_defaults(func=eval_bd)

    mo = ev_sub.add_parser(
        "motion", help="predict a layer's tensor from input motion (Ulhaq & Bajić): NRMSE"
    )
    mo.add_argument("--image", help="reference image file (default: a synthetic scene)")
    mo.add_argument("--image-size", type=int, default=224, help="images are size × size px")
    mo.add_argument("--backbone", default="resnet34")
    mo.add_argument("--layer", default="layer2.0", help="split node or module prefix")
    mo.add_argument("--weights", help="torchvision weights name (DEFAULT, IMAGENET1K_V1)")
    mo.add_argument("--weights-file", help="a local state_dict (.pth) of the whole backbone")
    mo.add_argument("--draws", type=int, default=1000, help="random affine transforms")
    mo.add_argument("--seed", type=int, default=0, help="scene, random init and draws")
    mo.add_argument("--margin", type=int, default=0, help="latent px dropped near invalid ones")
    mo.add_argument("--batch-size", type=int, default=32)
    mo.add_argument(
        "--refine",
        type=int,
        default=0,
        help="k: also a warp + k×k filter bank conditioned on the motion (Lenc & Vedaldi), "
        "fitted on --fit-draws other draws",
    )
    mo.add_argument("--fit-draws", type=int, default=256, help="draws the bank is fitted on")
    mo.add_argument("--out", default="runs/motion", help="folder for motion.json, motion.png")
    mo.add_argument("--device", default="cpu")
    threads_arg(mo)
    mo.add_argument("--overwrite", action="store_true", help="replace existing results")
    mo.set_defaults(func=eval_motion)

    vi = ev_sub.add_parser(
        "video", help="P-frame against I-frame bytes and task accuracy on synthetic clips"
    )
    vi.add_argument(
        "checkpoints",
        nargs="+",
        metavar="checkpoint",
        help="video codec checkpoints (featcodec train ... pframe.yaml); several P-frame "
        "codecs behind one intra codec (e.g. trained at several λ) give an RD curve, read at "
        "the all-intra accuracy",
    )
    vi.add_argument("--clips", type=int, default=50, help="test clips")
    vi.add_argument("--frames", type=int, default=8, help="frames per clip")
    vi.add_argument("--image-size", type=int, default=96)
    vi.add_argument("--intra-period", type=int, default=8)
    vi.add_argument(
        "--motion",
        default="flow",
        choices=MOTION_SOURCES,
        help="side information: the clips' known flow or camera affine, or DIS-estimated",
    )
    vi.add_argument(
        "--global-motion",
        action="store_true",
        help="clips whose only motion is the camera's (a global affine per frame)",
    )
    vi.add_argument(
        "--skip-no-motion", action="store_true", help="leave out the zero-motion baseline"
    )
    vi.add_argument("--seed", type=int, default=0)
    vi.add_argument("-o", "--out", default="runs/video/video.json", help="results JSON")
    vi.add_argument("--device", default="cpu")
    threads_arg(vi)
    vi.add_argument("--overwrite", action="store_true", help="replace existing results")
    vi.set_defaults(func=eval_video)

    equivariance.add_parser(ev_sub)


def curve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", nargs="+", help="results files of featcodec eval rd")
    p.add_argument("--metric", help="task metric (default: the results' own)")
    p.add_argument("--rate", default="bpp", choices=["bpp", "bits_per_element"])


def load_curves(args: argparse.Namespace) -> tuple[list[Any], str, list[Any], float | None]:
    from featcodec.eval.results import curves, load_results

    results = [load_results(p) for p in args.results]
    metric = args.metric or results[0].metric
    found = curves(results, metric, args.rate)
    refs = [r.reference.get(metric) for res in results for r in res.rows]
    refs = [v for v in refs if v is not None and math.isfinite(v)]
    return results, metric, found, (sum(refs) / len(refs) if refs else None)


def bd_rows(found: list[Any], anchor: str, metric: str, method: str) -> list[Any]:
    from featcodec.eval.bd import bd_table
    from featcodec.models.tasks import metric_higher_is_better

    names = [c.name for c in found]
    if anchor not in names:
        raise InputError(f"no codec named {anchor!r} in the results; codecs: {', '.join(names)}")
    return bd_table(found, anchor, method, metric_higher_is_better(metric))


def eval_motion(args: argparse.Namespace) -> int:
    from featcodec.api import check_device
    from featcodec.codec.files import atomic_write
    from featcodec.eval.motion import MotionConfig, run_motion
    from featcodec.eval.motion_report import (
        figure_png,
        format_motion,
        output_paths,
        plot_motion,
        report_json,
    )
    from featcodec.inputs import refuse_existing

    set_threads(args.threads)
    check_device(args.device)
    json_path, png_path = output_paths(args.out)
    refuse_existing([json_path, png_path], args.overwrite)
    cfg = MotionConfig(
        backbone=args.backbone,
        layer=args.layer,
        weights=args.weights,
        weights_file=args.weights_file,
        image=args.image,
        image_size=args.image_size,
        draws=args.draws,
        seed=args.seed,
        margin=args.margin,
        batch_size=args.batch_size,
        device=args.device,
        refine=args.refine,
        fit_draws=args.fit_draws,
    )
    report = run_motion(cfg)
    png, text = figure_png(plot_motion(report)), report_json(report)  # both ready first
    atomic_write(png_path, png)
    atomic_write(json_path, text)
    print(format_motion(report))
    minutes = report["timing_s"]["total"] / 60
    print(f"\nresults: {json_path}, {png_path} ({minutes:.1f} min)")
    return 0


def eval_video(args: argparse.Namespace) -> int:
    from featcodec.api import check_device
    from featcodec.codec.files import atomic_write
    from featcodec.codec.video import VideoCodec
    from featcodec.eval.video import evaluate_video, format_video
    from featcodec.inputs import refuse_existing
    from featcodec.training.datasets import SyntheticClips

    set_threads(args.threads)
    if min(args.clips, args.image_size, args.intra_period) < 1 or args.frames < 2:
        raise InputError("--clips, --image-size, --intra-period must be ≥ 1 and --frames ≥ 2")
    out = Path(args.out)
    refuse_existing([out], args.overwrite)
    check_device(args.device)
    codecs = [VideoCodec.from_checkpoint(c).to(args.device) for c in args.checkpoints]
    clips = SyntheticClips(
        "test",
        args.clips,
        args.image_size,
        args.frames,
        args.seed,
        shape_motion=not args.global_motion,
    )
    start = time.perf_counter()
    names = [str(c) for c in args.checkpoints]
    report = evaluate_video(
        codecs, clips, args.intra_period, args.motion, not args.skip_no_motion, names=names
    )
    report.update(
        image_size=args.image_size,
        frames=args.frames,
        global_motion=args.global_motion,
        seconds=time.perf_counter() - start,
    )
    atomic_write(out, json.dumps(report, indent=2))
    print(format_video(report))
    print(f"\nresults: {out}")
    return 0


def eval_bd(args: argparse.Namespace) -> int:
    from featcodec.eval.bd import format_bd

    _, metric, found, _ = load_curves(args)
    print(format_bd(bd_rows(found, args.anchor, metric, args.method), metric))
    return 0


def eval_rd(args: argparse.Namespace) -> int:
    from featcodec.api import check_device
    from featcodec.eval.anchors import ANCHORS, build_anchor
    from featcodec.eval.data import EvalData, data_module_from_config, synthetic_eval_set
    from featcodec.eval.rd import TaskSplit, find_checkpoints
    from featcodec.eval.results import write_results
    from featcodec.inputs import refuse_existing
    from featcodec.models.tasks import task_of

    set_threads(args.threads)
    if not args.checkpoints and not args.task_checkpoint:
        raise InputError("give codec checkpoints or run folders, or --task-checkpoint for anchors")
    check_device(args.device)
    if args.batch_size < 1:
        raise InputError("--batch-size must be positive")
    names = list(ANCHORS) if args.anchors == ["all"] else args.anchors
    settings = _settings(args.settings, names)
    anchors = [build_anchor(n, settings=settings.get(n)) for n in names]  # fail before work
    out = Path(args.out)
    refuse_existing([out, out.with_suffix(".csv")], args.overwrite)
    points, notes = find_checkpoints(args.checkpoints, args.name) if args.checkpoints else ([], [])
    for note in notes:
        print(f"featcodec: {note}", file=sys.stderr)
    if args.data_root and not args.data:
        raise InputError("--data-root needs --data (a data module config)")
    if args.data:
        module = data_module_from_config(args.data, args.data_root)
        data = EvalData.of_datamodule(module, args.split)
    else:
        data = synthetic_eval_set(
            args.split, args.size, args.image_size, args.seed, args.tilt, args.fog
        )
    split = (
        TaskSplit.from_task_checkpoint(args.task_checkpoint, args.split_at)
        if args.task_checkpoint
        else None
    )
    if split is not None and points and task_of(split.arch).name != points[0].task:
        raise InputError(
            f"{args.task_checkpoint} is a {task_of(split.arch).name} network, the codecs serve "
            f"{points[0].task}"
        )
    start = time.perf_counter()
    rows = _codec_rows(points, data, args)
    if anchors:
        if split is None:
            from featcodec.codec.facade import Codec

            split = TaskSplit.of_codec(Codec.from_checkpoint(points[0].path))
        rows += _anchor_rows(anchors, split.to(args.device), data, args)
    if not rows:
        raise InputError("nothing was evaluated (every anchor was skipped)")
    elapsed = time.perf_counter() - start
    task = task_of(rows[0].config.get("network", rows[0].config)).name
    metric = next(iter(rows[0].metrics))
    json_path, csv_path = write_results(
        out,
        rows,
        task=task,
        metric=metric,
        dataset=data.info,
        software=_software(anchors),
    )
    print(format_rows(rows, metric))
    per_image = 1e3 * elapsed / (len(rows) * len(data))
    print(
        f"\n{len(rows)} points × {len(data)} images in {elapsed:.1f} s "
        f"({per_image:.1f} ms per image per point); results: {json_path}, {csv_path}"
    )
    if args.tensorboard:
        _log_figure(args.tensorboard, json_path, metric)
    return 0


def _settings(specs: list[str], names: list[str]) -> dict[str, tuple[float, ...]]:
    out: dict[str, tuple[float, ...]] = {}
    for spec in specs:
        name, _, values = spec.partition("=")
        if name not in names:
            raise InputError(f"--settings {spec}: {name!r} is not among --anchors")
        try:
            out[name] = tuple(float(v) if "." in v else int(v) for v in values.split(","))
        except ValueError:
            raise InputError(f"--settings {spec}: expected numbers separated by commas") from None
    return out


def _codec_rows(points: list[Any], data: Any, args: argparse.Namespace) -> list[Any]:
    from featcodec.codec.facade import Codec
    from featcodec.eval.rd import evaluate_codec

    rows = []
    for p in points:
        codec = Codec.from_checkpoint(p.path).to(args.device)
        label = f"λ={p.lmbda:g}" if p.lmbda is not None else p.path.stem
        streams = Path(args.streams) / p.curve / p.path.stem if args.streams else None
        rows.append(
            evaluate_codec(
                codec,
                data,
                p.curve,
                label,
                setting=p.lmbda,
                checkpoint=str(p.path),
                stream_dir=streams,
                progress=True,
                batch_size=args.batch_size,
            )
        )
    return rows


def _anchor_rows(anchors: list[Any], split: Any, data: Any, args: argparse.Namespace) -> list:
    from tqdm import tqdm

    from featcodec.eval.rd import check_fits, evaluate_anchor, reference_metrics

    check_fits(split.arch, data, "the task network")
    reference = reference_metrics(split, data, args.batch_size)
    rows = []
    for anchor in anchors:
        reason = anchor.available()
        if reason is not None:
            print(f"featcodec: {anchor.name} anchor skipped: {reason}", file=sys.stderr)
            continue
        for setting in tqdm(anchor.settings, desc=anchor.name, leave=False, disable=None):
            streams = (
                Path(args.streams) / anchor.name / f"{anchor.setting_name}{setting}"
                if args.streams
                else None
            )
            rows.append(
                evaluate_anchor(anchor, setting, split, data, reference, streams, args.batch_size)
            )
    return rows


def _software(anchors: list[Any]) -> dict[str, Any]:
    from featcodec.eval.results import software_versions

    return software_versions(ffmpeg=any(a.name.startswith("x265") for a in anchors))


def _log_figure(logdir: str, results: Path, metric: str) -> None:
    from torch.utils.tensorboard import SummaryWriter

    from featcodec.eval.plot import plot_rd
    from featcodec.eval.results import curves, load_results

    res = load_results(results)
    with SummaryWriter(logdir) as writer:
        writer.add_figure("rd/" + metric, plot_rd(curves([res], metric), metric))
    print(f"TensorBoard: RD figure logged under {logdir}")


def format_rows(rows: list[Any], metric: str) -> str:
    """RD rows as a text table."""
    width = max(len("codec"), *(len(r.codec) for r in rows))
    head = (
        f"{'codec':<{width}} {'point':>12} {'bytes':>9} {'bpp':>8} {'bits/elem':>10} "
        f"{metric:>9} {'uncompr.':>9} {'PSNR':>6} {'enc ms':>7} {'dec ms':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        psnr = f"{r.psnr:6.2f}" if r.psnr is not None else f"{'-':>6}"
        lines.append(
            f"{r.codec:<{width}} {r.point:>12} {r.bytes:>9.1f} {r.bpp:>8.4f} "
            f"{r.bits_per_element:>10.4f} {r.metrics[metric]:>9.3f} "
            f"{r.reference[metric]:>9.3f} {psnr} {r.encode_ms:>7.2f} {r.decode_ms:>7.2f}"
        )
    return "\n".join(lines)
