"""The side work of codec training, as Lightning callbacks: the modules only wire a codec to
its loss and optimizers.

* :class:`RealRateValidation`: at each validation, code the validation features into real
  ``.fcb`` streams and log their rate, ``val/bpp`` from bytes (summed over processes, so the
  figure is the same on one GPU or many);
* :class:`RDTrajectory`: after each validation, the RD point (``val/bpp``, the task metric) of
  every epoch so far as a TensorBoard figure, ``rd/val``;
* :class:`FrozenFeatureCache`: the frozen front's features and the uncompressed output of each
  training item, computed once instead of every epoch (for datasets whose items never
  change: the synthetic scenes);
* :class:`SparseMaskImages`: the execution masks of a sparse task network's blocks over the
  first validation images, as TensorBoard images (``masks/<block>``).

A codec module adds the ones its arguments ask for in ``configure_callbacks``.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from matplotlib.figure import Figure
from torch import Tensor
from torchmetrics.aggregation import SumMetric

from featcodec.codec.bitstream import unpack


class RealRateValidation(Callback):
    """Logs ``val/bpp``: bits per input pixel of the validation batches coded into real
    streams by the module's ``codec`` (``layer="stream"``: whole streams; ``"enhancement"``:
    the enhancement layer's bytes of scalable streams).

    The module's ``validation_step`` returns ``{"features": F}`` (the frozen front's
    features of the batch). Bytes and pixels are summed over batches and processes.
    """

    def __init__(self, layer: str = "stream") -> None:
        if layer not in ("stream", "enhancement"):
            raise ValueError(f"layer must be 'stream' or 'enhancement', not {layer!r}")
        self.layer = layer
        self.bytes = SumMetric()
        self.pixels = SumMetric()

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for m in (self.bytes, self.pixels):
            m.reset()
            m.to(pl_module.device)

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not isinstance(outputs, dict) or "features" not in outputs:
            return
        x = batch["image"]
        size = tuple(x.shape[-2:])
        codec = pl_module.codec  # type: ignore[attr-defined]
        if self.layer == "enhancement":
            streams = codec.encode_batch(outputs["features"], size, x, outputs.get("mask"))
            coded = sum(unpack(s).layer_bytes()["enhancement"] for s in streams)
        else:
            streams = codec.encode_batch(outputs["features"], size, mask=outputs.get("mask"))
            coded = sum(len(s) for s in streams)
        self.bytes.update(torch.tensor(float(coded), dtype=torch.float64))
        self.pixels.update(torch.tensor(float(x.shape[0] * size[0] * size[1])))

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not self.pixels.update_called:
            return
        pixels = self.pixels.compute()
        if float(pixels) > 0:
            bpp = 8 * self.bytes.compute() / pixels
            pl_module.log("val/bpp", bpp.float(), prog_bar=True)


class RDTrajectory(Callback):
    """After each validation, adds the figure ``rd/val`` to the module's TensorBoard logger:
    the RD point (``val/bpp``, ``val/<metric>``) of every epoch so far."""

    def __init__(self, metric: str) -> None:
        self.metric = metric
        self.points: list[tuple[int, float, float]] = []

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        found = trainer.callback_metrics
        key = f"val/{self.metric}"
        if trainer.sanity_checking or "val/bpp" not in found or key not in found:
            return
        bpp, value = float(found["val/bpp"]), float(found[key])
        if not (bpp == bpp and value == value):  # NaN: nothing measured
            return
        self.points.append((trainer.current_epoch, bpp, value))
        experiment = getattr(pl_module.logger, "experiment", None)
        if trainer.is_global_zero and hasattr(experiment, "add_figure"):
            figure = trajectory(self.points, self.metric)
            experiment.add_figure("rd/val", figure, trainer.global_step)


def trajectory(points: list[tuple[int, float, float]], metric: str = "accuracy") -> Figure:
    """The validation RD points of a run so far (real-bytes bpp, task metric), epoch by epoch."""
    fig = Figure(figsize=(5.0, 3.6))
    ax = fig.subplots()
    _, bpp, acc = zip(*points, strict=True)
    ax.plot(bpp, acc, "-", color="0.7", lw=1)
    ax.scatter(bpp, acc, c=range(len(points)), cmap="viridis", zorder=3)
    ax.scatter(bpp[-1:], acc[-1:], s=80, facecolors="none", edgecolors="red", zorder=4)
    ax.set_xlabel("validation rate (bits per input pixel, from .fcb bytes)")
    ax.set_ylabel(f"validation {metric}")
    ax.set_title(f"RD point after epoch {points[-1][0]} (red); earlier epochs lighter")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


class FrozenFeatureCache(Callback):
    """Keeps the frozen front's features ``F``, the uncompressed task output (the teacher) and
    a sparse front's mask of each training item, by the batch's ``index``, on the CPU: the
    module asks :meth:`lookup` before computing them. Only for datasets whose items never
    change."""

    def __init__(self) -> None:
        self.items: dict[int, tuple[Tensor, Tensor | None, Tensor | None]] = {}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        pl_module.frozen_cache = self  # type: ignore[attr-defined]

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        pl_module.frozen_cache = None  # type: ignore[attr-defined]

    def lookup(
        self, batch: dict[str, Any], device: torch.device
    ) -> tuple[Tensor, Any, Tensor | None] | None:
        """``(F, teacher, mask)`` of the batch if every item is cached, else ``None``."""
        if "index" not in batch:
            return None
        keys = batch["index"].tolist()
        if not all(k in self.items for k in keys):
            return None

        def stacked(j: int) -> Tensor | None:
            if self.items[keys[0]][j] is None:
                return None
            return torch.stack([self.items[k][j] for k in keys]).to(device)  # type: ignore[misc]

        f = stacked(0)
        assert f is not None
        return f, stacked(1), stacked(2)

    def store(
        self,
        batch: dict[str, Any],
        features: Tensor,
        teacher: Tensor | None,
        mask: Tensor | None = None,
    ) -> None:
        if "index" not in batch:
            return
        for i, k in enumerate(batch["index"].tolist()):
            self.items[k] = (
                features[i].cpu(),
                None if teacher is None else teacher[i].cpu(),
                None if mask is None else mask[i].cpu(),
            )


class SparseMaskImages(Callback):
    """After the first validation batch, logs each sparse block's execution mask over the
    batch's first ``count`` images: the image where the block computes, darkened where it
    skips (``masks/<block name>``, one image grid per block, at the global step).

    The module has ``net`` (with :class:`~models.sparse.SparseBlock` modules, whose ``mask``
    is the last pass's) and its batches an ``"image"`` ``(B, 3, H, W)`` in [0, 1].
    """

    def __init__(self, count: int = 8, dim: float = 0.25) -> None:
        self.count, self.dim = count, dim

    @torch.no_grad()
    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        from featcodec.models.sparse import sparse_blocks

        experiment = getattr(trainer.logger, "experiment", None)
        if batch_idx or dataloader_idx or not trainer.is_global_zero:
            return
        if not hasattr(experiment, "add_images"):
            return
        images = batch["image"][: self.count].float()
        for name, block in sparse_blocks(pl_module.net):
            if block.mask is None:
                continue
            mask = F.interpolate(block.mask[: self.count].float(), size=images.shape[-2:])
            shown = images * (self.dim + (1 - self.dim) * mask)
            experiment.add_images(f"masks/{name}", shown.cpu(), trainer.global_step)
