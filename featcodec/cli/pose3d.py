"""``featcodec experiment pose3d``: 3-D pose (HEMlets) task networks on the tilted synthetic
scenes — MPJPE, PCK-3D and relative depth order (the ablation) — or, with ``--enhancement``,
scalable codecs whose enhancement layer targets the 3-D pose maps (eval/pose3d.py)."""

from __future__ import annotations

import argparse
import json

from featcodec.cli.common import set_threads, threads_arg
from featcodec.codec.errors import InputError


def add_parser(ex_sub: argparse._SubParsersAction) -> None:
    p = ex_sub.add_parser(
        "pose3d", help="3-D pose networks (MPJPE, depth order) or scalable codecs for them"
    )
    p.add_argument(
        "checkpoints",
        nargs="+",
        help="pose3d task checkpoints (or, with --enhancement, scalable codec checkpoints)",
    )
    p.add_argument(
        "--enhancement",
        action="store_true",
        help="the checkpoints are scalable codecs whose enhancement targets pose3d",
    )
    p.add_argument(
        "--against",
        help="with --enhancement: an `eval rd` results file of 3-D base "
        "codecs; BD-rate of each enhancement curve against its learned curve",
    )
    p.add_argument("--labels", nargs="+", help="one name per checkpoint (default: file names)")
    p.add_argument("--size", type=int, default=500, help="test scenes measured")
    p.add_argument("--image-size", type=int, default=48, help="scenes' size in pixels")
    p.add_argument("--tilt", type=float, default=60.0, help="scenes' largest tilt, degrees")
    p.add_argument("--fog", type=float, default=0.3, help="scenes' fog density")
    p.add_argument("--seed", type=int, default=0, help="scenes' seed")
    p.add_argument("-o", "--out", default="runs/pose3d/pose3d.json", help="JSON results file")
    threads_arg(p)
    p.set_defaults(func=run)


def _labels(args: argparse.Namespace) -> list[str]:
    from pathlib import Path

    labels = args.labels or [
        Path(c).stem if Path(c).stem != "last" else Path(c).parent.name for c in args.checkpoints
    ]
    if len(labels) != len(args.checkpoints):
        raise InputError("--labels: give one name per checkpoint")
    return labels


def run(args: argparse.Namespace) -> int:
    from featcodec.codec.files import atomic_write
    from featcodec.eval.data import synthetic_eval_set
    from featcodec.eval.pose3d import evaluate_network, format_networks

    labels = _labels(args)
    if args.against and not args.enhancement:
        raise InputError("--against compares enhancement curves: add --enhancement")
    set_threads(args.threads)
    data = synthetic_eval_set("test", args.size, args.image_size, args.seed, args.tilt, args.fog)
    settings = {
        "size": args.size,
        "image_size": args.image_size,
        "tilt": args.tilt,
        "fog": args.fog,
        "seed": args.seed,
    }
    if args.enhancement:
        report = _enhancement(args, labels, data)
    else:
        try:
            rows = [evaluate_network(c, data) for c in args.checkpoints]
        except ValueError as e:
            raise InputError(str(e)) from None
        print(format_networks(rows, labels))
        report = {"networks": [{"label": k, **r} for k, r in zip(labels, rows, strict=True)]}
    atomic_write(args.out, json.dumps({"scenes": settings, **report}, indent=2))
    print(f"\nresults: {args.out}")
    return 0


def _enhancement(args: argparse.Namespace, labels: list[str], data: object) -> dict:
    from featcodec.codec.facade import Codec
    from featcodec.eval.pose3d import equal_metric_rate, evaluate_enhancement, format_enhancement

    rows = []
    for path in args.checkpoints:
        try:
            rows.append(evaluate_enhancement(Codec.from_checkpoint(path), data))
        except ValueError as e:
            raise InputError(f"{path}: {e}") from None
    print(format_enhancement(rows, labels))
    report: dict = {"enhancement": [{"label": k, **r} for k, r in zip(labels, rows, strict=True)]}
    curves = {
        kind: [(r["bpp_total"], r["mpjpe"]) for r in rows if r["standalone"] == standalone]
        for kind, standalone in (("conditional", False), ("standalone", True))
    }
    comparisons = {}
    if curves["conditional"] and curves["standalone"]:
        comparisons["conditional vs standalone (total rate)"] = equal_metric_rate(
            curves["conditional"], curves["standalone"], ("conditional", "standalone")
        )
    if args.against:
        base = _learned_curve(args.against)
        for kind, points in curves.items():
            if points:
                comparisons[f"{kind} (2-D base + 3-D enhancement) vs 3-D base codec"] = (
                    equal_metric_rate(points, base, (kind, "3-D base codec"))
                )
    for name, result in comparisons.items():
        value = result["bd_rate"]
        shown = "n/a" if value is None else f"{value:+.1f} %"
        notes = f" ({'; '.join(result['notes'])})" if result["notes"] else ""
        print(f"BD-rate at equal MPJPE, {name}: {shown}{notes}")
    report["bd_rates"] = comparisons
    return report


def _learned_curve(path: str) -> list[tuple[float, float]]:
    """``(bpp, mpjpe)`` of the learned points of an ``eval rd`` results file."""
    from featcodec.eval.results import load_results

    results = load_results(path)
    if results.metric != "mpjpe":
        raise InputError(f"{path}: not MPJPE results (metric {results.metric!r})")
    points = [(r.bpp, r.metrics["mpjpe"]) for r in results.rows if r.kind == "learned"]
    if not points:
        raise InputError(f"{path}: no learned codec points")
    return points
