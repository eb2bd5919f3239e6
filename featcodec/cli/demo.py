"""``featcodec demo [--out DIR] [--quick]``: the whole pipeline on the embedded synthetic
scenes (eval/demo.py): task network, a λ sweep of codecs, real streams, anchors, BD-rates."""

from __future__ import annotations

import argparse
import time

from featcodec.cli.common import set_threads, threads_arg


def add_parser(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser("demo", help="train and measure the whole pipeline on synthetic scenes")
    m.add_argument("--out", help="run folder (default: runs/demo-<date>-<time>)")
    m.add_argument("--quick", action="store_true", help="a tiny run that takes seconds")
    threads_arg(m)
    m.add_argument("--lambdas", type=float, nargs="+", help="λ values of the codecs")
    m.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from featcodec.eval.demo import DemoConfig, format_bd_rates, format_table, run_demo

    # the demo's own progress lines say what runs; Lightning's device and tip lines are noise
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)

    out = args.out or time.strftime("runs/demo-%Y%m%d-%H%M%S")
    cfg = DemoConfig.quick(out) if args.quick else DemoConfig(out=out)
    set_threads(args.threads)
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
