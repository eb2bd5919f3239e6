"""``featcodec fuzz [--cases N] [--seed S] [--workers W] [--timeout 1.0] [--out DIR]``: fuzz the
stream decoders (eval/fuzz.py) and print the outcome table.

Writes ``DIR/report.json`` and, for every non-documented outcome, a reproducer in
``DIR/reproducers`` with the seed codecs in ``DIR/seeds``; ``featcodec fuzz --replay
REPRO.fcb --target TARGET --workdir DIR/seeds`` decodes one again in this process and prints
the outcome and traceback. Exits 1 when any case had a non-documented outcome.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from featcodec.codec.errors import InputError


def add_parser(sub: argparse._SubParsersAction) -> None:
    f = sub.add_parser("fuzz", help="fuzz the stream decoders with mutated .fcb streams")
    f.add_argument("--cases", type=int, default=2000, help="cases in all (default 2000)")
    f.add_argument("--seed", type=int, default=0, help="seeds the codecs, streams, mutations")
    f.add_argument("--workers", type=int, default=2, help="decoding processes, 1 thread each")
    f.add_argument("--timeout", type=float, default=1.0, help="CPU seconds a case may take")
    f.add_argument(
        "--mem-factor",
        type=float,
        default=4.0,
        help="a case may grow memory this many times the legitimate decode's (default 4)",
    )
    f.add_argument("--size", type=int, nargs=2, default=[32, 48], metavar=("H", "W"))
    f.add_argument("--backbone", default=None, help="seed codecs' task network (tiny default)")
    f.add_argument("--targets", nargs="+", default=None, metavar="TARGET")
    f.add_argument("--mutators", nargs="+", default=None, metavar="MUTATOR")
    f.add_argument("--out", default="runs/fuzz", help="report and reproducers folder")
    f.add_argument("--workdir", default=None, help="seed folder to reuse (default: temporary)")
    f.add_argument("--replay", default=None, metavar="FCB", help="decode one reproducer")
    f.add_argument("--target", default="image", help="the reproducer's target (--replay)")
    f.set_defaults(func=run)


class Progress:
    """One line on stderr, rewritten at most twice a second on a terminal (every 10 % else)."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last = 0.0
        self.step = 0

    def __call__(self, recorder: Any, total: int) -> None:
        done = recorder.done
        now = time.monotonic()
        if self.tty:
            if now - self.last < 0.5 and done < total:
                return
        elif done * 10 // max(total, 1) == self.step and done < total:
            return
        self.last, self.step = now, done * 10 // max(total, 1)
        rate = done / max(now - recorder.started - recorder.startup_s, 1e-9)
        line = f"fuzz: {done}/{total} cases, {rate:.0f}/s, {recorder.undocumented} non-documented"
        end = "\r" if self.tty and done < total else "\n"
        print(line, end=end, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from featcodec.eval.fuzz import Settings, format_report, replay, run
    from featcodec.eval.fuzz_mutate import MUTATORS
    from featcodec.eval.fuzz_worker import BACKBONE, DOCUMENTED_REPLIES, TARGETS

    if args.replay is not None:
        if args.workdir is None:
            raise InputError("--replay needs --workdir: the run's seeds folder (OUT/seeds)")
        reply = replay(args.replay, args.target, args.workdir)
        for key in ("outcome", "time", "cpu", "growth", "type", "message", "traceback"):
            if key in reply:
                print(f"{key}: {reply[key]}")
        return 0 if reply["outcome"] in DOCUMENTED_REPLIES else 1

    if args.cases < 0 or args.workers < 1 or args.timeout <= 0 or args.mem_factor <= 0:
        raise InputError("--cases must be ≥ 0, --workers ≥ 1, --timeout and --mem-factor > 0")
    if min(args.size) < 1:
        raise InputError(f"--size must be positive, not {args.size}")
    targets = tuple(args.targets or TARGETS)
    mutators = tuple(args.mutators or MUTATORS)
    for given, known, what in ((targets, TARGETS, "target"), (mutators, MUTATORS, "mutator")):
        unknown = [g for g in given if g not in known]
        if unknown:
            raise InputError(f"unknown {what} {unknown[0]!r}; expected one of {', '.join(known)}")
    settings = Settings(
        cases=args.cases,
        seed=args.seed,
        workers=args.workers,
        timeout=args.timeout,
        mem_factor=args.mem_factor,
        size=(args.size[0], args.size[1]),
        backbone=args.backbone or BACKBONE,
        targets=targets,
        mutators=mutators,
    )
    report = run(settings, out=args.out, workdir=args.workdir, progress=Progress())
    print(format_report(report))
    print(f"\nreport: {args.out}/report.json")
    if report["undocumented"]:
        print(f"reproducers: {args.out}/reproducers", file=sys.stderr)
        return 1
    return 0
