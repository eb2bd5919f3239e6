"""The optimization shared by every codec training stage (base and enhancement).

A learned entropy-coded layer has two sets of parameters: its transforms and entropy-model
parameters, trained on the rate–distortion loss (Adam, cosine decay to 0 over the run), and
the factorized model's quantiles, trained on their own aux loss by a second Adam.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn


def layer_optimizers(module: pl.LightningModule, layer: nn.Module, lr: float, aux_lr: float):
    """``configure_optimizers`` for ``layer`` (one with an ``entropy_z`` factorized model)."""
    quantiles = layer.entropy_z.quantiles
    main = [p for p in layer.parameters() if p is not quantiles]
    opt = torch.optim.Adam(main, lr=lr)
    aux_opt = torch.optim.Adam([quantiles], lr=aux_lr)
    steps = max(1, int(module.trainer.estimated_stepping_batches))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    return [opt, aux_opt], [sched]


def layer_step(module: pl.LightningModule, loss: Tensor, layer: nn.Module) -> Tensor:
    """One manual step: the loss (gradients clipped to norm 1), then ``layer``'s aux loss,
    then the schedule. Returns the aux loss."""
    opt, aux_opt = module.optimizers()
    opt.zero_grad()
    module.manual_backward(loss)
    module.clip_gradients(opt, gradient_clip_val=1.0, gradient_clip_algorithm="norm")
    opt.step()
    aux: Any = layer.aux_loss()
    aux_opt.zero_grad()
    module.manual_backward(aux)
    aux_opt.step()
    module.lr_schedulers().step()
    return aux


class TrainsInTrainMode:
    """Mixin for codec modules: start fitting in train mode whatever mode the module came in.

    Lightning keeps the mode a module arrives in, and compressai's entropy models in eval mode
    round their inputs without a straight-through gradient: a module put in eval mode before
    ``fit`` (to measure it, say) would train with no rate gradient at all.
    """

    def on_train_start(self) -> None:
        self.train()  # type: ignore[attr-defined]
