"""Training a stitching layer ``E`` between network A's tensor and network B's back end, and
reading it back to serve streams coded for A to B.

Lenc & Vedaldi (CVPR 2015), "Franken-networks": A's front, frozen, gives ``φ_A``; a 1×1
convolution ``E`` (:class:`~models.stitching.Stitch`) maps it into B's representation at the
same split point; B's back, frozen, runs on it, and only ``E`` learns, from B's task loss::

    x ─normalize─▶ A.front ─▶ φ_A ─[codec_a.base: F̂_A, when ``decoded``]─▶ E ─▶ B.back ─▶ B's loss
              └──▶ B.front ─▶ φ_B   (only for the closed-form start: φ_B ≈ E·φ_A + b)

A is a task network (``network_a``: a task checkpoint) or the task network of a codec
(``codec_a``: a codec checkpoint; A's split point is then the codec's). With a codec, ``E``
learns by default on A's *decoded* tensors ``F̂_A`` (the codec's forward pass, rounding as
its decoder does): a server only ever applies ``E`` to what A's codec decodes, so ``E``
learns the map from that, coding error included. ``decoded=False`` learns it from the clean
``φ_A`` (the paper's question, about the representations themselves).

The checkpoint's ``featcodec`` entry (kind ``"stitch"``) records ``E``'s shape, the split
point, A's architecture and fingerprint (its codec's, when built from one), B's architecture
and fingerprint, and holds ``E`` and B's whole network, sealed by the weights digest: with
A's codec it is all a server needs (``featcodec decode STREAMS -c CODEC_A --stitch S``).
A's weights are not stored (the codec holds them); :func:`load_stitch` reads it back.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable
from itertools import islice
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from featcodec.codec.bitstream import FINGERPRINT_BYTES
from featcodec.codec.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, seal
from featcodec.codec.config import MAX_CLASSES
from featcodec.codec.errors import CheckpointError, InputError
from featcodec.codec.facade import Codec
from featcodec.codec.files import atomic_path
from featcodec.codec.fingerprint import weights_digest
from featcodec.models.backbones import Normalize, check_backbone_name
from featcodec.models.split import Split
from featcodec.models.stitching import INITS, MAX_CHANNELS, Stitch, fit_regression
from featcodec.models.tasks import task_of
from featcodec.training.task import read_task_network, split_network

STITCH_KIND = "stitch"
"""The ``kind`` of a stitch checkpoint's ``featcodec`` entry."""

_A_PREFIXES = ("net_a.", "codec_a.")  # A's weights: not stored in a stitch checkpoint


def network_fingerprint(arch: dict[str, Any], state: dict[str, Tensor]) -> str:
    """The fingerprint (hex) of a task network: its architecture entry and every weight."""
    return weights_digest(arch, state).hex()


def codec_network_fingerprint(codec: Codec) -> str:
    """:func:`network_fingerprint` of a codec's task network (its front's and back's weights
    together are the network's), to pair a stitch trained on that network with the codec."""
    arch = {k: v for k, v in codec.arch.items() if k not in ("split_at", "codec", "enhancement")}
    return network_fingerprint(arch, {**codec.front.state_dict(), **codec.back.state_dict()})


