"""Spatially sparse residual blocks (DynConv: Verelst & Tuytelaars, "Dynamic Convolutions:
Exploiting Spatial Sparsity for Faster Inference", CVPR 2020; ``../shared/seeds/001_*``).

A residual block computes its residual only where a learned spatial mask says so::

    X_b ──┬── mask unit ──▶ m (B,1,h,w) ──Gumbel──▶ G_b ∈ {0,1}  (one decision per output pixel)
          ├── F (conv-bn-relu-conv-bn) ─────────────▶ F(X_b) ∘ G_b ─┐
          └── identity (or the 1×1 downsample) ─────────────────────┴─(+)─ relu ─▶ X_{b+1}

    X_{b+1} = r(F(X_b) ∘ G_b + X_b)

* **Mask unit** (:class:`MaskUnit`): a 3×3 convolution to one logit channel, at the block's
  stride, plus a per-image bias from a linear layer on the globally pooled input.
* **Gumbel straight-through** (:func:`gumbel_mask`): in training the forward pass uses the hard
  decision σ((m + g₁ − g₂)/τ) > 0.5 with Gumbel noise g₁, g₂, the backward pass the gradient of
  the soft value; at inference the decision is m ≥ 0, without noise.
* **Dilation**: a 3×3 convolution at an active output pixel reads its 3×3 neighbourhood, so the
  layer before it must run on the mask dilated by one pixel (:func:`dilate`), or, across a
  stride, on the mask spread onto the input grid (:func:`expand`).
* **FLOPs** (:meth:`SparseBlock.flops`): multiply-accumulates of the block's masked
  convolutions, dense (every position) and executed (active positions), counted as the slides
  do for their blocks — ``F_b,sp = N_dilated·(first layer) + N·(the rest)``; the mask unit and
  the downsample run densely and are counted apart (:class:`BlockFlops`).
* **Sparsity losses** (:class:`SparsityConfig`): for a budget θ and executed fractions
  ``r_b = F_b,sp / F_b``: network ``(ΣF_sp/ΣF − θ)²``, per-block lower ``max(0, pθ − r_b)²`` and
  upper ``max(0, r_b − (1 − p(1 − θ)))²``, with p annealed from 1 (every block held at θ) to 0
  (the budget spread freely) over the first part of training; ``L = L_task + α·(…)``.

:func:`sparsify` turns the residual blocks of a ResNet's first stages into sparse ones that
share the dense blocks' layers (so ``state_dict`` keys stay, plus ``mask_unit.*``).
:mod:`models.gather_scatter` runs an eval-mode block on its active positions only; its output
equals the masked dense output to float tolerance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Self

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck

__all__ = [
    "STAGES",
    "BlockFlops",
    "MaskUnit",
    "SparseBasicBlock",
    "SparseBlock",
    "SparseBottleneck",
    "SparsityConfig",
    "anneal_p",
    "dilate",
    "expand",
    "gumbel_mask",
    "sparse_blocks",
    "sparsify",
]

STAGES = ("layer1", "layer2", "layer3", "layer4")
"""The residual stages of a ResNet, in order; :func:`sparsify` makes a prefix of them sparse."""

EXECUTIONS = ("masked", "gather")
"""How an eval-mode block runs: the dense residual times the mask, or gather–scatter."""


# --------------------------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------------------------


class MaskUnit(nn.Module):
    """Mask logits of a block: ``conv3x3(x) + fc(avgpool(x))``.

    Args:
        channels: input channels of the block.
        stride: the block's stride (the mask lives on the output grid).

    Shapes: ``x`` ``(B, C, H, W)`` → logits ``(B, 1, ceil(H/stride), ceil(W/stride))``.
    """

    def __init__(self, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, kernel_size=3, stride=stride, padding=1)
        self.fc = nn.Linear(channels, 1)
        # start with every position active (logit ≈ +2): a pretrained block keeps its output
        # until the sparsity loss asks for less
        nn.init.normal_(self.conv.weight, std=1e-3)
        nn.init.constant_(self.conv.bias, 2.0)
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: Tensor) -> Tensor:
        bias = self.fc(x.mean(dim=(2, 3)))
        return self.conv(x) + bias[:, :, None, None]

    def flops_per_position(self) -> int:
        """Multiply-accumulates per output position (the conv; the fc is per image)."""
        return 9 * self.conv.in_channels


def gumbel_mask(logits: Tensor, temperature: float = 1.0, noise: bool = True) -> Tensor:
    """The straight-through Gumbel-softmax decision of two classes (execute / skip).

    Forward: ``1.0`` where ``σ((m + g₁ − g₂)/τ) > 0.5`` (g₁, g₂ Gumbel noise when ``noise``),
    else ``0.0``; backward: the gradient of σ((m + g₁ − g₂)/τ). Use it in training; at inference
    the decision is ``(logits >= 0)`` (see :meth:`SparseBlock.decide`).
    """
    if temperature <= 0:
        raise ValueError(f"Gumbel temperature must be positive, got {temperature}")
    if noise:
        tiny = torch.finfo(logits.dtype).tiny
        u = torch.rand((2, *logits.shape), device=logits.device, dtype=logits.dtype)
        g = -torch.log((-torch.log(u.clamp_min(tiny))).clamp_min(tiny))  # Gumbel(0, 1)
        logits = logits + g[0] - g[1]
    soft = torch.sigmoid(logits / temperature)
    hard = (soft > 0.5).to(soft.dtype)
    return hard + (soft - soft.detach())  # exactly hard forward, the soft gradient backward


def dilate(mask: Tensor, radius: int = 1) -> Tensor:
    """A mask ``(B, 1, h, w)`` grown by ``radius`` pixels (3×3 max for radius 1); the maximum
    passes the gradient to the active pixel that set it."""
    if radius == 0:
        return mask
    return F.max_pool2d(mask, 2 * radius + 1, stride=1, padding=radius)


def expand(mask: Tensor, stride: int, size: tuple[int, int]) -> Tensor:
    """The input pixels ``(B, 1, *size)`` that a 3×3, padding-1, stride-``stride`` convolution
    reads to produce the active pixels of ``mask`` (its output grid)."""
    if stride == 1:
        return dilate(mask)
    grid = mask.new_zeros(mask.shape[0], 1, *size)
    grid[:, :, ::stride, ::stride] = mask  # output pixel (i, j) is centred on (s·i, s·j)
    return dilate(grid)


# --------------------------------------------------------------------------------------------
# FLOPs
# --------------------------------------------------------------------------------------------


@dataclass
class BlockFlops:
    """Multiply-accumulates of one block's masked layers over a batch.

    Attributes:
        dense: with every position active (a Python number).
        executed: at the active (and dilated) positions; a tensor that carries the masks'
            straight-through gradient in training.
        downsample: the shortcut's 1×1 convolution, which runs densely (0 without one).
        mask_unit: the mask unit, which runs densely (and only in the sparse block).
    """

    dense: float
    executed: Tensor
    downsample: float
    mask_unit: float

    @property
    def fraction(self) -> Tensor:
        """``r_b = F_b,sp / F_b``."""
        return self.executed / self.dense


# --------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------


class SparseBlock(nn.Module):
    """What both sparse residual blocks share: the mask unit, the decision, the masks of the
    last forward pass and how an eval-mode pass executes.

    Attributes:
        temperature: Gumbel temperature τ of training passes.
        execution: ``"masked"`` (the dense residual times the mask) or ``"gather"`` (only the
            active positions computed, :mod:`models.gather_scatter`); eval mode only.
        mask: the hard mask ``(B, 1, h, w)`` of the last forward pass (straight-through in
            training), ``None`` before the first.
    """

    fx_leaf: ClassVar[bool] = True  # models.split traces it as one node (data-dependent shapes)
    mask_unit: MaskUnit
    downsample: nn.Module | None
    stride: int
    temperature: float
    execution: str
    mask: Tensor | None
    input_size: tuple[int, int]

    @classmethod
    def _adopt(cls, block: nn.Module, names: tuple[str, ...]) -> Self:
        """A new sparse block holding ``block``'s layers ``names`` (shared, not copied)."""
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        for name in names:
            setattr(new, name, getattr(block, name))
        new.stride = block.stride
        new.mask_unit = MaskUnit(block.conv1.in_channels, block.stride)
        new.temperature = 1.0
        new.execution = "masked"
        new.mask = None
        new.input_size = (0, 0)
        new.train(block.training)
        return new

    def decide(self, x: Tensor) -> Tensor:
        """The mask ``(B, 1, h, w)`` of input ``x``: Gumbel straight-through in training, the
        sign of the logits at inference."""
        logits = self.mask_unit(x)
        if self.training:
            return gumbel_mask(logits, self.temperature)
        return (logits >= 0).to(logits.dtype)

    def identity(self, x: Tensor) -> Tensor:
        return x if self.downsample is None else self.downsample(x)

    def forward(self, x: Tensor) -> Tensor:
        mask = self.decide(x)
        self.mask, self.input_size = mask, (x.shape[-2], x.shape[-1])
        identity = self.identity(x)
        if not self.training and self.execution == "gather":
            from featcodec.models.gather_scatter import gather_scatter

            return gather_scatter(self, x, mask, identity)
        if self.execution not in EXECUTIONS:
            raise ValueError(f"unknown execution {self.execution!r}; known: {EXECUTIONS}")
        return torch.relu(self.residual(x) * mask + identity)

    def residual(self, x: Tensor) -> Tensor:
        """``F(x)``, dense, before the mask and the addition."""
        raise NotImplementedError

    def flops(self, mask: Tensor | None = None, input_size: tuple[int, int] = (0, 0)) -> BlockFlops:
        """Multiply-accumulates of this block for ``mask`` on inputs of ``input_size`` (the
        last pass's mask and input when not given)."""
        raise NotImplementedError

    def _overhead(self, positions: int, batch: int) -> tuple[float, float]:
        """``(downsample, mask unit)`` multiply-accumulates for ``batch`` outputs of
        ``positions`` pixels."""
        down = 0
        if self.downsample is not None:
            conv = self.downsample[0]
            down = positions * conv.in_channels * conv.out_channels
        unit = positions * self.mask_unit.flops_per_position() + self.mask_unit.fc.in_features
        return float(batch * down), float(batch * unit)

    def _mask_or_last(
        self, mask: Tensor | None, input_size: tuple[int, int]
    ) -> tuple[Tensor, tuple[int, int]]:
        mask = self.mask if mask is None else mask
        if mask is None:
            raise ValueError("no mask: run the block first or pass one")
        return mask, (input_size if input_size[0] else self.input_size)


