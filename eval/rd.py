"""Rate–distortion points measured from real bitstreams, for learned codecs and anchors.

A learned codec's point: every image is encoded into a ``.fcb`` stream, the stream is written
to disk (when a folder is given) and read back, decoded, and the task runs on the decoded
features. An anchor's point: the same images' feature tensors (the same front of the same
task network) go through a classical codec (:mod:`eval.anchors`), and its decoded tensors go
through the same back end. Rates are the streams' real bytes in both cases; the learned
codec's likelihood estimate is reported beside it, labelled as an estimate.

::

    dataset ─▶ x ─front─▶ F ─┬─ codec.encode ─▶ .fcb ─ codec.decode ─▶ F̂ ─back─▶ metric
                             └─ anchor.encode ─▶ bytes ─ anchor.decode ─▶ F̂ ─back─▶ metric
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from featcodec.codec.checkpoint import load_checkpoint
from featcodec.codec.entropy import bits
from featcodec.codec.errors import CheckpointError, InputError
from featcodec.codec.facade import Codec
from featcodec.codec.files import atomic_write
from featcodec.codec.fingerprint import weights_digest
from featcodec.eval.anchors import Anchor
from featcodec.eval.data import EvalData
from featcodec.eval.metrics import PSNR
from featcodec.eval.results import RDRow
from featcodec.models.backbones import Normalize
from featcodec.models.tasks import task_of
from featcodec.training.task import read_task_network


class TaskSplit(nn.Module):
    """The frozen task network of a codec, split where the codec sits: what anchors code around.

    Attributes:
        arch: ``backbone``, ``num_classes``, ``split_at`` (and ``task`` when not classification).
    """

    def __init__(
        self, arch: dict[str, Any], normalize: nn.Module, front: nn.Module, back: nn.Module
    ) -> None:
        super().__init__()
        self.arch = arch
        self.normalize, self.front, self.back = normalize, front, back
        self.eval()

    @classmethod
    def of_codec(cls, codec: Codec) -> TaskSplit:
        arch = {k: v for k, v in codec.arch.items() if k != "codec"}
        return cls(arch, codec.normalize, codec.front, codec.back)

    @classmethod
    def from_task_checkpoint(cls, path: str | os.PathLike[str], split_at: str) -> TaskSplit:
        """The network of a task checkpoint (``featcodec train --config configs/tasknet.yaml``)."""
        arch, net = read_task_network(path)
        task = task_of(arch)
        split = task.split(net, split_at, arch["backbone"])
        arch["split_at"] = split_at
        return cls(arch, Normalize(), split.front, split.back)

    @torch.no_grad()
    def features(self, x: Tensor) -> Tensor:
        return self.front(self.normalize(x))

    def digest(self) -> str:
        """A hash of the task network's weights, standing in for an anchor's fingerprint."""
        return weights_digest(None, {**self.front.state_dict(), **self.back.state_dict()}).hex()


def check_fits(arch: dict[str, Any], data: EvalData, source: str) -> None:
    """Refuse a network whose task the dataset has no ground truth for, or whose classes do
    not match the dataset's."""
    task = task_of(arch)
    keys = data.keys()
    missing = [k for k in task.targets if k not in keys]
    if missing:
        raise InputError(
            f"{source}: task {task.name!r} cannot be evaluated on {data.info['name']}"
            f" (its items have no {', '.join(missing)})"
        )
    if task.classes_in_data and arch.get("num_classes") != data.num_classes:
        raise InputError(
            f"{source} predicts {arch.get('num_classes')} classes, but {data.info['name']} has "
            f"{data.num_classes}"
        )


def _psnr_images(split: nn.Module, f_hat: Tensor) -> Tensor | None:
    """The image a decoded tensor stands for, when the split is at the input."""
    arch = split.arch
    if arch.get("split_at") != "input":
        return None
    norm = split.normalize
    return f_hat * norm.std + norm.mean


@torch.no_grad()
def reference_metrics(split: TaskSplit | Codec, data: EvalData, batch_size: int = 64) -> float:
    """The task metric of the uncompressed network on ``data``."""
    metric = task_of(split.arch).metric(split.arch["num_classes"])
    for batch in data.batches(batch_size):
        x = batch["image"].to(_device(split))
        metric.update(split.back(split.features(x)), batch)
    return float(metric.compute())


