"""The task network: a classifier, or a dense / keypoint / detection network on a split
backbone (:mod:`models.tasks`), trained on the embedded synthetic scenes or a real dataset.

The codec is trained in front of the *frozen* back half of this network. Its checkpoint
carries a ``featcodec`` entry (architecture + where its weights are), so the codec module can
rebuild it from the file alone.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from featcodec.codec.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, seal
from featcodec.codec.errors import CheckpointError, InputError
from featcodec.models.backbones import Normalize
from featcodec.models.sparse import SparsityConfig, sparse_blocks
from featcodec.models.split import Split
from featcodec.models.tasks import DEFAULT_TASK, Task, get_task, task_of
from featcodec.training.callbacks import SparseMaskImages


def task_arch(
    task: str,
    backbone: str,
    num_classes: int,
    options: dict[str, Any] | None,
    sparse: str | None = None,
) -> dict[str, Any]:
    """The architecture entry of a task network; ``task``/``task_options``/``sparse`` only
    when they are not the defaults, so dense classifiers keep the entry (and fingerprint) they
    always had. ``sparse``: the last stage of a spatially sparse front (:mod:`models.sparse`)."""
    arch: dict[str, Any] = {"backbone": backbone, "num_classes": num_classes}
    if task != DEFAULT_TASK:
        arch["task"] = task
    if options:
        arch["task_options"] = dict(options)
    if sparse:
        arch["sparse"] = sparse
    return arch


class TaskModule(pl.LightningModule):
    """Trains a task network on :class:`~models.tasks.Batch` batches with its task's loss;
    validation and test log the task's metric (``val/<metric>``, right on several GPUs).

    Args:
        backbone: backbone name (torchvision or project registry; a ResNet for every task but
            classification).
        num_classes: number of classes.
        weights: pretrained weights of the backbone ("DEFAULT", an enum name, or None).
        lr: peak learning rate of the one-cycle schedule (AdamW).
        weight_decay: AdamW weight decay.
        task: ``"classification"``, ``"segmentation"``, ``"depth"``, ``"keypoints"``,
            ``"pose3d"`` or ``"detection"``.
        task_options: options of the task's builder and loss (e.g. ``{"image_size": 64}`` for
            detection, ``{"alpha": 1.0, "triplet_loss": false}`` for pose3d; see
            :mod:`models.tasks`).
        sparse: make the residual blocks of stages ``layer1`` … ``sparse`` spatially sparse
            (DynConv, :mod:`models.sparse`; ``"layer2"``: the front of the default split);
            ``None``: a dense network.
        sparsity: the FLOP budget θ of the sparse blocks, the weight α of the sparsity losses,
            their annealing and the Gumbel temperature (:class:`~models.sparse.SparsityConfig`).
        init_weights: start from the weights of this task checkpoint (a dense network of the
            same task and backbone; the mask units start fresh, every position active).
    """

    def __init__(
        self,
        backbone: str = "scene_resnet10",
        num_classes: int = 5,
        weights: str | None = None,
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        task: str = "classification",
        task_options: dict[str, Any] | None = None,
        sparse: str | None = None,
        sparsity: SparsityConfig = SparsityConfig(),  # noqa: B008 (frozen)
        init_weights: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["sparsity"])
        self.hparams["sparsity"] = asdict(sparsity)  # plain data: checkpoints load weights-only
        self.normalize = Normalize()
        self.task = get_task(task).configure(task_options or {})
        self.net = self.task.network(backbone, weights, num_classes, task_options, sparse)
        if init_weights is not None:
            start = load_task_network(init_weights, backbone, num_classes, task, task_options)
            missing, unexpected = self.net.load_state_dict(start.state_dict(), strict=False)
            if unexpected or any(".mask_unit." not in k for k in missing):
                raise CheckpointError(f"{init_weights}: weights do not fit this network")
        self.sparsity = sparsity
        self.blocks = [b for _, b in sparse_blocks(self.net)]
        for block in self.blocks:
            block.temperature = sparsity.temperature
        self.val_metric = self.task.metric(num_classes)
        self.test_metric = self.task.metric(num_classes)

    def forward(self, x: Tensor) -> Any:
        """The task output of images ``(B, 3, H, W)`` in [0, 1] (logits ``(B, K)`` for
        classification; see :mod:`models.tasks` for the others)."""
        return self.net(self.normalize(x))

    def _step(self, batch: dict[str, Any], stage: str) -> Tensor:
        x = self.normalize(batch["image"])
        if stage == "train":
            output = self.task.forward(self.net, x, batch)
        else:
            with torch.no_grad():
                output = self.task.loss_pass(self.net, x, batch)
                metric = self.val_metric if stage == "val" else self.test_metric
                metric.update(self.task.prediction(self.net, x, output), batch)
            self.log(f"{stage}/{self.task.metric_name}", metric, on_epoch=True)
        loss = self.task.loss(output, batch)
        n = x.shape[0]
        if self.blocks:
            loss = loss + self._sparsity(stage, n)
        self.log(f"{stage}/loss", loss, prog_bar=True, on_epoch=True, batch_size=n, sync_dist=True)
        return loss

    def _sparsity(self, stage: str, n: int) -> Tensor:
        """The weighted sparsity losses of the pass just made (0 outside training), logging
        the executed fraction of the sparse blocks' FLOPs (``<stage>/flops``) and each term."""
        total = max(1, int(self.trainer.estimated_stepping_batches)) if stage == "train" else 1
        terms = self.sparsity.terms([b.flops() for b in self.blocks], self.global_step / total)
        self.log(f"{stage}/flops", terms["fraction"], on_epoch=True, batch_size=n, sync_dist=True)
        if stage != "train":
            return terms["loss"].new_zeros(())
        for name in ("network", "lower", "upper", "p"):
            self.log(f"sparsity/{name}", terms[name], on_step=True, batch_size=n)
        return terms["loss"]

    def configure_callbacks(self) -> list[pl.Callback]:
        """Mask images in TensorBoard for a sparse network."""
        return [SparseMaskImages()] if self.blocks else []

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
        hp = self.hparams
        checkpoint["featcodec"] = {
            "format": CHECKPOINT_FORMAT,
            "kind": "task",
            "arch": task_arch(
                hp.task, hp.backbone, hp.num_classes, hp.task_options, hp.get("sparse")
            ),
            "state_prefix": "net.",
        }
        seal(checkpoint)