class SparseBasicBlock(SparseBlock, BasicBlock):
    """torchvision's :class:`BasicBlock` (3×3 conv-bn-relu, 3×3 conv-bn) with a spatial mask;
    conv1 runs on the dilated mask, conv2 on the mask."""

    @classmethod
    def from_dense(cls, block: BasicBlock) -> SparseBasicBlock:
        """A sparse block sharing ``block``'s layers (its weights, its ``state_dict`` keys)."""
        return cls._adopt(block, ("conv1", "bn1", "relu", "conv2", "bn2", "downsample"))

    def residual(self, x: Tensor) -> Tensor:
        return self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))

    def flops(self, mask: Tensor | None = None, input_size: tuple[int, int] = (0, 0)) -> BlockFlops:
        mask, input_size = self._mask_or_last(mask, input_size)
        batch, positions = mask.shape[0], mask.shape[-2] * mask.shape[-1]
        first = 9 * self.conv1.in_channels * self.conv1.out_channels
        second = 9 * self.conv2.in_channels * self.conv2.out_channels
        executed = dilate(mask).sum() * first + mask.sum() * second
        dense = float(batch * positions * (first + second))
        return BlockFlops(dense, executed, *self._overhead(positions, batch))


class SparseBottleneck(SparseBlock, Bottleneck):
    """torchvision's :class:`Bottleneck` (1×1 reduce, 3×3 at the stride, 1×1 expand) with a
    spatial mask; conv1 runs on the mask spread onto the input grid, conv2 and conv3 on the
    mask."""

    @classmethod
    def from_dense(cls, block: Bottleneck) -> SparseBottleneck:
        """A sparse block sharing ``block``'s layers (its weights, its ``state_dict`` keys)."""
        names = ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "relu", "downsample")
        return cls._adopt(block, names)

    def residual(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))

    def flops(self, mask: Tensor | None = None, input_size: tuple[int, int] = (0, 0)) -> BlockFlops:
        mask, input_size = self._mask_or_last(mask, input_size)
        batch, positions = mask.shape[0], mask.shape[-2] * mask.shape[-1]
        first = self.conv1.in_channels * self.conv1.out_channels
        rest = 9 * self.conv2.in_channels * self.conv2.out_channels
        rest += self.conv3.in_channels * self.conv3.out_channels
        spread = expand(mask, self.conv2.stride[0], input_size)
        executed = spread.sum() * first + mask.sum() * rest
        dense = float(batch * (input_size[0] * input_size[1] * first + positions * rest))
        return BlockFlops(dense, executed, *self._overhead(positions, batch))


