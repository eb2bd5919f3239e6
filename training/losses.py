"""Rate–distortion loss of the base layer: ``L = λ·d_task + R (+ β·d_r)``.

``R`` is in bits per input pixel, estimated from the entropy models' likelihoods (a training
signal only: every reported rate comes from real bitstream bytes). ``d_task`` is one of

* ``"task"`` (``"ce"`` is its old name): the task's own loss (:meth:`Task.loss
  <models.tasks.base.Task.loss>`: cross-entropy, pixel cross-entropy, masked depth RMSE,
  keypoint L1, Faster R-CNN losses) of the output on the decoded features against the batch's
  ground truth;
* ``"distill"``: how far the output on the decoded features is from the uncompressed
  network's output, the teacher (no labels needed; :meth:`Task.distill
  <models.tasks.base.Task.distill>`): KL divergence of the class distributions (per pixel for
  segmentation), squared error of depth, L1 distance of keypoints. A detector has no
  distillation; use ``"task"``.

``β·d_r`` is the reconstruction reward of :mod:`codec.preview` (``β = 0``: the plain base).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from torch import Tensor

from featcodec.codec.facade import CodecOutput
from featcodec.codec.preview import reconstruction_distortion
from featcodec.models.tasks import DEFAULT_TASK, Task, get_task

Distortion = Literal["task", "ce", "distill"]


def task_distortion(
    kind: Distortion, output: Any, teacher: Any, batch: Mapping[str, Any] | None, task: Task
) -> Tensor:
    """Distortion between the task output on ``F̂`` and its target (batch mean)."""
    if kind in ("task", "ce"):
        if batch is None:
            raise ValueError(f"distortion {kind!r} needs labels; use 'distill' on unlabelled data")
        return task.loss(output, batch)
    if kind == "distill":
        return task.distill(output, teacher)
    raise ValueError(f"unknown distortion {kind!r} (use 'task' or 'distill')")


@dataclass
class RDLoss:
    """Terms of one evaluation of the loss."""

    loss: Tensor
    distortion: Tensor
    bpp: Tensor
    reconstruction: Tensor | None = None


def rate_distortion(
    out: CodecOutput,
    teacher: Any,
    batch: Mapping[str, Any] | None,
    lmbda: float,
    kind: Distortion,
    num_pixels: int,
    beta: float = 0.0,
    images: Tensor | None = None,
    task: Task | None = None,
) -> RDLoss:
    """``λ·d_task + R + β·d_r`` with ``R`` = estimated bits / ``num_pixels`` (pixels of the
    batch) and ``d_r`` the preview's reconstruction distortion (:mod:`codec.preview`), when
    the codec has a preview and ``images`` are given."""
    distortion = task_distortion(kind, out.output, teacher, batch, task or get_task(DEFAULT_TASK))
    bpp = out.bits() / num_pixels
    loss = lmbda * distortion + bpp
    recon = None
    if out.preview is not None and images is not None:
        recon = reconstruction_distortion(out.preview, images)
        # β > 0: the reward shapes the representation. β = 0: the preview was computed from a
        # detached latent (HyperpriorCodec.detach_preview), so this trains g_r alone.
        loss = loss + (beta * recon if beta > 0 else recon / 255.0**2)
    return RDLoss(loss, distortion, bpp, recon)
