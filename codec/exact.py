"""Device-exact entropy parameters: the networks that decide how each latent element is coded
(the hyper-synthesis ``h_s``, the context networks and ``params``), evaluated in fixed point so
that every IEEE-754 device — any CPU, thread count, memory layout or GPU kernel — computes the
same integers.

The idea is that of Ballé, Johnston & Minnen, "Integer networks for data compression with
latent-variable models" (ICLR 2019): a decoder can only reproduce the encoder's CDF choice if
the computation that makes it is deterministic, and float convolutions are not (their
summation order depends on the kernel, the thread count, the layout). Here the trained float
network is converted after training, with no retraining::

    q_in  = round(x · 2^F)                                    integers, F fractional bits
    w_c   = round(W_c · 2^e_c),   b_c = round(B_c · 2^(e_c+F))   per output channel c, e_c
                                                               chosen so |w_c| ≤ 2^WEIGHT_BITS
    acc_c = Σ w_c · q_in + b_c                                in float64: every product and
                                                               every partial sum is an integer
                                                               below 2^53, so exact in any order
    q_out = ⌊(round(acc_c) + 2^(e_c−1)) / 2^e_c⌋               back to F fractional bits
    ReLU  = max(q, 0)

The ``round`` before the shift snaps the accumulator to its integer, so even a computation that
is off by a few ulps (an FFT convolution, a fused kernel) gives the same result. Every layer
checks that its worst case stays below 2^53 given its actual input (an integer bound, the same
on every device) and refuses the input otherwise. The network's last layer gives ``σ`` and
``μ`` with ``F`` fractional bits: ``μ = q_μ · 2^-F`` and the scale's table index is found by
comparing ``q_σ`` with integer thresholds (:func:`scale_thresholds`), so no ``log`` or ``exp``
is evaluated on the device.

Convolutions are computed as ``unfold`` and a float64 matrix product (a transposed convolution
as a convolution of the zero-stuffed input): a gather and a GEMM, in row chunks to bound memory.
A device without float64 (e.g. Apple's MPS) computes them on the CPU.

Cost: measured in the README (rate against the float parameters; time per decode).
"""

from __future__ import annotations

import decimal
import functools
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from compressai.layers import AttentionBlock
from compressai.models.sensetime import ResidualBottleneckBlock
from torch import Tensor, nn

from featcodec.codec.errors import BitstreamError, InputError


class RangeExceeded(InputError, BitstreamError):
    """A value too large for the fixed-point networks to compute exactly: an absurd input at
    the encoder (an :class:`InputError`), a forged stream at a decoder (a
    :class:`BitstreamError`)."""


FRAC_BITS = 12
"""Fractional bits of every activation (a resolution of 2.4e-4)."""

WEIGHT_BITS = 14
"""Largest weight magnitude after scaling, in bits: each output channel's weights are scaled by a
power of two so that the largest is in ``[2^13, 2^14)``."""

EXACT_LIMIT = float(1 << 53)
"""Integers below this are exact in float64; every accumulator stays below it."""

CHUNK_ELEMENTS = 1 << 24
"""Elements of one unfolded chunk (128 MiB in float64): the memory bound of a convolution."""


def to_fixed(x: Tensor) -> Tensor:
    """``round(x · 2^F)`` in float64, from a float tensor every device holds identically (a
    decoded latent, a median-shifted symbol): scaling by a power of two and rounding are exact
    IEEE operations."""
    return torch.round(x.to(torch.float32) * float(1 << FRAC_BITS)).to(torch.float64)


def round_shift(acc: Tensor, bits: int) -> Tensor:
    """``acc · 2^-bits`` rounded to the nearest integer, ties upward: ``⌊(acc + 2^(bits-1)) ·
    2^-bits⌋``. Exact for float64 integers below 2^53 (adding an integer and scaling by a
    power of two are exact), so every device gets the same integers; the one rounding shift of
    the fixed-point paths (the warp, the refined prediction, the attention gate)."""
    return torch.floor((acc + float(1 << (bits - 1))) * (1.0 / (1 << bits)))