# --------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------


def sparsify(model: nn.Module, until: str) -> nn.Module:
    """Make every residual block of ``model``'s stages ``layer1`` … ``until`` sparse, in place.

    Args:
        model: a ResNet, or a task network on a ResNet trunk (stages ``layer1`` … ``layer4`` as
            attributes), its blocks torchvision's ``BasicBlock`` or ``Bottleneck``.
        until: the last sparse stage (``"layer2"``: the front of the default split).

    Returns:
        ``model``; the sparse blocks share the dense blocks' layers.

    Raises:
        ValueError: an unknown stage name, or a model without ResNet stages.
    """
    if until not in STAGES:
        raise ValueError(f"sparse stages end at one of {', '.join(STAGES)}, not {until!r}")
    for stage in STAGES[: STAGES.index(until) + 1]:
        layer = getattr(model, stage, None)
        if not isinstance(layer, nn.Sequential):
            raise ValueError(
                f"a sparse front needs a ResNet trunk (stages layer1 … layer4); "
                f"{type(model).__name__} has no {stage}"
            )
        for i, block in enumerate(layer):
            if isinstance(block, SparseBlock):
                continue
            if isinstance(block, Bottleneck):
                layer[i] = SparseBottleneck.from_dense(block)
            elif isinstance(block, BasicBlock):
                layer[i] = SparseBasicBlock.from_dense(block)
            else:
                raise ValueError(f"{stage}.{i} is a {type(block).__name__}, not a residual block")
    return model


