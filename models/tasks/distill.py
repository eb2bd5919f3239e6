"""Distillation distances shared by the tasks whose outputs are class logits."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def logit_kl(output: Tensor, teacher: Tensor) -> Tensor:
    """KL(teacher ‖ output) of class logits along dim 1, averaged over everything else."""
    kl = F.kl_div(
        F.log_softmax(output, dim=1),
        F.log_softmax(teacher, dim=1),
        log_target=True,
        reduction="none",
    )
    return kl.sum(1).mean()