def _frozen(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


class StitchModule(pl.LightningModule):
    """Trains ``E`` from A's tensor into B's back end on B's task loss; validation logs B's
    metric on the stitched network (``val/<metric>``).

    Args:
        network_b: B's task checkpoint (the back end that is served).
        network_a: A's task checkpoint (give this or ``codec_a``).
        codec_a: A's codec checkpoint: A is the codec's task network, split where it codes.
        split_at: the split point of both networks (default: the codec's, else ``layer2``).
        init: ``"regression"`` (closed form ``φ_B ≈ E·φ_A + b`` over ``fit_batches`` training
            batches, at the start of fitting) or ``"identity"``.
        decoded: with ``codec_a``, learn on A's decoded tensors ``F̂_A`` (default) instead of
            the clean ``φ_A``.
        ridge: relative ridge penalty of the regression (:class:`~models.equivariance.LinearFit`).
        fit_batches: training batches the regression accumulates.
        lr: peak learning rate of ``E`` (Adam, cosine decay to 0 over the run).
        weight_decay: Adam's weight decay on ``E``.
    """

    def __init__(
        self,
        network_b: str,
        network_a: str | None = None,
        codec_a: str | None = None,
        split_at: str | None = None,
        init: str = "regression",
        decoded: bool = True,
        ridge: float = 1e-3,
        fit_batches: int = 50,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if (network_a is None) == (codec_a is None):
            raise InputError("give network A as network_a (task checkpoint) or codec_a (codec)")
        if init not in INITS:
            raise InputError(f"unknown init {init!r}; use {' or '.join(INITS)}")
        if fit_batches < 1 or not ridge >= 0:
            raise InputError("fit_batches must be ≥ 1 and ridge ≥ 0")
        self.normalize = Normalize()
        self.codec_a: Codec | None = None
        self.net_a: nn.Module | None = None
        if codec_a is not None:
            codec = Codec.from_checkpoint(codec_a)
            split_at = split_at or codec.arch["split_at"]
            if split_at != codec.arch["split_at"]:
                raise InputError(
                    f"{codec_a} codes A's tensor at {codec.arch['split_at']!r}, not {split_at!r}"
                )
            self.codec_a = _frozen(codec)
            arch_a = {k: v for k, v in codec.arch.items() if k != "split_at"}
            front_a, channels_a, stride_a = codec.front, codec.channels, codec.stride
            source = {"source": "codec", "arch": arch_a, "fingerprint": codec.fingerprint.hex()}
        else:
            split_at = split_at or "layer2"
            arch_a, net_a = read_task_network(network_a)  # type: ignore[arg-type]
            self.net_a = _frozen(net_a)
            split_a = split_network(task_of(arch_a), net_a, split_at, arch_a["backbone"])
            front_a, channels_a, stride_a = split_a.front, split_a.channels, split_a.stride
            source = {"source": "task", "arch": arch_a}
            source["fingerprint"] = network_fingerprint(arch_a, net_a.state_dict())
        self.front_a = [front_a]  # shares A's modules: a list keeps it out of the state dict
        self.decoded = bool(decoded and self.codec_a is not None)
        arch_b, net_b = read_task_network(network_b)
        self.task = task_of(arch_b)
        self.net_b = _frozen(net_b)
        self.split_b = split_network(self.task, net_b, split_at, arch_b["backbone"])
        if stride_a != self.split_b.stride:
            raise InputError(
                f"at {split_at!r} A's tensor has stride {stride_a}, B's {self.split_b.stride}: "
                "a 1×1 stitching layer needs the same stride"
            )
        self.stitch = Stitch(channels_a, self.split_b.channels)
        self.entry = {
            "split_at": split_at,
            "in_channels": channels_a,
            "out_channels": self.split_b.channels,
            "a": {**source, "decoded": self.decoded},
            "b": {"arch": arch_b, "fingerprint": network_fingerprint(arch_b, net_b.state_dict())},
        }
        self.fitted = False
        """Whether ``E`` holds the regression already (set by :meth:`fit_regression`)."""
        self.num_classes: int = arch_b["num_classes"]
        """B's number of classes (for its metric)."""
        self.val_metric = self.task.metric(self.num_classes)
        self.test_metric = self.task.metric(self.num_classes)

    def train(self, mode: bool = True) -> StitchModule:
        """Only ``E`` ever trains: A (and its codec) and B stay in eval mode."""
        super().train(mode)
        for frozen in (self.codec_a, self.net_a, self.net_b):
            if frozen is not None:
                frozen.eval()
        return self

    # the stitched network --------------------------------------------------------------------

    @torch.no_grad()
    def features_a(self, x: Tensor) -> Tensor:
        """A's tensor ``(B, Cin, h, w)`` of images ``x`` ``(B, 3, H, W)`` in [0, 1]: ``φ_A``,
        or the codec's decoded ``F̂_A`` when ``decoded``."""
        f = self.front_a[0](self.normalize(x))
        if self.decoded:
            assert self.codec_a is not None
            f = self.codec_a.base(f).features_hat
        return f

    @torch.no_grad()
    def features_b(self, x: Tensor) -> Tensor:
        """B's own tensor ``φ_B`` ``(B, Cout, h, w)`` at the split point."""
        return self.split_b.front(self.normalize(x))

    def forward(self, x: Tensor) -> Any:
        """B's output on images ``x`` through A's front and ``E``."""
        return self.split_b.back(self.stitch(self.features_a(x)))

    @torch.no_grad()
    def prediction(self, batch: dict[str, Any], own: bool = False) -> Any:
        """B's prediction on a batch through A's front and ``E`` (or through B's own front)."""
        x = batch["image"].to(self.device)
        f = self.features_b(x) if own else self.stitch(self.features_a(x))
        back = self.split_b.back
        return self.task.prediction(back, f, self.task.loss_pass(back, f, batch))

    @torch.no_grad()
    def fit_regression(self, batches: Iterable[dict[str, Any]]) -> None:
        """Set ``E`` to the closed-form regression ``φ_B ≈ E·φ_A + b`` over ``batches``
        (summed over processes under DDP)."""
        pairs = ((self.features_a(x), self.features_b(x)) for x in self._images(batches))
        fit = fit_regression(self.stitch, pairs, self.hparams.ridge)
        if self.trainer_attached() and self.trainer.world_size > 1:
            reduce = self.trainer.strategy.reduce
            fit.combine(lambda t: reduce(t.to(self.device), reduce_op="sum").cpu())
            self.stitch.load_fit(*fit.solve())
        self.fitted = True

    def _images(self, batches: Iterable[dict[str, Any]]) -> Iterable[Tensor]:
        for batch in batches:
            yield batch["image"].to(self.device)

    def trainer_attached(self) -> bool:
        """Whether the module runs under a Lightning trainer."""
        return self._trainer is not None

    # training --------------------------------------------------------------------------------

    def on_train_start(self) -> None:
        """The regression start (``init="regression"``), unless ``E`` holds it already or the
        run resumes."""
        if self.hparams.init == "regression" and not self.fitted and self.global_step == 0:
            loader = self.trainer.train_dataloader
            self.fit_regression(islice(iter(loader), self.hparams.fit_batches))

    def _step(self, batch: dict[str, Any], stage: str) -> Tensor:
        f = self.stitch(self.features_a(batch["image"]))
        back = self.split_b.back
        output = self.task.loss_pass(back, f, batch)
        loss = self.task.loss(output, batch)
        n = batch["image"].shape[0]
        self.log(f"{stage}/loss", loss, prog_bar=True, on_epoch=True, batch_size=n, sync_dist=True)
        if stage != "train":
            metric = self.val_metric if stage == "val" else self.test_metric
            with torch.no_grad():
                metric.update(self.task.prediction(back, f, output), batch)
            self.log(f"{stage}/{self.task.metric_name}", metric, on_epoch=True)
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        opt = torch.optim.Adam(self.stitch.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        steps = max(1, int(self.trainer.estimated_stepping_batches))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # checkpoints -----------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """``E`` and B's network under the ``featcodec`` entry (A's weights left out), sealed."""
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith(_A_PREFIXES)]:
            del state[key]
        checkpoint["featcodec"] = {
            "format": CHECKPOINT_FORMAT,
            "kind": STITCH_KIND,
            "arch": copy.deepcopy(self.entry),
            "state_prefix": "",
        }
        seal(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Resuming: A's weights (not stored) come from A's checkpoint, which must be the A
        the stitch was trained on."""
        recorded = checkpoint.get("featcodec", {}).get("arch", {}).get("a", {}).get("fingerprint")
        if recorded != self.entry["a"]["fingerprint"]:
            raise CheckpointError("the checkpoint stitches another network A than this run's")
        mine = self.state_dict()
        checkpoint["state_dict"].update(
            {k: v for k, v in mine.items() if k.startswith(_A_PREFIXES)}
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the stitch checkpoint (as a trainer would, without one), atomically."""
        checkpoint = {"state_dict": self.state_dict(), "hyper_parameters": dict(self.hparams)}
        self.on_save_checkpoint(checkpoint)
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)


# reading a stitch checkpoint ---------------------------------------------------------------------


class StitchedBack(nn.Module):
    """``E`` followed by B's back end, read from a stitch checkpoint: A's decoded tensor
    ``F̂_A`` ``(B, Cin, h, w)`` → B's output (``forward``). Eval mode, nothing trains.

    Attributes:
        entry: the checkpoint's architecture entry (split point, shapes, A's and B's
            architectures and fingerprints).
        task: B's task (its metric, prediction summary).
    """

    def __init__(self, entry: dict[str, Any], stitch: Stitch, net_b: nn.Module, split: Split):
        super().__init__()
        self.entry, self.stitch, self.net_b, self.split_b = entry, stitch, net_b, split
        self.task = task_of(entry["b"]["arch"])
        self.num_classes = int(entry["b"]["arch"]["num_classes"])
        _frozen(self)

    def train(self, mode: bool = True) -> StitchedBack:
        """Nothing of it trains: it stays in eval mode."""
        return super().train(False)

    def forward(self, f: Tensor) -> Any:
        """B's output on A's decoded tensor ``f`` ``(B, Cin, h, w)``."""
        return self.split_b.back(self.stitch(f))

    def check_codec(self, codec: Codec, name: str = "the codec") -> None:
        """:class:`CheckpointError` (one line) unless ``codec`` is the A this stitch was trained
        on: the same codec (fingerprint), or, for a stitch trained on A's task network, a codec
        of that network split at the same point."""
        a = self.entry["a"]
        if a["source"] == "codec":
            mine, what = codec.fingerprint.hex(), "codec"
        else:
            mine, what = codec_network_fingerprint(codec), "task network"
        if mine != a["fingerprint"]:
            raise CheckpointError(
                f"the stitch was trained on the {what} {a['fingerprint']}, {name}'s is {mine}"
            )
        if (
            codec.arch["split_at"] != self.entry["split_at"]
            or codec.channels != self.stitch.in_channels
        ):
            raise CheckpointError(
                f"the stitch takes {self.stitch.in_channels} channels at "
                f"{self.entry['split_at']!r}, {name} codes {codec.channels} at "
                f"{codec.arch['split_at']!r}"
            )


def _check_entry(entry: Any) -> dict[str, Any]:
    """The architecture entry of a stitch checkpoint, checked key by key (ValueError)."""
    if not isinstance(entry, dict):
        raise ValueError("its entry is not a mapping")
    if not isinstance(entry.get("split_at"), str) or not 0 < len(entry["split_at"]) <= 200:
        raise ValueError("no valid split point")
    for key in ("in_channels", "out_channels"):
        value = entry.get(key)
        if type(value) is not int or not 1 <= value <= MAX_CHANNELS:
            raise ValueError(f"{key} = {value!r} is not a channel count in 1..{MAX_CHANNELS}")
    for side in ("a", "b"):
        part = entry.get(side)
        if not isinstance(part, dict) or not isinstance(part.get("arch"), dict):
            raise ValueError(f"no architecture of network {side.upper()}")
        fp = part.get("fingerprint")
        if not isinstance(fp, str) or len(fp) != 2 * FINGERPRINT_BYTES:
            raise ValueError(f"no valid fingerprint of network {side.upper()}")
    if entry["a"].get("source") not in ("codec", "task"):
        raise ValueError("network A is neither a codec nor a task network")
    arch = entry["b"]["arch"]
    check_backbone_name(str(arch.get("backbone")))
    n = arch.get("num_classes")
    if type(n) is not int or not 1 <= n <= MAX_CLASSES:
        raise ValueError(f"B's num_classes = {n!r} is outside 1..{MAX_CLASSES}")
    options = arch.get("task_options", {})
    if not isinstance(options, dict):
        raise ValueError("B's task_options is not a mapping")
    task_of(arch)  # a known task
    return entry


def load_stitch(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> StitchedBack:
    """The :class:`StitchedBack` of a stitch checkpoint, validated before anything is built:
    kind, format and weights digest (:func:`~codec.checkpoint.load_checkpoint`), the entry's
    fields and plausible sizes, ``E``'s shapes against them, B's weights against B's
    architecture and recorded fingerprint, B's channels at the split point. Any problem is a
    one-line :class:`CheckpointError` naming ``path``."""
    ckpt = load_checkpoint(path, kind=STITCH_KIND)
    try:
        entry = _check_entry(ckpt["featcodec"].get("arch"))
    except ValueError as e:
        raise CheckpointError(f"{path}: not a valid stitch checkpoint ({e})") from None
    state = ckpt["state_dict"]
    cin, cout = entry["in_channels"], entry["out_channels"]
    for key, shape in (("stitch.weight", (cout, cin, 1, 1)), ("stitch.bias", (cout,))):
        t = state.get(key)
        if not isinstance(t, Tensor) or tuple(t.shape) != shape or not t.is_floating_point():
            found = tuple(t.shape) if isinstance(t, Tensor) else None
            raise CheckpointError(f"{path}: E's {key} is {found}, the entry says {shape}")
        if not torch.isfinite(t).all():
            raise CheckpointError(f"{path}: E's {key} holds NaN or Inf")
    stitch = Stitch(cin, cout)
    stitch.load_state_dict(
        {k[len("stitch.") :]: state[k] for k in ("stitch.weight", "stitch.bias")}
    )
    arch_b = entry["b"]["arch"]
    task = task_of(arch_b)
    try:
        net_b = task.network(
            arch_b["backbone"],
            None,
            arch_b["num_classes"],
            arch_b.get("task_options", {}),
            arch_b.get("sparse"),
        )
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot build B ({e})") from None
    weights = {k[len("net_b.") :]: v for k, v in state.items() if k.startswith("net_b.")}
    try:
        net_b.load_state_dict(weights)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(
            f"{path}: B's weights do not fit B's architecture ({first})"
        ) from None
    if network_fingerprint(arch_b, net_b.state_dict()) != entry["b"]["fingerprint"]:
        raise CheckpointError(f"{path}: B's weights do not match B's recorded fingerprint")
    try:
        split = task.split(net_b.eval(), entry["split_at"], arch_b["backbone"])
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    if split.channels != cout:
        raise CheckpointError(
            f"{path}: B has {split.channels} channels at {entry['split_at']!r}, E gives {cout}"
        )
    return StitchedBack(entry, stitch, _frozen(net_b), split).to(device)