def sparse_blocks(model: nn.Module) -> list[tuple[str, SparseBlock]]:
    """The sparse blocks of ``model`` with their names, in order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, SparseBlock)]


# --------------------------------------------------------------------------------------------
# Sparsity losses
# --------------------------------------------------------------------------------------------


def anneal_p(progress: float, anneal: float) -> float:
    """The bound weight p at ``progress`` ∈ [0, 1] of training: ``cos²(π/2 · t)`` with
    ``t = progress / anneal`` clipped to [0, 1] — 1 at the start (every block held at θ), 0
    from ``anneal`` of training on (the budget spread freely among the blocks)."""
    if anneal <= 0:
        return 0.0
    t = min(max(progress / anneal, 0.0), 1.0)
    return 0.0 if t == 1.0 else math.cos(math.pi / 2 * t) ** 2


@dataclass(frozen=True)
class SparsityConfig:
    """How a sparse front is trained: the FLOP budget and its three losses, weighted, and the
    Gumbel temperature (each default here only).

    Attributes:
        budget: θ ∈ (0, 1], the executed fraction of the sparse blocks' FLOPs to aim for.
        weight: α, the weight of the sparsity losses against the task loss.
        anneal: fraction of training over which p goes from 1 to 0 (:func:`anneal_p`).
        temperature: Gumbel temperature τ of the training masks.
    """

    budget: float = 0.5
    weight: float = 10.0
    anneal: float = 0.33
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.budget <= 1:
            raise ValueError(f"the FLOP budget θ must lie in (0, 1], got {self.budget}")
        if self.weight < 0 or not 0 <= self.anneal <= 1 or self.temperature <= 0:
            raise ValueError(
                "sparsity: weight must be ≥ 0, anneal within [0, 1] and temperature > 0"
            )

    def terms(self, flops: list[BlockFlops], progress: float) -> dict[str, Tensor]:
        """``network``, ``lower``, ``upper`` (unweighted), ``fraction`` (ΣF_sp/ΣF) and
        ``loss`` = α·(network + lower + upper), for the blocks' FLOPs of one pass."""
        if not flops:
            raise ValueError("no sparse block ran: nothing to hold to a budget")
        theta, p = self.budget, anneal_p(progress, self.anneal)
        executed = torch.stack([f.executed for f in flops]).float()
        dense = torch.tensor([f.dense for f in flops], device=executed.device)
        ratios = executed / dense
        fraction = executed.sum() / dense.sum()
        network = (fraction - theta) ** 2
        lower = torch.relu(p * theta - ratios).pow(2).mean()
        upper = torch.relu(ratios - (1 - p * (1 - theta))).pow(2).mean()
        loss = self.weight * (network + lower + upper)
        return {
            "loss": loss,
            "network": network,
            "lower": lower,
            "upper": upper,
            "fraction": fraction,
            "p": torch.tensor(p),
        }


