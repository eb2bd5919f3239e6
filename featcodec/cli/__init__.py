"""The ``featcodec`` console command: one module per command, wired here.

    featcodec train  --config configs/quickstart.yaml [--model.lmbda 0.5 ...]   (train.py)
    featcodec encode IMAGES|TENSORS|FOLDERS -c CKPT -o OUT                      (encode.py)
    featcodec decode STREAMS|FOLDERS -c CKPT -o OUT [--stitch STITCH.ckpt]      (decode.py)
    featcodec info   STREAMS                                                    (info.py)
    featcodec eval   rd|bd|motion|video ...                                     (evaluate.py)
    featcodec eval   equivariance [--task-checkpoint CKPT | --image IMG]       (equivariance.py)
    featcodec experiment scalable ...                                           (experiment.py)
    featcodec experiment stitching --network-a A.ckpt --network-b B.ckpt        (stitching.py)
    featcodec plot   rd rd.json [more.json ...] -o rd.png                       (plot.py)
    featcodec demo   [--out DIR] [--quick]                                      (demo.py)
    featcodec bench  entropy|motion [--threads N]                               (bench.py)
    featcodec fuzz   [--cases N] [--seed S] [--workers W] [--out DIR]           (fuzz.py)

Errors in what the user supplied are reported as one line on stderr with exit code 1; no
output file is left half-written, and existing outputs are only replaced with --overwrite.
Heavy packages (torch, compressai, Lightning) are imported by the commands that need them,
so ``featcodec --help``, ``featcodec info`` and argument errors start at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings

from featcodec.cli import bench, decode, demo, encode, evaluate, experiment, fuzz, info, plot, train
from featcodec.codec.errors import FeatcodecError

COMMANDS = (train, encode, decode, info, evaluate, experiment, plot, demo, bench, fuzz)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="featcodec", description="Learned codec for the feature tensors of split networks."
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    # two OpenMP threads spinning while they wait made an encode 39× slower on a busy 2-core
    # machine; passive waiting costs nothing measurable (read when torch first loads)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # compressai scripts a helper at import time, which torch now flags as deprecated
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
    # lightning's own use of a deprecated torch.utils._pytree API (not actionable by users)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    # the frozen task network is in eval mode on purpose while a codec trains
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start.*")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:  # everything after it belongs to LightningCLI
        args = argparse.Namespace(func=train.run, args=argv[1:])
    else:
        args = parser().parse_args(argv)
    # the library logs its progress lines (demo, experiments); the command shows them
    shown = logging.StreamHandler(sys.stdout)
    shown.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("featcodec")
    logger.addHandler(shown)
    level, logger.level = logger.level, logging.INFO
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
    finally:
        logger.removeHandler(shown)
        logger.setLevel(level)
