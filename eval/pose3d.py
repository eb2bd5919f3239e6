"""The HEMlets experiment on the tilted synthetic scenes: what each 3-D pose network scores,
and what a scalable codec (2-D keypoints base, 3-D enhancement) costs for it.

* :func:`evaluate_network`: MPJPE, PCK-3D and the parts' relative depth order accuracy of a
  task network (uncompressed) on the test scenes — the ablation's rows (L_3D alone, + L_2D,
  + L_HEM: the same architecture trained with more of the paper's loss).
* :func:`evaluate_enhancement`: every test scene coded through a real stream by a scalable
  codec whose enhancement layer targets the 3-D pose maps: the bytes of each layer and the
  MPJPE (PCK-3D, depth order) of the decoded enhancement output.
* :func:`equal_metric_rate`: the BD-rate of one curve against another at equal MPJPE (the
  scalable codec's total rate against a standalone 3-D base codec's), with the BD tools.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from featcodec.codec.facade import Codec
from featcodec.eval.bd import Curve, bd_rate
from featcodec.eval.data import EvalData
from featcodec.eval.scalable import code_layers
from featcodec.models.backbones import Normalize
from featcodec.models.tasks import get_task, task_of
from featcodec.training.task import read_task_network

__all__ = [
    "equal_metric_rate",
    "evaluate_enhancement",
    "evaluate_network",
    "format_networks",
    "format_enhancement",
]


def _pose_task(arch: dict[str, Any], source: str) -> Any:
    task = task_of(arch)
    if task.name != "pose3d":
        raise ValueError(f"{source} is a {task.name} network, not a 3-D pose (pose3d) one")
    return task


@torch.no_grad()
def evaluate_network(
    checkpoint: str | os.PathLike[str], data: EvalData, batch_size: int = 50
) -> dict[str, Any]:
    """``{"mpjpe", "pck3d", "depth_order", "options"}`` of a pose3d task network on ``data``,
    and ``mpjpe_flat``, ``depth_order_flat``: the same with every predicted depth set to the
    root's (a card facing the camera), what the network's depths are measured against."""
    arch, net = read_task_network(checkpoint)
    task = _pose_task(arch, str(checkpoint))
    normalize = Normalize()
    metric, flat = task.metric(arch["num_classes"]), task.metric(arch["num_classes"])
    joints = task.layout.num_joints
    for batch in data.batches(batch_size):
        maps = net(normalize(batch["image"]))
        metric.update(maps, batch)
        maps[:, -joints:] = 0.0  # the depth maps D
        flat.update(maps, batch)
    scores = flat.compute_all()
    return {
        **metric.compute_all(),
        "mpjpe_flat": scores["mpjpe"],
        "depth_order_flat": scores["depth_order"],
        "options": dict(arch.get("task_options") or {}),
    }


@torch.no_grad()
def evaluate_enhancement(codec: Codec, data: EvalData, batch_size: int = 50) -> dict[str, Any]:
    """Mean bits per pixel of each layer (real streams) and the 3-D pose scores of the
    decoded enhancement output of a scalable ``codec`` (enhancement target ``pose3d``)."""
    if codec.enhancement is None or codec.enhancement.target != "pose3d":
        raise ValueError("the codec's enhancement layer does not target the 3-D pose maps")
    task = get_task("pose3d")
    codec.eval()
    metric = task.metric(codec.arch["num_classes"])
    totals = {"header": 0, "base": 0, "enhancement": 0}
    pixels = images = 0
    for batch in data.batches(batch_size):
        x = batch["image"]
        metric.update(code_layers(codec, x, totals), batch)
        pixels += x.shape[0] * x.shape[-2] * x.shape[-1]
        images += x.shape[0]
    base = 8 * (totals["header"] + totals["base"]) / pixels
    enhancement = 8 * totals["enhancement"] / pixels
    return {
        "bpp_base": base,
        "bpp_enhancement": enhancement,
        "bpp_total": base + enhancement,
        "standalone": bool(codec.enhancement.standalone),
        "images": images,
        **metric.compute_all(),
    }


def equal_metric_rate(
    test: Sequence[tuple[float, float]],
    anchor: Sequence[tuple[float, float]],
    names: tuple[str, str] = ("test", "anchor"),
) -> dict[str, Any]:
    """BD-rate (%) of ``test`` against ``anchor``, both ``(bpp, mpjpe)`` points, at equal MPJPE
    (lower is better), as :meth:`BDResult.as_dict <eval.bd.BDResult.as_dict>` (``bd_rate``
    ``None`` where the curves do not overlap or have too few points, notes saying why)."""

    def curve(name: str, points: Sequence[tuple[float, float]]) -> Curve:
        ordered = sorted(points)
        return Curve(name, [p[0] for p in ordered], [p[1] for p in ordered])

    result = bd_rate(curve(names[1], anchor), curve(names[0], test), higher_is_better=False)
    return result.as_dict()


def format_networks(rows: Sequence[dict[str, Any]], labels: Sequence[str]) -> str:
    """The ablation table (markdown)."""
    lines = [
        "| network | MPJPE ↓ | PCK-3D ↑ | depth order ↑ | MPJPE, depths flat | order, flat |",
        "|---|---|---|---|---|---|",
    ]
    for label, r in zip(labels, rows, strict=True):
        lines.append(
            f"| {label} | {r['mpjpe']:.4f} | {r['pck3d']:.3f} | {r['depth_order']:.3f} | "
            f"{r['mpjpe_flat']:.4f} | {r['depth_order_flat']:.3f} |"
        )
    return "\n".join(lines)


def format_enhancement(rows: Sequence[dict[str, Any]], labels: Sequence[str]) -> str:
    """The scalable table (markdown)."""
    lines = [
        "| enhancement | bpp base | bpp enhancement | bpp total | MPJPE ↓ | depth order ↑ |",
        "|---|---|---|---|---|---|",
    ]
    for label, r in zip(labels, rows, strict=True):
        lines.append(
            f"| {label} | {r['bpp_base']:.4f} | {r['bpp_enhancement']:.4f} | "
            f"{r['bpp_total']:.4f} | {r['mpjpe']:.4f} | {r['depth_order']:.3f} |"
        )
    return "\n".join(lines)