# --------------------------------------------------------------------------------------------
# Whole networks
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def count_flops(module: nn.Module, x: Tensor) -> dict[str, float]:
    """Multiply-accumulates of ``module(x)`` per image: ``dense`` (every sparse block computing
    everywhere, no mask units) and ``executed`` (sparse blocks at their active positions, plus
    their mask units). Counted: convolutions and linear layers; batch norm, activations and
    pooling are not (as in the slides' formulas).

    Returns:
        ``{"dense", "executed", "fraction"}`` (fraction = executed / dense),
        ``"sparse_dense"`` and ``"sparse_executed"`` (ΣF and ΣF_sp of the sparse blocks alone,
        per image) and ``"sparse_fraction"``: their ratio (what the budget θ holds).
    """
    blocks = [m for _, m in sparse_blocks(module)]
    inside = {id(m) for b in blocks for m in b.modules()}
    counted: list[float] = []

    def hook(layer: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        if isinstance(layer, nn.Conv2d):
            k = layer.kernel_size[0] * layer.kernel_size[1]
            per_out = k * layer.in_channels // layer.groups
            counted.append(float(output.numel() * per_out))
        else:
            counted.append(float(output.numel() * layer.in_features))

    handles = [
        m.register_forward_hook(hook)
        for m in module.modules()
        if isinstance(m, nn.Conv2d | nn.Linear) and id(m) not in inside
    ]
    try:
        module(x)
    finally:
        for h in handles:
            h.remove()
    dense = executed = sum(counted)
    sparse_dense = sparse_executed = 0.0
    for block in blocks:
        f = block.flops()
        dense += f.dense + f.downsample
        executed += float(f.executed) + f.downsample + f.mask_unit
        sparse_dense += f.dense
        sparse_executed += float(f.executed)
    batch = x.shape[0]
    return {
        "dense": dense / batch,
        "executed": executed / batch,
        "fraction": executed / dense,
        "sparse_dense": sparse_dense / batch,
        "sparse_executed": sparse_executed / batch,
        "sparse_fraction": sparse_executed / sparse_dense if sparse_dense else 1.0,
    }
