"""Equivariance maps: how a representation φ reflects an image transformation g.

K. Lenc and A. Vedaldi, "Understanding image representations by measuring their equivariance
and equivalence", CVPR 2015. A representation is *equivariant* to ``g`` when a map ``M_g``
predicts the representation of the transformed image from that of the image,
``φ(gx) ≈ M_g φ(x)``. For convolutional tensors the paper gives ``M_g`` a structure: a
spatial permutation (``g`` moved to the tensor's grid) followed by a 1×1 filter bank with
bias, learned first in closed form by regularised linear regression, then with the task loss::

    x ──φ──▶ φ(x) ──warp by g at stride s──▶ P_g φ(x) ──1×1 bank (A_g, b_g)──▶ ≈ φ(gx)
                     (codec.motion.warp:       (this module: FilterBank,
                      the permutation half)      fitted by LinearFit or by SGD)

This module holds the learned half and the geometry of ``g``; the permutation half is
:func:`codec.motion.warp` (with :func:`~codec.motion.affine_flow` and
:func:`~codec.motion.latent_affine`), which the callers compose with it — :mod:`models` sits
below :mod:`codec` in the import order, so it cannot call the warp itself, and no second warp
is written. The callers are ``featcodec eval equivariance`` (:mod:`eval.equivariance`) and the
P-frame codec's refined prediction (:mod:`codec.pframe`), where the same bank, conditioned
on the coded motion, corrects the warped reference.

* **Transformations** (:func:`transformation_theta`): horizontal and vertical flips, rotation
  by 90° and scaling by 1.25 (a zoom about the centre), each as the *backward* affine map
  ``θ`` (target pixel ↦ reference point, :mod:`codec.motion`'s convention); the random affine
  draws of the latent-motion experiment come from :mod:`eval.motion`. On a tensor whose size
  the stride divides, flips and 90° rotations map pixel centres to pixel centres: the
  permutation half is then exact.
* **The bank** (:class:`FilterBank`): ``out = A_0·w + b_0 + Σ_k d_k ⊙ (A_k·w + b_k)`` at
  every position, ``w`` the warped tensor and ``d`` (B, K, h, w) optional *motion descriptors*
  (:func:`motion_descriptors`: the local linear part of the flow and the bilinear blur it
  causes). ``K = 0`` is the paper's bank, one per transformation; ``K > 0`` one bank for a
  continuous family (the random affines, a video's motion), conditioned on the motion.
* **Closed form** (:class:`LinearFit`): ridge regression accumulated over batches,
  ``min ‖X·Wᵀ + b − Y‖² + λ·‖W‖²`` (the bias not penalised), solved in float64, ``λ`` chosen
  by two-fold cross-validation unless given.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "DESCRIPTORS",
    "TRANSFORMATIONS",
    "FilterBank",
    "LinearFit",
    "RIDGES",
    "invert_theta",
    "motion_descriptors",
    "transformation_theta",
]

TRANSFORMATIONS: dict[str, str] = {
    "hflip": "horizontal flip",
    "vflip": "vertical flip",
    "rot90": "rotation by 90° (counter-clockwise on screen, as torch.rot90)",
    "scale1.25": "scaling by 1.25 about the centre (a zoom in)",
}
"""The fixed transformations, by name (the random affine family is ``eval.motion``'s)."""

DESCRIPTORS = ("dvx_dx", "dvx_dy", "dvy_dx", "dvy_dy", "blur")
"""The motion descriptors of :func:`motion_descriptors`, in channel order."""


def transformation_theta(name: str, size: tuple[int, int], count: int = 1) -> Tensor:
    """The backward affine map ``θ`` (count, 2, 3), float64, of transformation ``name`` on an
    image of ``size = (H, W)``: ``target(p) = reference(θ·(p, 1))``, ``p`` in continuous
    pixel coordinates (pixel ``(i, j)`` centred at ``(j + 0.5, i + 0.5)``).

    Raises ValueError for an unknown name, or ``rot90`` on a non-square size."""
    H, W = size
    if name == "hflip":
        rows = [[-1.0, 0.0, W], [0.0, 1.0, 0.0]]
    elif name == "vflip":
        rows = [[1.0, 0.0, 0.0], [0.0, -1.0, H]]
    elif name == "rot90":
        if H != W:
            raise ValueError(f"rot90 needs a square image, not {H}×{W}")
        rows = [[0.0, -1.0, W], [1.0, 0.0, 0.0]]  # torch.rot90(x, 1, (-2, -1))
    elif name == "scale1.25":
        k = 1 / 1.25
        rows = [[k, 0.0, W / 2 * (1 - k)], [0.0, k, H / 2 * (1 - k)]]
    else:
        known = ", ".join([*TRANSFORMATIONS, "affine"])
        raise ValueError(f"unknown transformation {name!r}; known: {known}")
    return torch.tensor(rows, dtype=torch.float64).expand(count, 2, 3).clone()


def invert_theta(theta: Tensor) -> Tensor:
    """The inverse affine maps of ``theta`` (B, 2, 3): ``g⁻¹``'s backward map is ``g``'s
    forward map."""
    A, t = theta[..., :2], theta[..., 2:]
    inverse = torch.linalg.inv(A)
    return torch.cat((inverse, -inverse @ t), dim=-1)


def motion_descriptors(flow: Tensor) -> Tensor:
    """Descriptors (B, 5, h, w) of a backward latent flow (B, 2, h, w) (:data:`DESCRIPTORS`):
    the four entries of its Jacobian ``∂v/∂p`` (central differences, one-sided at the edges,
    0 along a side of one pixel) — the local linear part of the motion, ``A − I`` for an
    affine — and the blur of the bilinear warp at each position,
    ``f_x(1 − f_x) + f_y(1 − f_y)`` with ``f`` the fractional part of the source point
    (0 on the grid, 0.5 half-way between four pixels)."""
    if flow.dim() != 4 or flow.shape[1] != 2:
        raise ValueError(f"a flow has shape (B, 2, h, w), not {tuple(flow.shape)}")
    f = flow.float()
    parts = []
    for c in range(2):
        for dim in (-1, -2):  # ∂/∂x then ∂/∂y
            if f.shape[dim] < 2:
                parts.append(torch.zeros_like(f[:, c]))
            else:
                parts.append(torch.gradient(f[:, c], dim=dim)[0])
    frac = torch.frac(f - torch.floor(f))  # the source point's fraction = the flow's
    blur = (frac * (1 - frac)).sum(1)
    return torch.stack([*parts, blur], 1).to(flow.dtype)


class FilterBank(nn.Module):
    """The learned half of ``M_g``: a filter bank with bias on the warped tensor, ``k × k``
    (``k = 1``: the paper's 1×1 bank; ``k = 3``: each output also sees its neighbours, which
    undoes part of the blur of a sub-pixel warp), optionally conditioned on ``descriptors``
    motion descriptors per position.

    ``forward(w, d)`` = ``A_0 ∗ w + b_0 + Σ_k d_k ⊙ (A_k ∗ w + b_k)``, ``w`` (B, C, h, w), ``d``
    (B, K, h, w), ``∗`` a ``k × k`` convolution (zero padding). It starts as the identity
    (``A_0`` the centre tap's identity, everything else 0): the warp alone.

    Args:
        channels: channels ``C`` of the tensor.
        descriptors: number ``K`` of conditioning descriptors (0: one bank per transformation).
        kernel_size: ``k``, odd.
        out_channels: channels of the output (``channels`` by default).
    """

    def __init__(
        self,
        channels: int,
        descriptors: int = 0,
        kernel_size: int = 1,
        out_channels: int | None = None,
    ) -> None:
        super().__init__()
        out = channels if out_channels is None else out_channels
        if channels < 1 or out < 1 or descriptors < 0:
            raise ValueError("FilterBank: channels must be ≥ 1 and descriptors ≥ 0")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"FilterBank: the kernel size must be odd, not {kernel_size}")
        self.channels, self.out_channels, self.descriptors = channels, out, descriptors
        self.kernel_size = k = kernel_size
        # one convolution computes A_0 ∗ w + b_0, …, A_K ∗ w + b_K (a fixed-point copy of it
        # is what codec.exact runs for a video's prediction)
        self.conv = nn.Conv2d(channels, (descriptors + 1) * out, k, padding=k // 2)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.zero_()
            n = min(out, channels)
            self.weight[0, :n, :n, k // 2, k // 2] = torch.eye(n)

    @property
    def weight(self) -> Tensor:
        """The filters ``A_0 … A_K`` (K+1, out, C, k, k): a view of the convolution's."""
        k = self.kernel_size
        return self.conv.weight.view(self.descriptors + 1, self.out_channels, self.channels, k, k)

    @property
    def bias(self) -> Tensor:
        """The biases ``b_0 … b_K`` (K+1, out): a view of the convolution's."""
        return self.conv.bias.view(self.descriptors + 1, self.out_channels)

    def extra_repr(self) -> str:
        k = self.kernel_size
        return f"{self.channels}→{self.out_channels}, {k}×{k}, descriptors={self.descriptors}"

    def _check(self, w: Tensor, d: Tensor | None) -> None:
        if w.dim() != 4 or w.shape[1] != self.channels:
            raise ValueError(
                f"FilterBank: expected (B, {self.channels}, h, w), not {tuple(w.shape)}"
            )
        if not self.descriptors:
            return
        if d is None or d.dim() != 4 or d.shape[1] != self.descriptors:
            raise ValueError(f"FilterBank: needs descriptors (B, {self.descriptors}, h, w)")
        if d.shape[0] != w.shape[0] or d.shape[-2:] != w.shape[-2:]:
            raise ValueError(
                f"FilterBank: descriptors {tuple(d.shape)} do not match the tensor {tuple(w.shape)}"
            )

    def forward(self, w: Tensor, d: Tensor | None = None) -> Tensor:
        """The bank applied to the warped tensor ``w`` with descriptors ``d``."""
        self._check(w, d)
        return self.gate(self.conv(w), d)

    def gate(self, y: Tensor, d: Tensor | None) -> Tensor:
        """``y_0 + Σ_k d_k ⊙ y_k`` of the convolution's output ``y`` (B, (K+1)·out, h, w)."""
        if not self.descriptors:
            return y
        assert d is not None
        B, _, h, w = y.shape
        gain = torch.cat([torch.ones_like(d[:, :1]), d], 1).to(y.dtype).unsqueeze(2)
        return (y.view(B, self.descriptors + 1, self.out_channels, h, w) * gain).sum(1)

    @property
    def design_features(self) -> int:
        """``D``, the channels of :meth:`design`: ``C·k²·(K+1) + K``."""
        return self.channels * self.kernel_size**2 * (self.descriptors + 1) + self.descriptors

    def design(self, w: Tensor, d: Tensor | None = None) -> Tensor:
        """The regression inputs (B, D, h, w) whose linear map with bias is this bank: the
        ``k × k`` neighbourhoods ``u`` of ``w`` (zero padded), then ``d_1·u, …, d_K·u`` and
        ``d_1, …, d_K``."""
        self._check(w, d)
        k = self.kernel_size
        u = w if k == 1 else F.unfold(w, k, padding=k // 2).view(w.shape[0], -1, *w.shape[-2:])
        if not self.descriptors:
            return u
        assert d is not None
        d = d.to(w.dtype)
        return torch.cat([u, *(d[:, i : i + 1] * u for i in range(self.descriptors)), d], 1)

    @torch.no_grad()
    def load_fit(self, weight: Tensor, bias: Tensor) -> None:
        """Set the bank from a :class:`LinearFit` solution over :meth:`design`'s inputs
        (weight (out, D), bias (out,))."""
        C, K, O, k = self.channels, self.descriptors, self.out_channels, self.kernel_size
        if tuple(weight.shape) != (O, self.design_features) or tuple(bias.shape) != (O,):
            raise ValueError(
                f"FilterBank.load_fit: a fit of shape {tuple(weight.shape)} does not fit a "
                f"{k}×{k} bank {C}→{O} with {K} descriptors"
            )
        w = weight.to(self.weight)
        n = C * k * k  # unfold orders a neighbourhood channel-major, then row, then column
        for i in range(K + 1):
            self.weight[i] = w[:, i * n : (i + 1) * n].reshape(O, C, k, k)
        self.bias[0] = bias.to(self.bias)
        for i in range(K):
            self.bias[i + 1] = w[:, (K + 1) * n + i]


RIDGES = (1e-4, 1e-3, 1e-2, 1e-1)
"""The relative penalties :class:`LinearFit` chooses from by cross-validation."""


class LinearFit:
    """Ridge regression accumulated over batches: ``Y ≈ X·Wᵀ + b``.

    :meth:`update` adds the positions of a batch of tensors (optionally only where ``mask``
    is True) to the normal equations, in float64; :meth:`solve` returns ``W`` (out, in) and
    ``b`` (out,) minimising ``Σ ‖X·Wᵀ + b − Y‖² + λ·tr(XᵀX)/in·‖W‖²``: the penalty is
    relative to the inputs' mean energy (scale-free); the bias is not penalised.

    With ``ridge=None``, ``λ`` is chosen from :data:`RIDGES` by two-fold cross-validation:
    the batches go alternately to two folds, each ``λ`` is fitted on one fold and scored on
    the other (from the folds' moments, without the data), both ways, and the final fit uses
    every batch (:attr:`chosen` is the ``λ`` used).

    Args:
        in_features: channels of the inputs ``X``.
        out_features: channels of the targets ``Y``.
        ridge: the relative penalty ``λ`` (≥ 0), or ``None`` to choose it.
    """

    def __init__(self, in_features: int, out_features: int, ridge: float | None = None) -> None:
        if in_features < 1 or out_features < 1:
            raise ValueError("LinearFit: feature counts must be ≥ 1")
        if ridge is not None and not (ridge >= 0 and math.isfinite(ridge)):
            raise ValueError(f"LinearFit: the ridge must be a finite number ≥ 0, not {ridge}")
        self.in_features, self.out_features, self.ridge = in_features, out_features, ridge
        n = in_features + 1
        self.xx = [torch.zeros(n, n, dtype=torch.float64) for _ in range(2)]
        self.xy = [torch.zeros(n, out_features, dtype=torch.float64) for _ in range(2)]
        self.yy = [0.0, 0.0]
        self.counts = [0, 0]
        self.chosen: float | None = ridge
        self._updates = 0

    @property
    def count(self) -> int:
        """Positions added so far."""
        return sum(self.counts)

    @staticmethod
    def _rows(t: Tensor, mask: Tensor | None) -> Tensor:
        rows = t.detach().to(torch.float64).movedim(1, -1).reshape(-1, t.shape[1])
        if mask is None:
            return rows
        keep = mask.detach().expand(t.shape[0], 1, *t.shape[2:]).reshape(-1).bool()
        return rows[keep.to(rows.device)]

    def update(self, x: Tensor, y: Tensor, mask: Tensor | None = None) -> None:
        """Add the positions of ``x`` (B, in, …) and ``y`` (B, out, …) (same batch and
        positions; 2-D ``(N, in)``/``(N, out)`` rows too), where ``mask`` (B, 1, …) holds."""
        if x.shape[1] != self.in_features or y.shape[1] != self.out_features:
            raise ValueError(
                f"LinearFit: expected {self.in_features} → {self.out_features} channels, "
                f"not {x.shape[1]} → {y.shape[1]}"
            )
        if x.shape[0] != y.shape[0] or x.shape[2:] != y.shape[2:]:
            raise ValueError(
                f"LinearFit: inputs {tuple(x.shape)} and targets "
                f"{tuple(y.shape)} differ in batch or positions"
            )
        xr, yr = self._rows(x, mask).cpu(), self._rows(y, mask).cpu()
        xr = torch.cat([xr, torch.ones_like(xr[:, :1])], 1)
        fold = self._updates % 2
        self._updates += 1
        self.xx[fold] += xr.T @ xr
        self.xy[fold] += xr.T @ yr
        self.yy[fold] += float((yr * yr).sum())
        self.counts[fold] += xr.shape[0]

    def combine(self, total: Callable[[Tensor], Tensor]) -> None:
        """Replace every accumulated moment by ``total(moment)`` (float64 CPU tensors in and
        out): under DDP, the sum over processes, so that each solves the same regression."""
        self.xx = [total(t) for t in self.xx]
        self.xy = [total(t) for t in self.xy]
        sums = total(torch.tensor([*self.yy, *self.counts], dtype=torch.float64))
        self.yy = [float(sums[0]), float(sums[1])]
        self.counts = [round(float(sums[2])), round(float(sums[3]))]

    def _solution(self, xx: Tensor, xy: Tensor, ridge: float) -> Tensor:
        n = self.in_features
        a = xx.clone()
        energy = float(a.diagonal()[:n].sum()) / n
        a.diagonal()[:n] += ridge * max(energy, 1e-12)
        factor, info = torch.linalg.cholesky_ex(a)
        if int(info) == 0:
            return torch.cholesky_solve(xy, factor)
        # singular (no ridge, too few positions): the least-norm solution
        return torch.linalg.lstsq(a, xy, driver="gelsd").solution

    def _error(self, solution: Tensor, fold: int) -> float:
        """``Σ ‖X·S − Y‖²`` over ``fold``'s positions, from its moments."""
        quad = (solution * (self.xx[fold] @ solution)).sum()
        return float(quad - 2 * (solution * self.xy[fold]).sum()) + self.yy[fold]

    def _choose(self) -> float:
        best, chosen = math.inf, RIDGES[0]
        for ridge in RIDGES:
            error = sum(
                self._error(self._solution(self.xx[1 - f], self.xy[1 - f], ridge), f)
                for f in (0, 1)
            )
            if error < best:
                best, chosen = error, ridge
        return chosen

    def solve(self) -> tuple[Tensor, Tensor]:
        """``(W, b)`` in float32; ValueError before any position was added."""
        if self.count == 0:
            raise ValueError("LinearFit: no position to fit (every mask was empty)")
        if self.ridge is None:
            both = min(self.counts) > 0
            self.chosen = self._choose() if both else RIDGES[1]
        assert self.chosen is not None
        solution = self._solution(self.xx[0] + self.xx[1], self.xy[0] + self.xy[1], self.chosen)
        n = self.in_features
        return solution[:n].T.float().contiguous(), solution[n].float()
