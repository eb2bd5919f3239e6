"""``featcodec bench entropy | motion | sparse``: benchmarks against a peer measured in the same run
(eval/bench.py), printed as a table and written as JSON."""

from __future__ import annotations

import argparse
import json

from featcodec.cli.common import set_threads, threads_arg
from featcodec.codec.errors import InputError


def add_parser(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("bench", help="benchmarks against a peer, measured in the same run")
    b_sub = b.add_subparsers(dest="which", required=True, metavar="WHICH")
    be = b_sub.add_parser("entropy", help="entropy coding: featcodec vs compressai")
    be.add_argument("--shape", type=int, nargs=3, default=[256, 56, 56], metavar=("C", "H", "W"))
    be.add_argument("--repeat", type=int, default=5)
    threads_arg(be, default=1)
    be.add_argument("--out", default="runs/bench/entropy.json", help="JSON results file")
    be.set_defaults(func=run)
    bm = b_sub.add_parser("motion", help="warp throughput vs grid_sample and a tensor copy")
    bm.add_argument("--batch", type=int, default=8, help="tensors per warp call")
    bm.add_argument("--channels", type=int, default=256)
    bm.add_argument("--size", type=int, default=56, help="tensors are size × size")
    bm.add_argument("--repeat", type=int, default=5)
    threads_arg(bm, default=2)
    bm.add_argument(
        "--devices", nargs="+", default=["cpu", "cuda"], help="CUDA is skipped when absent"
    )
    bm.add_argument("--frame-size", type=int, default=224, help="P-frame rows: frame px")
    bm.add_argument("--out", default="runs/bench/motion.json", help="JSON results file")
    bm.set_defaults(func=run)
    bs = b_sub.add_parser(
        "sparse", help="dense front vs its sparse blocks run by gather–scatter (DynConv)"
    )
    bs.add_argument("--sizes", type=int, nargs="+", default=[224, 512], help="input sides, px")
    bs.add_argument(
        "--budgets", type=float, nargs="+", default=[0.25, 0.5, 0.75], help="active fractions θ"
    )
    bs.add_argument("--backbone", default="resnet18")
    bs.add_argument("--split-at", default="layer2", help="the front ends here (a ResNet stage)")
    bs.add_argument("--repeat", type=int, default=5)
    threads_arg(bs, default=1)
    bs.add_argument(
        "--devices", nargs="+", default=["cpu", "cuda"], help="CUDA is skipped when absent"
    )
    bs.add_argument("--out", default="runs/bench/sparse.json", help="JSON results file")
    bs.set_defaults(func=run_sparse)


def run_sparse(args: argparse.Namespace) -> int:
    from featcodec.codec.files import atomic_write
    from featcodec.eval.bench_sparse import bench_sparse, format_sparse_bench

    if min(*args.sizes, args.repeat, args.threads) < 1:
        raise InputError("--sizes, --repeat and --threads must be positive")
    if not all(0 < b <= 1 for b in args.budgets):
        raise InputError("--budgets: each θ must lie in (0, 1]")
    for name in args.devices:
        if name.split(":")[0] not in ("cpu", "cuda"):
            raise InputError(f"--devices: {name!r} is neither cpu nor cuda[:N]")
    set_threads(args.threads)
    try:
        report = bench_sparse(
            args.sizes, args.budgets, args.repeat, args.devices, args.backbone, args.split_at
        )
    except ValueError as e:
        raise InputError(str(e)) from None
    print(format_sparse_bench(report))
    atomic_write(args.out, json.dumps(report, indent=2))
    print(f"\nresults: {args.out}")
    return 0


def run(args: argparse.Namespace) -> int:
    from featcodec.codec.files import atomic_write
    from featcodec.eval.bench import (
        bench_entropy,
        bench_motion,
        bench_pframe,
        format_entropy,
        format_motion_bench,
    )

    if args.which == "motion":
        sizes = (args.batch, args.channels, args.size, args.repeat)
        if min(*sizes, args.threads, args.frame_size) < 1:
            raise InputError("--batch, --channels, --size, --repeat and --threads must be positive")
        for name in args.devices:
            if name.split(":")[0] not in ("cpu", "cuda"):
                raise InputError(f"--devices: {name!r} is neither cpu nor cuda[:N]")
        set_threads(args.threads)
        extra = bench_pframe(args.devices, size=args.frame_size, repeat=args.repeat)
        report = bench_motion(*sizes, devices=args.devices, extra_rows=extra)
        print(format_motion_bench(report))
        atomic_write(args.out, json.dumps(report, indent=2))
        print(f"\nresults: {args.out}")
        return 0
    if min(args.shape) < 1 or args.repeat < 1 or args.threads < 1:
        raise InputError("--shape, --repeat and --threads must be positive")
    set_threads(args.threads)
    report = bench_entropy(tuple(args.shape), repeat=args.repeat)
    print(format_entropy(report))
    atomic_write(args.out, json.dumps(report, indent=2))
    print(f"\nresults: {args.out}")
    return 0
