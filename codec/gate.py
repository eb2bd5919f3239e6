"""Mask-gated coding of the base latent: positions outside a gate are not coded.

A sparse edge front (DynConv, :mod:`models.sparse`) computes only where its masks say; most of
a scene is background. The base layer can skip those positions too: a latent position whose
gate is 0 is not entropy coded, and both sides take ``Ŷ = μ`` there (the hyperprior's mean,
i.e. the symbol 0 that the Gaussian model would most likely have coded). Two ways for the
decoder to know the gate::

    "mask"     the front's mask of its last sparse block (B,1,h,w), max-pooled onto the latent
               grid (a position is coded if any of its pixels was computed), sent in the base
               string before the latent: a level k ∈ 0..31 (uniform), then one bit per
               position coded with the Bernoulli table p(1) = (k + ½)/32 — its bytes count
    "derived"  no side information: a 1×1 convolution on the hyperprior's (σ, μ), evaluated
               in fixed point like the entropy parameters (:mod:`codec.exact`), gates where its
               output is ≥ 0; trained end to end (straight-through), the rate term closing
               gates and the task distortion opening them

In training the gate multiplies: ``Ŷ = g·Ŷ + (1 − g)·μ`` and the latent's likelihood is 1 where
``g = 0`` (no bits). Everything the gate selects is covered by the string's check.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from featcodec.codec.entropy import CodingTables, GaussianCoder, RansReader, RansWriter
from featcodec.codec.errors import BitstreamError

__all__ = [
    "GATES",
    "LEVELS",
    "apply_gate",
    "gate_tables",
    "latent_gate",
    "read_gate",
    "read_gated",
    "write_gate",
    "write_gated",
]

GATES = ("mask", "derived")
"""How the decoder knows which latent positions were coded (none: every position is)."""

LEVELS = 32
"""Probability levels of the gate bits' Bernoulli model; the encoder sends one per string."""

_TOTAL = 1 << 16  # the coder's CDF precision
_LEVEL_ROW = LEVELS  # the table row of the level symbol itself (uniform)


@functools.cache
def gate_tables() -> CodingTables:
    """Rows ``0 … LEVELS−1``: one bit with p(1) = (k + ½)/LEVELS; row ``LEVELS``: the level,
    uniform over ``0 … LEVELS−1``. Each row ends in the coder's escape symbol (frequency 1)."""
    width = LEVELS + 2
    cdf = np.zeros((LEVELS + 1, width), dtype=np.int32)
    length = np.zeros(LEVELS + 1, dtype=np.int32)
    for k in range(LEVELS):
        one = min(max(round((k + 0.5) / LEVELS * (_TOTAL - 1)), 1), _TOTAL - 2)
        cdf[k, :4] = [0, _TOTAL - 1 - one, _TOTAL - 1, _TOTAL]
        length[k] = 4
    step = (_TOTAL - 1) // LEVELS
    cdf[_LEVEL_ROW, : LEVELS + 1] = np.arange(LEVELS + 1) * step
    cdf[_LEVEL_ROW, LEVELS + 1] = _TOTAL
    length[_LEVEL_ROW] = LEVELS + 2
    return CodingTables.of_arrays(cdf, length, np.zeros(LEVELS + 1, dtype=np.int32))


def latent_gate(mask: Tensor, multiple: int, downsample: int) -> Tensor:
    """The gate ``(B, 1, h', w')`` on the latent grid of a front mask ``(B, 1, h, w)`` on the
    feature grid: zero-padded like the features (to a multiple of ``multiple``), then a
    position is open if any of its ``2^downsample`` × ``2^downsample`` pixels is."""
    h, w = mask.shape[-2:]
    padded = F.pad(mask.float(), (0, (-w) % multiple, 0, (-h) % multiple))
    factor = 2**downsample
    return F.max_pool2d(padded, factor) if factor > 1 else padded


def apply_gate(
    y_hat: Tensor, means: Tensor, likelihoods: Tensor, gate: Tensor
) -> tuple[Tensor, Tensor]:
    """Training pass: ``(g·Ŷ + (1 − g)·μ, likelihoods^g)`` for a gate ``(B, 1, h, w)`` in
    {0, 1} (straight-through values allowed): a closed position has likelihood 1 (no bits),
    and the rate −log₂(p^g) = g·(−log₂ p) has the bounded gradient −log₂ p in g (the mixture
    g·p + 1 − g would give (1 − p)/p, which explodes on rare symbols)."""
    y = gate * y_hat + (1 - gate) * means
    return y, likelihoods.clamp_min(1e-9).pow(gate)


def write_gate(writer: RansWriter, gate: Tensor, valid: tuple[int, int]) -> None:
    """Code one element's gate ``(1, 1, h, w)`` of 0/1 inside its ``valid`` top-left corner
    (outside it the latent is padding, closed): its level, then its bits."""
    bits = (gate[..., : valid[0], : valid[1]] > 0).to(torch.int32).flatten()
    level = min(int(bits.float().mean().item() * LEVELS), LEVELS - 1)
    tables = gate_tables()
    writer.write(torch.tensor([level]), torch.tensor([_LEVEL_ROW], dtype=torch.int32), tables)
    writer.write(bits, torch.full_like(bits, level), tables)


def read_gate(
    reader: RansReader, valid: tuple[int, int], size: tuple[int, int] | None = None
) -> Tensor:
    """Inverse of :func:`write_gate`: the gate ``(1, 1, *size)`` (``size``: the latent grid,
    ``valid`` by default), closed outside ``valid``; :class:`BitstreamError` for a level or a
    bit that is not one."""
    tables = gate_tables()
    level = int(reader.read(torch.tensor([_LEVEL_ROW], dtype=torch.int32), tables)[0])
    if not 0 <= level < LEVELS:
        raise BitstreamError(f"the latent gate's level {level} is outside 0..{LEVELS - 1}")
    bits = reader.read(torch.full((valid[0] * valid[1],), level, dtype=torch.int32), tables)
    if bool(((bits != 0) & (bits != 1)).any()):
        raise BitstreamError("the latent gate holds a value that is not a bit")
    size = size or valid
    gate = torch.zeros(1, 1, *size)
    gate[..., : valid[0], : valid[1]] = bits.reshape(1, 1, *valid).float()
    return gate


def write_gated(
    writer: RansWriter,
    coder: GaussianCoder,
    y: Tensor,
    indexes: Tensor,
    means: Tensor,
    gate: Tensor,
) -> Tensor:
    """Code ``Y`` ``(1, M, h, w)`` at the open positions of ``gate`` ``(1, 1, h, w)`` only;
    returns ``Ŷ`` (``μ`` at the closed ones), which the string's check covers."""
    open_ = (gate > 0).expand_as(y)
    symbols = torch.round(y - means)
    cpu_open = open_.cpu()
    writer.write(symbols.cpu()[cpu_open], indexes[cpu_open], coder.coding_tables())
    y_hat = torch.where(open_, symbols + means, means)
    writer.mix(y_hat)
    return y_hat


def read_gated(
    reader: RansReader, coder: GaussianCoder, indexes: Tensor, means: Tensor, gate: Tensor
) -> Tensor:
    """Inverse of :func:`write_gated`."""
    open_ = (gate.to(means.device) > 0).expand_as(means)
    cpu_open = open_.cpu()
    symbols = torch.zeros(means.shape, dtype=torch.int32)
    symbols[cpu_open] = reader.read(indexes[cpu_open], coder.coding_tables())
    y_hat = torch.where(open_, symbols.to(means.device, means.dtype) + means, means)
    reader.mix(y_hat)
    return y_hat
