"""The optimization shared by every codec training stage (base, enhancement, P-frame).

A learned entropy-coded layer has two sets of parameters: its transforms and entropy-model
parameters, trained on the rate–distortion loss (Adam, cosine decay to 0 over the run), and
the factorized model's quantiles, trained on their own aux loss by a second Adam. compressai's
``net_aux_optimizer`` splits them (by the ``.quantiles`` name).

A step is compressai's recipe: the loss's backward pass and step, then the aux loss, computed
with the updated density model, and its step. The aux gradient is taken with
``torch.autograd.grad`` (it reaches the quantiles only) rather than a second backward pass
through DDP's gradient hooks, and averaged over processes by the strategy, so that several
processes keep identical weights (tests/test_ddp.py).
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from compressai.optimizers import net_aux_optimizer
from torch import Tensor, nn


def layer_optimizers(module: pl.LightningModule, layer: nn.Module, lr: float, aux_lr: float):
    """``configure_optimizers`` for ``layer`` (one with an ``entropy_z`` factorized model)."""
    found = net_aux_optimizer(
        layer, {"net": {"type": "Adam", "lr": lr}, "aux": {"type": "Adam", "lr": aux_lr}}
    )
    opt, aux_opt = found["net"], found["aux"]
    steps = max(1, int(module.trainer.estimated_stepping_batches))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    return [opt, aux_opt], [sched]


def layer_step(module: pl.LightningModule, loss: Tensor, layer: nn.Module) -> Tensor:
    """One manual step: the loss (gradients clipped to norm 1), then ``layer``'s aux loss,
    then the schedule. Returns the aux loss. (Full precision: the aux gradient does not pass
    through a mixed-precision gradient scaler.)"""
    opt, aux_opt = module.optimizers()
    opt.zero_grad()
    module.manual_backward(loss)
    module.clip_gradients(opt, gradient_clip_val=1.0, gradient_clip_algorithm="norm")
    opt.step()
    quantiles = layer.entropy_z.quantiles
    aux: Tensor = layer.aux_loss()
    (grad,) = torch.autograd.grad(aux, [quantiles])
    quantiles.grad = module.trainer.strategy.reduce(grad, reduce_op="mean")
    aux_opt.step()
    module.lr_schedulers().step()
    return aux.detach()


class TrainsInTrainMode:
    """Mixin for codec modules: start fitting in train mode whatever mode the module came in.

    Lightning keeps the mode a module arrives in, and compressai's entropy models in eval mode
    round their inputs without a straight-through gradient: a module put in eval mode before
    ``fit`` (to measure it, say) would train with no rate gradient at all.
    """

    def on_train_start(self) -> None:
        self.train()  # type: ignore[attr-defined]
