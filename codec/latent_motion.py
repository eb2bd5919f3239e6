"""Latent motion: the decoded side information as the motion of a stride-``s`` feature tensor.

Ulhaq & Bajić's observation (:mod:`codec.motion`): the motion of a stride-``s`` tensor is the
input motion sampled at the tensor's positions and rescaled, ``ṽ(x, y) ≈ v(s·x, s·y)/s``. The
server turns the motion it decoded (:mod:`codec.motion_side_info`) into that latent flow and
warps the previous decoded tensor with it::

    AffineMotion theta      ─ affine_flow(latent_affine(theta, s)) ─┐
    FlowMotion (2, hb, wb)  ─ bilinear at the latent centres, ÷ s ──┴─▶ ṽ (1, 2, h, w) ─▶ warp

Latent pixel ``(i, j)`` is centred at input ``(s·(j + 0.5), s·(i + 0.5))``; coarse cell ``k``
at ``block·(k + 0.5)`` input px (the :mod:`codec.motion` conventions).
"""

from __future__ import annotations

from numbers import Integral

import torch
import torch.nn.functional as F
from torch import Tensor

from featcodec.codec.errors import InputError
from featcodec.codec.motion import affine_flow, check_size, check_stride, latent_affine
from featcodec.codec.motion_side_info import AffineMotion, FlowMotion, Motion

__all__ = ["latent_motion"]


def latent_motion(
    motion: Motion, stride: int, size: tuple[int, int], input_size: tuple[int, int]
) -> Tensor:
    """The backward flow ``(1, 2, h, w)`` in latent pixels of a stride-``stride`` tensor of
    spatial ``size`` ``(h, w)``, for an input of ``input_size`` ``(H, W)``.

    An affine goes through ``affine_flow(latent_affine(theta, stride), size)`` (exact at every
    latent centre). A coarse flow is sampled bilinearly at the latent centres
    ``stride·(j + 0.5)`` input px, coarse cell ``k`` having its centre at ``block·(k + 0.5)``
    (border values beyond the outer centres), and divided by the stride. The result is float32
    on the CPU; callers move it.
    """
    s = check_stride(stride)
    h, w = check_size(size)
    H, W = check_size(input_size)
    if isinstance(motion, AffineMotion):
        theta = motion.theta
        if not isinstance(theta, Tensor) or tuple(theta.shape) != (2, 3):
            raise InputError("edge motion: an affine theta must have shape (2, 3)")
        theta = theta.detach().to("cpu", torch.float32).unsqueeze(0)
        return affine_flow(latent_affine(theta, s), (h, w))
    if isinstance(motion, FlowMotion):
        f = motion.flow
        if not isinstance(f, Tensor) or f.dim() != 3 or f.shape[0] != 2:
            raise InputError("edge motion: a coarse flow must have shape (2, hb, wb)")
        b = motion.block
        if isinstance(b, bool) or not isinstance(b, Integral) or b < 1:
            raise InputError(f"edge motion: the block must be an integer >= 1, not {b!r}")
        if not f.is_floating_point():
            raise InputError(f"edge motion: the coarse flow must be floating-point, not {f.dtype}")
        hb, wb = f.shape[-2:]
        if (hb, wb) != (-(-H // b), -(-W // b)):
            raise InputError(
                f"edge motion: a {hb}×{wb} grid of {b} px blocks does not cover a {H}×{W} input"
            )
        f = f.detach().to("cpu", torch.float32).unsqueeze(0)
        if not bool(torch.isfinite(f).all()):
            raise InputError("edge motion: the coarse flow contains NaN or infinite values")
        # latent centre x = s·(j + 0.5) input px  ↦  grid_sample coordinate 2x/(block·wb) − 1
        gx = (torch.arange(w, dtype=torch.float64) + 0.5) * (2.0 * s / (b * wb)) - 1.0
        gy = (torch.arange(h, dtype=torch.float64) + 0.5) * (2.0 * s / (b * hb)) - 1.0
        grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1).to(torch.float32)
        out = F.grid_sample(
            f, grid.unsqueeze(0), mode="bilinear", padding_mode="border", align_corners=False
        )
        return out / s
    raise InputError(f"edge motion: unknown motion {type(motion).__name__}")
