"""The task network: a torchvision classifier trained on the embedded synthetic scenes.

The codec is trained in front of the *frozen* back half of this network. Its checkpoint
carries a ``featcodec`` entry (architecture + where its weights are), so the codec module can
rebuild it from the file alone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from codec.errors import CheckpointError
from codec.facade import CHECKPOINT_FORMAT, load_checkpoint
from models.backbones import Normalize, build_backbone
from training.losses import accuracy


class TaskModule(pl.LightningModule):
    """Trains ``backbone`` as a classifier of the scene label with cross-entropy.

    Args:
        backbone: backbone name (torchvision or project registry).
        num_classes: number of classes.
        weights: pretrained weights of the backbone ("DEFAULT", an enum name, or None).
        lr: peak learning rate of the one-cycle schedule (AdamW).
        weight_decay: AdamW weight decay.
    """

    def __init__(
        self,
        backbone: str = "scene_resnet10",
        num_classes: int = 5,
        weights: str | None = None,
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.normalize = Normalize()
        self.net = build_backbone(backbone, weights=weights, num_classes=num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, K)`` of images ``(B, 3, H, W)`` in [0, 1]."""
        return self.net(self.normalize(x))

    def _step(self, batch: dict[str, Any], stage: str) -> Tensor:
        logits = self(batch["image"])
        loss = F.cross_entropy(logits, batch["label"])
        metrics = {f"{stage}/loss": loss, f"{stage}/acc": accuracy(logits, batch["label"])}
        self.log_dict(metrics, prog_bar=True, on_epoch=True, batch_size=len(logits))
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        opt = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=hp.lr, total_steps=max(1, int(self.trainer.estimated_stepping_batches))
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["featcodec"] = {
            "format": CHECKPOINT_FORMAT,
            "kind": "task",
            "arch": {"backbone": self.hparams.backbone, "num_classes": self.hparams.num_classes},
            "state_prefix": "net.",
        }


def load_task_network(path: str | os.PathLike[str], backbone: str, num_classes: int) -> nn.Module:
    """The trained network of a task checkpoint, checked against the expected architecture."""
    if not Path(path).is_file():
        raise CheckpointError(
            f"task checkpoint not found: {path} "
            "(train one first: featcodec train --config configs/tasknet.yaml)"
        )
    ckpt = load_checkpoint(path, kind="task")
    arch = ckpt["featcodec"]["arch"]
    if (arch.get("backbone"), arch.get("num_classes")) != (backbone, num_classes):
        raise CheckpointError(
            f"{path} holds a {arch.get('backbone')} with {arch.get('num_classes')} classes, "
            f"expected {backbone} with {num_classes}"
        )
    net = build_backbone(backbone, num_classes=num_classes)
    prefix = ckpt["featcodec"]["state_prefix"]
    state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit {backbone} ({e})") from None
    return net
