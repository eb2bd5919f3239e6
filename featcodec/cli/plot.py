"""``featcodec plot rd RESULTS ... -o rd.png``: RD curves from results files, with a BD-rate
table against an anchor."""

from __future__ import annotations

import argparse
from pathlib import Path

from featcodec.cli.evaluate import bd_rows, curve_args, load_curves
from featcodec.codec.errors import InputError


def add_parser(sub: argparse._SubParsersAction) -> None:
    pl = sub.add_parser("plot", help="draw figures from results files")
    pl_sub = pl.add_subparsers(dest="what", required=True, metavar="WHAT")
    prd = pl_sub.add_parser("rd", help="RD curves (PNG, PDF or SVG)")
    curve_args(prd)
    prd.add_argument("-o", "--out", required=True, help="figure file: .png, .pdf or .svg")
    prd.add_argument("--anchor", help="add a table of BD-rates against this codec")
    prd.add_argument("--method", default="akima", choices=["akima", "pchip"])
    prd.add_argument("--title")
    prd.add_argument("--linear", action="store_true", help="linear rate axis (default: log)")
    prd.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from featcodec.eval.plot import FORMATS, plot_rd, save_figure

    if Path(args.out).suffix.lower() not in FORMATS:
        raise InputError(f"{args.out}: unsupported figure format (use {', '.join(FORMATS)})")
    _, metric, found, reference = load_curves(args)
    bd = bd_rows(found, args.anchor, metric, args.method) if args.anchor else None
    fig = plot_rd(found, metric, args.rate, args.title, reference, bd=bd, log_rate=not args.linear)
    print(f"wrote {save_figure(fig, args.out)}")
    return 0
