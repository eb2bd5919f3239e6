"""Training the P-frame codec of :mod:`codec.video` on clips, the intra codec frozen.

Each clip of ``T`` frames is coded the way the encoder codes it: frame 0 through the frozen
intra codec (the base layer, rounded as the decoder sees it), then frames ``1..T−1`` as a
chain of P-frames, each predicted from the previous *reconstruction* with the quantized
motion side information the edge would send (so the codec learns to correct its own drift).
The loss averages ``λ·d + R`` over the P-frames: ``R`` the estimated bits of the P-frame
latents per input pixel (the side information's bits do not depend on the weights), ``d`` the
task distortion of :func:`training.losses.task_distortion` on ``back(F̂_t)`` ("distill": to
the uncompressed network's output, the default; "task": to the frame's ground truth) or
``"mse"``, the squared error of the features.

Motion (``motion``): ``"flow"`` the clips' known dense flow sent as a coarse field,
``"affine"`` the known camera motion (metadata) sent as an affine, ``"dis-flow"`` /
``"dis-affine"`` motion estimated from the frames with OpenCV DIS (see
:mod:`codec.motion_estimation`).
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor

from featcodec.codec.checkpoint import seal, upgrade_state_dict
from featcodec.codec.config import MotionConfig, PFrameConfig
from featcodec.codec.entropy import bits
from featcodec.codec.facade import Codec
from featcodec.codec.motion_estimation import camera_affine
from featcodec.codec.sequence import MOTION_SOURCES
from featcodec.codec.video import VideoCodec
from featcodec.models.tasks import task_of
from featcodec.training.losses import task_distortion
from featcodec.training.optim import TrainsInTrainMode, layer_optimizers, layer_step

_FRAME_FIELDS = {"images": "image", "labels": "label", "masks": "mask", "depths": "depth"}


def frame_batch(batch: dict[str, Any], t: int) -> dict[str, Any]:
    """Frame ``t`` of a clip batch as a scene batch (``image``, ``label``, ...)."""
    return {single: batch[many][:, t] for many, single in _FRAME_FIELDS.items() if many in batch}


class PFrameModule(TrainsInTrainMode, pl.LightningModule):
    """Train :class:`~codec.pframe.PFrameCodec` behind a frozen intra codec.

    Args:
        base_checkpoint: the intra codec (a ``BaseCodecModule`` checkpoint).
        N, M, downsample, hyper_downsample, conditional: the P-frame codec's architecture.
        refine: ``k`` of the motion-conditioned filter bank on the warped prediction (Lenc &
            Vedaldi's equivariance map, :mod:`models.equivariance`), trained with the codec;
            0: the warp alone.
        motion: one of "flow", "affine", "dis-flow", "dis-affine" (see the module docs).
        block, step: coarse-flow side information: cell size (input px) and step (px).
        lmbda: weight of the distortion.
        distortion: "distill", "task" or "mse".
        lr, aux_lr: learning rates of the codec and of its quantile (aux) optimizer.
    """

    def __init__(
        self,
        base_checkpoint: str,
        N: int = PFrameConfig.N,
        M: int = PFrameConfig.M,
        downsample: int = PFrameConfig.downsample,
        hyper_downsample: int = PFrameConfig.hyper_downsample,
        conditional: bool = PFrameConfig.conditional,
        refine: int = PFrameConfig.refine,
        motion: str = "flow",
        block: int = MotionConfig.block,
        step: float = MotionConfig.step,
        lmbda: float = 1.0,
        distortion: str = "distill",
        lr: float = 1e-3,
        aux_lr: float = 1e-3,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        if motion not in MOTION_SOURCES or motion == "none":
            raise ValueError(
                f"unknown training motion {motion!r}; use flow, affine, dis-flow, dis-affine"
            )
        if distortion not in ("distill", "task", "mse"):
            raise ValueError(f"unknown distortion {distortion!r}; use distill, task or mse")
        inter = {
            "N": N,
            "M": M,
            "downsample": downsample,
            "hyper_downsample": hyper_downsample,
            "conditional": conditional,
            "refine": refine,
        }
        self.codec = VideoCodec(
            Codec.from_checkpoint(base_checkpoint), inter, {"block": block, "step": step}
        )
        self.task = task_of(self.codec.intra.arch)
        self.val_metric = self.task.metric(self.codec.intra.arch["num_classes"])

    def train(self, mode: bool = True) -> PFrameModule:
        super().train(mode)
        self.codec.intra.eval()
        return self

    def _predict(self, batch: dict[str, Any], t: int, reference: Tensor) -> tuple[Tensor, Tensor]:
        """Predict frame ``t`` of every clip from ``reference`` with the motion the decoder
        gets (quantized side information)."""
        images, source = batch["images"], self.hparams.motion
        motions = []
        for b in range(images.shape[0]):
            theta = camera_affine(batch["camera"][b], t) if source == "affine" else None
            flow = batch["flow"][b, t] if source == "flow" else None
            motions.append(
                self.codec.edge_motion(source, images[b, t - 1], images[b, t], flow, theta)
            )
        return self.codec.predict(reference, motions, tuple(images.shape[-2:]))

    def _distortion(self, f_hat: Tensor, f: Tensor, frame: dict[str, Any]) -> tuple[Tensor, Any]:
        back = self.codec.intra.back
        output = back(f_hat)
        if self.hparams.distortion == "mse":
            return F.mse_loss(f_hat, f), output
        with torch.no_grad():
            teacher = back(f) if self.hparams.distortion == "distill" else None
        return task_distortion(self.hparams.distortion, output, teacher, frame, self.task), output

    def compute_loss(self, batch: dict[str, Any]) -> tuple[dict[str, Tensor], list[Any]]:
        images = batch["images"]
        B, T = images.shape[:2]
        intra = self.codec.intra
        with torch.no_grad():
            feats = intra.features(images.flatten(0, 1)).unflatten(0, (B, T))
            reference = intra.base(feats[:, 0]).features_hat
        pixels = B * images.shape[-2] * images.shape[-1]
        loss = bpp = dist = torch.zeros((), device=images.device)
        outputs = []
        for t in range(1, T):
            prediction, mask = self._predict(batch, t, reference)
            out = self.codec.inter(feats[:, t], prediction, mask)
            rate = sum(bits(v) for v in out.likelihoods.values()) / pixels
            d, output = self._distortion(out.features_hat, feats[:, t], frame_batch(batch, t))
            loss = loss + self.hparams.lmbda * d + rate
            bpp, dist = bpp + rate, dist + d
            outputs.append(output)
            reference = out.features_hat
        n = T - 1
        return {"loss": loss / n, "bpp_est": bpp / n, "distortion": dist / n}, outputs

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        terms, _ = self.compute_loss(batch)
        layer_step(self, terms["loss"], self.codec.inter)
        logged = {f"train/{k}": v for k, v in terms.items()}
        n = batch["images"].shape[0]
        self.log_dict(logged, on_step=True, on_epoch=True, batch_size=n, sync_dist=True)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        terms, outputs = self.compute_loss(batch)
        for t, output in enumerate(outputs, start=1):
            self.val_metric.update(output, frame_batch(batch, t))
        logged = {f"val/{k}": v for k, v in terms.items()}
        n = batch["images"].shape[0]
        self.log_dict(logged, prog_bar=True, on_epoch=True, batch_size=n, sync_dist=True)
        self.log(f"val/p_{self.task.metric_name}", self.val_metric, on_epoch=True)

    def configure_optimizers(self) -> Any:
        inter = self.codec.inter
        return layer_optimizers(self, inter, self.hparams.lr, self.hparams.aux_lr)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["featcodec"] = self.codec.checkpoint_entry("codec.")
        seal(checkpoint, self.codec)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Resuming from a format-1 checkpoint: its weights renamed to today's names."""
        checkpoint["state_dict"] = upgrade_state_dict(self, checkpoint["state_dict"])