def load_task_network(
    path: str | os.PathLike[str],
    backbone: str,
    num_classes: int,
    task: str = "classification",
    task_options: dict[str, Any] | None = None,
    sparse: str | None = None,
) -> nn.Module:
    """The trained network of a task checkpoint, checked against the expected architecture
    (``sparse``: the last stage of its sparse front, ``None`` for a dense network)."""
    if not Path(path).is_file():
        raise CheckpointError(
            f"task checkpoint not found: {path} "
            "(train one first: featcodec train --config configs/tasknet.yaml)"
        )
    ckpt = load_checkpoint(path, kind="task")
    arch = ckpt["featcodec"]["arch"]
    want = task_arch(task, backbone, num_classes, task_options, sparse)
    if arch != want:

        def show(a: dict[str, Any]) -> str:
            extra = f", options {a['task_options']}" if a.get("task_options") else ""
            extra += f", sparse up to {a['sparse']}" if a.get("sparse") else ""
            kind = a.get("task", DEFAULT_TASK)
            return f"a {kind} {a.get('backbone')} with {a.get('num_classes')} classes{extra}"

        raise CheckpointError(f"{path} holds {show(arch)}, expected {show(want)}")
    try:
        net = get_task(task).network(backbone, None, num_classes, task_options, sparse)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    prefix = ckpt["featcodec"]["state_prefix"]
    state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit {backbone} ({e})") from None
    return net


def read_task_network(path: str | os.PathLike[str]) -> tuple[dict[str, Any], nn.Module]:
    """The architecture entry and the trained network (eval mode) of a task checkpoint."""
    arch = dict(load_checkpoint(path, kind="task")["featcodec"]["arch"])
    task = task_of(arch)
    net = load_task_network(
        path,
        arch["backbone"],
        arch["num_classes"],
        task.name,
        arch.get("task_options"),
        arch.get("sparse"),
    )
    return arch, net.eval()


def split_network(task: Task, net: nn.Module, split_at: str, backbone: str) -> Split:
    """``net`` split at ``split_at``; an unknown split point or one that is not a cut is an
    :class:`InputError` (one line)."""
    try:
        return task.split(net, split_at, backbone)
    except ValueError as e:
        raise InputError(str(e)) from None
