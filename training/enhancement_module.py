"""Second training stage: the enhancement layer of a scalable codec, its base frozen.

Loss ``λ_e·d_e(output, target) + R_e`` (de Andrade & Bajić): ``R_e`` is the estimated rate of the
enhancement latents ``Ŷ_e`` and ``Ẑ_e`` per input pixel, coded conditionally on the decoded
base ``Ŷ_b`` (:mod:`codec.enhancement`). The target is the input image (``d_e``: squared
error on the 0–255 scale) or a second task's ground truth (``d_e``: that task's loss,
:meth:`Task.loss <models.tasks.base.Task.loss>`: pixel cross-entropy for segmentation, masked
RMSE for depth),
e.g. segmentation on top of a depth base, the paper's third setting.

The base codec comes from a checkpoint of the first stage and never
changes here, so its streams stay decodable (its fingerprint is unchanged). Checkpoints carry
the whole scalable architecture, for ``featcodec encode/decode``.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from featcodec.codec.checkpoint import seal, upgrade_state_dict
from featcodec.codec.config import EnhancementConfig
from featcodec.codec.entropy import bits
from featcodec.codec.facade import Codec
from featcodec.codec.preview import reconstruction_distortion
from featcodec.models.tasks import get_task
from featcodec.training.callbacks import RealRateValidation
from featcodec.training.optim import TrainsInTrainMode, layer_optimizers, layer_step

RECONSTRUCTION = "reconstruction"
"""The enhancement target that is the input image itself; any other target names a dense task
(:attr:`Task.dense <models.tasks.base.Task.dense>`)."""


class EnhancementModule(TrainsInTrainMode, pl.LightningModule):
    """Train the enhancement layer in front of a frozen base.

    Args:
        base_checkpoint: codec checkpoint of the first stage (``BaseCodecModule``).
        N, M, downsample, hyper_downsample: enhancement architecture
            (:class:`~codec.enhancement.EnhancementCodec`).
        standalone: train the standalone lower bound (the base is not used).
        target: ``"reconstruction"``, ``"segmentation"`` or ``"depth"``.
        lmbda: weight ``λ_e`` of the distortion (its scale is the target's: about 0.001–0.03
            for the 0–255 squared error of a reconstruction, 1–100 for a task loss).
        lr, aux_lr: learning rates of the enhancement and of its quantile (aux) optimizer.
    """

    def __init__(
        self,
        base_checkpoint: str,
        N: int = EnhancementConfig.N,
        M: int = EnhancementConfig.M,
        downsample: int = EnhancementConfig.downsample,
        hyper_downsample: int = EnhancementConfig.hyper_downsample,
        standalone: bool = EnhancementConfig.standalone,
        lmbda: float = 0.01,
        lr: float = 1e-3,
        aux_lr: float = 1e-3,
        target: str = "reconstruction",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        base = Codec.from_checkpoint(base_checkpoint)
        enhancement = {
            "N": N,
            "M": M,
            "downsample": downsample,
            "hyper_downsample": hyper_downsample,
            "standalone": standalone,
        }
        self.task = None if target == RECONSTRUCTION else get_task(target)
        if self.task is not None:  # older checkpoints: reconstruction, no such keys
            classes = base.arch["num_classes"]
            enhancement.update(target=target, out_channels=self.task.output_channels(classes))
            self.val_metric = self.task.metric(classes)
        self.target = target
        self.codec = Codec.build({**base.arch, "enhancement": enhancement})
        missing, unexpected = self.codec.load_state_dict(base.state_dict(), strict=False)
        assert not unexpected and all(k.startswith("enhancement.") for k in missing)
        for name, p in self.codec.named_parameters():
            p.requires_grad_(name.startswith("enhancement."))
        self.base_fingerprint = base.fingerprint

    def train(self, mode: bool = True) -> EnhancementModule:
        super().train(mode)
        self.codec.base.eval()  # frozen: its decoded latent is what the decoder will see
        return self

    def compute_loss(self, batch: dict[str, Any]) -> tuple[dict[str, Tensor], Tensor]:
        """The loss ``λ_e·d_e + R_e`` of a batch and its terms, with the layer's output."""
        x = batch["image"]
        with torch.no_grad():
            y_b = self.codec.base(self.codec.features(x)).y_hat
        enh = self.codec.enhancement(x, y_b)
        pixels = x.shape[0] * x.shape[-2] * x.shape[-1]
        bpp = sum(bits(v) for v in enh.likelihoods.values()) / pixels
        if self.task is None:
            d = reconstruction_distortion(enh.output, x)
            psnr = 10 * torch.log10(255.0**2 / d.detach().clamp_min(1e-6))
            terms = {"mse": d, "psnr": psnr}
        else:
            d = self.task.loss(enh.output, batch)
            terms = {"distortion": d}
        return {"loss": self.hparams.lmbda * d + bpp, "bpp_est": bpp, **terms}, enh.output

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        terms, _ = self.compute_loss(batch)
        layer_step(self, terms["loss"], self.codec.enhancement)
        logged = {f"train/{k}": v for k, v in terms.items()}
        n = batch["image"].shape[0]
        self.log_dict(logged, on_step=True, on_epoch=True, batch_size=n, sync_dist=True)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Tensor]:
        """Logs the loss terms (and the target task's metric); returns the base features,
        which :class:`~training.callbacks.RealRateValidation` codes into real streams."""
        x = batch["image"]
        terms, output = self.compute_loss(batch)
        if self.task is not None:
            self.val_metric.update(output, batch)
            self.log(f"val/{self.task.metric_name}", self.val_metric, on_epoch=True)
        logged = {f"val/{k}": v for k, v in terms.items()}
        self.log_dict(logged, prog_bar=True, on_epoch=True, batch_size=x.shape[0], sync_dist=True)
        return {"features": self.codec.features(x)}

    def configure_callbacks(self) -> list[Callback]:
        """The enhancement layer's real bytes at validation (``val/bpp``)."""
        return [RealRateValidation(layer="enhancement")]

    def configure_optimizers(self) -> Any:
        enh = self.codec.enhancement
        return layer_optimizers(self, enh, self.hparams.lr, self.hparams.aux_lr)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["featcodec"] = self.codec.checkpoint_entry("codec.")
        seal(checkpoint, self.codec)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Resuming from a format-1 checkpoint: its weights renamed to today's names."""
        checkpoint["state_dict"] = upgrade_state_dict(self, checkpoint["state_dict"])
