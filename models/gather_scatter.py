"""Gather–scatter execution of a sparse residual block (DynConv's inference strategy; see
:mod:`models.sparse`): the block's convolutions run on its active positions only, so the FLOPs
the mask saves become time saved.

For a basic block with mask ``G`` on its output grid and ``G⁺`` = ``G`` dilated by one pixel::

    x (B,C,H,W) ─ pad, channels-last ─▶ gather the 3×3 (stride s) patches at G⁺ ─▶ (N⁺, 9C)
        ─ @ conv1 with bn1 folded, relu ─▶ (N⁺, C₁) ─ scatter into a zero grid (B,h+2,w+2,C₁)
        ─ gather the 3×3 patches at G ─▶ (N, 9C₁) ─ @ conv2 with bn2 folded ─▶ (N, C₂)
        ─ added to the identity at G; relu everywhere ─▶ (B, C₂, h, w)

A bottleneck gathers single pixels for its 1×1 layers (conv1 on ``G`` spread onto the input
grid, conv3 on ``G``) and patches for its strided 3×3. Every gather is one advanced-indexing
read of a channels-last tensor and every convolution one matrix product (``addmm``), so the
same code runs on the CPU and on CUDA. Batch norm is folded into the convolutions (eval mode
only). The output equals the masked dense block's, ``relu(F(x)·G + identity)``, to float
tolerance: a 3×3 convolution at an active pixel reads only dilated-mask pixels of the layer
before, and those are computed exactly as the dense pass computes them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from featcodec.models.sparse import dilate, expand

if TYPE_CHECKING:
    from featcodec.models.sparse import SparseBlock

__all__ = ["conv_at", "fold_bn", "gather_scatter"]


def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """The weight ``(Cout, Cin, k, k)`` and bias ``(Cout,)`` of ``bn(conv(x))`` in eval mode."""
    if bn.training or bn.running_var is None or bn.running_mean is None:
        raise ValueError("gather–scatter folds batch norm: it needs eval mode and running stats")
    if conv.groups != 1 or conv.dilation != (1, 1):
        raise ValueError("gather–scatter runs ungrouped, undilated convolutions only")
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    weight = conv.weight * scale[:, None, None, None]
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    return weight, bias


def conv_at(grid: Tensor, weight: Tensor, bias: Tensor, where: Tensor, stride: int) -> Tensor:
    """A convolution evaluated at chosen output pixels only.

    Args:
        grid: the input, channels-last ``(B, H, W, C)``, already padded by ``k // 2``.
        weight: ``(Cout, C, k, k)``; bias ``(Cout,)``.
        where: output pixels ``(N, 3)`` as rows ``(b, i, j)``.
        stride: the convolution's stride.

    Returns:
        ``(N, Cout)``: the output at those pixels.
    """
    cout, k = weight.shape[0], weight.shape[-1]
    _, height, width, channels = grid.shape
    b, i, j = where.unbind(1)
    top_left = (b * height + i * stride) * width + j * stride  # (N,) rows of the flat grid
    di, dj = torch.meshgrid(
        torch.arange(k, device=where.device), torch.arange(k, device=where.device), indexing="ij"
    )
    offsets = (di * width + dj).flatten()  # (k·k,) in the weight's (kh, kw) order
    index = (top_left[:, None] + offsets[None, :]).flatten()  # (N·k·k,)
    rows = grid.reshape(-1, channels).index_select(0, index)  # one row-wise gather
    rows = rows.view(len(b), k * k * channels)
    return torch.addmm(bias, rows, weight.permute(0, 2, 3, 1).reshape(cout, -1).t())


def _scatter(rows: Tensor, where: Tensor, shape: tuple[int, int, int], pad: int) -> Tensor:
    """A zero channels-last grid ``(B, h + 2·pad, w + 2·pad, C)`` holding ``rows`` at
    ``where`` (offset by ``pad``)."""
    batch, h, w = shape
    grid = rows.new_zeros(batch, h + 2 * pad, w + 2 * pad, rows.shape[1])
    b, i, j = where.unbind(1)
    grid[b, i + pad, j + pad] = rows
    return grid


def _add_at(identity: Tensor, rows: Tensor, where: Tensor) -> Tensor:
    """``relu(identity + rows at where)``, as an NCHW tensor in channels-last memory."""
    out = identity.permute(0, 2, 3, 1).contiguous()
    b, i, j = where.unbind(1)
    out[b, i, j] += rows
    return torch.relu_(out).permute(0, 3, 1, 2)


def _pixels(mask: Tensor) -> Tensor:
    """Active pixels ``(N, 3)`` = rows ``(b, i, j)`` of a mask ``(B, 1, h, w)``."""
    return torch.nonzero(mask[:, 0] > 0)


@torch.no_grad()
def gather_scatter(block: SparseBlock, x: Tensor, mask: Tensor, identity: Tensor) -> Tensor:
    """Run an eval-mode sparse ``block`` on the active pixels of ``mask`` only.

    Args:
        block: a :class:`~models.sparse.SparseBasicBlock` or
            :class:`~models.sparse.SparseBottleneck` in eval mode.
        x: its input ``(B, C, H, W)``.
        mask: its hard mask ``(B, 1, h, w)`` on the output grid.
        identity: the shortcut ``(B, C_out, h, w)`` (the downsampled input where there is one).

    Returns:
        ``relu(F(x)·mask + identity)`` ``(B, C_out, h, w)``.
    """
    from featcodec.models.sparse import SparseBottleneck

    batch, _, height, width = x.shape
    h, w = mask.shape[-2:]
    where = _pixels(mask)
    if isinstance(block, SparseBottleneck):
        stride = block.conv2.stride[0]
        w1, b1 = fold_bn(block.conv1, block.bn1)
        w2, b2 = fold_bn(block.conv2, block.bn2)
        w3, b3 = fold_bn(block.conv3, block.bn3)
        spread = _pixels(expand(mask, stride, (height, width)))
        pixels = x.permute(0, 2, 3, 1).contiguous()
        hidden = torch.relu_(conv_at(pixels, w1, b1, spread, 1))
        grid = _scatter(hidden, spread, (batch, height, width), pad=1)
        hidden = torch.relu_(conv_at(grid, w2, b2, where, stride))
        rows = torch.addmm(b3, hidden, w3.flatten(1).t())  # the 1×1 conv3 on the rows
        return _add_at(identity, rows, where)
    stride = block.conv1.stride[0]
    w1, b1 = fold_bn(block.conv1, block.bn1)
    w2, b2 = fold_bn(block.conv2, block.bn2)
    grown = _pixels(dilate(mask))
    padded = F.pad(x, (1, 1, 1, 1)).permute(0, 2, 3, 1).contiguous()
    hidden = torch.relu_(conv_at(padded, w1, b1, grown, stride))
    grid = _scatter(hidden, grown, (batch, h, w), pad=1)
    rows = conv_at(grid, w2, b2, where, 1)
    return _add_at(identity, rows, where)
