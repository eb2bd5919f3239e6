"""Stitching: network A's feature tensor fed to network B's back end through a 1×1 convolution.

K. Lenc and A. Vedaldi, "Understanding image representations by measuring their equivariance
and equivalence", CVPR 2015 ("Franken-network": the talk's slides 23–27). Two representations are
*equivalent* when a linear map turns one into the other: a stitching layer ``E``, a 1×1
convolution with bias, is inserted between network A's front and network B's back; only
``E`` is trained, by SGD on B's task loss, and the stitched network's task metric against
B's own tells how interchangeable the two layers are (early layers are, deep ones less so)::

    x (B,3,H,W) ─A.front─▶ φ_A (B,Cin,h,w) ─E: 1×1 conv+bias─▶ ≈φ_B (B,Cout,h,w) ─B.back─▶ output
                (frozen)                    (this module: Stitch)                  (frozen)

For featcodec the same layer serves streams coded for A to a new back end B: A's codec
decodes ``F̂_A``, ``E`` maps it into B's representation, and B's back end runs on it
(``featcodec decode … --stitch``; :mod:`training.stitch_module`).

``E`` starts as the identity (channels equal; a truncated or zero-padded identity otherwise)
or as the closed-form regression ``φ_B ≈ E·φ_A`` (:class:`~models.equivariance.LinearFit`,
ridge-regularised least squares over every position of a set of images), the paper's first
estimate, from which SGD on B's loss goes on.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from featcodec.models.equivariance import LinearFit

__all__ = ["INITS", "MAX_CHANNELS", "Stitch", "fit_regression"]

INITS = ("regression", "identity")
"""How a stitching layer starts: the closed-form regression, or the identity."""

MAX_CHANNELS = 1 << 14
"""The most channels a stitching layer takes or gives (a checkpoint claiming more is refused
before anything is allocated)."""


class Stitch(nn.Module):
    """The stitching layer ``E``: a 1×1 convolution with bias, ``(B, Cin, h, w) → (B, Cout,
    h, w)``, starting as the (truncated / zero-padded) identity.

    Args:
        in_channels: channels ``Cin`` of A's tensor.
        out_channels: channels ``Cout`` of B's tensor at the split point.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        if not (1 <= in_channels <= MAX_CHANNELS and 1 <= out_channels <= MAX_CHANNELS):
            raise ValueError(
                f"Stitch: channels must lie in 1..{MAX_CHANNELS}, not {in_channels}→{out_channels}"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.empty(out_channels))
        self.reset_identity()

    def extra_repr(self) -> str:
        return f"{self.in_channels}→{self.out_channels}"

    @torch.no_grad()
    def reset_identity(self) -> None:
        """``E = I`` (the first ``min(Cin, Cout)`` channels copied, the others 0), bias 0."""
        self.weight.zero_()
        self.bias.zero_()
        n = min(self.in_channels, self.out_channels)
        self.weight[:n, :n, 0, 0] = torch.eye(n)

    @torch.no_grad()
    def load_fit(self, weight: Tensor, bias: Tensor) -> None:
        """Set ``E`` from a linear map ``weight`` (Cout, Cin) and ``bias`` (Cout,), e.g.
        :meth:`LinearFit.solve`'s."""
        if tuple(weight.shape) != (self.out_channels, self.in_channels) or tuple(bias.shape) != (
            self.out_channels,
        ):
            raise ValueError(
                f"Stitch.load_fit: a map of shape {tuple(weight.shape)} with bias "
                f"{tuple(bias.shape)} does not fit a stitch {self.in_channels}→{self.out_channels}"
            )
        self.weight.copy_(weight.reshape(self.weight.shape))
        self.bias.copy_(bias)

    def linear_fit(self, ridge: float = 1e-3) -> LinearFit:
        """An empty regression of this layer's shape (``update(φ_A, φ_B)``, then
        :meth:`load_fit` of its ``solve()``)."""
        return LinearFit(self.in_channels, self.out_channels, ridge)

    def forward(self, f: Tensor) -> Tensor:
        """``E·f + b`` at every position of A's tensor ``f`` (B, Cin, h, w) → (B, Cout, h, w)."""
        if f.dim() != 4 or f.shape[1] != self.in_channels:
            raise ValueError(
                f"Stitch: expected (B, {self.in_channels}, h, w), not {tuple(f.shape)}"
            )
        return F.conv2d(f, self.weight.to(f.dtype), self.bias.to(f.dtype))


@torch.no_grad()
def fit_regression(
    stitch: Stitch, pairs: Iterable[tuple[Tensor, Tensor]], ridge: float = 1e-3
) -> LinearFit:
    """Accumulate the regression ``φ_B ≈ E·φ_A + b`` over ``pairs`` of A's and B's tensors
    of the same images (``(B, Cin, h, w)``, ``(B, Cout, h, w)``: same stride) and set
    ``stitch`` from its solution; returns the fit (its normal equations, e.g. to sum over
    processes and solve again). ValueError when the two tensors' sizes differ (a 1×1 map
    cannot stitch different strides) or no pair was given."""
    fit = stitch.linear_fit(ridge)
    for fa, fb in pairs:
        if fa.shape[0] != fb.shape[0] or fa.shape[-2:] != fb.shape[-2:]:
            raise ValueError(
                f"A's tensor {tuple(fa.shape[1:])} and B's {tuple(fb.shape[1:])} differ in size: "
                "a 1×1 stitching layer needs both networks split at the same stride"
            )
        fit.update(fa, fb)
    stitch.load_fit(*fit.solve())
    return fit
