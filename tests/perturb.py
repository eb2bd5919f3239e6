"""Shared by tests/test_exact.py and tests/test_exact_video.py: perturbations of the
fixed-point summation (codec.exact.accumulate), a nudge of a float network's output, and the
small scalable codec and 256 px images the streams are coded from."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest
import torch
import torch.nn.functional as F

from featcodec.codec import exact
from featcodec.codec.facade import Codec, default_arch

SIZE = 256  # item 3 of issue 13: streams of 256 px and up


def _conv_accumulate(
    channels_last: bool,
) -> Callable[[exact.ExactConv, torch.Tensor], torch.Tensor]:
    """The accumulators by torch's own float64 convolution (another algorithm and summation
    order than unfold + GEMM), optionally in channels-last layout."""

    def accumulate(e: exact.ExactConv, q: torch.Tensor) -> torch.Tensor:
        x, stride = e._prepare(q)
        w = e.weight
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
            w = w.contiguous(memory_format=torch.channels_last)
        return F.conv2d(x, w, stride=stride) + e.bias.reshape(1, -1, 1, 1)

    return accumulate


def _nudged(e: exact.ExactConv, q: torch.Tensor) -> torch.Tensor:
    """The accumulators a few ulps off, up or down (a fused or reordered kernel's error)."""
    acc = e.accumulators(q)
    ulps = torch.randint(-3, 4, acc.shape, generator=torch.Generator().manual_seed(7))
    return acc + ulps.double() * torch.finfo(torch.float64).eps * acc.abs().clamp_min(1)


PERTURBATIONS = {
    "conv2d-float64": _conv_accumulate(False),
    "channels-last": _conv_accumulate(True),
    "few-ulps": _nudged,
}


@contextlib.contextmanager
def perturbed(
    monkeypatch: pytest.MonkeyPatch, name: str | None, threads: int | None = None
) -> Iterator[None]:
    before = torch.get_num_threads()
    with monkeypatch.context() as m:
        if name is not None:
            m.setattr(exact, "accumulate", PERTURBATIONS[name])
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)


def make_scalable() -> Codec:
    torch.manual_seed(3)
    arch = default_arch(
        codec={"name": "hyperprior", "N": 16, "M": 16, "attention": False},
        enhancement={"N": 16, "M": 16},
    )
    return Codec.build(arch).eval()


def make_images() -> torch.Tensor:
    g = torch.Generator().manual_seed(5)
    smooth = F.interpolate(torch.rand(3, 3, SIZE // 16, SIZE // 16, generator=g), size=SIZE)
    return (smooth + 0.1 * torch.rand(3, 3, SIZE, SIZE, generator=g)).clamp(0, 1)


def nudge_outputs(module: torch.nn.Module) -> torch.utils.hooks.RemovableHandle:
    """A forward hook moving a float network's output a few ulps (what another device's
    kernels do)."""

    def hook(_m: torch.nn.Module, _i: object, out: torch.Tensor) -> torch.Tensor:
        return out + 3 * torch.finfo(out.dtype).eps * out.abs()

    return module.register_forward_hook(hook)
