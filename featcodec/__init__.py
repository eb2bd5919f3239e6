"""featcodec: a learned, scalable codec for the feature tensors of split neural networks.

An edge device runs the front of a network, codes the tensor at the split into a ``.fcb``
stream, and a server decodes it and runs the rest::

    import featcodec

    codec = featcodec.load("runs/quickstart/checkpoints/last.ckpt")  # image or video codec
    data = codec.encode(image)          # (3, H, W) in [0, 1] -> bytes of a .fcb stream
    decoded = codec.decode(data)        # .features (1, C, h, w), .output (task output)

    featcodec.list_codecs()             # codec networks by name
    featcodec.get_codec("hyperprior", in_channels=128, N=64, M=64)
    featcodec.list_tasks()              # tasks a split network serves, featcodec.get_task(name)

Every error a user can cause is a :class:`FeatcodecError` (:class:`BitstreamError`,
:class:`InputError`, :class:`CheckpointError`) with a one-line message. The packages:
``featcodec.models`` (backbones, task heads, building blocks), ``featcodec.codec`` (entropy
coding, the codecs, the bitstream, the ``Codec``/``VideoCodec`` facades), ``featcodec.training``
(Lightning modules, data), ``featcodec.eval`` (RD evaluation, anchors, experiments,
benchmarks); ``featcodec.cli`` is the ``featcodec`` command. Names below are imported on
first use, so ``import featcodec`` and ``featcodec --help`` do not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from featcodec.codec.errors import BitstreamError, CheckpointError, FeatcodecError, InputError

if TYPE_CHECKING:
    from featcodec.api import get_codec, get_task, list_codecs, list_tasks, load
    from featcodec.codec.facade import Codec, Decoded
    from featcodec.codec.video import VideoCodec

__version__ = "0.1.0"

__all__ = [
    "BitstreamError",
    "CheckpointError",
    "Codec",
    "Decoded",
    "FeatcodecError",
    "InputError",
    "VideoCodec",
    "__version__",
    "get_codec",
    "get_task",
    "list_codecs",
    "list_tasks",
    "load",
]

_LAZY = {
    "Codec": "featcodec.codec.facade",
    "Decoded": "featcodec.codec.facade",
    "VideoCodec": "featcodec.codec.video",
    "get_codec": "featcodec.api",
    "get_task": "featcodec.api",
    "list_codecs": "featcodec.api",
    "list_tasks": "featcodec.api",
    "load": "featcodec.api",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'featcodec' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
