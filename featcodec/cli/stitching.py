"""``featcodec experiment stitching``: Lenc & Vedaldi's "Franken-network" between two task
networks, per split point (eval/stitching.py): B's metric on A's tensor through a 1×1
stitching layer E before training it, with the closed-form regression, after training it on
B's loss, and B's own."""

from __future__ import annotations

import argparse

from featcodec.cli.common import set_threads, threads_arg
from featcodec.codec.errors import InputError


def add_parser(ex_sub: argparse._SubParsersAction) -> None:
    st = ex_sub.add_parser(
        "stitching", help="stitch network A's tensor into network B's back end, per split point"
    )
    st.add_argument("--network-a", required=True, help="task checkpoint of network A")
    st.add_argument("--network-b", required=True, help="task checkpoint of network B")
    st.add_argument(
        "--splits",
        type=lambda text: tuple(s for s in text.split(",") if s),
        help="split points, comma-separated (default: maxpool,layer1,layer2,layer3,layer4)",
    )
    st.add_argument("--out", default="runs/stitching", help="folder for stitching.json, stitches")
    st.add_argument("--steps", type=int, help="training steps of each E (default 60)")
    st.add_argument("--fit-batches", type=int, help="batches of the regression (default 20)")
    st.add_argument("--train-size", type=int, help="training scenes (default 1920)")
    st.add_argument("--test-size", type=int, help="test scenes measured (default 300)")
    st.add_argument("--image-size", type=int, help="scenes' size in pixels (default 48)")
    st.add_argument("--lr", type=float, help="learning rate of E (default 3e-3)")
    st.add_argument("--seed", type=int, help="scenes' and training seed (default 0)")
    threads_arg(st)
    st.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import logging
    import warnings

    from featcodec.eval.stitching import StitchingConfig, format_table, run_stitching

    set_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    # E is trained for a fixed number of steps and measured after it, not validated
    warnings.filterwarnings("ignore", message=r".*but have no `val_dataloader`.*")
    given = {
        "network_a": args.network_a,
        "network_b": args.network_b,
        "out": args.out,
        "splits": args.splits,
        "steps": args.steps,
        "fit_batches": args.fit_batches,
        "train_size": args.train_size,
        "test_size": args.test_size,
        "image_size": args.image_size,
        "lr": args.lr,
        "seed": args.seed,
    }
    try:
        cfg = StitchingConfig(**{k: v for k, v in given.items() if v is not None})
    except ValueError as e:
        raise InputError(str(e)) from None
    results = run_stitching(dataclasses.replace(cfg, progress=False))
    print()
    print(format_table(results))
    print(f"\n{args.out}/stitching.json; {results['total_s'] / 60:.1f} min")
    return 0