def from_fixed(q: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """``q · 2^-F`` as ``dtype`` (one rounding of an exact value: the same on every device)."""
    return (q * (1.0 / (1 << FRAC_BITS))).to(dtype)


class ExactConv:
    """A fixed-point copy of one ``nn.Conv2d`` or ``nn.ConvTranspose2d`` (see the module)."""

    def __init__(self, conv: nn.Conv2d | nn.ConvTranspose2d) -> None:
        if conv.groups != 1 or conv.dilation != (1, 1):
            raise ValueError("exact networks support plain convolutions only")
        w = conv.weight.detach().to("cpu", torch.float32)
        self.transposed = isinstance(conv, nn.ConvTranspose2d)
        if self.transposed:  # (in, out, k, k) → the equivalent convolution's (out, in, k, k)
            w = w.transpose(0, 1).flip(-1, -2)
        if not bool(torch.isfinite(w).all()):
            raise ValueError("a weight is not finite")
        peak = w.abs().amax(dim=(1, 2, 3))
        _, exponent = torch.frexp(peak)  # peak < 2^exponent, exact
        shift = (WEIGHT_BITS - exponent).clamp_max(60)
        if bool((shift < 0).any()):
            raise ValueError(f"a weight of magnitude ≥ 2^{WEIGHT_BITS} cannot be held exactly")
        scale = torch.ldexp(torch.ones_like(peak), shift)
        self.weight = torch.round(w * scale[:, None, None, None]).to(torch.float64)
        bias = conv.bias.detach().to("cpu", torch.float32) if conv.bias is not None else None
        b = torch.zeros_like(peak) if bias is None else bias
        self.bias = torch.round(
            b.double() * torch.ldexp(torch.ones_like(peak).double(), shift + FRAC_BITS)
        )
        # the requantization q_out = ⌊(acc + 2^(e−1)) · 2^−e⌋, per output channel
        e = shift.to(torch.float64).reshape(1, -1, 1, 1)
        self.half = torch.ldexp(torch.full_like(e, 0.5), e)
        self.inverse = torch.ldexp(torch.ones_like(e), -e)
        # the worst case of Σ|w|·|q| + |b| for an input of peak 1 (checked against 2^53)
        self.weight_sum = float(self.weight.abs().sum(dim=(1, 2, 3)).max())
        self.bias_peak = float(self.bias.abs().max())
        self.stride = conv.stride
        self.padding = conv.padding
        self.output_padding = conv.output_padding if self.transposed else (0, 0)
        self.kernel = tuple(self.weight.shape[-2:])

    def _prepare(self, q: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """The input as the convolution sees it (zero-stuffed and padded if transposed), and
        the convolution's stride."""
        kh, kw = self.kernel
        if not self.transposed:
            ph, pw = self.padding
            return F.pad(q, (pw, pw, ph, ph)), self.stride
        sh, sw = self.stride
        b, c, h, w = q.shape
        stuffed = q.new_zeros(b, c, (h - 1) * sh + 1, (w - 1) * sw + 1)
        stuffed[..., ::sh, ::sw] = q
        (ph, pw), (oh, ow) = self.padding, self.output_padding
        return F.pad(stuffed, (kw - 1 - pw, kw - 1 - pw + ow, kh - 1 - ph, kh - 1 - ph + oh)), (
            1,
            1,
        )

    def accumulators(self, q: Tensor) -> Tensor:
        """``Σ w·q + b`` for an integer input (float64), exact; the one place that sums."""
        x, stride = self._prepare(q)
        kh, kw = self.kernel
        b, c, h, w = x.shape
        out_h, out_w = (h - kh) // stride[0] + 1, (w - kw) // stride[1] + 1
        weight = self.weight.to(q.device).reshape(self.weight.shape[0], -1)
        rows_per_chunk = max(1, CHUNK_ELEMENTS // max(1, c * kh * kw * out_w * b))
        parts = []
        for top in range(0, out_h, rows_per_chunk):
            rows = min(rows_per_chunk, out_h - top)
            band = x[..., top * stride[0] : (top + rows - 1) * stride[0] + kh, :]
            cols = F.unfold(band, (kh, kw), stride=stride)  # (b, c·kh·kw, rows·out_w)
            parts.append((weight @ cols).reshape(b, -1, rows, out_w))
        acc = torch.cat(parts, 2) if len(parts) > 1 else parts[0]
        return acc + self.bias.to(q.device).reshape(1, -1, 1, 1)

    def __call__(self, q: Tensor) -> Tensor:
        peak = float(q.abs().max()) if q.numel() else 0.0
        worst = self.weight_sum * peak + self.bias_peak
        if worst >= EXACT_LIMIT:
            raise RangeExceeded(
                "a value is beyond the range of the exact entropy parameters "
                f"(worst-case sum {worst:.3g} ≥ 2^53): an input far outside what the model was "
                "trained on, or a forged stream"
            )
        acc = torch.round(accumulate(self, q))
        return torch.floor((acc + self.half.to(q.device)) * self.inverse.to(q.device))


def accumulate(conv: ExactConv, q: Tensor) -> Tensor:
    """The accumulators of ``conv`` on ``q``: a seam for tests, which perturb the summation
    (another order, layout, thread count, a few ulps) to show the result does not move."""
    return conv.accumulators(q)


class ExactNetwork:
    """A fixed-point copy of a network of convolutions, ReLUs, residual blocks whose skip is
    the identity (compressai's ``ResidualBottleneckBlock``) and compressai's
    ``AttentionBlock`` (:class:`ExactAttention`), nested in ``nn.Sequential``s, built from its
    current weights. Called on fixed-point integers (:func:`to_fixed`), returns fixed-point
    integers, the same on every device. Anything else (a GDN, …) is refused with
    ``ValueError``."""

    def __init__(self, module: nn.Module) -> None:
        self.layers: list[ExactConv | ExactNetwork | ExactAttention | None] = []  # None: ReLU
        self.residual = False
        if _is_residual(module):
            self.residual = True
            module = nn.Sequential(*[m for n, m in module.named_children() if n != "skip"])
        for layer in _leaves(module):
            if isinstance(layer, nn.Conv2d | nn.ConvTranspose2d):
                self.layers.append(ExactConv(layer))
            elif isinstance(layer, nn.ReLU):
                self.layers.append(None)
            elif _is_residual(layer):
                self.layers.append(ExactNetwork(layer))
            elif isinstance(layer, AttentionBlock):
                self.layers.append(ExactAttention(layer))
            else:
                raise ValueError(f"exact networks cannot hold a {type(layer).__name__}")

    def __call__(self, q: Tensor) -> Tensor:
        device = q.device if _has_float64(q.device) else torch.device("cpu")
        q = x = q.to(device, torch.float64)
        for layer in self.layers:
            q = q.clamp_min(0) if layer is None else layer(q)
        return x + q if self.residual else q


class ExactUnit:
    """The residual unit of compressai's ``AttentionBlock``: ``ReLU(x + conv(x))``."""

    def __init__(self, unit: nn.Module) -> None:
        body = getattr(unit, "conv", None)
        if not isinstance(body, nn.Sequential) or not isinstance(
            getattr(unit, "relu", None), nn.ReLU
        ):
            raise ValueError(f"exact networks cannot hold a {type(unit).__name__}")
        self.body = ExactNetwork(body)

    def __call__(self, q: Tensor) -> Tensor:
        return (q + self.body(q)).clamp_min(0)


class ExactAttention:
    """compressai's ``AttentionBlock`` (Cheng et al., CVPR 2020, simplified) in fixed point:
    ``x + a(x)·sigmoid(b(x))``, its sigmoid an integer table (:func:`fixed_sigmoid`)."""

    def __init__(self, block: nn.Module) -> None:
        self.a = [ExactUnit(u) for u in block.conv_a]
        *units, last = list(block.conv_b)
        if not isinstance(last, nn.Conv2d):
            raise ValueError("exact networks: an attention block ends its b branch in a conv")
        self.b_units, self.b_conv = [ExactUnit(u) for u in units], ExactConv(last)

    def __call__(self, q: Tensor) -> Tensor:
        a, b = q, q
        for unit in self.a:
            a = unit(a)
        for unit in self.b_units:
            b = unit(b)
        b = self.b_conv(b)
        if a.numel() and float(a.abs().max()) >= 2.0 ** (52 - FRAC_BITS):
            raise RangeExceeded("a value is beyond the range of the exact attention block")
        gate = fixed_sigmoid(b)
        return q + round_shift(a * gate, FRAC_BITS)


@functools.cache
def _sigmoid_steps() -> Tensor:
    """``t_v`` for ``v = 2^(F−1)+1 … 2^F``: the smallest fixed-point ``k ≥ 0`` whose sigmoid,
    in fixed point and rounded half up, is at least ``v``: ``⌈2^F·logit((v − ½)/2^F)⌉``, in
    decimal arithmetic (the same on every machine)."""
    ctx = decimal.Context(prec=40)
    one = decimal.Decimal(1 << FRAC_BITS)
    steps = []
    for v in range((1 << (FRAC_BITS - 1)) + 1, (1 << FRAC_BITS) + 1):
        p = (decimal.Decimal(v) - decimal.Decimal("0.5")) / one
        logit = ctx.ln(p / (1 - p))
        steps.append(int((logit * one).to_integral_value(rounding=decimal.ROUND_CEILING)))
    return torch.tensor(steps, dtype=torch.int64)


def fixed_sigmoid(q: Tensor) -> Tensor:
    """``round(2^F · sigmoid(q / 2^F))`` of fixed-point integers ``q`` (float64), exactly:
    the count of table steps below ``|q|``, mirrored for negative ``q``."""
    steps = _sigmoid_steps().to(q.device)
    magnitude = q.abs().clamp_max(float(1 << 40)).to(torch.int64)
    upper = (1 << (FRAC_BITS - 1)) + torch.searchsorted(steps, magnitude.contiguous(), right=True)
    upper = upper.to(torch.float64)
    return torch.where(q >= 0, upper, float(1 << FRAC_BITS) - upper)


def supports_exact(module: nn.Module) -> bool:
    """Whether :class:`ExactNetwork` can hold ``module``."""
    try:
        ExactNetwork(module)
    except ValueError:
        return False
    return True


def _is_residual(module: nn.Module) -> bool:
    """A residual block whose skip is the identity: ``x + body(x)`` (compressai's
    ``ResidualBottleneckBlock`` with equal input and output channels)."""
    return isinstance(module, ResidualBottleneckBlock) and isinstance(module.skip, nn.Identity)


def _leaves(module: nn.Module) -> Iterator[nn.Module]:
    """The layers of nested ``nn.Sequential``s in order; a residual or attention block is one
    layer."""
    children = list(module.children())
    if not children or _is_residual(module) or isinstance(module, AttentionBlock):
        yield module
        return
    for child in children:
        yield from _leaves(child)


def _has_float64(device: torch.device) -> bool:
    return device.type in ("cpu", "cuda")


@functools.cache
def scale_thresholds(scale_min: float, scale_max: float, levels: int) -> tuple[int, ...]:
    """Integer thresholds ``T_k`` (fixed point, ``F`` fractional bits): a scale ``q_σ`` has table
    index ``#{k : q_σ ≥ T_k}``, the level nearest in ``ln σ`` of a log-uniform table.

    Computed with Python's decimal arithmetic at 40 digits, which is the same on every machine:
    the boundary between levels ``k`` and ``k+1`` is ``σ₀·(σ₁/σ₀)^((k+½)/(levels−1))``.
    """
    ctx = decimal.Context(prec=40)
    lo, hi = ctx.ln(decimal.Decimal(scale_min)), ctx.ln(decimal.Decimal(scale_max))
    one = decimal.Decimal(1 << FRAC_BITS)
    out = []
    for k in range(levels - 1):
        frac = (decimal.Decimal(k) + decimal.Decimal("0.5")) / decimal.Decimal(levels - 1)
        boundary = ctx.exp(lo + (hi - lo) * frac) * one
        out.append(int(boundary.to_integral_value(rounding=decimal.ROUND_CEILING)))
    return tuple(out)


def scale_indexes(q_sigma: Tensor, scale_min: float, scale_max: float, levels: int) -> Tensor:
    """Table index of each fixed-point scale (int32, on the CPU), by integer comparison."""
    thresholds = torch.tensor(scale_thresholds(scale_min, scale_max, levels), dtype=torch.int64)
    q = q_sigma.detach().cpu().to(torch.int64)
    return torch.searchsorted(thresholds, q.contiguous(), right=True).to(torch.int32)
