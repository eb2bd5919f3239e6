"""``featcodec experiment scalable``: the scalable-coding paper's two claims, trained and
measured (eval/scalable.py); ``featcodec experiment stitching``: Lenc & Vedaldi's stitching
between two networks (featcodec/cli/stitching.py); ``featcodec experiment sparse``: dense and
sparse (DynConv) fronts compared (featcodec/cli/sparse.py); ``featcodec experiment pose3d``: 3-D
pose networks and scalable codecs for them (featcodec/cli/pose3d.py)."""

from __future__ import annotations

import argparse
import dataclasses

from featcodec.cli import pose3d, sparse, stitching
from featcodec.cli.common import floats, set_threads, threads_arg
from featcodec.codec.errors import InputError


def add_parser(sub: argparse._SubParsersAction) -> None:
    ex = sub.add_parser("experiment", help="experiments from the papers, trained and measured")
    ex_sub = ex.add_subparsers(dest="what", required=True, metavar="WHAT")
    sc = ex_sub.add_parser("scalable", help="the scalable-coding paper's two claims")
    sc.add_argument("--out", default="runs/scalable", help="run folder")
    sc.add_argument("--quick", action="store_true", help="a tiny run that takes seconds")
    sc.add_argument("--task-checkpoint", help="reuse a trained task network (e.g. the demo's)")
    threads_arg(sc)
    sc.add_argument(
        "--resume",
        action="store_true",
        help="keep checkpoints already in the run folder that were trained the same way",
    )
    sc.add_argument("--betas", type=floats, help="β of the base codecs, 0 among them")
    sc.add_argument("--lambdas", type=floats, help="λ of the base codecs")
    sc.add_argument("--base-beta", type=float, help="β of the base under the enhancement")
    sc.add_argument("--enh-lambdas", type=floats, help="λ_e of the enhancement layers")
    sc.add_argument("--enh-epochs", type=int, help="epochs of each enhancement layer")
    sc.set_defaults(func=run)
    stitching.add_parser(ex_sub)
    sparse.add_parser(ex_sub)
    pose3d.add_parser(ex_sub)


def run(args: argparse.Namespace) -> int:
    import logging

    from featcodec.eval.scalable import ScalableConfig, format_claims, run_scalable

    set_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    cfg = ScalableConfig.quick(args.out) if args.quick else ScalableConfig(out=args.out)
    given = {
        "task_checkpoint": args.task_checkpoint,
        "resume": args.resume or None,
        "betas": args.betas,
        "lambdas": args.lambdas,
        "base_beta": args.base_beta,
        "enh_lambdas": args.enh_lambdas,
        "enh_epochs": args.enh_epochs,
    }
    try:
        cfg = dataclasses.replace(cfg, **{k: v for k, v in given.items() if v is not None})
    except ValueError as e:
        raise InputError(str(e)) from None
    results = run_scalable(cfg)
    print()
    print(format_claims(results))
    print(f"\nrun folder: {args.out} (scalable.json, rd.json); {results['total_s'] / 60:.1f} min")
    return 0