class _Tally:
    """What a point accumulates over a split: bytes, pixels, elements, times, metrics."""

    def __init__(self, arch: dict[str, Any]) -> None:
        self.task = task_of(arch)
        self.metric = self.task.metric(arch["num_classes"])
        self.psnr = PSNR()
        self.images = self.bytes = self.pixels = self.elements = 0
        self.t_enc = self.t_dec = 0.0

    def add(
        self,
        sizes: list[int],
        x: Tensor,
        f_hat: Tensor,
        output: Tensor,
        batch: dict,
        split: Any,
        preview: Tensor | None = None,
    ) -> None:
        """One batch: stream sizes, images ``x`` (B, 3, H, W), decoded tensors and outputs.

        PSNR is measured on the decoded image: the decoded tensor itself when the codec sits
        at the input, else the base layer's preview (``g_r``) when it has one."""
        self.images += x.shape[0]
        self.bytes += sum(sizes)
        self.pixels += x.shape[0] * math.prod(x.shape[-2:])
        self.elements += f_hat.numel()
        self.metric.update(output, batch)
        shown = _psnr_images(split, f_hat)
        shown = preview if shown is None else shown
        if shown is not None:
            self.psnr.update(shown, x.to(shown.device))

    def row(self, reference: float, **fields: Any) -> RDRow:
        n = self.images
        metrics = {self.task.metric_name: float(self.metric.compute())}
        if self.psnr.count:
            metrics["psnr"] = self.psnr.compute()
        return RDRow(
            images=n,
            bytes=self.bytes / n,
            bpp=8 * self.bytes / self.pixels,
            bits_per_element=8 * self.bytes / self.elements,
            metrics=metrics,
            reference={self.task.metric_name: reference},
            psnr=metrics.get("psnr"),
            encode_ms=1e3 * self.t_enc / n,
            decode_ms=1e3 * self.t_dec / n,
            **fields,
        )


@torch.no_grad()
def evaluate_codec(
    codec: Codec,
    data: EvalData,
    name: str,
    point: str,
    setting: float | None = None,
    checkpoint: str | None = None,
    stream_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
    batch_size: int = 64,
) -> RDRow:
    """Code every image of ``data`` through a real ``.fcb`` stream and measure the point, in
    one pass over the data, one batch in memory at a time.

    Per batch: the uncompressed features give the reference metric and the likelihood
    estimate; each image is encoded, written to ``<stream_dir>/<index>.fcb`` and read back
    when ``stream_dir`` is given (else kept in memory), decoded, and its decoded output goes
    to the metric.
    """
    check_fits(codec.arch, data, checkpoint or name)
    codec.eval()
    device = next(codec.parameters()).device
    out_dir = Path(stream_dir) if stream_dir is not None else None
    tally = _Tally(codec.arch)
    reference = tally.task.metric(codec.arch["num_classes"])
    estimated = 0.0
    # progress only on a terminal (disable=None), never into logs
    bar = tqdm(total=len(data), desc=f"{name} {point}", disable=None if progress else True)
    index = 0
    for batch in data.batches(batch_size):
        x = batch["image"].to(device)
        f = codec.features(x)
        likelihoods = codec.base(f, codec.front_mask()).likelihoods
        estimated += float(sum(bits(v) for v in likelihoods.values()))
        reference.update(codec.back(f), batch)
        sizes, features, outputs, previews = [], [], [], []
        for image in x:
            t0 = time.perf_counter()
            stream = codec.encode(image)
            tally.t_enc += time.perf_counter() - t0
            if out_dir is not None:
                path = out_dir / f"{index:05d}.fcb"
                atomic_write(path, stream)
                stream = path.read_bytes()
            t0 = time.perf_counter()
            decoded = codec.decode(stream)
            tally.t_dec += time.perf_counter() - t0
            sizes.append(len(stream))
            features.append(decoded.features)
            outputs.append(decoded.output)
            previews.append(decoded.preview)
            index += 1
            bar.update(1)
        preview = None if previews[0] is None else torch.cat(previews)
        tally.add(sizes, x, torch.cat(features), join_outputs(outputs), batch, codec, preview)
    bar.close()
    return tally.row(
        float(reference.compute()),
        codec=name,
        point=point,
        kind="learned",
        setting=setting,
        bpp_estimated=estimated / tally.pixels,
        checkpoint=checkpoint,
        fingerprint=codec.fingerprint.hex(),
        config=codec.arch,
    )


