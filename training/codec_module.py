"""Lightning module that trains a base-layer codec in front of a frozen task network.

It only wires the codec to its loss, ``λ·d_task + R`` (see :mod:`training.losses`), and its
optimizers: the codec's main parameters and the factorized model's quantiles (its aux loss)
have separate optimizers. Real-rate validation, the RD figure and the feature cache are
callbacks (:mod:`training.callbacks`); the task metric is the task's ``torchmetrics`` metric
and every logged figure is synchronised over processes, so they are right on several GPUs.
Checkpoints carry the architecture, so ``featcodec encode/decode`` rebuild the codec from the
file alone.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from featcodec.codec.checkpoint import seal, upgrade_state_dict
from featcodec.codec.config import HyperpriorConfig
from featcodec.codec.errors import CheckpointError
from featcodec.codec.facade import Codec, CodecOutput
from featcodec.models.tasks import get_task
from featcodec.training.callbacks import FrozenFeatureCache, RDTrajectory, RealRateValidation
from featcodec.training.losses import Distortion, RDLoss, rate_distortion
from featcodec.training.optim import TrainsInTrainMode, layer_optimizers, layer_step
from featcodec.training.task import load_task_network, task_arch


class BaseCodecModule(TrainsInTrainMode, pl.LightningModule):
    """Train a :class:`~codec.facade.Codec`'s base layer at one rate–distortion trade-off.

    Args:
        backbone, num_classes, split_at: the task network and where it is split.
        task_checkpoint: trained task network (``featcodec train --config configs/tasknet.yaml``).
        backbone_weights: torchvision weights of the backbone, used when no task checkpoint.
        N, M, downsample, hyper_downsample, blocks, attention: base codec architecture
            (:class:`~codec.base.HyperpriorCodec`).
        lmbda: weight λ of the task distortion.
        preview: give the base the reconstruction synthesis ``g_r`` (:mod:`codec.preview`).
        beta: weight β of the reconstruction reward ``β·E‖X̂_b − X‖²`` (0–255 scale). With
            ``beta=0`` and ``preview`` set, ``g_r`` still learns, from a detached latent, so
            the plain base gets a preview to compare with.
        distortion: ``"task"`` (the task's loss against the batch's labels; ``"ce"`` is its
            old name) or ``"distill"`` (to the uncompressed output; see
            :mod:`training.losses`).
        lr: learning rate of the codec (Adam, cosine decay to 0 over the run).
        aux_lr: learning rate of the quantile (aux) optimizer.
        init_codec: warm-start from this codec checkpoint (same architecture; e.g. the
            previous point of a λ sweep).
        real_rate: at each validation, also code the validation features into real ``.fcb``
            streams and log their rate (``val/bpp``, from bytes) with the accuracy as the
            current RD point, and the trajectory of those points as a figure (``rd/val``).
        cache_frozen: keep the frozen front's features and the uncompressed task output of
            each training item (by its ``index``), computed once instead of every epoch.
            Only for datasets whose items never change (the synthetic scenes); about 30 %
            faster training on a CPU.
        task, task_options: the task network (:mod:`models.tasks`): ``"classification"``,
            ``"segmentation"``, ``"depth"``, ``"keypoints"`` or ``"detection"``, and its
            builder's options. Validation logs the task's metric.
        sparse: the last stage of the task network's spatially sparse front (a network
            trained with ``TaskModule(sparse=...)``, :mod:`models.sparse`); ``None``: dense.
        gate: code only some latent positions (:mod:`codec.gate`): ``"mask"`` (the sparse
            front's mask, sent as side information) or ``"derived"`` (from the hyper-latent);
            ``None``: every position.
    """

    def __init__(
        self,
        backbone: str = "scene_resnet10",
        num_classes: int = 5,
        split_at: str = "layer2",
        task_checkpoint: str | None = None,
        backbone_weights: str | None = None,
        N: int = HyperpriorConfig.N,
        M: int = HyperpriorConfig.M,
        downsample: int = HyperpriorConfig.downsample,
        hyper_downsample: int = HyperpriorConfig.hyper_downsample,
        blocks: int = HyperpriorConfig.blocks,
        attention: bool = HyperpriorConfig.attention,
        preview: bool = HyperpriorConfig.preview,
        beta: float = 0.0,
        lmbda: float = 1.0,
        distortion: Distortion = "distill",
        lr: float = 1e-3,
        aux_lr: float = 1e-3,
        init_codec: str | None = None,
        cache_frozen: bool = False,
        real_rate: bool = True,
        task: str = "classification",
        task_options: dict[str, Any] | None = None,
        sparse: str | None = None,
        gate: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        arch = {
            **task_arch(task, backbone, num_classes, task_options, sparse),
            "split_at": split_at,
            "codec": {
                "name": "hyperprior",
                "N": N,
                "M": M,
                "downsample": downsample,
                "hyper_downsample": hyper_downsample,
                "blocks": blocks,
                "attention": attention,
                "preview": preview,
                **({"gate": gate} if gate else {}),
            },
        }
        if beta < 0 or (beta > 0 and not preview):
            raise ValueError("beta must be ≥ 0, and beta > 0 needs preview=True")
        self.task = get_task(task).configure(task_options or {})
        if distortion == "distill" and not self.task.distillable:
            raise ValueError(f"a {task} network has no distillation loss; use distortion='task'")
        options = task_options or {}
        if task_checkpoint is not None:
            net = load_task_network(task_checkpoint, backbone, num_classes, task, options, sparse)
        else:
            if backbone_weights is None and init_codec is None:
                rank_zero_warn("training a codec in front of an untrained task network")
            net = self.task.network(backbone, backbone_weights, num_classes, options, sparse)
        self.codec = Codec.from_split(arch, self.task.split(net, split_at, backbone))
        self.val_metric = self.task.metric(num_classes)
        self.frozen_cache: FrozenFeatureCache | None = None  # set by the callback
        if init_codec is not None:
            start = Codec.from_checkpoint(init_codec)
            if start.arch != self.codec.arch:
                raise CheckpointError(f"{init_codec}: architecture differs from this run's")
            self.codec.load_state_dict(start.state_dict())
        self.codec.base.detach_preview = beta == 0

    def forward(self, x: Tensor) -> Tensor:
        return self.codec(x).output

    def configure_callbacks(self) -> list[Callback]:
        """Real-rate validation and its RD figure (``real_rate``), the feature cache
        (``cache_frozen``): side work, in :mod:`training.callbacks`."""
        callbacks: list[Callback] = []
        if self.hparams.real_rate:
            callbacks += [RealRateValidation(), RDTrajectory(self.task.metric_name)]
        if self.hparams.cache_frozen:
            callbacks.append(FrozenFeatureCache())
        return callbacks

    def frozen_outputs(
        self, batch: dict[str, Any], cache: bool = False
    ) -> tuple[Tensor, Any, Tensor | None]:
        """Features of the frozen front, the uncompressed task output and the front's mask,
        ``(F, teacher, mask)`` (no teacher for a task without distillation: a detector trains
        on its own losses; no mask for a dense front); with ``cache``, from and into the
        :class:`~training.callbacks.FrozenFeatureCache`."""
        store = self.frozen_cache if cache else None
        found = store.lookup(batch, self.device) if store is not None else None
        if found is not None:
            return found
        f = self.codec.features(batch["image"])
        mask = self.codec.front_mask()
        teacher = None
        if self.task.distillable:
            with torch.no_grad():
                teacher = self.codec.back(f)
        if store is not None:
            store.store(batch, f, teacher, mask)
        return f, teacher, mask

    def compute_loss(
        self, batch: dict[str, Any], cache: bool = False
    ) -> tuple[RDLoss, tuple[CodecOutput, Any]]:
        """The loss ``λ·d + R (+ β·d_r)`` of a batch, with the pass it came from and the
        teacher: ``(rd, (out, teacher))``."""
        x = batch["image"]
        f, teacher, mask = self.frozen_outputs(batch, cache)
        back = self.codec.back
        out = self.codec.forward_features(
            f, lambda f_hat: self.task.loss_pass(back, f_hat, batch), mask
        )
        rd = rate_distortion(
            out,
            teacher,
            batch,
            self.hparams.lmbda,
            self.hparams.distortion,
            x.shape[0] * x.shape[-2] * x.shape[-1],
            self.hparams.beta,
            x,
            self.task,
        )
        return rd, (out, teacher)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        rd, _ = self.compute_loss(batch, cache=True)
        aux = layer_step(self, rd.loss, self.codec.base)
        self.log_dict(
            {
                "train/loss": rd.loss,
                "train/bpp_est": rd.bpp,
                "train/distortion": rd.distortion,
                "train/aux": aux,
            },
            on_step=True,
            on_epoch=True,
            batch_size=batch["image"].shape[0],
            sync_dist=True,
        )

    def _evaluate(self, batch: dict[str, Any], stage: str) -> CodecOutput:
        rd, (out, _) = self.compute_loss(batch)
        metrics = {
            f"{stage}/loss": rd.loss,
            f"{stage}/bpp_est": rd.bpp,
            f"{stage}/distortion": rd.distortion,
        }
        if rd.reconstruction is not None:
            mse = rd.reconstruction / 255.0**2
            metrics[f"{stage}/preview_psnr"] = -10 * torch.log10(mse.clamp_min(1e-10))
        n = batch["image"].shape[0]
        self.log_dict(metrics, prog_bar=True, on_epoch=True, batch_size=n, sync_dist=True)
        if all(k in batch for k in self.task.targets):  # else unlabelled data: rate only
            output = self.task.prediction(self.codec.back, out.features_hat, out.output)
            self.val_metric.update(output, batch)
            self.log(f"{stage}/{self.task.metric_name}", self.val_metric, on_epoch=True)
        return out

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Tensor]:
        """Logs the loss terms and the task metric; returns the features, which
        :class:`~training.callbacks.RealRateValidation` codes into real streams."""
        features = self._evaluate(batch, "val").features
        return {"features": features, "mask": self.codec.front_mask()}  # this batch's front

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def configure_optimizers(self) -> Any:
        return layer_optimizers(self, self.codec.base, self.hparams.lr, self.hparams.aux_lr)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["featcodec"] = self.codec.checkpoint_entry("codec.")
        seal(checkpoint, self.codec)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Resuming from a format-1 checkpoint: its weights renamed to today's names."""
        checkpoint["state_dict"] = upgrade_state_dict(self, checkpoint["state_dict"])
