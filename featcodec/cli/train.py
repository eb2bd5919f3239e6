"""``featcodec train --config CONFIG.yaml [--model.X V ...]``: LightningCLI (training.cli)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser(
        "train",
        help="train a task network or a codec from a YAML config (LightningCLI)",
        add_help=False,
    )
    t.add_argument("args", nargs=argparse.REMAINDER)
    t.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from featcodec.training.cli import train

    train(args.args)
    return 0
