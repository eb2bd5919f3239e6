"""Rate–distortion loss of the base layer: ``L = λ·d_task + R``.

``R`` is in bits per input pixel, estimated from the entropy models' likelihoods (a training
signal only: every reported rate comes from real bitstream bytes). ``d_task`` is one of

* ``"ce"``: cross-entropy of the task output on the decoded features against labels;
* ``"distill"``: KL divergence from the uncompressed network's output distribution to the
  output on the decoded features. It needs no labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch.nn.functional as F
from torch import Tensor

from codec.facade import CodecOutput

Distortion = Literal["ce", "distill"]


def task_distortion(
    kind: Distortion, output: Tensor, teacher: Tensor, labels: Tensor | None
) -> Tensor:
    """Distortion between the task output on ``F̂`` and its target (batch mean)."""
    if kind == "ce":
        if labels is None:
            raise ValueError("distortion 'ce' needs labels; use 'distill' on unlabelled data")
        return F.cross_entropy(output, labels)
    if kind == "distill":
        return F.kl_div(
            F.log_softmax(output, dim=1),
            F.log_softmax(teacher, dim=1),
            log_target=True,
            reduction="batchmean",
        )
    raise ValueError(f"unknown distortion {kind!r} (use 'ce' or 'distill')")


@dataclass
class RDLoss:
    """Terms of one evaluation of the loss."""

    loss: Tensor
    distortion: Tensor
    bpp: Tensor


def rate_distortion(
    out: CodecOutput,
    teacher: Tensor,
    labels: Tensor | None,
    lmbda: float,
    kind: Distortion,
    num_pixels: int,
) -> RDLoss:
    """``λ·d_task + R`` with ``R`` = estimated bits / ``num_pixels`` (pixels of the batch)."""
    distortion = task_distortion(kind, out.output, teacher, labels)
    bpp = out.bits() / num_pixels
    return RDLoss(lmbda * distortion + bpp, distortion, bpp)


def accuracy(logits: Tensor, labels: Tensor) -> Tensor:
    return (logits.argmax(dim=1) == labels).float().mean()
