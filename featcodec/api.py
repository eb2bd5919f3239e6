"""The public API behind ``import featcodec``: load any codec checkpoint, build codecs and
task networks by name.

::

    codec = featcodec.load("runs/quickstart/checkpoints/last.ckpt")   # Codec or VideoCodec
    data = codec.encode(image)             # (3, H, W) in [0, 1] -> .fcb bytes
    decoded = codec.decode(data)           # .features (1, C, h, w), .output, ...

    featcodec.list_codecs()                # ['enhancement', 'hyperprior', 'pframe']
    base = featcodec.get_codec("hyperprior", in_channels=128, N=64, M=64)
    featcodec.list_tasks()                 # ['classification', 'depth', 'detection', ...]
    task = featcodec.get_task("segmentation")   # its head, losses, metric, summary

Names follow torchvision's ``get_model``/``list_models``: a builder per name, configured by
keyword arguments, fresh (untrained) weights.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from featcodec.codec.errors import CheckpointError, InputError

if TYPE_CHECKING:
    from torch import nn

    from featcodec.codec.facade import Codec
    from featcodec.codec.video import VideoCodec
    from featcodec.models.tasks import Task


def check_device(device: str) -> Any:
    """``device`` as a :class:`torch.device` this process can use, or :class:`InputError`
    naming what is wrong with it (an unknown name, CUDA without a GPU)."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"unknown device {device!r} (cpu, cuda, cuda:1, ...)") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {device} requested but CUDA is not available")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            count = torch.cuda.device_count()
            raise InputError(f"device {device}: this machine has {count} GPU(s)")
    elif parsed.type != "cpu":
        raise InputError(f"device {device!r}: featcodec runs on cpu or cuda")
    return parsed


def load(path: str | os.PathLike[str], device: str = "cpu") -> Codec | VideoCodec:
    """The codec of a featcodec checkpoint, image (:class:`~featcodec.codec.facade.Codec`) or
    video (:class:`~featcodec.codec.video.VideoCodec`), in eval mode on ``device``.

    The checkpoint is read once, weights-only, and validated; any problem raises
    :class:`~featcodec.CheckpointError` naming the file.
    """
    if not os.path.isfile(path):  # before anything heavy is imported
        raise CheckpointError(f"checkpoint not found: {path}")
    from featcodec.codec.checkpoint import load_checkpoint, rebuild
    from featcodec.codec.facade import Codec

    target = check_device(device)
    ckpt = load_checkpoint(path, kind=("codec", "video"))
    build = Codec.build
    if ckpt["featcodec"]["kind"] == "video":  # imported only here: it brings OpenCV
        from featcodec.codec.video import VideoCodec

        build = VideoCodec.build
    return rebuild(path, ckpt, build).to(target)


def list_codecs() -> list[str]:
    """Names :func:`get_codec` builds."""
    from featcodec.codec.registry import codec_names

    return codec_names()


def get_codec(name: str, **config: Any) -> nn.Module:
    """A codec network with fresh weights by registered ``name`` (:func:`list_codecs`) and its
    architecture ``config`` (keyword arguments of its class); :class:`InputError` for an
    unknown name or argument."""
    from featcodec.codec.registry import build_codec

    try:
        return build_codec(name, **config)
    except (TypeError, ValueError) as e:
        raise InputError(f"get_codec({name!r}): {e}") from None


def list_tasks() -> list[str]:
    """Names :func:`get_task` knows: the tasks a split network can serve."""
    from featcodec.models.tasks import list_tasks as names

    return names()


def get_task(name: str) -> Task:
    """The task ``name`` (:func:`list_tasks`): it builds its network on a split backbone and
    knows its loss, distillation loss, metric and prediction summary; :class:`InputError` for
    an unknown name."""
    from featcodec.models.tasks import get_task as lookup

    try:
        return lookup(name)
    except ValueError as e:
        raise InputError(str(e)) from None
