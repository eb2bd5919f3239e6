"""Codecs registered by name, so checkpoints and configs can name the architecture."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from torch import nn

_CODECS: dict[str, Callable[..., nn.Module]] = {}
_MODULES = ("featcodec.codec.base", "featcodec.codec.enhancement", "featcodec.codec.pframe")
"""The modules whose codecs register themselves when imported."""


def _import_all() -> None:
    for module in _MODULES:
        importlib.import_module(module)


def register_codec(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: make a codec buildable by ``build_codec(name, ...)``."""

    def add(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _CODECS:
            raise ValueError(f"codec {name!r} is already registered")
        _CODECS[name] = cls
        return cls

    return add


def codec_names() -> list[str]:
    _import_all()
    return sorted(_CODECS)


def build_codec(name: str, **config: Any) -> nn.Module:
    """Instantiate the codec registered as ``name`` with keyword ``config``."""
    _import_all()
    if name not in _CODECS:
        raise ValueError(f"unknown codec {name!r} (known: {', '.join(codec_names())})")
    return _CODECS[name](**config)