def join_outputs(outputs: list[Any]) -> Any:
    """Task outputs of single images as one batch: tensors concatenated, lists (a detector's
    per-image dicts) joined."""
    if isinstance(outputs[0], Tensor):
        return torch.cat(outputs)
    return [o for out in outputs for o in out]


@torch.no_grad()
def evaluate_anchor(
    anchor: Anchor,
    setting: Any,
    split: TaskSplit,
    data: EvalData,
    reference: float | None = None,
    stream_dir: str | os.PathLike[str] | None = None,
    batch_size: int = 64,
) -> RDRow:
    """One point of a classical anchor on the task network's feature tensors."""
    tally = _Tally(split.arch)
    for batch in data.batches(batch_size):
        x = batch["image"]
        t0 = time.perf_counter()
        f = split.features(x.to(_device(split)))
        streams = anchor.encode(f.cpu(), setting)
        tally.t_enc += time.perf_counter() - t0
        if stream_dir is not None:
            for k, s in enumerate(streams, start=tally.images):
                atomic_write(Path(stream_dir) / f"{k:05d}.bin", s)
        t0 = time.perf_counter()
        f_hat = anchor.decode(streams).to(f.device)
        output = split.back(f_hat)
        tally.t_dec += time.perf_counter() - t0
        tally.add([len(s) for s in streams], x, f_hat, output, batch, split)
    return tally.row(
        reference if reference is not None else reference_metrics(split, data, batch_size),
        codec=anchor.name,
        point=f"{anchor.setting_name}={setting}",
        kind="anchor",
        setting=float(setting) if isinstance(setting, int | float) else None,
        fingerprint=split.digest(),
        config={**anchor.config(), "network": split.arch},
    )


def _device(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


# checkpoints of a λ sweep -----------------------------------------------------------------------


@dataclass
class CodecPoint:
    """A codec checkpoint found for evaluation: its curve, file and λ (when recorded)."""

    curve: str
    path: Path
    lmbda: float | None
    task: str = "classification"


def find_checkpoints(
    paths: Sequence[str | os.PathLike[str]], name: str | None = None
) -> tuple[list[CodecPoint], list[str]]:
    """Codec checkpoints among ``paths`` (files, or run folders searched recursively).

    A folder's checkpoints form one curve named after the folder; files given directly form
    the curve ``name`` (default: the codec's registry name). Task checkpoints inside folders
    are skipped; checkpoints with the same weights (``last.ckpt`` beside ``epoch=…``) count
    once. Returns the points (highest λ first within a curve) and notes on what was skipped.
    """
    points: list[CodecPoint] = []
    notes: list[str] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            files = sorted(p.rglob("*.ckpt"))
            if not files:
                raise InputError(f"{p}: no .ckpt files in this folder")
            curve = name or p.resolve().name
        elif p.is_file():
            files, curve = [p], name
        else:
            raise InputError(f"checkpoint not found: {p}")
        found: dict[str, CodecPoint] = {}
        for f in files:
            try:
                ckpt = load_checkpoint(f, kind="codec")
            except CheckpointError as e:
                if p.is_file():
                    raise
                notes.append(f"skipped {f}: {e}")
                continue
            meta = ckpt["featcodec"]
            lmbda = ckpt.get("hyper_parameters", {}).get("lmbda")
            key = weights_digest(None, ckpt["state_dict"]).hex()
            if key in found:
                notes.append(f"skipped {f}: same weights as {found[key].path}")
                continue
            label = curve or meta["arch"]["codec"]["name"]
            found[key] = CodecPoint(label, f, lmbda, task_of(meta["arch"]).name)
        if not found:
            raise InputError(f"{p}: no codec checkpoints (only task checkpoints or none)")
        points.extend(sorted(found.values(), key=lambda c: -(c.lmbda or 0)))
    tasks = sorted({p.task for p in points})
    if len(tasks) > 1:
        raise InputError(f"the checkpoints serve different tasks: {', '.join(tasks)}")
    return points, notes
