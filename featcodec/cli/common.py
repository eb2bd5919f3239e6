"""What several commands share: the model options, loading a codec, progress bars, threads.

Nothing here imports torch at module level: ``featcodec --help``, ``info`` and the error
paths stay fast.
"""

from __future__ import annotations

import argparse
from typing import Any

from featcodec.codec.errors import InputError


def model_args(p: argparse.ArgumentParser) -> None:
    """``-c/--checkpoint``, ``--device`` and ``--overwrite``."""
    p.add_argument("-c", "--checkpoint", required=True, help="codec checkpoint (.ckpt)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")


def threads_arg(p: argparse.ArgumentParser, default: int | None = None) -> None:
    p.add_argument("--threads", type=int, default=default, help="torch CPU threads")


def set_threads(threads: int | None) -> None:
    """Pin torch's CPU threads (the CLI's job: library code never sets process-wide state)."""
    if threads is None:
        return
    if threads < 1:
        raise InputError(f"--threads must be at least 1, not {threads}")
    import torch

    torch.set_num_threads(threads)


def load_codec(args: argparse.Namespace) -> Any:
    """The image codec (``Codec``) or video codec (``VideoCodec``) of ``--checkpoint``, read
    once, on ``--device``."""
    from featcodec.api import load

    return load(args.checkpoint, args.device)


def progress(items: Any, desc: str) -> Any:
    """A progress bar over ``items`` on a terminal (none when output is redirected)."""
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="file", disable=None, leave=False)


def floats(text: str) -> tuple[float, ...]:
    """``0,0.001,0.01`` → a tuple of floats (an argparse type)."""
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        msg = f"expected numbers separated by commas: {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
