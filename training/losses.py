"""Rate–distortion loss of the base layer: ``L = λ·d_task + R (+ β·d_r)``.

``R`` is in bits per input pixel, estimated from the entropy models' likelihoods (a training
signal only: every reported rate comes from real bitstream bytes). ``d_task`` is one of

* ``"ce"``: cross-entropy of the task output on the decoded features against labels;
* ``"distill"``: KL divergence from the uncompressed network's output distribution to the
  output on the decoded features. It needs no labels.

``β·d_r`` is the reconstruction reward of :mod:`codec.preview` (``β = 0``: the plain base).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch.nn.functional as F
from torch import Tensor

from codec.facade import CodecOutput
from codec.preview import reconstruction_distortion

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
    reconstruction: Tensor | None = None


def rate_distortion(
    out: CodecOutput,
    teacher: Tensor,
    labels: Tensor | None,
    lmbda: float,
    kind: Distortion,
    num_pixels: int,
    beta: float = 0.0,
    images: Tensor | None = None,
) -> RDLoss:
    """``λ·d_task + R + β·d_r`` with ``R`` = estimated bits / ``num_pixels`` (pixels of the
    batch) and ``d_r`` the preview's reconstruction distortion (:mod:`codec.preview`), when
    the codec has a preview and ``images`` are given."""
    distortion = task_distortion(kind, out.output, teacher, labels)
    bpp = out.bits() / num_pixels
    loss = lmbda * distortion + bpp
    recon = None
    if out.preview is not None and images is not None:
        recon = reconstruction_distortion(out.preview, images)
        # β > 0: the reward shapes the representation. β = 0: the preview was computed from a
        # detached latent (HyperpriorCodec.detach_preview), so this trains g_r alone.
        loss = loss + (beta * recon if beta > 0 else recon / 255.0**2)
    return RDLoss(loss, distortion, bpp, recon)


def accuracy(logits: Tensor, labels: Tensor) -> Tensor:
    return (logits.argmax(dim=1) == labels).float().mean()
