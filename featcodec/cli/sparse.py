"""``featcodec experiment sparse``: task networks with dense and sparse fronts (DynConv,
eval/sparse.py) on the synthetic test split: their metric, the front's FLOPs, where the masks
are, and a figure of the masks over scenes."""

from __future__ import annotations

import argparse
import json

from featcodec.cli.common import set_threads, threads_arg
from featcodec.codec.errors import CheckpointError, InputError


def add_parser(ex_sub: argparse._SubParsersAction) -> None:
    sp = ex_sub.add_parser(
        "sparse", help="dense vs sparse fronts: metric, front FLOPs, masks over objects"
    )
    sp.add_argument("checkpoints", nargs="+", help="task checkpoints (dense or sparse)")
    sp.add_argument("--labels", nargs="+", help="one name per checkpoint (default: file names)")
    sp.add_argument("--split-at", default="layer2", help="where the front ends")
    sp.add_argument("--image-size", type=int, default=48, help="scenes' size in pixels")
    sp.add_argument("--scenes", type=int, default=500, help="test scenes measured")
    sp.add_argument("--figure", help="draw the masks of the first sparse checkpoint here (.png)")
    sp.add_argument("-o", "--out", default="runs/sparse/fronts.json", help="JSON results file")
    threads_arg(sp)
    sp.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from featcodec.codec.files import atomic_write
    from featcodec.eval.plot import save_figure
    from featcodec.eval.sparse import evaluate_front, format_fronts, mask_figure

    labels = args.labels or [
        Path(c).stem if Path(c).stem != "last" else Path(c).parent.name for c in args.checkpoints
    ]
    if len(labels) != len(args.checkpoints):
        raise InputError("--labels: give one name per checkpoint")
    if args.image_size < 8 or args.scenes < 1:
        raise InputError("--image-size must be ≥ 8 and --scenes ≥ 1")
    set_threads(args.threads)
    try:
        rows = [
            evaluate_front(c, args.split_at, args.image_size, args.scenes) for c in args.checkpoints
        ]
    except ValueError as e:
        raise InputError(str(e)) from None
    sparse = [c for c, r in zip(args.checkpoints, rows, strict=True) if r["sparse"]]
    if args.figure and not sparse:
        raise CheckpointError("--figure: none of the checkpoints has a sparse front")
    print(format_fronts(rows, labels))
    report = {"fronts": [{"label": k, **r} for k, r in zip(labels, rows, strict=True)]}
    atomic_write(args.out, json.dumps(report, indent=2))
    print(f"\nresults: {args.out}")
    if args.figure:
        print(f"masks: {save_figure(mask_figure(sparse[0], args.image_size), args.figure)}")
    return 0
